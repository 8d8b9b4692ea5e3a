//! The user data stream (`/ws/<listenKey>`): the account's order updates as Binance's
//! `executionReport`, its balances as `outboundAccountPosition`, deposits and withdrawals as
//! `balanceUpdate`.
//!
//! An execution report carries the order's running totals (`z`, `Z`), which the events alone do
//! not: the stream starts from the account's open orders in the store, read before the connection
//! is answered (so everything the client does once connected is newer) and after the store has
//! caught up with everything the connection's feed does not bring, and applies to each order
//! only events newer than the order's row (`updated_seq`), so nothing is counted twice or missed.

use std::collections::HashMap;

use serde_json::{json, Value};
use tandem_matching::{AccountId, Applied, AssetId, CloseReason, EngineConfig, Event, MarketId, OrderId, Price, Quantity, Side, TimeInForce};
use tandem_store::{OrderRecord, OrderType, Store, StoreError};

use super::super::{number, symbol_of, Decimals};
use crate::Gateway;

/// What the stream knows of one of the account's orders.
#[derive(Debug, Clone)]
struct Tracked {
    market: MarketId,
    side: Side,
    order_type: &'static str,
    time_in_force: &'static str,
    price: Price,
    quantity: Quantity,
    client_order_id: String,
    filled: u64,
    quote_filled: u64,
    created_at: u64,
    /// Events up to this seq are in the totals already.
    through_seq: u64,
}

fn tif(t: TimeInForce) -> &'static str {
    match t {
        TimeInForce::Gtc => "GTC",
        TimeInForce::Ioc => "IOC",
        TimeInForce::Fok => "FOK",
    }
}

impl Tracked {
    fn from_record(r: &OrderRecord) -> Tracked {
        let market = r.order_type == OrderType::Market;
        Tracked {
            market: r.market_id,
            side: r.side,
            order_type: order_type(market, r.post_only),
            time_in_force: if market { "GTC" } else { tif(r.time_in_force) },
            price: r.price,
            quantity: r.quantity,
            client_order_id: r.client_order_id.clone().unwrap_or_default(),
            filled: r.filled.0,
            quote_filled: r.quote_filled.0,
            created_at: r.created_at.0,
            through_seq: r.updated_seq.0,
        }
    }
}

fn order_type(market: bool, post_only: bool) -> &'static str {
    match (market, post_only) {
        (true, _) => "MARKET",
        (false, true) => "LIMIT_MAKER",
        (false, false) => "LIMIT",
    }
}

/// One account's stream.
pub struct UserStream {
    pub listen_key: String,
    pub account: AccountId,
    orders: HashMap<OrderId, Tracked>,
}

/// A trade as one of its sides sees it.
struct Fill {
    order: OrderId,
    maker: bool,
    fee: u64,
}

impl UserStream {
    /// Starts from the account's open orders; call after subscribing to the feed and after the
    /// store caught up with it.
    pub async fn start(store: &Store, listen_key: String, account: AccountId) -> Result<UserStream, StoreError> {
        const PAGE: u32 = 500;
        let mut orders = HashMap::new();
        let mut before = None;
        loop {
            let page = store.orders(account, None, true, PAGE, before).await?;
            for r in &page {
                orders.insert(r.order_id, Tracked::from_record(r));
            }
            match page.last() {
                Some(last) if page.len() == PAGE as usize => before = Some(last.order_id),
                _ => break,
            }
        }
        Ok(UserStream { listen_key, account, orders })
    }

