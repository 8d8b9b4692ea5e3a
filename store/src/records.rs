//! Rows as the API sees them, and the conversions between engine integers and SQL columns.
//!
//! Engine values are `u64` (ids, amounts) and SQL integers are `i64`: every conversion is
//! checked and a value out of range is an error, never a panic or a silent wrap.

use crate::StoreError;
use serde::Serialize;
use tandem_matching::{
    AccountId, AccountKind, Amount, AssetId, CloseReason, MarketId, OrderId, Price, Quantity, Seq, Side, TimeInForce,
    Timestamp, TradeId, WithdrawalId,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderType {
    Limit,
    Market,
}

impl OrderType {
    pub fn as_str(self) -> &'static str {
        match self {
            OrderType::Limit => "limit",
            OrderType::Market => "market",
        }
    }

    pub(crate) fn parse(s: &str) -> Result<OrderType, StoreError> {
        match s {
            "limit" => Ok(OrderType::Limit),
            "market" => Ok(OrderType::Market),
            _ => Err(corrupt("order_type", s)),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    New,
    PartiallyFilled,
    Filled,
    Canceled,
    Expired,
    SelfTradePrevented,
}

impl OrderStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::New => "new",
            OrderStatus::PartiallyFilled => "partially_filled",
            OrderStatus::Filled => "filled",
            OrderStatus::Canceled => "canceled",
            OrderStatus::Expired => "expired",
            OrderStatus::SelfTradePrevented => "self_trade_prevented",
        }
    }

    /// Still on the book (or about to be): `new` or `partially_filled`.
    pub fn is_open(self) -> bool {
        matches!(self, OrderStatus::New | OrderStatus::PartiallyFilled)
    }

    pub(crate) fn closed(reason: CloseReason) -> OrderStatus {
        match reason {
            CloseReason::Filled => OrderStatus::Filled,
            CloseReason::Canceled => OrderStatus::Canceled,
            CloseReason::Expired => OrderStatus::Expired,
            CloseReason::SelfTrade => OrderStatus::SelfTradePrevented,
        }
    }

    pub(crate) fn parse(s: &str) -> Result<OrderStatus, StoreError> {
        Ok(match s {
            "new" => OrderStatus::New,
            "partially_filled" => OrderStatus::PartiallyFilled,
            "filled" => OrderStatus::Filled,
            "canceled" => OrderStatus::Canceled,
            "expired" => OrderStatus::Expired,
            "self_trade_prevented" => OrderStatus::SelfTradePrevented,
            _ => return Err(corrupt("order status", s)),
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WithdrawalStatus {
    Pending,
    Completed,
    Failed,
}

impl WithdrawalStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            WithdrawalStatus::Pending => "pending",
            WithdrawalStatus::Completed => "completed",
            WithdrawalStatus::Failed => "failed",
        }
    }

    pub(crate) fn parse(s: &str) -> Result<WithdrawalStatus, StoreError> {
        match s {
            "pending" => Ok(WithdrawalStatus::Pending),
            "completed" => Ok(WithdrawalStatus::Completed),
            "failed" => Ok(WithdrawalStatus::Failed),
            _ => Err(corrupt("withdrawal status", s)),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OrderRecord {
    pub order_id: OrderId,
    pub account_id: AccountId,
    pub market_id: MarketId,
    pub side: Side,
    pub order_type: OrderType,
    /// The limit price, or a market order's protection price.
    pub price: Price,
    pub quantity: Quantity,
    pub filled: Quantity,
    /// Sum of the notionals of this order's trades (quote units, before fees).
    pub quote_filled: Amount,
    pub status: OrderStatus,
    pub time_in_force: TimeInForce,
    pub post_only: bool,
    pub client_order_id: Option<String>,
    pub created_seq: Seq,
    pub created_at: Timestamp,
    pub updated_seq: Seq,
    pub updated_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TradeRecord {
    pub trade_id: TradeId,
    pub market_id: MarketId,
    pub price: Price,
    pub quantity: Quantity,
    pub notional: Amount,
    pub maker_order: OrderId,
    pub maker_account: AccountId,
    pub taker_order: OrderId,
    pub taker_account: AccountId,
    pub taker_side: Side,
    pub maker_fee: Amount,
    pub taker_fee: Amount,
    pub seq: Seq,
    pub timestamp: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BalanceRecord {
    pub account_id: AccountId,
    pub asset_id: AssetId,
    pub available: Amount,
    pub locked: Amount,
    /// The command that last changed this balance.
    pub seq: Seq,
}

/// One balance change: what a command did to one account's asset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LedgerEntry {
    pub seq: Seq,
    pub timestamp: Timestamp,
    pub account_id: AccountId,
    pub asset_id: AssetId,
    pub available_delta: i64,
    pub locked_delta: i64,
    /// Balance after the change.
    pub available: Amount,
    pub locked: Amount,
    /// The command's [`tandem_matching::Command::name`], e.g. `place_order`.
    pub cause: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WithdrawalRecord {
    pub withdrawal_id: WithdrawalId,
    pub account_id: AccountId,
    pub asset_id: AssetId,
    pub amount: Amount,
    pub destination: String,
    pub status: WithdrawalStatus,
    pub requested_at: Timestamp,
    pub updated_at: Timestamp,
    pub client_withdrawal_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DepositRecord {
    pub account_id: AccountId,
    pub asset_id: AssetId,
    pub amount: Amount,
    pub reference: String,
    pub seq: Seq,
    pub timestamp: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AccountRecord {
    pub account_id: AccountId,
    pub kind: AccountKind,
    /// 0 for the fee account and the settlement pool, which exist from genesis.
    pub created_seq: Seq,
}

/// An API credential. The secret is never serialised and never printed by `Debug`, so a
/// record cannot leak it into a response or a log by accident; code that must show it (once,
/// on creation) reads the field explicitly.
#[derive(Clone, PartialEq, Eq, Serialize)]
pub struct ApiKeyRecord {
    pub api_key: String,
    #[serde(skip_serializing)]
    pub secret: String,
    pub account_id: AccountId,
    pub label: String,
    pub created_at: Timestamp,
}

impl std::fmt::Debug for ApiKeyRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKeyRecord")
            .field("api_key", &self.api_key)
            .field("secret", &"<redacted>")
            .field("account_id", &self.account_id)
            .field("label", &self.label)
            .field("created_at", &self.created_at)
            .finish()
    }
}

/// A wallet's device key: the BIP-340 x-only public key (lowercase hex) that signs the
/// account's requests. Public data; the secret stays in the wallet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeviceKeyRecord {
    pub device_pubkey: String,
    pub account_id: AccountId,
    pub label: String,
    pub created_at: Timestamp,
}

/// A single-use enrolment code, known here only by its hash. `used_at` is set when a wallet
/// consumes it, `account_id` once the account it opened is bound to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EnrolmentCodeRecord {
    pub code_hash: String,
    pub label: String,
    pub created_at: Timestamp,
    pub used_at: Option<Timestamp>,
    pub account_id: Option<AccountId>,
}

/// A co-signer's identity key (BIP-340 x-only public key, lowercase hex), registered by the
/// operator. Public data; the secret stays with the co-signer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CosignerRecord {
    pub identity_pubkey: String,
    pub label: String,
    pub created_at: Timestamp,
}

/// A vault: a signer group owned by one account (`policy`: "2-of-2" or "2-of-3"; identities
/// are x-only public keys, lowercase hex; `group_id` is 32 hex characters). Public data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VaultRecord {
    pub group_id: String,
    pub account_id: AccountId,
    pub policy: String,
    pub wallet_identity: String,
    pub cosigner_identity: Option<String>,
    pub created_at: Timestamp,
}

/// A deposit address of a vault (one threshold key, `key_index` counting from 0).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VaultAddressRecord {
    pub address: String,
    pub group_id: String,
    pub key_index: u64,
    pub created_at: Timestamp,
}

