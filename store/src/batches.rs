//! Settlement batches: the settlement service's own durable state machine (see
//! migrations/sqlite/0006), its signed transaction versions and the input signatures collected
//! so far. Not projections: they survive [`Store::reset_projections`].

use crate::stmt::stmt;
use crate::records::{from_sql, small_from_sql, to_sql};
use crate::{Store, StoreError};
use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::Row;
use tandem_matching::{AccountId, Seq, Timestamp};

/// A settlement batch. `status` is "planned", "booked", "signed", "broadcast", "confirmed" or
/// "cancelled"; the store does not interpret it beyond [`Store::unfinished_batches`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BatchRecord {
    /// The engine's batch id, chosen by the service (increasing).
    pub id: u64,
    pub status: String,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// The engine asset id.
    pub asset: u16,
    /// Sat per kvB.
    pub fee_rate: u64,
    pub vbytes: u64,
    /// The planned fee in sat (each version records its own).
    pub fee: u64,
    /// JSON written by the service (inputs, outputs, legs, deferred).
    pub plan: String,
    /// Base64 unsigned PSBT of version 0.
    pub psbt: String,
    /// The current version number (0 = as planned).
    pub bumps: u32,
    pub confirmations: u32,
    pub confirmed_height: Option<u32>,
    pub confirmed_version: Option<u32>,
    pub last_error: Option<String>,
}

/// One holder's leg of a batch: how its vault's holdings change (sat, signed) and its fee share.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct BatchLegRecord {
    pub holder: AccountId,
    pub delta: i64,
    pub fee: u64,
}

/// A fully signed transaction version of a batch (0 = as planned, k = after k RBF bumps).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BatchVersionRecord {
    pub batch: u64,
    pub version: u32,
    pub txid: String,
    /// The signed transaction, hex.
    pub tx_hex: String,
    /// Sat.
    pub fee: u64,
    pub created_at: Timestamp,
    /// The last time it was sent to the chain.
    pub broadcast_at: Option<Timestamp>,
}

const BATCH_COLUMNS: &str = "id, status, created_at, updated_at, asset, fee_rate, vbytes, fee, plan, psbt, bumps, \
                             confirmations, confirmed_height, confirmed_version, last_error";
const VERSION_COLUMNS: &str = "batch, version, txid, tx_hex, fee, created_at, broadcast_at";

/// The most [`Store::batches`] answers.
const MAX_BATCHES: u32 = 1000;

