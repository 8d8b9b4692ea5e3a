//! One exchange node: journal, engine, projections and API wired together over a data dir.
//!
//! Start-up order matters for durability: the journal is opened (a torn tail is cut), the engine
//! is rebuilt from the newest snapshot the projections allow plus every later record, the
//! projections catch up from the same replay, and only then does the API accept commands.

use crate::journal_port::{FileCommandLog, FileSnapshotSink};
use crate::replay::{genesis_config, replay};
use anyhow::{bail, Context};
use std::fs::File;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tandem_gateway::{Gateway, GatewayConfig, Relay};
use tandem_journal::{Journal, JournalConfig, SnapshotStore};
use tandem_matching::sequencer::encode_record;
use tandem_matching::{
    Applied, Command, Engine, EngineConfig, Envelope, ExchangeConfig, Seq, Sequencer, SequencerConfig, SequencerHandle,
    Timestamp,
};
use tandem_store::{ProjectorHandle, Projector, Store};

pub struct NodeOptions {
    pub data_dir: PathBuf,
    /// Where the projections and the node's other tables live.
    pub store: StoreLocation,
    /// Custody of the provider's secrets; `None` runs the exchange without a prime pool.
    pub custody: Option<CustodyOptions>,
    pub bind: SocketAddr,
    pub exchange: ExchangeConfig,
    pub gateway: GatewayConfig,
    pub sequencer: SequencerConfig,
    pub http_workers: usize,
    /// Redis shared by the gateways of one exchange; `None` keeps request budgets in process.
    pub redis: Option<RedisOptions>,
    /// Where the command journal is.
    pub journal: JournalLocation,
    /// This process keeps the store's projections; `false`: another process of the exchange
    /// does (`tandem matching`), and this one follows the store's cursor.
    pub project: bool,
}

/// The node's command journal.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum JournalLocation {
    /// Segment files in the data dir, written by this node alone.
    #[default]
    DataDir,
    /// A Kafka partition every replica of the exchange writes and reads (see `shared_journal`);
    /// `publish_events`: this replica also publishes the event stream (`<topic>.events`).
    Kafka { config: tandem_kafka::KafkaConfig, publish_events: bool },
}

impl JournalLocation {
    /// `kafka://host:port/topic`, or `None` for the data dir.
    pub fn parse(url: Option<&str>, publish_events: bool) -> anyhow::Result<JournalLocation> {
        match url {
            None if publish_events => bail!("publishing events needs a Kafka journal (--journal-url)"),
            None => Ok(JournalLocation::DataDir),
            Some(u) => Ok(JournalLocation::Kafka { config: tandem_kafka::KafkaConfig::parse(u)?, publish_events }),
        }
    }
}

/// Where the gateways of one exchange keep what they share: each caller's request budget and
/// the answers kept for idempotency keys.
#[derive(Clone, Debug)]
pub struct RedisOptions {
    /// `redis://host:port[/db]`.
    pub url: String,
    /// Prefix of every key, so exchanges (or tests) can share one Redis.
    pub prefix: String,
}

/// The node's database.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum StoreLocation {
    /// SQLite, `store.db` in the data dir.
    #[default]
    DataDir,
    /// PostgreSQL at this URL, in `schema` if given; `migrate`: bring its tables up to this
    /// version at start, else require them to be (`tandem migrate` does it).
    Postgres { url: String, schema: Option<String>, migrate: bool },
}

impl StoreLocation {
    /// `postgres://...` (optionally `#schema`), or `None` for the data dir.
    pub fn parse(url: Option<&str>, migrate: bool) -> anyhow::Result<StoreLocation> {
        match url {
            None => Ok(StoreLocation::DataDir),
            Some(u) if u.starts_with("postgres://") || u.starts_with("postgresql://") => {
                let (url, schema) = match u.split_once('#') {
                    Some((url, schema)) => (url.to_owned(), Some(schema.to_owned())),
                    None => (u.to_owned(), None),
                };
                Ok(StoreLocation::Postgres { url, schema, migrate })
            }
            Some(u) => bail!("--store-url {u:?}: only postgres:// URLs (the default is SQLite in the data dir)"),
        }
    }

