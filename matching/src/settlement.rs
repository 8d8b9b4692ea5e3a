//! What the ledger knows of the chain: each holder's on-chain holdings ("settled") and the
//! settlement batches in flight.
//!
//! A *holder* is the account whose vault holds coins on chain: a user's own vault, or the
//! settlement pool for every account without one (partners, the fee account). Chain deposits
//! raise the holder's settled amount; a confirmed batch moves each holder's settled amount by
//! its leg's delta. So for every chain asset, at all times,
//!
//! `Σ balances (available + locked) == Σ settled`
//!
//! (trades move balances between accounts; a confirmed batch lowers both sides by the fees and
//! withdrawals it paid). What one account owns but its vault does not hold yet is its
//! *exposure*: the next batch moves it on chain.
//!
//! A batch is booked before it is signed (its fee shares are locked and its withdrawals marked
//! as being paid), then either confirmed (fees and withdrawals leave the ledger, deltas land in
//! `settled`) or cancelled (locks released). An RBF bump adds fee paid by one holder; the
//! confirmation says how many bumps the confirmed transaction carried, and the rest is refunded.

use crate::engine::Engine;
use crate::event::{Event, RejectReason};
use crate::types::*;
use serde::{Deserialize, Serialize};

/// One holder's part in a batch: how its vault's on-chain holdings change (`delta`, signed
/// satoshis: outputs to it minus its inputs) and its share of the fee.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettlementLeg {
    pub holder: AccountId,
    pub delta: i64,
    pub fee: Amount,
}

/// An extra fee added to a batch by replacing its transaction (RBF), paid by `payer`, whose
/// vault's change output shrinks by as much.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeeBump {
    pub payer: AccountId,
    pub extra: Amount,
}

/// A booked batch, until confirmed or cancelled.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenBatch {
    pub asset: AssetId,
    pub legs: Vec<SettlementLeg>,
    pub withdrawals: Vec<WithdrawalId>,
    pub bumps: Vec<FeeBump>,
}

fn amount_i128(a: Amount) -> i128 {
    a.0 as i128
}

impl Engine {
    pub(crate) fn credit_chain_deposit(
        &mut self,
        account: AccountId,
        holder: AccountId,
        asset: AssetId,
        amount: Amount,
        reference: &str,
        out: &mut Vec<Event>,
    ) -> Result<(), RejectReason> {
        if !self.ledger.exists(holder) {
            return Err(RejectReason::UnknownAccount);
        }
        self.credit_deposit_as(account, Some(holder), asset, amount, reference, out)?;
        *self.ledger.settled.entry((holder, asset)).or_default() += amount_i128(amount);
        Ok(())
    }

    pub(crate) fn book_settlement(
        &mut self,
        batch: BatchId,
        asset: AssetId,
        legs: &[SettlementLeg],
        withdrawals: &[WithdrawalId],
        out: &mut Vec<Event>,
    ) -> Result<(), RejectReason> {
        if self.config.asset(asset).is_none() {
            return Err(RejectReason::UnknownAsset);
        }
        if batch.0 <= self.ledger.last_batch {
            return Err(RejectReason::BatchIdReused);
        }
        if legs.is_empty() {
            return Err(RejectReason::UnbalancedBatch);
        }
        let mut balance: i128 = 0;
        for (i, leg) in legs.iter().enumerate() {
            if !self.ledger.exists(leg.holder) {
                return Err(RejectReason::UnknownAccount);
            }
            if legs[..i].iter().any(|l| l.holder == leg.holder) {
                return Err(RejectReason::UnbalancedBatch);
            }
            if self.ledger.available(leg.holder, asset) < leg.fee {
                return Err(RejectReason::InsufficientBalance);
            }
            // After this and every batch in flight, the vault cannot hold less than nothing.
            let in_flight: i128 = self.in_flight_delta(leg.holder, asset);
            if self.settled(leg.holder, asset) + in_flight + (leg.delta as i128) < 0 {
                return Err(RejectReason::VaultOverdrawn);
            }
            balance += leg.delta as i128 + amount_i128(leg.fee);
        }
        for (i, id) in withdrawals.iter().enumerate() {
            let w = self.ledger.withdrawals.get(id).ok_or(RejectReason::UnknownWithdrawal)?;
            if w.batch.is_some() || withdrawals[..i].contains(id) {
                return Err(RejectReason::WithdrawalInBatch);
            }
            if w.asset != asset {
                return Err(RejectReason::UnknownAsset);
            }
            balance += amount_i128(w.amount);
        }
        // What the vaults give up is exactly what the withdrawals and the fee take.
        if balance != 0 {
            return Err(RejectReason::UnbalancedBatch);
        }

        for leg in legs {
            if !leg.fee.is_zero() {
                self.ledger.lock(leg.holder, asset, leg.fee);
            }
        }
        for id in withdrawals {
            if let Some(w) = self.ledger.withdrawals.get_mut(id) {
                w.batch = Some(batch);
            }
        }
        self.ledger.last_batch = batch.0;
        let open = OpenBatch { asset, legs: legs.to_vec(), withdrawals: withdrawals.to_vec(), bumps: Vec::new() };
        self.ledger.batches.insert(batch, open);
        out.push(Event::SettlementBooked { batch, asset, legs: legs.to_vec(), withdrawals: withdrawals.to_vec() });
        Ok(())
    }

