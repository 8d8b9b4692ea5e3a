//! Unit tests of the batch planner: hand-computed cases to the satoshi, validation, and a
//! property test of every conservation rule, checked here independently of `check`.

use std::collections::{BTreeMap, HashSet};

use bitcoin::hashes::Hash as _;
use bitcoin::{Amount, OutPoint, ScriptBuf, Sequence, SignedAmount, Txid, WPubkeyHash};
use proptest::prelude::*;

use super::check;
use super::*;

const POOL: u64 = 100;

fn script(n: u8) -> ScriptBuf {
    ScriptBuf::new_p2wpkh(&WPubkeyHash::from_byte_array([n; 20]))
}

fn outpoint(n: u8, vout: u32) -> OutPoint {
    OutPoint { txid: Txid::from_byte_array([n; 32]), vout }
}

fn utxo(holder: u64, n: u8, vout: u32, sats: u64) -> VaultUtxo {
    VaultUtxo { outpoint: outpoint(n, vout), value: Amount::from_sat(sats), script_pubkey: script(holder as u8) }
}

fn participant(holder: u64, target: i64, coins: &[u64]) -> Participant {
    Participant {
        holder,
        target: SignedAmount::from_sat(target),
        utxos: coins.iter().enumerate().map(|(i, v)| utxo(holder, holder as u8, i as u32, *v)).collect(),
        receive_script: script(holder as u8),
    }
}

fn pool(coins: &[u64]) -> Pool {
    Pool {
        holder: POOL,
        utxos: coins.iter().enumerate().map(|(i, v)| utxo(POOL, POOL as u8, i as u32, *v)).collect(),
        receive_script: script(POOL as u8),
    }
}

fn withdrawal(id: u64, holder: u64, sats: u64) -> Withdrawal {
    Withdrawal { id, holder, script_pubkey: script(200 + id as u8), amount: Amount::from_sat(sats) }
}

fn params(rate: u64) -> PlanParams {
    PlanParams { fee_rate_sat_per_kvb: rate, dust: Amount::from_sat(546) }
}

fn leg(holder: u64, delta: i64, fee: u64, vbytes: u64) -> Leg {
    Leg { holder, delta: SignedAmount::from_sat(delta), fee: Amount::from_sat(fee), vbytes }
}

fn vault_out(holder: u64, sats: u64) -> PlannedOutput {
    PlannedOutput {
        kind: OutputKind::Vault { holder },
        script_pubkey: script(holder as u8),
        amount: Amount::from_sat(sats),
    }
}

fn amounts(plan: &BatchPlan) -> Vec<(OutputKind, u64)> {
    plan.outputs.iter().map(|o| (o.kind, o.amount.to_sat())).collect()
}

fn planned(participants: &[Participant], withdrawals: &[Withdrawal], pool: &Pool, params: &PlanParams) -> BatchPlan {
    plan(participants, withdrawals, pool, params).expect("plans").expect("something to do")
}

#[test]
fn one_seller_one_buyer() {
    let ps = [participant(1, -100_000, &[500_000]), participant(2, 100_000, &[])];
    let batch = planned(&ps, &[], &pool(&[1_000_000]), &params(1000));
    // Seller: one input and change (99 vB); buyer: one output (31 vB); pool: overhead,
    // an input to pay it and its change (110 vB).
    assert_eq!(batch.legs, vec![leg(1, -100_099, 99, 99), leg(2, 99_969, 31, 31), leg(POOL, -110, 110, 110)]);
    assert_eq!(batch.outputs, vec![vault_out(1, 399_901), vault_out(2, 99_969), vault_out(POOL, 999_890)]);
    let inputs: Vec<(u64, OutPoint)> = batch.inputs.iter().map(|i| (i.holder, i.utxo.outpoint)).collect();
    assert_eq!(inputs, vec![(1, outpoint(1, 0)), (POOL, outpoint(POOL as u8, 0))]);
    assert_eq!((batch.vbytes, batch.fee), (240, Amount::from_sat(240)));
    assert!(batch.deferred.is_empty());

    let tx = batch.unsigned_tx();
    assert_eq!(tx.version, bitcoin::transaction::Version::TWO);
    assert_eq!(tx.lock_time, bitcoin::absolute::LockTime::ZERO);
    assert!(tx.input.iter().all(|i| i.sequence == Sequence::ENABLE_RBF_NO_LOCKTIME));
    assert!(batch.psbt.inputs.iter().all(|i| i.witness_utxo.is_some()));
    assert_eq!(batch.leg(2), Some(&leg(2, 99_969, 31, 31)));
    assert_eq!(batch.pool_leg(), Some(&leg(POOL, -110, 110, 110)));
}

