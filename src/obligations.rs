//! What a holder's own signatures prove it owes in BTC for one settlement window, checked with
//! nothing but its wallet's public key: the check the wallet runs before it co-signs its leg of a
//! batch, and the co-signer before it force-settles a late seller.
//!
//! The provider hands over the window's [`Evidence`]: every fill of the account, every withdrawal
//! it asked for, and the requests its wallet signed for them. [`prove`] accepts it only if every
//! fill belongs to an order the wallet signed, on the same market and side, at a price its limit
//! allowed, never filling more than was ordered; and every withdrawal was asked for by the wallet.
//! What it answers is the BTC those signed acts move out of the holder's hands: sold minus bought
//! (net of fees taken in BTC), plus withdrawals not refunded.
//!
//! What it cannot see: fills or withdrawals the provider leaves out. Leaving out a sale or a
//! withdrawal only lowers what is proven (the holder's favour); leaving out a purchase raises it,
//! so a buyer's wallet relies on the provider for its purchases, as it does for its balance.

use std::collections::HashMap;

use rust_decimal::Decimal;
use serde_json::Value;
use tandem_gateway::evidence::{Evidence, SignedRequest};

/// What the window's signed acts prove.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Proven {
    /// BTC (sat) the holder's signed acts in the window take out of its hands; negative when it
    /// bought more than it sold and withdrew.
    pub net_out_sat: i64,
    /// The newest signature among them (ms): settlement of the window is due after it.
    pub latest_signed_ms: u64,
}

/// Why evidence does not prove what it claims.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvidenceError {
    #[error("request for {kind} {id}: {why}")]
    BadRequest { kind: String, id: u64, why: String },
    #[error("fill {trade} of order {order}: {why}")]
    BadFill { trade: u64, order: u64, why: String },
    #[error("withdrawal {0} has no request signed by this wallet")]
    UnbackedWithdrawal(u64),
    #[error("{0}")]
    Malformed(String),
}

/// The terms of an order the wallet signed.
struct OrderTerms {
    market: String,
    side: String,
    /// The limit price, or a market order's protection price; `None`: a market order bounded
    /// by the provider's default protection.
    bound: Option<Decimal>,
    quantity: Decimal,
    signed_ms: u64,
}

