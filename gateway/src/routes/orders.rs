//! A trader's orders: place, amend, cancel, read. Every write answers with the engine's outcome
//! of that very command (its events), not with a later read.

use super::{resource, RawBody};
use crate::auth::authenticate;
use crate::dto::{
    self, client_order_id, engine_range, parse_json, parse_query, path_id, units, AmendOrderRequest, CancelQuery,
    OrderJson, OrderReply, OrderTypeReq, OrdersQuery, PlaceOrderRequest,
};
use crate::error::ApiError;
use crate::idempotency::guarded;
use crate::openapi::schemas as doc;
use crate::Gateway;
use actix_web::web::{self, Data};
use actix_web::{HttpRequest, HttpResponse};
use serde_json::json;
use std::collections::HashMap;
use tandem_matching::config::{MarketSpec, MAX_UNITS};
use tandem_matching::{
    AccountId, Amount, Applied, Command, Event, MarketId, NewOrder, OrderId, OrderKind, OrderRef, OrderView, Price,
    Quantity, RejectReason, Side, TimeInForce,
};
use tandem_store::{OrderRecord, SignedRequestKind};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/v1/orders", |r| {
        r.route(web::post().to(|gw, req, body| guarded(gw, req, body, place)))
            .route(web::get().to(list))
            .route(web::delete().to(|gw, req, body| guarded(gw, req, body, cancel_many)))
    }))
    .service(resource("/v1/orders/{id}", |r| {
        r.route(web::get().to(get_one))
            .route(web::delete().to(|gw, req, body| guarded(gw, req, body, cancel_one)))
            .route(web::patch().to(|gw, req, body| guarded(gw, req, body, amend)))
    }));
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::bad_request(message)
}

/// The engine's static order checks, before journaling, so malformed orders never take a
/// journal slot.
fn precheck(gw: &Gateway, market: MarketId, price: Price, quantity: Quantity) -> Result<(), ApiError> {
    gw.engine_config.check_order_terms(market, price, quantity).map_err(Into::into)
}

/// A market order's protection price when the client gave none: the best opposite price moved
/// `market_protection_bps` against the taker, on the tick grid.
pub(crate) async fn default_protection(gw: &Gateway, market: MarketId, spec: &MarketSpec, side: Side) -> Result<Price, ApiError> {
    let (bid, ask) = gw.sequencer.read(move |e| e.best_bid_ask(market)).await?;
    let no_liquidity = || {
        ApiError::new(
            actix_web::http::StatusCode::BAD_REQUEST,
            "no_liquidity",
            "the book has no opposite orders; give a protection_price to place a market order anyway",
        )
    };
    let bps = gw.config.market_protection_bps.min(10_000) as u128;
    let tick = spec.tick.0 as u128;
    let max = (MAX_UNITS as u128 / tick) * tick;
    let price = match side {
        Side::Buy => {
            let best = ask.ok_or_else(no_liquidity)?.0 as u128;
            (best * (10_000 + bps) / 10_000 / tick * tick).max(best).min(max)
        }
        Side::Sell => {
            let best = bid.ok_or_else(no_liquidity)?.0 as u128;
            ((best * (10_000 - bps)).div_ceil(10_000).div_ceil(tick) * tick).clamp(tick, best.max(tick))
        }
    };
    Ok(Price(price as u64))
}

/// Place an order
///
/// Places a limit or market order. The reply is built from this command's own events: the order
/// as it stands after matching and its fills, synchronously.
#[utoipa::path(post, path = "/v1/orders", tag = "orders",
    params(("Idempotency-Key" = Option<String>, Header, description = "1 to 64 visible ASCII characters: the first answer is kept 24 h and replayed (`Idempotent-Replayed: true`) to retries with the same key")),
    request_body(content = PlaceOrderRequest, example = json!({"market": "BTC-USD", "side": "buy", "type": "limit", "price": "65000.00", "quantity": "0.001", "time_in_force": "GTC", "client_order_id": "my-order-1"})),
    responses(
        (status = 200, description = "The order and its fills", body = OrderReply),
        (status = 400, description = "`bad_request`, `malformed_json`, `bad_precision`, `out_of_range`, `price_off_tick`, `quantity_off_lot`, `below_min_notional`, `insufficient_balance`, `would_take_liquidity`, `no_liquidity`", body = doc::ErrorBody),
        (status = 403, description = "`account_cannot_trade`, `account_frozen`", body = doc::ErrorBody),
        (status = 404, description = "`unknown_market`", body = doc::ErrorBody),
        (status = 409, description = "`duplicate_client_order_id` (with the existing `order`), `market_halted`, `request_in_progress`", body = doc::ErrorBody),
        (status = 422, description = "`idempotency_key_reused`", body = doc::ErrorBody),
    ),
    security(("api_key" = [], "timestamp" = [], "signature" = []), ("device_key" = [], "timestamp" = [], "signature" = [])))]
