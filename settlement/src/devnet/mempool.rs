//! The devnet mempool: accepted unconfirmed transactions, who spends which outpoint, the
//! family relations needed for replacement and eviction, and block template selection
//! (best ancestor-package fee rate first, parents before children).

use std::collections::{HashMap, HashSet};

use bitcoin::{Amount, FeeRate, OutPoint, Transaction, TxOut, Txid, Weight};

#[derive(Debug, Clone)]
pub(crate) struct MempoolEntry {
    pub tx: Transaction,
    pub txid: Txid,
    pub fee: Amount,
    pub weight: Weight,
    /// Arrival order; parents always arrive before their children, so sorting by it is a
    /// topological order.
    pub arrival: u64,
}

impl MempoolEntry {
    pub fn fee_rate(&self) -> FeeRate {
        fee_rate(self.fee, self.weight)
    }
}

/// `fee / weight`, rounded down, in sat/kWU.
pub(crate) fn fee_rate(fee: Amount, weight: Weight) -> FeeRate {
    let wu = weight.to_wu().max(1);
    FeeRate::from_sat_per_kwu(fee.to_sat().saturating_mul(1000) / wu)
}

#[derive(Debug, Default)]
pub(crate) struct Mempool {
    entries: HashMap<Txid, MempoolEntry>,
    /// Outpoint -> the mempool transaction spending it.
    spends: HashMap<OutPoint, Txid>,
    next_arrival: u64,
}

impl Mempool {
    pub fn get(&self, txid: &Txid) -> Option<&MempoolEntry> {
        self.entries.get(txid)
    }

