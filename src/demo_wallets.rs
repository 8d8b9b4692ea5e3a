//! The demo's wallet users: wallets that run inside `tandem demo`, each with its own device key,
//! its own share of its own 2-of-3 vault (with the provider and the demo co-signer) and its own
//! signer (`cosign`) checking every spend against its user's requests.
//!
//! They are ordinary wallet files (`<data>/wallets/<name>.json`, passphrase beside them in
//! `<name>.passphrase`: a demo shortcut, never for real funds), so the `tandem wallet` commands
//! work on them too: `tandem wallet --wallet <data>/wallets/carol.json --passphrase-file
//! <data>/wallets/carol.passphrase balance`.
//!
//! Made once, in the background after the API is up (a vault's aux info takes seconds even with
//! the fixture primes), and funded with a real devnet deposit to the vault's address, which
//! the deposit service credits once it confirms; a restart reopens them.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::client::{Auth, Client};
use crate::wallet::cli::Session;
use crate::wallet::cosign::{CosignOptions, Report};
use crate::wallet::keystore::Passphrase;
use crate::wallet::vault::{new_address, CosignerChoice};

/// The demo's wallet users.
pub const WALLET_USERS: [&str; 2] = ["carol", "dave"];
const BTC_EACH: u64 = 2 * 100_000_000;
const USD_EACH: &str = "100000.00";

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DemoWallet {
    pub name: String,
    pub account_id: u64,
    pub wallet_file: PathBuf,
    pub passphrase_file: PathBuf,
    /// Its vault's first deposit address.
    pub address: String,
}

pub fn wallet_paths(data_dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let dir = data_dir.join("wallets");
    (dir.join(format!("{name}.json")), dir.join(format!("{name}.passphrase")))
}

/// Reports of a demo wallet's signer, to the log.
struct Logged(String);

impl Report for Logged {
    fn session(&self, line: &str) {
        tracing::info!(wallet = %self.0, "{line}");
    }
    fn status(&self, line: &str) {
        tracing::info!(wallet = %self.0, "{line}");
    }
}

/// Makes the wallet (first start: enrol, vault, funds) or reopens it, then runs its signer.
pub async fn run_wallet(node_url: String, token: String, data_dir: PathBuf, name: &'static str, funder: FundBtc) {
    // A step that fails (a dropped connection while the demo is busy starting) is retried: each
    // step picks up what the previous attempt finished.
    let mut attempt = 0u32;
    let made = loop {
        attempt += 1;
        match ready(&node_url, &token, &data_dir, name, &funder).await {
            Ok(made) => break Ok(made),
            Err(e) if attempt < 5 => {
                tracing::warn!(wallet = name, attempt, error = %format!("{e:#}"), "demo wallet not ready yet; retrying");
                tokio::time::sleep(std::time::Duration::from_secs(attempt as u64)).await;
            }
            Err(e) => break Err(e),
        }
    };
    match made {
        Ok((mut session, w)) => {
            tracing::info!(wallet = name, account = w.account_id, address = %w.address, "demo wallet ready");
            let trader = match Session::open(&w.wallet_file, Some(&w.passphrase_file)) {
                Ok(s) => Some(tokio::spawn(trade(s, name))),
                Err(e) => {
                    tracing::warn!(wallet = name, error = %format!("{e:#}"), "demo wallet will not trade");
                    None
                }
            };
            let opts = CosignOptions { max_fee: bitcoin::Amount::from_sat(100_000), sessions: None, presignatures: 2 };
            if let Err(e) = crate::wallet::cosign::run(&mut session, &opts, &Logged(name.into())).await {
                tracing::warn!(wallet = name, error = %format!("{e:#}"), "demo wallet signer stopped");
            }
            if let Some(t) = trader {
                t.abort();
            }
        }
        Err(e) => tracing::warn!(wallet = name, error = %format!("{e:#}"), "demo wallet could not start"),
    }
}

