//! tandem-store: query projections of the engine's events, for the API's history queries.
//!
//! The crate owns the SQL database (SQLite by default, or PostgreSQL) and the tables in
//! `migrations/sqlite` (and their twins in `migrations/postgres`): orders, trades, balances, ledger entries, accounts, deposits and
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
mod leadership;
mod listen_keys;
mod market_history;
pub use market_history::{AggTradeRecord, Buckets, CandleRecord};
mod projection;
mod projector;
mod queries;
pub use queries::TimeWindow;
mod records;
mod refusals;
mod signed_requests;
mod stmt;
mod vaults;

#[cfg(test)]
mod tests;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::AnyPool;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions as _, Executor as _};
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

pub use batches::{BatchLegRecord, BatchRecord, BatchVersionRecord};
pub use leadership::Leadership;
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
    /// The database's tables are older than this version needs.
    #[error("the store is at migration {applied}, this version needs {wanted}: run `tandem migrate`")]
    Outdated { applied: i64, wanted: i64 },
    /// This store's engine cannot do it (e.g. electing a leader on SQLite).
    #[error("{0}")]
    Unsupported(&'static str),
}

/// The projection database. Cheap to clone (a connection pool inside).
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
}

/// Which engine a store runs on. The SQL is the same for both (see `stmt`); what differs is how
/// a connection is set up, how a write transaction starts, and the migrations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Readers run while the projector writes (WAL); a small pool is plenty on a 2-core machine.
const FILE_POOL_CONNECTIONS: u32 = 4;
/// PostgreSQL connections per process.
const PG_POOL_CONNECTIONS: u32 = 8;
/// How long a query waits for a connection (PostgreSQL restarting) before it fails.
const PG_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);
/// A writer waits this long for another writer (the projector, an API-key insert) to commit.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

impl Store {
    /// Opens (creating if missing) the database file: WAL journal, `synchronous=NORMAL` (a
    /// crash may lose the last batches, which the journal replays), foreign keys on, a busy
    /// timeout, and all migrations applied.
    pub async fn open_sqlite(path: &Path) -> Result<Store, StoreError> {
        let url = SqliteConnectOptions::new().filename(path).create_if_missing(true).to_url_lossy();
        Store::open_sqlite_url(url.as_str(), FILE_POOL_CONNECTIONS, true).await
    }

    /// A private in-memory database for tests. One connection that never expires: an
    /// in-memory database lives exactly as long as its connection.
    pub async fn open_in_memory() -> Result<Store, StoreError> {
        Store::open_sqlite_url("sqlite::memory:", 1, false).await
    }

