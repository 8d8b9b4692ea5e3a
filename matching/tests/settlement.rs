//! Property tests of settlement in the ledger: BTC enters only from the chain and leaves only
//! through confirmed batches, with trades, withdrawals, fee bumps, cancellations and reorgs in
//! between. After every command:
//! - every engine invariant holds (conservation, locks match orders + withdrawals + fees);
//! - what the ledger owes in BTC equals what it knows the vaults hold: `Σ balances == Σ settled`;
//! - a rejected command changes nothing (the state hash is unchanged).
//!
//! And once every batch in flight is confirmed and a final batch settles every holder's
//! target, every holder's exposure is zero.

use proptest::prelude::*;
use tandem_matching::*;

const BTC: AssetId = AssetId(0);
const USD: AssetId = AssetId(1);
/// Accounts 3..=6 hold their own vaults; 7 is custodial (the pool holds its coins).
const VAULT_HOLDERS: [u64; 4] = [3, 4, 5, 6];
const CUSTODIAL: AccountId = AccountId(7);

fn config() -> EngineConfig {
    let mut c = ExchangeConfig::default().to_engine().unwrap();
    c.markets[0].min_notional = Amount(1);
    c
}

fn holder_of(account: AccountId) -> AccountId {
    if account == CUSTODIAL || account == FEE_ACCOUNT {
        SETTLEMENT_POOL
    } else {
        account
    }
}

#[derive(Clone, Debug)]
enum Op {
    ChainDeposit { account: u64, amount: u64, r: u16 },
    Reverse { r: u16 },
    Order { account: u64, side: Side, price: u64, lots: u64 },
    Withdraw { account: u64, amount: u64 },
    /// Book a batch for this subset of vault holders (a bit mask), each paying `fee`.
    Book { mask: u8, fee: u64, with_withdrawals: bool },
    Bump { extra: u64 },
    Confirm { bumps: u32 },
    Cancel,
}

fn op() -> impl Strategy<Value = Op> {
    let account = prop_oneof![4 => 3u64..=6, 1 => Just(7u64)];
    prop_oneof![
        4 => (account.clone(), 1u64..5_000_000, 0u16..40).prop_map(|(account, amount, r)| Op::ChainDeposit { account, amount, r }),
        1 => (0u16..40).prop_map(|r| Op::Reverse { r }),
        12 => (account.clone(), prop_oneof![Just(Side::Buy), Just(Side::Sell)], 59_990u64..60_010, 1u64..100)
            .prop_map(|(account, side, price, lots)| Op::Order { account, side, price, lots }),
        2 => (account, 1u64..1_000_000).prop_map(|(account, amount)| Op::Withdraw { account, amount }),
        4 => (any::<u8>(), 0u64..2_000, any::<bool>()).prop_map(|(mask, fee, with_withdrawals)| Op::Book { mask, fee, with_withdrawals }),
        1 => (1u64..3_000).prop_map(|extra| Op::Bump { extra }),
        3 => (0u32..3).prop_map(|bumps| Op::Confirm { bumps }),
        1 => Just(Op::Cancel),
    ]
}

struct World {
    engine: Engine,
    seq: u64,
    next_batch: u64,
}

impl World {
    fn new() -> World {
        let engine = Engine::genesis(config(), Seq(1)).unwrap();
        let mut w = World { engine, seq: 1, next_batch: 1 };
        for _ in 3..=7 {
            w.run(Command::OpenAccount { kind: AccountKind::User });
        }
        for a in 3..=7 {
            w.run(Command::CreditDeposit { account: AccountId(a), asset: USD, amount: Amount(100_000_000), reference: format!("usd-{a}") });
        }
        // The pool pays its own fee shares and bumps from its own coins.
        w.run(Command::CreditChainDeposit { account: SETTLEMENT_POOL, holder: SETTLEMENT_POOL, asset: BTC, amount: Amount(1_000_000), reference: "pool-seed".into() });
        w
    }

    fn run(&mut self, command: Command) -> Vec<Event> {
        self.seq += 1;
        self.engine.apply(&Envelope { seq: Seq(self.seq), timestamp: Timestamp(self.seq), command })
    }

    /// The whole state but the sequence number (which every command advances).
    fn state(&self) -> EngineSnapshot {
        let mut s = self.engine.snapshot();
        s.last_seq = Seq(0);
        s
    }

    fn open_batch(&self) -> Option<(BatchId, OpenBatch)> {
        self.engine.open_batches().into_iter().next()
    }

