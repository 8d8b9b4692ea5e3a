//! The embedded devnet: an in-process regtest chain, the default chain of `tandem demo`
//! and of tests that need no bitcoind.
//!
//! It mines real blocks (merkle root, witness commitment, regtest proof of work) on
//! demand or on a timer, keeps a UTXO set and a mempool, and admits a transaction only
//! after Bitcoin Core's consensus library accepted every input script, so whatever it
//! confirms a real regtest node would accept too. A built-in faucet pays test addresses,
//! and reorgs can be ordered (including one that makes a transaction disappear).
//!
//! Parts, one job each:
//! - `chain_state`: best chain, UTXO set, undo data;
//! - `mempool`: unconfirmed transactions, families, block selection;
//! - `validate`: mempool admission (consensus, policy, BIP-125);
//! - `miner`: coinbase, merkle root, proof of work;
//! - `faucet`: the devnet's own key and payments from it;
//! - `store`: the files of a persisted devnet.
//!
//! State lives in memory, behind one mutex: callers share an `Arc<Devnet>`. A devnet made
//! with [`Devnet::new`] lives in memory only. One made with [`Devnet::open`] is also kept in
//! files, so a restarted `tandem demo` continues the same chain:
//!
//! - what is kept: the history of the best chain as an append-only journal of connected
//!   and disconnected blocks (so stale blocks survive a restart too), the faucet's secret key
//!   (it is random; with it the faucet finds its coins again in the UTXO set, which is
//!   rebuilt from the blocks), and the mempool's transactions in a second, small file
//!   rewritten atomically at each change (format and crash behaviour: `store`);
//! - when: under the state lock, right after each change (mined block, reorg, admitted or
//!   evicted transaction), so the files never lag behind what a caller was told;
//! - reopening replays the journal through `validate::check_block` (block rules plus the
//!   mempool's admission of every transaction, the same checks that let the transactions in)
//!   and then `ChainState::connect`, then re-admits the stored mempool through the normal
//!   admission, dropping what no longer fits. A damaged or hand-made file is an error, never
//!   a panic and never trusted. Unlike a real node's block store, this trusts nothing it
//!   reads, at the cost of verifying every script again on open (fast at demo sizes).
//!
//! One process at a time: nothing locks the files.

mod chain_state;
mod faucet;
mod mempool;
mod miner;
mod store;
mod validate;

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bitcoin::hashes::Hash as _;
use bitcoin::{Amount, Block, BlockHash, FeeRate, Network, Script, ScriptBuf, Transaction, Txid, Weight};

use crate::chain::{BlockRef, Chain, ChainError, Result, TxStatus, Utxo};
use chain_state::ChainState;
use faucet::{FaucetWallet, Spendable};
use mempool::Mempool;
use store::Store;
use validate::{Policy, COINBASE_MATURITY};

/// Weight kept free in every block for the coinbase.
const COINBASE_WEIGHT_RESERVE: u64 = 8_000;

#[derive(Debug, Clone)]
pub struct DevnetConfig {
    /// Must be [`Network::Regtest`]: the devnet follows regtest's rules and addresses.
    pub network: Network,
    /// `fee_rate` answer while the mempool is empty (nothing to derive an estimate from).
    pub fallback_fee_rate: FeeRate,
    /// Blocks mined to the faucet at creation; at least 101 so one coinbase is mature.
    pub initial_blocks: u32,
    pub max_block_weight: Weight,
}

impl Default for DevnetConfig {
    fn default() -> Self {
        DevnetConfig {
            network: Network::Regtest,
            fallback_fee_rate: FeeRate::from_sat_per_vb_u32(2),
            // 21 mature coinbases of 50 BTC: the faucet can pay many times per block.
            initial_blocks: 120,
            max_block_weight: Weight::MAX_BLOCK,
        }
    }
}

#[derive(Debug)]
struct State {
    chain: ChainState,
    mempool: Mempool,
    faucet: FaucetWallet,
    policy: Policy,
    extra_nonce: u64,
    /// The files of a devnet made with [`Devnet::open`]; `None` for an in-memory one.
    store: Option<Store>,
    /// What the rest of the network bids for block space (see [`Devnet::set_outside_demand`]).
    outside_demand: Option<FeeRate>,
}

