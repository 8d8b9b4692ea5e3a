//! The planner's last step: re-derives every conservation rule from the finished plan and
//! the request, independently of how the plan was built, so a planning bug becomes
//! [`PlanError::Internal`] instead of a transaction that loses or invents money.
//!
//! Sums are done in `i128`: a few thousand amounts of at most 21e6 BTC cannot overflow it.

use std::collections::{BTreeMap, HashMap, HashSet};

use bitcoin::{absolute, transaction, OutPoint, Sequence, TxOut};

use super::size::{fee_for, output_vbytes, overhead_vbytes, INPUT_VBYTES};
use super::{BatchPlan, OutputKind, Participant, PlanError, PlanParams, Pool, VaultUtxo, Withdrawal};

const MAX_MONEY: i128 = 21_000_000 * 100_000_000;

/// Checks `plan` against the request it was made for (see the module docs of `batch` for
/// the rules).
pub(crate) fn check(
    plan: &BatchPlan,
    participants: &[Participant],
    withdrawals: &[Withdrawal],
    pool: &Pool,
    params: &PlanParams,
) -> Result<(), PlanError> {
    let fail = |m: String| Err(PlanError::Internal(m));
    let rate = params.fee_rate_sat_per_kvb;
    let fee = |vb: u64| -> Result<i128, PlanError> {
        fee_for(vb, rate).map(|a| i128::from(a.to_sat())).ok_or_else(|| PlanError::Internal("fee overflow".into()))
    };
    let dust = i128::from(params.dust.to_sat());
    let tx = &plan.psbt.unsigned_tx;

    // The transaction is exactly the planned inputs and outputs, RBF, witness_utxo set.
    if tx.version != transaction::Version::TWO || tx.lock_time != absolute::LockTime::ZERO {
        return fail("transaction must be version 2 with locktime 0".into());
    }
    if tx.input.len() != plan.inputs.len() || plan.psbt.inputs.len() != plan.inputs.len() {
        return fail("input counts differ between tx, psbt and plan".into());
    }
    for ((txin, planned), psbt_in) in tx.input.iter().zip(&plan.inputs).zip(&plan.psbt.inputs) {
        let spent = TxOut { value: planned.utxo.value, script_pubkey: planned.utxo.script_pubkey.clone() };
        if txin.previous_output != planned.utxo.outpoint
            || txin.sequence != Sequence::ENABLE_RBF_NO_LOCKTIME
            || !txin.script_sig.is_empty()
            || !txin.witness.is_empty()
            || psbt_in.witness_utxo.as_ref() != Some(&spent)
        {
            return fail(format!("input {} does not match the plan", planned.utxo.outpoint));
        }
    }
    if tx.output.len() != plan.outputs.len() {
        return fail("output counts differ between tx and plan".into());
    }
    for (txout, planned) in tx.output.iter().zip(&plan.outputs) {
        if txout.value != planned.amount || txout.script_pubkey != planned.script_pubkey {
            return fail(format!("output {:?} does not match the plan", planned.kind));
        }
        if planned.amount < params.dust {
            return fail(format!("output {:?} of {} is below dust", planned.kind, planned.amount));
        }
    }

    // Every holder in at most one of legs/deferred, every participant in one, the pool last.
    let by_holder: HashMap<u64, &Participant> = participants.iter().map(|p| (p.holder, p)).collect();
    let mut seen = HashSet::new();
    for holder in plan.legs.iter().map(|l| l.holder).chain(plan.deferred.iter().map(|d| d.holder)) {
        if !seen.insert(holder) {
            return fail(format!("holder {holder} appears twice among legs and deferred"));
        }
        if holder != pool.holder && !by_holder.contains_key(&holder) {
            return fail(format!("holder {holder} is not in the request"));
        }
    }
    if seen.len() != participants.len() + 1 || plan.legs.last().map(|l| l.holder) != Some(pool.holder) {
        return fail("every participant must be a leg or deferred, and the pool's leg last".into());
    }

    // Inputs: each from its holder's own coins, once.
    let mut spent_by: BTreeMap<u64, i128> = BTreeMap::new();
    let mut input_count: BTreeMap<u64, u64> = BTreeMap::new();
    let mut used: HashSet<OutPoint> = HashSet::new();
    for input in &plan.inputs {
        let own: &[VaultUtxo] = if input.holder == pool.holder {
            &pool.utxos
        } else {
            match by_holder.get(&input.holder) {
                Some(p) => &p.utxos,
                None => return fail(format!("input {} has unknown holder {}", input.utxo.outpoint, input.holder)),
            }
        };
        if !own.contains(&input.utxo) || !used.insert(input.utxo.outpoint) {
            return fail(format!(
                "input {} is not a coin of holder {} or is spent twice",
                input.utxo.outpoint, input.holder
            ));
        }
        *spent_by.entry(input.holder).or_default() += i128::from(input.utxo.value.to_sat());
        *input_count.entry(input.holder).or_default() += 1;
    }

    // Outputs: each withdrawal exactly once with its amount; vault outputs to receive scripts.
    let mut paid: HashMap<u64, usize> = HashMap::new();
    let mut received_by: BTreeMap<u64, i128> = BTreeMap::new();
    let mut vault_outputs: BTreeMap<u64, u64> = BTreeMap::new();
    let mut total_out: i128 = 0;
    for output in &plan.outputs {
        total_out += i128::from(output.amount.to_sat());
        match output.kind {
            OutputKind::Withdrawal { id } => {
                let Some(w) = withdrawals.iter().find(|w| w.id == id) else {
                    return fail(format!("output pays unknown withdrawal {id}"));
                };
                if w.amount != output.amount || w.script_pubkey != output.script_pubkey {
                    return fail(format!("withdrawal {id} is paid a wrong amount or script"));
                }
                *paid.entry(id).or_default() += 1;
            }
            OutputKind::Vault { holder } => {
                let receive = if holder == pool.holder {
                    &pool.receive_script
                } else {
                    match by_holder.get(&holder) {
                        Some(p) => &p.receive_script,
                        None => return fail(format!("vault output to unknown holder {holder}")),
                    }
                };
                if *receive != output.script_pubkey {
                    return fail(format!("vault output of holder {holder} is not to its receive script"));
                }
                *received_by.entry(holder).or_default() += i128::from(output.amount.to_sat());
                *vault_outputs.entry(holder).or_default() += 1;
            }
        }
    }
    if total_out > MAX_MONEY {
        return fail("outputs total beyond 21e6 BTC".into());
    }
    if withdrawals.iter().any(|w| paid.get(&w.id) != Some(&1)) || paid.len() != withdrawals.len() {
        return fail("every withdrawal must be paid by exactly one output".into());
    }

    // Money: inputs − outputs = fee = Σ leg fees; Σ deltas + withdrawals + fee = 0.
    let total_in: i128 = spent_by.values().sum();
    let leg_fees: i128 = plan.legs.iter().map(|l| i128::from(l.fee.to_sat())).sum();
    let plan_fee = i128::from(plan.fee.to_sat());
    if total_in - total_out != plan_fee || leg_fees != plan_fee {
        return fail(format!("inputs {total_in} − outputs {total_out} ≠ fee {plan_fee} (legs {leg_fees})"));
    }
    let deltas: i128 = plan.legs.iter().map(|l| i128::from(l.delta.to_sat())).sum();
    let withdrawn: i128 = withdrawals.iter().map(|w| i128::from(w.amount.to_sat())).sum();
    if deltas + withdrawn + plan_fee != 0 {
        return fail(format!("deltas {deltas} + withdrawals {withdrawn} + fee {plan_fee} ≠ 0"));
    }

    let with_leg: HashSet<u64> = plan.legs.iter().map(|l| l.holder).collect();
    if let Some(h) = spent_by.keys().chain(received_by.keys()).find(|h| !with_leg.contains(h)) {
        return fail(format!("holder {h} moves coins without a leg"));
    }

    // Per leg: on-chain delta, vbytes and fee share.
    let withdrawal_vb = |holder: u64| -> u64 {
        withdrawals.iter().filter(|w| w.holder == holder).map(|w| output_vbytes(&w.script_pubkey)).sum()
    };
    let mut total_vb: u64 = 0;
    for leg in &plan.legs {
        let holder = leg.holder;
        let delta = i128::from(leg.delta.to_sat());
        let spent = spent_by.get(&holder).copied().unwrap_or(0);
        let received = received_by.get(&holder).copied().unwrap_or(0);
        if received - spent != delta {
            return fail(format!("holder {holder}: outputs {received} − inputs {spent} ≠ delta {delta}"));
        }
        if vault_outputs.get(&holder).copied().unwrap_or(0) > 1 {
            return fail(format!("holder {holder} has more than one vault output"));
        }
        let receive_vb = if holder == pool.holder {
            output_vbytes(&pool.receive_script)
        } else {
            by_holder.get(&holder).map(|p| output_vbytes(&p.receive_script)).unwrap_or(0)
        };
        let mut vb = input_count.get(&holder).copied().unwrap_or(0) * INPUT_VBYTES
            + vault_outputs.get(&holder).copied().unwrap_or(0) * receive_vb
            + withdrawal_vb(holder);
        let leg_fee = i128::from(leg.fee.to_sat());
        if holder == pool.holder {
            vb += overhead_vbytes(plan.inputs.len(), plan.outputs.len())
                + plan.deferred.iter().map(|d| withdrawal_vb(d.holder)).sum::<u64>();
            // The pool's fee may exceed its share by a remainder not worth an output.
            let excess = leg_fee - fee(vb)?;
            if leg.vbytes != vb || excess < 0 || excess >= dust + fee(receive_vb + 2)? {
                return fail(format!("pool leg: {} vB, fee {leg_fee}, expected {vb} vB", leg.vbytes));
            }
            continue;
        }
        if leg.vbytes != vb || leg_fee != fee(vb)? {
            return fail(format!("holder {holder}: {} vB, fee {leg_fee}, expected {vb} vB", leg.vbytes));
        }
        let Some(p) = by_holder.get(&holder) else {
            return fail(format!("leg of unknown holder {holder}"));
        };
        // delta = target − fee, unless change not worth an output went to the pool.
        let owed = i128::from(p.target.to_sat()) - leg_fee;
        let surplus = owed - delta;
        let gave_all = received == 0 && delta == -spent;
        if surplus != 0 && !(gave_all && surplus > 0 && surplus < dust + fee(receive_vb)?) {
            return fail(format!("holder {holder}: delta {delta} ≠ target − fee {owed}"));
        }
        total_vb += vb;
    }
    total_vb += plan.pool_leg().map(|l| l.vbytes).unwrap_or(0);
    let tx_vb = overhead_vbytes(plan.inputs.len(), plan.outputs.len())
        + plan.inputs.len() as u64 * INPUT_VBYTES
        + plan.outputs.iter().map(|o| output_vbytes(&o.script_pubkey)).sum::<u64>();
    if total_vb != plan.vbytes || tx_vb != plan.vbytes {
        return fail(format!("legs' vbytes {total_vb}, transaction {tx_vb}, plan {}", plan.vbytes));
    }
    Ok(())
}
