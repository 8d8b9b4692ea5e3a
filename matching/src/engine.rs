//! The engine: `apply(command) -> events`, pure and deterministic.
//!
//! Every handler validates first and mutates only once nothing can fail, so a rejected command
//! changes nothing. Money moves only through [`Ledger`]; orders only through [`BookSide`].
//!
//! Rounding rule (the only one): a fill's notional is `floor(price * quantity / base_scale)`
//! in quote units, the same integer paid by the buyer and received by the seller, so no dust is
//! created or lost. A buy order locks `ceil(limit * quantity / base_scale)`, which always covers
//! its fills because every fill price is at or below the limit. Fees are
//! `floor(received * bps / 10_000)` of the asset each side receives, so fees never need a lock.

use crate::book::{MarketBook, OrderSlab, RestingOrder, NIL};
use crate::command::*;
use crate::config::{EngineConfig, MAX_UNITS};
use crate::event::*;
use crate::ledger::{Balance, DepositRecord, Ledger, PendingWithdrawal};
use crate::types::*;
use rustc_hash::FxHashMap;
use std::cmp::min;

/// Created at genesis; every fee lands here.
pub const FEE_ACCOUNT: AccountId = AccountId(1);
/// Created at genesis; the provider's settlement pool.
pub const SETTLEMENT_POOL: AccountId = AccountId(2);

/// The integer rules of a market, copied out of the config for the hot path.
#[derive(Clone, Copy, Debug)]
pub(crate) struct MarketRules {
    pub base: AssetId,
    pub quote: AssetId,
    pub base_scale: u64,
    pub tick: u64,
    pub lot: u64,
    pub min_notional: u64,
    pub maker_fee_bps: u64,
    pub taker_fee_bps: u64,
}

impl MarketRules {
    #[inline]
    pub fn notional(&self, price: Price, qty: Quantity) -> u128 {
        price.0 as u128 * qty.0 as u128 / self.base_scale as u128
    }

    /// Quote a buy order must hold for `qty` at `price`.
    #[inline]
    pub fn buy_lock(&self, price: Price, qty: Quantity) -> u128 {
        (price.0 as u128 * qty.0 as u128).div_ceil(self.base_scale as u128)
    }

    /// What an order of `side` locks for `qty` at `price`, or `None` if it cannot fit an amount.
    #[inline]
    pub fn lock_for(&self, side: Side, price: Price, qty: Quantity) -> Option<Amount> {
        match side {
            Side::Buy => u64::try_from(self.buy_lock(price, qty)).ok().map(Amount),
            Side::Sell => Some(Amount(qty.0)),
        }
    }

    #[inline]
    pub fn lock_asset(&self, side: Side) -> AssetId {
        match side {
            Side::Buy => self.quote,
            Side::Sell => self.base,
        }
    }

    fn check_price(&self, price: Price) -> Result<(), RejectReason> {
        if price.0 > MAX_UNITS {
            return Err(RejectReason::OutOfRange);
        }
        if price.0 == 0 || !price.0.is_multiple_of(self.tick) {
            return Err(RejectReason::PriceOffTick);
        }
        Ok(())
    }

    fn check_quantity(&self, qty: Quantity) -> Result<(), RejectReason> {
        if qty.0 > MAX_UNITS {
            return Err(RejectReason::OutOfRange);
        }
        if qty.0 == 0 || !qty.0.is_multiple_of(self.lot) {
            return Err(RejectReason::QuantityOffLot);
        }
        Ok(())
    }

    /// The static terms of an order: size on the lot grid, price on the tick grid, value at
    /// least the minimum notional.
    fn check_terms(&self, price: Price, qty: Quantity) -> Result<(), RejectReason> {
        self.check_quantity(qty)?;
        self.check_price(price)?;
        if self.notional(price, qty) < self.min_notional as u128 {
            return Err(RejectReason::BelowMinNotional);
        }
        Ok(())
    }

    fn of(config: &EngineConfig, m: &crate::config::MarketSpec) -> MarketRules {
        MarketRules {
            base: m.base,
            quote: m.quote,
            base_scale: config.base_scale(m),
            tick: m.tick.0,
            lot: m.lot.0,
            min_notional: m.min_notional.0,
            maker_fee_bps: m.maker_fee_bps as u64,
            taker_fee_bps: m.taker_fee_bps as u64,
        }
    }
}

impl EngineConfig {
    /// The engine's static order checks, for edges that want to refuse a malformed order before
    /// it takes a journal slot. Same checks, same order, same reasons as the engine.
    pub fn check_order_terms(&self, market: MarketId, price: Price, quantity: Quantity) -> Result<(), RejectReason> {
        let spec = self.market(market).ok_or(RejectReason::UnknownMarket)?;
        MarketRules::of(self, spec).check_terms(price, quantity)
    }
}

#[inline]
fn fee(amount: u64, bps: u64) -> u64 {
    // amount < 2^64 and bps <= 10_000: the product fits in u128 and the result is <= amount.
    (amount as u128 * bps as u128 / 10_000) as u64
}

#[inline]
fn crosses(taker_side: Side, limit: Price, resting: Price) -> bool {
    match taker_side {
        Side::Buy => resting <= limit,
        Side::Sell => resting >= limit,
    }
}

/// An order being matched: a new one, or an amended one that lost its place.
#[derive(Clone, Copy, Debug)]
struct Incoming {
    id: OrderId,
    account: AccountId,
    market: MarketId,
    side: Side,
    /// Limit, or a market order's protection price.
    price: Price,
    quantity: Quantity,
    filled: Quantity,
    lock: Amount,
    client_order_id: Option<ClientOrderId>,
    self_trade: SelfTradePrevention,
    post_only: bool,
    rests: bool,
    placed_at: Timestamp,
}

