//! Adapters from the matching crate's ports to the embedded journal and snapshot files.

use tandem_journal::{Journal, SnapshotStore};
use tandem_matching::{CommandLog, Seq, SnapshotSink};

/// The sequencer's write-ahead log on append-only segment files.
pub struct FileCommandLog(pub Journal);

impl CommandLog for FileCommandLog {
    fn append(&mut self, seq: Seq, record: &[u8]) -> Result<(), String> {
        self.0.append(seq.0, record).map_err(|e| e.to_string())
    }

    fn commit(&mut self) -> Result<(), String> {
        self.0.commit().map(|_| ()).map_err(|e| e.to_string())
    }
}

/// Snapshots on disk, keeping the newest few.
pub struct FileSnapshotSink {
    pub store: SnapshotStore,
    pub keep: usize,
}

impl SnapshotSink for FileSnapshotSink {
    // The embedded journal holds nothing but commands: its position is the seq.
    fn save(&mut self, seq: Seq, _position: u64, bytes: &[u8]) -> Result<(), String> {
        self.store.save(seq.0, bytes).map_err(|e| e.to_string())?;
        self.store.prune(self.keep).map_err(|e| e.to_string())
    }
}
