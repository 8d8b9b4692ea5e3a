//! The sequencer: one writer thread journals commands, one engine thread applies them.
//!
//! ```text
//!  submit() ──> [journal thread] take a batch, stamp seq + time, append, ONE commit (fsync)
//!                      │ only durable commands go on
//!                      v
//!               [engine thread]  apply each, reply, publish; run read-only queries between
//! ```
//! Group commit: a batch is whatever queued while the previous fsync ran (up to `max_batch`),
//! so the wait is bounded by one fsync and throughput grows with load.
//!
//! The journal and snapshot store are ports ([`CommandLog`], [`SnapshotSink`]) so the engine
//! crate stays free of file formats.

use crate::command::{Command, Envelope};
use crate::engine::Engine;
use crate::event::Event;
use crate::engine::Depth;
use crate::snapshot::StateHash;
use crate::types::{MarketId, Price, Quantity, Seq, Side, Timestamp};
use crossbeam_channel::{bounded, select, Receiver, Sender, TrySendError};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{broadcast, oneshot};

/// Where journaled commands go. `commit` returns only once everything appended is durable.
pub trait CommandLog: Send + 'static {
    fn append(&mut self, seq: Seq, record: &[u8]) -> Result<(), String>;
    fn commit(&mut self) -> Result<(), String>;
}

/// Where engine snapshots go (written off the engine thread). `position` is where in the
/// command log the snapshot ends: the seq itself for the embedded journal, the offset of the
/// last record it covers for a shared log (whose records are not all commands).
pub trait SnapshotSink: Send + 'static {
    fn save(&mut self, seq: Seq, position: u64, bytes: &[u8]) -> Result<(), String>;
}

mod shared;
pub use shared::{MemorySharedLog, MemorySnapshots, SavedSnapshot, SharedFeed, SharedLog, SharedRecord, Submission};

/// A command as applied: its place in the journal, what it did, and how it changed the books.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub seq: Seq,
    pub timestamp: Timestamp,
    pub command: Command,
    pub events: Vec<Event>,
    /// One entry per market whose book changed.
    pub book_updates: Vec<BookUpdate>,
}

/// New aggregate quantities of the price levels one command touched (0: the level is gone).
/// `book_seq` counts the commands that touched the market's book, so a client holding a depth
/// snapshot with `book_seq = n` applies updates `n + 1, n + 2, ...` and knows it missed one on a
/// gap. The engine keeps the count (in snapshots too): every replica of a shared journal, and a
/// process after a restart, numbers the same update alike, so a client may switch gateways.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BookUpdate {
    pub market: MarketId,
    pub book_seq: u64,
    pub levels: Vec<(Side, Price, Quantity)>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SequencerError {
    #[error("the exchange is overloaded, retry shortly")]
    Overloaded,
    #[error("the sequencer has stopped")]
    Stopped,
    #[error("journal failure: {0}")]
    Journal(String),
    /// The shared command log could not be written; the command may still be applied.
    #[error("the command log is unavailable: {0}")]
    Unavailable(String),
}

#[derive(Clone, Debug)]
pub struct SequencerConfig {
    /// Most commands per group commit.
    pub max_batch: usize,
    /// Most commands waiting to be journaled before `submit` answers `Overloaded`.
    pub queue_depth: usize,
    /// Take a snapshot every this many commands (0: never).
    pub snapshot_every: u64,
}

impl Default for SequencerConfig {
    fn default() -> Self {
        SequencerConfig { max_batch: 4096, queue_depth: 65_536, snapshot_every: 100_000 }
    }
}

/// Counters for `/metrics`, updated by the sequencer threads.
#[derive(Debug, Default)]
pub struct SequencerMetrics {
    pub commands_applied: AtomicU64,
    pub commands_rejected: AtomicU64,
    pub trades: AtomicU64,
    pub orders_accepted: AtomicU64,
    pub batches: AtomicU64,
    pub commit_nanos_total: AtomicU64,
    pub commit_nanos_max: AtomicU64,
    pub last_seq: AtomicU64,
    pub open_orders: AtomicU64,
    pub snapshots: AtomicU64,
    /// Seq of the last checkpoint (state hash logged, snapshot taken).
    pub checkpoint_seq: AtomicU64,
    /// The log position after the last batch applied: over a shared log, every record written
    /// before it is applied (for the embedded journal it is the next seq).
    pub log_position: AtomicU64,
}