// ---- conversions ----

fn corrupt(what: &str, value: &str) -> StoreError {
    StoreError::Corrupt(format!("unknown {what} {value:?}"))
}

/// An engine integer as an SQL integer.
pub(crate) fn to_sql(value: u64, what: &'static str) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| StoreError::Corrupt(format!("{what} {value} does not fit in a signed 64-bit column")))
}

/// An SQL integer as an engine integer.
pub(crate) fn from_sql(value: i64, what: &'static str) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| StoreError::Corrupt(format!("{what} {value} is negative")))
}

pub(crate) fn small_from_sql(value: i64, what: &'static str) -> Result<u16, StoreError> {
    u16::try_from(value).map_err(|_| StoreError::Corrupt(format!("{what} {value} is out of range")))
}

pub(crate) fn parse_side(s: &str) -> Result<Side, StoreError> {
    match s {
        "buy" => Ok(Side::Buy),
        "sell" => Ok(Side::Sell),
        _ => Err(corrupt("side", s)),
    }
}

/// Same spelling as the engine's serde form, so the column reads like the API.
pub(crate) fn tif_str(tif: TimeInForce) -> &'static str {
    match tif {
        TimeInForce::Gtc => "GTC",
        TimeInForce::Ioc => "IOC",
        TimeInForce::Fok => "FOK",
    }
}

