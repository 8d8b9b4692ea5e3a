//! `tandem bench http`: drives the HTTP API with signed orders over keep-alive connections and
//! reports orders per second and latency percentiles (HDR histogram).
//!
//! Without `--credentials` it starts its own node (journal durable, group commit as configured,
//! or on a Kafka partition with `--journal-url`) in a temporary data dir, so one command
//! measures the whole path. With `--replicas N` (a Kafka journal) it starts N nodes on the one
//! partition, sharing a store (`--store-url`, PostgreSQL), and spreads the connections over them:
//! a cluster of gateways, each a full node with its own engine, API and projector, in one process.
//!
//! With `--urls` it drives a running exchange of one process per service (`scripts/cluster`):
//! it opens its accounts through the operator API, credits them USD by operator deposit and BTC
//! the only way BTC arrives, on chain: a coinbase to each account's pool deposit address
//! (derived from the custody process's pool key), matured on the cluster's regtest bitcoind and
//! credited by its settlement process.

use crate::client::{Auth, Client};
use crate::demo::Credentials;
use crate::node::{self, NodeOptions};
use anyhow::Context;
use hdrhistogram::Histogram;
use rand::{Rng, SeedableRng};
use serde_json::json;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tandem_matching::{AccountId, Amount, AssetId, Command, ExchangeConfig, SequencerConfig};

#[derive(Clone, Debug)]
pub struct BenchOptions {
    pub credentials: Option<PathBuf>,
    pub connections: usize,
    pub duration: Duration,
    pub warmup: Duration,
    pub http_workers: usize,
    /// Give every order a client order id (the engine then remembers one more id per order).
    pub client_order_ids: bool,
    /// The own node's journal (ignored with `credentials`).
    pub journal: node::JournalLocation,
    /// Own nodes on the one (Kafka) journal, connections spread over them.
    pub replicas: usize,
    /// The own nodes' store (default: each its own SQLite).
    pub store: node::StoreLocation,
    /// A running cluster to drive instead of own nodes.
    pub cluster: Option<ClusterTarget>,
}

/// A running exchange of one process per service.
#[derive(Clone, Debug)]
pub struct ClusterTarget {
    /// Its gateways; connections are spread over them.
    pub gateways: Vec<String>,
    pub operator_token: String,
    /// The custody process (for the pool's key).
    pub custody_url: String,
    /// The cluster's regtest bitcoind, with its RPC user and password.
    pub bitcoind: String,
    pub rpc_user: String,
    pub rpc_password: String,
}

#[derive(Debug)]
pub struct BenchReport {
    pub orders: u64,
    pub accepted: u64,
    pub rejected: u64,
    pub errors: u64,
    pub seconds: f64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

impl BenchReport {
    pub fn per_second(&self) -> f64 {
        self.orders as f64 / self.seconds
    }
}

pub async fn run(opts: BenchOptions) -> anyhow::Result<BenchReport> {
    let mut owned_nodes = Vec::new();
    let mut _tmp = Vec::new();
    anyhow::ensure!(
        opts.replicas <= 1 || matches!(opts.journal, node::JournalLocation::Kafka { .. }),
        "--replicas needs a shared journal (--journal-url)"
    );
    let (base_urls, accounts) = match (&opts.credentials, &opts.cluster) {
        (_, Some(target)) => (target.gateways.clone(), fund_cluster_accounts(target, 8).await?),
        (Some(path), None) => {
            let creds: Credentials = serde_json::from_slice(&std::fs::read(path).with_context(|| format!("reading {}", path.display()))?)?;
            let accounts: Vec<Auth> = creds.accounts.iter().map(|a| a.auth()).collect();
            (vec![creds.base_url], accounts)
        }
        (None, None) => {
            let token = tandem_gateway::random_hex(16);
            for _ in 0..opts.replicas.max(1) {
                let dir = tempfile::tempdir()?;
                let node = start_node(dir.path(), &token, &opts).await?;
                owned_nodes.push(node);
                _tmp.push(dir);
            }
            let accounts = open_bench_accounts(&owned_nodes[0], &token, 8).await?;
            (owned_nodes.iter().map(|n| n.base_url()).collect(), accounts)
        }
    };

    let stop = Arc::new(AtomicBool::new(false));
    let measuring = Arc::new(AtomicBool::new(false));
    let counters = Arc::new([AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)]);
    let mut tasks = Vec::new();
    for c in 0..opts.connections {
        let (url, auth) = (base_urls[c % base_urls.len()].clone(), accounts[c % accounts.len()].clone());
        let (stop, measuring, counters) = (stop.clone(), measuring.clone(), counters.clone());
        let client_order_ids = opts.client_order_ids;
        tasks.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds");
            let mut client = Client::connect(&url).await?;
            let mut rng = rand::rngs::StdRng::seed_from_u64(c as u64);
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let mut order = next_order(&mut rng);
                if client_order_ids {
                    order["client_order_id"] = json!(format!("bench-{c}-{n}"));
                }
                let body = serde_json::to_vec(&order)?;
                let started = Instant::now();
                let result = client.send_raw("POST", "/v1/orders", body, &auth).await;
                let micros = started.elapsed().as_micros() as u64;
                if !measuring.load(Ordering::Relaxed) {
                    continue;
                }
                match result {
                    Ok((s, _)) if (200..300).contains(&s) => counters[0].fetch_add(1, Ordering::Relaxed),
                    Ok(_) => counters[1].fetch_add(1, Ordering::Relaxed),
                    Err(_) => {
                        counters[2].fetch_add(1, Ordering::Relaxed);
                        client = Client::connect(&url).await?;
                        continue;
                    }
                };
                hist.record(micros.max(1)).ok();
            }
            anyhow::Ok(hist)
        }));
    }
    tokio::time::sleep(opts.warmup).await;
    measuring.store(true, Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(opts.duration).await;
    measuring.store(false, Ordering::Relaxed);
    let seconds = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    for t in tasks {
        hist.add(t.await??)?;
    }
    for node in owned_nodes {
        node.shutdown().await?;
    }
    let (accepted, rejected, errors) =
        (counters[0].load(Ordering::Relaxed), counters[1].load(Ordering::Relaxed), counters[2].load(Ordering::Relaxed));
    Ok(BenchReport {
        orders: accepted + rejected,
        accepted,
        rejected,
        errors,
        seconds,
        p50_us: hist.value_at_quantile(0.5),
        p99_us: hist.value_at_quantile(0.99),
        p999_us: hist.value_at_quantile(0.999),
        max_us: hist.max(),
    })
}

