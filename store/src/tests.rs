//! End-to-end tests: a real engine produces the `Applied` commands, the store projects them.

// Amounts are written dollars_cents (60_000_00 is $60,000.00) on purpose.
#![allow(clippy::inconsistent_digit_grouping)]

use crate::stmt::stmt;
use crate::*;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tandem_matching::{
    ClientOrderId, Command, Engine, Envelope, Event, ExchangeConfig, NewOrder, OrderKind, OrderRef,
    SelfTradePrevention, FEE_ACCOUNT, SETTLEMENT_POOL,
};

const BTC: AssetId = AssetId(0);
const USD: AssetId = AssetId(1);
const MKT: MarketId = MarketId(0);
const MKT2: MarketId = MarketId(1);
/// 1 BTC in satoshis.
const COIN: u64 = 100_000_000;
const T0: u64 = 1_700_000_000_000;

struct Harness {
    engine: Engine,
    seq: u64,
    log: Vec<Arc<Applied>>,
}

impl Harness {
    fn new() -> Harness {
        let mut exchange = ExchangeConfig::default();
        // A second market on the same assets, for the market filters.
        let mut second = exchange.markets[0].clone();
        second.symbol = "BTC-USD2".into();
        exchange.markets.push(second);
        let mut config = exchange.to_engine().unwrap();
        for m in &mut config.markets {
            m.min_notional = Amount(1);
        }
        Harness { engine: Engine::genesis(config, Seq(1)).unwrap(), seq: 1, log: Vec::new() }
    }

    fn run(&mut self, command: Command) -> Arc<Applied> {
        self.seq += 1;
        let (seq, timestamp) = (Seq(self.seq), Timestamp(T0 + self.seq));
        let events = self.engine.apply(&Envelope { seq, timestamp, command: command.clone() });
        let applied = Arc::new(Applied { seq, timestamp, command, events, book_updates: vec![] });
        self.log.push(applied.clone());
        applied
    }

    fn account(&mut self, btc: u64, usd: u64) -> AccountId {
        let a = self.run(Command::OpenAccount { kind: AccountKind::User });
        let Event::AccountOpened { account, .. } = a.events[0] else { panic!("{a:?}") };
        for (asset, amount) in [(BTC, btc), (USD, usd)] {
            if amount > 0 {
                let reference = format!("fund-{account}-{asset}");
                self.run(Command::CreditDeposit { account, asset, amount: Amount(amount), reference });
            }
        }
        account
    }

    fn place(&mut self, account: AccountId, market: MarketId, side: Side, kind: OrderKind, sats: u64) -> Arc<Applied> {
        self.place_with(account, market, side, kind, sats, None, SelfTradePrevention::default())
    }

    #[allow(clippy::too_many_arguments)]
    fn place_with(
        &mut self,
        account: AccountId,
        market: MarketId,
        side: Side,
        kind: OrderKind,
        sats: u64,
        client_order_id: Option<&str>,
        self_trade: SelfTradePrevention,
    ) -> Arc<Applied> {
        self.run(Command::PlaceOrder(NewOrder {
            account,
            market,
            side,
            kind,
            quantity: Quantity(sats),
            client_order_id: client_order_id.map(|c| ClientOrderId::new(c).unwrap()),
            self_trade,
        }))
    }

    fn limit(&mut self, account: AccountId, side: Side, price_usd: u64, sats: u64) -> Arc<Applied> {
        self.place(account, MKT, side, gtc(price_usd), sats)
    }
}

fn gtc(price_usd: u64) -> OrderKind {
    OrderKind::Limit { price: Price(price_usd * 100), time_in_force: TimeInForce::Gtc, post_only: false }
}

fn order_id(a: &Applied) -> OrderId {
    a.events
        .iter()
        .find_map(|e| match e {
            Event::OrderAccepted(o) => Some(o.order),
            _ => None,
        })
        .unwrap_or_else(|| panic!("not accepted: {a:?}"))
}

/// Everything the store shows, through its public queries, for comparing two projections.
#[derive(Debug, PartialEq)]
struct Dump {
    cursor: Seq,
    accounts: Vec<AccountRecord>,
    orders: Vec<OrderRecord>,
    trades: Vec<Vec<TradeRecord>>,
    balances: Vec<BalanceRecord>,
    ledger: Vec<LedgerEntry>,
    deposits: Vec<DepositRecord>,
    withdrawals: Vec<WithdrawalRecord>,
}

async fn dump(store: &Store) -> Dump {
    let accounts = store.accounts().await.unwrap();
    let mut d = Dump {
        cursor: store.projected_seq().await.unwrap(),
        accounts: accounts.clone(),
        orders: vec![],
        trades: vec![store.trades(MKT, 10_000).await.unwrap(), store.trades(MKT2, 10_000).await.unwrap()],
        balances: vec![],
        ledger: vec![],
        deposits: vec![],
        withdrawals: vec![],
    };
    for a in accounts {
        let id = a.account_id;
        d.orders.extend(store.orders(id, None, false, 10_000, None).await.unwrap());
        d.trades.push(store.account_trades(id, None, 10_000).await.unwrap());
        d.balances.extend(store.balances(id).await.unwrap());
        d.ledger.extend(store.ledger_entries(id, 10_000).await.unwrap());
        d.deposits.extend(store.deposits(id, 10_000).await.unwrap());
        d.withdrawals.extend(store.withdrawals(id, 10_000).await.unwrap());
    }
    d
}

/// A bit of everything: deposits, resting orders, partial and full fills, amends, cancels,
/// market and IOC orders, self-trade prevention, withdrawals and a rejection.
fn scenario() -> Harness {
    let mut h = Harness::new();
    let seller = h.account(2 * COIN, 0);
    let buyer = h.account(0, 200_000_00);
    let ask = order_id(&h.limit(seller, Side::Sell, 60_000, COIN));
    h.limit(buyer, Side::Buy, 61_000, COIN / 4); // fills, ask partially filled
    let bid = order_id(&h.limit(buyer, Side::Buy, 59_000, COIN / 2)); // rests
    h.run(Command::AmendOrder { account: buyer, order: OrderRef::Id(bid), price: Some(Price(59_500_00)), quantity: None });
    h.run(Command::AmendOrder { account: seller, order: OrderRef::Id(ask), price: None, quantity: Some(Quantity(COIN / 2)) });
    h.place(buyer, MKT, Side::Buy, OrderKind::Market { protection_price: Price(70_000_00) }, COIN / 2); // eats the ask
    h.place(
        seller,
        MKT,
        Side::Sell,
        OrderKind::Limit { price: Price(59_000_00), time_in_force: TimeInForce::Ioc, post_only: false },
        COIN / 4,
    ); // partial against the bid
    h.place_with(buyer, MKT, Side::Sell, gtc(59_000), COIN / 100, Some("stp-1"), SelfTradePrevention::CancelResting);
    h.place(seller, MKT2, Side::Sell, gtc(65_000), COIN / 10);
    h.place(buyer, MKT2, Side::Buy, gtc(66_000), COIN / 20);
    h.run(Command::RequestWithdrawal { account: seller, asset: USD, amount: Amount(1_000_00), destination: "bank:1".into() });
    h.run(Command::CancelAll { account: Some(seller), market: None });
    h.run(Command::CancelOrder { account: buyer, order: OrderRef::Id(OrderId(999)) }); // rejected
    h
}

