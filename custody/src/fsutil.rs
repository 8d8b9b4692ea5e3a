//! Durable file writes shared by the stores: write-to-temp, fsync, rename, fsync directory,
//! so a crash leaves either the old or the new file, never a torn one.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use rand::RngCore;

use crate::error::{CustodyError, Result};

/// `bytes` durably in a new temporary file next to `path`, then `place(tmp, path)`.
fn via_temp(path: &Path, bytes: &[u8], place: impl FnOnce(&Path, &Path) -> std::io::Result<()>) -> (PathBuf, std::io::Result<()>) {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut suffix = [0u8; 6];
    rand::rngs::OsRng.fill_bytes(&mut suffix);
    let tmp = dir.join(format!(".tmp-{}", hex::encode(suffix)));
    let res = (|| {
        let mut f = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        place(&tmp, path)
    })();
    (tmp, res)
}

/// Atomically replaces `path` with `bytes` and makes it durable.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let (tmp, res) = via_temp(path, bytes, |tmp, path| fs::rename(tmp, path));
    if let Err(e) = res {
        let _ = fs::remove_file(&tmp);
        return Err(CustodyError::io(path, e));
    }
    fsync_dir(dir)
}

/// Durably creates `path` with `bytes` unless it exists: `Ok(false)` then, and the file is left
/// as it was. Processes sharing a directory that race to create the same record agree on one.
pub fn write_new(path: &Path, bytes: &[u8]) -> Result<bool> {
    let dir = path.parent().unwrap_or(Path::new("."));
    // A hard link, unlike a rename, never replaces: whole file or nothing, first one wins.
    let (tmp, res) = via_temp(path, bytes, |tmp, path| fs::hard_link(tmp, path));
    let _ = fs::remove_file(&tmp);
    match res {
        Ok(()) => {
            fsync_dir(dir)?;
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(CustodyError::io(path, e)),
    }
}

/// Makes directory entries (creates, renames, removals) durable.
pub(crate) fn fsync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| CustodyError::io(dir, e))
}

/// Creates `dir` (and parents) if missing.
pub(crate) fn ensure_dir(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).map_err(|e| CustodyError::io(dir, e))
}

/// Leftover temp files of interrupted writes.
pub(crate) fn is_temp(name: &str) -> bool {
    name.starts_with(".tmp-")
}