    /// The payloads `applied` makes for this account, in order.
    pub async fn on_applied(&mut self, gw: &Gateway, applied: &Applied) -> Vec<Value> {
        let cfg = &gw.engine_config;
        let (seq, time) = (applied.seq.0, applied.timestamp.0);
        let mut out = Vec::new();
        let mut balances: Vec<(AssetId, u64, u64)> = Vec::new();
        for e in &applied.events {
            match e {
                Event::OrderAccepted(a) if a.account == self.account => {
                    let tracked = Tracked {
                        market: a.market,
                        side: a.side,
                        order_type: order_type(a.is_market, a.post_only),
                        time_in_force: if a.is_market { "GTC" } else { tif(a.time_in_force) },
                        price: a.price,
                        quantity: a.quantity,
                        client_order_id: a.client_order_id.map(|c| c.as_str().to_owned()).unwrap_or_default(),
                        filled: 0,
                        quote_filled: 0,
                        created_at: time,
                        through_seq: seq - 1,
                    };
                    if seq > tracked.through_seq && !self.orders.contains_key(&a.order) {
                        out.push(report(cfg, a.order, &tracked, Exec::New, time));
                        self.orders.insert(a.order, tracked);
                    }
                }
                Event::Trade(t) => {
                    let mine = [
                        (t.maker_account == self.account).then_some(Fill { order: t.maker_order, maker: true, fee: t.maker_fee.0 }),
                        (t.taker_account == self.account).then_some(Fill { order: t.taker_order, maker: false, fee: t.taker_fee.0 }),
                    ];
                    for fill in mine.into_iter().flatten() {
                        let Some(o) = self.tracked(gw, fill.order).await else { continue };
                        if seq <= o.through_seq {
                            continue;
                        }
                        o.filled += t.quantity.0;
                        o.quote_filled += t.notional.0;
                        let o = o.clone();
                        // The fee is taken from what this side receives.
                        let spec = cfg.market(o.market);
                        let fee_asset = spec.map(|m| if o.side == Side::Buy { m.base } else { m.quote });
                        let fee_asset = fee_asset.and_then(|a| cfg.asset(a));
                        out.push(report(
                            cfg,
                            fill.order,
                            &o,
                            Exec::Trade {
                                trade: t.trade.0,
                                price: t.price,
                                quantity: t.quantity,
                                notional: t.notional.0,
                                fee: fee_asset.map_or(number(Default::default()), |a| number(a.to_decimal(tandem_matching::Amount(fill.fee)))),
                                fee_asset: fee_asset.map(|a| a.symbol.clone()),
                                maker: fill.maker,
                            },
                            time,
                        ));
                    }
                }
                Event::OrderAmended { order, account, price, quantity, .. } if *account == self.account => {
                    if let Some(o) = self.tracked(gw, *order).await {
                        if seq > o.through_seq {
                            (o.price, o.quantity) = (*price, *quantity);
                            let o = o.clone();
                            out.push(report(cfg, *order, &o, Exec::Replaced, time));
                        }
                    }
                }
                Event::OrderClosed { order, account, reason, .. } if *account == self.account => {
                    if let Some(o) = self.tracked(gw, *order).await {
                        let o = o.clone();
                        self.orders.remove(order);
                        // A filled order's last trade said FILLED already.
                        if seq > o.through_seq && *reason != CloseReason::Filled {
                            out.push(report(cfg, *order, &o, Exec::Closed(*reason), time));
                        }
                    }
                }
                Event::BalanceChanged { account, asset, available, locked } if *account == self.account => {
                    balances.retain(|(a, _, _)| a != asset);
                    balances.push((*asset, available.0, locked.0));
                }
                Event::DepositCredited { account, asset, amount, .. } if *account == self.account => {
                    out.extend(balance_update(cfg, *asset, amount.0, true, time));
                }
                Event::DepositReversed { account, asset, amount, .. } if *account == self.account => {
                    out.extend(balance_update(cfg, *asset, amount.0, false, time));
                }
                Event::WithdrawalRequested { account, asset, amount, .. } if *account == self.account => {
                    out.extend(balance_update(cfg, *asset, amount.0, false, time));
                }
                Event::WithdrawalFailed { account, asset, amount, .. } if *account == self.account => {
                    out.extend(balance_update(cfg, *asset, amount.0, true, time));
                }
                _ => {}
            }
        }
        if !balances.is_empty() {
            balances.sort_by_key(|(a, _, _)| *a);
            let b: Vec<Value> = balances
                .iter()
                .filter_map(|(asset, free, locked)| {
                    let spec = cfg.asset(*asset)?;
                    Some(json!({
                        "a": spec.symbol,
                        "f": number(spec.to_decimal(tandem_matching::Amount(*free))),
                        "l": number(spec.to_decimal(tandem_matching::Amount(*locked))),
                    }))
                })
                .collect();
            out.push(json!({ "e": "outboundAccountPosition", "E": time, "u": time, "B": b }));
        }
        out
    }

