//! Behaviour tests for the writer, recovery, reader and verify, including crash simulations
//! (truncating or scribbling on segment files the way a crash or bit rot would).

use std::fs;
use std::path::{Path, PathBuf};

use proptest::prelude::*;

use crate::format::{encode_record, encode_segment_header, SEGMENT_HEADER_LEN};
use crate::*;

fn open(dir: &Path, segment_bytes: u64) -> (Journal, Recovery) {
    Journal::open(JournalConfig {
        dir: dir.to_path_buf(),
        segment_bytes,
    })
    .unwrap()
}

/// Deterministic payload of varying size (0..=200 bytes) so records straddle everything.
fn payload(seq: u64) -> Vec<u8> {
    let len = (seq.wrapping_mul(7919) % 201) as usize;
    (0..len).map(|i| (seq as usize * 31 + i) as u8).collect()
}

fn write(j: &mut Journal, seqs: std::ops::RangeInclusive<u64>, batch: usize) {
    let seqs: Vec<u64> = seqs.collect();
    for chunk in seqs.chunks(batch) {
        for &s in chunk {
            j.append(s, &payload(s)).unwrap();
        }
        j.commit().unwrap();
    }
}

fn all_records(dir: &Path) -> Vec<Record> {
    read_all(dir)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap()
}

fn seqs(dir: &Path) -> Vec<u64> {
    all_records(dir).iter().map(|r| r.seq).collect()
}

fn seg_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    v.sort();
    v
}

/// Snapshot of every file's bytes, to prove read-only paths change nothing.
fn dir_bytes(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    seg_files(dir)
        .into_iter()
        .map(|p| {
            let b = fs::read(&p).unwrap();
            (p, b)
        })
        .collect()
}

fn flip(path: &Path, offset: u64) {
    let mut b = fs::read(path).unwrap();
    b[offset as usize] ^= 0x40;
    fs::write(path, b).unwrap();
}

#[test]
fn round_trip_across_segment_rolls_and_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("journal");
    let (mut j, rec) = open(&dir, 2048);
    assert_eq!(
        rec,
        Recovery {
            segments: 0,
            records: 0,
            first_seq: None,
            last_seq: 0,
            torn_tail: None
        }
    );
    assert_eq!((j.last_seq(), j.durable_seq()), (0, 0));

    write(&mut j, 1..=300, 7);
    assert_eq!((j.last_seq(), j.durable_seq()), (300, 300));
    drop(j);

    let infos = segments(&dir).unwrap();
    assert!(
        infos.len() > 5,
        "expected several rolls, got {}",
        infos.len()
    );
    let mut next = 1;
    for s in &infos {
        assert_eq!(s.first_seq, next);
        assert_eq!(s.last_seq, Some(next + s.records - 1));
        assert_eq!(s.bytes, fs::metadata(&s.path).unwrap().len());
        next += s.records;
    }
    assert_eq!(next, 301);

    let recs = all_records(&dir);
    assert_eq!(recs.len(), 300);
    for (i, r) in recs.iter().enumerate() {
        assert_eq!(r.seq, i as u64 + 1);
        assert_eq!(r.payload, payload(r.seq));
    }

    // Reopen continues the sequence.
    let (mut j, rec) = open(&dir, 2048);
    assert_eq!(rec.segments, infos.len());
    assert_eq!(
        (rec.records, rec.first_seq, rec.last_seq, rec.torn_tail),
        (300, Some(1), 300, None)
    );
    assert_eq!((j.last_seq(), j.durable_seq()), (300, 300));
    write(&mut j, 301..=400, 13);
    drop(j);
    assert_eq!(seqs(&dir), (1..=400).collect::<Vec<_>>());
    let report = verify(&dir).unwrap();
    assert_eq!(
        (report.records, report.first_seq, report.last_seq),
        (400, Some(1), 400)
    );
}

