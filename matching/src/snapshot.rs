//! The engine's whole state in canonical form: snapshots to bound replay, and the state hash
//! that proves two engines (say, a running one and a fresh replay of the journal) agree.
//!
//! Canonical means independent of history: hash maps are sorted, books are listed best price
//! first in queue order, and slab positions are not included.

use crate::book::{MarketBook, OrderSlab, RestingOrder, NIL};
use crate::command::SelfTradePrevention;
use crate::config::EngineConfig;
use crate::engine::Engine;
use crate::ledger::{AssetTotals, Balance, DepositRecord, Ledger, PendingWithdrawal};
use crate::settlement::OpenBatch;
use crate::types::*;
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

/// 2: deposits with their account and amount (reversals), frozen accounts.
/// 3: settlement: holders' settled amounts, open batches, deposit holders.
/// 4: client withdrawal ids, the settlement leader's epoch, each book's `book_seq`.
pub const SNAPSHOT_VERSION: u32 = 4;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineSnapshot {
    pub version: u32,
    pub last_seq: Seq,
    pub config: EngineConfig,
    pub accounts: Vec<AccountKind>,
    pub balances: Vec<Balance>,
    pub totals: Vec<AssetTotals>,
    pub deposits: Vec<((AssetId, String), DepositRecord)>,
    pub frozen: Vec<AccountId>,
    pub withdrawals: Vec<(WithdrawalId, PendingWithdrawal)>,
    pub next_withdrawal: u64,
    pub client_withdrawals: Vec<(AccountId, ClientWithdrawalId, WithdrawalId)>,
    pub settled: Vec<((AccountId, AssetId), i128)>,
    pub batches: Vec<(BatchId, OpenBatch)>,
    pub last_batch: u64,
    pub next_order: u64,
    pub next_trade: u64,
    pub client_ids: Vec<(AccountId, ClientOrderId, OrderId)>,
    pub markets: Vec<MarketSnapshot>,
    pub settlement_epoch: u64,
    /// Per market, the book's `book_seq`.
    pub book_seqs: Vec<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarketSnapshot {
    pub halted: bool,
    /// Best price first, each level in time priority.
    pub bids: Vec<SnapshotOrder>,
    pub asks: Vec<SnapshotOrder>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotOrder {
    pub id: OrderId,
    pub account: AccountId,
    pub price: Price,
    pub quantity: Quantity,
    pub filled: Quantity,
    pub lock: Amount,
    pub client_order_id: Option<ClientOrderId>,
    pub self_trade: SelfTradePrevention,
    pub post_only: bool,
    pub placed_at: Timestamp,
}

/// A 32-byte BLAKE3 digest of the canonical state.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct StateHash(pub [u8; 32]);

impl std::fmt::Display for StateHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl std::fmt::Debug for StateHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StateHash({self})")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot cannot be decoded: {0}")]
    Decode(#[from] postcard::Error),
    #[error("snapshot version {0} is not supported (expected {SNAPSHOT_VERSION})")]
    Version(u32),
    #[error("snapshot is inconsistent: {0}")]
    Inconsistent(String),
}

impl Engine {
    pub fn snapshot(&self) -> EngineSnapshot {
        let mut deposits: Vec<((AssetId, String), DepositRecord)> =
            self.ledger.deposits.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        deposits.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let mut frozen: Vec<AccountId> = self.ledger.frozen.iter().copied().collect();
        frozen.sort_unstable();
        let mut client_ids: Vec<(AccountId, ClientOrderId, OrderId)> =
            self.client_ids.iter().map(|((a, c), o)| (*a, *c, *o)).collect();
        client_ids.sort_unstable();
        let mut client_withdrawals: Vec<(AccountId, ClientWithdrawalId, WithdrawalId)> =
            self.ledger.client_withdrawals.iter().map(|((a, c), w)| (*a, *c, *w)).collect();
        client_withdrawals.sort_unstable();
        let markets = self
            .books
            .iter()
            .map(|b| MarketSnapshot {
                halted: b.halted,
                bids: side_orders(&self.orders, b, Side::Buy),
                asks: side_orders(&self.orders, b, Side::Sell),
            })
            .collect();
        EngineSnapshot {
            version: SNAPSHOT_VERSION,
            last_seq: self.last_seq,
            config: self.config.clone(),
            accounts: self.ledger.kinds.clone(),
            balances: self.ledger.balances.clone(),
            totals: self.ledger.totals.clone(),
            deposits,
            frozen,
            withdrawals: self.ledger.withdrawals.iter().map(|(k, v)| (*k, v.clone())).collect(),
            next_withdrawal: self.ledger.next_withdrawal,
            client_withdrawals,
            settled: self.ledger.settled.iter().map(|(k, v)| (*k, *v)).collect(),
            batches: self.ledger.batches.iter().map(|(k, v)| (*k, v.clone())).collect(),
            last_batch: self.ledger.last_batch,
            next_order: self.next_order,
            next_trade: self.next_trade,
            client_ids,
            markets,
            settlement_epoch: self.settlement_epoch,
            book_seqs: self.book_seqs.clone(),
        }
    }

    pub fn snapshot_bytes(&self) -> Vec<u8> {
        postcard::to_allocvec(&self.snapshot()).expect("snapshots always encode")
    }