async fn place(gw: Data<Gateway>, account: AccountId, req: HttpRequest, body: RawBody) -> Result<HttpResponse, ApiError> {
    let r: PlaceOrderRequest = parse_json(&body)?;
    let (market, spec) = dto::market_by_symbol(&gw.engine_config, &r.market)?;
    let (bd, qd) = dto::market_decimals(&gw.engine_config, spec);
    let quantity = Quantity(engine_range("quantity", units("quantity", &r.quantity, bd)?)?);
    let client_order_id = match r.client_order_id.as_deref() {
        Some(c) => Some(client_order_id(c)?),
        None => crate::idempotency::derived_client_id(&req),
    };
    let kind = match r.order_type {
        OrderTypeReq::Limit => {
            if r.protection_price.is_some() {
                return Err(bad("protection_price is only for market orders; a limit order's price is its bound"));
            }
            let price = r.price.as_deref().ok_or_else(|| bad("a limit order needs a price"))?;
            let price = Price(engine_range("price", units("price", price, qd)?)?);
            OrderKind::Limit {
                price,
                time_in_force: r.time_in_force.unwrap_or(TimeInForce::Gtc),
                post_only: r.post_only.unwrap_or(false),
            }
        }
        OrderTypeReq::Market => {
            if r.price.is_some() {
                return Err(bad("market orders take no price; bound them with protection_price"));
            }
            if r.post_only == Some(true) {
                return Err(bad("a market order cannot be post-only"));
            }
            if r.time_in_force.is_some_and(|t| t != TimeInForce::Ioc) {
                return Err(bad("market orders are always IOC"));
            }
            let protection_price = match r.protection_price.as_deref() {
                Some(p) => Price(engine_range("protection_price", units("protection_price", p, qd)?)?),
                None => default_protection(&gw, market, spec, r.side).await?,
            };
            OrderKind::Market { protection_price }
        }
    };
    let price = match kind {
        OrderKind::Limit { price, .. } => price,
        OrderKind::Market { protection_price } => protection_price,
    };
    precheck(&gw, market, price, quantity)?;
    let order = NewOrder {
        account,
        market,
        side: r.side,
        kind,
        quantity,
        client_order_id,
        self_trade: r.self_trade_prevention.unwrap_or_default(),
    };
    let applied = gw.submit(Command::PlaceOrder(order)).await?;
    if let Some(reason) = dto::rejection(&applied.events) {
        return Err(reject(&gw, account, reason).await);
    }
    let placed = applied.events.iter().find_map(|e| match e {
        Event::OrderAccepted(a) => Some(a.order.0),
        _ => None,
    });
    if let Some(id) = placed {
        let signed = crate::auth::device_signed_request(&req, &body, account, SignedRequestKind::Order, id, applied.seq);
        crate::auth::keep_signed_request(&gw, signed).await;
    }
    let reply = dto::placed_order(gw.fmt(), account, &applied.events, applied.timestamp)
        .ok_or_else(|| ApiError::unavailable("the engine accepted the order but reported no order"))?;
    Ok(HttpResponse::Ok().json(reply))
}

/// An engine reject as an API error; a duplicate client order id carries the existing order,
/// so a client retrying after a lost reply learns what its first attempt did.
async fn reject(gw: &Gateway, account: AccountId, reason: RejectReason) -> ApiError {
    let err = ApiError::from(reason);
    match reason {
        RejectReason::DuplicateClientOrderId(existing) => match order_json(gw, account, existing).await {
            Ok(Some(order)) => err.with("order", json!(order)),
            _ => err.with("order", json!({ "order_id": existing.0 })),
        },
        _ => err,
    }
}

