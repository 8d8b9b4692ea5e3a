//! Small durability helpers shared by the journal and the snapshot store.

use std::path::Path;

use crate::error::{io_err, JournalError};

/// fsyncs a directory so a file created, renamed or removed in it survives a crash. Without
/// this, a freshly created segment or snapshot can vanish even though its data was synced.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), JournalError> {
    // Only Unix can open and fsync a directory; elsewhere the rename/create is what we get.
    #[cfg(unix)]
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Creates `dir` (and missing parents) if needed, making the new directory entry durable.
pub(crate) fn ensure_dir(dir: &Path) -> Result<(), JournalError> {
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        sync_dir(parent)?;
    }
    Ok(())
}
