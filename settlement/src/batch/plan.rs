//! The planner proper: validation of the request, each participant's coin selection and
//! fee, the pool's balancing leg, and assembly of the PSBT in canonical order.
//!
//! Amounts are handled as satoshis in `i64` with checked arithmetic: validation bounds
//! every amount by 21e6 BTC, so an overflow can only be a bug and is reported, never wrapped.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use bitcoin::{
    absolute, transaction, Amount, OutPoint, Psbt, ScriptBuf, Sequence, SignedAmount, Transaction, TxIn, TxOut, Witness,
};

use super::check::check;
use super::size::{fee_for, output_vbytes, overhead_vbytes, INPUT_VBYTES};
use super::{
    BatchPlan, DeferReason, Deferred, Leg, OutputKind, Participant, PlanError, PlanParams, PlannedInput, PlannedOutput,
    Pool, VaultUtxo, Withdrawal,
};

const MAX_MONEY: i64 = 21_000_000 * 100_000_000;

/// Plans one settlement batch. `Ok(None)` when there is nothing to do: no participant moves
/// and no withdrawal is asked for.
pub fn plan(
    participants: &[Participant],
    withdrawals: &[Withdrawal],
    pool: &Pool,
    params: &PlanParams,
) -> Result<Option<BatchPlan>, PlanError> {
    validate(participants, withdrawals, pool, params)?;
    let ctx = Ctx { rate: params.fee_rate_sat_per_kvb, dust: sat(params.dust)? };

    let mut withdrawal_vbytes: BTreeMap<u64, u64> = BTreeMap::new();
    for w in withdrawals {
        let vb = withdrawal_vbytes.entry(w.holder).or_insert(0);
        *vb = vb.checked_add(output_vbytes(&w.script_pubkey)).ok_or_else(|| overflow("withdrawal vbytes"))?;
    }

    let mut sorted: Vec<&Participant> = participants.iter().collect();
    sorted.sort_by_key(|p| p.holder);
    let mut selected: Vec<Selection> = Vec::new();
    let mut deferred: Vec<Deferred> = Vec::new();
    // Withdrawal outputs of the pool and of deferred participants are the pool's vbytes.
    let mut pool_withdrawal_vbytes = withdrawal_vbytes.get(&pool.holder).copied().unwrap_or(0);
    for p in sorted {
        let own_vbytes = withdrawal_vbytes.get(&p.holder).copied();
        match select_participant(p, own_vbytes, &ctx)? {
            Ok(selection) => selected.push(selection),
            Err(reason) => {
                deferred.push(Deferred { holder: p.holder, target: p.target, reason });
                pool_withdrawal_vbytes = pool_withdrawal_vbytes
                    .checked_add(own_vbytes.unwrap_or(0))
                    .ok_or_else(|| overflow("pool vbytes"))?;
            }
        }
    }
    if selected.is_empty() && withdrawals.is_empty() {
        return Ok(None);
    }

    let pool_selection = select_pool(pool, &selected, withdrawals, pool_withdrawal_vbytes, &ctx)?;
    selected.push(pool_selection);
    let batch = assemble(selected, deferred, withdrawals, pool)?;
    check(&batch, participants, withdrawals, pool, params)?;
    Ok(Some(batch))
}

struct Ctx {
    rate: u64,
    dust: i64,
}

impl Ctx {
    fn fee(&self, vbytes: u64) -> Result<i64, PlanError> {
        let fee = fee_for(vbytes, self.rate)
            .ok_or_else(|| PlanError::Invalid(format!("fee of {vbytes} vB at {} sat/kvB overflows", self.rate)))?;
        sat(fee)
    }
}

/// What one holder (a participant or the pool) puts into the transaction.
struct Selection {
    holder: u64,
    inputs: Vec<VaultUtxo>,
    /// The vault output back to `receive_script`, if any.
    output: Option<(ScriptBuf, Amount)>,
    delta: i64,
    fee: i64,
    vbytes: u64,
}

