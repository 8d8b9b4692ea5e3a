//! A planned batch on the embedded devnet: funded single-key "vaults" and pool, a batch with
//! sellers, a buyer, withdrawals and deferred participants, signed, broadcast (every script
//! consensus-checked by the devnet) and mined; then every key's balance moved by exactly
//! its leg's delta and every withdrawal address received exactly its amount.

use std::collections::BTreeMap;

use bitcoin::{Amount, ScriptBuf, SignedAmount, TxOut};
use tandem_settlement::batch::{
    plan, BatchPlan, DeferReason, OutputKind, Participant, PlanParams, Pool, VaultUtxo, Withdrawal,
};
use tandem_settlement::{Chain, Devnet, DevnetConfig, SingleKey, TxStatus};

const POOL: u64 = 1_000;
const RATE: u64 = 2_000;

fn key(seed: u8) -> SingleKey {
    SingleKey::from_secret_bytes([seed; 32]).expect("the seed makes a valid key")
}

async fn coins(devnet: &Devnet, script: &ScriptBuf) -> Vec<VaultUtxo> {
    devnet
        .utxos(std::slice::from_ref(script))
        .await
        .unwrap()
        .into_iter()
        .map(|u| VaultUtxo { outpoint: u.outpoint, value: u.txout.value, script_pubkey: u.txout.script_pubkey })
        .collect()
}

async fn balance(devnet: &Devnet, script: &ScriptBuf) -> i64 {
    coins(devnet, script).await.iter().map(|c| c.value.to_sat() as i64).sum()
}

#[tokio::test]
async fn a_planned_batch_is_accepted_and_moves_exactly_the_deltas() {
    let devnet = Devnet::new(DevnetConfig::default()).unwrap();
    let btc = |b: f64| Amount::from_btc(b).unwrap();

    // holder → (key, funding, target)
    let setup: Vec<(u64, u8, Vec<Amount>, i64)> = vec![
        (1, 1, vec![btc(0.2), btc(0.1), btc(0.05)], -15_000_000), // seller: one coin is enough
        (2, 2, vec![btc(0.04)], -2_000_000),                      // seller + withdraws 0.01
        (3, 3, vec![btc(0.01)], 12_000_000),                      // buyer
        (4, 4, vec![], 300),                                      // receiver below dust: deferred
        (5, 5, vec![btc(0.001)], -1_000_000),                     // withdraws more than it has: deferred
        (6, 6, vec![btc(0.003)], -299_400),                       // seller whose change is below dust
        (7, 7, vec![btc(0.02)], 0),                               // nothing to do
    ];
    let pool_key = key(50);
    for amount in [btc(0.5), btc(0.3)] {
        devnet.faucet(&pool_key.script(), amount).unwrap();
    }
    let keys: BTreeMap<u64, SingleKey> = setup.iter().map(|(h, seed, _, _)| (*h, key(*seed))).collect();
    for (holder, _, funding, _) in &setup {
        for amount in funding {
            devnet.faucet(&keys[holder].script(), *amount).unwrap();
        }
    }
    devnet.mine(1, None).unwrap();

    let mut participants = Vec::new();
    for (holder, _, _, target) in &setup {
        let script = keys[holder].script();
        participants.push(Participant {
            holder: *holder,
            target: SignedAmount::from_sat(*target),
            utxos: coins(&devnet, &script).await,
            receive_script: script,
        });
    }
    let pool =
        Pool { holder: POOL, utxos: coins(&devnet, &pool_key.script()).await, receive_script: pool_key.script() };
    let destinations = [key(60).script(), key(61).script(), key(62).script()];
    let withdrawals = vec![
        Withdrawal { id: 10, holder: 2, script_pubkey: destinations[0].clone(), amount: btc(0.01) },
        Withdrawal { id: 11, holder: 5, script_pubkey: destinations[1].clone(), amount: btc(0.01) },
        Withdrawal { id: 12, holder: POOL, script_pubkey: destinations[2].clone(), amount: btc(0.002) },
    ];
    let params = PlanParams { fee_rate_sat_per_kvb: RATE, dust: Amount::from_sat(546) };
    let batch = plan(&participants, &withdrawals, &pool, &params).unwrap().expect("a batch");

    // The shape we expect: holder 1 spends one coin, 6 gives its coin without change.
    let legs: Vec<u64> = batch.legs.iter().map(|l| l.holder).collect();
    assert_eq!(legs, vec![1, 2, 3, 6, POOL]);
    let deferred: Vec<(u64, DeferReason)> = batch.deferred.iter().map(|d| (d.holder, d.reason)).collect();
    assert!(matches!(
        deferred[..],
        [(4, DeferReason::BelowDust { .. }), (5, DeferReason::InsufficientFunds { .. }), (7, DeferReason::NothingToDo)]
    ));
    assert_eq!(batch.inputs.iter().filter(|i| i.holder == 1).count(), 1);
    assert!(!batch.outputs.iter().any(|o| o.kind == OutputKind::Vault { holder: 6 }));
    assert_eq!(batch.leg(6).unwrap().delta, -SignedAmount::from_sat(300_000));

    sign_broadcast_and_check(&devnet, &batch, &keys, &pool_key, &withdrawals).await;
}

