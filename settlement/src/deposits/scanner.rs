//! The scanner itself: block walking with reorg detection, the mempool snapshot, and the
//! credit/reverse decisions described in the module documentation of [`super`].

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use bitcoin::{Amount, Block, BlockHash, OutPoint, ScriptBuf, Transaction, Txid};

use super::{DepositEvent, DepositPolicy};
use crate::chain::{BlockRef, Chain, ChainError, TxStatus};

/// How many recent processed blocks the scanner remembers to detect reorgs.
pub const REORG_WINDOW: u32 = 100;

/// An output paying a watched script.
#[derive(Debug, Clone, Copy)]
struct VaultOutput {
    vout: u32,
    account: u64,
    holder: u64,
    amount: Amount,
}

/// What the scanner keeps of a transaction that pays at least one watched script.
#[derive(Debug, Clone)]
struct TxRecord {
    coinbase: bool,
    inputs: Vec<OutPoint>,
    deposits: Vec<VaultOutput>,
}

#[derive(Debug, Clone)]
struct ConfirmedTx {
    height: u32,
    /// Position in its block, for event order.
    position: usize,
    record: TxRecord,
}

#[derive(Debug, Clone, Copy)]
struct Credit {
    account: u64,
    holder: u64,
    amount: Amount,
}

/// Watches the chain for deposits to vault scripts; see the module documentation of
/// [`super`] for the rules.
#[derive(Debug)]
pub struct DepositScanner {
    confirmations: u32,
    start_height: u32,
    watched: HashMap<ScriptBuf, (u64, u64)>,
    /// Hashes of the last [`REORG_WINDOW`] processed blocks, by height.
    hashes: BTreeMap<u32, BlockHash>,
    /// The last processed block.
    tip: Option<BlockRef>,
    /// Transactions of processed blocks that pay a watched script.
    confirmed: HashMap<Txid, ConfirmedTx>,
    by_height: BTreeMap<u32, Vec<Txid>>,
    /// Confirmed transactions with a deposit not yet credited.
    pending: BTreeSet<Txid>,
    /// Mempool transactions that pay a watched script and are not in a processed block, in
    /// the backend's order, from the last poll.
    mempool: Vec<(Txid, TxRecord)>,
    mempool_index: HashMap<Txid, usize>,
    credited: BTreeMap<OutPoint, Credit>,
}

impl DepositScanner {
    /// A scanner that will process blocks from `start_height` on.
    pub fn new(policy: DepositPolicy, start_height: u32) -> Self {
        DepositScanner {
            confirmations: policy.confirmations.max(1),
            start_height,
            watched: HashMap::new(),
            hashes: BTreeMap::new(),
            tip: None,
            confirmed: HashMap::new(),
            by_height: BTreeMap::new(),
            pending: BTreeSet::new(),
            mempool: Vec::new(),
            mempool_index: HashMap::new(),
            credited: BTreeMap::new(),
        }
    }

    /// Registers a vault script, the account its deposits are credited to, and the holder
    /// whose vault holds the coins (the account itself, or the pool for a custodial deposit
    /// address). A second call for the same script changes both for deposits seen from now on.
    pub fn watch(&mut self, script: ScriptBuf, account: u64, holder: u64) {
        self.watched.insert(script, (account, holder));
    }

    /// The policy in force (confirmations at least 1).
    pub fn policy(&self) -> DepositPolicy {
        DepositPolicy { confirmations: self.confirmations }
    }

    /// Live credits: outpoint, account, amount.
    pub fn credited(&self) -> impl Iterator<Item = (&OutPoint, u64, Amount)> {
        self.credited.iter().map(|(op, c)| (op, c.account, c.amount))
    }

    /// The last block processed.
    pub fn tip(&self) -> Option<BlockRef> {
        self.tip
    }

    /// Reads what changed on chain since the last poll and returns what to credit and
    /// reverse.
    pub async fn poll(&mut self, chain: &dyn Chain) -> Result<Vec<DepositEvent>, ChainError> {
        // The mempool first: a transaction mined between the two reads is then seen twice
        // (harmless) rather than not at all.
        let mempool = chain.mempool().await?;
        self.follow_chain(chain).await?;
        self.take_mempool(&mempool);

        let mut events = self.reverses(chain).await?;
        events.extend(self.credits());
        Ok(events)
    }

