//! Vaults (signer groups owned by an account) and their deposit addresses, as registered by the
//! provider's vault service. Not projections: they survive [`Store::reset_projections`].

use crate::stmt::stmt;
use crate::records::{from_sql, to_sql, VaultAddressRecord, VaultRecord};
use crate::{Store, StoreError};
use sqlx::any::AnyRow;
use sqlx::Row;
use tandem_matching::{AccountId, Timestamp};

const VAULT_COLUMNS: &str = "group_id, account_id, policy, wallet_identity, cosigner_identity, created_at";

impl Store {
    /// Registers a vault; an already registered `group_id` is a [`StoreError::Conflict`].
    pub async fn insert_vault(&self, v: &VaultRecord) -> Result<(), StoreError> {
        let result = sqlx::query(stmt(self.backend, &format!("INSERT INTO vaults ({VAULT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)")))
            .bind(v.group_id.as_str())
            .bind(to_sql(v.account_id.0, "account id")?)
            .bind(v.policy.as_str())
            .bind(v.wallet_identity.as_str())
            .bind(v.cosigner_identity.as_deref())
            .bind(to_sql(v.created_at.0, "timestamp")?)
            .execute(&self.pool)
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                Err(StoreError::Conflict(format!("vault {} is already registered", v.group_id)))
            }
            Err(e) => Err(e.into()),
        }
    }

    pub async fn vault(&self, group_id: &str) -> Result<Option<VaultRecord>, StoreError> {
        let row = sqlx::query(stmt(self.backend, &format!("SELECT {VAULT_COLUMNS} FROM vaults WHERE group_id = ?")))
            .bind(group_id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(vault_record).transpose()
    }

    /// An account's vaults, oldest first.
    pub async fn vaults_for(&self, account: AccountId) -> Result<Vec<VaultRecord>, StoreError> {
        let rows = sqlx::query(stmt(self.backend, &format!(
            "SELECT {VAULT_COLUMNS} FROM vaults WHERE account_id = ? ORDER BY created_at, group_id"
        )))
        .bind(to_sql(account.0, "account id")?)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(vault_record).collect()
    }

    /// Registers a vault address; a taken address or key index is a [`StoreError::Conflict`].
    pub async fn insert_vault_address(&self, a: &VaultAddressRecord) -> Result<(), StoreError> {
        let result =
            sqlx::query(stmt(self.backend, "INSERT INTO vault_addresses (address, group_id, key_index, created_at) VALUES (?, ?, ?, ?)"))
                .bind(a.address.as_str())
                .bind(a.group_id.as_str())
                .bind(to_sql(a.key_index, "key index")?)
                .bind(to_sql(a.created_at.0, "timestamp")?)
                .execute(&self.pool)
                .await;
        match result {
            Ok(_) => Ok(()),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Err(StoreError::Conflict(format!(
                "address {} or key {} of vault {} is already registered",
                a.address, a.key_index, a.group_id
            ))),
            Err(e) => Err(e.into()),
        }
    }

    /// A vault's addresses, by key index.
    pub async fn vault_addresses(&self, group_id: &str) -> Result<Vec<VaultAddressRecord>, StoreError> {
        let rows = sqlx::query(stmt(self.backend, 
            "SELECT address, group_id, key_index, created_at FROM vault_addresses WHERE group_id = ? ORDER BY key_index",
        ))
        .bind(group_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(address_record).collect()
    }

    /// Every vault address the exchange manages (the provider's policy: inputs must come from
    /// them, change may return to them).
    pub async fn all_vault_addresses(&self) -> Result<Vec<VaultAddressRecord>, StoreError> {
        let rows = sqlx::query(stmt(self.backend, "SELECT address, group_id, key_index, created_at FROM vault_addresses ORDER BY address"))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(address_record).collect()
    }
}

fn address_record(r: &AnyRow) -> Result<VaultAddressRecord, StoreError> {
    Ok(VaultAddressRecord {
        address: r.try_get(0)?,
        group_id: r.try_get(1)?,
        key_index: from_sql(r.try_get(2)?, "key index")?,
        created_at: Timestamp(from_sql(r.try_get(3)?, "timestamp")?),
    })
}

fn vault_record(r: &AnyRow) -> Result<VaultRecord, StoreError> {
    Ok(VaultRecord {
        group_id: r.try_get(0)?,
        account_id: AccountId(from_sql(r.try_get(1)?, "account id")?),
        policy: r.try_get(2)?,
        wallet_identity: r.try_get(3)?,
        cosigner_identity: r.try_get(4)?,
        created_at: Timestamp(from_sql(r.try_get(5)?, "timestamp")?),
    })
}
