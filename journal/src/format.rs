//! On-disk layout of segment files, and the pure (I/O-free) encode/decode functions.
//!
//! ```text
//! segment  = header record*
//! header   = magic "TNDMJRNL" (8) | version u32 LE | first_seq u64 LE | crc32c u32 LE over the previous 20 bytes
//! record   = payload_len u32 LE | crc32c u32 LE over (seq bytes ++ payload) | seq u64 LE | payload
//! ```
//! The header repeats the first seq from the file name so a renamed or copied file is caught.

pub(crate) const SEGMENT_MAGIC: [u8; 8] = *b"TNDMJRNL";
/// The segment format version written and read by this build.
pub const FORMAT_VERSION: u32 = 1;
pub(crate) const SEGMENT_HEADER_LEN: usize = 24;
pub(crate) const RECORD_HEADER_LEN: usize = 16;
/// Largest payload one record may carry. Anything bigger on disk is treated as corruption, so a
/// damaged length field can never make us allocate gigabytes.
pub const MAX_PAYLOAD_LEN: usize = 16 * 1024 * 1024;

pub(crate) const SEGMENT_EXT: &str = "seg";
const NAME_DIGITS: usize = 20;

/// `00000000000000000001.seg`: zero-padded so lexical order is seq order for humans and `ls`.
pub(crate) fn segment_file_name(first_seq: u64) -> String {
    format!("{first_seq:0NAME_DIGITS$}.{SEGMENT_EXT}")
}

/// Parses a segment file name back into its first seq; `None` for anything else.
pub(crate) fn parse_segment_file_name(name: &str) -> Option<u64> {
    parse_numbered_name(name, SEGMENT_EXT)
}

/// Shared by segments and snapshots: exactly 20 ASCII digits, a dot, the extension.
pub(crate) fn parse_numbered_name(name: &str, ext: &str) -> Option<u64> {
    let stem = name.strip_suffix(ext)?.strip_suffix('.')?;
    if stem.len() != NAME_DIGITS || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

pub(crate) fn encode_segment_header(first_seq: u64) -> [u8; SEGMENT_HEADER_LEN] {
    let mut h = [0u8; SEGMENT_HEADER_LEN];
    h[0..8].copy_from_slice(&SEGMENT_MAGIC);
    h[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h[12..20].copy_from_slice(&first_seq.to_le_bytes());
    let crc = crc32c::crc32c(&h[0..20]);
    h[20..24].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Why a segment header was rejected: `(offset within the header, description)`, or a version
/// we do not read (kept apart because it is not damage and must never be "repaired").
pub(crate) enum HeaderError {
    Bad { offset: u64, detail: String },
    Version(u32),
}

/// Checks a full-length header against the seq taken from the file name.
pub(crate) fn check_segment_header(h: &[u8], name_seq: u64) -> Result<(), HeaderError> {
    debug_assert!(h.len() >= SEGMENT_HEADER_LEN);
    if h[0..8] != SEGMENT_MAGIC {
        return Err(HeaderError::Bad {
            offset: 0,
            detail: format!("bad segment magic {:02x?}", &h[0..8]),
        });
    }
    let stored_crc = le_u32(&h[20..24]);
    if crc32c::crc32c(&h[0..20]) != stored_crc {
        return Err(HeaderError::Bad {
            offset: 20,
            detail: "segment header checksum mismatch".into(),
        });
    }
    let version = le_u32(&h[8..12]);
    if version != FORMAT_VERSION {
        return Err(HeaderError::Version(version));
    }
    let header_seq = le_u64(&h[12..20]);
    if header_seq != name_seq {
        return Err(HeaderError::Bad {
            offset: 12,
            detail: format!("header says first seq {header_seq} but the file name says {name_seq}"),
        });
    }
    Ok(())
}

#[inline]
pub(crate) fn record_crc(seq: u64, payload: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&seq.to_le_bytes()), payload)
}

/// Appends one encoded record to `buf`. The caller has checked the payload length.
#[inline]
pub(crate) fn encode_record(buf: &mut Vec<u8>, seq: u64, payload: &[u8]) {
    debug_assert!(payload.len() <= MAX_PAYLOAD_LEN);
    buf.reserve(RECORD_HEADER_LEN + payload.len());
    buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    buf.extend_from_slice(&record_crc(seq, payload).to_le_bytes());
    buf.extend_from_slice(&seq.to_le_bytes());
    buf.extend_from_slice(payload);
}

/// The ways a record can fail to parse. Seq continuity is judged by the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Invalid {
    ShortHeader { available: u64 },
    BadLength { len: u64 },
    ShortPayload { len: u64, available: u64 },
    BadChecksum { seq: u64 },
    WrongSeq { expected: u64, found: u64 },
}

