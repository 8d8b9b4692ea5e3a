//! Deposit scanner against the embedded devnet: confirmations, instant credit of
//! vault-to-vault transfers, accounts, and reorgs that keep or drop a credited transaction.

use std::sync::Arc;

use bitcoin::{
    absolute, transaction, Amount, OutPoint, ScriptBuf, Sequence, Transaction, TxIn, TxOut,
    Txid, Witness,
};

use super::*;
use crate::single_key::SingleKey;
use crate::chain::{Chain, ChainError};
use crate::devnet::{Devnet, DevnetConfig};

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



    /// Spends `prevouts` (all paying this key) to `outputs`, signed with SIGHASH_ALL.
    fn spend(&self, prevouts: &[(OutPoint, Amount)], outputs: Vec<TxOut>) -> Transaction {
        let mut tx = Transaction {
            version: transaction::Version::TWO,
            lock_time: absolute::LockTime::ZERO,
            input: prevouts
                .iter()
                .map(|(op, _)| TxIn {
                    previous_output: *op,
                    script_sig: ScriptBuf::new(),
                    sequence: Sequence::ENABLE_RBF_NO_LOCKTIME,
                    witness: Witness::new(),
                })
                .collect(),
            output: outputs,
        };
        let values: Vec<Amount> = prevouts.iter().map(|(_, v)| *v).collect();
        self.sign(&mut tx, &values);
        tx
    }
}

const FEE: Amount = Amount::from_sat(1_000);

fn out(script: ScriptBuf, sat: u64) -> TxOut {
    TxOut { value: Amount::from_sat(sat), script_pubkey: script }
}

fn devnet() -> Arc<Devnet> {
    Devnet::new(DevnetConfig::default()).unwrap()
}

/// A scanner with policy `n` starting above the devnet's current tip.
async fn scanner(devnet: &Devnet, n: u32) -> DepositScanner {
    let tip = devnet.tip().await.unwrap();
    DepositScanner::new(DepositPolicy { confirmations: n }, tip.height + 1)
}

/// The output of `txid` paying `script`.
async fn outpoint_to(devnet: &Devnet, txid: Txid, script: &ScriptBuf) -> (OutPoint, Amount) {
    let tx = devnet
        .mempool()
        .await
        .unwrap()
        .into_iter()
        .find(|t| t.compute_txid() == txid)
        .expect("transaction in the mempool");
    let vout = tx.output.iter().position(|o| &o.script_pubkey == script).unwrap();
    (OutPoint { txid, vout: vout as u32 }, tx.output[vout].value)
}

fn credit(outpoint: OutPoint, account: u64, amount: Amount, instant: bool, confirmations: u32) -> DepositEvent {
    DepositEvent::Credit { outpoint, account, holder: account, amount, instant, confirmations }
}

/// A final (N-confirmed, credited) deposit of `sat` to `key`, watched as `account`.
async fn funded(
    devnet: &Devnet,
    scanner: &mut DepositScanner,
    key: &Key,
    account: u64,
    sat: u64,
) -> (OutPoint, Amount) {
    scanner.watch(key.script(), account, account);
    let txid = devnet.faucet(&key.script(), Amount::from_sat(sat)).unwrap();
    let coin = outpoint_to(devnet, txid, &key.script()).await;
    devnet.mine(scanner.policy().confirmations, None).unwrap();
    let events = scanner.poll(devnet).await.unwrap();
    assert_eq!(events.len(), 1, "{events:?}");
    coin
}

#[tokio::test]
async fn external_deposit_waits_for_confirmations() {
    let devnet = devnet();
    let mut scanner = scanner(&devnet, 2).await;
    let key = Key::new(1);
    scanner.watch(key.script(), 7, 7);
    let amount = Amount::from_sat(1_234_567);
    let txid = devnet.faucet(&key.script(), amount).unwrap();
    let (outpoint, _) = outpoint_to(&devnet, txid, &key.script()).await;

    assert_eq!(scanner.poll(&*devnet).await.unwrap(), vec![], "0 confirmations");
    devnet.mine(1, None).unwrap();
    assert_eq!(scanner.poll(&*devnet).await.unwrap(), vec![], "1 confirmation");
    devnet.mine(1, None).unwrap();
    assert_eq!(scanner.poll(&*devnet).await.unwrap(), vec![credit(outpoint, 7, amount, false, 2)]);
    assert_eq!(scanner.poll(&*devnet).await.unwrap(), vec![]);
    devnet.mine(3, None).unwrap();
    assert_eq!(scanner.poll(&*devnet).await.unwrap(), vec![]);
    assert_eq!(scanner.credited().collect::<Vec<_>>(), vec![(&outpoint, 7, amount)]);
    assert_eq!(scanner.tip(), Some(devnet.tip().await.unwrap()));
    let event = credit(outpoint, 7, amount, false, 2);
    assert_eq!(event.reference(), format!("chain:{txid}:{}", outpoint.vout));
}

