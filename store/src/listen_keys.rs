//! Listen keys: the name of one account's user data stream (Binance's `userDataStream`). One key
//! per account at a time, valid until it expires unless kept alive; shared by every gateway on
//! the store, so a stream opened through one gateway is served by any.

use crate::records::{from_sql, to_sql};
use crate::stmt::stmt;
use crate::{Store, StoreError};
use sqlx::Row;
use tandem_matching::AccountId;

impl Store {
    /// The account's listen key, valid until `now + ttl` (ms): its live key if it has one (kept
    /// alive), else `candidate`, which replaces an expired one.
    pub async fn open_listen_key(&self, account: AccountId, candidate: &str, now: u64, ttl: u64) -> Result<String, StoreError> {
        // One statement, so two gateways opening at once agree on the key.
        let sql = "INSERT INTO listen_keys (listen_key, account_id, expires_at) VALUES (?, ?, ?) \
             ON CONFLICT (account_id) DO UPDATE SET \
             listen_key = CASE WHEN listen_keys.expires_at > ? THEN listen_keys.listen_key ELSE excluded.listen_key END, \
             expires_at = excluded.expires_at RETURNING listen_key";
        let key: String = sqlx::query_scalar(stmt(self.backend, sql))
            .bind(candidate)
            .bind(to_sql(account.0, "account id")?)
            .bind(to_sql(now.saturating_add(ttl), "time")?)
            .bind(to_sql(now, "time")?)
            .fetch_one(&self.pool)
            .await?;
        Ok(key)
    }

    /// Extends a live key to `now + ttl`; false if there is none such (unknown or expired).
    pub async fn keep_listen_key_alive(&self, key: &str, account: AccountId, now: u64, ttl: u64) -> Result<bool, StoreError> {
        let done = sqlx::query(stmt(
            self.backend,
            "UPDATE listen_keys SET expires_at = ? WHERE listen_key = ? AND account_id = ? AND expires_at > ?",
        ))
        .bind(to_sql(now.saturating_add(ttl), "time")?)
        .bind(key)
        .bind(to_sql(account.0, "account id")?)
        .bind(to_sql(now, "time")?)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Closes the account's key; false if it had no such key.
    pub async fn close_listen_key(&self, key: &str, account: AccountId) -> Result<bool, StoreError> {
        let done = sqlx::query(stmt(self.backend, "DELETE FROM listen_keys WHERE listen_key = ? AND account_id = ?"))
            .bind(key)
            .bind(to_sql(account.0, "account id")?)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The account a key names and when it expires (ms), if the key exists (live or not).
    pub async fn listen_key(&self, key: &str) -> Result<Option<(AccountId, u64)>, StoreError> {
        let row = sqlx::query(stmt(self.backend, "SELECT account_id, expires_at FROM listen_keys WHERE listen_key = ?"))
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| Ok((AccountId(from_sql(r.try_get(0)?, "account id")?), from_sql(r.try_get(1)?, "time")?)))
            .transpose()
    }
}