type Reply = oneshot::Sender<Result<Arc<Applied>, SequencerError>>;
type Query = Box<dyn FnOnce(&Engine, &[u64]) + Send>;

struct Request {
    command: Command,
    reply: Option<Reply>,
}

struct Batch {
    items: Vec<(Envelope, Option<Reply>)>,
    /// Where in the command log the batch ends (see [`SnapshotSink::save`]).
    position: u64,
}

/// Cheap to clone; every API handler holds one.
#[derive(Clone)]
pub struct SequencerHandle {
    requests: Sender<Request>,
    queries: Sender<Query>,
    bus: broadcast::Sender<Arc<Applied>>,
    metrics: Arc<SequencerMetrics>,
    failed: Arc<AtomicBool>,
}

impl SequencerHandle {
    /// Journals and applies one command; resolves once it is durable and applied.
    pub async fn submit(&self, command: Command) -> Result<Arc<Applied>, SequencerError> {
        let (tx, rx) = oneshot::channel();
        self.enqueue(command, Some(tx))?;
        rx.await.map_err(|_| SequencerError::Stopped)?
    }

    /// Blocking form of [`SequencerHandle::submit`], for threads outside an async runtime.
    pub fn submit_blocking(&self, command: Command) -> Result<Arc<Applied>, SequencerError> {
        let (tx, rx) = oneshot::channel();
        self.enqueue(command, Some(tx))?;
        rx.blocking_recv().map_err(|_| SequencerError::Stopped)?
    }

    fn enqueue(&self, command: Command, reply: Option<Reply>) -> Result<(), SequencerError> {
        if self.failed.load(Ordering::Acquire) {
            return Err(SequencerError::Stopped);
        }
        match self.requests.try_send(Request { command, reply }) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => Err(SequencerError::Overloaded),
            Err(TrySendError::Disconnected(_)) => Err(SequencerError::Stopped),
        }
    }

    /// Runs a read-only query on the engine thread, between commands, so it sees a consistent
    /// state that includes every command already answered.
    pub async fn read<R, F>(&self, f: F) -> Result<R, SequencerError>
    where
        R: Send + 'static,
        F: FnOnce(&Engine) -> R + Send + 'static,
    {
        self.ask(f)?.await.map_err(|_| SequencerError::Stopped)
    }

    /// Queues a query for the engine thread; the receiver gets its answer.
    fn ask<R, F>(&self, f: F) -> Result<oneshot::Receiver<R>, SequencerError>
    where
        R: Send + 'static,
        F: FnOnce(&Engine) -> R + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        self.queries
            .send(Box::new(move |engine: &Engine, _: &[u64]| {
                let _ = tx.send(f(engine));
            }))
            .map_err(|_| SequencerError::Stopped)?;
        Ok(rx)
    }

    /// Depth of a market with the `book_seq` it is current to; `None` for an unknown market.
    pub async fn book(&self, market: MarketId, levels: usize) -> Result<Option<(u64, Depth)>, SequencerError> {
        let (tx, rx) = oneshot::channel();
        self.queries
            .send(Box::new(move |engine: &Engine, book_seqs: &[u64]| {
                let _ = tx.send(engine.depth(market, levels).map(|d| (book_seqs[market.0 as usize], d)));
            }))
            .map_err(|_| SequencerError::Stopped)?;
        rx.await.map_err(|_| SequencerError::Stopped)
    }

    /// Blocking form of [`SequencerHandle::read`].
    pub fn read_blocking<R, F>(&self, f: F) -> Result<R, SequencerError>
    where
        R: Send + 'static,
        F: FnOnce(&Engine) -> R + Send + 'static,
    {
        self.ask(f)?.blocking_recv().map_err(|_| SequencerError::Stopped)
    }

    /// Every applied command, for streams. Slow receivers lag and must resynchronise; lossless
    /// consumers (projections) register a sink at start instead.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Applied>> {
        self.bus.subscribe()
    }

    pub fn metrics(&self) -> &SequencerMetrics {
        &self.metrics
    }

    /// True once a journal failure stopped the sequencer.
    pub fn has_failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }
}