impl Store {
    /// Records a planned batch and its legs, cut at `cut` (in one transaction); an id already
    /// taken is a [`StoreError::Conflict`] and changes nothing.
    pub async fn insert_batch(&self, b: &BatchRecord, cut: Seq, legs: &[BatchLegRecord]) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        let result = sqlx::query(stmt(self.backend, &format!(
            "INSERT INTO settlement_batches ({BATCH_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        )))
        .bind(to_sql(b.id, "batch id")?)
        .bind(b.status.as_str())
        .bind(to_sql(b.created_at.0, "timestamp")?)
        .bind(to_sql(b.updated_at.0, "timestamp")?)
        .bind(i64::from(b.asset))
        .bind(to_sql(b.fee_rate, "fee rate")?)
        .bind(to_sql(b.vbytes, "vbytes")?)
        .bind(to_sql(b.fee, "fee")?)
        .bind(b.plan.as_str())
        .bind(b.psbt.as_str())
        .bind(i64::from(b.bumps))
        .bind(i64::from(b.confirmations))
        .bind(b.confirmed_height.map(i64::from))
        .bind(b.confirmed_version.map(i64::from))
        .bind(b.last_error.as_deref())
        .execute(&mut *tx)
        .await;
        match result {
            Ok(_) => {}
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                tx.rollback().await?;
                return Err(StoreError::Conflict(format!("batch {} is already recorded", b.id)));
            }
            Err(e) => return Err(e.into()),
        }
        for leg in legs {
            sqlx::query(stmt(self.backend, "INSERT INTO settlement_legs (batch, holder, delta, fee, cut_seq) VALUES (?, ?, ?, ?, ?)"))
                .bind(to_sql(b.id, "batch id")?)
                .bind(to_sql(leg.holder.0, "account id")?)
                .bind(leg.delta)
                .bind(to_sql(leg.fee, "fee")?)
                .bind(to_sql(cut.0, "seq")?)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The sequence number a batch's window was cut at (`None` for an unknown batch, or one
    /// recorded without legs).
    pub async fn batch_cut(&self, batch: u64) -> Result<Option<Seq>, StoreError> {
        let cut: Option<i64> = sqlx::query_scalar(stmt(self.backend, "SELECT MAX(cut_seq) FROM settlement_legs WHERE batch = ?"))
            .bind(to_sql(batch, "batch id")?)
            .fetch_one(&self.pool)
            .await?;
        cut.map(|c| from_sql(c, "seq").map(Seq)).transpose()
    }

    /// Where `holder`'s last confirmed leg was cut: everything it did up to there is settled on
    /// chain. `Seq(0)` if it never had a confirmed leg.
    pub async fn settled_through(&self, holder: AccountId) -> Result<Seq, StoreError> {
        let cut: Option<i64> = sqlx::query_scalar(stmt(self.backend, 
            "SELECT MAX(l.cut_seq) FROM settlement_legs l JOIN settlement_batches b ON b.id = l.batch \
             WHERE l.holder = ? AND b.status = 'confirmed'",
        ))
        .bind(to_sql(holder.0, "account id")?)
        .fetch_one(&self.pool)
        .await?;
        Ok(Seq(from_sql(cut.unwrap_or(0), "seq")?))
    }

    pub async fn batch(&self, id: u64) -> Result<Option<BatchRecord>, StoreError> {
        let row = sqlx::query(stmt(self.backend, &format!("SELECT {BATCH_COLUMNS} FROM settlement_batches WHERE id = ?")))
            .bind(to_sql(id, "batch id")?)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(batch_record).transpose()
    }

    /// Newest first; `status: Some(s)` filters; limit 1..=1000 (a value outside is clamped).
    pub async fn batches(&self, status: Option<&str>, limit: u32) -> Result<Vec<BatchRecord>, StoreError> {
        let limit = i64::from(limit.clamp(1, MAX_BATCHES));
        let rows = match status {
            Some(status) => {
                sqlx::query(stmt(self.backend, &format!(
                    "SELECT {BATCH_COLUMNS} FROM settlement_batches WHERE status = ? ORDER BY id DESC LIMIT ?"
                )))
                .bind(status)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?
            }
            None => {
                sqlx::query(stmt(self.backend, &format!("SELECT {BATCH_COLUMNS} FROM settlement_batches ORDER BY id DESC LIMIT ?")))
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?
            }
        };
        rows.iter().map(batch_record).collect()
    }

    /// Every batch whose status is not 'confirmed' or 'cancelled', oldest first: what the
    /// service resumes after a restart.
    pub async fn unfinished_batches(&self) -> Result<Vec<BatchRecord>, StoreError> {
        let rows = sqlx::query(stmt(self.backend, &format!(
            "SELECT {BATCH_COLUMNS} FROM settlement_batches WHERE status NOT IN ('confirmed', 'cancelled') ORDER BY id"
        )))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(batch_record).collect()
    }

    /// The highest batch id recorded, 0 if none.
    pub async fn last_batch_id(&self) -> Result<u64, StoreError> {
        let id: i64 =
            sqlx::query_scalar(stmt(self.backend, "SELECT COALESCE(MAX(id), 0) FROM settlement_batches")).fetch_one(&self.pool).await?;
        from_sql(id, "batch id")
    }

    /// Moves a batch from `from` to `to` (and sets updated_at); answers false (and changes
    /// nothing) if its status was not `from`, or there is no such batch: a compare-and-set, so
    /// two writers cannot both move it.
    pub async fn set_batch_status(&self, id: u64, from: &str, to: &str, at: Timestamp) -> Result<bool, StoreError> {
        let result =
            sqlx::query(stmt(self.backend, "UPDATE settlement_batches SET status = ?, updated_at = ? WHERE id = ? AND status = ?"))
                .bind(to)
                .bind(to_sql(at.0, "timestamp")?)
                .bind(to_sql(id, "batch id")?)
                .bind(from)
                .execute(&self.pool)
                .await?;
        Ok(result.rows_affected() == 1)
    }

    /// Sets (or with `None` clears) a batch's last error. An unknown batch changes nothing.
    pub async fn set_batch_error(&self, id: u64, error: Option<&str>, at: Timestamp) -> Result<(), StoreError> {
        sqlx::query(stmt(self.backend, "UPDATE settlement_batches SET last_error = ?, updated_at = ? WHERE id = ?"))
            .bind(error)
            .bind(to_sql(at.0, "timestamp")?)
            .bind(to_sql(id, "batch id")?)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Records how deep a batch is confirmed, at which height and by which version (`None`s
    /// after a reorg took it out). An unknown batch changes nothing.
    pub async fn set_batch_confirmations(
        &self,
        id: u64,
        confirmations: u32,
        height: Option<u32>,
        version: Option<u32>,
        at: Timestamp,
    ) -> Result<(), StoreError> {
        sqlx::query(stmt(self.backend, 
            "UPDATE settlement_batches SET confirmations = ?, confirmed_height = ?, confirmed_version = ?, updated_at = ? \
             WHERE id = ?",
        ))
        .bind(i64::from(confirmations))
        .bind(height.map(i64::from))
        .bind(version.map(i64::from))
        .bind(to_sql(at.0, "timestamp")?)
        .bind(to_sql(id, "batch id")?)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records a fully signed version and makes it the batch's current version (`bumps =
    /// version`, `updated_at = created_at`), in one transaction. An unknown batch, or a version
    /// already recorded, is a [`StoreError::Conflict`] and changes nothing.
    pub async fn insert_batch_version(&self, v: &BatchVersionRecord) -> Result<(), StoreError> {
        let batch = to_sql(v.batch, "batch id")?;
        let created_at = to_sql(v.created_at.0, "timestamp")?;
        let broadcast_at = v.broadcast_at.map(|t| to_sql(t.0, "timestamp")).transpose()?;
        let mut tx = self.begin_write().await?;
        let updated = sqlx::query(stmt(self.backend, "UPDATE settlement_batches SET bumps = ?, updated_at = ? WHERE id = ?"))
            .bind(i64::from(v.version))
            .bind(created_at)
            .bind(batch)
            .execute(&mut *tx)
            .await?;
        if updated.rows_affected() == 0 {
            tx.rollback().await?;
            return Err(StoreError::Conflict(format!("no batch {} to add version {} to", v.batch, v.version)));
        }
        let result = sqlx::query(stmt(self.backend, &format!(
            "INSERT INTO settlement_batch_versions ({VERSION_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)"
        )))
        .bind(batch)
        .bind(i64::from(v.version))
        .bind(v.txid.as_str())
        .bind(v.tx_hex.as_str())
        .bind(to_sql(v.fee, "fee")?)
        .bind(created_at)
        .bind(broadcast_at)
        .execute(&mut *tx)
        .await;
        match result {
            Ok(_) => {}
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                tx.rollback().await?;
                return Err(StoreError::Conflict(format!(
                    "version {} of batch {} is already recorded",
                    v.version, v.batch
                )));
            }
            Err(e) => return Err(e.into()),
        }
        tx.commit().await?;
        Ok(())
    }

    /// A batch's signed versions, by version.
    pub async fn batch_versions(&self, batch: u64) -> Result<Vec<BatchVersionRecord>, StoreError> {
        let rows = sqlx::query(stmt(self.backend, &format!(
            "SELECT {VERSION_COLUMNS} FROM settlement_batch_versions WHERE batch = ? ORDER BY version"
        )))
        .bind(to_sql(batch, "batch id")?)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(version_record).collect()
    }

    /// The batch and version whose transaction has this txid, if any: the settlement service's
    /// own transactions, which are never deposits.
    pub async fn batch_of_txid(&self, txid: &str) -> Result<Option<(u64, u32)>, StoreError> {
        let row = sqlx::query(stmt(self.backend, "SELECT batch, version FROM settlement_batch_versions WHERE txid = ? LIMIT 1"))
            .bind(txid)
            .fetch_optional(&self.pool)
            .await?;
        let Some(r) = row else { return Ok(None) };
        let version = u32::try_from(r.try_get::<i64, _>(1)?)
            .map_err(|_| StoreError::Corrupt("a batch version out of range".into()))?;
        Ok(Some((from_sql(r.try_get(0)?, "batch id")?, version)))
    }

    /// Whether `txid` is the version of a confirmed batch that the chain confirmed: its outputs
    /// are coins the ledger counts.
    pub async fn confirmed_batch_txid(&self, txid: &str) -> Result<bool, StoreError> {
        let row = sqlx::query(stmt(self.backend, 
            "SELECT 1 FROM settlement_batch_versions v JOIN settlement_batches b ON b.id = v.batch \
             WHERE v.txid = ? AND b.status = 'confirmed' AND b.confirmed_version = v.version LIMIT 1",
        ))
        .bind(txid)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.is_some())
    }

    /// The fees of every confirmed batch, as its confirmed version paid them (bumps included).
    pub async fn confirmed_fees_total(&self) -> Result<u64, StoreError> {
        let total: Option<i64> = sqlx::query_scalar(stmt(self.backend, 
            "SELECT CAST(SUM(v.fee) AS BIGINT) FROM settlement_batch_versions v JOIN settlement_batches b ON b.id = v.batch \
             WHERE b.status = 'confirmed' AND b.confirmed_version = v.version",
        ))
        .fetch_one(&self.pool)
        .await?;
        from_sql(total.unwrap_or(0), "fees total")
    }

    /// Notes that a version was (re)sent to the chain at `at`. An unknown version changes nothing.
    pub async fn mark_batch_broadcast(&self, batch: u64, version: u32, at: Timestamp) -> Result<(), StoreError> {
        sqlx::query(stmt(self.backend, "UPDATE settlement_batch_versions SET broadcast_at = ? WHERE batch = ? AND version = ?"))
            .bind(to_sql(at.0, "timestamp")?)
            .bind(to_sql(batch, "batch id")?)
            .bind(i64::from(version))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Records the witness of one input of a version's unsigned transaction (hex of the
    /// consensus-encoded witness). Idempotent: if the input already has a witness, the first one
    /// is kept and this changes nothing.
    pub async fn add_batch_signature(
        &self,
        batch: u64,
        version: u32,
        input: u32,
        witness_hex: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(stmt(self.backend, 
            "INSERT INTO settlement_batch_signatures (batch, version, input, witness) VALUES (?, ?, ?, ?) \
             ON CONFLICT (batch, version, input) DO NOTHING",
        ))
        .bind(to_sql(batch, "batch id")?)
        .bind(i64::from(version))
        .bind(i64::from(input))
        .bind(witness_hex)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The witnesses collected for a version so far: (input, witness hex), by input.
    pub async fn batch_signatures(&self, batch: u64, version: u32) -> Result<Vec<(u32, String)>, StoreError> {
        let rows = sqlx::query(stmt(self.backend, 
            "SELECT input, witness FROM settlement_batch_signatures WHERE batch = ? AND version = ? ORDER BY input",
        ))
        .bind(to_sql(batch, "batch id")?)
        .bind(i64::from(version))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok((u32_from_sql(r.try_get(0)?, "input index")?, r.try_get(1)?))).collect()
    }
}

fn u32_from_sql(value: i64, what: &'static str) -> Result<u32, StoreError> {
    u32::try_from(value).map_err(|_| StoreError::Corrupt(format!("{what} {value} is out of range")))
}

fn batch_record(r: &AnyRow) -> Result<BatchRecord, StoreError> {
    let height: Option<i64> = r.try_get(12)?;
    let version: Option<i64> = r.try_get(13)?;
    Ok(BatchRecord {
        id: from_sql(r.try_get(0)?, "batch id")?,
        status: r.try_get(1)?,
        created_at: Timestamp(from_sql(r.try_get(2)?, "timestamp")?),
        updated_at: Timestamp(from_sql(r.try_get(3)?, "timestamp")?),
        asset: small_from_sql(r.try_get(4)?, "asset id")?,
        fee_rate: from_sql(r.try_get(5)?, "fee rate")?,
        vbytes: from_sql(r.try_get(6)?, "vbytes")?,
        fee: from_sql(r.try_get(7)?, "fee")?,
        plan: r.try_get(8)?,
        psbt: r.try_get(9)?,
        bumps: u32_from_sql(r.try_get(10)?, "batch version")?,
        confirmations: u32_from_sql(r.try_get(11)?, "confirmations")?,
        confirmed_height: height.map(|h| u32_from_sql(h, "block height")).transpose()?,
        confirmed_version: version.map(|v| u32_from_sql(v, "batch version")).transpose()?,
        last_error: r.try_get(14)?,
    })
}

fn version_record(r: &AnyRow) -> Result<BatchVersionRecord, StoreError> {
    let broadcast_at: Option<i64> = r.try_get(6)?;
    Ok(BatchVersionRecord {
        batch: from_sql(r.try_get(0)?, "batch id")?,
        version: u32_from_sql(r.try_get(1)?, "batch version")?,
        txid: r.try_get(2)?,
        tx_hex: r.try_get(3)?,
        fee: from_sql(r.try_get(4)?, "fee")?,
        created_at: Timestamp(from_sql(r.try_get(5)?, "timestamp")?),
        broadcast_at: broadcast_at.map(|t| from_sql(t, "timestamp").map(Timestamp)).transpose()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_700_000_000_000;

    fn batch(id: u64, status: &str) -> BatchRecord {
        BatchRecord {
            id,
            status: status.into(),
            created_at: Timestamp(T0 + id),
            updated_at: Timestamp(T0 + id),
            asset: 1,
            fee_rate: 2_000,
            vbytes: 400,
            fee: 800,
            plan: format!(r#"{{"inputs":[],"outputs":[],"legs":[{id}],"deferred":[]}}"#),
            psbt: "cHNidP8BAA==".into(),
            bumps: 0,
            confirmations: 0,
            confirmed_height: None,
            confirmed_version: None,
            last_error: None,
        }
    }

    fn version(batch: u64, version: u32) -> BatchVersionRecord {
        BatchVersionRecord {
            batch,
            version,
            txid: format!("{:064x}", batch * 100 + u64::from(version)),
            tx_hex: format!("02000000{version:02x}"),
            fee: 800 + 400 * u64::from(version),
            created_at: Timestamp(T0 + 1_000 + u64::from(version)),
            broadcast_at: None,
        }
    }

    #[tokio::test]
    async fn every_field_round_trips_and_ids_are_unique() {
        for store in crate::test_stores().await {
            assert_eq!(store.batch(1).await.unwrap(), None);
            let full = BatchRecord {
                id: 7,
                status: "broadcast".into(),
                created_at: Timestamp(T0),
                updated_at: Timestamp(T0 + 5),
                asset: u16::MAX,
                fee_rate: 12_345,
                vbytes: 678,
                fee: 8_370,
                plan: r#"{"inputs":["a:0"],"outputs":[{"address":"bc1q","value":1}],"legs":[3,4],"deferred":[5]}"#.into(),
                psbt: "cHNidP8BAHECAAAAAQ==".into(),
                bumps: 2,
                confirmations: u32::MAX,
                confirmed_height: Some(u32::MAX),
                confirmed_version: Some(1),
                last_error: Some("mempool min fee not met".into()),
            };
            store.insert_batch(&full, Seq(0), &[]).await.unwrap();
            store.insert_batch(&batch(8, "planned"), Seq(0), &[]).await.unwrap();
            assert_eq!(store.batch(7).await.unwrap(), Some(full.clone()));
            assert_eq!(store.batch(8).await.unwrap(), Some(batch(8, "planned")));
            let again = store.insert_batch(&batch(7, "planned"), Seq(0), &[]).await;
            assert!(matches!(again, Err(StoreError::Conflict(_))), "{again:?}");
            assert_eq!(store.batch(7).await.unwrap(), Some(full));
            // Values a column cannot hold are errors, not panics.
            let huge = BatchRecord { id: u64::MAX, ..batch(9, "planned") };
            assert!(matches!(store.insert_batch(&huge, Seq(0), &[]).await, Err(StoreError::Corrupt(_))));
            assert!(matches!(store.batch(u64::MAX).await, Err(StoreError::Corrupt(_))));
            sqlx::query(stmt(store.backend, "UPDATE settlement_batches SET bumps = -1 WHERE id = 8")).execute(&store.pool).await.unwrap();
            assert!(matches!(store.batch(8).await, Err(StoreError::Corrupt(_))));
        }
    }

    #[tokio::test]
    async fn listing_and_last_batch_id() {
        for store in crate::test_stores().await {
            assert_eq!(store.last_batch_id().await.unwrap(), 0);
            assert!(store.batches(None, 10).await.unwrap().is_empty());
            for (id, status) in
                [(1, "confirmed"), (2, "cancelled"), (3, "broadcast"), (5, "planned"), (9, "signed"), (12, "confirmed")]
            {
                store.insert_batch(&batch(id, status), Seq(0), &[]).await.unwrap();
            }
            assert_eq!(store.last_batch_id().await.unwrap(), 12);
            let ids = |v: Vec<BatchRecord>| v.into_iter().map(|b| b.id).collect::<Vec<_>>();
            assert_eq!(ids(store.batches(None, 1000).await.unwrap()), vec![12, 9, 5, 3, 2, 1]);
            assert_eq!(ids(store.batches(None, 2).await.unwrap()), vec![12, 9]);
            assert_eq!(ids(store.batches(None, 0).await.unwrap()), vec![12], "a limit of 0 is clamped to 1");
            assert_eq!(ids(store.batches(Some("confirmed"), 10).await.unwrap()), vec![12, 1]);
            assert_eq!(ids(store.batches(Some("booked"), 10).await.unwrap()), Vec::<u64>::new());
            assert_eq!(ids(store.unfinished_batches().await.unwrap()), vec![3, 5, 9]);
        }
    }

    #[tokio::test]
    async fn legs_tell_where_a_holder_is_settled_through_and_fees_follow_the_confirmed_version() {
        for store in crate::test_stores().await {
            let leg = |holder, delta| BatchLegRecord { holder: AccountId(holder), delta, fee: 100 };
            store.insert_batch(&batch(1, "planned"), Seq(40), &[leg(7, -500), leg(2, 400)]).await.unwrap();
            store.insert_batch(&batch(2, "planned"), Seq(90), &[leg(7, 300), leg(2, -400)]).await.unwrap();
            // A conflicting id records no legs either.
            assert!(store.insert_batch(&batch(2, "planned"), Seq(99), &[leg(8, 1)]).await.is_err());
            assert_eq!(store.batch_cut(2).await.unwrap(), Some(Seq(90)));
            assert_eq!(store.batch_cut(3).await.unwrap(), None);
            assert_eq!(store.settled_through(AccountId(7)).await.unwrap(), Seq(0), "nothing confirmed yet");
            store.set_batch_status(1, "planned", "confirmed", Timestamp(T0)).await.unwrap();
            assert_eq!(store.settled_through(AccountId(7)).await.unwrap(), Seq(40));
            store.set_batch_status(2, "planned", "confirmed", Timestamp(T0)).await.unwrap();
            assert_eq!(store.settled_through(AccountId(7)).await.unwrap(), Seq(90));
            assert_eq!(store.settled_through(AccountId(8)).await.unwrap(), Seq(0));

            // Fees paid: the confirmed version's, bump included.
            for (version, fee) in [(0, 1_000), (1, 2_500)] {
                let v = BatchVersionRecord {
                    batch: 1,
                    version,
                    txid: format!("{version:064}"),
                    tx_hex: "00".into(),
                    fee,
                    created_at: Timestamp(T0),
                    broadcast_at: None,
                };
                store.insert_batch_version(&v).await.unwrap();
            }
            assert_eq!(store.confirmed_fees_total().await.unwrap(), 0, "no version confirmed yet");
            store.set_batch_confirmations(1, 1, Some(500), Some(1), Timestamp(T0)).await.unwrap();
            assert_eq!(store.confirmed_fees_total().await.unwrap(), 2_500);
        }
    }

    /// Many writers race to move one batch (several service processes, say): exactly one does,
    /// on either engine, and what it wrote stays.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn racing_writers_move_a_batch_once() {
        for store in crate::test_stores().await {
            store.insert_batch(&batch(1, "planned"), Seq(0), &[]).await.unwrap();
            let racers: Vec<_> = (0..16)
                .map(|i| {
                    let store = store.clone();
                    tokio::spawn(async move { store.set_batch_status(1, "planned", "booked", Timestamp(T0 + i)).await.unwrap() })
                })
                .collect();
            let mut won = 0;
            for r in racers {
                won += usize::from(r.await.unwrap());
            }
            assert_eq!(won, 1, "{:?}: exactly one writer moves the batch", store.backend());
            assert_eq!(store.batch(1).await.unwrap().unwrap().status, "booked");
        }
    }

    #[tokio::test]
    async fn status_is_a_compare_and_set() {
        for store in crate::test_stores().await {
            store.insert_batch(&batch(1, "planned"), Seq(0), &[]).await.unwrap();
            assert!(!store.set_batch_status(1, "booked", "signed", Timestamp(T0 + 10)).await.unwrap());
            assert_eq!(store.batch(1).await.unwrap(), Some(batch(1, "planned")), "a wrong `from` changes nothing");
            assert!(!store.set_batch_status(2, "planned", "booked", Timestamp(T0 + 10)).await.unwrap(), "no such batch");
            assert!(store.set_batch_status(1, "planned", "booked", Timestamp(T0 + 10)).await.unwrap());
            assert!(
                !store.set_batch_status(1, "planned", "cancelled", Timestamp(T0 + 11)).await.unwrap(),
                "moved once only"
            );
            let b = store.batch(1).await.unwrap().unwrap();
            assert_eq!((b.status.as_str(), b.updated_at), ("booked", Timestamp(T0 + 10)));

            store.set_batch_error(1, Some("electrum timed out"), Timestamp(T0 + 12)).await.unwrap();
            let b = store.batch(1).await.unwrap().unwrap();
            assert_eq!((b.last_error.as_deref(), b.updated_at), (Some("electrum timed out"), Timestamp(T0 + 12)));
            store.set_batch_error(1, None, Timestamp(T0 + 13)).await.unwrap();
            assert_eq!(store.batch(1).await.unwrap().unwrap().last_error, None);

            store.set_batch_confirmations(1, 3, Some(840_000), Some(1), Timestamp(T0 + 14)).await.unwrap();
            let b = store.batch(1).await.unwrap().unwrap();
            assert_eq!(
                (b.confirmations, b.confirmed_height, b.confirmed_version, b.updated_at),
                (3, Some(840_000), Some(1), Timestamp(T0 + 14))
            );
            store.set_batch_confirmations(1, 0, None, None, Timestamp(T0 + 15)).await.unwrap();
            let b = store.batch(1).await.unwrap().unwrap();
            assert_eq!((b.confirmations, b.confirmed_height, b.confirmed_version), (0, None, None));
        }
    }

    #[tokio::test]
    async fn versions_and_signatures_round_trip() {
        for store in crate::test_stores().await {
            store.insert_batch(&batch(4, "signed"), Seq(0), &[]).await.unwrap();
            store.insert_batch(&batch(5, "signed"), Seq(0), &[]).await.unwrap();

            let orphan = store.insert_batch_version(&version(6, 0)).await;
            assert!(matches!(orphan, Err(StoreError::Conflict(_))), "{orphan:?}");
            assert!(store.batch_versions(6).await.unwrap().is_empty());

            store.insert_batch_version(&version(4, 0)).await.unwrap();
            assert_eq!(store.batch(4).await.unwrap().unwrap().bumps, 0);
            let v1 = BatchVersionRecord { broadcast_at: Some(Timestamp(T0 + 2_000)), ..version(4, 1) };
            store.insert_batch_version(&v1).await.unwrap();
            let b = store.batch(4).await.unwrap().unwrap();
            assert_eq!((b.bumps, b.updated_at), (1, v1.created_at));
            assert_eq!(store.batch(5).await.unwrap().unwrap().bumps, 0, "other batches untouched");

            let twice = store.insert_batch_version(&BatchVersionRecord { txid: "other".into(), ..version(4, 0) }).await;
            assert!(matches!(twice, Err(StoreError::Conflict(_))), "{twice:?}");
            assert_eq!(store.batch(4).await.unwrap().unwrap().bumps, 1, "a refused version changes nothing");
            assert_eq!(store.batch_versions(4).await.unwrap(), vec![version(4, 0), v1.clone()]);

            store.mark_batch_broadcast(4, 0, Timestamp(T0 + 3_000)).await.unwrap();
            store.mark_batch_broadcast(4, 9, Timestamp(T0 + 3_000)).await.unwrap();
            let versions = store.batch_versions(4).await.unwrap();
            assert_eq!(versions[0].broadcast_at, Some(Timestamp(T0 + 3_000)));
            assert_eq!(versions[1], v1);

            store.add_batch_signature(4, 1, 2, "0140aa").await.unwrap();
            store.add_batch_signature(4, 1, 0, "0140bb").await.unwrap();
            store.add_batch_signature(4, 1, 0, "0140bb").await.unwrap();
            store.add_batch_signature(4, 1, 0, "0140cc").await.unwrap();
            store.add_batch_signature(4, 0, 0, "0140dd").await.unwrap();
            store.add_batch_signature(5, 1, 1, "0140ee").await.unwrap();
            assert_eq!(
                store.batch_signatures(4, 1).await.unwrap(),
                vec![(0, "0140bb".to_string()), (2, "0140aa".to_string())],
                "the first witness of an input is kept"
            );
            assert_eq!(store.batch_signatures(4, 0).await.unwrap(), vec![(0, "0140dd".to_string())]);
            assert!(store.batch_signatures(4, 2).await.unwrap().is_empty());
        }
    }

    #[tokio::test]
    async fn batches_survive_a_projection_reset() {
        for store in crate::test_stores().await {
            store.insert_batch(&batch(1, "broadcast"), Seq(0), &[]).await.unwrap();
            store.insert_batch_version(&version(1, 0)).await.unwrap();
            store.add_batch_signature(1, 0, 0, "0140aa").await.unwrap();
            store.reset_projections().await.unwrap();
            assert_eq!(
                store.batch(1).await.unwrap(),
                Some(BatchRecord { updated_at: version(1, 0).created_at, ..batch(1, "broadcast") })
            );
            assert_eq!(store.batch_versions(1).await.unwrap(), vec![version(1, 0)]);
            assert_eq!(store.batch_signatures(1, 0).await.unwrap(), vec![(0, "0140aa".to_string())]);
            assert_eq!(store.last_batch_id().await.unwrap(), 1);
        }
    }

    #[tokio::test]
    async fn batch_queries_use_the_indexes() {
        // EXPLAIN QUERY PLAN is SQLite's: PostgreSQL plans by its statistics.
        for store in crate::test_stores().await.into_iter().filter(|s| s.backend() == crate::Backend::Sqlite) {
            let plans = [
                (
                    "SELECT * FROM settlement_batches WHERE status = 'planned' ORDER BY id DESC LIMIT 5",
                    "settlement_batches_by_status",
                ),
                ("SELECT * FROM settlement_batches WHERE id = 3", "INTEGER PRIMARY KEY"),
                (
                    "SELECT * FROM settlement_batch_versions WHERE batch = 3 ORDER BY version",
                    "sqlite_autoindex_settlement_batch_versions_1",
                ),
                (
                    "SELECT * FROM settlement_batch_signatures WHERE batch = 3 AND version = 1 ORDER BY input",
                    "sqlite_autoindex_settlement_batch_signatures_1",
                ),
            ];
            for (sql, index) in plans {
                let rows = sqlx::query(stmt(store.backend, &format!("EXPLAIN QUERY PLAN {sql}"))).fetch_all(&store.pool).await.unwrap();
                let plan: Vec<String> = rows.iter().map(|r| r.get::<String, _>(3)).collect();
                assert!(plan.iter().any(|p| p.contains(index)), "{sql}: {plan:?}");
                assert!(!plan.iter().any(|p| p.contains("TEMP B-TREE")), "{sql}: {plan:?}");
            }
        }
    }
}
