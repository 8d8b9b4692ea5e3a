//! Co-signers registered by the operator: the identity keys that may act as the co-signer of
//! MPC sessions on the relay. Like device keys they are not projections: they survive
//! [`Store::reset_projections`]. Never deleted (a co-signer is never revoked here, so caches of
//! this table cannot go stale).

use crate::stmt::stmt;
use crate::records::{from_sql, to_sql, CosignerRecord};
use crate::{Store, StoreError};
use sqlx::any::AnyRow;
use sqlx::Row;
use tandem_matching::Timestamp;

impl Store {
    /// Registers a co-signer; an already registered `identity_pubkey` is a
    /// [`StoreError::Conflict`].
    pub async fn insert_cosigner(&self, cosigner: &CosignerRecord) -> Result<(), StoreError> {
        let result = sqlx::query(stmt(self.backend, "INSERT INTO cosigners (identity_pubkey, label, created_at) VALUES (?, ?, ?)"))
            .bind(cosigner.identity_pubkey.as_str())
            .bind(cosigner.label.as_str())
            .bind(to_sql(cosigner.created_at.0, "timestamp")?)
            .execute(&self.pool)
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                Err(StoreError::Conflict(format!("co-signer {} is already registered", cosigner.identity_pubkey)))
            }
            Err(e) => Err(e.into()),
        }
    }

    pub async fn cosigner(&self, identity_pubkey: &str) -> Result<Option<CosignerRecord>, StoreError> {
        let row = sqlx::query(stmt(self.backend, "SELECT identity_pubkey, label, created_at FROM cosigners WHERE identity_pubkey = ?"))
            .bind(identity_pubkey)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(cosigner_record).transpose()
    }

    /// Every co-signer, oldest first.
    pub async fn cosigners(&self) -> Result<Vec<CosignerRecord>, StoreError> {
        let rows = sqlx::query(stmt(self.backend, 
            "SELECT identity_pubkey, label, created_at FROM cosigners ORDER BY created_at, identity_pubkey",
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(cosigner_record).collect()
    }
}

fn cosigner_record(r: &AnyRow) -> Result<CosignerRecord, StoreError> {
    Ok(CosignerRecord {
        identity_pubkey: r.try_get(0)?,
        label: r.try_get(1)?,
        created_at: Timestamp(from_sql(r.try_get(2)?, "timestamp")?),
    })
}
