//! A partner's existing Binance code, unchanged: ccxt's `binance` class (from PyPI, not patched;
//! only its URLs and options set) trades on `tandem demo` through the Binance-compatible REST
//! API and WebSocket streams. The client is `tests/ccxt/binance_client.py`; `CCXT_PYTHON` is a
//! Python with ccxt (`scripts/ccxt` installs one; the test command exports it).

mod common;

use std::process::Command;
use std::time::Duration;

use common::{wait_for, Demo};
use tandem::client::Client;

/// Whether `name` holds both BTC and USD (the demo funds BTC through its chain, so it lands a
/// few blocks after start).
async fn funded(demo: &Demo, c: &mut Client, name: &str) -> Option<()> {
    let (status, b) = c.send("GET", "/v1/balances", None, &demo.auth(name)).await.ok()?;
    let held = |asset: &str| {
        b["balances"].as_array().into_iter().flatten().any(|x| x["asset"] == asset && x["available"].as_str().is_some_and(|v| v.parse::<f64>().unwrap_or(0.0) > 0.0))
    };
    (status == 200 && held("BTC") && held("USD")).then_some(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ccxt_trades_on_tandem_as_on_binance() {
    let python = std::env::var("CCXT_PYTHON").expect("CCXT_PYTHON: a Python with ccxt (export CCXT_PYTHON=\"$(scripts/ccxt)\")");
    let tmp = tempfile::tempdir().unwrap();
    let demo = Demo::start(tmp.path()).await;
    let mut c = demo.client().await;
    for name in ["alice", "bob"] {
        wait_for(&format!("{name}'s demo funds"), 60, async || funded(&demo, &mut c, name).await).await;
    }
    let (taker, maker) = (demo.creds.account("alice").unwrap(), demo.creds.account("bob").unwrap());
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ccxt/binance_client.py");
    let run = tokio::task::spawn_blocking({
        let (python, base) = (python.clone(), demo.creds.base_url.clone());
        let (tk, ts, mk, ms) = (taker.api_key.clone(), taker.api_secret.clone(), maker.api_key.clone(), maker.api_secret.clone());
        move || {
            Command::new(python)
                .arg(script)
                .env("TANDEM_URL", base)
                .env("TAKER_KEY", tk)
                .env("TAKER_SECRET", ts)
                .env("MAKER_KEY", mk)
                .env("MAKER_SECRET", ms)
                .output()
        }
    });
    let out = tokio::time::timeout(Duration::from_secs(300), run).await.expect("ccxt finished in time").unwrap().expect("run python");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    println!("{stdout}");
    assert!(out.status.success(), "ccxt failed:\n{stdout}\n{stderr}\n(demo log in {})", demo.dir.display());
    for step in ["load_markets", "cancel_order", "fetch_my_trades", "watch_order_book", "watch_trades", "order book in sync"] {
        assert!(stdout.contains(step), "step {step} did not run:\n{stdout}");
    }
}