#[test]
fn reader_from_middle_boundaries_and_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (mut j, _) = open(dir, 1024);
    write(&mut j, 1..=200, 5);
    drop(j);
    let infos = segments(dir).unwrap();

    let from =
        |s: u64| -> Vec<u64> { read_from(dir, s).unwrap().map(|r| r.unwrap().seq).collect() };
    assert_eq!(from(1), (1..=200).collect::<Vec<_>>());
    assert_eq!(from(123), (123..=200).collect::<Vec<_>>());
    // Exactly at a segment's first seq, and at the record before it.
    let b = infos[2].first_seq;
    assert_eq!(from(b), (b..=200).collect::<Vec<_>>());
    assert_eq!(from(b - 1), (b - 1..=200).collect::<Vec<_>>());
    assert_eq!(from(200), vec![200]);
    assert_eq!(from(201), Vec::<u64>::new()); // nothing new yet

    // Seqs the journal does not cover are an error, never a silent skip.
    let err = read_from(dir, 202).unwrap().next().unwrap().unwrap_err();
    assert!(
        matches!(err, JournalError::SeqNotFound { requested: 202, .. }),
        "{err}"
    );
    let err = read_from(dir, 0).unwrap().next().unwrap().unwrap_err();
    assert!(
        matches!(err, JournalError::SeqNotFound { requested: 0, .. }),
        "{err}"
    );

    // Records carry their position; the borrowed API agrees with the owned one.
    let mut r = read_from(dir, 150).unwrap();
    let owned: Vec<Record> = read_from(dir, 150).unwrap().map(Result::unwrap).collect();
    let mut i = 0;
    while let Some(rec) = r.next_ref() {
        let rec = rec.unwrap();
        assert_eq!(rec.to_owned_record(), owned[i]);
        assert_eq!(rec.payload, payload(rec.seq).as_slice());
        i += 1;
    }
    assert_eq!(i, 51);
    let first = &owned[0];
    let bytes = fs::read(&first.segment).unwrap();
    let off = first.offset as usize;
    assert_eq!(&bytes[off + 8..off + 16], &150u64.to_le_bytes());

    // Reading a journal that does not start at 1.
    let tmp2 = tempfile::tempdir().unwrap();
    let (mut j, _) = open(tmp2.path(), 1024);
    write(&mut j, 1000..=1100, 10);
    drop(j);
    assert_eq!(read_all(tmp2.path()).unwrap().count(), 101);
    assert!(read_from(tmp2.path(), 999)
        .unwrap()
        .next()
        .unwrap()
        .is_err());
    assert_eq!(read_from(tmp2.path(), 1000).unwrap().count(), 101);

    // Empty or missing journal.
    let tmp3 = tempfile::tempdir().unwrap();
    assert_eq!(read_from(tmp3.path(), 5).unwrap().count(), 0);
    assert!(matches!(
        read_all(&tmp3.path().join("nope")),
        Err(JournalError::Io { .. })
    ));
}

#[test]
fn appends_must_be_consecutive() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut j, _) = open(tmp.path(), 1 << 20);
    assert!(matches!(
        j.append(0, b"x"),
        Err(JournalError::OutOfOrderAppend {
            expected: 1,
            got: 0
        })
    ));
    j.append(50, b"first may be any seq >= 1").unwrap();
    assert!(matches!(
        j.append(50, b"dup"),
        Err(JournalError::OutOfOrderAppend {
            expected: 51,
            got: 50
        })
    ));
    assert!(matches!(
        j.append(52, b"gap"),
        Err(JournalError::OutOfOrderAppend {
            expected: 51,
            got: 52
        })
    ));
    assert!(matches!(
        j.append(49, b"back"),
        Err(JournalError::OutOfOrderAppend {
            expected: 51,
            got: 49
        })
    ));
    j.append(51, b"ok").unwrap();
    assert_eq!((j.last_seq(), j.durable_seq(), j.pending()), (51, 0, 2));
    let stats = j.commit().unwrap();
    assert_eq!((stats.records, stats.durable_seq), (2, 51));
    assert!(stats
        .new_segment
        .unwrap()
        .ends_with("00000000000000000050.seg"));
    let empty = j.commit().unwrap();
    assert_eq!((empty.records, empty.bytes, empty.durable_seq), (0, 0, 51));

    let too_big = vec![0u8; MAX_PAYLOAD_LEN + 1];
    assert!(matches!(
        j.append(52, &too_big),
        Err(JournalError::PayloadTooLarge { .. })
    ));
    drop(j);

    let (mut j, rec) = open(tmp.path(), 1 << 20);
    assert_eq!((rec.first_seq, rec.last_seq), (Some(50), 51));
    assert!(matches!(
        j.append(53, b"x"),
        Err(JournalError::OutOfOrderAppend {
            expected: 52,
            got: 53
        })
    ));
    j.append(52, b"x").unwrap();
}

