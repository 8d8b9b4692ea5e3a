//! On-disk form of a persisted devnet (see [`super::Devnet::open`]).
//!
//! Two files, both a magic, a format version and then records:
//!
//! - the *journal* at the path given to `open`: first a `Faucet` record (the faucet's secret
//!   key, so it finds and spends its coins again), then one record per change of the best
//!   chain, in order: `Connect` (a consensus-encoded block appended on the tip) and
//!   `Disconnect` (the hash of the tip removed by a reorg). Appended and fsynced at each
//!   change, never rewritten in normal operation, so mining costs one small write per block
//!   however long the chain. Replaying it also brings back the blocks a reorg left stale,
//!   still readable by hash as before the restart.
//! - the *mempool file* (`<path>.mempool`): the mempool's transactions, parents first,
//!   rewritten whole (`.tmp`, fsync, rename) after every change of the mempool.
//!
//! A record is `kind: u8`, `len: u32 LE`, `len` bytes, then the first 4 bytes of the payload's
//! double SHA-256 over kind, len and payload (as in Bitcoin's P2P framing), so a flipped or
//! missing byte is found before anything is decoded.
//!
//! Crash behaviour: each append is one `write` then `fsync`, so only a power loss can leave a
//! torn last record; `open` refuses such a file rather than guess. The journal is written
//! before the mempool file: a crash in between leaves mempool entries a block already
//! confirmed, which fail re-admission on the next open and are dropped. When a write fails,
//! the operation that caused it still stands in memory (it happened); the failure is logged
//! and the next chain change rewrites the whole journal from the in-memory best chain (stale
//! blocks are then no longer kept).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use bitcoin::consensus::encode;
use bitcoin::hashes::{sha256d, Hash as _};
use bitcoin::{Block, BlockHash};

use super::chain_state::ChainState;
use super::mempool::Mempool;

const JOURNAL_MAGIC: &[u8; 8] = b"TDMDVNET";
const MEMPOOL_MAGIC: &[u8; 8] = b"TDMDVMPL";
const VERSION: u32 = 1;
const HEADER_LEN: usize = 12;
const CHECKSUM_LEN: usize = 4;

/// Record kinds.
pub(crate) const FAUCET: u8 = 0;
pub(crate) const CONNECT: u8 = 1;
pub(crate) const DISCONNECT: u8 = 2;
pub(crate) const TX: u8 = 3;

/// The mempool file that goes with the journal at `path`.
pub(crate) fn mempool_path(path: &Path) -> PathBuf {
    with_suffix(path, ".mempool")
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

fn checksum(kind: u8, payload: &[u8]) -> [u8; CHECKSUM_LEN] {
    let mut engine = sha256d::Hash::engine();
    io::Write::write_all(&mut engine, &[kind]).expect("hash engines do not fail");
    io::Write::write_all(&mut engine, &(payload.len() as u32).to_le_bytes()).expect("hash engines do not fail");
    io::Write::write_all(&mut engine, payload).expect("hash engines do not fail");
    let hash = sha256d::Hash::from_engine(engine);
    let mut out = [0u8; CHECKSUM_LEN];
    out.copy_from_slice(&hash.as_byte_array()[..CHECKSUM_LEN]);
    out
}

/// One framed record.
pub(crate) fn record(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + 4 + payload.len() + CHECKSUM_LEN);
    out.push(kind);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(payload);
    out.extend_from_slice(&checksum(kind, payload));
    out
}

fn header(magic: &[u8; 8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN);
    out.extend_from_slice(magic);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out
}

/// The journal of a chain: the faucet's secret, then every best-chain block above genesis.
pub(crate) fn journal_bytes(faucet_secret: &[u8; 32], chain: &ChainState) -> Vec<u8> {
    let mut out = header(JOURNAL_MAGIC);
    out.extend(record(FAUCET, faucet_secret));
    for block in chain.blocks_above_genesis() {
        out.extend(record(CONNECT, &encode::serialize(block)));
    }
    out
}

fn mempool_bytes(mempool: &Mempool) -> Vec<u8> {
    let mut out = header(MEMPOOL_MAGIC);
    for entry in mempool.in_arrival_order() {
        out.extend(record(TX, &encode::serialize(&entry.tx)));
    }
    out
}

/// Splits a journal into its records, checking magic, version and every checksum.
pub(crate) fn parse_journal(bytes: &[u8]) -> Result<Vec<(u8, &[u8])>, String> {
    parse(bytes, JOURNAL_MAGIC, "devnet journal")
}

pub(crate) fn parse_mempool(bytes: &[u8]) -> Result<Vec<(u8, &[u8])>, String> {
    parse(bytes, MEMPOOL_MAGIC, "devnet mempool file")
}

fn parse<'a>(bytes: &'a [u8], magic: &[u8; 8], what: &str) -> Result<Vec<(u8, &'a [u8])>, String> {
    if bytes.len() < HEADER_LEN || &bytes[..8] != magic {
        return Err(format!("not a {what} (bad magic or shorter than its header)"));
    }
    let version = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
    if version != VERSION {
        return Err(format!("{what} has format version {version}, this build reads {VERSION}"));
    }
    let mut records = Vec::new();
    let mut at = HEADER_LEN;
    while at < bytes.len() {
        let rest = &bytes[at..];
        if rest.len() < 5 {
            return Err(format!("{what} ends inside the record at byte {at} (truncated?)"));
        }
        let kind = rest[0];
        let len = u32::from_le_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
        // `len` is bounded by what is left before any arithmetic on it.
        let Some(payload) = rest[5..].get(..len) else {
            return Err(format!("{what} ends inside the record at byte {at} (truncated?)"));
        };
        let Some(sum) = rest[5 + len..].get(..CHECKSUM_LEN) else {
            return Err(format!("{what} ends inside the record at byte {at} (truncated?)"));
        };
        if sum != checksum(kind, payload) {
            return Err(format!("{what}: checksum mismatch in the record at byte {at} (corrupt)"));
        }
        records.push((kind, payload));
        at += 5 + len + CHECKSUM_LEN;
    }
    Ok(records)
}

