//! The wire format: request bodies, response objects, and the conversion between decimal strings
//! (whole units, e.g. "65000.00") and the engine's integer minimal units.
//!
//! Conversion is exact in both directions: a decimal with more places than the asset's unit is
//! refused (`bad_precision`), never rounded, and nothing here uses floats.

use crate::error::ApiError;
use crate::openapi::schemas as doc;
use actix_web::HttpRequest;
use rust_decimal::{Decimal, RoundingStrategy};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use tandem_matching::config::{to_decimal, to_units, AssetSpec, EngineConfig, MarketSpec, MAX_UNITS};
use tandem_matching::{
    AccountId, Amount, AssetId, Balance, ClientOrderId, CloseReason, Event, MarketId, OrderView, Price, Quantity,
    RejectReason, SelfTradePrevention, Side, TimeInForce, Timestamp, Trade,
};
use tandem_store::{DepositRecord, LedgerEntry, OrderRecord, TradeRecord, WithdrawalRecord};

// ---------------------------------------------------------------------------------------------
// Parsing helpers
// ---------------------------------------------------------------------------------------------

/// Parses a JSON body already checked against its signature.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| crate::error::json_error(&e))
}

/// Parses the query string (after authentication, so unauthenticated callers learn nothing).
pub fn parse_query<T: DeserializeOwned>(req: &HttpRequest) -> Result<T, ApiError> {
    actix_web::web::Query::<T>::from_query(req.query_string())
        .map(|q| q.into_inner())
        .map_err(|e| ApiError::bad_request(format!("invalid query string: {e}")))
}

/// A numeric path segment such as an order id.
pub fn path_id(req: &HttpRequest, name: &str) -> Result<u64, ApiError> {
    let raw = req.match_info().get(name).unwrap_or("");
    raw.parse::<u64>().map_err(|_| ApiError::bad_request(format!("{name} must be a positive integer, got {raw:?}")))
}

/// A decimal string: optional sign, digits, at most one point. No exponents, no spaces.
pub fn parse_decimal(field: &str, s: &str) -> Result<Decimal, ApiError> {
    let digits = s.strip_prefix(['-', '+']).unwrap_or(s);
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    let well_formed = !digits.is_empty()
        && (int.len() + frac.len()) > 0
        && int.bytes().all(|b| b.is_ascii_digit())
        && frac.bytes().all(|b| b.is_ascii_digit());
    if !well_formed {
        return Err(ApiError::bad_request(format!("{field} must be a decimal string like \"0.001\", got {s:?}")));
    }
    if s.starts_with('-') && (int.bytes().any(|b| b != b'0') || frac.bytes().any(|b| b != b'0')) {
        return Err(ApiError::new(
            actix_web::http::StatusCode::BAD_REQUEST,
            "out_of_range",
            format!("{field} must not be negative"),
        ));
    }
    Decimal::from_str_exact(s).map_err(|_| {
        // Well formed but unrepresentable: too many digits either side of the point.
        if frac.trim_end_matches('0').len() > 28 {
            ApiError::new(
                actix_web::http::StatusCode::BAD_REQUEST,
                "bad_precision",
                format!("{field} has too many decimal places"),
            )
        } else {
            ApiError::new(actix_web::http::StatusCode::BAD_REQUEST, "out_of_range", format!("{field} is too large"))
        }
    })
}

/// A decimal string in whole units to minimal units of an asset with `decimals` places.
pub fn units(field: &str, s: &str, decimals: u8) -> Result<u64, ApiError> {
    let d = parse_decimal(field, s)?;
    to_units(d, decimals).map_err(|e| ApiError::units(field, e))
}

/// Quantities and prices above the engine's range would be refused by it as `out_of_range`;
/// refusing them here keeps junk out of the journal.
pub fn engine_range(field: &str, v: u64) -> Result<u64, ApiError> {
    if v > MAX_UNITS {
        return Err(ApiError::new(
            actix_web::http::StatusCode::BAD_REQUEST,
            "out_of_range",
            format!("{field} is too large"),
        ));
    }
    Ok(v)
}

pub fn client_order_id(s: &str) -> Result<ClientOrderId, ApiError> {
    ClientOrderId::new(s).map_err(|e| ApiError::bad_request(format!("client_order_id {e}")))
}

pub fn client_withdrawal_id(s: &str) -> Result<tandem_matching::ClientWithdrawalId, ApiError> {
    ClientOrderId::new(s).map_err(|e| ApiError::bad_request(format!("client_withdrawal_id {e}")))
}

