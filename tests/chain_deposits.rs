//! Chain deposits, end to end on the embedded devnet: a wallet's vault address (made with the
//! real binary) receives bitcoin from outside; the deposit service credits it once the block
//! confirms it, never before and never twice (also when the service starts again and rescans),
//! and takes it back when a reorg drops it.

mod common;

use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bitcoin::{Address, Amount, Network};
use common::ok_json;
use serde_json::{json, Value};
use tandem::client::{Auth, Client};
use tandem::deposits::DepositService;
use tandem::node::{self};
use tandem::wallet::cli::Session;
use tandem_settlement::deposits::DepositPolicy;
use bitcoin::hashes::Hash as _;
use tandem_settlement::{Devnet, DevnetConfig, RegtestNode};

const TOKEN: &str = "chain-deposits-test-token";
const PASSPHRASE: &str = "deposit test passphrase";

async fn btc_and_deposits(session: &Session) -> (String, Vec<Value>) {
    let b = session.call("GET", "/v1/balances", None).await.unwrap();
    let btc = b["balances"].as_array().unwrap().iter().find(|x| x["asset"] == "BTC").map(|x| x["available"].as_str().unwrap().to_owned());
    let d = session.call("GET", "/v1/deposits", None).await.unwrap();
    (btc.unwrap_or_else(|| "0".into()), d["deposits"].as_array().unwrap().clone())
}

fn service(node: &node::Node, chain: Arc<dyn tandem_settlement::Chain>) -> tokio::task::JoinHandle<()> {
    let policy = DepositPolicy { confirmations: 2 };
    // Vault addresses only: no pool deposit addresses watched.
    DepositService { interval: Duration::from_millis(100), pool: None, ..DepositService::for_node(node, chain, policy).unwrap() }.spawn()
}

/// A node with custody and a wallet with one vault address (2-of-2, fixture primes).
struct World {
    node: node::Node,
    session: Session,
    vault: Address,
    _tmp: tempfile::TempDir,
}

async fn world() -> World {
    let tmp = tempfile::tempdir().unwrap();
    let node = common::custody_node(&tmp.path().join("node"), TOKEN).await;
    let url = node.base_url();
    let mut c = Client::connect(&url).await.unwrap();
    let (s, code) = c.send("POST", "/v1/operator/enrolment-codes", Some(&json!({})), &Auth::Operator(TOKEN.into())).await.unwrap();
    assert_eq!(s, 200, "{code}");
    let file = tmp.path().join("wallet.json");
    let wallet = |args: &[&str]| common::wallet_cmd(&file, PASSPHRASE).args(args).output().unwrap();
    ok_json(wallet(&["init", "--provider", &url, "--enrolment-code", code["code"].as_str().unwrap(), "--json"]));
    let made = ok_json(wallet(&["address", "--demo-primes", "--json"]));
    let vault = Address::from_str(made["address"].as_str().unwrap()).unwrap().require_network(Network::Regtest).unwrap();
    let pass = tmp.path().join("pass");
    std::fs::write(&pass, PASSPHRASE).unwrap();
    let session = Session::open(&file, Some(&pass)).unwrap();
    World { node, session, vault, _tmp: tmp }
}

/// Waits until the wallet's available BTC reads `want`.
async fn wait_btc(session: &Session, want: &str) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (btc, deposits) = btc_and_deposits(session).await;
        if btc == want {
            return deposits;
        }
        assert!(Instant::now() < deadline, "BTC available {btc}, expected {want}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outside_deposit_is_credited_once_after_its_confirmations() {
    let World { node, session, vault, _tmp } = world().await;
    let devnet = Devnet::new(DevnetConfig::default()).unwrap();
    let first = service(&node, devnet.clone());
    let txid = devnet.faucet(&vault.script_pubkey(), Amount::from_sat(1_234_567)).unwrap();
    let wait = || tokio::time::sleep(Duration::from_millis(600));

    // In the mempool, then one confirmation: not yet (two are asked for).
    wait().await;
    assert_eq!(btc_and_deposits(&session).await.0, "0.00000000");
    devnet.mine(1, None).unwrap();
    wait().await;
    assert_eq!(btc_and_deposits(&session).await.0, "0.00000000");

    // The second confirmation credits it, with the outpoint as its reference.
    devnet.mine(1, None).unwrap();
    let deposits = wait_btc(&session, "0.01234567").await;
    let vout = devnet_vout(&devnet, &txid, &vault).await;
    assert_eq!(deposits.len(), 1, "{deposits:?}");
    assert_eq!(deposits[0]["reference"], format!("chain:{txid}:{vout}"));

    // A restarted service rescans the whole chain: the engine still credits it once.
    first.abort();
    let second = service(&node, devnet.clone());
    devnet.mine(3, None).unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (btc, deposits) = btc_and_deposits(&session).await;
    assert_eq!((btc.as_str(), deposits.len()), ("0.01234567", 1));

    // A reorg drops the deposit's transaction: the credit is taken back, exactly.
    devnet.reorg_dropping(5, &[txid], 6).unwrap();
    wait_btc(&session, "0.00000000").await;
    second.abort();
    node.shutdown().await.unwrap();
}

/// The same on a real regtest bitcoind: a coinbase paying the vault is credited after two
/// confirmations, and taken back when the block that made it is invalidated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bitcoind_deposit_is_credited_after_confirmations_and_reversed_by_a_reorg() {
    let World { node, session, vault, _tmp } = world().await;
    let bitcoind = RegtestNode::start(false).await.unwrap_or_else(|e| panic!("{e}"));
    let rpc = Arc::new(bitcoind.client().await.unwrap());
    let svc = service(&node, rpc.clone());
    let miner = bitcoin::ScriptBuf::new_p2wpkh(&bitcoin::WPubkeyHash::from_byte_array([9; 20]));

    let paid = rpc.generate_to(&vault.script_pubkey(), 1).await.unwrap()[0];
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(btc_and_deposits(&session).await.0, "0.00000000", "one confirmation of two");
    rpc.generate_to(&miner, 1).await.unwrap();
    let deposits = wait_btc(&session, "50.00000000").await;
    assert_eq!(deposits.len(), 1);
    assert!(deposits[0]["reference"].as_str().unwrap().starts_with("chain:"), "{deposits:?}");

    rpc.invalidate_block(&paid).await.unwrap();
    rpc.generate_to(&miner, 3).await.unwrap();
    wait_btc(&session, "0.00000000").await;
    svc.abort();
    node.shutdown().await.unwrap();
}

/// The output of `txid` that pays `to`.
async fn devnet_vout(devnet: &Devnet, txid: &bitcoin::Txid, to: &Address) -> u32 {
    let chain: &dyn tandem_settlement::Chain = devnet;
    let utxos = chain.utxos(&[to.script_pubkey()]).await.unwrap();
    utxos.iter().find(|u| u.outpoint.txid == *txid).expect("the deposit's output").outpoint.vout
}
