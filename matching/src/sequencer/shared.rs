//! The sequencer over a shared command log (a Kafka partition): several processes write it,
//! every replica reads it in the same order.
//!
//! ```text
//!  submit() ──> [publish thread] take a batch, stamp time + request id, publish, wait for acks
//!                      │ the log decides the order
//!                      v
//!               [feed thread]    read the log in order, number each command (seq), find the
//!                      │         reply of this process's own requests by their id
//!                      v
//!               [engine thread]  as with the embedded journal
//! ```
//! The order is the log's, not any one writer's: replicas reading the same log build the same
//! state, and two writers (gateways, or a leader and its standby) never conflict. A command's
//! time is the one its writer stamped, not the reader's clock, so a replay gives the same
//! timestamps. A publish that fails is answered with an error, yet may have reached the log (its
//! outcome is unknown, as after any timeout): the feed applies it like any other record, and a
//! client's retry meets the engine's own duplicate checks (client order ids, deposit references).
//! A record read twice (a reconnecting reader) is applied once: positions only move forward.

use super::*;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// One command as a writer puts it on the shared log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Submission {
    /// The writing process (random per start), so it finds its own requests when it reads.
    pub origin: u64,
    /// The writer's request number.
    pub request: u64,
    pub timestamp: Timestamp,
    pub command: Command,
}

impl Submission {
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).expect("submissions always encode")
    }

    pub fn decode(bytes: &[u8]) -> Result<Submission, postcard::Error> {
        postcard::from_bytes(bytes)
    }
}

/// A record read back from the shared log, with its position (the partition offset).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SharedRecord {
    pub position: u64,
    pub bytes: Vec<u8>,
}

/// The writing end of the shared log.
pub trait SharedLog: Send + 'static {
    /// Appends `records` in order; `Ok` once every one is durable (acknowledged by the log).
    fn publish(&mut self, records: &[Vec<u8>]) -> Result<(), String>;
}

/// The reading end: every record from a starting position on, in log order. Positions are
/// contiguous (0, 1, 2, ...): a replica that handed over a record after a gap would number
/// commands unlike the others.
pub trait SharedFeed: Send + 'static {
    /// Up to `max` next records, waiting up to `wait` for the first; an error is transient (the
    /// reader tries again).
    fn poll(&mut self, max: usize, wait: Duration) -> Result<Vec<SharedRecord>, String>;
    /// The position of the next record `poll` returns.
    fn next_position(&self) -> u64;
    /// Reads on from `position` (after a gap: records before it were not visible yet).
    fn seek(&mut self, position: u64) -> Result<(), String>;
}

type Pending = Arc<Mutex<HashMap<u64, Reply>>>;

impl Sequencer {
    /// Starts a replica over a shared log: `engine` must reflect every command of `feed` before
    /// the feed's starting position (a snapshot's `position`, or genesis for a log read from its
    /// start). Its handle submits through `log` and answers once the feed brings the command back
    /// applied; reads and subscriptions work as with the embedded journal.
    pub fn start_shared(
        engine: Engine,
        log: impl SharedLog,
        feed: impl SharedFeed,
        snapshots: Option<Box<dyn SnapshotSink>>,
        config: SequencerConfig,
        sinks: Vec<Sender<Arc<Applied>>>,
    ) -> Sequencer {
        let next_seq = engine.last_seq().0 + 1;
        let max_batch = config.max_batch.max(1);
        let origin = rand::random::<u64>();
        Sequencer::start_with(engine, snapshots, config, sinks, move |requests, stop, batches, metrics, failed| {
            let pending: Pending = Arc::default();
            let published_all = Arc::new(AtomicBool::new(false));
            let publisher = {
                let (pending, published_all, metrics) = (pending.clone(), published_all.clone(), metrics.clone());
                std::thread::Builder::new()
                    .name("tandem-publish".into())
                    .spawn(move || {
                        publish_loop(log, requests, stop, &pending, origin, max_batch, &metrics);
                        published_all.store(true, Ordering::Release);
                    })
                    .expect("spawn publish thread")
            };
            let reader = std::thread::Builder::new()
                .name("tandem-feed".into())
                .spawn(move || {
                    feed_loop(feed, batches, &pending, origin, next_seq, max_batch, &published_all, &failed)
                })
                .expect("spawn feed thread");
            vec![publisher, reader]
        })
    }
}

