//! One suite for the chain port, run against both adapters: the embedded devnet and a
//! real regtest bitcoind started by the test. Scenarios are written once against
//! `Arc<dyn Chain>` plus [`TestNet`], the few test-only powers (mine, fund, reorg) each
//! backend provides its own way.
//!
//! bitcoind comes from `BITCOIND_EXE`, else `../shared/bin/bitcoind` next to the repo;
//! when neither exists the bitcoind tests fail and say to run `scripts/bitcoind`.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bitcoin::hashes::Hash as _;
use bitcoin::{
    absolute, transaction, Amount, BlockHash, FeeRate, Network, OutPoint, ScriptBuf,
    Sequence, Transaction, TxIn, TxOut, Txid, Witness,
};
use tandem_settlement::{SingleKey, 
    Bitcoind, BitcoindAuth, Chain, ChainError, Devnet, DevnetConfig, RegtestNode, TxStatus,
};

// ---------------------------------------------------------------------------------------
// Test-side keys and transactions
// ---------------------------------------------------------------------------------------

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


    /// Keys for the coinbases of test-mined blocks; never equal to a [`Key::new`] key.
    fn miner(n: u32) -> Self {
        let mut secret = [0x5a; 32];
        secret[28..].copy_from_slice(&n.to_be_bytes());
        Key(SingleKey::from_secret_bytes(secret).expect("valid key"))
    }



    /// Spends `coin` (paying this key) to `outputs` plus, last, whatever is left after a fee
    /// of `sat_per_vb` to `change_to`.
    fn spend(
        &self,
        coin: &(OutPoint, TxOut),
        outputs: Vec<TxOut>,
        change_to: &ScriptBuf,
        sat_per_vb: u64,
    ) -> Transaction {
        // Final sequence: does not opt in to replacement.
        self.spend_with_sequence(coin, outputs, change_to, sat_per_vb, Sequence::MAX)
    }

    fn spend_with_sequence(
        &self,
        coin: &(OutPoint, TxOut),
        mut outputs: Vec<TxOut>,
        change_to: &ScriptBuf,
        sat_per_vb: u64,
        sequence: Sequence,
    ) -> Transaction {
        let paid: u64 = outputs.iter().map(|o| o.value.to_sat()).sum();
        outputs.push(TxOut { value: Amount::ZERO, script_pubkey: change_to.clone() });
        let mut tx = Transaction {
            version: transaction::Version::TWO,
            lock_time: absolute::LockTime::ZERO,
            input: vec![TxIn {
                previous_output: coin.0,
                script_sig: ScriptBuf::new(),
                sequence,
                witness: Witness::new(),
            }],
            output: outputs,
        };
        // A low-R signature takes 71 bytes with its sighash flag, now and then 70. Size the fee
        // for 71 and, if the signature comes out shorter, sign again under another lock time
        // (a height long past, so the transaction stays final): the fee is then exact.
        tx.input[0].witness = Witness::from_slice(&[vec![0u8; 71], self.0.public_key().to_bytes().to_vec()]);
        let fee = tx.vsize() as u64 * sat_per_vb;
        tx.output.last_mut().unwrap().value = Amount::from_sat(coin.1.value.to_sat() - paid - fee);
        for nonce in 0..100 {
            tx.lock_time = absolute::LockTime::from_consensus(nonce);
            self.sign(&mut tx, &[coin.1.value]);
            if tx.input[0].witness.nth(0).map(<[u8]>::len) == Some(71) {
                return tx;
            }
        }
        panic!("no 71-byte signature in 100 attempts");
    }
}

fn to(key: &Key, sat: u64) -> TxOut {
    TxOut { value: Amount::from_sat(sat), script_pubkey: key.script() }
}

// ---------------------------------------------------------------------------------------
// What each backend provides to the scenarios
// ---------------------------------------------------------------------------------------

#[async_trait]
trait TestNet: Send + Sync {
    fn chain(&self) -> Arc<dyn Chain>;
    /// Mines `n` blocks with whatever is in the mempool.
    async fn mine(&self, n: u32) -> Vec<BlockHash>;
    /// Pays `amount` to `script` and confirms it; returns the paying transaction's id.
    async fn fund(&self, script: &ScriptBuf, amount: Amount) -> Txid;
    /// Disconnects block `hash` and everything above it, then mines `then_mine` blocks.
    async fn reorg_from(&self, hash: BlockHash, then_mine: u32);
}

struct DevnetNet(Arc<Devnet>);

