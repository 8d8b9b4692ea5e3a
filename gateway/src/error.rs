//! The one error shape every endpoint answers with:
//! `{"error":{"code":"<stable_code>","message":"<human text>"}}` (plus, for a duplicate client
//! order id, the existing `order` beside it).
//!
//! Owns the mapping of engine rejects, sequencer failures, store failures and actix extractor
//! failures onto HTTP statuses and stable codes. Codes are part of the API: never rename one.

use actix_web::error::{JsonPayloadError, PathError, QueryPayloadError};
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, ResponseError};
use serde_json::{json, Value};
use std::fmt;
use tandem_matching::config::UnitError;
use tandem_matching::{RejectReason, SequencerError};
use tandem_store::StoreError;

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Extra top-level members of the body (e.g. the existing `order` of a duplicate).
    pub extra: Option<(&'static str, Value)>,
    /// Seconds to wait before trying again (`Retry-After`).
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, code, message: message.into(), extra: None, retry_after: None }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn malformed_json(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "malformed_json", message)
    }

    pub fn unauthorized(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, code, message)
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, code, message)
    }

    pub fn unknown_market(symbol: &str) -> ApiError {
        ApiError::not_found("unknown_market", format!("no market {symbol:?}"))
    }

    pub fn unknown_asset(symbol: &str) -> ApiError {
        ApiError::not_found("unknown_asset", format!("no asset {symbol:?}"))
    }

    pub fn unknown_order() -> ApiError {
        ApiError::not_found("unknown_order", "no such order for this account")
    }

    pub fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }

    /// A budget ran out (see `limits`): `429 rate_limited`, with when to try again.
    pub fn rate_limited(budget: &crate::limits::Budget) -> ApiError {
        let mut e = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!("more than {} requests this minute; try again in {} ms", budget.limit, budget.reset_in_ms),
        );
        e.retry_after = Some(budget.reset_in_ms.div_ceil(1000).max(1));
        e
    }

    pub fn with(mut self, key: &'static str, value: Value) -> ApiError {
        self.extra = Some((key, value));
        self
    }

    /// A decimal that did not convert to whole minimal units of an asset.
    pub fn units(field: &str, e: UnitError) -> ApiError {
        match e {
            UnitError::Negative => {
                ApiError::new(StatusCode::BAD_REQUEST, "out_of_range", format!("{field} must not be negative"))
            }
            UnitError::TooLarge => {
                ApiError::new(StatusCode::BAD_REQUEST, "out_of_range", format!("{field} is too large"))
            }
            UnitError::TooPrecise(d) => ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_precision",
                format!("{field} has more than {d} decimal places"),
            ),
        }
    }

    pub fn body(&self) -> Value {
        let mut body = json!({ "error": { "code": self.code, "message": self.message } });
        if let (Some((key, value)), Some(obj)) = (&self.extra, body.as_object_mut()) {
            obj.insert((*key).to_owned(), value.clone());
        }
        body
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status);
        if let Some(seconds) = self.retry_after {
            response.insert_header((actix_web::http::header::RETRY_AFTER, seconds.to_string()));
        }
        response.json(self.body())
    }
}

/// HTTP status of an engine reject; the code is the reject's own stable `code()`.
pub fn reject_status(reason: RejectReason) -> StatusCode {
    use RejectReason::*;
    match reason {
        UnknownAccount | UnknownAsset | UnknownMarket | UnknownOrder | UnknownWithdrawal | UnknownDeposit
        | UnknownBatch | UnknownBump => StatusCode::NOT_FOUND,
        AccountCannotTrade | AccountFrozen => StatusCode::FORBIDDEN,
        AlreadyConfigured | DuplicateDeposit | DuplicateClientOrderId(_) | MarketHalted | AlreadyHalted | NotHalted
        | DepositAlreadyReversed | AlreadyFrozen | NotFrozen | BatchIdReused | WithdrawalInBatch
        | DuplicateClientWithdrawalId(_) | StaleLeaderEpoch | NotSettlementLeader => StatusCode::CONFLICT,
        ReservedAccountKind | ZeroAmount | SupplyExceeded | InsufficientBalance | PriceOffTick | QuantityOffLot
        | OutOfRange | BelowMinNotional | WouldTakeLiquidity | AmendNoChange
        | AmendBelowFilled | UnbalancedBatch | VaultOverdrawn => StatusCode::BAD_REQUEST,
    }
}

impl From<RejectReason> for ApiError {
    fn from(reason: RejectReason) -> ApiError {
        ApiError::new(reject_status(reason), reason.code(), reason.to_string())
    }
}