#[tokio::test]
async fn vault_to_vault_transfer_is_instant() {
    let devnet = devnet();
    let mut scanner = scanner(&devnet, 3).await;
    let (alice, bob) = (Key::new(1), Key::new(2));
    let coin = funded(&devnet, &mut scanner, &alice, 1, 1_000_000).await;
    scanner.watch(bob.script(), 2, 2);

    let tx = alice.spend(&[coin], vec![out(bob.script(), 400_000), out(alice.script(), 600_000 - FEE.to_sat())]);
    let txid = devnet.submit(tx).unwrap();
    let events = scanner.poll(&*devnet).await.unwrap();
    assert_eq!(
        events,
        vec![
            credit(OutPoint { txid, vout: 0 }, 2, Amount::from_sat(400_000), true, 0),
            credit(OutPoint { txid, vout: 1 }, 1, Amount::from_sat(599_000), true, 0),
        ]
    );

    // A chain of co-signed transactions in the mempool is instant too.
    let child = bob.spend(
        &[(OutPoint { txid, vout: 0 }, Amount::from_sat(400_000))],
        vec![out(alice.script(), 400_000 - FEE.to_sat())],
    );
    let child = devnet.submit(child).unwrap();
    assert_eq!(
        scanner.poll(&*devnet).await.unwrap(),
        vec![credit(OutPoint { txid: child, vout: 0 }, 1, Amount::from_sat(399_000), true, 0)]
    );

    // Mining them credits nothing more.
    devnet.mine(1, None).unwrap();
    assert_eq!(scanner.poll(&*devnet).await.unwrap(), vec![]);
    devnet.mine(5, None).unwrap();
    assert_eq!(scanner.poll(&*devnet).await.unwrap(), vec![]);
    assert_eq!(scanner.credited().count(), 4);
}

#[tokio::test]
async fn spending_a_vault_output_that_is_not_final_is_not_instant() {
    let devnet = devnet();
    let mut scanner = scanner(&devnet, 3).await;
    let (alice, bob) = (Key::new(1), Key::new(2));
    scanner.watch(alice.script(), 1, 1);
    scanner.watch(bob.script(), 2, 2);
    // An external deposit with 1 of 3 confirmations: its sender could still double-spend it.
    let parent = devnet.faucet(&alice.script(), Amount::from_sat(500_000)).unwrap();
    let coin = outpoint_to(&devnet, parent, &alice.script()).await;
    devnet.mine(1, None).unwrap();
    let tx = alice.spend(&[coin], vec![out(bob.script(), 500_000 - FEE.to_sat())]);
    let txid = devnet.submit(tx).unwrap();
    assert_eq!(scanner.poll(&*devnet).await.unwrap(), vec![]);

    // Two more blocks: the parent is final, so the (now 1-confirmed) child becomes instant.
    devnet.mine(2, None).unwrap();
    assert_eq!(
        scanner.poll(&*devnet).await.unwrap(),
        vec![
            credit(coin.0, 1, coin.1, false, 3),
            credit(OutPoint { txid, vout: 0 }, 2, Amount::from_sat(499_000), true, 2),
        ]
    );
}

#[tokio::test]
async fn unwatched_outputs_are_ignored_and_outputs_credit_their_own_accounts() {
    let devnet = devnet();
    let mut scanner = scanner(&devnet, 1).await;
    let (alice, bob, carol, stranger) = (Key::new(1), Key::new(2), Key::new(3), Key::new(4));
    // An external deposit to an unwatched script: nothing, ever.
    devnet.faucet(&stranger.script(), Amount::from_sat(300_000)).unwrap();
    devnet.mine(2, None).unwrap();
    assert_eq!(scanner.poll(&*devnet).await.unwrap(), vec![]);

    let coin = funded(&devnet, &mut scanner, &alice, 1, 1_000_000).await;
    scanner.watch(bob.script(), 2, 2);
    scanner.watch(carol.script(), 3, 3);
    let tx = alice.spend(
        &[coin],
        vec![out(bob.script(), 100_000), out(stranger.script(), 200_000), out(carol.script(), 300_000)],
    );
    let txid = devnet.submit(tx).unwrap();
    assert_eq!(
        scanner.poll(&*devnet).await.unwrap(),
        vec![
            credit(OutPoint { txid, vout: 0 }, 2, Amount::from_sat(100_000), true, 0),
            credit(OutPoint { txid, vout: 2 }, 3, Amount::from_sat(300_000), true, 0),
        ]
    );
}

