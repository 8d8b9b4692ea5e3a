//! The single writer: recovery on open, buffered appends, group commit, segment rolling.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::{io_err, JournalError};
use crate::format::{
    encode_record, encode_segment_header, segment_file_name, MAX_PAYLOAD_LEN, SEGMENT_HEADER_LEN,
};
use crate::fsutil::{ensure_dir, sync_dir};
use crate::scan::{scan_dir, TornTail};

/// Default size after which the writer rolls to a new segment: 64 MiB.
pub const DEFAULT_SEGMENT_BYTES: u64 = 64 * 1024 * 1024;

/// The commit buffer is kept between commits to avoid reallocating; one that grew past this
/// (a huge batch) is shrunk back so it does not pin memory forever.
const KEEP_BUF_BYTES: usize = 64 * 1024 * 1024;
const INITIAL_BUF_BYTES: usize = 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalConfig {
    /// Directory holding the segment files; created if missing.
    pub dir: PathBuf,
    /// Once the current segment has reached this size, the next commit starts a new segment.
    /// A commit never spans two segments, so a segment exceeds this by at most one batch.
    pub segment_bytes: u64,
}

impl JournalConfig {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        JournalConfig {
            dir: dir.into(),
            segment_bytes: DEFAULT_SEGMENT_BYTES,
        }
    }
}

/// What `Journal::open` found and repaired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovery {
    pub segments: usize,
    pub records: u64,
    pub first_seq: Option<u64>,
    /// 0 when the journal holds no records.
    pub last_seq: u64,
    /// The torn tail that was cut (and the cut fsynced), if the last segment had one.
    pub torn_tail: Option<TornTail>,
}

/// What one `commit` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitStats {
    /// Records made durable by this commit (0 if there was nothing to commit).
    pub records: u64,
    /// Bytes written to the segment.
    pub bytes: u64,
    /// `durable_seq()` after the commit.
    pub durable_seq: u64,
    /// The segment this commit created, if it rolled (or started) one.
    pub new_segment: Option<PathBuf>,
    /// Wall time of the write and fdatasync (and segment creation, if any).
    pub elapsed: Duration,
}

/// The segment being appended to.
struct Active {
    file: File,
    path: PathBuf,
    first_seq: u64,
    /// Bytes of whole records plus header, i.e. where the next commit lands.
    len: u64,
    records: u64,
}

/// The journal's single writer. Records are buffered by [`append`](Journal::append) and made
/// durable together by [`commit`](Journal::commit); records appended but not committed are lost
/// if the `Journal` is dropped or the process dies.
///
/// One process, one writer: nothing here stops a second process from opening the same
/// directory, so the caller must ensure it.
pub struct Journal {
    dir: PathBuf,
    segment_bytes: u64,
    active: Option<Active>,
    /// Encoded records waiting for the next commit.
    buf: Vec<u8>,
    pending: u64,
    /// Seq of the first pending record; only needed when the journal has no records yet.
    pending_first: u64,
    last_seq: u64,
    durable_seq: u64,
    /// Set when a commit failed part-way: the file's tail is unknown, so nothing more may be
    /// written until recovery (reopen) has looked at it.
    poisoned: bool,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("dir", &self.dir)
            .field("segment", &self.active.as_ref().map(|a| &a.path))
            .field("last_seq", &self.last_seq)
            .field("durable_seq", &self.durable_seq)
            .field("pending", &self.pending)
            .field("poisoned", &self.poisoned)
            .finish()
    }
}

impl Journal {
    /// Opens the journal in `config.dir` (creating the directory if missing), scans every
    /// segment verifying every header, checksum and seq, cuts a torn tail of the last segment
    /// back to the last whole record (fsyncing the cut), and returns the writer positioned
    /// after the last record. Corruption anywhere else is an error naming file and offset.
    pub fn open(config: JournalConfig) -> Result<(Journal, Recovery), JournalError> {
        let dir = config.dir;
        ensure_dir(&dir)?;
        let report = scan_dir(&dir)?;

        let mut active = None;
        if let Some(last) = report.segments.last() {
            let mut len = last.bytes;
            if let Some(torn) = &report.torn_tail {
                cut_torn_tail(torn, last.first_seq)?;
                len = torn.offset.max(SEGMENT_HEADER_LEN as u64);
            }
            let file = OpenOptions::new()
                .append(true)
                .open(&last.path)
                .map_err(io_err(&last.path))?;
            active = Some(Active {
                file,
                path: last.path.clone(),
                first_seq: last.first_seq,
                len,
                records: last.records,
            });
        }

        let recovery = Recovery {
            segments: report.segments.len(),
            records: report.records,
            first_seq: report.first_seq,
            last_seq: report.last_seq,
            torn_tail: report.torn_tail,
        };
        tracing::info!(
            dir = %dir.display(),
            segments = recovery.segments,
            records = recovery.records,
            last_seq = recovery.last_seq,
            torn_tail = recovery.torn_tail.is_some(),
            "journal opened"
        );
        let journal = Journal {
            dir,
            segment_bytes: config.segment_bytes,
            active,
            buf: Vec::with_capacity(INITIAL_BUF_BYTES),
            pending: 0,
            pending_first: 0,
            last_seq: report.last_seq,
            durable_seq: report.last_seq,
            poisoned: false,
        };
        Ok((journal, recovery))
    }