#[test]
fn fees_round_up_per_leg() {
    let ps = [participant(1, -100_000, &[500_000]), participant(2, 100_000, &[])];
    let batch = planned(&ps, &[], &pool(&[1_000_000]), &params(1500));
    // 99 vB * 1.5 = 148.5 → 149; 31 * 1.5 = 46.5 → 47; 110 * 1.5 = 165.
    assert_eq!(batch.legs, vec![leg(1, -100_149, 149, 99), leg(2, 99_953, 47, 31), leg(POOL, -165, 165, 110)]);
    assert_eq!(batch.fee, Amount::from_sat(361));
}

#[test]
fn withdrawal_only() {
    let ps = [participant(1, -50_000, &[200_000])];
    let ws = [withdrawal(7, 1, 50_000)];
    let batch = planned(&ps, &ws, &pool(&[1_000_000]), &params(1000));
    // The withdrawer pays its input, its change and the withdrawal output (130 vB).
    assert_eq!(batch.legs, vec![leg(1, -50_130, 130, 130), leg(POOL, -110, 110, 110)]);
    assert_eq!(
        amounts(&batch),
        vec![
            (OutputKind::Withdrawal { id: 7 }, 50_000),
            (OutputKind::Vault { holder: 1 }, 149_870),
            (OutputKind::Vault { holder: POOL }, 999_890)
        ]
    );
    assert_eq!(batch.outputs[0].script_pubkey, script(207));
}

#[test]
fn pool_withdrawal_alone() {
    let batch = planned(&[], &[withdrawal(1, POOL, 30_000)], &pool(&[1_000_000]), &params(1000));
    assert_eq!(batch.legs, vec![leg(POOL, -30_141, 141, 141)]);
    assert_eq!(amounts(&batch)[1], (OutputKind::Vault { holder: POOL }, 969_859));
}

#[test]
fn nothing_to_do() {
    let ps = [participant(1, 0, &[10_000]), participant(2, 300, &[])];
    assert_eq!(plan(&ps, &[], &pool(&[1_000_000]), &params(1000)), Ok(None));
    assert_eq!(plan(&[], &[], &pool(&[]), &params(1000)), Ok(None));
}

#[test]
fn deferrals_and_their_withdrawals() {
    let ps = [
        participant(3, 500, &[]),           // 500 − 31 = 469 < dust
        participant(4, -80_000, &[50_000]), // cannot pay its withdrawal
        participant(5, 0, &[70_000]),       // nothing to do
    ];
    let ws = [withdrawal(1, 4, 80_000)];
    let batch = planned(&ps, &ws, &pool(&[1_000_000]), &params(1000));
    assert_eq!(
        batch.deferred,
        vec![
            Deferred {
                holder: 3,
                target: SignedAmount::from_sat(500),
                reason: DeferReason::BelowDust { net: SignedAmount::from_sat(469) }
            },
            Deferred {
                holder: 4,
                target: SignedAmount::from_sat(-80_000),
                reason: DeferReason::InsufficientFunds {
                    needed: Amount::from_sat(80_099),
                    available: Amount::from_sat(50_000)
                },
            },
            Deferred { holder: 5, target: SignedAmount::ZERO, reason: DeferReason::NothingToDo },
        ]
    );
    // The pool fronts the withdrawal and pays its 31 vB.
    assert_eq!(batch.legs, vec![leg(POOL, -80_141, 141, 141)]);
    assert_eq!(
        amounts(&batch),
        vec![(OutputKind::Withdrawal { id: 1 }, 80_000), (OutputKind::Vault { holder: POOL }, 919_859)]
    );
    assert!(batch.inputs.iter().all(|i| i.holder == POOL));
}

