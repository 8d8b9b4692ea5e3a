//! Settlement: everything between the ledger and the Bitcoin chain.
//!
//! Owned here now: chain access, the [`chain::Chain`] port with its two adapters, the
//! embedded regtest [`devnet::Devnet`] (the default, so `tandem demo` needs nothing
//! installed) and [`chain::Bitcoind`] (JSON-RPC to Bitcoin Core on regtest, signet or
//! mainnet); deposit detection ([`deposits::DepositScanner`]: what to credit, and what a reorg
//! took back). To come: reversals in the ledger, settlement batches (netting, fee sharing, RBF
//! bumps, rebroadcast after reorgs) and reconciliation of ledger against chain.

pub mod batch;
pub mod chain;
pub mod devnet;
pub mod single_key;
pub mod deposits;

pub use chain::{Bitcoind, BitcoindAuth, BitcoindConfig, BlockRef, Chain, ChainError, RegtestNode, TxStatus, Utxo};
pub use deposits::{DepositEvent, DepositPolicy, DepositScanner};
pub use devnet::{Devnet, DevnetConfig};
pub use single_key::SingleKey;