impl DevnetNet {
    fn new() -> Self {
        DevnetNet(Devnet::new(DevnetConfig::default()).expect("devnet starts"))
    }
}

#[async_trait]
impl TestNet for DevnetNet {
    fn chain(&self) -> Arc<dyn Chain> {
        self.0.clone()
    }

    async fn mine(&self, n: u32) -> Vec<BlockHash> {
        self.0.mine(n, None).unwrap()
    }

    async fn fund(&self, script: &ScriptBuf, amount: Amount) -> Txid {
        let txid = self.0.faucet(script, amount).unwrap();
        self.0.mine(1, None).unwrap();
        txid
    }

    async fn reorg_from(&self, hash: BlockHash, then_mine: u32) {
        let tip = self.0.tip().await.unwrap();
        let mut height = tip.height;
        while self.0.block_hash(height).await.unwrap() != Some(hash) {
            height = height.checked_sub(1).expect("block to reorg from is in the best chain");
        }
        self.0.reorg(tip.height - height + 1, then_mine).unwrap();
    }
}

/// A regtest bitcoind in a temporary datadir ([`RegtestNode`]), stopped on drop.
struct BitcoindNet {
    rpc: Arc<Bitcoind>,
    node: RegtestNode,
    funder: Key,
    /// The funder's spendable coin: the first coinbase, then each funding's change.
    coin: Mutex<(OutPoint, TxOut)>,
    /// Coinbases of blocks mined by the tests go to fresh keys, so a block re-mined after
    /// `invalidateblock` never repeats the invalidated one.
    next_miner_seed: AtomicU32,
}

impl BitcoindNet {
    /// A node funded for the scenarios: a mature coinbase for the funder.
    async fn start() -> Self {
        let net = Self::start_empty().await;
        // One coinbase to the funder, matured by 100 blocks to throwaway keys.
        let first = net.rpc.generate_to(&net.funder.script(), 1).await.unwrap()[0];
        let coinbase = net.rpc.block(&first).await.unwrap().txdata[0].clone();
        *net.coin.lock().unwrap() = (OutPoint { txid: coinbase.compute_txid(), vout: 0 }, coinbase.output[0].clone());
        net.mine(100).await;
        net
    }

    /// A node with only the genesis block, user/password auth.
    async fn start_empty() -> Self {
        Self::launch(false).await
    }

    /// A node with only the genesis block; `cookie` makes it write an auth cookie instead
    /// of taking a user and password.
    async fn launch(cookie: bool) -> Self {
        let node = RegtestNode::start(cookie).await.unwrap_or_else(|e| panic!("{e}"));
        let rpc = Arc::new(node.client().await.unwrap());
        BitcoindNet {
            rpc,
            node,
            funder: Key::new(200),
            coin: Mutex::new((OutPoint::null(), TxOut::NULL)),
            next_miner_seed: AtomicU32::new(0),
        }
    }

    /// Stops the node (RPC `stop`, then waits for it to exit).
    async fn stop(self) {
        drop(self.node);
    }
}

#[async_trait]
impl TestNet for BitcoindNet {
    fn chain(&self) -> Arc<dyn Chain> {
        self.rpc.clone()
    }

    async fn mine(&self, n: u32) -> Vec<BlockHash> {
        let seed = self.next_miner_seed.fetch_add(1, Ordering::Relaxed);
        self.rpc.generate_to(&Key::miner(seed).script(), n).await.unwrap()
    }

    async fn fund(&self, script: &ScriptBuf, amount: Amount) -> Txid {
        let coin = self.coin.lock().unwrap().clone();
        let payment = TxOut { value: amount, script_pubkey: script.clone() };
        let tx = self.funder.spend(&coin, vec![payment], &self.funder.script(), 2);
        let txid = self.rpc.broadcast(&tx).await.unwrap();
        *self.coin.lock().unwrap() = (OutPoint { txid, vout: 1 }, tx.output[1].clone());
        self.mine(1).await;
        txid
    }

    async fn reorg_from(&self, hash: BlockHash, then_mine: u32) {
        self.rpc.invalidate_block(&hash).await.unwrap();
        if then_mine > 0 {
            self.mine(then_mine).await;
        }
    }
}

// ---------------------------------------------------------------------------------------
// Scenarios
// ---------------------------------------------------------------------------------------

/// A confirmed coin of `key` worth `sat`.
async fn coin_of(net: &dyn TestNet, key: &Key, sat: u64) -> (OutPoint, TxOut) {
    let txid = net.fund(&key.script(), Amount::from_sat(sat)).await;
    let utxos = net.chain().utxos(&[key.script()]).await.unwrap();
    let utxo = utxos.into_iter().find(|u| u.outpoint.txid == txid).expect("funded output is in the UTXO set");
    (utxo.outpoint, utxo.txout)
}

