//! Key shares at rest: sealed, never in plaintext on disk, rotation, wrong key, redacted Debug.

use tandem_custody::{CustodyError, EncryptedShareStore, Keyring, MasterKey, VaultKey};

use crate::common::*;

/// The secret scalar of a share, read from its serialized form (public API only).
fn secret_scalar_hex(key: &VaultKey) -> String {
    let v = serde_json::to_value(key).unwrap();
    let x = v["share"]["core"]["x"].as_str().expect("share.core.x is a hex string").to_string();
    assert_eq!(x.len(), 64, "32-byte scalar");
    x
}

#[test]
fn shares_are_sealed_at_rest_and_rotate() {
    let keys = GROUP_2OF3.keygen();
    let key = &keys[1];
    let dir = tempfile::tempdir().unwrap();
    let k1 = MasterKey::generate();
    let store = EncryptedShareStore::open(dir.path(), Keyring::new(k1.clone())).unwrap();
    let name = format!("addr-{}", key.public_key);
    store.put(&name, key).unwrap();

    let raw = std::fs::read(store.path_of(&name).unwrap()).unwrap();
    let plaintext = serde_json::to_vec(key).unwrap();
    let x_hex = secret_scalar_hex(key);
    let x_bytes = hex::decode(&x_hex).unwrap();
    let contains = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).any(|w| w == needle);
    assert!(!contains(&raw, &plaintext[..64]), "serialized share prefix found on disk");
    assert!(!contains(&raw, x_hex.as_bytes()), "secret share (hex) found on disk");
    assert!(!contains(&raw, &x_bytes), "secret share (raw 32 bytes) found on disk");
    assert!(!contains(&raw, b"\"core\""), "JSON structure visible on disk");
    // Every 32-byte window of the plaintext is absent (no secret-sized chunk leaks).
    assert!(plaintext.windows(32).step_by(7).all(|w| !contains(&raw, w)));

    let back: VaultKey = store.get(&name).unwrap();
    assert_eq!(back.public_key, key.public_key);
    assert_eq!(secret_scalar_hex(&back), x_hex);
    back.check_for(GROUP_2OF3.party(key.role)).unwrap();

    // Debug never shows the share.
    let dbg = format!("{key:?}");
    assert!(!dbg.contains(&x_hex) && dbg.contains("redacted"), "{dbg}");

    // Wrong key fails cleanly, without echoing anything secret.
    let wrong = EncryptedShareStore::open(dir.path(), Keyring::new(MasterKey::generate())).unwrap();
    let err = wrong.get::<VaultKey>(&name).unwrap_err();
    assert!(matches!(err, CustodyError::UnknownMasterKey { .. }), "{err}");
    assert!(!err.to_string().contains(&x_hex));
    // A key that has the right id but wrong bytes cannot exist; a tampered file fails to decrypt.
    let mut tampered = raw.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 0x80;
    std::fs::write(dir.path().join("tampered.sealed"), &tampered).unwrap();
    let err = store.get::<VaultKey>("tampered").unwrap_err();
    assert!(matches!(err, CustodyError::Decrypt { .. }), "{err}");
    std::fs::remove_file(dir.path().join("tampered.sealed")).unwrap();
    // A sealed record copied under another name does not open (label is authenticated).
    std::fs::write(dir.path().join("moved.sealed"), &raw).unwrap();
    assert!(matches!(store.get::<VaultKey>("moved"), Err(CustodyError::Decrypt { .. })));
    std::fs::remove_file(dir.path().join("moved.sealed")).unwrap();

    // Rotation: new key current, old key still decrypts until everything is re-sealed.
    let k2 = MasterKey::generate();
    let ring2 = Keyring::new(k1.clone()).rotated_to(k2.clone());
    let store2 = EncryptedShareStore::open(dir.path(), ring2).unwrap();
    assert_eq!(store2.get::<VaultKey>(&name).unwrap().public_key, key.public_key);
    store2.put("second", &keys[0]).unwrap();
    assert_eq!(store2.rotate_all().unwrap(), 1);
    assert_eq!(store2.rotate_all().unwrap(), 0);
    assert!(store2.key_ids().unwrap().iter().all(|(_, id)| *id == k2.id()));
    // After rotation the new key alone opens everything; the old one alone does not.
    let only_new = EncryptedShareStore::open(dir.path(), Keyring::new(k2.clone())).unwrap();
    assert_eq!(only_new.get::<VaultKey>(&name).unwrap().public_key, key.public_key);
    let only_old = EncryptedShareStore::open(dir.path(), Keyring::new(k1)).unwrap();
    assert!(matches!(only_old.get::<VaultKey>(&name), Err(CustodyError::UnknownMasterKey { .. })));
    let raw2 = std::fs::read(store2.path_of(&name).unwrap()).unwrap();
    assert_ne!(raw, raw2);
    assert!(!contains(&raw2, x_hex.as_bytes()) && !contains(&raw2, &x_bytes));
}

#[test]
fn master_key_from_file_and_env() {
    let dir = tempfile::tempdir().unwrap();
    let k = MasterKey::generate();
    let path = dir.path().join("master.key");
    std::fs::write(&path, format!("{}\n", &*k.to_hex())).unwrap();
    assert_eq!(MasterKey::from_file(&path).unwrap().id(), k.id());
    std::env::set_var("TANDEM_CUSTODY_TEST_MASTER_KEY", &*k.to_hex());
    assert_eq!(MasterKey::from_env("TANDEM_CUSTODY_TEST_MASTER_KEY").unwrap().id(), k.id());
    std::fs::write(&path, "not hex").unwrap();
    let err = MasterKey::from_file(&path).unwrap_err();
    assert!(matches!(err, CustodyError::MasterKey(_)), "{err}");
    assert!(MasterKey::from_env("TANDEM_CUSTODY_TEST_UNSET_VAR").is_err());
}
