//! Secrets at rest: master keys, AEAD sealing, and the encrypted key-share store.
//!
//! Owns: the operator's 32-byte master key ([`MasterKey`], from a file or an env var, hex),
//! the [`Keyring`] (current key + older keys that still decrypt until rotated), the sealed
//! record format, and [`EncryptedShareStore`] (one file per record, written atomically).
//!
//! Sealed record: `"TCK1" | key_id (8) | nonce (24) | XChaCha20-Poly1305(ciphertext || tag)`;
//! the associated data is `"TCK1" | key_id | label`, where the label names the record (e.g.
//! `share:<name>`), so a ciphertext moved under another name fails to decrypt. Plaintext lives
//! only in [`Zeroizing`] buffers sized up front (no reallocation leaving copies behind).

use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use rand::RngCore;
use serde::de::DeserializeOwned;
use serde::Serialize;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::error::{CustodyError, Result};
use crate::fsutil;

const MAGIC: &[u8; 4] = b"TCK1";
const KEY_ID_LEN: usize = 8;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
const HEADER_LEN: usize = MAGIC.len() + KEY_ID_LEN + NONCE_LEN;

/// Identifier of a master key: a domain-separated hash prefix of the key, so operators need
/// not name keys and the header tells which key a record needs.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyId(pub [u8; KEY_ID_LEN]);

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

/// The operator's 32-byte master key. Zeroized on drop; Debug shows only the key id.
#[derive(Clone)]
pub struct MasterKey {
    key: Zeroizing<[u8; 32]>,
    id: KeyId,
}

impl MasterKey {
    /// From raw bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        let key = Zeroizing::new(bytes);
        let mut h = Sha256::new();
        h.update(b"tandem-custody/master-key-id/v1");
        h.update(&key[..]);
        let digest = h.finalize();
        let mut id = [0u8; KEY_ID_LEN];
        id.copy_from_slice(&digest[..KEY_ID_LEN]);
        MasterKey { key, id: KeyId(id) }
    }

    /// A fresh random key (tests, or an operator tool generating a key file).
    pub fn generate() -> Self {
        let mut b = Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng.fill_bytes(&mut b[..]);
        Self::from_bytes(*b)
    }

    /// From 64 hex digits (surrounding whitespace ignored).
    pub fn from_hex(s: &str) -> Result<Self> {
        let s = s.trim();
        let mut buf = Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(s, &mut buf[..])
            .map_err(|_| CustodyError::MasterKey(format!("expected 64 hex digits, got {} characters", s.len())))?;
        Ok(Self::from_bytes(*buf))
    }

    /// From a file holding 64 hex digits (or exactly 32 raw bytes).
    pub fn from_file(path: &Path) -> Result<Self> {
        let bytes = Zeroizing::new(fs::read(path).map_err(|e| CustodyError::io(path, e))?);
        if bytes.len() == 32 {
            let mut b = Zeroizing::new([0u8; 32]);
            b.copy_from_slice(&bytes);
            return Ok(Self::from_bytes(*b));
        }
        let text = std::str::from_utf8(&bytes)
            .map_err(|_| CustodyError::MasterKey(format!("{}: neither 32 raw bytes nor hex text", path.display())))?;
        Self::from_hex(text).map_err(|e| CustodyError::MasterKey(format!("{}: {e}", path.display())))
    }

    /// From an environment variable holding 64 hex digits.
    pub fn from_env(var: &str) -> Result<Self> {
        let v = Zeroizing::new(
            std::env::var(var).map_err(|_| CustodyError::MasterKey(format!("environment variable {var} is not set")))?,
        );
        Self::from_hex(&v).map_err(|e| CustodyError::MasterKey(format!("{var}: {e}")))
    }

    /// Hex form, for writing a key file. The caller owns (and should zeroize) the string.
    pub fn to_hex(&self) -> Zeroizing<String> {
        Zeroizing::new(hex::encode(&self.key[..]))
    }

    /// Key id.
    pub fn id(&self) -> KeyId {
        self.id
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(Key::from_slice(&self.key[..]))
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MasterKey(id={}, <redacted>)", self.id)
    }
}

