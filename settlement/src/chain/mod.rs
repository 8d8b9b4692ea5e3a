//! The chain port: everything settlement needs from the Bitcoin network, behind one small
//! async trait so the node can run on the embedded devnet ([`crate::devnet::Devnet`]) or on
//! a real node ([`bitcoind::Bitcoind`]) without knowing which.
//!
//! The port owns reads of the best chain (tip, blocks, hashes by height for reorg
//! detection), the mempool, transaction status, relay (broadcast and dry-run acceptance),
//! fee estimation and a scan of confirmed outputs by script. It does not own keys, wallets
//! or any settlement state.

pub mod bitcoind;
pub mod regtest_node;

use async_trait::async_trait;
use bitcoin::{Block, BlockHash, FeeRate, Network, OutPoint, ScriptBuf, Transaction, TxOut, Txid};

pub use bitcoind::{Bitcoind, BitcoindAuth, BitcoindConfig};
pub use regtest_node::RegtestNode;

/// A block of the best chain, by height and hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BlockRef {
    pub height: u32,
    pub hash: BlockHash,
}

/// Where a transaction stands from the point of view of the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxStatus {
    /// Neither in the mempool nor in the best chain (never seen, evicted, or reorged out
    /// and not readmitted).
    Unknown,
    InMempool,
    /// In block `block_hash` at `height` of the best chain; `confirmations` is 1 when that
    /// block is the tip.
    Confirmed {
        height: u32,
        block_hash: BlockHash,
        confirmations: u32,
    },
}

/// A confirmed unspent output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Utxo {
    pub outpoint: OutPoint,
    pub txout: TxOut,
    /// Height of the block that created the output.
    pub height: u32,
}

/// Everything that can go wrong talking to a chain backend. Bad data from a node is an
/// error here, never a panic.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    /// The node answered a call with a JSON-RPC error.
    #[error("RPC {method} failed ({code}): {message}")]
    Rpc { method: String, code: i64, message: String },
    /// The node could not be reached or answered something that is not JSON-RPC.
    #[error("transport: {0}")]
    Transport(String),
    /// The transaction was refused by mempool policy or consensus; `reason` is the node's.
    #[error("transaction {txid} rejected: {reason}")]
    Rejected { txid: Txid, reason: String },
    #[error("not found: {0}")]
    NotFound(String),
    /// The node answered with data that does not parse (hex, consensus encoding, JSON shape).
    #[error("cannot decode {0}")]
    Decode(String),
    /// The node runs a different chain than the one configured.
    #[error("network mismatch: configured {configured}, node runs {node}")]
    NetworkMismatch { configured: Network, node: String },
    /// The caller asked for something impossible (e.g. a reorg deeper than the chain).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
}

pub type Result<T, E = ChainError> = std::result::Result<T, E>;

/// Read and relay access to one Bitcoin chain. Object safe: hold it as `Arc<dyn Chain>`.
#[async_trait]
pub trait Chain: Send + Sync {
    /// The network this backend runs; fixed for its lifetime.
    fn network(&self) -> Network;

    /// The best block.
    async fn tip(&self) -> Result<BlockRef>;

    /// The hash of the best-chain block at `height`, `None` above the tip. A watcher
    /// detects a reorg when this differs from the hash it saw before.
    async fn block_hash(&self, height: u32) -> Result<Option<BlockHash>>;

    /// A block by hash (best chain or not, as long as the backend still has it).
    async fn block(&self, hash: &BlockHash) -> Result<Block>;

    /// All mempool transactions.
    async fn mempool(&self) -> Result<Vec<Transaction>>;

    async fn transaction_status(&self, txid: &Txid) -> Result<TxStatus>;

    /// Submits `tx` to the mempool and relays it. A refusal is [`ChainError::Rejected`].
    async fn broadcast(&self, tx: &Transaction) -> Result<Txid>;

    /// Checks that `tx` would be accepted by [`Chain::broadcast`] without submitting it.
    async fn test_mempool_accept(&self, tx: &Transaction) -> Result<()>;

    /// Fee rate expected to confirm within `target_blocks`; the backend's configured
    /// fallback when it has no estimate.
    async fn fee_rate(&self, target_blocks: u16) -> Result<FeeRate>;

    /// Confirmed unspent outputs paying any of `scripts` (mempool spends are not
    /// subtracted: an output spent by an unconfirmed transaction is still listed).
    async fn utxos(&self, scripts: &[ScriptBuf]) -> Result<Vec<Utxo>>;
}
