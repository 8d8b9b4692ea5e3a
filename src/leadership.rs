//! Turns among replicas of a shared journal: the settlement leader ([`LeaderLoop`]) and the
//! event stream's publisher ([`PublishLeader`]).
//!
//! Every replica applies the same commands, so any of them can take orders; but the chain's side
//! (crediting deposits, booking, signing and broadcasting batches) must run in one process at a
//! time, or two would spend the same coins. Replicas started with a chain take turns: the one
//! holding the store's leadership lock (a PostgreSQL advisory lock, see
//! `tandem_store::Leadership`) journals `ClaimSettlementLeadership` with its turn's epoch and
//! runs the deposit and settlement services, whose commands carry the epoch. When its lock's
//! connection fails it stops them; when its process dies the lock goes with the connection and
//! another replica takes the next turn. A leader that lost the lock without noticing (paused,
//! cut off) cannot do harm: the engine refuses commands of every epoch but the newest.
//! Work a leader left half done (a batch booked but not signed, signed but not broadcast) is in
//! the shared store, and the next leader picks it up as a restarted service does.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tandem_matching::{Command, Event, RejectReason, SequencerHandle};
use tandem_store::{Leadership, Store};
use tokio::task::JoinHandle;

/// The role's name in the store's `leader_epochs`.
pub const SETTLEMENT_ROLE: &str = "settlement";

/// Starts the leader's services for the turn of the given epoch.
pub type StartServices = Box<dyn Fn(u64) -> anyhow::Result<Vec<JoinHandle<()>>> + Send + Sync>;

pub struct LeaderLoop {
    pub store: Store,
    pub sequencer: SequencerHandle,
    pub start: StartServices,
    /// How often a follower tries for the lock, and a leader checks it still holds it.
    pub interval: Duration,
    /// The epoch this process leads (0 while it follows), for `/metrics` and tests.
    pub leading: Arc<AtomicU64>,
}

/// Aborts a turn's services when the turn ends, however it ends (dropping a `JoinHandle`
/// alone would leave its task running).
struct Turn(Vec<JoinHandle<()>>);

impl Drop for Turn {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

impl LeaderLoop {
    /// Follows and leads until the task is dropped (or aborted).
    pub fn spawn(self) -> JoinHandle<()> {
        tokio::spawn(async move { self.run().await })
    }

    async fn run(self) {
        loop {
            match self.try_turn().await {
                Ok(Some((lead, turn))) => {
                    self.lead(lead, turn).await;
                    self.leading.store(0, Ordering::Relaxed);
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %format!("{e:#}"), "cannot try for settlement leadership"),
            }
            tokio::time::sleep(self.interval).await;
        }
    }

    /// Takes the lock if it is free, journals the claim and starts the services.
    async fn try_turn(&self) -> anyhow::Result<Option<(Leadership, Turn)>> {
        let journaled = self.sequencer.read(|e| e.settlement_epoch()).await?;
        let Some(lead) = self.store.try_lead(SETTLEMENT_ROLE, journaled + 1).await? else {
            return Ok(None);
        };
        let epoch = lead.epoch();
        let applied = self.sequencer.submit(Command::ClaimSettlementLeadership { epoch }).await?;
        match applied.events.first() {
            Some(Event::SettlementLeadershipClaimed { .. }) => {}
            Some(Event::Rejected { reason: RejectReason::StaleLeaderEpoch }) => {
                // The journal knows a newer epoch than the store (restored from a backup): the
                // next try asks the store for one past it.
                tracing::warn!(epoch, "settlement leadership epoch already used in the journal; trying again");
                return Ok(None);
            }
            other => anyhow::bail!("unexpected answer to a leadership claim: {other:?}"),
        }
        let turn = Turn((self.start)(epoch)?);
        self.leading.store(epoch, Ordering::Relaxed);
        tracing::info!(epoch, "leading settlement");
        Ok(Some((lead, turn)))
    }

    /// Holds the turn while the lock's connection answers and no newer leader claimed.
    async fn lead(&self, mut lead: Leadership, turn: Turn) {
        let epoch = lead.epoch();
        loop {
            tokio::time::sleep(self.interval).await;
            if let Err(e) = lead.check().await {
                tracing::error!(epoch, error = %e, "settlement leadership lost (its lock's connection failed): stopping settlement");
                break;
            }
            match self.sequencer.read(|e| e.settlement_epoch()).await {
                Ok(current) if current != epoch => {
                    tracing::error!(epoch, current, "a newer settlement leader claimed: stopping settlement");
                    break;
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::error!(epoch, error = %e, "the engine is unavailable: stopping settlement");
                    break;
                }
            }
            if turn.0.iter().all(|t| t.is_finished()) {
                tracing::error!(epoch, "the settlement services stopped: giving up leadership");
                break;
            }
        }
        drop(turn);
        lead.resign().await;
    }
}

/// The event stream publisher's role in the store's `leader_epochs`.
pub const EVENTS_ROLE: &str = "events";

/// Turns at publishing the event stream among the processes that publish it (`tandem
/// matching`, a second one standing by): the one holding the role's lock publishes, the others
/// keep what the stream may still lack (`tandem_kafka::events::spawn_led_publisher`). A process
/// that loses the lock's connection stops at its next check; until then both may publish the
/// same records (keyed by seq, byte for byte the same), which consumers keep once.
pub struct PublishLeader {
    pub store: Store,
    pub turn: tandem_kafka::events::PublishTurn,
    /// How often a follower tries for the lock, and the publisher checks it still holds it.
    pub interval: Duration,
}

impl PublishLeader {
    pub fn spawn(self) -> JoinHandle<()> {
        tokio::spawn(async move { self.run().await })
    }

    async fn run(self) {
        loop {
            if self.turn.eligible.load(Ordering::Acquire) {
                match self.store.try_lead(EVENTS_ROLE, 0).await {
                    Ok(Some(lead)) => self.publish(lead).await,
                    Ok(None) => {}
                    Err(e) => tracing::warn!(error = %e, "cannot try for the event stream's turn"),
                }
            }
            tokio::time::sleep(self.interval).await;
        }
    }

    async fn publish(&self, mut lead: Leadership) {
        let epoch = lead.epoch();
        self.turn.epoch.store(epoch, Ordering::Release);
        tracing::info!(epoch, "this process publishes the event stream");
        loop {
            tokio::time::sleep(self.interval).await;
            if !self.turn.eligible.load(Ordering::Acquire) {
                break;
            }
            if let Err(e) = lead.check().await {
                tracing::error!(epoch, error = %e, "the event stream's turn lost (its lock's connection failed)");
                break;
            }
        }
        self.turn.epoch.store(0, Ordering::Release);
        lead.resign().await;
    }
}