/// Quote filled so far and last update time of an open order, from the store when its record
/// is as far along as the engine's view (the projection may lag a fill).
async fn enrich(gw: &Gateway, view: &OrderView) -> (Option<Amount>, Option<u64>) {
    let record = gw.store.order(view.order).await.ok().flatten();
    progress(view, record.as_ref())
}

/// See [`enrich`]: an unfilled order has filled no quote whatever the store says.
fn progress(view: &OrderView, record: Option<&OrderRecord>) -> (Option<Amount>, Option<u64>) {
    match record {
        Some(r) if r.filled == view.filled => (Some(r.quote_filled), Some(r.updated_at.0)),
        _ if view.filled.is_zero() => (Some(Amount::ZERO), None),
        _ => (None, None),
    }
}

/// One of `account`'s orders: from the engine while open, else from the store.
pub(crate) async fn order_json(gw: &Gateway, account: AccountId, id: OrderId) -> Result<Option<OrderJson>, ApiError> {
    if let Some(view) = gw.sequencer.read(move |e| e.order(id)).await? {
        // Someone else's order is as unknown as a missing one.
        if view.account != account {
            return Ok(None);
        }
        let (quote, updated) = enrich(gw, &view).await;
        return Ok(Some(OrderJson::from_view(gw.fmt(), &view, quote, updated)));
    }
    gw.catch_up_all().await?;
    let record = gw.store.order(id).await?;
    Ok(record.filter(|r| r.account_id == account).map(|r| OrderJson::from_record(gw.fmt(), &r)))
}

/// The order as it stands after the write `applied`: the store once it has projected that
/// write, else whatever the write's own events and the engine tell.
pub(crate) async fn order_after(gw: &Gateway, account: AccountId, id: OrderId, applied: &Applied) -> Result<OrderJson, ApiError> {
    if gw.catch_up(applied.seq).await {
        if let Some(r) = gw.store.order(id).await?.filter(|r| r.account_id == account) {
            return Ok(OrderJson::from_record(gw.fmt(), &r));
        }
    }
    if let Some(o) = dto::closed_from_event(gw.fmt(), &applied.events, id.0, applied.timestamp) {
        return Ok(o);
    }
    match gw.sequencer.read(move |e| e.order(id)).await? {
        Some(v) if v.account == account => Ok(OrderJson::from_view(gw.fmt(), &v, None, Some(applied.timestamp.0))),
        _ => Err(ApiError::unavailable("the order's state is not available yet; read it again shortly")),
    }
}

/// Get an order
///
/// One of the caller's orders: from the engine while open, else from history.
#[utoipa::path(get, path = "/v1/orders/{id}", tag = "orders",
    params(("id" = u64, Path, description = "The order id")),
    responses(
        (status = 200, description = "The order", body = doc::SingleOrder),
        (status = 404, description = "`unknown_order` (also another account's order)", body = doc::ErrorBody),
    ),
    security(("api_key" = [], "timestamp" = [], "signature" = []), ("device_key" = [], "timestamp" = [], "signature" = [])))]
async fn get_one(gw: Data<Gateway>, req: HttpRequest, body: RawBody) -> Result<HttpResponse, ApiError> {
    let account = authenticate(&gw, &req, &body).await?;
    let id = OrderId(path_id(&req, "id")?);
    let order = order_json(&gw, account, id).await?.ok_or_else(ApiError::unknown_order)?;
    Ok(HttpResponse::Ok().json(json!({ "order": order })))
}

/// List orders
///
/// The caller's orders, newest first: open ones from the engine, or all from history.
#[utoipa::path(get, path = "/v1/orders", tag = "orders", operation_id = "list_orders",
    params(OrdersQuery),
    responses(
        (status = 200, description = "Newest first", body = doc::Orders),
        (status = 404, description = "`unknown_market`", body = doc::ErrorBody),
    ),
    security(("api_key" = [], "timestamp" = [], "signature" = []), ("device_key" = [], "timestamp" = [], "signature" = [])))]