#[derive(Debug)]
pub struct Devnet {
    config: DevnetConfig,
    state: Mutex<State>,
}

impl Devnet {
    /// A fresh chain from the regtest genesis block, with `initial_blocks` mined to the
    /// faucet.
    pub fn new(config: DevnetConfig) -> Result<Arc<Self>> {
        Self::fresh(config).map(Arc::new)
    }

    /// A devnet kept in the file `path` (plus `path` + `.mempool`): when the file exists,
    /// the chain, mempool and faucet it holds, replayed and checked; else a fresh chain as
    /// [`Devnet::new`] makes, written there. From then on every change is saved before the
    /// call that made it returns (a failed write is logged and retried at the next change).
    ///
    /// `config` applies as in `new`, except that `initial_blocks` only matters when the file
    /// is created. A file that cannot be read is [`ChainError::Transport`]; one whose
    /// contents do not decode, or hold a chain that does not validate, is
    /// [`ChainError::Decode`]. Delete the file (and its `.mempool`) to start a new chain.
    pub fn open(path: &Path, config: DevnetConfig) -> Result<Arc<Self>> {
        check_config(&config)?;
        let exists =
            path.try_exists().map_err(|e| ChainError::Transport(format!("devnet file {}: {e}", path.display())))?;
        let devnet = if exists {
            let devnet = Self::replay(path, config)?;
            tracing::info!(path = %path.display(), height = devnet.lock().chain.tip_height(), "devnet reopened");
            devnet
        } else {
            let devnet = Self::fresh(config)?;
            {
                let mut guard = devnet.lock();
                let state = &mut *guard;
                let store = Store::create(path, *state.faucet.secret(), &state.chain, &state.mempool)
                    .map_err(|e| ChainError::Transport(format!("cannot create devnet file {}: {e}", path.display())))?;
                state.store = Some(store);
            }
            tracing::info!(path = %path.display(), "devnet created");
            devnet
        };
        Ok(Arc::new(devnet))
    }

    /// Rebuilds a devnet from its files (see `store` for the format).
    fn replay(path: &Path, config: DevnetConfig) -> Result<Self> {
        let decode = |what: String| ChainError::Decode(format!("devnet file {}: {what}", path.display()));
        let bytes = std::fs::read(path)
            .map_err(|e| ChainError::Transport(format!("cannot read devnet file {}: {e}", path.display())))?;
        let records = store::parse_journal(&bytes).map_err(decode)?;
        let mut records = records.into_iter();
        let faucet = match records.next() {
            Some((store::FAUCET, secret)) => <[u8; 32]>::try_from(secret)
                .ok()
                .and_then(FaucetWallet::from_secret)
                .ok_or_else(|| decode("the faucet key is not a valid secret key".into()))?,
            _ => return Err(decode("does not start with the faucet key".into())),
        };
        let genesis = bitcoin::blockdata::constants::genesis_block(Network::Regtest);
        let mut state = State {
            chain: ChainState::new(genesis),
            mempool: Mempool::default(),
            faucet,
            policy: Policy::default(),
            extra_nonce: 0,
            store: None,
            outside_demand: None,
        };
        for (index, (kind, payload)) in records.enumerate() {
            // The faucet key is record 0.
            let at = index + 1;
            match kind {
                store::CONNECT => {
                    let block: Block = bitcoin::consensus::encode::deserialize(payload)
                        .map_err(|e| decode(format!("record {at}: not a block: {e}")))?;
                    let hash = block.block_hash();
                    let height = state.chain.tip_height() + 1;
                    validate::check_block(&block, &state.chain, &state.policy)
                        .and_then(|()| state.chain.connect(block))
                        .map_err(|e| decode(format!("record {at}: block {hash} at height {height} is invalid: {e}")))?;
                    // Every block the devnet mined took one extra nonce; keep them unique.
                    state.extra_nonce += 1;
                }
                store::DISCONNECT => {
                    let tip = state.chain.tip_hash();
                    if payload != tip.as_byte_array().as_slice() || state.chain.tip_height() == 0 {
                        return Err(decode(format!("record {at}: disconnects a block that is not the tip {tip}")));
                    }
                    state.chain.disconnect_tip();
                }
                other => return Err(decode(format!("record {at}: unexpected record kind {other}"))),
            }
        }

        let mempool_path = store::mempool_path(path);
        let mempool_bytes = match std::fs::read(&mempool_path) {
            Ok(bytes) => Some(bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                return Err(ChainError::Transport(format!("cannot read devnet file {}: {e}", mempool_path.display())))
            }
        };
        if let Some(bytes) = mempool_bytes {
            let decode = |what: String| ChainError::Decode(format!("devnet file {}: {what}", mempool_path.display()));
            for (at, (kind, payload)) in store::parse_mempool(&bytes).map_err(decode)?.into_iter().enumerate() {
                if kind != store::TX {
                    return Err(decode(format!("record {at}: unexpected record kind {kind}")));
                }
                let tx: Transaction = bitcoin::consensus::encode::deserialize(payload)
                    .map_err(|e| decode(format!("record {at}: not a transaction: {e}")))?;
                let txid = tx.compute_txid();
                match validate::check(&tx, &state.chain, &state.mempool, &state.policy) {
                    Ok(admission) if admission.evicts.is_empty() => {
                        state.mempool.insert(tx, admission.fee, admission.weight);
                    }
                    Ok(_) => tracing::debug!(%txid, "devnet reopen: conflicting transaction not readmitted"),
                    Err(reason) => tracing::debug!(%txid, %reason, "devnet reopen: transaction no longer valid"),
                }
            }
        }

        let mut store = Store::attach(path, *state.faucet.secret()).map_err(|e| {
            ChainError::Transport(format!("cannot open devnet file {} for writing: {e}", path.display()))
        })?;
        // Writes back what was readmitted (and creates a missing mempool file).
        store.mempool_changed(&state.mempool);
        state.store = Some(store);
        Ok(Devnet { config, state: Mutex::new(state) })
    }

