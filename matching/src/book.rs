//! Resting orders: a slab of order slots, and per market two sides of price levels, each level a
//! FIFO queue threaded through the slab (so cancel and amend are O(1) once the order is found).

use crate::command::SelfTradePrevention;
use crate::types::*;
use rustc_hash::FxHashMap;
use std::collections::BTreeMap;

pub(crate) const NIL: u32 = u32::MAX;

/// A resting order.
#[derive(Clone, Debug)]
pub(crate) struct RestingOrder {
    pub id: OrderId,
    pub account: AccountId,
    pub market: MarketId,
    pub side: Side,
    pub price: Price,
    /// Total quantity, including what already filled.
    pub quantity: Quantity,
    pub filled: Quantity,
    /// Funds this order holds: quote for a buy (at least `ceil(price * remaining / scale)`),
    /// base for a sell (exactly `remaining`).
    pub lock: Amount,
    pub client_order_id: Option<ClientOrderId>,
    pub self_trade: SelfTradePrevention,
    pub post_only: bool,
    pub placed_at: Timestamp,
    pub prev: u32,
    pub next: u32,
}

impl RestingOrder {
    #[inline]
    pub fn remaining(&self) -> Quantity {
        Quantity(self.quantity.0 - self.filled.0)
    }
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct Level {
    pub head: u32,
    pub tail: u32,
    /// Sum of the remaining quantity of the orders queued here.
    pub total: u64,
    pub count: u32,
}

/// All resting orders of every market, addressed by slot.
#[derive(Clone, Debug, Default)]
pub(crate) struct OrderSlab {
    slots: Vec<Option<RestingOrder>>,
    free: Vec<u32>,
    pub(crate) by_id: FxHashMap<OrderId, u32>,
}

impl OrderSlab {
    pub fn insert(&mut self, order: RestingOrder) -> u32 {
        let id = order.id;
        let slot = match self.free.pop() {
            Some(s) => {
                self.slots[s as usize] = Some(order);
                s
            }
            None => {
                self.slots.push(Some(order));
                (self.slots.len() - 1) as u32
            }
        };
        self.by_id.insert(id, slot);
        slot
    }

    pub fn remove(&mut self, slot: u32) -> RestingOrder {
        let order = self.slots[slot as usize].take().expect("slot in use");
        self.by_id.remove(&order.id);
        self.free.push(slot);
        order
    }

    #[inline]
    pub fn get(&self, slot: u32) -> &RestingOrder {
        self.slots[slot as usize].as_ref().expect("slot in use")
    }

    #[inline]
    pub fn get_mut(&mut self, slot: u32) -> &mut RestingOrder {
        self.slots[slot as usize].as_mut().expect("slot in use")
    }

    pub fn slot_of(&self, id: OrderId) -> Option<u32> {
        self.by_id.get(&id).copied()
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = &RestingOrder> {
        self.slots.iter().filter_map(|s| s.as_ref())
    }
}

/// One side of one market's book.
#[derive(Clone, Debug, Default)]
pub(crate) struct BookSide {
    pub levels: BTreeMap<Price, Level>,
}

impl BookSide {
    /// Best price for this side: highest bid or lowest ask.
    #[inline]
    pub fn best(&self, side: Side) -> Option<Price> {
        match side {
            Side::Buy => self.levels.last_key_value().map(|(p, _)| *p),
            Side::Sell => self.levels.first_key_value().map(|(p, _)| *p),
        }
    }

    /// Levels from best to worst.
    pub fn iter_best_first(&self, side: Side) -> Box<dyn Iterator<Item = (&Price, &Level)> + '_> {
        match side {
            Side::Buy => Box::new(self.levels.iter().rev()),
            Side::Sell => Box::new(self.levels.iter()),
        }
    }

    /// Appends the order in `slot` at the back of its price level.
    pub fn push_back(&mut self, slab: &mut OrderSlab, slot: u32) {
        let (price, qty) = {
            let o = slab.get(slot);
            (o.price, o.remaining().0)
        };
        let level = self.levels.entry(price).or_insert(Level { head: NIL, tail: NIL, total: 0, count: 0 });
        let old_tail = level.tail;
        {
            let o = slab.get_mut(slot);
            o.prev = old_tail;
            o.next = NIL;
        }
        if old_tail == NIL {
            level.head = slot;
        } else {
            slab.get_mut(old_tail).next = slot;
        }
        level.tail = slot;
        level.total += qty;
        level.count += 1;
    }

    /// Unlinks the order in `slot` from its level (dropping the level when it empties). The
    /// order's remaining quantity must be what the level counted for it.
    pub fn unlink(&mut self, slab: &mut OrderSlab, slot: u32) {
        let (price, prev, next, qty) = {
            let o = slab.get(slot);
            (o.price, o.prev, o.next, o.remaining().0)
        };
        if prev != NIL {
            slab.get_mut(prev).next = next;
        }
        if next != NIL {
            slab.get_mut(next).prev = prev;
        }
        let level = self.levels.get_mut(&price).expect("resting order has a level");
        if level.head == slot {
            level.head = next;
        }
        if level.tail == slot {
            level.tail = prev;
        }
        level.total -= qty;
        level.count -= 1;
        if level.count == 0 {
            self.levels.remove(&price);
        }
    }

    /// Remaining quantity at a price, for market-data deltas.
    pub fn quantity_at(&self, price: Price) -> Quantity {
        Quantity(self.levels.get(&price).map_or(0, |l| l.total))
    }
}

#[derive(Clone, Debug, Default)]
pub(crate) struct MarketBook {
    pub bids: BookSide,
    pub asks: BookSide,
    pub halted: bool,
}

impl MarketBook {
    #[inline]
    pub fn side(&self, side: Side) -> &BookSide {
        match side {
            Side::Buy => &self.bids,
            Side::Sell => &self.asks,
        }
    }

    #[inline]
    pub fn side_mut(&mut self, side: Side) -> &mut BookSide {
        match side {
            Side::Buy => &mut self.bids,
            Side::Sell => &mut self.asks,
        }
    }
}