/// Free text that is stored and echoed: a fiat reference, a withdrawal destination, a label.
pub fn printable(field: &str, s: &str, min: usize, max: usize) -> Result<(), ApiError> {
    let len = s.chars().count();
    if len < min || len > max {
        return Err(ApiError::bad_request(format!("{field} must be {min} to {max} characters")));
    }
    if !s.chars().all(|c| c.is_ascii_graphic() || c == ' ') {
        return Err(ApiError::bad_request(format!("{field} must be printable ASCII")));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------------------------

/// `limit` rests on the book at `price` (or better); `market` trades now, bounded by `protection_price`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, ToSchema)]
#[serde(rename_all = "lowercase")]
#[schema(as = OrderType)]
pub enum OrderTypeReq {
    Limit,
    Market,
}

/// `POST /v1/orders`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlaceOrderRequest {
    /// Market symbol, matched loosely (`BTC-USD`, `btcusd`, `BTC_USD`).
    #[schema(example = "BTC-USD")]
    pub market: String,
    #[schema(value_type = doc::Side)]
    pub side: Side,
    #[serde(rename = "type")]
    pub order_type: OrderTypeReq,
    /// A multiple of the market's lot size, in base units.
    #[schema(value_type = doc::Decimal)]
    pub quantity: String,
    /// Limit orders only (required there): a multiple of the tick size, quote per whole base unit.
    #[serde(default)]
    #[schema(value_type = Option<doc::Decimal>)]
    pub price: Option<String>,
    /// `GTC` by default; market orders are always `IOC`.
    #[serde(default)]
    #[schema(value_type = Option<doc::TimeInForce>)]
    pub time_in_force: Option<TimeInForce>,
    /// `true` refuses the order (`would_take_liquidity`) if it would trade at once.
    #[serde(default)]
    pub post_only: Option<bool>,
    /// 1 to 36 of `A-Z a-z 0-9 . _ : -`, unique per account: a retry after a lost reply is
    /// answered `409 duplicate_client_order_id` with the existing order.
    #[serde(default)]
    #[schema(example = "my-order-1")]
    pub client_order_id: Option<String>,
    /// `cancel_resting` by default.
    #[serde(default)]
    #[schema(value_type = Option<doc::SelfTradePrevention>)]
    pub self_trade_prevention: Option<SelfTradePrevention>,
    /// Market orders only: the worst price accepted. Default: the best opposite price moved
    /// `market_protection_bps` against the taker (`no_liquidity` if that side is empty).
    #[serde(default)]
    #[schema(value_type = Option<doc::Decimal>)]
    pub protection_price: Option<String>,
}

/// `PATCH /v1/orders/{id}`: `quantity` is the new total, filled part included.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AmendOrderRequest {
    /// The new limit price.
    #[serde(default)]
    #[schema(value_type = Option<doc::Decimal>)]
    pub price: Option<String>,
    /// The new total quantity, what already filled included. Same price and a smaller quantity
    /// keeps time priority; anything else re-enters the book and may trade.
    #[serde(default)]
    #[schema(value_type = Option<doc::Decimal>)]
    pub quantity: Option<String>,
}

/// `POST /v1/withdrawals`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WithdrawalRequest {
    #[schema(example = "BTC")]
    pub asset: String,
    /// Locked at once.
    #[schema(value_type = doc::Decimal)]
    pub amount: String,
    /// BTC: an address of the node's network (echoed normalised). Other assets: a reference
    /// (bank account, payout id) of 1 to 128 printable ASCII characters.
    pub destination: String,
    /// Like `client_order_id`: a retry is answered `409 duplicate_client_withdrawal_id`.
    pub client_withdrawal_id: Option<String>,
}

/// A partner account trades for its own customers; a user account for itself.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum OpenAccountKind {
    User,
    Partner,
}

/// `POST /v1/operator/accounts`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OpenAccountRequest {
    pub kind: OpenAccountKind,
    /// Up to 128 printable characters.
    #[serde(default)]
    pub label: Option<String>,
}

/// `POST /v1/operator/enrolment-codes`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnrolmentCodeRequest {
    /// Up to 128 printable characters.
    #[serde(default)]
    pub label: Option<String>,
}

/// `POST /v1/operator/cosigners`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CosignerRequest {
    /// The co-signer's BIP-340 x-only public key: 64 hex characters.
    #[schema(value_type = doc::XOnlyKey)]
    pub identity_pubkey: String,
    #[serde(default)]
    pub label: Option<String>,
}

