//! `tandem demo` runs its wallet users in process: carol and dave, each an ordinary wallet file
//! with its own device key and its own share of its own 2-of-3 vault (provider + demo
//! co-signer), funded, with its signer running. A restart reopens them: no second vault.

mod common;

use common::*;
use serde_json::Value;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use tandem::demo_wallets::{wallet_paths, DemoWallet, WALLET_USERS};
use tandem::wallet::cli::Session;

async fn wait_ready(dir: &Path, name: &str) -> DemoWallet {
    let record = dir.join("wallets").join(format!("{name}.demo.json"));
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(bytes) = std::fs::read(&record) {
            return serde_json::from_slice(&bytes).unwrap();
        }
        if Instant::now() >= deadline {
            let logs: String = std::fs::read_dir(dir)
                .unwrap()
                .filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
                .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
                .collect();
            let said: Vec<&str> = logs.lines().filter(|l| l.contains("WARN") || l.contains("ERROR") || l.contains("wallet")).collect();
            panic!("demo wallet {name} not ready:\n{}", said.join("\n"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn balance(dir: &Path, name: &str) -> Value {
    let (file, pass) = wallet_paths(dir, name);
    let out = Command::new(BIN)
        .args(["wallet", "--json", "--wallet"])
        .arg(&file)
        .arg("--passphrase-file")
        .arg(&pass)
        .arg("balance")
        .env_remove("TANDEM_WALLET_PASSPHRASE")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_runs_wallets_with_their_own_vaults_and_keeps_them_across_restarts() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let demo = Demo::start_with_wallets(dir, free_port()).await;
    let mut groups = Vec::new();
    for name in WALLET_USERS {
        let w = wait_ready(dir, name).await;
        // Funded by a devnet deposit to its vault address, credited once the block confirms it.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let b = balance(dir, name);
            let btc = b["balances"].as_array().unwrap().iter().find(|x| x["asset"] == "BTC").cloned();
            if btc.as_ref().is_some_and(|x| x["available"] == "2.00000000") {
                break;
            }
            assert!(Instant::now() < deadline, "{name} was not credited its devnet deposit: {b}");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let (file, pass) = wallet_paths(dir, name);
        let session = Session::open(&file, Some(&pass)).unwrap();
        let vaults = session.call("GET", "/v1/vaults", None).await.unwrap();
        let v = &vaults["vaults"].as_array().unwrap()[0];
        assert_eq!(v["policy"], "2-of-3", "{v}");
        assert_eq!(v["addresses"][0]["address"], w.address.as_str());
        groups.push(v["group_id"].as_str().unwrap().to_owned());
    }
    assert_ne!(groups[0], groups[1], "each user has a vault of its own");

    // A restart reopens the same wallets (nothing made or funded twice). Same port: a wallet
    // file is bound to its provider's URL.
    let port = demo.port;
    drop(demo);
    let _again = Demo::start_with_wallets(dir, port).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    for (name, group) in WALLET_USERS.iter().zip(&groups) {
        let (file, pass) = wallet_paths(dir, name);
        let session = Session::open(&file, Some(&pass)).unwrap();
        let vaults = session.call("GET", "/v1/vaults", None).await.unwrap();
        let list = vaults["vaults"].as_array().unwrap();
        assert_eq!((list.len(), list[0]["group_id"].as_str()), (1, Some(group.as_str())), "{vaults}");
        let b = balance(dir, name);
        let btc = b["balances"].as_array().unwrap().iter().find(|x| x["asset"] == "BTC").unwrap().clone();
        assert_eq!(btc["available"], "2.00000000", "funded once: {b}");
    }
}