    /// Buffers one record. `seq` must be `last_seq() + 1`; in an empty journal any seq >= 1
    /// starts it. Nothing is written until [`commit`](Journal::commit).
    #[inline]
    pub fn append(&mut self, seq: u64, payload: &[u8]) -> Result<(), JournalError> {
        if self.poisoned {
            return Err(self.poisoned_err());
        }
        if payload.len() > MAX_PAYLOAD_LEN {
            return Err(JournalError::PayloadTooLarge {
                len: payload.len(),
                max: MAX_PAYLOAD_LEN,
            });
        }
        if self.last_seq == 0 {
            if seq == 0 {
                return Err(JournalError::OutOfOrderAppend {
                    expected: 1,
                    got: 0,
                });
            }
        } else {
            let expected = self.last_seq.saturating_add(1);
            if seq != expected || seq == self.last_seq {
                return Err(JournalError::OutOfOrderAppend { expected, got: seq });
            }
        }
        if self.pending == 0 {
            self.pending_first = seq;
        }
        encode_record(&mut self.buf, seq, payload);
        self.pending += 1;
        self.last_seq = seq;
        Ok(())
    }

    /// Writes every buffered record with one `write_all` and makes them durable with one
    /// `fdatasync` (group commit). After `Ok`, all appended records survive a crash. On error
    /// the writer is poisoned: reopen the journal, which repairs whatever half-write is there.
    pub fn commit(&mut self) -> Result<CommitStats, JournalError> {
        if self.poisoned {
            return Err(self.poisoned_err());
        }
        if self.pending == 0 {
            return Ok(CommitStats {
                records: 0,
                bytes: 0,
                durable_seq: self.durable_seq,
                new_segment: None,
                elapsed: Duration::ZERO,
            });
        }
        let started = Instant::now();
        // Any failure from here on leaves the file tail unknown.
        self.poisoned = true;
        let new_segment = self.roll_if_needed()?;
        let active = self
            .active
            .as_mut()
            .expect("roll_if_needed leaves an active segment");
        active
            .file
            .write_all(&self.buf)
            .and_then(|()| active.file.sync_data())
            .map_err(io_err(&active.path))?;
        self.poisoned = false;

        let bytes = self.buf.len() as u64;
        active.len += bytes;
        active.records += self.pending;
        let records = self.pending;
        self.pending = 0;
        self.durable_seq = self.last_seq;
        self.buf.clear();
        if self.buf.capacity() > KEEP_BUF_BYTES {
            self.buf.shrink_to(INITIAL_BUF_BYTES);
        }
        Ok(CommitStats {
            records,
            bytes,
            durable_seq: self.durable_seq,
            new_segment,
            elapsed: started.elapsed(),
        })
    }

    /// Seq of the last appended record, committed or not; 0 when the journal is empty.
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Seq of the last record made durable by `commit`; 0 when none is.
    pub fn durable_seq(&self) -> u64 {
        self.durable_seq
    }

    /// Records appended but not yet committed.
    pub fn pending(&self) -> u64 {
        self.pending
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The segment the next commit goes to (unless it rolls), if one exists yet.
    pub fn current_segment(&self) -> Option<&Path> {
        self.active.as_ref().map(|a| a.path.as_path())
    }

    fn poisoned_err(&self) -> JournalError {
        JournalError::Poisoned {
            dir: self.dir.clone(),
        }
    }

    /// Starts a new segment when there is none, when the current one is full, or when the only
    /// segment is an empty leftover whose name does not match the journal's first record.
    fn roll_if_needed(&mut self) -> Result<Option<PathBuf>, JournalError> {
        let first = if self.durable_seq == 0 {
            self.pending_first
        } else {
            self.durable_seq + 1
        };
        match &self.active {
            Some(a) if a.records > 0 && a.len < self.segment_bytes => return Ok(None),
            Some(a) if a.records == 0 && a.first_seq == first => return Ok(None),
            Some(a) if a.records == 0 => {
                // Only possible in a journal with no records at all (a crash right after the
                // first segment was created, then a different first seq): the file holds no
                // data, so replacing it loses nothing.
                std::fs::remove_file(&a.path).map_err(io_err(&a.path))?;
                self.active = None;
            }
            _ => {}
        }
        let path = self.dir.join(segment_file_name(first));
        let mut file = OpenOptions::new()
            .append(true)
            .create_new(true)
            .open(&path)
            .map_err(io_err(&path))?;
        file.write_all(&encode_segment_header(first))
            .and_then(|()| file.sync_all())
            .map_err(io_err(&path))?;
        sync_dir(&self.dir)?;
        tracing::debug!(segment = %path.display(), "started journal segment");
        self.active = Some(Active {
            file,
            path: path.clone(),
            first_seq: first,
            len: SEGMENT_HEADER_LEN as u64,
            records: 0,
        });
        Ok(Some(path))
    }
}

/// Cuts the last segment back to its last whole record and fsyncs the cut. A segment torn
/// inside its header gets a fresh header, leaving a valid empty segment.
fn cut_torn_tail(torn: &TornTail, first_seq: u64) -> Result<(), JournalError> {
    let path = &torn.segment;
    tracing::warn!(
        segment = %path.display(),
        offset = torn.offset,
        bytes_dropped = torn.bytes_dropped,
        "cutting torn tail of journal"
    );
    let mut file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(io_err(path))?;
    let result = if torn.offset < SEGMENT_HEADER_LEN as u64 {
        file.set_len(0)
            .and_then(|()| file.write_all(&encode_segment_header(first_seq)))
    } else {
        file.set_len(torn.offset)
    };
    result.and_then(|()| file.sync_all()).map_err(io_err(path))
}