    pub fn contains(&self, txid: &Txid) -> bool {
        self.entries.contains_key(txid)
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The mempool transaction spending `outpoint`, if any.
    pub fn spender(&self, outpoint: &OutPoint) -> Option<Txid> {
        self.spends.get(outpoint).copied()
    }

    /// The output `outpoint` when a mempool transaction creates it.
    pub fn output(&self, outpoint: &OutPoint) -> Option<&TxOut> {
        self.entries.get(&outpoint.txid).and_then(|e| e.tx.output.get(outpoint.vout as usize))
    }

    pub fn insert(&mut self, tx: Transaction, fee: Amount, weight: Weight) -> Txid {
        let txid = tx.compute_txid();
        for input in &tx.input {
            self.spends.insert(input.previous_output, txid);
        }
        let arrival = self.next_arrival;
        self.next_arrival += 1;
        self.entries.insert(txid, MempoolEntry { tx, txid, fee, weight, arrival });
        txid
    }

    /// All entries, parents before children.
    pub fn in_arrival_order(&self) -> Vec<&MempoolEntry> {
        let mut all: Vec<&MempoolEntry> = self.entries.values().collect();
        all.sort_by_key(|e| e.arrival);
        all
    }

    /// In-mempool parents of `txid`.
    pub fn parents(&self, txid: &Txid) -> HashSet<Txid> {
        self.entries
            .get(txid)
            .map(|e| {
                e.tx.input.iter().map(|i| i.previous_output.txid).filter(|p| self.entries.contains_key(p)).collect()
            })
            .unwrap_or_default()
    }

    /// In-mempool ancestors of `txid`, without itself.
    pub fn ancestors(&self, txid: &Txid) -> HashSet<Txid> {
        let mut found = HashSet::new();
        let mut todo: Vec<Txid> = self.parents(txid).into_iter().collect();
        while let Some(t) = todo.pop() {
            if found.insert(t) {
                todo.extend(self.parents(&t));
            }
        }
        found
    }

    /// `roots` and every mempool transaction descending from them.
    pub fn with_descendants(&self, roots: impl IntoIterator<Item = Txid>) -> HashSet<Txid> {
        let mut found = HashSet::new();
        let mut todo: Vec<Txid> = roots.into_iter().filter(|t| self.entries.contains_key(t)).collect();
        while let Some(t) = todo.pop() {
            if !found.insert(t) {
                continue;
            }
            if let Some(entry) = self.entries.get(&t) {
                for vout in 0..entry.tx.output.len() as u32 {
                    if let Some(child) = self.spends.get(&OutPoint { txid: t, vout }) {
                        todo.push(*child);
                    }
                }
            }
        }
        found
    }

    /// Removes one entry and its spends. Callers remove descendants themselves.
    fn remove(&mut self, txid: &Txid) -> Option<MempoolEntry> {
        let entry = self.entries.remove(txid)?;
        for input in &entry.tx.input {
            if self.spends.get(&input.previous_output) == Some(txid) {
                self.spends.remove(&input.previous_output);
            }
        }
        Some(entry)
    }

    /// Removes `roots` and their descendants; returns the removed entries.
    pub fn remove_with_descendants(&mut self, roots: impl IntoIterator<Item = Txid>) -> Vec<MempoolEntry> {
        let doomed = self.with_descendants(roots);
        let mut removed: Vec<MempoolEntry> = doomed.iter().filter_map(|t| self.remove(t)).collect();
        removed.sort_by_key(|e| e.arrival);
        removed
    }

    /// Removes the transactions a new block confirmed, and everything that conflicts with
    /// them (with descendants): those can never confirm now.
    pub fn remove_for_block(&mut self, txdata: &[Transaction]) {
        for tx in txdata.iter().filter(|tx| !tx.is_coinbase()) {
            let txid = tx.compute_txid();
            self.remove(&txid);
            let conflicts: Vec<Txid> = tx
                .input
                .iter()
                .filter_map(|i| self.spends.get(&i.previous_output).copied())
                .filter(|spender| *spender != txid)
                .collect();
            self.remove_with_descendants(conflicts);
        }
    }

    /// Empties the pool, returning every entry in arrival order.
    pub fn drain(&mut self) -> Vec<MempoolEntry> {
        self.spends.clear();
        let mut all: Vec<MempoolEntry> = self.entries.drain().map(|(_, e)| e).collect();
        all.sort_by_key(|e| e.arrival);
        all
    }

    /// Chooses transactions for a block of at most `max_weight`: repeatedly takes the
    /// not-yet-chosen transaction whose package (itself plus its unchosen ancestors) pays
    /// the best fee rate, so a high-fee child pulls its parent in (CPFP). Returns the
    /// chosen transactions parents first, and the lowest package fee rate taken. Packages
    /// paying less than `floor` are left out (the block space went to better bids).
    pub fn select(&self, max_weight: Weight, floor: FeeRate) -> (Vec<&MempoolEntry>, Option<FeeRate>) {
        let mut chosen: HashSet<Txid> = HashSet::new();
        let mut skipped: HashSet<Txid> = HashSet::new();
        let mut order: Vec<&MempoolEntry> = Vec::new();
        let mut used = Weight::ZERO;
        let mut lowest: Option<FeeRate> = None;
        loop {
            let mut best: Option<(FeeRate, Vec<&MempoolEntry>, Weight)> = None;
            for entry in self.entries.values() {
                if chosen.contains(&entry.txid) || skipped.contains(&entry.txid) {
                    continue;
                }
                let mut package: Vec<&MempoolEntry> = self
                    .ancestors(&entry.txid)
                    .iter()
                    .filter(|t| !chosen.contains(*t))
                    .filter_map(|t| self.entries.get(t))
                    .collect();
                package.push(entry);
                let fee: Amount = package.iter().map(|e| e.fee).sum();
                let weight: Weight = package.iter().map(|e| e.weight).sum();
                let rate = fee_rate(fee, weight);
                if best.as_ref().is_none_or(|(r, _, _)| rate > *r) {
                    best = Some((rate, package, weight));
                }
            }
            let Some((rate, mut package, weight)) = best else { break };
            if rate < floor {
                break;
            }
            if used + weight > max_weight {
                // Too big for what is left: leave its last member out for good.
                if let Some(last) = package.last() {
                    skipped.insert(last.txid);
                }
                continue;
            }
            used += weight;
            lowest = Some(lowest.map_or(rate, |l| l.min(rate)));
            package.sort_by_key(|e| e.arrival);
            for e in package {
                chosen.insert(e.txid);
                order.push(e);
            }
        }
        (order, lowest)
    }
}
