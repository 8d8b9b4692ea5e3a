//! The exchange's processes and their flags: `tandem serve` (everything in one process), and
//! the services of a split deployment, each a replica of the shared journal with a part to play:
//!
//! | process | API | projections | custody | chain |
//! |---|---|---|---|---|
//! | `tandem gateway` | the public API; `/v1/mpc/...` forwarded to custody | follows the store's cursor | - | - |
//! | `tandem matching` | probes, metrics, operator | keeps them; publishes the event stream | - | - |
//! | `tandem custody run` | probes, metrics, operator, the MPC relay, the custody API | follows | the provider's party, presignatures, primes | - |
//! | `tandem settlement` | probes, metrics, operator (reconciliation) | follows | through custody's API | deposits and batches, while it leads |
//!
//! Every process applies every command (the partition orders them), so any gateway answers with
//! its own engine; what must happen once is either idempotent by seq (events, projections under
//! the cursor lock) or led under a fencing lock (settlement).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use tandem_matching::{ExchangeConfig, SequencerConfig};
use tokio::task::JoinHandle;

use crate::custodian::{Custodian, InProcess};
use crate::{custody_cli, node};

/// What every process of one exchange shares: its data, store, journal and markets.
#[derive(clap::Args, Clone, Debug)]
pub struct ExchangeArgs {
    #[arg(long)]
    pub data_dir: PathBuf,
    /// The node's database: `postgres://user@host:port/db` (append `#schema` for a schema of
    /// its own); default SQLite in the data dir.
    #[arg(long, env = "TANDEM_STORE_URL")]
    pub store_url: Option<String>,
    /// Bring a PostgreSQL store's tables up to this version at start (else they must be:
    /// `tandem migrate`). A SQLite store in the data dir is always migrated.
    #[arg(long)]
    pub migrate: bool,
    /// The command journal: `kafka://host:port/topic`, one partition every replica of the
    /// exchange writes and reads in order; default segment files in the data dir.
    #[arg(long, env = "TANDEM_JOURNAL_URL", value_name = "URL")]
    pub journal_url: Option<String>,
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub bind: SocketAddr,
    /// Bearer token for the operator API.
    #[arg(long, env = "TANDEM_OPERATOR_TOKEN", hide_env_values = true)]
    pub operator_token: String,
    /// Assets and markets as JSON (default: BTC, USD, BTC-USD).
    #[arg(long)]
    pub markets: Option<PathBuf>,
    #[arg(long, default_value_t = 2)]
    pub http_workers: usize,
    /// Snapshot every this many commands.
    #[arg(long, default_value_t = 100_000)]
    pub snapshot_every: u64,
    /// The Bitcoin network (bitcoin, testnet, signet, regtest).
    #[arg(long, default_value = "bitcoin")]
    pub network: String,
    /// Redis shared by every process of this exchange (`redis://host:port`): request budgets,
    /// idempotency records and the replay guard live there, the same whichever gateway a
    /// caller reaches. Without it each process keeps its own.
    #[arg(long, env = "TANDEM_REDIS_URL", value_name = "URL")]
    pub redis_url: Option<String>,
    /// Prefix of this exchange's Redis keys.
    #[arg(long, default_value = "tandem:")]
    pub redis_prefix: String,
}

/// Request budgets of a process that faces callers.
#[derive(clap::Args, Clone, Debug)]
pub struct LimitArgs {
    /// Request weight an API key, device or co-signer may spend per minute (0: no limit).
    #[arg(long, default_value_t = 60_000)]
    pub limit_per_caller: u32,
    /// Request weight one IP address may spend per minute (0: no limit).
    #[arg(long, default_value_t = 120_000)]
    pub limit_per_ip: u32,
}

/// The provider's custody.
#[derive(clap::Args, Clone, Debug)]
pub struct CustodyArgs {
    /// File holding the master key (64 hex characters); else TANDEM_MASTER_KEY.
    #[arg(long)]
    pub master_key_file: Option<PathBuf>,
    /// Safe-prime pairs to keep ready in the background.
    #[arg(long, default_value_t = 4)]
    pub prime_pool_target: usize,
    /// Where the sealed custody secrets live (provider identity, pool seed, vault key
    /// shares); default `custody/secrets` in the data dir. Replicas of one exchange share
    /// one directory.
    #[arg(long, env = "TANDEM_CUSTODY_SECRETS_DIR", value_name = "DIR")]
    pub custody_secrets_dir: Option<PathBuf>,
    /// Use and accept the public fixture primes (tests and demos only; never for real funds).
    #[arg(long)]
    pub demo_primes: bool,
}

