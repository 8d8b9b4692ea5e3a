//! Writing projections: fold a batch of [`Applied`] commands into row changes in memory, then
//! write them in one transaction together with the cursor.
//!
//! Why fold first: the projector must keep up with 30,000+ commands a second, and a statement
//! round trip to SQLite costs more than the row work. Folding coalesces everything a batch does
//! to one order (accepted, filled, closed) or one balance into a single row write, and the rows
//! go out in multi-row statements. Only ledger entries and trades stay one row per event.

use crate::stmt::{backend_of, stmt};
use crate::records::{tif_str, to_sql, OrderStatus, OrderType, WithdrawalStatus};
use crate::{Store, StoreError};
use sqlx::query::Query;
use sqlx::any::AnyArguments;
use sqlx::{Any, Row, Transaction};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use tandem_matching::{AccountKind, Applied, CloseReason, Event, Seq, Side, TimeInForce};

type Tx = Transaction<'static, Any>;
type SqlQuery<'q> = Query<'q, Any, AnyArguments<'q>>;

/// The tables [`Store::reset_projections`] empties (api_keys and meta are not projections).
const PROJECTION_TABLES: [&str; 7] =
    ["accounts", "orders", "trades", "balances", "ledger_entries", "deposits", "withdrawals"];

/// Restores the rows the migration inserts: the accounts that exist from genesis.
const GENESIS_ACCOUNTS: &str =
    "INSERT INTO accounts (account_id, kind, created_seq) VALUES (1, 'fee', 0), (2, 'settlement_pool', 0)";

impl Store {
    /// Last seq whose events are fully projected (0 when empty).
    pub async fn projected_seq(&self) -> Result<Seq, StoreError> {
        let seq: i64 = sqlx::query_scalar(stmt(self.backend, "SELECT seq FROM projection_cursor WHERE id = 1")).fetch_one(&self.pool).await?;
        Ok(Seq(crate::records::from_sql(seq, "projected seq")?))
    }

    /// Projects a batch in one transaction together with the cursor. Items at or below the
    /// cursor (or not above an earlier item of the batch) are skipped, so applying a batch twice,
    /// or one that overlaps a committed one, changes nothing.
    pub async fn apply_batch(&self, batch: &[Arc<Applied>]) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin_write().await?;
        // Replicas sharing a PostgreSQL store project the same commands: the cursor row is
        // locked, so a second projector waits for the first to commit, then sees its cursor and
        // skips what it wrote (SQLite's write transaction is exclusive already).
        let read_cursor = match self.backend {
            crate::Backend::Postgres => "SELECT seq FROM projection_cursor WHERE id = 1 FOR UPDATE",
            crate::Backend::Sqlite => "SELECT seq FROM projection_cursor WHERE id = 1",
        };
        let cursor: i64 = sqlx::query_scalar(stmt(self.backend, read_cursor)).fetch_one(&mut *tx).await?;
        let mut last = crate::records::from_sql(cursor, "projected seq")?;
        let mut items = Vec::with_capacity(batch.len());
        for a in batch {
            if a.seq.0 > last {
                last = a.seq.0;
                items.push(&**a);
            }
        }
        if items.is_empty() {
            tx.rollback().await?;
            return Ok(());
        }
        let previous = load_balances(&mut tx, &items).await?;
        let mut fold = Fold::new(previous);
        for a in &items {
            fold.apply(a)?;
        }
        fold.write(&mut tx).await?;
        sqlx::query(stmt(self.backend, "UPDATE projection_cursor SET seq = ? WHERE id = 1"))
            .bind(to_sql(last, "seq")?)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Deletes every projection row and resets the cursor to 0, keeping API keys and meta: the
    /// first step of rebuilding the projections from the journal.
    pub async fn reset_projections(&self) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        for table in PROJECTION_TABLES {
            sqlx::query(stmt(self.backend, &format!("DELETE FROM {table}"))).execute(&mut *tx).await?;
        }
        sqlx::query(stmt(self.backend, GENESIS_ACCOUNTS)).execute(&mut *tx).await?;
        sqlx::query(stmt(self.backend, "UPDATE projection_cursor SET seq = 0 WHERE id = 1")).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
    }
}

// ---- multi-row statements ----

/// Most rows in one statement (the widest row has 17 columns: far below any bind limit).
const MAX_ROWS: usize = 128;