/// The running sequencer; dropping every handle and calling [`Sequencer::shutdown`] stops it.
pub struct Sequencer {
    handle: SequencerHandle,
    threads: Vec<JoinHandle<()>>,
    /// How many of `threads` (the first) feed the engine.
    inputs: usize,
    stop: Sender<()>,
    stopping: Arc<AtomicBool>,
}

impl Sequencer {
    /// Starts the threads. `engine` must already reflect every command in `log` (replayed).
    /// `sinks` receive every applied command in order, losslessly (a full sink applies
    /// backpressure to the engine rather than dropping).
    pub fn start(
        engine: Engine,
        log: impl CommandLog,
        snapshots: Option<Box<dyn SnapshotSink>>,
        config: SequencerConfig,
        sinks: Vec<Sender<Arc<Applied>>>,
    ) -> Sequencer {
        let next_seq = engine.last_seq().0 + 1;
        let max_batch = config.max_batch.max(1);
        Sequencer::start_with(engine, snapshots, config, sinks, move |requests, stop, batches, metrics, failed| {
            vec![std::thread::Builder::new()
                .name("tandem-journal".into())
                .spawn(move || journal_loop(log, requests, stop, batches, next_seq, max_batch, metrics, failed))
                .expect("spawn journal thread")]
        })
    }

    /// The engine thread, the snapshot writer, and `input`: the threads that turn requests into
    /// ordered batches for the engine (joined first at shutdown, in their order).
    fn start_with(
        engine: Engine,
        snapshots: Option<Box<dyn SnapshotSink>>,
        config: SequencerConfig,
        sinks: Vec<Sender<Arc<Applied>>>,
        input: impl FnOnce(Receiver<Request>, Receiver<()>, Sender<Batch>, Arc<SequencerMetrics>, Arc<AtomicBool>) -> Vec<JoinHandle<()>>,
    ) -> Sequencer {
        let (req_tx, req_rx) = bounded::<Request>(config.queue_depth);
        let (query_tx, query_rx) = bounded::<Query>(1024);
        let (batch_tx, batch_rx) = bounded::<Batch>(4);
        let (snap_tx, snap_rx) = bounded::<(Seq, u64, Vec<u8>)>(1);
        let (stop_tx, stop_rx) = bounded::<()>(1);
        let (bus, _) = broadcast::channel(16_384);
        let metrics = Arc::new(SequencerMetrics::default());
        metrics.last_seq.store(engine.last_seq().0, Ordering::Relaxed);
        let failed = Arc::new(AtomicBool::new(false));
        let handle = SequencerHandle {
            requests: req_tx,
            queries: query_tx,
            bus: bus.clone(),
            metrics: metrics.clone(),
            failed: failed.clone(),
        };
        let mut threads = input(req_rx, stop_rx, batch_tx, metrics.clone(), failed);
        let inputs = threads.len();
        let stopping = Arc::new(AtomicBool::new(false));
        {
            let (metrics, stopping) = (metrics.clone(), stopping.clone());
            let snapshot_every = config.snapshot_every;
            threads.push(
                std::thread::Builder::new()
                    .name("tandem-engine".into())
                    .spawn(move || engine_loop(engine, batch_rx, query_rx, bus, sinks, snap_tx, snapshot_every, metrics, stopping))
                    .expect("spawn engine thread"),
            );
        }
        if let Some(mut sink) = snapshots {
            let metrics = metrics.clone();
            threads.push(
                std::thread::Builder::new()
                    .name("tandem-snapshot".into())
                    .spawn(move || {
                        for (seq, position, bytes) in snap_rx {
                            match sink.save(seq, position, &bytes) {
                                Ok(()) => {
                                    metrics.snapshots.fetch_add(1, Ordering::Relaxed);
                                    tracing::info!(seq = seq.0, position, bytes = bytes.len(), "snapshot saved");
                                }
                                // A missing snapshot only makes the next start replay longer.
                                Err(e) => tracing::warn!(seq = seq.0, error = %e, "snapshot failed"),
                            }
                        }
                    })
                    .expect("spawn snapshot thread"),
            );
        }
        Sequencer { handle, threads, inputs, stop: stop_tx, stopping }
    }

    pub fn handle(&self) -> SequencerHandle {
        self.handle.clone()
    }