#[test]
fn sub_dust_change_goes_to_the_pool_and_pool_dust_to_the_fee() {
    let ps = [participant(1, -100_000, &[100_400]), participant(2, 100_000, &[])];
    let batch = planned(&ps, &[], &pool(&[1_000_000]), &params(1000));
    // Seller: change would be 100_400 − 100_000 − 99 = 301 < dust, so no change output; it
    // gives its whole coin (delta −100_400, fee 68 for its input alone). The pool receives
    // the 332 surplus, pays its 11 vB of overhead, and 290 (after its would-be output) is
    // below dust too: no pool output, no pool input, its 321 of remainder is fee.
    assert_eq!(batch.legs, vec![leg(1, -100_400, 68, 68), leg(2, 99_969, 31, 31), leg(POOL, 0, 332, 11)]);
    assert_eq!(amounts(&batch), vec![(OutputKind::Vault { holder: 2 }, 99_969)]);
    assert_eq!((batch.vbytes, batch.fee), (110, Amount::from_sat(431)));
}

#[test]
fn sub_dust_change_with_a_pool_output() {
    let ps = [participant(1, -100_000, &[100_400]), participant(2, 200_000, &[])];
    let batch = planned(&ps, &[], &pool(&[1_000_000]), &params(1000));
    // The pool pays the buyer's 199_969 less the seller's 100_400, and all fees
    // (68 + 31 + its own 110): it spends its coin and takes change.
    assert_eq!(batch.leg(1), Some(&leg(1, -100_400, 68, 68)));
    assert_eq!(batch.pool_leg(), Some(&leg(POOL, -99_778, 110, 110)));
    assert_eq!(
        amounts(&batch),
        vec![(OutputKind::Vault { holder: 2 }, 199_969), (OutputKind::Vault { holder: POOL }, 900_222)]
    );
}

#[test]
fn pool_short() {
    let ps = [participant(2, 100_000, &[])];
    let err = plan(&ps, &[], &pool(&[1_000]), &params(1000)).unwrap_err();
    // 99_969 to the buyer + 31 + the pool's input and overhead (79).
    assert_eq!(err, PlanError::PoolShort { needed: Amount::from_sat(100_079), available: Amount::from_sat(1_000) });
}

#[test]
fn coin_selection_takes_the_fewest_largest_coins() {
    let coins = [10_000, 100_000, 200_000, 60_000, 100_000];
    let ps = [participant(1, -250_000, &coins)];
    let batch = planned(&ps, &[], &pool(&[1_000_000]), &params(1000));
    let chosen: Vec<(OutPoint, u64)> =
        batch.inputs.iter().filter(|i| i.holder == 1).map(|i| (i.utxo.outpoint, i.utxo.value.to_sat())).collect();
    // 200_000, then of the two 100_000 coins the one with the smaller outpoint.
    assert_eq!(chosen, vec![(outpoint(1, 1), 100_000), (outpoint(1, 2), 200_000)]);
    assert_eq!(batch.leg(1), Some(&leg(1, -250_167, 167, 167)));
    assert_eq!(amounts(&batch)[0], (OutputKind::Vault { holder: 1 }, 49_833));
}