/// Splits `n` rows into power-of-two chunks of at most [`MAX_ROWS`], so each table has only a
/// handful of statement shapes and every one of them stays prepared in sqlx's cache.
fn chunk_sizes(mut n: usize) -> impl Iterator<Item = usize> {
    std::iter::from_fn(move || {
        if n == 0 {
            return None;
        }
        let size = if n >= MAX_ROWS { MAX_ROWS } else { 1 << (usize::BITS - 1 - n.leading_zeros()) };
        n -= size;
        Some(size)
    })
}

/// `head (?, ?, ...), (?, ?, ...) tail` for `rows` rows of `cols` placeholders.
fn values_sql(head: &str, cols: usize, rows: usize, tail: &str) -> String {
    let mut tuple = String::with_capacity(cols * 3 + 2);
    tuple.push('(');
    for c in 0..cols {
        tuple.push_str(if c == 0 { "?" } else { ", ?" });
    }
    tuple.push(')');
    let mut sql = String::with_capacity(head.len() + tail.len() + rows * (tuple.len() + 2));
    sql.push_str(head);
    for r in 0..rows {
        if r > 0 {
            sql.push_str(", ");
        }
        sql.push_str(&tuple);
    }
    sql.push_str(tail);
    sql
}

/// A row that binds its columns in the order its statement lists them.
trait SqlRow {
    const COLS: usize;
    fn bind<'q>(&'q self, q: SqlQuery<'q>) -> Result<SqlQuery<'q>, StoreError>;
}

/// Runs `head VALUES... tail` over all `rows`; returns the rows affected.
async fn write_rows<T: SqlRow>(tx: &mut Tx, rows: &[T], head: &str, tail: &str) -> Result<u64, StoreError> {
    let mut affected = 0;
    let mut start = 0;
    for size in chunk_sizes(rows.len()) {
        let sql = values_sql(head, T::COLS, size, tail);
        let mut q = sqlx::query(stmt(backend_of(tx), &sql));
        for row in &rows[start..start + size] {
            q = row.bind(q)?;
        }
        affected += q.execute(&mut **tx).await?.rows_affected();
        start += size;
    }
    Ok(affected)
}

/// The balances the batch will change, as last projected (absent: never projected, so zero).
async fn load_balances(tx: &mut Tx, items: &[&Applied]) -> Result<HashMap<(u64, u16), (u64, u64)>, StoreError> {
    let mut accounts: Vec<i64> = Vec::new();
    for a in items {
        for e in &a.events {
            if let Event::BalanceChanged { account, .. } = e {
                accounts.push(to_sql(account.0, "account id")?);
            }
        }
    }
    accounts.sort_unstable();
    accounts.dedup();
    let mut previous = HashMap::with_capacity(accounts.len() * 2);
    let mut start = 0;
    for size in chunk_sizes(accounts.len()) {
        // Every asset of these accounts: an account holds few assets, and one index range per
        // account is cheaper than matching (account, asset) pairs.
        let sql = values_sql(
            "SELECT account_id, asset_id, available, locked FROM balances WHERE account_id IN ",
            size,
            1,
            "",
        );
        let mut q = sqlx::query(stmt(backend_of(tx), &sql));
        for a in &accounts[start..start + size] {
            q = q.bind(*a);
        }
        for row in q.fetch_all(&mut **tx).await? {
            let account = crate::records::from_sql(row.try_get(0)?, "account id")?;
            let asset = crate::records::small_from_sql(row.try_get(1)?, "asset id")?;
            let available = crate::records::from_sql(row.try_get(2)?, "available")?;
            let locked = crate::records::from_sql(row.try_get(3)?, "locked")?;
            previous.insert((account, asset), (available, locked));
        }
        start += size;
    }
    Ok(previous)
}

// ---- folding events into rows ----

struct AccountRow {
    account: u64,
    kind: AccountKind,
    seq: u64,
}

struct DepositRow {
    seq: u64,
    account: u64,
    asset: u16,
    amount: u64,
    reference: String,
    ts: u64,
}

struct WithdrawalRow {
    withdrawal: u64,
    account: u64,
    asset: u16,
    amount: u64,
    destination: String,
    status: WithdrawalStatus,
    requested_at: u64,
    updated_at: u64,
    client_withdrawal_id: Option<String>,
}

/// A status change of a withdrawal requested in an earlier batch.
struct WithdrawalPatch {
    withdrawal: u64,
    status: WithdrawalStatus,
    updated_at: u64,
}