/// Half passive limit orders that rest, half IOC orders that cross them, around 60,000 USD, so
/// the book stays bounded and trades happen all the time. Prices and sizes vary finely enough
/// that two connections practically never send the same body in the same millisecond (an
/// identical signed request would be refused as a replay).
fn next_order(rng: &mut impl Rng) -> serde_json::Value {
    let buy = rng.gen_bool(0.5);
    let side = if buy { "buy" } else { "sell" };
    let quantity = format!("0.{:08}", rng.gen_range(2..=50) * 1_000); // at least the $1 minimum
    if rng.gen_bool(0.5) {
        let offset = rng.gen_range(1..=5_000); // cents
        let price = if buy { 6_000_000 - offset } else { 6_000_000 + offset };
        json!({"market": "BTC-USD", "side": side, "type": "limit", "price": format!("{}.{:02}", price / 100, price % 100),
               "quantity": quantity, "time_in_force": "GTC"})
    } else {
        let price = if buy { 6_010_000 + rng.gen_range(0..5_000) } else { 5_990_000 - rng.gen_range(0..5_000) };
        json!({"market": "BTC-USD", "side": side, "type": "limit", "price": format!("{}.{:02}", price / 100, price % 100),
               "quantity": quantity, "time_in_force": "IOC"})
    }
}

async fn open_bench_accounts(node: &node::Node, token: &str, n: usize) -> anyhow::Result<Vec<Auth>> {
    let mut client = Client::connect(&node.base_url()).await?;
    let operator = Auth::Operator(token.to_string());
    let mut out = Vec::new();
    for i in 0..n {
        let (status, body) =
            client.send("POST", "/v1/operator/accounts", Some(&json!({"kind": "partner", "label": format!("bench-{i}")})), &operator).await?;
        anyhow::ensure!(status < 300, "opening bench account: {status} {body}");
        let account = AccountId(body["account_id"].as_u64().context("account_id")?);
        for (asset, amount) in [(AssetId(0), 1_000 * 100_000_000u64), (AssetId(1), 10_000_000_000u64)] {
            node.sequencer
                .submit(Command::CreditDeposit { account, asset, amount: Amount(amount), reference: format!("bench-{i}-{}", asset.0) })
                .await?;
        }
        out.push(Auth::Key {
            key: body["api_key"].as_str().context("api_key")?.to_string(),
            secret: body["api_secret"].as_str().context("api_secret")?.to_string(),
        });
    }
    Ok(out)
}

