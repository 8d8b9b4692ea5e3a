//! Kafka adapters of the matching crate's shared-log ports: the command journal every
//! sequencer replica writes and reads in one partition's order ([`KafkaLog`], [`KafkaFeed`]).
//!
//! The partition is the journal: its order is the order of commands, its offsets are the
//! positions snapshots record. A reader is assigned the partition (no consumer group: the
//! offset it resumes from is the one its last durable snapshot covers, so it "commits" by
//! snapshotting, never before its effects are durable). The producer is idempotent with
//! `acks=all`, so a broker-side retry never writes a command twice.
//!
//! [`events`] publishes what the engine applied, keyed by seq, for consumers outside.

mod config;
pub mod events;
mod feed;
mod log;
pub mod testing;

pub use config::{ensure_topic, KafkaConfig, KafkaError};
pub use feed::KafkaFeed;
pub use log::KafkaLog;
