//! The wallet file: public facts in the clear, every secret encrypted under the passphrase.
//!
//! ```json
//! {"version": 1, "provider_url": "http://127.0.0.1:8080", "account_id": 7,
//!  "kdf": {"alg": "argon2id", "salt": "<hex>", "m_cost": 65536, "t_cost": 3, "p_cost": 1},
//!  "secrets": [{"name": "device", "kind": "device_key", "nonce": "<hex>", "ciphertext": "<hex>"}]}
//! ```
//!
//! - One 32-byte key is derived from the passphrase with Argon2id (`m_cost` KiB of memory,
//!   `t_cost` passes, `p_cost` lanes; the salt is 16 random bytes per wallet).
//! - Each secret is sealed with XChaCha20-Poly1305 under that key and a random 24-byte nonce.
//!   The associated data binds the secret to its `name` and `kind` and to the wallet's
//!   `version`, `provider_url` and `account_id`: a secret moved to another name or wallet, or
//!   a provider URL edited by someone without the passphrase, no longer opens.
//! - `secrets` is a list so other secrets (vault key shares) join the device key later: each
//!   has a unique `name` and a `kind` saying what it is ([`KIND_DEVICE_KEY`], ...).
//!
//! Passphrase, derived key and plaintexts are zeroized when dropped and redacted in `Debug`.
//! Files are written atomically (temp file, fsync, rename) with mode 0600, in a directory
//! created with mode 0700.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// The format this code writes and reads.
pub const WALLET_VERSION: u32 = 1;
/// `kind` of the secret that signs API requests: the 32-byte secp256k1 secret key.
pub const KIND_DEVICE_KEY: &str = "device_key";
/// `name` of the wallet's device key.
pub const DEVICE_KEY_NAME: &str = "device";

const KDF_ALG: &str = "argon2id";
const SALT_LEN: usize = 16;
const NONCE_LEN: usize = 24;
const KEY_LEN: usize = 32;
/// Domain separation of the associated data.
const AAD_TAG: &[u8] = b"tandem-wallet-secret";

#[derive(thiserror::Error, Debug)]
pub enum KeystoreError {
    #[error("wrong passphrase (or the wallet file was altered)")]
    WrongPassphrase,
    #[error("the wallet's secret {0:?} does not decrypt although others do: the file is damaged or was altered")]
    Damaged(String),
    #[error("a wallet already exists at {0}; refusing to overwrite it")]
    Exists(PathBuf),
    #[error("no wallet at {0}")]
    NotFound(PathBuf),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("not a valid wallet file: {0}")]
    Format(String),
    #[error("the wallet file has version {0}; this tandem reads version {WALLET_VERSION}: upgrade tandem")]
    Unsupported(u32),
    #[error("the wallet has no secret {0:?}")]
    NoSecret(String),
    #[error("the wallet already has a secret {0:?}")]
    DuplicateSecret(String),
    #[error("{0}")]
    Invalid(String),
}

type Result<T> = std::result::Result<T, KeystoreError>;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> KeystoreError + '_ {
    move |source| KeystoreError::Io { path: path.to_path_buf(), source }
}

/// A passphrase, zeroized on drop and never printed.
pub struct Passphrase(Zeroizing<String>);

impl Passphrase {
    pub fn new(s: String) -> Passphrase {
        Passphrase(Zeroizing::new(s))
    }

    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }

    /// Length in characters.
    pub fn chars(&self) -> usize {
        self.0.chars().count()
    }
}

impl fmt::Debug for Passphrase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Passphrase(<redacted>)")
    }
}

/// The key derived from the passphrase; zeroized on drop and never printed.
pub struct WalletKey(Zeroizing<[u8; KEY_LEN]>);

impl WalletKey {
    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(chacha20poly1305::Key::from_slice(&self.0[..]))
    }

    /// A separate key for another store of this wallet (HMAC-SHA256 under the wallet key), so
    /// what is sealed there opens with the passphrase only, and never under the same key as the
    /// wallet file.
    pub fn derive(&self, label: &str) -> Zeroizing<[u8; 32]> {
        use hmac::{Hmac, Mac};
        let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(&self.0[..]).expect("HMAC takes any key length");
        mac.update(b"tandem wallet: ");
        mac.update(label.as_bytes());
        Zeroizing::new(mac.finalize().into_bytes().into())
    }
}