    /// A batch for the holders in `mask` (and the pool, which balances it): each pays `fee`
    /// out of its available BTC, moves by its target minus its fee; the withdrawals of the
    /// chosen holders (and of the custodial account, which the pool pays) are paid.
    fn book(&mut self, mask: u8, fee: u64, with_withdrawals: bool) -> Command {
        let mut legs = Vec::new();
        let mut chosen = Vec::new();
        for (i, h) in VAULT_HOLDERS.iter().enumerate() {
            if mask & (1 << i) == 0 {
                continue;
            }
            let holder = AccountId(*h);
            let target = self.engine.settlement_target(holder, BTC).unwrap();
            let fee = fee.min(self.engine.balance(holder, BTC).unwrap().available.0);
            legs.push(SettlementLeg { holder, delta: (target - fee as i128) as i64, fee: Amount(fee) });
            chosen.push(holder);
        }
        let withdrawals: Vec<WithdrawalId> = if with_withdrawals {
            self.engine
                .pending_withdrawals()
                .into_iter()
                .filter(|(_, w)| w.asset == BTC && w.batch.is_none())
                .filter(|(_, w)| chosen.contains(&w.account) || holder_of(w.account) == SETTLEMENT_POOL)
                .map(|(id, _)| id)
                .collect()
        } else {
            Vec::new()
        };
        let paid: i128 = withdrawals
            .iter()
            .map(|id| self.engine.pending_withdrawals().into_iter().find(|(w, _)| w == id).unwrap().1.amount.0 as i128)
            .sum();
        let pool_fee = fee.min(self.engine.balance(SETTLEMENT_POOL, BTC).unwrap().available.0);
        let others: i128 = legs.iter().map(|l| l.delta as i128 + l.fee.0 as i128).sum();
        legs.push(SettlementLeg { holder: SETTLEMENT_POOL, delta: (-(others + paid + pool_fee as i128)) as i64, fee: Amount(pool_fee) });
        let batch = BatchId(self.next_batch);
        self.next_batch += 1;
        Command::BookSettlement { batch, asset: BTC, legs, withdrawals }
    }

    fn command_for(&mut self, op: &Op) -> Option<Command> {
        Some(match *op {
            Op::ChainDeposit { account, amount, r } => Command::CreditChainDeposit {
                account: AccountId(account),
                holder: holder_of(AccountId(account)),
                asset: BTC,
                amount: Amount(amount),
                reference: format!("chain:{r}"),
            },
            Op::Reverse { r } => Command::ReverseDeposit { asset: BTC, reference: format!("chain:{r}") },
            Op::Order { account, side, price, lots } => Command::PlaceOrder(NewOrder {
                account: AccountId(account),
                market: MarketId(0),
                side,
                kind: OrderKind::Limit { price: Price(price * 100), time_in_force: TimeInForce::Gtc, post_only: false },
                quantity: Quantity(lots * 10_000),
                client_order_id: None,
                self_trade: SelfTradePrevention::default(),
            }),
            Op::Withdraw { account, amount } => Command::RequestWithdrawal {
                account: AccountId(account),
                asset: BTC,
                amount: Amount(amount),
                destination: "bcrt1qexternal".into(),
            },
            Op::Book { mask, fee, with_withdrawals } => self.book(mask, fee, with_withdrawals),
            Op::Bump { extra } => Command::BumpSettlement { batch: self.open_batch()?.0, payer: SETTLEMENT_POOL, extra: Amount(extra) },
            Op::Confirm { bumps } => Command::ConfirmSettlement { batch: self.open_batch()?.0, bumps },
            Op::Cancel => Command::CancelSettlement { batch: self.open_batch()?.0 },
        })
    }

