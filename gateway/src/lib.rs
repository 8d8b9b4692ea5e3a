//! tandem-gateway: the HTTP and WebSocket API in front of the sequencer.
//!
//! Writes become engine commands submitted through [`SequencerHandle`] and are answered with
//! that command's own events, synchronously. Open orders and balances are read from the engine
//! (always current); history (closed orders, trades, ledger, withdrawals) from the store's
//! projections, after waiting for the projector to reach the caller's last write.
//!
//! Parts: [`auth`] (API-key and device-key signatures, operator token, key caches), [`dto`]
//! (wire types and decimal conversion), [`error`] (the error shape and status mapping),
//! `routes::*` (handlers, wallet enrolment among them), [`ws`] (market data and user streams),
//! [`metrics`] (Prometheus), [`relay`] (mailboxes carrying sealed MPC messages between a
//! vault's parties; `routes::mpc` serves it over HTTP, the in-process provider calls it
//! directly through [`Gateway::relay`]), [`openapi`] (the API document generated from the
//! handlers, served at `/v1/openapi.json` and as a page at `/v1/docs`), [`console`] (the
//! operator console's static page).
//!
//! See `docs/API.md` for the API itself.

pub mod replay_guard;
pub mod auth;
pub mod binance;
pub mod console;
pub mod dto;
pub mod error;
pub mod evidence;
pub mod idempotency;
pub mod limits;
pub mod metrics;
pub mod openapi;
pub mod redis_link;
pub mod relay;
pub(crate) mod routes;
pub mod ws;

pub use auth::{random_hex, sign, sign_device};
pub use error::ApiError;
pub use relay::{Relay, RelayConfig};
pub use routes::mpc::{configure_relay, RelayHost};

use actix_web::web::{self, Data};
use actix_web::{App, HttpServer};
use std::sync::Arc;
use std::time::Duration;
use tandem_matching::{Applied, Command, EngineConfig, Seq, SequencerHandle};
use tandem_store::{ProjectorHandle, Store};

/// How long a history read waits for the projector to reach the caller's writes.
const READ_YOUR_WRITES: Duration = Duration::from_secs(1);

#[derive(Clone)]
pub struct GatewayConfig {
    /// Largest allowed distance between a request's timestamp and the server clock.
    pub recv_window_ms: u64,
    /// Bearer token of the operator routes; empty disables them.
    pub operator_token: String,
    /// Market orders without `protection_price` may trade at most this far (in basis points)
    /// past the best opposite price at submission.
    pub market_protection_bps: u32,
    /// Network BTC withdrawal addresses must belong to.
    pub bitcoin_network: bitcoin::Network,
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// `POST /v1/wallet/enrol` opens an account for any wallet, without an enrolment code.
    /// For demos only: anyone who can reach the API can open accounts.
    pub open_enrolment: bool,
    /// The MPC relay (`/v1/mpc/...`): limits, expiry, the provider's identity key.
    pub mpc: RelayConfig,
    /// Request budgets per caller and per IP (see [`limits`]).
    pub limits: limits::LimitConfig,
    /// Which routes this process serves.
    pub surface: ApiSurface,
    /// Where the MPC relay is hosted when not here (`http://host:port` of the custody
    /// process): `/v1/mpc/...` is forwarded there, so wallets and co-signers keep one base URL.
    pub relay_upstream: Option<String>,
}

/// Which routes a process serves.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ApiSurface {
    /// The whole API: market data, trading, accounts, wallets, the MPC relay, the operator.
    #[default]
    Public,
    /// A service behind the gateways (matching, settlement, custody): probes, metrics and the
    /// operator routes; and the MPC relay where `relay` (the custody process hosts it).
    Internal { relay: bool },
}

impl std::fmt::Debug for GatewayConfig {
    /// The operator token stays out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayConfig")
            .field("recv_window_ms", &self.recv_window_ms)
            .field("operator_token", &if self.operator_token.is_empty() { "(none)" } else { "(set)" })
            .field("market_protection_bps", &self.market_protection_bps)
            .field("bitcoin_network", &self.bitcoin_network)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("open_enrolment", &self.open_enrolment)
            .field("mpc", &self.mpc)
            .field("limits", &self.limits)
            .field("surface", &self.surface)
            .field("relay_upstream", &self.relay_upstream)
            .finish()
    }
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            recv_window_ms: 5_000,
            operator_token: String::new(),
            market_protection_bps: 500,
            bitcoin_network: bitcoin::Network::Bitcoin,
            max_body_bytes: 64 * 1024,
            open_enrolment: false,
            mpc: RelayConfig::default(),
            limits: limits::LimitConfig::default(),
            surface: ApiSurface::Public,
            relay_upstream: None,
        }
    }
}