/// Between two trades of a demo wallet.
const TRADE_EVERY: std::time::Duration = std::time::Duration::from_secs(15);

/// Trades a little now and then (a market order against the demo's market maker, buying and
/// selling in turn), so each settlement window has vault flows to net and a batch to sign.
async fn trade(session: Session, name: &str) {
    let mut buy = name.len().is_multiple_of(2);
    loop {
        tokio::time::sleep(TRADE_EVERY).await;
        let side = if buy { "buy" } else { "sell" };
        let quantity = format!("0.00{}", 1 + rand::random::<u8>() % 5);
        let order = json!({"market": "BTC-USD", "side": side, "type": "market", "quantity": quantity});
        match session.call("POST", "/v1/orders", Some(&order)).await {
            Ok(reply) => tracing::info!(wallet = name, side, %quantity, status = %reply["order"]["status"], "demo wallet traded"),
            Err(e) => tracing::debug!(wallet = name, error = %format!("{e:#}"), "demo wallet order refused"),
        }
        buy = !buy;
    }
}

/// Sends BTC to a vault address (the demo's chain faucet): the deposit service credits it once
/// it confirms, like any deposit.
pub type FundBtc = Box<dyn Fn(bitcoin::ScriptBuf) -> anyhow::Result<bitcoin::Txid> + Send + Sync>;

/// The devnet's faucet.
pub fn faucet(devnet: std::sync::Arc<tandem_settlement::Devnet>) -> FundBtc {
    Box::new(move |script| Ok(devnet.faucet(&script, bitcoin::Amount::from_sat(BTC_EACH))?))
}

async fn ready(
    url: &str,
    token: &str,
    data_dir: &Path,
    name: &str,
    funder: &FundBtc,
) -> anyhow::Result<(Session, DemoWallet)> {
    let (file, pass_file) = wallet_paths(data_dir, name);
    let record = data_dir.join("wallets").join(format!("{name}.demo.json"));
    if let Ok(bytes) = std::fs::read(&record) {
        let w: DemoWallet = serde_json::from_slice(&bytes).context("reading the demo wallet record")?;
        return Ok((Session::open(&file, Some(&pass_file))?, w));
    }
    std::fs::create_dir_all(file.parent().unwrap_or(data_dir))?;
    if !file.exists() {
        let passphrase = tandem_gateway::random_hex(16);
        std::fs::write(&pass_file, &passphrase)?;
        crate::wallet::cli::create(&file, &Passphrase::new(passphrase), url, None, name).await?;
    }
    let mut session = Session::open(&file, Some(&pass_file))?;
    let account = session.file.account_id;
    // An earlier attempt may have made the address already.
    let network = crate::wallet::vault::provider_info(&session).await?.network;
    let address = match crate::wallet::vault::wallet_keys(&session)?.first() {
        Some(key) => key.address(network).to_string(),
        None => {
            let quiet = |_: &str| {};
            new_address(&mut session, true, CosignerChoice::ProvidersFirst, &quiet).await?.address
        }
    };
    let vault_script =
        address.parse::<bitcoin::Address<bitcoin::address::NetworkUnchecked>>()?.assume_checked().script_pubkey();
    let txid = funder(vault_script)?;
    tracing::info!(wallet = name, %txid, "demo wallet funded on the devnet");
    let mut c = Client::connect(url).await?;
    let body = json!({"account_id": account, "asset": "USD", "amount": USD_EACH, "reference": format!("demo-wire-{name}")});
    let (status, reply) = c.send("POST", "/v1/operator/deposits", Some(&body), &Auth::Operator(token.into())).await?;
    anyhow::ensure!(status == 200, "funding demo wallet {name} with USD: {status} {reply}");
    let w = DemoWallet { name: name.into(), account_id: account, wallet_file: file, passphrase_file: pass_file, address };
    tandem_custody::fsutil::write_atomic(&record, &serde_json::to_vec_pretty(&w)?)?;
    Ok((session, w))
}
