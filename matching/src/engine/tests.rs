// Amounts are written dollars_cents (60_000_00) so test prices read like prices.
#![allow(clippy::inconsistent_digit_grouping)]

use super::*;
use crate::config::ExchangeConfig;

const BTC: AssetId = AssetId(0);
const USD: AssetId = AssetId(1);
const MKT: MarketId = MarketId(0);
/// 1 BTC in satoshis.
const COIN: u64 = 100_000_000;

struct Harness {
    engine: Engine,
    seq: u64,
}

impl Harness {
    fn new() -> Harness {
        let mut config = ExchangeConfig::default().to_engine().unwrap();
        // Small test orders: a one-cent minimum (the default $1 has its own test).
        config.markets[0].min_notional = Amount(1);
        Harness { engine: Engine::genesis(config, Seq(1)).unwrap(), seq: 1 }
    }

    fn run(&mut self, command: Command) -> Vec<Event> {
        self.seq += 1;
        let events = self.engine.apply(&Envelope { seq: Seq(self.seq), timestamp: Timestamp(self.seq), command });
        self.engine.check_invariants().unwrap();
        events
    }

    fn account(&mut self, btc: u64, usd: u64) -> AccountId {
        let ev = self.run(Command::OpenAccount { kind: AccountKind::User });
        let Event::AccountOpened { account, .. } = ev[0] else { panic!("{ev:?}") };
        for (asset, amount) in [(BTC, btc), (USD, usd)] {
            if amount > 0 {
                let reference = format!("fund-{account}-{asset}");
                self.run(Command::CreditDeposit { account, asset, amount: Amount(amount), reference });
            }
        }
        account
    }

    fn limit(&mut self, account: AccountId, side: Side, price_usd: u64, sats: u64) -> Vec<Event> {
        self.order(account, side, price_usd * 100, sats, TimeInForce::Gtc, false, SelfTradePrevention::default())
    }

    #[allow(clippy::too_many_arguments)]
    fn order(
        &mut self,
        account: AccountId,
        side: Side,
        price_cents: u64,
        sats: u64,
        time_in_force: TimeInForce,
        post_only: bool,
        stp: SelfTradePrevention,
    ) -> Vec<Event> {
        self.run(Command::PlaceOrder(NewOrder {
            account,
            market: MKT,
            side,
            kind: OrderKind::Limit { price: Price(price_cents), time_in_force, post_only },
            quantity: Quantity(sats),
            client_order_id: None,
            self_trade: stp,
        }))
    }

    fn bal(&self, account: AccountId, asset: AssetId) -> (u64, u64) {
        let b = self.engine.balance(account, asset).unwrap();
        (b.available.0, b.locked.0)
    }
}

fn order_id(events: &[Event]) -> OrderId {
    events
        .iter()
        .find_map(|e| match e {
            Event::OrderAccepted(a) => Some(a.order),
            _ => None,
        })
        .unwrap_or_else(|| panic!("not accepted: {events:?}"))
}

fn rejection(events: &[Event]) -> Option<RejectReason> {
    match events {
        [Event::Rejected { reason }] => Some(*reason),
        _ => None,
    }
}

fn trades(events: &[Event]) -> Vec<Trade> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Trade(t) => Some(*t),
            _ => None,
        })
        .collect()
}

fn closed(events: &[Event]) -> Vec<(OrderId, CloseReason)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::OrderClosed { order, reason, .. } => Some((*order, *reason)),
            _ => None,
        })
        .collect()
}

#[test]
fn genesis_opens_fee_and_pool_accounts() {
    let h = Harness::new();
    assert_eq!(h.engine.account_kind(FEE_ACCOUNT), Some(AccountKind::Fee));
    assert_eq!(h.engine.account_kind(SETTLEMENT_POOL), Some(AccountKind::SettlementPool));
}

