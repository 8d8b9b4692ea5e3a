//! tandem-store: query projections of the engine's events, for the API's history queries.
//!
//! The crate owns the SQL database (SQLite by default, PostgreSQL later) and the tables in
//! `migrations/sqlite`: orders, trades, balances, ledger entries, accounts, deposits and
//! withdrawals, all *derived* from [`Applied`] commands, plus small tables that are not
//! derived (API keys, wallet device keys and their enrolment codes, co-signer identity keys, and a
//! key-value `meta`).
//!
//! The engine is the source of truth. A projection is rebuildable: [`Store::reset_projections`]
//! empties it and replaying the journal through [`Store::apply_batch`] fills it again, row for
//! row. Each batch is written in one transaction together with the projection cursor, so a
//! crash between batches only replays what was not committed, and items at or below the cursor
//! are skipped.
//!
//! Everything is derived from events; engine arithmetic (fills, fees, balances) is never
//! recomputed here. [`Projector`] keeps the store current from the sequencer's lossless sink on
//! a thread of its own, and [`ProjectorHandle::wait_for`] gives read-your-writes.
//!
//! SQL rules, so the PostgreSQL port is mechanical: runtime queries only (no compile-time
//! checked macros), `?` placeholders each bound exactly once and in order (a rewrite to `$n`
//! is then a simple scan), integer columns as `i64`, no SQLite-only syntax in statements.

mod batches;
mod cosigners;
mod devices;
mod keys;
mod projection;
mod projector;
mod queries;
mod records;
mod refusals;
mod signed_requests;
mod vaults;

#[cfg(test)]
mod tests;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

pub use batches::{BatchLegRecord, BatchRecord, BatchVersionRecord};
pub use projector::{Projector, ProjectorHandle};
pub use signed_requests::{LateHolder, SignedRequestKind, SignedRequestRecord};
pub use records::{
    AccountRecord, ApiKeyRecord, BalanceRecord, CosignerRecord, DepositRecord, DeviceKeyRecord, EnrolmentCodeRecord, LedgerEntry,
    OrderRecord, OrderStatus, OrderType, RefusalRecord, TradeRecord, VaultAddressRecord, VaultRecord, WithdrawalRecord, WithdrawalStatus,
};
pub use tandem_matching::{
    AccountId, AccountKind, Amount, Applied, AssetId, MarketId, OrderId, Price, Quantity, Seq, Side, TimeInForce,
    Timestamp, TradeId, WithdrawalId,
};

#[derive(thiserror::Error, Debug)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A unique key is already taken (e.g. a duplicate API key).
    #[error("conflict: {0}")]
    Conflict(String),
    /// A row or an event holds a value this crate cannot represent (out of range, unknown name).
    #[error("corrupt data: {0}")]
    Corrupt(String),
}

/// The projection database. Cheap to clone (a connection pool inside).
#[derive(Clone)]
pub struct Store {
    pool: SqlitePool,
}

/// Readers run while the projector writes (WAL); a small pool is plenty on a 2-core machine.
const FILE_POOL_CONNECTIONS: u32 = 4;
/// A writer waits this long for another writer (the projector, an API-key insert) to commit.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// Multi-row statements come in a few fixed shapes per table (see `projection`); keep them all.
const STATEMENT_CACHE: usize = 256;

impl Store {
    /// Opens (creating if missing) the database file: WAL journal, `synchronous=NORMAL` (a
    /// crash may lose the last batches, which the journal replays), foreign keys on, a busy
    /// timeout, and all migrations applied.
    pub async fn open_sqlite(path: &Path) -> Result<Store, StoreError> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT)
            .statement_cache_capacity(STATEMENT_CACHE);
        let pool = SqlitePoolOptions::new().max_connections(FILE_POOL_CONNECTIONS).connect_with(options).await?;
        Store::migrated(pool).await
    }

    /// A private in-memory database for tests. One connection that never expires: an
    /// in-memory database lives exactly as long as its connection.
    pub async fn open_in_memory() -> Result<Store, StoreError> {
        let options = SqliteConnectOptions::from_str("sqlite::memory:")?
            .foreign_keys(true)
            .statement_cache_capacity(STATEMENT_CACHE);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options)
            .await?;
        Store::migrated(pool).await
    }

    async fn migrated(pool: SqlitePool) -> Result<Store, StoreError> {
        sqlx::migrate!("../migrations/sqlite").run(&pool).await?;
        Ok(Store { pool })
    }

    /// Write transactions take the write lock up front (`BEGIN IMMEDIATE`): a deferred one
    /// that reads first could fail to upgrade with SQLITE_BUSY, which no busy timeout retries.
    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>, StoreError> {
        Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?)
    }
}
