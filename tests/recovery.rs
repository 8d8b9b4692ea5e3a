//! Leaving without the provider, end to end, on a real regtest bitcoind: a node with custody
//! (in process), the co-signer as its own `tandem cosigner run` process with a recovery relay,
//! and a wallet made with the real binary. The wallet's 2-of-3 vault receives a (matured)
//! coinbase on bitcoind.
//!
//! While the provider answers, the co-signer refuses the recovery. Once the provider is gone
//! for longer than the co-signer's timeout, `tandem wallet recover` sweeps the vault with the
//! co-signer alone, and bitcoind accepts and confirms the sweep.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant};

use bitcoin::hashes::Hash as _;
use bitcoin::{Address, Amount, Network};
use common::{free_port, ok_json, KillOnDrop, BIN};
use serde_json::json;
use tandem::client::{Auth, Client};
use tandem_settlement::{Chain, RegtestNode};

const TOKEN: &str = "recovery-test-token";
const PASSPHRASE: &str = "recovery test passphrase";
const DEST: &str = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080";
/// The co-signer lets a user leave once the provider is silent this long.
const PROVIDER_TIMEOUT_SECS: u64 = 2;


fn wallet_cmd(file: &Path) -> Command {
    common::wallet_cmd(file, PASSPHRASE)
}

fn recover_cmd(file: &Path, cosigner_url: &str, node: &RegtestNode) -> Command {
    let mut c = wallet_cmd(file);
    c.args(["recover", "--to", DEST, "--cosigner-url", cosigner_url, "--bitcoind", node.url(), "--json"])
        .env("TANDEM_RPC_USER", "tandem")
        .env("TANDEM_RPC_PASSWORD", "tandem");
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_leaves_with_the_cosigner_alone_once_the_provider_is_gone() {
    let tmp = tempfile::tempdir().unwrap();
    let bitcoind = RegtestNode::start(false).await.unwrap_or_else(|e| panic!("{e}"));
    let rpc = bitcoind.client().await.unwrap();

    let node = common::custody_node(&tmp.path().join("node"), TOKEN).await;
    let url = node.base_url();
    let op = Auth::Operator(TOKEN.into());

    // The co-signer: its own master key and identity, registered by the provider's operator,
    // then running with a recovery relay.
    let cdir = tmp.path().join("cosigner");
    let ckey = tmp.path().join("cosigner-master-key.hex");
    ok_status(Command::new(BIN).args(["custody", "new-master-key", "--out"]).arg(&ckey).output().unwrap());
    let init = Command::new(BIN).args(["cosigner", "init", "--data-dir"]).arg(&cdir).arg("--master-key-file").arg(&ckey).output().unwrap();
    ok_status(init.clone());
    let identity = String::from_utf8(init.stdout).unwrap().trim().to_owned();
    let mut c = Client::connect(&url).await.unwrap();
    let body = json!({"identity_pubkey": identity, "label": "independent co-signer"});
    let (s, r) = c.send("POST", "/v1/operator/cosigners", Some(&body), &op).await.unwrap();
    assert_eq!(s, 200, "{r}");
    let recovery_port = free_port();
    let log = std::fs::File::create(tmp.path().join("cosigner.log")).unwrap();
    let _cosigner = KillOnDrop(
        Command::new(BIN)
            .args(["cosigner", "run", "--data-dir"])
            .arg(&cdir)
            .arg("--master-key-file")
            .arg(&ckey)
            .args(["--provider", &url, "--demo-primes", "--provider-timeout-secs", &PROVIDER_TIMEOUT_SECS.to_string()])
            .args(["--recovery-bind", &format!("127.0.0.1:{recovery_port}")])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let cosigner_url = format!("http://127.0.0.1:{recovery_port}");

    // A wallet with a 2-of-3 vault.
    let (s, code) = c.send("POST", "/v1/operator/enrolment-codes", Some(&json!({"label": "t"})), &op).await.unwrap();
    assert_eq!(s, 200, "{code}");
    let file = tmp.path().join("wallet.json");
    ok_json(
        wallet_cmd(&file)
            .args(["init", "--provider", &url, "--enrolment-code", code["code"].as_str().unwrap(), "--json"])
            .output()
            .unwrap(),
    );
    let made = ok_json(wallet_cmd(&file).args(["address", "--demo-primes", "--json"]).output().unwrap());
    assert_eq!(made["policy"], "2-of-3", "{made}");
    let vault = Address::from_str(made["address"].as_str().unwrap()).unwrap().require_network(Network::Regtest).unwrap();

    // The vault's funds: a coinbase (50 BTC on regtest), matured by 100 more blocks.
    rpc.generate_to(&vault.script_pubkey(), 1).await.unwrap();
    let elsewhere = Address::from_str(DEST).unwrap().require_network(Network::Regtest).unwrap();
    let miner = bitcoin::ScriptBuf::new_p2wpkh(&bitcoin::WPubkeyHash::from_byte_array([7; 20]));
    rpc.generate_to(&miner, 100).await.unwrap();
    let held: Amount = rpc.utxos(&[vault.script_pubkey()]).await.unwrap().iter().map(|u| u.txout.value).sum();
    assert_eq!(held, Amount::from_int_btc(50));

    // The provider still answers: the co-signer refuses.
    let early = recover_cmd(&file, &cosigner_url, &bitcoind).output().unwrap();
    assert!(!early.status.success(), "a recovery while the provider answers must fail");
    let err = String::from_utf8_lossy(&early.stderr);
    assert!(err.contains("provider_reachable"), "{err}");

    // The provider goes away; after the co-signer's timeout the user leaves.
    node.shutdown().await.unwrap();
    tokio::time::sleep(Duration::from_secs(PROVIDER_TIMEOUT_SECS + 2)).await;
    let t = Instant::now();
    let done = ok_json(recover_cmd(&file, &cosigner_url, &bitcoind).output().unwrap());
    eprintln!("recovery: {:.1}s {done}", t.elapsed().as_secs_f64());
    let txid = done["txid"].as_str().unwrap().to_owned();
    let (amount, fee) = (done["amount_sat"].as_u64().unwrap(), done["fee_sat"].as_u64().unwrap());
    assert_eq!(amount + fee, 50 * 100_000_000, "the sweep moves the whole vault: amount plus fee");
    assert!(fee > 0 && fee < 100_000, "fee {fee}");
    let mempool: Vec<String> = rpc.mempool().await.unwrap().iter().map(|t| t.compute_txid().to_string()).collect();
    assert_eq!(mempool, vec![txid.clone()]);
    rpc.generate_to(&miner, 1).await.unwrap();
    let got: Vec<_> = rpc.utxos(&[elsewhere.script_pubkey()]).await.unwrap();
    let swept: Vec<_> = got.iter().filter(|u| u.outpoint.txid.to_string() == txid).collect();
    assert_eq!(swept.len(), 1);
    assert_eq!(swept[0].txout.value, Amount::from_sat(amount));
    assert!(rpc.utxos(&[vault.script_pubkey()]).await.unwrap().is_empty(), "the vault is empty");
}

#[track_caller]
fn ok_status(out: Output) {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}
