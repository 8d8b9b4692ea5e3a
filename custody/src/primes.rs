//! Safe primes for aux info generation.
//!
//! Owns: [`AuxPrimes`] (one party's pregenerated Paillier primes, tagged with where they came
//! from), the checked hand-over to cggmp21 that refuses fixture primes unless the configuration
//! allows them, the test/demo fixtures in `custody/fixtures/primes.json`, and the production
//! [`PrimePool`]: a directory of sealed prime pairs filled by a background thread, because
//! safe-prime generation takes tens of seconds and aux info generation should not wait for it.
//!
//! Fixture primes are public (they are in the repository), so aux info made from them gives
//! no secrecy at all: they exist only so tests and demos do not spend minutes on primes.

use std::fmt;
use std::fs;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use cggmp21::rug::Integer;
use cggmp21::security_level::SecurityLevel128;
use cggmp21::PregeneratedPrimes;
use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::error::{CustodyError, Result};
use crate::fsutil;
use crate::group::PartyRole;
use crate::share_store::{to_json_zeroizing, Keyring};

/// The security level used throughout (cggmp21's default: 1536-bit safe primes, 3072-bit N).
pub type Level = SecurityLevel128;

/// Where a party's primes came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PrimesOrigin {
    /// Checked-in test/demo fixtures: publicly known, never for real funds.
    Fixture,
    /// Generated on this machine (directly or through the [`PrimePool`]).
    Generated,
}

/// One party's pregenerated primes (`p`, `q`, safe primes) for aux info generation.
/// Debug shows only the origin and sizes.
pub struct AuxPrimes {
    primes: PregeneratedPrimes<Level>,
    origin: PrimesOrigin,
}

impl AuxPrimes {
    /// Generates fresh safe primes (tens of seconds; run off the async executor).
    pub fn generate() -> Self {
        AuxPrimes { primes: PregeneratedPrimes::generate(&mut rand::rngs::OsRng), origin: PrimesOrigin::Generated }
    }

    /// Where these primes came from.
    pub fn origin(&self) -> PrimesOrigin {
        self.origin
    }

    /// Hands the primes to aux info generation. Fixture primes are refused unless
    /// `allow_fixture_primes` (demo/test configurations only).
    pub fn into_checked(self, allow_fixture_primes: bool) -> Result<PregeneratedPrimes<Level>> {
        if self.origin == PrimesOrigin::Fixture && !allow_fixture_primes {
            return Err(CustodyError::FixturePrimesRefused);
        }
        Ok(self.primes)
    }

    fn to_hex(&self) -> PrimesHex {
        let (p, q) = self.primes.clone().split();
        PrimesHex { p: p.to_string_radix(16), q: q.to_string_radix(16) }
    }

    fn from_hex(h: &PrimesHex, origin: PrimesOrigin, what: &str) -> Result<Self> {
        let parse = |s: &str| {
            Integer::from_str_radix(s, 16)
                .map_err(|_| CustodyError::Format { what: what.into(), reason: "prime is not hex".into() })
        };
        let primes = PregeneratedPrimes::<Level>::new(parse(&h.p)?, parse(&h.q)?)
            .ok_or_else(|| CustodyError::Primes(format!("{what}: primes are too small for the security level")))?;
        Ok(AuxPrimes { primes, origin })
    }
}

impl fmt::Debug for AuxPrimes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AuxPrimes({:?}, <redacted>)", self.origin)
    }
}

#[derive(Serialize, Deserialize, zeroize::Zeroize, zeroize::ZeroizeOnDrop)]
struct PrimesHex {
    p: String,
    q: String,
}

#[derive(Serialize, Deserialize)]
struct FixtureFile {
    purpose: String,
    security_level: String,
    /// `sets[s][i]` = primes of party `i` in fixture set `s`.
    sets: Vec<Vec<PrimesHex>>,
}

const FIXTURE_JSON: &str = include_str!("../fixtures/primes.json");

/// Number of fixture sets (each has primes for 3 parties).
pub fn fixture_sets() -> usize {
    serde_json::from_str::<FixtureFile>(FIXTURE_JSON).map(|f| f.sets.len()).unwrap_or(0)
}

/// Fixture primes of `role` in set `set`. **Test/demo only**: tagged [`PrimesOrigin::Fixture`],
/// refused by [`AuxPrimes::into_checked`] unless fixtures are allowed.
pub fn fixture_primes(set: usize, role: PartyRole) -> Result<AuxPrimes> {
    let file: FixtureFile = serde_json::from_str(FIXTURE_JSON)
        .map_err(|e| CustodyError::Format { what: "fixtures/primes.json".into(), reason: e.to_string() })?;
    let h = file
        .sets
        .get(set)
        .and_then(|s| s.get(role.index() as usize))
        .ok_or_else(|| CustodyError::Primes(format!("no fixture primes for set {set}, {role:?}")))?;
    AuxPrimes::from_hex(h, PrimesOrigin::Fixture, "fixtures/primes.json")
}

