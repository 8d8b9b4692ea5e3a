//! The shapes the API document names that no handler type carries: the decimal string, mirrors of
//! the engine's wire enums (`tandem-matching` knows nothing of OpenAPI), the error body, and the
//! replies the handlers build with `json!`. The request bodies and the order, fill, balance and
//! withdrawal objects are the handlers' own types (`dto.rs`), documented where they are defined.
//!
//! These types are read only by the `ToSchema` derive, never built. They cannot drift silently:
//! the mirrors are checked against the engine's serialisation below, and the API tests
//! (`gateway/tests/api/openapi.rs`) check real replies against the documented schemas.
#![allow(dead_code)]

use serde::Serialize;
use serde_json::{json, Value};
use std::borrow::Cow;
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Schema, Type};
use utoipa::openapi::RefOr;
use utoipa::{IntoParams, PartialSchema, ToSchema};

use crate::dto::{BalanceJson, FillJson, OrderJson, PublicTradeJson, WithdrawalJson};
use crate::evidence::Evidence;

/// A string schema with a pattern: what the decimal and key types below are.
fn string(pattern: &str, description: &str, example: &str) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(pattern))
        .description(Some(description))
        .examples([json!(example)])
        .into()
}

/// An amount, price or quantity: a decimal string in whole units, never a JSON number.
pub struct Decimal;

impl PartialSchema for Decimal {
    fn schema() -> RefOr<Schema> {
        string(
            r"^[0-9]*\.?[0-9]*$",
            "A decimal in whole units as a string, never a JSON number (\"65000.00\" USD, \"0.001\" BTC). \
             Replies use the asset's full scale; requests with more places than the asset's unit are refused \
             (`bad_precision`), never rounded; exponents and spaces are `bad_request`.",
            "65000.00",
        )
    }
}

impl ToSchema for Decimal {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("Decimal")
    }
}

/// A signed change of a balance ("-0.05").
pub struct SignedDecimal;

impl PartialSchema for SignedDecimal {
    fn schema() -> RefOr<Schema> {
        string(r"^-?[0-9]+(\.[0-9]+)?$", "A signed decimal in whole units as a string.", "-0.05000000")
    }
}

impl ToSchema for SignedDecimal {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("SignedDecimal")
    }
}

/// A BIP-340 x-only public key (device, co-signer or provider identity).
pub struct XOnlyKey;

impl PartialSchema for XOnlyKey {
    fn schema() -> RefOr<Schema> {
        string(
            "^[0-9a-fA-F]{64}$",
            "A BIP-340 x-only public key: 64 hex characters.",
            "1b84c5567b126440995d3ed5aaba0565d71e1834604819ff9c17f5e9d5dd078f",
        )
    }
}

impl ToSchema for XOnlyKey {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("XOnlyKey")
    }
}

/// One level of a book: `[price, quantity]`, best first.
pub struct Level;

impl PartialSchema for Level {
    fn schema() -> RefOr<Schema> {
        ArrayBuilder::new()
            .items(Decimal::schema())
            .min_items(Some(2))
            .max_items(Some(2))
            .description(Some("`[price, quantity]` as decimal strings."))
            .examples([json!(["65000.00", "0.75000000"])])
            .into()
    }
}

impl ToSchema for Level {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("Level")
    }
}

// ---------------------------------------------------------------------------------------------
// Mirrors of the engine's wire enums
// ---------------------------------------------------------------------------------------------

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    Buy,
    Sell,
}

/// `GTC` rests on the book; `IOC` trades what it can now and expires the rest; `FOK` trades all
/// at once or nothing.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum TimeInForce {
    Gtc,
    Ioc,
    Fok,
}

/// What happens when an order would trade against another order of the same account.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SelfTradePrevention {
    CancelResting,
    CancelIncoming,
    CancelBoth,
}

/// `new` and `partially_filled` are open; `expired` is an IOC, FOK or market order whose rest
/// could not fill.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    New,
    PartiallyFilled,
    Filled,
    Canceled,
    Expired,
    SelfTradePrevented,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Liquidity {
    Taker,
    Maker,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum WithdrawalStatus {
    Pending,
    Completed,
    Failed,
}

// ---------------------------------------------------------------------------------------------
// Errors and common parameters
// ---------------------------------------------------------------------------------------------

/// Every error, malformed bodies and unknown routes included. A request that fails changes nothing.
#[derive(ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
    /// `409 duplicate_client_order_id`: the order the client id already made.
    pub order: Option<OrderJson>,
    /// `409 duplicate_client_withdrawal_id`: the withdrawal the client id already made.
    pub withdrawal: Option<WithdrawalJson>,
    /// An operator write that opened an account but failed after: which account.
    pub account_id: Option<u64>,
}