    /// Finishes the commands already queued, then stops every thread.
    pub fn shutdown(self) {
        let _ = self.stop.send(());
        drop(self.handle);
        let mut threads = self.threads.into_iter();
        // The input threads first: they drain the queue, then the engine applies the rest.
        for input in threads.by_ref().take(self.inputs) {
            let _ = input.join();
        }
        self.stopping.store(true, Ordering::Release);
        for t in threads {
            let _ = t.join();
        }
    }
}

fn now_millis() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

#[allow(clippy::too_many_arguments)]
fn journal_loop(
    mut log: impl CommandLog,
    requests: Receiver<Request>,
    stop: Receiver<()>,
    batches: Sender<Batch>,
    mut next_seq: u64,
    max_batch: usize,
    metrics: Arc<SequencerMetrics>,
    failed: Arc<AtomicBool>,
) {
    let mut last_ts = 0u64;
    let mut buf = Vec::with_capacity(256);
    loop {
        let first = select! {
            recv(requests) -> r => match r { Ok(r) => r, Err(_) => return },
            recv(stop) -> _ => {
                // Drain what is already queued, then stop.
                match requests.try_recv() { Ok(r) => r, Err(_) => return }
            }
        };
        let mut pending = Vec::with_capacity(64);
        pending.push(first);
        while pending.len() < max_batch {
            match requests.try_recv() {
                Ok(r) => pending.push(r),
                Err(_) => break,
            }
        }
        // Time never runs backwards in the journal, even if the wall clock does.
        last_ts = last_ts.max(now_millis());
        let mut items = Vec::with_capacity(pending.len());
        let mut error = None;
        for req in pending {
            let envelope = Envelope { seq: Seq(next_seq), timestamp: Timestamp(last_ts), command: req.command };
            buf.clear();
            postcard::to_io(&envelope, &mut buf).expect("envelopes always encode");
            if error.is_none() {
                if let Err(e) = log.append(envelope.seq, &buf) {
                    error = Some(e);
                }
            }
            next_seq += 1;
            items.push((envelope, req.reply));
        }
        let started = Instant::now();
        if error.is_none() {
            if let Err(e) = log.commit() {
                error = Some(e);
            }
        }
        if let Some(e) = error {
            // After a failed commit the journal's durable end is unknown: stop taking commands
            // rather than risk acknowledging something a restart would not find.
            tracing::error!(error = %e, "journal commit failed; sequencer stopping");
            failed.store(true, Ordering::Release);
            for (_, reply) in items {
                if let Some(r) = reply {
                    let _ = r.send(Err(SequencerError::Journal(e.clone())));
                }
            }
            for req in requests.try_iter() {
                if let Some(r) = req.reply {
                    let _ = r.send(Err(SequencerError::Journal(e.clone())));
                }
            }
            return;
        }
        let nanos = started.elapsed().as_nanos() as u64;
        metrics.batches.fetch_add(1, Ordering::Relaxed);
        metrics.commit_nanos_total.fetch_add(nanos, Ordering::Relaxed);
        metrics.commit_nanos_max.fetch_max(nanos, Ordering::Relaxed);
        let position = next_seq - 1;
        if batches.send(Batch { items, position }).is_err() {
            return;
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn engine_loop(
    mut engine: Engine,
    batches: Receiver<Batch>,
    queries: Receiver<Query>,
    bus: broadcast::Sender<Arc<Applied>>,
    sinks: Vec<Sender<Arc<Applied>>>,
    snapshots: Sender<(Seq, u64, Vec<u8>)>,
    snapshot_every: u64,
    metrics: Arc<SequencerMetrics>,
    stopping: Arc<AtomicBool>,
) {
    let mut since_snapshot = 0u64;
    let mut touched = Vec::new();
    loop {
        select! {
            recv(batches) -> b => {
                let Ok(batch) = b else { break };
                let position = batch.position;
                for (envelope, reply) in batch.items {
                    let mut events = Vec::with_capacity(8);
                    engine.apply_into(envelope.seq, envelope.timestamp, &envelope.command, &mut events);
                    count(&metrics, &events);
                    let book_updates = book_updates(&engine, &events, &mut touched);
                    let applied = Arc::new(Applied {
                        seq: envelope.seq,
                        timestamp: envelope.timestamp,
                        command: envelope.command,
                        events,
                        book_updates,
                    });
                    for sink in &sinks {
                        let _ = sink.send(applied.clone());
                    }
                    let _ = bus.send(applied.clone());
                    if let Some(r) = reply {
                        let _ = r.send(Ok(applied));
                    }
                    since_snapshot += 1;
                }
                metrics.last_seq.store(engine.last_seq().0, Ordering::Relaxed);
                metrics.log_position.store(position + 1, Ordering::Release);
                metrics.open_orders.store(engine.open_order_count() as u64, Ordering::Relaxed);
                if snapshot_every > 0 && since_snapshot >= snapshot_every {
                    // A checkpoint: the state hash is the hash of the snapshot's bytes, so it
                    // costs one pass over the encoding, logged for comparison with a replay.
                    let bytes = engine.snapshot_bytes();
                    let hash = StateHash(*blake3::hash(&bytes).as_bytes());
                    tracing::info!(seq = engine.last_seq().0, state_hash = %hash, "checkpoint");
                    metrics.checkpoint_seq.store(engine.last_seq().0, Ordering::Relaxed);
                    since_snapshot = 0;
                    // try_send: if the previous snapshot is still being written, skip this one.
                    let _ = snapshots.try_send((engine.last_seq(), position, bytes));
                }
            }
            recv(queries) -> q => {
                let Ok(query) = q else { continue };
                query(&engine, engine.book_seqs());
            }
        }
    }
    // No more commands (shutdown, or a journal failure): keep answering reads, which stay
    // consistent, until shutdown.
    while !stopping.load(Ordering::Acquire) {
        match queries.recv_timeout(std::time::Duration::from_millis(50)) {
            Ok(q) => q(&engine, engine.book_seqs()),
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
        }
    }
    for q in queries.try_iter() {
        q(&engine, engine.book_seqs());
    }
}

/// Levels the events touched, with their quantities now.
fn book_updates(engine: &Engine, events: &[Event], touched: &mut Vec<(MarketId, Side, Price)>) -> Vec<BookUpdate> {
    touched.clear();
    touched.extend(events.iter().flat_map(Event::touched_levels));
    if touched.is_empty() {
        return Vec::new();
    }
    touched.sort_unstable_by_key(|(m, s, p)| (*m, *s == Side::Sell, *p));
    touched.dedup();
    let mut updates: Vec<BookUpdate> = Vec::new();
    for &(market, side, price) in touched.iter() {
        let quantity = engine.level_quantity(market, side, price);
        match updates.last_mut() {
            Some(u) if u.market == market => u.levels.push((side, price, quantity)),
            // The engine counted this command for the market (the same events, the same rule).
            _ => updates.push(BookUpdate {
                market,
                book_seq: engine.book_seq(market).unwrap_or(0),
                levels: vec![(side, price, quantity)],
            }),
        }
    }
    updates
}

fn count(metrics: &SequencerMetrics, events: &[Event]) {
    metrics.commands_applied.fetch_add(1, Ordering::Relaxed);
    let mut trades = 0;
    for e in events {
        match e {
            Event::Trade(_) => trades += 1,
            Event::OrderAccepted(_) => {
                metrics.orders_accepted.fetch_add(1, Ordering::Relaxed);
            }
            Event::Rejected { .. } => {
                metrics.commands_rejected.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
    }
    if trades > 0 {
        metrics.trades.fetch_add(trades, Ordering::Relaxed);
    }
}

/// A log that keeps records in memory: for tests of everything above the journal, and for
/// throwaway engines. It is a real log (records can be read back), not a no-op.
#[derive(Clone, Default)]
pub struct MemoryLog {
    pub records: Arc<std::sync::Mutex<Vec<LogRecord>>>,
}

/// One record of a [`MemoryLog`]: its seq and encoded envelope.
pub type LogRecord = (Seq, Vec<u8>);

impl CommandLog for MemoryLog {
    fn append(&mut self, seq: Seq, record: &[u8]) -> Result<(), String> {
        self.records.lock().map_err(|e| e.to_string())?.push((seq, record.to_vec()));
        Ok(())
    }

    fn commit(&mut self) -> Result<(), String> {
        Ok(())
    }
}

/// Decodes a journal record written by the sequencer.
pub fn decode_record(bytes: &[u8]) -> Result<Envelope, postcard::Error> {
    postcard::from_bytes(bytes)
}

pub fn encode_record(envelope: &Envelope) -> Vec<u8> {
    postcard::to_allocvec(envelope).expect("envelopes always encode")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::*;
    use crate::config::ExchangeConfig;
    use crate::types::*;

    fn start(log: impl CommandLog) -> Sequencer {
        let engine = Engine::genesis(ExchangeConfig::default().to_engine().unwrap(), Seq(1)).unwrap();
        Sequencer::start(engine, log, None, SequencerConfig::default(), vec![])
    }

    #[test]
    fn journals_before_applying_and_replay_matches() {
        let log = MemoryLog::default();
        let seq = start(log.clone());
        let h = seq.handle();
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let h = h.clone();
                std::thread::spawn(move || {
                    (0..50).map(|_| h.submit_blocking(Command::OpenAccount { kind: AccountKind::User }).unwrap().seq).collect::<Vec<_>>()
                })
            })
            .collect();
        let mut seqs: Vec<Seq> = threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
        seqs.sort();
        assert_eq!(seqs, (2..202).map(Seq).collect::<Vec<_>>());
        let hash = h.read_blocking(|e| e.state_hash()).unwrap();
        seq.shutdown();

        let mut replayed = Engine::genesis(ExchangeConfig::default().to_engine().unwrap(), Seq(1)).unwrap();
        let records = log.records.lock().unwrap();
        assert_eq!(records.len(), 200);
        for (s, bytes) in records.iter() {
            let env = decode_record(bytes).unwrap();
            assert_eq!(env.seq, *s);
            replayed.apply(&env);
        }
        assert_eq!(replayed.state_hash(), hash);
    }

    struct FailingLog;
    impl CommandLog for FailingLog {
        fn append(&mut self, _: Seq, _: &[u8]) -> Result<(), String> {
            Ok(())
        }
        fn commit(&mut self) -> Result<(), String> {
            Err("disk on fire".into())
        }
    }

    #[test]
    fn a_failed_commit_acknowledges_nothing_and_stops() {
        let seq = start(FailingLog);
        let h = seq.handle();
        let r = h.submit_blocking(Command::OpenAccount { kind: AccountKind::User });
        assert_eq!(r, Err(SequencerError::Journal("disk on fire".into())));
        assert!(h.has_failed());
        assert_eq!(h.submit_blocking(Command::OpenAccount { kind: AccountKind::User }), Err(SequencerError::Stopped));
        // Nothing was applied.
        assert_eq!(h.read_blocking(|e| e.account_count()).unwrap(), 2);
        seq.shutdown();
    }

    #[test]
    fn book_updates_carry_a_gapless_per_market_sequence() {
        let seq = start(MemoryLog::default());
        let h = seq.handle();
        let mut rx = h.subscribe();
        h.submit_blocking(Command::OpenAccount { kind: AccountKind::User }).unwrap();
        h.submit_blocking(Command::CreditDeposit { account: AccountId(3), asset: AssetId(0), amount: Amount(100_000_000), reference: "r".into() })
            .unwrap();
        for i in 0..3u64 {
            h.submit_blocking(Command::PlaceOrder(NewOrder {
                account: AccountId(3),
                market: MarketId(0),
                side: Side::Sell,
                kind: OrderKind::Limit { price: Price(6_000_000 + i * 100), time_in_force: TimeInForce::Gtc, post_only: false },
                quantity: Quantity(100_000),
                client_order_id: None,
                self_trade: SelfTradePrevention::default(),
            }))
            .unwrap();
        }
        let mut book_seqs = Vec::new();
        while let Ok(a) = rx.try_recv() {
            for u in &a.book_updates {
                assert_eq!(u.levels.len(), 1);
                assert_eq!(u.levels[0].2, Quantity(100_000));
                book_seqs.push(u.book_seq);
            }
        }
        assert_eq!(book_seqs, vec![1, 2, 3]);
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let (book_seq, depth) = rt.block_on(h.book(MarketId(0), 10)).unwrap().unwrap();
        assert_eq!(book_seq, 3);
        assert_eq!(depth.asks.len(), 3);
        seq.shutdown();
    }
}