    /// Opens (and migrates) the store.
    pub async fn open(&self, dirs: &DataDir) -> anyhow::Result<Store> {
        Ok(match self {
            StoreLocation::DataDir => {
                Store::open_sqlite(&dirs.store()).await.with_context(|| format!("opening {}", dirs.store().display()))?
            }
            StoreLocation::Postgres { url, schema, migrate } => {
                let opened = if *migrate {
                    Store::open_postgres(url, schema.as_deref()).await
                } else {
                    Store::open_postgres_migrated(url, schema.as_deref()).await
                };
                opened.with_context(|| format!("opening PostgreSQL at {}", redact(url)))?
            }
        })
    }
}

/// A URL without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => match url[s + 3..at].split_once(':') {
            Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
            None => url.to_owned(),
        },
        _ => url.to_owned(),
    }
}

pub struct CustodyOptions {
    /// The operator's master key: every secret at rest is sealed under it.
    pub master_key: tandem_custody::MasterKey,
    /// Keep this many safe-prime pairs ready, generated in the background (0: never generate).
    pub prime_pool_target: usize,
    /// Demo configuration (`CustodyConfig::demo()`): the provider's vault service uses and
    /// accepts the fixture primes and shows addresses on regtest; `GET /v1/mpc/provider` says
    /// `"demo": true`.
    pub demo: bool,
    /// Where the sealed secrets live (the provider identity, the pool seed, vault key shares);
    /// `None`: `data/custody/secrets`. Replicas of one exchange share one directory, so each
    /// is the same provider; records are written once under new names, or create-if-absent.
    /// Presignatures and safe primes stay in each replica's own data dir: both are used once.
    pub secrets_dir: Option<PathBuf>,
}

/// Paths inside a data dir.
pub struct DataDir {
    pub root: PathBuf,
}

impl DataDir {
    pub fn new(root: &Path) -> DataDir {
        DataDir { root: root.to_path_buf() }
    }
    pub fn journal(&self) -> PathBuf {
        self.root.join("journal")
    }
    pub fn snapshots(&self) -> PathBuf {
        self.root.join("snapshots")
    }
    /// Snapshots of a replica of a shared (Kafka) journal: framed with their offset.
    pub fn shared_snapshots(&self) -> PathBuf {
        self.root.join("snapshots-shared")
    }
    pub fn store(&self) -> PathBuf {
        self.root.join("tandem.sqlite")
    }
    pub fn custody_secrets(&self) -> PathBuf {
        self.root.join("custody").join("secrets")
    }
    pub fn custody_presignatures(&self) -> PathBuf {
        self.root.join("custody").join("presignatures")
    }
    pub fn prime_pool(&self) -> PathBuf {
        self.root.join("custody").join("primes")
    }
    pub fn lock(&self) -> PathBuf {
        self.root.join("LOCK")
    }

    /// Exclusive use of the data dir: two writers on one journal would corrupt it.
    pub fn lock_exclusive(&self) -> anyhow::Result<File> {
        std::fs::create_dir_all(&self.root).with_context(|| format!("creating {}", self.root.display()))?;
        let file = File::create(self.lock()).with_context(|| format!("creating {}", self.lock().display()))?;
        match file.try_lock() {
            Ok(()) => Ok(file),
            Err(_) => bail!("another tandem process is using {}", self.root.display()),
        }
    }
}

pub struct Node {
    pub addr: SocketAddr,
    pub sequencer: SequencerHandle,
    pub store: Store,
    pub projector: ProjectorHandle,
    pub engine_config: EngineConfig,
    /// The gateway's MPC relay, for the in-process provider party.
    pub relay: Arc<Relay>,
    /// The provider's long-term identity in MPC sessions (`None` without custody).
    pub provider_identity: Option<bitcoin::secp256k1::Keypair>,
    /// The provider's vault service: vault creation, and signing spends (`None` without custody).
    pub vaults: Option<Arc<crate::provider::VaultService>>,
    /// Where the settlement service plugs in its reconciliation once it runs.
    pub reconciler: tandem_gateway::ReconcilerSlot,
    /// The settlement leadership epoch this node leads (0: it does not lead, or settlement has
    /// no leader: an embedded journal), shown in `/metrics`.
    pub settlement_leader: Arc<std::sync::atomic::AtomicU64>,
    /// It keeps the projections (else another process does).
    projects: bool,
    /// Tasks that live as long as the node (the event stream's turns).
    background: Vec<tokio::task::JoinHandle<()>>,
    server: actix_web::dev::ServerHandle,
    server_task: tokio::task::JoinHandle<std::io::Result<()>>,
    core: Option<Sequencer>,
    prime_pool: Option<Arc<tandem_custody::PrimePool>>,
    _lock: File,
}