impl fmt::Debug for WalletKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WalletKey(<redacted>)")
    }
}

/// Argon2id cost, as stored in the file (`m_cost` in KiB).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KdfCost {
    pub m_cost: u32,
    pub t_cost: u32,
    pub p_cost: u32,
}

impl Default for KdfCost {
    /// 64 MiB, 3 passes, 1 lane (RFC 9106's second recommendation, one lane since the
    /// implementation is single-threaded): a few hundred milliseconds per unlock.
    fn default() -> KdfCost {
        KdfCost { m_cost: 64 * 1024, t_cost: 3, p_cost: 1 }
    }
}

/// Bounds on the costs a file may ask for, so a crafted file cannot make unlocking take
/// unbounded memory or time.
const MAX_M_COST: u32 = 4 * 1024 * 1024; // 4 GiB
const MAX_T_COST: u32 = 64;
const MAX_P_COST: u32 = 16;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Kdf {
    pub alg: String,
    /// Hex.
    pub salt: String,
    pub m_cost: u32,
    pub t_cost: u32,
    pub p_cost: u32,
}

impl Kdf {
    fn fresh(cost: KdfCost) -> Kdf {
        let mut salt = [0u8; SALT_LEN];
        rand::rngs::OsRng.fill_bytes(&mut salt);
        Kdf {
            alg: KDF_ALG.into(),
            salt: hex::encode(salt),
            m_cost: cost.m_cost,
            t_cost: cost.t_cost,
            p_cost: cost.p_cost,
        }
    }

    fn params(&self) -> Result<(argon2::Params, Vec<u8>)> {
        if self.alg != KDF_ALG {
            return Err(KeystoreError::Format(format!("unsupported kdf {:?}", self.alg)));
        }
        let salt = hex::decode(&self.salt).map_err(|_| KeystoreError::Format("kdf salt is not hex".into()))?;
        if salt.len() < SALT_LEN || salt.len() > 64 {
            return Err(KeystoreError::Format("kdf salt must be 16 to 64 bytes".into()));
        }
        if self.m_cost > MAX_M_COST || self.t_cost > MAX_T_COST || self.p_cost > MAX_P_COST {
            return Err(KeystoreError::Format("kdf cost out of bounds".into()));
        }
        let params = argon2::Params::new(self.m_cost, self.t_cost, self.p_cost, Some(KEY_LEN))
            .map_err(|e| KeystoreError::Format(format!("kdf parameters: {e}")))?;
        Ok((params, salt))
    }

    fn derive(&self, passphrase: &Passphrase) -> Result<WalletKey> {
        let (params, salt) = self.params()?;
        let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        argon
            .hash_password_into(passphrase.as_bytes(), &salt, &mut key[..])
            .map_err(|e| KeystoreError::Invalid(format!("key derivation failed: {e}")))?;
        Ok(WalletKey(key))
    }
}

/// One sealed secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncryptedSecret {
    pub name: String,
    pub kind: String,
    /// Hex, 24 bytes.
    pub nonce: String,
    /// Hex: the XChaCha20-Poly1305 ciphertext with its 16-byte tag.
    pub ciphertext: String,
}

/// The wallet file. Holds no plaintext secret: those come out of [`WalletFile::secret`] only,
/// with the key of [`WalletFile::unlock`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WalletFile {
    pub version: u32,
    pub provider_url: String,
    pub account_id: u64,
    pub kdf: Kdf,
    pub secrets: Vec<EncryptedSecret>,
}

/// Names and kinds: 1 to 64 of `a-z 0-9 _ - .`.
fn check_label(what: &str, s: &str) -> Result<()> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(KeystoreError::Invalid(format!("secret {what} {s:?} must be 1 to 64 of a-z 0-9 _ - .")))
    }
}

impl WalletFile {
    /// An empty wallet with a fresh salt.
    pub fn new(provider_url: &str, account_id: u64, cost: KdfCost) -> WalletFile {
        WalletFile {
            version: WALLET_VERSION,
            provider_url: provider_url.to_owned(),
            account_id,
            kdf: Kdf::fresh(cost),
            secrets: Vec::new(),
        }
    }

