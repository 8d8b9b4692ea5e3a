//! `tandem demo`: the whole exchange in one process with embedded defaults, demo accounts with
//! money, a credentials file, and (optionally) a small market maker that keeps the book alive.
//!
//! Restarting on the same data dir resumes the same exchange: the credentials file is read back
//! and nothing is opened or funded twice.

use crate::client::{Auth, Client};
use crate::node::{self, Node, NodeOptions};
use anyhow::{bail, Context};
use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tandem_gateway::GatewayConfig;
use tandem_matching::{AccountId, ExchangeConfig, SequencerConfig};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Credentials {
    pub base_url: String,
    pub accounts: Vec<DemoAccount>,
    pub operator: Operator,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DemoAccount {
    pub name: String,
    pub account_id: u64,
    pub api_key: String,
    pub api_secret: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Operator {
    pub token: String,
}

impl Credentials {
    pub fn account(&self, name: &str) -> Option<&DemoAccount> {
        self.accounts.iter().find(|a| a.name == name)
    }
}

impl DemoAccount {
    pub fn auth(&self) -> Auth {
        Auth::Key { key: self.api_key.clone(), secret: self.api_secret.clone() }
    }
}

pub struct DemoOptions {
    pub data_dir: PathBuf,
    pub port: u16,
    pub market_maker: bool,
    /// Run the wallet users (carol, dave) in process.
    pub wallets: bool,
    pub snapshot_every: u64,
}

const ACCOUNTS: [&str; 4] = ["alice", "bob", "market-maker", "noise-trader"];
const BTC_EACH: u64 = 10 * 100_000_000;
/// The settlement pool's own coins: its fee shares, and fronting late sellers.
const POOL_FUNDS: u64 = 100_000_000;
const USD_EACH: &str = "1000000.00";

pub fn credentials_path(data_dir: &Path) -> PathBuf {
    data_dir.join("demo-credentials.json")
}

pub async fn run(opts: DemoOptions) -> anyhow::Result<()> {
    std::fs::create_dir_all(&opts.data_dir).with_context(|| format!("creating {}", opts.data_dir.display()))?;
    let creds_path = credentials_path(&opts.data_dir);
    let existing: Option<Credentials> = match std::fs::read(&creds_path) {
        Ok(bytes) => Some(serde_json::from_slice(&bytes).with_context(|| format!("reading {}", creds_path.display()))?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("reading {}", creds_path.display())),
    };
    let token = existing.as_ref().map(|c| c.operator.token.clone()).unwrap_or_else(|| tandem_gateway::random_hex(24));
    let bind = SocketAddr::from(([127, 0, 0, 1], opts.port));
    let master_key_path = opts.data_dir.join("demo-master-key.hex");
    if !master_key_path.exists() {
        // Demo only: a real operator keeps the master key away from the data it protects.
        crate::custody_cli::new_master_key(&master_key_path)?;
    }
    let mut node = node::start(NodeOptions {
        data_dir: opts.data_dir.clone(),
        store: Default::default(),
        custody: Some(node::CustodyOptions {
            master_key: crate::custody_cli::load_master_key(Some(&master_key_path))?,
            // The demo's vaults use the fixture primes; generating more would eat a core.
            prime_pool_target: 0,
            demo: true,
            secrets_dir: None,
        }),
        bind,
        exchange: ExchangeConfig::default(),
        // Open enrolment: any wallet can open an account (`tandem wallet init`). Demo only.
        gateway: GatewayConfig {
            operator_token: token.clone(),
            open_enrolment: true,
            bitcoin_network: bitcoin::Network::Regtest,
            ..GatewayConfig::default()
        },
        sequencer: SequencerConfig { snapshot_every: opts.snapshot_every, ..SequencerConfig::default() },
        http_workers: 2,
        redis: None,
        journal: Default::default(),
        project: true,
    })
    .await?;
    let base_url = node.base_url();
    let (devnet, miner, deposits, settlement) = start_chain(&node, &opts.data_dir)?;
    let creds = match existing {
        Some(mut c) => {
            c.base_url = base_url.clone();
            c
        }
        None => open_demo_accounts(&node, &devnet, &base_url, &token).await?,
    };
    write_credentials(&creds_path, &creds)?;
    let cosigner = start_cosigner(&opts.data_dir, &base_url, &token).await?;
    let mut wallets = Vec::new();
    let names = if opts.wallets { &crate::demo_wallets::WALLET_USERS[..] } else { &[][..] };
    for &name in names {
        let faucet = crate::demo_wallets::faucet(devnet.clone());
        let (url, token, dir) = (base_url.clone(), token.clone(), opts.data_dir.clone());
        wallets.push(tokio::spawn(crate::demo_wallets::run_wallet(url, token, dir, name, faucet)));
    }
    print_welcome(&creds, &creds_path, &opts.data_dir);

    let bots = if opts.market_maker {
        let mm = creds.account("market-maker").context("market-maker account")?.clone();
        let taker = creds.account("noise-trader").context("noise-trader account")?.clone();
        let url = base_url.clone();
        Some(tokio::spawn(async move { market_maker(url, mm, taker).await }))
    } else {
        None
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("stopping"),
        r = node.wait() => tracing::warn!(result = ?r, "server stopped"),
    }
    if let Some(b) = bots {
        b.abort();
    }
    cosigner.abort();
    miner.abort();
    deposits.abort();
    settlement.abort();
    for w in wallets {
        w.abort();
    }
    node.shutdown().await
}

/// Blocks between two demo blocks.
const DEMO_BLOCK_INTERVAL: Duration = Duration::from_secs(5);
/// A settlement window of the demo: short, so a batch confirms while someone watches.
const DEMO_SETTLEMENT_WINDOW: Duration = Duration::from_secs(20);
/// A wallet that misses a demo batch's signing sits out for a minute, and its debt is forced
/// with the co-signer after five: short enough to watch.
const DEMO_LATE_PENALTY: Duration = Duration::from_secs(60);
const DEMO_FORCE_AFTER: Duration = Duration::from_secs(300);

type Task = tokio::task::JoinHandle<()>;

/// The demo's chain: an embedded regtest devnet mining a block every few seconds; the deposit
/// service crediting what arrives at vault and pool addresses (after one confirmation, or at
/// once from a vault); and the settlement service netting each window into a batch on it.
/// The devnet is kept in the data dir (`devnet.chain`), so a restarted demo continues the same
/// chain its ledger settled on.
fn start_chain(node: &Node, data_dir: &Path) -> anyhow::Result<(std::sync::Arc<tandem_settlement::Devnet>, Task, Task, Task)> {
    let devnet = tandem_settlement::Devnet::open(&data_dir.join("devnet.chain"), tandem_settlement::DevnetConfig::default())?;
    let miner = devnet.spawn_miner(DEMO_BLOCK_INTERVAL);
    let policy = tandem_settlement::deposits::DepositPolicy { confirmations: 1 };
    // A fresh devnet: its first blocks are the faucet's, cheap to scan from 0.
    let deposits = crate::deposits::DepositService::for_node(node, devnet.clone(), policy)?.spawn();
    let config = crate::settlement::SettlementConfig {
        window: DEMO_SETTLEMENT_WINDOW,
        late_penalty: DEMO_LATE_PENALTY,
        force_after: DEMO_FORCE_AFTER,
        bump_after: Duration::from_secs(60),
        ..Default::default()
    };
    let settlement = crate::settlement::SettlementService::for_node(node, devnet.clone(), config)?.spawn(&node.reconciler);
    Ok((devnet, miner, deposits, settlement))
}

/// The demo's co-signer, in this process but with its own data dir, master key and identity,
/// talking to the provider over HTTP like a separate `tandem cosigner run`. Registered with the
/// provider once, so wallets make 2-of-3 vaults by default.
async fn start_cosigner(data_dir: &Path, base_url: &str, token: &str) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let dir = data_dir.join("cosigner");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let key_path = dir.join("master-key.hex");
    if !key_path.exists() {
        crate::custody_cli::new_master_key(&key_path)?;
    }
    let opts = crate::cosigner::CosignerOptions {
        provider_url: base_url.to_owned(),
        demo: true,
        provider_timeout: Duration::from_secs(3600),
        max_fee: bitcoin::Amount::from_sat(100_000),
        settlement_deadline: DEMO_FORCE_AFTER,
    };
    let cosigner = crate::cosigner::Cosigner::open(&dir, &crate::custody_cli::load_master_key(Some(&key_path))?, opts).await?;
    let identity = cosigner.identity().pubkey_hex();
    let mut client = Client::connect(base_url).await?;
    let body = json!({"identity_pubkey": identity, "label": "demo co-signer"});
    let (status, reply) = client.send("POST", "/v1/operator/cosigners", Some(&body), &Auth::Operator(token.into())).await?;
    if status != 200 && status != 409 {
        bail!("registering the demo co-signer: {status} {reply}");
    }
    tracing::info!(%identity, "demo co-signer running");
    Ok(tokio::spawn(cosigner.run()))
}

fn write_credentials(path: &Path, creds: &Credentials) -> anyhow::Result<()> {
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(creds)?)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// Opens the demo accounts through the operator API (the same path an operator uses), funds
/// USD as fiat deposits, and BTC with real devnet payments to each account's pool deposit
/// address (these accounts have no vault of their own: the provider's pool holds their coins),
/// credited by the deposit service like any deposit. The settlement pool gets a little BTC too,
/// for its share of batch fees.
async fn open_demo_accounts(
    node: &Node,
    devnet: &tandem_settlement::Devnet,
    base_url: &str,
    token: &str,
) -> anyhow::Result<Credentials> {
    let mut client = Client::connect(base_url).await?;
    let operator = Auth::Operator(token.to_string());
    let pool = &node.vaults.as_ref().context("the demo runs with custody")?.pool;
    let mut accounts = Vec::new();
    for name in ACCOUNTS {
        let kind = if name == "market-maker" { "partner" } else { "user" };
        let (status, body) =
            client.send("POST", "/v1/operator/accounts", Some(&json!({"kind": kind, "label": name})), &operator).await?;
        if status != 200 && status != 201 {
            bail!("opening demo account {name}: {status} {body}");
        }
        let account = DemoAccount {
            name: name.to_string(),
            account_id: body["account_id"].as_u64().context("account_id")?,
            api_key: body["api_key"].as_str().context("api_key")?.to_string(),
            api_secret: body["api_secret"].as_str().context("api_secret")?.to_string(),
        };
        let deposit = json!({"account_id": account.account_id, "asset": "USD", "amount": USD_EACH, "reference": format!("demo-wire-{name}")});
        let (status, body) = client.send("POST", "/v1/operator/deposits", Some(&deposit), &operator).await?;
        if status != 200 && status != 201 {
            bail!("funding demo account {name} with USD: {status} {body}");
        }
        let script = pool.deposit_script(AccountId(account.account_id))?;
        let txid = devnet.faucet(&script, bitcoin::Amount::from_sat(BTC_EACH))?;
        tracing::info!(name, account = account.account_id, %txid, "demo account opened; its BTC arrives with the next block");
        accounts.push(account);
    }
    let script = pool.deposit_script(tandem_matching::SETTLEMENT_POOL)?;
    devnet.faucet(&script, bitcoin::Amount::from_sat(POOL_FUNDS))?;
    // Confirm the payments now rather than at the next timed block, and hand out the
    // credentials only once the deposit service has credited them.
    devnet.mine(1, None)?;
    let btc = crate::node::btc_asset(&node.engine_config)?;
    let ids: Vec<AccountId> = accounts.iter().map(|a| AccountId(a.account_id)).collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let ids = ids.clone();
        let funded = node.sequencer.read(move |e| ids.iter().all(|a| e.balance(*a, btc).is_some_and(|b| b.total() > 0))).await?;
        if funded {
            break;
        }
        if std::time::Instant::now() > deadline {
            bail!("the demo accounts' BTC deposits were not credited within a minute");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(Credentials { base_url: base_url.to_string(), accounts, operator: Operator { token: token.to_string() } })
}

fn print_welcome(creds: &Credentials, path: &Path, data_dir: &Path) {
    let (carol, carol_pass) = crate::demo_wallets::wallet_paths(data_dir, "carol");
    let alice = creds.account("alice").expect("alice exists");
    println!(
        r#"
Tandem demo running at {url}
Credentials: {path}

Place an order as alice (HMAC-SHA256 over timestamp + method + path + body):

  KEY={key}
  SECRET={secret}
  BODY='{{"market":"BTC-USD","side":"buy","type":"limit","price":"59000.00","quantity":"0.01"}}'
  TS=$(date +%s%3N)
  SIG=$(printf '%s' "${{TS}}POST/v1/orders${{BODY}}" | openssl dgst -sha256 -hmac "$SECRET" | sed 's/^.*= //')
  curl -s -X POST {url}/v1/orders -H "X-Tandem-Key: $KEY" -H "X-Tandem-Timestamp: $TS" \
       -H "X-Tandem-Signature: $SIG" -H 'Content-Type: application/json' -d "$BODY"

Or trade from your own wallet (a device key, encrypted under a passphrase; init prints the
new account's id, fund it as the operator, then trade):

  tandem wallet init --provider {url}
  curl -s -X POST {url}/v1/operator/deposits -H "Authorization: Bearer {token}" \
       -d '{{"account_id":ACCOUNT_ID,"asset":"USD","amount":"10000.00","reference":"wire-ACCOUNT_ID"}}'
  tandem wallet order --market BTC-USD --side buy --price 59000 --quantity 0.01

Wallets running inside the demo (each with its share of a 2-of-3 vault with the provider and
the demo co-signer, signing only what its user asked for): carol and dave, funded once their
vaults are made (a few seconds after start):

  tandem wallet --wallet {carol} --passphrase-file {carol_pass} balance

Public data:  curl -s {url}/v1/markets/BTC-USD/book?depth=5
Metrics:      curl -s {url}/metrics
Stop with Ctrl-C; run the same command again to resume this exchange.
"#,
        url = creds.base_url,
        path = path.display(),
        carol = carol.display(),
        carol_pass = carol_pass.display(),
        key = alice.api_key,
        secret = alice.api_secret,
        token = creds.operator.token,
    );
}

/// Quotes five levels a side around a drifting reference price and refreshes them every second;
/// a second account sends a small market order now and then so there are trades to watch.
async fn market_maker(base_url: String, mm: DemoAccount, taker: DemoAccount) {
    let mut reference: i64 = 6_000_000; // cents
    let mut rng = rand::rngs::StdRng::from_entropy();
    loop {
        if let Err(e) = quote_round(&base_url, &mm, &taker, &mut reference, &mut rng).await {
            tracing::warn!(error = %e, "market maker round failed");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn quote_round(
    base_url: &str,
    mm: &DemoAccount,
    taker: &DemoAccount,
    reference: &mut i64,
    rng: &mut rand::rngs::StdRng,
) -> anyhow::Result<()> {
    let mut client = Client::connect(base_url).await?;
    let auth = mm.auth();
    *reference = (*reference + rng.gen_range(-3_000..=3_000)).clamp(4_000_000, 8_000_000);
    client.send("DELETE", "/v1/orders?market=BTC-USD", None, &auth).await?;
    for level in 1..=5i64 {
        let spread = level * 500; // 5 dollars a level
        for (side, price) in [("buy", *reference - spread), ("sell", *reference + spread)] {
            let quantity = format!("0.{:03}", rng.gen_range(5..=50));
            let order = json!({
                "market": "BTC-USD", "side": side, "type": "limit", "post_only": true,
                "price": format!("{}.{:02}", price / 100, price % 100), "quantity": quantity,
            });
            client.send("POST", "/v1/orders", Some(&order), &auth).await?;
        }
    }
    if rng.gen_bool(0.5) {
        let side = if rng.gen_bool(0.5) { "buy" } else { "sell" };
        let order = json!({"market": "BTC-USD", "side": side, "type": "market", "quantity": format!("0.00{}", rng.gen_range(1..=9))});
        client.send("POST", "/v1/orders", Some(&order), &taker.auth()).await?;
    }
    Ok(())
}

use rand::SeedableRng;
