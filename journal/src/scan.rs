//! Reading segments: listing them, a chunked cursor that parses records out of a big in-memory
//! buffer (one syscall per megabyte, not per record), and the [`Scanner`] state machine that
//! enforces every rule about headers, checksums, seq continuity and torn tails. `open`,
//! `verify`, `segments` and the reader all go through the scanner, so they can never disagree
//! about what the journal holds.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{io_err, JournalError};
use crate::format::{
    check_segment_header, find_valid_record_after, le_u32, le_u64, parse_segment_file_name,
    HeaderError, Invalid, FORMAT_VERSION, MAX_PAYLOAD_LEN, RECORD_HEADER_LEN, SEGMENT_EXT,
    SEGMENT_HEADER_LEN,
};

/// How much of a segment is read per syscall. Big enough that syscalls vanish from profiles,
/// small enough to stay friendly to the cache.
const READ_CHUNK: usize = 1 << 20;

/// The damaged end of the last segment that a crash left behind (see the crate docs for the
/// rule that tells it apart from corruption).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    /// The last segment, the only one a torn tail can be in.
    pub segment: PathBuf,
    /// Byte offset of the first invalid byte; everything before it is whole records.
    pub offset: u64,
    /// How many bytes from `offset` to the end of the file are not whole records.
    pub bytes_dropped: u64,
}

/// One segment file as seen by `segments()` / `verify()`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentInfo {
    pub path: PathBuf,
    /// The first seq, from the file name (also the first record's seq when there is one).
    pub first_seq: u64,
    /// `None` for a segment holding no records yet.
    pub last_seq: Option<u64>,
    pub records: u64,
    /// File size on disk, including the header and any torn tail.
    pub bytes: u64,
}

/// The result of a full read-only check of a journal directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    pub segments: Vec<SegmentInfo>,
    pub records: u64,
    pub first_seq: Option<u64>,
    /// 0 when the journal holds no records.
    pub last_seq: u64,
    /// A torn tail found at the end of the last segment; `verify` reports it, `open` cuts it.
    pub torn_tail: Option<TornTail>,
}

#[derive(Debug, Clone)]
pub(crate) struct SegmentFile {
    pub path: Arc<Path>,
    pub first_seq: u64,
}

/// Lists `dir`'s segment files in seq order. Other files (snapshots, temp files) are ignored;
/// a `*.seg` file with a malformed name is ignored with a warning, because it is not ours to
/// interpret or to touch.
pub(crate) fn list_segments(dir: &Path) -> Result<Vec<SegmentFile>, JournalError> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if !name.ends_with(SEGMENT_EXT) {
            continue;
        }
        let path = entry.path();
        match parse_segment_file_name(name) {
            // `is_file` follows symlinks, so a segment may be a link to elsewhere.
            Some(first_seq) if path.is_file() => out.push(SegmentFile {
                path: Arc::from(path),
                first_seq,
            }),
            _ => {
                tracing::warn!(path = %path.display(), "ignoring file that is not a journal segment")
            }
        }
    }
    out.sort_by_key(|s| s.first_seq);
    Ok(out)
}

/// What the cursor found at its position.
enum Parsed {
    Record {
        seq: u64,
        offset: u64,
        start: usize,
        len: usize,
    },
    End,
    Invalid {
        offset: u64,
        kind: Invalid,
    },
}

/// Sequential reader of one segment file through a reusable buffer.
struct Cursor {
    file: File,
    path: Arc<Path>,
    /// Size when opened. We never read past it, so every decision is about one consistent view
    /// even if a writer is appending meanwhile.
    file_len: u64,
    buf: Vec<u8>,
    /// File offset of `buf[0]`.
    base: u64,
    /// `buf[start..end]` holds unparsed bytes.
    start: usize,
    end: usize,
}

impl Cursor {
    fn open(path: Arc<Path>, buf: Vec<u8>) -> Result<Self, JournalError> {
        let file = File::open(&path).map_err(io_err(&path))?;
        let file_len = file.metadata().map_err(io_err(&path))?.len();
        Ok(Cursor {
            file,
            path,
            file_len,
            buf,
            base: 0,
            start: 0,
            end: 0,
        })
    }

    #[inline]
    fn pos(&self) -> u64 {
        self.base + self.start as u64
    }

