//! Market streams' payloads and the state one connection keeps to make them: book changes
//! gathered between sends, candles being built, the last top of book sent.
//!
//! Depth diffs follow Binance's sync rule: `U` and `u` are the first and last `book_seq` the
//! event covers (the same numbers as `lastUpdateId` of `GET /api/v3/depth`), levels carry the new
//! total at a price (0 = gone), and consecutive events continue (`U` = previous `u` + 1). If the
//! connection falls behind the engine, the gap shows in `U` and the client resyncs, as Binance
//! documents.

use std::collections::BTreeMap;

use serde_json::{json, Value};
use tandem_matching::{BookUpdate, MarketId, Price, Quantity, Side, Trade};
use tandem_store::CandleRecord;

use super::super::interval::Interval;
use super::super::Decimals;

/// Book changes not yet sent.
#[derive(Debug, Default)]
pub struct DepthBuffer {
    first: Option<u64>,
    last: u64,
    bids: BTreeMap<Price, Quantity>,
    asks: BTreeMap<Price, Quantity>,
}

impl DepthBuffer {
    pub fn add(&mut self, update: &BookUpdate) {
        self.first.get_or_insert(update.book_seq);
        self.last = update.book_seq;
        for &(side, price, quantity) in &update.levels {
            match side {
                Side::Buy => self.bids.insert(price, quantity),
                Side::Sell => self.asks.insert(price, quantity),
            };
        }
    }

    /// Forgets what was gathered (after missed updates: the next event's `U` shows the gap).
    pub fn clear(&mut self) {
        *self = DepthBuffer::default();
    }

    /// The `depthUpdate` event of what was gathered, if anything was; empties the buffer.
    pub fn take(&mut self, symbol: &str, d: &Decimals, now: u64) -> Option<Value> {
        let first = self.first.take()?;
        let level = |(p, q): (Price, Quantity)| [d.price(p.0), d.qty(q.0)];
        // Best first on each side.
        let bids: Vec<[String; 2]> = std::mem::take(&mut self.bids).into_iter().rev().map(level).collect();
        let asks: Vec<[String; 2]> = std::mem::take(&mut self.asks).into_iter().map(level).collect();
        Some(json!({
            "e": "depthUpdate",
            "E": now,
            "s": symbol,
            "U": first,
            "u": self.last,
            "b": bids,
            "a": asks,
        }))
    }
}

/// `<symbol>@trade`.
pub fn trade(symbol: &str, d: &Decimals, t: &Trade, time: u64) -> Value {
    json!({
        "e": "trade",
        "E": time,
        "s": symbol,
        "t": t.trade.0,
        "p": d.price(t.price.0),
        "q": d.qty(t.quantity.0),
        "T": time,
        "m": t.taker_side == Side::Sell,
        "M": true,
    })
}

/// `<symbol>@aggTrade` for each run of one command's trades in `market` (the same taker order
/// at the same price; its id is the run's first trade id, as `GET /api/v3/aggTrades` numbers it).
pub fn agg_trades<'a>(symbol: &str, d: &Decimals, market: MarketId, trades: impl Iterator<Item = &'a Trade>, time: u64) -> Vec<Value> {
    let mut runs: Vec<(Trade, u64, u64)> = Vec::new(); // first trade, total quantity, last trade id
    for t in trades.filter(|t| t.market == market) {
        match runs.last_mut() {
            Some((first, qty, last)) if first.taker_order == t.taker_order && first.price == t.price => {
                *qty += t.quantity.0;
                *last = t.trade.0;
            }
            _ => runs.push((*t, t.quantity.0, t.trade.0)),
        }
    }
    runs.iter()
        .map(|(first, qty, last)| {
            json!({
                "e": "aggTrade",
                "E": time,
                "s": symbol,
                "a": first.trade.0,
                "p": d.price(first.price.0),
                "q": d.qty(*qty),
                "f": first.trade.0,
                "l": last,
                "T": time,
                "m": first.taker_side == Side::Sell,
                "M": true,
            })
        })
        .collect()
}

/// The best bid and ask as last sent.
pub type Top = (Option<(Price, Quantity)>, Option<(Price, Quantity)>);

/// `<symbol>@bookTicker`.
pub fn book_ticker(symbol: &str, d: &Decimals, book_seq: u64, (bid, ask): Top) -> Value {
    let level = |l: Option<(Price, Quantity)>| l.map_or((d.price(0), d.qty(0)), |(p, q)| (d.price(p.0), d.qty(q.0)));
    let ((b, bq), (a, aq)) = (level(bid), level(ask));
    json!({ "u": book_seq, "s": symbol, "b": b, "B": bq, "a": a, "A": aq })
}

