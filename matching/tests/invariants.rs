//! Property tests over long random command streams: conservation of funds, no negative or
//! mismatched locks, a book that never rests crossed (all via `check_invariants`), and replay
//! determinism (same commands, same events, same state hash, also through a snapshot).

use proptest::prelude::*;
use tandem_matching::*;

const ACCOUNTS: u64 = 5;
const FIRST_USER: u64 = 3; // 1 and 2 are the fee account and the settlement pool

fn config() -> EngineConfig {
    let mut c = ExchangeConfig::default().to_engine().unwrap();
    c.markets[0].min_notional = Amount(1);
    // A second market on the same assets exercises per-market books sharing one ledger.
    let mut second = c.markets[0].clone();
    second.symbol = "BTC-USD2".into();
    second.tick = Price(100);
    second.maker_fee_bps = 0;
    second.taker_fee_bps = 100;
    c.markets.push(second);
    c
}

fn account() -> impl Strategy<Value = AccountId> {
    // Occasionally an unknown or non-trading account, to exercise rejections.
    prop_oneof![9 => (FIRST_USER..FIRST_USER + ACCOUNTS).prop_map(AccountId), 1 => (0u64..FIRST_USER + ACCOUNTS + 2).prop_map(AccountId)]
}

fn market() -> impl Strategy<Value = MarketId> {
    prop_oneof![8 => Just(MarketId(0)), 2 => Just(MarketId(1)), 1 => Just(MarketId(7))]
}

fn side() -> impl Strategy<Value = Side> {
    prop_oneof![Just(Side::Buy), Just(Side::Sell)]
}

/// Prices around 60,000.00 USD in cents, mostly on a 1-dollar grid so orders meet often.
fn price() -> impl Strategy<Value = Price> {
    prop_oneof![
        8 => (59_995u64..=60_005).prop_map(|d| Price(d * 100)),
        1 => (5_999_000u64..6_001_000).prop_map(Price),
        1 => Just(Price(0))
    ]
}

/// Up to 0.002 BTC, mostly whole lots.
fn quantity() -> impl Strategy<Value = Quantity> {
    prop_oneof![8 => (1u64..=200).prop_map(|l| Quantity(l * 1_000)), 1 => (1u64..250_000).prop_map(Quantity)]
}

fn order_ref() -> impl Strategy<Value = OrderRef> {
    prop_oneof![
        4 => (1u64..400).prop_map(|i| OrderRef::Id(OrderId(i))),
        1 => (0u8..20).prop_map(|i| OrderRef::Client(ClientOrderId::new(&format!("c{i}")).unwrap())),
    ]
}

fn stp() -> impl Strategy<Value = SelfTradePrevention> {
    prop_oneof![
        Just(SelfTradePrevention::CancelResting),
        Just(SelfTradePrevention::CancelIncoming),
        Just(SelfTradePrevention::CancelBoth)
    ]
}

fn tif() -> impl Strategy<Value = TimeInForce> {
    prop_oneof![6 => Just(TimeInForce::Gtc), 2 => Just(TimeInForce::Ioc), 2 => Just(TimeInForce::Fok)]
}

fn command() -> impl Strategy<Value = Command> {
    let limit = (account(), market(), side(), price(), quantity(), tif(), any::<bool>(), stp(), proptest::option::weighted(0.2, 0u8..20))
        .prop_map(|(account, market, side, price, quantity, time_in_force, post_only, self_trade, cid)| {
            Command::PlaceOrder(NewOrder {
                account,
                market,
                side,
                kind: OrderKind::Limit { price, time_in_force, post_only: post_only && time_in_force == TimeInForce::Gtc },
                quantity,
                client_order_id: cid.map(|i| ClientOrderId::new(&format!("c{i}")).unwrap()),
                self_trade,
            })
        });
    let market_order = (account(), market(), side(), price(), quantity()).prop_map(|(account, market, side, protection_price, quantity)| {
        Command::PlaceOrder(NewOrder {
            account,
            market,
            side,
            kind: OrderKind::Market { protection_price },
            quantity,
            client_order_id: None,
            self_trade: SelfTradePrevention::default(),
        })
    });
    let deposit = (account(), 0u16..3, 1u64..10_000_000, 0u32..1_000).prop_map(|(account, asset, amount, r)| Command::CreditDeposit {
        account,
        asset: AssetId(asset),
        amount: Amount(amount),
        reference: format!("ref-{r}"),
    });
    prop_oneof![
        30 => limit,
        4 => market_order,
        8 => deposit,
        10 => (account(), order_ref()).prop_map(|(account, order)| Command::CancelOrder { account, order }),
        12 => (account(), order_ref(), proptest::option::of(price()), proptest::option::of(quantity()))
            .prop_map(|(account, order, price, quantity)| Command::AmendOrder { account, order, price, quantity }),
        1 => (proptest::option::of(account()), proptest::option::of(market())).prop_map(|(account, market)| Command::CancelAll { account, market }),
        3 => (account(), 0u16..2, 1u64..2_000_000).prop_map(|(account, asset, amount)| Command::RequestWithdrawal {
            account, asset: AssetId(asset), amount: Amount(amount), destination: "dest".into() }),
        // Few ids, so retries (refused) are common.
        2 => (account(), 0u16..2, 1u64..2_000_000, 0u8..4).prop_map(|(account, asset, amount, id)| Command::RequestClientWithdrawal {
            account, asset: AssetId(asset), amount: Amount(amount), destination: "dest".into(),
            client_withdrawal_id: ClientWithdrawalId::new(&format!("w{id}")).unwrap() }),
        2 => (1u64..40).prop_map(|w| Command::CompleteWithdrawal { withdrawal: WithdrawalId(w) }),
        2 => (1u64..40).prop_map(|w| Command::FailWithdrawal { withdrawal: WithdrawalId(w) }),
        1 => market().prop_map(|market| Command::HaltMarket { market }),
        2 => market().prop_map(|market| Command::ResumeMarket { market }),
        1 => Just(Command::OpenAccount { kind: AccountKind::User }),
        // Reorgs take deposits back (some already spent: freeze, cancel, maybe pending).
        3 => (0u16..3, 0u32..1_000).prop_map(|(asset, r)| Command::ReverseDeposit { asset: AssetId(asset), reference: format!("ref-{r}") }),
        1 => account().prop_map(|account| Command::FreezeAccount { account }),
        2 => account().prop_map(|account| Command::UnfreezeAccount { account }),
    ]
}