    /// BLAKE3 over the canonical snapshot encoding. Linear in the state's size; meant to run every
    /// N commands and on demand, not per command.
    pub fn state_hash(&self) -> StateHash {
        let mut hasher = blake3::Hasher::new();
        postcard::to_io(&self.snapshot(), &mut hasher).expect("hashing never fails");
        StateHash(*hasher.finalize().as_bytes())
    }

    /// A snapshot of another version is refused as such (not as undecodable), so callers can
    /// tell a format change, after which they rebuild from the journal, from damage.
    pub fn from_snapshot_bytes(bytes: &[u8]) -> Result<Engine, SnapshotError> {
        let (version, _) = postcard::take_from_bytes::<u32>(bytes)?;
        if version != SNAPSHOT_VERSION {
            return Err(SnapshotError::Version(version));
        }
        Engine::restore(postcard::from_bytes(bytes)?)
    }

    /// Rebuilds an engine from a snapshot and checks the result against every invariant.
    pub fn restore(s: EngineSnapshot) -> Result<Engine, SnapshotError> {
        if s.version != SNAPSHOT_VERSION {
            return Err(SnapshotError::Version(s.version));
        }
        let bad = |m: &str| SnapshotError::Inconsistent(m.to_owned());
        s.config.validate().map_err(|e| SnapshotError::Inconsistent(e.to_string()))?;
        let n_assets = s.config.assets.len();
        if s.balances.len() != s.accounts.len() * n_assets || s.totals.len() != n_assets {
            return Err(bad("balance table does not match accounts and assets"));
        }
        if s.markets.len() != s.config.markets.len() || s.book_seqs.len() != s.config.markets.len() {
            return Err(bad("market count does not match the configuration"));
        }
        let mut ledger = Ledger::new(n_assets);
        ledger.kinds = s.accounts;
        ledger.balances = s.balances;
        ledger.totals = s.totals;
        ledger.deposits = s.deposits.into_iter().collect();
        ledger.frozen = s.frozen.into_iter().collect();
        ledger.withdrawals = s.withdrawals.into_iter().collect();
        ledger.next_withdrawal = s.next_withdrawal;
        if s.client_withdrawals.iter().any(|(a, _, w)| !ledger.exists(*a) || w.0 >= s.next_withdrawal) {
            return Err(bad("a client withdrawal id names an unknown account or a withdrawal from the future"));
        }
        ledger.client_withdrawals = s.client_withdrawals.into_iter().map(|(a, c, w)| ((a, c), w)).collect();
        ledger.settled = s.settled.into_iter().collect();
        ledger.batches = s.batches.into_iter().collect();
        ledger.last_batch = s.last_batch;
        let mut engine = Engine {
            rules: Engine::rules_of(&s.config),
            books: vec![MarketBook::default(); s.config.markets.len()],
            config: s.config,
            ledger,
            orders: OrderSlab::default(),
            client_ids: s.client_ids.into_iter().map(|(a, c, o)| ((a, c), o)).collect::<FxHashMap<_, _>>(),
            next_order: s.next_order,
            next_trade: s.next_trade,
            last_seq: s.last_seq,
            settlement_epoch: s.settlement_epoch,
            book_seqs: s.book_seqs,
        };
        for (m, market) in s.markets.into_iter().enumerate() {
            engine.books[m].halted = market.halted;
            for (side, orders) in [(Side::Buy, market.bids), (Side::Sell, market.asks)] {
                for o in orders {
                    if o.filled >= o.quantity || engine.orders.slot_of(o.id).is_some() || o.id.0 >= engine.next_order {
                        return Err(bad("an order is filled, duplicated or from the future"));
                    }
                    if !engine.ledger.exists(o.account) {
                        return Err(bad("an order belongs to an unknown account"));
                    }
                    let slot = engine.orders.insert(RestingOrder {
                        id: o.id,
                        account: o.account,
                        market: MarketId(m as u16),
                        side,
                        price: o.price,
                        quantity: o.quantity,
                        filled: o.filled,
                        lock: o.lock,
                        client_order_id: o.client_order_id,
                        self_trade: o.self_trade,
                        post_only: o.post_only,
                        placed_at: o.placed_at,
                        prev: NIL,
                        next: NIL,
                    });
                    engine.books[m].side_mut(side).push_back(&mut engine.orders, slot);
                }
            }
        }
        engine.check_invariants().map_err(|v| SnapshotError::Inconsistent(v.to_string()))?;
        Ok(engine)
    }
}

fn side_orders(slab: &OrderSlab, book: &MarketBook, side: Side) -> Vec<SnapshotOrder> {
    let mut v = Vec::new();
    for (_, level) in book.side(side).iter_best_first(side) {
        let mut slot = level.head;
        while slot != NIL {
            let o = slab.get(slot);
            v.push(SnapshotOrder {
                id: o.id,
                account: o.account,
                price: o.price,
                quantity: o.quantity,
                filled: o.filled,
                lock: o.lock,
                client_order_id: o.client_order_id,
                self_trade: o.self_trade,
                post_only: o.post_only,
                placed_at: o.placed_at,
            });
            slot = o.next;
        }
    }
    v
}