#[test]
fn limit_orders_cross_at_the_maker_price_with_fees() {
    let mut h = Harness::new();
    let seller = h.account(COIN, 0);
    let buyer = h.account(0, 100_000_00);
    let ask = order_id(&h.limit(seller, Side::Sell, 60_000, COIN / 2));
    assert_eq!(h.bal(seller, BTC), (COIN / 2, COIN / 2));
    let ev = h.limit(buyer, Side::Buy, 61_000, COIN / 2);
    let t = trades(&ev);
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].price, Price(60_000_00));
    assert_eq!(t[0].notional, Amount(30_000_00));
    // Taker buyer pays 20 bps in BTC; maker seller pays 10 bps in USD.
    assert_eq!(t[0].taker_fee, Amount(COIN / 2 * 20 / 10_000));
    assert_eq!(t[0].maker_fee, Amount(30_000_00 * 10 / 10_000));
    assert_eq!(h.bal(buyer, BTC), (COIN / 2 - 100_000, 0));
    // Locked at the 61k limit, paid at 60k: the rest comes back.
    assert_eq!(h.bal(buyer, USD), (100_000_00 - 30_000_00, 0));
    assert_eq!(h.bal(seller, USD), (30_000_00 - 3_000, 0));
    assert_eq!(h.bal(FEE_ACCOUNT, BTC), (100_000, 0));
    assert_eq!(h.bal(FEE_ACCOUNT, USD), (3_000, 0));
    let c = closed(&ev);
    assert!(c.contains(&(ask, CloseReason::Filled)));
    assert_eq!(c.len(), 2);
}

#[test]
fn notional_rounds_down_the_same_for_both_sides() {
    let mut h = Harness::new();
    let seller = h.account(COIN, 0);
    let buyer = h.account(0, 1_000_000_00);
    // 65,000.01 USD * 0.00001 BTC = 0.6500001 USD: both sides move 65 cents.
    h.order(seller, Side::Sell, 6_500_001, 1_000, TimeInForce::Gtc, false, Default::default());
    let ev = h.order(buyer, Side::Buy, 6_500_001, 2_000, TimeInForce::Ioc, false, Default::default());
    let t = trades(&ev);
    assert_eq!(t[0].notional, Amount(65));
    // The 10 bps maker fee on 65 cents rounds down to nothing.
    assert_eq!(h.bal(seller, USD).0, 65);
}

#[test]
fn default_minimum_notional_is_one_dollar() {
    let mut h = Harness::new();
    h.engine.rules[0].min_notional = 100;
    let a = h.account(COIN, 0);
    let ev = h.order(a, Side::Sell, 99_99, COIN / 100, TimeInForce::Gtc, false, Default::default());
    assert_eq!(rejection(&ev), Some(RejectReason::BelowMinNotional));
    let ev = h.order(a, Side::Sell, 100_00, COIN / 100, TimeInForce::Gtc, false, Default::default());
    assert!(rejection(&ev).is_none());
}

#[test]
fn price_time_priority_and_partial_fills() {
    let mut h = Harness::new();
    let a = h.account(COIN, 0);
    let b = h.account(COIN, 0);
    let buyer = h.account(0, 1_000_000_00);
    let first = order_id(&h.limit(a, Side::Sell, 100, 30_000));
    let second = order_id(&h.limit(b, Side::Sell, 100, 30_000));
    let better = order_id(&h.limit(b, Side::Sell, 99, 20_000));
    let ev = h.limit(buyer, Side::Buy, 100, 60_000);
    let makers: Vec<OrderId> = trades(&ev).iter().map(|t| t.maker_order).collect();
    assert_eq!(makers, vec![better, first, second]);
    let rest = h.engine.order(second).unwrap();
    assert_eq!(rest.filled, Quantity(10_000));
}