    /// A fresh in-memory chain with `initial_blocks` mined to a new faucet key.
    fn fresh(config: DevnetConfig) -> Result<Self> {
        check_config(&config)?;
        let genesis = bitcoin::blockdata::constants::genesis_block(Network::Regtest);
        let devnet = Devnet {
            state: Mutex::new(State {
                chain: ChainState::new(genesis),
                mempool: Mempool::default(),
                faucet: FaucetWallet::random(),
                policy: Policy::default(),
                extra_nonce: 0,
                store: None,
                outside_demand: None,
            }),
            config,
        };
        devnet.mine(devnet.config.initial_blocks, None)?;
        Ok(devnet)
    }

    /// Poisoning only means another thread panicked mid-call; every mutation below either
    /// completes or leaves the state as it was, so the state is still usable.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The script the faucet's coinbases and change pay to.
    pub fn faucet_script(&self) -> ScriptBuf {
        self.lock().faucet.script().to_owned()
    }

    /// What the faucet can spend now (mature coins and its unconfirmed change).
    pub fn faucet_balance(&self) -> Amount {
        let state = self.lock();
        faucet_coins(&state).iter().map(|c| c.value).sum()
    }

    /// Mines `blocks` blocks from the mempool, paying the coinbases to `reward_to` (the
    /// faucet when `None`). Returns the new block hashes.
    pub fn mine(&self, blocks: u32, reward_to: Option<ScriptBuf>) -> Result<Vec<BlockHash>> {
        let mut state = self.lock();
        let reward_to = reward_to.unwrap_or_else(|| state.faucet.script().to_owned());
        let mined = (0..blocks).map(|_| self.mine_one(&mut state, reward_to.clone())).collect();
        save_mempool(&mut state);
        mined
    }

