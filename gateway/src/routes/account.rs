//! A trader's account: balances (from the engine), withdrawals, and history (fills, ledger,
//! deposits, withdrawals) from the store.

use super::{resource, RawBody};
use crate::auth::authenticate;
use crate::dto::{
    self, parse_json, parse_query, printable, units, LimitQuery, TradeFacts, WithdrawalJson, WithdrawalRequest,
};
use crate::error::ApiError;
use crate::openapi::schemas as doc;
use crate::Gateway;
use actix_web::http::StatusCode;
use actix_web::web::{self, Data};
use actix_web::{HttpRequest, HttpResponse};
use serde_json::json;
use std::str::FromStr;
use tandem_matching::{Amount, AssetId, Command, Event, RejectReason};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/v1/balances", |r| r.route(web::get().to(balances))))
        .service(resource("/v1/withdrawals", |r| r.route(web::post().to(|gw, req, body| crate::idempotency::guarded(gw, req, body, withdraw))).route(web::get().to(withdrawals))))
        .service(resource("/v1/deposits", |r| r.route(web::get().to(deposits))))
        .service(resource("/v1/trades", |r| r.route(web::get().to(my_trades))))
        .service(resource("/v1/ledger", |r| r.route(web::get().to(ledger))));
}

/// Balances
///
/// Every asset's balance, from the engine (always current).
#[utoipa::path(get, path = "/v1/balances", tag = "account",
    responses((status = 200, description = "`locked` is held by open orders and pending withdrawals", body = doc::Balances)),
    security(("api_key" = [], "timestamp" = [], "signature" = []), ("device_key" = [], "timestamp" = [], "signature" = [])))]
async fn balances(gw: Data<Gateway>, req: HttpRequest, body: RawBody) -> Result<HttpResponse, ApiError> {
    let account = authenticate(&gw, &req, &body).await?;
    let balances = gw.sequencer.read(move |e| e.balances(account)).await?.ok_or(RejectReason::UnknownAccount)?;
    let f = gw.fmt();
    let balances: Vec<_> = balances.into_iter().enumerate().map(|(i, b)| f.balance(AssetId(i as u16), b)).collect();
    Ok(HttpResponse::Ok().json(json!({ "balances": balances })))
}

/// Where a withdrawal may go: a BTC address of the configured network, or for other assets a
/// printable reference (a bank account, a payout id) of 1 to 128 characters.
pub(crate) fn destination(gw: &Gateway, asset_symbol: &str, destination: &str) -> Result<String, ApiError> {
    if asset_symbol.eq_ignore_ascii_case("BTC") {
        let bad = |why: String| ApiError::new(StatusCode::BAD_REQUEST, "bad_address", why);
        if destination.len() > 128 {
            return Err(bad("not a bitcoin address".into()));
        }
        let address = bitcoin::Address::from_str(destination.trim())
            .map_err(|e| bad(format!("not a bitcoin address: {e}")))?
            .require_network(gw.config.bitcoin_network)
            .map_err(|_| bad(format!("not an address of the {} network", gw.config.bitcoin_network)))?;
        Ok(address.to_string())
    } else {
        printable("destination", destination, 1, 128).map_err(|e| ApiError { code: "bad_destination", ..e })?;
        Ok(destination.to_owned())
    }
}

/// Request a withdrawal
///
/// Requests a withdrawal; the amount is locked at once. A BTC withdrawal is `pending` until the
/// settlement batch that pays it is confirmed.
#[utoipa::path(post, path = "/v1/withdrawals", tag = "account",
    params(("Idempotency-Key" = Option<String>, Header, description = "1 to 64 visible ASCII characters: the first answer is kept 24 h and replayed (`Idempotent-Replayed: true`) to retries with the same key")),
    request_body = WithdrawalRequest,
    responses(
        (status = 200, description = "The withdrawal, `pending`", body = doc::SingleWithdrawal),
        (status = 400, description = "`bad_address`, `bad_destination`, `zero_amount`, `insufficient_balance`, `bad_precision`, `out_of_range`, `bad_request`, `malformed_json`", body = doc::ErrorBody),
        (status = 403, description = "`account_frozen`", body = doc::ErrorBody),
        (status = 404, description = "`unknown_asset`", body = doc::ErrorBody),
        (status = 409, description = "`duplicate_client_withdrawal_id` (with the existing `withdrawal`), `request_in_progress`", body = doc::ErrorBody),
        (status = 422, description = "`idempotency_key_reused`", body = doc::ErrorBody),
    ),
    security(("api_key" = [], "timestamp" = [], "signature" = []), ("device_key" = [], "timestamp" = [], "signature" = [])))]
