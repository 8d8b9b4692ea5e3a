//! Binance's order endpoints (signed): `POST /api/v3/order` (LIMIT, MARKET, LIMIT_MAKER; GTC,
//! IOC, FOK; `newClientOrderId`; `newOrderRespType` ACK, RESULT or FULL), `POST
//! /api/v3/order/test` (every check, nothing placed), `GET` and `DELETE /api/v3/order` (by
//! `orderId` or `origClientOrderId`), `GET` and `DELETE /api/v3/openOrders`, `GET
//! /api/v3/allOrders`, `GET /api/v3/myTrades`. Orders become the same engine commands as the
//! native API's, with the same checks; only the words differ.

use actix_web::http::StatusCode;
use actix_web::web::{self, Bytes, Data};
use actix_web::{HttpRequest, HttpResponse};
use rust_decimal::Decimal;
use serde_json::{json, Value};
use tandem_matching::config::{to_units, MarketSpec};
use tandem_matching::{
    AccountId, ClientOrderId, Command, Event, MarketId, NewOrder, OrderId, OrderKind, OrderRef, Price, Quantity, RejectReason,
    Side, TimeInForce,
};

use super::signed::{authenticate, Signed};
use super::{market_of, number, symbol_of, BinanceError};
use crate::dto::{self, OrderJson};
use crate::Gateway;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/api/v3/order")
            .route(web::post().to(place))
            .route(web::get().to(query))
            .route(web::delete().to(cancel)),
    )
    .route("/api/v3/order/test", web::post().to(test_order))
    .service(web::resource("/api/v3/openOrders").route(web::get().to(open_orders)).route(web::delete().to(cancel_open_orders)))
    .route("/api/v3/allOrders", web::get().to(all_orders))
    .route("/api/v3/myTrades", web::get().to(my_trades));
}

fn bad(code: i32, msg: impl Into<String>) -> BinanceError {
    BinanceError::new(StatusCode::BAD_REQUEST, code, msg)
}

/// The engine's refusal of an order, in Binance's words.
fn rejected(reason: RejectReason) -> BinanceError {
    match reason {
        RejectReason::PriceOffTick | RejectReason::OutOfRange => bad(-1013, "Filter failure: PRICE_FILTER"),
        RejectReason::QuantityOffLot => bad(-1013, "Filter failure: LOT_SIZE"),
        RejectReason::BelowMinNotional => bad(-1013, "Filter failure: NOTIONAL"),
        RejectReason::InsufficientBalance => bad(-2010, "Account has insufficient balance for requested action."),
        RejectReason::WouldTakeLiquidity => bad(-2010, "Order would immediately match and take."),
        RejectReason::DuplicateClientOrderId(_) => bad(-2010, "Duplicate order sent."),
        RejectReason::MarketHalted => bad(-2010, "Market is closed."),
        other => bad(-2010, other.to_string()),
    }
}

fn param<'a>(s: &'a Signed, name: &str) -> Option<&'a str> {
    s.params.get(name).map(String::as_str).filter(|v| !v.is_empty())
}

fn required<'a>(s: &'a Signed, name: &str) -> Result<&'a str, BinanceError> {
    param(s, name).ok_or_else(|| BinanceError::mandatory(name))
}

/// A decimal parameter in a market asset's units.
fn units_of(s: &Signed, name: &str, decimals: u8) -> Result<u64, BinanceError> {
    let value: Decimal = required(s, name)?.parse().map_err(|_| BinanceError::illegal_characters(name, "^([0-9]{1,20})(\\.[0-9]{1,20})?$"))?;
    let units = to_units(value, decimals).map_err(|_| match name {
        "price" => bad(-1013, "Filter failure: PRICE_FILTER"),
        _ => bad(-1013, "Filter failure: LOT_SIZE"),
    })?;
    if units == 0 {
        return Err(bad(-1013, format!("Invalid {name}.")));
    }
    Ok(units)
}

/// What `POST /api/v3/order` asks for, checked (nothing submitted yet).
struct OrderAsk {
    order: NewOrder,
    market: MarketId,
    response: &'static str,
}