/// An order accepted in this batch, in its state at the end of the batch.
struct OrderRow {
    order: u64,
    account: u64,
    market: u16,
    side: Side,
    order_type: OrderType,
    price: u64,
    quantity: u64,
    filled: u64,
    quote_filled: u64,
    status: OrderStatus,
    time_in_force: TimeInForce,
    post_only: bool,
    client_order_id: Option<String>,
    created_seq: u64,
    created_at: u64,
    updated_seq: u64,
    updated_at: u64,
}

/// What this batch did to an order accepted in an earlier batch. Fills are deltas (the stored
/// row has the earlier ones) until a close reports the absolute filled quantity.
struct OrderPatch {
    order: u64,
    filled: Option<u64>,
    filled_delta: u64,
    quote_delta: u64,
    status: Option<OrderStatus>,
    price: Option<u64>,
    quantity: Option<u64>,
    updated_seq: u64,
    updated_at: u64,
}

struct TradeRow {
    trade: u64,
    /// The first trade id of this trade's run: the same taker order at the same price in one
    /// command (Binance's aggregate trade).
    agg_trade: u64,
    market: u16,
    price: u64,
    quantity: u64,
    notional: u64,
    maker_order: u64,
    maker_account: u64,
    taker_order: u64,
    taker_account: u64,
    taker_side: Side,
    maker_fee: u64,
    taker_fee: u64,
    seq: u64,
    ts: u64,
}

struct BalanceRow {
    account: u64,
    asset: u16,
    available: u64,
    locked: u64,
    seq: u64,
}

struct LedgerRow {
    account: u64,
    seq: u64,
    asset: u16,
    ts: u64,
    available_delta: i64,
    locked_delta: i64,
    available: u64,
    locked: u64,
    cause: &'static str,
}

struct Fold {
    accounts: Vec<AccountRow>,
    deposits: Vec<DepositRow>,
    withdrawals: Vec<WithdrawalRow>,
    withdrawal_index: HashMap<u64, usize>,
    withdrawal_patches: BTreeMap<u64, WithdrawalPatch>,
    orders: Vec<OrderRow>,
    order_index: HashMap<u64, usize>,
    // BTreeMap: updates go out in key order, which is kinder to the B-tree.
    order_patches: BTreeMap<u64, OrderPatch>,
    trades: Vec<TradeRow>,
    balances: BTreeMap<(u64, u16), BalanceRow>,
    ledger: Vec<LedgerRow>,
    /// Last known (available, locked) per balance, advanced event by event for the deltas.
    previous: HashMap<(u64, u16), (u64, u64)>,
}

fn add(a: u64, b: u64, what: &str, order: u64) -> Result<u64, StoreError> {
    a.checked_add(b).ok_or_else(|| StoreError::Corrupt(format!("{what} of order {order} overflows")))
}

fn delta(after: u64, before: u64, what: &str) -> Result<i64, StoreError> {
    i64::try_from(after as i128 - before as i128)
        .map_err(|_| StoreError::Corrupt(format!("{what} change from {before} to {after} is out of range")))
}

impl Fold {
    fn new(previous: HashMap<(u64, u16), (u64, u64)>) -> Fold {
        Fold {
            accounts: Vec::new(),
            deposits: Vec::new(),
            withdrawals: Vec::new(),
            withdrawal_index: HashMap::new(),
            withdrawal_patches: BTreeMap::new(),
            orders: Vec::new(),
            order_index: HashMap::new(),
            order_patches: BTreeMap::new(),
            trades: Vec::new(),
            balances: BTreeMap::new(),
            ledger: Vec::new(),
            previous,
        }
    }