/// The participant's inputs and output, or why it is deferred. `withdrawal_vbytes` is
/// `None` when it asked for no withdrawal.
fn select_participant(
    p: &Participant,
    withdrawal_vbytes: Option<u64>,
    ctx: &Ctx,
) -> Result<Result<Selection, DeferReason>, PlanError> {
    let target = p.target.to_sat();
    let wvb = withdrawal_vbytes.unwrap_or(0);
    let receive_vb = output_vbytes(&p.receive_script);
    if target == 0 && withdrawal_vbytes.is_none() {
        return Ok(Err(DeferReason::NothingToDo));
    }
    if target > 0 {
        let vbytes = add_vb(wvb, receive_vb)?;
        let fee = ctx.fee(vbytes)?;
        let net = checked_sub(target, fee)?;
        if net < ctx.dust {
            return Ok(Err(DeferReason::BelowDust { net: SignedAmount::from_sat(net) }));
        }
        return Ok(Ok(Selection {
            holder: p.holder,
            inputs: Vec::new(),
            output: Some((p.receive_script.clone(), Amount::from_sat(net as u64))),
            delta: net,
            fee,
            vbytes,
        }));
    }
    let coins = largest_first(&p.utxos);
    match select_coins(&coins, target, wvb, receive_vb, ctx)? {
        Some(pick) => Ok(Ok(pick.into_selection(p.holder, &coins, &p.receive_script))),
        None => {
            let all = add_vb(wvb, inputs_vb(coins.len())?)?;
            let available = sum_values(&coins)?;
            let needed = checked_sub(ctx.fee(all)?, target)?;
            Ok(Err(DeferReason::InsufficientFunds {
                needed: Amount::from_sat(needed as u64),
                available: Amount::from_sat(available as u64),
            }))
        }
    }
}

/// The pool's leg: whatever balances the others' deltas, the withdrawals and all fees.
fn select_pool(
    pool: &Pool,
    others: &[Selection],
    withdrawals: &[Withdrawal],
    withdrawal_vbytes: u64,
    ctx: &Ctx,
) -> Result<Selection, PlanError> {
    let mut base: i64 = 0;
    let (mut other_inputs, mut other_outputs) = (0usize, withdrawals.len());
    for s in others {
        base = checked_sub(base, s.delta)?;
        base = checked_sub(base, s.fee)?;
        other_inputs += s.inputs.len();
        other_outputs += usize::from(s.output.is_some());
    }
    for w in withdrawals {
        base = checked_sub(base, sat(w.amount)?)?;
    }
    let coins = largest_first(&pool.utxos);
    // The overhead depends on the final counts, which depend on the pool's own choices.
    let fee_of = |extra_inputs: usize, with_output: bool, vb: u64| -> Result<i64, PlanError> {
        let overhead = overhead_vbytes(other_inputs + extra_inputs, other_outputs + usize::from(with_output));
        ctx.fee(add_vb(vb, overhead)?)
    };
    let receive_vb = output_vbytes(&pool.receive_script);
    for k in 0..=coins.len() {
        let sum = sum_values(&coins[..k])?;
        let vb_bare = add_vb(withdrawal_vbytes, inputs_vb(k)?)?;
        let overhead_bare = overhead_vbytes(other_inputs + k, other_outputs);
        let fee_bare = fee_of(k, false, vb_bare)?;
        let rest = checked_sub(checked_add(sum, base)?, fee_bare)?;
        if rest < 0 {
            continue;
        }
        let vb_out = add_vb(vb_bare, receive_vb)?;
        let fee_out = fee_of(k, true, vb_out)?;
        let out = checked_sub(checked_add(sum, base)?, fee_out)?;
        let inputs = coins[..k].to_vec();
        if rest > 0 && out >= ctx.dust {
            let overhead = overhead_vbytes(other_inputs + k, other_outputs + 1);
            return Ok(Selection {
                holder: pool.holder,
                inputs,
                output: Some((pool.receive_script.clone(), Amount::from_sat(out as u64))),
                delta: checked_sub(out, sum)?,
                fee: fee_out,
                vbytes: add_vb(vb_out, overhead)?,
            });
        }
        // No pool output (nothing left, or less than an output is worth): the remainder
        // is fee.
        return Ok(Selection {
            holder: pool.holder,
            inputs,
            output: None,
            delta: -sum,
            fee: checked_add(fee_bare, rest)?,
            vbytes: add_vb(vb_bare, overhead_bare)?,
        });
    }
    let all = add_vb(withdrawal_vbytes, inputs_vb(coins.len())?)?;
    let needed = checked_sub(fee_of(coins.len(), false, all)?, base)?;
    Err(PlanError::PoolShort {
        needed: Amount::from_sat(needed.max(0) as u64),
        available: Amount::from_sat(sum_values(&coins)? as u64),
    })
}

/// A payer's choice: the first `count` coins (largest first).
struct Pick {
    count: usize,
    change: Option<i64>,
    delta: i64,
    fee: i64,
    vbytes: u64,
}

impl Pick {
    fn into_selection(self, holder: u64, coins: &[VaultUtxo], receive_script: &ScriptBuf) -> Selection {
        Selection {
            holder,
            inputs: coins[..self.count].to_vec(),
            output: self.change.map(|c| (receive_script.clone(), Amount::from_sat(c as u64))),
            delta: self.delta,
            fee: self.fee,
            vbytes: self.vbytes,
        }
    }
}