/// The candle of one interval being built from the live trades, on a base read from the store.
#[derive(Debug, Clone)]
pub struct KlineState {
    pub interval: Interval,
    pub name: &'static str,
    pub open_time: u64,
    /// The bucket's trades so far; `None` before its first.
    pub candle: Option<CandleRecord>,
    /// The last price before this bucket (a bucket without trades is flat at it).
    pub previous_close: Option<Price>,
    /// Trades of commands up to this seq are in the base already.
    pub through_seq: u64,
    pub changed: bool,
}

impl KlineState {
    pub fn add(&mut self, t: &Trade, seq: u64) {
        if seq <= self.through_seq {
            return;
        }
        let buy = t.taker_side == Side::Buy;
        let c = self.candle.get_or_insert(CandleRecord {
            open_time: self.open_time,
            open: t.price,
            high: t.price,
            low: t.price,
            close: t.price,
            volume: Quantity(0),
            quote_volume: tandem_matching::Amount(0),
            trades: 0,
            taker_buy_volume: Quantity(0),
            taker_buy_quote_volume: tandem_matching::Amount(0),
            first_trade_id: t.trade,
            last_trade_id: t.trade,
        });
        c.high = c.high.max(t.price);
        c.low = c.low.min(t.price);
        c.close = t.price;
        c.volume.0 += t.quantity.0;
        c.quote_volume.0 += t.notional.0;
        c.trades += 1;
        if buy {
            c.taker_buy_volume.0 += t.quantity.0;
            c.taker_buy_quote_volume.0 += t.notional.0;
        }
        c.last_trade_id = t.trade;
        self.changed = true;
    }

    /// Moves on to the bucket holding `now`: the events to send (the closed bucket, final,
    /// then the current one if it changed). Nothing exists before the market's first trade.
    pub fn tick(&mut self, symbol: &str, d: &Decimals, now: u64) -> Vec<Value> {
        let mut out = Vec::new();
        while self.interval.next(self.open_time) <= now {
            if let Some(v) = self.event(symbol, d, now, true) {
                out.push(v);
            }
            self.previous_close = self.candle.as_ref().map(|c| c.close).or(self.previous_close);
            self.candle = None;
            self.open_time = self.interval.next(self.open_time);
            self.changed = true;
            // After a long quiet spell, jump to the current bucket rather than send each empty one.
            let current = self.interval.open_time(now);
            if self.interval.next(self.open_time) <= now && self.open_time < current {
                self.open_time = current;
            }
        }
        if std::mem::take(&mut self.changed) {
            out.extend(self.event(symbol, d, now, false));
        }
        out
    }