    fn mine_one(&self, state: &mut State, reward_to: ScriptBuf) -> Result<BlockHash> {
        let room = block_room(&self.config);
        let floor = state.outside_demand.unwrap_or(FeeRate::ZERO);
        let (chosen, _) = state.mempool.select(room, floor);
        let fees: Amount = chosen.iter().map(|e| e.fee).sum();
        let txdata: Vec<Transaction> = chosen.iter().map(|e| e.tx.clone()).collect();
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        // Strictly increasing times keep every block above the median time past.
        let time = u32::try_from(now).unwrap_or(u32::MAX).max(state.chain.tip_time().saturating_add(1));
        state.extra_nonce += 1;
        let block = miner::assemble(miner::Template {
            prev_blockhash: state.chain.tip_hash(),
            height: state.chain.tip_height() + 1,
            time,
            txdata,
            fees,
            reward_to,
            extra_nonce: state.extra_nonce,
        });
        let hash = block.block_hash();
        let confirmed = block.txdata.clone();
        state.chain.connect(block).map_err(|e| ChainError::InvalidRequest(format!("internal: {e}")))?;
        state.mempool.remove_for_block(&confirmed);
        if let Some(store) = state.store.as_mut() {
            store.block_connected(&hash, &state.chain);
        }
        tracing::debug!(height = state.chain.tip_height(), %hash, txs = confirmed.len(), "devnet mined a block");
        Ok(hash)
    }

    /// Mines one block every `interval` until the devnet is dropped or the task aborted.
    /// Must be called inside a tokio runtime.
    pub fn spawn_miner(self: &Arc<Self>, interval: Duration) -> tokio::task::JoinHandle<()> {
        // Weak: the miner must not keep a dropped devnet alive.
        let devnet = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.tick().await;
            loop {
                ticker.tick().await;
                let Some(devnet) = devnet.upgrade() else { return };
                if let Err(e) = devnet.mine(1, None) {
                    tracing::warn!(error = %e, "devnet background miner failed");
                }
            }
        })
    }

    /// Simulates the rest of the network bidding `rate` for every block's space (`None`: no
    /// outside demand): from now on blocks take only packages paying at least `rate`, and fee
    /// estimates answer above it. What a fee spike does to transactions already sent.
    pub fn set_outside_demand(&self, rate: Option<FeeRate>) {
        self.lock().outside_demand = rate;
    }

    /// Pays `amount` to `script` from the faucet; the transaction enters the mempool.
    pub fn faucet(&self, script: &Script, amount: Amount) -> Result<Txid> {
        let mut state = self.lock();
        let fee_rate = next_block_fee_rate(&state, &self.config, 1);
        let coins = faucet_coins(&state);
        let tx = state
            .faucet
            .pay(&coins, script, amount, fee_rate)
            .map_err(|e| ChainError::InvalidRequest(format!("faucet: {e}")))?;
        submit(&mut state, tx)
    }

    /// Validates `tx` and adds it to the mempool (what [`Chain::broadcast`] does).
    pub fn submit(&self, tx: Transaction) -> Result<Txid> {
        submit(&mut self.lock(), tx)
    }

    /// Disconnects the last `depth` blocks, returns their transactions to the mempool where
    /// still valid, then mines `then_mine` blocks. Returns the new blocks' hashes.
    pub fn reorg(&self, depth: u32, then_mine: u32) -> Result<Vec<BlockHash>> {
        self.reorg_dropping(depth, &[], then_mine)
    }

    /// Like [`Devnet::reorg`], but the transactions in `drop` (and so their descendants)
    /// do not come back: as if a conflicting transaction had won the race.
    pub fn reorg_dropping(&self, depth: u32, drop: &[Txid], then_mine: u32) -> Result<Vec<BlockHash>> {
        let mut guard = self.lock();
        let state = &mut *guard;
        if depth > state.chain.tip_height() {
            return Err(ChainError::InvalidRequest(format!(
                "cannot reorg {depth} blocks on a chain of height {}",
                state.chain.tip_height()
            )));
        }
        let drop: HashSet<Txid> = drop.iter().copied().collect();
        let pending = state.mempool.drain();
        let mut disconnected: Vec<Block> = Vec::with_capacity(depth as usize);
        for _ in 0..depth {
            match state.chain.disconnect_tip() {
                Some(block) => {
                    if let Some(store) = state.store.as_mut() {
                        store.tip_disconnected(&block.block_hash(), &state.chain);
                    }
                    disconnected.push(block);
                }
                None => break,
            }
        }
        // Oldest block first so parents come back before children, then what was already
        // waiting (which may spend outputs of the returned transactions).
        let returning = disconnected
            .iter()
            .rev()
            .flat_map(|b| b.txdata.iter().filter(|tx| !tx.is_coinbase()).cloned())
            .chain(pending.into_iter().map(|e| e.tx));
        for tx in returning {
            let txid = tx.compute_txid();
            if drop.contains(&txid) {
                continue;
            }
            let policy = state.policy;
            match validate::check(&tx, &state.chain, &state.mempool, &policy) {
                Ok(admission) if admission.evicts.is_empty() => {
                    state.mempool.insert(tx, admission.fee, admission.weight);
                }
                Ok(_) => tracing::debug!(%txid, "reorg: conflicting transaction not readmitted"),
                Err(reason) => tracing::debug!(%txid, %reason, "reorg: transaction no longer valid"),
            }
        }
        let reward_to = state.faucet.script().to_owned();
        let mined = (0..then_mine).map(|_| self.mine_one(state, reward_to.clone())).collect();
        save_mempool(state);
        mined
    }
}

