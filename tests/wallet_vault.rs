//! The vault lifecycle's first piece end to end: against `tandem demo`, the real binary makes a
//! wallet, then `tandem wallet address` (2-of-2 wallet + provider, fixture primes) twice. The
//! first call creates the vault (aux info through the relay, the provider's vault service
//! joining in process), each call one address (keygen). The provider registers both in
//! `GET /v1/vaults` and keeps its shares sealed under the master key.

mod common;

use common::*;
use serde_json::Value;
use std::path::Path;
use std::process::Output;
use std::str::FromStr;
use std::time::Instant;
use tandem::wallet::cli::Session;
use tandem_custody::{EncryptedShareStore, GroupId, Keyring, MasterKey, PartyAuxInfo, PartyRole, VaultKey};

const PASSPHRASE: &str = "vault test passphrase";

fn wallet(file: &Path, args: &[&str]) -> Output {
    wallet_cmd(file, PASSPHRASE).args(args).output().expect("run tandem wallet")
}

fn regtest_p2wpkh(address: &str) -> bitcoin::Address {
    let a = bitcoin::Address::from_str(address)
        .unwrap_or_else(|e| panic!("{address}: {e}"))
        .require_network(bitcoin::Network::Regtest)
        .unwrap_or_else(|e| panic!("{address} is not a regtest address: {e}"));
    assert!(a.script_pubkey().is_p2wpkh(), "{address} is not P2WPKH");
    a
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wallet_makes_its_vault_and_two_addresses_against_the_demo() {
    let t0 = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let demo_dir = tmp.path().join("demo");
    std::fs::create_dir(&demo_dir).unwrap();
    let demo = Demo::start(&demo_dir).await;
    let file = tmp.path().join("wallet.json");
    let url = demo.creds.base_url.clone();
    ok_json(wallet(&file, &["init", "--provider", &url, "--json"]));

    // The demo provider says it is a demo (so --demo-primes is allowed).
    let mut c = demo.client().await;
    let (s, provider) = c.send("GET", "/v1/mpc/provider", None, &tandem::client::Auth::None).await.unwrap();
    assert_eq!((s, provider["demo"].as_bool()), (200, Some(true)), "{provider}");

    let t = Instant::now();
    let first = ok_json(wallet(&file, &["address", "--demo-primes", "--json"]));
    eprintln!("first address (vault + key): {:.1}s", t.elapsed().as_secs_f64());
    assert_eq!(first["vault_created"], true, "{first}");
    assert_eq!(first["key_index"], 0);
    let t = Instant::now();
    let second = ok_json(wallet(&file, &["address", "--demo-primes", "--json"]));
    eprintln!("second address (key): {:.1}s", t.elapsed().as_secs_f64());
    assert_eq!(second["vault_created"], false, "{second}");
    assert_eq!(second["key_index"], 1);
    assert_eq!(first["group_id"], second["group_id"]);
    let (a1, a2) = (first["address"].as_str().unwrap(), second["address"].as_str().unwrap());
    assert_ne!(a1, a2);
    regtest_p2wpkh(a1);
    regtest_p2wpkh(a2);

    // GET /v1/vaults, signed by the wallet's device key: one 2-of-3 vault (the demo runs a
    // co-signer and registers it) with both addresses.
    let pass_file = tmp.path().join("pass");
    std::fs::write(&pass_file, PASSPHRASE).unwrap();
    let session = Session::open(&file, Some(&pass_file)).unwrap();
    let vaults = session.call("GET", "/v1/vaults", None).await.unwrap();
    let list = vaults["vaults"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{vaults}");
    let v = &list[0];
    assert_eq!((v["group_id"].as_str(), v["policy"].as_str()), (first["group_id"].as_str(), Some("2-of-3")), "{v}");
    assert_eq!(first["policy"], "2-of-3");
    assert_eq!(v["wallet_identity"].as_str(), Some(session.device().pubkey_hex().as_str()));
    let cosigner_key = v["cosigner_identity"].as_str().expect("a 2-of-3 vault names its co-signer").to_owned();
    let listed: Vec<(&str, u64)> = v["addresses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["address"].as_str().unwrap(), a["key_index"].as_u64().unwrap()))
        .collect();
    assert_eq!(listed, vec![(a1, 0), (a2, 1)]);

    // Another account sees none of it.
    let others = {
        let mut c = demo.client().await; // a fresh connection: the first one idled out
        let (s, r) = c.send("GET", "/v1/vaults", None, &demo.auth("alice")).await.unwrap();
        assert_eq!(s, 200, "{r}");
        r
    };
    assert_eq!(others["vaults"].as_array().unwrap().len(), 0, "{others}");

    // The provider's side: sealed files under the master key, no plaintext share in them, and
    // they open to the provider's shares of the same keys.
    let group_hex = first["group_id"].as_str().unwrap();
    let mut gid = [0u8; 16];
    hex::decode_to_slice(group_hex, &mut gid).unwrap();
    let group = GroupId(gid);
    let secrets_dir = demo_dir.join("custody").join("secrets");
    let mk = MasterKey::from_file(&demo_dir.join("demo-master-key.hex")).unwrap();
    let store = EncryptedShareStore::open(&secrets_dir, Keyring::new(mk)).unwrap();
    for (i, address) in [a1, a2].iter().enumerate() {
        let name = tandem::provider::key_record(group, i as u64);
        let sealed = std::fs::read(store.path_of(&name).unwrap()).unwrap();
        let wallet_key: VaultKey = serde_json::from_slice(&session.secret(&format!("vault-key-{i}")).unwrap()).unwrap();
        let pk_hex = wallet_key.public_key.to_string();
        let text = String::from_utf8_lossy(&sealed);
        assert!(!text.contains(&pk_hex) && !text.contains("\"share\"") && !text.contains("Provider"), "{name} is not sealed");
        let provider_key: VaultKey = store.get(&name).unwrap();
        assert_eq!(provider_key.role, PartyRole::Provider);
        assert_eq!(provider_key.public_key, wallet_key.public_key);
        assert_eq!(provider_key.address(bitcoin::Network::Regtest).to_string(), *address);
    }
    let aux: PartyAuxInfo = store.get(&tandem::provider::aux_record(group)).unwrap();
    assert_eq!((aux.group, aux.role), (group, PartyRole::Provider));

    // The co-signer's side, in its own data dir under its own master key: the same vault, its
    // shares of the same two keys, and the identity the vault names.
    let cosigner_dir = demo_dir.join("cosigner");
    let cmk = MasterKey::from_file(&cosigner_dir.join("master-key.hex")).unwrap();
    assert_eq!(tandem::cosigner::identity(&cosigner_dir, &cmk).unwrap().pubkey_hex(), cosigner_key);
    let index: Value = serde_json::from_slice(&std::fs::read(cosigner_dir.join("vaults.json")).unwrap()).unwrap();
    let entry = &index["vaults"][0];
    assert_eq!((entry["group"]["id"].as_str(), entry["keys"].as_u64()), (Some(group_hex), Some(2)), "{index}");
    let cstore = EncryptedShareStore::open(cosigner_dir.join("secrets"), Keyring::new(cmk)).unwrap();
    for (i, address) in [a1, a2].iter().enumerate() {
        let key: VaultKey = cstore.get(&format!("vault-{group}-key-{i}")).unwrap();
        assert_eq!(key.role, PartyRole::CoSigner);
        assert_eq!(key.address(bitcoin::Network::Regtest).to_string(), *address);
    }
    eprintln!("total {:.1}s", t0.elapsed().as_secs_f64());
    demo.kill();
}
