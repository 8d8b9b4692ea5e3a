//! Leadership among replicas: at most one process at a time leads a role (the settlement
//! service, which signs and broadcasts). The leader holds a PostgreSQL session advisory lock on
//! a connection of its own, so the lock goes the moment its process or connection dies, and
//! each turn takes the next epoch of the role. The lock alone cannot stop a leader that lost it
//! without noticing (a paused process): it journals its epoch, and the engine refuses the
//! commands of any earlier one (`ClaimSettlementLeadership`, `AsSettlementLeader`).

use std::time::Duration;

use sqlx::{AnyConnection, Connection as _};

use crate::{Backend, Store, StoreError};

/// A turn as `role`'s leader. Dropping it closes its connection, which releases the lock.
pub struct Leadership {
    conn: AnyConnection,
    role: String,
    epoch: u64,
}

impl std::fmt::Debug for Leadership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leadership").field("role", &self.role).field("epoch", &self.epoch).finish_non_exhaustive()
    }
}

/// How long a liveness check of the lock's connection may take before the turn counts as lost.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

impl Store {
    /// Tries to become `role`'s leader: `Ok(None)` while another process leads. The lock is per
    /// schema, so stores sharing a database elect apart. The turn's epoch exceeds every earlier
    /// epoch of the role and `at_least - 1` (the epoch the journal has seen, should the store
    /// have been restored from an older backup).
    pub async fn try_lead(&self, role: &str, at_least: u64) -> Result<Option<Leadership>, StoreError> {
        if self.backend != Backend::Postgres {
            return Err(StoreError::Unsupported("electing a leader needs a PostgreSQL store"));
        }
        let mut conn = self.pool.acquire().await?.detach();
        let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtextextended(current_schema() || ':leader:' || $1, 0))")
            .bind(role)
            .fetch_one(&mut conn)
            .await?;
        if !locked {
            let _ = conn.close().await;
            return Ok(None);
        }
        let floor = i64::try_from(at_least).map_err(|_| StoreError::Corrupt(format!("epoch {at_least} out of range")))?;
        let epoch: i64 = sqlx::query_scalar(
            "INSERT INTO leader_epochs (role, epoch) VALUES ($1, GREATEST($2, 1)) \
             ON CONFLICT (role) DO UPDATE SET epoch = GREATEST(leader_epochs.epoch + 1, $2) RETURNING epoch",
        )
        .bind(role)
        .bind(floor)
        .fetch_one(&mut conn)
        .await?;
        Ok(Some(Leadership { conn, role: role.to_owned(), epoch: epoch as u64 }))
    }
}

impl Leadership {
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    pub fn role(&self) -> &str {
        &self.role
    }

    /// Whether the turn goes on: the lock's connection still answers (if it died, so did the
    /// lock, and another process may lead by now).
    pub async fn check(&mut self) -> Result<(), StoreError> {
        match tokio::time::timeout(CHECK_TIMEOUT, self.conn.ping()).await {
            Ok(result) => Ok(result?),
            Err(_) => Err(StoreError::Database(sqlx::Error::PoolTimedOut)),
        }
    }

    /// Ends the turn at once (instead of when the connection closes).
    pub async fn resign(mut self) {
        let _ = sqlx::query("SELECT pg_advisory_unlock_all()").execute(&mut self.conn).await;
        let _ = self.conn.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_leader_at_a_time_and_each_turn_a_higher_epoch() {
        let stores = crate::test_stores().await;
        let sqlite = &stores[0];
        assert!(matches!(sqlite.try_lead("settlement", 0).await, Err(StoreError::Unsupported(_))));
        let pg = &stores[1];
        // A second process on the same store: another pool, as another replica has.
        let schema: String = sqlx::query_scalar("SELECT current_schema()::text").fetch_one(&pg.pool).await.unwrap();
        let other = Store::open_postgres(&crate::test_postgres_url(), Some(&schema)).await.unwrap();

        let first = pg.try_lead("settlement", 0).await.unwrap().expect("nobody leads yet");
        assert_eq!(first.epoch(), 1);
        assert!(other.try_lead("settlement", 0).await.unwrap().is_none(), "one leader at a time");
        // Roles elect apart.
        let watcher = other.try_lead("watcher", 0).await.unwrap().expect("another role");
        assert_eq!(watcher.epoch(), 1);

        // The leader's process dies: its connection closes, the lock goes with it.
        drop(first);
        let second = wait_to_lead(&other, 0).await;
        assert_eq!(second.epoch(), 2);
        assert!(pg.try_lead("settlement", 0).await.unwrap().is_none());
        second.resign().await;
        // The journal has seen epoch 7 (a store restored from an old backup): the next is 8.
        let third = wait_to_lead(pg, 8).await;
        assert_eq!(third.epoch(), 8);
        let mut third = third;
        third.check().await.unwrap();
        watcher.resign().await;
    }

    async fn wait_to_lead(store: &Store, at_least: u64) -> Leadership {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(l) = store.try_lead("settlement", at_least).await.unwrap() {
                return l;
            }
            assert!(std::time::Instant::now() < deadline, "the lock was never released");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
