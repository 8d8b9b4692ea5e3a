//! Events: what a command did. API replies, market data, projections and settlement are all
//! derived from these.

use crate::command::TimeInForce;
use crate::settlement::SettlementLeg;
use crate::types::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    Configured { assets: u16, markets: u16 },
    AccountOpened { account: AccountId, kind: AccountKind },
    DepositCredited { account: AccountId, asset: AssetId, amount: Amount, reference: String },
    /// A credited deposit was taken back (the chain lost it).
    DepositReversed { account: AccountId, asset: AssetId, amount: Amount, reference: String },
    /// A deposit must be taken back but the account has spent it: the account is frozen and the
    /// reversal waits for an operator.
    DepositReversalPending { account: AccountId, asset: AssetId, amount: Amount, reference: String },
    AccountFrozen { account: AccountId },
    AccountUnfrozen { account: AccountId },
    WithdrawalRequested {
        withdrawal: WithdrawalId,
        account: AccountId,
        asset: AssetId,
        amount: Amount,
        destination: String,
        client_withdrawal_id: Option<ClientWithdrawalId>,
    },
    WithdrawalCompleted { withdrawal: WithdrawalId, account: AccountId, asset: AssetId, amount: Amount },
    WithdrawalFailed { withdrawal: WithdrawalId, account: AccountId, asset: AssetId, amount: Amount },
    OrderAccepted(OrderAccepted),
    Trade(Trade),
    OrderAmended {
        order: OrderId,
        account: AccountId,
        market: MarketId,
        side: Side,
        previous_price: Price,
        price: Price,
        quantity: Quantity,
        remaining: Quantity,
        priority_kept: bool,
    },
    /// The order left the book (or never rested) and will not trade again.
    OrderClosed {
        order: OrderId,
        account: AccountId,
        market: MarketId,
        side: Side,
        /// Limit price (a market order's protection price).
        price: Price,
        reason: CloseReason,
        quantity: Quantity,
        filled: Quantity,
    },
    /// Absolute balance after the command, once per touched account and asset.
    BalanceChanged { account: AccountId, asset: AssetId, available: Amount, locked: Amount },
    MarketHalted { market: MarketId },
    MarketResumed { market: MarketId },
    /// The command changed nothing.
    Rejected { reason: RejectReason },
    // New variants go last, like commands.
    SettlementBooked { batch: BatchId, asset: AssetId, legs: Vec<SettlementLeg>, withdrawals: Vec<WithdrawalId> },
    SettlementBumped { batch: BatchId, payer: AccountId, extra: Amount },
    /// `fee`: what the confirmed transaction paid, bumps included.
    SettlementConfirmed { batch: BatchId, asset: AssetId, bumps: u32, fee: Amount },
    SettlementCancelled { batch: BatchId },
    /// A settlement leader of `epoch` took over; earlier leaders' commands are refused.
    SettlementLeadershipClaimed { epoch: u64 },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderAccepted {
    pub order: OrderId,
    pub account: AccountId,
    pub market: MarketId,
    pub side: Side,
    /// The limit price, or a market order's protection price.
    pub price: Price,
    pub quantity: Quantity,
    pub time_in_force: TimeInForce,
    pub post_only: bool,
    pub is_market: bool,
    pub client_order_id: Option<ClientOrderId>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trade {
    pub trade: TradeId,
    pub market: MarketId,
    /// Always the resting (maker) order's price.
    pub price: Price,
    pub quantity: Quantity,
    /// Quote paid by the buyer and received by the seller before fees:
    /// `floor(price * quantity / base_scale)`, the same integer on both sides.
    pub notional: Amount,
    pub maker_order: OrderId,
    pub maker_account: AccountId,
    pub taker_order: OrderId,
    pub taker_account: AccountId,
    pub taker_side: Side,
    /// Charged in the asset the maker receives.
    pub maker_fee: Amount,
    /// Charged in the asset the taker receives.
    pub taker_fee: Amount,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CloseReason {
    Filled,
    Canceled,
    /// IOC, FOK or market order whose rest could not fill.
    Expired,
    /// Self-trade prevention removed it.
    SelfTrade,
}

impl CloseReason {
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::Filled => "filled",
            CloseReason::Canceled => "canceled",
            CloseReason::Expired => "expired",
            CloseReason::SelfTrade => "self_trade_prevented",
        }
    }
}