#[test]
fn uncommitted_records_are_not_durable() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut j, _) = open(tmp.path(), 1 << 20);
    write(&mut j, 1..=10, 10);
    j.append(11, b"never committed").unwrap();
    drop(j);
    let (j, rec) = open(tmp.path(), 1 << 20);
    assert_eq!((rec.last_seq, rec.torn_tail), (10, None));
    assert_eq!(j.last_seq(), 10);
}

#[test]
fn commit_reports_rolls() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut j, _) = open(tmp.path(), 100);
    j.append(1, &[1; 90]).unwrap();
    assert!(j.commit().unwrap().new_segment.is_some()); // first segment
    j.append(2, &[2; 10]).unwrap();
    let s = j.commit().unwrap();
    // 24 + 16 + 90 >= 100, so the second commit starts a new segment named by its first seq.
    assert!(s.new_segment.unwrap().ends_with("00000000000000000002.seg"));
    assert_eq!(
        j.current_segment().unwrap().file_name().unwrap(),
        "00000000000000000002.seg"
    );
}

/// Builds a journal of records with the given payload sizes, one commit per `batch`.
fn build(dir: &Path, sizes: &[usize], segment_bytes: u64, batch: usize) {
    let (mut j, _) = open(dir, segment_bytes);
    for (chunk_start, chunk) in sizes.chunks(batch).enumerate().map(|(i, c)| (i * batch, c)) {
        for (k, &len) in chunk.iter().enumerate() {
            let seq = (chunk_start + k + 1) as u64;
            j.append(seq, &vec![seq as u8; len]).unwrap();
        }
        j.commit().unwrap();
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, .. ProptestConfig::default() })]

    /// A crash cut anywhere in the last segment: open keeps exactly the records wholly before
    /// the cut, and the journal carries on.
    #[test]
    fn torn_tail_cut_anywhere(
        sizes in prop::collection::vec(0usize..300, 1..60),
        segment_bytes in 256u64..4096,
        batch in 1usize..8,
        cut_frac in 0.0f64..1.0,
    ) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        build(dir, &sizes, segment_bytes, batch);

        let before = all_records(dir);
        let last_seg = seg_files(dir).pop().unwrap();
        let len = fs::metadata(&last_seg).unwrap().len();
        let cut = ((len as f64) * cut_frac) as u64;
        let f = fs::OpenOptions::new().write(true).open(&last_seg).unwrap();
        f.set_len(cut).unwrap();
        drop(f);

        // Records that survive: everything outside the last segment, plus those ending <= cut.
        let survivors: Vec<u64> = before
            .iter()
            .filter(|r| *r.segment != *last_seg || r.offset + 16 + r.payload.len() as u64 <= cut)
            .map(|r| r.seq)
            .collect();
        let at_boundary = cut >= SEGMENT_HEADER_LEN as u64
            && (cut == SEGMENT_HEADER_LEN as u64
                || before.iter().any(|r| *r.segment == *last_seg && r.offset + 16 + r.payload.len() as u64 == cut));
        let expected_cut = if cut < SEGMENT_HEADER_LEN as u64 {
            0
        } else {
            before
                .iter()
                .filter(|r| *r.segment == *last_seg && r.offset + 16 + r.payload.len() as u64 <= cut)
                .map(|r| r.offset + 16 + r.payload.len() as u64)
                .max()
                .unwrap_or(SEGMENT_HEADER_LEN as u64)
        };

        // verify reports, changes nothing.
        let files = dir_bytes(dir);
        let report = verify(dir).unwrap();
        prop_assert_eq!(dir_bytes(dir), files);
        prop_assert_eq!(report.last_seq, survivors.last().copied().unwrap_or(0));
        match &report.torn_tail {
            None => prop_assert!(at_boundary),
            Some(t) => {
                prop_assert!(!at_boundary);
                prop_assert_eq!(&t.segment, &last_seg);
                prop_assert_eq!(t.offset, expected_cut);
                prop_assert_eq!(t.bytes_dropped, cut - expected_cut);
            }
        }

        let (mut j, rec) = open(dir, segment_bytes);
        prop_assert_eq!(rec.torn_tail, report.torn_tail);
        prop_assert_eq!(rec.records, survivors.len() as u64);
        prop_assert_eq!(seqs(dir), survivors.clone());
        prop_assert!(verify(dir).unwrap().torn_tail.is_none());

        // Appending continues from the last surviving record.
        let next = survivors.last().map_or(1, |s| s + 1);
        j.append(next, b"after recovery").unwrap();
        j.append(next + 1, b"and more").unwrap();
        j.commit().unwrap();
        drop(j);
        let mut want = survivors;
        want.extend([next, next + 1]);
        prop_assert_eq!(seqs(dir), want);
    }

    /// Garbage after the last record (a half-written batch that never reached its real bytes).
    #[test]
    fn garbage_tail_is_torn(
        sizes in prop::collection::vec(0usize..200, 1..30),
        garbage in prop::collection::vec(any::<u8>(), 1..500),
    ) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        build(dir, &sizes, 1 << 20, 4);
        let seg = seg_files(dir).pop().unwrap();
        let len = fs::metadata(&seg).unwrap().len();
        let mut bytes = fs::read(&seg).unwrap();
        bytes.extend_from_slice(&garbage);
        fs::write(&seg, &bytes).unwrap();

        let (mut j, rec) = open(dir, 1 << 20);
        let torn = rec.torn_tail.unwrap();
        prop_assert_eq!((torn.offset, torn.bytes_dropped), (len, garbage.len() as u64));
        prop_assert_eq!(fs::metadata(&seg).unwrap().len(), len);
        prop_assert_eq!(rec.last_seq, sizes.len() as u64);
        j.append(rec.last_seq + 1, b"x").unwrap();
        j.commit().unwrap();
        prop_assert_eq!(seqs(dir).len(), sizes.len() + 1);
    }
}