fn publish_loop(
    mut log: impl SharedLog,
    requests: Receiver<Request>,
    stop: Receiver<()>,
    pending: &Pending,
    origin: u64,
    max_batch: usize,
    metrics: &SequencerMetrics,
) {
    let mut next_request = 1u64;
    loop {
        let first = select! {
            recv(requests) -> r => match r { Ok(r) => r, Err(_) => return },
            recv(stop) -> _ => match requests.try_recv() { Ok(r) => r, Err(_) => return },
        };
        let mut batch = vec![first];
        while batch.len() < max_batch {
            match requests.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        let timestamp = Timestamp(now_millis());
        let mut records = Vec::with_capacity(batch.len());
        let mut ids = Vec::with_capacity(batch.len());
        {
            let mut waiting = pending.lock().unwrap_or_else(|p| p.into_inner());
            for req in batch {
                let request = next_request;
                next_request += 1;
                records.push(Submission { origin, request, timestamp, command: req.command }.encode());
                if let Some(reply) = req.reply {
                    waiting.insert(request, reply);
                    ids.push(request);
                }
            }
        }
        let started = Instant::now();
        match log.publish(&records) {
            Ok(()) => {
                let nanos = started.elapsed().as_nanos() as u64;
                metrics.batches.fetch_add(1, Ordering::Relaxed);
                metrics.commit_nanos_total.fetch_add(nanos, Ordering::Relaxed);
                metrics.commit_nanos_max.fetch_max(nanos, Ordering::Relaxed);
            }
            Err(e) => {
                tracing::warn!(error = %e, commands = records.len(), "the shared command log refused a batch");
                // Unless the feed already brought it back (then the answer is known), the caller
                // hears that its command may not have been taken.
                let mut waiting = pending.lock().unwrap_or_else(|p| p.into_inner());
                for id in ids {
                    if let Some(reply) = waiting.remove(&id) {
                        let _ = reply.send(Err(SequencerError::Unavailable(e.clone())));
                    }
                }
            }
        }
    }
}

/// How long a stopping feed keeps reading for this process's last requests.
const DRAIN_GRACE: Duration = Duration::from_secs(5);

#[allow(clippy::too_many_arguments)]
fn feed_loop(
    mut feed: impl SharedFeed,
    batches: Sender<Batch>,
    pending: &Pending,
    origin: u64,
    mut next_seq: u64,
    max_batch: usize,
    published_all: &AtomicBool,
    failed: &AtomicBool,
) {
    let mut last_position: Option<u64> = None;
    let mut expected = feed.next_position();
    let mut gaps = 0u64;
    let mut stopping_since: Option<Instant> = None;
    let mut last_error_logged: Option<Instant> = None;
    loop {
        if published_all.load(Ordering::Acquire) {
            // Stop once this process's own requests are answered (or the log stays silent).
            let since = *stopping_since.get_or_insert_with(Instant::now);
            let waiting = pending.lock().unwrap_or_else(|p| p.into_inner()).len();
            if waiting == 0 || since.elapsed() > DRAIN_GRACE {
                return;
            }
        }
        let records = match feed.poll(max_batch, Duration::from_millis(100)) {
            Ok(records) => records,
            Err(e) => {
                if last_error_logged.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                    tracing::warn!(error = %e, "cannot read the shared command log; retrying");
                    last_error_logged = Some(Instant::now());
                }
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        let mut items = Vec::with_capacity(records.len());
        for record in records {
            if record.position < expected {
                continue; // read twice
            }
            if record.position > expected {
                // A later record showed before an earlier one (Tansu does this with producers
                // writing at once): handing it over would shift every seq after it.
                gaps += 1;
                if gaps.is_power_of_two() {
                    tracing::warn!(expected, got = record.position, gaps, "the log showed a later record first; reading again");
                }
                if let Err(e) = feed.seek(expected) {
                    tracing::warn!(error = %e, position = expected, "cannot seek the shared log; retrying");
                }
                break;
            }
            expected += 1;
            last_position = Some(record.position);
            let submission = match Submission::decode(&record.bytes) {
                Ok(s) => s,
                Err(e) => {
                    // Every replica skips the same record, so they stay alike.
                    tracing::error!(position = record.position, error = %e, "not a command; skipped");
                    continue;
                }
            };
            let reply = if submission.origin == origin {
                pending.lock().unwrap_or_else(|p| p.into_inner()).remove(&submission.request)
            } else {
                None
            };
            let envelope = Envelope { seq: Seq(next_seq), timestamp: submission.timestamp, command: submission.command };
            next_seq += 1;
            items.push((envelope, reply));
        }
        let Some(position) = last_position else { continue };
        if !items.is_empty() && batches.send(Batch { items, position }).is_err() {
            failed.store(true, Ordering::Release);
            return;
        }
    }
}

/// A shared log in memory: several sequencers (replicas) can publish to and read from it, as
/// they would a Kafka partition. For tests of everything above the log; a real log, not a no-op.
#[derive(Clone, Default)]
pub struct MemorySharedLog {
    records: Arc<(Mutex<Vec<Vec<u8>>>, std::sync::Condvar)>,
    /// Fail every publish while set (a log that is down).
    pub down: Arc<AtomicBool>,
}

impl MemorySharedLog {
    /// A reader from `position` on.
    pub fn feed_from(&self, position: u64) -> MemoryFeed {
        MemoryFeed { log: self.clone(), next: position }
    }

    pub fn len(&self) -> usize {
        self.records.0.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends raw bytes (as a foreign or broken writer would).
    pub fn append_raw(&self, bytes: Vec<u8>) {
        self.records.0.lock().unwrap_or_else(|p| p.into_inner()).push(bytes);
        self.records.1.notify_all();
    }
}

impl SharedLog for MemorySharedLog {
    fn publish(&mut self, records: &[Vec<u8>]) -> Result<(), String> {
        if self.down.load(Ordering::Acquire) {
            return Err("the log is down".into());
        }
        self.records.0.lock().unwrap_or_else(|p| p.into_inner()).extend(records.iter().cloned());
        self.records.1.notify_all();
        Ok(())
    }
}

/// A reader of a [`MemorySharedLog`].
pub struct MemoryFeed {
    log: MemorySharedLog,
    next: u64,
}

impl SharedFeed for MemoryFeed {
    fn poll(&mut self, max: usize, wait: Duration) -> Result<Vec<SharedRecord>, String> {
        let (records, arrived) = &*self.log.records;
        let mut records = records.lock().unwrap_or_else(|p| p.into_inner());
        if records.len() as u64 <= self.next {
            records = arrived.wait_timeout(records, wait).unwrap_or_else(|p| p.into_inner()).0;
        }
        let out: Vec<SharedRecord> = records
            .iter()
            .enumerate()
            .skip(self.next as usize)
            .take(max)
            .map(|(i, bytes)| SharedRecord { position: i as u64, bytes: bytes.clone() })
            .collect();
        self.next += out.len() as u64;
        Ok(out)
    }

    fn next_position(&self) -> u64 {
        self.next
    }

    fn seek(&mut self, position: u64) -> Result<(), String> {
        self.next = position;
        Ok(())
    }
}

/// Snapshots kept in memory, with the position each covers: for tests of replicas.
#[derive(Clone, Default)]
pub struct MemorySnapshots {
    pub saved: Arc<Mutex<Vec<SavedSnapshot>>>,
}

/// A snapshot's seq, log position and bytes.
pub type SavedSnapshot = (Seq, u64, Vec<u8>);

impl SnapshotSink for MemorySnapshots {
    fn save(&mut self, seq: Seq, position: u64, bytes: &[u8]) -> Result<(), String> {
        self.saved.lock().map_err(|e| e.to_string())?.push((seq, position, bytes.to_vec()));
        Ok(())
    }
}

#[cfg(test)]
mod tests;