/// Projects `log` in batches of `size`.
async fn project(store: &Store, log: &[Arc<Applied>], size: usize) {
    for chunk in log.chunks(size) {
        store.apply_batch(chunk).await.unwrap();
    }
}

#[tokio::test]
async fn orders_follow_fills_amends_and_cancels() {
    for store in crate::test_stores().await {
        let mut h = Harness::new();
        let seller = h.account(COIN, 0);
        let buyer = h.account(0, 100_000_00);
        let ask = order_id(&h.limit(seller, Side::Sell, 60_000, COIN));
        project(&store, &h.log, 1000).await;
        let o = store.order(ask).await.unwrap().unwrap();
        assert_eq!((o.status, o.filled, o.quote_filled), (OrderStatus::New, Quantity(0), Amount(0)));
        assert_eq!((o.account_id, o.market_id, o.side, o.order_type), (seller, MKT, Side::Sell, OrderType::Limit));
        assert_eq!((o.price, o.quantity, o.time_in_force, o.post_only), (Price(60_000_00), Quantity(COIN), TimeInForce::Gtc, false));
        assert_eq!((o.created_seq, o.created_at), (o.updated_seq, o.updated_at));

        // Partial fill of the resting ask, in a later batch (the update path).
        let taken = h.limit(buyer, Side::Buy, 61_000, COIN / 4);
        let bid = order_id(&taken);
        store.apply_batch(std::slice::from_ref(&taken)).await.unwrap();
        let o = store.order(ask).await.unwrap().unwrap();
        assert_eq!((o.status, o.filled, o.quote_filled), (OrderStatus::PartiallyFilled, Quantity(COIN / 4), Amount(15_000_00)));
        assert_eq!((o.updated_seq, o.updated_at), (taken.seq, taken.timestamp));
        let b = store.order(bid).await.unwrap().unwrap();
        assert_eq!((b.status, b.filled, b.quote_filled), (OrderStatus::Filled, Quantity(COIN / 4), Amount(15_000_00)));
        assert_eq!(b.created_seq, taken.seq);

        // Amend down keeps the row, then cancel closes it with what was filled.
        let amend = h.run(Command::AmendOrder { account: seller, order: OrderRef::Id(ask), price: Some(Price(60_500_00)), quantity: Some(Quantity(COIN / 2)) });
        let cancel = h.run(Command::CancelOrder { account: seller, order: OrderRef::Id(ask) });
        store.apply_batch(&[amend]).await.unwrap();
        let o = store.order(ask).await.unwrap().unwrap();
        assert_eq!((o.price, o.quantity, o.status), (Price(60_500_00), Quantity(COIN / 2), OrderStatus::PartiallyFilled));
        store.apply_batch(std::slice::from_ref(&cancel)).await.unwrap();
        let o = store.order(ask).await.unwrap().unwrap();
        assert_eq!((o.status, o.filled, o.updated_seq), (OrderStatus::Canceled, Quantity(COIN / 4), cancel.seq));
        assert_eq!(store.order(OrderId(12345)).await.unwrap(), None);
    }
}

#[tokio::test]
async fn batch_size_does_not_change_the_projection() {
    // One big batch folds accept/fill/close into inserts; one-by-one exercises the updates.
    let h = scenario();
    let whole = Store::open_in_memory().await.unwrap();
    project(&whole, &h.log, 10_000).await;
    let expected = dump(&whole).await;
    assert_eq!(expected.cursor, Seq(h.seq));
    for size in [1, 2, 3, 7] {
        for store in crate::test_stores().await {
            project(&store, &h.log, size).await;
            assert_eq!(dump(&store).await, expected, "batch size {size}");
        }
        }
    }

#[tokio::test]
async fn statuses_types_and_client_ids() {
    let h = scenario();
    for store in crate::test_stores().await {
        project(&store, &h.log, 5).await;
        let (seller, buyer) = (AccountId(3), AccountId(4));
        let all: Vec<OrderRecord> = store.orders(buyer, None, false, 100, None).await.unwrap();
        // Every order matches the engine's view while open, and is closed otherwise.
        for o in all.iter().chain(store.orders(seller, None, false, 100, None).await.unwrap().iter()) {
            match h.engine.order(o.order_id) {
                Some(v) => {
                    assert!(o.status.is_open(), "{o:?}");
                    assert_eq!((v.price, v.quantity, v.filled), (o.price, o.quantity, o.filled));
                }
                None => assert!(!o.status.is_open(), "{o:?}"),
            }
        }
        let market = all.iter().find(|o| o.order_type == OrderType::Market).unwrap();
        // It ate the rest of the (amended) ask, then the rest of it expired.
        assert_eq!((market.time_in_force, market.status), (TimeInForce::Ioc, OrderStatus::Expired));
        assert_eq!((market.filled, market.quote_filled), (Quantity(COIN / 4), Amount(15_000_00)));
        let ioc = store.orders(seller, Some(MKT), false, 100, None).await.unwrap();
        assert_eq!(ioc[0].time_in_force, TimeInForce::Ioc);
        assert_eq!((ioc[0].status, ioc[0].filled), (OrderStatus::Filled, Quantity(COIN / 4)));
        let stp = store.order_by_client_id(buyer, "stp-1").await.unwrap().unwrap();
        assert_eq!(stp.client_order_id.as_deref(), Some("stp-1"));
        let bid = store.orders(buyer, Some(MKT), false, 100, None).await.unwrap();
        assert!(bid.iter().any(|o| o.status == OrderStatus::SelfTradePrevented), "{bid:?}");
        assert_eq!(store.order_by_client_id(seller, "stp-1").await.unwrap(), None);
        // Everything of the seller was canceled at the end.
        assert!(store.orders(seller, None, true, 100, None).await.unwrap().is_empty());
    }
}