/// Everything a handler needs; shared by all workers through `web::Data`.
pub struct Gateway {
    pub(crate) sequencer: SequencerHandle,
    pub(crate) store: Store,
    pub(crate) projector: ProjectorHandle,
    pub(crate) engine_config: Arc<EngineConfig>,
    pub(crate) config: GatewayConfig,
    pub(crate) metrics: metrics::Metrics,
    pub(crate) keys: auth::KeyCache,
    pub(crate) devices: auth::DeviceCache,
    pub(crate) replays: replay_guard::ReplayGuard,
    pub(crate) cosigners: auth::CosignerCache,
    pub(crate) relay: Arc<Relay>,
    pub(crate) reconciler: ReconcilerSlot,
    pub(crate) limiter: limits::Limiter,
    pub(crate) idempotency: Arc<dyn idempotency::IdempotencyStore>,
}

/// Reconciles the ledger against the chain. The settlement service implements it (it has the
/// chain); the gateway only serves the report at `GET /v1/operator/reconciliation`.
pub trait Reconciler: Send + Sync {
    /// The report, with `"balanced": true` when ledger and chain agree to the satoshi.
    fn reconcile(&self) -> futures_util::future::BoxFuture<'_, Result<serde_json::Value, String>>;
}

/// Where the settlement service plugs its [`Reconciler`] in once it runs (it may start after
/// the API).
pub type ReconcilerSlot = Arc<std::sync::OnceLock<Arc<dyn Reconciler>>>;

impl Gateway {
    /// `engine_config` is the engine's own (`sequencer.read(|e| e.config().clone())`): the
    /// gateway converts decimals under exactly the rules the engine enforces.
    pub fn new(
        sequencer: SequencerHandle,
        store: Store,
        projector: ProjectorHandle,
        engine_config: EngineConfig,
        config: GatewayConfig,
    ) -> Gateway {
        let metrics = metrics::Metrics::new(sequencer.clone(), projector.clone());
        Gateway {
            sequencer,
            store,
            projector,
            engine_config: Arc::new(engine_config),
            metrics,
            keys: auth::KeyCache::default(),
            devices: auth::DeviceCache::default(),
            replays: replay_guard::ReplayGuard::new(config.recv_window_ms),
            cosigners: auth::CosignerCache::default(),
            relay: Arc::new(Relay::new(config.mpc.clone())),
            reconciler: ReconcilerSlot::default(),
            limiter: limits::Limiter::in_memory(config.limits),
            idempotency: Arc::new(idempotency::MemoryRecords::default()),
            config,
        }
    }

    /// Counts request budgets in `store` (Redis, shared by every gateway process) instead of
    /// in this process.
    pub fn with_limit_store(mut self, store: Arc<dyn limits::LimitStore>) -> Gateway {
        self.limiter = limits::Limiter::new(self.config.limits, store);
        self
    }

    /// Keeps idempotent answers in `store` (Redis, shared by every gateway process) instead of
    /// in this process.
    pub fn with_idempotency_store(mut self, store: Arc<dyn idempotency::IdempotencyStore>) -> Gateway {
        self.idempotency = store;
        self
    }

    /// Claims every signed change's signature in Redis too, so a request captured at one gateway
    /// is refused at every other gateway sharing it.
    pub fn with_shared_replay_guard(mut self, connection: redis_link::RedisConnection, prefix: &str) -> Gateway {
        self.replays = replay_guard::ReplayGuard::new(self.config.recv_window_ms).with_redis(connection, prefix);
        self
    }

    /// The slot for the settlement service's [`Reconciler`]; keep a clone before [`serve`].
    pub fn reconciler_slot(&self) -> ReconcilerSlot {
        self.reconciler.clone()
    }

    /// The node's metrics registry, for parts outside the gateway to add their gauges.
    pub fn metrics(&self) -> &metrics::Metrics {
        &self.metrics
    }

    pub fn config(&self) -> &GatewayConfig {
        &self.config
    }

    pub fn engine_config(&self) -> &EngineConfig {
        &self.engine_config
    }

    /// The MPC relay, for parties running in this process (the provider): the same mailboxes
    /// the HTTP routes serve. Keep a clone before handing the gateway to [`serve`].
    pub fn relay(&self) -> Arc<Relay> {
        self.relay.clone()
    }

