//! The settlement scenario on a split cluster: one process per service, as `scripts/cluster`
//! runs it. A Tansu broker holds the journal; `tandem matching`, `tandem custody run`,
//! `tandem settlement` (a real regtest bitcoind) and two `tandem gateway`s share PostgreSQL and
//! Redis and read their flags from one `tandem.toml`. Two wallets make vaults by DKG through
//! different gateways (the gateways forward the MPC relay to custody), carol's vault is funded
//! on chain, carol sells to dave and withdraws to an outside address; the settlement process
//! nets the window into one batch, custody signs it with carol's wallet (through the relay,
//! reached via a gateway), bitcoind confirms it, and ledger and chain agree to the satoshi.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant};

use bitcoin::hashes::Hash as _;
use bitcoin::{Address, Network, ScriptBuf};
use common::{btc_total, wait_for, connect_when_healthy, free_port, ok_json, KillOnDrop, BIN};
use serde_json::{json, Value};
use tandem::client::{Auth, Client};
use tandem_kafka::testing::Broker;
use tandem_matching::SETTLEMENT_POOL;
use tandem_settlement::{Chain, RegtestNode};

const TOKEN: &str = "split-cluster-test-token";
const PASSPHRASE: &str = "split cluster passphrase";
/// An outside address (regtest).
const DEST: &str = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080";

struct Cluster {
    dir: PathBuf,
    config: PathBuf,
    processes: Vec<KillOnDrop>,
}