    pub(crate) fn bump_settlement(
        &mut self,
        batch: BatchId,
        payer: AccountId,
        extra: Amount,
        out: &mut Vec<Event>,
    ) -> Result<(), RejectReason> {
        let open = self.ledger.batches.get(&batch).ok_or(RejectReason::UnknownBatch)?;
        let asset = open.asset;
        if extra.is_zero() {
            return Err(RejectReason::ZeroAmount);
        }
        // The payer's change output pays the bump, so it must be part of the batch.
        if !open.legs.iter().any(|l| l.holder == payer) {
            return Err(RejectReason::UnbalancedBatch);
        }
        if self.ledger.available(payer, asset) < extra {
            return Err(RejectReason::InsufficientBalance);
        }
        if self.settled(payer, asset) + self.in_flight_delta(payer, asset) - amount_i128(extra) < 0 {
            return Err(RejectReason::VaultOverdrawn);
        }
        self.ledger.lock(payer, asset, extra);
        if let Some(open) = self.ledger.batches.get_mut(&batch) {
            open.bumps.push(FeeBump { payer, extra });
        }
        out.push(Event::SettlementBumped { batch, payer, extra });
        Ok(())
    }

    /// `bumps`: how many of the batch's bumps the confirmed transaction carries (the chain may
    /// confirm an earlier version than the last one sent).
    pub(crate) fn confirm_settlement(&mut self, batch: BatchId, bumps: u32, out: &mut Vec<Event>) -> Result<(), RejectReason> {
        let open = self.ledger.batches.get(&batch).ok_or(RejectReason::UnknownBatch)?;
        if bumps as usize > open.bumps.len() {
            return Err(RejectReason::UnknownBump);
        }
        let open = self.ledger.batches.remove(&batch).expect("checked above");
        let asset = open.asset;
        let totals = asset.0 as usize;
        for leg in &open.legs {
            if !leg.fee.is_zero() {
                self.ledger.spend_locked(leg.holder, asset, leg.fee);
                self.ledger.totals[totals].withdrawn += leg.fee.0 as u128;
            }
            *self.ledger.settled.entry((leg.holder, asset)).or_default() += leg.delta as i128;
        }
        for (i, bump) in open.bumps.iter().enumerate() {
            if i < bumps as usize {
                self.ledger.spend_locked(bump.payer, asset, bump.extra);
                self.ledger.totals[totals].withdrawn += bump.extra.0 as u128;
                *self.ledger.settled.entry((bump.payer, asset)).or_default() -= amount_i128(bump.extra);
            } else {
                self.ledger.unlock(bump.payer, asset, bump.extra);
            }
        }
        let mut fee = open.legs.iter().map(|l| l.fee.0).sum::<u64>();
        fee += open.bumps.iter().take(bumps as usize).map(|b| b.extra.0).sum::<u64>();
        for id in &open.withdrawals {
            // Booking marked them; nothing else removes a withdrawal that is in a batch.
            let w = self.ledger.withdrawals.remove(id).expect("a booked withdrawal stays pending");
            self.ledger.spend_locked(w.account, w.asset, w.amount);
            self.ledger.totals[totals].withdrawn += w.amount.0 as u128;
            out.push(Event::WithdrawalCompleted { withdrawal: *id, account: w.account, asset: w.asset, amount: w.amount });
        }
        out.push(Event::SettlementConfirmed { batch, asset, bumps, fee: Amount(fee) });
        Ok(())
    }