/// `POST /v1/wallet/enrol`, signed by the device key it enrols.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnrolRequest {
    /// The key that signed this request (`X-Tandem-Device`), not enrolled yet.
    #[schema(value_type = doc::XOnlyKey)]
    pub device_pubkey: String,
    /// Up to 128 printable characters.
    #[serde(default)]
    pub label: Option<String>,
    /// The operator's single-use code (compared trimmed, case-insensitively); needed unless the
    /// gateway runs with `open_enrolment` (the demo).
    #[serde(default)]
    pub enrolment_code: Option<String>,
}

/// `POST /v1/operator/deposits`: a fiat credit.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DepositRequest {
    pub account_id: u64,
    /// Not BTC: BTC deposits are credited by settlement from the chain.
    #[schema(example = "USD")]
    pub asset: String,
    #[schema(value_type = doc::Decimal)]
    pub amount: String,
    /// 1 to 128 printable characters; a deposit is idempotent by `(asset, reference)`.
    #[schema(example = "wire-123")]
    pub reference: String,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct BookQuery {
    /// Levels a side: 1 to 1000, default 20.
    pub depth: Option<u32>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LimitQuery {
    /// 1 to 1000, default 100.
    pub limit: Option<u32>,
    /// Only this market's (a market symbol).
    pub market: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct OrdersQuery {
    /// Only this market's orders.
    pub market: Option<String>,
    /// `open` (default: from the engine) or `all` (history, from the store).
    pub status: Option<String>,
    /// 1 to 1000, default 100.
    pub limit: Option<u32>,
    /// Only orders with a smaller `order_id`: pages back.
    pub before: Option<u64>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CancelQuery {
    /// Cancel every open order in this market (without it and without `client_order_id`: in every market).
    pub market: Option<String>,
    /// Cancel the one open order with this client id.
    pub client_order_id: Option<String>,
}

/// `limit` query parameters: default 100, 1..=1000.
pub fn limit(v: Option<u32>) -> Result<u32, ApiError> {
    match v {
        None => Ok(100),
        Some(n) if (1..=1000).contains(&n) => Ok(n),
        Some(_) => {
            Err(ApiError::new(actix_web::http::StatusCode::BAD_REQUEST, "out_of_range", "limit must be 1 to 1000"))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Formatting: integer units to decimal strings
// ---------------------------------------------------------------------------------------------

/// Formats engine integers as decimal strings under one engine configuration.
#[derive(Clone, Copy)]
pub struct Fmt<'a>(pub &'a EngineConfig);

impl<'a> Fmt<'a> {
    fn spec(&self, m: MarketId) -> Option<&'a MarketSpec> {
        self.0.market(m)
    }

    fn decimals(&self, a: AssetId) -> u8 {
        self.0.asset(a).map_or(0, |s| s.decimals)
    }

    pub fn market(&self, m: MarketId) -> String {
        self.spec(m).map_or_else(|| m.to_string(), |s| s.symbol.clone())
    }

    pub fn asset(&self, a: AssetId) -> String {
        self.0.asset(a).map_or_else(|| a.to_string(), |s| s.symbol.clone())
    }

    pub fn amount(&self, a: AssetId, v: Amount) -> String {
        to_decimal(v.0, self.decimals(a)).to_string()
    }

    /// Prices are quote units per whole base unit.
    pub fn price(&self, m: MarketId, p: Price) -> String {
        let d = self.spec(m).map_or(0, |s| self.decimals(s.quote));
        to_decimal(p.0, d).to_string()
    }

    pub fn qty(&self, m: MarketId, q: Quantity) -> String {
        let d = self.spec(m).map_or(0, |s| self.decimals(s.base));
        to_decimal(q.0, d).to_string()
    }

    /// Quote per whole base unit, rounded to the quote unit; `None` before any fill.
    pub fn average_price(&self, m: MarketId, filled: Quantity, quote_filled: Amount) -> Option<String> {
        let spec = self.spec(m)?;
        if filled.is_zero() {
            return None;
        }
        let (bd, qd) = (self.decimals(spec.base), self.decimals(spec.quote));
        let avg = to_decimal(quote_filled.0, qd).checked_div(to_decimal(filled.0, bd))?;
        let mut avg = avg.round_dp_with_strategy(qd as u32, RoundingStrategy::MidpointAwayFromZero);
        avg.rescale(qd as u32); // "65000.00", not "65000": same scale as prices
        Some(avg.to_string())
    }

    /// The asset a fee is charged in: what that side receives.
    pub fn fee_asset(&self, m: MarketId, receiver_side: Side) -> Option<AssetId> {
        let spec = self.spec(m)?;
        Some(match receiver_side {
            Side::Buy => spec.base,
            Side::Sell => spec.quote,
        })
    }

    pub fn balance(&self, asset: AssetId, b: Balance) -> BalanceJson {
        let d = self.decimals(asset);
        BalanceJson {
            asset: self.asset(asset),
            available: to_decimal(b.available.0, d).to_string(),
            locked: to_decimal(b.locked.0, d).to_string(),
            total: (to_decimal(b.available.0, d) + to_decimal(b.locked.0, d)).to_string(),
        }
    }
}

pub fn tif_str(t: TimeInForce) -> &'static str {
    match t {
        TimeInForce::Gtc => "GTC",
        TimeInForce::Ioc => "IOC",
        TimeInForce::Fok => "FOK",
    }
}

pub fn close_status(r: CloseReason) -> &'static str {
    r.as_str()
}

// ---------------------------------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------------------------------

/// An order as every endpoint shows it. Fields that a degraded read cannot know are null.
#[derive(Debug, Clone, Serialize, PartialEq, ToSchema)]
#[schema(as = Order)]
pub struct OrderJson {
    pub order_id: u64,
    pub client_order_id: Option<String>,
    pub market: String,
    #[schema(value_type = doc::Side)]
    pub side: &'static str,
    #[serde(rename = "type")]
    #[schema(value_type = OrderTypeReq)]
    pub order_type: &'static str,
    /// Limit price, or a market order's protection price.
    #[schema(value_type = doc::Decimal)]
    pub price: String,
    /// The total.
    #[schema(value_type = doc::Decimal)]
    pub quantity: String,
    /// What traded.
    #[schema(value_type = doc::Decimal)]
    pub filled: String,
    /// Still working on the book; 0 once the order is closed.
    #[schema(value_type = doc::Decimal)]
    pub remaining: String,
    /// Quote paid or received by the fills so far, before fees.
    #[schema(value_type = Option<doc::Decimal>)]
    pub quote_filled: Option<String>,
    /// `quote_filled / filled` rounded to the quote unit; null before any fill.
    #[schema(value_type = Option<doc::Decimal>)]
    pub average_price: Option<String>,
    #[schema(value_type = doc::OrderStatus)]
    pub status: &'static str,
    #[schema(value_type = doc::TimeInForce)]
    pub time_in_force: &'static str,
    pub post_only: bool,
    /// Milliseconds since the epoch, stamped by the sequencer.
    pub created_at: Option<u64>,
    pub updated_at: Option<u64>,
}

pub fn open_status(filled: Quantity) -> &'static str {
    if filled.is_zero() {
        "new"
    } else {
        "partially_filled"
    }
}

fn is_open(status: &str) -> bool {
    matches!(status, "new" | "partially_filled")
}

impl OrderJson {
    /// A resting order as the engine holds it; only GTC limit orders rest.
    pub fn from_view(f: Fmt, v: &OrderView, quote_filled: Option<Amount>, updated_at: Option<u64>) -> OrderJson {
        OrderJson {
            order_id: v.order.0,
            client_order_id: v.client_order_id.map(|c| c.as_str().to_owned()),
            market: f.market(v.market),
            side: v.side.as_str(),
            order_type: "limit",
            price: f.price(v.market, v.price),
            quantity: f.qty(v.market, v.quantity),
            filled: f.qty(v.market, v.filled),
            remaining: f.qty(v.market, Quantity(v.quantity.0.saturating_sub(v.filled.0))),
            quote_filled: quote_filled.map(|q| f.amount(quote_of(f, v.market), q)),
            average_price: quote_filled.and_then(|q| f.average_price(v.market, v.filled, q)),
            status: open_status(v.filled),
            time_in_force: "GTC",
            post_only: v.post_only,
            created_at: Some(v.placed_at.0),
            updated_at,
        }
    }

    pub fn from_record(f: Fmt, r: &OrderRecord) -> OrderJson {
        let status = r.status.as_str();
        let remaining =
            if is_open(status) { Quantity(r.quantity.0.saturating_sub(r.filled.0)) } else { Quantity::ZERO };
        let is_market = matches!(r.order_type, tandem_store::OrderType::Market);
        OrderJson {
            order_id: r.order_id.0,
            client_order_id: r.client_order_id.clone(),
            market: f.market(r.market_id),
            side: r.side.as_str(),
            order_type: if is_market { "market" } else { "limit" },
            price: f.price(r.market_id, r.price),
            quantity: f.qty(r.market_id, r.quantity),
            filled: f.qty(r.market_id, r.filled),
            remaining: f.qty(r.market_id, remaining),
            quote_filled: Some(f.amount(quote_of(f, r.market_id), r.quote_filled)),
            average_price: f.average_price(r.market_id, r.filled, r.quote_filled),
            status: static_status(status),
            time_in_force: tif_str(r.time_in_force),
            post_only: r.post_only,
            created_at: Some(r.created_at.0),
            updated_at: Some(r.updated_at.0),
        }
    }
}

/// Status strings are a closed set; map the store's to the same `'static` values.
fn static_status(s: &str) -> &'static str {
    match s {
        "new" => "new",
        "partially_filled" => "partially_filled",
        "filled" => "filled",
        "canceled" => "canceled",
        "expired" => "expired",
        "self_trade_prevented" => "self_trade_prevented",
        _ => "unknown",
    }
}