#[derive(ToSchema)]
pub struct ErrorDetail {
    /// Stable: clients may rely on it (see the codes in `docs/API.md`).
    #[schema(example = "price_off_tick")]
    pub code: String,
    /// For humans.
    pub message: String,
}

/// `limit` of the history lists.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LimitParam {
    /// 1 to 1000, default 100. Lists are newest first.
    pub limit: Option<u32>,
}

// ---------------------------------------------------------------------------------------------
// Public replies
// ---------------------------------------------------------------------------------------------

#[derive(ToSchema)]
pub struct Health {
    /// `ok`, or `unavailable` (with 503) when the engine does not answer or the journal failed.
    pub status: String,
    pub last_seq: u64,
    pub projected_seq: u64,
}

#[derive(ToSchema)]
pub struct Markets {
    pub markets: Vec<Market>,
}

#[derive(ToSchema)]
pub struct Market {
    #[schema(example = "BTC-USD")]
    pub symbol: String,
    pub base: String,
    pub quote: String,
    pub base_decimals: u8,
    pub quote_decimals: u8,
    #[schema(value_type = Decimal)]
    pub tick_size: String,
    #[schema(value_type = Decimal)]
    pub lot_size: String,
    #[schema(value_type = Decimal)]
    pub min_notional: String,
    pub maker_fee_bps: u32,
    pub taker_fee_bps: u32,
    pub halted: bool,
}

#[derive(ToSchema)]
pub struct Book {
    pub market: String,
    /// Counts the commands that changed this market's book since the exchange began (the same
    /// counter as the WebSocket `book_update`s).
    pub book_seq: u64,
    #[schema(value_type = Vec<Level>)]
    pub bids: Vec<String>,
    #[schema(value_type = Vec<Level>)]
    pub asks: Vec<String>,
}

#[derive(ToSchema)]
pub struct MarketTrades {
    pub market: String,
    pub trades: Vec<PublicTradeJson>,
}

// ---------------------------------------------------------------------------------------------
// A trader's replies
// ---------------------------------------------------------------------------------------------

#[derive(ToSchema)]
pub struct SingleOrder {
    pub order: OrderJson,
}

#[derive(ToSchema)]
pub struct Orders {
    pub orders: Vec<OrderJson>,
}

#[derive(ToSchema)]
pub struct Canceled {
    /// The ids of the orders canceled.
    pub canceled: Vec<u64>,
}

#[derive(ToSchema)]
pub struct Balances {
    pub balances: Vec<BalanceJson>,
}

#[derive(ToSchema)]
pub struct SingleWithdrawal {
    pub withdrawal: WithdrawalJson,
}

#[derive(ToSchema)]
pub struct Withdrawals {
    pub withdrawals: Vec<WithdrawalJson>,
}

#[derive(ToSchema)]
pub struct Deposits {
    pub deposits: Vec<Deposit>,
}

#[derive(ToSchema)]
pub struct Deposit {
    pub asset: String,
    #[schema(value_type = Decimal)]
    pub amount: String,
    /// The fiat reference, or `chain:<txid>:<vout>` for a chain deposit.
    pub reference: String,
    pub seq: u64,
    pub timestamp: u64,
}

#[derive(ToSchema)]
pub struct Fills {
    pub fills: Vec<FillJson>,
}

#[derive(ToSchema)]
pub struct Ledger {
    pub entries: Vec<LedgerEntry>,
}

/// One balance change.
#[derive(ToSchema)]
pub struct LedgerEntry {
    pub seq: u64,
    pub timestamp: u64,
    pub asset: String,
    #[schema(value_type = SignedDecimal)]
    pub available_delta: String,
    #[schema(value_type = SignedDecimal)]
    pub locked_delta: String,
    /// The balance after.
    #[schema(value_type = Decimal)]
    pub available: String,
    #[schema(value_type = Decimal)]
    pub locked: String,
    /// The command that made it: `place_order`, `credit_deposit`, ...
    pub cause: String,
}

/// Chain quantities are integers in satoshis.
#[derive(ToSchema)]
pub struct SettlementPosition {
    #[schema(example = "BTC")]
    pub asset: String,
    /// What the account's own vault holds on chain as the ledger knows it (0 when the pool holds
    /// the account's coins).
    pub settled_sat: i64,
    /// The deltas of batches in flight.
    pub in_flight_sat: i64,
    /// What the next batch will move into (+) or out of (−) the vault.
    pub target_sat: i64,
}