/// The fewest largest coins that pay `-target` plus their own fee. Largest first gives the
/// largest sum for every count, and the fee depends on the count only, so the first count
/// that works is the smallest possible. `None` if all coins are not enough.
fn select_coins(
    coins: &[VaultUtxo],
    target: i64,
    withdrawal_vbytes: u64,
    receive_vbytes: u64,
    ctx: &Ctx,
) -> Result<Option<Pick>, PlanError> {
    for count in 0..=coins.len() {
        let sum = sum_values(&coins[..count])?;
        let vb_bare = add_vb(withdrawal_vbytes, inputs_vb(count)?)?;
        let fee_bare = ctx.fee(vb_bare)?;
        let rest = checked_sub(checked_add(sum, target)?, fee_bare)?;
        if rest < 0 {
            continue;
        }
        let vb_change = add_vb(vb_bare, receive_vbytes)?;
        let fee_change = ctx.fee(vb_change)?;
        let change = checked_sub(checked_add(sum, target)?, fee_change)?;
        if rest > 0 && change >= ctx.dust {
            return Ok(Some(Pick {
                count,
                change: Some(change),
                delta: checked_sub(target, fee_change)?,
                fee: fee_change,
                vbytes: vb_change,
            }));
        }
        // Exact, or change not worth an output: the participant gives all its inputs and
        // the pool receives the surplus (the ledger records this delta, so nothing is lost).
        return Ok(Some(Pick { count, change: None, delta: -sum, fee: fee_bare, vbytes: vb_bare }));
    }
    Ok(None)
}

/// Puts the selections into canonical order and builds the PSBT.
fn assemble(
    selections: Vec<Selection>,
    mut deferred: Vec<Deferred>,
    withdrawals: &[Withdrawal],
    pool: &Pool,
) -> Result<BatchPlan, PlanError> {
    let mut inputs: Vec<PlannedInput> = selections
        .iter()
        .flat_map(|s| s.inputs.iter().map(|u| PlannedInput { holder: s.holder, utxo: u.clone() }))
        .collect();
    inputs.sort_by_key(|a| (a.holder, a.utxo.outpoint));

    let mut sorted_withdrawals: Vec<&Withdrawal> = withdrawals.iter().collect();
    sorted_withdrawals.sort_by_key(|w| w.id);
    let mut outputs: Vec<PlannedOutput> = sorted_withdrawals
        .iter()
        .map(|w| PlannedOutput {
            kind: OutputKind::Withdrawal { id: w.id },
            script_pubkey: w.script_pubkey.clone(),
            amount: w.amount,
        })
        .collect();
    let vault_output = |s: &Selection| {
        s.output.as_ref().map(|(script, amount)| PlannedOutput {
            kind: OutputKind::Vault { holder: s.holder },
            script_pubkey: script.clone(),
            amount: *amount,
        })
    };
    // Participants are already by holder; the pool's selection is the last one.
    let (pool_selection, others) =
        selections.split_last().ok_or_else(|| PlanError::Internal("no pool selection".into()))?;
    if pool_selection.holder != pool.holder {
        return Err(PlanError::Internal("the last selection is not the pool's".into()));
    }
    outputs.extend(others.iter().filter_map(vault_output));
    outputs.extend(vault_output(pool_selection));

    let legs: Vec<Leg> = selections
        .iter()
        .map(|s| Leg {
            holder: s.holder,
            delta: SignedAmount::from_sat(s.delta),
            fee: Amount::from_sat(s.fee as u64),
            vbytes: s.vbytes,
        })
        .collect();
    let mut vbytes: u64 = 0;
    let mut fee = Amount::ZERO;
    for leg in &legs {
        vbytes = add_vb(vbytes, leg.vbytes)?;
        fee = fee.checked_add(leg.fee).ok_or_else(|| overflow("total fee"))?;
    }
    deferred.sort_by_key(|d| d.holder);

    let tx = Transaction {
        version: transaction::Version::TWO,
        lock_time: absolute::LockTime::ZERO,
        input: inputs
            .iter()
            .map(|i| TxIn {
                previous_output: i.utxo.outpoint,
                script_sig: ScriptBuf::new(),
                sequence: Sequence::ENABLE_RBF_NO_LOCKTIME,
                witness: Witness::new(),
            })
            .collect(),
        output: outputs.iter().map(|o| TxOut { value: o.amount, script_pubkey: o.script_pubkey.clone() }).collect(),
    };
    let mut psbt = Psbt::from_unsigned_tx(tx).map_err(|e| PlanError::Internal(format!("psbt: {e}")))?;
    for (psbt_input, planned) in psbt.inputs.iter_mut().zip(&inputs) {
        psbt_input.witness_utxo =
            Some(TxOut { value: planned.utxo.value, script_pubkey: planned.utxo.script_pubkey.clone() });
    }
    Ok(BatchPlan { psbt, inputs, outputs, legs, deferred, vbytes, fee })
}

