use anyhow::Context;
use clap::{CommandFactory, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use tandem::{bench_http, custody_cli, demo, journal_cli, node, wallet};
use tandem_matching::{ExchangeConfig, SequencerConfig};

#[derive(Parser)]
#[command(name = "tandem", version, about = "Instant exchange on split custody")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Everything in one process with embedded defaults: demo accounts, market maker, API.
    Demo {
        #[arg(long, default_value = "tandem-demo")]
        data_dir: PathBuf,
        #[arg(long, default_value_t = 8080)]
        port: u16,
        /// Do not run the built-in market maker.
        #[arg(long)]
        no_market_maker: bool,
        /// Do not run the demo's wallet users (carol, dave).
        #[arg(long)]
        no_wallets: bool,
        /// Snapshot (and log a state-hash checkpoint) every this many commands.
        #[arg(long, default_value_t = 100_000)]
        snapshot_every: u64,
    },
    /// Runs an exchange node on a data dir.
    Serve {
        #[arg(long)]
        data_dir: PathBuf,
        /// The node's database: `postgres://user@host:port/db` (append `#schema` for a schema of
        /// its own); default SQLite in the data dir.
        #[arg(long, env = "TANDEM_STORE_URL")]
        store_url: Option<String>,
        /// Bring a PostgreSQL store's tables up to this version at start (else they must be:
        /// `tandem migrate`). A SQLite store in the data dir is always migrated.
        #[arg(long)]
        migrate: bool,
        /// The command journal: `kafka://host:port/topic`, one partition every replica of the
        /// exchange writes and reads in order; default segment files in the data dir.
        #[arg(long, env = "TANDEM_JOURNAL_URL", value_name = "URL")]
        journal_url: Option<String>,
        /// Also publish every applied command's events on `<journal topic>.events` (keyed by
        /// seq; a consumer keeps the first record per seq).
        #[arg(long, requires = "journal_url")]
        publish_events: bool,
        #[arg(long, default_value = "127.0.0.1:8080")]
        bind: SocketAddr,
        /// Bearer token for the operator API.
        #[arg(long, env = "TANDEM_OPERATOR_TOKEN", hide_env_values = true)]
        operator_token: String,
        /// Assets and markets as JSON (default: BTC, USD, BTC-USD).
        #[arg(long)]
        markets: Option<PathBuf>,
        #[arg(long, default_value_t = 2)]
        http_workers: usize,
        /// Snapshot every this many commands.
        #[arg(long, default_value_t = 100_000)]
        snapshot_every: u64,
        /// File holding the master key (64 hex characters); else TANDEM_MASTER_KEY; without
        /// either the node runs without custody.
        #[arg(long)]
        master_key_file: Option<PathBuf>,
        /// Safe-prime pairs to keep ready in the background.
        #[arg(long, default_value_t = 4)]
        prime_pool_target: usize,
        /// Where the sealed custody secrets live (provider identity, pool seed, vault key
        /// shares); default `custody/secrets` in the data dir. Replicas of one exchange share
        /// one directory.
        #[arg(long, env = "TANDEM_CUSTODY_SECRETS_DIR", value_name = "DIR")]
        custody_secrets_dir: Option<PathBuf>,
        /// The Bitcoin network (bitcoin, testnet, signet, regtest).
        #[arg(long, default_value = "bitcoin")]
        network: String,
        /// A bitcoind's JSON-RPC (of the same network): deposits to vault addresses are
        /// credited from it. Without it, no chain deposits are credited.
        #[arg(long, value_name = "URL")]
        bitcoind: Option<String>,
        #[arg(long, env = "TANDEM_RPC_USER", default_value = "")]
        rpc_user: String,
        #[arg(long, env = "TANDEM_RPC_PASSWORD", hide_env_values = true, default_value = "")]
        rpc_password: String,
        /// Confirmations before a deposit from outside is credited.
        #[arg(long, default_value_t = 3)]
        deposit_confirmations: u32,
        /// Scan the chain for deposits from this height (vaults hold nothing older).
        #[arg(long, default_value_t = 0)]
        chain_start_height: u32,
        /// Close a settlement window this many seconds after the last batch finished.
        #[arg(long, default_value_t = 600)]
        settlement_window_secs: u64,
        /// ...or as soon as this many movements (vaults to settle, withdrawals) wait.
        #[arg(long, default_value_t = 1000)]
        settlement_max_movements: usize,
        /// Confirmations before a batch is final in the ledger.
        #[arg(long, default_value_t = 3)]
        settlement_confirmations: u32,
        /// Seconds the wallets of a batch have to co-sign before it is rebuilt without them.
        #[arg(long, default_value_t = 120)]
        signing_deadline_secs: u64,
        /// Seconds a broadcast batch may wait unconfirmed, underpaying the chain's fee estimate,
        /// before it is replaced by a version paying more (RBF, paid by the pool).
        #[arg(long, default_value_t = 1800)]
        settlement_bump_after_secs: u64,
        /// Seconds a wallet that missed a signing deadline sits out of batches.
        #[arg(long, default_value_t = 600)]
        settlement_late_penalty_secs: u64,
        /// Seconds after a wallet was first late before its debt is force-settled with its
        /// vault's co-signer (2-of-3 vaults).
        #[arg(long, default_value_t = 86_400)]
        settlement_force_after_secs: u64,
        /// Redis shared by every gateway of this exchange (`redis://host:port`): request
        /// budgets count there, the same whichever gateway a caller reaches. Without it each
        /// process counts its own.
        #[arg(long, env = "TANDEM_REDIS_URL", value_name = "URL")]
        redis_url: Option<String>,
        /// Prefix of this exchange's Redis keys.
        #[arg(long, default_value = "tandem:")]
        redis_prefix: String,
        /// Request weight an API key, device or co-signer may spend per minute (0: no limit).
        #[arg(long, default_value_t = 60_000)]
        limit_per_caller: u32,
        /// Request weight one IP address may spend per minute (0: no limit).
        #[arg(long, default_value_t = 120_000)]
        limit_per_ip: u32,
    },
    /// Reconciles ledger against chain on a running node (`GET /v1/operator/reconciliation`):
    /// prints the report; exits 1 on any difference, 2 if it cannot be read.
    Reconcile {
        /// The node's API, e.g. http://127.0.0.1:8080.
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        url: String,
        #[arg(long, env = "TANDEM_OPERATOR_TOKEN", hide_env_values = true)]
        operator_token: String,
    },
    /// Creates the store's tables, or brings them up to this version.
    Migrate {
        /// The data dir of a SQLite store.
        #[arg(long, required_unless_present = "store_url")]
        data_dir: Option<PathBuf>,
        /// A PostgreSQL store (see `serve --store-url`).
        #[arg(long, env = "TANDEM_STORE_URL")]
        store_url: Option<String>,
    },
    /// Operator tools for the write-ahead journal.
    Journal {
        #[command(subcommand)]
        command: JournalCmd,
    },
    /// Query projections.
    Store {
        #[command(subcommand)]
        command: StoreCmd,
    },
    /// Load tools.
    Bench {
        #[command(subcommand)]
        command: BenchCmd,
    },
    /// Trade from your wallet: its device key signs every request.
    Wallet(wallet::cli::WalletArgs),
    /// Operator tools for the provider's custody secrets.
    Custody {
        #[command(subcommand)]
        command: CustodyCmd,
    },
    /// The independent co-signer of 2-of-3 vaults.
    Cosigner {
        #[command(subcommand)]
        command: CosignerCmd,
    },
}