    /// Makes at least `need` unparsed bytes available; the caller has checked that the file
    /// holds them.
    fn fill(&mut self, need: usize) -> Result<(), JournalError> {
        if self.end - self.start >= need {
            return Ok(());
        }
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.base += self.start as u64;
            self.end -= self.start;
            self.start = 0;
        }
        if self.buf.len() < need {
            self.buf.resize(need.max(READ_CHUNK), 0);
        }
        // Read as much as fits, not just `need`, so the next records need no syscall.
        let want = (self.buf.len() as u64).min(self.file_len - self.base) as usize;
        while self.end < need {
            let n = self
                .file
                .read(&mut self.buf[self.end..want])
                .map_err(io_err(&self.path))?;
            if n == 0 {
                return Err(JournalError::Io {
                    path: self.path.to_path_buf(),
                    source: std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "segment file shrank while being read",
                    ),
                });
            }
            self.end += n;
        }
        Ok(())
    }

    #[inline]
    fn next_record(&mut self) -> Result<Parsed, JournalError> {
        let offset = self.pos();
        let available = self.file_len - offset;
        if available == 0 {
            return Ok(Parsed::End);
        }
        if available < RECORD_HEADER_LEN as u64 {
            return Ok(Parsed::Invalid {
                offset,
                kind: Invalid::ShortHeader { available },
            });
        }
        self.fill(RECORD_HEADER_LEN)?;
        let h = &self.buf[self.start..self.start + RECORD_HEADER_LEN];
        let len = le_u32(&h[0..4]) as usize;
        if len > MAX_PAYLOAD_LEN {
            return Ok(Parsed::Invalid {
                offset,
                kind: Invalid::BadLength { len: len as u64 },
            });
        }
        let total = RECORD_HEADER_LEN + len;
        if available < total as u64 {
            return Ok(Parsed::Invalid {
                offset,
                kind: Invalid::ShortPayload {
                    len: len as u64,
                    available: available - RECORD_HEADER_LEN as u64,
                },
            });
        }
        self.fill(total)?;
        let r = &self.buf[self.start..self.start + total];
        let stored_crc = le_u32(&r[4..8]);
        let seq = le_u64(&r[8..16]);
        // seq and payload are contiguous on disk, so one crc call covers both.
        if crc32c::crc32c(&r[8..]) != stored_crc {
            return Ok(Parsed::Invalid {
                offset,
                kind: Invalid::BadChecksum { seq },
            });
        }
        let start = self.start + RECORD_HEADER_LEN;
        self.start += total;
        Ok(Parsed::Record {
            seq,
            offset,
            start,
            len,
        })
    }

    /// Everything from `offset` to the end of the file, for the torn-tail search.
    fn read_tail(&mut self, offset: u64) -> Result<Vec<u8>, JournalError> {
        let mut tail = Vec::with_capacity((self.file_len - offset) as usize);
        self.file
            .seek(SeekFrom::Start(offset))
            .map_err(io_err(&self.path))?;
        (&mut self.file)
            .take(self.file_len - offset)
            .read_to_end(&mut tail)
            .map_err(io_err(&self.path))?;
        Ok(tail)
    }
}

/// What the scanner reports, one step at a time. Payloads stay in the scanner's buffer
/// (`Scanner::payload`) so replay allocates nothing per record unless the caller wants a copy.
pub(crate) enum Step {
    SegmentStart {
        idx: usize,
        file_len: u64,
    },
    Record {
        seq: u64,
        offset: u64,
        start: usize,
        len: usize,
    },
    SegmentEnd {
        torn: Option<TornTail>,
    },
}

enum State {
    NextSegment,
    InSegment(Cursor),
    EndSegment { torn: Option<TornTail> },
    Done,
}

/// Walks segments `segments[start..]` in order, checking everything. The last segment of the
/// list is the journal's last segment: only there may a torn tail be.
pub(crate) struct Scanner {
    segments: Vec<SegmentFile>,
    idx: usize,
    state: State,
    /// Seq the next record must carry; `None` until the first segment is opened.
    expected: Option<u64>,
    records_in_segment: u64,
    /// Read buffer handed from one segment's cursor to the next.
    spare_buf: Vec<u8>,
}

impl Scanner {
    pub(crate) fn new(segments: Vec<SegmentFile>, start: usize) -> Self {
        Scanner {
            segments,
            idx: start,
            state: State::NextSegment,
            expected: None,
            records_in_segment: 0,
            spare_buf: Vec::new(),
        }
    }

    pub(crate) fn segment(&self, idx: usize) -> &SegmentFile {
        &self.segments[idx]
    }

    /// The segment the last `Step::Record` came from.
    pub(crate) fn current_segment(&self) -> &Arc<Path> {
        &self.segments[self.idx].path
    }