#[test]
fn zeroed_tail_and_stale_record_copy_are_torn() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    build(dir, &[10, 20, 30], 1 << 20, 1);
    let seg = seg_files(dir).pop().unwrap();
    let len = fs::metadata(&seg).unwrap().len();
    // Zeros, as a filesystem may show for space allocated but never written.
    let mut b = fs::read(&seg).unwrap();
    b.extend_from_slice(&[0u8; 4096]);
    // A whole valid record, but with an old seq: not newer, so not proof of corruption.
    encode_record(&mut b, 2, b"stale");
    fs::write(&seg, &b).unwrap();
    let (j, rec) = open(dir, 1 << 20);
    assert_eq!(rec.torn_tail.unwrap().offset, len);
    assert_eq!(j.last_seq(), 3);
}

#[test]
fn reader_stops_at_torn_tail_without_touching_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    build(dir, &[10, 20, 30], 1 << 20, 1);
    let seg = seg_files(dir).pop().unwrap();
    let len = fs::metadata(&seg).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(len - 5)
        .unwrap();
    let mut r = read_all(dir).unwrap();
    let got: Vec<u64> = r.by_ref().map(|x| x.unwrap().seq).collect();
    assert_eq!(got, vec![1, 2]);
    let torn = r.torn_tail().unwrap();
    assert_eq!(torn.bytes_dropped, 16 + 30 - 5);
    assert_eq!(fs::metadata(&seg).unwrap().len(), len - 5);
}

/// Asserts that `open` and `verify` both fail on `dir` with an error naming `segment` and
/// `offset`, and that neither changed any file.
fn assert_corrupt_at(dir: &Path, segment: &Path, offset: u64) {
    let files = dir_bytes(dir);
    for err in [
        verify(dir).unwrap_err(),
        Journal::open(JournalConfig::new(dir)).unwrap_err(),
        segments(dir).unwrap_err(),
    ] {
        match &err {
            JournalError::Corrupt {
                segment: s,
                offset: o,
                ..
            }
            | JournalError::SeqGap {
                segment: s,
                offset: o,
                ..
            } => {
                assert_eq!((s.as_path(), *o), (segment, offset), "{err}");
            }
            other => panic!("expected corruption, got {other}"),
        }
        let msg = err.to_string();
        assert!(
            msg.contains(&segment.display().to_string()) && msg.contains(&offset.to_string()),
            "{msg}"
        );
    }
    // The reader reports the same error when it gets there.
    let err = read_all(dir).unwrap().find_map(Result::err).unwrap();
    assert!(
        matches!(
            err,
            JournalError::Corrupt { .. } | JournalError::SeqGap { .. }
        ),
        "{err}"
    );
    assert_eq!(
        dir_bytes(dir),
        files,
        "read-only paths and a failed open must not modify files"
    );
}

