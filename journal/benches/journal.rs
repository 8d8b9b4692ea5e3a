//! Journal throughput: durable group commit and verified replay.
//!
//! Runs against a temp directory on the default temp filesystem (set TMPDIR to measure another
//! disk); fdatasync cost depends entirely on that device.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use tandem_journal::{read_all, verify, Journal, JournalConfig};

const BATCH: u64 = 1_000;
const PAYLOAD: [u8; 64] = [0x5A; 64];
const REPLAY_RECORDS: u64 = 1_000_000;

fn append_group_commit(c: &mut Criterion) {
    let mut g = c.benchmark_group("journal");
    g.throughput(Throughput::Elements(BATCH));
    g.measurement_time(Duration::from_secs(5));
    let tmp = tempfile::tempdir().unwrap();
    let (mut j, _) = Journal::open(JournalConfig::new(tmp.path())).unwrap();
    let mut seq = 0u64;
    // One iteration = 1,000 appends of 64-byte payloads + one durable commit.
    g.bench_function("append_group_commit", |b| {
        b.iter(|| {
            for _ in 0..BATCH {
                seq += 1;
                j.append(seq, &PAYLOAD).unwrap();
            }
            black_box(j.commit().unwrap());
        })
    });
    g.finish();
}

fn replay(c: &mut Criterion) {
    let tmp = tempfile::tempdir().unwrap();
    {
        let (mut j, _) = Journal::open(JournalConfig::new(tmp.path())).unwrap();
        for seq in 1..=REPLAY_RECORDS {
            j.append(seq, &PAYLOAD).unwrap();
            if seq % 10_000 == 0 {
                j.commit().unwrap();
            }
        }
        j.commit().unwrap();
    }
    let dir = tmp.path();

    let mut g = c.benchmark_group("journal");
    g.throughput(Throughput::Elements(REPLAY_RECORDS));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(10));
    // Owned records, as most callers will use it.
    g.bench_function("replay", |b| {
        b.iter(|| {
            let mut n = 0u64;
            for r in read_all(dir).unwrap() {
                let r = r.unwrap();
                n += r.payload.len() as u64;
            }
            assert_eq!(n, REPLAY_RECORDS * 64);
        })
    });
    // Borrowed payloads: no allocation per record.
    g.bench_function("replay_ref", |b| {
        b.iter(|| {
            let mut reader = read_all(dir).unwrap();
            let mut n = 0u64;
            while let Some(r) = reader.next_ref() {
                n += r.unwrap().payload.len() as u64;
            }
            assert_eq!(n, REPLAY_RECORDS * 64);
        })
    });
    g.bench_function("verify", |b| {
        b.iter_batched(
            || (),
            |()| assert_eq!(verify(dir).unwrap().records, REPLAY_RECORDS),
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

criterion_group!(benches, append_group_commit, replay);
criterion_main!(benches);