#[test]
fn ioc_fok_and_post_only() {
    let mut h = Harness::new();
    let seller = h.account(COIN, 0);
    let buyer = h.account(0, 1_000_000_00);
    h.limit(seller, Side::Sell, 100, 10_000);
    // FOK larger than the book: accepted and expired untouched, nothing locked or traded.
    let balances = h.engine.balances(buyer);
    let ev = h.order(buyer, Side::Buy, 100_00, 20_000, TimeInForce::Fok, false, Default::default());
    assert!(matches!(ev[0], Event::OrderAccepted(OrderAccepted { time_in_force: TimeInForce::Fok, .. })), "{ev:?}");
    assert!(matches!(ev[1], Event::OrderClosed { reason: CloseReason::Expired, filled: Quantity::ZERO, .. }), "{ev:?}");
    assert_eq!(ev.len(), 2, "no trade, no balance change: {ev:?}");
    assert_eq!(h.engine.balances(buyer), balances);
    assert_eq!(h.engine.level_quantity(MarketId(0), Side::Sell, Price(100_00)), Quantity(10_000));
    let before = h.engine.snapshot();
    // Post-only that would cross.
    let ev = h.order(buyer, Side::Buy, 100_00, 10_000, TimeInForce::Gtc, true, Default::default());
    assert_eq!(rejection(&ev), Some(RejectReason::WouldTakeLiquidity));
    // Rejections change nothing but the sequence number.
    let mut after = h.engine.snapshot();
    after.last_seq = before.last_seq;
    assert_eq!(before, after);
    // IOC fills what it can and expires the rest.
    let ev = h.order(buyer, Side::Buy, 100_00, 20_000, TimeInForce::Ioc, false, Default::default());
    assert_eq!(trades(&ev).len(), 1);
    let id = order_id(&ev);
    assert_eq!(closed(&ev).last(), Some(&(id, CloseReason::Expired)));
    assert_eq!(h.bal(buyer, USD).1, 0);
    assert_eq!(h.engine.open_order_count(), 0);
}

#[test]
fn market_order_respects_protection_price() {
    let mut h = Harness::new();
    let seller = h.account(COIN, 0);
    let buyer = h.account(0, 1_000_000_00);
    h.limit(seller, Side::Sell, 100, 10_000);
    h.limit(seller, Side::Sell, 110, 10_000);
    let ev = h.run(Command::PlaceOrder(NewOrder {
        account: buyer,
        market: MKT,
        side: Side::Buy,
        kind: OrderKind::Market { protection_price: Price(105_00) },
        quantity: Quantity(20_000),
        client_order_id: None,
        self_trade: Default::default(),
    }));
    assert_eq!(trades(&ev).len(), 1);
    assert_eq!(closed(&ev).last().unwrap().1, CloseReason::Expired);
    assert_eq!(h.engine.depth(MKT, 10).unwrap().asks.len(), 1);
}

#[test]
fn self_trade_prevention_modes() {
    let mut h = Harness::new();
    let me = h.account(COIN, 1_000_000_00);
    let other = h.account(COIN, 0);
    let mine = order_id(&h.limit(me, Side::Sell, 100, 10_000));
    let theirs = order_id(&h.limit(other, Side::Sell, 100, 10_000));
    // Default: my resting order is cancelled, I trade with the other seller.
    let ev = h.limit(me, Side::Buy, 100, 10_000);
    assert!(closed(&ev).contains(&(mine, CloseReason::SelfTrade)));
    assert_eq!(trades(&ev)[0].maker_order, theirs);

    let mine = order_id(&h.limit(me, Side::Sell, 100, 10_000));
    let ev = h.order(me, Side::Buy, 100_00, 10_000, TimeInForce::Gtc, false, SelfTradePrevention::CancelIncoming);
    let incoming = order_id(&ev);
    assert_eq!(closed(&ev), vec![(incoming, CloseReason::SelfTrade)]);
    assert!(h.engine.order(mine).is_some());

    let ev = h.order(me, Side::Buy, 100_00, 10_000, TimeInForce::Gtc, false, SelfTradePrevention::CancelBoth);
    let incoming = order_id(&ev);
    assert_eq!(closed(&ev), vec![(mine, CloseReason::SelfTrade), (incoming, CloseReason::SelfTrade)]);
    assert_eq!(h.engine.open_order_count(), 0);
}

