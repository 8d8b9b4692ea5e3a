//! The ledger's and the books' invariants, checked in full.
//!
//! Property tests run this after every command; snapshot restore and `journal verify` run it
//! once. It is linear in the state, so it is not on the hot path.

use crate::book::NIL;
use crate::engine::Engine;
use crate::types::*;
use std::collections::HashMap;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvariantViolation {
    #[error("asset {asset}: balances sum to {held} but deposits minus withdrawals are {expected}")]
    Conservation { asset: AssetId, held: u128, expected: u128 },
    #[error("account {account} asset {asset}: locked {locked} but orders and withdrawals hold {needed}")]
    LockMismatch { account: AccountId, asset: AssetId, locked: u64, needed: u128 },
    #[error("order {order}: holds {lock} but needs at least {needed}")]
    OrderUnderLocked { order: OrderId, lock: u64, needed: u128 },
    #[error("market {market}: book rests crossed, best bid {bid} >= best ask {ask}")]
    Crossed { market: MarketId, bid: Price, ask: Price },
    #[error("market {market}: level {price} is inconsistent: {detail}")]
    Level { market: MarketId, price: Price, detail: String },
    #[error("order {order}: {detail}")]
    Order { order: OrderId, detail: String },
}

impl Engine {
    pub fn check_invariants(&self) -> Result<(), InvariantViolation> {
        let n_assets = self.config.assets.len();
        // 1. Conservation per asset.
        for a in 0..n_assets {
            let asset = AssetId(a as u16);
            let held: u128 = self.ledger.balances.iter().skip(a).step_by(n_assets).map(|b| b.total()).sum();
            let expected = self.ledger.outstanding(asset);
            if held != expected {
                return Err(InvariantViolation::Conservation { asset, held, expected });
            }
        }

        // 2. Books: levels agree with their queues, queues with the slab; never crossed.
        let mut needed: HashMap<(AccountId, AssetId), u128> = HashMap::new();
        let mut seen = 0usize;
        for (m, book) in self.books.iter().enumerate() {
            let market = MarketId(m as u16);
            let rules = &self.rules[m];
            for side in [Side::Buy, Side::Sell] {
                for (&price, level) in &book.side(side).levels {
                    let (mut total, mut count, mut prev, mut slot) = (0u64, 0u32, NIL, level.head);
                    while slot != NIL {
                        let o = self.orders.get(slot);
                        let err = |d: &str| InvariantViolation::Order { order: o.id, detail: d.to_owned() };
                        if o.price != price || o.side != side || o.market != market {
                            return Err(err("queued at the wrong level"));
                        }
                        if o.prev != prev {
                            return Err(err("broken queue link"));
                        }
                        if o.filled >= o.quantity {
                            return Err(err("rests with nothing left"));
                        }
                        let min_lock = match side {
                            Side::Buy => rules.buy_lock(price, o.remaining()),
                            Side::Sell => o.remaining().0 as u128,
                        };
                        if (o.lock.0 as u128) < min_lock || (side == Side::Sell && o.lock.0 as u128 != min_lock) {
                            return Err(InvariantViolation::OrderUnderLocked { order: o.id, lock: o.lock.0, needed: min_lock });
                        }
                        *needed.entry((o.account, rules.lock_asset(side))).or_default() += o.lock.0 as u128;
                        total += o.remaining().0;
                        count += 1;
                        prev = slot;
                        slot = o.next;
                    }
                    if level.tail != prev || total != level.total || count != level.count || count == 0 {
                        return Err(InvariantViolation::Level {
                            market,
                            price,
                            detail: format!(
                                "counts {} orders / {} units, queue has {count} / {total}",
                                level.count, level.total
                            ),
                        });
                    }
                    seen += count as usize;
                }
            }
            if let (Some(bid), Some(ask)) = (book.bids.best(Side::Buy), book.asks.best(Side::Sell)) {
                if bid >= ask {
                    return Err(InvariantViolation::Crossed { market, bid, ask });
                }
            }
        }
        if seen != self.orders.len() {
            return Err(InvariantViolation::Order {
                order: OrderId(0),
                detail: format!("{} orders in the slab but {seen} on the books", self.orders.len()),
            });
        }

        // 3. Locked funds are exactly what open orders and pending withdrawals hold.
        for w in self.ledger.withdrawals.values() {
            *needed.entry((w.account, w.asset)).or_default() += w.amount.0 as u128;
        }
        // ... and booked settlement fees.
        for b in self.ledger.batches.values() {
            for leg in &b.legs {
                *needed.entry((leg.holder, b.asset)).or_default() += leg.fee.0 as u128;
            }
            for bump in &b.bumps {
                *needed.entry((bump.payer, b.asset)).or_default() += bump.extra.0 as u128;
            }
        }
        for (i, b) in self.ledger.balances.iter().enumerate() {
            let account = AccountId((i / n_assets) as u64 + 1);
            let asset = AssetId((i % n_assets) as u16);
            let need = needed.get(&(account, asset)).copied().unwrap_or(0);
            if b.locked.0 as u128 != need {
                return Err(InvariantViolation::LockMismatch { account, asset, locked: b.locked.0, needed: need });
            }
        }
        Ok(())
    }
}
