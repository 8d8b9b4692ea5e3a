//! Wallet device keys and single-use enrolment codes. Like API keys they are not projections:
//! they survive [`Store::reset_projections`].
//!
//! Enrolling a wallet is three steps, each atomic on its own: consume the code (one
//! `UPDATE ... WHERE used_at IS NULL`, so two wallets can never both use it), open the account
//! in the engine, then register the device key and bind the code to the account in one
//! transaction. If the middle step fails, [`Store::release_enrolment_code`] hands the code back.

use crate::stmt::stmt;
use crate::records::{from_sql, to_sql, DeviceKeyRecord, EnrolmentCodeRecord};
use crate::{Store, StoreError};
use sqlx::any::AnyRow;
use sqlx::Row;
use tandem_matching::{AccountId, Timestamp};

impl Store {
    /// Registers a device key; an already registered `device_pubkey` is a
    /// [`StoreError::Conflict`]. With `code_hash`, the same transaction binds that (consumed,
    /// still unbound) enrolment code to the device's account; a code in any other state is a
    /// conflict too and nothing is written.
    pub async fn insert_device_key(&self, key: &DeviceKeyRecord, code_hash: Option<&str>) -> Result<(), StoreError> {
        let account = to_sql(key.account_id.0, "account id")?;
        let mut tx = self.begin_write().await?;
        let inserted =
            sqlx::query(stmt(self.backend, "INSERT INTO device_keys (device_pubkey, account_id, label, created_at) VALUES (?, ?, ?, ?)"))
                .bind(key.device_pubkey.as_str())
                .bind(account)
                .bind(key.label.as_str())
                .bind(to_sql(key.created_at.0, "timestamp")?)
                .execute(&mut *tx)
                .await;
        match inserted {
            Ok(_) => {}
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                return Err(StoreError::Conflict(format!("device key {} is already registered", key.device_pubkey)));
            }
            Err(e) => return Err(e.into()),
        }
        if let Some(code_hash) = code_hash {
            let bound = sqlx::query(stmt(self.backend, 
                "UPDATE enrolment_codes SET account_id = ? \
                 WHERE code_hash = ? AND used_at IS NOT NULL AND account_id IS NULL",
            ))
            .bind(account)
            .bind(code_hash)
            .execute(&mut *tx)
            .await?;
            if bound.rows_affected() != 1 {
                return Err(StoreError::Conflict("the enrolment code is not consumed or already bound".into()));
            }
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn device_key(&self, device_pubkey: &str) -> Result<Option<DeviceKeyRecord>, StoreError> {
        let row =
            sqlx::query(stmt(self.backend, "SELECT device_pubkey, account_id, label, created_at FROM device_keys WHERE device_pubkey = ?"))
                .bind(device_pubkey)
                .fetch_optional(&self.pool)
                .await?;
        row.as_ref().map(device_key_record).transpose()
    }

    /// The account's device keys, oldest first.
    pub async fn device_keys_for(&self, account: AccountId) -> Result<Vec<DeviceKeyRecord>, StoreError> {
        let rows = sqlx::query(stmt(self.backend, 
            "SELECT device_pubkey, account_id, label, created_at FROM device_keys WHERE account_id = ? \
             ORDER BY created_at, device_pubkey",
        ))
        .bind(to_sql(account.0, "account id")?)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(device_key_record).collect()
    }

    /// Stores a fresh code (its `used_at` and `account_id` are ignored: a new code is unused).
    /// An existing hash is a [`StoreError::Conflict`].
    pub async fn insert_enrolment_code(&self, code: &EnrolmentCodeRecord) -> Result<(), StoreError> {
        let result = sqlx::query(stmt(self.backend, 
            "INSERT INTO enrolment_codes (code_hash, label, created_at, used_at, account_id) VALUES (?, ?, ?, NULL, NULL)",
        ))
        .bind(code.code_hash.as_str())
        .bind(code.label.as_str())
        .bind(to_sql(code.created_at.0, "timestamp")?)
        .execute(&self.pool)
        .await;
        match result {
            Ok(_) => Ok(()),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                Err(StoreError::Conflict("enrolment code already exists".into()))
            }
            Err(e) => Err(e.into()),
        }
    }

    pub async fn enrolment_code(&self, code_hash: &str) -> Result<Option<EnrolmentCodeRecord>, StoreError> {
        let row = sqlx::query(stmt(self.backend, 
            "SELECT code_hash, label, created_at, used_at, account_id FROM enrolment_codes WHERE code_hash = ?",
        ))
        .bind(code_hash)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(enrolment_code_record).transpose()
    }

    /// Marks an unused code used, atomically: true for exactly one caller, false if the code
    /// does not exist or was already used.
    pub async fn consume_enrolment_code(&self, code_hash: &str, used_at: Timestamp) -> Result<bool, StoreError> {
        let done = sqlx::query(stmt(self.backend, "UPDATE enrolment_codes SET used_at = ? WHERE code_hash = ? AND used_at IS NULL"))
            .bind(to_sql(used_at.0, "timestamp")?)
            .bind(code_hash)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Undoes [`Store::consume_enrolment_code`] when the enrolment failed before an account was
    /// bound to the code; `used_at` must be the consuming call's, so only that caller releases
    /// it. True if the code is usable again.
    pub async fn release_enrolment_code(&self, code_hash: &str, used_at: Timestamp) -> Result<bool, StoreError> {
        let done = sqlx::query(stmt(self.backend, 
            "UPDATE enrolment_codes SET used_at = NULL WHERE code_hash = ? AND used_at = ? AND account_id IS NULL",
        ))
        .bind(code_hash)
        .bind(to_sql(used_at.0, "timestamp")?)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }
}

fn device_key_record(r: &AnyRow) -> Result<DeviceKeyRecord, StoreError> {
    Ok(DeviceKeyRecord {
        device_pubkey: r.try_get(0)?,
        account_id: AccountId(from_sql(r.try_get(1)?, "account id")?),
        label: r.try_get(2)?,
        created_at: Timestamp(from_sql(r.try_get(3)?, "timestamp")?),
    })
}

fn enrolment_code_record(r: &AnyRow) -> Result<EnrolmentCodeRecord, StoreError> {
    let used_at: Option<i64> = r.try_get(3)?;
    let account: Option<i64> = r.try_get(4)?;
    Ok(EnrolmentCodeRecord {
        code_hash: r.try_get(0)?,
        label: r.try_get(1)?,
        created_at: Timestamp(from_sql(r.try_get(2)?, "timestamp")?),
        used_at: used_at.map(|t| from_sql(t, "timestamp").map(Timestamp)).transpose()?,
        account_id: account.map(|a| from_sql(a, "account id").map(AccountId)).transpose()?,
    })
}
