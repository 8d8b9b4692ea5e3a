//! Deposit detection: watches the chain for outputs paying vault addresses and says what to
//! credit or reverse. No database, no engine: the caller applies the [`DepositEvent`]s (the
//! engine reference of a deposit is [`DepositEvent::reference`], `chain:<txid>:<vout>`).
//!
//! Money is never invented or lost: at any moment the scanner holds at most one live credit
//! per outpoint ([`DepositScanner::credited`]), and a credit is reversed, for exactly its
//! account and amount, only when its transaction is gone from both the best chain and the
//! mempool.
//!
//! Rules, in the order they are applied by [`DepositScanner::poll`]:
//!
//! - **Deposit**: an output of nonzero value whose script was registered with
//!   [`DepositScanner::watch`] when the scanner first saw the transaction; it is credited
//!   to that script's account. Every such output counts, including change of a transaction
//!   that spends vault outputs; a caller that recognises its own settlement batches must
//!   skip their credits itself. A script watched later only applies to blocks and mempool
//!   snapshots scanned after that.
//! - **Instant credit** (at 0 confirmations, `instant: true`): every input of the
//!   transaction spends a vault outpoint the scanner knows (an output paying a watched
//!   script, seen in a scanned block or in the mempool) *and* that outpoint is itself final:
//!   its transaction has at least `confirmations` confirmations or is itself instantly
//!   credited. So the provider co-signed every input and no input can disappear by a
//!   double-spend of an ancestor the provider does not control. Vault outpoints created
//!   below `start_height` are unknown, so spending them is not instant.
//! - **Credit after N confirmations** (`instant: false`) for everything else, N being
//!   [`DepositPolicy::confirmations`] (at least 1; 0 is read as 1). A **coinbase** paying a
//!   vault address is treated like any external deposit: credited after N confirmations,
//!   never instantly. The chain refuses to spend it before 100 confirmations (coinbase
//!   maturity), so a caller whose N is below 100 must keep coinbase credits out of
//!   spendable balance until maturity; the scanner does not do that for it.
//! - **Credit once**: an outpoint with a live credit is never credited again, however many
//!   polls see it.
//! - **Reorg**: the scanner remembers the hash of the last [`REORG_WINDOW`] blocks it
//!   processed. When the best chain's hash at one of those heights differs, it forgets
//!   everything it learnt from the blocks above the fork point and rescans from there. A
//!   fork deeper than the window makes it forget every block and rescan from
//!   `start_height` (slow but exact; credits are kept, so nothing is credited twice).
//! - **Reverse**: a credited deposit whose transaction is in neither the best chain nor the
//!   mempool (the backend's [`crate::chain::Chain::transaction_status`] is asked to confirm
//!   `Unknown` before reversing, so a transaction moving between the two during a poll is
//!   not reversed) yields one `Reverse` and loses its credit. A credited deposit that is
//!   still in the chain or back in the mempool stays credited, whether it was credited
//!   instantly or after N confirmations and now has fewer: credits do not flap. If a
//!   reversed outpoint comes back later (the transaction is rebroadcast and mined), it is
//!   credited again, so credits minus reverses always equals what is on chain; the engine
//!   must then accept a second credit with the same reference after its reversal.
//! - Reverses of a poll come before its credits. Credits come in chain order (height, then
//!   position in the block, then output index), then mempool order.
//! - Chain data never makes the scanner panic; the only errors are the backend's
//!   [`crate::chain::ChainError`]s. After an error the scanner's state is consistent and the
//!   next poll continues where it stopped; no event is lost, because events are derived from
//!   the difference between what is on chain and what is credited.

mod scanner;

use bitcoin::{Amount, OutPoint};

pub use scanner::{DepositScanner, REORG_WINDOW};

/// How deposits that cannot be credited instantly are credited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DepositPolicy {
    /// Confirmations a non-instant deposit needs (1 = in a block); 0 is read as 1.
    pub confirmations: u32,
}

/// What the caller must do in the ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DepositEvent {
    /// Credit `amount` to `account` for this outpoint (the engine reference is
    /// "chain:<txid>:<vout>"). `confirmations` is the count at the time of the credit (0 in
    /// the mempool); `instant` is true when the credit was granted because every input was
    /// co-signed, before the policy's confirmations were reached.
    /// `holder` is the account whose vault holds the coins (see [`DepositScanner::watch`]).
    Credit { outpoint: OutPoint, account: u64, holder: u64, amount: Amount, instant: bool, confirmations: u32 },
    /// A credited deposit left the chain and the mempool (reorg, conflict): take it back.
    Reverse { outpoint: OutPoint, account: u64, holder: u64, amount: Amount },
}

impl DepositEvent {
    pub fn outpoint(&self) -> OutPoint {
        match self {
            DepositEvent::Credit { outpoint, .. } | DepositEvent::Reverse { outpoint, .. } => *outpoint,
        }
    }

    /// The engine reference of the deposit: `chain:<txid>:<vout>`.
    pub fn reference(&self) -> String {
        let outpoint = self.outpoint();
        format!("chain:{}:{}", outpoint.txid, outpoint.vout)
    }
}

#[cfg(test)]
mod tests;