fn quote_of(f: Fmt, m: MarketId) -> AssetId {
    f.0.market(m).map_or(AssetId(0), |s| s.quote)
}

/// One fill from one account's point of view. Fills trade at the resting (maker) order's price.
#[derive(Debug, Clone, Serialize, PartialEq, ToSchema)]
#[schema(as = Fill)]
pub struct FillJson {
    pub trade_id: u64,
    pub order_id: u64,
    pub market: String,
    #[schema(value_type = doc::Side)]
    pub side: &'static str,
    #[schema(value_type = doc::Decimal)]
    pub price: String,
    #[schema(value_type = doc::Decimal)]
    pub quantity: String,
    /// price * quantity in quote, before fees.
    #[schema(value_type = doc::Decimal)]
    pub notional: String,
    /// Charged in the asset this side receives: a buyer pays in base, a seller in quote.
    #[schema(value_type = doc::Decimal)]
    pub fee: String,
    pub fee_asset: String,
    #[schema(value_type = doc::Liquidity)]
    pub liquidity: &'static str,
    pub timestamp: u64,
}

/// The facts of a trade both the engine event and the stored record carry.
pub struct TradeFacts {
    pub trade_id: u64,
    pub market: MarketId,
    pub price: Price,
    pub quantity: Quantity,
    pub notional: Amount,
    pub maker_order: u64,
    pub maker_account: AccountId,
    pub taker_order: u64,
    pub taker_account: AccountId,
    pub taker_side: Side,
    pub maker_fee: Amount,
    pub taker_fee: Amount,
    pub timestamp: u64,
}