    /// Derives the key from the passphrase and checks it opens every secret. The first secret
    /// that does not open means a wrong passphrase; a later one, a damaged file.
    pub fn unlock(&self, passphrase: &Passphrase) -> Result<WalletKey> {
        let key = self.kdf.derive(passphrase)?;
        for (i, s) in self.secrets.iter().enumerate() {
            match self.open(&key, s) {
                Ok(_) => {}
                Err(KeystoreError::WrongPassphrase) if i > 0 => return Err(KeystoreError::Damaged(s.name.clone())),
                Err(e) => return Err(e),
            }
        }
        Ok(key)
    }

    /// Seals `plaintext` as a new secret.
    pub fn add_secret(&mut self, key: &WalletKey, name: &str, kind: &str, plaintext: &[u8]) -> Result<()> {
        check_label("name", name)?;
        check_label("kind", kind)?;
        if self.secrets.iter().any(|s| s.name == name) {
            return Err(KeystoreError::DuplicateSecret(name.to_owned()));
        }
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let aad = self.aad(name, kind);
        let ciphertext = key
            .cipher()
            .encrypt(XNonce::from_slice(&nonce), Payload { msg: plaintext, aad: &aad })
            .map_err(|_| KeystoreError::Invalid("encryption failed".into()))?;
        self.secrets.push(EncryptedSecret {
            name: name.to_owned(),
            kind: kind.to_owned(),
            nonce: hex::encode(nonce),
            ciphertext: hex::encode(ciphertext),
        });
        Ok(())
    }

    /// The plaintext of the secret `name`.
    pub fn secret(&self, key: &WalletKey, name: &str) -> Result<Zeroizing<Vec<u8>>> {
        let s = self.secrets.iter().find(|s| s.name == name).ok_or_else(|| KeystoreError::NoSecret(name.to_owned()))?;
        self.open(key, s)
    }

    /// `(name, kind)` of every secret, in file order.
    pub fn secret_names(&self) -> impl Iterator<Item = (&str, &str)> {
        self.secrets.iter().map(|s| (s.name.as_str(), s.kind.as_str()))
    }

    fn open(&self, key: &WalletKey, s: &EncryptedSecret) -> Result<Zeroizing<Vec<u8>>> {
        let bad = |what: &str| KeystoreError::Format(format!("secret {:?}: {what}", s.name));
        let nonce = hex::decode(&s.nonce).map_err(|_| bad("nonce is not hex"))?;
        if nonce.len() != NONCE_LEN {
            return Err(bad("nonce must be 24 bytes"));
        }
        let ciphertext = hex::decode(&s.ciphertext).map_err(|_| bad("ciphertext is not hex"))?;
        let aad = self.aad(&s.name, &s.kind);
        key.cipher()
            .decrypt(XNonce::from_slice(&nonce), Payload { msg: &ciphertext, aad: &aad })
            .map(Zeroizing::new)
            .map_err(|_| KeystoreError::WrongPassphrase)
    }

    /// Associated data: tag, version, provider URL, account, name, kind; each variable-length
    /// field length-prefixed so no two different tuples encode alike.
    fn aad(&self, name: &str, kind: &str) -> Vec<u8> {
        let mut aad = Vec::with_capacity(64 + self.provider_url.len() + name.len() + kind.len());
        aad.extend_from_slice(AAD_TAG);
        aad.extend_from_slice(&self.version.to_be_bytes());
        for field in [self.provider_url.as_bytes(), &self.account_id.to_be_bytes(), name.as_bytes(), kind.as_bytes()] {
            aad.extend_from_slice(&(field.len() as u32).to_be_bytes());
            aad.extend_from_slice(field);
        }
        aad
    }