#[test]
fn amend_keeps_priority_only_when_reducing() {
    let mut h = Harness::new();
    let a = h.account(COIN, 0);
    let b = h.account(COIN, 0);
    let buyer = h.account(0, 1_000_000_00);
    let first = order_id(&h.limit(a, Side::Sell, 100, 30_000));
    let second = order_id(&h.limit(b, Side::Sell, 100, 30_000));
    let ev = h.run(Command::AmendOrder { account: a, order: OrderRef::Id(first), price: None, quantity: Some(Quantity(20_000)) });
    assert!(matches!(ev[0], Event::OrderAmended { priority_kept: true, .. }));
    assert_eq!(h.bal(a, BTC), (COIN - 20_000, 20_000));
    let ev = h.run(Command::AmendOrder { account: a, order: OrderRef::Id(first), price: None, quantity: Some(Quantity(40_000)) });
    assert!(matches!(ev[0], Event::OrderAmended { priority_kept: false, .. }));
    let ev = h.limit(buyer, Side::Buy, 100, 10_000);
    assert_eq!(trades(&ev)[0].maker_order, second);
    // Someone else cannot amend or cancel it.
    let ev = h.run(Command::CancelOrder { account: b, order: OrderRef::Id(first) });
    assert_eq!(rejection(&ev), Some(RejectReason::UnknownOrder));
    // Amend a buy's price across the book: it trades as a taker.
    let bid = order_id(&h.limit(buyer, Side::Buy, 90, 20_000));
    let ev = h.run(Command::AmendOrder { account: buyer, order: OrderRef::Id(bid), price: Some(Price(100_00)), quantity: None });
    assert_eq!(trades(&ev)[0].taker_order, bid);
}

#[test]
fn amend_needing_more_funds_than_available_changes_nothing() {
    let mut h = Harness::new();
    let buyer = h.account(0, 1);
    let bid = order_id(&h.limit(buyer, Side::Buy, 100, 10_000));
    let before = h.engine.snapshot();
    let ev = h.run(Command::AmendOrder { account: buyer, order: OrderRef::Id(bid), price: Some(Price(200_00)), quantity: None });
    assert_eq!(rejection(&ev), Some(RejectReason::InsufficientBalance));
    let mut after = h.engine.snapshot();
    after.last_seq = before.last_seq;
    assert_eq!(before, after);
}

#[test]
fn deposits_are_idempotent_and_capped() {
    let mut h = Harness::new();
    let a = h.account(0, 0);
    let credit = |amount: u64, r: &str| Command::CreditDeposit { account: a, asset: BTC, amount: Amount(amount), reference: r.into() };
    assert!(matches!(h.run(credit(5, "tx:0"))[0], Event::DepositCredited { .. }));
    assert_eq!(rejection(&h.run(credit(5, "tx:0"))), Some(RejectReason::DuplicateDeposit));
    assert_eq!(rejection(&h.run(credit(0, "tx:1"))), Some(RejectReason::ZeroAmount));
    assert_eq!(rejection(&h.run(credit(21_000_000 * COIN, "tx:2"))), Some(RejectReason::SupplyExceeded));
    assert_eq!(h.bal(a, BTC), (5, 0));
}

#[test]
fn a_reversed_deposit_is_taken_back_exactly_once_and_may_return() {
    let mut h = Harness::new();
    let a = h.account(0, 0);
    let credit = Command::CreditDeposit { account: a, asset: BTC, amount: Amount(COIN), reference: "chain:t:0".into() };
    let reverse = Command::ReverseDeposit { asset: BTC, reference: "chain:t:0".into() };
    h.run(credit.clone());
    let ev = h.run(reverse.clone());
    assert!(matches!(ev[0], Event::DepositReversed { amount: Amount(COIN), .. }), "{ev:?}");
    assert_eq!(h.bal(a, BTC), (0, 0));
    assert_eq!(h.engine.asset_totals()[0], (0, 0));
    assert_eq!(rejection(&h.run(reverse.clone())), Some(RejectReason::DepositAlreadyReversed));
    let unknown = Command::ReverseDeposit { asset: BTC, reference: "chain:nope:0".into() };
    assert_eq!(rejection(&h.run(unknown)), Some(RejectReason::UnknownDeposit));
    // The transaction comes back (re-mined): credited again, once.
    assert!(matches!(h.run(credit.clone())[0], Event::DepositCredited { .. }));
    assert_eq!(rejection(&h.run(credit)), Some(RejectReason::DuplicateDeposit));
    assert_eq!(h.bal(a, BTC), (COIN, 0));
}