fn validate(
    participants: &[Participant],
    withdrawals: &[Withdrawal],
    pool: &Pool,
    params: &PlanParams,
) -> Result<(), PlanError> {
    let invalid = |m: String| Err(PlanError::Invalid(m));
    if params.fee_rate_sat_per_kvb < 1000 {
        return invalid(format!(
            "fee rate {} sat/kvB is below the 1000 sat/kvB (1 sat/vB) minimum",
            params.fee_rate_sat_per_kvb
        ));
    }
    if params.dust == Amount::ZERO || sat(params.dust).is_err() {
        return invalid(format!("dust limit {} must be between 1 sat and 21e6 BTC", params.dust));
    }
    let mut holders = HashSet::new();
    let mut outpoints: HashSet<OutPoint> = HashSet::new();
    let mut coins_total: i64 = 0;
    let mut check_utxos = |holder: u64, utxos: &[VaultUtxo]| -> Result<(), PlanError> {
        for u in utxos {
            if !outpoints.insert(u.outpoint) {
                return invalid(format!("outpoint {} (holder {holder}) is listed twice", u.outpoint));
            }
            if !u.script_pubkey.is_p2wpkh() {
                return invalid(format!("coin {} of holder {holder} is not P2WPKH", u.outpoint));
            }
            let value = sat(u.value).map_err(|_| {
                PlanError::Invalid(format!("coin {} of holder {holder}: {} beyond 21e6 BTC", u.outpoint, u.value))
            })?;
            coins_total = coins_total.checked_add(value).filter(|t| *t <= MAX_MONEY).ok_or_else(|| {
                PlanError::Invalid(format!("coins total beyond 21e6 BTC (at {} of holder {holder})", u.outpoint))
            })?;
        }
        Ok(())
    };
    for p in participants {
        if !holders.insert(p.holder) {
            return invalid(format!("holder {} is listed twice", p.holder));
        }
        if p.target.to_sat().unsigned_abs() > MAX_MONEY as u64 {
            return invalid(format!("target {} of holder {} is beyond 21e6 BTC", p.target, p.holder));
        }
        check_utxos(p.holder, &p.utxos)?;
    }
    if !holders.insert(pool.holder) {
        return invalid(format!("pool holder {} is also a participant", pool.holder));
    }
    check_utxos(pool.holder, &pool.utxos)?;
    let mut ids = BTreeSet::new();
    let mut withdrawn: i64 = 0;
    for w in withdrawals {
        if !ids.insert(w.id) {
            return invalid(format!("withdrawal id {} is listed twice", w.id));
        }
        if !holders.contains(&w.holder) {
            return invalid(format!("withdrawal {}: holder {} is neither a participant nor the pool", w.id, w.holder));
        }
        if w.amount < params.dust {
            return invalid(format!("withdrawal {}: amount {} is below dust {}", w.id, w.amount, params.dust));
        }
        let amount = sat(w.amount)
            .map_err(|_| PlanError::Invalid(format!("withdrawal {}: amount {} beyond 21e6 BTC", w.id, w.amount)))?;
        withdrawn = withdrawn
            .checked_add(amount)
            .filter(|t| *t <= MAX_MONEY)
            .ok_or_else(|| PlanError::Invalid(format!("withdrawals total beyond 21e6 BTC (at id {})", w.id)))?;
    }
    Ok(())
}

fn largest_first(utxos: &[VaultUtxo]) -> Vec<VaultUtxo> {
    let mut coins = utxos.to_vec();
    coins.sort_by(|a, b| b.value.cmp(&a.value).then(a.outpoint.cmp(&b.outpoint)));
    coins
}

/// Satoshis of an amount validated to be at most 21e6 BTC.
fn sat(amount: Amount) -> Result<i64, PlanError> {
    i64::try_from(amount.to_sat())
        .ok()
        .filter(|s| *s <= MAX_MONEY)
        .ok_or_else(|| PlanError::Invalid(format!("{amount} is beyond 21e6 BTC")))
}

fn sum_values(coins: &[VaultUtxo]) -> Result<i64, PlanError> {
    coins.iter().try_fold(0i64, |acc, c| checked_add(acc, sat(c.value)?))
}

fn inputs_vb(count: usize) -> Result<u64, PlanError> {
    (count as u64).checked_mul(INPUT_VBYTES).ok_or_else(|| overflow("input vbytes"))
}

fn add_vb(a: u64, b: u64) -> Result<u64, PlanError> {
    a.checked_add(b).ok_or_else(|| overflow("vbytes"))
}

fn checked_add(a: i64, b: i64) -> Result<i64, PlanError> {
    a.checked_add(b).ok_or_else(|| overflow("amount"))
}

fn checked_sub(a: i64, b: i64) -> Result<i64, PlanError> {
    a.checked_sub(b).ok_or_else(|| overflow("amount"))
}

fn overflow(what: &str) -> PlanError {
    PlanError::Invalid(format!("{what} overflows"))
}