    /// The payload of a `Step::Record`; valid until the next `step`.
    #[inline]
    pub(crate) fn payload(&self, start: usize, len: usize) -> &[u8] {
        match &self.state {
            State::InSegment(c) => &c.buf[start..start + len],
            // Records are only reported while a segment is open.
            _ => &[],
        }
    }

    /// Seq of the last whole record seen so far (or the seq before the first segment's name).
    pub(crate) fn last_seq(&self) -> Option<u64> {
        self.expected.map(|e| e - 1)
    }

    pub(crate) fn step(&mut self) -> Result<Option<Step>, JournalError> {
        let r = self.step_inner();
        if r.is_err() {
            self.state = State::Done;
        }
        r
    }

    fn step_inner(&mut self) -> Result<Option<Step>, JournalError> {
        loop {
            match &mut self.state {
                State::Done => return Ok(None),
                State::NextSegment => {
                    if self.idx >= self.segments.len() {
                        self.state = State::Done;
                        return Ok(None);
                    }
                    return self.open_segment().map(Some);
                }
                State::EndSegment { torn } => {
                    let torn = torn.take();
                    self.state = State::NextSegment;
                    self.idx += 1;
                    return Ok(Some(Step::SegmentEnd { torn }));
                }
                State::InSegment(cursor) => {
                    let is_last = self.idx + 1 == self.segments.len();
                    match cursor.next_record()? {
                        Parsed::Record {
                            seq,
                            offset,
                            start,
                            len,
                        } => {
                            // `expected` is set when the segment is opened.
                            let expected = self.expected.unwrap_or(seq);
                            if seq == expected {
                                self.expected = Some(seq.checked_add(1).ok_or_else(|| {
                                    JournalError::Corrupt {
                                        segment: cursor.path.to_path_buf(),
                                        offset,
                                        detail: "seq overflows u64".into(),
                                    }
                                })?);
                                self.records_in_segment += 1;
                                return Ok(Some(Step::Record {
                                    seq,
                                    offset,
                                    start,
                                    len,
                                }));
                            }
                            let kind = Invalid::WrongSeq {
                                expected,
                                found: seq,
                            };
                            self.invalid_record(offset, kind, is_last)?;
                        }
                        Parsed::End => {
                            let valid_len = cursor.pos();
                            if self.records_in_segment == 0 && !is_last {
                                return Err(JournalError::Corrupt {
                                    segment: cursor.path.to_path_buf(),
                                    offset: valid_len,
                                    detail: "segment holds no records but is not the last segment"
                                        .into(),
                                });
                            }
                            self.finish_segment(None);
                        }
                        Parsed::Invalid { offset, kind } => {
                            self.invalid_record(offset, kind, is_last)?;
                        }
                    }
                }
            }
        }
    }

    /// Moves the cursor's buffer aside for reuse and queues the `SegmentEnd` step.
    fn finish_segment(&mut self, torn: Option<TornTail>) {
        if let State::InSegment(c) = std::mem::replace(&mut self.state, State::EndSegment { torn })
        {
            self.spare_buf = c.buf;
        }
    }

    fn open_segment(&mut self) -> Result<Step, JournalError> {
        let seg = self.segments[self.idx].clone();
        let is_last = self.idx + 1 == self.segments.len();
        let corrupt = |offset: u64, detail: String| JournalError::Corrupt {
            segment: seg.path.to_path_buf(),
            offset,
            detail,
        };
        if seg.first_seq == 0 {
            return Err(corrupt(
                0,
                "segment file name has seq 0; seqs start at 1".into(),
            ));
        }
        match self.expected {
            Some(expected) if expected != seg.first_seq => {
                return Err(JournalError::SeqGap {
                    segment: seg.path.to_path_buf(),
                    offset: 0,
                    expected,
                    found: seg.first_seq,
                })
            }
            _ => self.expected = Some(seg.first_seq),
        }
        self.records_in_segment = 0;
        let mut cursor = Cursor::open(seg.path.clone(), std::mem::take(&mut self.spare_buf))?;
        let file_len = cursor.file_len;
        if file_len < SEGMENT_HEADER_LEN as u64 {
            if !is_last {
                return Err(corrupt(
                    0,
                    format!("segment is {file_len} bytes, shorter than its {SEGMENT_HEADER_LEN}-byte header"),
                ));
            }
            // Crashed while creating the segment: nothing in it was ever acknowledged.
            self.state = State::EndSegment {
                torn: Some(TornTail {
                    segment: seg.path.to_path_buf(),
                    offset: 0,
                    bytes_dropped: file_len,
                }),
            };
            return Ok(Step::SegmentStart {
                idx: self.idx,
                file_len,
            });
        }
        cursor.fill(SEGMENT_HEADER_LEN)?;
        match check_segment_header(&cursor.buf[..SEGMENT_HEADER_LEN], seg.first_seq) {
            Ok(()) => {}
            Err(HeaderError::Bad { offset, detail }) => return Err(corrupt(offset, detail)),
            Err(HeaderError::Version(version)) => {
                return Err(JournalError::UnsupportedVersion {
                    path: seg.path.to_path_buf(),
                    version,
                    supported: FORMAT_VERSION,
                })
            }
        }
        cursor.start = SEGMENT_HEADER_LEN;
        self.state = State::InSegment(cursor);
        Ok(Step::SegmentStart {
            idx: self.idx,
            file_len,
        })
    }