async fn parse_order(gw: &Gateway, s: &Signed) -> Result<OrderAsk, BinanceError> {
    let (market, spec): (MarketId, &MarketSpec) = market_of(&gw.engine_config, required(s, "symbol")?)?;
    let side = match required(s, "side")? {
        "BUY" => Side::Buy,
        "SELL" => Side::Sell,
        _ => return Err(bad(-1117, "Invalid side.")),
    };
    let order_type = required(s, "type")?;
    let (bd, qd) = dto::market_decimals(&gw.engine_config, spec);
    if param(s, "quoteOrderQty").is_some() || param(s, "stopPrice").is_some() || param(s, "icebergQty").is_some() {
        return Err(bad(-1014, "Unsupported order combination."));
    }
    let quantity = Quantity(units_of(s, "quantity", bd)?);
    let tif = |required_here: bool| -> Result<TimeInForce, BinanceError> {
        match (param(s, "timeInForce"), required_here) {
            (None, true) => Err(BinanceError::mandatory("timeInForce")),
            (None, false) => Ok(TimeInForce::Gtc),
            (Some("GTC"), _) => Ok(TimeInForce::Gtc),
            (Some("IOC"), _) => Ok(TimeInForce::Ioc),
            (Some("FOK"), _) => Ok(TimeInForce::Fok),
            (Some(_), _) => Err(bad(-1115, "Invalid timeInForce.")),
        }
    };
    let kind = match order_type {
        "LIMIT" => OrderKind::Limit { price: Price(units_of(s, "price", qd)?), time_in_force: tif(true)?, post_only: false },
        "LIMIT_MAKER" => {
            if param(s, "timeInForce").is_some() {
                return Err(bad(-1106, "Parameter 'timeInForce' sent when not required."));
            }
            OrderKind::Limit { price: Price(units_of(s, "price", qd)?), time_in_force: TimeInForce::Gtc, post_only: true }
        }
        "MARKET" => {
            if param(s, "price").is_some() {
                return Err(bad(-1106, "Parameter 'price' sent when not required."));
            }
            let protection_price = crate::routes::orders::default_protection(gw, market, spec, side).await.map_err(|e| match e.code {
                "no_liquidity" => bad(-2010, "Market order without liquidity on the other side of the book."),
                _ => BinanceError::from(e),
            })?;
            OrderKind::Market { protection_price }
        }
        _ => return Err(bad(-1116, "Invalid orderType.")),
    };
    let price = match kind {
        OrderKind::Limit { price, .. } => price,
        OrderKind::Market { protection_price } => protection_price,
    };
    gw.engine_config.check_order_terms(market, price, quantity).map_err(rejected)?;
    let client_order_id = param(s, "newClientOrderId")
        .map(|c| ClientOrderId::new(c).map_err(|_| BinanceError::illegal_characters("newClientOrderId", "^[\\.A-Z\\:/a-z0-9_-]{1,36}$")))
        .transpose()?;
    let response = match (param(s, "newOrderRespType"), order_type) {
        (Some("ACK"), _) => "ACK",
        (Some("RESULT"), _) => "RESULT",
        (Some("FULL"), _) => "FULL",
        (Some(_), _) => return Err(BinanceError::illegal_characters("newOrderRespType", "ACK|RESULT|FULL")),
        (None, "LIMIT" | "MARKET") => "FULL",
        (None, _) => "ACK",
    };
    let order = NewOrder { account: s.account, market, side, kind, quantity, client_order_id, self_trade: Default::default() };
    Ok(OrderAsk { order, market, response })
}

