//! `tandem custody ...`: operator tools for the provider's custody secrets.

use crate::node::DataDir;
use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tandem_custody::{Keyring, MasterKey, PrimePool};

/// Where the master key comes from: a file of 64 hex characters, or the environment.
pub const MASTER_KEY_ENV: &str = "TANDEM_MASTER_KEY";

pub fn load_master_key(file: Option<&Path>) -> anyhow::Result<MasterKey> {
    match file {
        Some(f) => MasterKey::from_file(f).with_context(|| format!("reading the master key from {}", f.display())),
        None => MasterKey::from_env(MASTER_KEY_ENV)
            .with_context(|| format!("no --master-key-file and no usable {MASTER_KEY_ENV} in the environment")),
    }
}

/// Writes a fresh random master key (hex) to `out`, readable by its owner only; refuses to
/// overwrite an existing file (losing a master key loses every secret sealed under it).
pub fn new_master_key(out: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let key = MasterKey::generate();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(out)
        .with_context(|| format!("creating {} (it must not exist yet)", out.display()))?;
    f.write_all(key.to_hex().as_bytes())?;
    f.sync_all()?;
    println!("master key {} written to {}; back it up: every custody secret is sealed under it", key.id(), out.display());
    Ok(())
}

/// Generates `count` more safe-prime pairs into the node's pool, with a progress bar.
pub fn gen_primes(data_dir: &Path, count: usize, master_key_file: Option<PathBuf>) -> anyhow::Result<()> {
    if count == 0 {
        bail!("--count must be at least 1");
    }
    let key = load_master_key(master_key_file.as_deref())?;
    let dirs = DataDir::new(data_dir);
    let pool = PrimePool::open(dirs.prime_pool(), Keyring::new(key))
        .with_context(|| format!("opening the prime pool in {}", dirs.prime_pool().display()))?;
    let start = pool.len();
    let target = start + count;
    let bar = ProgressBar::new(count as u64);
    bar.set_style(
        ProgressStyle::with_template("{spinner} safe primes [{bar:30}] {pos}/{len} elapsed {elapsed} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    let progress = bar.clone();
    let handle = pool.fill(target, move |p| progress.set_position((p.len - start) as u64))?;
    let done = handle.join().map_err(|_| anyhow::anyhow!("the prime generator panicked"))??;
    bar.finish();
    println!("prime pool {}: {done} pairs ready", dirs.prime_pool().display());
    Ok(())
}
