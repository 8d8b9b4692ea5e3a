//! Reading projections: the API's history queries. Newest first wherever there is a history.

use crate::stmt::stmt;
use crate::records::{
    from_sql, parse_account_kind, parse_side, parse_tif, small_from_sql, to_sql, AccountRecord, BalanceRecord,
    DepositRecord, LedgerEntry, OrderRecord, OrderStatus, OrderType, TradeRecord, WithdrawalRecord, WithdrawalStatus,
};
use crate::{Store, StoreError};
use sqlx::any::AnyRow;
use sqlx::Row;
use tandem_matching::{
    AccountId, Amount, AssetId, MarketId, OrderId, Price, Quantity, Seq, Timestamp, TradeId, WithdrawalId,
};

const ORDER_COLUMNS: &str = "order_id, account_id, market_id, side, order_type, price, quantity, filled, quote_filled, \
     status, time_in_force, CAST(post_only AS BIGINT), client_order_id, created_seq, created_at, updated_seq, updated_at";

pub(crate) const TRADE_COLUMNS: &str = "trade_id, market_id, price, quantity, notional, maker_order, maker_account, taker_order, \
     taker_account, taker_side, maker_fee, taker_fee, seq, ts";

/// `[start, end]` in Unix milliseconds; an end left open is unbounded.
pub type TimeWindow = (Option<u64>, Option<u64>);

impl Store {
    pub async fn order(&self, id: OrderId) -> Result<Option<OrderRecord>, StoreError> {
        let sql = format!("SELECT {ORDER_COLUMNS} FROM orders WHERE order_id = ?");
        let row = sqlx::query(stmt(self.backend, &sql)).bind(to_sql(id.0, "order id")?).fetch_optional(&self.pool).await?;
        row.as_ref().map(order_record).transpose()
    }

