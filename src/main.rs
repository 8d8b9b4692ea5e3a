use anyhow::Context;
use clap::{CommandFactory, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use tandem::process::{ChainArgs, CustodyArgs, ExchangeArgs, LimitArgs};
use tandem::{bench_http, custody_cli, demo, journal_cli, node, wallet};

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
    /// Runs an exchange node on a data dir: every part in one process.
    Serve {
        #[command(flatten)]
        exchange: ExchangeArgs,
        /// Also publish every applied command's events on `<journal topic>.events` (keyed by
        /// seq; a consumer keeps the first record per seq).
        #[arg(long, requires = "journal_url")]
        publish_events: bool,
        #[command(flatten)]
        limits: LimitArgs,
        #[command(flatten)]
        custody: CustodyArgs,
        #[command(flatten)]
        chain: ChainArgs,
    },
    /// One process of a split exchange: the public API (HTTP and WebSocket). Any number of
    /// gateways serve the same exchange.
    Gateway {
        #[command(flatten)]
        exchange: ExchangeArgs,
        #[command(flatten)]
        limits: LimitArgs,
        /// The custody process (`tandem custody run`), where `/v1/mpc/...` is forwarded.
        #[arg(long, env = "TANDEM_RELAY_URL", value_name = "URL")]
        relay_url: Option<String>,
    },
    /// One process of a split exchange: keeps the store's projections and publishes the event
    /// stream (`<journal topic>.events`); a second one is a hot standby.
    Matching {
        #[command(flatten)]
        exchange: ExchangeArgs,
    },
    /// One process of a split exchange: credits chain deposits and settles batches while it
    /// holds the settlement lock (others stand by), signing through the custody process.
    Settlement {
        #[command(flatten)]
        exchange: ExchangeArgs,
        #[command(flatten)]
        chain: ChainArgs,
        /// The custody process (`tandem custody run`) whose internal API signs.
        #[arg(long, env = "TANDEM_CUSTODY_URL", value_name = "URL")]
        custody_url: String,
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
        /// Serve `/health`, `/ready` (the provider answers) and `/metrics` here.
        #[arg(long, value_name = "ADDR")]
        bind: Option<SocketAddr>,
    },
}

// Parsed once at start: the size of a variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum CustodyCmd {
    /// One process of a split exchange: the provider's signer. Hosts the MPC relay (gateways
    /// forward to it), takes the provider's part in vault creation and signing, and serves the
    /// custody API the settlement process signs through.
    Run {
        #[command(flatten)]
        exchange: ExchangeArgs,
        #[command(flatten)]
        custody: CustodyArgs,
    },
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

// Parsed once at start: the size of a variant costs nothing.
#[allow(clippy::large_enum_variant)]
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
        /// Drive a running cluster (`scripts/cluster`) through these gateways (comma-separated
        /// URLs) instead of own nodes; needs the flags below.
        #[arg(long, value_delimiter = ',', requires_all = ["operator_token", "custody_url", "bitcoind"])]
        urls: Vec<String>,
        #[arg(long, env = "TANDEM_OPERATOR_TOKEN", hide_env_values = true)]
        operator_token: Option<String>,
        /// The cluster's custody process (its pool key gives the accounts' BTC deposit addresses).
        #[arg(long, value_name = "URL")]
        custody_url: Option<String>,
        /// The cluster's regtest bitcoind: the accounts' BTC arrives there.
        #[arg(long, value_name = "URL")]
        bitcoind: Option<String>,
        #[arg(long, env = "TANDEM_RPC_USER", default_value = "")]
        rpc_user: String,
        #[arg(long, env = "TANDEM_RPC_PASSWORD", hide_env_values = true, default_value = "")]
        rpc_password: String,
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
        Cmd::Serve { exchange, publish_events, limits, custody, chain } => {
            tandem::process::serve(exchange, limits, custody, chain, publish_events).await
        }
        Cmd::Gateway { exchange, limits, relay_url } => tandem::process::gateway(exchange, limits, relay_url).await,
        Cmd::Matching { exchange } => tandem::process::matching(exchange).await,
        Cmd::Settlement { exchange, chain, custody_url } => tandem::process::settlement(exchange, chain, custody_url).await,
        Cmd::Custody { command: CustodyCmd::Run { exchange, custody } } => tandem::process::custody(exchange, custody).await,
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
                    urls,
                    operator_token,
                    custody_url,
                    bitcoind,
                    rpc_user,
                    rpc_password,
                },
        } => {
            let cluster = match (urls.is_empty(), operator_token, custody_url, bitcoind) {
                (true, ..) => None,
                (false, Some(operator_token), Some(custody_url), Some(bitcoind)) => Some(bench_http::ClusterTarget {
                    gateways: urls,
                    operator_token,
                    custody_url,
                    bitcoind,
                    rpc_user,
                    rpc_password,
                }),
                _ => anyhow::bail!("--urls needs --operator-token, --custody-url and --bitcoind"),
            };
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
                cluster,
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
                    bind,
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
            let probes = match bind {
                Some(addr) => {
                    let listener = std::net::TcpListener::bind(addr).with_context(|| format!("binding {addr}"))?;
                    println!("probes on http://{}", listener.local_addr()?);
                    Some(tokio::spawn(tandem::cosigner::probes::serve(cosigner.clone(), listener)))
                }
                None => None,
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = cosigner.run() => {}
            }
            for task in [recovery, probes].into_iter().flatten() {
                task.abort();
            }
            Ok(())
        }
        Cmd::Journal { .. }
        | Cmd::Wallet(_)
        | Cmd::Custody { command: CustodyCmd::GenPrimes { .. } | CustodyCmd::NewMasterKey { .. } }
        | Cmd::Cosigner { command: CosignerCmd::Init { .. } } => {
            unreachable!("handled in main")
        }
    }
}