impl CustodyArgs {
    /// The custody options, if a master key is given (file or environment).
    fn options(&self) -> anyhow::Result<Option<node::CustodyOptions>> {
        if self.master_key_file.is_none() && std::env::var_os(custody_cli::MASTER_KEY_ENV).is_none() {
            return Ok(None);
        }
        Ok(Some(node::CustodyOptions {
            master_key: custody_cli::load_master_key(self.master_key_file.as_deref())?,
            prime_pool_target: self.prime_pool_target,
            demo: self.demo_primes,
            secrets_dir: self.custody_secrets_dir.clone(),
        }))
    }
}

/// The chain: a bitcoind, and when deposits count.
#[derive(clap::Args, Clone, Debug)]
pub struct ChainArgs {
    /// A bitcoind's JSON-RPC (of the same network): deposits to vault addresses are
    /// credited from it and batches broadcast to it.
    #[arg(long, value_name = "URL")]
    pub bitcoind: Option<String>,
    #[arg(long, env = "TANDEM_RPC_USER", default_value = "")]
    pub rpc_user: String,
    #[arg(long, env = "TANDEM_RPC_PASSWORD", hide_env_values = true, default_value = "")]
    pub rpc_password: String,
    /// Confirmations before a deposit from outside is credited.
    #[arg(long, default_value_t = 3)]
    pub deposit_confirmations: u32,
    /// Scan the chain for deposits from this height (vaults hold nothing older).
    #[arg(long, default_value_t = 0)]
    pub chain_start_height: u32,
    /// Close a settlement window this many seconds after the last batch finished.
    #[arg(long, default_value_t = 600)]
    pub settlement_window_secs: u64,
    /// ...or as soon as this many movements (vaults to settle, withdrawals) wait.
    #[arg(long, default_value_t = 1000)]
    pub settlement_max_movements: usize,
    /// Confirmations before a batch is final in the ledger.
    #[arg(long, default_value_t = 3)]
    pub settlement_confirmations: u32,
    /// Seconds the wallets of a batch have to co-sign before it is rebuilt without them.
    #[arg(long, default_value_t = 120)]
    pub signing_deadline_secs: u64,
    /// Seconds a broadcast batch may wait unconfirmed, underpaying the chain's fee estimate,
    /// before it is replaced by a version paying more (RBF, paid by the pool).
    #[arg(long, default_value_t = 1800)]
    pub settlement_bump_after_secs: u64,
    /// Seconds a wallet that missed a signing deadline sits out of batches.
    #[arg(long, default_value_t = 600)]
    pub settlement_late_penalty_secs: u64,
    /// Seconds after a wallet was first late before its debt is force-settled with its
    /// vault's co-signer (2-of-3 vaults).
    #[arg(long, default_value_t = 86_400)]
    pub settlement_force_after_secs: u64,
}

impl ChainArgs {
    fn settlement_config(&self) -> crate::settlement::SettlementConfig {
        crate::settlement::SettlementConfig {
            window: Duration::from_secs(self.settlement_window_secs),
            max_movements: self.settlement_max_movements,
            confirmations: self.settlement_confirmations,
            signing_deadline: Duration::from_secs(self.signing_deadline_secs),
            bump_after: Duration::from_secs(self.settlement_bump_after_secs),
            late_penalty: Duration::from_secs(self.settlement_late_penalty_secs),
            force_after: Duration::from_secs(self.settlement_force_after_secs),
            ..Default::default()
        }
    }
}

/// What a process is, which decides what [`start_node`] runs in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// `tandem serve`: everything.
    All,
    Gateway,
    Matching,
    Custody,
    Settlement,
}

impl Role {
    /// The command that runs it.
    pub fn command(self) -> &'static str {
        match self {
            Role::All => "tandem serve",
            Role::Gateway => "tandem gateway",
            Role::Matching => "tandem matching",
            Role::Custody => "tandem custody run",
            Role::Settlement => "tandem settlement",
        }
    }
}