/// A holder's leg of a batch: how its vault's holdings change, and its share of the fee.
#[derive(ToSchema)]
pub struct Leg {
    pub delta_sat: i64,
    pub fee_sat: u64,
}

/// The caller's part in a batch being signed, which its wallet checks before it co-signs.
#[derive(ToSchema)]
pub struct BatchPart {
    pub batch: u64,
    /// Null if the batch books nothing for the caller.
    pub leg: Option<Leg>,
    /// The caller's withdrawals this batch pays.
    pub withdrawals: Vec<u64>,
    pub balance_sat: u64,
    pub pending_withdrawals_sat: u64,
    pub settled_sat: i64,
    /// The window's evidence, with a leg.
    pub evidence: Option<Evidence>,
}

/// A vault holder's leg in an open batch and the window's evidence, for the vault's co-signer.
#[derive(ToSchema)]
pub struct CosignerBatchPart {
    pub batch: u64,
    pub account: u64,
    pub leg: Leg,
    pub evidence: Evidence,
}

#[derive(ToSchema)]
pub struct Vaults {
    pub account_id: u64,
    pub vaults: Vec<Vault>,
}

#[derive(ToSchema)]
pub struct Vault {
    /// 32 hex characters.
    pub group_id: String,
    /// `2-of-2` or `2-of-3`.
    pub policy: String,
    #[schema(value_type = XOnlyKey)]
    pub wallet_identity: String,
    #[schema(value_type = Option<XOnlyKey>)]
    pub cosigner_identity: Option<String>,
    pub created_at: u64,
    pub addresses: Vec<VaultAddress>,
}

#[derive(ToSchema)]
pub struct VaultAddress {
    /// Bech32, of the node's network.
    pub address: String,
    pub key_index: u64,
    pub created_at: u64,
}

#[derive(ToSchema)]
pub struct Enrolled {
    pub account_id: u64,
    #[schema(value_type = XOnlyKey)]
    pub device_pubkey: String,
    pub label: String,
}

// ---------------------------------------------------------------------------------------------
// The operator's replies
// ---------------------------------------------------------------------------------------------

#[derive(ToSchema)]
pub struct OpenedAccount {
    pub account_id: u64,
    /// `user` or `partner`.
    pub kind: String,
    pub label: String,
    /// 32 random bytes as hex.
    pub api_key: String,
    /// Shown only here: 32 random bytes as hex.
    pub api_secret: String,
}

#[derive(ToSchema)]
pub struct OperatorAccount {
    pub account_id: u64,
    pub kind: String,
    pub balances: Vec<BalanceJson>,
    pub open_orders: u64,
    pub frozen: bool,
}

#[derive(ToSchema)]
pub struct Frozen {
    pub account_id: u64,
    pub frozen: bool,
}

#[derive(ToSchema)]
pub struct EnrolmentCode {
    /// Single use, shown only here (16 random bytes as hex); the store keeps its SHA-256.
    pub code: String,
    pub label: String,
    pub created_at: u64,
}

#[derive(ToSchema)]
pub struct Cosigner {
    #[schema(value_type = XOnlyKey)]
    pub identity_pubkey: String,
    pub label: String,
    pub created_at: u64,
}

#[derive(ToSchema)]
pub struct Cosigners {
    /// Oldest first.
    pub cosigners: Vec<Cosigner>,
}

/// The signatures settlement is waiting for.
#[derive(ToSchema)]
pub struct SigningStatus {
    /// Batches still being signed (`planned`, `booked`).
    pub batches: Vec<SigningBatch>,
    /// Wallets that missed a batch's signing deadline.
    pub late: Vec<LateWallet>,
}

#[derive(ToSchema)]
pub struct SigningBatch {
    pub batch: u64,
    pub status: String,
    /// The version being signed (0 unless the batch was bumped).
    pub version: u32,
    pub created_at: u64,
    pub inputs: Vec<SigningInput>,
    /// Inputs without a stored witness.
    pub waiting: u64,
    pub last_error: Option<String>,
}

#[derive(ToSchema)]
pub struct SigningInput {
    pub input: u64,
    pub holder: Option<u64>,
    pub outpoint: Option<String>,
    pub value_sat: Option<u64>,
    /// Who signs it: `{"kind": "pool"}` (the provider alone) or a vault's key.
    #[schema(value_type = Object)]
    pub signer: serde_json::Value,
    pub signed: bool,
}

#[derive(ToSchema)]
pub struct LateWallet {
    pub account: u64,
    pub batch: u64,
    pub since: u64,
}

