//! Binance's WebSocket streams: `/ws/<stream>` (raw payloads), `/stream?streams=<a>/<b>`
//! (combined: `{"stream": name, "data": payload}`), and on either the live `SUBSCRIBE`,
//! `UNSUBSCRIBE`, `LIST_SUBSCRIPTIONS`, `SET_PROPERTY` / `GET_PROPERTY` (`combined`) requests.
//! A listen key in place of a stream name is that account's user data stream.
//!
//! Market streams come from this gateway's own engine (the same `book_seq` numbering on every
//! gateway, so a client may reconnect anywhere); [`market`] builds them, [`user`] the user data
//! stream, [`names`] reads stream names. Unknown names in the path are accepted and ignored, as
//! Binance does (clients such as ccxt open `/ws/<n>` and subscribe afterwards); a listen key that
//! does not exist refuses the connection.

pub mod market;
pub mod names;
pub mod user;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::web::{self, Data};
use actix_web::{HttpRequest, HttpResponse};
use actix_ws::{CloseCode, CloseReason, Message, MessageStream, Session};
use serde_json::{json, Value};
use tandem_matching::{Applied, Event, MarketId, Price, Quantity};
use tokio::sync::broadcast::{self, error::RecvError};

use super::interval::Interval;
use super::listen_keys::looks_like_listen_key;
use super::{symbol_of, BinanceError, Decimals};
use crate::auth::now_millis;
use crate::Gateway;
use market::{DepthBuffer, KlineState, Top};
use names::{Kind, MarketStream, Speed};
use user::UserStream;

/// Binance's limit of streams on one connection.
const MAX_STREAMS: usize = 1024;
const MAX_FRAME: usize = 64 * 1024;
const PING_EVERY: Duration = Duration::from_secs(20);
/// A client silent (not even a pong) for this long is gone.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);
/// How often a user stream's listen key is checked for expiry.
const KEY_CHECK_EVERY: Duration = Duration::from_secs(30);

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/ws", web::get().to(raw))
        .route("/ws/{names:.*}", web::get().to(raw))
        .route("/stream", web::get().to(combined));
}

async fn raw(gw: Data<Gateway>, req: HttpRequest, body: web::Payload) -> Result<HttpResponse, BinanceError> {
    let names = req.match_info().get("names").unwrap_or("").to_owned();
    open(gw, req, body, &names, false).await
}

async fn combined(gw: Data<Gateway>, req: HttpRequest, body: web::Payload) -> Result<HttpResponse, BinanceError> {
    let p = super::public::params(&req)?;
    let names = p.get("streams").cloned().unwrap_or_default();
    open(gw, req, body, &names, true).await
}

/// Checks the names in the URL, then upgrades and runs the connection.
async fn open(gw: Data<Gateway>, req: HttpRequest, body: web::Payload, names: &str, combined: bool) -> Result<HttpResponse, BinanceError> {
    let names: Vec<&str> = names.split('/').filter(|n| !n.is_empty()).collect();
    if names.len() > MAX_STREAMS {
        return Err(BinanceError::bad_combination(format!("At most {MAX_STREAMS} streams per connection.")));
    }
    let mut listen_key = None;
    let mut streams = Vec::new();
    for name in names {
        if let Some(s) = MarketStream::parse(&gw.engine_config, name) {
            streams.push((name.to_owned(), s));
        } else if looks_like_listen_key(name) {
            match gw.store.listen_key(name).await? {
                Some((account, expires)) if expires > now_millis() => listen_key = Some((name.to_owned(), account)),
                _ => return Err(BinanceError::new(actix_web::http::StatusCode::BAD_REQUEST, -1125, "This listenKey does not exist.")),
            }
        }
    }
    // The feed before the client hears back: everything after it is in it, everything before
    // in what is read next. The user stream's base is read here too, before the answer, so all
    // the client does once connected is newer than the base and reported.
    let mut bus = gw.sequencer.subscribe();
    let user = match listen_key {
        Some((key, account)) => {
            let _ = gw.catch_up_all().await;
            Some(UserStream::start(&gw.store, key, account).await?)
        }
        None => None,
    };
    let (response, session, stream) =
        actix_ws::handle(&req, body).map_err(|e| BinanceError::new(actix_web::http::StatusCode::BAD_REQUEST, -1000, format!("WebSocket handshake failed: {e}")))?;
    let gw = gw.into_inner();
    actix_web::rt::spawn(async move {
        let mut conn = Conn::new(gw, session, combined);
        conn.user = user;
        let started = async {
            for (name, s) in streams {
                conn.subscribe(name, s).await?;
            }
            Ok::<(), Gone>(())
        };
        if started.await.is_ok() {
            conn.run(&mut bus, stream.max_frame_size(MAX_FRAME)).await;
        }
        let _ = conn.session.close(None).await;
    });
    Ok(response)
}

