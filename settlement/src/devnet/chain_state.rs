//! The devnet's best chain: blocks by height and hash, the UTXO set, a txid index, and
//! the undo data that lets the tip be disconnected. Only blocks the devnet mined itself
//! are connected, so this file applies blocks; it does not judge them.

use std::collections::HashMap;

use bitcoin::{Block, BlockHash, OutPoint, Transaction, TxOut, Txid};

/// An unspent output with what validation needs to know about its origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Coin {
    pub txout: TxOut,
    pub height: u32,
    pub is_coinbase: bool,
}

#[derive(Debug)]
struct ConnectedBlock {
    block: Block,
    hash: BlockHash,
    /// Coins this block spent, to restore them on disconnect.
    spent: Vec<(OutPoint, Coin)>,
}

#[derive(Debug)]
pub(crate) struct ChainState {
    /// Index = height; never empty (genesis at 0).
    blocks: Vec<ConnectedBlock>,
    heights: HashMap<BlockHash, u32>,
    /// Blocks that were disconnected stay readable by hash, like a node's stale blocks.
    stale: HashMap<BlockHash, Block>,
    utxos: HashMap<OutPoint, Coin>,
    /// Height of the block holding each best-chain transaction.
    tx_heights: HashMap<Txid, u32>,
}

impl ChainState {
    /// A chain holding only `genesis`, whose coinbase is unspendable as in Bitcoin Core.
    pub fn new(genesis: Block) -> Self {
        let hash = genesis.block_hash();
        let mut tx_heights = HashMap::new();
        for tx in &genesis.txdata {
            tx_heights.insert(tx.compute_txid(), 0);
        }
        ChainState {
            blocks: vec![ConnectedBlock { block: genesis, hash, spent: Vec::new() }],
            heights: HashMap::from([(hash, 0)]),
            stale: HashMap::new(),
            utxos: HashMap::new(),
            tx_heights,
        }
    }

    pub fn tip_height(&self) -> u32 {
        (self.blocks.len() - 1) as u32
    }

    pub fn tip_hash(&self) -> BlockHash {
        self.blocks[self.blocks.len() - 1].hash
    }

    pub fn tip_time(&self) -> u32 {
        self.blocks[self.blocks.len() - 1].block.header.time
    }

    /// Median time of the last 11 blocks (BIP-113), the clock for time locks.
    pub fn median_time_past(&self) -> u32 {
        let mut times: Vec<u32> = self.blocks.iter().rev().take(11).map(|b| b.block.header.time).collect();
        times.sort_unstable();
        times[times.len() / 2]
    }

    /// Median time past as of the block at `height` (for BIP-68 time locks).
    pub fn median_time_past_at(&self, height: u32) -> u32 {
        let end = (height as usize + 1).min(self.blocks.len());
        let mut times: Vec<u32> = self.blocks[..end].iter().rev().take(11).map(|b| b.block.header.time).collect();
        times.sort_unstable();
        times[times.len() / 2]
    }

    pub fn hash_at(&self, height: u32) -> Option<BlockHash> {
        self.blocks.get(height as usize).map(|b| b.hash)
    }

    pub fn block(&self, hash: &BlockHash) -> Option<&Block> {
        match self.heights.get(hash) {
            Some(&h) => Some(&self.blocks[h as usize].block),
            None => self.stale.get(hash),
        }
    }

    /// The best chain's blocks above genesis, oldest first.
    pub fn blocks_above_genesis(&self) -> impl Iterator<Item = &Block> {
        self.blocks[1..].iter().map(|b| &b.block)
    }

    pub fn coin(&self, outpoint: &OutPoint) -> Option<&Coin> {
        self.utxos.get(outpoint)
    }

    pub fn utxos(&self) -> impl Iterator<Item = (&OutPoint, &Coin)> {
        self.utxos.iter()
    }

    /// Height of the best-chain block that holds `txid`.
    pub fn tx_height(&self, txid: &Txid) -> Option<u32> {
        self.tx_heights.get(txid).copied()
    }

    /// Whether any output of `txid` is unspent (Bitcoin Core refuses such a transaction
    /// again as "already in the UTXO set").
    pub fn has_unspent_outputs(&self, tx: &Transaction) -> bool {
        let txid = tx.compute_txid();
        (0..tx.output.len() as u32).any(|vout| self.utxos.contains_key(&OutPoint { txid, vout }))
    }

    /// Appends `block` on the tip. The caller has validated every transaction against this
    /// UTXO set, so a missing input is an internal bug reported as an error.
    pub fn connect(&mut self, block: Block) -> Result<(), String> {
        let hash = block.block_hash();
        if block.header.prev_blockhash != self.tip_hash() {
            return Err(format!("block {hash} does not build on the tip {}", self.tip_hash()));
        }
        let height = self.tip_height() + 1;
        // Spend first into a scratch list so a failure leaves the state untouched.
        let mut spent = Vec::new();
        for tx in block.txdata.iter().filter(|tx| !tx.is_coinbase()) {
            for input in &tx.input {
                if spent.iter().any(|(op, _)| *op == input.previous_output) {
                    return Err(format!("block {hash} spends {} twice", input.previous_output));
                }
                let created_here = block.txdata.iter().find(|t| t.compute_txid() == input.previous_output.txid);
                let coin = match (self.utxos.get(&input.previous_output), created_here) {
                    (Some(coin), _) => coin.clone(),
                    (None, Some(parent)) => match parent.output.get(input.previous_output.vout as usize) {
                        Some(txout) => Coin { txout: txout.clone(), height, is_coinbase: parent.is_coinbase() },
                        None => return Err(format!("block {hash} spends missing {}", input.previous_output)),
                    },
                    (None, None) => return Err(format!("block {hash} spends missing {}", input.previous_output)),
                };
                spent.push((input.previous_output, coin));
            }
        }
        for tx in &block.txdata {
            let txid = tx.compute_txid();
            for (vout, txout) in tx.output.iter().enumerate() {
                // Provably unspendable outputs never enter the UTXO set (as in Core).
                if txout.script_pubkey.is_op_return() {
                    continue;
                }
                let coin = Coin { txout: txout.clone(), height, is_coinbase: tx.is_coinbase() };
                self.utxos.insert(OutPoint { txid, vout: vout as u32 }, coin);
            }
            self.tx_heights.insert(txid, height);
        }
        for (outpoint, _) in &spent {
            self.utxos.remove(outpoint);
        }
        self.stale.remove(&hash);
        self.heights.insert(hash, height);
        self.blocks.push(ConnectedBlock { block, hash, spent });
        Ok(())
    }

    /// Removes the tip block: deletes the outputs it created, restores the coins it spent,
    /// and returns it. Genesis cannot be disconnected.
    pub fn disconnect_tip(&mut self) -> Option<Block> {
        if self.blocks.len() <= 1 {
            return None;
        }
        let ConnectedBlock { block, hash, spent } = self.blocks.pop()?;
        for tx in &block.txdata {
            let txid = tx.compute_txid();
            for vout in 0..tx.output.len() as u32 {
                self.utxos.remove(&OutPoint { txid, vout });
            }
            self.tx_heights.remove(&txid);
        }
        // Coins created and spent inside this block were removed above and must not come back.
        for (outpoint, coin) in spent {
            if coin.height <= self.tip_height() {
                self.utxos.insert(outpoint, coin);
            }
        }
        self.heights.remove(&hash);
        self.stale.insert(hash, block.clone());
        Some(block)
    }
}