async fn withdraw(gw: Data<Gateway>, account: tandem_matching::AccountId, req: HttpRequest, body: RawBody) -> Result<HttpResponse, ApiError> {
    let r: WithdrawalRequest = parse_json(&body)?;
    let (asset, spec) = dto::asset_by_symbol(&gw.engine_config, &r.asset)?;
    let amount = Amount(units("amount", &r.amount, spec.decimals)?);
    if amount.is_zero() {
        return Err(RejectReason::ZeroAmount.into());
    }
    let destination = destination(&gw, &spec.symbol, &r.destination)?;
    let client_withdrawal_id = match r.client_withdrawal_id.as_deref() {
        Some(c) => Some(dto::client_withdrawal_id(c)?),
        None => crate::idempotency::derived_client_id(&req),
    };
    let command = match client_withdrawal_id {
        Some(client_withdrawal_id) => {
            Command::RequestClientWithdrawal { account, asset, amount, destination, client_withdrawal_id }
        }
        None => Command::RequestWithdrawal { account, asset, amount, destination },
    };
    let applied = gw.submit(command).await?;
    if let Some(reason) = dto::rejection(&applied.events) {
        return Err(duplicate_or(&gw, account, reason).await);
    }
    let f = gw.fmt();
    let withdrawal = applied
        .events
        .iter()
        .find_map(|e| match e {
            Event::WithdrawalRequested { withdrawal, asset, amount, destination, client_withdrawal_id, .. } => {
                Some(WithdrawalJson {
                    withdrawal_id: withdrawal.0,
                    asset: f.asset(*asset),
                    amount: f.amount(*asset, *amount),
                    destination: destination.clone(),
                    status: "pending".into(),
                    requested_at: applied.timestamp.0,
                    updated_at: applied.timestamp.0,
                    client_withdrawal_id: client_withdrawal_id.map(|c| c.as_str().to_owned()),
                })
            }
            _ => None,
        })
        .ok_or_else(|| ApiError::unavailable("the engine accepted the withdrawal but reported none"))?;
    let signed = crate::auth::device_signed_request(
        &req,
        &body,
        account,
        tandem_store::SignedRequestKind::Withdrawal,
        withdrawal.withdrawal_id,
        applied.seq,
    );
    crate::auth::keep_signed_request(&gw, signed).await;
    Ok(HttpResponse::Ok().json(json!({ "withdrawal": withdrawal })))
}

/// An engine reject as an API error; a duplicate client withdrawal id carries the withdrawal it
/// already made, so a client retrying after a lost reply learns what its first attempt did.
async fn duplicate_or(gw: &Gateway, account: tandem_matching::AccountId, reason: RejectReason) -> ApiError {
    let err = ApiError::from(reason);
    let RejectReason::DuplicateClientWithdrawalId(existing) = reason else { return err };
    // The projection may not hold it yet: wait for it to catch up with the engine first.
    let record = match gw.catch_up_all().await {
        Ok(()) => gw.store.withdrawal(existing).await.ok().flatten(),
        Err(_) => None,
    };
    match record.filter(|w| w.account_id == account) {
        Some(w) => err.with("withdrawal", json!(WithdrawalJson::from_record(gw.fmt(), &w))),
        None => err.with("withdrawal", json!({ "withdrawal_id": existing.0 })),
    }
}

/// Withdrawal history
///
/// The account's withdrawals, newest first.
#[utoipa::path(get, path = "/v1/withdrawals", tag = "account",
    params(doc::LimitParam),
    responses((status = 200, description = "Newest first", body = doc::Withdrawals)),
    security(("api_key" = [], "timestamp" = [], "signature" = []), ("device_key" = [], "timestamp" = [], "signature" = [])))]
