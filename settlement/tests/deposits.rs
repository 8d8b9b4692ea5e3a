//! Conservation of the deposit scanner under random deposits, vault transfers, mining and
//! reorgs on the embedded devnet. After every poll:
//!
//! - replaying all events gives exactly the scanner's live credits (nothing credited twice,
//!   every reverse takes back exactly a live credit);
//! - a fresh scanner credits exactly what an independent reference computes from the chain
//!   (watched outputs of transactions with N confirmations, plus those of transactions
//!   whose every input spends a watched output of such a transaction, recursively);
//! - the long-running scanner credits at least that, and everything it credits is still in
//!   the best chain or the mempool (credits do not flap, but never outlive their
//!   transaction).

use std::collections::{BTreeMap, HashMap};

use bitcoin::{
    absolute, transaction, Amount, OutPoint, ScriptBuf, Sequence, Transaction, TxIn, TxOut,
    Txid, Witness,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tandem_settlement::{SingleKey, Chain, DepositEvent, DepositPolicy, DepositScanner, Devnet, DevnetConfig, TxStatus};

/// A test-side P2WPKH key (the crate's [`SingleKey`]).
struct Key(SingleKey);

impl Key {
    fn new(seed: u8) -> Self {
        Key(SingleKey::from_secret_bytes([seed; 32]).expect("the seed makes a valid key"))
    }

    fn script(&self) -> ScriptBuf {
        self.0.script()
    }

    /// Signs every input as spending an output of this key worth `values[i]`.
    fn sign(&self, tx: &mut Transaction, values: &[Amount]) {
        let spent: Vec<TxOut> = values.iter().map(|v| TxOut { value: *v, script_pubkey: self.script() }).collect();
        self.0.sign_all(tx, &spent).expect("the inputs pay this key");
    }


    fn spend(&self, prevout: (OutPoint, Amount), outputs: Vec<TxOut>) -> Transaction {
        let mut tx = Transaction {
            version: transaction::Version::TWO,
            lock_time: absolute::LockTime::ZERO,
            input: vec![TxIn {
                previous_output: prevout.0,
                script_sig: ScriptBuf::new(),
                sequence: Sequence::ENABLE_RBF_NO_LOCKTIME,
                witness: Witness::new(),
            }],
            output: outputs,
        };
        self.sign(&mut tx, &[prevout.1]);
        tx
    }
}

const N: u32 = 2;
const FEE: u64 = 1_000;

/// Best-chain transactions from `start` with their heights, then the mempool (height `None`).
async fn snapshot(devnet: &Devnet, start: u32) -> (u32, Vec<(Option<u32>, Transaction)>) {
    let tip = devnet.tip().await.unwrap().height;
    let mut txs = Vec::new();
    for height in start..=tip {
        let hash = devnet.block_hash(height).await.unwrap().unwrap();
        let block = devnet.block(&hash).await.unwrap();
        txs.extend(block.txdata.into_iter().map(|tx| (Some(height), tx)));
    }
    txs.extend(devnet.mempool().await.unwrap().into_iter().map(|tx| (None, tx)));
    (tip, txs)
}

/// What a scanner without history must credit, computed independently of it.
fn reference(
    tip: u32,
    txs: &[(Option<u32>, Transaction)],
    accounts: &HashMap<ScriptBuf, u64>,
) -> BTreeMap<OutPoint, (u64, Amount)> {
    let by_txid: HashMap<Txid, &(Option<u32>, Transaction)> = txs.iter().map(|e| (e.1.compute_txid(), e)).collect();
    fn safe(
        txid: &Txid,
        by_txid: &HashMap<Txid, &(Option<u32>, Transaction)>,
        accounts: &HashMap<ScriptBuf, u64>,
        tip: u32,
    ) -> bool {
        let Some((height, tx)) = by_txid.get(txid).copied() else { return false };
        if height.is_some_and(|h| tip - h + 1 >= N) {
            return true;
        }
        !tx.is_coinbase()
            && tx.input.iter().all(|input| {
                let op = input.previous_output;
                by_txid.get(&op.txid).is_some_and(|(_, parent)| {
                    parent.output.get(op.vout as usize).is_some_and(|o| accounts.contains_key(&o.script_pubkey))
                }) && safe(&op.txid, by_txid, accounts, tip)
            })
    }
    let mut expected = BTreeMap::new();
    for (_, tx) in txs {
        let txid = tx.compute_txid();
        if !safe(&txid, &by_txid, accounts, tip) {
            continue;
        }
        for (vout, o) in tx.output.iter().enumerate() {
            if let Some(account) = accounts.get(&o.script_pubkey) {
                if o.value > Amount::ZERO {
                    expected.insert(OutPoint { txid, vout: vout as u32 }, (*account, o.value));
                }
            }
        }
    }
    expected
}

fn live(scanner: &DepositScanner) -> BTreeMap<OutPoint, (u64, Amount)> {
    scanner.credited().map(|(op, account, amount)| (*op, (account, amount))).collect()
}

async fn run(seed: u64, steps: usize) {
    let mut rng = StdRng::seed_from_u64(seed);
    let devnet = Devnet::new(DevnetConfig::default()).unwrap();
    let start = devnet.tip().await.unwrap().height + 1;
    let vaults: Vec<Key> = (1..=3).map(Key::new).collect();
    let stranger = Key::new(9);
    let accounts: HashMap<ScriptBuf, u64> =
        vaults.iter().enumerate().map(|(i, k)| (k.script(), i as u64 + 1)).collect();
    let mut scanner = DepositScanner::new(DepositPolicy { confirmations: N }, start);
    for (script, account) in &accounts {
        scanner.watch(script.clone(), *account, *account);
    }
    let mut ledger: BTreeMap<OutPoint, (u64, Amount)> = BTreeMap::new();
    let (mut credits, mut instant, mut reverses) = (0usize, 0usize, 0usize);
    devnet.mine(2, None).unwrap();

    for step in 0..steps {
        match rng.gen_range(0..10) {
            0..=2 => {
                let to = if rng.gen_bool(0.8) { vaults[rng.gen_range(0..3)].script() } else { stranger.script() };
                let _ = devnet.faucet(&to, Amount::from_sat(rng.gen_range(10_000..1_000_000)));
            }
            3..=4 => {
                // A vault transfer from a confirmed vault coin not yet spent in the mempool.
                let scripts: Vec<ScriptBuf> = vaults.iter().map(Key::script).collect();
                let mempool = devnet.mempool().await.unwrap();
                let coins: Vec<_> = devnet
                    .utxos(&scripts)
                    .await
                    .unwrap()
                    .into_iter()
                    .filter(|u| u.txout.value.to_sat() >= 5_000)
                    .filter(|u| !mempool.iter().any(|t| t.input.iter().any(|i| i.previous_output == u.outpoint)))
                    .collect();
                if !coins.is_empty() {
                    let coin = &coins[rng.gen_range(0..coins.len())];
                    let key = vaults.iter().find(|k| k.script() == coin.txout.script_pubkey).unwrap();
                    let value = coin.txout.value.to_sat();
                    let pay = rng.gen_range(1_000..value - FEE - 1_000);
                    let to = vaults[rng.gen_range(0..3)].script();
                    let change = if rng.gen_bool(0.8) { key.script() } else { stranger.script() };
                    let tx = key.spend(
                        (coin.outpoint, coin.txout.value),
                        vec![
                            TxOut { value: Amount::from_sat(pay), script_pubkey: to },
                            TxOut { value: Amount::from_sat(value - pay - FEE), script_pubkey: change },
                        ],
                    );
                    devnet.submit(tx).unwrap();
                }
            }
            5..=6 => {
                devnet.mine(rng.gen_range(1..=2), None).unwrap();
            }
            7 => {
                devnet.reorg(rng.gen_range(1..=3), rng.gen_range(0..=3)).unwrap();
            }
            _ => {
                let depth = rng.gen_range(1..=2);
                let tip = devnet.tip().await.unwrap().height;
                let mut candidates = Vec::new();
                for height in tip + 1 - depth..=tip {
                    let hash = devnet.block_hash(height).await.unwrap().unwrap();
                    let block = devnet.block(&hash).await.unwrap();
                    candidates.extend(block.txdata.iter().skip(1).map(Transaction::compute_txid));
                }
                let drop: Vec<Txid> = if candidates.is_empty() {
                    Vec::new()
                } else {
                    vec![candidates[rng.gen_range(0..candidates.len())]]
                };
                devnet.reorg_dropping(depth, &drop, rng.gen_range(1..=3)).unwrap();
            }
        }
        if rng.gen_bool(0.3) {
            continue; // let changes pile up between polls
        }

        for event in scanner.poll(&*devnet).await.unwrap() {
            match event {
                DepositEvent::Credit { outpoint, account, amount, instant: fast, .. } => {
                    credits += 1;
                    instant += usize::from(fast);
                    assert!(ledger.insert(outpoint, (account, amount)).is_none(), "step {step}: credited twice");
                }
                DepositEvent::Reverse { outpoint, account, amount, .. } => {
                    reverses += 1;
                    assert_eq!(ledger.remove(&outpoint), Some((account, amount)), "step {step}: bad reverse");
                }
            }
        }
        assert_eq!(ledger, live(&scanner), "step {step}: events and live credits differ");
        // A reorg may take the chain back below the start height: then nothing is scanned.
        let tip = devnet.tip().await.unwrap();
        assert_eq!(scanner.tip(), (tip.height >= start).then_some(tip), "step {step}");

        let (tip, txs) = snapshot(&devnet, start).await;
        let expected = reference(tip, &txs, &accounts);
        let mut fresh = DepositScanner::new(DepositPolicy { confirmations: N }, start);
        for (script, account) in &accounts {
            fresh.watch(script.clone(), *account, *account);
        }
        fresh.poll(&*devnet).await.unwrap();
        assert_eq!(live(&fresh), expected, "step {step}: fresh scanner differs from the reference");

        for (outpoint, value) in &expected {
            assert_eq!(ledger.get(outpoint), Some(value), "step {step}: {outpoint} not credited");
        }
        for outpoint in ledger.keys() {
            let status = devnet.transaction_status(&outpoint.txid).await.unwrap();
            assert_ne!(status, TxStatus::Unknown, "step {step}: {outpoint} credited but gone");
        }
        let total: Amount = ledger.values().map(|(_, a)| *a).sum();
        let owed: Amount = expected.values().map(|(_, a)| *a).sum();
        assert!(total >= owed, "step {step}");
    }
    eprintln!("seed {seed}: {credits} credits ({instant} instant), {reverses} reverses, {} live", ledger.len());
    assert!(credits > 10 && instant > 0 && reverses > 0, "seed {seed}: too few events");
}

#[tokio::test]
async fn credits_match_the_chain_under_random_reorgs() {
    for seed in 0..4 {
        run(seed, 150).await;
    }
}