async fn tip_advances_when_mining(net: &dyn TestNet) {
    let chain = net.chain();
    assert_eq!(chain.network(), Network::Regtest);
    let before = chain.tip().await.unwrap();
    let mined = net.mine(3).await;
    let after = chain.tip().await.unwrap();
    assert_eq!(after.height, before.height + 3);
    assert_eq!(after.hash, *mined.last().unwrap());
    assert_eq!(chain.block_hash(after.height).await.unwrap(), Some(after.hash));
    assert_eq!(chain.block_hash(after.height + 1).await.unwrap(), None);
    let block = chain.block(&after.hash).await.unwrap();
    assert_eq!(block.block_hash(), after.hash);
    assert_eq!(Some(block.header.prev_blockhash), chain.block_hash(after.height - 1).await.unwrap());
    assert_eq!(block.bip34_block_height().unwrap(), u64::from(after.height));
    assert!(matches!(chain.block(&BlockHash::all_zeros()).await, Err(ChainError::NotFound(_))));
}

async fn funded_output_shows_in_utxos(net: &dyn TestNet) {
    let chain = net.chain();
    let key = Key::new(1);
    assert!(chain.utxos(&[key.script()]).await.unwrap().is_empty());
    let txid = net.fund(&key.script(), Amount::from_sat(123_456)).await;
    let tip = chain.tip().await.unwrap();
    let utxos = chain.utxos(&[key.script(), Key::new(2).script()]).await.unwrap();
    assert_eq!(utxos.len(), 1);
    assert_eq!(utxos[0].outpoint.txid, txid);
    assert_eq!(utxos[0].txout, to(&key, 123_456));
    assert_eq!(utxos[0].height, tip.height);
    assert!(chain.utxos(&[]).await.unwrap().is_empty());
}

async fn spend_goes_from_mempool_to_confirmed(net: &dyn TestNet) {
    let chain = net.chain();
    let (a, b) = (Key::new(1), Key::new(2));
    let coin = coin_of(net, &a, 100_000).await;
    let tx = a.spend(&coin, vec![to(&b, 60_000)], &a.script(), 2);
    let txid = tx.compute_txid();
    assert_eq!(chain.transaction_status(&txid).await.unwrap(), TxStatus::Unknown);
    chain.test_mempool_accept(&tx).await.unwrap();
    assert_eq!(chain.broadcast(&tx).await.unwrap(), txid);
    // Broadcasting again is harmless (rebroadcast after a restart or a reorg).
    assert_eq!(chain.broadcast(&tx).await.unwrap(), txid);
    assert!(chain.mempool().await.unwrap().contains(&tx));
    assert_eq!(chain.transaction_status(&txid).await.unwrap(), TxStatus::InMempool);

    let block_hash = net.mine(1).await[0];
    let height = chain.tip().await.unwrap().height;
    assert_eq!(
        chain.transaction_status(&txid).await.unwrap(),
        TxStatus::Confirmed { height, block_hash, confirmations: 1 }
    );
    assert!(chain.block(&block_hash).await.unwrap().txdata.contains(&tx));
    assert!(!chain.mempool().await.unwrap().contains(&tx));
    net.mine(2).await;
    assert_eq!(
        chain.transaction_status(&txid).await.unwrap(),
        TxStatus::Confirmed { height, block_hash, confirmations: 3 }
    );
    assert_eq!(chain.utxos(&[b.script()]).await.unwrap()[0].txout, to(&b, 60_000));
}

async fn double_spend_is_rejected(net: &dyn TestNet) {
    let chain = net.chain();
    let (a, b, c) = (Key::new(1), Key::new(2), Key::new(3));
    let coin = coin_of(net, &a, 100_000).await;
    let first = a.spend(&coin, vec![to(&b, 50_000)], &a.script(), 3);
    chain.broadcast(&first).await.unwrap();
    // Pays less than the first: no node replaces it.
    let second = a.spend(&coin, vec![to(&c, 50_000)], &a.script(), 2);
    let second_txid = second.compute_txid();
    assert!(
        matches!(chain.test_mempool_accept(&second).await, Err(ChainError::Rejected { txid, .. }) if txid == second_txid)
    );
    assert!(matches!(chain.broadcast(&second).await, Err(ChainError::Rejected { txid, .. }) if txid == second_txid));
    net.mine(1).await;
    match chain.broadcast(&second).await {
        Err(ChainError::Rejected { txid, reason }) => {
            assert_eq!(txid, second_txid);
            assert!(reason.contains("missingorspent") || reason.contains("missing"), "{reason}");
        }
        other => panic!("double spend of a confirmed coin accepted: {other:?}"),
    }
    assert_eq!(chain.transaction_status(&second_txid).await.unwrap(), TxStatus::Unknown);
}