#[test]
fn deterministic_whatever_the_input_order() {
    let mut ps = vec![
        participant(1, -100_000, &[500_000, 20_000]),
        participant(2, 100_000, &[]),
        participant(3, -40_000, &[30_000, 30_000]),
    ];
    let mut ws = vec![withdrawal(9, 3, 10_000), withdrawal(2, POOL, 5_000)];
    let mut p = pool(&[1_000_000, 2_000_000]);
    let first = planned(&ps, &ws, &p, &params(2000));
    ps.reverse();
    ws.reverse();
    p.utxos.reverse();
    ps[2].utxos.reverse();
    let second = planned(&ps, &ws, &p, &params(2000));
    assert_eq!(first.psbt.serialize(), second.psbt.serialize());
    assert_eq!(first, second);
    // Withdrawals by id, then vaults by holder, pool last; inputs by (holder, outpoint).
    let kinds: Vec<OutputKind> = first.outputs.iter().map(|o| o.kind).collect();
    assert_eq!(
        kinds,
        vec![
            OutputKind::Withdrawal { id: 2 },
            OutputKind::Withdrawal { id: 9 },
            OutputKind::Vault { holder: 1 },
            OutputKind::Vault { holder: 2 },
            OutputKind::Vault { holder: 3 },
            OutputKind::Vault { holder: POOL },
        ]
    );
    let keys: Vec<(u64, OutPoint)> = first.inputs.iter().map(|i| (i.holder, i.utxo.outpoint)).collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted);
}

#[test]
fn invalid_requests() {
    let p = pool(&[1_000_000]);
    let ok = [participant(1, -10_000, &[50_000])];
    let invalid = |ps: &[Participant], ws: &[Withdrawal], pool: &Pool, params: &PlanParams| {
        matches!(plan(ps, ws, pool, params), Err(PlanError::Invalid(_)))
    };
    assert!(invalid(&ok, &[], &p, &params(999)), "fee rate below 1 sat/vB");
    assert!(invalid(&ok, &[], &p, &PlanParams { fee_rate_sat_per_kvb: 1000, dust: Amount::ZERO }), "zero dust");
    assert!(invalid(&[participant(1, 1, &[]), participant(1, 2, &[])], &[], &p, &params(1000)), "duplicate holder");
    assert!(invalid(&[participant(POOL, 1, &[])], &[], &p, &params(1000)), "participant is the pool");
    let mut dup = participant(2, -1, &[]);
    dup.utxos.push(ok[0].utxos[0].clone());
    assert!(invalid(&[ok[0].clone(), dup], &[], &p, &params(1000)), "duplicate outpoint");
    let mut stolen = participant(2, -1, &[]);
    stolen.utxos.push(p.utxos[0].clone());
    assert!(invalid(&[stolen], &[], &p, &params(1000)), "outpoint shared with the pool");
    assert!(invalid(&ok, &[withdrawal(1, 42, 10_000)], &p, &params(1000)), "unknown withdrawal holder");
    assert!(invalid(&ok, &[withdrawal(1, 1, 0)], &p, &params(1000)), "zero withdrawal");
    assert!(invalid(&ok, &[withdrawal(1, 1, 545)], &p, &params(1000)), "sub-dust withdrawal");
    assert!(invalid(&ok, &[withdrawal(1, 1, 10_000), withdrawal(1, POOL, 10_000)], &p, &params(1000)), "duplicate id");
    assert!(invalid(&[participant(1, i64::MIN, &[])], &[], &p, &params(1000)), "target overflow");
    assert!(invalid(&[participant(1, -1, &[u64::MAX])], &[], &p, &params(1000)), "coin beyond 21e6 BTC");
    assert!(invalid(&ok, &[withdrawal(1, 1, 2_100_000_000_000_001)], &p, &params(1000)), "withdrawal too big");
    let mut not_wpkh = participant(1, -1, &[1_000]);
    not_wpkh.utxos[0].script_pubkey = ScriptBuf::new_op_return([1u8; 4]);
    assert!(invalid(&[not_wpkh], &[], &p, &params(1000)), "coin is not P2WPKH");
    assert!(
        invalid(&ok, &[], &p, &PlanParams { fee_rate_sat_per_kvb: u64::MAX, dust: Amount::from_sat(546) }),
        "fee overflow"
    );
}

// ---------------------------------------------------------------------------------------
// Property test: random batches, every rule checked from scratch.

fn fee_of(vbytes: u64, rate: u64) -> u64 {
    (vbytes * rate).div_ceil(1000)
}

