//! Settlement batch planning: turns per-vault targets and external withdrawals into one
//! unsigned, RBF-enabled Bitcoin transaction (a PSBT) and says who pays which part of its fee.
//!
//! Pure: no chain, no keys, no clock. The caller gives each participant's target (what its
//! vault must gain or give on chain, already net of its own withdrawals), its vault coins,
//! the withdrawals, the provider's pool and the fee rate; [`plan`] answers with the
//! transaction, one [`Leg`] per participant that takes part (plus the pool's, last) and the
//! participants left for a later batch ([`Deferred`]).
//!
//! Rules (every script is assumed P2WPKH on the spending side):
//! - sizes in whole vbytes: 11 of overhead (the pool's; 2 more per input or output count
//!   that needs a 3-byte varint), 68 per input, `8 + varint + script` per output (31 for
//!   P2WPKH). A leg's vbytes are its inputs, its vault outputs and the withdrawals it asked
//!   for;
//! - each leg pays `ceil(vbytes * rate / 1000)`, so the transaction's fee is the sum of the
//!   legs' fees, exactly;
//! - a participant's delta (vault outputs − inputs) is `target − fee`, except that change
//!   below dust is not created (the participant gives all its inputs and the pool gets the
//!   rest);
//! - payers spend their largest coins first and as few as possible; receivers get one
//!   output and spend nothing; a receiver whose net would be below dust, a payer who cannot
//!   pay and a participant with nothing to do are deferred (their withdrawals are still
//!   paid, by the pool);
//! - the pool balances the batch: it receives what is left or pays what is missing, and a
//!   pool remainder below dust goes to the fee;
//! - the plan is checked against all of the above (conservation of every satoshi) before it
//!   is returned; a broken invariant is [`PlanError::Internal`], never a wrong transaction.
//!
//! The order of everything is a function of the input only: inputs by (holder, outpoint),
//! outputs withdrawals by id then vaults by holder then the pool. Same input, same PSBT bytes.

mod check;
mod plan;
mod size;

#[cfg(test)]
mod tests;

use bitcoin::{Amount, OutPoint, Psbt, ScriptBuf, SignedAmount, Transaction, Txid};

pub use plan::plan;
pub use size::{fee_for, output_vbytes, INPUT_VBYTES, TX_OVERHEAD_VBYTES};

/// A coin held by a vault (or the pool) that the batch may spend.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct VaultUtxo {
    pub outpoint: OutPoint,
    pub value: Amount,
    /// Must be P2WPKH: the input size (68 vB) is computed for it.
    pub script_pubkey: ScriptBuf,
}

/// A vault in the batch (an account whose vault holds its BTC). `holder` is the ledger account id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Participant {
    pub holder: u64,
    /// What the vault must gain (+) or give (−) on chain, already net of its own withdrawals.
    pub target: SignedAmount,
    pub utxos: Vec<VaultUtxo>,
    pub receive_script: ScriptBuf,
}

/// An external payment the batch must make. `holder` is the participant (or the pool) that
/// asked for it (it pays its vbytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Withdrawal {
    pub id: u64,
    pub holder: u64,
    pub script_pubkey: ScriptBuf,
    pub amount: Amount,
}

/// The provider's pool: balances the batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool {
    pub holder: u64,
    pub utxos: Vec<VaultUtxo>,
    pub receive_script: ScriptBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanParams {
    /// At least 1000 (1 sat/vB).
    pub fee_rate_sat_per_kvb: u64,
    /// No output below this is ever created (e.g. 546 sat). At least 1 sat.
    pub dust: Amount,
}

/// One input of the batch and whose coin it spends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedInput {
    pub holder: u64,
    pub utxo: VaultUtxo,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OutputKind {
    /// To the vault (or the pool) of `holder`.
    Vault { holder: u64 },
    /// Pays the withdrawal with this id.
    Withdrawal { id: u64 },
}

/// One output of the batch and what it is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedOutput {
    pub kind: OutputKind,
    pub script_pubkey: ScriptBuf,
    pub amount: Amount,
}

/// What one holder's vault does in the batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Leg {
    pub holder: u64,
    /// Vault outputs − inputs of this holder, on chain. What the ledger must record.
    pub delta: SignedAmount,
    /// This holder's share of the transaction fee.
    pub fee: Amount,
    /// The vbytes charged to this holder.
    pub vbytes: u64,
}

/// Why a participant was left out of the batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeferReason {
    /// Target zero and no withdrawal of its own.
    NothingToDo,
    /// A receiver whose `target − fee` would be below dust.
    BelowDust { net: SignedAmount },
    /// A payer whose coins cannot cover what it owes plus its fee (`needed` is that sum
    /// with all its coins spent).
    InsufficientFunds { needed: Amount, available: Amount },
}

/// A participant left out of the batch; its target stays in the ledger for a later batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deferred {
    pub holder: u64,
    pub target: SignedAmount,
    pub reason: DeferReason,
}

/// A planned, unsigned settlement batch.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchPlan {
    /// Unsigned; every input has `witness_utxo`; version 2, locktime 0, every sequence
    /// 0xfffffffd (RBF).
    pub psbt: Psbt,
    /// Same order as the transaction's inputs.
    pub inputs: Vec<PlannedInput>,
    /// Same order as the transaction's outputs.
    pub outputs: Vec<PlannedOutput>,
    /// Participants taking part by holder, then the pool's leg (always last).
    pub legs: Vec<Leg>,
    /// By holder.
    pub deferred: Vec<Deferred>,
    pub vbytes: u64,
    pub fee: Amount,
}

impl BatchPlan {
    /// The leg of `holder` (the pool's included), if it takes part.
    pub fn leg(&self, holder: u64) -> Option<&Leg> {
        self.legs.iter().find(|l| l.holder == holder)
    }

    /// The pool's leg (always the last one).
    pub fn pool_leg(&self) -> Option<&Leg> {
        self.legs.last()
    }

    pub fn unsigned_tx(&self) -> &Transaction {
        &self.psbt.unsigned_tx
    }

    /// The batch's txid (segwit: signatures do not change it).
    pub fn txid(&self) -> Txid {
        self.psbt.unsigned_tx.compute_txid()
    }
}

/// Why no plan could be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// The request itself is wrong (duplicates, unknown holder, amounts out of range...).
    #[error("invalid batch request: {0}")]
    Invalid(String),
    /// The pool's coins cannot cover what the batch needs from it (its fee included).
    #[error("the pool cannot fund the batch: it needs {needed}, it has {available}")]
    PoolShort { needed: Amount, available: Amount },
    /// The planner built something that breaks conservation: a bug, never returned as a plan.
    #[error("internal: planned batch breaks an invariant: {0}")]
    Internal(String),
}