/// Master keys in use: new records are sealed under `current`; records under any key of the
/// ring decrypt. Rotation = make a ring with the new key current and the old one previous,
/// re-seal every record ([`EncryptedShareStore::rotate_all`]), then drop the old key.
#[derive(Clone, Debug)]
pub struct Keyring {
    current: MasterKey,
    previous: Vec<MasterKey>,
}

impl Keyring {
    /// A ring with one key.
    pub fn new(current: MasterKey) -> Self {
        Keyring { current, previous: Vec::new() }
    }

    /// Adds an older key that may still decrypt records.
    pub fn with_previous(mut self, old: MasterKey) -> Self {
        if old.id != self.current.id && !self.previous.iter().any(|k| k.id == old.id) {
            self.previous.push(old);
        }
        self
    }

    /// Makes `new` current, keeping the old current as previous.
    pub fn rotated_to(self, new: MasterKey) -> Self {
        let old = self.current.clone();
        let mut ring = Keyring { current: new, previous: self.previous };
        ring = ring.with_previous(old);
        ring
    }

    /// Id of the current key.
    pub fn current_id(&self) -> KeyId {
        self.current.id
    }

    fn find(&self, id: &KeyId) -> Option<&MasterKey> {
        std::iter::once(&self.current).chain(self.previous.iter()).find(|k| k.id == *id)
    }

    /// Seals `plaintext` under the current key, bound to `label`.
    pub fn seal(&self, label: &str, plaintext: &[u8]) -> Result<Vec<u8>> {
        let key = &self.current;
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let aad = aad(&key.id, label);
        // The buffer is encrypted in place, so it holds plaintext for a moment: zeroize on
        // failure; on success it holds only ciphertext.
        let mut buf = Vec::with_capacity(HEADER_LEN + plaintext.len() + TAG_LEN);
        buf.extend_from_slice(MAGIC);
        buf.extend_from_slice(&key.id.0);
        buf.extend_from_slice(&nonce);
        let mut body = Zeroizing::new(Vec::with_capacity(plaintext.len() + TAG_LEN));
        body.extend_from_slice(plaintext);
        key.cipher()
            .encrypt_in_place(XNonce::from_slice(&nonce), &aad, &mut *body)
            .map_err(|_| CustodyError::Format { what: label.to_string(), reason: "encryption failed".into() })?;
        buf.extend_from_slice(&body);
        Ok(buf)
    }

    /// Opens a record sealed by [`Keyring::seal`] under `label`.
    pub fn open(&self, label: &str, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        let id = header_key_id(label, sealed)?;
        let key = self
            .find(&id)
            .ok_or_else(|| CustodyError::UnknownMasterKey { what: label.to_string(), key_id: id.to_string() })?;
        let nonce = &sealed[MAGIC.len() + KEY_ID_LEN..HEADER_LEN];
        let mut body = Zeroizing::new(Vec::with_capacity(sealed.len() - HEADER_LEN));
        body.extend_from_slice(&sealed[HEADER_LEN..]);
        key.cipher()
            .decrypt_in_place(XNonce::from_slice(nonce), &aad(&id, label), &mut *body)
            .map_err(|_| CustodyError::Decrypt { what: label.to_string() })?;
        Ok(body)
    }

    /// Seals a serde value (JSON inside).
    pub fn seal_value<T: Serialize>(&self, label: &str, value: &T) -> Result<Vec<u8>> {
        let plain = to_json_zeroizing(value).map_err(|e| CustodyError::Format { what: label.into(), reason: e })?;
        self.seal(label, &plain)
    }

    /// Opens a sealed serde value.
    pub fn open_value<T: DeserializeOwned>(&self, label: &str, sealed: &[u8]) -> Result<T> {
        let plain = self.open(label, sealed)?;
        // serde_json's error text can quote input; report only its position/category.
        serde_json::from_slice(&plain).map_err(|e| CustodyError::Format {
            what: label.into(),
            reason: format!("{:?} error at line {} column {}", e.classify(), e.line(), e.column()),
        })
    }
}

