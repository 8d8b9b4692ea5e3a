//! tandem-matching: the sequencer's heart.
//!
//! Owns accounts, balances, order books and instant credits. Commands go in, events come out:
//! [`Engine::apply`] is pure and deterministic (no clock, no I/O, no randomness), so replaying the
//! journal rebuilds the same state, which [`Engine::state_hash`] proves. Integers inside,
//! decimals only in [`config`] at the edges.
//!


pub(crate) mod book;
pub mod command;
pub mod config;
pub mod engine;
pub mod event;
pub mod invariants;
pub mod ledger;
pub mod sequencer;
pub mod settlement;
pub mod snapshot;
pub mod types;

pub use command::{Command, Envelope, NewOrder, OrderKind, OrderRef, SelfTradePrevention, TimeInForce};
pub use config::{EngineConfig, ExchangeConfig};
pub use engine::{Depth, DepthLevel, Engine, OrderView, FEE_ACCOUNT, SETTLEMENT_POOL};
pub use event::{CloseReason, Event, OrderAccepted, RejectReason, Trade};
pub use invariants::InvariantViolation;
pub use ledger::{Balance, DepositRecord, PendingWithdrawal};
pub use sequencer::{
    Applied, BookUpdate, CommandLog, MemoryLog, MemorySharedLog, MemorySnapshots, Sequencer, SequencerConfig, SequencerError, SequencerHandle,
    SharedFeed, SharedLog, SharedRecord, SnapshotSink, Submission,
};
pub use settlement::{FeeBump, OpenBatch, SettlementLeg};
pub use snapshot::{EngineSnapshot, SnapshotError, StateHash};
pub use types::*;
