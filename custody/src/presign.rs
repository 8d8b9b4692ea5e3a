//! Presignatures: generation ahead of time, and single-use storage.
//!
//! Owns: running cggmp21's presignature generation for one key and one signer set, the
//! [`StoredPresignature`] record (bound to group, key, signer set and holder), and the
//! [`PresignatureStore`] contract: `consume` durably marks a presignature used *before* it
//! returns it, so a partial signature can only ever be issued after the mark is on disk, and a
//! second `consume` (even after a crash and restart) is refused. Reusing a presignature for two
//! messages reveals the key, so this is the one invariant that must never bend.
//!
//! [`FilePresignatureStore`]: a directory of sealed presignature files plus an append-only,
//! fsynced `used.log` of consumed ids. [`MemoryPresignatureStore`]: same contract within one
//! process (tests, benchmarks), not crash-safe.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::sync::Mutex;

use bitcoin::CompressedPublicKey;
use cggmp21::supported_curves::Secp256k1 as Curve;
use cggmp21::Presignature;
use serde::{Deserialize, Serialize};

use crate::bitcoin::pubkey_hex;
use crate::error::{CustodyError, ProtocolKind, Result};
use crate::fsutil;
use crate::group::{ExecutionId, GroupId, PartyRole};
use crate::keygen::VaultKey;
use crate::party::Party;
use crate::share_store::Keyring;
use crate::sign::SigningMsg;
use crate::transport::{run_session, Link};

/// A presignature is identified by the execution id of the session that produced it; every
/// signer of that session holds its own presignature under the same id.
pub type PresignatureId = ExecutionId;

/// One party's presignature with what it is bound to. Deliberately not `Clone` and with
/// read-only fields: only [`Party::issue_partial_signature`] can use the secret part, and only
/// after a store consumed it. (Serde is there so other store backends can persist it; such a
/// backend must keep the [`PresignatureStore`] contract.)
#[derive(Serialize, Deserialize)]
pub struct StoredPresignature {
    id: PresignatureId,
    group: GroupId,
    #[serde(with = "pubkey_hex")]
    public_key: CompressedPublicKey,
    signers: Vec<PartyRole>,
    holder: PartyRole,
    presignature: Presignature<Curve>,
}

impl StoredPresignature {
    /// Id (execution id of the generating session).
    pub fn id(&self) -> PresignatureId {
        self.id
    }
    /// Group.
    pub fn group(&self) -> GroupId {
        self.group
    }
    /// Key it signs for.
    pub fn public_key(&self) -> CompressedPublicKey {
        self.public_key
    }
    /// Signer set that generated it (sorted); the same set must combine.
    pub fn signers(&self) -> &[PartyRole] {
        &self.signers
    }
    /// Holder.
    pub fn holder(&self) -> PartyRole {
        self.holder
    }
    /// Uses the presignature: consumes the record, so it cannot be used again through it.
    pub(crate) fn into_parts(self) -> (Vec<PartyRole>, Presignature<Curve>) {
        (self.signers, self.presignature)
    }
}

impl fmt::Debug for StoredPresignature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredPresignature")
            .field("id", &self.id)
            .field("group", &self.group)
            .field("public_key", &self.public_key.to_string())
            .field("signers", &self.signers)
            .field("holder", &self.holder)
            .field("presignature", &"<redacted>")
            .finish()
    }
}

/// Storage of presignatures that hands each out at most once.
pub trait PresignatureStore: Send + Sync {
    /// Adds a fresh presignature. Refused if its id was ever stored or used.
    fn insert(&self, p: StoredPresignature) -> Result<()>;
    /// Takes a presignature for use. Must make "used" durable before returning, and must fail
    /// with [`CustodyError::PresignatureAlreadyUsed`] for an id consumed before.
    fn consume(&self, id: &PresignatureId) -> Result<StoredPresignature>;
    /// Whether `id` was consumed.
    fn is_used(&self, id: &PresignatureId) -> Result<bool>;
    /// Unused presignatures for `public_key` (to count stock and pick one).
    fn available(&self, public_key: &CompressedPublicKey) -> Result<Vec<PresignatureId>>;
}

/// File-backed store: `<dir>/<id>.presig` (sealed under the keyring) and `<dir>/used.log`.
pub struct FilePresignatureStore {
    dir: PathBuf,
    keyring: Keyring,
    state: Mutex<FileState>,
}