/// Sending failed, or the connection must end.
struct Gone;

/// One connection's subscriptions and what they need between sends.
struct Conn {
    gw: Arc<Gateway>,
    session: Session,
    combined: bool,
    /// Subscribed market streams by the name the client used.
    streams: BTreeMap<String, MarketStream>,
    depth: HashMap<(MarketId, Speed), DepthBuffer>,
    partial_sent: HashMap<(MarketId, usize, Speed), u64>,
    tops: HashMap<MarketId, Top>,
    klines: HashMap<(MarketId, &'static str), KlineState>,
    user: Option<UserStream>,
}

impl Conn {
    fn new(gw: Arc<Gateway>, session: Session, combined: bool) -> Conn {
        Conn {
            gw,
            session,
            combined,
            streams: BTreeMap::new(),
            depth: HashMap::new(),
            partial_sent: HashMap::new(),
            tops: HashMap::new(),
            klines: HashMap::new(),
            user: None,
        }
    }

    async fn run(&mut self, bus: &mut broadcast::Receiver<Arc<Applied>>, mut incoming: MessageStream) {
        let mut fast = tokio::time::interval(Duration::from_millis(100));
        fast.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut ticks: u64 = 0;
        let mut last_seen = Instant::now();
        let mut last_ping = Instant::now();
        let mut last_key_check = Instant::now();
        loop {
            let step = tokio::select! {
                msg = incoming.recv() => match msg {
                    None | Some(Err(_)) => Err(Gone),
                    Some(Ok(msg)) => {
                        last_seen = Instant::now();
                        self.on_message(msg).await
                    }
                },
                applied = bus.recv() => match applied {
                    Ok(applied) => self.on_applied(&applied).await,
                    Err(RecvError::Lagged(_)) => self.on_lagged().await,
                    Err(RecvError::Closed) => Err(Gone),
                },
                _ = fast.tick() => {
                    ticks += 1;
                    let mut step = self.flush(Speed::Ms100).await;
                    if step.is_ok() && ticks.is_multiple_of(10) {
                        step = self.flush(Speed::Ms1000).await;
                    }
                    if step.is_ok() && last_ping.elapsed() >= PING_EVERY {
                        last_ping = Instant::now();
                        step = if last_seen.elapsed() > CLIENT_TIMEOUT { Err(Gone) } else { self.session.ping(b"").await.map_err(|_| Gone) };
                    }
                    if step.is_ok() && self.user.is_some() && last_key_check.elapsed() >= KEY_CHECK_EVERY {
                        last_key_check = Instant::now();
                        step = self.check_listen_key().await;
                    }
                    step
                }
            };
            if step.is_err() {
                break;
            }
        }
    }

    /// Sends a payload, framed for a combined connection.
    async fn send(&mut self, stream: &str, data: Value) -> Result<(), Gone> {
        let text = if self.combined { json!({ "stream": stream, "data": data }).to_string() } else { data.to_string() };
        self.session.text(text).await.map_err(|_| Gone)
    }

    async fn reply(&mut self, v: Value) -> Result<(), Gone> {
        self.session.text(v.to_string()).await.map_err(|_| Gone)
    }

    fn decimals(&self, market: MarketId) -> Option<(String, Decimals)> {
        let spec = self.gw.engine_config.market(market)?;
        Some((symbol_of(&self.gw.engine_config, spec), Decimals::of(&self.gw, spec)))
    }

    /// Adds a market stream (its base read now, after the feed was subscribed).
    async fn subscribe(&mut self, name: String, s: MarketStream) -> Result<(), Gone> {
        if self.streams.contains_key(&name) {
            return Ok(());
        }
        match s.kind {
            Kind::Depth(speed) => {
                self.depth.entry((s.market, speed)).or_default();
            }
            Kind::BookTicker => {
                self.tops.entry(s.market).or_insert((None, None));
            }
            Kind::Kline(interval) if !self.klines.contains_key(&(s.market, interval)) => {
                let state = self.kline_base(s.market, interval).await?;
                self.klines.insert((s.market, interval), state);
            }
            _ => {}
        }
        self.streams.insert(name, s);
        Ok(())
    }

