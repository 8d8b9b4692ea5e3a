//! Refuses a signed request seen before: the timestamp window bounds how long a captured request
//! stays valid, and this remembers every signature inside that window, so a replay within it is
//! caught too (client order ids protect orders; this protects every signed call).
//!
//! In memory, per process; a shared store (Redis) takes this role when several gateways run.

use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Mutex;

const SHARDS: usize = 16;

pub struct ReplayGuard {
    window_ms: u64,
    shards: Vec<Mutex<Shard>>,
}

#[derive(Default)]
struct Shard {
    /// Signature digest -> the request's timestamp.
    seen: HashMap<[u8; 32], u64>,
    pruned_at: u64,
}

impl ReplayGuard {
    pub fn new(window_ms: u64) -> ReplayGuard {
        ReplayGuard { window_ms, shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect() }
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
