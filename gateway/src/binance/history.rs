//! Binance's market history: `aggTrades`, `klines` (and `uiKlines`, the same candles) and
//! `ticker/24hr`, read from the store's projections after they have caught up with the engine.
//!
//! Candles exist for every interval from a market's first trade on: an interval without trades
//! is flat at the previous close with no volume, as Binance shows it.

use std::collections::HashMap;

use actix_web::web::{self, Data};
use actix_web::{HttpRequest, HttpResponse};
use rust_decimal::Decimal;
use serde_json::{json, Value};
use tandem_matching::config::{to_decimal, MarketSpec};
use tandem_matching::{MarketId, Price, Side};
use tandem_store::CandleRecord;

use super::interval::Interval;
use super::public::{limit, markets, one_market, one_or_list, params};
use super::{number, symbol_of, BinanceError, Decimals};
use crate::Gateway;

const HOUR: u64 = 3_600_000;
const DAY: u64 = 24 * HOUR;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/v3/aggTrades", web::get().to(agg_trades))
        .route("/api/v3/klines", web::get().to(klines))
        .route("/api/v3/uiKlines", web::get().to(klines))
        .route("/api/v3/ticker/24hr", web::get().to(ticker_24hr));
}

/// An optional millisecond time or id parameter.
fn opt_u64(p: &HashMap<String, String>, name: &str) -> Result<Option<u64>, BinanceError> {
    p.get(name)
        .map(|v| v.parse::<u64>().map_err(|_| BinanceError::illegal_characters(name, "^[0-9]{1,20}$")))
        .transpose()
}