pub(crate) fn parse_tif(s: &str) -> Result<TimeInForce, StoreError> {
    match s {
        "GTC" => Ok(TimeInForce::Gtc),
        "IOC" => Ok(TimeInForce::Ioc),
        "FOK" => Ok(TimeInForce::Fok),
        _ => Err(corrupt("time in force", s)),
    }
}

pub(crate) fn parse_account_kind(s: &str) -> Result<AccountKind, StoreError> {
    match s {
        "user" => Ok(AccountKind::User),
        "partner" => Ok(AccountKind::Partner),
        "fee" => Ok(AccountKind::Fee),
        "settlement_pool" => Ok(AccountKind::SettlementPool),
        _ => Err(corrupt("account kind", s)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for s in [
            OrderStatus::New,
            OrderStatus::PartiallyFilled,
            OrderStatus::Filled,
            OrderStatus::Canceled,
            OrderStatus::Expired,
            OrderStatus::SelfTradePrevented,
        ] {
            assert_eq!(OrderStatus::parse(s.as_str()).unwrap(), s);
            assert_eq!(serde_json_str(&s), s.as_str());
        }
        for s in [WithdrawalStatus::Pending, WithdrawalStatus::Completed, WithdrawalStatus::Failed] {
            assert_eq!(WithdrawalStatus::parse(s.as_str()).unwrap(), s);
        }
        for t in [OrderType::Limit, OrderType::Market] {
            assert_eq!(OrderType::parse(t.as_str()).unwrap(), t);
        }
        for t in [TimeInForce::Gtc, TimeInForce::Ioc, TimeInForce::Fok] {
            assert_eq!(parse_tif(tif_str(t)).unwrap(), t);
        }
        for k in [AccountKind::User, AccountKind::Partner, AccountKind::Fee, AccountKind::SettlementPool] {
            assert_eq!(parse_account_kind(k.as_str()).unwrap(), k);
        }
        assert!(matches!(OrderStatus::parse("open"), Err(StoreError::Corrupt(_))));
    }

    #[test]
    fn conversions_are_checked() {
        assert_eq!(to_sql(1 << 62, "x").unwrap(), 1 << 62);
        assert!(matches!(to_sql(u64::MAX, "x"), Err(StoreError::Corrupt(_))));
        assert!(matches!(from_sql(-1, "x"), Err(StoreError::Corrupt(_))));
        assert!(matches!(small_from_sql(70_000, "x"), Err(StoreError::Corrupt(_))));
    }

    #[test]
    fn api_key_secret_never_leaks() {
        let k = ApiKeyRecord {
            api_key: "k".into(),
            secret: "s3cret".into(),
            account_id: AccountId(3),
            label: "bot".into(),
            created_at: Timestamp(1),
        };
        assert!(!format!("{k:?}").contains("s3cret"));
        assert!(!serde_json_str(&k).contains("s3cret"));
    }

    fn serde_json_str<T: Serialize>(v: &T) -> String {
        let s = serde_json::to_string(v).unwrap();
        s.trim_matches('"').to_owned()
    }
}

/// A signer declined to sign (see migrations/sqlite/0005). `id` is given by the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RefusalRecord {
    pub id: u64,
    pub at: Timestamp,
    /// "wallet", "provider" or "cosigner".
    pub signer: String,
    pub code: String,
    pub detail: String,
    /// The spend's purpose, JSON text.
    pub purpose: String,
    pub execution_id: String,
    pub group_id: Option<String>,
    pub account_id: Option<AccountId>,
}