impl TradeFacts {
    pub fn from_event(t: &Trade, ts: Timestamp) -> TradeFacts {
        TradeFacts {
            trade_id: t.trade.0,
            market: t.market,
            price: t.price,
            quantity: t.quantity,
            notional: t.notional,
            maker_order: t.maker_order.0,
            maker_account: t.maker_account,
            taker_order: t.taker_order.0,
            taker_account: t.taker_account,
            taker_side: t.taker_side,
            maker_fee: t.maker_fee,
            taker_fee: t.taker_fee,
            timestamp: ts.0,
        }
    }

    pub fn from_record(r: &TradeRecord) -> TradeFacts {
        TradeFacts {
            trade_id: r.trade_id.0,
            market: r.market_id,
            price: r.price,
            quantity: r.quantity,
            notional: r.notional,
            maker_order: r.maker_order.0,
            maker_account: r.maker_account,
            taker_order: r.taker_order.0,
            taker_account: r.taker_account,
            taker_side: r.taker_side,
            maker_fee: r.maker_fee,
            taker_fee: r.taker_fee,
            timestamp: r.timestamp.0,
        }
    }

    /// The fill as `account` sees it (taker side wins if an account were on both sides).
    pub fn fill_for(&self, f: Fmt, account: AccountId) -> Option<FillJson> {
        let (order, side, fee, liquidity) = if self.taker_account == account {
            (self.taker_order, self.taker_side, self.taker_fee, "taker")
        } else if self.maker_account == account {
            (self.maker_order, self.taker_side.opposite(), self.maker_fee, "maker")
        } else {
            return None;
        };
        let fee_asset = f.fee_asset(self.market, side)?;
        Some(FillJson {
            trade_id: self.trade_id,
            order_id: order,
            market: f.market(self.market),
            side: side.as_str(),
            price: f.price(self.market, self.price),
            quantity: f.qty(self.market, self.quantity),
            notional: f.amount(quote_of(f, self.market), self.notional),
            fee: f.amount(fee_asset, fee),
            fee_asset: f.asset(fee_asset),
            liquidity,
            timestamp: self.timestamp,
        })
    }

