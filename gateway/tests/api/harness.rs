//! A real exchange for the API tests: sequencer (in-memory log), store (in-memory SQLite) fed by
//! the projector, and the gateway served on 127.0.0.1 with a real HTTP client. No mocks.

use actix_web::dev::ServerHandle;
use awc::http::Method;
use bitcoin::secp256k1::{Keypair, Secp256k1};
use rust_decimal::Decimal;
use serde_json::Value;
use std::net::TcpListener;
use std::time::Duration;
use tandem_gateway::{auth::now_millis, serve, sign, sign_device, Gateway, GatewayConfig};
use tandem_matching::{
    AccountId, Amount, AssetId, Command, Engine, ExchangeConfig, MemoryLog, Seq, Sequencer, SequencerConfig,
    SequencerHandle, Side,
};
use tandem_store::{Projector, Store};

pub const OPERATOR_TOKEN: &str = "test-operator-token";
pub const MAX_BODY: usize = 4096;
pub const BTC: AssetId = AssetId(0);

pub struct Exchange {
    pub base: String,
    pub client: awc::Client,
    pub sequencer: SequencerHandle,
    /// The gateway's MPC relay, as an in-process party (the provider) uses it.
    pub relay: std::sync::Arc<tandem_gateway::Relay>,
    owner: Option<Sequencer>,
    server: ServerHandle,
}

#[derive(Clone, Debug)]
pub struct User {
    pub account: u64,
    pub key: String,
    pub secret: String,
}

/// A wallet's device key (not necessarily enrolled).
pub struct Device {
    pub keypair: Keypair,
}

impl Device {
    pub fn random() -> Device {
        use rand::RngCore;
        let mut secret = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut secret);
        Device { keypair: Keypair::from_seckey_slice(&Secp256k1::new(), &secret).unwrap() }
    }

    /// The x-only public key in hex, as `X-Tandem-Device` carries it.
    pub fn pubkey(&self) -> String {
        self.keypair.x_only_public_key().0.to_string()
    }

    pub fn headers(&self, ts: u64, method: &str, path: &str, body: &[u8]) -> Vec<(&'static str, String)> {
        vec![
            ("X-Tandem-Device", self.pubkey()),
            ("X-Tandem-Timestamp", ts.to_string()),
            ("X-Tandem-Signature", sign_device(&self.keypair, ts, method, path, body)),
        ]
    }
}

pub struct Reply {
    pub status: u16,
    pub body: Value,
    pub headers: awc::http::header::HeaderMap,
}

impl Reply {
    /// The error code of an error reply (panics with the whole reply otherwise).
    pub fn code(&self) -> &str {
        self.body["error"]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("not an error reply: {} {}", self.status, self.body))
    }

    /// A header of the answer as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    #[track_caller]
    pub fn ok(&self) -> &Value {
        assert_eq!(self.status, 200, "expected 200, got {}", self.body);
        &self.body
    }

    #[track_caller]
    pub fn err(&self, status: u16, code: &str) {
        assert_eq!((self.status, self.code()), (status, code), "{}", self.body);
        assert!(self.body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{}", self.body);
    }
}

impl Exchange {
    pub async fn start() -> Exchange {
        Exchange::start_with(|_| {}).await
    }

    /// With changes to the test gateway configuration.
    pub async fn start_with(change: impl FnOnce(&mut GatewayConfig)) -> Exchange {
        Exchange::start_gateway(build(change).await).await
    }

    /// With the idempotency records kept in `records` (which the test can then tamper with).
    pub async fn start_with_records(records: std::sync::Arc<dyn tandem_gateway::idempotency::IdempotencyStore>) -> Exchange {
        let (owner, gateway) = build(|_| {}).await;
        Exchange::start_gateway((owner, gateway.with_idempotency_store(records))).await
    }

    async fn start_gateway((owner, gateway): (Sequencer, tandem_gateway::Gateway)) -> Exchange {
        let sequencer = owner.handle();
        let relay = gateway.relay();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let server = serve(gateway, listener, 1).unwrap();
        let handle = server.handle();
        actix_web::rt::spawn(server);
        let client = awc::Client::builder().timeout(Duration::from_secs(20)).finish();
        Exchange { base, client, sequencer, relay, owner: Some(owner), server: handle }
    }

    pub async fn stop(mut self) {
        self.server.stop(true).await;
        if let Some(owner) = self.owner.take() {
            let _ = tokio::task::spawn_blocking(move || owner.shutdown()).await;
        }
    }

