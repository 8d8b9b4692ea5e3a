//! Public, unauthenticated reads: health, markets, order books, recent trades.

use super::resource;
use crate::dto::{self, BookQuery, Levels, LimitQuery, TradeFacts};
use crate::error::ApiError;
use crate::openapi::schemas as doc;
use crate::Gateway;
use actix_web::http::StatusCode;
use actix_web::web::{self, Data};
use actix_web::HttpResponse;
use serde_json::json;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tandem_matching::config::to_decimal;
use tandem_matching::{DepthLevel, MarketId};

/// What every process answers, the services behind the gateways too.
pub fn configure_probes(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/v1/health", |r| r.route(web::get().to(health))))
        .service(resource("/health", |r| r.route(web::get().to(health))))
        .service(resource("/ready", |r| r.route(web::get().to(ready))));
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/v1/markets", |r| r.route(web::get().to(markets))))
        .service(resource("/v1/markets/{symbol}/book", |r| r.route(web::get().to(book))))
        .service(resource("/v1/markets/{symbol}/trades", |r| r.route(web::get().to(trades))));
}

/// Liveness of the engine and journal
///
/// 200 while the engine answers queries and the journal works; 503 otherwise.
#[utoipa::path(get, path = "/v1/health", tag = "public",
    description = "Also served at `/health`. Probes spend no request budget.",
    responses(
        (status = 200, description = "The engine answers and the journal works", body = doc::Health),
        (status = 503, description = "`status` is `unavailable`: the engine does not answer or the journal failed", body = doc::Health),
    ))]
async fn health(gw: Data<Gateway>) -> HttpResponse {
    let engine = tokio::time::timeout(Duration::from_secs(2), gw.sequencer.read(|e| e.last_seq())).await;
    let projected = gw.projector.projected_seq().0;
    match engine {
        Ok(Ok(seq)) if !gw.sequencer.has_failed() => {
            HttpResponse::Ok().json(json!({ "status": "ok", "last_seq": seq.0, "projected_seq": projected }))
        }
        _ => HttpResponse::build(StatusCode::SERVICE_UNAVAILABLE).json(json!({
            "status": "unavailable",
            "last_seq": gw.sequencer.metrics().last_seq.load(Ordering::Relaxed),
            "projected_seq": projected,
        })),
    }
}

/// Whether this process should get traffic: the engine answers (and its journal works) and the
/// store answers (history, keys). `/health` only says the process lives; a load balancer
/// routes by `/ready`.
async fn ready(gw: Data<Gateway>) -> HttpResponse {
    let engine = tokio::time::timeout(Duration::from_secs(2), gw.sequencer.read(|e| e.last_seq())).await;
    let engine_ok = matches!(engine, Ok(Ok(_))) && !gw.sequencer.has_failed();
    let store_ok = matches!(tokio::time::timeout(Duration::from_secs(2), gw.store.ping()).await, Ok(Ok(())));
    let check = |ok: bool| if ok { "ok" } else { "unavailable" };
    let body = json!({
        "ready": engine_ok && store_ok,
        "checks": { "engine": check(engine_ok), "store": check(store_ok) },
        "last_seq": gw.sequencer.metrics().last_seq.load(Ordering::Relaxed),
        "projected_seq": gw.projector.projected_seq().0,
    });
    if engine_ok && store_ok {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::build(StatusCode::SERVICE_UNAVAILABLE).json(body)
    }
}

/// Markets and their rules
///
/// Every market with its rules (tick, lot, minimum notional, fees) and whether it is halted.
#[utoipa::path(get, path = "/v1/markets", tag = "public",
    responses((status = 200, description = "The markets", body = doc::Markets)))]