/// Admits `tx` or says why not. Resubmitting a transaction already in the mempool succeeds,
/// as with bitcoind.
fn submit(state: &mut State, tx: Transaction) -> Result<Txid> {
    let txid = tx.compute_txid();
    if state.mempool.contains(&txid) {
        return Ok(txid);
    }
    let admission = validate::check(&tx, &state.chain, &state.mempool, &state.policy)
        .map_err(|reason| ChainError::Rejected { txid, reason })?;
    if !admission.evicts.is_empty() {
        state.mempool.remove_with_descendants(admission.evicts.iter().copied());
    }
    state.mempool.insert(tx, admission.fee, admission.weight);
    save_mempool(state);
    Ok(txid)
}

/// Writes the mempool of a persisted devnet to its file.
fn save_mempool(state: &mut State) {
    if let Some(store) = state.store.as_mut() {
        store.mempool_changed(&state.mempool);
    }
}

/// What [`Devnet::new`] and [`Devnet::open`] require of a configuration.
fn check_config(config: &DevnetConfig) -> Result<()> {
    if config.network != Network::Regtest {
        return Err(ChainError::InvalidRequest(format!("the devnet runs regtest only, not {}", config.network)));
    }
    if config.initial_blocks < COINBASE_MATURITY + 1 {
        return Err(ChainError::InvalidRequest(format!(
            "initial_blocks must be at least {} so the faucet has a mature coinbase",
            COINBASE_MATURITY + 1
        )));
    }
    if config.max_block_weight <= Weight::from_wu(COINBASE_WEIGHT_RESERVE) {
        return Err(ChainError::InvalidRequest(format!(
            "max_block_weight must exceed the {COINBASE_WEIGHT_RESERVE} WU kept for the coinbase"
        )));
    }
    Ok(())
}

/// Faucet coins not spent in the mempool: mature confirmed ones first (largest first), then
/// unconfirmed change.
fn faucet_coins(state: &State) -> Vec<Spendable> {
    let script = state.faucet.script();
    let next_height = state.chain.tip_height() + 1;
    let mut confirmed: Vec<Spendable> = state
        .chain
        .utxos()
        .filter(|(op, coin)| {
            coin.txout.script_pubkey.as_script() == script
                && (!coin.is_coinbase || next_height - coin.height >= COINBASE_MATURITY)
                && state.mempool.spender(op).is_none()
        })
        .map(|(op, coin)| Spendable { outpoint: *op, value: coin.txout.value })
        .collect();
    confirmed.sort_by(|a, b| b.value.cmp(&a.value).then(a.outpoint.cmp(&b.outpoint)));
    let unconfirmed = state.mempool.in_arrival_order().into_iter().flat_map(|e| {
        e.tx.output.iter().enumerate().filter_map(move |(vout, o)| {
            let outpoint = bitcoin::OutPoint { txid: e.txid, vout: vout as u32 };
            (o.script_pubkey.as_script() == script && state.mempool.spender(&outpoint).is_none())
                .then_some(Spendable { outpoint, value: o.value })
        })
    });
    confirmed.extend(unconfirmed);
    confirmed
}

