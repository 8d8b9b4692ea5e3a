//! Binance's signed requests (`SIGNED` endpoints): `X-MBX-APIKEY`, and an HMAC-SHA256 `signature`
//! (hex) of the query string followed directly by the request body, both without the
//! `signature` parameter; `timestamp` (ms) within `recvWindow` (default 5000, at most 60000) of
//! the server clock, and no more than a second ahead of it. The checks and failures are
//! Binance's, in its order: -2014 / -2015 for the key, -1102 / -1131 / -1021 for the time,
//! -1022 for the signature. The key and its secret are the native API's (`/v1/operator/accounts`
//! issues them); so are the caller's request budget and, for changes, the replay guard, whose
//! memory bounds the window a change is accepted in (a change older than the gateway's own
//! window is refused with -1021 even inside a longer `recvWindow`).
//!
//! Endpoints here: `GET /api/v3/account`.

use std::collections::HashMap;

use actix_web::http::StatusCode;
use actix_web::web::{self, Bytes, Data};
use actix_web::{HttpRequest, HttpResponse};
use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;
use tandem_matching::AccountId;

use super::{number, BinanceError};
use crate::auth::{constant_time_eq, lookup_key, now_millis};
use crate::Gateway;

pub const KEY_HEADER: &str = "X-MBX-APIKEY";
const DEFAULT_RECV_WINDOW: u64 = 5_000;
const MAX_RECV_WINDOW: u64 = 60_000;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/v3/account", web::get().to(account));
}

/// An authenticated Binance request: the account, and every parameter of the query and the
/// (form) body.
pub struct Signed {
    pub account: AccountId,
    pub params: HashMap<String, String>,
}

/// `text` without its `signature` parameter (and the `&` before it), and that signature; the
/// rest exactly as sent, since that is what was signed.
fn split_signature(text: &str) -> (String, Option<String>) {
    let mut signature = None;
    let rest: Vec<&str> = text
        .split('&')
        .filter(|part| match part.strip_prefix("signature=") {
            Some(sig) => {
                signature = Some(sig.to_owned());
                false
            }
            None => true,
        })
        .collect();
    (rest.join("&"), signature)
}

/// The `X-MBX-APIKEY` header, if it is one in form.
fn api_key(req: &HttpRequest) -> Result<&str, BinanceError> {
    let key = req.headers().get(KEY_HEADER).and_then(|v| v.to_str().ok()).unwrap_or("");
    if key.is_empty() || key.len() > 128 || !key.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(BinanceError::new(StatusCode::UNAUTHORIZED, -2014, "API-key format invalid."));
    }
    Ok(key)
}

/// Binance's `USER_STREAM` security: the API key alone, no signature. The caller's budget is spent.
pub async fn authenticate_key(gw: &Gateway, req: &HttpRequest) -> Result<AccountId, BinanceError> {
    let key = api_key(req)?;
    let Some((account, _)) = lookup_key(gw, key).await? else { return Err(unauthorized_key()) };
    crate::auth::spend_caller_budget(gw, req, key).await?;
    Ok(account)
}

fn unauthorized_key() -> BinanceError {
    BinanceError::new(StatusCode::UNAUTHORIZED, -2015, "Invalid API-key, IP, or permissions for action.")
}

