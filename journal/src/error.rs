//! The one error type of the crate. Every variant that concerns file contents names the file
//! and, where it makes sense, the byte offset, so an operator can go straight to the damage.

use std::path::{Path, PathBuf};

/// Everything that can go wrong in the journal or the snapshot store.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// An operating-system call failed on `path`.
    #[error("I/O error on {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A segment's bytes are damaged somewhere a crash cannot explain (see the crate docs).
    #[error("corrupt journal segment {} at byte offset {offset}: {detail}", segment.display())]
    Corrupt {
        segment: PathBuf,
        offset: u64,
        detail: String,
    },

    /// Sequence numbers are not consecutive, inside a segment or between two segments.
    #[error(
        "sequence gap in journal segment {} at byte offset {offset}: expected seq {expected}, found {found}",
        segment.display()
    )]
    SeqGap {
        segment: PathBuf,
        offset: u64,
        expected: u64,
        found: u64,
    },

    /// The file was written by a format version this build does not understand.
    #[error("unsupported format version {version} in {} (this build reads version {supported})", path.display())]
    UnsupportedVersion {
        path: PathBuf,
        version: u32,
        supported: u32,
    },

    /// `append` was given a seq other than `last_seq() + 1` (or 0 for an empty journal).
    #[error("out-of-order append: expected seq {expected}, got {got}")]
    OutOfOrderAppend { expected: u64, got: u64 },

    /// A payload larger than the per-record limit was appended.
    #[error("payload of {len} bytes exceeds the {max}-byte record limit")]
    PayloadTooLarge { len: usize, max: usize },

    /// A reader was asked to start at a seq the journal does not hold.
    #[error("seq {requested} is not in the journal at {}: {detail}", dir.display())]
    SeqNotFound {
        dir: PathBuf,
        requested: u64,
        detail: String,
    },

    /// A snapshot file failed its own checks (magic, version, length, checksum, seq).
    #[error("corrupt snapshot {}: {detail}", path.display())]
    CorruptSnapshot { path: PathBuf, detail: String },

    /// An earlier commit failed part-way; the file state is unknown, so the writer refuses
    /// further work. Reopening runs recovery, which repairs the tail.
    #[error("journal writer at {} is poisoned by an earlier failed commit; reopen it to recover", dir.display())]
    Poisoned { dir: PathBuf },
}

/// Shorthand for wrapping an `io::Error` with the path it concerns; the path is only copied
/// when there is an error, so this is free on hot paths.
pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> JournalError + '_ {
    move |source| JournalError::Io {
        path: path.to_path_buf(),
        source,
    }
}