    fn apply(&mut self, a: &Applied) -> Result<(), StoreError> {
        let (seq, ts) = (a.seq.0, a.timestamp.0);
        for event in &a.events {
            match event {
                Event::AccountOpened { account, kind } => {
                    self.accounts.push(AccountRow { account: account.0, kind: *kind, seq });
                }
                Event::DepositCredited { account, asset, amount, reference } => self.deposits.push(DepositRow {
                    seq,
                    account: account.0,
                    asset: asset.0,
                    amount: amount.0,
                    reference: reference.clone(),
                    ts,
                }),
                Event::WithdrawalRequested { withdrawal, account, asset, amount, destination, client_withdrawal_id } => {
                    self.withdrawal_index.insert(withdrawal.0, self.withdrawals.len());
                    self.withdrawals.push(WithdrawalRow {
                        withdrawal: withdrawal.0,
                        account: account.0,
                        asset: asset.0,
                        amount: amount.0,
                        destination: destination.clone(),
                        status: WithdrawalStatus::Pending,
                        requested_at: ts,
                        updated_at: ts,
                        client_withdrawal_id: client_withdrawal_id.map(|c| c.as_str().to_owned()),
                    });
                }
                Event::WithdrawalCompleted { withdrawal, .. } => {
                    self.withdrawal_status(withdrawal.0, WithdrawalStatus::Completed, ts)
                }
                Event::WithdrawalFailed { withdrawal, .. } => {
                    self.withdrawal_status(withdrawal.0, WithdrawalStatus::Failed, ts)
                }
                Event::OrderAccepted(o) => {
                    self.order_index.insert(o.order.0, self.orders.len());
                    self.orders.push(OrderRow {
                        order: o.order.0,
                        account: o.account.0,
                        market: o.market.0,
                        side: o.side,
                        order_type: if o.is_market { OrderType::Market } else { OrderType::Limit },
                        price: o.price.0,
                        quantity: o.quantity.0,
                        filled: 0,
                        quote_filled: 0,
                        status: OrderStatus::New,
                        time_in_force: o.time_in_force,
                        post_only: o.post_only,
                        client_order_id: o.client_order_id.map(|c| c.as_str().to_owned()),
                        created_seq: seq,
                        created_at: ts,
                        updated_seq: seq,
                        updated_at: ts,
                    });
                }
                Event::Trade(t) => {
                    let agg_trade = match self.trades.last() {
                        Some(run) if run.seq == seq && run.taker_order == t.taker_order.0 && run.price == t.price.0 => {
                            run.agg_trade
                        }
                        _ => t.trade.0,
                    };
                    self.trades.push(TradeRow {
                        trade: t.trade.0,
                        agg_trade,
                        market: t.market.0,
                        price: t.price.0,
                        quantity: t.quantity.0,
                        notional: t.notional.0,
                        maker_order: t.maker_order.0,
                        maker_account: t.maker_account.0,
                        taker_order: t.taker_order.0,
                        taker_account: t.taker_account.0,
                        taker_side: t.taker_side,
                        maker_fee: t.maker_fee.0,
                        taker_fee: t.taker_fee.0,
                        seq,
                        ts,
                    });
                    self.fill(t.maker_order.0, t.quantity.0, t.notional.0, seq, ts)?;
                    self.fill(t.taker_order.0, t.quantity.0, t.notional.0, seq, ts)?;
                }
                Event::OrderAmended { order, price, quantity, .. } => {
                    if let Some(row) = self.order_row(order.0) {
                        row.price = price.0;
                        row.quantity = quantity.0;
                        (row.updated_seq, row.updated_at) = (seq, ts);
                    } else {
                        let p = self.order_patch(order.0, seq, ts);
                        p.price = Some(price.0);
                        p.quantity = Some(quantity.0);
                    }
                }
                Event::OrderClosed { order, reason, filled, .. } => self.close(order.0, *reason, filled.0, seq, ts),
                Event::BalanceChanged { account, asset, available, locked } => {
                    let key = (account.0, asset.0);
                    let (before_available, before_locked) = self.previous.get(&key).copied().unwrap_or((0, 0));
                    self.ledger.push(LedgerRow {
                        account: account.0,
                        seq,
                        asset: asset.0,
                        ts,
                        available_delta: delta(available.0, before_available, "available")?,
                        locked_delta: delta(locked.0, before_locked, "locked")?,
                        available: available.0,
                        locked: locked.0,
                        cause: a.command.name(),
                    });
                    self.previous.insert(key, (available.0, locked.0));
                    self.balances.insert(
                        key,
                        BalanceRow { account: account.0, asset: asset.0, available: available.0, locked: locked.0, seq },
                    );
                }
                // Market state and rejections have no history rows; the cursor still advances.
                Event::Configured { .. } | Event::MarketHalted { .. } | Event::MarketResumed { .. } => {}
                Event::Rejected { .. } => {}
                // Balances follow from `BalanceChanged`; the deposit history does not yet show
                // reversals, nor the accounts their freeze (read from the engine).
                Event::DepositReversed { .. }
                | Event::DepositReversalPending { .. }
                | Event::AccountFrozen { .. }
                | Event::AccountUnfrozen { .. } => {}
                // Settlement keeps its own durable batch records (`settlement_batches`); the
                // withdrawals a confirmed batch completes arrive as `WithdrawalCompleted`.
                Event::SettlementBooked { .. }
                | Event::SettlementBumped { .. }
                | Event::SettlementConfirmed { .. }
                | Event::SettlementCancelled { .. }
                | Event::SettlementLeadershipClaimed { .. } => {}
            }
        }
        Ok(())
    }

