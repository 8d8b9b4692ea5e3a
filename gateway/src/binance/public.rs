//! Binance's public market data: `ping`, `time`, `exchangeInfo`, `depth`, `trades`,
//! `ticker/price`, `ticker/bookTicker`, `avgPrice`. The book is the gateway's own engine's
//! (`lastUpdateId` is the market's `book_seq`, the same number the WebSocket diffs carry);
//! trades come from the store's projections.

use std::collections::HashMap;

use actix_web::web::{self, Data};
use actix_web::{HttpRequest, HttpResponse};
use rust_decimal::Decimal;
use serde_json::{json, Value};
use tandem_matching::config::to_decimal;
use tandem_matching::config::MarketSpec;
use tandem_matching::{MarketId, Side};

use super::{market_of, number, symbol_of, BinanceError};
use crate::Gateway;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/v3/ping", web::get().to(ping))
        .route("/api/v3/time", web::get().to(time))
        .route("/api/v3/exchangeInfo", web::get().to(exchange_info))
        .route("/api/v3/depth", web::get().to(depth))
        .route("/api/v3/trades", web::get().to(trades))
        .route("/api/v3/ticker/price", web::get().to(ticker_price))
        .route("/api/v3/ticker/bookTicker", web::get().to(book_ticker))
        .route("/api/v3/avgPrice", web::get().to(avg_price));
}

/// The query's parameters (Binance clients send each once).
pub(super) fn params(req: &HttpRequest) -> Result<HashMap<String, String>, BinanceError> {
    web::Query::<HashMap<String, String>>::from_query(req.query_string())
        .map(|q| q.into_inner())
        .map_err(|_| BinanceError::new(actix_web::http::StatusCode::BAD_REQUEST, -1100, "Illegal characters found in a parameter."))
}

/// `limit`: absent is `default`; else an integer, clamped into `1..=max` as Binance does.
pub(super) fn limit(p: &HashMap<String, String>, default: usize, max: usize) -> Result<usize, BinanceError> {
    match p.get("limit") {
        None => Ok(default),
        Some(v) => v
            .parse::<usize>()
            .map(|n| n.clamp(1, max))
            .map_err(|_| BinanceError::illegal_characters("limit", "^[0-9]{1,20}$")),
    }
}

/// The markets a request names: `symbol=X`, or `symbols=["X","Y"]`, or every one.
pub(super) fn markets<'a>(gw: &'a Gateway, p: &HashMap<String, String>) -> Result<Vec<(MarketId, &'a MarketSpec)>, BinanceError> {
    let cfg = &gw.engine_config;
    match (p.get("symbol"), p.get("symbols")) {
        (Some(_), Some(_)) => Err(BinanceError::bad_combination("Parameter 'symbol' and 'symbols' cannot be sent together.")),
        (Some(s), None) => Ok(vec![market_of(cfg, s)?]),
        (None, Some(list)) => {
            let names: Vec<String> = serde_json::from_str(list)
                .map_err(|_| BinanceError::illegal_characters("symbols", "^\\[(\"[A-Z0-9-_.]{1,20}\"(,\"[A-Z0-9-_.]{1,20}\"){0,}){0,1}\\]$"))?;
            names.iter().map(|s| market_of(cfg, s)).collect()
        }
        (None, None) => Ok(cfg.markets.iter().enumerate().map(|(i, m)| (MarketId(i as u16), m)).collect()),
    }
}

/// One market's `symbol`: required.
pub(super) fn one_market<'a>(gw: &'a Gateway, p: &HashMap<String, String>) -> Result<(MarketId, &'a MarketSpec), BinanceError> {
    market_of(&gw.engine_config, p.get("symbol").map(String::as_str).unwrap_or(""))
}

async fn ping() -> HttpResponse {
    HttpResponse::Ok().json(json!({}))
}

async fn time() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "serverTime": crate::auth::now_millis() }))
}