async fn bad_signature_is_rejected(net: &dyn TestNet) {
    let chain = net.chain();
    let (a, b) = (Key::new(1), Key::new(2));
    let coin = coin_of(net, &a, 100_000).await;
    let mut tx = a.spend(&coin, vec![to(&b, 50_000)], &a.script(), 2);
    // Commit to an amount one satoshi off: a valid-looking signature over the wrong sighash.
    a.sign(&mut tx, &[coin.1.value + Amount::from_sat(1)]);
    assert!(matches!(chain.test_mempool_accept(&tx).await, Err(ChainError::Rejected { .. })));
    match chain.broadcast(&tx).await {
        Err(ChainError::Rejected { reason, .. }) => assert!(reason.contains("script-verify-flag-failed"), "{reason}"),
        other => panic!("bad signature accepted: {other:?}"),
    }
    assert!(!chain.mempool().await.unwrap().contains(&tx));
}

async fn dust_output_is_rejected(net: &dyn TestNet) {
    let chain = net.chain();
    let (a, b) = (Key::new(1), Key::new(2));
    let coin = coin_of(net, &a, 100_000).await;
    // 294 sat is the smallest P2WPKH output worth spending at 3 sat/vB.
    let dusty = a.spend(&coin, vec![to(&b, 293)], &a.script(), 2);
    match chain.broadcast(&dusty).await {
        Err(ChainError::Rejected { reason, .. }) => assert!(reason.starts_with("dust"), "{reason}"),
        other => panic!("dust accepted: {other:?}"),
    }
    let fine = a.spend(&coin, vec![to(&b, 294)], &a.script(), 2);
    chain.broadcast(&fine).await.unwrap();
}

async fn replacement_evicts_the_original(net: &dyn TestNet) {
    let chain = net.chain();
    let (a, b, c) = (Key::new(1), Key::new(2), Key::new(3));
    let coin = coin_of(net, &a, 100_000).await;
    let original = a.spend_with_sequence(&coin, vec![to(&b, 50_000)], &a.script(), 2, Sequence::ENABLE_RBF_NO_LOCKTIME);
    chain.broadcast(&original).await.unwrap();
    // Twice the rate on the same size: pays the original's fee plus 2 sat/vB of its own.
    let replacement = a.spend_with_sequence(&coin, vec![to(&c, 50_000)], &a.script(), 4, Sequence::MAX);
    chain.test_mempool_accept(&replacement).await.unwrap();
    let txid = chain.broadcast(&replacement).await.unwrap();
    let mempool = chain.mempool().await.unwrap();
    assert!(mempool.contains(&replacement) && !mempool.contains(&original));
    assert_eq!(chain.transaction_status(&original.compute_txid()).await.unwrap(), TxStatus::Unknown);
    net.mine(1).await;
    assert!(matches!(chain.transaction_status(&txid).await.unwrap(), TxStatus::Confirmed { confirmations: 1, .. }));
}

async fn fee_rate_is_at_least_one_sat_per_vbyte(net: &dyn TestNet) {
    let chain = net.chain();
    for target in [1, 6, 144] {
        let rate = chain.fee_rate(target).await.unwrap();
        assert!(rate >= FeeRate::from_sat_per_vb_u32(1), "target {target}: {rate}");
    }
}

async fn reorg_unconfirms_and_reconfirms(net: &dyn TestNet) {
    let chain = net.chain();
    let (a, b) = (Key::new(1), Key::new(2));
    let coin = coin_of(net, &a, 100_000).await;
    let tx = a.spend(&coin, vec![to(&b, 70_000)], &a.script(), 2);
    let txid = chain.broadcast(&tx).await.unwrap();
    let hash = net.mine(1).await[0];
    let height = chain.tip().await.unwrap().height;
    assert!(
        matches!(chain.transaction_status(&txid).await.unwrap(), TxStatus::Confirmed { height: h, .. } if h == height)
    );

    net.reorg_from(hash, 0).await;
    assert_eq!(chain.tip().await.unwrap().height, height - 1);
    assert_eq!(chain.block_hash(height).await.unwrap(), None);
    let status = chain.transaction_status(&txid).await.unwrap();
    assert!(matches!(status, TxStatus::InMempool | TxStatus::Unknown), "{status:?}");
    // Its output left the confirmed set with the block.
    assert!(chain.utxos(&[b.script()]).await.unwrap().is_empty());
    if status == TxStatus::Unknown {
        chain.broadcast(&tx).await.unwrap();
    }

    let new_hashes = net.mine(2).await;
    assert_ne!(chain.block_hash(height).await.unwrap(), Some(hash));
    assert_eq!(chain.block_hash(height).await.unwrap(), Some(new_hashes[0]));
    assert_eq!(
        chain.transaction_status(&txid).await.unwrap(),
        TxStatus::Confirmed { height, block_hash: new_hashes[0], confirmations: 2 }
    );
}