/// An order as Binance shows it (`GET /api/v3/order`, open orders, cancels).
fn order_object(gw: &Gateway, market: MarketId, o: &OrderJson) -> Value {
    let spec = gw.engine_config.market(market);
    let symbol = spec.map(|s| symbol_of(&gw.engine_config, s)).unwrap_or_default();
    let d = |s: &str| number(s.parse().unwrap_or_default());
    let order_type = match (o.order_type, o.post_only) {
        ("market", _) => "MARKET",
        (_, true) => "LIMIT_MAKER",
        _ => "LIMIT",
    };
    let status = match o.status {
        "new" => "NEW",
        "partially_filled" => "PARTIALLY_FILLED",
        "filled" => "FILLED",
        "canceled" => "CANCELED",
        "self_trade_prevented" => "EXPIRED_IN_MATCH",
        _ => "EXPIRED",
    };
    let open = matches!(o.status, "new" | "partially_filled");
    json!({
        "symbol": symbol,
        "orderId": o.order_id,
        "orderListId": -1,
        "clientOrderId": o.client_order_id.clone().unwrap_or_default(),
        "price": if order_type == "MARKET" { number(Decimal::ZERO) } else { d(&o.price) },
        "origQty": d(&o.quantity),
        "executedQty": d(&o.filled),
        "cummulativeQuoteQty": d(o.quote_filled.as_deref().unwrap_or("0")),
        "status": status,
        "timeInForce": o.time_in_force.to_ascii_uppercase(),
        "type": order_type,
        "side": o.side.to_ascii_uppercase(),
        "stopPrice": number(Decimal::ZERO),
        "icebergQty": number(Decimal::ZERO),
        "time": o.created_at.unwrap_or(0),
        "updateTime": o.updated_at.or(o.created_at).unwrap_or(0),
        "isWorking": open,
        "workingTime": o.created_at.unwrap_or(0),
        "origQuoteOrderQty": number(Decimal::ZERO),
        "selfTradePreventionMode": "NONE",
    })
}

async fn place(gw: Data<Gateway>, req: HttpRequest, body: Bytes) -> Result<HttpResponse, BinanceError> {
    let s = authenticate(&gw, &req, &body).await?;
    let ask = parse_order(&gw, &s).await?;
    let (account, market, response) = (s.account, ask.market, ask.response);
    let applied = gw.submit(Command::PlaceOrder(ask.order)).await?;
    if let Some(reason) = dto::rejection(&applied.events) {
        return Err(rejected(reason));
    }
    let reply = dto::placed_order(gw.fmt(), account, &applied.events, applied.timestamp)
        .ok_or_else(|| BinanceError::new(StatusCode::SERVICE_UNAVAILABLE, -1006, "An unexpected response was received from the message bus. Execution status unknown."))?;
    let mut order = order_object(&gw, market, &reply.order);
    let ack = json!({
        "symbol": order["symbol"], "orderId": order["orderId"], "orderListId": -1,
        "clientOrderId": order["clientOrderId"], "transactTime": applied.timestamp.0,
    });
    if response == "ACK" {
        return Ok(HttpResponse::Ok().json(ack));
    }
    for field in ["time", "updateTime", "isWorking", "stopPrice", "icebergQty"] {
        order.as_object_mut().map(|o| o.remove(field));
    }
    order["transactTime"] = json!(applied.timestamp.0);
    if response == "FULL" {
        let fills: Vec<Value> = reply
            .fills
            .iter()
            .map(|f| {
                json!({
                    "price": number(f.price.parse().unwrap_or_default()),
                    "qty": number(f.quantity.parse().unwrap_or_default()),
                    "commission": number(f.fee.parse().unwrap_or_default()),
                    "commissionAsset": f.fee_asset,
                    "tradeId": f.trade_id,
                })
            })
            .collect();
        order["fills"] = json!(fills);
    }
    Ok(HttpResponse::Ok().json(order))
}

async fn test_order(gw: Data<Gateway>, req: HttpRequest, body: Bytes) -> Result<HttpResponse, BinanceError> {
    let s = authenticate(&gw, &req, &body).await?;
    parse_order(&gw, &s).await?;
    Ok(HttpResponse::Ok().json(json!({})))
}

