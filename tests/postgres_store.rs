//! `tandem serve` on a real PostgreSQL (the test command starts it; `TANDEM_TEST_POSTGRES` points
//! elsewhere): a store whose tables are older than the binary is refused until `tandem migrate`;
//! then orders, fills and balances are projected into PostgreSQL and read back through the API,
//! also after a restart, and `tandem store rebuild` refills them from the journal.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};

use common::{free_port, ok, BIN};
use serde_json::json;
use tandem::client::{Auth, Client};

const TOKEN: &str = "postgres-store-test-token";

fn postgres_url() -> String {
    std::env::var("TANDEM_TEST_POSTGRES").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A schema of this test's own.
fn store_url() -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    format!("{}#tandem_test_{now}_{:08x}", postgres_url(), rand::random::<u32>())
}

struct Served(Child);

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve(dir: &Path, store: &str, port: u16) -> Command {
    let mut c = Command::new(BIN);
    c.args(["serve", "--store-url", store, "--operator-token", TOKEN, "--bind", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(dir)
        .env_remove("TANDEM_MASTER_KEY");
    c
}

async fn start(dir: &Path, store: &str, port: u16) -> (Served, Client) {
    let log = std::fs::File::create(dir.join(format!("serve-{port}.log"))).unwrap();
    let child = serve(dir, store, port).stdout(Stdio::null()).stderr(log).spawn().unwrap();
    let served = Served(child);
    (served, common::connect_when_healthy(port, dir).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_projects_into_postgres_and_refuses_an_unmigrated_store() {
    let tmp = tempfile::tempdir().unwrap();
    let store = store_url();

    // Tables older than the binary (here: none) are refused, with what to do.
    let refused = serve(tmp.path(), &store, free_port()).output().unwrap();
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("tandem migrate"), "{said}");

    let migrated = Command::new(BIN).args(["migrate", "--store-url", &store]).output().unwrap();
    assert!(migrated.status.success(), "{}", String::from_utf8_lossy(&migrated.stderr));
    assert!(String::from_utf8_lossy(&migrated.stdout).contains("Postgres"));

    let port = free_port();
    let (node, mut c) = start(tmp.path(), &store, port).await;
    let op = Auth::Operator(TOKEN.into());
    let mut keys = Vec::new();
    for label in ["seller", "buyer"] {
        let a = ok(&mut c, "POST", "/v1/operator/accounts", Some(&json!({"kind": "partner", "label": label})), &op).await;
        let id = a["account_id"].as_u64().unwrap();
        let usd = json!({"account_id": id, "asset": "USD", "amount": "100000.00", "reference": format!("wire-{label}")});
        ok(&mut c, "POST", "/v1/operator/deposits", Some(&usd), &op).await;
        keys.push(Auth::Key { key: a["api_key"].as_str().unwrap().into(), secret: a["api_secret"].as_str().unwrap().into() });
    }
    let bid = json!({"market": "BTC-USD", "side": "buy", "type": "limit", "price": "50000", "quantity": "0.5", "client_order_id": "pg-1"});
    let placed = ok(&mut c, "POST", "/v1/orders", Some(&bid), &keys[1]).await;
    let order = placed["order"]["order_id"].as_u64().unwrap();

    // History reads come from the projections, in PostgreSQL.
    let orders = ok(&mut c, "GET", "/v1/orders?all=true", None, &keys[1]).await;
    assert_eq!(orders["orders"][0]["order_id"], order, "{orders}");
    assert_eq!(orders["orders"][0]["client_order_id"], "pg-1", "{orders}");
    let ledger = ok(&mut c, "GET", "/v1/ledger", None, &keys[1]).await;
    assert!(ledger["entries"].as_array().unwrap().len() >= 2, "{ledger}");

    // A restart reads the same store (and the journal, which agrees with it).
    drop(node);
    let (node, mut c) = start(tmp.path(), &store, port).await;
    let again = ok(&mut c, "GET", "/v1/orders?all=true", None, &keys[1]).await;
    assert_eq!(again["orders"], orders["orders"], "the same history after a restart");

    // Rebuild: the projections dropped, then refilled from the journal at the next start.
    drop(node);
    let rebuilt = Command::new(BIN).args(["store", "rebuild", "--store-url", &store, "--data-dir"]).arg(tmp.path()).output().unwrap();
    assert!(rebuilt.status.success(), "{}", String::from_utf8_lossy(&rebuilt.stderr));
    let (_node, mut c) = start(tmp.path(), &store, port).await;
    let replayed = ok(&mut c, "GET", "/v1/orders?all=true", None, &keys[1]).await;
    assert_eq!(replayed["orders"], orders["orders"], "the same history after a rebuild");
}