async fn markets(gw: Data<Gateway>) -> Result<HttpResponse, ApiError> {
    let n = gw.engine_config.markets.len();
    let halted: Vec<bool> =
        gw.sequencer.read(move |e| (0..n).map(|i| e.is_halted(MarketId(i as u16)).unwrap_or(false)).collect()).await?;
    let cfg = &gw.engine_config;
    let markets: Vec<_> = cfg
        .markets
        .iter()
        .zip(halted)
        .map(|(m, halted)| {
            let (bd, qd) = dto::market_decimals(cfg, m);
            json!({
                "symbol": m.symbol,
                "base": gw.fmt().asset(m.base),
                "quote": gw.fmt().asset(m.quote),
                "base_decimals": bd,
                "quote_decimals": qd,
                "tick_size": to_decimal(m.tick.0, qd).to_string(),
                "lot_size": to_decimal(m.lot.0, bd).to_string(),
                "min_notional": to_decimal(m.min_notional.0, qd).to_string(),
                "maker_fee_bps": m.maker_fee_bps,
                "taker_fee_bps": m.taker_fee_bps,
                "halted": halted,
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "markets": markets })))
}

pub(crate) fn levels(gw: &Gateway, market: MarketId, levels: &[DepthLevel]) -> Levels {
    let f = gw.fmt();
    levels.iter().map(|l| [f.price(market, l.price), f.qty(market, l.quantity)]).collect()
}

/// Order book depth
///
/// The market's order book, best levels first; `book_seq` is the WebSocket `book_update` counter.
#[utoipa::path(get, path = "/v1/markets/{symbol}/book", tag = "public",
    params(("symbol" = String, Path, description = "Market symbol, matched loosely (`BTC-USD`, `btcusd`)"), BookQuery),
    responses(
        (status = 200, description = "Levels are `[price, quantity]`", body = doc::Book),
        (status = 400, description = "`out_of_range`: depth is not 1 to 1000", body = doc::ErrorBody),
        (status = 404, description = "`unknown_market`", body = doc::ErrorBody),
    ))]
async fn book(
    gw: Data<Gateway>,
    symbol: web::Path<String>,
    q: web::Query<BookQuery>,
) -> Result<HttpResponse, ApiError> {
    let (market, spec) = dto::market_by_symbol(&gw.engine_config, &symbol)?;
    let depth = match q.depth {
        None => 20,
        Some(d) if (1..=1000).contains(&d) => d as usize,
        Some(_) => return Err(ApiError::new(StatusCode::BAD_REQUEST, "out_of_range", "depth must be 1 to 1000")),
    };
    let (book_seq, depth) = gw.sequencer.book(market, depth).await?.ok_or_else(|| ApiError::unknown_market(&symbol))?;
    Ok(HttpResponse::Ok().json(json!({
        "market": spec.symbol,
        "book_seq": book_seq,
        "bids": levels(&gw, market, &depth.bids),
        "asks": levels(&gw, market, &depth.asks),
    })))
}

/// Recent public trades
///
/// The market's recent trades, newest first.
#[utoipa::path(get, path = "/v1/markets/{symbol}/trades", tag = "public",
    params(("symbol" = String, Path, description = "Market symbol"), doc::LimitParam),
    responses(
        (status = 200, description = "Newest first", body = doc::MarketTrades),
        (status = 400, description = "`out_of_range`: limit is not 1 to 1000", body = doc::ErrorBody),
        (status = 404, description = "`unknown_market`", body = doc::ErrorBody),
    ))]
async fn trades(
    gw: Data<Gateway>,
    symbol: web::Path<String>,
    q: web::Query<LimitQuery>,
) -> Result<HttpResponse, ApiError> {
    let (market, spec) = dto::market_by_symbol(&gw.engine_config, &symbol)?;
    let limit = dto::limit(q.limit)?;
    gw.catch_up_all().await?;
    let trades = gw.store.trades(market, limit).await?;
    let f = gw.fmt();
    let trades: Vec<_> = trades.iter().map(|t| TradeFacts::from_record(t).public(f)).collect();
    Ok(HttpResponse::Ok().json(json!({ "market": spec.symbol, "trades": trades })))
}