impl Incoming {
    fn remaining(&self) -> Quantity {
        Quantity(self.quantity.0 - self.filled.0)
    }
}

/// A read-only view of an open order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OrderView {
    pub order: OrderId,
    pub account: AccountId,
    pub market: MarketId,
    pub side: Side,
    pub price: Price,
    pub quantity: Quantity,
    pub filled: Quantity,
    pub client_order_id: Option<ClientOrderId>,
    pub post_only: bool,
    pub self_trade: SelfTradePrevention,
    pub placed_at: Timestamp,
}

impl From<&RestingOrder> for OrderView {
    fn from(o: &RestingOrder) -> Self {
        OrderView {
            order: o.id,
            account: o.account,
            market: o.market,
            side: o.side,
            price: o.price,
            quantity: o.quantity,
            filled: o.filled,
            client_order_id: o.client_order_id,
            post_only: o.post_only,
            self_trade: o.self_trade,
            placed_at: o.placed_at,
        }
    }
}

/// Aggregated price levels, best first.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Depth {
    pub bids: Vec<DepthLevel>,
    pub asks: Vec<DepthLevel>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DepthLevel {
    pub price: Price,
    pub quantity: Quantity,
    pub orders: u32,
}

pub struct Engine {
    pub(crate) config: EngineConfig,
    pub(crate) rules: Vec<MarketRules>,
    pub(crate) ledger: Ledger,
    pub(crate) books: Vec<MarketBook>,
    pub(crate) orders: OrderSlab,
    /// Client order ids ever used, per account: a retry never makes a second order.
    pub(crate) client_ids: FxHashMap<(AccountId, ClientOrderId), OrderId>,
    pub(crate) next_order: u64,
    pub(crate) next_trade: u64,
    pub(crate) last_seq: Seq,
    /// The current settlement leader's epoch (0: no leader ever claimed; the embedded node's
    /// own services submit the chain's commands directly).
    pub(crate) settlement_epoch: u64,
    /// Per market, how many commands touched its book: the `book_seq` of market data. State,
    /// not a process's count, so every replica and every restart numbers updates alike.
    pub(crate) book_seqs: Vec<u64>,
}

impl Engine {
    /// A fresh engine, as left by the journal's genesis record (which is `seq`).
    pub fn genesis(config: EngineConfig, seq: Seq) -> Result<Engine, crate::config::ConfigError> {
        config.validate()?;
        let rules = Self::rules_of(&config);
        let mut ledger = Ledger::new(config.assets.len());
        let fee = ledger.open(AccountKind::Fee);
        let pool = ledger.open(AccountKind::SettlementPool);
        debug_assert_eq!((fee, pool), (FEE_ACCOUNT, SETTLEMENT_POOL));
        ledger.touched.clear();
        let n_markets = config.markets.len();
        Ok(Engine {
            books: vec![MarketBook::default(); n_markets],
            config,
            rules,
            ledger,
            orders: OrderSlab::default(),
            client_ids: FxHashMap::default(),
            next_order: 1,
            next_trade: 1,
            last_seq: seq,
            settlement_epoch: 0,
            book_seqs: vec![0; n_markets],
        })
    }

