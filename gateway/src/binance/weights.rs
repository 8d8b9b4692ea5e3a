//! Binance's request weights: what each `/api/v3` request costs of the caller's IP budget per
//! minute (the same budget the native API spends 1 per request from), reported back in
//! `X-MBX-USED-WEIGHT-1M`; past the budget, `429` with `Retry-After` and -1003. The figures are
//! Binance's, so a client that paces itself for Binance paces itself for Tandem.

use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use actix_web::http::{Method, StatusCode};
use actix_web::HttpResponse;

use super::BinanceError;
use crate::limits::Budget;

/// Whether `path` is one of the Binance-compatible endpoints.
pub fn is_binance(path: &str) -> bool {
    path.starts_with("/api/v3/")
}

/// The weight of a `/api/v3` request.
pub fn weight(method: &Method, path: &str, query: &str) -> u32 {
    let has = |name: &str| query.split('&').any(|p| p.split('=').next() == Some(name));
    let limit = || {
        query
            .split('&')
            .find_map(|p| p.strip_prefix("limit="))
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(100)
    };
    let one_or_all = |one: u32, all: u32| if has("symbol") { one } else { all };
    match (method.as_str(), path) {
        (_, "/api/v3/ping" | "/api/v3/time") => 1,
        (_, "/api/v3/exchangeInfo") => 20,
        (_, "/api/v3/depth") => match limit() {
            0..=100 => 5,
            101..=500 => 25,
            501..=1000 => 50,
            _ => 250,
        },
        (_, "/api/v3/trades") => 25,
        (_, "/api/v3/ticker/price" | "/api/v3/ticker/bookTicker") => one_or_all(2, 4),
        (_, "/api/v3/avgPrice") => 2,
        (_, "/api/v3/aggTrades" | "/api/v3/klines" | "/api/v3/uiKlines") => 2,
        (_, "/api/v3/ticker/24hr") => one_or_all(2, 80),
        (_, "/api/v3/userDataStream") => 2,
        ("GET", "/api/v3/order") => 4,
        ("GET", "/api/v3/openOrders") => one_or_all(6, 80),
        (_, "/api/v3/allOrders" | "/api/v3/myTrades" | "/api/v3/account") => 20,
        _ => 1,
    }
}

/// `X-MBX-USED-WEIGHT-1M`: the weight used of this minute's budget.
pub fn set_used_weight(headers: &mut HeaderMap, budget: &Budget) {
    if let Ok(value) = HeaderValue::from_str(&budget.used.to_string()) {
        headers.insert(HeaderName::from_static("x-mbx-used-weight-1m"), value);
    }
}

/// The answer to a request over the budget, in Binance's words.
pub fn too_much_weight(budget: &Budget) -> HttpResponse {
    let e = BinanceError::new(
        StatusCode::TOO_MANY_REQUESTS,
        -1003,
        format!(
            "Too much request weight used; current limit is {} request weight per 1 MINUTE. Please use WebSocket Streams for live updates to avoid polling the API.",
            budget.limit
        ),
    );
    let mut response = actix_web::ResponseError::error_response(&e);
    if let Ok(v) = HeaderValue::from_str(&budget.reset_in_ms.div_ceil(1000).max(1).to_string()) {
        response.headers_mut().insert(RETRY_AFTER, v);
    }
    set_used_weight(response.headers_mut(), budget);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_are_binances() {
        assert_eq!(weight(&Method::GET, "/api/v3/depth", "symbol=BTCUSD"), 5);
        assert_eq!(weight(&Method::GET, "/api/v3/depth", "symbol=BTCUSD&limit=5000"), 250);
        assert_eq!(weight(&Method::GET, "/api/v3/openOrders", ""), 80);
        assert_eq!(weight(&Method::GET, "/api/v3/openOrders", "symbol=BTCUSD&timestamp=1"), 6);
        assert_eq!(weight(&Method::POST, "/api/v3/order", ""), 1);
        assert_eq!(weight(&Method::GET, "/api/v3/order", "symbol=BTCUSD"), 4);
        assert_eq!(weight(&Method::GET, "/api/v3/klines", "symbol=BTCUSD&interval=1m"), 2);
        assert_eq!(weight(&Method::GET, "/api/v3/ticker/24hr", ""), 80);
    }
}
