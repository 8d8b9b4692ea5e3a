//! Signing refusals, for operators: who refused which spend, and why. Not projections: they
//! survive [`Store::reset_projections`].

use crate::stmt::stmt;
use crate::records::{from_sql, to_sql, RefusalRecord};
use crate::{Store, StoreError};
use sqlx::Row;
use tandem_matching::{AccountId, Timestamp};

impl Store {
    /// Records a refusal (its `id` is ignored and given by the store); answers the id.
    pub async fn insert_refusal(&self, r: &RefusalRecord) -> Result<u64, StoreError> {
        let account = r.account_id.map(|a| to_sql(a.0, "account id")).transpose()?;
        let row = sqlx::query(stmt(self.backend, 
            "INSERT INTO signing_refusals (at, signer, code, detail, purpose, execution_id, group_id, account_id) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
        ))
        .bind(to_sql(r.at.0, "timestamp")?)
        .bind(r.signer.as_str())
        .bind(r.code.as_str())
        .bind(r.detail.as_str())
        .bind(r.purpose.as_str())
        .bind(r.execution_id.as_str())
        .bind(r.group_id.as_deref())
        .bind(account)
        .fetch_one(&self.pool)
        .await?;
        from_sql(row.try_get(0)?, "refusal id")
    }

    /// The newest refusals first, at most `limit`, optionally of one account only.
    pub async fn refusals(&self, account: Option<AccountId>, limit: u32) -> Result<Vec<RefusalRecord>, StoreError> {
        let account = account.map(|a| to_sql(a.0, "account id")).transpose()?;
        let rows = sqlx::query(stmt(self.backend, 
            "SELECT id, at, signer, code, detail, purpose, execution_id, group_id, account_id FROM signing_refusals \
             WHERE (? IS NULL OR account_id = ?) ORDER BY id DESC LIMIT ?",
        ))
        .bind(account)
        .bind(account)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let account: Option<i64> = r.try_get(8)?;
                Ok(RefusalRecord {
                    id: from_sql(r.try_get(0)?, "refusal id")?,
                    at: Timestamp(from_sql(r.try_get(1)?, "timestamp")?),
                    signer: r.try_get(2)?,
                    code: r.try_get(3)?,
                    detail: r.try_get(4)?,
                    purpose: r.try_get(5)?,
                    execution_id: r.try_get(6)?,
                    group_id: r.try_get(7)?,
                    account_id: account.map(|a| from_sql(a, "account id").map(AccountId)).transpose()?,
                })
            })
            .collect()
    }
}

impl Store {
    /// Records the inputs of a spend the provider signed for `purpose` (idempotent).
    pub async fn record_provider_signature(
        &self,
        purpose: &str,
        txid: &str,
        outpoints: &[String],
        execution_id: &str,
        at: Timestamp,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        for outpoint in outpoints {
            sqlx::query(stmt(self.backend, 
                "INSERT INTO provider_signatures (purpose, txid, outpoint, execution_id, at) VALUES (?, ?, ?, ?, ?) \
                 ON CONFLICT DO NOTHING",
            ))
            .bind(purpose)
            .bind(txid)
            .bind(outpoint.as_str())
            .bind(execution_id)
            .bind(to_sql(at.0, "timestamp")?)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The signed spends of `purpose`: (txid, the outpoints it spends).
    pub async fn provider_signatures(&self, purpose: &str) -> Result<Vec<(String, Vec<String>)>, StoreError> {
        let rows = sqlx::query(stmt(self.backend, "SELECT txid, outpoint FROM provider_signatures WHERE purpose = ? ORDER BY txid, outpoint"))
            .bind(purpose)
            .fetch_all(&self.pool)
            .await?;
        let mut out: Vec<(String, Vec<String>)> = Vec::new();
        for r in &rows {
            let (txid, outpoint): (String, String) = (r.try_get(0)?, r.try_get(1)?);
            match out.last_mut() {
                Some((t, ops)) if *t == txid => ops.push(outpoint),
                _ => out.push((txid, vec![outpoint])),
            }
        }
        Ok(out)
    }
}