    fn check(&self, after: &Command, events: &[Event]) -> Result<(), TestCaseError> {
        if let Err(v) = self.engine.check_invariants() {
            return Err(TestCaseError::fail(format!("after {after:?} -> {events:?}: {v}")));
        }
        let owed: i128 = (1..=7).map(|a| self.engine.balance(AccountId(a), BTC).unwrap().total() as i128).sum();
        let held: i128 = self.engine.settled_all(BTC).iter().map(|(_, v)| *v).sum();
        prop_assert_eq!(owed, held, "ledger owes {} but vaults hold {} after {:?} -> {:?}", owed, held, after, events);
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn the_ledger_always_owes_what_the_vaults_hold(ops in proptest::collection::vec(op(), 1..300)) {
        let mut w = World::new();
        for op in &ops {
            let Some(command) = w.command_for(op) else { continue };
            let before = w.state();
            let events = w.run(command.clone());
            if matches!(events.as_slice(), [Event::Rejected { .. }]) {
                prop_assert!(before == w.state(), "a rejected {:?} changed the state", command);
            }
            w.check(&command, &events)?;
        }
        // Confirm what is in flight, then settle everyone: no exposure is left.
        while let Some((batch, open)) = w.open_batch() {
            let events = w.run(Command::ConfirmSettlement { batch, bumps: open.bumps.len() as u32 });
            prop_assert!(events.iter().any(|e| matches!(e, Event::SettlementConfirmed { .. })), "{:?}", events);
        }
        let command = w.book(0b1111, 0, true);
        let events = w.run(command.clone());
        if !matches!(events.as_slice(), [Event::Rejected { reason: RejectReason::VaultOverdrawn }]) {
            prop_assert!(events.iter().any(|e| matches!(e, Event::SettlementBooked { .. })), "{:?} -> {:?}", command, events);
            let batch = w.open_batch().unwrap().0;
            w.run(Command::ConfirmSettlement { batch, bumps: 0 });
            for h in VAULT_HOLDERS {
                prop_assert_eq!(w.engine.settlement_target(AccountId(h), BTC), Some(0));
            }
        }
        w.check(&command, &events)?;
    }
}

#[test]
fn a_batch_moves_fees_and_withdrawals_out_and_deltas_into_settled() {
    let mut w = World::new();
    w.run(Command::CreditChainDeposit { account: AccountId(3), holder: AccountId(3), asset: BTC, amount: Amount(1_000_000), reference: "d3".into() });
    w.run(Command::RequestWithdrawal { account: AccountId(3), asset: BTC, amount: Amount(400_000), destination: "x".into() });
    assert_eq!(w.engine.settlement_target(AccountId(3), BTC), Some(-400_000));
    let legs = vec![
        SettlementLeg { holder: AccountId(3), delta: -400_300, fee: Amount(300) },
        SettlementLeg { holder: SETTLEMENT_POOL, delta: -200, fee: Amount(200) },
    ];
    // Unbalanced by one satoshi: refused, nothing moves.
    let mut bad = legs.clone();
    bad[1].delta = -199;
    let events = w.run(Command::BookSettlement { batch: BatchId(1), asset: BTC, legs: bad, withdrawals: vec![WithdrawalId(1)] });
    assert_eq!(events, vec![Event::Rejected { reason: RejectReason::UnbalancedBatch }]);
    let events = w.run(Command::BookSettlement { batch: BatchId(1), asset: BTC, legs, withdrawals: vec![WithdrawalId(1)] });
    assert!(matches!(events[0], Event::SettlementBooked { .. }), "{events:?}");
    assert_eq!(w.engine.settlement_target(AccountId(3), BTC), Some(0));
    // A booked withdrawal is the batch's: neither failed by hand nor booked twice; ids go up.
    assert_eq!(w.run(Command::FailWithdrawal { withdrawal: WithdrawalId(1) }), vec![Event::Rejected { reason: RejectReason::WithdrawalInBatch }]);
    let again = Command::BookSettlement { batch: BatchId(1), asset: BTC, legs: vec![], withdrawals: vec![] };
    assert_eq!(w.run(again), vec![Event::Rejected { reason: RejectReason::BatchIdReused }]);
    // A bump the chain never confirmed is refunded.
    w.run(Command::BumpSettlement { batch: BatchId(1), payer: SETTLEMENT_POOL, extra: Amount(500) });
    assert_eq!(w.run(Command::ConfirmSettlement { batch: BatchId(1), bumps: 2 }), vec![Event::Rejected { reason: RejectReason::UnknownBump }]);
    let events = w.run(Command::ConfirmSettlement { batch: BatchId(1), bumps: 0 });
    assert!(events.contains(&Event::SettlementConfirmed { batch: BatchId(1), asset: BTC, bumps: 0, fee: Amount(500) }), "{events:?}");
    assert_eq!(w.engine.balance(AccountId(3), BTC).unwrap(), Balance { available: Amount(599_700), locked: Amount(0) });
    assert_eq!(w.engine.settled(AccountId(3), BTC), 599_700);
    assert_eq!(w.engine.balance(SETTLEMENT_POOL, BTC).unwrap(), Balance { available: Amount(999_800), locked: Amount(0) });
    assert_eq!(w.engine.settled(SETTLEMENT_POOL, BTC), 999_800);
    assert!(w.engine.pending_withdrawals().is_empty());
}