struct FileState {
    used: HashSet<PresignatureId>,
    log: File,
    /// public key → ids of unused presignatures (metadata index; the files are the truth).
    index: BTreeMap<[u8; 33], Vec<PresignatureId>>,
}

const USED_LOG: &str = "used.log";

impl FilePresignatureStore {
    /// Opens (creating if needed) a store in `dir`. Recovers from a crash: a torn last line of
    /// `used.log` (its fsync never returned, so no partial signature was released) is cut off,
    /// and files of presignatures already marked used are deleted.
    pub fn open(dir: impl Into<PathBuf>, keyring: Keyring) -> Result<Self> {
        let dir = dir.into();
        fsutil::ensure_dir(&dir)?;
        let log_path = dir.join(USED_LOG);
        let mut log = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&log_path)
            .map_err(|e| CustodyError::io(&log_path, e))?;
        let mut text = String::new();
        log.read_to_string(&mut text).map_err(|e| CustodyError::io(&log_path, e))?;
        let complete = text.rfind('\n').map(|p| p + 1).unwrap_or(0);
        if complete != text.len() {
            log.set_len(complete as u64).map_err(|e| CustodyError::io(&log_path, e))?;
            log.sync_all().map_err(|e| CustodyError::io(&log_path, e))?;
        }
        log.seek(SeekFrom::End(0)).map_err(|e| CustodyError::io(&log_path, e))?;
        let mut used = HashSet::new();
        for line in text[..complete].lines() {
            let id = ExecutionId::from_hex(line.trim()).ok_or_else(|| CustodyError::Format {
                what: log_path.display().to_string(),
                reason: "line is not a presignature id".into(),
            })?;
            used.insert(id);
        }
        let store = FilePresignatureStore {
            dir,
            keyring,
            state: Mutex::new(FileState { used, log, index: BTreeMap::new() }),
        };
        store.rebuild_index()?;
        Ok(store)
    }

    fn path(&self, id: &PresignatureId) -> PathBuf {
        self.dir.join(format!("{}.presig", id.to_hex()))
    }

    fn label(id: &PresignatureId) -> String {
        format!("presig:{}", id.to_hex())
    }

    fn rebuild_index(&self) -> Result<()> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.index.clear();
        for entry in fs::read_dir(&self.dir).map_err(|e| CustodyError::io(&self.dir, e))? {
            let entry = entry.map_err(|e| CustodyError::io(&self.dir, e))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if fsutil::is_temp(name) {
                let _ = fs::remove_file(entry.path());
                continue;
            }
            let Some(id) = name.strip_suffix(".presig").and_then(ExecutionId::from_hex) else { continue };
            if st.used.contains(&id) {
                // Crash between marking used and deleting: finish the deletion.
                fs::remove_file(entry.path()).map_err(|e| CustodyError::io(entry.path(), e))?;
                continue;
            }
            let p = self.read(&id)?;
            st.index.entry(p.public_key.to_bytes()).or_default().push(id);
        }
        fsutil::fsync_dir(&self.dir)
    }

    fn read(&self, id: &PresignatureId) -> Result<StoredPresignature> {
        let path = self.path(id);
        let sealed = fs::read(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                CustodyError::PresignatureUnknown(*id)
            } else {
                CustodyError::io(&path, e)
            }
        })?;
        let p: StoredPresignature = self.keyring.open_value(&Self::label(id), &sealed)?;
        if p.id != *id {
            return Err(CustodyError::Format { what: path.display().to_string(), reason: "id does not match file name".into() });
        }
        Ok(p)
    }
}

