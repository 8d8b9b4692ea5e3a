//! Engine throughput and per-command latency on an exchange-core-shaped command stream
//! (one market, ~1,000 resting orders, mostly amends and cancels, some crossing orders),
//! compared with the `lobster` order-book crate on the same stream.
//!
//! Run: `cargo bench -p tandem-matching --bench engine`

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use hdrhistogram::Histogram;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::HashMap;
use std::time::Instant;
use tandem_matching::*;

const ACCOUNTS: u64 = 2_000;
const RESTING: usize = 1_000;
const COMMANDS: usize = 1_000_000;
const MID: u64 = 6_000_000; // 60,000.00 USD in cents
const LOT: u64 = 1_000;

struct Stream {
    /// Engine state after setup (accounts funded, book filled), as snapshot bytes.
    start: Vec<u8>,
    commands: Vec<Command>,
    /// The same stream for a plain order book: (cancel id, new limit) pairs and market orders.
    lobster: Vec<lobster::OrderType>,
}

fn limit(account: u64, side: Side, price: u64, lots: u64, tif: TimeInForce) -> Command {
    Command::PlaceOrder(NewOrder {
        account: AccountId(account),
        market: MarketId(0),
        side,
        kind: OrderKind::Limit { price: Price(price), time_in_force: tif, post_only: false },
        quantity: Quantity(lots * LOT),
        client_order_id: None,
        self_trade: SelfTradePrevention::CancelResting,
    })
}

fn lob_side(side: Side) -> lobster::Side {
    match side {
        Side::Buy => lobster::Side::Bid,
        Side::Sell => lobster::Side::Ask,
    }
}

/// Generates the stream by running it on an engine, so every cancel and amend names a live order.
fn generate() -> Stream {
    let mut rng = StdRng::seed_from_u64(42);
    let mut config = ExchangeConfig::default().to_engine().unwrap();
    config.markets[0].min_notional = Amount(1);
    let mut engine = Engine::genesis(config, Seq(1)).unwrap();
    let mut seq = 1u64;
    let mut out = Vec::new();
    let mut apply = |engine: &mut Engine, c: &Command, out: &mut Vec<Event>| {
        seq += 1;
        out.clear();
        engine.apply_into(Seq(seq), Timestamp(seq), c, out);
    };
    for a in 0..ACCOUNTS {
        let account = a + 3;
        apply(&mut engine, &Command::OpenAccount { kind: AccountKind::User }, &mut out);
        for (asset, amount) in [(0u16, 1_000_000 * 100_000_000u64), (1, 100_000_000_000_000u64)] {
            let c = Command::CreditDeposit { account: AccountId(account), asset: AssetId(asset), amount: Amount(amount), reference: format!("{account}-{asset}") };
            apply(&mut engine, &c, &mut out);
        }
    }
    // open order id -> (account, side, price, remaining lots)
    let mut open: HashMap<u64, (u64, Side, u64, u64)> = HashMap::new();
    let mut ids: Vec<u64> = Vec::new();
    let track = |out: &[Event], open: &mut HashMap<u64, (u64, Side, u64, u64)>, ids: &mut Vec<u64>, placed: Option<(u64, Side, u64, u64)>| {
        for e in out {
            match e {
                Event::OrderAccepted(a) => {
                    if let Some(p) = placed {
                        open.insert(a.order.0, p);
                        ids.push(a.order.0);
                    }
                }
                Event::Trade(t) => {
                    if let Some(o) = open.get_mut(&t.maker_order.0) {
                        o.3 -= t.quantity.0 / LOT;
                    }
                    if let Some(o) = open.get_mut(&t.taker_order.0) {
                        o.3 -= t.quantity.0 / LOT;
                    }
                }
                Event::OrderClosed { order, .. } => {
                    open.remove(&order.0);
                }
                Event::OrderAmended { order, price, remaining, .. } => {
                    if let Some(o) = open.get_mut(&order.0) {
                        o.2 = price.0;
                        o.3 = remaining.0 / LOT;
                    }
                }
                _ => {}
            }
        }
        ids.retain(|i| open.contains_key(i));
    };
    let passive_price = |rng: &mut StdRng, side: Side| match side {
        Side::Buy => MID - rng.gen_range(1..=500),
        Side::Sell => MID + rng.gen_range(0..500),
    };
    for i in 0..RESTING {
        let side = if i % 2 == 0 { Side::Buy } else { Side::Sell };
        let (account, price, lots) = (rng.gen_range(3..3 + ACCOUNTS), passive_price(&mut rng, side), rng.gen_range(1..=20));
        let c = limit(account, side, price, lots, TimeInForce::Gtc);
        apply(&mut engine, &c, &mut out);
        track(&out, &mut open, &mut ids, Some((account, side, price, lots)));
    }
    let start = engine.snapshot_bytes();

    let mut commands = Vec::with_capacity(COMMANDS);
    let mut lob = Vec::with_capacity(COMMANDS * 2);
    while commands.len() < COMMANDS {
        let roll = rng.gen_range(0..100);
        let (command, placed) = if roll < 50 && !ids.is_empty() {
            // Amend: move the price within its own side (loses priority), or shrink (keeps it).
            let id = ids[rng.gen_range(0..ids.len())];
            let (account, side, price, lots) = open[&id];
            if rng.gen_bool(0.8) {
                let new_price = passive_price(&mut rng, side);
                if new_price == price {
                    continue;
                }
                lob.push(lobster::OrderType::Cancel { id: id as u128 });
                lob.push(lobster::OrderType::Limit { id: id as u128, side: lob_side(side), qty: lots, price: new_price });
                (Command::AmendOrder { account: AccountId(account), order: OrderRef::Id(OrderId(id)), price: Some(Price(new_price)), quantity: None }, None)
            } else {
                if lots < 2 {
                    continue;
                }
                let o = engine.order(OrderId(id)).unwrap();
                let new_total = o.quantity.0 - LOT;
                lob.push(lobster::OrderType::Cancel { id: id as u128 });
                lob.push(lobster::OrderType::Limit { id: id as u128, side: lob_side(side), qty: lots - 1, price });
                (Command::AmendOrder { account: AccountId(account), order: OrderRef::Id(OrderId(id)), price: None, quantity: Some(Quantity(new_total)) }, None)
            }
        } else if roll < 80 && ids.len() > RESTING - 20 {
            let id = ids[rng.gen_range(0..ids.len())];
            let account = open[&id].0;
            lob.push(lobster::OrderType::Cancel { id: id as u128 });
            (Command::CancelOrder { account: AccountId(account), order: OrderRef::Id(OrderId(id)) }, None)
        } else if roll < 92 || ids.len() <= RESTING - 20 {
            let side = if rng.gen_bool(0.5) { Side::Buy } else { Side::Sell };
            let (account, price, lots) = (rng.gen_range(3..3 + ACCOUNTS), passive_price(&mut rng, side), rng.gen_range(1..=20));
            let next_id = engine.snapshot_next_order();
            lob.push(lobster::OrderType::Limit { id: next_id as u128, side: lob_side(side), qty: lots, price });
            (limit(account, side, price, lots, TimeInForce::Gtc), Some((account, side, price, lots)))
        } else {
            // Crossing IOC: takes one to a few levels.
            let side = if rng.gen_bool(0.5) { Side::Buy } else { Side::Sell };
            let price = match side {
                Side::Buy => MID + 20,
                Side::Sell => MID - 20,
            };
            let lots = rng.gen_range(1..=30);
            let next_id = engine.snapshot_next_order();
            lob.push(lobster::OrderType::Market { id: next_id as u128, side: lob_side(side), qty: lots });
            (limit(rng.gen_range(3..3 + ACCOUNTS), side, price, lots, TimeInForce::Ioc), None)
        };
        apply(&mut engine, &command, &mut out);
        track(&out, &mut open, &mut ids, placed);
        commands.push(command);
    }
    Stream { start, commands, lobster: lob }
}

