//! Rebuilding the engine from the journal: the last usable snapshot, then every later record.

use std::path::Path;
use std::sync::Arc;
use tandem_journal::{RecordRef, SnapshotStore};
use tandem_matching::sequencer::decode_record;
use tandem_matching::{Applied, Command, Engine, EngineConfig, Envelope, Seq, SnapshotError, StateHash};

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Journal(#[from] tandem_journal::JournalError),
    #[error("journal record {seq} in {segment} at offset {offset} cannot be decoded: {detail}")]
    Decode { seq: u64, segment: String, offset: u64, detail: String },
    #[error("journal record at offset {offset} of {segment} carries seq {inner} but is filed as {outer}")]
    SeqMismatch { outer: u64, inner: u64, segment: String, offset: u64 },
    #[error("the journal's first record is not a genesis record")]
    NoGenesis,
    #[error("snapshot {seq} is unusable: {detail}")]
    Snapshot { seq: u64, detail: String },
    #[error("genesis configuration is invalid: {0}")]
    Config(String),
}

fn decode(record: &RecordRef<'_>) -> Result<Envelope, ReplayError> {
    decode_record(record.payload).map_err(|e| ReplayError::Decode {
        seq: record.seq,
        segment: record.segment.display().to_string(),
        offset: record.offset,
        detail: e.to_string(),
    })
}

/// What a replay produced.
pub struct Replayed {
    pub engine: Engine,
    /// Seq of the snapshot the replay started from, if any.
    pub from_snapshot: Option<u64>,
    pub records: u64,
}

/// Rebuilds the engine. Starts from the newest snapshot at or before `snapshot_limit` (none:
/// from genesis), applies every later record and hands each applied command with
/// `seq > notify_after` to `on_applied` (projection catch-up). `Ok(None)`: the journal is empty.
pub fn replay(
    journal_dir: &Path,
    snapshots: Option<&SnapshotStore>,
    snapshot_limit: Option<Seq>,
    notify_after: Seq,
    mut on_applied: impl FnMut(Arc<Applied>),
) -> Result<Option<Replayed>, ReplayError> {
    let mut engine = None;
    let mut from_snapshot = None;
    if let (Some(store), Some(limit)) = (snapshots, snapshot_limit) {
        if let Some((seq, bytes)) = store.latest_at_or_before(limit.0)? {
            match Engine::from_snapshot_bytes(&bytes) {
                Ok(e) if e.last_seq().0 != seq => {
                    return Err(ReplayError::Snapshot { seq, detail: format!("holds state of seq {}", e.last_seq()) });
                }
                Ok(e) => {
                    engine = Some(e);
                    from_snapshot = Some(seq);
                }
                // Written by an older release: the journal, kept whole, rebuilds the state.
                Err(SnapshotError::Version(version)) => {
                    tracing::warn!(seq, version, "snapshot of another format; replaying the journal from genesis")
                }
                Err(e) => return Err(ReplayError::Snapshot { seq, detail: e.to_string() }),
            }
        }
    }
    let mut reader = match &engine {
        Some(e) => tandem_journal::read_from(journal_dir, e.last_seq().0 + 1)?,
        None => tandem_journal::read_all(journal_dir)?,
    };
    let mut records = 0u64;
    let mut events = Vec::with_capacity(16);
    while let Some(record) = reader.next_ref() {
        let record = record?;
        let envelope = decode(&record)?;
        if envelope.seq.0 != record.seq {
            return Err(ReplayError::SeqMismatch {
                outer: record.seq,
                inner: envelope.seq.0,
                segment: record.segment.display().to_string(),
                offset: record.offset,
            });
        }
        records += 1;
        let Some(e) = engine.as_mut() else {
            let Command::Genesis(config) = envelope.command else { return Err(ReplayError::NoGenesis) };
            engine = Some(Engine::genesis(config, envelope.seq).map_err(|e| ReplayError::Config(e.to_string()))?);
            continue;
        };
        events.clear();
        e.apply_into(envelope.seq, envelope.timestamp, &envelope.command, &mut events);
        if envelope.seq > notify_after {
            on_applied(Arc::new(Applied {
                seq: envelope.seq,
                timestamp: envelope.timestamp,
                command: envelope.command,
                events: std::mem::take(&mut events),
                book_updates: Vec::new(),
            }));
        }
    }
    Ok(engine.map(|engine| Replayed { engine, from_snapshot, records }))
}

/// Replays the whole journal from genesis, ignoring snapshots: the reference state.
pub fn fresh_state_hash(journal_dir: &Path) -> Result<Option<(Seq, StateHash, Engine)>, ReplayError> {
    Ok(replay(journal_dir, None, None, Seq(u64::MAX), |_| {})?.map(|r| (r.engine.last_seq(), r.engine.state_hash(), r.engine)))
}

/// The genesis config recorded in the journal, if any.
pub fn genesis_config(journal_dir: &Path) -> Result<Option<EngineConfig>, ReplayError> {
    let mut reader = tandem_journal::read_all(journal_dir)?;
    match reader.next_ref() {
        None => Ok(None),
        Some(r) => {
            match decode(&r?)?.command {
                Command::Genesis(c) => Ok(Some(c)),
                _ => Err(ReplayError::NoGenesis),
            }
        }
    }
}
