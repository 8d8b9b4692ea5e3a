//! Refuses a signed request seen before: the timestamp window bounds how long a captured request
//! stays valid, and this remembers every signature inside that window, so a replay within it is
//! caught too (client order ids protect orders; this protects every signed call).
//!
//! In memory, per process; with Redis (several gateways of one exchange), a signature is also
//! claimed there (`SET NX`), so a request captured at one gateway is refused at every other.
//! When that Redis cannot be reached, signed changes are refused (503): a replay that slips
//! through could move money twice, a refused request can simply be sent again.

use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Mutex;

const SHARDS: usize = 16;

pub struct ReplayGuard {
    window_ms: u64,
    shards: Vec<Mutex<Shard>>,
    shared: Option<Shared>,
}

/// The signatures every gateway of the exchange has seen.
struct Shared {
    connection: crate::redis_link::RedisConnection,
    prefix: String,
}

#[derive(Default)]
struct Shard {
    /// Signature digest -> the request's timestamp.
    seen: HashMap<[u8; 32], u64>,
    pruned_at: u64,
}

impl ReplayGuard {
    pub fn new(window_ms: u64) -> ReplayGuard {
        ReplayGuard { window_ms, shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(), shared: None }
    }

    /// Also claims every signature in Redis, shared by the exchange's gateways.
    pub fn with_redis(mut self, connection: crate::redis_link::RedisConnection, prefix: &str) -> ReplayGuard {
        self.shared = Some(Shared { connection, prefix: prefix.to_owned() });
        self
    }

    /// [`ReplayGuard::first_use`] in this process, then across the gateways sharing Redis; an
    /// error when Redis cannot answer (the caller refuses the request).
    pub async fn first_use_everywhere(&self, signature: &str, timestamp_ms: u64, now_ms: u64) -> Result<bool, String> {
        if !self.first_use(signature, timestamp_ms, now_ms) {
            return Ok(false);
        }
        let Some(shared) = &self.shared else { return Ok(true) };
        let key = format!("{}replay:{}", shared.prefix, hex::encode(Sha256::digest(signature.as_bytes())));
        // Kept twice the window, like the local record: past it the timestamp check refuses.
        let claimed: Option<String> = redis::cmd("SET")
            .arg(&key)
            .arg(timestamp_ms)
            .arg("NX")
            .arg("PX")
            .arg(2 * self.window_ms.max(1))
            .query_async(&mut shared.connection.clone())
            .await
            .map_err(|e| e.to_string())?;
        Ok(claimed.is_some())
    }

    /// Records the signature of a request stamped `timestamp_ms` (already checked to be inside the
    /// window); false if the same signature was seen before.
    pub fn first_use(&self, signature: &str, timestamp_ms: u64, now_ms: u64) -> bool {
        let digest: [u8; 32] = Sha256::digest(signature.as_bytes()).into();
        let mut shard = match self.shards[digest[0] as usize % SHARDS].lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        // A signature older than the window can no longer pass the timestamp check, so it can
        // be forgotten; prune at most once per window to keep this O(1) amortised.
        if now_ms.saturating_sub(shard.pruned_at) > self.window_ms {
            let horizon = now_ms.saturating_sub(2 * self.window_ms);
            shard.seen.retain(|_, ts| *ts >= horizon);
            shard.pruned_at = now_ms;
        }
        shard.seen.insert(digest, timestamp_ms).is_none()
    }

    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().map(|s| s.seen.len()).unwrap_or(0)).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_passes_once() {
        let g = ReplayGuard::new(5_000);
        assert!(g.first_use("abc", 1_000, 1_000));
        assert!(!g.first_use("abc", 1_000, 1_500));
        assert!(g.first_use("abd", 1_000, 1_500));
    }

    #[tokio::test]
    async fn a_signature_seen_by_one_gateway_is_refused_by_another() {
        let url = std::env::var("TANDEM_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
        let prefix = format!("tandem-test:{}:{}:", std::process::id(), rand::random::<u32>());
        let gateway = || async { ReplayGuard::new(5_000).with_redis(crate::redis_link::connect(&url).await.unwrap(), &prefix) };
        let (a, b) = (gateway().await, gateway().await);
        assert_eq!(a.first_use_everywhere("sig", 1_000, 1_000).await, Ok(true));
        assert_eq!(b.first_use_everywhere("sig", 1_000, 1_100).await, Ok(false), "captured at A, replayed at B");
        assert_eq!(a.first_use_everywhere("sig", 1_000, 1_200).await, Ok(false));
        assert_eq!(b.first_use_everywhere("other", 1_000, 1_200).await, Ok(true));
        // Without Redis the guard is this process's only.
        let alone = ReplayGuard::new(5_000);
        assert_eq!(alone.first_use_everywhere("sig", 1_000, 1_000).await, Ok(true));
    }

    #[test]
    fn old_signatures_are_forgotten_after_the_window() {
        let g = ReplayGuard::new(5_000);
        for i in 0..100 {
            assert!(g.first_use(&format!("sig{i}"), 1_000, 1_000));
        }
        assert_eq!(g.len(), 100);
        // Much later: every shard prunes on its next use; the timestamp check would refuse these anyway.
        for i in 0..1_000 {
            g.first_use(&format!("new{i}"), 100_000, 100_000);
        }
        assert_eq!(g.len(), 1_000);
    }
}