    /// Applies the torn-tail rule to an invalid record at `offset`.
    fn invalid_record(
        &mut self,
        offset: u64,
        kind: Invalid,
        is_last: bool,
    ) -> Result<(), JournalError> {
        let State::InSegment(cursor) = &mut self.state else {
            unreachable!("records are only parsed inside a segment")
        };
        let segment = cursor.path.to_path_buf();
        if !is_last {
            return Err(invalid_to_error(segment, offset, kind));
        }
        let last_valid = self.expected.map_or(0, |e| e - 1);
        let tail = cursor.read_tail(offset)?;
        match find_valid_record_after(&tail, last_valid) {
            None => {
                let torn = TornTail {
                    segment,
                    offset,
                    bytes_dropped: tail.len() as u64,
                };
                self.finish_segment(Some(torn));
                Ok(())
            }
            Some((0, _)) => Err(invalid_to_error(segment, offset, kind)),
            Some((at, seq)) => Err(JournalError::Corrupt {
                segment,
                offset,
                detail: format!(
                    "{}; not a torn tail, since a valid record with seq {seq} follows at byte offset {}",
                    kind.describe(),
                    offset + at as u64
                ),
            }),
        }
    }
}

fn invalid_to_error(segment: PathBuf, offset: u64, kind: Invalid) -> JournalError {
    match kind {
        Invalid::WrongSeq { expected, found } => JournalError::SeqGap {
            segment,
            offset,
            expected,
            found,
        },
        _ => JournalError::Corrupt {
            segment,
            offset,
            detail: kind.describe(),
        },
    }
}

/// Full scan of a journal directory; never modifies anything.
pub(crate) fn scan_dir(dir: &Path) -> Result<VerifyReport, JournalError> {
    let segments = list_segments(dir)?;
    let mut infos: Vec<SegmentInfo> = Vec::with_capacity(segments.len());
    let mut scanner = Scanner::new(segments, 0);
    let mut report = VerifyReport {
        segments: Vec::new(),
        records: 0,
        first_seq: None,
        last_seq: 0,
        torn_tail: None,
    };
    while let Some(step) = scanner.step()? {
        match step {
            Step::SegmentStart { idx, file_len } => {
                let seg = scanner.segment(idx);
                infos.push(SegmentInfo {
                    path: seg.path.to_path_buf(),
                    first_seq: seg.first_seq,
                    last_seq: None,
                    records: 0,
                    bytes: file_len,
                });
            }
            Step::Record { seq, .. } => {
                report.first_seq.get_or_insert(seq);
                report.last_seq = seq;
                report.records += 1;
                if let Some(info) = infos.last_mut() {
                    info.last_seq = Some(seq);
                    info.records += 1;
                }
            }
            Step::SegmentEnd { torn, .. } => {
                if torn.is_some() {
                    report.torn_tail = torn;
                }
            }
        }
    }
    report.segments = infos;
    Ok(report)
}

/// Read-only full check of the journal in `dir`, for `tandem journal verify`: every header,
/// checksum and seq. A torn tail is reported, not cut; corruption is an error naming the
/// segment and byte offset. Never modifies any file.
pub fn verify(dir: &Path) -> Result<VerifyReport, JournalError> {
    scan_dir(dir)
}

/// Segment list for `tandem journal inspect`: first/last seq, record count and size of each.
/// This is a full verifying scan, so it fails on a corrupt journal (use `verify` to see why).
pub fn segments(dir: &Path) -> Result<Vec<SegmentInfo>, JournalError> {
    Ok(scan_dir(dir)?.segments)
}
