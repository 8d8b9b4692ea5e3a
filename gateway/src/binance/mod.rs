//! The Binance spot v3 conventions (`/api/v3/...`), so a partner's existing Binance client
//! trades on Tandem with only its base URL changed. The native API (`/v1`) stays the reference;
//! this module translates: symbols are base and quote run together (`BTC-USD` is `BTCUSD`),
//! numbers are decimal strings with at least eight places, times are milliseconds, and failures
//! answer Binance's `{"code": -1121, "msg": "Invalid symbol."}` with its HTTP status.
//!
//! Parts: [`public`] (market data), [`history`] (aggregate trades, candles, 24-hour tickers;
//! [`interval`] is their calendar), [`signed`] (Binance's request signing; the account),
//! [`orders`] (place, test, query, cancel, open orders, order and trade history), [`weights`]
//! (request weights, spent by the gateway's budget middleware), [`listen_keys`] (user data
//! stream keys), [`streams`] (the WebSocket streams under `/ws` and `/stream`).

pub mod history;
pub mod interval;
pub mod listen_keys;
pub mod orders;
pub mod public;
pub mod signed;
pub mod streams;
pub mod weights;

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use rust_decimal::Decimal;
use tandem_matching::config::{to_decimal, MarketSpec};
use tandem_matching::{EngineConfig, MarketId};

use crate::error::ApiError;
use crate::Gateway;

pub fn configure(cfg: &mut actix_web::web::ServiceConfig) {
    public::configure(cfg);
    history::configure(cfg);
    signed::configure(cfg);
    orders::configure(cfg);
    listen_keys::configure(cfg);
    streams::configure(cfg);
}

/// A failure as Binance reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BinanceError {
    pub status: StatusCode,
    pub code: i32,
    pub msg: String,
}

impl BinanceError {
    pub fn new(status: StatusCode, code: i32, msg: impl Into<String>) -> BinanceError {
        BinanceError { status, code, msg: msg.into() }
    }

    /// -1121: the symbol is not one of the exchange's.
    pub fn invalid_symbol() -> BinanceError {
        BinanceError::new(StatusCode::BAD_REQUEST, -1121, "Invalid symbol.")
    }

    /// -1102: a mandatory parameter is missing or empty.
    pub fn mandatory(name: &str) -> BinanceError {
        BinanceError::new(
            StatusCode::BAD_REQUEST,
            -1102,
            format!("Mandatory parameter '{name}' was not sent, was empty/null, or malformed."),
        )
    }

    /// -1100: a parameter's value has characters it may not.
    pub fn illegal_characters(name: &str, legal: &str) -> BinanceError {
        BinanceError::new(
            StatusCode::BAD_REQUEST,
            -1100,
            format!("Illegal characters found in parameter '{name}'; legal range is '{legal}'."),
        )
    }

    /// -1128: a combination of optional parameters is not valid.
    pub fn bad_combination(msg: impl Into<String>) -> BinanceError {
        BinanceError::new(StatusCode::BAD_REQUEST, -1128, msg)
    }
}

impl std::fmt::Display for BinanceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.code, self.msg)
    }
}

impl ResponseError for BinanceError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        HttpResponse::build(self.status).json(serde_json::json!({ "code": self.code, "msg": self.msg }))
    }
}

/// The native API's failures in Binance's terms: the ones that mean the same, by code; the
/// rest as -1000 (unknown) with the native message, under the native status.
impl From<ApiError> for BinanceError {
    fn from(e: ApiError) -> BinanceError {
        match (e.status.as_u16(), e.code) {
            (_, "unknown_market") => BinanceError::invalid_symbol(),
            (429, _) => BinanceError::new(StatusCode::TOO_MANY_REQUESTS, -1003, e.message),
            (503, _) => BinanceError::new(StatusCode::SERVICE_UNAVAILABLE, -1001, e.message),
            (status, _) => BinanceError::new(StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST), -1000, e.message),
        }
    }
}

impl From<tandem_matching::SequencerError> for BinanceError {
    fn from(e: tandem_matching::SequencerError) -> BinanceError {
        BinanceError::from(ApiError::from(e))
    }
}

impl From<tandem_store::StoreError> for BinanceError {
    fn from(e: tandem_store::StoreError) -> BinanceError {
        BinanceError::from(ApiError::from(e))
    }
}

/// A market's Binance symbol: its base and quote symbols run together (`BTCUSD`).
pub fn symbol_of(cfg: &EngineConfig, spec: &MarketSpec) -> String {
    let asset = |a| cfg.asset(a).map_or_else(String::new, |s| s.symbol.to_ascii_uppercase());
    format!("{}{}", asset(spec.base), asset(spec.quote))
}

/// The market a Binance symbol names.
pub fn market_of<'a>(cfg: &'a EngineConfig, symbol: &str) -> Result<(MarketId, &'a MarketSpec), BinanceError> {
    if symbol.is_empty() {
        return Err(BinanceError::mandatory("symbol"));
    }
    cfg.markets
        .iter()
        .enumerate()
        .find(|(_, spec)| symbol_of(cfg, spec) == symbol)
        .map(|(i, spec)| (MarketId(i as u16), spec))
        .ok_or_else(BinanceError::invalid_symbol)
}

/// A market's numbers in Binance's form: prices and quote amounts at the quote's places, quantities
/// at the base's, each with at least eight places.
pub struct Decimals {
    pub base: u8,
    pub quote: u8,
}

impl Decimals {
    pub fn of(gw: &Gateway, spec: &MarketSpec) -> Decimals {
        let (base, quote) = crate::dto::market_decimals(&gw.engine_config, spec);
        Decimals { base, quote }
    }
    pub fn price(&self, p: u64) -> String {
        number(to_decimal(p, self.quote))
    }
    pub fn qty(&self, q: u64) -> String {
        number(to_decimal(q, self.base))
    }
    pub fn quote(&self, a: u64) -> String {
        number(to_decimal(a, self.quote))
    }
}

/// A decimal in Binance's form: at least eight places (`0.01000000`).
pub fn number(d: Decimal) -> String {
    let mut d = d;
    if d.scale() < 8 {
        d.rescale(8);
    }
    d.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symbols_run_base_and_quote_together() {
        let cfg = tandem_matching::ExchangeConfig::default().to_engine().unwrap();
        let (id, spec) = market_of(&cfg, "BTCUSD").unwrap();
        assert_eq!(spec.symbol, "BTC-USD");
        assert_eq!(symbol_of(&cfg, spec), "BTCUSD");
        assert_eq!(id, MarketId(0));
        assert_eq!(market_of(&cfg, "BTC-USD").unwrap_err().code, -1121);
        assert_eq!(market_of(&cfg, "").unwrap_err().code, -1102);
    }

    #[test]
    fn numbers_have_eight_places_at_least() {
        assert_eq!(number(Decimal::new(1, 2)), "0.01000000");
        assert_eq!(number(Decimal::new(60000, 0)), "60000.00000000");
        assert_eq!(number(Decimal::new(123456789, 9)), "0.123456789");
    }
}