    pub(crate) fn rules_of(config: &EngineConfig) -> Vec<MarketRules> {
        config.markets.iter().map(|m| MarketRules::of(config, m)).collect()
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    pub fn last_seq(&self) -> Seq {
        self.last_seq
    }

    /// Applies one journaled command and returns what it did.
    pub fn apply(&mut self, envelope: &Envelope) -> Vec<Event> {
        let mut out = Vec::with_capacity(8);
        self.apply_into(envelope.seq, envelope.timestamp, &envelope.command, &mut out);
        out
    }

    /// Like [`Engine::apply`], appending to a reused buffer (the hot path).
    pub fn apply_into(&mut self, seq: Seq, ts: Timestamp, command: &Command, out: &mut Vec<Event>) {
        self.last_seq = seq;
        let first_event = out.len();
        let command = match self.unfence(command) {
            Ok(command) => command,
            Err(reason) => {
                out.push(Event::Rejected { reason });
                return;
            }
        };
        let result = match command {
            Command::Genesis(_) => Err(RejectReason::AlreadyConfigured),
            Command::OpenAccount { kind } => self.open_account(*kind, out),
            Command::CreditDeposit { account, asset, amount, reference } => {
                self.credit_deposit(*account, *asset, *amount, reference, out)
            }
            Command::ReverseDeposit { asset, reference } => self.reverse_deposit(*asset, reference, out),
            Command::FreezeAccount { account } => self.freeze(*account, out),
            Command::UnfreezeAccount { account } => self.unfreeze(*account, out),
            Command::RequestWithdrawal { account, asset, amount, destination } => {
                self.request_withdrawal(*account, *asset, *amount, destination, None, out)
            }
            Command::RequestClientWithdrawal { account, asset, amount, destination, client_withdrawal_id } => {
                self.request_withdrawal(*account, *asset, *amount, destination, Some(*client_withdrawal_id), out)
            }
            Command::CompleteWithdrawal { withdrawal } => self.complete_withdrawal(*withdrawal, out),
            Command::FailWithdrawal { withdrawal } => self.fail_withdrawal(*withdrawal, out),
            Command::PlaceOrder(order) => self.place_order(order, ts, out),
            Command::CancelOrder { account, order } => self.cancel_order(*account, *order, out),
            Command::AmendOrder { account, order, price, quantity } => {
                self.amend_order(*account, *order, *price, *quantity, out)
            }
            Command::CancelAll { account, market } => self.cancel_all(*account, *market, out),
            Command::HaltMarket { market } => self.set_halted(*market, true, out),
            Command::ResumeMarket { market } => self.set_halted(*market, false, out),
            Command::CreditChainDeposit { account, holder, asset, amount, reference } => {
                self.credit_chain_deposit(*account, *holder, *asset, *amount, reference, out)
            }
            Command::BookSettlement { batch, asset, legs, withdrawals } => {
                self.book_settlement(*batch, *asset, legs, withdrawals, out)
            }
            Command::BumpSettlement { batch, payer, extra } => self.bump_settlement(*batch, *payer, *extra, out),
            Command::ConfirmSettlement { batch, bumps } => self.confirm_settlement(*batch, *bumps, out),
            Command::CancelSettlement { batch } => self.cancel_settlement(*batch, out),
            Command::ClaimSettlementLeadership { epoch } => self.claim_settlement_leadership(*epoch, out),
            // Unwrapped above.
            Command::AsSettlementLeader { .. } => Err(RejectReason::NotSettlementLeader),
        };
        if let Err(reason) = result {
            debug_assert!(self.ledger.touched.is_empty(), "a rejected command moved money");
            self.ledger.touched.clear();
            out.push(Event::Rejected { reason });
            return;
        }
        self.flush_balances(out);
        self.count_book_changes(&out[first_event..]);
    }

    /// One more `book_seq` for each market whose book the events touched (a level that gained,
    /// lost or changed an order), once per command.
    fn count_book_changes(&mut self, events: &[Event]) {
        // One market per command but for cancel-all: no allocation in the common case.
        let mut first = None;
        let mut others: Vec<MarketId> = Vec::new();
        for (market, _, _) in events.iter().flat_map(Event::touched_levels) {
            match first {
                Some(m) if m == market => continue,
                None => first = Some(market),
                Some(_) if others.contains(&market) => continue,
                Some(_) => others.push(market),
            }
            if let Some(n) = self.book_seqs.get_mut(market.0 as usize) {
                *n += 1;
            }
        }
    }

    /// The book's version: how many commands have touched it (see [`BookUpdate`](crate::BookUpdate)).
    pub fn book_seq(&self, market: MarketId) -> Option<u64> {
        self.book_seqs.get(market.0 as usize).copied()
    }

    pub(crate) fn book_seqs(&self) -> &[u64] {
        &self.book_seqs
    }

    fn claim_settlement_leadership(&mut self, epoch: u64, out: &mut Vec<Event>) -> Result<(), RejectReason> {
        if epoch <= self.settlement_epoch {
            return Err(RejectReason::StaleLeaderEpoch);
        }
        self.settlement_epoch = epoch;
        out.push(Event::SettlementLeadershipClaimed { epoch });
        Ok(())
    }

    /// The command to apply: a fenced one's inner command if its epoch is current; the chain's
    /// commands (chain deposits, settlement batches) only inside the current leader's fence
    /// once a leader has claimed settlement.
    fn unfence<'c>(&self, command: &'c Command) -> Result<&'c Command, RejectReason> {
        let leader_only = |c: &Command| {
            matches!(
                c,
                Command::CreditChainDeposit { .. }
                    | Command::BookSettlement { .. }
                    | Command::BumpSettlement { .. }
                    | Command::ConfirmSettlement { .. }
                    | Command::CancelSettlement { .. }
            )
        };
        match command {
            Command::AsSettlementLeader { epoch, command: inner } => {
                if *epoch != self.settlement_epoch {
                    Err(RejectReason::StaleLeaderEpoch)
                } else if matches!(
                    **inner,
                    Command::AsSettlementLeader { .. } | Command::ClaimSettlementLeadership { .. } | Command::Genesis(_)
                ) {
                    Err(RejectReason::NotSettlementLeader)
                } else {
                    Ok(inner)
                }
            }
            c if self.settlement_epoch > 0 && leader_only(c) => Err(RejectReason::NotSettlementLeader),
            c => Ok(c),
        }
    }

    /// The current settlement leader's epoch (0 before any claim).
    pub fn settlement_epoch(&self) -> u64 {
        self.settlement_epoch
    }

    fn flush_balances(&mut self, out: &mut Vec<Event>) {
        if self.ledger.touched.is_empty() {
            return;
        }
        let mut touched = std::mem::take(&mut self.ledger.touched);
        touched.sort_unstable();
        touched.dedup();
        for &(account, asset) in touched.iter() {
            let Balance { available, locked } = self.ledger.balance(account, asset);
            out.push(Event::BalanceChanged { account, asset, available, locked });
        }
        touched.clear();
        self.ledger.touched = touched;
    }

    // ---- accounts and funds ----

    fn open_account(&mut self, kind: AccountKind, out: &mut Vec<Event>) -> Result<(), RejectReason> {
        if !kind.can_trade() {
            return Err(RejectReason::ReservedAccountKind);
        }
        let account = self.ledger.open(kind);
        out.push(Event::AccountOpened { account, kind });
        Ok(())
    }

    fn check_account_asset(&self, account: AccountId, asset: AssetId) -> Result<(), RejectReason> {
        if !self.ledger.exists(account) {
            return Err(RejectReason::UnknownAccount);
        }
        if self.config.asset(asset).is_none() {
            return Err(RejectReason::UnknownAsset);
        }
        Ok(())
    }

    fn credit_deposit(
        &mut self,
        account: AccountId,
        asset: AssetId,
        amount: Amount,
        reference: &str,
        out: &mut Vec<Event>,
    ) -> Result<(), RejectReason> {
        self.credit_deposit_as(account, None, asset, amount, reference, out)
    }

    /// A deposit, off chain (`holder: None`) or held on chain by `holder`'s vault.
    pub(crate) fn credit_deposit_as(
        &mut self,
        account: AccountId,
        holder: Option<AccountId>,
        asset: AssetId,
        amount: Amount,
        reference: &str,
        out: &mut Vec<Event>,
    ) -> Result<(), RejectReason> {
        self.check_account_asset(account, asset)?;
        if amount.is_zero() {
            return Err(RejectReason::ZeroAmount);
        }
        let key = (asset, reference.to_owned());
        if self.ledger.deposits.get(&key).is_some_and(|d| !d.reversed) {
            return Err(RejectReason::DuplicateDeposit);
        }
        let cap = self.config.assets[asset.0 as usize].max_supply.0 as u128;
        if self.ledger.outstanding(asset) + amount.0 as u128 > cap {
            return Err(RejectReason::SupplyExceeded);
        }
        self.ledger.deposits.insert(key, DepositRecord { account, amount, reversed: false, holder });
        self.ledger.totals[asset.0 as usize].deposited += amount.0 as u128;
        self.ledger.credit(account, asset, amount);
        out.push(Event::DepositCredited { account, asset, amount, reference: reference.to_owned() });
        Ok(())
    }

    fn reverse_deposit(&mut self, asset: AssetId, reference: &str, out: &mut Vec<Event>) -> Result<(), RejectReason> {
        let key = (asset, reference.to_owned());
        let record = self.ledger.deposits.get(&key).ok_or(RejectReason::UnknownDeposit)?;
        if record.reversed {
            return Err(RejectReason::DepositAlreadyReversed);
        }
        let (account, amount, holder) = (record.account, record.amount, record.holder);
        if self.ledger.available(account, asset) < amount {
            // Spent already (traded, locked in orders or withdrawals): stop the account and free
            // what its orders hold; what is still missing needs an operator.
            if self.ledger.frozen.insert(account) {
                out.push(Event::AccountFrozen { account });
            }
            self.cancel_all(Some(account), None, out)?;
            if self.ledger.available(account, asset) < amount {
                out.push(Event::DepositReversalPending { account, asset, amount, reference: reference.to_owned() });
                return Ok(());
            }
        }
        self.ledger.debit(account, asset, amount);
        self.ledger.totals[asset.0 as usize].deposited -= amount.0 as u128;
        if let Some(holder) = holder {
            *self.ledger.settled.entry((holder, asset)).or_default() -= amount.0 as i128;
        }
        if let Some(d) = self.ledger.deposits.get_mut(&key) {
            d.reversed = true;
        }
        out.push(Event::DepositReversed { account, asset, amount, reference: reference.to_owned() });
        Ok(())
    }

    fn freeze(&mut self, account: AccountId, out: &mut Vec<Event>) -> Result<(), RejectReason> {
        self.trading_account(account)?;
        if !self.ledger.frozen.insert(account) {
            return Err(RejectReason::AlreadyFrozen);
        }
        out.push(Event::AccountFrozen { account });
        Ok(())
    }

    fn unfreeze(&mut self, account: AccountId, out: &mut Vec<Event>) -> Result<(), RejectReason> {
        if !self.ledger.exists(account) {
            return Err(RejectReason::UnknownAccount);
        }
        if !self.ledger.frozen.remove(&account) {
            return Err(RejectReason::NotFrozen);
        }
        out.push(Event::AccountUnfrozen { account });
        Ok(())
    }

    fn not_frozen(&self, account: AccountId) -> Result<(), RejectReason> {
        if self.ledger.frozen.contains(&account) {
            return Err(RejectReason::AccountFrozen);
        }
        Ok(())
    }

    fn request_withdrawal(
        &mut self,
        account: AccountId,
        asset: AssetId,
        amount: Amount,
        destination: &str,
        client_withdrawal_id: Option<ClientWithdrawalId>,
        out: &mut Vec<Event>,
    ) -> Result<(), RejectReason> {
        self.check_account_asset(account, asset)?;
        if let Some(cid) = client_withdrawal_id {
            if let Some(&existing) = self.ledger.client_withdrawals.get(&(account, cid)) {
                return Err(RejectReason::DuplicateClientWithdrawalId(existing));
            }
        }
        self.not_frozen(account)?;
        if amount.is_zero() {
            return Err(RejectReason::ZeroAmount);
        }
        if self.ledger.available(account, asset) < amount {
            return Err(RejectReason::InsufficientBalance);
        }
        let withdrawal = WithdrawalId(self.ledger.next_withdrawal);
        self.ledger.next_withdrawal += 1;
        self.ledger.lock(account, asset, amount);
        self.ledger.withdrawals.insert(
            withdrawal,
            PendingWithdrawal { account, asset, amount, destination: destination.to_owned(), batch: None },
        );
        if let Some(cid) = client_withdrawal_id {
            self.ledger.client_withdrawals.insert((account, cid), withdrawal);
        }
        out.push(Event::WithdrawalRequested {
            withdrawal,
            account,
            asset,
            amount,
            destination: destination.to_owned(),
            client_withdrawal_id,
        });
        Ok(())
    }

    /// Fails or completes by hand only what no batch is paying: a batch's confirmation completes
    /// its own withdrawals.
    fn unbatched_withdrawal(&self, withdrawal: WithdrawalId) -> Result<(), RejectReason> {
        let w = self.ledger.withdrawals.get(&withdrawal).ok_or(RejectReason::UnknownWithdrawal)?;
        if w.batch.is_some() {
            return Err(RejectReason::WithdrawalInBatch);
        }
        Ok(())
    }

    fn complete_withdrawal(&mut self, withdrawal: WithdrawalId, out: &mut Vec<Event>) -> Result<(), RejectReason> {
        self.unbatched_withdrawal(withdrawal)?;
        let w = self.ledger.withdrawals.remove(&withdrawal).ok_or(RejectReason::UnknownWithdrawal)?;
        self.ledger.spend_locked(w.account, w.asset, w.amount);
        self.ledger.totals[w.asset.0 as usize].withdrawn += w.amount.0 as u128;
        out.push(Event::WithdrawalCompleted { withdrawal, account: w.account, asset: w.asset, amount: w.amount });
        Ok(())
    }

    fn fail_withdrawal(&mut self, withdrawal: WithdrawalId, out: &mut Vec<Event>) -> Result<(), RejectReason> {
        self.unbatched_withdrawal(withdrawal)?;
        let w = self.ledger.withdrawals.remove(&withdrawal).ok_or(RejectReason::UnknownWithdrawal)?;
        self.ledger.unlock(w.account, w.asset, w.amount);
        out.push(Event::WithdrawalFailed { withdrawal, account: w.account, asset: w.asset, amount: w.amount });
        Ok(())
    }

    // ---- orders ----

    fn trading_account(&self, account: AccountId) -> Result<(), RejectReason> {
        match self.ledger.kind(account) {
            None => Err(RejectReason::UnknownAccount),
            Some(k) if !k.can_trade() => Err(RejectReason::AccountCannotTrade),
            Some(_) => Ok(()),
        }
    }

    fn open_market(&self, market: MarketId) -> Result<MarketRules, RejectReason> {
        let rules = *self.rules.get(market.0 as usize).ok_or(RejectReason::UnknownMarket)?;
        if self.books[market.0 as usize].halted {
            return Err(RejectReason::MarketHalted);
        }
        Ok(rules)
    }

    fn place_order(&mut self, order: &NewOrder, ts: Timestamp, out: &mut Vec<Event>) -> Result<(), RejectReason> {
        self.trading_account(order.account)?;
        self.not_frozen(order.account)?;
        let rules = self.open_market(order.market)?;
        let (price, tif, post_only, is_market) = match order.kind {
            OrderKind::Limit { price, time_in_force, post_only } => (price, time_in_force, post_only, false),
            OrderKind::Market { protection_price } => (protection_price, TimeInForce::Ioc, false, true),
        };
        rules.check_terms(price, order.quantity)?;
        if let Some(cid) = order.client_order_id {
            if let Some(&existing) = self.client_ids.get(&(order.account, cid)) {
                return Err(RejectReason::DuplicateClientOrderId(existing));
            }
        }
        let book = &self.books[order.market.0 as usize];
        let opposite = order.side.opposite();
        if post_only {
            if let Some(best) = book.side(opposite).best(opposite) {
                if crosses(order.side, price, best) {
                    return Err(RejectReason::WouldTakeLiquidity);
                }
            }
        }
        let lock = rules.lock_for(order.side, price, order.quantity).ok_or(RejectReason::InsufficientBalance)?;
        let lock_asset = rules.lock_asset(order.side);
        if self.ledger.available(order.account, lock_asset) < lock {
            return Err(RejectReason::InsufficientBalance);
        }
        // A fill-or-kill that cannot fill in full is a valid order that expires untouched (as on
        // Binance): it gets its id and its client id, and nothing is locked or traded.
        let killed = tif == TimeInForce::Fok
            && !self.can_fill(order.account, order.market, order.side, price, order.quantity, order.self_trade);

        // Nothing can fail from here on.
        let id = OrderId(self.next_order);
        self.next_order += 1;
        if let Some(cid) = order.client_order_id {
            self.client_ids.insert((order.account, cid), id);
        }
        if !killed {
            self.ledger.lock(order.account, lock_asset, lock);
        }
        out.push(Event::OrderAccepted(OrderAccepted {
            order: id,
            account: order.account,
            market: order.market,
            side: order.side,
            price,
            quantity: order.quantity,
            time_in_force: tif,
            post_only,
            is_market,
            client_order_id: order.client_order_id,
        }));
        if killed {
            out.push(Event::OrderClosed {
                order: id,
                account: order.account,
                market: order.market,
                side: order.side,
                price,
                reason: CloseReason::Expired,
                quantity: order.quantity,
                filled: Quantity::ZERO,
            });
            return Ok(());
        }
        let incoming = Incoming {
            id,
            account: order.account,
            market: order.market,
            side: order.side,
            price,
            quantity: order.quantity,
            filled: Quantity::ZERO,
            lock,
            client_order_id: order.client_order_id,
            self_trade: order.self_trade,
            post_only,
            rests: tif == TimeInForce::Gtc && !is_market,
            placed_at: ts,
        };
        self.execute(incoming, &rules, out);
        Ok(())
    }

    /// Whether `quantity` can fill right now up to `limit`, counting only orders that would
    /// really trade (own orders are skipped or end the walk, as self-trade prevention would).
    fn can_fill(
        &self,
        account: AccountId,
        market: MarketId,
        side: Side,
        limit: Price,
        quantity: Quantity,
        stp: SelfTradePrevention,
    ) -> bool {
        let opposite = side.opposite();
        let book = self.books[market.0 as usize].side(opposite);
        let mut available = 0u64;
        for (price, level) in book.iter_best_first(opposite) {
            if !crosses(side, limit, *price) {
                break;
            }
            let mut slot = level.head;
            while slot != NIL {
                let o = self.orders.get(slot);
                if o.account == account {
                    if stp != SelfTradePrevention::CancelResting {
                        return false;
                    }
                } else {
                    available += o.remaining().0;
                    if available >= quantity.0 {
                        return true;
                    }
                }
                slot = o.next;
            }
        }
        false
    }

    /// Matches an incoming order against the book, then rests, expires or closes it.
    fn execute(&mut self, mut inc: Incoming, rules: &MarketRules, out: &mut Vec<Event>) {
        let stopped_by_self_trade = self.match_against_book(&mut inc, rules, out);
        let reason = if inc.remaining().is_zero() {
            CloseReason::Filled
        } else if stopped_by_self_trade {
            CloseReason::SelfTrade
        } else if inc.rests {
            self.rest(inc, rules);
            return;
        } else {
            CloseReason::Expired
        };
        self.ledger.unlock(inc.account, rules.lock_asset(inc.side), inc.lock);
        out.push(Event::OrderClosed {
            order: inc.id,
            account: inc.account,
            market: inc.market,
            side: inc.side,
            price: inc.price,
            reason,
            quantity: inc.quantity,
            filled: inc.filled,
        });
    }

    /// Returns true when self-trade prevention ended the incoming order.
    fn match_against_book(&mut self, inc: &mut Incoming, rules: &MarketRules, out: &mut Vec<Event>) -> bool {
        let opposite = inc.side.opposite();
        let m = inc.market.0 as usize;
        while !inc.remaining().is_zero() {
            let side = self.books[m].side(opposite);
            let Some((&price, level)) = (match opposite {
                Side::Buy => side.levels.last_key_value(),
                Side::Sell => side.levels.first_key_value(),
            }) else {
                break;
            };
            if !crosses(inc.side, inc.price, price) {
                break;
            }
            let slot = level.head;
            let maker = self.orders.get(slot);
            if maker.account == inc.account {
                match inc.self_trade {
                    SelfTradePrevention::CancelResting => {
                        self.remove_resting(slot, CloseReason::SelfTrade, out);
                        continue;
                    }
                    SelfTradePrevention::CancelIncoming => return true,
                    SelfTradePrevention::CancelBoth => {
                        self.remove_resting(slot, CloseReason::SelfTrade, out);
                        return true;
                    }
                }
            }
            let qty = min(inc.remaining(), maker.remaining());
            self.fill(inc, slot, price, qty, rules, out);
        }
        false
    }

    /// One trade between the incoming order and the resting order in `slot`, at the resting price.
    fn fill(&mut self, inc: &mut Incoming, slot: u32, price: Price, qty: Quantity, rules: &MarketRules, out: &mut Vec<Event>) {
        // The buyer's lock covers this: see the rounding rule in the module docs.
        let notional = rules.notional(price, qty) as u64;
        let maker = self.orders.get_mut(slot);
        maker.filled.0 += qty.0;
        let maker_account = maker.account;
        let maker_order = maker.id;
        let maker_done = maker.remaining().is_zero();
        let maker_side = maker.side;
        match maker_side {
            Side::Buy => maker.lock.0 -= notional,
            Side::Sell => maker.lock.0 -= qty.0,
        }
        inc.filled.0 += qty.0;
        match inc.side {
            Side::Buy => inc.lock.0 -= notional,
            Side::Sell => inc.lock.0 -= qty.0,
        }
        let opposite = inc.side.opposite();
        self.books[inc.market.0 as usize]
            .side_mut(opposite)
            .levels
            .get_mut(&price)
            .expect("level of the resting order")
            .total -= qty.0;

        let (buyer, seller, buyer_bps, seller_bps) = match inc.side {
            Side::Buy => (inc.account, maker_account, rules.taker_fee_bps, rules.maker_fee_bps),
            Side::Sell => (maker_account, inc.account, rules.maker_fee_bps, rules.taker_fee_bps),
        };
        let buyer_fee = fee(qty.0, buyer_bps);
        let seller_fee = fee(notional, seller_bps);
        let ledger = &mut self.ledger;
        ledger.spend_locked(buyer, rules.quote, Amount(notional));
        ledger.credit(buyer, rules.base, Amount(qty.0 - buyer_fee));
        ledger.spend_locked(seller, rules.base, Amount(qty.0));
        ledger.credit(seller, rules.quote, Amount(notional - seller_fee));
        if buyer_fee > 0 {
            ledger.credit(FEE_ACCOUNT, rules.base, Amount(buyer_fee));
        }
        if seller_fee > 0 {
            ledger.credit(FEE_ACCOUNT, rules.quote, Amount(seller_fee));
        }
        let (maker_fee, taker_fee) = match inc.side {
            Side::Buy => (seller_fee, buyer_fee),
            Side::Sell => (buyer_fee, seller_fee),
        };
        out.push(Event::Trade(Trade {
            trade: TradeId(self.next_trade),
            market: inc.market,
            price,
            quantity: qty,
            notional: Amount(notional),
            maker_order,
            maker_account,
            taker_order: inc.id,
            taker_account: inc.account,
            taker_side: inc.side,
            maker_fee: Amount(maker_fee),
            taker_fee: Amount(taker_fee),
        }));
        self.next_trade += 1;
        if maker_done {
            self.remove_resting(slot, CloseReason::Filled, out);
        }
    }

    /// Takes a resting order off the book, releasing what it still holds.
    fn remove_resting(&mut self, slot: u32, reason: CloseReason, out: &mut Vec<Event>) {
        let (market, side) = {
            let o = self.orders.get(slot);
            (o.market, o.side)
        };
        self.books[market.0 as usize].side_mut(side).unlink(&mut self.orders, slot);
        let o = self.orders.remove(slot);
        let rules = &self.rules[market.0 as usize];
        self.ledger.unlock(o.account, rules.lock_asset(side), o.lock);
        out.push(Event::OrderClosed {
            order: o.id,
            account: o.account,
            market,
            side,
            price: o.price,
            reason,
            quantity: o.quantity,
            filled: o.filled,
        });
    }

    fn rest(&mut self, inc: Incoming, _rules: &MarketRules) {
        let slot = self.orders.insert(RestingOrder {
            id: inc.id,
            account: inc.account,
            market: inc.market,
            side: inc.side,
            price: inc.price,
            quantity: inc.quantity,
            filled: inc.filled,
            lock: inc.lock,
            client_order_id: inc.client_order_id,
            self_trade: inc.self_trade,
            post_only: inc.post_only,
            placed_at: inc.placed_at,
            prev: NIL,
            next: NIL,
        });
        self.books[inc.market.0 as usize].side_mut(inc.side).push_back(&mut self.orders, slot);
    }

    fn find_order(&self, account: AccountId, order: OrderRef) -> Result<u32, RejectReason> {
        let id = match order {
            OrderRef::Id(id) => id,
            OrderRef::Client(cid) => *self.client_ids.get(&(account, cid)).ok_or(RejectReason::UnknownOrder)?,
        };
        let slot = self.orders.slot_of(id).ok_or(RejectReason::UnknownOrder)?;
        // Someone else's order is reported as unknown: ids must not reveal other accounts' orders.
        if self.orders.get(slot).account != account {
            return Err(RejectReason::UnknownOrder);
        }
        Ok(slot)
    }

    fn cancel_order(&mut self, account: AccountId, order: OrderRef, out: &mut Vec<Event>) -> Result<(), RejectReason> {
        if !self.ledger.exists(account) {
            return Err(RejectReason::UnknownAccount);
        }
        self.not_frozen(account)?;
        let slot = self.find_order(account, order)?;
        self.remove_resting(slot, CloseReason::Canceled, out);
        Ok(())
    }

    fn cancel_all(
        &mut self,
        account: Option<AccountId>,
        market: Option<MarketId>,
        out: &mut Vec<Event>,
    ) -> Result<(), RejectReason> {
        if let Some(a) = account {
            if !self.ledger.exists(a) {
                return Err(RejectReason::UnknownAccount);
            }
        }
        if let Some(m) = market {
            if self.rules.get(m.0 as usize).is_none() {
                return Err(RejectReason::UnknownMarket);
            }
        }
        // Slab order depends on history; cancel in id order so replay and snapshots agree.
        let mut ids: Vec<OrderId> = self
            .orders
            .iter()
            .filter(|o| account.is_none_or(|a| o.account == a) && market.is_none_or(|m| o.market == m))
            .map(|o| o.id)
            .collect();
        ids.sort_unstable();
        for id in ids {
            let slot = self.orders.slot_of(id).expect("collected above");
            self.remove_resting(slot, CloseReason::Canceled, out);
        }
        Ok(())
    }

    fn amend_order(
        &mut self,
        account: AccountId,
        order: OrderRef,
        new_price: Option<Price>,
        new_quantity: Option<Quantity>,
        out: &mut Vec<Event>,
    ) -> Result<(), RejectReason> {
        if !self.ledger.exists(account) {
            return Err(RejectReason::UnknownAccount);
        }
        let slot = self.find_order(account, order)?;
        let o = self.orders.get(slot).clone();
        let rules = self.open_market(o.market)?;
        let price = new_price.unwrap_or(o.price);
        let quantity = new_quantity.unwrap_or(o.quantity);
        if price == o.price && quantity == o.quantity {
            return Err(RejectReason::AmendNoChange);
        }
        rules.check_terms(price, quantity)?;
        if quantity <= o.filled {
            return Err(RejectReason::AmendBelowFilled);
        }
        let remaining = Quantity(quantity.0 - o.filled.0);
        let lock = rules.lock_for(o.side, price, remaining).ok_or(RejectReason::InsufficientBalance)?;
        let lock_asset = rules.lock_asset(o.side);
        let m = o.market.0 as usize;

        if price == o.price && quantity < o.quantity {
            // Smaller at the same price: keeps its place in the queue. The new lock is never more
            // than the old one (same price, less to buy).
            let shrink = o.remaining().0 - remaining.0;
            self.books[m].side_mut(o.side).levels.get_mut(&price).expect("level").total -= shrink;
            let release = Amount(o.lock.0 - lock.0);
            let r = self.orders.get_mut(slot);
            r.quantity = quantity;
            r.lock = lock;
            self.ledger.unlock(account, lock_asset, release);
            out.push(Event::OrderAmended {
                order: o.id,
                account,
                market: o.market,
                side: o.side,
                previous_price: o.price,
                price,
                quantity,
                remaining,
                priority_kept: true,
            });
            return Ok(());
        }

        if lock > o.lock && self.ledger.available(account, lock_asset).0 < lock.0 - o.lock.0 {
            return Err(RejectReason::InsufficientBalance);
        }
        if o.post_only {
            let opposite = o.side.opposite();
            if let Some(best) = self.books[m].side(opposite).best(opposite) {
                if crosses(o.side, price, best) {
                    return Err(RejectReason::WouldTakeLiquidity);
                }
            }
        }

        // Loses its place: leave the book, re-lock for the new terms, and come back as incoming.
        self.books[m].side_mut(o.side).unlink(&mut self.orders, slot);
        self.orders.remove(slot);
        if lock > o.lock {
            self.ledger.lock(account, lock_asset, Amount(lock.0 - o.lock.0));
        } else {
            self.ledger.unlock(account, lock_asset, Amount(o.lock.0 - lock.0));
        }
        out.push(Event::OrderAmended {
            order: o.id,
            account,
            market: o.market,
            side: o.side,
            previous_price: o.price,
            price,
            quantity,
            remaining,
            priority_kept: false,
        });
        let incoming = Incoming {
            id: o.id,
            account,
            market: o.market,
            side: o.side,
            price,
            quantity,
            filled: o.filled,
            lock,
            client_order_id: o.client_order_id,
            self_trade: o.self_trade,
            post_only: o.post_only,
            rests: true,
            placed_at: o.placed_at,
        };
        self.execute(incoming, &rules, out);
        Ok(())
    }

    fn set_halted(&mut self, market: MarketId, halt: bool, out: &mut Vec<Event>) -> Result<(), RejectReason> {
        let book = self.books.get_mut(market.0 as usize).ok_or(RejectReason::UnknownMarket)?;
        match (book.halted, halt) {
            (true, true) => return Err(RejectReason::AlreadyHalted),
            (false, false) => return Err(RejectReason::NotHalted),
            _ => {}
        }
        book.halted = halt;
        out.push(if halt { Event::MarketHalted { market } } else { Event::MarketResumed { market } });
        Ok(())
    }

    // ---- queries (read-only) ----

    pub fn account_kind(&self, account: AccountId) -> Option<AccountKind> {
        self.ledger.kind(account)
    }

    pub fn account_count(&self) -> u64 {
        self.ledger.kinds.len() as u64
    }

    pub fn balance(&self, account: AccountId, asset: AssetId) -> Option<Balance> {
        (self.ledger.exists(account) && self.config.asset(asset).is_some()).then(|| self.ledger.balance(account, asset))
    }

    pub fn balances(&self, account: AccountId) -> Option<Vec<Balance>> {
        self.ledger.exists(account).then(|| {
            (0..self.config.assets.len()).map(|a| self.ledger.balance(account, AssetId(a as u16))).collect()
        })
    }

    pub fn order(&self, id: OrderId) -> Option<OrderView> {
        self.orders.slot_of(id).map(|s| OrderView::from(self.orders.get(s)))
    }

    pub fn order_by_client_id(&self, account: AccountId, cid: ClientOrderId) -> Option<OrderId> {
        self.client_ids.get(&(account, cid)).copied()
    }

    pub fn withdrawal_by_client_id(&self, account: AccountId, cid: ClientWithdrawalId) -> Option<WithdrawalId> {
        self.ledger.client_withdrawals.get(&(account, cid)).copied()
    }

    /// Open orders, oldest first.
    pub fn open_orders(&self, account: Option<AccountId>, market: Option<MarketId>) -> Vec<OrderView> {
        let mut v: Vec<OrderView> = self
            .orders
            .iter()
            .filter(|o| account.is_none_or(|a| o.account == a) && market.is_none_or(|m| o.market == m))
            .map(OrderView::from)
            .collect();
        v.sort_unstable_by_key(|o| o.order);
        v
    }

    /// The id the next accepted order will get.
    pub fn next_order_id(&self) -> OrderId {
        OrderId(self.next_order)
    }

    pub fn open_order_count(&self) -> usize {
        self.orders.len()
    }

    pub fn depth(&self, market: MarketId, levels: usize) -> Option<Depth> {
        let book = self.books.get(market.0 as usize)?;
        let collect = |side: Side| {
            book.side(side)
                .iter_best_first(side)
                .take(levels)
                .map(|(p, l)| DepthLevel { price: *p, quantity: Quantity(l.total), orders: l.count })
                .collect()
        };
        Some(Depth { bids: collect(Side::Buy), asks: collect(Side::Sell) })
    }

    pub fn level_quantity(&self, market: MarketId, side: Side, price: Price) -> Quantity {
        self.books.get(market.0 as usize).map_or(Quantity::ZERO, |b| b.side(side).quantity_at(price))
    }

    pub fn best_bid_ask(&self, market: MarketId) -> (Option<Price>, Option<Price>) {
        self.books
            .get(market.0 as usize)
            .map_or((None, None), |b| (b.bids.best(Side::Buy), b.asks.best(Side::Sell)))
    }

    pub fn is_halted(&self, market: MarketId) -> Option<bool> {
        self.books.get(market.0 as usize).map(|b| b.halted)
    }

    /// Whether the account may not trade or withdraw now.
    pub fn is_frozen(&self, account: AccountId) -> bool {
        self.ledger.frozen.contains(&account)
    }

    /// A deposit by its reference, credited or reversed.
    pub fn deposit(&self, asset: AssetId, reference: &str) -> Option<DepositRecord> {
        self.ledger.deposits.get(&(asset, reference.to_owned())).cloned()
    }

    pub fn pending_withdrawals(&self) -> Vec<(WithdrawalId, PendingWithdrawal)> {
        self.ledger.withdrawals.iter().map(|(k, v)| (*k, v.clone())).collect()
    }

    /// Per asset: (deposited, withdrawn) since genesis.
    pub fn asset_totals(&self) -> Vec<(u128, u128)> {
        self.ledger.totals.iter().map(|t| (t.deposited, t.withdrawn)).collect()
    }
}

#[cfg(test)]
mod tests;