pub async fn start(opts: NodeOptions) -> anyhow::Result<Node> {
    let dirs = DataDir::new(&opts.data_dir);
    let lock = dirs.lock_exclusive()?;
    let wanted = opts.exchange.to_engine()?;

    let store = opts.store.open(&dirs).await?;
    if !opts.project && opts.journal == JournalLocation::DataDir {
        bail!("only a replica of a shared journal may leave projecting to another process");
    }
    let projected = store.projected_seq().await?;
    let (sink, sink_rx) = crossbeam_channel::bounded::<Arc<Applied>>(1 << 16);
    // Before the engine is rebuilt: the rebuild feeds the projector what it has not seen.
    let projector = match opts.project {
        true => Projector::spawn(store.clone(), sink_rx, projected),
        false => {
            drop(sink_rx);
            Projector::follow(store.clone(), Duration::from_millis(10))
        }
    };
    let (mut events_turn, mut background) = (None, Vec::new());
    let (core, engine_config) = match &opts.journal {
        JournalLocation::DataDir => start_on_files(&dirs, wanted, projected, sink, opts.sequencer).await?,
        JournalLocation::Kafka { config: kafka, publish_events } => {
            let snapshots = SnapshotStore::open(&dirs.shared_snapshots())?;
            let (kafka, sequencer, publish_events, project) = (kafka.clone(), opts.sequencer, *publish_events, opts.project);
            // On a shared store, publishers take turns under its lock; alone, it just publishes.
            let turn = (publish_events && store.backend() == tandem_store::Backend::Postgres)
                .then(tandem_kafka::events::PublishTurn::new);
            if let Some(turn) = &turn {
                events_turn = Some(turn.clone());
                background.push(
                    crate::leadership::PublishLeader { store: store.clone(), turn: turn.clone(), interval: Duration::from_millis(500) }
                        .spawn(),
                );
            }
            // Kafka's clients block: off the runtime.
            let started = tokio::task::spawn_blocking(move || {
                // A snapshot newer than the projections would skip what they have not seen.
                let (mut sinks, mut snapshot_limit) = match project {
                    true => (vec![sink], projected),
                    false => (Vec::new(), Seq(u64::MAX)),
                };
                if publish_events {
                    // The publisher thread ends when the sequencer drops its sink.
                    let (events, published, _publisher) = crate::shared_journal::spawn_event_publisher(&kafka, turn)?;
                    sinks.push(events);
                    snapshot_limit = snapshot_limit.min(published);
                }
                crate::shared_journal::start(&kafka, wanted, snapshots, snapshot_limit, sequencer, sinks)
            })
            .await??;
            let last_seq = started.0.handle().metrics().last_seq.load(std::sync::atomic::Ordering::Relaxed);
            if opts.project && projected.0 > last_seq {
                started.0.shutdown();
                bail!(
                    "the store has projected seq {} but the Kafka journal ends at {last_seq}; run `tandem store rebuild`",
                    projected.0
                );
            }
            started
        }
    };
    let sequencer = core.handle();

    let listener = TcpListener::bind(opts.bind).with_context(|| format!("binding {}", opts.bind))?;
    let addr = listener.local_addr()?;
    let mut gateway_config = opts.gateway;
    let network = gateway_config.bitcoin_network;
    let provider_identity = match &opts.custody {
        Some(c) => {
            let keypair = provider_identity(&c.secrets_dir.clone().unwrap_or_else(|| dirs.custody_secrets()), &c.master_key)?;
            gateway_config.mpc.provider_identity = Some(keypair.x_only_public_key().0);
            gateway_config.mpc.demo = c.demo;
            Some(keypair)
        }
        None => None,
    };
    let mut gateway = Gateway::new(sequencer.clone(), store.clone(), projector.clone(), engine_config.clone(), gateway_config);
    if let Some(redis) = &opts.redis {
        let connection = tandem_gateway::redis_link::connect(&redis.url)
            .await
            .map_err(|e| anyhow::anyhow!(e))
            .context("request budgets and idempotency records in Redis")?;
        // The event stream's publisher also keeps the market-data snapshots there.
        if matches!(opts.journal, JournalLocation::Kafka { publish_events: true, .. }) {
            let snapshots = crate::market_data::BookSnapshots {
                sequencer: sequencer.clone(),
                engine_config: engine_config.clone(),
                redis: connection.clone(),
                prefix: redis.prefix.clone(),
                depth: crate::market_data::BookSnapshots::DEFAULT_DEPTH,
                interval: crate::market_data::BookSnapshots::DEFAULT_INTERVAL,
                turn: events_turn.clone(),
            };
            background.push(snapshots.spawn());
        }
        gateway = gateway
            .with_shared_replay_guard(connection.clone(), &redis.prefix)
            .with_limit_store(Arc::new(tandem_gateway::limits::RedisLimits::new(connection.clone(), &redis.prefix)))
            .with_idempotency_store(Arc::new(tandem_gateway::idempotency::RedisRecords::new(connection, &redis.prefix)));
    }
    let (prime_pool, custody) = match opts.custody {
        Some(c) => {
            let secrets_dir = c.secrets_dir.clone().unwrap_or_else(|| dirs.custody_secrets());
            let (master_key, demo) = (c.master_key.clone(), c.demo);
            (Some(open_prime_pool(&dirs, c, &gateway)?), Some((master_key, demo, secrets_dir)))
        }
        None => (None, None),
    };
    let relay = gateway.relay();
    let reconciler = gateway.reconciler_slot();
    let settlement_leader = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let leading = settlement_leader.clone();
    if let Some(turn) = events_turn {
        gateway.metrics().register_gauge_fn(
            "tandem_events_publisher_epoch",
            "The event stream's turn this process holds (0: another process publishes)",
            move || turn.epoch.load(std::sync::atomic::Ordering::Relaxed) as i64,
        )?;
    }
    gateway.metrics().register_gauge_fn(
        "tandem_settlement_leader_epoch",
        "The settlement leadership epoch this replica leads (0: it does not lead)",
        move || leading.load(std::sync::atomic::Ordering::Relaxed) as i64,
    )?;
    let mut vaults = None;
    // The provider's vault service subscribes before the API serves, so it sees every session.
    if let (Some((master_key, demo, secrets_dir)), Some(identity)) = (custody, provider_identity) {
        let secrets = tandem_custody::EncryptedShareStore::open(secrets_dir, tandem_custody::Keyring::new(master_key.clone()))?;
        let btc = match btc_asset(&engine_config) {
            Ok(id) => Some(id),
            Err(e) => {
                tracing::warn!(error = %e, "the provider signs no BTC withdrawal");
                None
            }
        };
        let presignatures = tandem_custody::FilePresignatureStore::open(
            dirs.custody_presignatures(),
            tandem_custody::Keyring::new(master_key.clone()),
        )?;
        let service = crate::provider::VaultService::new(
            relay.clone(),
            identity,
            store.clone(),
            (secrets, Arc::new(presignatures)),
            prime_pool.clone(),
            demo,
            network,
            Some((sequencer.clone(), btc)),
        )?;
        service.clone().spawn();
        vaults = Some(service);
    }
    // With custody here, its internal API too (for a settlement process elsewhere).
    let extra: tandem_gateway::ExtraRoutes = match &vaults {
        Some(v) => {
            let v = v.clone();
            Arc::new(move |cfg: &mut actix_web::web::ServiceConfig| crate::custodian::api::configure(cfg, v.clone()))
        }
        None => Arc::new(|_: &mut actix_web::web::ServiceConfig| {}),
    };
    let server = tandem_gateway::serve_with(gateway, listener, opts.http_workers, extra)?;
    let server_handle = server.handle();
    let server_task = tokio::spawn(server);
    tracing::info!(%addr, "API listening");
    Ok(Node {
        addr,
        sequencer,
        store,
        projector,
        engine_config,
        relay,
        provider_identity,
        vaults,
        reconciler,
        settlement_leader,
        projects: opts.project,
        background,
        server: server_handle,
        server_task,
        core: Some(core),
        prime_pool,
        _lock: lock,
    })
}