#[test]
fn reversing_a_spent_deposit_freezes_the_account_and_frees_its_orders_first() {
    let mut h = Harness::new();
    let a = h.account(0, 0);
    h.run(Command::CreditDeposit { account: a, asset: BTC, amount: Amount(COIN), reference: "chain:t:0".into() });
    // Half of it rests in an order: cancelling frees it, so the reversal goes through, and the
    // account stays frozen for an operator to look at.
    h.limit(a, Side::Sell, 70_000, COIN / 2);
    let ev = h.run(Command::ReverseDeposit { asset: BTC, reference: "chain:t:0".into() });
    assert!(ev.iter().any(|e| matches!(e, Event::AccountFrozen { account } if *account == a)), "{ev:?}");
    assert!(ev.iter().any(|e| matches!(e, Event::OrderClosed { reason: CloseReason::Canceled, .. })), "{ev:?}");
    assert!(ev.iter().any(|e| matches!(e, Event::DepositReversed { .. })), "{ev:?}");
    assert_eq!(h.bal(a, BTC), (0, 0));
    assert_eq!(rejection(&h.limit(a, Side::Sell, 70_000, 1)), Some(RejectReason::AccountFrozen));

    // Traded away: the account is frozen and the reversal waits; nothing is invented or lost.
    let b = h.account(0, 0);
    let buyer = h.account(0, 100_000_00);
    h.run(Command::CreditDeposit { account: b, asset: BTC, amount: Amount(COIN), reference: "chain:u:0".into() });
    h.limit(b, Side::Sell, 60_000, COIN);
    h.limit(buyer, Side::Buy, 60_000, COIN);
    let ev = h.run(Command::ReverseDeposit { asset: BTC, reference: "chain:u:0".into() });
    assert!(ev.iter().any(|e| matches!(e, Event::DepositReversalPending { amount: Amount(COIN), .. })), "{ev:?}");
    assert_eq!(h.bal(b, BTC), (0, 0));
    let withdraw = Command::RequestWithdrawal { account: b, asset: USD, amount: Amount(1), destination: "x".into() };
    assert_eq!(rejection(&h.run(withdraw.clone())), Some(RejectReason::AccountFrozen));
    // An operator unfreezes (after settling it with the user); freezing twice is refused.
    assert_eq!(rejection(&h.run(Command::FreezeAccount { account: b })), Some(RejectReason::AlreadyFrozen));
    assert!(matches!(h.run(Command::UnfreezeAccount { account: b })[0], Event::AccountUnfrozen { .. }));
    assert_eq!(rejection(&h.run(Command::UnfreezeAccount { account: b })), Some(RejectReason::NotFrozen));
    assert!(matches!(h.run(withdraw)[0], Event::WithdrawalRequested { .. }));
    // Frozen state survives a snapshot.
    h.run(Command::FreezeAccount { account: b });
    let restored = Engine::from_snapshot_bytes(&h.engine.snapshot_bytes()).unwrap();
    assert_eq!(restored.state_hash(), h.engine.state_hash());
}