#[test]
fn flipped_byte_early_in_last_segment_is_corruption() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    build(dir, &[40; 50], 1 << 20, 10);
    let recs = all_records(dir);
    let r = &recs[9];
    // Payload byte, crc byte, seq byte and length byte each make record 10 invalid.
    for field_off in [16 + 5, 4, 8, 0] {
        let pos = r.offset + field_off;
        flip(&r.segment, pos);
        assert_corrupt_at(dir, &r.segment, r.offset);
        flip(&r.segment, pos); // undo
        assert_eq!(seqs(dir).len(), 50);
    }
}

#[test]
fn any_damage_in_a_non_last_segment_is_corruption() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    build(dir, &[60; 60], 600, 3);
    let files = seg_files(dir);
    assert!(files.len() >= 3);
    let recs = all_records(dir);
    let first_seg: Vec<&Record> = recs.iter().filter(|r| *r.segment == *files[0]).collect();

    // Even the final record of a non-last segment: it looks like a torn tail, but cannot be one.
    let last = first_seg.last().unwrap();
    flip(&files[0], last.offset + 20);
    assert_corrupt_at(dir, &files[0], last.offset);
    flip(&files[0], last.offset + 20);

    // Truncated non-last segment.
    let original = fs::read(&files[0]).unwrap();
    fs::write(&files[0], &original[..original.len() - 3]).unwrap();
    assert_corrupt_at(dir, &files[0], last.offset);
    // Trailing garbage in a non-last segment.
    let mut extended = original.clone();
    extended.extend_from_slice(&[0u8; 10]);
    fs::write(&files[0], &extended).unwrap();
    assert_corrupt_at(dir, &files[0], original.len() as u64);
    fs::write(&files[0], &original).unwrap();

    // Bad header magic / checksum in a middle segment.
    flip(&files[1], 2);
    assert_corrupt_at(dir, &files[1], 0);
    flip(&files[1], 2);
    flip(&files[1], 14);
    assert_corrupt_at(dir, &files[1], 20);
    flip(&files[1], 14);
    assert_eq!(seqs(dir).len(), 60);
}

#[test]
fn seq_gaps_are_corruption() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    build(dir, &[60; 60], 600, 3);
    let files = seg_files(dir);
    // A missing middle segment: the next one does not continue the seqs.
    let saved = fs::read(&files[1]).unwrap();
    fs::remove_file(&files[1]).unwrap();
    assert_corrupt_at(dir, &files[2], 0);
    fs::write(&files[1], saved).unwrap();

    // A hand-made last segment whose records skip a seq (valid checksums): 1, 2, 4.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let path = dir.join("00000000000000000001.seg");
    let mut b = encode_segment_header(1).to_vec();
    for s in [1u64, 2, 4] {
        encode_record(&mut b, s, b"abc");
    }
    fs::write(&path, &b).unwrap();
    let gap_at = (SEGMENT_HEADER_LEN + 2 * (16 + 3)) as u64;
    assert_corrupt_at(dir, &path, gap_at);
    assert!(matches!(
        verify(dir),
        Err(JournalError::SeqGap {
            expected: 3,
            found: 4,
            ..
        })
    ));

    // A segment whose name disagrees with its header.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let path = dir.join("00000000000000000007.seg");
    fs::write(&path, encode_segment_header(1)).unwrap();
    assert_corrupt_at(dir, &path, 12);
}

#[test]
fn unsupported_version_is_not_repaired() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let path = dir.join("00000000000000000001.seg");
    let mut h = encode_segment_header(1);
    h[8..12].copy_from_slice(&99u32.to_le_bytes());
    let crc = crc32c::crc32c(&h[0..20]);
    h[20..24].copy_from_slice(&crc.to_le_bytes());
    fs::write(&path, h).unwrap();
    assert!(matches!(
        Journal::open(JournalConfig::new(dir)),
        Err(JournalError::UnsupportedVersion { version: 99, .. })
    ));
    assert_eq!(fs::read(&path).unwrap(), h);
}