/// Runs a scenario on the devnet and on a fresh bitcoind.
macro_rules! on_both_chains {
    ($($scenario:ident),* $(,)?) => {$(
        mod $scenario {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn devnet() {
                super::$scenario(&super::DevnetNet::new()).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn bitcoind() {
                let net = super::BitcoindNet::start().await;
                super::$scenario(&net).await;
                net.stop().await;
            }
        }
    )*};
}

on_both_chains!(
    tip_advances_when_mining,
    funded_output_shows_in_utxos,
    spend_goes_from_mempool_to_confirmed,
    double_spend_is_rejected,
    bad_signature_is_rejected,
    dust_output_is_rejected,
    replacement_evicts_the_original,
    fee_rate_is_at_least_one_sat_per_vbyte,
    reorg_unconfirms_and_reconfirms,
);

/// The devnet's blocks, transactions and all, are valid for Bitcoin Core: a fresh regtest
/// bitcoind (same genesis) accepts every one of them and ends on the same tip.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devnet_blocks_are_accepted_by_bitcoind() {
    let devnet = Devnet::new(DevnetConfig::default()).unwrap();
    let (a, b) = (Key::new(1), Key::new(2));
    // Faucet payments, a spend of one, an unconfirmed parent and child in one block, and a
    // reorg on the way: everything that shapes blocks.
    devnet.faucet(&a.script(), Amount::from_sat(200_000)).unwrap();
    devnet.faucet(&b.script(), Amount::from_sat(30_000)).unwrap();
    devnet.mine(1, None).unwrap();
    let utxo = devnet.utxos(&[a.script()]).await.unwrap().remove(0);
    let parent = a.spend(&(utxo.outpoint, utxo.txout), vec![to(&b, 120_000)], &a.script(), 3);
    devnet.broadcast(&parent).await.unwrap();
    let change = (OutPoint { txid: parent.compute_txid(), vout: 1 }, parent.output[1].clone());
    let child = a.spend(&change, vec![to(&b, 40_000)], &a.script(), 5);
    devnet.broadcast(&child).await.unwrap();
    devnet.mine(1, Some(b.script())).unwrap();
    devnet.reorg(1, 2).unwrap();
    assert!(matches!(devnet.transaction_status(&child.compute_txid()).await.unwrap(), TxStatus::Confirmed { .. }));

    let node = BitcoindNet::start_empty().await;
    let tip = devnet.tip().await.unwrap();
    for height in 1..=tip.height {
        let hash = devnet.block_hash(height).await.unwrap().unwrap();
        let block = devnet.block(&hash).await.unwrap();
        node.rpc.submit_block(&block).await.unwrap_or_else(|e| panic!("bitcoind refused devnet block {height}: {e}"));
    }
    assert_eq!(node.rpc.tip().await.unwrap(), tip);
    node.stop().await;
}

/// Cookie authentication works, and a node on another chain than configured is refused at
/// connect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bitcoind_cookie_auth_and_network_check() {
    let node = BitcoindNet::launch(true).await;
    let mut config = node.rpc.config().clone();
    assert!(matches!(config.auth, BitcoindAuth::CookieFile(_)));
    config.network = Network::Signet;
    match Bitcoind::connect(config.clone()).await {
        Err(ChainError::NetworkMismatch { configured: Network::Signet, node }) => assert_eq!(node, "regtest"),
        other => panic!("expected a network mismatch, got {other:?}"),
    }
    config.network = Network::Regtest;
    config.auth = BitcoindAuth::UserPass { user: "nobody".into(), password: "wrong".into() };
    assert!(matches!(Bitcoind::connect(config).await, Err(ChainError::Transport(_))));
    assert_eq!(node.rpc.tip().await.unwrap().height, 0);
    node.stop().await;
}
