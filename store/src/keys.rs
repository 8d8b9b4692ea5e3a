//! Tables that are not projections: API keys and a small key-value `meta` table (device keys
//! and enrolment codes are in `devices`).
//! They survive [`Store::reset_projections`].

use crate::stmt::stmt;
use crate::records::{from_sql, to_sql, ApiKeyRecord};
use crate::{Store, StoreError};
use sqlx::any::AnyRow;
use sqlx::Row;
use tandem_matching::{AccountId, Timestamp};

impl Store {
    /// Stores a new key; an existing `api_key` is a [`StoreError::Conflict`].
    pub async fn insert_api_key(&self, key: &ApiKeyRecord) -> Result<(), StoreError> {
        let result = sqlx::query(stmt(self.backend, 
            "INSERT INTO api_keys (api_key, secret, account_id, label, created_at) VALUES (?, ?, ?, ?, ?)",
        ))
        .bind(key.api_key.as_str())
        .bind(key.secret.as_str())
        .bind(to_sql(key.account_id.0, "account id")?)
        .bind(key.label.as_str())
        .bind(to_sql(key.created_at.0, "timestamp")?)
        .execute(&self.pool)
        .await;
        match result {
            Ok(_) => Ok(()),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                Err(StoreError::Conflict(format!("api key {} already exists", key.api_key)))
            }
            Err(e) => Err(e.into()),
        }
    }

    pub async fn api_key(&self, api_key: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        let row = sqlx::query(stmt(self.backend, "SELECT api_key, secret, account_id, label, created_at FROM api_keys WHERE api_key = ?"))
            .bind(api_key)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(api_key_record).transpose()
    }

    /// The account's keys, oldest first.
    pub async fn api_keys_for(&self, account: AccountId) -> Result<Vec<ApiKeyRecord>, StoreError> {
        let rows = sqlx::query(stmt(self.backend, 
            "SELECT api_key, secret, account_id, label, created_at FROM api_keys WHERE account_id = ? \
             ORDER BY created_at, api_key",
        ))
        .bind(to_sql(account.0, "account id")?)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(api_key_record).collect()
    }

    pub async fn meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar(stmt(self.backend, "SELECT value FROM meta WHERE name = ?")).bind(key).fetch_optional(&self.pool).await?)
    }

    /// Inserts or replaces.
    pub async fn set_meta(&self, key: &str, value: &str) -> Result<(), StoreError> {
        sqlx::query(stmt(self.backend, "INSERT INTO meta (name, value) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET value = excluded.value"))
            .bind(key)
            .bind(value)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

fn api_key_record(r: &AnyRow) -> Result<ApiKeyRecord, StoreError> {
    Ok(ApiKeyRecord {
        api_key: r.try_get(0)?,
        secret: r.try_get(1)?,
        account_id: AccountId(from_sql(r.try_get(2)?, "account id")?),
        label: r.try_get(3)?,
        created_at: Timestamp(from_sql(r.try_get(4)?, "timestamp")?),
    })
}
