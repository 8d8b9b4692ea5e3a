//! Accounts and their balances, deposits and pending withdrawals.
//!
//! Every balance is `available + locked` per asset. Money only moves through the methods here,
//! each of which records the touched `(account, asset)` so the engine can report the new balance.

use crate::types::*;
use rustc_hash::{FxHashMap, FxHashSet};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Balance {
    pub available: Amount,
    /// Held for open orders and pending withdrawals.
    pub locked: Amount,
}

impl Balance {
    pub fn total(&self) -> u128 {
        self.available.0 as u128 + self.locked.0 as u128
    }
}

/// Per asset: what entered and what left the exchange. The sum of all balances must always equal
/// `deposited - withdrawn`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssetTotals {
    pub deposited: u128,
    pub withdrawn: u128,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingWithdrawal {
    pub account: AccountId,
    pub asset: AssetId,
    pub amount: Amount,
    pub destination: String,
    /// The settlement batch paying it, once one is booked: it can then be neither failed nor
    /// completed by hand, nor paid by another batch.
    pub batch: Option<BatchId>,
}

/// A credited deposit, kept so a reorg can take it back exactly.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DepositRecord {
    pub account: AccountId,
    pub amount: Amount,
    /// Taken back (the chain lost it). A reversed deposit may be credited again if it returns.
    pub reversed: bool,
    /// For a chain deposit: the account whose vault holds the coins (the depositor's own vault,
    /// or the settlement pool for an account without one).
    pub holder: Option<AccountId>,
}

#[derive(Clone, Debug, Default)]
pub(crate) struct Ledger {
    pub(crate) n_assets: usize,
    pub(crate) kinds: Vec<AccountKind>,
    /// Flat: account `a` (1-based) and asset `s` live at `(a - 1) * n_assets + s`.
    pub(crate) balances: Vec<Balance>,
    pub(crate) totals: Vec<AssetTotals>,
    /// Every deposit by `(asset, reference)`: a reference is credited once (unless reversed).
    pub(crate) deposits: FxHashMap<(AssetId, String), DepositRecord>,
    /// Accounts that may not trade or withdraw (a reversed deposit was already spent, or an
    /// operator froze them).
    pub(crate) frozen: FxHashSet<AccountId>,
    pub(crate) withdrawals: BTreeMap<WithdrawalId, PendingWithdrawal>,
    pub(crate) next_withdrawal: u64,
    /// Every client withdrawal id ever used, with the withdrawal it made.
    pub(crate) client_withdrawals: FxHashMap<(AccountId, ClientWithdrawalId), WithdrawalId>,
    /// On-chain holdings per holder and asset, as the ledger knows them: chain deposits in,
    /// confirmed settlement batches' deltas. See [`crate::settlement`].
    pub(crate) settled: BTreeMap<(AccountId, AssetId), i128>,
    /// Booked settlement batches not yet confirmed or cancelled.
    pub(crate) batches: BTreeMap<BatchId, crate::settlement::OpenBatch>,
    /// The highest batch id ever booked: ids only go up.
    pub(crate) last_batch: u64,
    /// Scratch: balances changed by the command being applied.
    pub(crate) touched: Vec<(AccountId, AssetId)>,
}

impl Ledger {
    pub(crate) fn new(n_assets: usize) -> Ledger {
        Ledger {
            n_assets,
            totals: vec![AssetTotals::default(); n_assets],
            next_withdrawal: 1,
            ..Ledger::default()
        }
    }

    pub(crate) fn open(&mut self, kind: AccountKind) -> AccountId {
        self.kinds.push(kind);
        self.balances.extend(std::iter::repeat_n(Balance::default(), self.n_assets));
        AccountId(self.kinds.len() as u64)
    }

    pub(crate) fn kind(&self, account: AccountId) -> Option<AccountKind> {
        let i = (account.0 as usize).checked_sub(1)?;
        self.kinds.get(i).copied()
    }

    pub(crate) fn exists(&self, account: AccountId) -> bool {
        self.kind(account).is_some()
    }

    #[inline]
    fn idx(&self, account: AccountId, asset: AssetId) -> usize {
        (account.0 as usize - 1) * self.n_assets + asset.0 as usize
    }

    #[inline]
    pub(crate) fn balance(&self, account: AccountId, asset: AssetId) -> Balance {
        self.balances[self.idx(account, asset)]
    }

    #[inline]
    fn slot(&mut self, account: AccountId, asset: AssetId) -> &mut Balance {
        self.touched.push((account, asset));
        let i = self.idx(account, asset);
        &mut self.balances[i]
    }

    // The methods below are only called after the engine checked that they cannot fail; an
    // underflow here is an engine bug, and stopping beats moving money wrongly.

    pub(crate) fn credit(&mut self, account: AccountId, asset: AssetId, amount: Amount) {
        let b = self.slot(account, asset);
        b.available = b.available.checked_add(amount).expect("balance overflow: supply cap broken");
    }

    pub(crate) fn lock(&mut self, account: AccountId, asset: AssetId, amount: Amount) {
        let b = self.slot(account, asset);
        b.available = b.available.checked_sub(amount).expect("lock more than available");
        b.locked = b.locked.checked_add(amount).expect("locked overflow");
    }

    pub(crate) fn unlock(&mut self, account: AccountId, asset: AssetId, amount: Amount) {
        if amount.is_zero() {
            return;
        }
        let b = self.slot(account, asset);
        b.locked = b.locked.checked_sub(amount).expect("unlock more than locked");
        b.available = b.available.checked_add(amount).expect("available overflow");
    }

    /// Takes `amount` out of the available balance (a reversed deposit).
    pub(crate) fn debit(&mut self, account: AccountId, asset: AssetId, amount: Amount) {
        let b = self.slot(account, asset);
        b.available = b.available.checked_sub(amount).expect("debit more than available");
    }

    /// Takes `amount` out of the locked balance (paid away in a trade or a withdrawal).
    pub(crate) fn spend_locked(&mut self, account: AccountId, asset: AssetId, amount: Amount) {
        let b = self.slot(account, asset);
        b.locked = b.locked.checked_sub(amount).expect("spend more than locked");
    }

    pub(crate) fn available(&self, account: AccountId, asset: AssetId) -> Amount {
        self.balance(account, asset).available
    }

    /// Held on the exchange right now, per asset.
    pub(crate) fn outstanding(&self, asset: AssetId) -> u128 {
        let t = self.totals[asset.0 as usize];
        t.deposited - t.withdrawn
    }
}