    pub async fn order_by_client_id(
        &self,
        account: AccountId,
        client_order_id: &str,
    ) -> Result<Option<OrderRecord>, StoreError> {
        let sql = format!("SELECT {ORDER_COLUMNS} FROM orders WHERE account_id = ? AND client_order_id = ?");
        let row = sqlx::query(stmt(self.backend, &sql))
            .bind(to_sql(account.0, "account id")?)
            .bind(client_order_id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(order_record).transpose()
    }

    /// An account's orders, newest first. `open_only`: status `new` or `partially_filled`.
    /// `before`: only orders with a smaller id (the previous page's last id).
    pub async fn orders(
        &self,
        account: AccountId,
        market: Option<MarketId>,
        open_only: bool,
        limit: u32,
        before: Option<OrderId>,
    ) -> Result<Vec<OrderRecord>, StoreError> {
        let mut sql = format!("SELECT {ORDER_COLUMNS} FROM orders WHERE account_id = ? AND order_id < ?");
        if market.is_some() {
            sql.push_str(" AND market_id = ?");
        }
        if open_only {
            // Spelled exactly as the partial index's predicate, so the planner can use it.
            sql.push_str(" AND status IN ('new', 'partially_filled')");
        }
        sql.push_str(" ORDER BY order_id DESC LIMIT ?");
        let before = match before {
            Some(id) => to_sql(id.0, "order id")?,
            None => i64::MAX,
        };
        let mut q = sqlx::query(stmt(self.backend, &sql)).bind(to_sql(account.0, "account id")?).bind(before);
        if let Some(m) = market {
            q = q.bind(i64::from(m.0));
        }
        let rows = q.bind(i64::from(limit)).fetch_all(&self.pool).await?;
        rows.iter().map(order_record).collect()
    }

    /// A page of an account's orders in one market, oldest first, as Binance's `allOrders`
    /// pages them: from order `from` on when given, else the newest `limit`; created within
    /// `[start, end]` (ms) when given.
    pub async fn orders_page(
        &self,
        account: AccountId,
        market: MarketId,
        from: Option<OrderId>,
        (start, end): TimeWindow,
        limit: u32,
    ) -> Result<Vec<OrderRecord>, StoreError> {
        let direction = if from.is_some() { "ASC" } else { "DESC" };
        let sql = format!(
            "SELECT {ORDER_COLUMNS} FROM orders WHERE account_id = ? AND market_id = ? AND order_id >= ? \
             AND created_at >= ? AND created_at <= ? ORDER BY order_id {direction} LIMIT ?"
        );
        let rows = sqlx::query(stmt(self.backend, &sql))
            .bind(to_sql(account.0, "account id")?)
            .bind(i64::from(market.0))
            .bind(to_sql(from.map_or(0, |o| o.0), "order id")?)
            .bind(to_sql(start.unwrap_or(0), "start time")?)
            .bind(end.map_or(Ok(i64::MAX), |e| to_sql(e, "end time"))?)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        let mut records = rows.iter().map(order_record).collect::<Result<Vec<_>, _>>()?;
        records.sort_by_key(|r| r.order_id);
        Ok(records)
    }

    /// A page of an account's trades in one market, oldest first, as Binance's `myTrades`
    /// pages them: from trade `from` on when given, else the newest `limit`; within
    /// `[start, end]` (ms) when given.
    pub async fn account_trades_page(
        &self,
        account: AccountId,
        market: MarketId,
        from: Option<u64>,
        (start, end): TimeWindow,
        limit: u32,
    ) -> Result<Vec<TradeRecord>, StoreError> {
        let direction = if from.is_some() { "ASC" } else { "DESC" };
        let side = |column: &str| {
            format!(
                "SELECT {TRADE_COLUMNS} FROM (SELECT {TRADE_COLUMNS} FROM trades WHERE {column} = ? AND market_id = ? \
                 AND trade_id >= ? AND ts >= ? AND ts <= ? ORDER BY trade_id {direction} LIMIT ?) AS {column}_side"
            )
        };
        let sql = format!("{} UNION ALL {} ORDER BY trade_id {direction} LIMIT ?", side("maker_account"), side("taker_account"));
        let mut q = sqlx::query(stmt(self.backend, &sql));
        for _ in 0..2 {
            q = q
                .bind(to_sql(account.0, "account id")?)
                .bind(i64::from(market.0))
                .bind(to_sql(from.unwrap_or(0), "trade id")?)
                .bind(to_sql(start.unwrap_or(0), "start time")?)
                .bind(end.map_or(Ok(i64::MAX), |e| to_sql(e, "end time"))?)
                .bind(i64::from(limit));
        }
        let rows = q.bind(i64::from(limit)).fetch_all(&self.pool).await?;
        let mut records = rows.iter().map(trade_record).collect::<Result<Vec<_>, _>>()?;
        records.sort_by_key(|t| t.trade_id);
        Ok(records)
    }

    /// A market's trades, newest first.
    pub async fn trades(&self, market: MarketId, limit: u32) -> Result<Vec<TradeRecord>, StoreError> {
        let sql = format!("SELECT {TRADE_COLUMNS} FROM trades WHERE market_id = ? ORDER BY trade_id DESC LIMIT ?");
        let rows = sqlx::query(stmt(self.backend, &sql)).bind(i64::from(market.0)).bind(i64::from(limit)).fetch_all(&self.pool).await?;
        rows.iter().map(trade_record).collect()
    }

    /// Trades the account took part in (as maker or taker), newest first.
    pub async fn account_trades(
        &self,
        account: AccountId,
        market: Option<MarketId>,
        limit: u32,
    ) -> Result<Vec<TradeRecord>, StoreError> {
        // Two index ranges merged, rather than `maker = ? OR taker = ?`, which could not use
        // either index for the ordering. Never both sides: self-trades are prevented.
        let market_filter = if market.is_some() { " AND market_id = ?" } else { "" };
        let side = |column: &str| {
            format!(
                "SELECT {TRADE_COLUMNS} FROM (SELECT {TRADE_COLUMNS} FROM trades WHERE {column} = ?{market_filter} \
                 ORDER BY trade_id DESC LIMIT ?) AS {column}_side"
            )
        };
        let sql = format!(
            "{} UNION ALL {} ORDER BY trade_id DESC LIMIT ?",
            side("maker_account"),
            side("taker_account")
        );
        let account = to_sql(account.0, "account id")?;
        let limit = i64::from(limit);
        let mut q = sqlx::query(stmt(self.backend, &sql));
        for _ in 0..2 {
            q = q.bind(account);
            if let Some(m) = market {
                q = q.bind(i64::from(m.0));
            }
            q = q.bind(limit);
        }
        let rows = q.bind(limit).fetch_all(&self.pool).await?;
        rows.iter().map(trade_record).collect()
    }

    /// Every asset the account ever held, by asset id.
    pub async fn balances(&self, account: AccountId) -> Result<Vec<BalanceRecord>, StoreError> {
        let rows = sqlx::query(stmt(self.backend, 
            "SELECT account_id, asset_id, available, locked, seq FROM balances WHERE account_id = ? ORDER BY asset_id",
        ))
        .bind(to_sql(account.0, "account id")?)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(BalanceRecord {
                    account_id: AccountId(from_sql(r.try_get(0)?, "account id")?),
                    asset_id: AssetId(small_from_sql(r.try_get(1)?, "asset id")?),
                    available: Amount(from_sql(r.try_get(2)?, "available")?),
                    locked: Amount(from_sql(r.try_get(3)?, "locked")?),
                    seq: Seq(from_sql(r.try_get(4)?, "seq")?),
                })
            })
            .collect()
    }

    /// Newest first.
    pub async fn ledger_entries(&self, account: AccountId, limit: u32) -> Result<Vec<LedgerEntry>, StoreError> {
        let rows = sqlx::query(stmt(self.backend, 
            "SELECT seq, ts, account_id, asset_id, available_delta, locked_delta, available, locked, cause \
             FROM ledger_entries WHERE account_id = ? ORDER BY seq DESC, asset_id DESC LIMIT ?",
        ))
        .bind(to_sql(account.0, "account id")?)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(LedgerEntry {
                    seq: Seq(from_sql(r.try_get(0)?, "seq")?),
                    timestamp: Timestamp(from_sql(r.try_get(1)?, "timestamp")?),
                    account_id: AccountId(from_sql(r.try_get(2)?, "account id")?),
                    asset_id: AssetId(small_from_sql(r.try_get(3)?, "asset id")?),
                    available_delta: r.try_get(4)?,
                    locked_delta: r.try_get(5)?,
                    available: Amount(from_sql(r.try_get(6)?, "available")?),
                    locked: Amount(from_sql(r.try_get(7)?, "locked")?),
                    cause: r.try_get(8)?,
                })
            })
            .collect()
    }

    /// Newest first.
    pub async fn withdrawals(&self, account: AccountId, limit: u32) -> Result<Vec<WithdrawalRecord>, StoreError> {
        let rows = sqlx::query(stmt(self.backend, &format!(
            "SELECT {WITHDRAWAL_COLUMNS} FROM withdrawals WHERE account_id = ? ORDER BY withdrawal_id DESC LIMIT ?"
        )))
        .bind(to_sql(account.0, "account id")?)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(withdrawal_record).collect()
    }

    pub async fn withdrawal(&self, id: WithdrawalId) -> Result<Option<WithdrawalRecord>, StoreError> {
        let row = sqlx::query(stmt(self.backend, &format!("SELECT {WITHDRAWAL_COLUMNS} FROM withdrawals WHERE withdrawal_id = ?")))
            .bind(to_sql(id.0, "withdrawal id")?)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(withdrawal_record).transpose()
    }

    /// An account's trades (as maker or taker) with a sequence number in `(after, through]`,
    /// oldest first: every fill of one settlement window.
    pub async fn account_trades_between(&self, account: AccountId, after: Seq, through: Seq) -> Result<Vec<TradeRecord>, StoreError> {
        let sql = format!(
            "SELECT {TRADE_COLUMNS} FROM trades WHERE maker_account = ? AND seq > ? AND seq <= ? \
             UNION ALL SELECT {TRADE_COLUMNS} FROM trades WHERE taker_account = ? AND seq > ? AND seq <= ? ORDER BY trade_id"
        );
        let (account, after, through) = (to_sql(account.0, "account id")?, to_sql(after.0, "seq")?, to_sql(through.0, "seq")?);
        let rows = sqlx::query(stmt(self.backend, &sql))
            .bind(account)
            .bind(after)
            .bind(through)
            .bind(account)
            .bind(after)
            .bind(through)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(trade_record).collect()
    }

    /// Newest first.
    pub async fn deposits(&self, account: AccountId, limit: u32) -> Result<Vec<DepositRecord>, StoreError> {
        let rows = sqlx::query(stmt(self.backend, 
            "SELECT account_id, asset_id, amount, reference, seq, ts FROM deposits WHERE account_id = ? \
             ORDER BY seq DESC LIMIT ?",
        ))
        .bind(to_sql(account.0, "account id")?)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(DepositRecord {
                    account_id: AccountId(from_sql(r.try_get(0)?, "account id")?),
                    asset_id: AssetId(small_from_sql(r.try_get(1)?, "asset id")?),
                    amount: Amount(from_sql(r.try_get(2)?, "amount")?),
                    reference: r.try_get(3)?,
                    seq: Seq(from_sql(r.try_get(4)?, "seq")?),
                    timestamp: Timestamp(from_sql(r.try_get(5)?, "timestamp")?),
                })
            })
            .collect()
    }

    /// Every account, by id (including the fee account and the settlement pool).
    pub async fn accounts(&self) -> Result<Vec<AccountRecord>, StoreError> {
        let rows = sqlx::query(stmt(self.backend, "SELECT account_id, kind, created_seq FROM accounts ORDER BY account_id"))
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(AccountRecord {
                    account_id: AccountId(from_sql(r.try_get(0)?, "account id")?),
                    kind: parse_account_kind(r.try_get(1)?)?,
                    created_seq: Seq(from_sql(r.try_get(2)?, "seq")?),
                })
            })
            .collect()
    }
}

