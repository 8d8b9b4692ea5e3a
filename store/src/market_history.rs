//! A market's public history in the shapes exchanges publish it: aggregate trades (the run of
//! trades one taker order made at one price in one command), candles (trades bucketed by time)
//! and the last trade before a moment. Reads only what the projection wrote.

use crate::queries::{trade_record, TimeWindow, TRADE_COLUMNS};
use crate::records::{from_sql, parse_side, to_sql};
use crate::stmt::stmt;
use crate::{Store, StoreError, TradeRecord};
use sqlx::Row;
use tandem_matching::{Amount, MarketId, Price, Quantity, Seq, Side, Timestamp, TradeId};

/// Trades of one taker order at one price in one command, as one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AggTradeRecord {
    /// The run's first trade id: aggregate ids grow with time and page by `>=`.
    pub agg_trade_id: TradeId,
    pub first_trade_id: TradeId,
    pub last_trade_id: TradeId,
    pub price: Price,
    pub quantity: Quantity,
    pub taker_side: Side,
    pub timestamp: Timestamp,
}

/// The trades of one time bucket (only buckets with trades exist here).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CandleRecord {
    /// The bucket's start, ms.
    pub open_time: u64,
    pub open: Price,
    pub high: Price,
    pub low: Price,
    pub close: Price,
    pub volume: Quantity,
    pub quote_volume: Amount,
    pub trades: u64,
    /// What takers bought (the base bought and the quote paid for it).
    pub taker_buy_volume: Quantity,
    pub taker_buy_quote_volume: Amount,
    pub first_trade_id: TradeId,
    pub last_trade_id: TradeId,
}

/// Buckets of `interval` ms that start at `origin + k * interval`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Buckets {
    pub origin: u64,
    pub interval: u64,
}