#[test]
fn withdrawals_lock_then_complete_or_refund() {
    let mut h = Harness::new();
    let a = h.account(COIN, 0);
    let ev = h.run(Command::RequestWithdrawal { account: a, asset: BTC, amount: Amount(COIN / 4), destination: "bcrt1q...".into() });
    let Event::WithdrawalRequested { withdrawal: w1, .. } = ev[0] else { panic!() };
    assert_eq!(h.bal(a, BTC), (COIN * 3 / 4, COIN / 4));
    let ev = h.run(Command::RequestWithdrawal { account: a, asset: BTC, amount: Amount(COIN), destination: "x".into() });
    assert_eq!(rejection(&ev), Some(RejectReason::InsufficientBalance));
    let ev = h.run(Command::RequestWithdrawal { account: a, asset: BTC, amount: Amount(COIN / 4), destination: "x".into() });
    let Event::WithdrawalRequested { withdrawal: w2, .. } = ev[0] else { panic!() };
    h.run(Command::CompleteWithdrawal { withdrawal: w1 });
    h.run(Command::FailWithdrawal { withdrawal: w2 });
    assert_eq!(h.bal(a, BTC), (COIN * 3 / 4, 0));
    assert_eq!(h.engine.asset_totals()[0], (COIN as u128, COIN as u128 / 4));
    assert_eq!(rejection(&h.run(Command::CompleteWithdrawal { withdrawal: w2 })), Some(RejectReason::UnknownWithdrawal));
}

#[test]
fn client_order_ids_never_make_a_second_order() {
    let mut h = Harness::new();
    let a = h.account(COIN, 0);
    let cid = ClientOrderId::new("retry-1").unwrap();
    let place = || {
        Command::PlaceOrder(NewOrder {
            account: a,
            market: MKT,
            side: Side::Sell,
            kind: OrderKind::Limit { price: Price(100_00), time_in_force: TimeInForce::Gtc, post_only: false },
            quantity: Quantity(10_000),
            client_order_id: Some(cid),
            self_trade: Default::default(),
        })
    };
    let id = order_id(&h.run(place()));
    assert_eq!(rejection(&h.run(place())), Some(RejectReason::DuplicateClientOrderId(id)));
    h.run(Command::CancelOrder { account: a, order: OrderRef::Client(cid) });
    // Still taken after the order closed.
    assert_eq!(rejection(&h.run(place())), Some(RejectReason::DuplicateClientOrderId(id)));
}

#[test]
fn client_withdrawal_ids_never_pay_twice() {
    let mut h = Harness::new();
    let (a, b) = (h.account(COIN, 0), h.account(COIN, 0));
    let cid = ClientWithdrawalId::new("payout-1").unwrap();
    let withdraw = |account, amount| Command::RequestClientWithdrawal {
        account,
        asset: BTC,
        amount: Amount(amount),
        destination: "bcrt1q...".into(),
        client_withdrawal_id: cid,
    };
    // Refused requests do not take the id.
    assert_eq!(rejection(&h.run(withdraw(a, 2 * COIN))), Some(RejectReason::InsufficientBalance));
    let ev = h.run(withdraw(a, COIN / 4));
    let Event::WithdrawalRequested { withdrawal, client_withdrawal_id, .. } = &ev[0] else { panic!("{ev:?}") };
    assert_eq!(*client_withdrawal_id, Some(cid));
    let first = *withdrawal;
    assert_eq!(h.engine.withdrawal_by_client_id(a, cid), Some(first));
    // A retry is refused with the withdrawal already made, even after it completed or the
    // account froze; the balance moved once.
    assert_eq!(rejection(&h.run(withdraw(a, COIN / 4))), Some(RejectReason::DuplicateClientWithdrawalId(first)));
    h.run(Command::CompleteWithdrawal { withdrawal: first });
    h.run(Command::FreezeAccount { account: a });
    assert_eq!(rejection(&h.run(withdraw(a, COIN / 4))), Some(RejectReason::DuplicateClientWithdrawalId(first)));
    assert_eq!(h.bal(a, BTC), (COIN * 3 / 4, 0));
    // Ids are per account, and survive a snapshot.
    assert!(matches!(h.run(withdraw(b, COIN / 2))[0], Event::WithdrawalRequested { .. }));
    let mut restored = Engine::from_snapshot_bytes(&h.engine.snapshot_bytes()).unwrap();
    assert_eq!(restored.state_hash(), h.engine.state_hash());
    let again = restored.apply(&Envelope { seq: Seq(1_000), timestamp: Timestamp(1), command: withdraw(b, COIN / 2) });
    assert!(matches!(rejection(&again), Some(RejectReason::DuplicateClientWithdrawalId(_))));
}