    pub fn public(&self, f: Fmt) -> PublicTradeJson {
        PublicTradeJson {
            trade_id: self.trade_id,
            market: f.market(self.market),
            price: f.price(self.market, self.price),
            quantity: f.qty(self.market, self.quantity),
            taker_side: self.taker_side.as_str(),
            timestamp: self.timestamp,
        }
    }
}

/// A trade as the market sees it (no accounts, no fees).
#[derive(Debug, Clone, Serialize, PartialEq, ToSchema)]
#[schema(as = PublicTrade)]
pub struct PublicTradeJson {
    pub trade_id: u64,
    pub market: String,
    #[schema(value_type = doc::Decimal)]
    pub price: String,
    #[schema(value_type = doc::Decimal)]
    pub quantity: String,
    #[schema(value_type = doc::Side)]
    pub taker_side: &'static str,
    pub timestamp: u64,
}

/// One asset of an account. `locked` is held by open orders and pending withdrawals.
#[derive(Debug, Clone, Serialize, PartialEq, ToSchema)]
#[schema(as = Balance)]
pub struct BalanceJson {
    pub asset: String,
    #[schema(value_type = doc::Decimal)]
    pub available: String,
    #[schema(value_type = doc::Decimal)]
    pub locked: String,
    #[schema(value_type = doc::Decimal)]
    pub total: String,
}

#[derive(Debug, Clone, Serialize, PartialEq, ToSchema)]
#[schema(as = Withdrawal)]
pub struct WithdrawalJson {
    pub withdrawal_id: u64,
    pub asset: String,
    #[schema(value_type = doc::Decimal)]
    pub amount: String,
    pub destination: String,
    /// `pending` (a BTC withdrawal until the batch paying it is confirmed), `completed`, `failed`.
    #[schema(value_type = doc::WithdrawalStatus)]
    pub status: String,
    pub requested_at: u64,
    pub updated_at: u64,
    pub client_withdrawal_id: Option<String>,
}

impl WithdrawalJson {
    pub fn from_record(f: Fmt, r: &WithdrawalRecord) -> WithdrawalJson {
        WithdrawalJson {
            withdrawal_id: r.withdrawal_id.0,
            asset: f.asset(r.asset_id),
            amount: f.amount(r.asset_id, r.amount),
            destination: r.destination.clone(),
            status: r.status.as_str().to_owned(),
            requested_at: r.requested_at.0,
            updated_at: r.updated_at.0,
            client_withdrawal_id: r.client_withdrawal_id.clone(),
        }
    }
}

pub fn deposit_json(f: Fmt, d: &DepositRecord) -> serde_json::Value {
    serde_json::json!({
        "asset": f.asset(d.asset_id),
        "amount": f.amount(d.asset_id, d.amount),
        "reference": d.reference,
        "seq": d.seq.0,
        "timestamp": d.timestamp.0,
    })
}

/// A signed change in minimal units as a decimal string ("-0.05").
fn signed(f: Fmt, asset: AssetId, delta: i64) -> String {
    let d = f.0.asset(asset).map_or(0, |a| a.decimals);
    let mut v = to_decimal(delta.unsigned_abs(), d);
    v.set_sign_negative(delta < 0);
    v.to_string()
}

/// One balance change: `cause` is the command that made it (e.g. `place_order`).
pub fn ledger_json(f: Fmt, e: &LedgerEntry) -> serde_json::Value {
    serde_json::json!({
        "seq": e.seq.0,
        "timestamp": e.timestamp.0,
        "asset": f.asset(e.asset_id),
        "available_delta": signed(f, e.asset_id, e.available_delta),
        "locked_delta": signed(f, e.asset_id, e.locked_delta),
        "available": f.amount(e.asset_id, e.available),
        "locked": f.amount(e.asset_id, e.locked),
        "cause": e.cause,
    })
}

/// What `POST /v1/orders` and `PATCH /v1/orders/{id}` answer, from that command's own events.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct OrderReply {
    pub order: OrderJson,
    /// This command's fills of the order.
    pub fills: Vec<FillJson>,
}