    fn order_row(&mut self, order: u64) -> Option<&mut OrderRow> {
        let i = *self.order_index.get(&order)?;
        self.orders.get_mut(i)
    }

    fn order_patch(&mut self, order: u64, seq: u64, ts: u64) -> &mut OrderPatch {
        let p = self.order_patches.entry(order).or_insert(OrderPatch {
            order,
            filled: None,
            filled_delta: 0,
            quote_delta: 0,
            status: None,
            price: None,
            quantity: None,
            updated_seq: seq,
            updated_at: ts,
        });
        (p.updated_seq, p.updated_at) = (seq, ts);
        p
    }

    fn fill(&mut self, order: u64, quantity: u64, notional: u64, seq: u64, ts: u64) -> Result<(), StoreError> {
        if let Some(row) = self.order_row(order) {
            row.filled = add(row.filled, quantity, "filled quantity", order)?;
            row.quote_filled = add(row.quote_filled, notional, "filled notional", order)?;
            if row.status.is_open() {
                row.status = OrderStatus::PartiallyFilled;
            }
            (row.updated_seq, row.updated_at) = (seq, ts);
        } else {
            let p = self.order_patch(order, seq, ts);
            match &mut p.filled {
                Some(f) => *f = add(*f, quantity, "filled quantity", order)?,
                None => p.filled_delta = add(p.filled_delta, quantity, "filled quantity", order)?,
            }
            p.quote_delta = add(p.quote_delta, notional, "filled notional", order)?;
            if p.status.is_none_or(|s| s.is_open()) {
                p.status = Some(OrderStatus::PartiallyFilled);
            }
        }
        Ok(())
    }

    fn close(&mut self, order: u64, reason: CloseReason, filled: u64, seq: u64, ts: u64) {
        let status = OrderStatus::closed(reason);
        if let Some(row) = self.order_row(order) {
            row.status = status;
            row.filled = filled;
            (row.updated_seq, row.updated_at) = (seq, ts);
        } else {
            let p = self.order_patch(order, seq, ts);
            p.status = Some(status);
            p.filled = Some(filled);
            p.filled_delta = 0;
        }
    }

    fn withdrawal_status(&mut self, withdrawal: u64, status: WithdrawalStatus, ts: u64) {
        if let Some(row) = self.withdrawal_index.get(&withdrawal).and_then(|&i| self.withdrawals.get_mut(i)) {
            row.status = status;
            row.updated_at = ts;
        } else {
            self.withdrawal_patches.insert(withdrawal, WithdrawalPatch { withdrawal, status, updated_at: ts });
        }
    }