#[test]
fn only_the_current_settlement_leader_moves_chain_money() {
    let mut h = Harness::new();
    let a = h.account(0, 0);
    let deposit = |n: u32| Command::CreditChainDeposit {
        account: a,
        holder: a,
        asset: BTC,
        amount: Amount(1_000),
        reference: format!("{n:064x}:0"),
    };
    let fenced = |epoch, command| Command::AsSettlementLeader { epoch, command: Box::new(command) };
    // Before any claim the node's own services act directly (the embedded journal).
    h.run(deposit(1));
    assert_eq!(h.bal(a, BTC), (1_000, 0));

    assert!(matches!(h.run(Command::ClaimSettlementLeadership { epoch: 1 })[..], [Event::SettlementLeadershipClaimed { epoch: 1 }]));
    assert_eq!(rejection(&h.run(deposit(2))), Some(RejectReason::NotSettlementLeader));
    h.run(fenced(1, deposit(2)));
    assert_eq!(h.bal(a, BTC), (2_000, 0));

    // A new leader: the old one's commands are refused, whatever they are.
    h.run(Command::ClaimSettlementLeadership { epoch: 3 });
    assert_eq!(rejection(&h.run(fenced(1, deposit(3)))), Some(RejectReason::StaleLeaderEpoch));
    assert_eq!(rejection(&h.run(fenced(1, Command::FailWithdrawal { withdrawal: WithdrawalId(1) }))), Some(RejectReason::StaleLeaderEpoch));
    assert_eq!(rejection(&h.run(Command::ClaimSettlementLeadership { epoch: 2 })), Some(RejectReason::StaleLeaderEpoch));
    assert_eq!(rejection(&h.run(fenced(3, Command::ClaimSettlementLeadership { epoch: 4 }))), Some(RejectReason::NotSettlementLeader));
    assert_eq!(h.bal(a, BTC), (2_000, 0));
    let events = h.run(fenced(3, deposit(3)));
    assert!(events.iter().any(|e| matches!(e, Event::DepositCredited { .. })), "{events:?}");
    // Commands that are no chain's stay open to everyone, e.g. an operator's reversal.
    h.run(Command::ReverseDeposit { asset: BTC, reference: format!("{:064x}:0", 3) });
    assert_eq!(h.bal(a, BTC), (2_000, 0));
    // The epoch is state: a restored engine fences alike.
    let mut restored = Engine::from_snapshot_bytes(&h.engine.snapshot_bytes()).unwrap();
    assert_eq!(restored.settlement_epoch(), 3);
    let stale = restored.apply(&Envelope { seq: Seq(1_000), timestamp: Timestamp(1), command: fenced(1, deposit(4)) });
    assert_eq!(rejection(&stale), Some(RejectReason::StaleLeaderEpoch));
}

#[test]
fn a_snapshot_of_another_version_is_refused_as_such() {
    let h = Harness::new();
    let mut bytes = h.engine.snapshot_bytes();
    assert_eq!(bytes[0] as u32, crate::snapshot::SNAPSHOT_VERSION, "the version is the first byte");
    bytes[0] = 3;
    assert!(matches!(Engine::from_snapshot_bytes(&bytes), Err(crate::SnapshotError::Version(3))));
}

#[test]
fn book_seq_counts_the_commands_that_touch_a_book_and_survives_a_snapshot() {
    let mut h = Harness::new();
    let a = h.account(COIN, 0);
    assert_eq!(h.engine.book_seq(MKT), Some(0));
    let id = order_id(&h.limit(a, Side::Sell, 100, 10_000));
    assert_eq!(h.engine.book_seq(MKT), Some(1), "a resting order");
    h.run(Command::CancelOrder { account: a, order: OrderRef::Id(OrderId(999)) });
    assert_eq!(h.engine.book_seq(MKT), Some(1), "a rejected command touches nothing");
    h.run(Command::CancelOrder { account: a, order: OrderRef::Id(id) });
    assert_eq!(h.engine.book_seq(MKT), Some(2));
    let restored = Engine::from_snapshot_bytes(&h.engine.snapshot_bytes()).unwrap();
    assert_eq!(restored.book_seq(MKT), Some(2), "kept in snapshots");
    assert_eq!(h.engine.book_seq(MarketId(99)), None);
}

