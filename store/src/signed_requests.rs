//! Requests signed by a wallet's device key that created obligations (see
//! migrations/sqlite/0007), and the settlement service's list of late holders. Not projections:
//! they survive [`Store::reset_projections`].

use crate::stmt::stmt;
use crate::records::{from_sql, to_sql};
use crate::{Store, StoreError};
use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::Row;
use tandem_matching::{AccountId, Seq, Timestamp};

/// What a signed request became.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SignedRequestKind {
    Order,
    Withdrawal,
}

impl SignedRequestKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SignedRequestKind::Order => "order",
            SignedRequestKind::Withdrawal => "withdrawal",
        }
    }

    fn parse(s: &str) -> Result<Self, StoreError> {
        match s {
            "order" => Ok(SignedRequestKind::Order),
            "withdrawal" => Ok(SignedRequestKind::Withdrawal),
            other => Err(StoreError::Corrupt(format!("unknown signed request kind {other:?}"))),
        }
    }
}

/// A device-signed request, exactly as it was signed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SignedRequestRecord {
    pub kind: SignedRequestKind,
    /// The order id or withdrawal id.
    pub ref_id: u64,
    pub account_id: AccountId,
    pub seq: Seq,
    pub device_pubkey: String,
    pub timestamp_ms: u64,
    pub method: String,
    pub path: String,
    pub body: Vec<u8>,
    pub signature: String,
}

/// A holder that missed a batch's signing deadline.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LateHolder {
    pub holder: AccountId,
    pub batch: u64,
    pub since: Timestamp,
}

const COLUMNS: &str = "kind, ref_id, account_id, seq, device_pubkey, timestamp_ms, method, path, body, signature";