#[tokio::test]
async fn order_queries_filter_and_page() {
    let mut h = Harness::new();
    let a = h.account(10 * COIN, 0);
    let mut ids = vec![];
    for i in 0..10u64 {
        let market = if i % 2 == 0 { MKT } else { MKT2 };
        ids.push(order_id(&h.place(a, market, Side::Sell, gtc(70_000 + i), COIN / 10)));
    }
    h.run(Command::CancelOrder { account: a, order: OrderRef::Id(ids[8]) });
    h.run(Command::CancelOrder { account: a, order: OrderRef::Id(ids[9]) });
    for store in crate::test_stores().await {
        project(&store, &h.log, 4).await;
        let page1 = store.orders(a, None, false, 4, None).await.unwrap();
        assert_eq!(page1.iter().map(|o| o.order_id).collect::<Vec<_>>(), vec![ids[9], ids[8], ids[7], ids[6]]);
        let page2 = store.orders(a, None, false, 4, Some(ids[6])).await.unwrap();
        assert_eq!(page2.iter().map(|o| o.order_id).collect::<Vec<_>>(), vec![ids[5], ids[4], ids[3], ids[2]]);
        let open = store.orders(a, None, true, 100, None).await.unwrap();
        assert_eq!(open.len(), 8);
        assert_eq!(open[0].order_id, ids[7]);
        let open_m2 = store.orders(a, Some(MKT2), true, 100, Some(ids[7])).await.unwrap();
        assert_eq!(open_m2.iter().map(|o| o.order_id).collect::<Vec<_>>(), vec![ids[5], ids[3], ids[1]]);
        assert!(store.orders(AccountId(99), None, false, 10, None).await.unwrap().is_empty());
        assert!(store.orders(a, None, false, 0, None).await.unwrap().is_empty());
    }
}

#[tokio::test]
async fn trades_are_newest_first_and_per_account() {
    let mut h = Harness::new();
    let maker = h.account(COIN, 0);
    let taker = h.account(0, 1_000_000_00);
    let other = h.account(COIN, 0);
    h.limit(maker, Side::Sell, 60_000, COIN / 2);
    h.limit(other, Side::Sell, 60_100, COIN / 2);
    h.limit(taker, Side::Buy, 61_000, COIN / 4); // trade 1: maker
    h.limit(taker, Side::Buy, 61_000, COIN / 2); // trades 2 (maker), 3 (other)
    h.place(maker, MKT2, Side::Sell, gtc(60_000), COIN / 4);
    h.place(taker, MKT2, Side::Buy, gtc(60_000), COIN / 4); // trade 4 on MKT2
    for store in crate::test_stores().await {
        project(&store, &h.log, 3).await;

        let t = store.trades(MKT, 100).await.unwrap();
        assert_eq!(t.iter().map(|t| t.trade_id.0).collect::<Vec<_>>(), vec![3, 2, 1]);
        assert_eq!((t[0].maker_account, t[0].taker_account, t[0].taker_side), (other, taker, Side::Buy));
        assert_eq!((t[0].price, t[0].quantity), (Price(60_100_00), Quantity(COIN / 4)));
        assert_eq!(t[2].notional, Amount(15_000_00));
        assert_eq!(t[2].maker_fee, Amount(15_000_00 * 10 / 10_000));
        assert_eq!(t[2].taker_fee, Amount(COIN / 4 * 20 / 10_000));
        assert_eq!(store.trades(MKT, 2).await.unwrap().len(), 2);
        assert_eq!(store.trades(MKT2, 100).await.unwrap().len(), 1);

        let mine = store.account_trades(taker, None, 100).await.unwrap();
        assert_eq!(mine.iter().map(|t| t.trade_id.0).collect::<Vec<_>>(), vec![4, 3, 2, 1]);
        let mine = store.account_trades(maker, None, 100).await.unwrap();
        assert_eq!(mine.iter().map(|t| t.trade_id.0).collect::<Vec<_>>(), vec![4, 2, 1]);
        let mine = store.account_trades(maker, Some(MKT), 2).await.unwrap();
        assert_eq!(mine.iter().map(|t| t.trade_id.0).collect::<Vec<_>>(), vec![2, 1]);
        let mine = store.account_trades(taker, Some(MKT2), 100).await.unwrap();
        assert_eq!(mine.iter().map(|t| t.trade_id.0).collect::<Vec<_>>(), vec![4]);
        // The seq and time are the command's.
        let last = h.log.last().unwrap();
        assert_eq!((mine[0].seq, mine[0].timestamp), (last.seq, last.timestamp));
    }
}

#[tokio::test]
async fn balances_match_the_engine_and_ledger_deltas_add_up() {
    let h = scenario();
    for store in crate::test_stores().await {
        project(&store, &h.log, 4).await;
        let accounts = store.accounts().await.unwrap();
        assert_eq!(accounts.len() as u64, h.engine.account_count());
        for a in &accounts {
            let balances = store.balances(a.account_id).await.unwrap();
            for asset in [BTC, USD] {
                let engine = h.engine.balance(a.account_id, asset).unwrap();
                let stored = balances.iter().find(|b| b.asset_id == asset);
                let (available, locked) = stored.map(|b| (b.available, b.locked)).unwrap_or_default();
                assert_eq!((available, locked), (engine.available, engine.locked), "{a:?} {asset:?}");
                let entries: Vec<_> = store
                    .ledger_entries(a.account_id, 10_000)
                    .await
                    .unwrap()
                    .into_iter()
                    .filter(|e| e.asset_id == asset)
                    .collect();
                let sum = entries.iter().fold((0i64, 0i64), |s, e| (s.0 + e.available_delta, s.1 + e.locked_delta));
                assert_eq!(sum, (engine.available.0 as i64, engine.locked.0 as i64), "{a:?} {asset:?}");
                if let (Some(newest), Some(b)) = (entries.first(), stored) {
                    assert_eq!((newest.available, newest.locked, newest.seq), (b.available, b.locked, b.seq));
                }
            }
        }
        // Fees land in the fee account, and its entries are caused by orders.
        let fees = store.ledger_entries(FEE_ACCOUNT, 100).await.unwrap();
        assert!(!fees.is_empty());
        assert!(fees.iter().all(|e| e.cause == "place_order" || e.cause == "amend_order"), "{fees:?}");
        assert!(store.balances(SETTLEMENT_POOL).await.unwrap().is_empty());
        // Newest first, and each entry carries the command's name.
        let seller = store.ledger_entries(AccountId(3), 100).await.unwrap();
        assert!(seller.windows(2).all(|w| w[0].seq >= w[1].seq));
        assert_eq!(seller[0].cause, "cancel_all");
        assert_eq!(seller.last().unwrap().cause, "credit_deposit");
        assert_eq!(store.ledger_entries(AccountId(3), 2).await.unwrap().len(), 2);
    }
}