    /// Reads and checks a wallet file (without the passphrase: structure only).
    pub fn load(path: &Path) -> Result<WalletFile> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(KeystoreError::NotFound(path.to_owned())),
            Err(e) => return Err(io(path)(e)),
        };
        let file: WalletFile = match serde_json::from_slice(&bytes) {
            Ok(f) => f,
            Err(e) => {
                // A newer format may have fields this one refuses: say so rather than "unknown field".
                let version =
                    serde_json::from_slice::<serde_json::Value>(&bytes).ok().and_then(|v| v["version"].as_u64());
                if let Some(v) = version.filter(|v| *v != WALLET_VERSION as u64) {
                    return Err(KeystoreError::Unsupported(v.min(u32::MAX as u64) as u32));
                }
                return Err(KeystoreError::Format(e.to_string()));
            }
        };
        if file.version != WALLET_VERSION {
            return Err(KeystoreError::Unsupported(file.version));
        }
        file.kdf.params()?;
        for (i, s) in file.secrets.iter().enumerate() {
            check_label("name", &s.name)?;
            check_label("kind", &s.kind)?;
            if file.secrets[..i].iter().any(|t| t.name == s.name) {
                return Err(KeystoreError::Format(format!("secret {:?} appears twice", s.name)));
            }
        }
        Ok(file)
    }

    /// Checks, before anything irreversible (like enrolling), that a new wallet can be created
    /// at `path`: nothing is there yet, and its directory exists (made with mode 0700 if
    /// missing) and is writable.
    pub fn prepare(path: &Path) -> Result<()> {
        if path.exists() {
            return Err(KeystoreError::Exists(path.to_owned()));
        }
        let dir = parent(path);
        create_private_dir(dir)?;
        let probe = dir.join(format!(".wallet-probe-{}-{:08x}.tmp", std::process::id(), rand::random::<u32>()));
        std::fs::OpenOptions::new().write(true).create_new(true).open(&probe).map_err(io(dir))?;
        let _ = std::fs::remove_file(&probe);
        Ok(())
    }

    /// Writes a new wallet file; an existing file at `path` is never replaced
    /// ([`KeystoreError::Exists`]).
    pub fn create(&self, path: &Path) -> Result<()> {
        let tmp = self.write_temp(path)?;
        // A hard link is an atomic "create if absent" for the finished file.
        let linked = std::fs::hard_link(&tmp, path);
        let _ = std::fs::remove_file(&tmp);
        match linked {
            Ok(()) => sync_parent(path),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(KeystoreError::Exists(path.to_owned())),
            Err(e) => Err(io(path)(e)),
        }
    }

    /// Replaces the wallet file atomically: readers see the old file or the new one.
    pub fn save(&self, path: &Path) -> Result<()> {
        let tmp = self.write_temp(path)?;
        if let Err(e) = std::fs::rename(&tmp, path) {
            let _ = std::fs::remove_file(&tmp);
            return Err(io(path)(e));
        }
        sync_parent(path)
    }

    /// The file's bytes in a fresh temp file (mode 0600, fsynced) next to `path`.
    fn write_temp(&self, path: &Path) -> Result<PathBuf> {
        let dir = parent(path);
        create_private_dir(dir)?;
        let mut json = serde_json::to_vec_pretty(self).map_err(|e| KeystoreError::Format(e.to_string()))?;
        json.push(b'\n');
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "wallet".into());
        let tmp = dir.join(format!(".{name}.{}-{:08x}.tmp", std::process::id(), rand::random::<u32>()));
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let written = (|| {
            let mut f = options.open(&tmp)?;
            f.write_all(&json)?;
            f.sync_all()
        })();
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(io(&tmp)(e));
        }
        Ok(tmp)
    }
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Creates the wallet's directory (and missing parents) with mode 0700; an existing directory
/// is left as it is.
fn create_private_dir(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir).map_err(io(dir))
}