/// Aggregate trades, oldest first: from aggregate `fromId` on, or from `startTime`, else the newest.
async fn agg_trades(gw: Data<Gateway>, req: HttpRequest) -> Result<HttpResponse, BinanceError> {
    let p = params(&req)?;
    let (market, spec) = one_market(&gw, &p)?;
    let n = limit(&p, 500, 1000)?;
    let (from, start, end) = (opt_u64(&p, "fromId")?, opt_u64(&p, "startTime")?, opt_u64(&p, "endTime")?);
    if let (Some(a), Some(b)) = (start, end) {
        if b < a || b - a > HOUR {
            return Err(BinanceError::new(actix_web::http::StatusCode::BAD_REQUEST, -1127, "More than 1 hours between startTime and endTime."));
        }
    }
    gw.catch_up_all().await?;
    let runs = gw.store.agg_trades_page(market, from, (start, end), n as u32).await?;
    let d = Decimals::of(&gw, spec);
    let out: Vec<Value> = runs
        .iter()
        .map(|r| {
            json!({
                "a": r.agg_trade_id.0,
                "p": d.price(r.price.0),
                "q": d.qty(r.quantity.0),
                "f": r.first_trade_id.0,
                "l": r.last_trade_id.0,
                "T": r.timestamp.0,
                "m": r.taker_side == Side::Sell,
                "M": true,
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(out))
}

/// One candle, filled or flat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Candle {
    open_time: u64,
    close_time: u64,
    record: CandleRecord,
}

/// The opens of the buckets a klines request covers: from the first bucket opening at or after
/// `start`, else back from the bucket holding `end` (or now); at most `n`.
fn bucket_opens(interval: Interval, start: Option<u64>, end: Option<u64>, now: u64, n: usize) -> Vec<u64> {
    let last = interval.open_time(end.unwrap_or(now).min(now));
    match start {
        // Nothing opens after now (and a start near the end of time cannot overflow).
        Some(start) if start > now => Vec::new(),
        Some(start) => {
            let mut open = interval.open_time(start);
            if open < start {
                open = interval.next(open);
            }
            let mut opens = Vec::new();
            while open <= last && opens.len() < n {
                opens.push(open);
                open = interval.next(open);
            }
            opens
        }
        None => {
            let mut opens = vec![last];
            while opens.len() < n {
                let first = opens[opens.len() - 1];
                if first == 0 {
                    break;
                }
                opens.push(interval.open_time(first - 1));
            }
            opens.reverse();
            opens
        }
    }
}

/// Candles for each open from the store's (non-empty) buckets: merged into the interval's
/// buckets (days into months), and flat at the previous close where there were no trades.
/// Buckets before the market's first trade are left out.
fn fill(interval: Interval, opens: &[u64], stored: &[CandleRecord], mut previous_close: Option<Price>) -> Vec<Candle> {
    let mut out = Vec::with_capacity(opens.len());
    let mut stored = stored.iter().peekable();
    for &open in opens {
        let next = interval.next(open);
        let mut merged: Option<CandleRecord> = None;
        while let Some(k) = stored.next_if(|k| k.open_time < next) {
            if k.open_time < open {
                continue;
            }
            merged = Some(match merged {
                None => k.clone(),
                Some(m) => CandleRecord {
                    open_time: m.open_time,
                    open: m.open,
                    high: m.high.max(k.high),
                    low: m.low.min(k.low),
                    close: k.close,
                    volume: tandem_matching::Quantity(m.volume.0 + k.volume.0),
                    quote_volume: tandem_matching::Amount(m.quote_volume.0 + k.quote_volume.0),
                    trades: m.trades + k.trades,
                    taker_buy_volume: tandem_matching::Quantity(m.taker_buy_volume.0 + k.taker_buy_volume.0),
                    taker_buy_quote_volume: tandem_matching::Amount(m.taker_buy_quote_volume.0 + k.taker_buy_quote_volume.0),
                    first_trade_id: m.first_trade_id,
                    last_trade_id: k.last_trade_id,
                },
            });
        }
        let record = match merged {
            Some(k) => k,
            None => match previous_close {
                Some(close) => flat(open, close),
                None => continue,
            },
        };
        previous_close = Some(record.close);
        out.push(Candle { open_time: open, close_time: next - 1, record: CandleRecord { open_time: open, ..record } });
    }
    out
}

/// A bucket without trades.
fn flat(open_time: u64, price: Price) -> CandleRecord {
    CandleRecord {
        open_time,
        open: price,
        high: price,
        low: price,
        close: price,
        volume: tandem_matching::Quantity(0),
        quote_volume: tandem_matching::Amount(0),
        trades: 0,
        taker_buy_volume: tandem_matching::Quantity(0),
        taker_buy_quote_volume: tandem_matching::Amount(0),
        first_trade_id: tandem_matching::TradeId(0),
        last_trade_id: tandem_matching::TradeId(0),
    }
}

/// A market's candles over the buckets `opens`.
pub(super) async fn candles(gw: &Gateway, market: MarketId, interval: Interval, opens: &[u64]) -> Result<Vec<Candle>, BinanceError> {
    let (Some(&first), Some(&last)) = (opens.first(), opens.last()) else { return Ok(Vec::new()) };
    gw.catch_up_all().await?;
    let stored = gw.store.candles(market, interval.store_buckets(), (first, interval.next(last)), None).await?;
    let previous = gw.store.last_trade_before(market, first).await?.map(|t| t.price);
    Ok(fill(interval, opens, &stored, previous))
}

async fn klines(gw: Data<Gateway>, req: HttpRequest) -> Result<HttpResponse, BinanceError> {
    let p = params(&req)?;
    let (market, spec) = one_market(&gw, &p)?;
    let interval = Interval::parse(p.get("interval").map(String::as_str).unwrap_or(""))?;
    if let Some(tz) = p.get("timeZone") {
        if !matches!(tz.as_str(), "0" | "+0" | "-0" | "00:00" | "+00:00" | "-00:00") {
            return Err(BinanceError::bad_combination("Only timeZone 0 (UTC) is offered."));
        }
    }
    let n = limit(&p, 500, 1000)?;
    let (start, end) = (opt_u64(&p, "startTime")?, opt_u64(&p, "endTime")?);
    if let (Some(a), Some(b)) = (start, end) {
        if b < a {
            return Err(BinanceError::new(actix_web::http::StatusCode::BAD_REQUEST, -1127, "startTime is after endTime."));
        }
    }
    let opens = bucket_opens(interval, start, end, crate::auth::now_millis(), n);
    let d = Decimals::of(&gw, spec);
    let out: Vec<Value> = candles(&gw, market, interval, &opens)
        .await?
        .iter()
        .map(|c| {
            let k = &c.record;
            json!([
                c.open_time,
                d.price(k.open.0),
                d.price(k.high.0),
                d.price(k.low.0),
                d.price(k.close.0),
                d.qty(k.volume.0),
                c.close_time,
                d.quote(k.quote_volume.0),
                k.trades,
                d.qty(k.taker_buy_volume.0),
                d.quote(k.taker_buy_quote_volume.0),
                "0",
            ])
        })
        .collect();
    Ok(HttpResponse::Ok().json(out))
}

/// Statistics of the last 24 hours (a rolling window ending now), per market.
async fn ticker_24hr(gw: Data<Gateway>, req: HttpRequest) -> Result<HttpResponse, BinanceError> {
    let p = params(&req)?;
    let mini = match p.get("type").map(String::as_str) {
        None | Some("FULL") => false,
        Some("MINI") => true,
        Some(_) => return Err(BinanceError::illegal_characters("type", "FULL|MINI")),
    };
    let now = crate::auth::now_millis();
    let open_time = now.saturating_sub(DAY);
    gw.catch_up_all().await?;
    let mut items = Vec::new();
    for (market, spec) in markets(&gw, &p)? {
        let window = tandem_store::Buckets { origin: open_time, interval: DAY + 1 };
        let day = gw.store.candles(market, window, (open_time, now + 1), None).await?.into_iter().next();
        let last = gw.store.trades(market, 1).await?.into_iter().next();
        items.push(ticker(&gw, market, spec, day, last, open_time, now, mini).await?);
    }
    Ok(one_or_list(&p, items))
}

#[allow(clippy::too_many_arguments)]
async fn ticker(
    gw: &Gateway,
    market: MarketId,
    spec: &MarketSpec,
    day: Option<CandleRecord>,
    last: Option<tandem_store::TradeRecord>,
    open_time: u64,
    close_time: u64,
    mini: bool,
) -> Result<Value, BinanceError> {
    let d = Decimals::of(gw, spec);
    let last_price = last.as_ref().map_or(0, |t| t.price.0);
    let k = day.clone().unwrap_or_else(|| flat(open_time, Price(last_price)));
    let (first_id, last_id) = match &day {
        Some(k) => (k.first_trade_id.0 as i64, k.last_trade_id.0 as i64),
        None => (-1, -1),
    };
    let symbol = symbol_of(&gw.engine_config, spec);
    let mut v = json!({
        "symbol": symbol,
        "openPrice": d.price(k.open.0),
        "highPrice": d.price(k.high.0),
        "lowPrice": d.price(k.low.0),
        "lastPrice": d.price(last_price),
        "volume": d.qty(k.volume.0),
        "quoteVolume": d.quote(k.quote_volume.0),
        "openTime": open_time,
        "closeTime": close_time,
        "firstId": first_id,
        "lastId": last_id,
        "count": k.trades,
    });
    if mini {
        return Ok(v);
    }
    let open = to_decimal(k.open.0, d.quote);
    let change = to_decimal(last_price, d.quote) - open;
    let percent = if open.is_zero() { Decimal::ZERO } else { (change * Decimal::ONE_HUNDRED / open).round_dp(3) };
    // Quote per whole base unit, at eight places as Binance gives it.
    let weighted = match k.volume.0 {
        0 => Decimal::ZERO,
        v => (to_decimal(k.quote_volume.0, d.quote) / to_decimal(v, d.base)).round_dp(8),
    };
    let previous = gw.store.last_trade_before(market, open_time).await?.map_or(0, |t| t.price.0);
    let (_, book) = gw.sequencer.book(market, 1).await?.ok_or_else(BinanceError::invalid_symbol)?;
    let best = |levels: &[tandem_matching::DepthLevel]| {
        levels.first().map_or((d.price(0), d.qty(0)), |l| (d.price(l.price.0), d.qty(l.quantity.0)))
    };
    let ((bid, bid_qty), (ask, ask_qty)) = (best(&book.bids), best(&book.asks));
    let extra = json!({
        "priceChange": number(change),
        "priceChangePercent": format!("{:.3}", percent),
        "weightedAvgPrice": number(weighted),
        "prevClosePrice": d.price(previous),
        "lastQty": d.qty(last.as_ref().map_or(0, |t| t.quantity.0)),
        "bidPrice": bid, "bidQty": bid_qty, "askPrice": ask, "askQty": ask_qty,
    });
    if let (Some(v), Value::Object(extra)) = (v.as_object_mut(), extra) {
        v.extend(extra);
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tandem_matching::{Amount, Quantity, TradeId};

    const MIN: u64 = 60_000;

    fn record(open_time: u64, open: u64, close: u64, volume: u64, first: u64, last: u64) -> CandleRecord {
        CandleRecord {
            open_time,
            open: Price(open),
            high: Price(open.max(close)),
            low: Price(open.min(close)),
            close: Price(close),
            volume: Quantity(volume),
            quote_volume: Amount(volume * 10),
            trades: last - first + 1,
            taker_buy_volume: Quantity(volume),
            taker_buy_quote_volume: Amount(volume * 10),
            first_trade_id: TradeId(first),
            last_trade_id: TradeId(last),
        }
    }

    #[test]
    fn buckets_go_back_from_now_or_forward_from_the_start() {
        let m = Interval::parse("1m").unwrap();
        let now = 10 * MIN + 5;
        assert_eq!(bucket_opens(m, None, None, now, 3), vec![8 * MIN, 9 * MIN, 10 * MIN]);
        assert_eq!(bucket_opens(m, None, Some(4 * MIN), now, 2), vec![3 * MIN, 4 * MIN]);
        // The first bucket opening at or after the start; never past now.
        assert_eq!(bucket_opens(m, Some(MIN + 1), None, now, 3), vec![2 * MIN, 3 * MIN, 4 * MIN]);
        assert_eq!(bucket_opens(m, Some(9 * MIN), None, now, 10), vec![9 * MIN, 10 * MIN]);
        assert_eq!(bucket_opens(m, Some(9 * MIN), Some(9 * MIN), now, 10), vec![9 * MIN]);
        assert_eq!(bucket_opens(m, None, None, 5, 3), vec![0]);
        assert!(bucket_opens(m, Some(u64::MAX), None, now, 3).is_empty());
        assert!(bucket_opens(Interval::parse("1M").unwrap(), Some(u64::MAX - 1), None, now, 3).is_empty());
    }

    #[test]
    fn empty_buckets_are_flat_at_the_previous_close_and_none_come_before_the_first_trade() {
        let m = Interval::parse("1m").unwrap();
        let opens: Vec<u64> = (0..5).map(|i| i * MIN).collect();
        let stored = vec![record(MIN, 100, 110, 3, 1, 2), record(3 * MIN, 120, 90, 1, 3, 3)];
        let out = fill(m, &opens, &stored, None);
        let rows: Vec<_> = out.iter().map(|c| (c.open_time, c.record.open.0, c.record.close.0, c.record.volume.0)).collect();
        assert_eq!(rows, vec![(MIN, 100, 110, 3), (2 * MIN, 110, 110, 0), (3 * MIN, 120, 90, 1), (4 * MIN, 90, 90, 0)]);
        assert_eq!(out[0].close_time, 2 * MIN - 1);
        // With a trade before the window, the first bucket is flat at its price.
        assert_eq!(fill(m, &opens, &stored, Some(Price(95)))[0].record.close, Price(95));
    }

    #[test]
    fn days_merge_into_months() {
        let month = Interval::parse("1M").unwrap();
        let feb = 1_706_745_600_000; // 2024-02-01
        let mar = 1_709_251_200_000;
        let day = 86_400_000;
        let stored = vec![record(feb, 100, 120, 2, 1, 4), record(feb + 27 * day, 130, 80, 5, 5, 9), record(mar, 81, 82, 1, 10, 10)];
        let out = fill(month, &[feb, mar], &stored, None);
        let k = &out[0].record;
        assert_eq!((k.open.0, k.high.0, k.low.0, k.close.0, k.volume.0, k.trades), (100, 130, 80, 80, 7, 9));
        assert_eq!((k.first_trade_id.0, k.last_trade_id.0, out[0].close_time), (1, 9, mar - 1));
        assert_eq!((out[1].record.open.0, out[1].record.volume.0), (81, 1));
    }
}