#[derive(Subcommand)]
enum CosignerCmd {
    /// Makes the co-signer's identity key (once) and prints it, for the provider's operator to
    /// register (POST /v1/operator/cosigners).
    Init {
        #[arg(long)]
        data_dir: PathBuf,
        /// File holding the co-signer's master key (64 hex characters); else TANDEM_MASTER_KEY.
        #[arg(long)]
        master_key_file: Option<PathBuf>,
    },
    /// Takes part in the provider's vault sessions that name this co-signer, until stopped.
    Run {
        #[arg(long)]
        data_dir: PathBuf,
        /// The provider's API, e.g. http://127.0.0.1:8080.
        #[arg(long, value_name = "URL")]
        provider: String,
        #[arg(long)]
        master_key_file: Option<PathBuf>,
        /// Use the public fixture primes (only with a demo provider; never for real funds).
        #[arg(long)]
        demo_primes: bool,
        /// Seconds the provider must be silent before a recovery without it.
        #[arg(long, default_value_t = 86_400)]
        provider_timeout_secs: u64,
        /// The largest fee (satoshis) a spend it signs may pay.
        #[arg(long, default_value_t = 100_000)]
        max_fee_sat: u64,
        /// Seconds after a user's last signed order or withdrawal of a window before the
        /// provider may force that window's settlement with this co-signer.
        #[arg(long, default_value_t = 86_400)]
        settlement_deadline_secs: u64,
        /// Serve the recovery relay here: wallets of its vaults leave through it, with this
        /// co-signer alone, when the provider is gone.
        #[arg(long, value_name = "ADDR")]
        recovery_bind: Option<SocketAddr>,
    },
}