    pub async fn raw(&self, method: Method, path: &str, headers: &[(&str, String)], body: &[u8]) -> Reply {
        let mut req = self.client.request(method, format!("{}{}", self.base, path));
        for (k, v) in headers {
            req = req.insert_header((*k, v.as_str()));
        }
        let mut res = req.send_body(body.to_vec()).await.unwrap();
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let bytes = res.body().limit(1 << 24).await.unwrap();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into()))
        };
        Reply { status, body, headers }
    }

    pub async fn public(&self, path: &str) -> Reply {
        self.raw(Method::GET, path, &[], b"").await
    }

    pub fn headers(user: &User, ts: u64, method: &str, path: &str, body: &[u8]) -> Vec<(&'static str, String)> {
        vec![
            ("X-Tandem-Key", user.key.clone()),
            ("X-Tandem-Timestamp", ts.to_string()),
            ("X-Tandem-Signature", sign(&user.secret, ts, method, path, body)),
        ]
    }

    /// A correctly signed request.
    pub async fn signed(&self, user: &User, method: &str, path: &str, body: &str) -> Reply {
        let headers = Self::headers(user, stamp(), method, path, body.as_bytes());
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        self.raw(method, path, &headers, body.as_bytes()).await
    }

    /// A request correctly signed by a device key.
    pub async fn device_signed(&self, device: &Device, method: &str, path: &str, body: &str) -> Reply {
        let headers = device.headers(stamp(), method, path, body.as_bytes());
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        self.raw(method, path, &headers, body.as_bytes()).await
    }

    /// `POST /v1/wallet/enrol` for `device`, signed by it.
    pub async fn enrol(&self, device: &Device, code: Option<&str>) -> Reply {
        let body = serde_json::json!({"device_pubkey": device.pubkey(), "label": "phone", "enrolment_code": code});
        self.device_signed(device, "POST", "/v1/wallet/enrol", &body.to_string()).await
    }

    /// A fresh enrolment code from the operator.
    pub async fn enrolment_code(&self) -> String {
        let r = self.operator("POST", "/v1/operator/enrolment-codes", r#"{"label":"test"}"#).await;
        r.ok()["code"].as_str().unwrap().to_owned()
    }

    pub async fn operator(&self, method: &str, path: &str, body: &str) -> Reply {
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        self.raw(method, path, &[("Authorization", format!("Bearer {OPERATOR_TOKEN}"))], body.as_bytes()).await
    }

    /// Opens an account through the operator API.
    pub async fn user(&self) -> User {
        let r = self.operator("POST", "/v1/operator/accounts", r#"{"kind":"user","label":"test"}"#).await;
        let b = r.ok();
        User {
            account: b["account_id"].as_u64().unwrap(),
            key: b["api_key"].as_str().unwrap().into(),
            secret: b["api_secret"].as_str().unwrap().into(),
        }
    }

    pub async fn deposit_usd(&self, user: &User, amount: &str) {
        let body = format!(
            r#"{{"account_id":{},"asset":"USD","amount":"{amount}","reference":"wire-{}-{}"}}"#,
            user.account,
            user.account,
            now_millis()
        );
        self.operator("POST", "/v1/operator/deposits", &body).await.ok();
    }

    /// BTC arrives from the chain through settlement, not the API: submit what settlement would.
    pub async fn deposit_btc(&self, user: &User, sats: u64) {
        let applied = self
            .sequencer
            .submit(Command::CreditDeposit {
                account: AccountId(user.account),
                asset: BTC,
                amount: Amount(sats),
                reference: format!("txid-{}:{}", user.account, sats),
            })
            .await
            .unwrap();
        assert!(tandem_gateway::dto::rejection(&applied.events).is_none(), "{applied:?}");
    }

    /// What a rejected request must leave untouched: balances and open orders, from the engine.
    pub async fn facts(&self, user: &User) -> String {
        let account = AccountId(user.account);
        self.sequencer
            .read(move |e| format!("{:?} {:?}", e.balances(account), e.open_orders(Some(account), None)))
            .await
            .unwrap()
    }

    pub async fn last_seq(&self) -> u64 {
        self.sequencer.read(|e| e.last_seq().0).await.unwrap()
    }
}

/// The running parts: a sequencer over BTC-USD with a 0.10 USD tick (so off-tick prices exist
/// in cents) and a 0.00001 BTC lot, a store kept current by a projector, and a gateway on them.
pub async fn build(change: impl FnOnce(&mut GatewayConfig)) -> (Sequencer, Gateway) {
    let mut exchange = ExchangeConfig::default();
    exchange.markets[0].tick_size = Decimal::new(10, 2);
    let engine = Engine::genesis(exchange.to_engine().unwrap(), Seq(1)).unwrap();
    let store = Store::open_in_memory().await.unwrap();
    let (tx, rx) = crossbeam_channel::bounded(4096);
    let owner = Sequencer::start(engine, MemoryLog::default(), None, SequencerConfig::default(), vec![tx]);
    let sequencer = owner.handle();
    let projector = Projector::spawn(store.clone(), rx, store.projected_seq().await.unwrap());
    let engine_config = sequencer.read(|e| e.config().clone()).await.unwrap();
    let mut config = GatewayConfig {
        operator_token: OPERATOR_TOKEN.into(),
        bitcoin_network: bitcoin::Network::Regtest,
        max_body_bytes: MAX_BODY,
        ..GatewayConfig::default()
    };
    change(&mut config);
    (owner, Gateway::new(sequencer, store, projector, engine_config, config))
}

pub fn limit_order(side: Side, price: &str, quantity: &str) -> String {
    format!(
        r#"{{"market":"BTC-USD","side":"{}","type":"limit","price":"{price}","quantity":"{quantity}"}}"#,
        side.as_str()
    )
}

/// A fresh timestamp per request, like a client that never sends two requests stamped alike (an
/// identical signed request is refused as a replay).
pub fn stamp() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = now_millis();
    let mut last = LAST.load(Ordering::Relaxed);
    loop {
        let next = now.max(last + 1);
        match LAST.compare_exchange(last, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return next,
            Err(seen) => last = seen,
        }
    }
}
