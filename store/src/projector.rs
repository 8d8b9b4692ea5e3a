//! Keeps the store current from the sequencer's lossless event sink.
//!
//! One OS thread with its own current-thread runtime: projection is a single sequential
//! writer, so it needs no share of the API's runtime, and a slow disk stalls only this thread
//! (and, through the bounded sink, eventually the engine: events are never dropped).

use crate::{Store, StoreError};
use crossbeam_channel::{Receiver, TryRecvError};
use std::sync::Arc;
use std::time::Duration;
use tandem_matching::{Applied, Seq};
use tokio::sync::watch;

/// Most commands written in one transaction. Large batches amortise the commit; this bound
/// keeps one transaction's memory and lock time small.
const MAX_BATCH: usize = 4096;
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);

pub struct Projector;

impl Projector {
    /// Spawns the projector thread. It blocks on `rx`, drains whatever else is queued (up to
    /// 4096 commands), writes it with one [`Store::apply_batch`], and publishes the new projected
    /// seq. On a database error it logs, waits and retries the same batch. It stops when every
    /// sender is gone. `start` is the seq already projected (usually [`Store::projected_seq`]).
    pub fn spawn(store: Store, rx: Receiver<Arc<Applied>>, start: Seq) -> ProjectorHandle {
        let (published, seq) = watch::channel(start);
        let spawned =
            std::thread::Builder::new().name("tandem-projector".into()).spawn(move || run(store, rx, published));
        if let Err(e) = spawned {
            // The sender went with the closure, so every `wait_for` answers false at once.
            tracing::error!(error = %e, "cannot start the projector thread; history queries will be stale");
        }
        ProjectorHandle { seq }
    }
}

impl Projector {
    /// For a process that leaves projecting to another (`tandem gateway` beside `tandem
    /// matching`): a handle that follows the store's own cursor, read every `interval`, so
    /// history reads still wait for the caller's writes to be projected.
    pub fn follow(store: Store, interval: Duration) -> ProjectorHandle {
        let (published, seq) = watch::channel(Seq(0));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if published.is_closed() {
                    break;
                }
                match store.projected_seq().await {
                    Ok(at) => {
                        published.send_if_modified(|s| {
                            let advanced = at > *s;
                            if advanced {
                                *s = at;
                            }
                            advanced
                        });
                    }
                    Err(e) => tracing::debug!(error = %e, "cannot read the projection cursor"),
                }
            }
        });
        ProjectorHandle { seq }
    }
}

/// Where the projector has got to; cheap to clone.
#[derive(Clone)]
pub struct ProjectorHandle {
    seq: watch::Receiver<Seq>,
}

impl ProjectorHandle {
    /// Last seq whose events are committed to the store.
    pub fn projected_seq(&self) -> Seq {
        *self.seq.borrow()
    }

    /// Waits until everything up to `seq` is projected, so a history query sees the caller's
    /// own writes. False on timeout, or if the projector has stopped short of `seq`.
    pub async fn wait_for(&self, seq: Seq, timeout: Duration) -> bool {
        if self.projected_seq() >= seq {
            return true;
        }
        let mut rx = self.seq.clone();
        let reached = tokio::time::timeout(timeout, rx.wait_for(|s| *s >= seq)).await;
        matches!(reached, Ok(Ok(_)))
    }
}

fn run(store: Store, rx: Receiver<Arc<Applied>>, published: watch::Sender<Seq>) {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the projector runtime; history queries will be stale");
            return;
        }
    };
    runtime.block_on(project_until_closed(store, rx, published));
}

async fn project_until_closed(store: Store, rx: Receiver<Arc<Applied>>, published: watch::Sender<Seq>) {
    let mut batch: Vec<Arc<Applied>> = Vec::with_capacity(MAX_BATCH);
    loop {
        let first = match rx.try_recv() {
            Ok(a) => a,
            Err(TryRecvError::Disconnected) => break,
            // Wait on the blocking pool rather than blocking this thread: sqlx hands a used
            // connection back to its pool in a task spawned on this runtime, which must keep
            // running while we wait (or the connection stays out of the pool until the next batch).
            Err(TryRecvError::Empty) => {
                let waiting = rx.clone();
                match tokio::task::spawn_blocking(move || waiting.recv()).await {
                    Ok(Ok(a)) => a,
                    Ok(Err(_)) => break,
                    Err(e) => {
                        tracing::error!(error = %e, "projector wait failed; projector stopped");
                        return;
                    }
                }
            }
        };
        batch.clear();
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(a) => batch.push(a),
                Err(_) => break,
            }
        }
        let last = batch.iter().map(|a| a.seq).max().unwrap_or_default();
        write_until_done(&store, &batch).await;
        published.send_if_modified(|s| {
            let advanced = last > *s;
            if advanced {
                *s = last;
            }
            advanced
        });
    }
    tracing::info!(seq = published.borrow().0, "event sink closed; projector stopped");
}

/// Never gives up on a batch: dropping it would leave a hole the cursor would then skip.
async fn write_until_done(store: &Store, batch: &[Arc<Applied>]) {
    let mut delay = RETRY_FIRST;
    loop {
        match store.apply_batch(batch).await {
            Ok(()) => return,
            Err(e) => {
                let first = batch.first().map(|a| a.seq.0).unwrap_or(0);
                let last = batch.last().map(|a| a.seq.0).unwrap_or(0);
                // Retried too: the projection must not skip a command, and an operator can fix
                // the cause (disk full, a bad row) while the batch waits.
                let permanent = matches!(e, StoreError::Corrupt(_));
                tracing::error!(error = %e, first, last, permanent, retry_in_ms = delay.as_millis() as u64,
                    "projecting a batch failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(RETRY_MAX);
            }
        }
    }
}