/// Every rule of conservation, computed here from the request and the plan only.
fn assert_rules(batch: &BatchPlan, ps: &[Participant], ws: &[Withdrawal], pool: &Pool, params: &PlanParams) {
    let rate = params.fee_rate_sat_per_kvb;
    let dust = params.dust.to_sat();
    let tx = batch.unsigned_tx();
    let sat = |a: Amount| i128::from(a.to_sat());

    // Tx shape.
    assert_eq!(tx.input.len(), batch.inputs.len());
    assert_eq!(tx.output.len(), batch.outputs.len());
    for (txin, (planned, psbt_in)) in tx.input.iter().zip(batch.inputs.iter().zip(&batch.psbt.inputs)) {
        assert_eq!(txin.previous_output, planned.utxo.outpoint);
        assert_eq!(txin.sequence, Sequence::ENABLE_RBF_NO_LOCKTIME);
        assert_eq!(psbt_in.witness_utxo.as_ref().map(|o| o.value), Some(planned.utxo.value));
    }
    for (txout, planned) in tx.output.iter().zip(&batch.outputs) {
        assert_eq!((txout.value, &txout.script_pubkey), (planned.amount, &planned.script_pubkey));
        assert!(planned.amount.to_sat() >= dust, "output below dust: {planned:?}");
    }

    // Σ inputs − Σ outputs == fee == Σ leg.fee; Σ delta + Σ withdrawals + fee == 0.
    let total_in: i128 = batch.inputs.iter().map(|i| sat(i.utxo.value)).sum();
    let total_out: i128 = batch.outputs.iter().map(|o| sat(o.amount)).sum();
    let leg_fees: i128 = batch.legs.iter().map(|l| sat(l.fee)).sum();
    assert_eq!(total_in - total_out, sat(batch.fee));
    assert_eq!(leg_fees, sat(batch.fee));
    let deltas: i128 = batch.legs.iter().map(|l| i128::from(l.delta.to_sat())).sum();
    let withdrawn: i128 = ws.iter().map(|w| sat(w.amount)).sum();
    assert_eq!(deltas + withdrawn + sat(batch.fee), 0);

    // Every input from its holder's own coins, once.
    let coins_of = |holder: u64| -> &[VaultUtxo] {
        if holder == pool.holder {
            &pool.utxos
        } else {
            &ps.iter().find(|p| p.holder == holder).expect("known holder").utxos
        }
    };
    let mut seen = HashSet::new();
    for i in &batch.inputs {
        assert!(coins_of(i.holder).contains(&i.utxo), "input not the holder's own");
        assert!(seen.insert(i.utxo.outpoint), "input twice");
    }

    // Each withdrawal paid by exactly one output of exactly its amount.
    for w in ws {
        let paying: Vec<&PlannedOutput> =
            batch.outputs.iter().filter(|o| o.kind == OutputKind::Withdrawal { id: w.id }).collect();
        assert_eq!(paying.len(), 1);
        assert_eq!((paying[0].amount, &paying[0].script_pubkey), (w.amount, &w.script_pubkey));
    }

    // Holders: at most once among legs and deferred, every participant once, pool last.
    let mut holders: Vec<u64> =
        batch.legs.iter().map(|l| l.holder).chain(batch.deferred.iter().map(|d| d.holder)).collect();
    holders.sort();
    let mut expected: Vec<u64> = ps.iter().map(|p| p.holder).chain([pool.holder]).collect();
    expected.sort();
    assert_eq!(holders, expected);
    assert_eq!(batch.legs.last().map(|l| l.holder), Some(pool.holder));

    // Per leg: delta on chain, vbytes, fee.
    let mut in_by: BTreeMap<u64, (i128, u64)> = BTreeMap::new();
    for i in &batch.inputs {
        let e = in_by.entry(i.holder).or_default();
        e.0 += sat(i.utxo.value);
        e.1 += 1;
    }
    let out_by = |holder: u64| -> (i128, u64) {
        let outs: Vec<&PlannedOutput> =
            batch.outputs.iter().filter(|o| o.kind == OutputKind::Vault { holder }).collect();
        (outs.iter().map(|o| sat(o.amount)).sum(), outs.len() as u64)
    };
    let wd_count = |holder: u64| ws.iter().filter(|w| w.holder == holder).count() as u64;
    let deferred_wd: u64 = batch.deferred.iter().map(|d| wd_count(d.holder)).sum();
    let mut vbytes = 0;
    for leg in &batch.legs {
        let (spent, n_in) = in_by.get(&leg.holder).copied().unwrap_or_default();
        let (received, n_out) = out_by(leg.holder);
        let delta = i128::from(leg.delta.to_sat());
        assert_eq!(received - spent, delta, "holder {}", leg.holder);
        assert!(n_out <= 1);
        let mut vb = 68 * n_in + 31 * n_out + 31 * wd_count(leg.holder);
        vbytes += leg.vbytes;
        if leg.holder == pool.holder {
            vb += 11 + 31 * deferred_wd;
            assert_eq!(leg.vbytes, vb);
            let share = fee_of(vb, rate);
            assert!(leg.fee.to_sat() >= share);
            // More only when the pool's remainder was not worth an output.
            if leg.fee.to_sat() > share {
                assert_eq!(n_out, 0);
                assert!(leg.fee.to_sat() - share < dust + fee_of(31, rate));
            }
            continue;
        }
        assert_eq!(leg.vbytes, vb, "holder {}", leg.holder);
        assert_eq!(leg.fee.to_sat(), fee_of(vb, rate), "holder {}", leg.holder);
        let p = ps.iter().find(|p| p.holder == leg.holder).unwrap();
        let owed = i128::from(p.target.to_sat()) - sat(leg.fee);
        if delta != owed {
            // Sub-dust change: no output, the whole input given, the surplus is small.
            assert_eq!((n_out, delta), (0, -spent));
            assert!(owed > delta && owed - delta < i128::from(dust + fee_of(31, rate)));
        }
        if p.target.to_sat() > 0 {
            assert_eq!(n_in, 0, "receivers spend nothing");
        } else {
            // Fewest inputs: one coin less (the smallest chosen) could not pay, even without change.
            let mut chosen: Vec<u64> =
                batch.inputs.iter().filter(|i| i.holder == leg.holder).map(|i| i.utxo.value.to_sat()).collect();
            chosen.sort();
            let rest: i128 = chosen.iter().skip(1).map(|v| i128::from(*v)).sum();
            let vb_less = 68 * (n_in - 1) + 31 * wd_count(leg.holder);
            assert!(rest + i128::from(p.target.to_sat()) - i128::from(fee_of(vb_less, rate)) < 0, "too many inputs");
            // And they are the largest coins.
            let mut all: Vec<u64> = p.utxos.iter().map(|u| u.value.to_sat()).collect();
            all.sort_by(|a, b| b.cmp(a));
            let mut largest: Vec<u64> = all[..chosen.len()].to_vec();
            largest.sort();
            assert_eq!(chosen, largest);
        }
    }
    let tx_vb = 11 + 68 * batch.inputs.len() as u64 + 31 * batch.outputs.len() as u64;
    assert_eq!(vbytes, batch.vbytes);
    assert_eq!(tx_vb, batch.vbytes);
    assert!(u128::from(batch.fee.to_sat()) * 1000 >= u128::from(batch.vbytes) * u128::from(rate));

    // Deferral reasons hold.
    for d in &batch.deferred {
        let p = ps.iter().find(|p| p.holder == d.holder).unwrap();
        assert_eq!(d.target, p.target);
        match d.reason {
            DeferReason::NothingToDo => assert!(p.target == SignedAmount::ZERO && wd_count(p.holder) == 0),
            DeferReason::BelowDust { net } => {
                assert!(p.target > SignedAmount::ZERO && net.to_sat() < dust as i64)
            }
            DeferReason::InsufficientFunds { needed, available } => {
                assert_eq!(available, p.utxos.iter().map(|u| u.value).sum::<Amount>());
                assert!(needed > available);
            }
        }
    }
}