/// Weight available to mempool transactions in one block.
fn block_room(config: &DevnetConfig) -> Weight {
    config.max_block_weight.checked_sub(Weight::from_wu(COINBASE_WEIGHT_RESERVE)).unwrap_or(Weight::ZERO)
}

/// The rate needed to be mined within `target` blocks: the minimum relay fee when the whole
/// mempool fits, else one sat/vB above the cheapest package that still makes it; the
/// configured fallback while the mempool is empty. Under outside demand, at least one sat/vB
/// above what the rest of the network bids.
fn next_block_fee_rate(state: &State, config: &DevnetConfig, target: u16) -> FeeRate {
    let floor = state.policy.min_relay_fee;
    let one_above = |r: FeeRate| FeeRate::from_sat_per_kwu(r.to_sat_per_kwu() + floor.to_sat_per_kwu());
    let estimate = if state.mempool.is_empty() {
        config.fallback_fee_rate
    } else {
        let room = Weight::from_wu(block_room(config).to_wu().saturating_mul(u64::from(target.max(1))));
        let (chosen, lowest) = state.mempool.select(room, FeeRate::ZERO);
        if chosen.len() == state.mempool.in_arrival_order().len() {
            floor
        } else {
            lowest.map_or(floor, one_above).max(floor)
        }
    };
    match state.outside_demand {
        Some(demand) => estimate.max(one_above(demand)),
        None => estimate,
    }
}

#[async_trait]
impl Chain for Devnet {
    fn network(&self) -> Network {
        self.config.network
    }

    async fn tip(&self) -> Result<BlockRef> {
        let state = self.lock();
        Ok(BlockRef { height: state.chain.tip_height(), hash: state.chain.tip_hash() })
    }

    async fn block_hash(&self, height: u32) -> Result<Option<BlockHash>> {
        Ok(self.lock().chain.hash_at(height))
    }

    async fn block(&self, hash: &BlockHash) -> Result<Block> {
        self.lock().chain.block(hash).cloned().ok_or_else(|| ChainError::NotFound(format!("block {hash}")))
    }

    async fn mempool(&self) -> Result<Vec<Transaction>> {
        Ok(self.lock().mempool.in_arrival_order().into_iter().map(|e| e.tx.clone()).collect())
    }

    async fn transaction_status(&self, txid: &Txid) -> Result<TxStatus> {
        let state = self.lock();
        if state.mempool.contains(txid) {
            return Ok(TxStatus::InMempool);
        }
        let Some(height) = state.chain.tx_height(txid) else { return Ok(TxStatus::Unknown) };
        let block_hash =
            state.chain.hash_at(height).ok_or_else(|| ChainError::NotFound(format!("block at height {height}")))?;
        Ok(TxStatus::Confirmed { height, block_hash, confirmations: state.chain.tip_height() - height + 1 })
    }

    async fn broadcast(&self, tx: &Transaction) -> Result<Txid> {
        submit(&mut self.lock(), tx.clone())
    }

    async fn test_mempool_accept(&self, tx: &Transaction) -> Result<()> {
        let state = self.lock();
        validate::check(tx, &state.chain, &state.mempool, &state.policy)
            .map(|_| ())
            .map_err(|reason| ChainError::Rejected { txid: tx.compute_txid(), reason })
    }

    async fn fee_rate(&self, target_blocks: u16) -> Result<FeeRate> {
        Ok(next_block_fee_rate(&self.lock(), &self.config, target_blocks))
    }

    async fn utxos(&self, scripts: &[ScriptBuf]) -> Result<Vec<Utxo>> {
        let state = self.lock();
        let mut found: Vec<Utxo> = state
            .chain
            .utxos()
            .filter(|(_, coin)| scripts.contains(&coin.txout.script_pubkey))
            .map(|(op, coin)| Utxo { outpoint: *op, txout: coin.txout.clone(), height: coin.height })
            .collect();
        // Deterministic order for callers and tests.
        found.sort_by(|a, b| a.height.cmp(&b.height).then(a.outpoint.cmp(&b.outpoint)));
        Ok(found)
    }
}

#[cfg(test)]
mod tests;