    async fn write(self, tx: &mut Tx) -> Result<(), StoreError> {
        write_rows(tx, &self.accounts, "INSERT INTO accounts (account_id, kind, created_seq) VALUES ", "").await?;
        write_rows(tx, &self.deposits, "INSERT INTO deposits (seq, account_id, asset_id, amount, reference, ts) VALUES ", "")
            .await?;
        write_rows(
            tx,
            &self.withdrawals,
            "INSERT INTO withdrawals (withdrawal_id, account_id, asset_id, amount, destination, status, requested_at, \
             updated_at, client_withdrawal_id) VALUES ",
            "",
        )
        .await?;
        let patches: Vec<_> = self.withdrawal_patches.into_values().collect();
        let updated = write_rows(
            tx,
            &patches,
            "UPDATE withdrawals SET status = v.column2, updated_at = v.column3 FROM (VALUES ",
            ") AS v WHERE withdrawals.withdrawal_id = v.column1",
        )
        .await?;
        if updated != patches.len() as u64 {
            tracing::warn!(expected = patches.len(), updated, "withdrawal events for withdrawals not in the store");
        }
        write_rows(
            tx,
            &self.orders,
            "INSERT INTO orders (order_id, account_id, market_id, side, order_type, price, quantity, filled, \
             quote_filled, status, time_in_force, post_only, client_order_id, created_seq, created_at, updated_seq, \
             updated_at) VALUES ",
            "",
        )
        .await?;
        let patches: Vec<_> = self.order_patches.into_values().collect();
        let updated = write_rows(
            tx,
            &patches,
            "UPDATE orders SET filled = COALESCE(v.column2, orders.filled + v.column3), \
             quote_filled = orders.quote_filled + v.column4, status = COALESCE(v.column5, orders.status), \
             price = COALESCE(v.column6, orders.price), quantity = COALESCE(v.column7, orders.quantity), \
             updated_seq = v.column8, updated_at = v.column9 FROM (VALUES ",
            ") AS v WHERE orders.order_id = v.column1",
        )
        .await?;
        if updated != patches.len() as u64 {
            tracing::warn!(expected = patches.len(), updated, "order events for orders not in the store");
        }
        write_rows(
            tx,
            &self.trades,
            "INSERT INTO trades (trade_id, market_id, price, quantity, notional, maker_order, maker_account, \
             taker_order, taker_account, taker_side, maker_fee, taker_fee, seq, ts, agg_trade_id) VALUES ",
            "",
        )
        .await?;
        let balances: Vec<_> = self.balances.into_values().collect();
        write_rows(
            tx,
            &balances,
            "INSERT INTO balances (account_id, asset_id, available, locked, seq) VALUES ",
            " ON CONFLICT (account_id, asset_id) DO UPDATE SET available = excluded.available, \
             locked = excluded.locked, seq = excluded.seq",
        )
        .await?;
        write_rows(
            tx,
            &self.ledger,
            "INSERT INTO ledger_entries (account_id, seq, asset_id, ts, available_delta, locked_delta, available, \
             locked, cause) VALUES ",
            "",
        )
        .await?;
        Ok(())
    }
}

// ---- binding rows ----

impl SqlRow for AccountRow {
    const COLS: usize = 3;
    fn bind<'q>(&'q self, q: SqlQuery<'q>) -> Result<SqlQuery<'q>, StoreError> {
        Ok(q.bind(to_sql(self.account, "account id")?).bind(self.kind.as_str()).bind(to_sql(self.seq, "seq")?))
    }
}

impl SqlRow for DepositRow {
    const COLS: usize = 6;
    fn bind<'q>(&'q self, q: SqlQuery<'q>) -> Result<SqlQuery<'q>, StoreError> {
        Ok(q.bind(to_sql(self.seq, "seq")?)
            .bind(to_sql(self.account, "account id")?)
            .bind(i64::from(self.asset))
            .bind(to_sql(self.amount, "deposit amount")?)
            .bind(self.reference.as_str())
            .bind(to_sql(self.ts, "timestamp")?))
    }
}

impl SqlRow for WithdrawalRow {
    const COLS: usize = 9;
    fn bind<'q>(&'q self, q: SqlQuery<'q>) -> Result<SqlQuery<'q>, StoreError> {
        Ok(q.bind(to_sql(self.withdrawal, "withdrawal id")?)
            .bind(to_sql(self.account, "account id")?)
            .bind(i64::from(self.asset))
            .bind(to_sql(self.amount, "withdrawal amount")?)
            .bind(self.destination.as_str())
            .bind(self.status.as_str())
            .bind(to_sql(self.requested_at, "timestamp")?)
            .bind(to_sql(self.updated_at, "timestamp")?)
            .bind(self.client_withdrawal_id.as_deref()))
    }
}

impl SqlRow for WithdrawalPatch {
    const COLS: usize = 3;
    fn bind<'q>(&'q self, q: SqlQuery<'q>) -> Result<SqlQuery<'q>, StoreError> {
        Ok(q.bind(to_sql(self.withdrawal, "withdrawal id")?)
            .bind(self.status.as_str())
            .bind(to_sql(self.updated_at, "timestamp")?))
    }
}

impl SqlRow for OrderRow {
    const COLS: usize = 17;
    fn bind<'q>(&'q self, q: SqlQuery<'q>) -> Result<SqlQuery<'q>, StoreError> {
        Ok(q.bind(to_sql(self.order, "order id")?)
            .bind(to_sql(self.account, "account id")?)
            .bind(i64::from(self.market))
            .bind(self.side.as_str())
            .bind(self.order_type.as_str())
            .bind(to_sql(self.price, "price")?)
            .bind(to_sql(self.quantity, "quantity")?)
            .bind(to_sql(self.filled, "filled quantity")?)
            .bind(to_sql(self.quote_filled, "filled notional")?)
            .bind(self.status.as_str())
            .bind(tif_str(self.time_in_force))
            .bind(i64::from(self.post_only))
            .bind(self.client_order_id.as_deref())
            .bind(to_sql(self.created_seq, "seq")?)
            .bind(to_sql(self.created_at, "timestamp")?)
            .bind(to_sql(self.updated_seq, "seq")?)
            .bind(to_sql(self.updated_at, "timestamp")?))
    }
}