    async fn open_sqlite_url(url: &str, connections: u32, wal: bool) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let options = AnyConnectOptions::from_str(url)?;
        let pool = AnyPoolOptions::new()
            .max_connections(connections)
            .min_connections(if wal { 0 } else { 1 })
            .idle_timeout(if wal { Some(Duration::from_secs(600)) } else { None })
            .max_lifetime(if wal { Some(Duration::from_secs(1800)) } else { None })
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if wal {
                        conn.execute("PRAGMA journal_mode = WAL").await?;
                        conn.execute("PRAGMA synchronous = NORMAL").await?;
                    }
                    conn.execute("PRAGMA foreign_keys = ON").await?;
                    conn.execute(format!("PRAGMA busy_timeout = {}", BUSY_TIMEOUT.as_millis()).as_str()).await?;
                    Ok(())
                })
            })
            .connect_with(options)
            .await?;
        sqlx::migrate!("../migrations/sqlite").run(&pool).await?;
        Ok(Store { pool, backend: Backend::Sqlite })
    }

    /// Opens a PostgreSQL database (`postgres://user@host:port/db`) and applies its migrations
    /// (`migrations/postgres`). With `schema`, everything lives in that schema (created if
    /// missing): one database can hold several stores (tests, several exchanges).
    pub async fn open_postgres(url: &str, schema: Option<&str>) -> Result<Store, StoreError> {
        Store::connect_postgres(url, schema, true).await
    }

    /// Opens a PostgreSQL database whose tables must already be at this version (a production
    /// start, where `tandem migrate` changes the schema, not every process that starts):
    /// [`StoreError::Migrate`] names what is missing.
    pub async fn open_postgres_migrated(url: &str, schema: Option<&str>) -> Result<Store, StoreError> {
        Store::connect_postgres(url, schema, false).await
    }

    async fn connect_postgres(url: &str, schema: Option<&str>, migrate: bool) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let schema = schema.map(str::to_owned);
        if let Some(s) = &schema {
            if s.is_empty() || !s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_') {
                return Err(StoreError::Corrupt(format!("schema name {s:?}: lowercase letters, digits and _ only")));
            }
            let pool = AnyPoolOptions::new().max_connections(1).connect(url).await?;
            pool.execute(format!("CREATE SCHEMA IF NOT EXISTS {s}").as_str()).await?;
            pool.close().await;
        }
        let pool = AnyPoolOptions::new()
            .max_connections(PG_POOL_CONNECTIONS)
            // A database that is away answers a read with an error in seconds, not half a minute.
            .acquire_timeout(PG_ACQUIRE_TIMEOUT)
            .after_connect(move |conn, _| {
                let schema = schema.clone();
                Box::pin(async move {
                    if let Some(s) = schema {
                        conn.execute(format!("SET search_path TO {s}").as_str()).await?;
                    }
                    Ok(())
                })
            })
            .connect(url)
            .await?;
        let migrator = sqlx::migrate!("../migrations/postgres");
        if migrate {
            migrator.run(&pool).await?;
        } else {
            let wanted = migrator.iter().map(|m| m.version).max().unwrap_or(0);
            let applied: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations WHERE success")
                .fetch_one(&pool)
                .await
                .unwrap_or(None);
            if applied.unwrap_or(0) < wanted {
                return Err(StoreError::Outdated { applied: applied.unwrap_or(0), wanted });
            }
        }
        Ok(Store { pool, backend: Backend::Postgres })
    }

    /// Whether the database answers (a readiness check).
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// The engine this store runs on.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// A write transaction. SQLite takes the write lock up front (`BEGIN IMMEDIATE`): a deferred
    /// one that reads first could fail to upgrade with SQLITE_BUSY, which no busy timeout
    /// retries.
    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>, StoreError> {
        Ok(match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.pool.begin().await?,
        })
    }
}

/// Where tests find PostgreSQL: `TANDEM_TEST_POSTGRES`, else the test machine's
/// `postgres://postgres@127.0.0.1:5432/test` (the test command starts it).
#[cfg(test)]
pub(crate) fn test_postgres_url() -> String {
    std::env::var("TANDEM_TEST_POSTGRES").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A fresh store on each engine: SQLite in memory, and PostgreSQL in a schema of its own (schemas
/// of test runs over an hour old are dropped on the way).
#[cfg(test)]
pub(crate) async fn test_stores() -> Vec<Store> {
    use rand::Rng as _;
    let sqlite = Store::open_in_memory().await.unwrap();
    let url = test_postgres_url();
    sqlx::any::install_default_drivers();
    let admin = AnyPoolOptions::new()
        .max_connections(1)
        .connect(&url)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {url} (start it, or set TANDEM_TEST_POSTGRES): {e}"));
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let old: Vec<String> = sqlx::query_scalar("SELECT schema_name::text FROM information_schema.schemata WHERE schema_name LIKE 'tandem_test_%'")
        .fetch_all(&admin)
        .await
        .unwrap();
    for schema in old {
        let made: u64 = schema.split('_').nth(2).and_then(|t| t.parse().ok()).unwrap_or(0);
        if now.saturating_sub(made) > 3600 {
            let _ = admin.execute(format!("DROP SCHEMA IF EXISTS {schema} CASCADE").as_str()).await;
        }
    }
    admin.close().await;
    let schema = format!("tandem_test_{now}_{:08x}", rand::thread_rng().gen::<u32>());
    let postgres = Store::open_postgres(&url, Some(&schema)).await.unwrap();
    vec![sqlite, postgres]
}