/// Makes a rename or link in the directory durable.
fn sync_parent(path: &Path) -> Result<()> {
    let dir = parent(path);
    #[cfg(unix)]
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Small costs: the tests exercise the format, not the hardness.
    const CHEAP: KdfCost = KdfCost { m_cost: 64, t_cost: 1, p_cost: 1 };

    fn pass(s: &str) -> Passphrase {
        Passphrase::new(s.into())
    }

    fn wallet_with(secret: &[u8]) -> (WalletFile, WalletKey) {
        let mut w = WalletFile::new("http://127.0.0.1:8080", 7, CHEAP);
        let key = w.unlock(&pass("correct horse")).unwrap();
        w.add_secret(&key, DEVICE_KEY_NAME, KIND_DEVICE_KEY, secret).unwrap();
        (w, key)
    }

    #[test]
    fn round_trip_through_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("wallet.json");
        let secret = [0x5au8; 32];
        let (mut w, key) = wallet_with(&secret);
        w.add_secret(&key, "vault-share-1", "vault_share", b"a share").unwrap();
        w.create(&path).unwrap();

        let loaded = WalletFile::load(&path).unwrap();
        assert_eq!(loaded, w);
        let key = loaded.unlock(&pass("correct horse")).unwrap();
        assert_eq!(&loaded.secret(&key, DEVICE_KEY_NAME).unwrap()[..], &secret);
        assert_eq!(&loaded.secret(&key, "vault-share-1").unwrap()[..], b"a share");
        assert!(matches!(loaded.secret(&key, "nope"), Err(KeystoreError::NoSecret(_))));
        let names: Vec<_> = loaded.secret_names().collect();
        assert_eq!(names, vec![("device", "device_key"), ("vault-share-1", "vault_share")]);

        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
            let dir_mode = std::fs::metadata(path.parent().unwrap()).unwrap().permissions().mode() & 0o777;
            assert_eq!(dir_mode, 0o700);
        }
        // No temp files left behind.
        assert_eq!(std::fs::read_dir(path.parent().unwrap()).unwrap().count(), 1);
    }

    #[test]
    fn create_never_overwrites_and_save_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wallet.json");
        let (w, key) = wallet_with(&[1u8; 32]);
        w.create(&path).unwrap();
        let before = std::fs::read(&path).unwrap();
        let (other, _) = wallet_with(&[2u8; 32]);
        assert!(matches!(other.create(&path), Err(KeystoreError::Exists(_))));
        assert_eq!(std::fs::read(&path).unwrap(), before);

        let mut more = w.clone();
        more.add_secret(&key, "extra", "vault_share", b"x").unwrap();
        more.save(&path).unwrap();
        assert_eq!(WalletFile::load(&path).unwrap(), more);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn wrong_passphrase_is_refused_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wallet.json");
        let (w, _) = wallet_with(&[3u8; 32]);
        w.create(&path).unwrap();
        let before = std::fs::read(&path).unwrap();
        let loaded = WalletFile::load(&path).unwrap();
        for wrong in ["correct horsE", "", "correct horse "] {
            let e = loaded.unlock(&pass(wrong)).unwrap_err();
            assert!(matches!(e, KeystoreError::WrongPassphrase), "{e:?}");
            assert!(e.to_string().contains("wrong passphrase"));
        }
        assert_eq!(std::fs::read(&path).unwrap(), before);
    }

    #[test]
    fn no_secret_or_passphrase_appears_in_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wallet.json");
        // A real device key, as `wallet init` stores it.
        let device = crate::wallet::device::DeviceKey::generate();
        let secret = device.secret_bytes();
        let mut w = WalletFile::new("http://127.0.0.1:8080", 7, CHEAP);
        let key = w.unlock(&pass("a passphrase nobody guesses")).unwrap();
        w.add_secret(&key, DEVICE_KEY_NAME, KIND_DEVICE_KEY, &secret[..]).unwrap();
        w.create(&path).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let contains = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
        assert!(!contains(&secret[..]), "raw secret key bytes in the file");
        assert!(!contains(hex::encode(&secret[..]).as_bytes()), "hex secret key in the file");
        assert!(!contains(hex::encode_upper(&secret[..]).as_bytes()), "HEX secret key in the file");
        assert!(!contains(&key.0[..]), "derived key in the file");
        assert!(!contains(hex::encode(&key.0[..]).as_bytes()), "hex derived key in the file");
        assert!(!contains(b"a passphrase nobody guesses"));
        // Only the public key is known outside.
        assert!(!contains(device.pubkey_hex().as_bytes()), "not even the public key is stored");
        // Redacted debug output.
        assert!(!format!("{key:?} {:?} {device:?}", pass("a passphrase nobody guesses")).contains("nobody"));
        assert!(!format!("{device:?}").contains(&hex::encode(&secret[..])));
    }

    #[test]
    fn tampering_is_detected() {
        let (w, _) = wallet_with(&[4u8; 32]);
        let p = pass("correct horse");
        // A flipped ciphertext bit, a different nonce, a truncated ciphertext.
        let mut t = w.clone();
        let mut ct = hex::decode(&t.secrets[0].ciphertext).unwrap();
        ct[5] ^= 1;
        t.secrets[0].ciphertext = hex::encode(&ct);
        assert!(matches!(t.unlock(&p), Err(KeystoreError::WrongPassphrase)));
        let mut t = w.clone();
        t.secrets[0].nonce = hex::encode([9u8; 24]);
        assert!(matches!(t.unlock(&p), Err(KeystoreError::WrongPassphrase)));
        let mut t = w.clone();
        t.secrets[0].ciphertext.truncate(40);
        assert!(matches!(t.unlock(&p), Err(KeystoreError::WrongPassphrase)));
        // The associated data: name, kind, provider and account are bound to the secret.
        for change in [
            (|t: &mut WalletFile| t.secrets[0].name = "other".into()) as fn(&mut WalletFile),
            |t| t.secrets[0].kind = "vault_share".into(),
            |t| t.provider_url = "http://evil.example:8080".into(),
            |t| t.account_id = 8,
            |t| t.kdf.salt = hex::encode([0u8; 16]),
            |t| t.kdf.t_cost = 2,
        ] {
            let mut t = w.clone();
            change(&mut t);
            assert!(matches!(t.unlock(&p), Err(KeystoreError::WrongPassphrase)), "{t:?}");
        }
        // A later secret that does not open while the first does: damage, not a wrong passphrase.
        let mut t = w.clone();
        let key = t.unlock(&p).unwrap();
        t.add_secret(&key, "second", "vault_share", b"x").unwrap();
        t.secrets[1].ciphertext = t.secrets[0].ciphertext.clone();
        assert!(matches!(t.unlock(&p), Err(KeystoreError::Damaged(n)) if n == "second"));
    }

    #[test]
    fn malformed_files_are_refused_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wallet.json");
        assert!(matches!(WalletFile::load(&path), Err(KeystoreError::NotFound(_))));
        let (w, _) = wallet_with(&[5u8; 32]);
        let good = serde_json::to_value(&w).unwrap();
        let cases: Vec<(serde_json::Value, &str)> = vec![
            (serde_json::json!({"version": 2, "future": true}), "version 2"),
            (
                {
                    let mut v = good.clone();
                    v["version"] = 2.into();
                    v
                },
                "version 2",
            ),
            (
                {
                    let mut v = good.clone();
                    v["kdf"]["alg"] = "scrypt".into();
                    v
                },
                "unsupported kdf",
            ),
            (
                {
                    let mut v = good.clone();
                    v["kdf"]["m_cost"] = (u32::MAX).into();
                    v
                },
                "out of bounds",
            ),
            (
                {
                    let mut v = good.clone();
                    v["kdf"]["salt"] = "abcd".into();
                    v
                },
                "salt",
            ),
            (
                {
                    let mut v = good.clone();
                    v["secrets"][0]["name"] = "Bad Name".into();
                    v
                },
                "must be 1 to 64",
            ),
            (
                {
                    let mut v = good.clone();
                    v["extra"] = 1.into();
                    v
                },
                "unknown field",
            ),
            (
                {
                    let mut v = good.clone();
                    let s = v["secrets"][0].clone();
                    v["secrets"].as_array_mut().unwrap().push(s);
                    v
                },
                "twice",
            ),
        ];
        for (value, expect) in cases {
            std::fs::write(&path, serde_json::to_vec(&value).unwrap()).unwrap();
            let e = WalletFile::load(&path).unwrap_err().to_string();
            assert!(e.contains(expect), "{e} should mention {expect}");
        }
        std::fs::write(&path, b"{not json").unwrap();
        assert!(matches!(WalletFile::load(&path), Err(KeystoreError::Format(_))));
    }

    #[test]
    fn secret_names_are_unique_and_well_formed() {
        let (mut w, key) = wallet_with(&[6u8; 32]);
        assert!(matches!(w.add_secret(&key, DEVICE_KEY_NAME, "x", b"y"), Err(KeystoreError::DuplicateSecret(_))));
        assert!(w.add_secret(&key, "", "x", b"y").is_err());
        assert!(w.add_secret(&key, "ok", "Bad Kind", b"y").is_err());
        assert!(w.add_secret(&key, &"a".repeat(65), "x", b"y").is_err());
        assert_eq!(w.secrets.len(), 1);
    }

    /// The default cost is what files get; it must be accepted when read back.
    #[test]
    fn default_cost_is_within_bounds() {
        let w = WalletFile::new("http://x", 1, KdfCost::default());
        w.kdf.params().unwrap();
        assert_eq!(w.kdf.salt.len(), 2 * SALT_LEN);
        assert_ne!(w.kdf.salt, WalletFile::new("http://x", 1, KdfCost::default()).kdf.salt);
    }
}
