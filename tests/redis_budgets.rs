//! `tandem serve --redis-url` on the real Redis the test command starts (`TANDEM_TEST_REDIS`
//! points elsewhere): an API key's request budget is counted in Redis, under the exchange's key
//! prefix, and a request over it is answered `429 rate_limited` with `Retry-After`, placing
//! nothing. A Redis that cannot be reached at start stops the node with a clear error; one that
//! goes away under a running node leaves reads working and refuses signed changes until it is back.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, KillOnDrop, BIN};
use serde_json::json;
use tandem::client::Auth;

const TOKEN: &str = "redis-budgets-test-token";

fn redis_url() -> String {
    std::env::var("TANDEM_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

fn serve(dir: &Path, redis: &str, prefix: &str, port: u16) -> Command {
    let mut c = Command::new(BIN);
    c.args(["serve", "--operator-token", TOKEN, "--bind", &format!("127.0.0.1:{port}")])
        .args(["--redis-url", redis, "--redis-prefix", prefix, "--limit-per-caller", "3", "--data-dir"])
        .arg(dir)
        .env_remove("TANDEM_MASTER_KEY");
    c
}

/// Waits out the end of a minute, so the test's requests fall in one budget window.
async fn early_in_a_minute() {
    let ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    if ms % 60_000 > 45_000 {
        tokio::time::sleep(Duration::from_millis(60_000 - ms % 60_000 + 50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_keys_budget_is_counted_in_redis() {
    let tmp = tempfile::tempdir().unwrap();
    let prefix = format!("tandem-test-{}-{:08x}:", std::process::id(), rand::random::<u32>());
    let port = free_port();
    let log = std::fs::File::create(tmp.path().join("serve.log")).unwrap();
    let _node = KillOnDrop(serve(tmp.path(), &redis_url(), &prefix, port).stdout(Stdio::null()).stderr(log).spawn().unwrap());
    let mut c = common::connect_when_healthy(port, tmp.path()).await;

    let op = Auth::Operator(TOKEN.into());
    let (s, a) = c.send("POST", "/v1/operator/accounts", Some(&json!({"kind": "partner", "label": "p"})), &op).await.unwrap();
    assert_eq!(s, 200, "{a}");
    let api_key = a["api_key"].as_str().unwrap().to_owned();
    let key = Auth::Key { key: api_key.clone(), secret: a["api_secret"].as_str().unwrap().into() };
    let usd = json!({"account_id": a["account_id"], "asset": "USD", "amount": "1000.00", "reference": "wire-1"});
    assert_eq!(c.send("POST", "/v1/operator/deposits", Some(&usd), &op).await.unwrap().0, 200);

    early_in_a_minute().await;
    for _ in 0..3 {
        let (s, v) = c.send("GET", "/v1/balances", None, &key).await.unwrap();
        assert_eq!(s, 200, "{v}");
    }
    let bid = json!({"market": "BTC-USD", "side": "buy", "type": "limit", "price": "100", "quantity": "0.1"});
    let (s, v) = c.send("POST", "/v1/orders", Some(&bid), &key).await.unwrap();
    assert_eq!((s, v["error"]["code"].as_str()), (429, Some("rate_limited")), "{v}");
    let (s, book) = c.send("GET", "/v1/markets/btc-usd/book", None, &Auth::None).await.unwrap();
    assert_eq!((s, &book["bids"]), (200, &json!([])), "nothing was placed: {book}");

    // The count is Redis's, under this exchange's prefix.
    let mut redis = redis::Client::open(redis_url()).unwrap().get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> =
        redis::cmd("KEYS").arg(format!("{prefix}limit:caller:{api_key}:*")).query_async(&mut redis).await.unwrap();
    assert_eq!(keys.len(), 1, "{keys:?}");
    let used: u64 = redis::cmd("GET").arg(&keys[0]).query_async(&mut redis).await.unwrap();
    assert_eq!(used, 4, "three answered, one refused");
    let ttl: i64 = redis::cmd("PTTL").arg(&keys[0]).query_async(&mut redis).await.unwrap();
    assert!(ttl > 0 && ttl <= 120_000, "a window's count expires (ttl {ttl} ms)");
}

#[test]
fn a_redis_that_cannot_be_reached_stops_the_start() {
    let tmp = tempfile::tempdir().unwrap();
    let dead = format!("redis://127.0.0.1:{}", free_port());
    let out = serve(tmp.path(), &dead, "t:", free_port()).output().unwrap();
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("in Redis") && said.contains("127.0.0.1"), "{said}");
}

/// Redis stopped under a running node, then started again (a redis-server of the test's own):
/// reads go on (budgets counted in the process meanwhile), signed changes are refused with 503
/// and change nothing (the replay guard and the idempotency records live there), and once Redis
/// is back everything works again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_redis_is_down_reads_go_on_and_changes_are_refused_not_doubled() {
    let redis_port = free_port();
    let redis_server = || {
        Command::new("redis-server")
            .args(["--port", &redis_port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server (Debian's redis-server package) on PATH")
    };
    let mut redis = KillOnDrop(redis_server());
    let wait_redis = || {
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", redis_port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    wait_redis();
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let log = std::fs::File::create(tmp.path().join("serve.log")).unwrap();
    let redis_url = format!("redis://127.0.0.1:{redis_port}");
    let _node = KillOnDrop(
        Command::new(BIN)
            .args(["serve", "--operator-token", TOKEN, "--bind", &format!("127.0.0.1:{port}")])
            .args(["--redis-url", &redis_url, "--redis-prefix", "t:", "--data-dir"])
            .arg(tmp.path())
            .env_remove("TANDEM_MASTER_KEY")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let mut c = common::connect_when_healthy(port, tmp.path()).await;
    let op = Auth::Operator(TOKEN.into());
    let (_, a) = c.send("POST", "/v1/operator/accounts", Some(&json!({"kind": "partner", "label": "p"})), &op).await.unwrap();
    let key = Auth::Key { key: a["api_key"].as_str().unwrap().into(), secret: a["api_secret"].as_str().unwrap().into() };
    let usd = json!({"account_id": a["account_id"], "asset": "USD", "amount": "1000.00", "reference": "wire-1"});
    assert_eq!(c.send("POST", "/v1/operator/deposits", Some(&usd), &op).await.unwrap().0, 200);
    let bid = |n: u32| json!({"market": "BTC-USD", "side": "buy", "type": "limit", "price": "100", "quantity": "0.1",
                              "client_order_id": format!("b-{n}")});
    let (s, v) = c.send("POST", "/v1/orders", Some(&bid(1)), &key).await.unwrap();
    assert_eq!(s, 200, "{v}");

    drop(redis);
    let (s, v) = c.send("GET", "/v1/markets", None, &Auth::None).await.unwrap();
    assert_eq!(s, 200, "public reads go on: {v}");
    let (s, before) = c.send("GET", "/v1/balances", None, &key).await.unwrap();
    assert_eq!(s, 200, "signed reads go on: {before}");
    let (s, v) = c.send("POST", "/v1/orders", Some(&bid(2)), &key).await.unwrap();
    assert_eq!((s, v["error"]["code"].as_str()), (503, Some("unavailable")), "{v}");
    let (_, after) = c.send("GET", "/v1/balances", None, &key).await.unwrap();
    assert_eq!(after, before, "the refused order changed nothing");
    let (_, open) = c.send("GET", "/v1/orders", None, &key).await.unwrap();
    assert_eq!(open["orders"].as_array().unwrap().len(), 1, "{open}");

    redis = KillOnDrop(redis_server());
    wait_redis();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (s, v) = c.send("POST", "/v1/orders", Some(&bid(2)), &key).await.unwrap();
        if s == 200 {
            break;
        }
        assert_eq!(s, 503, "{v}");
        assert!(Instant::now() < deadline, "no order after Redis came back: {v}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (_, open) = c.send("GET", "/v1/orders", None, &key).await.unwrap();
    assert_eq!(open["orders"].as_array().unwrap().len(), 2, "{open}");
    drop(redis);
}