/// The provider's identity key for MPC sessions: made once, sealed under the master key in
/// the custody secrets, the same on every start (wallets and co-signers pin it).
fn provider_identity(secrets_dir: &Path, master_key: &tandem_custody::MasterKey) -> anyhow::Result<bitcoin::secp256k1::Keypair> {
    const NAME: &str = "provider-identity";
    let secrets = tandem_custody::EncryptedShareStore::open(secrets_dir, tandem_custody::Keyring::new(master_key.clone()))?;
    let secp = bitcoin::secp256k1::Secp256k1::signing_only();
    let existed = secrets.contains(NAME)?;
    // Replicas sharing the custody directory may start together: the first identity written wins.
    let fresh = zeroize::Zeroizing::new(hex::encode(tandem_custody::channel::random_identity().secret_bytes()));
    let hex: zeroize::Zeroizing<String> = zeroize::Zeroizing::new(
        secrets.get_or_put::<String>(NAME, &fresh).with_context(|| "opening the provider identity (wrong master key?)")?,
    );
    let mut bytes = zeroize::Zeroizing::new([0u8; 32]);
    hex::decode_to_slice(hex.as_str(), &mut bytes[..]).context("provider identity record is not 32 bytes of hex")?;
    let keypair = bitcoin::secp256k1::Keypair::from_seckey_slice(&secp, &bytes[..])?;
    if !existed {
        tracing::info!(identity = %keypair.x_only_public_key().0, "provider identity created");
    }
    Ok(keypair)
}