    /// The order as tracked; one the stream has not seen (it can only be one the store had not
    /// caught up with at the start) is read from the store.
    async fn tracked(&mut self, gw: &Gateway, order: OrderId) -> Option<&mut Tracked> {
        if !self.orders.contains_key(&order) {
            let record = gw.store.order(order).await.ok().flatten()?;
            if record.account_id != self.account {
                return None;
            }
            tracing::warn!(order = order.0, "user stream: order not in its base; using the store's row");
            self.orders.insert(order, Tracked::from_record(&record));
        }
        self.orders.get_mut(&order)
    }
}

enum Exec {
    New,
    Trade { trade: u64, price: Price, quantity: Quantity, notional: u64, fee: String, fee_asset: Option<String>, maker: bool },
    Replaced,
    Closed(CloseReason),
}

/// Binance's `executionReport` for one change of an order.
fn report(cfg: &EngineConfig, order: OrderId, o: &Tracked, exec: Exec, time: u64) -> Value {
    let Some(spec) = cfg.market(o.market) else { return json!({}) };
    let d = Decimals { base: spec_decimals(cfg, spec.base), quote: spec_decimals(cfg, spec.quote) };
    let zero = || number(Default::default());
    let status = if o.filled >= o.quantity.0 {
        "FILLED"
    } else if o.filled > 0 {
        "PARTIALLY_FILLED"
    } else {
        "NEW"
    };
    let (x, status) = match &exec {
        Exec::New => ("NEW", "NEW"),
        Exec::Trade { .. } => ("TRADE", status),
        Exec::Replaced => ("REPLACED", status),
        Exec::Closed(CloseReason::Canceled) => ("CANCELED", "CANCELED"),
        Exec::Closed(CloseReason::SelfTrade) => ("EXPIRED", "EXPIRED_IN_MATCH"),
        Exec::Closed(_) => ("EXPIRED", "EXPIRED"),
    };
    let working = matches!(status, "NEW" | "PARTIALLY_FILLED") && o.order_type != "MARKET" && o.time_in_force == "GTC";
    let (l, last_price, last_quote, n, fee_asset, trade, maker) = match exec {
        Exec::Trade { trade, price, quantity, notional, fee, fee_asset, maker } => {
            (d.qty(quantity.0), d.price(price.0), d.quote(notional), fee, fee_asset, trade as i64, maker)
        }
        _ => (zero(), zero(), zero(), zero(), None, -1, false),
    };
    json!({
        "e": "executionReport",
        "E": time,
        "s": symbol_of(cfg, spec),
        "c": o.client_order_id,
        "S": if o.side == Side::Buy { "BUY" } else { "SELL" },
        "o": o.order_type,
        "f": o.time_in_force,
        "q": d.qty(o.quantity.0),
        "p": if o.order_type == "MARKET" { zero() } else { d.price(o.price.0) },
        "P": zero(),
        "F": zero(),
        "g": -1,
        "C": "",
        "x": x,
        "X": status,
        "r": "NONE",
        "i": order.0,
        "l": l,
        "z": d.qty(o.filled),
        "L": last_price,
        "n": n,
        "N": fee_asset,
        "T": time,
        "t": trade,
        "I": 0,
        "w": working,
        "m": maker,
        "M": false,
        "O": o.created_at,
        "Z": d.quote(o.quote_filled),
        "Y": last_quote,
        "Q": zero(),
        "W": o.created_at,
        "V": "NONE",
    })
}

fn spec_decimals(cfg: &EngineConfig, asset: AssetId) -> u8 {
    cfg.asset(asset).map_or(0, |a| a.decimals)
}

/// `balanceUpdate`: a deposit or withdrawal moved the balance by `amount`.
fn balance_update(cfg: &EngineConfig, asset: AssetId, amount: u64, credit: bool, time: u64) -> Option<Value> {
    let spec = cfg.asset(asset)?;
    let mut delta = spec.to_decimal(tandem_matching::Amount(amount));
    if !credit {
        delta.set_sign_negative(true);
    }
    Some(json!({ "e": "balanceUpdate", "E": time, "a": spec.symbol, "d": number(delta), "T": time }))
}
