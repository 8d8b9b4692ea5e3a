//! Commands: every state change enters the engine as one of these, journaled first.

use crate::config::EngineConfig;
use crate::settlement::SettlementLeg;
use crate::types::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// The journal's first record: the rules every later command runs under.
    Genesis(EngineConfig),
    OpenAccount { kind: AccountKind },
    /// Idempotent by `(asset, reference)`: an outpoint `txid:vout` or a fiat reference.
    CreditDeposit { account: AccountId, asset: AssetId, amount: Amount, reference: String },
    /// Takes back a credited deposit the chain lost (a reorg). If the account no longer has the
    /// amount available, the account is frozen and its orders cancelled; if that frees enough,
    /// the deposit is reversed, otherwise the reversal waits (an operator resolves it).
    ReverseDeposit { asset: AssetId, reference: String },
    /// No new orders, amends or withdrawals for this account until unfrozen (cancels allowed).
    FreezeAccount { account: AccountId },
    UnfreezeAccount { account: AccountId },
    /// Debits `available` at once and keeps the amount locked until settlement completes or fails it.
    RequestWithdrawal { account: AccountId, asset: AssetId, amount: Amount, destination: String },
    CompleteWithdrawal { withdrawal: WithdrawalId },
    /// Refunds the locked amount to `available`.
    FailWithdrawal { withdrawal: WithdrawalId },
    PlaceOrder(NewOrder),
    CancelOrder { account: AccountId, order: OrderRef },
    /// Changes price and/or total quantity. Time priority is kept only when the price is unchanged
    /// and the quantity goes down.
    AmendOrder { account: AccountId, order: OrderRef, price: Option<Price>, quantity: Option<Quantity> },
    /// Cancels every open order of `account` (all accounts when `None`) in `market` (all when `None`).
    CancelAll { account: Option<AccountId>, market: Option<MarketId> },
    HaltMarket { market: MarketId },
    ResumeMarket { market: MarketId },
    // New variants go last: journals encode the variant's position.
    /// A deposit found on chain, idempotent by `(asset, reference)` like [`Command::CreditDeposit`]:
    /// credits `account` and records that `holder`'s vault holds the coins (the account's own
    /// vault, or the settlement pool for an account without one).
    CreditChainDeposit { account: AccountId, holder: AccountId, asset: AssetId, amount: Amount, reference: String },
    /// Books a settlement batch before it is signed: locks each leg's fee share and marks the
    /// withdrawals it pays. Rejected as a whole unless the legs' deltas plus fees plus the
    /// withdrawals sum to zero, every fee share is available, and no vault would hold less
    /// than nothing.
    BookSettlement { batch: BatchId, asset: AssetId, legs: Vec<SettlementLeg>, withdrawals: Vec<WithdrawalId> },
    /// The batch's transaction was replaced by one paying `extra` more fee, out of `payer`'s change.
    BumpSettlement { batch: BatchId, payer: AccountId, extra: Amount },
    /// The batch's transaction has enough confirmations; `bumps` is how many fee bumps the
    /// confirmed version carries. Fees and withdrawals leave the ledger; the legs' deltas land
    /// in the holders' settled amounts.
    ConfirmSettlement { batch: BatchId, bumps: u32 },
    /// The batch will never confirm (it was never fully signed): its locks are released and its
    /// withdrawals wait for the next batch.
    CancelSettlement { batch: BatchId },
    /// [`Command::RequestWithdrawal`] under a client-chosen id: a second request of the account
    /// with the same id is refused (`DuplicateClientWithdrawalId`), so a retry never pays twice.
    RequestClientWithdrawal {
        account: AccountId,
        asset: AssetId,
        amount: Amount,
        destination: String,
        client_withdrawal_id: ClientWithdrawalId,
    },
    /// A settlement leader's turn begins (it holds the leadership lock under this `epoch`, which
    /// must exceed every earlier one). From then on the chain's commands (chain deposits and
    /// settlement batches) are accepted only from the current leader, inside
    /// [`Command::AsSettlementLeader`]: a leader that lost its lock but has not noticed yet can
    /// no longer act.
    ClaimSettlementLeadership { epoch: u64 },
    /// `command` from the settlement leader of `epoch`: applied only while `epoch` is current.
    AsSettlementLeader { epoch: u64, command: Box<Command> },
}