impl Cluster {
    /// Starts `tandem ARGS --config tandem.toml`, logging to `<name>.log`, and waits for its
    /// health on `port`.
    async fn start(&mut self, name: &str, port: u16, args: &[&str]) -> Client {
        let log = std::fs::File::create(self.dir.join(format!("{name}.log"))).unwrap();
        let child = Command::new(BIN)
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .args(["--bind", &format!("127.0.0.1:{port}"), "--data-dir"])
            .arg(self.dir.join(name))
            .env_remove("TANDEM_MASTER_KEY")
            .env("RUST_LOG", "info,actix_server=warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.processes.push(KillOnDrop(child));
        connect_when_healthy(port, &self.dir).await
    }
}

struct Wallet {
    file: PathBuf,
    account: u64,
    vault: ScriptBuf,
}

impl Wallet {
    fn cmd(&self, args: &[&str]) -> Value {
        ok_json(common::wallet_cmd(&self.file, PASSPHRASE).args(args).arg("--json").output().unwrap())
    }
}

/// A wallet enrolled at the gateway `url`, with a 2-of-2 vault made through it.
async fn make_wallet(dir: &Path, name: &str, url: &str, c: &mut Client) -> Wallet {
    let code = common::ok(c, "POST", "/v1/operator/enrolment-codes", Some(&json!({"label": name})), &operator()).await;
    let file = dir.join(format!("{name}.wallet"));
    let w = Wallet { file, account: 0, vault: ScriptBuf::new() };
    let init = w.cmd(&["init", "--provider", url, "--enrolment-code", code["code"].as_str().unwrap()]);
    let made = w.cmd(&["address", "--demo-primes", "--no-cosigner"]);
    assert_eq!(made["policy"], "2-of-2", "{made}");
    let vault = Address::from_str(made["address"].as_str().unwrap()).unwrap().require_network(Network::Regtest).unwrap();
    Wallet { account: init["account_id"].as_u64().unwrap(), vault: vault.script_pubkey(), ..w }
}

fn operator() -> Auth {
    Auth::Operator(TOKEN.into())
}


async fn newest_batch(c: &mut Client) -> Option<Value> {
    let b = common::ok(c, "GET", "/v1/operator/batches", None, &operator()).await;
    b["batches"].as_array().unwrap().first().cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_window_settles_on_chain_through_one_process_per_service() {
    let broker = Broker::start();
    let node = RegtestNode::start(false).await.unwrap_or_else(|e| panic!("{e}"));
    let rpc = node.client().await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let master_key = dir.join("master.key");
    std::fs::write(&master_key, tandem_custody::MasterKey::generate().to_hex().as_bytes()).unwrap();
    let (matching_port, custody_port, settlement_port) = (free_port(), free_port(), free_port());
    let gateway_ports = [free_port(), free_port()];
    let custody_url = format!("http://127.0.0.1:{custody_port}");
    let prefix = format!("tandem-split-test-{:08x}:", rand::random::<u32>());

    // One file for every process, as an operator would keep it.
    let config = dir.join("tandem.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[all]
journal-url = "kafka://{broker}/tandem.commands"
store-url = "{store}"
redis-url = "redis://127.0.0.1:6379"
redis-prefix = "{prefix}"
operator-token = "{TOKEN}"
network = "regtest"

[matching]
migrate = true

[custody.run]
master-key-file = "{master_key}"
custody-secrets-dir = "{secrets}"
prime-pool-target = 0
demo-primes = true

[settlement]
custody-url = "{custody_url}"
bitcoind = "{bitcoind}"
rpc-user = "tandem"
rpc-password = "tandem"
deposit-confirmations = 1
settlement-window-secs = 2
settlement-confirmations = 1

[gateway]
relay-url = "{custody_url}"
"#,
            broker = broker.addr,
            store = common::postgres_store_url(),
            master_key = master_key.display(),
            secrets = dir.join("secrets").display(),
            bitcoind = node.url(),
        ),
    )
    .unwrap();
    let mut cluster = Cluster { dir: dir.clone(), config, processes: Vec::new() };
    // Matching first: it writes the journal's genesis and migrates the store.
    let mut matching = cluster.start("matching", matching_port, &["matching"]).await;
    let mut custody = cluster.start("custody", custody_port, &["custody", "run"]).await;
    let mut settlement = cluster.start("settlement", settlement_port, &["settlement"]).await;
    let mut gw1 = cluster.start("gateway-1", gateway_ports[0], &["gateway"]).await;
    let mut gw2 = cluster.start("gateway-2", gateway_ports[1], &["gateway"]).await;
    let urls = gateway_ports.map(|p| format!("http://127.0.0.1:{p}"));

    // The services behind the gateways do not serve trading.
    for c in [&mut matching, &mut custody, &mut settlement] {
        let (s, _) = c.send("GET", "/v1/markets", None, &Auth::None).await.unwrap();
        assert_eq!(s, 404, "only gateways serve the public API");
    }
    let (s, _) = gw1.send("GET", "/v1/custody/pool", None, &operator()).await.unwrap();
    assert_eq!(s, 404, "custody's API is custody's alone");

    // Wallets enrol and make vaults through different gateways.
    let carol = make_wallet(&dir, "carol", &urls[0], &mut gw1).await;
    let dave = make_wallet(&dir, "dave", &urls[1], &mut gw2).await;

    // Carol's vault and the settlement pool are funded on chain (coinbases, matured).
    let pool_key = common::ok(&mut custody, "GET", "/v1/custody/pool", None, &operator()).await;
    let pool = tandem::provider::PoolAddresses::new(pool_key["xpub"].as_str().unwrap().parse().unwrap(), Network::Regtest);
    let burn = ScriptBuf::new_p2wsh(&bitcoin::WScriptHash::from_byte_array([7; 32]));
    rpc.generate_to(&carol.vault, 1).await.unwrap();
    rpc.generate_to(&pool.deposit_script(SETTLEMENT_POOL).unwrap(), 1).await.unwrap();
    rpc.generate_to(&burn, 100).await.unwrap();
    let carol_deposit = wait_for("carol's deposit", 60, async || {
        let t = btc_total(&mut gw2, carol.account, TOKEN).await;
        (t > 0).then_some(t)
    })
    .await;
    wait_for("the pool's deposit", 60, async || (btc_total(&mut gw1, SETTLEMENT_POOL.0, TOKEN).await > 0).then_some(())).await;
    let usd = json!({"account_id": dave.account, "asset": "USD", "amount": "100000.00", "reference": "wire-dave"});
    common::ok(&mut gw2, "POST", "/v1/operator/deposits", Some(&usd), &operator()).await;

    // An independent co-signer follows the provider through gateway 2 (the relay forwarded),
    // with its probes.
    let cosigner_port = free_port();
    let cosigner_key = dir.join("cosigner.key");
    let run = |args: &[&str]| Command::new(BIN).args(args).env_remove("TANDEM_MASTER_KEY").output().unwrap();
    assert!(run(&["custody", "new-master-key", "--out", cosigner_key.to_str().unwrap()]).status.success());
    let cosigner_dir = dir.join("cosigner");
    let init = run(&["cosigner", "init", "--data-dir", cosigner_dir.to_str().unwrap(), "--master-key-file", cosigner_key.to_str().unwrap()]);
    assert!(init.status.success(), "{}", String::from_utf8_lossy(&init.stderr));
    let identity = String::from_utf8(init.stdout).unwrap().trim().to_owned();
    let registered = json!({"identity_pubkey": identity, "label": "co-signer"});
    common::ok(&mut gw2, "POST", "/v1/operator/cosigners", Some(&registered), &operator()).await;
    let cosigner_log = std::fs::File::create(dir.join("cosigner.log")).unwrap();
    cluster.processes.push(KillOnDrop(
        Command::new(BIN)
            .args(["cosigner", "run", "--data-dir", cosigner_dir.to_str().unwrap(), "--master-key-file"])
            .arg(&cosigner_key)
            .args(["--provider", &urls[1], "--demo-primes", "--bind", &format!("127.0.0.1:{cosigner_port}")])
            .env_remove("TANDEM_MASTER_KEY")
            .stdout(Stdio::null())
            .stderr(cosigner_log)
            .spawn()
            .unwrap(),
    ));
    wait_for("the co-signer to be ready", 30, async || {
        common::plain_text(cosigner_port, "/ready").await.ok().filter(|t| t.starts_with("HTTP/1.0 200") || t.starts_with("HTTP/1.1 200"))
    })
    .await;

    // Carol's signer runs (through gateway 1, which forwards to the relay at custody).
    let cosign_log = std::fs::File::create(dir.join("carol-cosign.log")).unwrap();
    cluster.processes.push(KillOnDrop(
        common::wallet_cmd(&carol.file, PASSPHRASE)
            .args(["cosign"])
            .stdout(cosign_log.try_clone().unwrap())
            .stderr(cosign_log)
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    ));

    // Carol sells 0.1 BTC to dave and withdraws 0.05 BTC to an outside address.
    carol.cmd(&["order", "--market", "BTC-USD", "--side", "sell", "--price", "60000", "--quantity", "0.1"]);
    let bought = dave.cmd(&["order", "--market", "BTC-USD", "--side", "buy", "--price", "60000", "--quantity", "0.1"]);
    assert_eq!(bought["order"]["status"], "filled", "{bought}");
    carol.cmd(&["withdraw", "--asset", "BTC", "--amount", "0.05", "--to", DEST]);

    // The window closes: one batch, signed by carol's wallet with custody, broadcast.
    let batch = wait_for("a broadcast batch", 120, async || newest_batch(&mut settlement).await.filter(|b| b["status"] == "broadcast")).await;
    let inputs = batch["inputs"].as_array().unwrap();
    assert_eq!(inputs.len(), 1, "carol's coin pays for everything: {batch}");
    assert_eq!(inputs[0]["holder"], carol.account);

    rpc.generate_to(&burn, 1).await.unwrap();
    let confirmed = wait_for("the batch confirmed", 60, async || newest_batch(&mut gw1).await.filter(|b| b["status"] == "confirmed")).await;
    let txid: bitcoin::Txid = confirmed["txid"].as_str().unwrap().parse().unwrap();
    assert!(matches!(rpc.transaction_status(&txid).await.unwrap(), tandem_settlement::TxStatus::Confirmed { .. }));

    // Paid exactly once; every vault holds exactly what its account owns.
    let balance = async |script: &ScriptBuf| -> i64 {
        rpc.utxos(std::slice::from_ref(script)).await.unwrap().iter().map(|u| u.txout.value.to_sat() as i64).sum()
    };
    let dest = Address::from_str(DEST).unwrap().require_network(Network::Regtest).unwrap().script_pubkey();
    assert_eq!(balance(&dest).await, 5_000_000, "paid exactly once");
    let carol_ledger = btc_total(&mut gw1, carol.account, TOKEN).await;
    let dave_ledger = btc_total(&mut gw2, dave.account, TOKEN).await;
    assert_eq!(balance(&carol.vault).await, carol_ledger, "carol");
    assert_eq!(balance(&dave.vault).await, dave_ledger, "dave");
    assert!(carol_ledger < carol_deposit - 15_000_000, "carol paid 0.15 BTC plus her fee share: {carol_ledger}");
    assert!(dave_ledger > 9_900_000 && dave_ledger < 10_000_000, "dave got 0.1 BTC less his fees: {dave_ledger}");
    assert_eq!(btc_total(&mut gw2, carol.account, TOKEN).await, carol_ledger, "both gateways agree");

    // Reconciliation is the settlement process's (it has the chain).
    let out = Command::new(BIN)
        .args(["reconcile", "--url", &format!("http://127.0.0.1:{settlement_port}"), "--operator-token", TOKEN])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));

    // Custody stops: the gateways answer 503 for the relay, the co-signer is no longer ready
    // (and says for how long the provider has been silent), and trading goes on.
    cluster.processes.remove(1);
    let (s, body) = gw1.send("GET", "/v1/mpc/provider", None, &Auth::None).await.unwrap();
    assert_eq!(s, 503, "{body}");
    wait_for("the co-signer to notice", 30, async || {
        common::plain_text(cosigner_port, "/ready").await.ok().filter(|t| t.contains(" 503 "))
    })
    .await;
    assert!(common::plain_text(cosigner_port, "/metrics").await.unwrap().contains("tandem_cosigner_provider_silent_seconds"));
    let sold = dave.cmd(&["order", "--market", "BTC-USD", "--side", "sell", "--price", "70000", "--quantity", "0.01"]);
    assert_eq!(sold["order"]["status"], "new", "{sold}");
    drop(cluster);
}

