//! Two `tandem serve` replicas on one Kafka partition (a real Tansu broker the test starts):
//! each takes orders through its own API, and both hold the same exchange: a sell placed on
//! one crosses a buy placed on the other, both books and balances agree, and a replica
//! restarted from its snapshot reads on to the same state.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{connect_when_healthy as connect, free_port, ok, KillOnDrop, BIN};
use serde_json::{json, Value};
use tandem::client::{Auth, Client};
use tandem_kafka::testing::Broker;

const TOKEN: &str = "kafka-journal-test-token";

/// BTC-USD and a fiat pair, EUR-USD, whose both sides an operator can credit.
fn markets(dir: &Path) -> std::path::PathBuf {
    use rust_decimal::Decimal;
    use tandem_matching::config::{AssetConfig, MarketConfig};
    let mut config = tandem_matching::ExchangeConfig::default();
    config.assets.push(AssetConfig {
        symbol: "EUR".into(),
        decimals: 2,
        max_supply: Decimal::from(1_000_000_000),
    });
    config.markets.push(MarketConfig {
        symbol: "EUR-USD".into(),
        base: "EUR".into(),
        quote: "USD".into(),
        tick_size: Decimal::new(1, 2),
        lot_size: Decimal::new(1, 2),
        min_notional: Decimal::from(1),
        maker_fee_bps: 0,
        taker_fee_bps: 0,
    });
    let path = dir.join("markets.json");
    std::fs::write(&path, serde_json::to_vec(&config).unwrap()).unwrap();
    path
}