#[derive(Debug, Clone)]
struct Case {
    participants: Vec<Participant>,
    withdrawals: Vec<Withdrawal>,
    pool: Pool,
    params: PlanParams,
}

fn target_strategy() -> impl Strategy<Value = i64> {
    prop_oneof![
        Just(0i64),
        1i64..3_000,              // receivers near dust
        -3_000i64..0,             // tiny payers
        -5_000_000i64..5_000_000, // ordinary
    ]
}

fn case_strategy() -> impl Strategy<Value = Case> {
    let one = prop_oneof![
        3 => (target_strategy(), proptest::collection::vec(1_000u64..3_000_000, 0..5)),
        // A payer whose one coin barely covers it: change near or below dust, or none.
        1 => (-1_000_000i64..-1_000, 0u64..6_000).prop_map(|(t, slack)| (t, vec![t.unsigned_abs() + slack])),
    ];
    (
        proptest::collection::vec(one, 0..7),
        proptest::collection::vec((0usize..8, 546u64..1_000_000), 0..4),
        proptest::collection::vec(1_000u64..2_000_000, 0..4),
        1000u64..30_000,
        294u64..1_000,
        any::<bool>(),
    )
        .prop_map(|(ps, ws, pool_coins, rate, dust, rich_pool)| {
            let participants: Vec<Participant> =
                ps.iter().enumerate().map(|(i, (target, coins))| participant(i as u64 + 1, *target, coins)).collect();
            let withdrawals: Vec<Withdrawal> = ws
                .iter()
                .enumerate()
                .map(|(i, (who, amount))| {
                    // Index past the participants: the pool asks for it.
                    let holder = participants.get(*who).map_or(POOL, |p| p.holder);
                    withdrawal(i as u64 * 3 + 1, holder, (*amount).max(dust))
                })
                .collect();
            let mut coins = pool_coins;
            if rich_pool {
                // Enough for every receiver, every withdrawal and generous fees.
                let owed: i64 = participants.iter().map(|p| p.target.to_sat().max(0)).sum::<i64>()
                    + withdrawals.iter().map(|w| w.amount.to_sat() as i64).sum::<i64>();
                coins.push(owed as u64 + 2_000_000);
            }
            Case {
                participants,
                withdrawals,
                pool: pool(&coins),
                params: PlanParams { fee_rate_sat_per_kvb: rate, dust: Amount::from_sat(dust) },
            }
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn every_plan_conserves_money(case in case_strategy()) {
        let Case { participants, withdrawals, pool, params } = &case;
        let rich = pool.utxos.iter().any(|u| u.value.to_sat() >= 2_000_000);
        match plan(participants, withdrawals, pool, params) {
            Ok(Some(batch)) => {
                assert_rules(&batch, participants, withdrawals, pool, params);
                let mut reversed = participants.clone();
                reversed.reverse();
                let again = plan(&reversed, withdrawals, pool, params).unwrap().unwrap();
                prop_assert_eq!(batch.psbt.serialize(), again.psbt.serialize());
            }
            Ok(None) => {
                prop_assert!(withdrawals.is_empty());
            }
            Err(PlanError::PoolShort { needed, available }) => {
                prop_assert!(!rich, "a rich pool is never short");
                prop_assert_eq!(available, pool.utxos.iter().map(|u| u.value).sum::<Amount>());
                prop_assert!(needed > available);
            }
            Err(e) => prop_assert!(false, "unexpected error {e}"),
        }
    }
}

/// The generated cases reach every branch of the planner, so the property above is not
/// vacuously true.
#[test]
fn property_cases_reach_every_branch() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
    let mut runner = TestRunner::new_with_rng(Config::default(), TestRng::from_seed(RngAlgorithm::ChaCha, &[7; 32]));
    let strategy = case_strategy();
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for _ in 0..2_000 {
        let case = strategy.new_tree(&mut runner).unwrap().current();
        let Case { participants, withdrawals, pool, params } = &case;
        let mut hit = |k| *seen.entry(k).or_default() += 1;
        match plan(participants, withdrawals, pool, params) {
            Ok(Some(batch)) => {
                hit("batch");
                for d in &batch.deferred {
                    hit(match d.reason {
                        DeferReason::NothingToDo => "nothing to do",
                        DeferReason::BelowDust { .. } => "below dust",
                        DeferReason::InsufficientFunds { .. } => "insufficient funds",
                    });
                }
                for p in participants {
                    if let Some(leg) = batch.leg(p.holder) {
                        if leg.delta != p.target - leg.fee.to_signed().unwrap() {
                            hit("sub-dust change");
                        }
                    }
                }
                let pool_leg = batch.pool_leg().unwrap();
                if pool_leg.fee.to_sat() > fee_of(pool_leg.vbytes, params.fee_rate_sat_per_kvb) {
                    hit("pool remainder to fee");
                }
                if batch.inputs.iter().any(|i| i.holder == POOL) {
                    hit("pool spends");
                }
                if batch.legs.len() > 3 && !withdrawals.is_empty() {
                    hit("large batch with withdrawals");
                }
            }
            Ok(None) => hit("nothing"),
            Err(PlanError::PoolShort { .. }) => hit("pool short"),
            Err(_) => hit("other error"),
        }
    }
    for branch in [
        "batch",
        "nothing to do",
        "below dust",
        "insufficient funds",
        "sub-dust change",
        "pool remainder to fee",
        "pool spends",
        "large batch with withdrawals",
        "nothing",
        "pool short",
    ] {
        assert!(seen.get(branch).copied().unwrap_or(0) > 0, "never reached {branch}: {seen:?}");
    }
    assert_eq!(seen.get("other error"), None);
}

/// The planner's own final check refuses plans that break conservation.
#[test]
fn the_internal_check_catches_broken_plans() {
    let ps = [participant(1, -100_000, &[500_000]), participant(2, 100_000, &[]), participant(3, 0, &[])];
    let ws = [withdrawal(4, 1, 20_000)];
    let p = pool(&[1_000_000]);
    let pr = params(1000);
    let good = planned(&ps, &ws, &p, &pr);
    assert_eq!(check::check(&good, &ps, &ws, &p, &pr), Ok(()));
    let broken = |tamper: &dyn Fn(&mut BatchPlan)| {
        let mut bad = good.clone();
        tamper(&mut bad);
        matches!(check::check(&bad, &ps, &ws, &p, &pr), Err(PlanError::Internal(_)))
    };
    assert!(broken(&|b| {
        // One more satoshi to the buyer, consistently in plan and tx: the fee no longer adds up.
        b.outputs[1].amount += Amount::ONE_SAT;
        b.psbt.unsigned_tx.output[1].value += Amount::ONE_SAT;
    }));
    assert!(broken(&|b| b.legs[0].delta += SignedAmount::ONE_SAT));
    assert!(broken(&|b| b.legs[0].fee += Amount::ONE_SAT));
    assert!(broken(&|b| b.legs[1].vbytes += 1));
    assert!(broken(&|b| b.psbt.unsigned_tx.output[0].value -= Amount::ONE_SAT));
    assert!(broken(&|b| b.psbt.unsigned_tx.input[0].sequence = Sequence::MAX));
    assert!(broken(&|b| b.psbt.inputs[0].witness_utxo = None));
    assert!(broken(&|b| b.deferred.push(Deferred {
        holder: 2,
        target: SignedAmount::ZERO,
        reason: DeferReason::NothingToDo
    })));
    assert!(broken(&|b| {
        b.deferred.clear();
    }));
    assert!(broken(&|b| {
        // The withdrawal's output relabelled as the withdrawer's vault output.
        b.outputs[0].kind = OutputKind::Vault { holder: 1 };
    }));
    assert!(broken(&|b| {
        let dust = Amount::from_sat(500);
        let last = b.outputs.len() - 1;
        let moved = b.outputs[last].amount - dust;
        b.outputs[last].amount = dust;
        b.psbt.unsigned_tx.output[last].value = dust;
        b.legs.last_mut().unwrap().delta -= moved.to_signed().unwrap();
        b.legs.last_mut().unwrap().fee += moved;
        b.fee += moved;
    }));
}