#[derive(Subcommand)]
enum CustodyCmd {
    /// Pregenerates safe-prime pairs (tens of seconds each) into the node's prime pool.
    GenPrimes {
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long, default_value_t = 1)]
        count: usize,
        /// File holding the master key (64 hex characters); else TANDEM_MASTER_KEY.
        #[arg(long)]
        master_key_file: Option<PathBuf>,
    },
    /// Writes a new random master key to a file (never overwrites).
    NewMasterKey {
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Subcommand)]
enum JournalCmd {
    /// Checks every record and snapshot, replays from genesis, prints the state hash.
    Verify {
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Lists segments and prints records as JSON lines.
    Inspect {
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long)]
        from: Option<u64>,
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
}

#[derive(Subcommand)]
enum StoreCmd {
    /// Drops every projection; the next start rebuilds them from the journal.
    Rebuild {
        #[arg(long)]
        data_dir: PathBuf,
        /// The node's PostgreSQL store (see `serve --store-url`); default SQLite in the data dir.
        #[arg(long, env = "TANDEM_STORE_URL")]
        store_url: Option<String>,
    },
}

#[derive(Subcommand)]
enum BenchCmd {
    /// Signed orders over keep-alive HTTP connections; own node unless --credentials is given.
    Http {
        /// A demo-credentials.json of a running exchange.
        #[arg(long)]
        credentials: Option<PathBuf>,
        #[arg(long, default_value_t = 64)]
        connections: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        #[arg(long, default_value_t = 2)]
        warmup_seconds: u64,
        #[arg(long, default_value_t = 1)]
        http_workers: usize,
        /// Give every order a client order id.
        #[arg(long)]
        client_order_ids: bool,
        /// Journal the own node's commands on this Kafka partition (`kafka://host:port/topic`).
        #[arg(long, value_name = "URL")]
        journal_url: Option<String>,
        /// Own nodes on the one journal (needs --journal-url), connections spread over them.
        #[arg(long, default_value_t = 1)]
        replicas: usize,
        /// The own nodes' store (`postgres://...#schema`, created and migrated); default each
        /// its own SQLite.
        #[arg(long, value_name = "URL")]
        store_url: Option<String>,
    },
    /// Window close to broadcast of a settlement batch whose vault inputs (one wallet's, with
    /// presignatures ready) are signed through the relay; own node on an embedded devnet.
    Settlement {
        #[arg(long, default_value_t = 100)]
        inputs: usize,
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,actix_server=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = tandem::config_file::merge(&Cli::command(), std::env::args_os().collect())?;
    let cli = Cli::parse_from(args);
    match cli.command {
        Cmd::Journal { command: JournalCmd::Verify { data_dir, json } } => journal_cli::verify(&data_dir, json),
        Cmd::Journal { command: JournalCmd::Inspect { data_dir, from, limit } } => journal_cli::inspect(&data_dir, from, limit),
        Cmd::Custody { command: CustodyCmd::GenPrimes { data_dir, count, master_key_file } } => {
            custody_cli::gen_primes(&data_dir, count, master_key_file)
        }
        Cmd::Custody { command: CustodyCmd::NewMasterKey { out } } => custody_cli::new_master_key(&out),
        Cmd::Cosigner { command: CosignerCmd::Init { data_dir, master_key_file } } => {
            let key = custody_cli::load_master_key(master_key_file.as_deref())?;
            let identity = tandem::cosigner::identity(&data_dir, &key)?;
            println!("{}", identity.pubkey_hex());
            Ok(())
        }
        // A user's tool: errors are one readable line (with their causes), never a backtrace.
        Cmd::Wallet(args) => {
            if let Err(e) = runtime()?.block_on(wallet::cli::run(args)) {
                eprintln!("error: {e:#}");
                std::process::exit(1);
            }
            Ok(())
        }
        other => runtime()?.block_on(run_async(other)),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?)
}

async fn run_async(cmd: Cmd) -> anyhow::Result<()> {
    match cmd {
        Cmd::Demo { data_dir, port, no_market_maker, no_wallets, snapshot_every } => {
            let opts = demo::DemoOptions {
                data_dir,
                port,
                market_maker: !no_market_maker,
                wallets: !no_wallets,
                snapshot_every,
            };
            demo::run(opts).await
        }
        Cmd::Serve {
            data_dir,
            store_url,
            migrate,
            journal_url,
            publish_events,
            bind,
            operator_token,
            markets,
            http_workers,
            snapshot_every,
            master_key_file,
            prime_pool_target,
            custody_secrets_dir,
            network,
            bitcoind,
            rpc_user,
            rpc_password,
            deposit_confirmations,
            chain_start_height,
            settlement_window_secs,
            settlement_max_movements,
            settlement_confirmations,
            signing_deadline_secs,
            settlement_bump_after_secs,
            settlement_late_penalty_secs,
            settlement_force_after_secs,
            redis_url,
            redis_prefix,
            limit_per_caller,
            limit_per_ip,
        } => {
            let network = tandem::parse_network(&network)?;
            let store = node::StoreLocation::parse(store_url.as_deref(), migrate)?;
            if journal_url.is_some() && bitcoind.is_some() && !matches!(store, node::StoreLocation::Postgres { .. }) {
                // Replicas of a shared journal take turns at settlement under a lock in the
                // shared store: two settlement services would spend the same coins.
                anyhow::bail!(
                    "--bitcoind with --journal-url needs a PostgreSQL --store-url shared by the replicas: the settlement \
                     leader is elected there"
                );
            }
            let custody = if master_key_file.is_some() || std::env::var_os(custody_cli::MASTER_KEY_ENV).is_some() {
                Some(node::CustodyOptions {
                    master_key: custody_cli::load_master_key(master_key_file.as_deref())?,
                    prime_pool_target,
                    demo: false,
                    secrets_dir: custody_secrets_dir,
                })
            } else {
                tracing::warn!("no master key: running without custody");
                None
            };
            let exchange = match markets {
                Some(p) => serde_json::from_slice::<ExchangeConfig>(&std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?)
                    .with_context(|| format!("parsing {}", p.display()))?,
                None => ExchangeConfig::default(),
            };
            let mut n = node::start(node::NodeOptions {
                data_dir,
                store,
                custody,
                bind,
                exchange,
                gateway: tandem_gateway::GatewayConfig {
                    operator_token,
                    bitcoin_network: network,
                    limits: tandem_gateway::limits::LimitConfig {
                        per_caller_per_minute: limit_per_caller,
                        per_ip_per_minute: limit_per_ip,
                    },
                    ..Default::default()
                },
                sequencer: SequencerConfig { snapshot_every, ..SequencerConfig::default() },
                http_workers,
                redis: redis_url.map(|url| node::RedisOptions { url, prefix: redis_prefix }),
                journal: node::JournalLocation::parse(journal_url.as_deref(), publish_events)?,
            })
            .await?;
            let services = match bitcoind {
                Some(url) => {
                    let auth = tandem_settlement::BitcoindAuth::UserPass { user: rpc_user, password: rpc_password };
                    let chain = tandem_settlement::Bitcoind::connect(tandem_settlement::BitcoindConfig::new(url, auth, network))
                        .await
                        .context("connecting to bitcoind")?;
                    let chain: std::sync::Arc<dyn tandem_settlement::Chain> = std::sync::Arc::new(chain);
                    let policy = tandem_settlement::deposits::DepositPolicy { confirmations: deposit_confirmations };
                    let deposits = tandem::deposits::DepositService {
                        start_height: chain_start_height,
                        interval: Duration::from_secs(2),
                        ..tandem::deposits::DepositService::for_node(&n, chain.clone(), policy)?
                    };
                    let config = tandem::settlement::SettlementConfig {
                        window: Duration::from_secs(settlement_window_secs),
                        max_movements: settlement_max_movements,
                        confirmations: settlement_confirmations,
                        signing_deadline: Duration::from_secs(signing_deadline_secs),
                        bump_after: Duration::from_secs(settlement_bump_after_secs),
                        late_penalty: Duration::from_secs(settlement_late_penalty_secs),
                        force_after: Duration::from_secs(settlement_force_after_secs),
                        ..Default::default()
                    };
                    let settlement = match &n.vaults {
                        Some(_) => Some(tandem::settlement::SettlementService::for_node(&n, chain, config)?),
                        None => {
                            tracing::warn!("no custody: nothing is settled on chain");
                            None
                        }
                    };
                    let reconciler = n.reconciler.clone();
                    let start = move |leader_epoch: Option<u64>| {
                        let mut tasks = vec![tandem::deposits::DepositService { leader_epoch, ..deposits.clone() }.spawn()];
                        if let Some(s) = &settlement {
                            let service = tandem::settlement::SettlementService { leader_epoch, ..(**s).clone() };
                            tasks.push(std::sync::Arc::new(service).spawn(&reconciler));
                        }
                        tasks
                    };
                    if journal_url.is_some() {
                        tracing::info!("settlement runs on whichever replica leads; trying for the lead");
                        let leader = tandem::leadership::LeaderLoop {
                            store: n.store.clone(),
                            sequencer: n.sequencer.clone(),
                            start: Box::new(move |epoch| Ok(start(Some(epoch)))),
                            interval: Duration::from_secs(1),
                            leading: n.settlement_leader.clone(),
                        };
                        vec![leader.spawn()]
                    } else {
                        start(None)
                    }
                }
                None => {
                    tracing::warn!("no --bitcoind: chain deposits are not credited and nothing is settled");
                    Vec::new()
                }
            };
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
        Cmd::Reconcile { url, operator_token } => {
            let mut client = tandem::client::Client::connect(&url).await?;
            let auth = tandem::client::Auth::Operator(operator_token);
            let (status, report) = client.send("GET", "/v1/operator/reconciliation", None, &auth).await?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            if status != 200 {
                eprintln!("reconciliation unavailable: HTTP {status}");
                std::process::exit(2);
            }
            if report["balanced"] != serde_json::Value::Bool(true) {
                eprintln!("ledger and chain differ: {}", report["differences"]);
                std::process::exit(1);
            }
            Ok(())
        }
        Cmd::Store { command: StoreCmd::Rebuild { data_dir, store_url } } => {
            let dirs = node::DataDir::new(&data_dir);
            let _lock = dirs.lock_exclusive()?;
            let store = node::StoreLocation::parse(store_url.as_deref(), false)?.open(&dirs).await?;
            store.reset_projections().await?;
            println!("projections dropped; the next start rebuilds them from the journal");
            Ok(())
        }
        Cmd::Migrate { data_dir, store_url } => {
            let dirs = node::DataDir::new(data_dir.as_deref().unwrap_or(std::path::Path::new(".")));
            let location = node::StoreLocation::parse(store_url.as_deref(), true)?;
            let store = location.open(&dirs).await?;
            println!("store migrated ({:?}); projected up to seq {}", store.backend(), store.projected_seq().await?.0);
            Ok(())
        }
        Cmd::Bench {
            command:
                BenchCmd::Http {
                    credentials,
                    connections,
                    seconds,
                    warmup_seconds,
                    http_workers,
                    client_order_ids,
                    journal_url,
                    replicas,
                    store_url,
                },
        } => {
            let opts = bench_http::BenchOptions {
                credentials,
                connections,
                duration: Duration::from_secs(seconds),
                warmup: Duration::from_secs(warmup_seconds),
                http_workers,
                client_order_ids,
                journal: node::JournalLocation::parse(journal_url.as_deref(), false)?,
                replicas,
                store: node::StoreLocation::parse(store_url.as_deref(), true)?,
            };
            let report = bench_http::run(opts.clone()).await?;
            bench_http::print(&report, &opts);
            Ok(())
        }
        Cmd::Bench { command: BenchCmd::Settlement { inputs, rounds } } => {
            let reports = tandem::bench_settlement::run(tandem::bench_settlement::SettlementBenchOptions { inputs, rounds }).await?;
            for r in &reports {
                println!("{}", tandem::bench_settlement::line(r));
            }
            Ok(())
        }
        Cmd::Cosigner {
            command:
                CosignerCmd::Run {
                    data_dir,
                    provider,
                    master_key_file,
                    demo_primes,
                    provider_timeout_secs,
                    max_fee_sat,
                    settlement_deadline_secs,
                    recovery_bind,
                },
        } => {
            let key = custody_cli::load_master_key(master_key_file.as_deref())?;
            let opts = tandem::cosigner::CosignerOptions {
                provider_url: provider.trim_end_matches('/').to_owned(),
                demo: demo_primes,
                provider_timeout: Duration::from_secs(provider_timeout_secs),
                max_fee: bitcoin::Amount::from_sat(max_fee_sat),
                settlement_deadline: Duration::from_secs(settlement_deadline_secs),
            };
            let cosigner = tandem::cosigner::Cosigner::open(&data_dir, &key, opts).await?;
            println!("co-signer {} following {provider}", cosigner.identity().pubkey_hex());
            let recovery = match recovery_bind {
                Some(addr) => {
                    let listener = std::net::TcpListener::bind(addr).with_context(|| format!("binding {addr}"))?;
                    println!("recovery relay on http://{}", listener.local_addr()?);
                    Some(tokio::spawn(tandem::cosigner::recovery::serve(cosigner.clone(), listener)))
                }
                None => None,
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = cosigner.run() => {}
            }
            if let Some(r) = recovery {
                r.abort();
            }
            Ok(())
        }
        Cmd::Journal { .. } | Cmd::Wallet(_) | Cmd::Custody { .. } | Cmd::Cosigner { command: CosignerCmd::Init { .. } } => {
            unreachable!("handled in main")
        }
    }
}