async fn exchange_info(gw: Data<Gateway>, req: HttpRequest) -> Result<HttpResponse, BinanceError> {
    let p = params(&req)?;
    let symbols: Vec<Value> = markets(&gw, &p)?.into_iter().map(|(_, spec)| symbol_info(&gw, spec)).collect();
    let per_minute = gw.config.limits.per_ip_per_minute;
    Ok(HttpResponse::Ok().json(json!({
        "timezone": "UTC",
        "serverTime": crate::auth::now_millis(),
        "rateLimits": [
            {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": per_minute},
        ],
        "exchangeFilters": [],
        "symbols": symbols,
    })))
}

fn symbol_info(gw: &Gateway, spec: &MarketSpec) -> Value {
    let cfg = &gw.engine_config;
    let (base, quote) = (cfg.asset(spec.base), cfg.asset(spec.quote));
    let (bd, qd) = (base.map_or(0, |a| a.decimals), quote.map_or(0, |a| a.decimals));
    let max_qty = base.map_or(Decimal::ZERO, |a| to_decimal(a.max_supply.0, bd));
    let max_value = quote.map_or(Decimal::ZERO, |a| to_decimal(a.max_supply.0, qd));
    json!({
        "symbol": symbol_of(cfg, spec),
        "status": "TRADING",
        "baseAsset": base.map(|a| a.symbol.clone()),
        "baseAssetPrecision": bd,
        "quoteAsset": quote.map(|a| a.symbol.clone()),
        "quotePrecision": qd,
        "quoteAssetPrecision": qd,
        "baseCommissionPrecision": bd,
        "quoteCommissionPrecision": qd,
        "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET"],
        "icebergAllowed": false,
        "ocoAllowed": false,
        "otoAllowed": false,
        "quoteOrderQtyMarketAllowed": false,
        "allowTrailingStop": false,
        "cancelReplaceAllowed": false,
        "isSpotTradingAllowed": true,
        "isMarginTradingAllowed": false,
        "filters": [
            {"filterType": "PRICE_FILTER", "minPrice": number(to_decimal(spec.tick.0, qd)),
             "maxPrice": number(max_value), "tickSize": number(to_decimal(spec.tick.0, qd))},
            {"filterType": "LOT_SIZE", "minQty": number(to_decimal(spec.lot.0, bd)),
             "maxQty": number(max_qty), "stepSize": number(to_decimal(spec.lot.0, bd))},
            {"filterType": "NOTIONAL", "minNotional": number(to_decimal(spec.min_notional.0, qd)), "applyMinToMarket": true,
             "maxNotional": number(max_value), "applyMaxToMarket": false, "avgPriceMins": 5},
        ],
        "permissions": [],
        "permissionSets": [["SPOT"]],
        "defaultSelfTradePreventionMode": "NONE",
        "allowedSelfTradePreventionModes": ["NONE"],
    })
}

/// `[price, qty]` pairs of one side.
fn levels(gw: &Gateway, market: MarketId, levels: &[tandem_matching::DepthLevel]) -> Vec<[String; 2]> {
    let Some(spec) = gw.engine_config.market(market) else { return Vec::new() };
    let (bd, qd) = crate::dto::market_decimals(&gw.engine_config, spec);
    levels.iter().map(|l| [number(to_decimal(l.price.0, qd)), number(to_decimal(l.quantity.0, bd))]).collect()
}

async fn depth(gw: Data<Gateway>, req: HttpRequest) -> Result<HttpResponse, BinanceError> {
    let p = params(&req)?;
    let (market, _) = one_market(&gw, &p)?;
    let n = limit(&p, 100, 5000)?;
    let (book_seq, depth) = gw.sequencer.book(market, n).await?.ok_or_else(BinanceError::invalid_symbol)?;
    Ok(HttpResponse::Ok().json(json!({
        "lastUpdateId": book_seq,
        "bids": levels(&gw, market, &depth.bids),
        "asks": levels(&gw, market, &depth.asks),
    })))
}

/// The newest `n` trades of `market`, oldest first, as Binance lists them.
async fn recent_trades(gw: &Gateway, market: MarketId, n: usize) -> Result<Vec<tandem_store::TradeRecord>, BinanceError> {
    gw.catch_up_all().await?;
    let mut trades = gw.store.trades(market, n as u32).await?;
    trades.sort_by_key(|t| t.trade_id);
    Ok(trades)
}