/// `n` partner accounts on a running cluster, each with 1,000,000 USD and 50 BTC (a matured
/// coinbase to its pool deposit address, credited by the cluster's settlement process).
async fn fund_cluster_accounts(target: &ClusterTarget, n: usize) -> anyhow::Result<Vec<Auth>> {
    let operator = Auth::Operator(target.operator_token.clone());
    let mut gateway = Client::connect(&target.gateways[0]).await?;
    let network = bitcoin::Network::Regtest;
    let custodian = crate::custodian::http::HttpCustodian::connect(&target.custody_url, &target.operator_token, network).await?;
    let pool = crate::custodian::Custodian::pool(&custodian).clone();
    let auth = tandem_settlement::BitcoindAuth::UserPass { user: target.rpc_user.clone(), password: target.rpc_password.clone() };
    let chain = tandem_settlement::Bitcoind::connect(tandem_settlement::BitcoindConfig::new(target.bitcoind.clone(), auth, network))
        .await
        .context("connecting to the cluster's bitcoind")?;
    let mut out = Vec::new();
    let mut ids = Vec::new();
    for i in 0..n {
        let label = format!("bench-{}-{i}", tandem_gateway::random_hex(4));
        let (status, body) =
            gateway.send("POST", "/v1/operator/accounts", Some(&json!({"kind": "partner", "label": label})), &operator).await?;
        anyhow::ensure!(status < 300, "opening bench account: {status} {body}");
        let account = body["account_id"].as_u64().context("account_id")?;
        let usd = json!({"account_id": account, "asset": "USD", "amount": "1000000.00", "reference": format!("{label}-usd")});
        let (status, credited) = gateway.send("POST", "/v1/operator/deposits", Some(&usd), &operator).await?;
        anyhow::ensure!(status < 300, "crediting USD: {status} {credited}");
        chain.generate_to(&pool.deposit_script(AccountId(account))?, 1).await?;
        ids.push(account);
        out.push(Auth::Key {
            key: body["api_key"].as_str().context("api_key")?.to_string(),
            secret: body["api_secret"].as_str().context("api_secret")?.to_string(),
        });
    }
    // Coinbases spend after 100 blocks; the deposit service credits them at its confirmations.
    let burn = bitcoin::ScriptBuf::new_p2wsh(&<bitcoin::WScriptHash as bitcoin::hashes::Hash>::from_byte_array([7; 32]));
    chain.generate_to(&burn, 101).await?;
    let deadline = Instant::now() + Duration::from_secs(120);
    for account in ids {
        loop {
            let (_, a) = gateway.send("GET", &format!("/v1/operator/accounts/{account}"), None, &operator).await?;
            let credited = a["balances"].as_array().into_iter().flatten().any(|b| b["asset"] == "BTC" && b["available"] != "0.00000000");
            if credited {
                break;
            }
            anyhow::ensure!(Instant::now() < deadline, "account {account}'s BTC was not credited: is the cluster's settlement process running?");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Ok(out)
}

pub fn print(report: &BenchReport, opts: &BenchOptions) {
    println!(
        "{} connections over {} {}, {:.1} s: {} orders ({} accepted, {} rejected, {} transport errors), {:.0} orders/s; latency p50 {} us, p99 {} us, p99.9 {} us, max {} us",
        opts.connections,
        opts.cluster.as_ref().map_or(opts.replicas.max(1), |c| c.gateways.len()),
        if opts.cluster.is_some() { "gateway(s) of a running cluster" } else { "node(s)" },
        report.seconds,
        report.orders,
        report.accepted,
        report.rejected,
        report.errors,
        report.per_second(),
        report.p50_us,
        report.p99_us,
        report.p999_us,
        report.max_us
    );
}

/// One of the bench's own nodes: no custody, no request budgets (the load comes from 8 accounts
/// on one IP: it measures the exchange, not budgets).
async fn start_node(dir: &std::path::Path, token: &str, opts: &BenchOptions) -> anyhow::Result<node::Node> {
    node::start(NodeOptions {
        data_dir: dir.to_path_buf(),
        store: opts.store.clone(),
        custody: None,
        bind: ([127, 0, 0, 1], 0).into(),
        exchange: ExchangeConfig::default(),
        gateway: tandem_gateway::GatewayConfig {
            operator_token: token.to_owned(),
            limits: tandem_gateway::limits::LimitConfig::UNLIMITED,
            ..Default::default()
        },
        sequencer: SequencerConfig { snapshot_every: 1_000_000, ..SequencerConfig::default() },
        http_workers: opts.http_workers,
        redis: None,
        journal: opts.journal.clone(),
        project: true,
    })
    .await
}