/// Checks `e` against `wallet` (the x-only device key, hex) and answers what it proves in BTC.
pub fn prove(e: &Evidence, wallet: &bitcoin::secp256k1::XOnlyPublicKey) -> Result<Proven, EvidenceError> {
    let mut orders: HashMap<u64, OrderTerms> = HashMap::new();
    let mut withdrawals: HashMap<u64, (Decimal, u64, String)> = HashMap::new();
    for r in &e.requests {
        let bad = |why: String| EvidenceError::BadRequest { kind: r.kind.clone(), id: r.ref_id, why };
        let body = verified_body(r, wallet).map_err(bad)?;
        match (r.kind.as_str(), r.method.as_str(), r.path.as_str()) {
            ("order", "POST", "/v1/orders") => {
                let terms = order_terms(&body, r.timestamp_ms).map_err(bad)?;
                orders.insert(r.ref_id, terms);
            }
            ("withdrawal", "POST", "/v1/withdrawals") => {
                let asset = text(&body, "asset").map_err(bad)?;
                let amount = decimal(&body, "amount").map_err(bad)?;
                withdrawals.insert(r.ref_id, (amount, r.timestamp_ms, asset.to_ascii_uppercase()));
            }
            (kind, method, path) => return Err(bad(format!("a {kind} is not made by {method} {path}"))),
        }
    }

    let mut out: i64 = 0;
    let mut latest: u64 = 0;
    let mut filled: HashMap<u64, Decimal> = HashMap::new();
    for f in &e.fills {
        let bad = |why: String| EvidenceError::BadFill { trade: f.trade_id, order: f.order_id, why };
        if f.seq <= e.after_seq || f.seq > e.through_seq {
            return Err(bad(format!("seq {} is outside the window ({}, {}]", f.seq, e.after_seq, e.through_seq)));
        }
        let terms = orders.get(&f.order_id).ok_or_else(|| bad("no order this wallet signed".into()))?;
        if terms.market != f.market || terms.side != f.side {
            return Err(bad(format!("a {} on {}, but the wallet signed a {} on {}", f.side, f.market, terms.side, terms.market)));
        }
        let price = parse(&f.price).map_err(bad)?;
        let quantity = parse(&f.quantity).map_err(bad)?;
        if quantity <= Decimal::ZERO || price <= Decimal::ZERO {
            return Err(bad("a fill of nothing".into()));
        }
        match (terms.side.as_str(), terms.bound) {
            ("sell", Some(limit)) if price < limit => return Err(bad(format!("sold at {price}, below the signed {limit}"))),
            ("buy", Some(limit)) if price > limit => return Err(bad(format!("bought at {price}, above the signed {limit}"))),
            ("sell" | "buy", _) => {}
            (side, _) => return Err(bad(format!("unknown side {side}"))),
        }
        let total = filled.entry(f.order_id).or_default();
        *total += quantity;
        if *total > terms.quantity {
            return Err(bad(format!("{total} filled of an order for {}", terms.quantity)));
        }
        let (base, quote) = f.market.split_once('-').ok_or_else(|| bad(format!("market {} is not BASE-QUOTE", f.market)))?;
        let fee = parse(&f.fee).map_err(bad)?;
        // What this fill moves in BTC, out of the holder's hands (+) or into them (−); the fee
        // is charged in what the side receives.
        let btc_out = match (base == BTC, quote == BTC, f.side.as_str()) {
            (true, _, "sell") => quantity,
            (true, _, _) => fee - quantity,
            (_, true, "buy") => parse(&f.notional).map_err(bad)?,
            (_, true, _) => fee - parse(&f.notional).map_err(bad)?,
            _ => Decimal::ZERO,
        };
        out = out.checked_add(sats(btc_out).map_err(bad)?).ok_or_else(|| bad("amounts overflow".into()))?;
        latest = latest.max(terms.signed_ms);
    }
    for w in &e.withdrawals {
        let (amount, signed_ms, asset) = withdrawals.get(&w.withdrawal_id).ok_or(EvidenceError::UnbackedWithdrawal(w.withdrawal_id))?;
        if w.status == "failed" || asset != BTC {
            continue;
        }
        let amount = sats(*amount).map_err(|why| EvidenceError::BadRequest { kind: "withdrawal".into(), id: w.withdrawal_id, why })?;
        out = out.checked_add(amount).ok_or_else(|| EvidenceError::Malformed("amounts overflow".into()))?;
        latest = latest.max(*signed_ms);
    }
    Ok(Proven { net_out_sat: out, latest_signed_ms: latest })
}

const BTC: &str = "BTC";

/// The request's JSON body, once its signature by `wallet` checks.
fn verified_body(r: &SignedRequest, wallet: &bitcoin::secp256k1::XOnlyPublicKey) -> Result<Value, String> {
    if !r.device.eq_ignore_ascii_case(&wallet.to_string()) {
        return Err("signed by another key than this wallet's".into());
    }
    if !tandem_gateway::auth::verify_device(wallet, r.timestamp_ms, &r.method, &r.path, r.body.as_bytes(), &r.signature) {
        return Err("the signature does not match".into());
    }
    serde_json::from_str(&r.body).map_err(|e| format!("the body is not JSON: {e}"))
}

fn order_terms(body: &Value, signed_ms: u64) -> Result<OrderTerms, String> {
    let market = text(body, "market")?.to_owned();
    let side = text(body, "side")?.to_owned();
    let bound = match text(body, "type")? {
        "limit" => Some(decimal(body, "price")?),
        "market" => body.get("protection_price").filter(|p| !p.is_null()).map(|_| decimal(body, "protection_price")).transpose()?,
        other => return Err(format!("unknown order type {other}")),
    };
    Ok(OrderTerms { market, side, bound, quantity: decimal(body, "quantity")?, signed_ms })
}