impl PresignatureStore for FilePresignatureStore {
    fn insert(&self, p: StoredPresignature) -> Result<()> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let path = self.path(&p.id);
        if st.used.contains(&p.id) {
            return Err(CustodyError::PresignatureAlreadyUsed(p.id));
        }
        if path.exists() {
            return Err(CustodyError::PresignatureMismatch { id: p.id, reason: "already stored".into() });
        }
        let sealed = self.keyring.seal_value(&Self::label(&p.id), &p)?;
        fsutil::write_atomic(&path, &sealed)?;
        st.index.entry(p.public_key.to_bytes()).or_default().push(p.id);
        Ok(())
    }

    fn consume(&self, id: &PresignatureId) -> Result<StoredPresignature> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if st.used.contains(id) {
            return Err(CustodyError::PresignatureAlreadyUsed(*id));
        }
        let p = self.read(id)?;
        // The mark must be on disk before anyone can compute a partial signature with `p`.
        let log_path = self.dir.join(USED_LOG);
        let line = format!("{}\n", id.to_hex());
        st.log.write_all(line.as_bytes()).map_err(|e| CustodyError::io(&log_path, e))?;
        st.log.sync_data().map_err(|e| CustodyError::io(&log_path, e))?;
        st.used.insert(*id);
        if let Some(ids) = st.index.get_mut(&p.public_key.to_bytes()) {
            ids.retain(|x| x != id);
        }
        // Best effort, not synced: the log entry already makes the file unusable, and opening
        // the store deletes leftovers of used presignatures.
        let _ = fs::remove_file(self.path(id));
        Ok(p)
    }

    fn is_used(&self, id: &PresignatureId) -> Result<bool> {
        Ok(self.state.lock().unwrap_or_else(|e| e.into_inner()).used.contains(id))
    }

    fn available(&self, public_key: &CompressedPublicKey) -> Result<Vec<PresignatureId>> {
        let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        Ok(st.index.get(&public_key.to_bytes()).cloned().unwrap_or_default())
    }
}

impl fmt::Debug for FilePresignatureStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FilePresignatureStore").field("dir", &self.dir).finish_non_exhaustive()
    }
}

/// In-memory store: single use within the process only (tests, benchmarks).
#[derive(Default)]
pub struct MemoryPresignatureStore {
    state: Mutex<(BTreeMap<PresignatureId, StoredPresignature>, HashSet<PresignatureId>)>,
}

impl MemoryPresignatureStore {
    /// Empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

impl PresignatureStore for MemoryPresignatureStore {
    fn insert(&self, p: StoredPresignature) -> Result<()> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if st.1.contains(&p.id) {
            return Err(CustodyError::PresignatureAlreadyUsed(p.id));
        }
        if st.0.contains_key(&p.id) {
            return Err(CustodyError::PresignatureMismatch { id: p.id, reason: "already stored".into() });
        }
        st.0.insert(p.id, p);
        Ok(())
    }

    fn consume(&self, id: &PresignatureId) -> Result<StoredPresignature> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if st.1.contains(id) {
            return Err(CustodyError::PresignatureAlreadyUsed(*id));
        }
        let p = st.0.remove(id).ok_or(CustodyError::PresignatureUnknown(*id))?;
        st.1.insert(*id);
        Ok(p)
    }

    fn is_used(&self, id: &PresignatureId) -> Result<bool> {
        Ok(self.state.lock().unwrap_or_else(|e| e.into_inner()).1.contains(id))
    }

    fn available(&self, public_key: &CompressedPublicKey) -> Result<Vec<PresignatureId>> {
        let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        Ok(st.0.values().filter(|p| p.public_key == *public_key).map(|p| p.id).collect())
    }
}

impl Party {
    /// Runs presignature generation for `key` with the signer set `signers` (exactly the
    /// threshold, including this party) and stores this party's presignature in `store` under
    /// the session's execution id, which all signers share.
    pub async fn generate_presignature<L: Link>(
        &self,
        key: &VaultKey,
        signers: &[PartyRole],
        eid: ExecutionId,
        link: L,
        store: &dyn PresignatureStore,
    ) -> Result<PresignatureId> {
        key.check_for(self)?;
        let signers = self.group.check_signers(signers, Some(self.role))?;
        let (info, eid_bytes) = self.open_session(ProtocolKind::Presign, eid, &signers)?;
        let at_keygen: Vec<u16> = signers.iter().map(|r| r.index()).collect();
        let share = &key.share;
        let presignature = run_session::<SigningMsg, _, _, _, _, _>(
            ProtocolKind::Presign,
            info,
            link,
            self.config.session_timeout,
            |party| async move {
                let eid = cggmp21::ExecutionId::new(&eid_bytes);
                cggmp21::signing(eid, info.me, &at_keygen, share)
                    .generate_presignature(&mut rand::rngs::OsRng, party)
                    .await
            },
        )
        .await?;
        store.insert(StoredPresignature {
            id: eid,
            group: self.group.id,
            public_key: key.public_key,
            signers,
            holder: self.role,
            presignature,
        })?;
        Ok(eid)
    }
}