impl SqlRow for OrderPatch {
    const COLS: usize = 9;
    fn bind<'q>(&'q self, q: SqlQuery<'q>) -> Result<SqlQuery<'q>, StoreError> {
        Ok(q.bind(to_sql(self.order, "order id")?)
            .bind(self.filled.map(|f| to_sql(f, "filled quantity")).transpose()?)
            .bind(to_sql(self.filled_delta, "filled quantity")?)
            .bind(to_sql(self.quote_delta, "filled notional")?)
            .bind(self.status.map(OrderStatus::as_str))
            .bind(self.price.map(|p| to_sql(p, "price")).transpose()?)
            .bind(self.quantity.map(|v| to_sql(v, "quantity")).transpose()?)
            .bind(to_sql(self.updated_seq, "seq")?)
            .bind(to_sql(self.updated_at, "timestamp")?))
    }
}

impl SqlRow for TradeRow {
    const COLS: usize = 15;
    fn bind<'q>(&'q self, q: SqlQuery<'q>) -> Result<SqlQuery<'q>, StoreError> {
        Ok(q.bind(to_sql(self.trade, "trade id")?)
            .bind(i64::from(self.market))
            .bind(to_sql(self.price, "price")?)
            .bind(to_sql(self.quantity, "quantity")?)
            .bind(to_sql(self.notional, "notional")?)
            .bind(to_sql(self.maker_order, "order id")?)
            .bind(to_sql(self.maker_account, "account id")?)
            .bind(to_sql(self.taker_order, "order id")?)
            .bind(to_sql(self.taker_account, "account id")?)
            .bind(self.taker_side.as_str())
            .bind(to_sql(self.maker_fee, "fee")?)
            .bind(to_sql(self.taker_fee, "fee")?)
            .bind(to_sql(self.seq, "seq")?)
            .bind(to_sql(self.ts, "timestamp")?)
            .bind(to_sql(self.agg_trade, "trade id")?))
    }
}

impl SqlRow for BalanceRow {
    const COLS: usize = 5;
    fn bind<'q>(&'q self, q: SqlQuery<'q>) -> Result<SqlQuery<'q>, StoreError> {
        Ok(q.bind(to_sql(self.account, "account id")?)
            .bind(i64::from(self.asset))
            .bind(to_sql(self.available, "available")?)
            .bind(to_sql(self.locked, "locked")?)
            .bind(to_sql(self.seq, "seq")?))
    }
}

impl SqlRow for LedgerRow {
    const COLS: usize = 9;
    fn bind<'q>(&'q self, q: SqlQuery<'q>) -> Result<SqlQuery<'q>, StoreError> {
        Ok(q.bind(to_sql(self.account, "account id")?)
            .bind(to_sql(self.seq, "seq")?)
            .bind(i64::from(self.asset))
            .bind(to_sql(self.ts, "timestamp")?)
            .bind(self.available_delta)
            .bind(self.locked_delta)
            .bind(to_sql(self.available, "available")?)
            .bind(to_sql(self.locked, "locked")?)
            .bind(self.cause))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_are_powers_of_two_and_cover_everything() {
        for n in 0..1000 {
            let sizes: Vec<usize> = chunk_sizes(n).collect();
            assert_eq!(sizes.iter().sum::<usize>(), n);
            assert!(sizes.iter().all(|s| s.is_power_of_two() && *s <= MAX_ROWS));
        }
        assert_eq!(chunk_sizes(300).collect::<Vec<_>>(), vec![128, 128, 32, 8, 4]);
    }

    #[test]
    fn values_sql_shape() {
        assert_eq!(values_sql("INSERT INTO t (a, b) VALUES ", 2, 2, ""), "INSERT INTO t (a, b) VALUES (?, ?), (?, ?)");
        assert_eq!(values_sql("x IN ", 3, 1, ";"), "x IN (?, ?, ?);");
    }
}