/// Binance's checks of a signed request; see the module docs.
pub async fn authenticate(gw: &Gateway, req: &HttpRequest, body: &[u8]) -> Result<Signed, BinanceError> {
    let key = api_key(req)?;
    let body = std::str::from_utf8(body).map_err(|_| BinanceError::new(StatusCode::BAD_REQUEST, -1100, "Illegal characters found in a parameter."))?;
    let (query, query_sig) = split_signature(req.query_string());
    let (form, body_sig) = split_signature(body);
    let mut params = super::public::params(req)?;
    if !body.is_empty() {
        let form_params = web::Query::<HashMap<String, String>>::from_query(body)
            .map_err(|_| BinanceError::new(StatusCode::BAD_REQUEST, -1100, "Illegal characters found in a parameter."))?;
        params.extend(form_params.into_inner());
    }
    params.remove("signature");

    let Some((account, secret)) = lookup_key(gw, key).await? else { return Err(unauthorized_key()) };
    let timestamp: u64 = match params.get("timestamp") {
        None => return Err(BinanceError::mandatory("timestamp")),
        Some(t) => t.parse().map_err(|_| BinanceError::illegal_characters("timestamp", "^[0-9]{1,20}$"))?,
    };
    let recv_window = match params.get("recvWindow") {
        None => DEFAULT_RECV_WINDOW,
        Some(w) => match w.parse::<u64>() {
            Ok(w) if w <= MAX_RECV_WINDOW => w,
            _ => return Err(BinanceError::new(StatusCode::BAD_REQUEST, -1131, "recvWindow must be less than 60000")),
        },
    };
    let change = req.method() != actix_web::http::Method::GET;
    let window = if change { recv_window.min(gw.config.recv_window_ms) } else { recv_window };
    let now = now_millis();
    if timestamp > now + 1_000 {
        return Err(BinanceError::new(StatusCode::BAD_REQUEST, -1021, "Timestamp for this request was 1000ms ahead of the server's time."));
    }
    if now.saturating_sub(timestamp) > window {
        return Err(BinanceError::new(StatusCode::BAD_REQUEST, -1021, "Timestamp for this request is outside of the recvWindow."));
    }
    let Some(signature) = query_sig.or(body_sig) else { return Err(BinanceError::mandatory("signature")) };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(query.as_bytes());
    mac.update(form.as_bytes());
    let expected = hex::encode(mac.finalize().into_bytes());
    if !constant_time_eq(expected.as_bytes(), signature.to_ascii_lowercase().as_bytes()) {
        return Err(BinanceError::new(StatusCode::BAD_REQUEST, -1022, "Signature for this request is not valid."));
    }
    if change {
        match gw.replays.first_use_everywhere(&signature.to_ascii_lowercase(), timestamp, now).await {
            Ok(true) => {}
            Ok(false) => return Err(BinanceError::new(StatusCode::BAD_REQUEST, -1022, "Signature for this request was already used.")),
            Err(e) => {
                tracing::error!(error = %e, "replay guard unavailable");
                return Err(BinanceError::new(StatusCode::SERVICE_UNAVAILABLE, -1001, "Internal error; unable to process your request. Please try again."));
            }
        }
    }
    crate::auth::spend_caller_budget(gw, req, key).await?;
    Ok(Signed { account, params })
}

/// `GET /api/v3/account`: balances (every asset, free and locked) and the account's terms.
async fn account(gw: Data<Gateway>, req: HttpRequest, body: Bytes) -> Result<HttpResponse, BinanceError> {
    let signed = authenticate(&gw, &req, &body).await?;
    let account = signed.account;
    let (balances, frozen) = gw.sequencer.read(move |e| (e.balances(account), e.is_frozen(account))).await?;
    let Some(balances) = balances else { return Err(unauthorized_key()) };
    let cfg = &gw.engine_config;
    let balances: Vec<_> = cfg
        .assets
        .iter()
        .zip(balances)
        .map(|(spec, b)| {
            json!({
                "asset": spec.symbol,
                "free": number(spec.to_decimal(b.available)),
                "locked": number(spec.to_decimal(b.locked)),
            })
        })
        .collect();
    let fees = cfg.markets.first().map_or((0, 0), |m| (m.maker_fee_bps, m.taker_fee_bps));
    let rate = |bps: u16| number(rust_decimal::Decimal::new(bps as i64, 4));
    Ok(HttpResponse::Ok().json(json!({
        "makerCommission": fees.0,
        "takerCommission": fees.1,
        "buyerCommission": 0,
        "sellerCommission": 0,
        "commissionRates": {"maker": rate(fees.0), "taker": rate(fees.1), "buyer": number(Default::default()), "seller": number(Default::default())},
        "canTrade": !frozen,
        "canWithdraw": !frozen,
        "canDeposit": true,
        "brokered": false,
        "requireSelfTradePrevention": false,
        "preventSor": false,
        "updateTime": now_millis(),
        "accountType": "SPOT",
        "balances": balances,
        "permissions": ["SPOT"],
        "uid": account.0,
    })))
}

#[cfg(test)]
mod tests {
    use super::split_signature;

    #[test]
    fn the_signature_leaves_what_was_signed() {
        assert_eq!(split_signature("a=1&timestamp=2&signature=ff"), ("a=1&timestamp=2".into(), Some("ff".into())));
        assert_eq!(split_signature("signature=ff&a=1"), ("a=1".into(), Some("ff".into())));
        assert_eq!(split_signature(""), (String::new(), None));
        assert_eq!(split_signature("&timestamp=2&signature=ff"), ("&timestamp=2".into(), Some("ff".into())), "as sent");
    }
}