/// Starts the process's replica of the exchange.
pub async fn start_node(
    role: Role,
    ex: &ExchangeArgs,
    limits: Option<&LimitArgs>,
    custody: Option<node::CustodyOptions>,
    publish_events: bool,
    relay_upstream: Option<String>,
) -> anyhow::Result<node::Node> {
    let network = crate::parse_network(&ex.network)?;
    let store = node::StoreLocation::parse(ex.store_url.as_deref(), ex.migrate)?;
    if role != Role::All {
        if ex.journal_url.is_none() {
            bail!("`{}` is one process of a split exchange: it needs the shared --journal-url", role.command());
        }
        if !matches!(store, node::StoreLocation::Postgres { .. }) {
            bail!("`{}` is one process of a split exchange: it needs the shared PostgreSQL --store-url", role.command());
        }
    }
    let exchange = match &ex.markets {
        Some(p) => serde_json::from_slice::<ExchangeConfig>(&std::fs::read(p).with_context(|| format!("reading {}", p.display()))?)
            .with_context(|| format!("parsing {}", p.display()))?,
        None => ExchangeConfig::default(),
    };
    let limits = match limits {
        Some(l) => tandem_gateway::limits::LimitConfig { per_caller_per_minute: l.limit_per_caller, per_ip_per_minute: l.limit_per_ip },
        // The gateways in front count the budgets; what reaches a service comes through them.
        None => tandem_gateway::limits::LimitConfig::UNLIMITED,
    };
    let surface = match role {
        Role::All | Role::Gateway => tandem_gateway::ApiSurface::Public,
        Role::Custody => tandem_gateway::ApiSurface::Internal { relay: true },
        Role::Matching | Role::Settlement => tandem_gateway::ApiSurface::Internal { relay: false },
    };
    node::start(node::NodeOptions {
        data_dir: ex.data_dir.clone(),
        store,
        custody,
        bind: ex.bind,
        exchange,
        gateway: tandem_gateway::GatewayConfig {
            operator_token: ex.operator_token.clone(),
            bitcoin_network: network,
            limits,
            surface,
            relay_upstream,
            ..Default::default()
        },
        sequencer: SequencerConfig { snapshot_every: ex.snapshot_every, ..SequencerConfig::default() },
        http_workers: ex.http_workers,
        redis: ex.redis_url.clone().map(|url| node::RedisOptions { url, prefix: ex.redis_prefix.clone() }),
        journal: node::JournalLocation::parse(ex.journal_url.as_deref(), publish_events)?,
        project: matches!(role, Role::All | Role::Matching),
    })
    .await
}

/// Starts deposits and settlement on `n` with `custodian`: under the settlement leadership
/// lock when the journal is shared (any number of such processes: one leads, the others stand
/// by), else at once.
pub async fn start_chain_services(
    n: &node::Node,
    chain_args: &ChainArgs,
    network: bitcoin::Network,
    custodian: Option<Arc<dyn Custodian>>,
    shared_journal: bool,
) -> anyhow::Result<Vec<JoinHandle<()>>> {
    let Some(url) = &chain_args.bitcoind else {
        tracing::warn!("no --bitcoind: chain deposits are not credited and nothing is settled");
        return Ok(Vec::new());
    };
    let auth = tandem_settlement::BitcoindAuth::UserPass { user: chain_args.rpc_user.clone(), password: chain_args.rpc_password.clone() };
    let chain = tandem_settlement::Bitcoind::connect(tandem_settlement::BitcoindConfig::new(url.clone(), auth, network))
        .await
        .context("connecting to bitcoind")?;
    let chain: Arc<dyn tandem_settlement::Chain> = Arc::new(chain);
    let policy = tandem_settlement::deposits::DepositPolicy { confirmations: chain_args.deposit_confirmations };
    let deposits = crate::deposits::DepositService {
        start_height: chain_args.chain_start_height,
        interval: Duration::from_secs(2),
        pool: custodian.as_ref().map(|c| c.pool().clone()),
        ..crate::deposits::DepositService::for_node(n, chain.clone(), policy)?
    };
    let settlement = match custodian {
        Some(c) => Some(crate::settlement::SettlementService::with_custodian(n, c, chain, chain_args.settlement_config())?),
        None => {
            tracing::warn!("no custody: nothing is settled on chain");
            None
        }
    };
    let reconciler = n.reconciler.clone();
    let start = move |leader_epoch: Option<u64>| {
        let mut tasks = vec![crate::deposits::DepositService { leader_epoch, ..deposits.clone() }.spawn()];
        if let Some(s) = &settlement {
            let service = crate::settlement::SettlementService { leader_epoch, ..(**s).clone() };
            tasks.push(Arc::new(service).spawn(&reconciler));
        }
        tasks
    };
    if !shared_journal {
        return Ok(start(None));
    }
    tracing::info!("settlement runs in whichever process leads; trying for the lead");
    let leader = crate::leadership::LeaderLoop {
        store: n.store.clone(),
        sequencer: n.sequencer.clone(),
        start: Box::new(move |epoch| Ok(start(Some(epoch)))),
        interval: Duration::from_secs(1),
        leading: n.settlement_leader.clone(),
    };
    Ok(vec![leader.spawn()])
}