/// Why a command changed nothing. The `code` is stable: clients and the API rely on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum RejectReason {
    #[error("the engine is already configured")]
    AlreadyConfigured,
    #[error("unknown account")]
    UnknownAccount,
    #[error("this account kind cannot trade")]
    AccountCannotTrade,
    #[error("the fee and settlement pool accounts exist once, from genesis")]
    ReservedAccountKind,
    #[error("unknown asset")]
    UnknownAsset,
    #[error("unknown market")]
    UnknownMarket,
    #[error("unknown order")]
    UnknownOrder,
    #[error("unknown withdrawal")]
    UnknownWithdrawal,
    #[error("amount must be positive")]
    ZeroAmount,
    #[error("this deposit reference was already credited")]
    DuplicateDeposit,
    #[error("the asset's maximum supply would be exceeded")]
    SupplyExceeded,
    #[error("insufficient balance")]
    InsufficientBalance,
    #[error("price must be positive and a multiple of the tick size")]
    PriceOffTick,
    #[error("quantity must be positive and a multiple of the lot size")]
    QuantityOffLot,
    #[error("price or quantity out of range")]
    OutOfRange,
    #[error("order value is below the market's minimum notional")]
    BelowMinNotional,
    #[error("post-only order would take liquidity")]
    WouldTakeLiquidity,
    #[error("market is halted")]
    MarketHalted,
    #[error("client order id already used by order {0}")]
    DuplicateClientOrderId(OrderId),
    #[error("amend changes nothing")]
    AmendNoChange,
    #[error("new quantity must exceed the quantity already filled")]
    AmendBelowFilled,
    #[error("market is already halted")]
    AlreadyHalted,
    #[error("market is not halted")]
    NotHalted,
    #[error("no deposit with this reference")]
    UnknownDeposit,
    #[error("this deposit was already reversed")]
    DepositAlreadyReversed,
    #[error("the account is frozen")]
    AccountFrozen,
    #[error("the account is already frozen")]
    AlreadyFrozen,
    #[error("the account is not frozen")]
    NotFrozen,
    #[error("unknown settlement batch")]
    UnknownBatch,
    #[error("batch ids must increase and are never reused")]
    BatchIdReused,
    #[error("the withdrawal is already being paid by a settlement batch")]
    WithdrawalInBatch,
    #[error("the batch's deltas, fees and withdrawals do not balance")]
    UnbalancedBatch,
    #[error("the batch would leave a vault holding less than nothing")]
    VaultOverdrawn,
    #[error("the batch has fewer fee bumps than that")]
    UnknownBump,
    #[error("client withdrawal id already used by withdrawal {0}")]
    DuplicateClientWithdrawalId(WithdrawalId),
    #[error("a newer settlement leader has taken over: this leader's turn is over")]
    StaleLeaderEpoch,
    #[error("settlement has a leader: chain commands must come from it")]
    NotSettlementLeader,
}

impl Event {
    /// The book levels this event changes, as `(market, side, price)`: what market-data updates
    /// report and what `book_seq` counts (one rule for both).
    pub fn touched_levels(&self) -> impl Iterator<Item = (MarketId, Side, Price)> {
        let levels = match self {
            Event::OrderAccepted(a) if !a.is_market => [Some((a.market, a.side, a.price)), None],
            Event::Trade(t) => [Some((t.market, t.taker_side.opposite(), t.price)), None],
            Event::OrderClosed { market, side, price, .. } => [Some((*market, *side, *price)), None],
            Event::OrderAmended { market, side, previous_price, price, .. } => {
                [Some((*market, *side, *previous_price)), Some((*market, *side, *price))]
            }
            _ => [None, None],
        };
        levels.into_iter().flatten()
    }
}

impl RejectReason {
    /// Stable machine-readable code.
    pub fn code(self) -> &'static str {
        match self {
            RejectReason::AlreadyConfigured => "already_configured",
            RejectReason::UnknownAccount => "unknown_account",
            RejectReason::AccountCannotTrade => "account_cannot_trade",
            RejectReason::ReservedAccountKind => "reserved_account_kind",
            RejectReason::UnknownAsset => "unknown_asset",
            RejectReason::UnknownMarket => "unknown_market",
            RejectReason::UnknownOrder => "unknown_order",
            RejectReason::UnknownWithdrawal => "unknown_withdrawal",
            RejectReason::ZeroAmount => "zero_amount",
            RejectReason::DuplicateDeposit => "duplicate_deposit",
            RejectReason::SupplyExceeded => "supply_exceeded",
            RejectReason::InsufficientBalance => "insufficient_balance",
            RejectReason::PriceOffTick => "price_off_tick",
            RejectReason::QuantityOffLot => "quantity_off_lot",
            RejectReason::OutOfRange => "out_of_range",
            RejectReason::BelowMinNotional => "below_min_notional",
            RejectReason::WouldTakeLiquidity => "would_take_liquidity",
            RejectReason::MarketHalted => "market_halted",
            RejectReason::DuplicateClientOrderId(_) => "duplicate_client_order_id",
            RejectReason::AmendNoChange => "amend_no_change",
            RejectReason::AmendBelowFilled => "amend_below_filled",
            RejectReason::AlreadyHalted => "already_halted",
            RejectReason::NotHalted => "not_halted",
            RejectReason::UnknownDeposit => "unknown_deposit",
            RejectReason::DepositAlreadyReversed => "deposit_already_reversed",
            RejectReason::AccountFrozen => "account_frozen",
            RejectReason::AlreadyFrozen => "already_frozen",
            RejectReason::NotFrozen => "not_frozen",
            RejectReason::UnknownBatch => "unknown_batch",
            RejectReason::BatchIdReused => "batch_id_reused",
            RejectReason::WithdrawalInBatch => "withdrawal_in_batch",
            RejectReason::UnbalancedBatch => "unbalanced_batch",
            RejectReason::VaultOverdrawn => "vault_overdrawn",
            RejectReason::UnknownBump => "unknown_bump",
            RejectReason::DuplicateClientWithdrawalId(_) => "duplicate_client_withdrawal_id",
            RejectReason::StaleLeaderEpoch => "stale_leader_epoch",
            RejectReason::NotSettlementLeader => "not_settlement_leader",
        }
    }
}