#[tokio::test]
async fn accounts_and_deposits() {
    let mut h = Harness::new();
    let a = h.account(COIN, 5_00);
    let p = h.run(Command::OpenAccount { kind: AccountKind::Partner });
    let dup = h.run(Command::CreditDeposit { account: a, asset: BTC, amount: Amount(1), reference: format!("fund-{a}-{BTC}") });
    assert!(matches!(dup.events[..], [Event::Rejected { .. }]));
    for store in crate::test_stores().await {
        project(&store, &h.log, 2).await;
        let accounts = store.accounts().await.unwrap();
        let kinds: Vec<_> = accounts.iter().map(|r| (r.account_id.0, r.kind, r.created_seq.0)).collect();
        assert_eq!(
            kinds,
            vec![(1, AccountKind::Fee, 0), (2, AccountKind::SettlementPool, 0), (3, AccountKind::User, 2), (4, AccountKind::Partner, p.seq.0)]
        );
        let d = store.deposits(a, 10).await.unwrap();
        assert_eq!(d.len(), 2);
        assert_eq!((d[0].asset_id, d[0].amount, d[0].reference.as_str()), (USD, Amount(5_00), "fund-3-1"));
        assert_eq!((d[1].asset_id, d[1].amount, d[1].seq), (BTC, Amount(COIN), Seq(3)));
        assert_eq!(d[1].timestamp, Timestamp(T0 + 3));
        // The rejection still advanced the cursor.
        assert_eq!(store.projected_seq().await.unwrap(), dup.seq);
    }
}

#[tokio::test]
async fn withdrawals_go_from_pending_to_completed_or_failed() {
    for store in crate::test_stores().await {
        let mut h = Harness::new();
        let a = h.account(0, 1_000_00);
        let w1 = h.run(Command::RequestWithdrawal { account: a, asset: USD, amount: Amount(100_00), destination: "bank:a".into() });
        let w2 = h.run(Command::RequestWithdrawal { account: a, asset: USD, amount: Amount(200_00), destination: "bank:b".into() });
        project(&store, &h.log, 100).await;
        let w = store.withdrawals(a, 10).await.unwrap();
        assert_eq!(w.iter().map(|w| (w.withdrawal_id.0, w.status)).collect::<Vec<_>>(), vec![(2, WithdrawalStatus::Pending), (1, WithdrawalStatus::Pending)]);
        assert_eq!((w[1].amount, w[1].destination.as_str(), w[1].requested_at), (Amount(100_00), "bank:a", w1.timestamp));
        assert_eq!(store.balances(a).await.unwrap()[0].locked, Amount(300_00));

        // Completed in a later batch (update path); requested and failed in the same batch (insert path).
        let done = h.run(Command::CompleteWithdrawal { withdrawal: WithdrawalId(1) });
        let fail = h.run(Command::FailWithdrawal { withdrawal: WithdrawalId(2) });
        let w3 = h.run(Command::RequestWithdrawal { account: a, asset: USD, amount: Amount(50_00), destination: "bank:c".into() });
        let fail3 = h.run(Command::FailWithdrawal { withdrawal: WithdrawalId(3) });
        store.apply_batch(&[done.clone(), fail.clone(), w3.clone(), fail3.clone()]).await.unwrap();
        let w = store.withdrawals(a, 10).await.unwrap();
        assert_eq!(
            w.iter().map(|w| (w.withdrawal_id.0, w.status, w.updated_at)).collect::<Vec<_>>(),
            vec![
                (3, WithdrawalStatus::Failed, fail3.timestamp),
                (2, WithdrawalStatus::Failed, fail.timestamp),
                (1, WithdrawalStatus::Completed, done.timestamp)
            ]
        );
        assert_eq!(w[1].requested_at, w2.timestamp);
        assert_eq!(w[0].requested_at, w3.timestamp);
        let b = &store.balances(a).await.unwrap()[0];
        assert_eq!((b.available, b.locked), (Amount(900_00), Amount(0)));
        assert_eq!(store.withdrawals(a, 1).await.unwrap().len(), 1);
    }
}

#[tokio::test]
async fn applying_twice_changes_nothing() {
    let h = scenario();
    for store in crate::test_stores().await {
        project(&store, &h.log, 6).await;
        let before = dump(&store).await;
        project(&store, &h.log, 6).await;
        project(&store, &h.log, 1000).await;
        // An overlapping batch applies only its new tail.
        let mut more = scenario();
        let extra = more.run(Command::OpenAccount { kind: AccountKind::User });
        let overlap: Vec<_> = more.log[more.log.len() - 4..].to_vec();
        assert_eq!(dump(&store).await, before);
        store.apply_batch(&overlap).await.unwrap();
        assert_eq!(store.projected_seq().await.unwrap(), extra.seq);
        assert_eq!(store.accounts().await.unwrap().len(), before.accounts.len() + 1);
        // Duplicates inside one batch are skipped too.
        let fresh = Store::open_in_memory().await.unwrap();
        let doubled: Vec<_> = h.log.iter().flat_map(|a| [a.clone(), a.clone()]).collect();
        fresh.apply_batch(&doubled).await.unwrap();
        assert_eq!(dump(&fresh).await, before);
        store.apply_batch(&[]).await.unwrap();
    }
}

#[tokio::test]
async fn replicas_projecting_into_one_store_write_each_command_once() {
    let h = scenario();
    let expected = {
        let alone = Store::open_in_memory().await.unwrap();
        project(&alone, &h.log, 1000).await;
        dump(&alone).await
    };
    let pg = crate::test_stores().await.pop().unwrap();
    let schema: String = sqlx::query_scalar("SELECT current_schema()::text").fetch_one(&pg.pool).await.unwrap();
    let other = Store::open_postgres(&crate::test_postgres_url(), Some(&schema)).await.unwrap();
    // Two replicas project the same log at the same time, in batches that do not line up.
    tokio::join!(project(&pg, &h.log, 3), project(&other, &h.log, 4), project(&pg, &h.log, 1));
    assert_eq!(dump(&pg).await, expected);
    assert_eq!(dump(&other).await, expected);
}