/// Runs until Ctrl-C or the API stops, then stops `services` and the node.
pub async fn run_until_stopped(mut n: node::Node, services: Vec<JoinHandle<()>>) -> anyhow::Result<()> {
    println!("listening on {}", n.base_url());
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        r = n.wait() => tracing::warn!(result = ?r, "server stopped"),
    }
    for task in services {
        task.abort();
    }
    n.shutdown().await
}

/// `tandem serve`: one process, every part; custody if a master key is given.
pub async fn serve(ex: ExchangeArgs, limits: LimitArgs, custody: CustodyArgs, chain: ChainArgs, publish_events: bool) -> anyhow::Result<()> {
    let network = crate::parse_network(&ex.network)?;
    let shared = ex.journal_url.is_some();
    if shared && chain.bitcoind.is_some() && ex.store_url.is_none() {
        // Replicas of a shared journal take turns at settlement under a lock in the shared
        // store: two settlement services would spend the same coins.
        bail!(
            "--bitcoind with --journal-url needs a PostgreSQL --store-url shared by the replicas: the settlement \
             leader is elected there"
        );
    }
    let custody = custody.options()?;
    if custody.is_none() {
        tracing::warn!("no master key: running without custody");
    }
    let n = start_node(Role::All, &ex, Some(&limits), custody, publish_events, None).await?;
    let custodian = n.vaults.clone().map(|v| Arc::new(InProcess(v)) as Arc<dyn Custodian>);
    let services = start_chain_services(&n, &chain, network, custodian, shared).await?;
    run_until_stopped(n, services).await
}

/// `tandem gateway`: the public API, its MPC relay traffic forwarded to `relay_url`.
pub async fn gateway(ex: ExchangeArgs, limits: LimitArgs, relay_url: Option<String>) -> anyhow::Result<()> {
    if relay_url.is_none() {
        tracing::warn!("no --relay-url: wallets cannot make vaults or sign through this gateway");
    }
    let n = start_node(Role::Gateway, &ex, Some(&limits), None, false, relay_url).await?;
    run_until_stopped(n, Vec::new()).await
}

/// `tandem matching`: keeps the projections and publishes the event stream.
pub async fn matching(ex: ExchangeArgs) -> anyhow::Result<()> {
    let n = start_node(Role::Matching, &ex, None, None, true, None).await?;
    run_until_stopped(n, Vec::new()).await
}

/// `tandem custody run`: the provider's party (vault creation, signing), the MPC relay the gateways
/// forward to, and the custody API settlement signs through.
pub async fn custody(ex: ExchangeArgs, custody: CustodyArgs) -> anyhow::Result<()> {
    let options = custody.options()?.context("custody needs the master key (--master-key-file or TANDEM_MASTER_KEY)")?;
    let n = start_node(Role::Custody, &ex, None, Some(options), false, None).await?;
    run_until_stopped(n, Vec::new()).await
}

/// `tandem settlement`: deposits and settlement batches while it leads, signing through the
/// custody process at `custody_url`.
pub async fn settlement(ex: ExchangeArgs, chain: ChainArgs, custody_url: String) -> anyhow::Result<()> {
    let network = crate::parse_network(&ex.network)?;
    if chain.bitcoind.is_none() {
        bail!("settlement needs --bitcoind");
    }
    let n = start_node(Role::Settlement, &ex, None, None, false, None).await?;
    // Custody may start after us: wait for it rather than fail the deployment's start order.
    let custodian = loop {
        match crate::custodian::http::HttpCustodian::connect(&custody_url, &ex.operator_token, network).await {
            Ok(c) => break c,
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "waiting for custody");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    let services = start_chain_services(&n, &chain, network, Some(Arc::new(custodian)), true).await?;
    run_until_stopped(n, services).await
}
