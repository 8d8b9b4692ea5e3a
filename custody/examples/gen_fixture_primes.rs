//! Generates the TEST/DEMO-ONLY fixture primes in `custody/fixtures/primes.json`.
//!
//! Run once: `cargo run -p tandem-custody --example gen_fixture_primes -- [sets]`
//! (dependencies are built with opt-level 3 in every profile, so this needs no `--release`).
//! Uses two threads; each set is three parties' worth of safe-prime pairs.

use std::path::PathBuf;
use std::time::Instant;

use tandem_custody::primes::{write_fixture_file, AuxPrimes};

fn main() {
    let sets: usize = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(2);
    let total = sets * 3;
    let start = Instant::now();
    let (tx, rx) = std::sync::mpsc::channel();
    let workers = 2;
    let handles: Vec<_> = (0..workers)
        .map(|w| {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for k in (w..total).step_by(workers) {
                    let t = Instant::now();
                    let p = AuxPrimes::generate();
                    eprintln!("pair {k} in {:.1}s", t.elapsed().as_secs_f64());
                    tx.send((k, p)).unwrap();
                }
            })
        })
        .collect();
    drop(tx);
    let mut all: Vec<(usize, AuxPrimes)> = rx.iter().collect();
    for h in handles {
        h.join().unwrap();
    }
    all.sort_by_key(|(k, _)| *k);
    let mut it = all.into_iter().map(|(_, p)| p);
    let sets: Vec<Vec<AuxPrimes>> = (0..sets).map(|_| (0..3).map(|_| it.next().unwrap()).collect()).collect();
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/primes.json");
    write_fixture_file(&path, &sets).unwrap();
    eprintln!("wrote {} in {:.1}s", path.display(), start.elapsed().as_secs_f64());
}