async fn withdrawals(gw: Data<Gateway>, req: HttpRequest, body: RawBody) -> Result<HttpResponse, ApiError> {
    let account = authenticate(&gw, &req, &body).await?;
    let q: LimitQuery = parse_query(&req)?;
    let limit = dto::limit(q.limit)?;
    gw.catch_up_all().await?;
    let f = gw.fmt();
    let rows = gw.store.withdrawals(account, limit).await?;
    let rows: Vec<_> = rows.iter().map(|w| WithdrawalJson::from_record(f, w)).collect();
    Ok(HttpResponse::Ok().json(json!({ "withdrawals": rows })))
}

/// Deposit history
///
/// The account's credited deposits, newest first.
#[utoipa::path(get, path = "/v1/deposits", tag = "account",
    params(doc::LimitParam),
    responses((status = 200, description = "Newest first", body = doc::Deposits)),
    security(("api_key" = [], "timestamp" = [], "signature" = []), ("device_key" = [], "timestamp" = [], "signature" = [])))]
async fn deposits(gw: Data<Gateway>, req: HttpRequest, body: RawBody) -> Result<HttpResponse, ApiError> {
    let account = authenticate(&gw, &req, &body).await?;
    let q: LimitQuery = parse_query(&req)?;
    let limit = dto::limit(q.limit)?;
    gw.catch_up_all().await?;
    let f = gw.fmt();
    let rows = gw.store.deposits(account, limit).await?;
    let rows: Vec<_> = rows.iter().map(|d| dto::deposit_json(f, d)).collect();
    Ok(HttpResponse::Ok().json(json!({ "deposits": rows })))
}

/// The caller's fills
///
/// The account's fills, as maker or taker, newest first.
#[utoipa::path(get, path = "/v1/trades", tag = "account",
    params(LimitQuery),
    responses(
        (status = 200, description = "Newest first", body = doc::Fills),
        (status = 404, description = "`unknown_market`", body = doc::ErrorBody),
    ),
    security(("api_key" = [], "timestamp" = [], "signature" = []), ("device_key" = [], "timestamp" = [], "signature" = [])))]
async fn my_trades(gw: Data<Gateway>, req: HttpRequest, body: RawBody) -> Result<HttpResponse, ApiError> {
    let account = authenticate(&gw, &req, &body).await?;
    let q: LimitQuery = parse_query(&req)?;
    let limit = dto::limit(q.limit)?;
    let market =
        q.market.as_deref().map(|m| dto::market_by_symbol(&gw.engine_config, m).map(|(id, _)| id)).transpose()?;
    gw.catch_up_all().await?;
    let f = gw.fmt();
    let rows = gw.store.account_trades(account, market, limit).await?;
    let fills: Vec<_> = rows.iter().filter_map(|t| TradeFacts::from_record(t).fill_for(f, account)).collect();
    Ok(HttpResponse::Ok().json(json!({ "fills": fills })))
}

/// Ledger entries
///
/// Every change of the account's balances, newest first, with the command that made it.
#[utoipa::path(get, path = "/v1/ledger", tag = "account",
    params(doc::LimitParam),
    responses((status = 200, description = "Newest first", body = doc::Ledger)),
    security(("api_key" = [], "timestamp" = [], "signature" = []), ("device_key" = [], "timestamp" = [], "signature" = [])))]
async fn ledger(gw: Data<Gateway>, req: HttpRequest, body: RawBody) -> Result<HttpResponse, ApiError> {
    let account = authenticate(&gw, &req, &body).await?;
    let q: LimitQuery = parse_query(&req)?;
    let limit = dto::limit(q.limit)?;
    gw.catch_up_all().await?;
    let f = gw.fmt();
    let rows = gw.store.ledger_entries(account, limit).await?;
    let rows: Vec<_> = rows.iter().map(|e| dto::ledger_json(f, e)).collect();
    Ok(HttpResponse::Ok().json(json!({ "entries": rows })))
}