impl From<SequencerError> for ApiError {
    fn from(e: SequencerError) -> ApiError {
        match e {
            SequencerError::Overloaded => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                "the exchange is overloaded, retry shortly",
            ),
            SequencerError::Stopped | SequencerError::Journal(_) => {
                tracing::error!(error = %e, "sequencer unavailable");
                ApiError::unavailable("the exchange is not accepting requests")
            }
            SequencerError::Unavailable(_) => {
                tracing::warn!(error = %e, "command log unavailable");
                ApiError::unavailable(
                    "the exchange cannot take commands right now; the request may still be applied: retry with the same client_order_id",
                )
            }
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        // Details stay in the log: they may name tables or files.
        tracing::error!(error = %e, "store failure");
        ApiError::unavailable("history is temporarily unavailable")
    }
}

/// A JSON body that did not parse: syntax errors are `malformed_json`, shape errors
/// (wrong types, missing or unknown fields) are `bad_request`.
pub fn json_error(e: &serde_json::Error) -> ApiError {
    use serde_json::error::Category;
    match e.classify() {
        Category::Syntax | Category::Eof | Category::Io => ApiError::malformed_json(format!("malformed JSON: {e}")),
        Category::Data => ApiError::bad_request(format!("invalid request body: {e}")),
    }
}

pub fn payload_too_large(limit: usize) -> ApiError {
    ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", format!("request body exceeds {limit} bytes"))
}

/// For `web::JsonConfig`: extractor failures in the common shape.
pub fn json_extractor_error(limit: usize) -> impl Fn(JsonPayloadError, &HttpRequest) -> actix_web::Error + Send + Sync {
    move |e, _req| {
        let api = match &e {
            JsonPayloadError::OverflowKnownLength { .. } | JsonPayloadError::Overflow { .. } => {
                payload_too_large(limit)
            }
            JsonPayloadError::Deserialize(de) => json_error(de),
            JsonPayloadError::ContentType => ApiError::bad_request("Content-Type must be application/json"),
            other => ApiError::bad_request(other.to_string()),
        };
        api.into()
    }
}

pub fn query_extractor_error(e: QueryPayloadError, _req: &HttpRequest) -> actix_web::Error {
    ApiError::bad_request(format!("invalid query string: {e}")).into()
}

pub fn path_extractor_error(e: PathError, _req: &HttpRequest) -> actix_web::Error {
    ApiError::bad_request(format!("invalid path: {e}")).into()
}

/// For unmatched routes; counted here since no resource middleware saw them.
pub async fn not_found(req: HttpRequest) -> HttpResponse {
    if let Some(gw) = req.app_data::<actix_web::web::Data<crate::Gateway>>() {
        gw.metrics.observe("unmatched", req.method().as_str(), 404, 0.0);
    }
    ApiError::not_found("not_found", "no such endpoint").error_response()
}

/// For a known path with the wrong method.
pub async fn method_not_allowed() -> HttpResponse {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "method not allowed on this endpoint")
        .error_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reject_maps_to_a_4xx() {
        use RejectReason::*;
        for r in [
            AlreadyConfigured,
            UnknownAccount,
            AccountCannotTrade,
            ReservedAccountKind,
            UnknownAsset,
            UnknownMarket,
            UnknownOrder,
            UnknownWithdrawal,
            ZeroAmount,
            DuplicateDeposit,
            SupplyExceeded,
            InsufficientBalance,
            PriceOffTick,
            QuantityOffLot,
            OutOfRange,
            BelowMinNotional,
            WouldTakeLiquidity,
            MarketHalted,
            DuplicateClientOrderId(tandem_matching::OrderId(1)),
            AmendNoChange,
            AmendBelowFilled,
            UnknownDeposit,
            DepositAlreadyReversed,
            AccountFrozen,
            AlreadyFrozen,
            UnknownBatch,
            BatchIdReused,
            WithdrawalInBatch,
            UnbalancedBatch,
            VaultOverdrawn,
            UnknownBump,
            DuplicateClientWithdrawalId(tandem_matching::WithdrawalId(1)),
            StaleLeaderEpoch,
            NotSettlementLeader,
            NotFrozen,
            AlreadyHalted,
            NotHalted,
        ] {
            let e = ApiError::from(r);
            assert!(e.status.is_client_error(), "{r:?}");
            assert_eq!(e.code, r.code());
        }
    }

    #[test]
    fn body_has_the_common_shape() {
        let e = ApiError::bad_request("nope").with("order", json!({"order_id": 1}));
        let b = e.body();
        assert_eq!(b["error"]["code"], "bad_request");
        assert_eq!(b["error"]["message"], "nope");
        assert_eq!(b["order"]["order_id"], 1);
    }
}