impl Store {
    /// A page of a market's aggregate trades, oldest first: from aggregate `from` on when
    /// given, else the newest `limit`; within `[start, end]` (ms) when given. A run is never cut.
    pub async fn agg_trades_page(
        &self,
        market: MarketId,
        from: Option<u64>,
        (start, end): TimeWindow,
        limit: u32,
    ) -> Result<Vec<AggTradeRecord>, StoreError> {
        let direction = if from.is_some() || start.is_some() { "ASC" } else { "DESC" };
        // Every trade of a run has its seq and time, so filtering rows keeps runs whole.
        let sql = format!(
            "SELECT agg_trade_id, MIN(trade_id), MAX(trade_id), price, CAST(SUM(quantity) AS BIGINT), taker_side, MIN(ts) \
             FROM trades WHERE market_id = ? AND agg_trade_id >= ? AND ts >= ? AND ts <= ? \
             GROUP BY agg_trade_id, price, taker_side ORDER BY agg_trade_id {direction} LIMIT ?"
        );
        let rows = sqlx::query(stmt(self.backend, &sql))
            .bind(i64::from(market.0))
            .bind(to_sql(from.unwrap_or(0), "trade id")?)
            .bind(to_sql(start.unwrap_or(0), "start time")?)
            .bind(end.map_or(Ok(i64::MAX), |e| to_sql(e, "end time"))?)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        let mut out = rows
            .iter()
            .map(|r| {
                Ok(AggTradeRecord {
                    agg_trade_id: TradeId(from_sql(r.try_get(0)?, "trade id")?),
                    first_trade_id: TradeId(from_sql(r.try_get(1)?, "trade id")?),
                    last_trade_id: TradeId(from_sql(r.try_get(2)?, "trade id")?),
                    price: Price(from_sql(r.try_get(3)?, "price")?),
                    quantity: Quantity(from_sql(r.try_get(4)?, "quantity")?),
                    taker_side: parse_side(r.try_get(5)?)?,
                    timestamp: Timestamp(from_sql(r.try_get(6)?, "timestamp")?),
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        out.sort_by_key(|a| a.agg_trade_id);
        Ok(out)
    }

    /// A market's trades in `[start, end)` (ms) bucketed, oldest bucket first; buckets without
    /// trades are left out (the caller knows what an empty bucket means to it). `through`: only
    /// trades of commands up to that seq (a base that later trades from a live feed add to).
    pub async fn candles(
        &self,
        market: MarketId,
        buckets: Buckets,
        (start, end): (u64, u64),
        through: Option<Seq>,
    ) -> Result<Vec<CandleRecord>, StoreError> {
        if buckets.interval == 0 || start >= end {
            return Ok(Vec::new());
        }
        let start = start.max(buckets.origin);
        // Open and close are the prices of the bucket's first and last trade.
        let sql = "SELECT g.bucket, g.high, g.low, g.volume, g.quote_volume, g.trades, g.buy_volume, g.buy_quote, \
             g.first_id, g.last_id, o.price, c.price FROM (\
               SELECT (ts - ?) / ? AS bucket, MAX(price) AS high, MIN(price) AS low, \
               CAST(SUM(quantity) AS BIGINT) AS volume, CAST(SUM(notional) AS BIGINT) AS quote_volume, \
               COUNT(*) AS trades, \
               CAST(SUM(CASE WHEN taker_side = 'buy' THEN quantity ELSE 0 END) AS BIGINT) AS buy_volume, \
               CAST(SUM(CASE WHEN taker_side = 'buy' THEN notional ELSE 0 END) AS BIGINT) AS buy_quote, \
               MIN(trade_id) AS first_id, MAX(trade_id) AS last_id \
               FROM trades WHERE market_id = ? AND ts >= ? AND ts < ? AND seq <= ? GROUP BY 1\
             ) AS g JOIN trades AS o ON o.trade_id = g.first_id JOIN trades AS c ON c.trade_id = g.last_id \
             ORDER BY g.bucket";
        let rows = sqlx::query(stmt(self.backend, sql))
            .bind(to_sql(buckets.origin, "time")?)
            .bind(to_sql(buckets.interval, "interval")?)
            .bind(i64::from(market.0))
            .bind(to_sql(start, "start time")?)
            .bind(to_sql(end, "end time")?)
            .bind(through.map_or(Ok(i64::MAX), |s| to_sql(s.0, "seq"))?)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                let bucket: u64 = from_sql(r.try_get(0)?, "bucket")?;
                Ok(CandleRecord {
                    open_time: buckets.origin + bucket * buckets.interval,
                    high: Price(from_sql(r.try_get(1)?, "price")?),
                    low: Price(from_sql(r.try_get(2)?, "price")?),
                    volume: Quantity(from_sql(r.try_get(3)?, "quantity")?),
                    quote_volume: Amount(from_sql(r.try_get(4)?, "notional")?),
                    trades: from_sql(r.try_get(5)?, "count")?,
                    taker_buy_volume: Quantity(from_sql(r.try_get(6)?, "quantity")?),
                    taker_buy_quote_volume: Amount(from_sql(r.try_get(7)?, "notional")?),
                    first_trade_id: TradeId(from_sql(r.try_get(8)?, "trade id")?),
                    last_trade_id: TradeId(from_sql(r.try_get(9)?, "trade id")?),
                    open: Price(from_sql(r.try_get(10)?, "price")?),
                    close: Price(from_sql(r.try_get(11)?, "price")?),
                })
            })
            .collect()
    }

    /// The market's last trade before `before` (ms), if any.
    pub async fn last_trade_before(&self, market: MarketId, before: u64) -> Result<Option<TradeRecord>, StoreError> {
        let sql = format!(
            "SELECT {TRADE_COLUMNS} FROM trades WHERE market_id = ? AND ts < ? ORDER BY ts DESC, trade_id DESC LIMIT 1"
        );
        let row = sqlx::query(stmt(self.backend, &sql))
            .bind(i64::from(market.0))
            .bind(to_sql(before, "time")?)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(trade_record).transpose()
    }
}
