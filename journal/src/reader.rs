//! Replay: reading records in seq order, verifying each one.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::JournalError;
use crate::scan::{list_segments, Scanner, Step, TornTail};

/// One record, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub seq: u64,
    pub payload: Vec<u8>,
    /// Segment file the record is in (shared, so yielding a record does not copy the path).
    pub segment: Arc<Path>,
    /// Byte offset of the record's header within `segment`.
    pub offset: u64,
}

/// One record borrowed from the reader's buffer; valid until the reader advances.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordRef<'a> {
    pub seq: u64,
    pub payload: &'a [u8],
    pub segment: &'a Path,
    pub offset: u64,
}

impl RecordRef<'_> {
    pub fn to_owned_record(&self) -> Record {
        Record {
            seq: self.seq,
            payload: self.payload.to_vec(),
            segment: Arc::from(self.segment),
            offset: self.offset,
        }
    }
}

/// Reads the journal in seq order, verifying every checksum, header and seq, with exactly the
/// rules `Journal::open` applies. A torn tail at the end of the last segment ends the iteration
/// (see [`JournalReader::torn_tail`]); anything else wrong is yielded as an error, after which
/// the iterator is finished.
///
/// Use [`JournalReader::next_ref`] for allocation-free replay, or the `Iterator` impl for owned
/// records. The reader sees each segment as it was when the reader reached it.
pub struct JournalReader {
    dir: PathBuf,
    scanner: Scanner,
    /// `None` reads from the first record, whatever its seq.
    from_seq: Option<u64>,
    reached_from: bool,
    done: bool,
    torn: Option<TornTail>,
}

/// Reads records with seq >= `from_seq`. It is an error (yielded by the iterator) if the journal
/// starts after `from_seq` or ends before `from_seq - 1`: silently starting elsewhere would
/// corrupt replay. An empty journal yields nothing.
pub fn read_from(dir: &Path, from_seq: u64) -> Result<JournalReader, JournalError> {
    let segments = list_segments(dir)?;
    // Start in the last segment whose first seq is <= from_seq; earlier ones are not read.
    let start = segments
        .iter()
        .rposition(|s| s.first_seq <= from_seq)
        .unwrap_or(0);
    Ok(JournalReader {
        dir: dir.to_path_buf(),
        scanner: Scanner::new(segments, start),
        from_seq: Some(from_seq),
        reached_from: false,
        done: false,
        torn: None,
    })
}

/// Reads every record from the first one, whatever its seq.
pub fn read_all(dir: &Path) -> Result<JournalReader, JournalError> {
    let segments = list_segments(dir)?;
    Ok(JournalReader {
        dir: dir.to_path_buf(),
        scanner: Scanner::new(segments, 0),
        from_seq: None,
        reached_from: true,
        done: false,
        torn: None,
    })
}

/// Position of a record in the scanner's buffer.
struct Found {
    seq: u64,
    offset: u64,
    start: usize,
    len: usize,
}

impl JournalReader {
    /// The next record, borrowed from the reader's buffer (no allocation).
    #[inline]
    pub fn next_ref(&mut self) -> Option<Result<RecordRef<'_>, JournalError>> {
        match self.advance()? {
            Err(e) => Some(Err(e)),
            Ok(f) => Some(Ok(RecordRef {
                seq: f.seq,
                payload: self.scanner.payload(f.start, f.len),
                segment: self.scanner.current_segment(),
                offset: f.offset,
            })),
        }
    }

    /// A torn tail the reader stopped at (only known once iteration has ended). `Journal::open`
    /// would cut it; the reader leaves files alone.
    pub fn torn_tail(&self) -> Option<&TornTail> {
        self.torn.as_ref()
    }

    #[inline]
    fn advance(&mut self) -> Option<Result<Found, JournalError>> {
        if self.done {
            return None;
        }
        loop {
            let step = match self.scanner.step() {
                Ok(s) => s,
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            };
            match step {
                Some(Step::Record {
                    seq,
                    offset,
                    start,
                    len,
                }) => {
                    if !self.reached_from {
                        // Set whenever reached_from is false.
                        let from = self.from_seq.unwrap_or(seq);
                        if seq < from {
                            continue;
                        }
                        if seq > from {
                            self.done = true;
                            return Some(Err(
                                self.not_found(from, format!("the journal starts at seq {seq}"))
                            ));
                        }
                        self.reached_from = true;
                    }
                    return Some(Ok(Found {
                        seq,
                        offset,
                        start,
                        len,
                    }));
                }
                Some(Step::SegmentEnd {
                    torn: Some(torn), ..
                }) => self.torn = Some(torn),
                Some(_) => {}
                None => {
                    self.done = true;
                    if let (false, Some(from), Some(last)) =
                        (self.reached_from, self.from_seq, self.scanner.last_seq())
                    {
                        // from == last + 1 is simply "nothing new yet".
                        if from > last.saturating_add(1) {
                            return Some(Err(
                                self.not_found(from, format!("the journal ends at seq {last}"))
                            ));
                        }
                    }
                    return None;
                }
            }
        }
    }

    fn not_found(&self, requested: u64, detail: String) -> JournalError {
        JournalError::SeqNotFound {
            dir: self.dir.clone(),
            requested,
            detail,
        }
    }
}

impl Iterator for JournalReader {
    type Item = Result<Record, JournalError>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        Some(self.advance()?.map(|f| Record {
            seq: f.seq,
            payload: self.scanner.payload(f.start, f.len).to_vec(),
            segment: self.scanner.current_segment().clone(),
            offset: f.offset,
        }))
    }
}

impl std::iter::FusedIterator for JournalReader {}