    /// The current candle from the store, through the seq it has projected, on which the feed's
    /// later trades build.
    async fn kline_base(&self, market: MarketId, name: &'static str) -> Result<KlineState, Gone> {
        let interval = Interval::parse(name).map_err(|_| Gone)?;
        let _ = self.gw.catch_up_all().await;
        let through = self.gw.projector.projected_seq();
        let now = now_millis();
        let open_time = interval.open_time(now);
        let store = &self.gw.store;
        let read = async {
            let candle = store
                .candles(market, interval.store_buckets(), (open_time, interval.next(open_time)), Some(through))
                .await?;
            let previous = store.last_trade_before(market, open_time).await?.map(|t| t.price);
            Ok::<_, tandem_store::StoreError>((candle, previous))
        };
        let (stored, previous_close) = read.await.map_err(|e| {
            tracing::error!(error = %e, "kline stream: store unavailable");
            Gone
        })?;
        // Days merge into a month here the same way the REST candles do.
        let candle = stored.into_iter().reduce(|a, b| tandem_store::CandleRecord {
            high: a.high.max(b.high),
            low: a.low.min(b.low),
            close: b.close,
            volume: Quantity(a.volume.0 + b.volume.0),
            quote_volume: tandem_matching::Amount(a.quote_volume.0 + b.quote_volume.0),
            trades: a.trades + b.trades,
            taker_buy_volume: Quantity(a.taker_buy_volume.0 + b.taker_buy_volume.0),
            taker_buy_quote_volume: tandem_matching::Amount(a.taker_buy_quote_volume.0 + b.taker_buy_quote_volume.0),
            last_trade_id: b.last_trade_id,
            ..a
        });
        Ok(KlineState { interval, name, open_time, candle, previous_close, through_seq: through.0, changed: true })
    }

    fn unsubscribe(&mut self, name: &str) {
        let Some(s) = self.streams.remove(name) else { return };
        let still = |f: &dyn Fn(&MarketStream) -> bool| self.streams.values().any(f);
        match s.kind {
            Kind::Depth(speed) if !still(&|o| o.market == s.market && o.kind == Kind::Depth(speed)) => {
                self.depth.remove(&(s.market, speed));
            }
            Kind::BookTicker if !still(&|o| o.market == s.market && o.kind == Kind::BookTicker) => {
                self.tops.remove(&s.market);
            }
            Kind::Kline(i) if !still(&|o| o.market == s.market && o.kind == Kind::Kline(i)) => {
                self.klines.remove(&(s.market, i));
            }
            _ => {}
        }
    }

    async fn on_message(&mut self, msg: Message) -> Result<(), Gone> {
        match msg {
            Message::Text(text) => self.on_request(&text).await,
            Message::Ping(bytes) => self.session.pong(&bytes).await.map_err(|_| Gone),
            Message::Close(_) => Err(Gone),
            Message::Binary(_) => self.reply(json!({"error": {"code": 3, "msg": "Invalid JSON: send text frames"}, "id": null})).await,
            Message::Pong(_) | Message::Continuation(_) | Message::Nop => Ok(()),
        }
    }