#[tokio::test]
async fn reset_and_replay_gives_the_same_rows() {
    let h = scenario();
    for store in crate::test_stores().await {
        project(&store, &h.log, 5).await;
        let key = api_key("k1", AccountId(3));
        store.insert_api_key(&key).await.unwrap();
        let device = device_key("aa", AccountId(3));
        store.insert_device_key(&device, None).await.unwrap();
        store.insert_enrolment_code(&enrolment_code("h1")).await.unwrap();
        store.set_meta("journal_id", "abc").await.unwrap();
        let before = dump(&store).await;

        store.reset_projections().await.unwrap();
        let empty = dump(&store).await;
        assert_eq!(empty.cursor, Seq(0));
        assert_eq!(empty.accounts.len(), 2, "genesis accounts stay");
        assert!(empty.orders.is_empty() && empty.balances.is_empty() && empty.ledger.is_empty());
        assert!(empty.trades.iter().all(|t| t.is_empty()));
        assert!(empty.deposits.is_empty() && empty.withdrawals.is_empty());

        project(&store, &h.log, 3).await;
        assert_eq!(dump(&store).await, before);
        assert_eq!(store.api_key("k1").await.unwrap(), Some(key));
        assert_eq!(store.device_key("aa").await.unwrap(), Some(device));
        assert!(store.enrolment_code("h1").await.unwrap().is_some());
        assert_eq!(store.meta("journal_id").await.unwrap().as_deref(), Some("abc"));
    }
}

fn api_key(key: &str, account: AccountId) -> ApiKeyRecord {
    ApiKeyRecord {
        api_key: key.into(),
        secret: format!("secret-of-{key}"),
        account_id: account,
        label: "trading bot".into(),
        created_at: Timestamp(T0),
    }
}

#[tokio::test]
async fn api_keys_and_meta() {
    for store in crate::test_stores().await {
        let k1 = api_key("k1", AccountId(3));
        let mut k2 = api_key("k2", AccountId(3));
        k2.created_at = Timestamp(T0 + 1);
        store.insert_api_key(&k1).await.unwrap();
        store.insert_api_key(&k2).await.unwrap();
        store.insert_api_key(&api_key("k3", AccountId(4))).await.unwrap();
        assert!(matches!(store.insert_api_key(&api_key("k1", AccountId(5))).await, Err(StoreError::Conflict(_))));
        assert_eq!(store.api_key("k1").await.unwrap(), Some(k1.clone()));
        assert_eq!(store.api_key("nope").await.unwrap(), None);
        assert_eq!(store.api_keys_for(AccountId(3)).await.unwrap(), vec![k1, k2]);
        assert!(store.api_keys_for(AccountId(9)).await.unwrap().is_empty());

        assert_eq!(store.meta("x").await.unwrap(), None);
        store.set_meta("x", "1").await.unwrap();
        store.set_meta("x", "2").await.unwrap();
        assert_eq!(store.meta("x").await.unwrap().as_deref(), Some("2"));
    }
}

fn device_key(pubkey: &str, account: AccountId) -> DeviceKeyRecord {
    DeviceKeyRecord { device_pubkey: pubkey.into(), account_id: account, label: "phone".into(), created_at: Timestamp(T0) }
}

fn enrolment_code(hash: &str) -> EnrolmentCodeRecord {
    EnrolmentCodeRecord {
        code_hash: hash.into(),
        label: "for carol".into(),
        created_at: Timestamp(T0),
        used_at: None,
        account_id: None,
    }
}

#[tokio::test]
async fn device_keys_are_unique_and_listed_per_account() {
    for store in crate::test_stores().await {
        let d1 = device_key("d1", AccountId(3));
        let mut d2 = device_key("d2", AccountId(3));
        d2.created_at = Timestamp(T0 + 1);
        store.insert_device_key(&d1, None).await.unwrap();
        store.insert_device_key(&d2, None).await.unwrap();
        store.insert_device_key(&device_key("d3", AccountId(4)), None).await.unwrap();
        let again = store.insert_device_key(&device_key("d1", AccountId(5)), None).await;
        assert!(matches!(again, Err(StoreError::Conflict(_))), "{again:?}");
        assert_eq!(store.device_key("d1").await.unwrap(), Some(d1.clone()));
        assert_eq!(store.device_key("nope").await.unwrap(), None);
        assert_eq!(store.device_keys_for(AccountId(3)).await.unwrap(), vec![d1, d2]);
        assert!(store.device_keys_for(AccountId(5)).await.unwrap().is_empty(), "the conflict wrote nothing");
    }
}

#[tokio::test]
async fn enrolment_codes_are_single_use() {
    for store in crate::test_stores().await {
        store.insert_enrolment_code(&enrolment_code("h1")).await.unwrap();
        assert!(matches!(store.insert_enrolment_code(&enrolment_code("h1")).await, Err(StoreError::Conflict(_))));
        assert_eq!(store.enrolment_code("h1").await.unwrap(), Some(enrolment_code("h1")));
        assert_eq!(store.enrolment_code("h2").await.unwrap(), None);

        // Unknown codes are never consumed; a known one exactly once.
        assert!(!store.consume_enrolment_code("h2", Timestamp(T0 + 5)).await.unwrap());
        assert!(store.consume_enrolment_code("h1", Timestamp(T0 + 5)).await.unwrap());
        assert!(!store.consume_enrolment_code("h1", Timestamp(T0 + 6)).await.unwrap());
        assert_eq!(store.enrolment_code("h1").await.unwrap().unwrap().used_at, Some(Timestamp(T0 + 5)));

        // Released by the consumer (matching used_at), it can be used again.
        assert!(!store.release_enrolment_code("h1", Timestamp(T0 + 6)).await.unwrap(), "not this caller's");
        assert!(store.release_enrolment_code("h1", Timestamp(T0 + 5)).await.unwrap());
        assert_eq!(store.enrolment_code("h1").await.unwrap().unwrap().used_at, None);
        assert!(store.consume_enrolment_code("h1", Timestamp(T0 + 7)).await.unwrap());

        // Registering the device binds the code to its account in the same transaction.
        let device = device_key("d1", AccountId(8));
        store.insert_device_key(&device, Some("h1")).await.unwrap();
        let code = store.enrolment_code("h1").await.unwrap().unwrap();
        assert_eq!((code.used_at, code.account_id), (Some(Timestamp(T0 + 7)), Some(AccountId(8))));
        // A bound code cannot be released nor bound again; a failed bind registers no device.
        assert!(!store.release_enrolment_code("h1", Timestamp(T0 + 7)).await.unwrap());
        let rebind = store.insert_device_key(&device_key("d2", AccountId(9)), Some("h1")).await;
        assert!(matches!(rebind, Err(StoreError::Conflict(_))), "{rebind:?}");
        assert_eq!(store.device_key("d2").await.unwrap(), None);
        // An unconsumed code cannot be bound either.
        store.insert_enrolment_code(&enrolment_code("h3")).await.unwrap();
        let unconsumed = store.insert_device_key(&device_key("d3", AccountId(9)), Some("h3")).await;
        assert!(matches!(unconsumed, Err(StoreError::Conflict(_))), "{unconsumed:?}");
    }
}