trait NextOrder {
    fn snapshot_next_order(&self) -> u64;
}

impl NextOrder for Engine {
    fn snapshot_next_order(&self) -> u64 {
        self.next_order_id().0
    }
}

fn lobster_start(stream: &Stream) -> lobster::OrderBook {
    // Rebuild the same resting book in lobster from the engine's start state.
    let engine = Engine::from_snapshot_bytes(&stream.start).unwrap();
    let mut book = lobster::OrderBook::default();
    for o in engine.open_orders(None, None) {
        book.execute(lobster::OrderType::Limit {
            id: o.order.0 as u128,
            side: lob_side(o.side),
            qty: (o.quantity.0 - o.filled.0) / LOT,
            price: o.price.0,
        });
    }
    book
}

fn report_latency(stream: &Stream) {
    let mut engine = Engine::from_snapshot_bytes(&stream.start).unwrap();
    let mut hist = Histogram::<u64>::new_with_bounds(1, 10_000_000, 3).unwrap();
    let mut out = Vec::with_capacity(64);
    let mut seq = engine.last_seq().0;
    let started = Instant::now();
    for c in &stream.commands {
        seq += 1;
        out.clear();
        let t = Instant::now();
        engine.apply_into(Seq(seq), Timestamp(seq), c, &mut out);
        hist.record(t.elapsed().as_nanos().max(1) as u64).unwrap();
    }
    let total = started.elapsed();
    engine.check_invariants().expect("invariants after the stream");
    println!(
        "tandem engine: {} commands, {:.2} M commands/s (timed individually), apply latency p50 {} ns, p99 {} ns, p99.9 {} ns, max {} ns; {} open orders at end",
        stream.commands.len(),
        stream.commands.len() as f64 / total.as_secs_f64() / 1e6,
        hist.value_at_quantile(0.50),
        hist.value_at_quantile(0.99),
        hist.value_at_quantile(0.999),
        hist.max(),
        engine.open_order_count(),
    );
}

fn bench(c: &mut Criterion) {
    let stream = generate();
    report_latency(&stream);
    let mut group = c.benchmark_group("exchange_core_mix");
    group.sample_size(10);
    group.throughput(Throughput::Elements(stream.commands.len() as u64));
    group.bench_function("tandem_engine", |b| {
        b.iter_batched(
            || Engine::from_snapshot_bytes(&stream.start).unwrap(),
            |mut engine| {
                let mut out = Vec::with_capacity(64);
                let mut seq = engine.last_seq().0;
                for c in &stream.commands {
                    seq += 1;
                    out.clear();
                    engine.apply_into(Seq(seq), Timestamp(seq), c, &mut out);
                }
                engine
            },
            BatchSize::LargeInput,
        )
    });
    group.bench_function("lobster_orderbook", |b| {
        b.iter_batched(
            || lobster_start(&stream),
            |mut book| {
                for o in &stream.lobster {
                    std::hint::black_box(book.execute(*o));
                }
                book
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