    pub(crate) fn fmt(&self) -> dto::Fmt<'_> {
        dto::Fmt(&self.engine_config)
    }

    /// Journals and applies a command; sequencer failures become 503s.
    pub(crate) async fn submit(&self, command: Command) -> Result<Arc<Applied>, ApiError> {
        Ok(self.sequencer.submit(command).await?)
    }

    /// The engine's last applied seq, read on the engine thread, so it covers every write the
    /// caller has already been answered for.
    pub(crate) async fn engine_seq(&self) -> Result<Seq, ApiError> {
        Ok(self.sequencer.read(|e| e.last_seq()).await?)
    }

    /// Waits (bounded) until the store reflects `seq`; false if it did not get there in time.
    pub(crate) async fn catch_up(&self, seq: Seq) -> bool {
        self.projector.projected_seq() >= seq || self.projector.wait_for(seq, READ_YOUR_WRITES).await
    }

    /// Read-your-writes for history reads: wait for everything applied so far.
    pub(crate) async fn catch_up_all(&self) -> Result<(), ApiError> {
        let seq = self.engine_seq().await?;
        if !self.catch_up(seq).await {
            tracing::warn!(
                seq = seq.0,
                projected = self.projector.projected_seq().0,
                "projector behind; serving older history"
            );
        }
        Ok(())
    }
}

/// Registers every route, the extractor error handlers, the body limit and the request metrics,
/// and makes unmatched paths answer 404 in the common error shape (the app's default service).
pub fn configure(cfg: &mut web::ServiceConfig, gateway: Data<Gateway>) {
    let limit = gateway.config.max_body_bytes;
    cfg.app_data(gateway.clone())
        .app_data(web::PayloadConfig::new(limit))
        .app_data(
            web::JsonConfig::default()
                .limit(limit)
                .content_type_required(false)
                .error_handler(error::json_extractor_error(limit)),
        )
        .app_data(web::QueryConfig::default().error_handler(error::query_extractor_error))
        .app_data(web::PathConfig::default().error_handler(error::path_extractor_error))
        .configure(routes::public::configure_probes)
        .configure(routes::settlement::configure_operator)
        .configure(routes::signing::configure)
        .configure(routes::operator::configure)
        .service(routes::resource("/metrics", |r| r.route(web::get().to(metrics::scrape))))
        .default_service(web::to(error::not_found));
    let relay_here = match gateway.config.surface {
        ApiSurface::Public => {
            cfg.configure(openapi::configure)
                .configure(routes::public::configure)
                .configure(routes::orders::configure)
                .configure(routes::account::configure)
                .configure(routes::settlement::configure)
                .configure(routes::wallet::configure)
                .configure(binance::configure)
                .configure(console::configure)
                .service(routes::resource("/v1/ws", |r| r.route(web::get().to(ws::connect))));
            true
        }
        ApiSurface::Internal { relay } => relay,
    };
    let max_request_bytes = gateway.config.mpc.max_request_bytes;
    match (&gateway.config.relay_upstream, relay_here) {
        (Some(upstream), true) => {
            let wait = gateway.config.mpc.max_wait;
            cfg.configure(|cfg| routes::mpc_forward::configure(cfg, upstream, max_request_bytes, wait));
        }
        (None, true) => {
            cfg.configure(|cfg| routes::mpc::configure(cfg, max_request_bytes));
        }
        (_, false) => {}
    }
}

/// Runs the API on `listener` with `workers` threads. The caller awaits (or spawns) the server.
pub fn serve(
    gateway: Gateway,
    listener: std::net::TcpListener,
    workers: usize,
) -> std::io::Result<actix_web::dev::Server> {
    serve_with(gateway, listener, workers, Arc::new(|_: &mut web::ServiceConfig| {}))
}

/// Routes a process adds beside the gateway's (the custody process's internal API).
pub type ExtraRoutes = Arc<dyn Fn(&mut web::ServiceConfig) + Send + Sync>;

/// [`serve`], with `extra` routes registered in every worker's app too.
pub fn serve_with(
    gateway: Gateway,
    listener: std::net::TcpListener,
    workers: usize,
    extra: ExtraRoutes,
) -> std::io::Result<actix_web::dev::Server> {
    let data = Data::new(gateway);
    let server = HttpServer::new(move || {
        let (data, extra) = (data.clone(), extra.clone());
        App::new()
            .wrap(actix_web::middleware::from_fn(limits::middleware))
            .configure(move |cfg| configure(cfg, data))
            .configure(move |cfg| extra(cfg))
    })
    .workers(workers.max(1))
    .listen(listener)?
    .run();
    Ok(server)
}