#[tokio::test]
async fn reorg_dropping_a_credited_deposit_reverses_it_once() {
    let devnet = devnet();
    let mut scanner = scanner(&devnet, 1).await;
    let key = Key::new(1);
    scanner.watch(key.script(), 9, 9);
    let amount = Amount::from_sat(777_000);
    let txid = devnet.faucet(&key.script(), amount).unwrap();
    let (outpoint, _) = outpoint_to(&devnet, txid, &key.script()).await;
    devnet.mine(1, None).unwrap();
    assert_eq!(scanner.poll(&*devnet).await.unwrap(), vec![credit(outpoint, 9, amount, false, 1)]);

    devnet.reorg_dropping(1, &[txid], 2).unwrap();
    assert_eq!(scanner.poll(&*devnet).await.unwrap(), vec![DepositEvent::Reverse { outpoint, account: 9, holder: 9, amount }]);
    assert_eq!(scanner.poll(&*devnet).await.unwrap(), vec![]);
    assert_eq!(scanner.credited().count(), 0);
    assert_eq!(scanner.tip(), Some(devnet.tip().await.unwrap()));
}

#[tokio::test]
async fn reorg_keeping_a_credited_deposit_does_not_reverse() {
    let devnet = devnet();
    let mut scanner = scanner(&devnet, 2).await;
    let key = Key::new(1);
    scanner.watch(key.script(), 9, 9);
    let amount = Amount::from_sat(50_000);
    let txid = devnet.faucet(&key.script(), amount).unwrap();
    devnet.mine(2, None).unwrap();
    assert_eq!(scanner.poll(&*devnet).await.unwrap().len(), 1);

    // Back to the mempool (0 confirmations, below the policy): still credited.
    devnet.reorg(2, 0).unwrap();
    assert_eq!(devnet.transaction_status(&txid).await.unwrap(), crate::chain::TxStatus::InMempool);
    assert_eq!(scanner.poll(&*devnet).await.unwrap(), vec![]);
    // Re-mined on a new branch: still nothing.
    devnet.reorg(0, 1).unwrap();
    assert_eq!(scanner.poll(&*devnet).await.unwrap(), vec![]);
    devnet.reorg(1, 3).unwrap();
    assert_eq!(scanner.poll(&*devnet).await.unwrap(), vec![]);
    assert_eq!(scanner.credited().count(), 1);
    assert_eq!(scanner.tip(), Some(devnet.tip().await.unwrap()));
}

#[tokio::test]
async fn dropping_an_instant_transfer_reverses_every_output() {
    let devnet = devnet();
    let mut scanner = scanner(&devnet, 1).await;
    let (alice, bob) = (Key::new(1), Key::new(2));
    let coin = funded(&devnet, &mut scanner, &alice, 1, 1_000_000).await;
    scanner.watch(bob.script(), 2, 2);
    let tx = alice.spend(&[coin], vec![out(bob.script(), 400_000), out(alice.script(), 599_000)]);
    let txid = devnet.submit(tx).unwrap();
    assert_eq!(scanner.poll(&*devnet).await.unwrap().len(), 2);
    devnet.mine(1, None).unwrap();
    assert_eq!(scanner.poll(&*devnet).await.unwrap(), vec![]);

    devnet.reorg_dropping(1, &[txid], 1).unwrap();
    assert_eq!(
        scanner.poll(&*devnet).await.unwrap(),
        vec![
            DepositEvent::Reverse {
                outpoint: OutPoint { txid, vout: 0 },
                account: 2,
                holder: 2,
                amount: Amount::from_sat(400_000)
            },
            DepositEvent::Reverse {
                outpoint: OutPoint { txid, vout: 1 },
                account: 1,
                holder: 1,
                amount: Amount::from_sat(599_000)
            },
        ]
    );
    // The funding deposit is untouched.
    assert_eq!(scanner.credited().map(|(op, _, _)| *op).collect::<Vec<_>>(), vec![coin.0]);
}

#[tokio::test]
async fn reorg_deeper_than_the_window_rescans_without_double_credit() {
    let devnet = devnet();
    let mut scanner = scanner(&devnet, 1).await;
    let key = Key::new(1);
    scanner.watch(key.script(), 5, 5);
    let kept = devnet.faucet(&key.script(), Amount::from_sat(10_000)).unwrap();
    devnet.mine(1, None).unwrap();
    assert_eq!(scanner.poll(&*devnet).await.unwrap().len(), 1);
    let dropped = devnet.faucet(&key.script(), Amount::from_sat(20_000)).unwrap();
    devnet.mine(REORG_WINDOW + 5, None).unwrap();
    assert_eq!(scanner.poll(&*devnet).await.unwrap().len(), 1);

    devnet.reorg_dropping(REORG_WINDOW + 6, &[dropped], REORG_WINDOW + 7).unwrap();
    let events = scanner.poll(&*devnet).await.unwrap();
    assert_eq!(events.len(), 1, "{events:?}");
    assert!(matches!(events[0], DepositEvent::Reverse { outpoint, .. } if outpoint.txid == dropped));
    assert_eq!(scanner.credited().map(|(op, _, _)| op.txid).collect::<Vec<_>>(), vec![kept]);
    assert_eq!(scanner.tip(), Some(devnet.tip().await.unwrap()));
}