async fn trades(gw: Data<Gateway>, req: HttpRequest) -> Result<HttpResponse, BinanceError> {
    let p = params(&req)?;
    let (market, spec) = one_market(&gw, &p)?;
    let n = limit(&p, 500, 1000)?;
    let (bd, qd) = crate::dto::market_decimals(&gw.engine_config, spec);
    let out: Vec<Value> = recent_trades(&gw, market, n)
        .await?
        .iter()
        .map(|t| {
            json!({
                "id": t.trade_id.0,
                "price": number(to_decimal(t.price.0, qd)),
                "qty": number(to_decimal(t.quantity.0, bd)),
                "quoteQty": number(to_decimal(t.notional.0, qd)),
                "time": t.timestamp.0,
                "isBuyerMaker": t.taker_side == Side::Sell,
                "isBestMatch": true,
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(out))
}

/// One object for `symbol=`, else a list of every market's (or `symbols=`'s).
pub(super) fn one_or_list(p: &HashMap<String, String>, items: Vec<Value>) -> HttpResponse {
    match (p.contains_key("symbol"), items.len()) {
        (true, 1) => HttpResponse::Ok().json(&items[0]),
        _ => HttpResponse::Ok().json(items),
    }
}

async fn ticker_price(gw: Data<Gateway>, req: HttpRequest) -> Result<HttpResponse, BinanceError> {
    let p = params(&req)?;
    let mut items = Vec::new();
    for (market, spec) in markets(&gw, &p)? {
        let (_, qd) = crate::dto::market_decimals(&gw.engine_config, spec);
        let last = recent_trades(&gw, market, 1).await?;
        let price = last.last().map_or(Decimal::ZERO, |t| to_decimal(t.price.0, qd));
        items.push(json!({"symbol": symbol_of(&gw.engine_config, spec), "price": number(price)}));
    }
    Ok(one_or_list(&p, items))
}

async fn book_ticker(gw: Data<Gateway>, req: HttpRequest) -> Result<HttpResponse, BinanceError> {
    let p = params(&req)?;
    let mut items = Vec::new();
    for (market, spec) in markets(&gw, &p)? {
        let (_, depth) = gw.sequencer.book(market, 1).await?.ok_or_else(BinanceError::invalid_symbol)?;
        let zero = || [number(Decimal::ZERO), number(Decimal::ZERO)];
        let [bid_price, bid_qty] = levels(&gw, market, &depth.bids).into_iter().next().unwrap_or_else(zero);
        let [ask_price, ask_qty] = levels(&gw, market, &depth.asks).into_iter().next().unwrap_or_else(zero);
        items.push(json!({
            "symbol": symbol_of(&gw.engine_config, spec),
            "bidPrice": bid_price, "bidQty": bid_qty, "askPrice": ask_price, "askQty": ask_qty,
        }));
    }
    Ok(one_or_list(&p, items))
}

/// The average price of the last five minutes' trades (quote over base), else of the last trade.
async fn avg_price(gw: Data<Gateway>, req: HttpRequest) -> Result<HttpResponse, BinanceError> {
    const MINS: u64 = 5;
    let p = params(&req)?;
    let (market, spec) = one_market(&gw, &p)?;
    let trades = recent_trades(&gw, market, 1000).await?;
    let now = crate::auth::now_millis();
    let window: Vec<_> = trades.iter().filter(|t| t.timestamp.0 + MINS * 60_000 >= now).collect();
    let cfg = &gw.engine_config;
    let (bd, qd) = crate::dto::market_decimals(cfg, spec);
    let price = match window.is_empty() {
        false => {
            let base: u128 = window.iter().map(|t| t.quantity.0 as u128).sum();
            let quote: u128 = window.iter().map(|t| t.notional.0 as u128).sum();
            // quote units per base unit, at the quote's precision.
            let per_base = Decimal::from(quote) * Decimal::from(10u64.pow(bd as u32)) / Decimal::from(base.max(1));
            to_decimal(per_base.round().try_into().unwrap_or(0u64), qd)
        }
        true => trades.last().map_or(Decimal::ZERO, |t| to_decimal(t.price.0, qd)),
    };
    Ok(HttpResponse::Ok().json(json!({
        "mins": MINS,
        "price": number(price),
        "closeTime": trades.last().map_or(now, |t| t.timestamp.0),
    })))
}