fn order_record(r: &AnyRow) -> Result<OrderRecord, StoreError> {
    Ok(OrderRecord {
        order_id: OrderId(from_sql(r.try_get(0)?, "order id")?),
        account_id: AccountId(from_sql(r.try_get(1)?, "account id")?),
        market_id: MarketId(small_from_sql(r.try_get(2)?, "market id")?),
        side: parse_side(r.try_get(3)?)?,
        order_type: OrderType::parse(r.try_get(4)?)?,
        price: Price(from_sql(r.try_get(5)?, "price")?),
        quantity: Quantity(from_sql(r.try_get(6)?, "quantity")?),
        filled: Quantity(from_sql(r.try_get(7)?, "filled")?),
        quote_filled: Amount(from_sql(r.try_get(8)?, "quote filled")?),
        status: OrderStatus::parse(r.try_get(9)?)?,
        time_in_force: parse_tif(r.try_get(10)?)?,
        // 0 or 1 (a SQLite BOOLEAN column, a PostgreSQL BIGINT one).
        post_only: r.try_get::<i64, _>(11)? != 0,
        client_order_id: r.try_get(12)?,
        created_seq: Seq(from_sql(r.try_get(13)?, "seq")?),
        created_at: Timestamp(from_sql(r.try_get(14)?, "timestamp")?),
        updated_seq: Seq(from_sql(r.try_get(15)?, "seq")?),
        updated_at: Timestamp(from_sql(r.try_get(16)?, "timestamp")?),
    })
}