    pub(crate) fn cancel_settlement(&mut self, batch: BatchId, out: &mut Vec<Event>) -> Result<(), RejectReason> {
        let open = self.ledger.batches.remove(&batch).ok_or(RejectReason::UnknownBatch)?;
        for leg in &open.legs {
            self.ledger.unlock(leg.holder, open.asset, leg.fee);
        }
        for bump in &open.bumps {
            self.ledger.unlock(bump.payer, open.asset, bump.extra);
        }
        for id in &open.withdrawals {
            if let Some(w) = self.ledger.withdrawals.get_mut(id) {
                w.batch = None;
            }
        }
        out.push(Event::SettlementCancelled { batch });
        Ok(())
    }

    /// What the ledger knows `holder`'s vault holds on chain in `asset` (confirmed batches and
    /// chain deposits). Negative only if a reorg took back a deposit a batch had already spent.
    pub fn settled(&self, holder: AccountId, asset: AssetId) -> i128 {
        self.ledger.settled.get(&(holder, asset)).copied().unwrap_or(0)
    }

    /// Every holder's settled amount in `asset`, by holder.
    pub fn settled_all(&self, asset: AssetId) -> Vec<(AccountId, i128)> {
        self.ledger.settled.iter().filter(|((_, a), _)| *a == asset).map(|((h, _), v)| (*h, *v)).collect()
    }

    /// The deltas of `holder` in batches booked but not yet confirmed (with every bump it pays).
    pub fn in_flight_delta(&self, holder: AccountId, asset: AssetId) -> i128 {
        self.ledger
            .batches
            .values()
            .filter(|b| b.asset == asset)
            .map(|b| {
                let legs: i128 = b.legs.iter().filter(|l| l.holder == holder).map(|l| l.delta as i128).sum();
                let bumps: i128 = b.bumps.iter().filter(|x| x.payer == holder).map(|x| amount_i128(x.extra)).sum();
                legs - bumps
            })
            .sum()
    }

    /// What the next batch must move into (+) or out of (−) `holder`'s own vault, net of its
    /// withdrawals, once every batch in flight has confirmed: its balance, minus its withdrawals
    /// and booked fees (they leave the ledger), minus what its vault holds or will hold.
    /// Meaningful for accounts that hold their own coins; the pool's is what balances a batch.
    pub fn settlement_target(&self, holder: AccountId, asset: AssetId) -> Option<i128> {
        let balance = self.balance(holder, asset)?;
        let withdrawals: i128 = self
            .ledger
            .withdrawals
            .values()
            .filter(|w| w.account == holder && w.asset == asset)
            .map(|w| amount_i128(w.amount))
            .sum();
        let fees: i128 = self
            .ledger
            .batches
            .values()
            .filter(|b| b.asset == asset)
            .map(|b| {
                let legs: i128 = b.legs.iter().filter(|l| l.holder == holder).map(|l| amount_i128(l.fee)).sum();
                let bumps: i128 = b.bumps.iter().filter(|x| x.payer == holder).map(|x| amount_i128(x.extra)).sum();
                legs + bumps
            })
            .sum();
        let owned = balance.total() as i128 - withdrawals - fees;
        Some(owned - self.settled(holder, asset) - self.in_flight_delta(holder, asset))
    }

    /// Booked batches not yet confirmed or cancelled.
    pub fn open_batches(&self) -> Vec<(BatchId, OpenBatch)> {
        self.ledger.batches.iter().map(|(k, v)| (*k, v.clone())).collect()
    }

    /// The highest batch id ever booked (0 before the first).
    pub fn last_batch(&self) -> BatchId {
        BatchId(self.ledger.last_batch)
    }
}