#[tokio::test]
async fn an_enrolment_code_is_consumed_once_under_concurrency() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_sqlite(&dir.path().join("store.db")).await.unwrap();
    store.insert_enrolment_code(&enrolment_code("h1")).await.unwrap();
    let tries: Vec<_> = (0..16)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move { store.consume_enrolment_code("h1", Timestamp(T0 + i)).await.unwrap() })
        })
        .collect();
    let mut wins = 0;
    for t in tries {
        wins += t.await.unwrap() as usize;
    }
    assert_eq!(wins, 1);
}

#[tokio::test]
async fn values_out_of_range_are_errors_not_panics() {
    for store in crate::test_stores().await {
        let bad = Arc::new(Applied {
            seq: Seq(5),
            timestamp: Timestamp(T0),
            command: Command::OpenAccount { kind: AccountKind::User },
            events: vec![Event::BalanceChanged { account: AccountId(3), asset: BTC, available: Amount(u64::MAX), locked: Amount(0) }],
            book_updates: vec![],
        });
        assert!(matches!(store.apply_batch(&[bad]).await, Err(StoreError::Corrupt(_))));
        assert_eq!(store.projected_seq().await.unwrap(), Seq(0), "nothing committed");
        assert!(matches!(store.order(OrderId(u64::MAX)).await, Err(StoreError::Corrupt(_))));
        // A bad row written behind the store's back is reported, not trusted.
        sqlx::query(stmt(store.backend(), "UPDATE projection_cursor SET seq = -1")).execute(&store.pool).await.unwrap();
        assert!(matches!(store.projected_seq().await, Err(StoreError::Corrupt(_))));
    }
}

#[tokio::test]
async fn file_database_persists_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let h = scenario();
    let expected = {
        let store = Store::open_sqlite(&path).await.unwrap();
        project(&store, &h.log, 8).await;
        let mode: String = sqlx::query_scalar(stmt(store.backend(), "PRAGMA journal_mode")).fetch_one(&store.pool).await.unwrap();
        assert_eq!(mode, "wal");
        let d = dump(&store).await;
        store.pool.close().await;
        d
    };
    let store = Store::open_sqlite(&path).await.unwrap();
    assert_eq!(dump(&store).await, expected);
}

#[tokio::test]
async fn queries_use_the_indexes() {
    // EXPLAIN QUERY PLAN is SQLite's: PostgreSQL plans by its statistics.
    for store in crate::test_stores().await.into_iter().filter(|s| s.backend() == crate::Backend::Sqlite) {
        let plans = [
            ("SELECT * FROM orders WHERE account_id = 1 AND order_id < 9 AND status IN ('new', 'partially_filled') ORDER BY order_id DESC LIMIT 5", "orders_open_by_account"),
            ("SELECT * FROM orders WHERE account_id = 1 AND order_id < 9 ORDER BY order_id DESC LIMIT 5", "orders_by_account"),
            ("SELECT * FROM orders WHERE account_id = 1 AND client_order_id = 'x'", "orders_by_client_id"),
            ("SELECT * FROM trades WHERE market_id = 1 ORDER BY trade_id DESC LIMIT 5", "trades_by_market"),
            ("SELECT * FROM ledger_entries WHERE account_id = 1 ORDER BY seq DESC, asset_id DESC LIMIT 5", "sqlite_autoindex_ledger_entries_1"),
            (
                "UPDATE orders SET filled = v.column2 FROM (VALUES (1, 2), (3, 4)) AS v WHERE orders.order_id = v.column1",
                "INTEGER PRIMARY KEY",
            ),
        ];
        for (sql, index) in plans {
            let rows = sqlx::query(stmt(store.backend(), &format!("EXPLAIN QUERY PLAN {sql}"))).fetch_all(&store.pool).await.unwrap();
            let plan: Vec<String> = rows.iter().map(|r| sqlx::Row::get::<String, _>(r, 3)).collect();
            assert!(plan.iter().any(|p| p.contains(index)), "{sql}: {plan:?}");
            assert!(!plan.iter().any(|p| p.contains("TEMP B-TREE")), "{sql}: {plan:?}");
        }
    }
}

#[tokio::test]
async fn projector_keeps_up_and_answers_wait_for() {
    let h = scenario();
    for store in crate::test_stores().await {
        let (tx, rx) = crossbeam_channel::bounded(16);
        let handle = Projector::spawn(store.clone(), rx, Seq(0));
        assert_eq!(handle.projected_seq(), Seq(0));
        assert!(handle.wait_for(Seq(0), Duration::ZERO).await);
        assert!(!handle.wait_for(Seq(1), Duration::from_millis(20)).await);
        let last = h.log.last().unwrap().seq;
        let log = h.log.clone();
        // Send from a plain thread, like the engine does (the bounded channel applies backpressure).
        let sender = std::thread::spawn(move || {
            for a in log {
                tx.send(a).unwrap();
            }
            tx
        });
        assert!(handle.wait_for(last, Duration::from_secs(10)).await);
        assert_eq!(handle.projected_seq(), last);
        assert_eq!(store.projected_seq().await.unwrap(), last);
        let reference = Store::open_in_memory().await.unwrap();
        project(&reference, &h.log, 1000).await;
        assert_eq!(dump(&store).await, dump(&reference).await);

        // When the engine goes away the projector stops; waiting for more answers false at once.
        drop(sender.join().unwrap());
        let started = Instant::now();
        assert!(!handle.wait_for(Seq(last.0 + 1), Duration::from_secs(10)).await);
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(handle.clone().wait_for(last, Duration::ZERO).await);
    }
}