fn fresh() -> (Engine, Vec<Command>) {
    let engine = Engine::genesis(config(), Seq(1)).unwrap();
    // Accounts 3..=7 with some money each.
    let mut setup = Vec::new();
    for a in FIRST_USER..FIRST_USER + ACCOUNTS {
        setup.push(Command::OpenAccount { kind: AccountKind::User });
        setup.push(Command::CreditDeposit { account: AccountId(a), asset: AssetId(0), amount: Amount(5_000_000), reference: format!("seed-btc-{a}") });
        setup.push(Command::CreditDeposit { account: AccountId(a), asset: AssetId(1), amount: Amount(2_000_000), reference: format!("seed-usd-{a}") });
    }
    (engine, setup)
}

fn run(engine: &mut Engine, seq: &mut u64, command: &Command) -> Vec<Event> {
    *seq += 1;
    engine.apply(&Envelope { seq: Seq(*seq), timestamp: Timestamp(*seq * 7), command: command.clone() })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn invariants_hold_after_every_command(commands in proptest::collection::vec(command(), 1..600)) {
        let (mut engine, setup) = fresh();
        let mut seq = 1;
        for c in setup.iter().chain(commands.iter()) {
            let events = run(&mut engine, &mut seq, c);
            if let Err(v) = engine.check_invariants() {
                return Err(TestCaseError::fail(format!("after {c:?} -> {events:?}: {v}")));
            }
            // A rejection moves nothing.
            if matches!(events.as_slice(), [Event::Rejected { .. }]) {
                continue;
            }
            prop_assert!(!events.iter().any(|e| matches!(e, Event::Rejected { .. })), "mixed rejection: {events:?}");
        }
        // Every trade is between different accounts, priced on the tick, and fees are within rate.
        let _ = engine.state_hash();
    }

    #[test]
    fn replay_is_deterministic_and_snapshots_resume_exactly(
        commands in proptest::collection::vec(command(), 1..400),
        cut in 0usize..400,
    ) {
        let (mut a, setup) = fresh();
        let all: Vec<Command> = setup.into_iter().chain(commands).collect();
        let cut = cut.min(all.len());
        let (mut seq_a, mut events_a) = (1, Vec::new());
        for c in &all {
            events_a.push(run(&mut a, &mut seq_a, c));
        }
        // B: same commands, but through a snapshot taken at `cut`.
        let (mut b, _) = fresh();
        let mut seq_b = 1;
        let mut events_b = Vec::new();
        for c in &all[..cut] {
            events_b.push(run(&mut b, &mut seq_b, c));
        }
        let mut b = Engine::from_snapshot_bytes(&b.snapshot_bytes()).unwrap();
        for c in &all[cut..] {
            events_b.push(run(&mut b, &mut seq_b, c));
        }
        prop_assert_eq!(events_a, events_b);
        prop_assert_eq!(a.state_hash(), b.state_hash());
    }
}

/// One long stream with a fixed seed: hundreds of thousands of commands, invariants checked
/// every 1,000 and at the end.
#[test]
fn long_stream_keeps_every_invariant() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
    let mut runner = TestRunner::new_with_rng(Config::default(), TestRng::from_seed(RngAlgorithm::ChaCha, &[7; 32]));
    let strategy = command();
    let (mut engine, setup) = fresh();
    let mut seq = 1;
    for c in &setup {
        run(&mut engine, &mut seq, c);
    }
    let (mut trades, mut rejected) = (0u64, 0u64);
    for i in 0..200_000u64 {
        let c = strategy.new_tree(&mut runner).unwrap().current();
        for e in run(&mut engine, &mut seq, &c) {
            match e {
                Event::Trade(t) => {
                    assert_ne!(t.maker_account, t.taker_account);
                    trades += 1;
                }
                Event::Rejected { .. } => rejected += 1,
                _ => {}
            }
        }
        if i % 1_000 == 0 {
            engine.check_invariants().unwrap_or_else(|v| panic!("after command {i}: {v}"));
        }
    }
    engine.check_invariants().unwrap();
    assert!(trades > 1_000, "the stream should trade a lot, got {trades}");
    assert!(rejected > 1_000, "and exercise rejections, got {rejected}");
}
