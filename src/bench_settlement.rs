//! `tandem bench settlement`: how long a settlement window takes from its close to the
//! broadcast of its batch, when one wallet's vault pays with many inputs (default 100) and the
//! wallet has presignatures ready: the whole real path, nothing simulated but the chain (the
//! embedded devnet).
//!
//! Set-up (not timed): a node with custody on a fresh devnet, its deposit service; a wallet
//! (device key, 2-of-2 vault with the provider, one address per input) and its signer
//! (`cosign`, in this process, keeping one presignature per key); a partner account with USD.
//! Each round: every address gets one coin of 0.01 BTC from the devnet's faucet, credited once
//! mined; the signer has a presignature for every key; the wallet sells what its coins hold less
//! 0.01 BTC to the partner, so the next batch must spend every coin.
//!
//! Timed (from the batch's durable record): the window closes (targets read, coins listed,
//! plan, record); `BookSettlement` through the sequencer; each input signed by the provider with
//! the wallet over the relay (policy checks on both sides, one-round signing from the
//! presignatures); the finished transaction stored; broadcast to the devnet (which checks
//! every script with libbitcoinconsensus). Then the round mines the batch and waits for its
//! confirmation before the next.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bitcoin::{Amount, ScriptBuf};
use serde_json::json;
use tandem_custody::PresignatureStore;
use tandem_matching::{Command, SETTLEMENT_POOL};
use tandem_settlement::{Chain, Devnet, DevnetConfig};

use crate::client::{Auth, Client};
use crate::node::{self, NodeOptions};
use crate::settlement::{SettlementConfig, SettlementService};
use crate::wallet::cli::Session;
use crate::wallet::cosign::{CosignOptions, Report};
use crate::wallet::keystore::Passphrase;
use crate::wallet::vault::{new_address, wallet_keys, CosignerChoice};

const COIN: u64 = 1_000_000;
const PRICE: &str = "50000";

#[derive(Clone, Debug)]
pub struct SettlementBenchOptions {
    /// Vault inputs the batch spends (one coin at each of this many addresses).
    pub inputs: usize,
    pub rounds: usize,
}

/// One round's batch and its timings, from the batch's durable record (ms).
#[derive(Debug)]
pub struct RoundReport {
    pub inputs: usize,
    pub outputs: usize,
    pub vbytes: u64,
    pub fee_sat: u64,
    /// Window closed -> booked in the ledger.
    pub close_to_booked_ms: u64,
    /// Window closed -> broadcast.
    pub close_to_broadcast_ms: u64,
}

struct Quiet;

impl Report for Quiet {
    fn session(&self, _: &str) {}
    fn status(&self, _: &str) {}
}

