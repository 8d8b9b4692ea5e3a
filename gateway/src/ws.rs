//! `GET /v1/ws`: market data (`book:SYM`, `trades:SYM`) and, after `auth`, the `user` stream.
//!
//! Each connection is one task that reads client messages and the sequencer's broadcast of
//! applied commands. Book consistency: the broadcast is subscribed *before* a snapshot is read,
//! and updates with `book_seq <= snapshot.book_seq` are dropped, so nothing is missed or applied
//! twice. A lagging connection gets `{"type":"error","code":"lagged"}` and fresh snapshots.

use crate::auth::{check_credentials, check_device_credentials};
use crate::dto::{close_status, tif_str, Fmt, TradeFacts};
use crate::routes::public::levels;
use crate::Gateway;
use actix_web::web::{self, Data};
use actix_web::{HttpRequest, HttpResponse};
use actix_ws::{Message, MessageStream, Session};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tandem_matching::{AccountId, Applied, Event, MarketId, Side};
use tokio::sync::broadcast::{self, error::RecvError};

/// Levels per side in a book snapshot.
const SNAPSHOT_DEPTH: usize = 1000;
const HEARTBEAT: Duration = Duration::from_secs(20);
/// A client silent (not even a pong) for this long is gone.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);
const MAX_FRAME: usize = 64 * 1024;
const MAX_CHANNELS_PER_MESSAGE: usize = 64;

pub async fn connect(gw: Data<Gateway>, req: HttpRequest, body: web::Payload) -> Result<HttpResponse, crate::ApiError> {
    let (response, session, stream) = actix_ws::handle(&req, body)
        .map_err(|e| crate::ApiError::bad_request(format!("WebSocket handshake failed: {e}")))?;
    actix_web::rt::spawn(run(gw.into_inner(), session, stream.max_frame_size(MAX_FRAME)));
    Ok(response)
}

#[derive(Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
enum ClientMessage {
    Subscribe {
        channels: Vec<String>,
    },
    Unsubscribe {
        channels: Vec<String>,
    },
    /// `api_key` for an API key, `device` for a wallet's device key (exactly one of them).
    Auth {
        api_key: Option<String>,
        device: Option<String>,
        timestamp: Value,
        signature: String,
    },
    Ping,
}

enum Channel {
    Book(MarketId),
    Trades(MarketId),
    User,
}

/// What one connection is subscribed to.
struct Conn {
    gw: Arc<Gateway>,
    session: Session,
    account: Option<AccountId>,
    /// Subscribed books and the last `book_seq` sent for each.
    books: BTreeMap<MarketId, u64>,
    trades: BTreeSet<MarketId>,
    user: bool,
}

/// Sending failed: the client is gone.
struct Gone;

async fn run(gw: Arc<Gateway>, session: Session, mut stream: MessageStream) {
    let mut conn = Conn { gw, session, account: None, books: BTreeMap::new(), trades: BTreeSet::new(), user: false };
    // Created on the first subscribe, before any snapshot is read.
    let mut bus: Option<broadcast::Receiver<Arc<Applied>>> = None;
    let mut heartbeat = tokio::time::interval(HEARTBEAT);
    heartbeat.tick().await;
    let mut last_seen = Instant::now();
    loop {
        let step = tokio::select! {
            msg = stream.recv() => match msg {
                None | Some(Err(_)) => Err(Gone),
                Some(Ok(msg)) => {
                    last_seen = Instant::now();
                    conn.on_message(msg, &mut bus).await
                }
            },
            applied = next(&mut bus) => match applied {
                Ok(applied) => conn.on_applied(&applied).await,
                Err(RecvError::Lagged(missed)) => conn.on_lagged(missed).await,
                Err(RecvError::Closed) => {
                    let _ = conn.send(json!({"type": "error", "code": "unavailable", "message": "the exchange stopped"})).await;
                    Err(Gone)
                }
            },
            _ = heartbeat.tick() => {
                if last_seen.elapsed() > CLIENT_TIMEOUT {
                    Err(Gone)
                } else {
                    conn.session.ping(b"").await.map_err(|_| Gone)
                }
            }
        };
        if step.is_err() {
            break;
        }
    }
    let _ = conn.session.close(None).await;
}