const WITHDRAWAL_COLUMNS: &str =
    "withdrawal_id, account_id, asset_id, amount, destination, status, requested_at, updated_at, client_withdrawal_id";

fn withdrawal_record(r: &AnyRow) -> Result<WithdrawalRecord, StoreError> {
    Ok(WithdrawalRecord {
        withdrawal_id: WithdrawalId(from_sql(r.try_get(0)?, "withdrawal id")?),
        account_id: AccountId(from_sql(r.try_get(1)?, "account id")?),
        asset_id: AssetId(small_from_sql(r.try_get(2)?, "asset id")?),
        amount: Amount(from_sql(r.try_get(3)?, "amount")?),
        destination: r.try_get(4)?,
        status: WithdrawalStatus::parse(r.try_get(5)?)?,
        requested_at: Timestamp(from_sql(r.try_get(6)?, "timestamp")?),
        updated_at: Timestamp(from_sql(r.try_get(7)?, "timestamp")?),
        client_withdrawal_id: r.try_get(8)?,
    })
}

pub(crate) fn trade_record(r: &AnyRow) -> Result<TradeRecord, StoreError> {
    Ok(TradeRecord {
        trade_id: TradeId(from_sql(r.try_get(0)?, "trade id")?),
        market_id: MarketId(small_from_sql(r.try_get(1)?, "market id")?),
        price: Price(from_sql(r.try_get(2)?, "price")?),
        quantity: Quantity(from_sql(r.try_get(3)?, "quantity")?),
        notional: Amount(from_sql(r.try_get(4)?, "notional")?),
        maker_order: OrderId(from_sql(r.try_get(5)?, "order id")?),
        maker_account: AccountId(from_sql(r.try_get(6)?, "account id")?),
        taker_order: OrderId(from_sql(r.try_get(7)?, "order id")?),
        taker_account: AccountId(from_sql(r.try_get(8)?, "account id")?),
        taker_side: parse_side(r.try_get(9)?)?,
        maker_fee: Amount(from_sql(r.try_get(10)?, "fee")?),
        taker_fee: Amount(from_sql(r.try_get(11)?, "fee")?),
        seq: Seq(from_sql(r.try_get(12)?, "seq")?),
        timestamp: Timestamp(from_sql(r.try_get(13)?, "timestamp")?),
    })
}