pub async fn run(opts: SettlementBenchOptions) -> anyhow::Result<Vec<RoundReport>> {
    if opts.inputs == 0 || opts.inputs > 1000 {
        bail!("--inputs must be 1 to 1000");
    }
    let dir = tempfile::tempdir()?;
    let token = tandem_gateway::random_hex(16);
    let node = node::start(NodeOptions {
        data_dir: dir.path().join("node"),
        store: Default::default(),
        custody: Some(node::CustodyOptions { master_key: tandem_custody::MasterKey::generate(), prime_pool_target: 0, demo: true, secrets_dir: None }),
        bind: ([127, 0, 0, 1], 0).into(),
        exchange: tandem_matching::ExchangeConfig::default(),
        gateway: tandem_gateway::GatewayConfig {
            operator_token: token.clone(),
            bitcoin_network: bitcoin::Network::Regtest,
            ..Default::default()
        },
        sequencer: tandem_matching::SequencerConfig::default(),
        http_workers: 2,
        redis: None,
        journal: Default::default(),
        project: true,
    })
    .await?;
    let vaults = node.vaults.clone().context("the node has no custody")?;
    let devnet = Devnet::new(DevnetConfig::default())?;
    let chain: Arc<dyn Chain> = devnet.clone();
    let policy = tandem_settlement::deposits::DepositPolicy { confirmations: 1 };
    let deposits =
        crate::deposits::DepositService { interval: Duration::from_millis(100), ..crate::deposits::DepositService::for_node(&node, chain.clone(), policy)? }
            .spawn();

    let url = node.base_url();
    let operator = Auth::Operator(token.clone());
    let mut c = Client::connect(&url).await?;

    // The wallet: enrolled, a 2-of-2 vault, one address per input.
    eprintln!("making the wallet's vault and {} addresses...", opts.inputs);
    let (status, code) = c.send("POST", "/v1/operator/enrolment-codes", Some(&json!({"label": "bench"})), &operator).await?;
    anyhow::ensure!(status == 200, "enrolment code: {status} {code}");
    let wallet_file = dir.path().join("bench.wallet");
    let passphrase_file = dir.path().join("bench.passphrase");
    std::fs::write(&passphrase_file, "bench passphrase")?;
    crate::wallet::cli::create(&wallet_file, &Passphrase::new("bench passphrase".into()), &url, code["code"].as_str(), "bench").await?;
    let mut session = Session::open(&wallet_file, Some(&passphrase_file))?;
    let quiet = |_: &str| {};
    for _ in 0..opts.inputs {
        new_address(&mut session, true, CosignerChoice::None, &quiet).await?;
    }
    let scripts: Vec<ScriptBuf> = wallet_keys(&session)?.iter().map(|k| k.script_pubkey()).collect();
    let seller_auth = session.auth().clone();
    let signer = {
        let mut session = Session::open(&wallet_file, Some(&passphrase_file))?;
        tokio::spawn(async move {
            let opts = CosignOptions { max_fee: Amount::from_sat(1_000_000), sessions: None, presignatures: 1 };
            if let Err(e) = crate::wallet::cosign::run(&mut session, &opts, &Quiet).await {
                eprintln!("the wallet's signer stopped: {e:#}");
            }
        })
    };

    // The buyer: a partner account with USD; the pool with coins for its fee share.
    let (status, buyer) =
        c.send("POST", "/v1/operator/accounts", Some(&json!({"kind": "partner", "label": "buyer"})), &operator).await?;
    anyhow::ensure!(status < 300, "opening the buyer: {status} {buyer}");
    let buyer_auth = Auth::Key {
        key: buyer["api_key"].as_str().context("api_key")?.to_owned(),
        secret: buyer["api_secret"].as_str().context("api_secret")?.to_owned(),
    };
    let (usd, _) = tandem_gateway::dto::asset_by_symbol(&node.engine_config, "USD").map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let buyer_id = tandem_matching::AccountId(buyer["account_id"].as_u64().context("account_id")?);
    // Ten million dollars (in cents): what every round's purchase needs, many times over.
    let credit = Command::CreditDeposit { account: buyer_id, asset: usd, amount: tandem_matching::Amount(1_000_000_000), reference: "bench-usd".into() };
    let applied = node.sequencer.submit(credit).await?;
    if let Some(tandem_matching::Event::Rejected { reason }) = applied.events.first() {
        bail!("crediting the buyer: {reason}");
    }
    devnet.faucet(&vaults.pool.deposit_script(SETTLEMENT_POOL)?, Amount::from_sat(10_000_000))?;
    devnet.mine(1, None)?;

    let config = SettlementConfig {
        window: Duration::ZERO,
        confirmations: 1,
        tick: Duration::from_millis(20),
        signing_deadline: Duration::from_secs(600),
        ..SettlementConfig::default()
    };
    let service = SettlementService::for_node(&node, chain.clone(), config)?;
    let settlement = service.spawn(&node.reconciler);

    let mut reports = Vec::new();
    for round in 1..=opts.rounds {
        let before = btc_total(&mut c, &seller_auth).await?;
        for s in &scripts {
            devnet.faucet(s, Amount::from_sat(COIN))?;
        }
        devnet.mine(1, None)?;
        let funded = before + COIN * opts.inputs as u64;
        wait_for("the deposits credited", 120, async || Ok((btc_total(&mut c, &seller_auth).await? == funded).then_some(()))).await?;
        eprintln!("round {round}: {} coins credited; waiting for the wallet's presignatures...", opts.inputs);
        let keys = wallet_keys(&session)?;
        wait_for("a presignature for every key", 1_800, async || {
            let store = session.presignature_store()?;
            let ready = keys.iter().filter(|k| store.available(&k.public_key).is_ok_and(|a| !a.is_empty())).count();
            Ok((ready == keys.len()).then_some(()))
        })
        .await?;

        // Sell all the new coins hold but one coin's worth: with fees, every one of them (the
        // largest coins) must go into the batch.
        let sell = COIN * (opts.inputs as u64 - 1);
        let quantity = format!("{}.{:08}", sell / 100_000_000, sell % 100_000_000);
        let buy = json!({"market": "BTC-USD", "side": "buy", "type": "limit", "price": PRICE, "quantity": quantity});
        let (s, r) = c.send("POST", "/v1/orders", Some(&buy), &buyer_auth).await?;
        anyhow::ensure!(s == 200, "the buyer's order: {s} {r}");
        let last = node.store.last_batch_id().await?;
        let sell_order = json!({"market": "BTC-USD", "side": "sell", "type": "limit", "price": PRICE, "quantity": quantity});
        let (s, r) = c.send("POST", "/v1/orders", Some(&sell_order), &seller_auth).await?;
        anyhow::ensure!(s == 200 && r["order"]["status"] == "filled", "the wallet's order: {s} {r}");

        // Booking is not timestamped in the store: seen by polling, to within a few ms.
        let mut booked_seen = None;
        let batch = wait_for("the batch broadcast", 600, async || {
            let Some(b) = node.store.batch(last + 1).await? else { return Ok(None) };
            if booked_seen.is_none() && b.status != "planned" {
                booked_seen = Some(node::now_millis());
            }
            let versions = node.store.batch_versions(b.id).await?;
            Ok(versions.first().and_then(|v| v.broadcast_at).map(|at| (b.clone(), at)))
        })
        .await?;
        let (b, broadcast_at) = batch;
        let booked_at = booked_seen.unwrap_or(broadcast_at.0);
        let plan: crate::settlement::record::StoredPlan = serde_json::from_str(&b.plan)?;
        devnet.mine(1, None)?;
        wait_for("the batch confirmed", 120, async || {
            Ok(node.store.batch(b.id).await?.filter(|b| b.status == "confirmed").map(|_| ()))
        })
        .await?;
        let report = RoundReport {
            inputs: plan.inputs.len(),
            outputs: plan.outputs.len(),
            vbytes: b.vbytes,
            fee_sat: b.fee,
            close_to_booked_ms: booked_at.saturating_sub(b.created_at.0),
            close_to_broadcast_ms: broadcast_at.0.saturating_sub(b.created_at.0),
        };
        eprintln!("round {round}: {}", line(&report));
        reports.push(report);
    }
    settlement.abort();
    signer.abort();
    deposits.abort();
    node.shutdown().await?;
    Ok(reports)
}

pub fn line(r: &RoundReport) -> String {
    format!(
        "batch of {} inputs, {} outputs, {} vB, fee {} sat: window close -> booked ~{} ms, -> broadcast {} ms",
        r.inputs, r.outputs, r.vbytes, r.fee_sat, r.close_to_booked_ms, r.close_to_broadcast_ms
    )
}

async fn btc_total(c: &mut Client, auth: &Auth) -> anyhow::Result<u64> {
    let (s, r) = c.send("GET", "/v1/balances", None, auth).await?;
    anyhow::ensure!(s == 200, "balances: {s} {r}");
    let b = r["balances"].as_array().into_iter().flatten().find(|b| b["asset"] == "BTC");
    let sats = |v: &serde_json::Value| crate::wallet::cosign::btc_to_sat(v.as_str().unwrap_or("0"));
    match b {
        Some(b) => Ok(sats(&b["available"])? + sats(&b["locked"])?),
        None => Ok(0),
    }
}

async fn wait_for<T>(what: &str, secs: u64, mut f: impl AsyncFnMut() -> anyhow::Result<Option<T>>) -> anyhow::Result<T> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await? {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
