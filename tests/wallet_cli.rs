//! `tandem wallet` end to end: the real binary enrols a wallet against `tandem demo` (open
//! enrolment), the operator funds it, and the wallet trades with its device key.

mod common;

use common::*;
use serde_json::{json, Value};
use std::path::Path;
use std::process::{Command, Output};

const PASSPHRASE: &str = "correct horse battery staple";

fn wallet(file: &Path, passphrase: &str, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("wallet")
        .args(args)
        .arg("--wallet")
        .arg(file)
        .env("TANDEM_WALLET_PASSPHRASE", passphrase)
        .env_remove("TANDEM_WALLET")
        .output()
        .expect("run tandem wallet")
}

#[track_caller]
fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "tandem wallet failed: {}\nstdout: {}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

#[track_caller]
fn json_of(out: &Output) -> Value {
    let text = ok(out);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

#[track_caller]
fn failed(out: &Output) -> String {
    assert!(!out.status.success(), "expected a failure: {}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn usd(balances: &Value) -> Value {
    balances["balances"].as_array().unwrap().iter().find(|b| b["asset"] == "USD").unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wallet_enrols_and_trades_against_the_demo() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir(tmp.path().join("demo")).unwrap();
    let demo = Demo::start(&tmp.path().join("demo")).await;
    let file = tmp.path().join("home").join(".tandem").join("wallet.json");
    let url = demo.creds.base_url.clone();

    // Init: enrols (no code needed: the demo has open enrolment) and writes the wallet.
    let init = json_of(&wallet(&file, PASSPHRASE, &["init", "--provider", &url, "--label", "e2e", "--json"]));
    let account = init["account_id"].as_u64().unwrap();
    assert_eq!(init["label"], "e2e");
    assert_eq!(init["device_pubkey"].as_str().unwrap().len(), 64);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
    }
    let saved: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!((saved["account_id"].as_u64(), saved["provider_url"].as_str()), (Some(account), Some(url.as_str())));
    assert_eq!(saved["kdf"]["alg"], "argon2id");
    assert_eq!(saved["secrets"][0]["kind"], "device_key");
    let before = std::fs::read(&file).unwrap();
    let again = failed(&wallet(&file, PASSPHRASE, &["init", "--provider", &url]));
    assert!(again.contains("already exists"), "{again}");
    assert_eq!(std::fs::read(&file).unwrap(), before, "init never overwrites a wallet");

    // The operator funds the new account.
    let mut client = demo.client().await;
    let deposit = json!({"account_id": account, "asset": "USD", "amount": "10000.00", "reference": "wire-e2e-1"});
    let (status, body) = client.send("POST", "/v1/operator/deposits", Some(&deposit), &demo.operator()).await.unwrap();
    assert_eq!(status, 200, "{body}");

    // A resting buy (the demo runs without the market maker: nothing to trade against).
    let order = ["order", "--market", "BTC-USD", "--side", "buy", "--price", "60000", "--quantity", "0.01"];
    let placed = json_of(&wallet(&file, PASSPHRASE, &[&order[..], &["--client-order-id", "e2e-1", "--json"]].concat()));
    let id = placed["order"]["order_id"].as_u64().unwrap();
    assert_eq!(placed["order"]["status"], "new");
    assert_eq!(placed["order"]["client_order_id"], "e2e-1");
    // A retry with the same client order id places nothing and says which order has it.
    let dup = failed(&wallet(&file, PASSPHRASE, &[&order[..], &["--client-order-id", "e2e-1"]].concat()));
    assert!(dup.contains("duplicate_client_order_id") && dup.contains(&format!("order {id}")), "{dup}");
    let poor = failed(&wallet(
        &file,
        PASSPHRASE,
        &["order", "--market", "BTC-USD", "--side", "buy", "--price", "60000", "--quantity", "1"],
    ));
    assert!(poor.contains("not enough available balance") && poor.contains("insufficient_balance"), "{poor}");

    let orders = ok(&wallet(&file, PASSPHRASE, &["orders"]));
    let row =
        orders.lines().find(|l| l.trim_start().starts_with(&id.to_string())).unwrap_or_else(|| panic!("{orders}"));
    assert!(row.contains("BTC-USD") && row.contains("buy") && row.contains("60000.00") && row.contains("new"), "{row}");
    let balance = json_of(&wallet(&file, PASSPHRASE, &["balance", "--json"]));
    assert_eq!(usd(&balance), json!({"asset": "USD", "available": "9400.00", "locked": "600.00", "total": "10000.00"}));
    let text = ok(&wallet(&file, PASSPHRASE, &["balance"]));
    assert!(text.lines().any(|l| l.starts_with("USD") && l.contains("9400.00") && l.contains("600.00")), "{text}");

    let canceled = ok(&wallet(&file, PASSPHRASE, &["cancel", &id.to_string()]));
    assert!(canceled.starts_with(&format!("Order {id} canceled: buy 0.01000000 BTC-USD")), "{canceled}");
    let gone = failed(&wallet(&file, PASSPHRASE, &["cancel", &id.to_string()]));
    assert!(gone.contains("unknown_order"), "{gone}");
    assert_eq!(ok(&wallet(&file, PASSPHRASE, &["orders"])).trim(), "No open orders.");
    let all = ok(&wallet(&file, PASSPHRASE, &["orders", "--all"]));
    assert!(all.contains("canceled"), "{all}");
    let balance = json_of(&wallet(&file, PASSPHRASE, &["balance", "--json"]));
    assert_eq!(usd(&balance)["available"], "10000.00");

    // A fiat withdrawal through the existing endpoint.
    let w = ok(&wallet(&file, PASSPHRASE, &["withdraw", "--asset", "USD", "--amount", "25", "--to", "bank-e2e"]));
    assert!(w.contains("25.00 USD to bank-e2e, pending"), "{w}");

    // The operator sees what the wallet did, on the wallet's account.
    let (status, body) =
        client.send("GET", &format!("/v1/operator/accounts/{account}"), None, &demo.operator()).await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["kind"], "user");
    assert_eq!((usd(&body)["available"].clone(), usd(&body)["locked"].clone()), (json!("9975.00"), json!("25.00")));

    // A wrong passphrase opens nothing and changes nothing.
    let wrong = failed(&wallet(&file, "not the passphrase", &["balance"]));
    assert!(wrong.contains("wrong passphrase"), "{wrong}");
    assert_eq!(std::fs::read(&file).unwrap(), before);
    // No wallet there: a clear pointer to init.
    let none = failed(&wallet(&tmp.path().join("nope.json"), PASSPHRASE, &["balance"]));
    assert!(none.contains("tandem wallet init"), "{none}");
}