impl Invalid {
    pub(crate) fn describe(&self) -> String {
        match *self {
            Invalid::ShortHeader { available } => format!(
                "incomplete record header ({available} of {RECORD_HEADER_LEN} bytes before end of file)"
            ),
            Invalid::BadLength { len } => {
                format!("record length {len} exceeds the {MAX_PAYLOAD_LEN}-byte limit")
            }
            Invalid::ShortPayload { len, available } => format!(
                "incomplete record payload ({available} of {len} bytes before end of file)"
            ),
            Invalid::BadChecksum { seq } => {
                format!("record checksum mismatch (seq field reads {seq})")
            }
            Invalid::WrongSeq { expected, found } => {
                format!("record has seq {found}, expected {expected}")
            }
        }
    }
}

#[inline]
pub(crate) fn le_u32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

#[inline]
pub(crate) fn le_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

/// Torn-tail test: is there, at any byte offset of `tail`, a record with a valid checksum and a
/// seq greater than `last_valid_seq`? A crash only ever damages the unacknowledged end of the
/// last segment, so a valid newer record *after* the damage proves the damage is not a torn
/// write but corruption of data that had been made durable.
///
/// Returns `(offset within tail, seq)` of the first such record.
pub(crate) fn find_valid_record_after(tail: &[u8], last_valid_seq: u64) -> Option<(usize, u64)> {
    let n = tail.len();
    if n < RECORD_HEADER_LEN {
        return None;
    }
    for off in 0..=(n - RECORD_HEADER_LEN) {
        let h = &tail[off..off + RECORD_HEADER_LEN];
        let len = le_u32(&h[0..4]) as usize;
        let seq = le_u64(&h[8..16]);
        // Cheap filters first so scanning garbage is linear in practice.
        if seq <= last_valid_seq || len > MAX_PAYLOAD_LEN || len > n - off - RECORD_HEADER_LEN {
            continue;
        }
        // seq and payload are contiguous, so one crc call covers both.
        if crc32c::crc32c(&tail[off + 8..off + RECORD_HEADER_LEN + len]) == le_u32(&h[4..8]) {
            return Some((off, seq));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_sort() {
        assert_eq!(segment_file_name(1), "00000000000000000001.seg");
        assert_eq!(
            parse_segment_file_name(&segment_file_name(u64::MAX)),
            Some(u64::MAX)
        );
        assert_eq!(parse_segment_file_name("1.seg"), None);
        assert_eq!(parse_segment_file_name("0000000000000000000a.seg"), None);
        assert_eq!(parse_segment_file_name("00000000000000000001.segx"), None);
        assert!(segment_file_name(9) < segment_file_name(10));
    }

    #[test]
    fn header_checks() {
        let h = encode_segment_header(42);
        assert!(check_segment_header(&h, 42).is_ok());
        assert!(matches!(
            check_segment_header(&h, 43),
            Err(HeaderError::Bad { offset: 12, .. })
        ));
        let mut bad = h;
        bad[0] ^= 1;
        assert!(matches!(
            check_segment_header(&bad, 42),
            Err(HeaderError::Bad { offset: 0, .. })
        ));
        let mut bad = h;
        bad[15] ^= 1;
        assert!(matches!(
            check_segment_header(&bad, 42),
            Err(HeaderError::Bad { offset: 20, .. })
        ));
        // A future version with a valid checksum is reported as such, not as damage.
        let mut v2 = h;
        v2[8..12].copy_from_slice(&2u32.to_le_bytes());
        let crc = crc32c::crc32c(&v2[0..20]);
        v2[20..24].copy_from_slice(&crc.to_le_bytes());
        assert!(matches!(
            check_segment_header(&v2, 42),
            Err(HeaderError::Version(2))
        ));
    }

    #[test]
    fn finds_records_only_when_valid_and_newer() {
        let mut buf = vec![0xAB; 7];
        encode_record(&mut buf, 5, b"hello");
        assert_eq!(find_valid_record_after(&buf, 4), Some((7, 5)));
        assert_eq!(find_valid_record_after(&buf, 5), None);
        buf[7 + 16] ^= 0xFF;
        assert_eq!(find_valid_record_after(&buf, 4), None);
        assert_eq!(find_valid_record_after(&[0u8; 100], 0), None);
    }
}