    /// A live request (`{"method": ..., "params": [...], "id": ...}`).
    async fn on_request(&mut self, text: &str) -> Result<(), Gone> {
        let Ok(req) = serde_json::from_str::<Value>(text) else {
            return self.reply(json!({"error": {"code": 3, "msg": "Invalid JSON: expected value at line 1 column 1"}, "id": null})).await;
        };
        let id = req.get("id").cloned().unwrap_or(Value::Null);
        if !(id.is_null() || id.is_u64() || id.is_string()) {
            return self.reply(json!({"error": {"code": 1, "msg": "Invalid value type: expected u64 or string for 'id'"}, "id": null})).await;
        }
        let params: Vec<Value> = req.get("params").and_then(Value::as_array).cloned().unwrap_or_default();
        let error = |code: i32, msg: String| json!({"error": {"code": code, "msg": msg}, "id": id});
        match req.get("method").and_then(Value::as_str) {
            Some("SUBSCRIBE") => {
                let mut parsed = Vec::new();
                for p in &params {
                    let name = p.as_str().unwrap_or("");
                    match MarketStream::parse(&self.gw.engine_config, name) {
                        Some(s) => parsed.push((name.to_owned(), s)),
                        None => return self.reply(error(2, format!("Invalid request: unknown stream '{name}'"))).await,
                    }
                }
                if self.streams.len() + parsed.len() > MAX_STREAMS {
                    return self.reply(error(2, format!("Invalid request: at most {MAX_STREAMS} streams per connection"))).await;
                }
                for (name, s) in parsed {
                    self.subscribe(name, s).await?;
                }
                self.reply(json!({"result": null, "id": id})).await
            }
            Some("UNSUBSCRIBE") => {
                for p in &params {
                    self.unsubscribe(p.as_str().unwrap_or(""));
                }
                self.reply(json!({"result": null, "id": id})).await
            }
            Some("LIST_SUBSCRIPTIONS") => {
                let mut names: Vec<String> = self.streams.keys().cloned().collect();
                names.extend(self.user.as_ref().map(|u| u.listen_key.clone()));
                self.reply(json!({"result": names, "id": id})).await
            }
            Some("SET_PROPERTY") => match (params.first().and_then(Value::as_str), params.get(1).and_then(Value::as_bool)) {
                (Some("combined"), Some(on)) => {
                    self.combined = on;
                    self.reply(json!({"result": null, "id": id})).await
                }
                _ => self.reply(error(0, "Unknown property".into())).await,
            },
            Some("GET_PROPERTY") => match params.first().and_then(Value::as_str) {
                Some("combined") => self.reply(json!({"result": self.combined, "id": id})).await,
                _ => self.reply(error(0, "Unknown property".into())).await,
            },
            _ => self.reply(error(2, "Invalid request: unknown method".into())).await,
        }
    }

    async fn on_applied(&mut self, applied: &Applied) -> Result<(), Gone> {
        let time = applied.timestamp.0;
        for update in &applied.book_updates {
            for speed in [Speed::Ms100, Speed::Ms1000] {
                if let Some(buf) = self.depth.get_mut(&(update.market, speed)) {
                    buf.add(update);
                }
            }
        }
        let has_trades = applied.events.iter().any(|e| matches!(e, Event::Trade(_)));
        if has_trades {
            let subscribed: Vec<(String, MarketStream)> = self
                .streams
                .iter()
                .filter(|(_, s)| matches!(s.kind, Kind::Trade | Kind::AggTrade))
                .map(|(n, s)| (n.clone(), *s))
                .collect();
            let trades = || applied.events.iter().filter_map(|e| if let Event::Trade(t) = e { Some(t) } else { None });
            for (name, s) in subscribed {
                let Some((symbol, d)) = self.decimals(s.market) else { continue };
                let payloads = match s.kind {
                    Kind::Trade => trades().filter(|t| t.market == s.market).map(|t| market::trade(&symbol, &d, t, time)).collect(),
                    _ => market::agg_trades(&symbol, &d, s.market, trades(), time),
                };
                for p in payloads {
                    self.send(&name, p).await?;
                }
            }
            for t in trades() {
                for ((market, _), k) in self.klines.iter_mut() {
                    if *market == t.market {
                        k.add(t, applied.seq.0);
                    }
                }
            }
        }
        let touched: Vec<MarketId> = self.tops.keys().copied().filter(|m| applied.book_updates.iter().any(|u| u.market == *m)).collect();
        for market in touched {
            self.send_top(market).await?;
        }
        if let Some(mut user) = self.user.take() {
            let payloads = user.on_applied(&self.gw, applied).await;
            let key = user.listen_key.clone();
            self.user = Some(user);
            for p in payloads {
                self.send(&key, p).await?;
            }
        }
        Ok(())
    }