async fn next(bus: &mut Option<broadcast::Receiver<Arc<Applied>>>) -> Result<Arc<Applied>, RecvError> {
    match bus {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

fn error(code: &str, message: impl Into<String>) -> Value {
    json!({ "type": "error", "code": code, "message": message.into() })
}

impl Conn {
    fn fmt(&self) -> Fmt<'_> {
        self.gw.fmt()
    }

    async fn send(&mut self, v: Value) -> Result<(), Gone> {
        self.session.text(v.to_string()).await.map_err(|_| Gone)
    }

    async fn on_message(
        &mut self,
        msg: Message,
        bus: &mut Option<broadcast::Receiver<Arc<Applied>>>,
    ) -> Result<(), Gone> {
        match msg {
            Message::Text(text) => self.on_text(&text, bus).await,
            Message::Ping(bytes) => self.session.pong(&bytes).await.map_err(|_| Gone),
            Message::Close(_) => Err(Gone),
            Message::Binary(_) => self.send(error("unsupported", "send JSON text messages")).await,
            Message::Pong(_) | Message::Continuation(_) | Message::Nop => Ok(()),
        }
    }

    async fn on_text(&mut self, text: &str, bus: &mut Option<broadcast::Receiver<Arc<Applied>>>) -> Result<(), Gone> {
        let msg: ClientMessage = match serde_json::from_str(text) {
            Ok(m) => m,
            Err(e) => {
                let api = crate::error::json_error(&e);
                return self.send(error(api.code, api.message)).await;
            }
        };
        match msg {
            ClientMessage::Ping => self.send(json!({"type": "pong"})).await,
            ClientMessage::Auth { api_key, device, timestamp, signature } => {
                let ts = match &timestamp {
                    Value::Number(n) => n.to_string(),
                    Value::String(s) => s.clone(),
                    _ => String::new(),
                };
                let checked = match (api_key, device) {
                    (Some(key), None) => check_credentials(&self.gw, &key, &ts, &signature, "GET", "/v1/ws", b"").await,
                    (None, Some(device)) => {
                        check_device_credentials(&self.gw, &device, &ts, &signature, "GET", "/v1/ws", b"").await
                    }
                    _ => Err(crate::error::ApiError::bad_request("auth needs exactly one of api_key and device")),
                };
                match checked {
                    Ok(account) => {
                        if self.account != Some(account) {
                            self.user = false;
                        }
                        self.account = Some(account);
                        self.send(json!({"type": "authenticated", "account_id": account.0})).await
                    }
                    Err(e) => self.send(error(e.code, e.message)).await,
                }
            }
            ClientMessage::Subscribe { channels } => self.subscribe(channels, bus).await,
            ClientMessage::Unsubscribe { channels } => {
                let mut done = Vec::new();
                for name in channels.into_iter().take(MAX_CHANNELS_PER_MESSAGE) {
                    match self.parse_channel(&name) {
                        Ok(Channel::Book(m)) => {
                            self.books.remove(&m);
                        }
                        Ok(Channel::Trades(m)) => {
                            self.trades.remove(&m);
                        }
                        Ok(Channel::User) => self.user = false,
                        Err(e) => {
                            self.send(e).await?;
                            continue;
                        }
                    }
                    done.push(name);
                }
                self.send(json!({"type": "unsubscribed", "channels": done})).await
            }
        }
    }

    fn parse_channel(&self, name: &str) -> Result<Channel, Value> {
        let market = |sym: &str| {
            self.gw
                .engine_config
                .market_by_symbol(sym)
                .ok_or_else(|| error("unknown_market", format!("no market {sym:?}")))
        };
        if name == "user" {
            Ok(Channel::User)
        } else if let Some(sym) = name.strip_prefix("book:") {
            market(sym).map(Channel::Book)
        } else if let Some(sym) = name.strip_prefix("trades:") {
            market(sym).map(Channel::Trades)
        } else {
            Err(error("unknown_channel", format!("no channel {name:?}; use book:SYM, trades:SYM or user")))
        }
    }

    async fn subscribe(
        &mut self,
        channels: Vec<String>,
        bus: &mut Option<broadcast::Receiver<Arc<Applied>>>,
    ) -> Result<(), Gone> {
        if bus.is_none() {
            // Before any snapshot: every update after the snapshot is then in this receiver.
            *bus = Some(self.gw.sequencer.subscribe());
        }
        let mut accepted = Vec::new();
        let mut snapshots = Vec::new();
        for name in channels.into_iter().take(MAX_CHANNELS_PER_MESSAGE) {
            match self.parse_channel(&name) {
                Ok(Channel::Book(m)) => snapshots.push(m),
                Ok(Channel::Trades(m)) => {
                    self.trades.insert(m);
                }
                Ok(Channel::User) => {
                    if self.account.is_none() {
                        self.send(error("auth_required", "send {\"op\":\"auth\",...} before subscribing to user"))
                            .await?;
                        continue;
                    }
                    self.user = true;
                }
                Err(e) => {
                    self.send(e).await?;
                    continue;
                }
            }
            accepted.push(name);
        }
        self.send(json!({"type": "subscribed", "channels": accepted})).await?;
        for m in snapshots {
            self.snapshot(m).await?;
        }
        Ok(())
    }

    /// Sends a fresh snapshot and makes it the base for later updates.
    async fn snapshot(&mut self, market: MarketId) -> Result<(), Gone> {
        match self.gw.sequencer.book(market, SNAPSHOT_DEPTH).await {
            Ok(Some((book_seq, depth))) => {
                self.books.insert(market, book_seq);
                let msg = json!({
                    "type": "book_snapshot",
                    "market": self.fmt().market(market),
                    "book_seq": book_seq,
                    "bids": levels(&self.gw, market, &depth.bids),
                    "asks": levels(&self.gw, market, &depth.asks),
                });
                self.send(msg).await
            }
            Ok(None) => self.send(error("unknown_market", "no such market")).await,
            Err(_) => {
                let _ = self.send(error("unavailable", "the exchange is not answering")).await;
                Err(Gone)
            }
        }
    }

    async fn on_lagged(&mut self, missed: u64) -> Result<(), Gone> {
        self.send(error(
            "lagged",
            format!("{missed} updates were dropped; books are re-sent, re-read user state over REST"),
        ))
        .await?;
        let markets: Vec<MarketId> = self.books.keys().copied().collect();
        for m in markets {
            self.snapshot(m).await?;
        }
        Ok(())
    }

    async fn on_applied(&mut self, applied: &Applied) -> Result<(), Gone> {
        for update in &applied.book_updates {
            let Some(&last) = self.books.get(&update.market) else { continue };
            if update.book_seq <= last {
                continue; // already in the snapshot
            }
            if update.book_seq != last + 1 {
                // A gap: never apply an update on a base it was not made for.
                self.snapshot(update.market).await?;
                continue;
            }
            self.books.insert(update.market, update.book_seq);
            let f = self.fmt();
            let side = |s: Side| -> Vec<[String; 2]> {
                update
                    .levels
                    .iter()
                    .filter(|(side, _, _)| *side == s)
                    .map(|(_, p, q)| [f.price(update.market, *p), f.qty(update.market, *q)])
                    .collect()
            };
            let msg = json!({
                "type": "book_update",
                "market": f.market(update.market),
                "book_seq": update.book_seq,
                "bids": side(Side::Buy),
                "asks": side(Side::Sell),
            });
            self.send(msg).await?;
        }
        if !self.trades.is_empty() {
            for e in &applied.events {
                if let Event::Trade(t) = e {
                    if self.trades.contains(&t.market) {
                        let mut msg = json!(TradeFacts::from_event(t, applied.timestamp).public(self.fmt()));
                        msg["type"] = json!("trade");
                        msg["seq"] = json!(applied.seq.0);
                        self.send(msg).await?;
                    }
                }
            }
        }
        if let (true, Some(account)) = (self.user, self.account) {
            for e in &applied.events {
                if let Some(mut msg) = user_message(self.fmt(), account, e, applied) {
                    msg["seq"] = json!(applied.seq.0);
                    msg["timestamp"] = json!(applied.timestamp.0);
                    self.send(msg).await?;
                }
            }
        }
        Ok(())
    }
}

/// An event as the `user` channel shows it to `account`, if it concerns that account.
fn user_message(f: Fmt, account: AccountId, e: &Event, applied: &Applied) -> Option<Value> {
    match e {
        Event::OrderAccepted(a) if a.account == account => Some(json!({
            "type": "order_accepted",
            "order_id": a.order.0,
            "client_order_id": a.client_order_id.map(|c| c.as_str().to_owned()),
            "market": f.market(a.market),
            "side": a.side.as_str(),
            "order_type": if a.is_market { "market" } else { "limit" },
            "price": f.price(a.market, a.price),
            "quantity": f.qty(a.market, a.quantity),
            "time_in_force": tif_str(a.time_in_force),
            "post_only": a.post_only,
        })),
        Event::OrderAmended { order, account: a, market, side, price, quantity, remaining, priority_kept, .. }
            if *a == account =>
        {
            Some(json!({
                "type": "order_amended",
                "order_id": order.0,
                "market": f.market(*market),
                "side": side.as_str(),
                "price": f.price(*market, *price),
                "quantity": f.qty(*market, *quantity),
                "remaining": f.qty(*market, *remaining),
                "priority_kept": priority_kept,
            }))
        }
        Event::Trade(t) => {
            let fill = TradeFacts::from_event(t, applied.timestamp).fill_for(f, account)?;
            let mut v = json!(fill);
            v["type"] = json!("fill");
            Some(v)
        }
        Event::OrderClosed { order, account: a, market, side, price, reason, quantity, filled } if *a == account => {
            Some(json!({
                "type": "order_closed",
                "order_id": order.0,
                "market": f.market(*market),
                "side": side.as_str(),
                "price": f.price(*market, *price),
                "quantity": f.qty(*market, *quantity),
                "filled": f.qty(*market, *filled),
                "status": close_status(*reason),
            }))
        }
        Event::BalanceChanged { account: a, asset, available, locked } if *a == account => {
            let mut v = json!(f.balance(*asset, tandem_matching::Balance { available: *available, locked: *locked }));
            v["type"] = json!("balance");
            Some(v)
        }
        Event::DepositCredited { account: a, asset, amount, reference } if *a == account => Some(json!({
            "type": "deposit",
            "asset": f.asset(*asset),
            "amount": f.amount(*asset, *amount),
            "reference": reference,
        })),
        Event::WithdrawalRequested { withdrawal, account: a, asset, amount, destination, client_withdrawal_id }
            if *a == account =>
        {
            Some(json!({
                "type": "withdrawal",
                "withdrawal_id": withdrawal.0,
                "asset": f.asset(*asset),
                "amount": f.amount(*asset, *amount),
                "destination": destination,
                "status": "pending",
                "client_withdrawal_id": client_withdrawal_id.map(|c| c.as_str().to_owned()),
            }))
        }
        Event::WithdrawalCompleted { withdrawal, account: a, asset, amount }
        | Event::WithdrawalFailed { withdrawal, account: a, asset, amount }
            if *a == account =>
        {
            let status = if matches!(e, Event::WithdrawalCompleted { .. }) { "completed" } else { "failed" };
            Some(json!({
                "type": "withdrawal",
                "withdrawal_id": withdrawal.0,
                "asset": f.asset(*asset),
                "amount": f.amount(*asset, *amount),
                "status": status,
            }))
        }
        _ => None,
    }
}