/// Writes a fixture file (used once by `examples/gen_fixture_primes.rs`).
pub fn write_fixture_file(path: &std::path::Path, sets: &[Vec<AuxPrimes>]) -> Result<()> {
    let file = FixtureFile {
        purpose: "TEST/DEMO ONLY. These safe primes are public; Paillier keys made from them protect nothing. \
                  Loaded as PrimesOrigin::Fixture and refused unless allow_fixture_primes is set."
            .into(),
        security_level: "cggmp21 SecurityLevel128 (1536-bit safe primes)".into(),
        sets: sets.iter().map(|s| s.iter().map(AuxPrimes::to_hex).collect()).collect(),
    };
    let json = serde_json::to_vec_pretty(&file)
        .map_err(|e| CustodyError::Format { what: path.display().to_string(), reason: e.to_string() })?;
    fsutil::write_atomic(path, &json)
}

/// Progress of [`PrimePool::fill`].
#[derive(Debug, Clone, Copy)]
pub struct FillProgress {
    /// Prime pairs in the pool now.
    pub len: usize,
    /// Target size.
    pub target: usize,
}

/// A persistent pool of generated primes: a directory of sealed files, one prime pair each.
/// Each pair is taken at most once (the file is removed before the primes are returned).
pub struct PrimePool {
    dir: PathBuf,
    keyring: Keyring,
    lock: Mutex<()>,
    stop: AtomicBool,
}

impl PrimePool {
    /// Opens (creating if needed) the pool in `dir`; entries are sealed under `keyring`
    /// (primes are the Paillier secret key).
    pub fn open(dir: impl Into<PathBuf>, keyring: Keyring) -> Result<Arc<Self>> {
        let dir = dir.into();
        fsutil::ensure_dir(&dir)?;
        Ok(Arc::new(PrimePool { dir, keyring, lock: Mutex::new(()), stop: AtomicBool::new(false) }))
    }

    fn entries(&self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for e in fs::read_dir(&self.dir).map_err(|e| CustodyError::io(&self.dir, e))? {
            let e = e.map_err(|e| CustodyError::io(&self.dir, e))?;
            if let Some(stem) = e.file_name().to_str().and_then(|n| n.strip_suffix(".primes")) {
                out.push(stem.to_string());
            }
        }
        out.sort();
        Ok(out)
    }

    /// Number of prime pairs available (exported as a metric).
    pub fn len(&self) -> usize {
        self.entries().map(|e| e.len()).unwrap_or(0)
    }

    /// Whether the pool is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds one prime pair.
    pub fn put(&self, primes: &AuxPrimes) -> Result<()> {
        let mut id = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut id);
        let stem = hex::encode(id);
        let plain = to_json_zeroizing(&primes.to_hex()).map_err(CustodyError::Primes)?;
        let sealed = self.keyring.seal(&format!("primes:{stem}"), &plain)?;
        fsutil::write_atomic(&self.dir.join(format!("{stem}.primes")), &sealed)
    }

    /// Takes one prime pair out of the pool, or `None` if empty. The entry is deleted (durably)
    /// before it is returned, so a pair is never handed out twice, even across a crash.
    pub fn take(&self) -> Result<Option<AuxPrimes>> {
        let _g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let Some(stem) = self.entries()?.into_iter().next() else { return Ok(None) };
        let path = self.dir.join(format!("{stem}.primes"));
        let sealed = fs::read(&path).map_err(|e| CustodyError::io(&path, e))?;
        fs::remove_file(&path).map_err(|e| CustodyError::io(&path, e))?;
        fsutil::fsync_dir(&self.dir)?;
        let label = format!("primes:{stem}");
        let plain = self.keyring.open(&label, &sealed)?;
        let hex: PrimesHex = serde_json::from_slice(&plain)
            .map_err(|_| CustodyError::Format { what: label.clone(), reason: "not a prime pair".into() })?;
        AuxPrimes::from_hex(&hex, PrimesOrigin::Generated, &label).map(Some)
    }

    /// Tops the pool up to `target` pairs in a background thread, calling `progress` after each
    /// new pair. Returns the thread; it ends when the target is reached or [`Self::stop_filling`]
    /// is called, with the pool size at that point.
    pub fn fill(
        self: &Arc<Self>,
        target: usize,
        progress: impl Fn(FillProgress) + Send + 'static,
    ) -> Result<JoinHandle<Result<usize>>> {
        let pool = Arc::clone(self);
        pool.stop.store(false, Ordering::SeqCst);
        std::thread::Builder::new()
            .name("prime-pool-fill".into())
            .spawn(move || {
                loop {
                    let len = pool.len();
                    if len >= target || pool.stop.load(Ordering::SeqCst) {
                        return Ok(len);
                    }
                    let primes = AuxPrimes::generate();
                    pool.put(&primes)?;
                    progress(FillProgress { len: pool.len(), target });
                }
            })
            .map_err(|e| CustodyError::io(&self.dir, e))
    }

    /// Asks a running [`Self::fill`] to stop after the pair it is generating.
    pub fn stop_filling(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

impl fmt::Debug for PrimePool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrimePool").field("dir", &self.dir).field("len", &self.len()).finish()
    }
}