/// The order a request names by `orderId` or `origClientOrderId`, among the caller's in `market`.
async fn named_order(gw: &Gateway, s: &Signed, market: MarketId, missing: fn() -> BinanceError) -> Result<OrderId, BinanceError> {
    let account: AccountId = s.account;
    let id = match (param(s, "orderId"), param(s, "origClientOrderId")) {
        (Some(id), _) => OrderId(id.parse().map_err(|_| BinanceError::illegal_characters("orderId", "^[0-9]{1,20}$"))?),
        (None, Some(cid)) => {
            let parsed = ClientOrderId::new(cid).map_err(|_| missing())?;
            match gw.sequencer.read(move |e| e.order_by_client_id(account, parsed)).await? {
                Some(id) => id,
                None => {
                    gw.catch_up_all().await?;
                    gw.store.order_by_client_id(account, cid).await?.map(|r| r.order_id).ok_or_else(missing)?
                }
            }
        }
        (None, None) => return Err(BinanceError::mandatory("orderId")),
    };
    let order = crate::routes::orders::order_json(gw, account, id).await?.ok_or_else(missing)?;
    if gw.engine_config.market_by_symbol(&order.market) != Some(market) {
        return Err(missing());
    }
    Ok(id)
}

fn no_such_order() -> BinanceError {
    bad(-2013, "Order does not exist.")
}

fn unknown_order() -> BinanceError {
    bad(-2011, "Unknown order sent.")
}

async fn query(gw: Data<Gateway>, req: HttpRequest, body: Bytes) -> Result<HttpResponse, BinanceError> {
    let s = authenticate(&gw, &req, &body).await?;
    let (market, _) = market_of(&gw.engine_config, required(&s, "symbol")?)?;
    let id = named_order(&gw, &s, market, no_such_order).await?;
    let order = crate::routes::orders::order_json(&gw, s.account, id).await?.ok_or_else(no_such_order)?;
    Ok(HttpResponse::Ok().json(order_object(&gw, market, &order)))
}

async fn cancel(gw: Data<Gateway>, req: HttpRequest, body: Bytes) -> Result<HttpResponse, BinanceError> {
    let s = authenticate(&gw, &req, &body).await?;
    let (market, _) = market_of(&gw.engine_config, required(&s, "symbol")?)?;
    let id = named_order(&gw, &s, market, unknown_order).await?;
    let applied = gw.submit(Command::CancelOrder { account: s.account, order: OrderRef::Id(id) }).await?;
    if let Some(reason) = dto::rejection(&applied.events) {
        return Err(match reason {
            RejectReason::UnknownOrder => unknown_order(),
            other => rejected(other),
        });
    }
    if !applied.events.iter().any(|e| matches!(e, Event::OrderClosed { order, .. } if *order == id)) {
        return Err(unknown_order());
    }
    let order = crate::routes::orders::order_after(&gw, s.account, id, &applied).await?;
    let mut object = order_object(&gw, market, &order);
    object["origClientOrderId"] = object["clientOrderId"].clone();
    object["transactTime"] = json!(applied.timestamp.0);
    Ok(HttpResponse::Ok().json(object))
}

async fn open_orders(gw: Data<Gateway>, req: HttpRequest, body: Bytes) -> Result<HttpResponse, BinanceError> {
    let s = authenticate(&gw, &req, &body).await?;
    let market = param(&s, "symbol").map(|sym| market_of(&gw.engine_config, sym).map(|(id, _)| id)).transpose()?;
    let account = s.account;
    let views = gw.sequencer.read(move |e| e.open_orders(Some(account), market)).await?;
    let mut out = Vec::with_capacity(views.len());
    for v in views {
        if let Some(order) = crate::routes::orders::order_json(&gw, account, v.order).await? {
            out.push(order_object(&gw, v.market, &order));
        }
    }
    Ok(HttpResponse::Ok().json(out))
}

async fn cancel_open_orders(gw: Data<Gateway>, req: HttpRequest, body: Bytes) -> Result<HttpResponse, BinanceError> {
    let s = authenticate(&gw, &req, &body).await?;
    let (market, _) = market_of(&gw.engine_config, required(&s, "symbol")?)?;
    let applied = gw.submit(Command::CancelAll { account: Some(s.account), market: Some(market) }).await?;
    if let Some(reason) = dto::rejection(&applied.events) {
        return Err(rejected(reason));
    }
    let mut out = Vec::new();
    for e in applied.events.iter() {
        if let Event::OrderClosed { order, .. } = e {
            let o = crate::routes::orders::order_after(&gw, s.account, *order, &applied).await?;
            let mut object = order_object(&gw, market, &o);
            object["origClientOrderId"] = object["clientOrderId"].clone();
            out.push(object);
        }
    }
    Ok(HttpResponse::Ok().json(out))
}