#[tokio::test]
async fn history_pages_run_oldest_first_from_an_id_or_the_newest() {
    let h = scenario();
    for store in crate::test_stores().await {
        project(&store, &h.log, 1000).await;
        for account in [AccountId(3), AccountId(4)] {
            // The reference: every order and trade of the market, newest first.
            let mut orders = store.orders(account, Some(MKT), false, 1000, None).await.unwrap();
            orders.reverse();
            let mut trades: Vec<_> = store.account_trades(account, Some(MKT), 1000).await.unwrap();
            trades.reverse();
            assert!(orders.len() >= 2 && !trades.is_empty(), "{account:?}");
            let ids = |v: &[crate::OrderRecord]| v.iter().map(|o| o.order_id).collect::<Vec<_>>();
            let tids = |v: &[crate::TradeRecord]| v.iter().map(|t| t.trade_id).collect::<Vec<_>>();
            let all = (None, None);
            assert_eq!(ids(&store.orders_page(account, MKT, None, all, 1000).await.unwrap()), ids(&orders));
            assert_eq!(ids(&store.orders_page(account, MKT, None, all, 1).await.unwrap()), ids(&orders[orders.len() - 1..]), "the newest");
            let from = orders[1].order_id;
            assert_eq!(ids(&store.orders_page(account, MKT, Some(from), all, 1).await.unwrap()), vec![from], "from an id on");
            assert_eq!(tids(&store.account_trades_page(account, MKT, None, all, 1000).await.unwrap()), tids(&trades));
            let first = trades[0].trade_id.0;
            assert_eq!(tids(&store.account_trades_page(account, MKT, Some(first), all, 1).await.unwrap()), tids(&trades[..1]));
            let none_yet = (Some(0), Some(1));
            assert!(store.orders_page(account, MKT, None, none_yet, 1000).await.unwrap().is_empty(), "a window before every order");
            assert!(store.account_trades_page(account, MKT, None, none_yet, 1000).await.unwrap().is_empty());
        }
    }
}

#[tokio::test]
async fn a_follower_sees_what_another_process_projected() {
    let h = scenario();
    for store in crate::test_stores().await {
        let follower = Projector::follow(store.clone(), Duration::from_millis(10));
        let last = h.log.last().unwrap().seq;
        assert!(!follower.wait_for(last, Duration::from_millis(50)).await, "nothing projected yet");
        project(&store, &h.log, 7).await;
        assert!(follower.wait_for(last, Duration::from_secs(10)).await);
        assert_eq!(follower.projected_seq(), last);
    }
}