    /// The top of the book if it changed since last sent, to each `bookTicker` subscriber.
    async fn send_top(&mut self, market: MarketId) -> Result<(), Gone> {
        let Ok(Some((book_seq, depth))) = self.gw.sequencer.book(market, 1).await else { return Ok(()) };
        let level = |l: Option<&tandem_matching::DepthLevel>| l.map(|l| (Price(l.price.0), Quantity(l.quantity.0)));
        let top: Top = (level(depth.bids.first()), level(depth.asks.first()));
        if self.tops.get(&market) == Some(&top) {
            return Ok(());
        }
        self.tops.insert(market, top);
        let Some((symbol, d)) = self.decimals(market) else { return Ok(()) };
        let names: Vec<String> =
            self.streams.iter().filter(|(_, s)| s.market == market && s.kind == Kind::BookTicker).map(|(n, _)| n.clone()).collect();
        let payload = market::book_ticker(&symbol, &d, book_seq, top);
        for name in names {
            self.send(&name, payload.clone()).await?;
        }
        Ok(())
    }

    /// Sends what the streams of this period gathered: book diffs, book tops, candles.
    async fn flush(&mut self, speed: Speed) -> Result<(), Gone> {
        let now = now_millis();
        let names: Vec<(String, MarketStream)> = self.streams.iter().map(|(n, s)| (n.clone(), *s)).collect();
        let mut diffs: HashMap<MarketId, Option<Value>> = HashMap::new();
        for (name, s) in &names {
            let Some((symbol, d)) = self.decimals(s.market) else { continue };
            match s.kind {
                Kind::Depth(sp) if sp == speed => {
                    // One event per market and period, to every name of it.
                    let diff = match diffs.get(&s.market) {
                        Some(v) => v.clone(),
                        None => {
                            let v = self.depth.get_mut(&(s.market, speed)).and_then(|b| b.take(&symbol, &d, now));
                            diffs.insert(s.market, v.clone());
                            v
                        }
                    };
                    if let Some(v) = diff {
                        self.send(name, v).await?;
                    }
                }
                Kind::PartialDepth(levels, sp) if sp == speed => {
                    let Ok(Some((book_seq, depth))) = self.gw.sequencer.book(s.market, levels).await else { continue };
                    if self.partial_sent.insert((s.market, levels, speed), book_seq) == Some(book_seq) {
                        continue;
                    }
                    let side = |ls: &[tandem_matching::DepthLevel]| -> Vec<[String; 2]> {
                        ls.iter().map(|l| [d.price(l.price.0), d.qty(l.quantity.0)]).collect()
                    };
                    let v = json!({"lastUpdateId": book_seq, "bids": side(&depth.bids), "asks": side(&depth.asks)});
                    self.send(name, v).await?;
                }
                _ => {}
            }
        }
        if speed == Speed::Ms1000 {
            let keys: Vec<(MarketId, &'static str)> = self.klines.keys().copied().collect();
            for key in keys {
                let Some((symbol, d)) = self.decimals(key.0) else { continue };
                let Some(k) = self.klines.get_mut(&key) else { continue };
                let payloads = k.tick(&symbol, &d, now);
                let names: Vec<String> =
                    self.streams.iter().filter(|(_, s)| s.market == key.0 && s.kind == Kind::Kline(key.1)).map(|(n, _)| n.clone()).collect();
                for p in payloads {
                    for name in &names {
                        self.send(name, p.clone()).await?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Updates were dropped for this connection: book diffs resume with a gap in `U` (the
    /// client resyncs), candles are read again; a user stream cannot be patched up, so the
    /// connection closes and the client reconnects.
    async fn on_lagged(&mut self) -> Result<(), Gone> {
        if self.user.is_some() {
            let reason = CloseReason { code: CloseCode::Again, description: Some("lagged; reconnect".into()) };
            let _ = self.session.clone().close(Some(reason)).await;
            return Err(Gone);
        }
        for buf in self.depth.values_mut() {
            buf.clear();
        }
        let keys: Vec<(MarketId, &'static str)> = self.klines.keys().copied().collect();
        for key in keys {
            let state = self.kline_base(key.0, key.1).await?;
            self.klines.insert(key, state);
        }
        Ok(())
    }

    /// Ends the user stream when its key expired or was closed, as Binance does.
    async fn check_listen_key(&mut self) -> Result<(), Gone> {
        let Some(key) = self.user.as_ref().map(|u| u.listen_key.clone()) else { return Ok(()) };
        let now = now_millis();
        match self.gw.store.listen_key(&key).await {
            Ok(Some((_, expires))) if expires > now => Ok(()),
            Ok(_) => {
                self.send(&key, json!({"e": "listenKeyExpired", "E": now, "listenKey": key})).await?;
                Err(Gone)
            }
            Err(_) => Ok(()), // the store is away: check again later
        }
    }
}