async fn list(gw: Data<Gateway>, req: HttpRequest, body: RawBody) -> Result<HttpResponse, ApiError> {
    let account = authenticate(&gw, &req, &body).await?;
    let q: OrdersQuery = parse_query(&req)?;
    let market =
        q.market.as_deref().map(|m| dto::market_by_symbol(&gw.engine_config, m).map(|(id, _)| id)).transpose()?;
    let limit = dto::limit(q.limit)?;
    let orders: Vec<OrderJson> = match q.status.as_deref().unwrap_or("open") {
        "open" => {
            let mut views = gw.sequencer.read(move |e| e.open_orders(Some(account), market)).await?;
            views.reverse(); // newest first, like history
            if let Some(before) = q.before {
                views.retain(|v| v.order.0 < before);
            }
            views.truncate(limit as usize);
            // One store read for all the partially filled ones.
            let records: HashMap<OrderId, _> = if views.iter().any(|v| !v.filled.is_zero()) {
                gw.store
                    .orders(account, market, true, 1000, None)
                    .await
                    .unwrap_or_default()
                    .into_iter()
                    .map(|r| (r.order_id, r))
                    .collect()
            } else {
                HashMap::new()
            };
            views
                .iter()
                .map(|v| {
                    let (quote, updated) = progress(v, records.get(&v.order));
                    OrderJson::from_view(gw.fmt(), v, quote, updated)
                })
                .collect()
        }
        "all" => {
            gw.catch_up_all().await?;
            let records = gw.store.orders(account, market, false, limit, q.before.map(OrderId)).await?;
            records.iter().map(|r| OrderJson::from_record(gw.fmt(), r)).collect()
        }
        other => return Err(bad(format!("status must be open or all, got {other:?}"))),
    };
    Ok(HttpResponse::Ok().json(json!({ "orders": orders })))
}

/// Cancel an order
///
/// Cancels one open order by id.
#[utoipa::path(delete, path = "/v1/orders/{id}", tag = "orders",
    params(("id" = u64, Path, description = "The order id"), ("Idempotency-Key" = Option<String>, Header, description = "1 to 64 visible ASCII characters: the first answer is kept 24 h and replayed (`Idempotent-Replayed: true`) to retries with the same key")),
    responses(
        (status = 200, description = "The order, `canceled`", body = doc::SingleOrder),
        (status = 404, description = "`unknown_order`: not the caller's, or not open", body = doc::ErrorBody),
    ),
    security(("api_key" = [], "timestamp" = [], "signature" = []), ("device_key" = [], "timestamp" = [], "signature" = [])))]
async fn cancel_one(gw: Data<Gateway>, account: AccountId, req: HttpRequest, _: RawBody) -> Result<HttpResponse, ApiError> {
    let id = OrderId(path_id(&req, "id")?);
    cancel(&gw, account, OrderRef::Id(id)).await
}

async fn cancel(gw: &Gateway, account: AccountId, order: OrderRef) -> Result<HttpResponse, ApiError> {
    let applied = gw.submit(Command::CancelOrder { account, order }).await?;
    if let Some(reason) = dto::rejection(&applied.events) {
        return Err(reason.into());
    }
    let id = applied
        .events
        .iter()
        .find_map(|e| match e {
            Event::OrderClosed { order, account: a, .. } if *a == account => Some(*order),
            _ => None,
        })
        .ok_or_else(|| ApiError::unavailable("the engine canceled but reported no order"))?;
    let order = order_after(gw, account, id, &applied).await?;
    Ok(HttpResponse::Ok().json(json!({ "order": order })))
}

/// Cancel by client id, or cancel all
///
/// `DELETE /v1/orders?client_order_id=..` cancels one order by its client id;
/// `DELETE /v1/orders[?market=..]` cancels all of the caller's orders (in that market).
#[utoipa::path(delete, path = "/v1/orders", tag = "orders",
    description = "With `client_order_id`: cancels that one open order and answers `{\"order\": ...}`. \
        Otherwise cancels every open order of the caller's (in `market` if given) and answers their ids.",
    params(CancelQuery, ("Idempotency-Key" = Option<String>, Header, description = "1 to 64 visible ASCII characters: the first answer is kept 24 h and replayed (`Idempotent-Replayed: true`) to retries with the same key")),
    responses(
        (status = 200, description = "`{\"order\"}` for one order, `{\"canceled\"}` for many", body = inline(CancelReply)),
        (status = 404, description = "`unknown_order`, `unknown_market`", body = doc::ErrorBody),
    ),
    security(("api_key" = [], "timestamp" = [], "signature" = []), ("device_key" = [], "timestamp" = [], "signature" = [])))]