#[test]
fn empty_and_half_created_last_segments() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    build(dir, &[10; 5], 1 << 20, 5);
    // Crash right after the writer created the next segment (header only): fine, not torn.
    let next = dir.join("00000000000000000006.seg");
    fs::write(&next, encode_segment_header(6)).unwrap();
    let (mut j, rec) = open(dir, 1 << 20);
    assert_eq!((rec.segments, rec.last_seq, rec.torn_tail), (2, 5, None));
    assert_eq!(j.current_segment(), Some(next.as_path()));
    j.append(6, b"six").unwrap();
    assert_eq!(j.commit().unwrap().new_segment, None);
    drop(j);
    assert_eq!(segments(dir).unwrap()[1].records, 1);

    // Crash while writing the header of segment 7: a torn tail at offset 0, rewritten as empty.
    let (mut j, _) = open(dir, 1);
    j.append(7, b"seven").unwrap();
    j.commit().unwrap(); // rolls: segment 6 is over 1 byte
    drop(j);
    let seg8 = dir.join("00000000000000000008.seg");
    fs::write(&seg8, &encode_segment_header(8)[..10]).unwrap();
    assert_eq!(verify(dir).unwrap().torn_tail.unwrap().offset, 0);
    let (mut j, rec) = open(dir, 1 << 20);
    let torn = rec.torn_tail.unwrap();
    assert_eq!(
        (torn.segment.as_path(), torn.offset, torn.bytes_dropped),
        (seg8.as_path(), 0, 10)
    );
    assert_eq!(fs::read(&seg8).unwrap(), encode_segment_header(8));
    j.append(8, b"eight").unwrap();
    j.commit().unwrap();
    drop(j);
    assert_eq!(seqs(dir), (1..=8).collect::<Vec<_>>());

    // An empty segment that is not the last one is not something the writer makes.
    let seg9 = dir.join("00000000000000000009.seg");
    fs::write(&seg9, encode_segment_header(9)).unwrap();
    fs::write(
        dir.join("00000000000000000010.seg"),
        encode_segment_header(10),
    )
    .unwrap();
    assert!(matches!(
        verify(dir),
        Err(JournalError::Corrupt { .. }) | Err(JournalError::SeqGap { .. })
    ));
}

#[test]
fn empty_only_segment_with_other_first_seq_is_replaced() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let stale = dir.join("00000000000000000005.seg");
    fs::write(&stale, encode_segment_header(5)).unwrap();
    let (mut j, rec) = open(dir, 1 << 20);
    assert_eq!((rec.segments, rec.records, rec.last_seq), (1, 0, 0));
    j.append(1, b"one").unwrap();
    j.commit().unwrap();
    drop(j);
    assert!(!stale.exists());
    assert_eq!(seqs(dir), vec![1]);
}

#[test]
fn stray_files_are_ignored() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    build(dir, &[10; 5], 1 << 20, 5);
    fs::write(dir.join("README"), b"hi").unwrap();
    fs::write(dir.join("1.seg"), b"not ours").unwrap();
    fs::create_dir(dir.join("snapshots")).unwrap();
    let (_, rec) = open(dir, 1 << 20);
    assert_eq!((rec.segments, rec.last_seq), (1, 5));
}

#[test]
fn snapshots_and_journal_share_a_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (mut j, _) = open(dir, 1 << 20);
    write(&mut j, 1..=20, 4);
    let snaps = SnapshotStore::open(&dir.join("snapshots")).unwrap();
    snaps.save(12, b"state at 12").unwrap();
    write(&mut j, 21..=30, 4);
    drop(j);
    // Recovery: newest snapshot, then replay from the next seq.
    let (seq, state) = snaps.latest().unwrap().unwrap();
    assert_eq!((seq, state.as_slice()), (12, &b"state at 12"[..]));
    let replay: Vec<u64> = read_from(dir, seq + 1)
        .unwrap()
        .map(|r| r.unwrap().seq)
        .collect();
    assert_eq!(replay, (13..=30).collect::<Vec<_>>());
}