#[test]
fn halt_blocks_trading_but_not_cancels() {
    let mut h = Harness::new();
    let a = h.account(COIN, 0);
    let id = order_id(&h.limit(a, Side::Sell, 100, 10_000));
    h.run(Command::HaltMarket { market: MKT });
    assert_eq!(rejection(&h.limit(a, Side::Sell, 100, 10_000)), Some(RejectReason::MarketHalted));
    assert_eq!(rejection(&h.run(Command::HaltMarket { market: MKT })), Some(RejectReason::AlreadyHalted));
    let ev = h.run(Command::CancelAll { account: Some(a), market: None });
    assert_eq!(closed(&ev), vec![(id, CloseReason::Canceled)]);
    h.run(Command::ResumeMarket { market: MKT });
    assert!(rejection(&h.limit(a, Side::Sell, 100, 10_000)).is_none());
}

#[test]
fn bad_input_is_rejected_with_a_reason() {
    let mut h = Harness::new();
    let a = h.account(COIN, 0);
    assert_eq!(rejection(&h.order(a, Side::Sell, 100_00, 10_001, TimeInForce::Gtc, false, Default::default())), Some(RejectReason::QuantityOffLot));
    assert_eq!(rejection(&h.order(a, Side::Sell, 0, 10_000, TimeInForce::Gtc, false, Default::default())), Some(RejectReason::PriceOffTick));
    assert_eq!(rejection(&h.order(a, Side::Sell, u64::MAX, 10_000, TimeInForce::Gtc, false, Default::default())), Some(RejectReason::OutOfRange));
    assert_eq!(rejection(&h.order(a, Side::Buy, 100_00, 10_000, TimeInForce::Gtc, false, Default::default())), Some(RejectReason::InsufficientBalance));
    assert_eq!(rejection(&h.order(AccountId(99), Side::Buy, 100_00, 10_000, TimeInForce::Gtc, false, Default::default())), Some(RejectReason::UnknownAccount));
    assert_eq!(rejection(&h.order(FEE_ACCOUNT, Side::Buy, 100_00, 10_000, TimeInForce::Gtc, false, Default::default())), Some(RejectReason::AccountCannotTrade));
    assert_eq!(rejection(&h.run(Command::OpenAccount { kind: AccountKind::Fee })), Some(RejectReason::ReservedAccountKind));
}

#[test]
fn state_hash_is_the_hash_of_the_snapshot_bytes() {
    let mut h = Harness::new();
    let a = h.account(COIN, 0);
    h.limit(a, Side::Sell, 100, 10_000);
    assert_eq!(h.engine.state_hash().0, *blake3::hash(&h.engine.snapshot_bytes()).as_bytes());
}

#[test]
fn snapshot_restores_the_same_state() {
    let mut h = Harness::new();
    let a = h.account(COIN, 1_000_000_00);
    let b = h.account(COIN, 1_000_000_00);
    for i in 0..20u64 {
        h.limit(a, Side::Sell, 100 + i, 10_000);
        h.limit(b, Side::Buy, 90 + i, 10_000);
    }
    let restored = Engine::from_snapshot_bytes(&h.engine.snapshot_bytes()).unwrap();
    assert_eq!(restored.state_hash(), h.engine.state_hash());
    let mut h2 = Harness { engine: restored, seq: h.seq };
    let e1 = h.limit(b, Side::Buy, 130, 100_000);
    let e2 = h2.limit(b, Side::Buy, 130, 100_000);
    assert_eq!(e1, e2);
    assert_eq!(h.engine.state_hash(), h2.engine.state_hash());
}