/// Hot standby: two `tandem matching` processes follow the journal; the one that got there
/// first projects each batch, the other finds it done (the cursor lock), and both publish the
/// event stream (consumers keep one record per seq). One is killed while orders stream in
/// through two gateways: the other goes on, every acknowledged order is in the history once,
/// and the event stream holds every seq with no gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_matching_process_killed_under_load_leaves_the_standby_projecting_and_publishing() {
    use tandem_matching::SharedFeed as _;
    let broker = Broker::start();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let journal = format!("kafka://{}/tandem.commands", broker.addr);
    let prefix = format!("tandem-split-test-{:08x}:", rand::random::<u32>());
    let config = dir.join("tandem.toml");
    std::fs::write(
        &config,
        format!(
            "[all]\njournal-url = \"{journal}\"\nstore-url = \"{}\"\nredis-url = \"redis://127.0.0.1:6379\"\n\
             redis-prefix = \"{prefix}\"\noperator-token = \"{TOKEN}\"\n[matching]\nmigrate = true\n\
             [gateway]\nlimit-per-caller = 0\nlimit-per-ip = 0\n",
            common::postgres_store_url(),
        ),
    )
    .unwrap();
    let mut cluster = Cluster { dir: dir.clone(), config, processes: Vec::new() };
    let matching_ports = [free_port(), free_port()];
    cluster.start("matching-1", matching_ports[0], &["matching"]).await;
    cluster.start("matching-2", matching_ports[1], &["matching"]).await;
    let gateway_ports = [free_port(), free_port()];
    let mut gw1 = cluster.start("gateway-1", gateway_ports[0], &["gateway"]).await;
    let mut gw2 = cluster.start("gateway-2", gateway_ports[1], &["gateway"]).await;

    let made = common::ok(&mut gw1, "POST", "/v1/operator/accounts", Some(&json!({"kind": "partner", "label": "bidder"})), &operator()).await;
    let key = Auth::Key { key: made["api_key"].as_str().unwrap().into(), secret: made["api_secret"].as_str().unwrap().into() };
    let usd = json!({"account_id": made["account_id"], "asset": "USD", "amount": "1000000.00", "reference": "wire-bidder"});
    common::ok(&mut gw1, "POST", "/v1/operator/deposits", Some(&usd), &operator()).await;

    const TASKS: usize = 4;
    const ORDERS: usize = 50;
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let (key, port, dir) = (key.clone(), gateway_ports[t % 2], dir.clone());
        tasks.push(tokio::spawn(async move {
            let mut client = connect_when_healthy(port, &dir).await;
            for n in 0..ORDERS {
                let order = json!({"market": "BTC-USD", "side": "buy", "type": "limit", "price": "50000.00",
                                   "quantity": "0.001", "client_order_id": format!("t{t}-{n}")});
                loop {
                    match client.send("POST", "/v1/orders", Some(&order), &key).await.unwrap() {
                        (200, _) => break,
                        (503, _) => tokio::time::sleep(Duration::from_millis(20)).await,
                        (s, v) => panic!("order t{t}-{n}: {s} {v}"),
                    }
                }
            }
        }));
    }
    // Kill the matching process whose turn it is to publish (SIGKILL) while the orders stream in.
    let (leader, epoch) = one_publisher(&matching_ports).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, h) = gw1.send("GET", "/v1/health", None, &Auth::None).await.unwrap();
        if h["last_seq"].as_u64().unwrap_or(0) > 60 {
            break;
        }
        assert!(Instant::now() < deadline, "no load reached the journal: {h}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    cluster.processes.remove(leader);
    let (now, next) = one_publisher(&[matching_ports[1 - leader]]).await;
    assert!(now == 0 && next > epoch, "the standby's turn: {next} after {epoch}");
    for t in tasks {
        t.await.unwrap();
    }

    // The standby projects everything; the gateways see it through the store's cursor (once
    // both have read every order, some acknowledged by the other).
    let last = wait_for("the projections to catch up", 60, async || {
        let (_, one) = gw1.send("GET", "/v1/health", None, &Auth::None).await.unwrap();
        let (_, two) = gw2.send("GET", "/v1/health", None, &Auth::None).await.unwrap();
        let seqs = [&one["last_seq"], &one["projected_seq"], &two["last_seq"], &two["projected_seq"]].map(|v| v.as_u64().unwrap());
        seqs.iter().all(|s| *s == seqs[0]).then_some(seqs[0])
    })
    .await;
    let listed = common::ok(&mut gw1, "GET", "/v1/orders?limit=1000", None, &key).await;
    let mut ids: Vec<String> =
        listed["orders"].as_array().unwrap().iter().map(|o| o["client_order_id"].as_str().unwrap().to_owned()).collect();
    ids.sort();
    let count = ids.len();
    ids.dedup();
    assert_eq!(ids.len(), count, "no order twice");
    assert_eq!(count, TASKS * ORDERS, "every acknowledged order is there");

    // The event stream: every seq after the genesis up to the last, each kept once however
    // often it came.
    let events = tandem_kafka::events::events_config(&tandem_kafka::KafkaConfig::parse(&journal).unwrap());
    let mut feed = tandem_kafka::KafkaFeed::connect(&events, 0).unwrap();
    let mut seen = std::collections::BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.len() < last as usize - 1 {
        let missing: Vec<u64> = (2..=last).filter(|s| !seen.contains(s)).take(10).collect();
        assert!(Instant::now() < deadline, "{} of {} seqs on the event stream; missing {missing:?}", seen.len(), last - 1);
        for r in feed.poll(1024, Duration::from_millis(200)).unwrap() {
            seen.insert(tandem_kafka::events::EventRecord::decode(&r.bytes).unwrap().seq.0);
        }
    }
    // (A gateway may have read a command more since `last` was taken.)
    let newest = *seen.last().unwrap();
    assert!(newest >= last);
    assert_eq!(seen.iter().copied().collect::<Vec<_>>(), (2..=newest).collect::<Vec<_>>(), "no gap");

    // The standby also took over the market-data snapshot in Redis: the gateways' book, as of
    // the same book_seq.
    let book = common::ok(&mut gw1, "GET", "/v1/markets/BTC-USD/book?depth=50", None, &Auth::None).await;
    let redis = redis::Client::open("redis://127.0.0.1:6379").unwrap();
    let mut redis = redis.get_multiplexed_async_connection().await.unwrap();
    let key = tandem::market_data::BookSnapshots::key(&prefix, "BTC-USD");
    let snapshot = wait_for("the market-data snapshot", 30, async || {
        let text: Option<String> = redis::AsyncCommands::get(&mut redis, &key).await.unwrap();
        let snapshot: Value = serde_json::from_str(&text?).unwrap();
        (snapshot["book_seq"] == book["book_seq"]).then_some(snapshot)
    })
    .await;
    assert_eq!(snapshot["bids"], book["bids"], "{snapshot}");
    assert_eq!(snapshot["asks"], book["asks"]);
    assert_eq!(snapshot["bids"][0], json!(["50000.00", "0.20000000"]), "{snapshot}");
}

/// Waits until exactly one of the matching processes on `ports` publishes the event stream;
/// its index and turn.
async fn one_publisher(ports: &[u16]) -> (usize, u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut epochs = Vec::new();
        for p in ports {
            epochs.push(common::metric(*p, "tandem_events_publisher_epoch").await);
        }
        let publishing: Vec<usize> = (0..ports.len()).filter(|i| epochs[*i] > 0).collect();
        if let [one] = publishing[..] {
            return (one, epochs[one]);
        }
        assert!(publishing.len() <= 1, "two publishers at once: {epochs:?}");
        assert!(Instant::now() < deadline, "nobody publishes: {epochs:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
