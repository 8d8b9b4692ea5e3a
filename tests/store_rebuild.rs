//! The query store is a projection: dropped with `tandem store rebuild`, it is rebuilt from the
//! journal on the next start, row for row.

mod common;

use common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projections_rebuild_from_the_journal() {
    let tmp = tempfile::tempdir().unwrap();
    let demo = Demo::start(tmp.path()).await;
    let mut client = demo.client().await;
    for i in 0..10 {
        let (side, who) = if i % 2 == 0 { ("sell", "bob") } else { ("buy", "alice") };
        let order = json!({"market": "BTC-USD", "side": side, "type": "limit", "price": format!("{}.00", 60_000 + i % 3), "quantity": "0.01"});
        let (status, body) = client.send("POST", "/v1/orders", Some(&order), &demo.auth(who)).await.unwrap();
        assert_eq!(status, 200, "{body}");
    }
    let before = history(&mut client, &demo).await;
    assert!(before[2]["fills"].as_array().is_some_and(|t| !t.is_empty()), "{}", before[2]);
    demo.kill();

    let out = std::process::Command::new(BIN).args(["store", "rebuild", "--data-dir"]).arg(tmp.path()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let demo = Demo::start(tmp.path()).await;
    let mut client = demo.client().await;
    let after = history(&mut client, &demo).await;
    assert_eq!(before, after);
}

async fn history(client: &mut tandem::client::Client, demo: &Demo) -> Vec<serde_json::Value> {
    let (alice, bob) = (demo.auth("alice"), demo.auth("bob"));
    let mut all = Vec::new();
    for (auth, path) in [(&alice, "/v1/orders?status=all"), (&bob, "/v1/orders?status=all"), (&alice, "/v1/trades"), (&bob, "/v1/ledger")] {
        let (status, body) = client.send("GET", path, None, auth).await.unwrap();
        assert_eq!(status, 200, "{body}");
        all.push(body);
    }
    all
}