/// Key id in a sealed record's header.
pub fn header_key_id(label: &str, sealed: &[u8]) -> Result<KeyId> {
    if sealed.len() < HEADER_LEN + TAG_LEN || &sealed[..MAGIC.len()] != MAGIC {
        return Err(CustodyError::Format { what: label.to_string(), reason: "not a sealed record (TCK1)".into() });
    }
    let mut id = [0u8; KEY_ID_LEN];
    id.copy_from_slice(&sealed[MAGIC.len()..MAGIC.len() + KEY_ID_LEN]);
    Ok(KeyId(id))
}

fn aad(id: &KeyId, label: &str) -> Vec<u8> {
    let mut a = Vec::with_capacity(MAGIC.len() + KEY_ID_LEN + label.len());
    a.extend_from_slice(MAGIC);
    a.extend_from_slice(&id.0);
    a.extend_from_slice(label.as_bytes());
    a
}

/// Serializes to JSON into a zeroizing buffer allocated once at the exact size (+ room for the
/// AEAD tag), so no reallocation leaves unzeroized copies of the plaintext on the heap.
pub(crate) fn to_json_zeroizing<T: Serialize>(value: &T) -> std::result::Result<Zeroizing<Vec<u8>>, String> {
    struct Counter(usize);
    impl Write for Counter {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0 += b.len();
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let mut c = Counter(0);
    serde_json::to_writer(&mut c, value).map_err(|e| format!("serialize: {:?}", e.classify()))?;
    let mut out = Zeroizing::new(Vec::with_capacity(c.0 + TAG_LEN));
    serde_json::to_writer(&mut *out, value).map_err(|e| format!("serialize: {:?}", e.classify()))?;
    Ok(out)
}

/// A directory of sealed records, one file per name (`<name>.sealed`). Used for key shares
/// (and any other secret record) at rest.
pub struct EncryptedShareStore {
    dir: PathBuf,
    keyring: Keyring,
}

impl EncryptedShareStore {
    /// Opens (creating if needed) the store in `dir`.
    pub fn open(dir: impl Into<PathBuf>, keyring: Keyring) -> Result<Self> {
        let dir = dir.into();
        fsutil::ensure_dir(&dir)?;
        Ok(EncryptedShareStore { dir, keyring })
    }

    /// Path of a record.
    pub fn path_of(&self, name: &str) -> Result<PathBuf> {
        check_name(name)?;
        Ok(self.dir.join(format!("{name}.sealed")))
    }

    fn label(name: &str) -> String {
        format!("share:{name}")
    }

    /// Seals and durably writes `value` under `name` (replacing any previous record).
    pub fn put<T: Serialize>(&self, name: &str, value: &T) -> Result<()> {
        let path = self.path_of(name)?;
        let sealed = self.keyring.seal_value(&Self::label(name), value)?;
        fsutil::write_atomic(&path, &sealed)
    }

    /// Seals and durably writes `value` under `name` unless a record of that name exists; then
    /// returns the existing one. Processes sharing the directory (replicas) that race to make
    /// the same record (an identity, a seed) all end up with the one that was written first.
    pub fn get_or_put<T: Serialize + DeserializeOwned>(&self, name: &str, value: &T) -> Result<T> {
        let path = self.path_of(name)?;
        if !path.exists() {
            let sealed = self.keyring.seal_value(&Self::label(name), value)?;
            fsutil::write_new(&path, &sealed)?;
        }
        self.get(name)
    }

    /// Reads and opens the record `name`.
    pub fn get<T: DeserializeOwned>(&self, name: &str) -> Result<T> {
        let path = self.path_of(name)?;
        let sealed = fs::read(&path).map_err(|e| CustodyError::io(&path, e))?;
        self.keyring.open_value(&Self::label(name), &sealed)
    }

    /// Whether a record exists.
    pub fn contains(&self, name: &str) -> Result<bool> {
        Ok(self.path_of(name)?.exists())
    }

    /// Names of all records.
    pub fn names(&self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(|e| CustodyError::io(&self.dir, e))? {
            let entry = entry.map_err(|e| CustodyError::io(&self.dir, e))?;
            if let Some(name) = entry.file_name().to_str().and_then(|n| n.strip_suffix(".sealed")) {
                out.push(name.to_string());
            }
        }
        out.sort();
        Ok(out)
    }

    /// Re-seals every record not under the current key. Returns how many were rewritten.
    /// Afterwards the previous keys are no longer needed for this store.
    pub fn rotate_all(&self) -> Result<usize> {
        let current = self.keyring.current_id();
        let mut rewritten = 0;
        for name in self.names()? {
            let path = self.path_of(&name)?;
            let sealed = fs::read(&path).map_err(|e| CustodyError::io(&path, e))?;
            let label = Self::label(&name);
            if header_key_id(&label, &sealed)? == current {
                continue;
            }
            let plain = self.keyring.open(&label, &sealed)?;
            let resealed = self.keyring.seal(&label, &plain)?;
            fsutil::write_atomic(&path, &resealed)?;
            rewritten += 1;
        }
        Ok(rewritten)
    }

    /// Key id each record is sealed under (for operators checking a rotation finished).
    pub fn key_ids(&self) -> Result<Vec<(String, KeyId)>> {
        let mut out = Vec::new();
        for name in self.names()? {
            let path = self.path_of(&name)?;
            let sealed = fs::read(&path).map_err(|e| CustodyError::io(&path, e))?;
            out.push((name.clone(), header_key_id(&Self::label(&name), &sealed)?));
        }
        Ok(out)
    }
}

impl fmt::Debug for EncryptedShareStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EncryptedShareStore")
            .field("dir", &self.dir)
            .field("current_key", &self.keyring.current_id())
            .finish()
    }
}

fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(CustodyError::Format { what: "record name".into(), reason: "use [A-Za-z0-9._-], not starting with '.'".into() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn processes_racing_to_make_a_record_agree_on_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let key = MasterKey::generate();
        // Replicas sharing one directory, each with its own handle.
        let stores: Vec<_> = (0..8).map(|_| EncryptedShareStore::open(dir.path(), Keyring::new(key.clone())).unwrap()).collect();
        let seeds: Vec<u64> = std::thread::scope(|s| {
            let racers: Vec<_> = stores.iter().enumerate().map(|(i, st)| s.spawn(move || st.get_or_put("seed", &(i as u64)).unwrap())).collect();
            racers.into_iter().map(|r| r.join().unwrap()).collect()
        });
        assert!(seeds.iter().all(|s| *s == seeds[0]), "{seeds:?}");
        assert_eq!(stores[3].get::<u64>("seed").unwrap(), seeds[0]);
        // No temporary file is left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn seal_open_roundtrip_and_label_binding() {
        let ring = Keyring::new(MasterKey::generate());
        let sealed = ring.seal("share:a", b"secret bytes").unwrap();
        assert_eq!(&ring.open("share:a", &sealed).unwrap()[..], b"secret bytes");
        assert!(matches!(ring.open("share:b", &sealed), Err(CustodyError::Decrypt { .. })));
        let mut tampered = sealed.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert!(matches!(ring.open("share:a", &tampered), Err(CustodyError::Decrypt { .. })));
    }

    #[test]
    fn master_key_parsing_and_debug() {
        let k = MasterKey::generate();
        let again = MasterKey::from_hex(&format!("  {}\n", &*k.to_hex())).unwrap();
        assert_eq!(k.id(), again.id());
        assert!(MasterKey::from_hex("abcd").is_err());
        let dbg = format!("{k:?}");
        assert!(!dbg.contains(&*k.to_hex()));
        assert!(dbg.contains("redacted"));
    }
}
