//! Tandem's write-ahead journal and snapshot store.
//!
//! This crate owns the durable record of what the engine was told to do: an append-only log of
//! opaque byte payloads, each tagged with a consecutive sequence number, written before the
//! engine applies them, plus snapshots of engine state so recovery does not replay from genesis.
//! It knows nothing about what the bytes mean.
//!
//! # Layout
//! A journal is a directory of segment files named by their first seq, zero-padded so lexical
//! order is seq order (`00000000000000000001.seg`). Segments are never deleted, so replay from
//! genesis stays possible. All integers are little-endian:
//!
//! ```text
//! segment header = "TNDMJRNL" | version u32 | first_seq u64 | crc32c u32 of the previous 20 bytes
//! record         = payload_len u32 | crc32c u32 of (seq ++ payload) | seq u64 | payload
//! ```
//! A payload is at most [`MAX_PAYLOAD_LEN`] bytes; a larger length on disk is corruption.
//!
//! # Durability
//! [`Journal::append`] only buffers; [`Journal::commit`] writes the whole buffer with one
//! `write` and one `fdatasync` (group commit). New segment files and the directory entry are
//! fsynced when created, and snapshots are written to a temp file, fsynced, renamed and the
//! directory fsynced.
//!
//! # Torn tail versus corruption
//! A crash can only damage what was being written: the end of the last segment. So at the first
//! invalid record (short, bad length, bad checksum, wrong seq) at offset X of the *last*
//! segment, every byte offset from X on is searched for a record with a valid checksum and a seq
//! above the last valid one. If there is none, the bytes from X are a torn tail: [`Journal::open`]
//! cuts them (and fsyncs the cut), [`verify`] only reports them. If there is one, durable data was
//! damaged: that, any invalid record in an earlier segment, a seq gap, or a bad segment header
//! is a [`JournalError`] naming the segment file and byte offset. Nothing is ever skipped
//! silently. A last segment torn inside its header is rewritten as an empty segment.

mod error;
mod format;
mod fsutil;
mod reader;
mod scan;
mod snapshot;
mod writer;

pub use error::JournalError;
pub use format::{FORMAT_VERSION, MAX_PAYLOAD_LEN};
pub use reader::{read_all, read_from, JournalReader, Record, RecordRef};
pub use scan::{segments, verify, SegmentInfo, TornTail, VerifyReport};
pub use snapshot::SnapshotStore;
pub use writer::{CommitStats, Journal, JournalConfig, Recovery, DEFAULT_SEGMENT_BYTES};

#[cfg(test)]
mod tests;
