//! Settlement among replicas: two `tandem serve` replicas on one Kafka partition (a real Tansu
//! broker), one PostgreSQL store and one custody secrets directory, both given a real regtest
//! bitcoind. Exactly one leads settlement and credits chain deposits; when its process is
//! killed, the other takes the next turn and credits the next deposit, and the first is never
//! credited twice (each new leader rescans the chain from the start).

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{connect_when_healthy as connect, free_port, KillOnDrop, BIN};
use serde_json::{json, Value};
use tandem::client::{Auth, Client};
use tandem_kafka::testing::Broker;
use tandem_settlement::RegtestNode;

const TOKEN: &str = "settlement-leader-test-token";

struct Cluster {
    journal: String,
    store: String,
    bitcoind: String,
    master_key: std::path::PathBuf,
    secrets: std::path::PathBuf,
}

impl Cluster {
    fn serve(&self, dir: &Path, port: u16) -> KillOnDrop {
        let log = std::fs::File::create(dir.join(format!("serve-{port}.log"))).unwrap();
        let child = Command::new(BIN)
            .args(["serve", "--journal-url", &self.journal, "--store-url", &self.store, "--migrate"])
            .args(["--bitcoind", &self.bitcoind, "--rpc-user", "tandem", "--rpc-password", "tandem", "--network", "regtest"])
            .args(["--deposit-confirmations", "2", "--prime-pool-target", "0", "--operator-token", TOKEN])
            .arg("--master-key-file")
            .arg(&self.master_key)
            .arg("--custody-secrets-dir")
            .arg(&self.secrets)
            .args(["--bind", &format!("127.0.0.1:{port}"), "--data-dir"])
            .arg(dir)
            .env_remove("TANDEM_MASTER_KEY")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        KillOnDrop(child)
    }
}


/// The settlement epoch the replica at `port` leads (0: it follows), from its `/metrics`.
async fn leading(port: u16) -> u64 {
    common::metric(port, "tandem_settlement_leader_epoch").await
}

/// Waits until exactly one of `ports` leads, and returns its index and epoch.
async fn one_leader(ports: &[u16]) -> (usize, u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut epochs = Vec::new();
        for p in ports {
            epochs.push(leading(*p).await);
        }
        let leaders: Vec<usize> = (0..ports.len()).filter(|i| epochs[*i] > 0).collect();
        if let [one] = leaders[..] {
            return (one, epochs[one]);
        }
        assert!(leaders.len() <= 1, "two leaders at once: {epochs:?}");
        assert!(Instant::now() < deadline, "no leader: {epochs:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn btc_of(c: &mut Client, account: u64) -> String {
    let (s, v) = c.send("GET", &format!("/v1/operator/accounts/{account}"), None, &Auth::Operator(TOKEN.into())).await.unwrap();
    assert_eq!(s, 200, "{v}");
    let balances = v["balances"].as_array().unwrap_or_else(|| panic!("{v}"));
    balances.iter().find(|b| b["asset"] == "BTC").map_or("0".into(), |b| b["total"].as_str().unwrap_or("0").to_owned())
}

async fn wait_btc(c: &mut Client, account: u64, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let have = btc_of(c, account).await;
        if have == want {
            return;
        }
        assert!(Instant::now() < deadline, "account {account} holds {have} BTC, not {want}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_replica_settles_at_a_time_and_another_takes_over_when_it_dies() {
    let broker = Broker::start();
    let bitcoind = RegtestNode::start(false).await.unwrap_or_else(|e| panic!("{e}"));
    let rpc = bitcoind.client().await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let master = tandem_custody::MasterKey::generate();
    let master_key = tmp.path().join("master.key");
    std::fs::write(&master_key, master.to_hex().as_bytes()).unwrap();

    let cluster = Cluster {
        journal: format!("kafka://{}/tandem.commands", broker.addr),
        store: common::postgres_store_url(),
        bitcoind: bitcoind.url().to_owned(),
        master_key,
        secrets: tmp.path().join("secrets"),
    };
    let dirs = [tmp.path().join("a"), tmp.path().join("b")];
    let ports = [free_port(), free_port()];
    let mut nodes: Vec<Option<KillOnDrop>> = Vec::new();
    let mut clients = Vec::new();
    for i in 0..2 {
        std::fs::create_dir_all(&dirs[i]).unwrap();
        nodes.push(Some(cluster.serve(&dirs[i], ports[i])));
        clients.push(connect(ports[i], &dirs[i]).await);
    }
    let (first, epoch) = one_leader(&ports).await;
    let other = 1 - first;

    // A partner account (no vault: its coins go to its pool deposit address, derived from the
    // pool seed both replicas share).
    let (s, made) = clients[other]
        .send("POST", "/v1/operator/accounts", Some(&json!({"kind": "partner", "label": "p"})), &Auth::Operator(TOKEN.into()))
        .await
        .unwrap();
    assert_eq!(s, 200, "{made}");
    let account = made["account_id"].as_u64().unwrap();
    let secrets = tandem_custody::EncryptedShareStore::open(&cluster.secrets, tandem_custody::Keyring::new(master)).unwrap();
    let pool = tandem::provider::PoolVault::load_or_create(&secrets, bitcoin::Network::Regtest).unwrap();
    let deposit_to = pool.deposit_script(tandem_matching::AccountId(account)).unwrap();
    let miner = bitcoin::ScriptBuf::new_p2wpkh(&<bitcoin::WPubkeyHash as bitcoin::hashes::Hash>::from_byte_array([7; 20]));

    rpc.generate_to(&deposit_to, 1).await.unwrap();
    rpc.generate_to(&miner, 1).await.unwrap();
    for c in clients.iter_mut() {
        wait_btc(c, account, "50.00000000").await;
    }

    // The leader dies. Its lock goes with its connection; the follower takes the next turn.
    nodes[first].take();
    let (now, next) = one_leader(&[ports[other]]).await;
    assert_eq!(now, 0);
    assert!(next > epoch, "a new turn: {next} after {epoch}");
    rpc.generate_to(&deposit_to, 1).await.unwrap();
    rpc.generate_to(&miner, 1).await.unwrap();
    wait_btc(&mut clients[other], account, "100.00000000").await;

    // The old leader comes back as a follower and agrees: no deposit credited twice, although
    // each leader scanned the chain from its start.
    nodes[first] = Some(cluster.serve(&dirs[first], ports[first]));
    clients[first] = connect(ports[first], &dirs[first]).await;
    wait_btc(&mut clients[first], account, "100.00000000").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(leading(ports[first]).await, 0, "the follower stays a follower");
    assert_eq!(one_leader(&ports).await, (other, next));
    for c in clients.iter_mut() {
        assert_eq!(btc_of(c, account).await, "100.00000000");
    }
    let (_, report) = clients[other].send("GET", "/v1/operator/reconciliation", None, &Auth::Operator(TOKEN.into())).await.unwrap();
    assert_eq!(report["balanced"], Value::Bool(true), "ledger and chain agree: {report}");
}