    /// Rolls back to the fork point if the best chain changed under the processed blocks,
    /// then processes the new blocks up to the current tip.
    async fn follow_chain(&mut self, chain: &dyn Chain) -> Result<(), ChainError> {
        if let Some(tip) = self.tip {
            let remembered: Vec<(u32, BlockHash)> = self.hashes.iter().rev().map(|(h, b)| (*h, *b)).collect();
            let mut common = None;
            for (height, hash) in remembered {
                if chain.block_hash(height).await? == Some(hash) {
                    common = Some(height);
                    break;
                }
            }
            if common != Some(tip.height) {
                tracing::info!(from = tip.height, fork = ?common, "deposit scanner: reorg, rolling back");
                self.rollback(common);
            }
        }
        let best = chain.tip().await?;
        let mut height = self.tip.map_or(self.start_height, |t| t.height + 1);
        while height <= best.height {
            let Some(hash) = chain.block_hash(height).await? else { break };
            let block = chain.block(&hash).await?;
            if block.block_hash() != hash {
                return Err(ChainError::Decode(format!("block {hash} has hash {}", block.block_hash())));
            }
            if let Some(prev) = self.tip {
                if block.header.prev_blockhash != prev.hash {
                    // The chain moved during this poll; the next poll rolls back.
                    break;
                }
            }
            self.connect(height, hash, &block);
            height += 1;
        }
        Ok(())
    }

    fn connect(&mut self, height: u32, hash: BlockHash, block: &Block) {
        for (position, tx) in block.txdata.iter().enumerate() {
            let Some(record) = self.record(tx) else { continue };
            let txid = tx.compute_txid();
            if self.confirmed.insert(txid, ConfirmedTx { height, position, record }).is_none() {
                self.by_height.entry(height).or_default().push(txid);
            }
            self.pending.insert(txid);
        }
        self.hashes.insert(height, hash);
        if let Some(oldest) = height.checked_sub(REORG_WINDOW) {
            self.hashes = self.hashes.split_off(&(oldest + 1));
        }
        self.tip = Some(BlockRef { height, hash });
    }

    /// Forgets every block above `keep_through` (all of them when `None`).
    fn rollback(&mut self, keep_through: Option<u32>) {
        let from = keep_through.map_or(0, |h| h + 1);
        for txids in self.by_height.split_off(&from).into_values() {
            for txid in txids {
                self.confirmed.remove(&txid);
                self.pending.remove(&txid);
            }
        }
        let _ = self.hashes.split_off(&from);
        self.tip =
            keep_through.and_then(|height| self.hashes.get(&height).map(|hash| BlockRef { height, hash: *hash }));
        if self.tip.is_none() {
            // Nothing left to build on: rescan everything from `start_height`.
            self.hashes.clear();
            for txid in std::mem::take(&mut self.by_height).into_values().flatten() {
                self.confirmed.remove(&txid);
                self.pending.remove(&txid);
            }
        }
    }

    fn take_mempool(&mut self, mempool: &[Transaction]) {
        self.mempool.clear();
        self.mempool_index.clear();
        for tx in mempool {
            let txid = tx.compute_txid();
            if self.confirmed.contains_key(&txid) || self.mempool_index.contains_key(&txid) {
                continue;
            }
            if let Some(record) = self.record(tx) {
                self.mempool_index.insert(txid, self.mempool.len());
                self.mempool.push((txid, record));
            }
        }
    }

    /// The record of `tx` if it pays a watched script.
    fn record(&self, tx: &Transaction) -> Option<TxRecord> {
        let deposits: Vec<VaultOutput> = tx
            .output
            .iter()
            .enumerate()
            .filter(|(_, out)| out.value > Amount::ZERO)
            .filter_map(|(vout, out)| {
                let (account, holder) = *self.watched.get(&out.script_pubkey)?;
                Some(VaultOutput { vout: u32::try_from(vout).ok()?, account, holder, amount: out.value })
            })
            .collect();
        if deposits.is_empty() {
            return None;
        }
        Some(TxRecord {
            coinbase: tx.is_coinbase(),
            inputs: tx.input.iter().map(|i| i.previous_output).collect(),
            deposits,
        })
    }

    fn record_of(&self, txid: &Txid) -> Option<&TxRecord> {
        self.confirmed
            .get(txid)
            .map(|c| &c.record)
            .or_else(|| self.mempool_index.get(txid).map(|&i| &self.mempool[i].1))
    }

    fn confirmations_at(&self, height: u32) -> u32 {
        self.tip.map_or(0, |tip| tip.height.saturating_sub(height).saturating_add(1))
    }

    /// Confirmed deeply enough for the policy.
    fn is_final(&self, txid: &Txid) -> bool {
        self.confirmed.get(txid).is_some_and(|c| self.confirmations_at(c.height) >= self.confirmations)
    }

