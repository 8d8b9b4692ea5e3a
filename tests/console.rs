//! The operator console (`/console`) in a headless Chromium: Debian's `chromium` driven by
//! playwright-core (`tests/console/console.spec.mjs`), against `tandem demo` with its wallet
//! users (vaults, signers, the devnet mining, the settlement service). The script logs in (a
//! wrong token refused first); this test then makes a trade that moves coins into carol's
//! vault; the script sees its batch appear and confirm, halts the market and logs out; this test
//! checks over the API that the market is really halted.
//!
//! Needs `CHROMIUM_EXE` and `PLAYWRIGHT_CORE_DIR`: `eval "$(scripts/browser)"` (scripts/test
//! does it).

mod common;

use common::*;
use serde_json::json;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tandem::client::Auth;
use tandem::demo_wallets::DemoWallet;
use tandem::wallet::cli::Session;

const MARKET: &str = "BTC-USD";
/// How long the script waits for the batch to appear, and then to confirm (20 s windows, a
/// block every 5 s in the demo; generous for a machine busy building).
const BATCH_TIMEOUT_SECS: u64 = 240;

fn required_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: the console test drives Debian's chromium with playwright-core (eval \"$(scripts/browser)\" exports CHROMIUM_EXE and PLAYWRIGHT_CORE_DIR; scripts/test does it)")
    })
}

/// Lines a child writes, collected by a thread as they come.
fn collect(stream: impl std::io::Read + Send + 'static, lines: Arc<Mutex<Vec<String>>>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            lines.lock().unwrap().push(line);
        }
    })
}

async fn wallet_ready(dir: &Path, name: &str) -> DemoWallet {
    let record = dir.join("wallets").join(format!("{name}.demo.json"));
    wait_for(&format!("demo wallet {name}"), 180, async || {
        std::fs::read(&record).ok().and_then(|b| serde_json::from_slice(&b).ok())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_logs_in_sees_a_batch_confirm_and_halts_a_market() {
    let chromium = required_env("CHROMIUM_EXE");
    let playwright = required_env("PLAYWRIGHT_CORE_DIR");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let demo = Demo::start_with_wallets(dir, free_port()).await;
    let token = demo.creds.operator.token.clone();
    let mut c = demo.client().await;

    // Carol's vault funded and credited, so she can buy into it.
    let carol = wallet_ready(dir, "carol").await;
    wait_for("carol's vault deposit credited", 120, async || {
        let mut c = demo.client().await;
        (btc_total(&mut c, carol.account_id, &token).await > 0).then_some(())
    })
    .await;

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/console/console.spec.mjs");
    let screenshot = dir.join("console-failure.png");
    let mut child = KillOnDrop(
        Command::new("node")
            .arg(&script)
            .env("BASE_URL", &demo.creds.base_url)
            .env("OPERATOR_TOKEN", &token)
            .env("MARKET", MARKET)
            .env("CHROMIUM_EXE", &chromium)
            .env("PLAYWRIGHT_CORE_DIR", &playwright)
            .env("BATCH_TIMEOUT_SECS", BATCH_TIMEOUT_SECS.to_string())
            .env("SCREENSHOT", &screenshot)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("node runs the console script (apt-get install nodejs)"),
    );
    let output = Arc::new(Mutex::new(Vec::new()));
    let readers = [
        collect(child.0.stdout.take().unwrap(), output.clone()),
        collect(child.0.stderr.take().unwrap(), output.clone()),
    ];
    let said = || output.lock().unwrap().join("\n");
    let exited = |child: &mut KillOnDrop| child.0.try_wait().unwrap();

    // The page is open on a console without this batch: now trade. Alice (whose coins the
    // pool holds) sells, carol buys into her own vault: the next window moves pool coins to it.
    let deadline = Instant::now() + Duration::from_secs(120);
    while !said().contains("step: logged in") {
        if let Some(status) = exited(&mut child) {
            panic!("the console script stopped before logging in ({status}):\n{}", said());
        }
        assert!(Instant::now() < deadline, "the console script did not log in:\n{}", said());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let sell = json!({"market": MARKET, "side": "sell", "type": "limit", "price": "60000.00", "quantity": "0.05"});
    ok(&mut c, "POST", "/v1/orders", Some(&sell), &demo.auth("alice")).await;
    let session = Session::open(&carol.wallet_file, Some(&carol.passphrase_file)).unwrap();
    let buy = json!({"market": MARKET, "side": "buy", "type": "limit", "price": "60000.00", "quantity": "0.01"});
    let bought = session.call("POST", "/v1/orders", Some(&buy)).await.unwrap();
    assert_eq!(bought["order"]["status"], "filled", "{bought}");

    let deadline = Instant::now() + Duration::from_secs(2 * BATCH_TIMEOUT_SECS + 60);
    let status = loop {
        if let Some(status) = exited(&mut child) {
            break status;
        }
        assert!(Instant::now() < deadline, "the console script did not finish:\n{}", said());
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    for r in readers {
        r.join().unwrap();
    }
    println!("console script:\n{}", said());
    assert!(status.success(), "the console script failed ({status}); demo log in {}:\n{}", dir.display(), said());
    let halted = format!("{MARKET} halted");
    for step in ["wrong token refused", "appeared", "confirmed", halted.as_str(), "logged out"] {
        assert!(said().contains(step), "the script never said {step:?}:\n{}", said());
    }

    // The halt the page asked for is the engine's: the market says so and refuses orders.
    let markets = ok(&mut c, "GET", "/v1/markets", None, &Auth::None).await;
    let m = markets["markets"].as_array().unwrap().iter().find(|m| m["symbol"] == MARKET).unwrap().clone();
    assert_eq!(m["halted"], true, "{markets}");
    let (status, refused) = c.send("POST", "/v1/orders", Some(&sell), &demo.auth("alice")).await.unwrap();
    assert_eq!((status, refused["error"]["code"].as_str()), (409, Some("market_halted")), "{refused}");
}