impl Store {
    /// Keeps a signed request. The same (kind, ref_id) again changes nothing: a request becomes
    /// one order or withdrawal, once.
    pub async fn insert_signed_request(&self, r: &SignedRequestRecord) -> Result<(), StoreError> {
        sqlx::query(stmt(self.backend, &format!(
            "INSERT INTO signed_requests ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (kind, ref_id) DO NOTHING"
        )))
        .bind(r.kind.as_str())
        .bind(to_sql(r.ref_id, "reference id")?)
        .bind(to_sql(r.account_id.0, "account id")?)
        .bind(to_sql(r.seq.0, "seq")?)
        .bind(r.device_pubkey.as_str())
        .bind(to_sql(r.timestamp_ms, "timestamp")?)
        .bind(r.method.as_str())
        .bind(r.path.as_str())
        .bind(r.body.as_slice())
        .bind(r.signature.as_str())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The signed requests these orders were placed by (those that have one).
    pub async fn signed_orders(&self, order_ids: &[u64]) -> Result<Vec<SignedRequestRecord>, StoreError> {
        let mut out = Vec::with_capacity(order_ids.len());
        for id in order_ids {
            let row = sqlx::query(stmt(self.backend, &format!("SELECT {COLUMNS} FROM signed_requests WHERE kind = 'order' AND ref_id = ?")))
                .bind(to_sql(*id, "order id")?)
                .fetch_optional(&self.pool)
                .await?;
            if let Some(r) = row {
                out.push(record(&r)?);
            }
        }
        Ok(out)
    }

    /// An account's signed withdrawal requests whose command has a sequence number in
    /// `(after, through]`, by sequence number.
    pub async fn signed_withdrawals(&self, account: AccountId, after: Seq, through: Seq) -> Result<Vec<SignedRequestRecord>, StoreError> {
        let rows = sqlx::query(stmt(self.backend, &format!(
            "SELECT {COLUMNS} FROM signed_requests WHERE kind = 'withdrawal' AND account_id = ? AND seq > ? AND seq <= ? ORDER BY seq"
        )))
        .bind(to_sql(account.0, "account id")?)
        .bind(to_sql(after.0, "seq")?)
        .bind(to_sql(through.0, "seq")?)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(record).collect()
    }

    /// Notes a holder late for `batch` (a holder already late keeps its first entry).
    pub async fn mark_late(&self, holder: AccountId, batch: u64, since: Timestamp) -> Result<(), StoreError> {
        sqlx::query(stmt(self.backend, "INSERT INTO settlement_late (holder, batch, since) VALUES (?, ?, ?) ON CONFLICT (holder) DO NOTHING"))
            .bind(to_sql(holder.0, "account id")?)
            .bind(to_sql(batch, "batch id")?)
            .bind(to_sql(since.0, "timestamp")?)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The holder is no longer late (it settled, or was force-settled).
    pub async fn clear_late(&self, holder: AccountId) -> Result<(), StoreError> {
        sqlx::query(stmt(self.backend, "DELETE FROM settlement_late WHERE holder = ?")).bind(to_sql(holder.0, "account id")?).execute(&self.pool).await?;
        Ok(())
    }

    /// Every late holder, longest late first.
    pub async fn late_holders(&self) -> Result<Vec<LateHolder>, StoreError> {
        let rows = sqlx::query(stmt(self.backend, "SELECT holder, batch, since FROM settlement_late ORDER BY since, holder")).fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| {
                Ok(LateHolder {
                    holder: AccountId(from_sql(r.try_get(0)?, "account id")?),
                    batch: from_sql(r.try_get(1)?, "batch id")?,
                    since: Timestamp(from_sql(r.try_get(2)?, "timestamp")?),
                })
            })
            .collect()
    }
}

fn record(r: &AnyRow) -> Result<SignedRequestRecord, StoreError> {
    Ok(SignedRequestRecord {
        kind: SignedRequestKind::parse(r.try_get::<&str, _>(0)?)?,
        ref_id: from_sql(r.try_get(1)?, "reference id")?,
        account_id: AccountId(from_sql(r.try_get(2)?, "account id")?),
        seq: Seq(from_sql(r.try_get(3)?, "seq")?),
        device_pubkey: r.try_get(4)?,
        timestamp_ms: from_sql(r.try_get(5)?, "timestamp")?,
        method: r.try_get(6)?,
        path: r.try_get(7)?,
        body: r.try_get(8)?,
        signature: r.try_get(9)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(kind: SignedRequestKind, ref_id: u64, account: u64, seq: u64) -> SignedRequestRecord {
        SignedRequestRecord {
            kind,
            ref_id,
            account_id: AccountId(account),
            seq: Seq(seq),
            device_pubkey: "ab".repeat(32),
            timestamp_ms: 1_700_000_000_000 + seq,
            method: "POST".into(),
            path: "/v1/orders".into(),
            body: format!("{{\"n\":{ref_id}}}").into_bytes(),
            signature: "cd".repeat(64),
        }
    }

    #[tokio::test]
    async fn signed_requests_are_kept_once_and_found_by_order_or_window() {
        for store in crate::test_stores().await {
            let first = request(SignedRequestKind::Order, 5, 7, 10);
            store.insert_signed_request(&first).await.unwrap();
            // The same order again (a retried write) keeps the first.
            store.insert_signed_request(&SignedRequestRecord { body: b"other".to_vec(), ..first.clone() }).await.unwrap();
            store.insert_signed_request(&request(SignedRequestKind::Withdrawal, 5, 7, 11)).await.unwrap();
            store.insert_signed_request(&request(SignedRequestKind::Withdrawal, 6, 7, 20)).await.unwrap();
            store.insert_signed_request(&request(SignedRequestKind::Withdrawal, 7, 8, 15)).await.unwrap();

            assert_eq!(store.signed_orders(&[5, 99]).await.unwrap(), vec![first]);
            let w = store.signed_withdrawals(AccountId(7), Seq(10), Seq(20)).await.unwrap();
            assert_eq!(w.iter().map(|r| r.ref_id).collect::<Vec<_>>(), vec![5, 6]);
            let w = store.signed_withdrawals(AccountId(7), Seq(11), Seq(19)).await.unwrap();
            assert!(w.is_empty(), "{w:?}");
            // Kept across a rebuild of the projections.
            store.reset_projections().await.unwrap();
            assert_eq!(store.signed_orders(&[5]).await.unwrap().len(), 1);
        }
    }

    #[tokio::test]
    async fn late_holders_keep_their_first_batch_until_cleared() {
        for store in crate::test_stores().await {
            store.mark_late(AccountId(9), 3, Timestamp(2_000)).await.unwrap();
            store.mark_late(AccountId(9), 4, Timestamp(3_000)).await.unwrap();
            store.mark_late(AccountId(8), 4, Timestamp(1_000)).await.unwrap();
            let late = store.late_holders().await.unwrap();
            assert_eq!(late.iter().map(|l| (l.holder.0, l.batch)).collect::<Vec<_>>(), vec![(8, 4), (9, 3)]);
            store.clear_late(AccountId(8)).await.unwrap();
            assert_eq!(store.late_holders().await.unwrap().len(), 1);
        }
    }
}