/// The engine's reject in a command's events, if it rejected.
pub fn rejection(events: &[Event]) -> Option<RejectReason> {
    events.iter().find_map(|e| match e {
        Event::Rejected { reason } => Some(*reason),
        _ => None,
    })
}

/// The outcome of a place-order command, built only from its own events: the synchronous answer.
pub fn placed_order(f: Fmt, account: AccountId, events: &[Event], ts: Timestamp) -> Option<OrderReply> {
    let accepted = events.iter().find_map(|e| match e {
        Event::OrderAccepted(a) if a.account == account => Some(*a),
        _ => None,
    })?;
    let id = accepted.order;
    let mut fills = Vec::new();
    let (mut filled, mut quote) = (0u64, 0u64);
    let mut closed = None;
    for e in events {
        match e {
            Event::Trade(t) if t.taker_order == id => {
                filled += t.quantity.0;
                quote += t.notional.0;
                if let Some(fill) = TradeFacts::from_event(t, ts).fill_for(f, account) {
                    fills.push(fill);
                }
            }
            Event::OrderClosed { order, reason, .. } if *order == id => closed = Some(*reason),
            _ => {}
        }
    }
    let m = accepted.market;
    let filled = Quantity(filled);
    let status = closed.map_or(open_status(filled), close_status);
    let remaining =
        if closed.is_some() { Quantity::ZERO } else { Quantity(accepted.quantity.0.saturating_sub(filled.0)) };
    let order = OrderJson {
        order_id: id.0,
        client_order_id: accepted.client_order_id.map(|c| c.as_str().to_owned()),
        market: f.market(m),
        side: accepted.side.as_str(),
        order_type: if accepted.is_market { "market" } else { "limit" },
        price: f.price(m, accepted.price),
        quantity: f.qty(m, accepted.quantity),
        filled: f.qty(m, filled),
        remaining: f.qty(m, remaining),
        quote_filled: Some(f.amount(quote_of(f, m), Amount(quote))),
        average_price: f.average_price(m, filled, Amount(quote)),
        status,
        time_in_force: tif_str(accepted.time_in_force),
        post_only: accepted.post_only,
        created_at: Some(ts.0),
        updated_at: Some(ts.0),
    };
    Some(OrderReply { order, fills })
}

/// Fills of `order` in one command's events (an amend that lost priority can trade).
pub fn fills_of(f: Fmt, account: AccountId, order: u64, events: &[Event], ts: Timestamp) -> Vec<FillJson> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Trade(t) if t.taker_order.0 == order || t.maker_order.0 == order => {
                TradeFacts::from_event(t, ts).fill_for(f, account)
            }
            _ => None,
        })
        .collect()
}

/// A closed order from its `OrderClosed` event alone: the degraded answer when the history
/// store has not caught up. Fields the event does not carry are null.
pub fn closed_from_event(f: Fmt, events: &[Event], order_id: u64, ts: Timestamp) -> Option<OrderJson> {
    events.iter().find_map(|e| match e {
        Event::OrderClosed { order, market, side, price, reason, quantity, filled, .. } if order.0 == order_id => {
            Some(OrderJson {
                order_id,
                client_order_id: None,
                market: f.market(*market),
                side: side.as_str(),
                order_type: "limit",
                price: f.price(*market, *price),
                quantity: f.qty(*market, *quantity),
                filled: f.qty(*market, *filled),
                remaining: f.qty(*market, Quantity::ZERO),
                quote_filled: None,
                average_price: None,
                status: close_status(*reason),
                time_in_force: "GTC",
                post_only: false,
                created_at: None,
                updated_at: Some(ts.0),
            })
        }
        _ => None,
    })
}

/// `[[price, quantity], ...]` as decimal strings.
pub type Levels = Vec<[String; 2]>;

pub fn asset_by_symbol<'a>(cfg: &'a EngineConfig, symbol: &str) -> Result<(AssetId, &'a AssetSpec), ApiError> {
    let id = cfg.asset_by_symbol(symbol).ok_or_else(|| ApiError::unknown_asset(symbol))?;
    let spec = cfg.asset(id).ok_or_else(|| ApiError::unknown_asset(symbol))?;
    Ok((id, spec))
}

pub fn market_by_symbol<'a>(cfg: &'a EngineConfig, symbol: &str) -> Result<(MarketId, &'a MarketSpec), ApiError> {
    let id = cfg.market_by_symbol(symbol).ok_or_else(|| ApiError::unknown_market(symbol))?;
    let spec = cfg.market(id).ok_or_else(|| ApiError::unknown_market(symbol))?;
    Ok((id, spec))
}