/// Writes `bytes` to `path` so that a crash leaves either the old or the new file:
/// `path.tmp`, fsync, rename, fsync of the directory.
fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = with_suffix(path, ".tmp");
    {
        let mut file = private_options().write(true).create(true).truncate(true).open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    sync_dir(path);
    Ok(())
}

/// Owner-only on Unix: the journal holds the faucet's (regtest) secret key.
fn private_options() -> OpenOptions {
    let mut options = OpenOptions::new();
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
}

/// Makes a rename durable; best effort (not every platform can open a directory).
fn sync_dir(path: &Path) {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if let Ok(dir) = File::open(dir) {
        let _ = dir.sync_all();
    }
}

/// The files of one persisted devnet, kept in step with its state.
pub(crate) struct Store {
    path: PathBuf,
    mempool_path: PathBuf,
    /// Append handle on the journal; `None` after a failed write, so the next chain change
    /// rewrites the journal whole instead of appending to a possibly torn file.
    journal: Option<File>,
    /// Copy of the faucet's secret, for a whole rewrite.
    faucet_secret: [u8; 32],
}

impl std::fmt::Debug for Store {
    // Never print the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).field("ok", &self.journal.is_some()).finish_non_exhaustive()
    }
}

impl Store {
    /// Writes the files of a new devnet (journal of `chain`, empty or current mempool).
    pub fn create(path: &Path, faucet_secret: [u8; 32], chain: &ChainState, mempool: &Mempool) -> io::Result<Self> {
        let mempool_path = mempool_path(path);
        write_atomically(&mempool_path, &mempool_bytes(mempool))?;
        write_atomically(path, &journal_bytes(&faucet_secret, chain))?;
        let journal = Some(OpenOptions::new().append(true).open(path)?);
        Ok(Store { path: path.to_owned(), mempool_path, journal, faucet_secret })
    }

    /// Continues the files of a devnet just replayed from them.
    pub fn attach(path: &Path, faucet_secret: [u8; 32]) -> io::Result<Self> {
        let journal = Some(OpenOptions::new().append(true).open(path)?);
        Ok(Store { path: path.to_owned(), mempool_path: mempool_path(path), journal, faucet_secret })
    }

    /// Records that `hash` was connected on top of `chain` (which already holds it).
    pub fn block_connected(&mut self, hash: &BlockHash, chain: &ChainState) {
        let Some(block) = chain.block(hash) else { return };
        let bytes = record(CONNECT, &encode::serialize::<Block>(block));
        self.append(&bytes, chain);
    }

    /// Records that the tip `hash` was disconnected from `chain` (which no longer holds it).
    pub fn tip_disconnected(&mut self, hash: &BlockHash, chain: &ChainState) {
        self.append(&record(DISCONNECT, hash.as_byte_array()), chain);
    }

    pub fn mempool_changed(&mut self, mempool: &Mempool) {
        if let Err(e) = write_atomically(&self.mempool_path, &mempool_bytes(mempool)) {
            tracing::warn!(path = %self.mempool_path.display(), error = %e, "devnet: cannot save the mempool; will retry at the next change");
        }
    }

    fn append(&mut self, bytes: &[u8], chain: &ChainState) {
        let result = match self.journal.as_mut() {
            Some(file) => file.write_all(bytes).and_then(|()| file.sync_data()),
            None => self.rewrite(chain),
        };
        if let Err(e) = result {
            self.journal = None;
            tracing::warn!(path = %self.path.display(), error = %e, "devnet: cannot save the chain; will rewrite it at the next change");
        }
    }

    fn rewrite(&mut self, chain: &ChainState) -> io::Result<()> {
        write_atomically(&self.path, &journal_bytes(&self.faucet_secret, chain))?;
        self.journal = Some(OpenOptions::new().append(true).open(&self.path)?);
        tracing::info!(path = %self.path.display(), "devnet: journal rewritten from the in-memory chain");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_damage_is_found() {
        let mut bytes = header(MEMPOOL_MAGIC);
        bytes.extend(record(TX, b"abc"));
        bytes.extend(record(TX, b""));
        let parsed = parse_mempool(&bytes).unwrap();
        assert_eq!(parsed, vec![(TX, &b"abc"[..]), (TX, &b""[..])]);
        // Every truncation that is not at a record boundary is refused.
        for cut in 0..bytes.len() {
            let result = parse_mempool(&bytes[..cut]);
            let boundary = cut == HEADER_LEN || cut == HEADER_LEN + 1 + 4 + 3 + CHECKSUM_LEN;
            assert_eq!(result.is_ok(), boundary, "cut at {cut}");
        }
        // Every single flipped byte is refused.
        for at in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[at] ^= 0x40;
            assert!(parse_mempool(&bad).is_err(), "flip at {at}");
        }
        // A journal is not a mempool file.
        assert!(parse_journal(&bytes).is_err());
    }
}
