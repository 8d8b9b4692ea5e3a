//! Snapshots of engine state: opaque bytes tagged with the seq they reflect, so recovery can
//! load the newest good one and replay the journal from the next seq.
//!
//! ```text
//! file   = <seq zero-padded to 20 digits>.snap
//! header = magic "TNDMSNAP" (8) | version u32 LE | crc32c u32 LE over (version, seq, len, payload) | seq u64 LE | len u64 LE
//! ```

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{io_err, JournalError};
use crate::format::{le_u32, le_u64, parse_numbered_name};
use crate::fsutil::{ensure_dir, sync_dir};

const SNAPSHOT_MAGIC: [u8; 8] = *b"TNDMSNAP";
const SNAPSHOT_VERSION: u32 = 1;
const SNAPSHOT_HEADER_LEN: usize = 32;
const SNAPSHOT_EXT: &str = "snap";
const TMP_SUFFIX: &str = ".tmp";

/// A directory of snapshots. Saves are atomic: a reader sees the old set or the new one, and a
/// crash never leaves a half-written file under a final name.
#[derive(Debug, Clone)]
pub struct SnapshotStore {
    dir: PathBuf,
}

impl SnapshotStore {
    /// Opens (creating if missing) the snapshot directory `dir`, e.g. `<journal dir>/snapshots`,
    /// and removes temp files left by a save that crashed.
    pub fn open(dir: &Path) -> Result<Self, JournalError> {
        ensure_dir(dir)?;
        let mut removed = false;
        for entry in std::fs::read_dir(dir).map_err(io_err(dir))? {
            let entry = entry.map_err(io_err(dir))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if let Some(final_name) = name.strip_suffix(TMP_SUFFIX) {
                if parse_numbered_name(final_name, SNAPSHOT_EXT).is_some() {
                    let path = entry.path();
                    tracing::info!(path = %path.display(), "removing unfinished snapshot");
                    std::fs::remove_file(&path).map_err(io_err(&path))?;
                    removed = true;
                }
            }
        }
        if removed {
            sync_dir(dir)?;
        }
        Ok(SnapshotStore {
            dir: dir.to_path_buf(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Saves `bytes` as the snapshot at `seq`: writes a temp file, fsyncs it, renames it to its
    /// final name and fsyncs the directory. Returns the final path. Replaces an existing
    /// snapshot with the same seq atomically.
    pub fn save(&self, seq: u64, bytes: &[u8]) -> Result<PathBuf, JournalError> {
        let final_path = self.path_for(seq);
        let tmp_path = self
            .dir
            .join(format!("{}{TMP_SUFFIX}", snapshot_file_name(seq)));
        let header = encode_header(seq, bytes);
        let written = File::create(&tmp_path).and_then(|mut f| {
            f.write_all(&header)?;
            f.write_all(bytes)?;
            f.sync_all()
        });
        if let Err(e) = written.and_then(|()| std::fs::rename(&tmp_path, &final_path)) {
            // Best effort: the temp file is garbage either way and `open` would remove it.
            let _ = std::fs::remove_file(&tmp_path);
            return Err(JournalError::Io {
                path: tmp_path,
                source: e,
            });
        }
        sync_dir(&self.dir)?;
        Ok(final_path)
    }

    /// Seqs of all snapshot files, ascending (not verified; see `latest`).
    pub fn list(&self) -> Result<Vec<u64>, JournalError> {
        let mut seqs = Vec::new();
        for entry in std::fs::read_dir(&self.dir).map_err(io_err(&self.dir))? {
            let entry = entry.map_err(io_err(&self.dir))?;
            let name = entry.file_name();
            if let Some(seq) = name
                .to_str()
                .and_then(|n| parse_numbered_name(n, SNAPSHOT_EXT))
            {
                seqs.push(seq);
            }
        }
        seqs.sort_unstable();
        Ok(seqs)
    }

    /// The newest snapshot that passes its checks. A damaged one is skipped with a warning and
    /// the previous one used: the journal still holds everything since.
    pub fn latest(&self) -> Result<Option<(u64, Vec<u8>)>, JournalError> {
        self.latest_at_or_before(u64::MAX)
    }

    /// Like `latest`, considering only snapshots with seq <= `seq`.
    pub fn latest_at_or_before(&self, seq: u64) -> Result<Option<(u64, Vec<u8>)>, JournalError> {
        for s in self.list()?.into_iter().rev().filter(|&s| s <= seq) {
            match self.load(s) {
                Ok(bytes) => return Ok(Some((s, bytes))),
                Err(JournalError::CorruptSnapshot { path, detail }) => {
                    tracing::warn!(path = %path.display(), %detail, "skipping corrupt snapshot");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }

    /// Loads and verifies the snapshot at exactly `seq`.
    pub fn load(&self, seq: u64) -> Result<Vec<u8>, JournalError> {
        let path = self.path_for(seq);
        let mut data = std::fs::read(&path).map_err(io_err(&path))?;
        if let Err(detail) = check_snapshot(&data, seq) {
            return Err(JournalError::CorruptSnapshot { path, detail });
        }
        if le_u32(&data[8..12]) != SNAPSHOT_VERSION {
            return Err(JournalError::UnsupportedVersion {
                path,
                version: le_u32(&data[8..12]),
                supported: SNAPSHOT_VERSION,
            });
        }
        data.drain(..SNAPSHOT_HEADER_LEN);
        Ok(data)
    }

    /// Keeps the newest `keep` snapshots that pass their checks and deletes every snapshot
    /// older than those. Damaged snapshots newer than the kept ones are left for inspection (they
    /// do not count towards `keep`), so pruning can never leave fewer good snapshots than asked.
    pub fn prune(&self, keep: usize) -> Result<(), JournalError> {
        let mut good = 0usize;
        let mut removed = false;
        for seq in self.list()?.into_iter().rev() {
            if good < keep {
                match self.load(seq) {
                    Ok(_) => good += 1,
                    Err(JournalError::CorruptSnapshot { path, detail }) => {
                        tracing::warn!(path = %path.display(), %detail, "corrupt snapshot not counted as kept");
                    }
                    Err(e) => return Err(e),
                }
                continue;
            }
            let path = self.path_for(seq);
            std::fs::remove_file(&path).map_err(io_err(&path))?;
            removed = true;
        }
        if removed {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }

    fn path_for(&self, seq: u64) -> PathBuf {
        self.dir.join(snapshot_file_name(seq))
    }
}

fn snapshot_file_name(seq: u64) -> String {
    format!("{seq:020}.{SNAPSHOT_EXT}")
}

fn encode_header(seq: u64, bytes: &[u8]) -> [u8; SNAPSHOT_HEADER_LEN] {
    let mut h = [0u8; SNAPSHOT_HEADER_LEN];
    h[0..8].copy_from_slice(&SNAPSHOT_MAGIC);
    h[8..12].copy_from_slice(&SNAPSHOT_VERSION.to_le_bytes());
    h[16..24].copy_from_slice(&seq.to_le_bytes());
    h[24..32].copy_from_slice(&(bytes.len() as u64).to_le_bytes());
    let crc = crc32c::crc32c_append(
        crc32c::crc32c_append(crc32c::crc32c(&h[8..12]), &h[16..32]),
        bytes,
    );
    h[12..16].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Checks a whole snapshot file; `Err` describes the damage. The version is checked by the
/// caller after this, so an unknown version with a good checksum is not called damage.
fn check_snapshot(data: &[u8], name_seq: u64) -> Result<(), String> {
    if data.len() < SNAPSHOT_HEADER_LEN {
        return Err(format!(
            "file is {} bytes, shorter than its header",
            data.len()
        ));
    }
    if data[0..8] != SNAPSHOT_MAGIC {
        return Err("bad snapshot magic".into());
    }
    let len = le_u64(&data[24..32]);
    let actual = (data.len() - SNAPSHOT_HEADER_LEN) as u64;
    if len != actual {
        return Err(format!(
            "header says {len} payload bytes, file holds {actual}"
        ));
    }
    let crc = crc32c::crc32c_append(crc32c::crc32c(&data[8..12]), &data[16..]);
    if crc != le_u32(&data[12..16]) {
        return Err("snapshot checksum mismatch".into());
    }
    let seq = le_u64(&data[16..24]);
    if seq != name_seq {
        return Err(format!(
            "header says seq {seq} but the file name says {name_seq}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, SnapshotStore) {
        let tmp = tempfile::tempdir().unwrap();
        let s = SnapshotStore::open(&tmp.path().join("snapshots")).unwrap();
        (tmp, s)
    }

    #[test]
    fn save_latest_at_or_before_list() {
        let (_t, s) = store();
        assert_eq!(s.latest().unwrap(), None);
        for seq in [10u64, 20, 30] {
            let p = s.save(seq, format!("state@{seq}").as_bytes()).unwrap();
            assert!(p.ends_with(format!("{seq:020}.snap")));
        }
        assert_eq!(s.list().unwrap(), vec![10, 20, 30]);
        assert_eq!(s.latest().unwrap(), Some((30, b"state@30".to_vec())));
        assert_eq!(
            s.latest_at_or_before(29).unwrap(),
            Some((20, b"state@20".to_vec()))
        );
        assert_eq!(
            s.latest_at_or_before(20).unwrap(),
            Some((20, b"state@20".to_vec()))
        );
        assert_eq!(s.latest_at_or_before(9).unwrap(), None);
        // Empty snapshots are valid too.
        s.save(40, b"").unwrap();
        assert_eq!(s.latest().unwrap(), Some((40, Vec::new())));
        // Saving the same seq again replaces it.
        s.save(40, b"again").unwrap();
        assert_eq!(s.load(40).unwrap(), b"again");
    }

    #[test]
    fn corrupt_newest_falls_back() {
        let (_t, s) = store();
        s.save(1, b"one").unwrap();
        let p2 = s.save(2, b"two").unwrap();
        let mut data = std::fs::read(&p2).unwrap();
        let last = data.len() - 1;
        data[last] ^= 0x01;
        std::fs::write(&p2, &data).unwrap();
        assert!(matches!(
            s.load(2),
            Err(JournalError::CorruptSnapshot { .. })
        ));
        assert_eq!(s.latest().unwrap(), Some((1, b"one".to_vec())));

        // Truncated and renamed files are caught too.
        std::fs::write(&p2, &data[..10]).unwrap();
        assert_eq!(s.latest().unwrap(), Some((1, b"one".to_vec())));
        std::fs::copy(s.path_for(1), s.path_for(3)).unwrap();
        assert_eq!(s.latest().unwrap(), Some((1, b"one".to_vec())));
    }

    #[test]
    fn prune_keeps_newest_good() {
        let (_t, s) = store();
        for seq in 1..=5u64 {
            s.save(seq, &[seq as u8; 100]).unwrap();
        }
        s.prune(2).unwrap();
        assert_eq!(s.list().unwrap(), vec![4, 5]);
        // A damaged newest does not count, so the good one below it survives.
        s.save(6, b"six").unwrap();
        std::fs::write(s.path_for(6), b"garbage").unwrap();
        s.prune(1).unwrap();
        assert_eq!(s.list().unwrap(), vec![5, 6]);
        assert_eq!(s.latest().unwrap(), Some((5, vec![5u8; 100])));
        s.prune(0).unwrap();
        assert_eq!(s.list().unwrap(), Vec::<u64>::new());
    }

    #[test]
    fn open_removes_unfinished_temp_files() {
        let (t, s) = store();
        s.save(7, b"seven").unwrap();
        let tmp = s
            .dir()
            .join(format!("{}{TMP_SUFFIX}", snapshot_file_name(8)));
        std::fs::write(&tmp, b"half").unwrap();
        let stranger = s.dir().join("notes.txt");
        std::fs::write(&stranger, b"keep me").unwrap();
        let s = SnapshotStore::open(&t.path().join("snapshots")).unwrap();
        assert!(!tmp.exists());
        assert!(stranger.exists());
        assert_eq!(s.list().unwrap(), vec![7]);
        assert_eq!(s.latest().unwrap(), Some((7, b"seven".to_vec())));
    }
}