impl Command {
    pub fn encode(&self) -> Vec<u8> {
        // Encoding a plain enum into a Vec cannot fail.
        postcard::to_allocvec(self).expect("commands always encode")
    }

    pub fn decode(bytes: &[u8]) -> Result<Command, postcard::Error> {
        postcard::from_bytes(bytes)
    }

    /// The command as the settlement leader of `epoch` sends it (unchanged without a leader).
    pub fn from_leader(self, epoch: Option<u64>) -> Command {
        match epoch {
            Some(epoch) => Command::AsSettlementLeader { epoch, command: Box::new(self) },
            None => self,
        }
    }

    /// Short name for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Genesis(_) => "genesis",
            Command::OpenAccount { .. } => "open_account",
            Command::CreditDeposit { .. } => "credit_deposit",
            Command::ReverseDeposit { .. } => "reverse_deposit",
            Command::FreezeAccount { .. } => "freeze_account",
            Command::UnfreezeAccount { .. } => "unfreeze_account",
            Command::RequestWithdrawal { .. } => "request_withdrawal",
            Command::CompleteWithdrawal { .. } => "complete_withdrawal",
            Command::FailWithdrawal { .. } => "fail_withdrawal",
            Command::PlaceOrder(_) => "place_order",
            Command::CancelOrder { .. } => "cancel_order",
            Command::AmendOrder { .. } => "amend_order",
            Command::CancelAll { .. } => "cancel_all",
            Command::HaltMarket { .. } => "halt_market",
            Command::ResumeMarket { .. } => "resume_market",
            Command::CreditChainDeposit { .. } => "credit_chain_deposit",
            Command::BookSettlement { .. } => "book_settlement",
            Command::BumpSettlement { .. } => "bump_settlement",
            Command::ConfirmSettlement { .. } => "confirm_settlement",
            Command::CancelSettlement { .. } => "cancel_settlement",
            Command::RequestClientWithdrawal { .. } => "request_client_withdrawal",
            Command::ClaimSettlementLeadership { .. } => "claim_settlement_leadership",
            // Ledger entries name what moved the money, not the envelope.
            Command::AsSettlementLeader { command, .. } => command.name(),
        }
    }
}

/// A command with its place in the journal. Replaying the same sequence of these rebuilds the
/// same state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    pub seq: Seq,
    pub timestamp: Timestamp,
    pub command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OrderRef {
    Id(OrderId),
    Client(ClientOrderId),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewOrder {
    pub account: AccountId,
    pub market: MarketId,
    pub side: Side,
    pub kind: OrderKind,
    /// Total quantity in base minimal units.
    pub quantity: Quantity,
    pub client_order_id: Option<ClientOrderId>,
    pub self_trade: SelfTradePrevention,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OrderKind {
    Limit { price: Price, time_in_force: TimeInForce, post_only: bool },
    /// Executes immediately against the book, never past `protection_price` (the worst price the
    /// client accepts); whatever cannot fill there expires.
    Market { protection_price: Price },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum TimeInForce {
    /// Good till cancelled: the rest stays on the book.
    Gtc,
    /// Immediate or cancel: the rest expires.
    Ioc,
    /// Fill or kill: all at once or nothing at all.
    Fok,
}

/// What happens when an order would trade against another order of the same account.
/// The default, like most venues partners know, cancels the resting order and lets the
/// incoming one go on matching.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SelfTradePrevention {
    #[default]
    CancelResting,
    CancelIncoming,
    CancelBoth,
}