/// Opens the persistent pool of safe primes (sealed under the master key), shows its size in
/// `/metrics`, and tops it up in the background: aux info for a new signer group then never
/// waits tens of seconds for primes.
fn open_prime_pool(
    dirs: &DataDir,
    custody: CustodyOptions,
    gateway: &Gateway,
) -> anyhow::Result<Arc<tandem_custody::PrimePool>> {
    let keyring = tandem_custody::Keyring::new(custody.master_key);
    let pool = tandem_custody::PrimePool::open(dirs.prime_pool(), keyring)
        .with_context(|| format!("opening the prime pool in {}", dirs.prime_pool().display()))?;
    let reader = pool.clone();
    gateway.metrics().register_gauge_fn(
        "tandem_custody_prime_pool_size",
        "Pregenerated safe-prime pairs ready for aux info",
        move || reader.len() as i64,
    )?;
    if custody.prime_pool_target > pool.len() {
        tracing::info!(have = pool.len(), target = custody.prime_pool_target, "filling the prime pool in the background");
        pool.fill(custody.prime_pool_target, |p| tracing::info!(len = p.len, target = p.target, "safe primes generated"))?;
    }
    Ok(pool)
}

impl Node {
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops taking requests, finishes queued commands, and lets the projections catch up.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        if let Some(pool) = &self.prime_pool {
            pool.stop_filling();
        }
        for task in &self.background {
            task.abort();
        }
        // Long polls on the MPC relay would otherwise hold the graceful stop for their wait.
        self.relay.close();
        self.server.stop(true).await;
        // `wait` may have seen the server end already; a finished task is not polled again.
        if !self.server_task.is_finished() {
            let _ = (&mut self.server_task).await;
        }
        let last = self.sequencer.metrics().last_seq.load(std::sync::atomic::Ordering::Relaxed);
        if let Some(core) = self.core.take() {
            tokio::task::spawn_blocking(move || core.shutdown()).await?;
        }
        if self.projects && !self.projector.wait_for(Seq(last), Duration::from_secs(30)).await {
            tracing::warn!(last, "projections still behind at shutdown; they catch up on the next start");
        }
        Ok(())
    }

    /// Resolves when the server stops for any reason.
    pub async fn wait(&mut self) -> std::io::Result<()> {
        (&mut self.server_task).await.unwrap_or(Ok(()))
    }
}