fn serve(dir: &Path, journal: &str, port: u16, extra: &[&str]) -> KillOnDrop {
    let log = std::fs::File::create(dir.join(format!("serve-{port}.log"))).unwrap();
    let child = Command::new(BIN)
        .arg("serve")
        .args(extra)
        .args([
            "--journal-url",
            journal,
            "--operator-token",
            TOKEN,
            "--snapshot-every",
            "5",
            "--markets",
        ])
        .arg(markets(dir))
        .args(["--bind", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(dir)
        .env_remove("TANDEM_MASTER_KEY")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    KillOnDrop(child)
}



/// A partner account holding 1000.00 of `asset`, opened through `c`'s node.
async fn trader(c: &mut Client, label: &str, asset: &str) -> (u64, Auth) {
    let op = Auth::Operator(TOKEN.into());
    let a = ok(
        c,
        "POST",
        "/v1/operator/accounts",
        Some(&json!({"kind": "partner", "label": label})),
        &op,
    )
    .await;
    let id = a["account_id"].as_u64().unwrap();
    let funds = json!({"account_id": id, "asset": asset, "amount": "1000.00", "reference": format!("wire-{label}")});
    ok(c, "POST", "/v1/operator/deposits", Some(&funds), &op).await;
    (
        id,
        Auth::Key {
            key: a["api_key"].as_str().unwrap().into(),
            secret: a["api_secret"].as_str().unwrap().into(),
        },
    )
}

async fn account(c: &mut Client, id: u64) -> Value {
    ok(
        c,
        "GET",
        &format!("/v1/operator/accounts/{id}"),
        None,
        &Auth::Operator(TOKEN.into()),
    )
    .await
}

/// Waits until both replicas answer `path` alike (a book's `book_seq` included: it is the
/// engine's, the same on every replica).
async fn agree(a: &mut Client, b: &mut Client, path: &str) -> Value {
    let op = Auth::Operator(TOKEN.into());
    let deadline = Instant::now() + Duration::from_secs(20);
    let read = async |c: &mut Client| ok(c, "GET", path, None, &op).await;
    loop {
        let (x, y) = (read(a).await, read(b).await);
        if x == y {
            return x;
        }
        assert!(Instant::now() < deadline, "{path}: {x} vs {y}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_on_one_partition_are_one_exchange() {
    let broker = Broker::start();
    let journal = format!("kafka://{}/tandem.commands", broker.addr);
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (port_a, port_b) = (free_port(), free_port());
    let node_a = serve(dir_a.path(), &journal, port_a, &["--publish-events"]);
    let mut a = connect(port_a, dir_a.path()).await;
    let _node_b = serve(dir_b.path(), &journal, port_b, &[]);
    let mut b = connect(port_b, dir_b.path()).await;

    let (seller, seller_key) = trader(&mut a, "seller", "EUR").await;
    let (buyer, buyer_key) = trader(&mut b, "buyer", "USD").await;
    assert_ne!(seller, buyer, "accounts are numbered by the one partition");

    // A bid placed on B rests on both; an ask placed on A crosses it.
    let bid = json!({"market": "EUR-USD", "side": "buy", "type": "limit", "price": "1.10", "quantity": "100"});
    ok(&mut b, "POST", "/v1/orders", Some(&bid), &buyer_key).await;
    let book = agree(&mut a, &mut b, "/v1/markets/eur-usd/book").await;
    assert_eq!((&book["bids"], &book["book_seq"]), (&json!([["1.10", "100.00"]]), &json!(1)), "{book}");
    let ask = json!({"market": "EUR-USD", "side": "sell", "type": "limit", "price": "1.10", "quantity": "100"});
    let sold = ok(&mut a, "POST", "/v1/orders", Some(&ask), &seller_key).await;
    assert_eq!(sold["order"]["status"], "filled", "{sold}");
    let book = agree(&mut a, &mut b, "/v1/markets/eur-usd/book").await;
    assert_eq!(
        (&book["bids"], &book["asks"]),
        (&json!([]), &json!([])),
        "{book}"
    );
    let buyer_now = agree(&mut a, &mut b, &format!("/v1/operator/accounts/{buyer}")).await;
    assert!(
        buyer_now.to_string().contains("\"100.00\""),
        "the buyer holds the 100 EUR on both: {buyer_now}"
    );
    let seller_on_a = agree(&mut a, &mut b, &format!("/v1/operator/accounts/{seller}")).await;
    agree(&mut a, &mut b, &format!("/v1/operator/accounts/{buyer}")).await;

    // Replica A restarts from its snapshot and reads on: the same accounts, and it takes orders.
    drop(node_a);
    let _node_a = serve(dir_a.path(), &journal, port_a, &["--publish-events"]);
    let mut a = connect(port_a, dir_a.path()).await;
    assert_eq!(account(&mut a, seller).await, seller_on_a);
    let more = json!({"market": "EUR-USD", "side": "buy", "type": "limit", "price": "1.05", "quantity": "50"});
    ok(&mut a, "POST", "/v1/orders", Some(&more), &seller_key).await;
    let book = agree(&mut a, &mut b, "/v1/markets/eur-usd/book").await;
    assert_eq!(book["bids"], json!([["1.05", "50.00"]]), "{book}");
    assert!(
        std::fs::read_dir(dir_a.path().join("snapshots-shared"))
            .unwrap()
            .count()
            > 0,
        "replica A snapshots"
    );

    // A publishes the events of every command, B's too, once per seq across its restart.
    let (_, health) = a.send("GET", "/v1/health", None, &Auth::None).await.unwrap();
    let last = health["last_seq"].as_u64().unwrap();
    let events = tandem_kafka::events::events_config(&tandem_kafka::KafkaConfig::new(&broker.addr, "tandem.commands"));
    let mut feed = tandem_kafka::KafkaFeed::connect(&events, 0).unwrap();
    let mut seqs = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while seqs.last() != Some(&last) {
        assert!(Instant::now() < deadline, "events up to {last}: {seqs:?}");
        for r in tandem_matching::SharedFeed::poll(&mut feed, 256, Duration::from_millis(200)).unwrap() {
            seqs.push(tandem_kafka::events::EventRecord::decode(&r.bytes).unwrap().seq.0);
        }
    }
    assert_eq!(seqs, (2..=last).collect::<Vec<_>>(), "every seq once, in order");
}

#[test]
fn settlement_on_a_shared_journal_needs_a_shared_postgresql_store() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--journal-url", "kafka://127.0.0.1:1/t", "--bitcoind", "http://127.0.0.1:1"])
        .args(["--operator-token", TOKEN, "--network", "regtest", "--data-dir"])
        .arg(dir.path())
        .env_remove("TANDEM_MASTER_KEY")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("needs a PostgreSQL --store-url"), "{said}");
}

/// A replica killed under load: clients that lose it go on at the other replica, retrying what
/// had no answer with the same client order id. Every order acknowledged before the kill is on
/// the other replica, and no order is there twice. The replicas share one PostgreSQL store, so
/// an API key made through one is known to both, and one Redis, so a signed request captured at
/// one is refused at the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_under_load_loses_no_acknowledged_order_and_doubles_none() {
    let broker = Broker::start();
    let journal = format!("kafka://{}/tandem.commands", broker.addr);
    let store = common::postgres_store_url();
    let redis = std::env::var("TANDEM_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let prefix = format!("tandem-test:{}:{}:", std::process::id(), rand::random::<u32>());
    let shared = ["--store-url", store.as_str(), "--migrate", "--redis-url", redis.as_str(), "--redis-prefix", prefix.as_str()];
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (port_a, port_b) = (free_port(), free_port());
    let node_a = serve(dir_a.path(), &journal, port_a, &shared);
    let mut a = connect(port_a, dir_a.path()).await;
    let _node_b = serve(dir_b.path(), &journal, port_b, &shared);
    let mut b = connect(port_b, dir_b.path()).await;
    let (_, key) = trader(&mut a, "bidder", "USD").await;

    // A signed order sent to A, then its very bytes to B: refused there.
    let Auth::Key { key: api_key, secret } = &key else { unreachable!() };
    let captured = json!({"market": "EUR-USD", "side": "buy", "type": "limit", "price": "1.00", "quantity": "1.00",
                          "client_order_id": "captured"})
    .to_string();
    let ts = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    let signature = tandem_gateway::sign(secret, ts, "POST", "/v1/orders", captured.as_bytes());
    let signed = [("x-tandem-key", api_key.clone()), ("x-tandem-timestamp", ts.to_string()), ("x-tandem-signature", signature)];
    assert_eq!(raw_post(port_a, "/v1/orders", &signed, &captured).await, 200);
    assert_eq!(raw_post(port_b, "/v1/orders", &signed, &captured).await, 401, "captured at A, replayed at B");

    const TASKS: usize = 4;
    const ORDERS: usize = 60;
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let (key, dir_a, dir_b) = (key.clone(), dir_a.path().to_owned(), dir_b.path().to_owned());
        tasks.push(tokio::spawn(async move {
            let mut client = connect(port_a, &dir_a).await;
            let mut on_b = false;
            let mut acked_on_a = Vec::new();
            for n in 0..ORDERS {
                let id = format!("t{t}-{n}");
                let order = json!({"market": "EUR-USD", "side": "buy", "type": "limit", "price": "1.00",
                                   "quantity": "1.00", "client_order_id": id});
                loop {
                    match client.send("POST", "/v1/orders", Some(&order), &key).await {
                        Ok((200, _)) => {
                            if !on_b {
                                acked_on_a.push(id.clone());
                            }
                            break;
                        }
                        // The try that got no answer had landed.
                        Ok((409, v)) if v["error"]["code"] == "duplicate_client_order_id" => break,
                        Ok((503, _)) => tokio::time::sleep(Duration::from_millis(20)).await,
                        Ok((s, v)) => panic!("order {id}: {s} {v}"),
                        Err(_) => {
                            // The replica is gone: the same order, at the other one.
                            on_b = true;
                            client = connect(port_b, &dir_b).await;
                        }
                    }
                }
            }
            acked_on_a
        }));
    }
    // Kill A (SIGKILL) while the orders stream in.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, h) = b.send("GET", "/v1/health", None, &Auth::None).await.unwrap();
        if h["last_seq"].as_u64().unwrap_or(0) > 60 {
            break;
        }
        assert!(Instant::now() < deadline, "no load reached the journal: {h}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(node_a);
    let mut acked_on_a = Vec::new();
    for t in tasks {
        acked_on_a.extend(t.await.unwrap());
    }
    assert!(!acked_on_a.is_empty() && acked_on_a.len() < TASKS * ORDERS, "A was killed mid-load: {} acked", acked_on_a.len());

    let (s, v) = b.send("GET", "/v1/orders?limit=1000", None, &key).await.unwrap();
    assert_eq!(s, 200, "{v}");
    let mut on_b: Vec<String> =
        v["orders"].as_array().unwrap().iter().map(|o| o["client_order_id"].as_str().unwrap().to_owned()).collect();
    on_b.sort();
    let before = on_b.len();
    on_b.dedup();
    assert_eq!(on_b.len(), before, "an order placed twice");
    assert_eq!(on_b.len(), TASKS * ORDERS + 1, "one order per client order id");
    for id in &acked_on_a {
        assert!(on_b.binary_search(id).is_ok(), "order {id}, acknowledged by A, is not on B");
    }
    drop(a);
}

/// The status of a POST with exactly these headers and body.
async fn raw_post(port: u16, path: &str, headers: &[(&str, String)], body: &str) -> u16 {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let mut request = format!("POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n", body.len());
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    s.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).await.unwrap();
    answer.split(' ').nth(1).and_then(|code| code.parse().ok()).unwrap_or_else(|| panic!("no status in {answer:?}"))
}