/// Decimal places of a market's base and quote assets.
pub fn market_decimals(cfg: &EngineConfig, spec: &MarketSpec) -> (u8, u8) {
    (cfg.asset(spec.base).map_or(0, |a| a.decimals), cfg.asset(spec.quote).map_or(0, |a| a.decimals))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tandem_matching::ExchangeConfig;

    fn code(r: Result<impl std::fmt::Debug, ApiError>) -> &'static str {
        r.unwrap_err().code
    }

    #[test]
    fn decimals_convert_exactly_or_refuse() {
        assert_eq!(units("p", "65000.00", 2).unwrap(), 6_500_000);
        assert_eq!(units("p", "65000", 2).unwrap(), 6_500_000);
        assert_eq!(units("q", "0.001", 8).unwrap(), 100_000);
        assert_eq!(units("q", ".5", 8).unwrap(), 50_000_000);
        assert_eq!(units("q", "0", 8).unwrap(), 0);
        assert_eq!(units("q", "-0", 8).unwrap(), 0);
        assert_eq!(units("q", "-0.00", 8).unwrap(), 0);
        assert_eq!(units("q", "1.", 8).unwrap(), 100_000_000);
        assert_eq!(units("q", "+1", 8).unwrap(), 100_000_000);
        assert_eq!(units("q", "007", 0).unwrap(), 7);
        assert_eq!(code(units("p", "65000.001", 2)), "bad_precision");
        assert_eq!(code(units("p", "0.000000000000000000000000000001", 2)), "bad_precision");
        assert_eq!(code(units("p", "-1", 2)), "out_of_range");
        assert_eq!(code(units("p", "99999999999999999999999999999999", 2)), "out_of_range");
        assert_eq!(code(units("p", "1e5", 2)), "bad_request");
        assert_eq!(code(units("p", "", 2)), "bad_request");
        assert_eq!(code(units("p", ".", 2)), "bad_request");
        assert_eq!(code(units("p", " 1", 2)), "bad_request");
        assert_eq!(code(units("p", "1.2.3", 2)), "bad_request");
        assert_eq!(code(units("p", "NaN", 2)), "bad_request");
        assert_eq!(code(units("p", "+", 2)), "bad_request");
        assert_eq!(code(units("p", "-.", 2)), "bad_request");
        assert_eq!(code(units("p", "1_000", 2)), "bad_request");
        assert_eq!(code(units("p", "１", 2)), "bad_request");
        assert_eq!(code(engine_range("p", MAX_UNITS + 1)), "out_of_range");
    }

    #[test]
    fn formats_with_the_asset_scale() {
        let cfg = ExchangeConfig::default().to_engine().unwrap();
        let f = Fmt(&cfg);
        assert_eq!(f.price(MarketId(0), Price(6_500_000)), "65000.00");
        assert_eq!(f.qty(MarketId(0), Quantity(100_000)), "0.00100000");
        assert_eq!(f.amount(AssetId(1), Amount(5)), "0.05");
        assert_eq!(f.average_price(MarketId(0), Quantity(100_000), Amount(6_500)), Some("65000.00".into()));
        assert_eq!(f.average_price(MarketId(0), Quantity(0), Amount(0)), None);
    }

    #[test]
    fn place_request_refuses_unknown_fields_and_wrong_types() {
        let ok = br#"{"market":"BTC-USD","side":"buy","type":"limit","price":"1.00","quantity":"0.001","time_in_force":"IOC","self_trade_prevention":"cancel_both"}"#;
        let r: PlaceOrderRequest = parse_json(ok).unwrap();
        assert_eq!(r.time_in_force, Some(TimeInForce::Ioc));
        assert_eq!(r.self_trade_prevention, Some(SelfTradePrevention::CancelBoth));
        let unknown = br#"{"market":"BTC-USD","side":"buy","type":"limit","quantity":"1","colour":"red"}"#;
        assert_eq!(code(parse_json::<PlaceOrderRequest>(unknown)), "bad_request");
        let number = br#"{"market":"BTC-USD","side":"buy","type":"limit","quantity":1}"#;
        assert_eq!(code(parse_json::<PlaceOrderRequest>(number)), "bad_request");
        assert_eq!(code(parse_json::<PlaceOrderRequest>(b"{\"market\":")), "malformed_json");
    }
}