/// Not a timed assertion: prints how fast a file-backed store projects a realistic mix.
#[tokio::test]
async fn projection_throughput() {
    const COMMANDS: usize = 50_000;
    let mut h = Harness::new();
    let traders: Vec<AccountId> = (0..200).map(|_| h.account(1_000 * COIN, 1_000_000_000_00)).collect();
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    while h.log.len() < COMMANDS {
        let r = next();
        let account = traders[(r % traders.len() as u64) as usize];
        let side = if r & 1 == 0 { Side::Buy } else { Side::Sell };
        // Prices around 60,000 so about half the orders cross.
        let price = 59_950 + (r >> 8) % 100;
        let sats = 1_000 * (1 + (r >> 16) % 50);
        match (r >> 32) % 10 {
            0 => {
                if let Some(o) = h.engine.open_orders(Some(account), None).first().map(|o| o.order) {
                    h.run(Command::CancelOrder { account, order: OrderRef::Id(o) });
                }
            }
            _ => {
                h.place(account, MKT, side, gtc(price), sats);
            }
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_sqlite(&dir.path().join("perf.db")).await.unwrap();
    let events: usize = h.log.iter().map(|a| a.events.len()).sum();
    let started = Instant::now();
    project(&store, &h.log, 4096).await;
    let elapsed = started.elapsed();
    let trades = store.trades(MKT, u32::MAX).await.unwrap().len();
    println!(
        "projected {} commands ({events} events, {trades} trades) in {:.2?}: {:.0} commands/s",
        h.log.len(),
        elapsed,
        h.log.len() as f64 / elapsed.as_secs_f64()
    );
    assert_eq!(store.projected_seq().await.unwrap(), Seq(h.seq));
}

#[tokio::test]
async fn cosigners_are_unique_and_survive_a_projection_reset() {
    for store in crate::test_stores().await {
        let c1 = CosignerRecord { identity_pubkey: "c1".into(), label: "acme".into(), created_at: Timestamp(T0) };
        let c2 = CosignerRecord { identity_pubkey: "c2".into(), label: "".into(), created_at: Timestamp(T0 + 1) };
        store.insert_cosigner(&c1).await.unwrap();
        store.insert_cosigner(&c2).await.unwrap();
        let again = store.insert_cosigner(&CosignerRecord { label: "other".into(), ..c1.clone() }).await;
        assert!(matches!(again, Err(StoreError::Conflict(_))), "{again:?}");
        assert_eq!(store.cosigner("c1").await.unwrap(), Some(c1.clone()));
        assert_eq!(store.cosigner("nope").await.unwrap(), None);
        store.reset_projections().await.unwrap();
        assert_eq!(store.cosigners().await.unwrap(), vec![c1, c2]);
    }
}

#[tokio::test]
async fn refusals_are_listed_newest_first_per_account_and_survive_a_projection_reset() {
    for store in crate::test_stores().await {
        let refusal = |n: u64, account: Option<u64>| RefusalRecord {
            id: 0,
            at: Timestamp(1_000 + n),
            signer: "provider".into(),
            code: "obligation_unpaid".into(),
            detail: format!("refusal {n}"),
            purpose: r#"{"withdrawal":{"withdrawal":1}}"#.into(),
            execution_id: format!("{n:064x}"),
            group_id: account.map(|_| "00".repeat(16)),
            account_id: account.map(AccountId),
        };
        let a = store.insert_refusal(&refusal(1, Some(7))).await.unwrap();
        let b = store.insert_refusal(&refusal(2, None)).await.unwrap();
        let c = store.insert_refusal(&refusal(3, Some(8))).await.unwrap();
        assert!(a < b && b < c);
        store.reset_projections().await.unwrap();
        let all = store.refusals(None, 10).await.unwrap();
        assert_eq!(all.iter().map(|r| r.id).collect::<Vec<_>>(), vec![c, b, a]);
        assert_eq!(all[2], RefusalRecord { id: a, ..refusal(1, Some(7)) });
        let of_seven = store.refusals(Some(AccountId(7)), 10).await.unwrap();
        assert_eq!(of_seven.iter().map(|r| r.detail.as_str()).collect::<Vec<_>>(), vec!["refusal 1"]);
        assert_eq!(store.refusals(None, 1).await.unwrap().len(), 1);
    }
}

#[tokio::test]
async fn aggregate_trades_candles_and_the_last_trade_before() {
    let mut h = Harness::new();
    let (a, b, c) = (h.account(COIN, 0), h.account(COIN, 0), h.account(COIN, 0));
    let taker = h.account(0, 1_000_000_00);
    let buyer = h.account(0, 1_000_000_00);
    h.limit(a, Side::Sell, 60_000, COIN / 4);
    h.limit(b, Side::Sell, 60_000, COIN / 4);
    h.limit(c, Side::Sell, 60_100, COIN / 2);
    let sweep = h.limit(taker, Side::Buy, 61_000, COIN); // trades 1, 2 at 60,000 (one run), 3 at 60,100
    h.limit(buyer, Side::Buy, 59_000, COIN / 10);
    let hit = h.limit(a, Side::Sell, 59_000, COIN / 10); // trade 4, sold by the taker
    for store in crate::test_stores().await {
        project(&store, &h.log, 4).await;

        let all = store.agg_trades_page(MKT, None, (None, None), 10).await.unwrap();
        let runs: Vec<_> = all.iter().map(|r| (r.agg_trade_id.0, r.first_trade_id.0, r.last_trade_id.0)).collect();
        assert_eq!(runs, vec![(1, 1, 2), (3, 3, 3), (4, 4, 4)]);
        assert_eq!((all[0].price, all[0].quantity, all[0].taker_side), (Price(60_000_00), Quantity(COIN / 2), Side::Buy));
        assert_eq!((all[2].quantity, all[2].taker_side, all[2].timestamp), (Quantity(COIN / 10), Side::Sell, hit.timestamp));
        // Paging by id never cuts a run; without a start, the newest come.
        let from_two = store.agg_trades_page(MKT, Some(2), (None, None), 10).await.unwrap();
        assert_eq!(from_two.iter().map(|r| r.agg_trade_id.0).collect::<Vec<_>>(), vec![3, 4]);
        let newest = store.agg_trades_page(MKT, None, (None, None), 1).await.unwrap();
        assert_eq!(newest.iter().map(|r| r.agg_trade_id.0).collect::<Vec<_>>(), vec![4]);
        let oldest = store.agg_trades_page(MKT, None, (Some(0), None), 1).await.unwrap();
        assert_eq!(oldest.iter().map(|r| r.agg_trade_id.0).collect::<Vec<_>>(), vec![1]);
        let window = (Some(sweep.timestamp.0), Some(sweep.timestamp.0));
        assert_eq!(store.agg_trades_page(MKT, None, window, 10).await.unwrap().len(), 2);
        assert!(store.agg_trades_page(MKT2, None, (None, None), 10).await.unwrap().is_empty());

        let day = Buckets { origin: 0, interval: 86_400_000 };
        let one = store.candles(MKT, day, (0, u64::MAX / 2), None).await.unwrap();
        assert_eq!(one.len(), 1);
        let k = &one[0];
        assert_eq!(k.open_time, T0 / 86_400_000 * 86_400_000);
        assert_eq!((k.open, k.high, k.low, k.close), (Price(60_000_00), Price(60_100_00), Price(59_000_00), Price(59_000_00)));
        assert_eq!((k.volume, k.trades, k.taker_buy_volume), (Quantity(COIN + COIN / 10), 4, Quantity(COIN)));
        assert_eq!(k.quote_volume, Amount(30_000_00 + 30_050_00 + 5_900_00));
        assert_eq!(k.taker_buy_quote_volume, Amount(30_000_00 + 30_050_00));
        assert_eq!((k.first_trade_id, k.last_trade_id), (TradeId(1), TradeId(4)));
        // Millisecond buckets: one per command that traded; the end is exclusive.
        let ms = Buckets { origin: T0, interval: 1 };
        let each = store.candles(MKT, ms, (T0, hit.timestamp.0 + 1), None).await.unwrap();
        assert_eq!(each.iter().map(|k| (k.open_time, k.trades)).collect::<Vec<_>>(), vec![(sweep.timestamp.0, 3), (hit.timestamp.0, 1)]);
        assert_eq!(store.candles(MKT, ms, (T0, hit.timestamp.0), None).await.unwrap().len(), 1);
        // Through a seq: the later command's trade is left out.
        assert_eq!(store.candles(MKT, ms, (T0, hit.timestamp.0 + 1), Some(sweep.seq)).await.unwrap().len(), 1);

        let before = store.last_trade_before(MKT, hit.timestamp.0).await.unwrap().unwrap();
        assert_eq!(before.trade_id, TradeId(3));
        assert_eq!(store.last_trade_before(MKT, T0).await.unwrap(), None);
    }
}

#[tokio::test]
async fn listen_keys_are_one_per_account_and_expire() {
    let (account, other) = (AccountId(7), AccountId(8));
    for store in crate::test_stores().await {
        assert_eq!(store.open_listen_key(account, "k1", 1_000, 100).await.unwrap(), "k1");
        // A live key is the account's key: opening again keeps it alive.
        assert_eq!(store.open_listen_key(account, "k2", 1_050, 100).await.unwrap(), "k1");
        assert_eq!(store.listen_key("k1").await.unwrap(), Some((account, 1_150)));
        assert!(store.keep_listen_key_alive("k1", account, 1_100, 100).await.unwrap());
        assert!(!store.keep_listen_key_alive("k1", other, 1_100, 100).await.unwrap());
        assert_eq!(store.listen_key("k1").await.unwrap(), Some((account, 1_200)));
        assert_eq!(store.open_listen_key(other, "k9", 1_100, 100).await.unwrap(), "k9");
        // Expired: kept alive no more, replaced by the next one opened.
        assert!(!store.keep_listen_key_alive("k1", account, 1_300, 100).await.unwrap());
        assert_eq!(store.open_listen_key(account, "k3", 1_300, 100).await.unwrap(), "k3");
        assert_eq!(store.listen_key("k1").await.unwrap(), None);
        assert!(!store.close_listen_key("k3", other).await.unwrap());
        assert!(store.close_listen_key("k3", account).await.unwrap());
        assert_eq!(store.listen_key("k3").await.unwrap(), None);
        assert_eq!(store.listen_key("k9").await.unwrap(), Some((other, 1_200)));
    }
}