    /// Transactions (not yet final) whose every input spends a final or instant vault
    /// outpoint: the fixpoint over the shallow confirmed ones and the mempool.
    fn instant_set(&self) -> HashSet<Txid> {
        let shallow_from = self.tip.map_or(0, |tip| (tip.height + 2).saturating_sub(self.confirmations));
        let candidates: Vec<(&Txid, &TxRecord)> = self
            .by_height
            .range(shallow_from..)
            .flat_map(|(_, txids)| txids.iter())
            .filter_map(|txid| self.confirmed.get(txid).map(|c| (txid, &c.record)))
            .chain(self.mempool.iter().map(|(txid, record)| (txid, record)))
            .filter(|(_, record)| !record.coinbase && !record.inputs.is_empty())
            .collect();
        let mut instant = HashSet::new();
        loop {
            let mut changed = false;
            for (txid, record) in &candidates {
                if instant.contains(*txid) {
                    continue;
                }
                let cosigned = record.inputs.iter().all(|input| {
                    let pays_vault = self
                        .record_of(&input.txid)
                        .is_some_and(|parent| parent.deposits.iter().any(|d| d.vout == input.vout));
                    pays_vault && (self.is_final(&input.txid) || instant.contains(&input.txid))
                });
                if cosigned {
                    instant.insert(**txid);
                    changed = true;
                }
            }
            if !changed {
                return instant;
            }
        }
    }

    /// Reverses the credits whose transaction is in neither the best chain nor the mempool.
    async fn reverses(&mut self, chain: &dyn Chain) -> Result<Vec<DepositEvent>, ChainError> {
        let missing: BTreeSet<Txid> = self
            .credited
            .keys()
            .map(|op| op.txid)
            .filter(|txid| !self.confirmed.contains_key(txid) && !self.mempool_index.contains_key(txid))
            .collect();
        let mut events = Vec::new();
        for txid in missing {
            // Double-check with the backend: the transaction may have moved between the
            // mempool and a block while this poll read them.
            if chain.transaction_status(&txid).await? != TxStatus::Unknown {
                continue;
            }
            let outpoints: Vec<OutPoint> = self
                .credited
                .range(OutPoint { txid, vout: 0 }..)
                .map(|(op, _)| *op)
                .take_while(|op| op.txid == txid)
                .collect();
            for outpoint in outpoints {
                if let Some(credit) = self.credited.remove(&outpoint) {
                    events.push(DepositEvent::Reverse {
                        outpoint,
                        account: credit.account,
                        holder: credit.holder,
                        amount: credit.amount,
                    });
                }
            }
        }
        Ok(events)
    }

    /// Credits every deposit that qualifies now and has no live credit.
    fn credits(&mut self) -> Vec<DepositEvent> {
        let instant = self.instant_set();
        let mut events = Vec::new();

        let mut pending: Vec<(u32, usize, Txid)> = self
            .pending
            .iter()
            .filter_map(|txid| self.confirmed.get(txid).map(|c| (c.height, c.position, *txid)))
            .collect();
        pending.sort_unstable();
        for (height, _, txid) in pending {
            let confirmations = self.confirmations_at(height);
            let deep = confirmations >= self.confirmations;
            if !deep && !instant.contains(&txid) {
                continue;
            }
            self.pending.remove(&txid);
            let Some(deposits) = self.confirmed.get(&txid).map(|c| c.record.deposits.clone()) else { continue };
            self.credit(&mut events, txid, &deposits, !deep, confirmations);
        }

        let mempool: Vec<(Txid, Vec<VaultOutput>)> = self
            .mempool
            .iter()
            .filter(|(txid, _)| instant.contains(txid))
            .map(|(txid, record)| (*txid, record.deposits.clone()))
            .collect();
        for (txid, deposits) in mempool {
            self.credit(&mut events, txid, &deposits, true, 0);
        }
        events
    }

    fn credit(
        &mut self,
        events: &mut Vec<DepositEvent>,
        txid: Txid,
        deposits: &[VaultOutput],
        instant: bool,
        confirmations: u32,
    ) {
        for deposit in deposits {
            let outpoint = OutPoint { txid, vout: deposit.vout };
            if self.credited.contains_key(&outpoint) {
                continue;
            }
            self.credited.insert(outpoint, Credit { account: deposit.account, holder: deposit.holder, amount: deposit.amount });
            events.push(DepositEvent::Credit {
                outpoint,
                account: deposit.account,
                holder: deposit.holder,
                amount: deposit.amount,
                instant,
                confirmations,
            });
        }
    }
}