/// Signs every input with its holder's key, checks the size bound, broadcasts, mines, and
/// checks that balances moved by exactly the legs' deltas and the withdrawals' amounts.
async fn sign_broadcast_and_check(
    devnet: &Devnet,
    batch: &BatchPlan,
    keys: &BTreeMap<u64, SingleKey>,
    pool_key: &SingleKey,
    withdrawals: &[Withdrawal],
) {
    // Sign: each input by its holder's key (SIGHASH_ALL commits to every spent output).
    let spent: Vec<TxOut> = batch.psbt.inputs.iter().map(|i| i.witness_utxo.clone().unwrap()).collect();
    let mut tx = batch.psbt.unsigned_tx.clone();
    for (index, input) in batch.inputs.iter().enumerate() {
        let signer = if input.holder == POOL { pool_key } else { &keys[&input.holder] };
        let mut signed = batch.psbt.unsigned_tx.clone();
        signer.sign_all(&mut signed, &spent).unwrap();
        tx.input[index].witness = signed.input[index].witness.clone();
    }

    // Our 68 vB per input is an upper bound: the fee rate is at least the requested one.
    let vsize = tx.vsize() as u64;
    assert!(vsize <= batch.vbytes, "vsize {vsize} > planned {}", batch.vbytes);
    assert!(batch.fee.to_sat() * 1000 >= vsize * RATE);

    let mut before = BTreeMap::new();
    for (holder, key) in keys {
        before.insert(*holder, balance(devnet, &key.script()).await);
    }
    let pool_before = balance(devnet, &pool_key.script()).await;

    devnet.test_mempool_accept(&tx).await.unwrap();
    let txid = devnet.broadcast(&tx).await.unwrap();
    assert_eq!(txid, batch.txid());
    devnet.mine(1, None).unwrap();
    assert!(matches!(devnet.transaction_status(&txid).await.unwrap(), TxStatus::Confirmed { confirmations: 1, .. }));

    for (holder, key) in keys {
        let moved = balance(devnet, &key.script()).await - before[holder];
        let expected = batch.leg(*holder).map_or(0, |l| l.delta.to_sat());
        assert_eq!(moved, expected, "holder {holder}");
    }
    let pool_moved = balance(devnet, &pool_key.script()).await - pool_before;
    assert_eq!(pool_moved, batch.pool_leg().unwrap().delta.to_sat());
    for w in withdrawals {
        assert_eq!(balance(devnet, &w.script_pubkey).await, w.amount.to_sat() as i64, "withdrawal {}", w.id);
    }
    // Everything that left the vaults and the pool is withdrawals and the planned fee.
    let block = devnet.block(&devnet.tip().await.unwrap().hash).await.unwrap();
    let confirmed = block.txdata.iter().find(|t| t.compute_txid() == txid).unwrap();
    let out: Amount = confirmed.output.iter().map(|o| o.value).sum();
    let inp: Amount = spent.iter().map(|o| o.value).sum();
    assert_eq!(inp - out, batch.fee);
}

/// Buyers only: the pool spends coins (as few as possible, largest first), takes change.
#[tokio::test]
async fn the_pool_pays_buyers_and_a_withdrawal() {
    let devnet = Devnet::new(DevnetConfig::default()).unwrap();
    let pool_key = key(50);
    for sats in [3_000_000u64, 9_000_000, 1_000_000] {
        devnet.faucet(&pool_key.script(), Amount::from_sat(sats)).unwrap();
    }
    devnet.mine(1, None).unwrap();
    let keys: BTreeMap<u64, SingleKey> = (1..=3u64).map(|h| (h, key(h as u8))).collect();
    let participants: Vec<Participant> = keys
        .iter()
        .map(|(h, k)| Participant {
            holder: *h,
            target: SignedAmount::from_sat(1_500_000 * *h as i64),
            utxos: vec![],
            receive_script: k.script(),
        })
        .collect();
    let pool =
        Pool { holder: POOL, utxos: coins(&devnet, &pool_key.script()).await, receive_script: pool_key.script() };
    let withdrawals =
        vec![Withdrawal { id: 1, holder: POOL, script_pubkey: key(70).script(), amount: Amount::from_sat(1_500_000) }];
    let params = PlanParams { fee_rate_sat_per_kvb: RATE, dust: Amount::from_sat(546) };
    let batch = plan(&participants, &withdrawals, &pool, &params).unwrap().expect("a batch");
    // 9M to buyers + 1.5M withdrawn + fees: the 9M and 3M coins, not the 1M one.
    let spent: Vec<u64> = batch.inputs.iter().map(|i| i.utxo.value.to_sat()).collect();
    assert_eq!(spent.len(), 2);
    assert!(spent.contains(&9_000_000) && spent.contains(&3_000_000));
    sign_broadcast_and_check(&devnet, &batch, &keys, &pool_key, &withdrawals).await;
}