#[derive(ToSchema)]
pub struct Refusals {
    /// Newest first.
    pub refusals: Vec<Refusal>,
}

/// A spend a signer refused.
#[derive(ToSchema)]
pub struct Refusal {
    pub id: u64,
    pub at: u64,
    /// `provider`, `wallet` or `cosigner`.
    pub signer: String,
    pub code: String,
    pub detail: String,
    /// The spend's purpose (as the signing session's intent states it).
    pub purpose: Value,
    pub execution_id: String,
    pub group_id: Option<String>,
    pub account_id: Option<u64>,
}

#[derive(ToSchema)]
pub struct Credited {
    pub deposit: CreditedDeposit,
    /// The account's balance of the asset after the credit.
    pub balance: Option<BalanceJson>,
}

#[derive(ToSchema)]
pub struct CreditedDeposit {
    pub account_id: u64,
    pub asset: String,
    #[schema(value_type = Decimal)]
    pub amount: String,
    pub reference: String,
    pub seq: u64,
}

/// A body naming one deposit.
#[derive(ToSchema)]
pub struct ReverseDeposit {
    pub asset: String,
    /// The deposit's reference: `chain:<txid>:<vout>` for a chain deposit.
    pub reference: String,
}

#[derive(ToSchema)]
pub struct Reversal {
    pub asset: String,
    pub reference: String,
    /// `reversed`, or `pending` when the account lacks the funds (retry once it has them).
    pub status: String,
    /// The reversal froze the account (it had spent the deposit) and canceled its orders.
    pub account_frozen_now: bool,
}

#[derive(ToSchema)]
pub struct Batches {
    /// Newest first.
    pub batches: Vec<OperatorBatch>,
}

/// A settlement batch: its window's figures, its plan, and each signed transaction version.
#[derive(ToSchema)]
pub struct OperatorBatch {
    pub batch: u64,
    /// `planned`, `booked`, `signed`, `broadcast`, `confirmed` or `cancelled`.
    pub status: String,
    /// When the batch's window closed.
    pub created_at: u64,
    pub updated_at: u64,
    pub fee_rate_sat_per_kvb: u64,
    pub vbytes: u64,
    /// Version 0's fee.
    pub fee_sat: u64,
    /// The confirmed version's, else the newest sent.
    pub txid: Option<String>,
    pub confirmations: u32,
    pub confirmed_height: Option<u32>,
    pub confirmed_version: Option<u32>,
    /// The number of RBF bumps.
    pub bumps: u32,
    pub last_error: Option<String>,
    pub window_cut_seq: Value,
    /// The late holder a forced settlement pays for (null for a window's batch).
    pub forced: Value,
    /// `{"holder", "outpoint", "value", "signer"}` each.
    pub inputs: Value,
    /// `{"kind": "vault" | "withdrawal", "holder", "withdrawal", "script", "amount"}` each.
    pub outputs: Value,
    /// `{"holder", "delta", "fee", "vbytes"}` each, in satoshis.
    pub legs: Value,
    /// Participants left for a later batch, with their `target` and `reason`.
    pub deferred: Value,
    pub versions: Vec<BatchVersion>,
}

#[derive(ToSchema)]
pub struct BatchVersion {
    /// 0 as planned, then one per RBF bump.
    pub version: u32,
    pub txid: String,
    pub fee_sat: u64,
    pub broadcast_at: Option<u64>,
}

#[derive(ToSchema)]
pub struct EngineState {
    pub last_seq: u64,
    /// Hex BLAKE3 of the engine state: equals a fresh replay of the journal up to `last_seq`.
    pub state_hash: String,
    pub projected_seq: u64,
    pub accounts: u64,
    pub open_orders: u64,
}

#[derive(ToSchema)]
pub struct Halted {
    pub market: String,
    pub halted: bool,
}

#[derive(ToSchema)]
pub struct MarketCanceled {
    pub market: String,
    /// How many orders were canceled.
    pub canceled: u64,
}

// ---------------------------------------------------------------------------------------------
// MPC relay replies
// ---------------------------------------------------------------------------------------------

#[derive(ToSchema)]
pub struct Provider {
    /// The provider's identity key, for wallets and co-signers to pin; null without custody.
    #[schema(value_type = Option<XOnlyKey>)]
    pub identity: Option<String>,
    /// A demo provider (`tandem demo`), which accepts the public fixture primes.
    pub demo: bool,
    /// The node's one Bitcoin network, as Bitcoin Core names it (`bitcoin`, `regtest`, ...).
    pub network: String,
    /// The registered co-signers: a wallet makes its vault 2-of-3 with one of them.
    pub cosigners: Vec<ProviderCosigner>,
}