fn text<'a>(body: &'a Value, field: &str) -> Result<&'a str, String> {
    body[field].as_str().ok_or_else(|| format!("no {field}"))
}

fn decimal(body: &Value, field: &str) -> Result<Decimal, String> {
    parse(text(body, field)?)
}

fn parse(s: &str) -> Result<Decimal, String> {
    s.trim().parse::<Decimal>().map_err(|e| format!("{s:?} is not a decimal: {e}"))
}

/// Whole satoshis of a BTC amount, or an error if it has more than 8 decimals.
fn sats(btc: Decimal) -> Result<i64, String> {
    let scaled = btc.checked_mul(Decimal::from(100_000_000u64)).ok_or("an amount out of range")?;
    if scaled.fract() != Decimal::ZERO {
        return Err(format!("{btc} BTC is not a whole number of satoshis"));
    }
    i64::try_from(scaled.trunc()).map_err(|_| format!("{btc} BTC is out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wallet::device::DeviceKey;
    use serde_json::json;
    use tandem_gateway::evidence::{EvidenceFill, EvidenceWithdrawal};

    fn signed(key: &DeviceKey, kind: &str, ref_id: u64, path: &str, body: Value, ts: u64) -> SignedRequest {
        let body = body.to_string();
        let signature = key.sign_request(ts, "POST", path, body.as_bytes());
        SignedRequest {
            kind: kind.into(),
            ref_id,
            device: key.pubkey_hex(),
            timestamp_ms: ts,
            method: "POST".into(),
            path: path.into(),
            body,
            signature,
        }
    }

    fn order(key: &DeviceKey, id: u64, side: &str, price: &str, quantity: &str) -> SignedRequest {
        let body = json!({"market": "BTC-USD", "side": side, "type": "limit", "price": price, "quantity": quantity});
        signed(key, "order", id, "/v1/orders", body, 1_000 + id)
    }

    fn fill(trade: u64, order: u64, side: &str, price: &str, quantity: &str, fee: &str) -> EvidenceFill {
        EvidenceFill {
            trade_id: trade,
            order_id: order,
            seq: 10 + trade,
            market: "BTC-USD".into(),
            side: side.into(),
            price: price.into(),
            quantity: quantity.into(),
            notional: "0".into(),
            fee: fee.into(),
            fee_asset: if side == "buy" { "BTC".into() } else { "USD".into() },
        }
    }

    fn evidence(fills: Vec<EvidenceFill>, withdrawals: Vec<EvidenceWithdrawal>, requests: Vec<SignedRequest>) -> Evidence {
        Evidence { account: 7, after_seq: 10, through_seq: 100, fills, withdrawals, requests }
    }

    #[test]
    fn signed_sales_purchases_and_withdrawals_add_up_to_the_satoshi() {
        let key = DeviceKey::generate();
        let w = signed(&key, "withdrawal", 3, "/v1/withdrawals", json!({"asset": "BTC", "amount": "0.05", "destination": "x"}), 5_000);
        let e = evidence(
            vec![
                fill(1, 21, "sell", "60000", "0.1", "6.00"),
                fill(2, 21, "sell", "60100", "0.05", "3.00"),
                fill(3, 22, "buy", "59000", "0.02", "0.00002"),
            ],
            vec![EvidenceWithdrawal { withdrawal_id: 3, status: "pending".into() }],
            vec![order(&key, 21, "sell", "60000", "0.2"), order(&key, 22, "buy", "59500", "0.02"), w],
        );
        let p = prove(&e, &key.x_only()).unwrap();
        // 0.15 sold, 0.02 bought less a 0.00002 fee, 0.05 withdrawn.
        assert_eq!(p.net_out_sat, 15_000_000 - (2_000_000 - 2_000) + 5_000_000);
        assert_eq!(p.latest_signed_ms, 5_000);

        // A refunded withdrawal owes nothing.
        let mut refunded = e.clone();
        refunded.withdrawals[0].status = "failed".into();
        assert_eq!(prove(&refunded, &key.x_only()).unwrap().net_out_sat, 15_000_000 - 1_998_000);
    }

    #[test]
    fn what_the_wallet_did_not_sign_is_refused() {
        let key = DeviceKey::generate();
        let other = DeviceKey::generate();
        let check = |e: Evidence| prove(&e, &key.x_only()).unwrap_err().to_string();

        // A fill of an order nobody signed.
        assert!(check(evidence(vec![fill(1, 9, "sell", "60000", "0.1", "0")], vec![], vec![])).contains("no order this wallet signed"));
        // Signed by another key.
        let e = evidence(vec![fill(1, 21, "sell", "60000", "0.1", "0")], vec![], vec![order(&other, 21, "sell", "60000", "0.1")]);
        assert!(check(e).contains("another key"));
        // A body changed after signing.
        let mut forged = order(&key, 21, "sell", "60000", "0.1");
        forged.body = forged.body.replace("0.1", "1.0");
        assert!(check(evidence(vec![fill(1, 21, "sell", "60000", "1.0", "0")], vec![], vec![forged])).contains("signature"));
        // The wrong side, a price beyond the limit, more than ordered.
        let signed_sell = || vec![order(&key, 21, "sell", "60000", "0.1")];
        assert!(check(evidence(vec![fill(1, 21, "buy", "60000", "0.1", "0")], vec![], signed_sell())).contains("signed a sell"));
        assert!(check(evidence(vec![fill(1, 21, "sell", "59999", "0.1", "0")], vec![], signed_sell())).contains("below"));
        let over = vec![fill(1, 21, "sell", "60000", "0.06", "0"), fill(2, 21, "sell", "60000", "0.05", "0")];
        assert!(check(evidence(over, vec![], signed_sell())).contains("filled of an order for"));
        // A fill outside the window.
        let mut late = fill(1, 21, "sell", "60000", "0.1", "0");
        late.seq = 101;
        assert!(check(evidence(vec![late], vec![], signed_sell())).contains("outside the window"));
        // A withdrawal the wallet never asked for.
        let e = evidence(vec![], vec![EvidenceWithdrawal { withdrawal_id: 4, status: "pending".into() }], vec![]);
        assert_eq!(prove(&e, &key.x_only()), Err(EvidenceError::UnbackedWithdrawal(4)));
        // A request that is not what its kind says.
        let wrong_path = signed(&key, "order", 21, "/v1/withdrawals", json!({"market": "BTC-USD"}), 1);
        assert!(check(evidence(vec![], vec![], vec![wrong_path])).contains("is not made by"));
    }

    #[test]
    fn market_orders_are_bounded_by_their_protection_price_when_signed_with_one() {
        let key = DeviceKey::generate();
        let body = json!({"market": "BTC-USD", "side": "buy", "type": "market", "quantity": "0.1", "protection_price": "61000"});
        let bounded = signed(&key, "order", 5, "/v1/orders", body, 1);
        let e = evidence(vec![fill(1, 5, "buy", "61500", "0.1", "0")], vec![], vec![bounded]);
        assert!(prove(&e, &key.x_only()).unwrap_err().to_string().contains("above"));
        let body = json!({"market": "BTC-USD", "side": "buy", "type": "market", "quantity": "0.1"});
        let unbounded = signed(&key, "order", 5, "/v1/orders", body, 1);
        let e = evidence(vec![fill(1, 5, "buy", "61500", "0.1", "0")], vec![], vec![unbounded]);
        assert_eq!(prove(&e, &key.x_only()).unwrap().net_out_sat, -10_000_000);
    }
}