async fn cancel_many(gw: Data<Gateway>, account: AccountId, req: HttpRequest, _: RawBody) -> Result<HttpResponse, ApiError> {
    let q: CancelQuery = parse_query(&req)?;
    match (q.client_order_id.as_deref(), q.market.as_deref()) {
        (Some(_), Some(_)) => Err(bad("give either client_order_id or market, not both")),
        (Some(cid), None) => cancel(&gw, account, OrderRef::Client(client_order_id(cid)?)).await,
        (None, market) => {
            let market = market.map(|m| dto::market_by_symbol(&gw.engine_config, m).map(|(id, _)| id)).transpose()?;
            let applied = gw.submit(Command::CancelAll { account: Some(account), market }).await?;
            if let Some(reason) = dto::rejection(&applied.events) {
                return Err(reason.into());
            }
            let canceled: Vec<u64> = applied
                .events
                .iter()
                .filter_map(|e| match e {
                    Event::OrderClosed { order, .. } => Some(order.0),
                    _ => None,
                })
                .collect();
            Ok(HttpResponse::Ok().json(json!({ "canceled": canceled })))
        }
    }
}

/// Amend an order
///
/// Changes an open order's price, quantity (the new total) or both. Same price and a smaller
/// quantity keeps time priority; anything else re-enters the book and may trade.
#[utoipa::path(patch, path = "/v1/orders/{id}", tag = "orders",
    params(("id" = u64, Path, description = "The order id"), ("Idempotency-Key" = Option<String>, Header, description = "1 to 64 visible ASCII characters: the first answer is kept 24 h and replayed (`Idempotent-Replayed: true`) to retries with the same key")),
    request_body = AmendOrderRequest,
    responses(
        (status = 200, description = "The order and any fills", body = OrderReply),
        (status = 400, description = "`bad_request`, `amend_no_change`, `amend_below_filled`, `price_off_tick`, `quantity_off_lot`, `below_min_notional`, `insufficient_balance`", body = doc::ErrorBody),
        (status = 403, description = "`account_frozen`", body = doc::ErrorBody),
        (status = 404, description = "`unknown_order`", body = doc::ErrorBody),
        (status = 409, description = "`market_halted`, `request_in_progress`", body = doc::ErrorBody),
    ),
    security(("api_key" = [], "timestamp" = [], "signature" = []), ("device_key" = [], "timestamp" = [], "signature" = [])))]
async fn amend(gw: Data<Gateway>, account: AccountId, req: HttpRequest, body: RawBody) -> Result<HttpResponse, ApiError> {
    let id = OrderId(path_id(&req, "id")?);
    let r: AmendOrderRequest = parse_json(&body)?;
    if r.price.is_none() && r.quantity.is_none() {
        return Err(bad("give a new price, a new quantity, or both"));
    }
    // The order's market decides the units; only open orders can be amended.
    let view = gw.sequencer.read(move |e| e.order(id)).await?.filter(|v| v.account == account);
    let view = view.ok_or_else(ApiError::unknown_order)?;
    let spec = gw.engine_config.market(view.market).ok_or_else(ApiError::unknown_order)?;
    let (bd, qd) = dto::market_decimals(&gw.engine_config, spec);
    let price = r.price.as_deref().map(|p| units("price", p, qd).and_then(|v| engine_range("price", v))).transpose()?;
    let quantity = r
        .quantity
        .as_deref()
        .map(|q| units("quantity", q, bd).and_then(|v| engine_range("quantity", v)))
        .transpose()?;
    let (price, quantity) = (price.map(Price), quantity.map(Quantity));
    precheck(&gw, view.market, price.unwrap_or(view.price), quantity.unwrap_or(view.quantity))?;
    let applied = gw.submit(Command::AmendOrder { account, order: OrderRef::Id(id), price, quantity }).await?;
    if let Some(reason) = dto::rejection(&applied.events) {
        return Err(reason.into());
    }
    let fills = dto::fills_of(gw.fmt(), account, id.0, &applied.events, applied.timestamp);
    let order = order_after(&gw, account, id, &applied).await?;
    Ok(HttpResponse::Ok().json(OrderReply { order, fills }))
}

/// What `DELETE /v1/orders` answers: one order canceled by client id, or the ids of all canceled.
#[derive(utoipa::ToSchema)]
#[serde(untagged)]
#[allow(dead_code)] // read only by the derive: the handler answers with `json!`
enum CancelReply {
    #[schema(title = "One order")]
    One(Box<doc::SingleOrder>),
    #[schema(title = "Many orders")]
    Many(doc::Canceled),
}