/// `limit` (default 500, at most 1000) and the `startTime` / `endTime` window of a history read.
fn page(s: &Signed) -> Result<(u32, tandem_store::TimeWindow), BinanceError> {
    let number = |name: &str| {
        param(s, name).map(|v| v.parse::<u64>().map_err(|_| BinanceError::illegal_characters(name, "^[0-9]{1,20}$"))).transpose()
    };
    let limit = number("limit")?.unwrap_or(500).clamp(1, 1000) as u32;
    let (start, end) = (number("startTime")?, number("endTime")?);
    if let (Some(a), Some(b)) = (start, end) {
        if b < a || b - a > 24 * 3_600_000 {
            return Err(bad(-1127, "More than 24 hours between startTime and endTime."));
        }
    }
    Ok((limit, (start, end)))
}

/// Every order of the caller's in a market, oldest first: from `orderId` on, else the newest.
async fn all_orders(gw: Data<Gateway>, req: HttpRequest, body: Bytes) -> Result<HttpResponse, BinanceError> {
    let s = authenticate(&gw, &req, &body).await?;
    let (market, _) = market_of(&gw.engine_config, required(&s, "symbol")?)?;
    let (limit, window) = page(&s)?;
    let from = param(&s, "orderId")
        .map(|v| v.parse().map(OrderId).map_err(|_| BinanceError::illegal_characters("orderId", "^[0-9]{1,20}$")))
        .transpose()?;
    gw.catch_up_all().await?;
    let records = gw.store.orders_page(s.account, market, from, window, limit).await?;
    let orders: Vec<Value> = records.iter().map(|r| order_object(&gw, market, &OrderJson::from_record(gw.fmt(), r))).collect();
    Ok(HttpResponse::Ok().json(orders))
}

/// The caller's trades in a market, oldest first: from trade `fromId` on, else the newest.
async fn my_trades(gw: Data<Gateway>, req: HttpRequest, body: Bytes) -> Result<HttpResponse, BinanceError> {
    let s = authenticate(&gw, &req, &body).await?;
    let (market, spec) = market_of(&gw.engine_config, required(&s, "symbol")?)?;
    if param(&s, "orderId").is_some() {
        return Err(bad(-1128, "Combination of optional parameters invalid: orderId is not offered on myTrades; page with fromId."));
    }
    let (limit, window) = page(&s)?;
    let from = param(&s, "fromId").map(|v| v.parse::<u64>().map_err(|_| BinanceError::illegal_characters("fromId", "^[0-9]{1,20}$"))).transpose()?;
    gw.catch_up_all().await?;
    let trades = gw.store.account_trades_page(s.account, market, from, window, limit).await?;
    let symbol = symbol_of(&gw.engine_config, spec);
    let f = gw.fmt();
    let d = |v: &str| number(v.parse().unwrap_or_default());
    let out: Vec<Value> = trades
        .iter()
        .filter_map(|t| {
            let fill = dto::TradeFacts::from_record(t).fill_for(f, s.account)?;
            Some(json!({
                "symbol": symbol,
                "id": fill.trade_id,
                "orderId": fill.order_id,
                "orderListId": -1,
                "price": d(&fill.price),
                "qty": d(&fill.quantity),
                "quoteQty": d(&fill.notional),
                "commission": d(&fill.fee),
                "commissionAsset": fill.fee_asset,
                "time": fill.timestamp,
                "isBuyer": fill.side == "buy",
                "isMaker": fill.liquidity == "maker",
                "isBestMatch": true,
            }))
        })
        .collect();
    Ok(HttpResponse::Ok().json(out))
}