    fn event(&self, symbol: &str, d: &Decimals, now: u64, closed: bool) -> Option<Value> {
        let flat = self.previous_close.map(|p| (p, p, p, p));
        let (o, h, l, c) = match &self.candle {
            Some(k) => (k.open, k.high, k.low, k.close),
            None => flat?,
        };
        let k = self.candle.as_ref();
        let id = |f: fn(&CandleRecord) -> u64| k.map_or(-1, |k| f(k) as i64);
        Some(json!({
            "e": "kline",
            "E": now,
            "s": symbol,
            "k": {
                "t": self.open_time,
                "T": self.interval.next(self.open_time) - 1,
                "s": symbol,
                "i": self.name,
                "f": id(|k| k.first_trade_id.0),
                "L": id(|k| k.last_trade_id.0),
                "o": d.price(o.0),
                "c": d.price(c.0),
                "h": d.price(h.0),
                "l": d.price(l.0),
                "v": d.qty(k.map_or(0, |k| k.volume.0)),
                "n": k.map_or(0, |k| k.trades),
                "x": closed,
                "q": d.quote(k.map_or(0, |k| k.quote_volume.0)),
                "V": d.qty(k.map_or(0, |k| k.taker_buy_volume.0)),
                "Q": d.quote(k.map_or(0, |k| k.taker_buy_quote_volume.0)),
                "B": "0",
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tandem_matching::{AccountId, Amount, OrderId, TradeId};

    const D: Decimals = Decimals { base: 8, quote: 2 };

    fn fill(id: u64, taker_order: u64, price: u64, qty: u64, taker_side: Side) -> Trade {
        Trade {
            trade: TradeId(id),
            market: MarketId(0),
            price: Price(price),
            quantity: Quantity(qty),
            notional: Amount(price * qty / 100_000_000),
            maker_order: OrderId(100 + id),
            maker_account: AccountId(9),
            taker_order: OrderId(taker_order),
            taker_account: AccountId(8),
            taker_side,
            maker_fee: Amount(0),
            taker_fee: Amount(0),
        }
    }

    #[test]
    fn depth_events_carry_the_first_and_last_update_and_each_level_once() {
        let mut buf = DepthBuffer::default();
        assert!(buf.take("BTCUSD", &D, 1).is_none());
        let update = |seq, levels: Vec<(Side, u64, u64)>| BookUpdate {
            market: MarketId(0),
            book_seq: seq,
            levels: levels.into_iter().map(|(s, p, q)| (s, Price(p), Quantity(q))).collect(),
        };
        buf.add(&update(7, vec![(Side::Buy, 100, 5), (Side::Sell, 110, 1)]));
        buf.add(&update(8, vec![(Side::Buy, 100, 0), (Side::Buy, 99, 2)]));
        let e = buf.take("BTCUSD", &D, 1).unwrap();
        assert_eq!((e["U"].as_u64(), e["u"].as_u64()), (Some(7), Some(8)));
        assert_eq!(e["b"], json!([["1.00000000", "0.00000000"], ["0.99000000", "0.00000002"]]));
        assert_eq!(e["a"], json!([["1.10000000", "0.00000001"]]));
        assert!(buf.take("BTCUSD", &D, 2).is_none(), "sent once");
        buf.add(&update(9, vec![(Side::Sell, 110, 0)]));
        assert_eq!(buf.take("BTCUSD", &D, 3).unwrap()["U"].as_u64(), Some(9));
    }

    #[test]
    fn aggregate_trades_join_a_taker_orders_fills_at_one_price() {
        let trades = [fill(1, 50, 100, 2, Side::Buy), fill(2, 50, 100, 3, Side::Buy), fill(3, 50, 101, 1, Side::Buy)];
        let out = agg_trades("BTCUSD", &D, MarketId(0), trades.iter(), 5);
        assert_eq!(out.len(), 2);
        assert_eq!((out[0]["a"].as_u64(), out[0]["f"].as_u64(), out[0]["l"].as_u64()), (Some(1), Some(1), Some(2)));
        assert_eq!(out[0]["q"], "0.00000005");
        assert_eq!((out[1]["a"].as_u64(), out[1]["m"].as_bool()), (Some(3), Some(false)));
        assert!(agg_trades("BTCUSD", &D, MarketId(1), trades.iter(), 5).is_empty());
    }

    #[test]
    fn candles_close_on_time_and_open_flat_at_the_last_price() {
        let interval = Interval::parse("1m").unwrap();
        let mut k = KlineState {
            interval,
            name: "1m",
            open_time: 60_000,
            candle: None,
            previous_close: None,
            through_seq: 10,
            changed: false,
        };
        assert!(k.tick("BTCUSD", &D, 61_000).is_empty(), "nothing before the first trade");
        k.add(&fill(1, 50, 100, 2, Side::Buy), 10); // already in the base
        assert!(!k.changed);
        k.add(&fill(2, 50, 105, 2, Side::Sell), 11);
        let out = k.tick("BTCUSD", &D, 62_000);
        assert_eq!(out.len(), 1);
        assert_eq!((out[0]["k"]["o"].as_str(), out[0]["k"]["x"].as_bool()), (Some("1.05000000"), Some(false)));
        assert_eq!(out[0]["k"]["V"], "0.00000000", "the taker sold");
        // The minute ends: the closed candle, then the next one, flat at its close.
        let out = k.tick("BTCUSD", &D, 120_500);
        assert_eq!(out.len(), 2);
        assert_eq!((out[0]["k"]["t"].as_u64(), out[0]["k"]["x"].as_bool()), (Some(60_000), Some(true)));
        assert_eq!((out[1]["k"]["t"].as_u64(), out[1]["k"]["c"].as_str(), out[1]["k"]["n"].as_u64()), (Some(120_000), Some("1.05000000"), Some(0)));
        assert_eq!(out[1]["k"]["f"].as_i64(), Some(-1));
        // Quiet for an hour: one closed candle, then the current one.
        let out = k.tick("BTCUSD", &D, 3_700_000);
        assert_eq!(out.len(), 2);
        assert_eq!(out[1]["k"]["t"].as_u64(), Some(3_660_000));
    }
}