/// The ledger's BTC asset, which the chain side counts in satoshis: it must have 8 decimals
/// (its minimal unit is then the satoshi), or every amount crossing between ledger and chain
/// would be off by a power of ten.
pub fn btc_asset(config: &tandem_matching::EngineConfig) -> anyhow::Result<tandem_matching::AssetId> {
    let id = config.asset_by_symbol("BTC").context("the exchange has no BTC asset")?;
    let spec = config.asset(id).context("the BTC asset")?;
    if spec.decimals != 8 {
        bail!("the BTC asset has {} decimals; chain amounts are satoshis, so it must have 8", spec.decimals);
    }
    Ok(id)
}

pub fn now_millis() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// The embedded journal: segment files in the data dir, replayed from the newest snapshot the
/// projections allow.
async fn start_on_files(
    dirs: &DataDir,
    wanted: EngineConfig,
    projected: Seq,
    sink: crossbeam_channel::Sender<Arc<Applied>>,
    config: SequencerConfig,
) -> anyhow::Result<(Sequencer, EngineConfig)> {
    let (mut journal, recovery) = Journal::open(JournalConfig::new(dirs.journal()))
        .with_context(|| format!("opening the journal in {}", dirs.journal().display()))?;
    if let Some(t) = &recovery.torn_tail {
        tracing::warn!(segment = %t.segment.display(), offset = t.offset, bytes = t.bytes_dropped, "cut a torn journal tail (crash during a write)");
    }
    tracing::info!(records = recovery.records, last_seq = recovery.last_seq, segments = recovery.segments, "journal opened");
    let engine_config = if recovery.last_seq == 0 {
        let genesis = Envelope { seq: Seq(1), timestamp: Timestamp(now_millis()), command: Command::Genesis(wanted.clone()) };
        journal.append(1, &encode_record(&genesis))?;
        journal.commit()?;
        wanted
    } else {
        let recorded = genesis_config(&dirs.journal())?.context("journal has records but no genesis")?;
        if recorded != wanted {
            bail!(
                "the configured assets and markets differ from the ones this exchange was created with \
                 (journal genesis in {}); start with the original configuration",
                dirs.journal().display()
            );
        }
        recorded
    };

    let journal_end = journal.last_seq();
    if projected.0 > journal_end {
        bail!(
            "the store has projected seq {} but the journal ends at {journal_end}; run `tandem store rebuild`",
            projected.0
        );
    }

    let snapshots = SnapshotStore::open(&dirs.snapshots())?;
    let journal_dir = dirs.journal();
    let replay_sink = sink.clone();
    let started = std::time::Instant::now();
    let (replayed, snapshots) = tokio::task::spawn_blocking(move || {
        let r = replay(&journal_dir, Some(&snapshots), Some(projected), projected, |a| {
            let _ = replay_sink.send(a);
        });
        (r, snapshots)
    })
    .await?;
    let replayed = replayed?.context("journal is empty after genesis")?;
    let engine: Engine = replayed.engine;
    tracing::info!(
        last_seq = engine.last_seq().0,
        from_snapshot = ?replayed.from_snapshot,
        records = replayed.records,
        millis = started.elapsed().as_millis() as u64,
        "engine rebuilt from the journal"
    );

    let core = Sequencer::start(
        engine,
        FileCommandLog(journal),
        Some(Box::new(FileSnapshotSink { store: snapshots, keep: 3 })),
        config,
        vec![sink],
    );
    Ok((core, engine_config))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_btc_asset_must_count_satoshis() {
        let mut config = tandem_matching::ExchangeConfig::default().to_engine().unwrap();
        let btc = super::btc_asset(&config).unwrap();
        config.assets[btc.0 as usize].decimals = 6;
        let err = super::btc_asset(&config).unwrap_err().to_string();
        assert!(err.contains("must have 8"), "{err}");
    }
}