#[tokio::test]
async fn coinbase_to_a_vault_waits_for_confirmations() {
    let devnet = devnet();
    let mut scanner = scanner(&devnet, 2).await;
    let key = Key::new(1);
    scanner.watch(key.script(), 4, 4);
    let hash = devnet.mine(1, Some(key.script())).unwrap()[0];
    assert_eq!(scanner.poll(&*devnet).await.unwrap(), vec![]);
    devnet.mine(1, None).unwrap();
    let coinbase = devnet.block(&hash).await.unwrap().txdata[0].clone();
    let outpoint = OutPoint { txid: coinbase.compute_txid(), vout: 0 };
    assert_eq!(scanner.poll(&*devnet).await.unwrap(), vec![credit(outpoint, 4, coinbase.output[0].value, false, 2)]);
}

/// The devnet, with calls that fail on demand.
struct Flaky {
    inner: Arc<Devnet>,
    fail: std::sync::atomic::AtomicBool,
}

impl Flaky {
    fn check(&self) -> crate::chain::Result<()> {
        if self.fail.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(ChainError::Transport("unplugged".into()));
        }
        Ok(())
    }

    fn set(&self, fail: bool) {
        self.fail.store(fail, std::sync::atomic::Ordering::SeqCst);
    }
}

#[async_trait::async_trait]
impl Chain for Flaky {
    fn network(&self) -> bitcoin::Network {
        self.inner.network()
    }
    async fn tip(&self) -> crate::chain::Result<crate::chain::BlockRef> {
        self.inner.tip().await
    }
    async fn block_hash(&self, height: u32) -> crate::chain::Result<Option<bitcoin::BlockHash>> {
        self.inner.block_hash(height).await
    }
    async fn block(&self, hash: &bitcoin::BlockHash) -> crate::chain::Result<bitcoin::Block> {
        self.check()?;
        self.inner.block(hash).await
    }
    async fn mempool(&self) -> crate::chain::Result<Vec<Transaction>> {
        self.inner.mempool().await
    }
    async fn transaction_status(&self, txid: &Txid) -> crate::chain::Result<crate::chain::TxStatus> {
        self.check()?;
        self.inner.transaction_status(txid).await
    }
    async fn broadcast(&self, tx: &Transaction) -> crate::chain::Result<Txid> {
        self.inner.broadcast(tx).await
    }
    async fn test_mempool_accept(&self, tx: &Transaction) -> crate::chain::Result<()> {
        self.inner.test_mempool_accept(tx).await
    }
    async fn fee_rate(&self, target_blocks: u16) -> crate::chain::Result<bitcoin::FeeRate> {
        self.inner.fee_rate(target_blocks).await
    }
    async fn utxos(&self, scripts: &[ScriptBuf]) -> crate::chain::Result<Vec<crate::chain::Utxo>> {
        self.inner.utxos(scripts).await
    }
}

#[tokio::test]
async fn backend_errors_lose_no_event() {
    let devnet = devnet();
    let chain = Flaky { inner: devnet.clone(), fail: false.into() };
    let mut scanner = scanner(&devnet, 1).await;
    let key = Key::new(1);
    scanner.watch(key.script(), 3, 3);
    let amount = Amount::from_sat(60_000);
    let txid = devnet.faucet(&key.script(), amount).unwrap();
    let (outpoint, _) = outpoint_to(&devnet, txid, &key.script()).await;
    devnet.mine(1, None).unwrap();

    chain.set(true);
    assert!(matches!(scanner.poll(&chain).await, Err(ChainError::Transport(_))));
    chain.set(false);
    assert_eq!(scanner.poll(&chain).await.unwrap(), vec![credit(outpoint, 3, amount, false, 1)]);

    devnet.reorg_dropping(1, &[txid], 1).unwrap();
    // The poll fails after rolling back, before the new block is read: the next one reverses.
    chain.set(true);
    assert!(scanner.poll(&chain).await.is_err());
    chain.set(false);
    assert_eq!(scanner.poll(&chain).await.unwrap(), vec![DepositEvent::Reverse { outpoint, account: 3, holder: 3, amount }]);
    assert_eq!(scanner.poll(&chain).await.unwrap(), vec![]);
}