#[derive(ToSchema)]
pub struct ProviderCosigner {
    #[schema(value_type = XOnlyKey)]
    pub identity_pubkey: String,
    pub label: String,
}

#[derive(ToSchema)]
pub struct Session {
    /// 64 hex characters.
    pub execution_id: String,
    /// `aux-info`, `keygen`, `presign` or `sign`.
    pub protocol: String,
    pub parties: Vec<SessionParty>,
    /// What the session is for, as its opener stated it; opaque to the relay.
    pub intent: Option<Value>,
    pub opened_seq: u64,
    /// `open` or `ended`.
    pub status: String,
    pub ended_reason: Option<String>,
    pub expires_in_ms: u64,
}

#[derive(ToSchema)]
pub struct SessionParty {
    /// `wallet`, `provider` or `cosigner`.
    pub role: String,
    #[schema(value_type = XOnlyKey)]
    pub identity_pubkey: String,
}

#[derive(ToSchema)]
pub struct Sessions {
    /// Oldest first.
    pub sessions: Vec<Session>,
    /// Send it as the next `after`.
    pub last_seq: u64,
}

#[derive(ToSchema)]
pub struct Accepted {
    /// Messages queued (a retried message already queued counts as accepted).
    pub accepted: u64,
}

#[derive(ToSchema)]
pub struct Messages {
    pub messages: Vec<RelayedMessage>,
    /// Send it as the next `after`: that acknowledges (and frees) every message up to it.
    pub last_id: u64,
}

/// A sealed message as the relay delivers it.
#[derive(ToSchema)]
pub struct RelayedMessage {
    /// 1, 2, 3, ... per session and recipient.
    pub id: u64,
    pub sender: String,
    pub recipient: String,
    pub broadcast: bool,
    pub seq: u64,
    pub abort: bool,
    /// The sealed envelope, hex.
    pub payload: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each mirror serialises like the engine's own enum. The matches are exhaustive, so a new
    /// engine variant does not compile until its mirror is added here.
    #[test]
    fn mirrors_match_the_engine() {
        use tandem_matching as m;
        let same = |engine: Value, mirror: Value| assert_eq!(engine, mirror);
        for s in [m::Side::Buy, m::Side::Sell] {
            let mirror = match s {
                m::Side::Buy => Side::Buy,
                m::Side::Sell => Side::Sell,
            };
            same(json!(s), json!(mirror));
        }
        for t in [m::TimeInForce::Gtc, m::TimeInForce::Ioc, m::TimeInForce::Fok] {
            let mirror = match t {
                m::TimeInForce::Gtc => TimeInForce::Gtc,
                m::TimeInForce::Ioc => TimeInForce::Ioc,
                m::TimeInForce::Fok => TimeInForce::Fok,
            };
            same(json!(t), json!(mirror));
            same(json!(crate::dto::tif_str(t)), json!(mirror));
        }
        use m::SelfTradePrevention as Stp;
        for p in [Stp::CancelResting, Stp::CancelIncoming, Stp::CancelBoth] {
            let mirror = match p {
                Stp::CancelResting => SelfTradePrevention::CancelResting,
                Stp::CancelIncoming => SelfTradePrevention::CancelIncoming,
                Stp::CancelBoth => SelfTradePrevention::CancelBoth,
            };
            same(json!(p), json!(mirror));
        }
        use m::CloseReason as C;
        for c in [C::Filled, C::Canceled, C::Expired, C::SelfTrade] {
            let mirror = match c {
                C::Filled => OrderStatus::Filled,
                C::Canceled => OrderStatus::Canceled,
                C::Expired => OrderStatus::Expired,
                C::SelfTrade => OrderStatus::SelfTradePrevented,
            };
            same(json!(crate::dto::close_status(c)), json!(mirror));
        }
        same(json!(crate::dto::open_status(m::Quantity(0))), json!(OrderStatus::New));
        same(json!(crate::dto::open_status(m::Quantity(1))), json!(OrderStatus::PartiallyFilled));
    }

    #[test]
    fn the_error_schema_describes_the_error_body() {
        let body = crate::ApiError::bad_request("nope").body();
        let mut keys: Vec<_> = body["error"].as_object().into_iter().flat_map(|o| o.keys().cloned()).collect();
        keys.sort();
        assert_eq!(keys, ["code", "message"]);
        let schema = serde_json::to_value(ErrorDetail::schema()).unwrap();
        let mut documented: Vec<_> = schema["properties"].as_object().unwrap().keys().cloned().collect();
        documented.sort();
        assert_eq!(keys, documented);
    }
}
