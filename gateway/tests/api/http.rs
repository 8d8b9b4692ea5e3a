//! The REST API end to end: accounts, deposits, orders, fills, history, and every bad input.

use crate::harness::*;
use awc::http::Method;
use serde_json::{json, Value};
use tandem_gateway::auth::now_millis;
use tandem_matching::Side;

#[actix_web::test]
async fn operator_opens_accounts_and_credits_fiat_only() {
    let ex = Exchange::start().await;
    let a = ex.user().await;
    assert_eq!(a.key.len(), 64);
    assert_eq!(a.secret.len(), 64);
    let b = ex.user().await;
    assert_ne!(a.account, b.account);
    assert_ne!(a.key, b.key);

    let r = ex
        .operator(
            "POST",
            "/v1/operator/deposits",
            &format!(r#"{{"account_id":{},"asset":"USD","amount":"1500.25","reference":"wire-1"}}"#, a.account),
        )
        .await;
    let body = r.ok();
    assert_eq!(body["deposit"]["amount"], "1500.25");
    assert_eq!(body["balance"]["available"], "1500.25");
    // The same reference twice is one deposit.
    let again = ex
        .operator(
            "POST",
            "/v1/operator/deposits",
            &format!(r#"{{"account_id":{},"asset":"USD","amount":"1500.25","reference":"wire-1"}}"#, a.account),
        )
        .await;
    again.err(409, "duplicate_deposit");
    let btc = ex
        .operator(
            "POST",
            "/v1/operator/deposits",
            &format!(r#"{{"account_id":{},"asset":"BTC","amount":"1","reference":"x"}}"#, a.account),
        )
        .await;
    btc.err(400, "unsupported_asset");
    let nobody = ex
        .operator("POST", "/v1/operator/deposits", r#"{"account_id":999,"asset":"USD","amount":"1","reference":"y"}"#)
        .await;
    nobody.err(404, "unknown_account");
    let fee_kind = ex.operator("POST", "/v1/operator/accounts", r#"{"kind":"fee"}"#).await;
    fee_kind.err(400, "bad_request");

    let acct = ex.operator("GET", &format!("/v1/operator/accounts/{}", a.account), "").await;
    let usd = acct.ok()["balances"].as_array().unwrap().iter().find(|b| b["asset"] == "USD").unwrap().clone();
    assert_eq!(usd["available"], "1500.25");
    ex.operator("GET", "/v1/operator/accounts/424242", "").await.err(404, "unknown_account");
    let state = ex.operator("GET", "/v1/operator/state", "").await;
    let expected = ex.sequencer.read(|e| (e.last_seq().0, e.state_hash().to_string())).await.unwrap();
    assert_eq!((state.ok()["last_seq"].as_u64().unwrap(), state.body["state_hash"].as_str().unwrap().to_owned()), expected);

    // The user sees the same balance through the signed API.
    let mine = ex.signed(&a, "GET", "/v1/balances", "").await;
    let usd = mine.ok()["balances"].as_array().unwrap().iter().find(|b| b["asset"] == "USD").unwrap().clone();
    assert_eq!(usd, json!({"asset": "USD", "available": "1500.25", "locked": "0.00", "total": "1500.25"}));

    // Halt and resume.
    ex.operator("POST", "/v1/operator/markets/BTC-USD/halt", "").await.ok();
    ex.operator("POST", "/v1/operator/markets/BTC-USD/halt", "").await.err(409, "already_halted");
    let markets = ex.public("/v1/markets").await;
    assert_eq!(markets.ok()["markets"][0]["halted"], true);
    ex.deposit_usd(&b, "100.00").await;
    ex.signed(&b, "POST", "/v1/orders", &limit_order(Side::Buy, "100.00", "0.1")).await.err(409, "market_halted");
    ex.operator("POST", "/v1/operator/markets/BTC-USD/resume", "").await.ok();
    ex.operator("POST", "/v1/operator/markets/NOPE/resume", "").await.err(404, "unknown_market");

    // An operator takes a deposit back: at once when the account still has it.
    let credit = json!({"account_id": b.account, "asset": "USD", "amount": "5.00", "reference": "wire-to-reverse"});
    ex.operator("POST", "/v1/operator/deposits", &credit.to_string()).await.ok();
    let body = json!({"asset": "USD", "reference": "wire-to-reverse"}).to_string();
    let reversed = ex.operator("POST", "/v1/operator/deposits/reverse", &body).await;
    assert_eq!(reversed.ok()["status"], "reversed");
    ex.operator("POST", "/v1/operator/deposits/reverse", &body).await.err(409, "deposit_already_reversed");
    let unknown = json!({"asset": "USD", "reference": "nope"}).to_string();
    ex.operator("POST", "/v1/operator/deposits/reverse", &unknown).await.err(404, "unknown_deposit");

    // A frozen account cannot place orders or withdraw until unfrozen.
    let path = format!("/v1/operator/accounts/{}/freeze", b.account);
    ex.operator("POST", &path, "").await.ok();
    ex.operator("POST", &path, "").await.err(409, "already_frozen");
    ex.signed(&b, "POST", "/v1/orders", &limit_order(Side::Buy, "100.00", "0.1")).await.err(403, "account_frozen");
    let account = ex.operator("GET", &format!("/v1/operator/accounts/{}", b.account), "").await;
    assert_eq!(account.ok()["frozen"], true);
    let path = format!("/v1/operator/accounts/{}/unfreeze", b.account);
    ex.operator("POST", &path, "").await.ok();
    ex.operator("POST", &path, "").await.err(409, "not_frozen");

    // The operator's cancel-all empties the market for every account.
    ex.signed(&b, "POST", "/v1/orders", &limit_order(Side::Buy, "100.00", "0.1")).await.ok();
    ex.signed(&b, "POST", "/v1/orders", &limit_order(Side::Buy, "99.00", "0.1")).await.ok();
    let canceled = ex.operator("POST", "/v1/operator/markets/BTC-USD/cancel-all", "").await;
    assert_eq!(canceled.ok()["canceled"], 2);
    assert_eq!(ex.sequencer.read(|e| e.open_order_count()).await.unwrap(), 0);
    ex.stop().await;
}

#[actix_web::test]
async fn place_cross_amend_cancel_and_history() {
    let ex = Exchange::start().await;
    let buyer = ex.user().await;
    let seller = ex.user().await;
    ex.deposit_usd(&buyer, "100000.00").await;
    ex.deposit_btc(&seller, 100_000_000).await;

    // A resting bid with a client order id.
    let body = r#"{"market":"BTC-USD","side":"buy","type":"limit","price":"65000.00","quantity":"0.01","time_in_force":"GTC","post_only":false,"client_order_id":"bid-1","self_trade_prevention":"cancel_resting"}"#;
    let placed = ex.signed(&buyer, "POST", "/v1/orders", body).await;
    let order = placed.ok()["order"].clone();
    let bid_id = order["order_id"].as_u64().unwrap();
    assert_eq!(order["status"], "new");
    assert_eq!(order["client_order_id"], "bid-1");
    assert_eq!(order["price"], "65000.00");
    assert_eq!(order["quantity"], "0.01000000");
    assert_eq!(order["remaining"], "0.01000000");
    assert_eq!(order["filled"], "0.00000000");
    assert_eq!(order["type"], "limit");
    assert_eq!(order["time_in_force"], "GTC");
    assert_eq!(placed.body["fills"], json!([]));

    let balances = ex.signed(&buyer, "GET", "/v1/balances", "").await;
    let usd = balances.ok()["balances"][1].clone();
    assert_eq!((usd["available"].as_str(), usd["locked"].as_str()), (Some("99350.00"), Some("650.00")));

    // A retry with the same client order id makes no second order and shows the first.
    let before = ex.facts(&buyer).await;
    let dup = ex.signed(&buyer, "POST", "/v1/orders", body).await;
    dup.err(409, "duplicate_client_order_id");
    assert_eq!(dup.body["order"]["order_id"], bid_id);
    assert_eq!(dup.body["order"]["status"], "new");
    assert_eq!(ex.facts(&buyer).await, before);

    // Read it back (open: from the engine).
    let got = ex.signed(&buyer, "GET", &format!("/v1/orders/{bid_id}"), "").await;
    assert_eq!(got.ok()["order"]["order_id"], bid_id);
    // Someone else's order is unknown.
    ex.signed(&seller, "GET", &format!("/v1/orders/{bid_id}"), "").await.err(404, "unknown_order");
    ex.signed(&seller, "DELETE", &format!("/v1/orders/{bid_id}"), "").await.err(404, "unknown_order");

    // Amend down at the same price: keeps priority, new total 0.005.
    let amended = ex.signed(&buyer, "PATCH", &format!("/v1/orders/{bid_id}"), r#"{"quantity":"0.005"}"#).await;
    let o = amended.ok()["order"].clone();
    assert_eq!((o["quantity"].as_str(), o["status"].as_str()), (Some("0.00500000"), Some("new")));
    ex.signed(&buyer, "PATCH", &format!("/v1/orders/{bid_id}"), r#"{"quantity":"0.005"}"#)
        .await
        .err(400, "amend_no_change");
    ex.signed(&buyer, "PATCH", &format!("/v1/orders/{bid_id}"), "{}").await.err(400, "bad_request");

    // The seller crosses with an IOC for more than rests: one fill, the rest expires.
    let sell = r#"{"market":"BTC-USD","side":"sell","type":"limit","price":"64000.00","quantity":"0.008","time_in_force":"IOC"}"#;
    let crossed = ex.signed(&seller, "POST", "/v1/orders", sell).await;
    let reply = crossed.ok().clone();
    assert_eq!(reply["order"]["status"], "expired");
    assert_eq!(reply["order"]["filled"], "0.00500000");
    assert_eq!(reply["order"]["remaining"], "0.00000000");
    assert_eq!(reply["order"]["quote_filled"], "325.00");
    assert_eq!(reply["order"]["average_price"], "65000.00");
    let fills = reply["fills"].as_array().unwrap();
    assert_eq!(fills.len(), 1);
    let fill = &fills[0];
    assert_eq!(fill["price"], "65000.00", "trades at the maker's price");
    assert_eq!(fill["quantity"], "0.00500000");
    assert_eq!(fill["liquidity"], "taker");
    assert_eq!(fill["side"], "sell");
    assert_eq!(fill["fee_asset"], "USD");
    assert_eq!(fill["fee"], "0.65", "20 bps of 325.00");
    assert!(fill["trade_id"].as_u64().is_some());

    // The bid is now filled: read from history, with the maker's view of the fill.
    let got = ex.signed(&buyer, "GET", &format!("/v1/orders/{bid_id}"), "").await;
    let o = got.ok()["order"].clone();
    assert_eq!(
        (o["status"].as_str(), o["filled"].as_str(), o["quote_filled"].as_str()),
        (Some("filled"), Some("0.00500000"), Some("325.00"))
    );
    let my_fills = ex.signed(&buyer, "GET", "/v1/trades?market=BTC-USD&limit=10", "").await;
    let f = my_fills.ok()["fills"][0].clone();
    assert_eq!(
        (f["liquidity"].as_str(), f["side"].as_str(), f["fee_asset"].as_str()),
        (Some("maker"), Some("buy"), Some("BTC"))
    );
    let public = ex.public("/v1/markets/BTC-USD/trades?limit=5").await;
    assert_eq!(public.ok()["trades"][0]["taker_side"], "sell");
    assert!(public.body["trades"][0].get("taker_account").is_none(), "public trades name no accounts");
    let ledger = ex.signed(&buyer, "GET", "/v1/ledger?limit=50", "").await;
    assert!(!ledger.ok()["entries"].as_array().unwrap().is_empty());

    // Cancel by id, by client order id, and all in a market.
    let p = ex.signed(&buyer, "POST", "/v1/orders", &limit_order(Side::Buy, "60000.00", "0.001")).await;
    let id = p.ok()["order"]["order_id"].as_u64().unwrap();
    let c = ex.signed(&buyer, "DELETE", &format!("/v1/orders/{id}"), "").await;
    assert_eq!(c.ok()["order"]["status"], "canceled");
    assert_eq!(c.body["order"]["remaining"], "0.00000000");
    ex.signed(&buyer, "DELETE", &format!("/v1/orders/{id}"), "").await.err(404, "unknown_order");

    let p = r#"{"market":"BTC-USD","side":"buy","type":"limit","price":"60000.00","quantity":"0.001","client_order_id":"cxl-me"}"#;
    let id = ex.signed(&buyer, "POST", "/v1/orders", p).await.ok()["order"]["order_id"].as_u64().unwrap();
    let c = ex.signed(&buyer, "DELETE", "/v1/orders?client_order_id=cxl-me", "").await;
    assert_eq!(
        (c.ok()["order"]["order_id"].as_u64(), c.body["order"]["status"].as_str()),
        (Some(id), Some("canceled"))
    );
    assert_eq!(c.body["order"]["client_order_id"], "cxl-me");

    for price in ["59000.00", "58000.00"] {
        ex.signed(&buyer, "POST", "/v1/orders", &limit_order(Side::Buy, price, "0.001")).await.ok();
    }
    let open = ex.signed(&buyer, "GET", "/v1/orders?market=BTC-USD&status=open", "").await;
    assert_eq!(open.ok()["orders"].as_array().unwrap().len(), 2);
    let all = ex.signed(&buyer, "DELETE", "/v1/orders?market=BTC-USD", "").await;
    assert_eq!(all.ok()["canceled"].as_array().unwrap().len(), 2);
    let open = ex.signed(&buyer, "GET", "/v1/orders", "").await;
    assert_eq!(open.ok()["orders"], json!([]));
    let history = ex.signed(&buyer, "GET", "/v1/orders?status=all&limit=100", "").await;
    let history = history.ok()["orders"].as_array().unwrap().clone();
    assert_eq!(history.len(), 5);
    assert!(history.windows(2).all(|w| w[0]["order_id"].as_u64() > w[1]["order_id"].as_u64()), "newest first");
    ex.signed(&buyer, "GET", "/v1/orders?status=weird", "").await.err(400, "bad_request");

    // Market orders: refused on an empty side without a protection price, filled otherwise.
    ex.signed(
        &seller,
        "POST",
        "/v1/orders",
        r#"{"market":"BTC-USD","side":"sell","type":"market","quantity":"0.001"}"#,
    )
    .await
    .err(400, "no_liquidity");
    ex.signed(&buyer, "POST", "/v1/orders", &limit_order(Side::Buy, "65000.00", "0.002")).await.ok();
    let m = ex
        .signed(
            &seller,
            "POST",
            "/v1/orders",
            r#"{"market":"BTC-USD","side":"sell","type":"market","quantity":"0.001"}"#,
        )
        .await;
    let m = m.ok().clone();
    assert_eq!((m["order"]["type"].as_str(), m["order"]["status"].as_str()), (Some("market"), Some("filled")));
    assert_eq!(m["order"]["time_in_force"], "IOC");
    assert_eq!(m["order"]["price"], "61750.00", "protection: best bid minus 5%");
    assert_eq!(m["fills"][0]["price"], "65000.00");
    ex.signed(
        &seller,
        "POST",
        "/v1/orders",
        r#"{"market":"BTC-USD","side":"sell","type":"market","quantity":"0.001","price":"1.00"}"#,
    )
    .await
    .err(400, "bad_request");

    // Amend that crosses loses priority and trades: the fills come back with the amend.
    let ask = ex.signed(&seller, "POST", "/v1/orders", &limit_order(Side::Sell, "70000.00", "0.001")).await;
    let ask_id = ask.ok()["order"]["order_id"].as_u64().unwrap();
    let a = ex.signed(&seller, "PATCH", &format!("/v1/orders/{ask_id}"), r#"{"price":"65000.00"}"#).await;
    let a = a.ok().clone();
    assert_eq!(a["order"]["status"], "filled");
    assert_eq!(a["fills"][0]["liquidity"], "taker");
    ex.stop().await;
}

#[actix_web::test]
async fn bad_inputs_are_refused_and_change_nothing() {
    let ex = Exchange::start().await;
    let user = ex.user().await;
    ex.deposit_usd(&user, "1000.00").await;
    let before = ex.facts(&user).await;
    let seq_before = ex.last_seq().await;

    let order = |fields: &str| format!(r#"{{"market":"BTC-USD","side":"buy","type":"limit",{fields}}}"#);
    // Refused at the edge: nothing reaches the journal.
    let edge: Vec<(String, u16, &str)> = vec![
        (r#"{"market":"BTC-USD","#.into(), 400, "malformed_json"),
        ("not json".into(), 400, "malformed_json"),
        (order(r#""price":"65000.00","quantity":0.001"#), 400, "bad_request"),
        (order(r#""price":"65000.00","quantity":"0.001","colour":"red""#), 400, "bad_request"),
        (order(r#""price":"65000.00""#), 400, "bad_request"),
        (
            r#"{"market":"BTC-USD","side":"up","type":"limit","price":"1.00","quantity":"0.001"}"#.into(),
            400,
            "bad_request",
        ),
        (
            r#"{"market":"DOGE-USD","side":"buy","type":"limit","price":"1.00","quantity":"0.001"}"#.into(),
            404,
            "unknown_market",
        ),
        (order(r#""price":"65000.05","quantity":"0.001""#), 400, "price_off_tick"),
        (order(r#""price":"0","quantity":"0.001""#), 400, "price_off_tick"),
        (order(r#""price":"65000.00","quantity":"0.000001""#), 400, "quantity_off_lot"),
        (order(r#""price":"65000.00","quantity":"0""#), 400, "quantity_off_lot"),
        (order(r#""price":"65000.00","quantity":"0.000000001""#), 400, "bad_precision"),
        (order(r#""price":"65000.001","quantity":"0.001""#), 400, "bad_precision"),
        (order(r#""price":"65000.00","quantity":"-1""#), 400, "out_of_range"),
        (order(r#""price":"-65000.00","quantity":"0.001""#), 400, "out_of_range"),
        (order(r#""price":"65000.00","quantity":"100000000000""#), 400, "out_of_range"),
        (order(r#""price":"65000.00","quantity":"1e3""#), 400, "bad_request"),
        (order(r#""price":"0.10","quantity":"0.001""#), 400, "below_min_notional"),
        (order(r#""price":"65000.00","quantity":"0.001","client_order_id":"has space""#), 400, "bad_request"),
        (order(r#""price":"65000.00","quantity":"0.001","time_in_force":"GTD""#), 400, "bad_request"),
    ];
    for (body, status, code) in &edge {
        let r = ex.signed(&user, "POST", "/v1/orders", body).await;
        assert_eq!((r.status, r.code()), (*status, *code), "{body} -> {}", r.body);
    }
    assert_eq!(ex.last_seq().await, seq_before, "edge rejects never reach the journal");
    assert_eq!(ex.facts(&user).await, before);

    // Refused by the engine: journaled as a reject, state untouched.
    ex.signed(&user, "POST", "/v1/orders", &limit_order(Side::Buy, "65000.00", "1"))
        .await
        .err(400, "insufficient_balance");
    assert_eq!(ex.facts(&user).await, before);

    // Authentication.
    let body = limit_order(Side::Buy, "100.00", "0.01");
    let path = "/v1/orders";
    let now = now_millis();
    let mut h = Exchange::headers(&user, now, "POST", path, body.as_bytes());
    h[2].1 = tandem_gateway::sign(&user.secret, now, "POST", path, b"something else");
    ex.raw(Method::POST, path, &h, body.as_bytes()).await.err(401, "bad_signature");
    let h = Exchange::headers(&user, now - 60_000, "POST", path, body.as_bytes());
    ex.raw(Method::POST, path, &h, body.as_bytes()).await.err(401, "stale_timestamp");
    let h = Exchange::headers(&user, now + 60_000, "POST", path, body.as_bytes());
    ex.raw(Method::POST, path, &h, body.as_bytes()).await.err(401, "stale_timestamp");
    let stranger = User { key: "f".repeat(64), ..user.clone() };
    let h = Exchange::headers(&stranger, now, "POST", path, body.as_bytes());
    ex.raw(Method::POST, path, &h, body.as_bytes()).await.err(401, "unknown_api_key");
    ex.raw(Method::POST, path, &[], body.as_bytes()).await.err(401, "missing_credentials");
    // The signature covers the query string too.
    let h = Exchange::headers(&user, now, "GET", "/v1/orders?status=open", b"");
    ex.raw(Method::GET, "/v1/orders?status=all", &h, b"").await.err(401, "bad_signature");
    // Bad JSON from an unauthenticated caller is an auth failure first.
    ex.raw(Method::POST, path, &[], b"{").await.err(401, "missing_credentials");

    // Operator token.
    let deposit = format!(r#"{{"account_id":{},"asset":"USD","amount":"5","reference":"r"}}"#, user.account);
    ex.raw(Method::POST, "/v1/operator/deposits", &[("Authorization", "Bearer wrong".into())], deposit.as_bytes())
        .await
        .err(401, "bad_operator_token");
    ex.raw(Method::POST, "/v1/operator/deposits", &[], deposit.as_bytes()).await.err(401, "bad_operator_token");
    ex.raw(Method::POST, "/v1/operator/accounts", &[("Authorization", format!("Basic {OPERATOR_TOKEN}"))], b"{}")
        .await
        .err(401, "bad_operator_token");
    ex.operator("POST", "/v1/operator/deposits", r#"{"account_id":"one","asset":"USD","amount":"5","reference":"r"}"#)
        .await
        .err(400, "bad_request");
    ex.operator("POST", "/v1/operator/deposits", &deposit.replace("\"5\"", "\"5.001\""))
        .await
        .err(400, "bad_precision");

    // Too large a body.
    let big = format!(r#"{{"market":"BTC-USD","pad":"{}"}}"#, "x".repeat(MAX_BODY));
    let r = ex.signed(&user, "POST", "/v1/orders", &big).await;
    r.err(413, "payload_too_large");

    // Path and query junk.
    ex.signed(&user, "GET", "/v1/orders/abc", "").await.err(400, "bad_request");
    ex.signed(&user, "GET", "/v1/orders?limit=0", "").await.err(400, "out_of_range");
    ex.signed(&user, "GET", "/v1/orders?limit=lots", "").await.err(400, "bad_request");
    ex.public("/v1/markets/BTC-USD/book?depth=0").await.err(400, "out_of_range");
    ex.public("/v1/markets/BTC-USD/book?depth=x").await.err(400, "bad_request");
    ex.public("/v1/markets/NOPE/book").await.err(404, "unknown_market");
    ex.public("/v1/nowhere").await.err(404, "not_found");
    ex.raw(Method::PUT, "/v1/markets", &[], b"").await.err(405, "method_not_allowed");

    assert_eq!(ex.facts(&user).await, before, "no rejected request changed anything");
    ex.stop().await;
}

#[actix_web::test]
async fn withdrawals_check_destinations() {
    let ex = Exchange::start().await;
    let user = ex.user().await;
    ex.deposit_usd(&user, "500.00").await;
    ex.deposit_btc(&user, 50_000_000).await;
    let before = ex.facts(&user).await;

    let w = |asset: &str, amount: &str, dest: &str| {
        json!({"asset": asset, "amount": amount, "destination": dest}).to_string()
    };
    // Not an address, and a mainnet address on a regtest exchange.
    ex.signed(&user, "POST", "/v1/withdrawals", &w("BTC", "0.1", "not-an-address")).await.err(400, "bad_address");
    ex.signed(&user, "POST", "/v1/withdrawals", &w("BTC", "0.1", "bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq"))
        .await
        .err(400, "bad_address");
    ex.signed(&user, "POST", "/v1/withdrawals", &w("USD", "1.00", "")).await.err(400, "bad_destination");
    ex.signed(&user, "POST", "/v1/withdrawals", &w("USD", "1.00", "line\nbreak")).await.err(400, "bad_destination");
    ex.signed(&user, "POST", "/v1/withdrawals", &w("USD", "1000.00", "IBAN DE89"))
        .await
        .err(400, "insufficient_balance");
    ex.signed(&user, "POST", "/v1/withdrawals", &w("USD", "0", "IBAN DE89")).await.err(400, "zero_amount");
    ex.signed(&user, "POST", "/v1/withdrawals", &w("XRP", "1", "r")).await.err(404, "unknown_asset");
    assert_eq!(ex.facts(&user).await, before);

    let address = bitcoin::Address::p2wsh(&bitcoin::ScriptBuf::new(), bitcoin::Network::Regtest).to_string();
    let r = ex.signed(&user, "POST", "/v1/withdrawals", &w("BTC", "0.1", &address)).await;
    let wd = r.ok()["withdrawal"].clone();
    assert_eq!(
        (wd["status"].as_str(), wd["amount"].as_str(), wd["asset"].as_str()),
        (Some("pending"), Some("0.10000000"), Some("BTC"))
    );
    assert_eq!(wd["destination"], Value::String(address));
    // A captured withdrawal request sent again, even inside the timestamp window, is refused:
    // otherwise it would debit twice. Upper-casing the signature's hex does not disguise it.
    let body = w("USD", "100.00", "IBAN DE89 3704 0044 0532 0130 00");
    let headers = Exchange::headers(&user, stamp(), "POST", "/v1/withdrawals", body.as_bytes());
    ex.raw(actix_web::http::Method::POST, "/v1/withdrawals", &headers, body.as_bytes()).await.ok();
    let before_replay = ex.facts(&user).await;
    ex.raw(actix_web::http::Method::POST, "/v1/withdrawals", &headers, body.as_bytes()).await.err(401, "replayed_request");
    let shouted: Vec<(&str, String)> = headers
        .iter()
        .map(|(k, v)| (*k, if k.eq_ignore_ascii_case("x-tandem-signature") { v.to_ascii_uppercase() } else { v.clone() }))
        .collect();
    ex.raw(actix_web::http::Method::POST, "/v1/withdrawals", &shouted, body.as_bytes()).await.err(401, "replayed_request");
    assert_eq!(ex.facts(&user).await, before_replay);

    let list = ex.signed(&user, "GET", "/v1/withdrawals", "").await;
    assert_eq!(list.ok()["withdrawals"].as_array().unwrap().len(), 2);
    let balances = ex.signed(&user, "GET", "/v1/balances", "").await;
    let btc = balances.ok()["balances"][0].clone();
    assert_eq!((btc["available"].as_str(), btc["locked"].as_str()), (Some("0.40000000"), Some("0.10000000")));
    let deposits = ex.signed(&user, "GET", "/v1/deposits", "").await;
    assert_eq!(deposits.ok()["deposits"].as_array().unwrap().len(), 2);
    ex.stop().await;
}

#[actix_web::test]
async fn public_endpoints_health_and_metrics() {
    let ex = Exchange::start().await;
    let h = ex.public("/v1/health").await;
    assert_eq!(h.ok()["status"], "ok");
    assert!(h.body["last_seq"].as_u64().is_some() && h.body["projected_seq"].as_u64().is_some());

    let m = ex.public("/v1/markets").await;
    let market = m.ok()["markets"][0].clone();
    assert_eq!(market["symbol"], "BTC-USD");
    assert_eq!(market["tick_size"], "0.10");
    assert_eq!(market["lot_size"], "0.00001000");
    assert_eq!(market["min_notional"], "1.00");
    assert_eq!(market["halted"], false);

    let user = ex.user().await;
    ex.deposit_usd(&user, "1000.00").await;
    ex.signed(&user, "POST", "/v1/orders", &limit_order(Side::Buy, "100.00", "0.5")).await.ok();
    ex.signed(&user, "POST", "/v1/orders", &limit_order(Side::Buy, "100.00", "0.25")).await.ok();
    ex.signed(&user, "POST", "/v1/orders", &limit_order(Side::Buy, "99.90", "0.1")).await.ok();
    let book = ex.public("/v1/markets/btc-usd/book?depth=1").await;
    let book = book.ok().clone();
    assert_eq!(book["bids"], json!([["100.00", "0.75000000"]]));
    assert_eq!(book["asks"], json!([]));
    assert_eq!(book["book_seq"], 3);

    let text = ex.client.get(format!("{}/metrics", ex.base)).send().await.unwrap().body().await.unwrap();
    let text = String::from_utf8(text.to_vec()).unwrap();
    for name in [
        "tandem_http_requests_total{method=\"POST\",route=\"/v1/orders\",status=\"200\"} 3",
        "tandem_http_request_duration_seconds_bucket",
        "tandem_engine_commands_applied_total",
        "tandem_engine_commands_rejected_total",
        "tandem_engine_trades_total",
        "tandem_journal_batches_total",
        "tandem_journal_commit_seconds_total",
        "tandem_journal_commit_seconds_max",
        "tandem_engine_last_seq",
        "tandem_engine_open_orders 3",
        "tandem_snapshots_total",
        "tandem_projector_projected_seq",
    ] {
        assert!(text.contains(name), "{name} missing from\n{text}");
    }
    ex.stop().await;
}

#[actix_web::test]
async fn configure_embeds_in_a_larger_app() {
    use actix_web::{test, web, App};
    let (owner, gateway) = build(|_| {}).await;
    let data = web::Data::new(gateway);
    let app = test::init_service(
        App::new()
            .configure(|c| tandem_gateway::configure(c, data.clone()))
            .route("/extra", web::get().to(|| async { "extra" })),
    )
    .await;
    let res = test::call_service(&app, test::TestRequest::get().uri("/extra").to_request()).await;
    assert_eq!(res.status(), 200, "the embedding app's own routes still work");
    let res = test::call_service(&app, test::TestRequest::get().uri("/v1/markets").to_request()).await;
    assert_eq!(res.status(), 200);
    let res = test::call_service(&app, test::TestRequest::get().uri("/v2/nope").to_request()).await;
    assert_eq!(res.status(), 404);
    let body: Value = test::read_body_json(res).await;
    assert_eq!(body["error"]["code"], "not_found");
    drop(app);
    drop(data);
    let _ = tokio::task::spawn_blocking(move || owner.shutdown()).await;
}

/// Waits out the end of a minute, so a test's requests fall in one budget window.
async fn early_in_a_minute() {
    let into_minute = now_millis() % 60_000;
    if into_minute > 50_000 {
        tokio::time::sleep(std::time::Duration::from_millis(60_000 - into_minute + 50)).await;
    }
}

#[actix_web::test]
async fn budgets_answer_429_with_retry_after_and_spend_nothing_else() {
    let ex = Exchange::start_with(|c| {
        c.limits = tandem_gateway::limits::LimitConfig { per_caller_per_minute: 3, per_ip_per_minute: 12 }
    })
    .await;
    early_in_a_minute().await;
    let (alice, bob) = (ex.user().await, ex.user().await); // IP: 2
    ex.deposit_usd(&alice, "1000.00").await; // IP: 3

    // A request whose signature fails spends the IP's budget, not the key's owner's.
    let mut forged = Exchange::headers(&alice, stamp(), "GET", "/v1/balances", b"");
    forged[2].1 = "00".repeat(32);
    ex.raw(Method::GET, "/v1/balances", &forged, b"").await.err(401, "bad_signature"); // IP: 4

    for remaining in ["2", "1", "0"] {
        let r = ex.signed(&alice, "GET", "/v1/balances", "").await;
        r.ok();
        assert_eq!((r.header("x-ratelimit-limit"), r.header("x-ratelimit-remaining")), (Some("3"), Some(remaining)));
        let reset: u64 = r.header("x-ratelimit-reset").unwrap().parse().unwrap();
        assert!((1..=60).contains(&reset), "reset in {reset} s");
    } // IP: 7

    let before = ex.facts(&alice).await;
    let refused = ex.signed(&alice, "POST", "/v1/orders", &limit_order(Side::Buy, "100.00", "0.1")).await; // IP: 8
    refused.err(429, "rate_limited");
    let retry: u64 = refused.header("retry-after").expect("Retry-After").parse().unwrap();
    assert!((1..=60).contains(&retry), "retry after {retry} s");
    assert_eq!(refused.header("x-ratelimit-remaining"), Some("0"));
    assert_eq!(ex.facts(&alice).await, before, "a refused order changes nothing");

    // Bob has a budget of his own; the IP's is the tighter once it runs low.
    let r = ex.signed(&bob, "GET", "/v1/balances", "").await; // IP: 9
    r.ok();
    assert_eq!(r.header("x-ratelimit-remaining"), Some("2"));
    for remaining in ["2", "1", "0"] {
        let r = ex.public("/v1/markets").await; // IP: 10, 11, 12
        assert_eq!((r.status, r.header("x-ratelimit-remaining")), (200, Some(remaining)));
    }
    let r = ex.public("/v1/markets").await;
    r.err(429, "rate_limited");
    assert_eq!(r.header("x-ratelimit-limit"), Some("12"));
    assert!(r.header("retry-after").is_some());
    ex.stop().await;
}

#[actix_web::test]
async fn an_idempotency_key_makes_a_retried_write_happen_once() {
    let ex = Exchange::start().await;
    let (alice, bob) = (ex.user().await, ex.user().await);
    ex.deposit_usd(&alice, "1000.00").await;
    ex.deposit_usd(&bob, "1000.00").await;
    // Each try is signed anew, as a client retrying after a timeout does.
    let send = async |user: &User, key: &str, body: &str| {
        let mut headers = Exchange::headers(user, stamp(), "POST", "/v1/orders", body.as_bytes());
        headers.push(("Idempotency-Key", key.to_owned()));
        ex.raw(Method::POST, "/v1/orders", &headers, body.as_bytes()).await
    };
    let open = async |user: &User| ex.signed(user, "GET", "/v1/orders", "").await.ok()["orders"].as_array().unwrap().len();
    let order = limit_order(Side::Buy, "100.00", "0.5");

    let first = send(&alice, "order-1", &order).await;
    first.ok();
    assert_eq!(first.header("idempotent-replayed"), None);
    let retry = send(&alice, "order-1", &order).await;
    assert_eq!((retry.status, &retry.body), (200, &first.body), "the first answer, again");
    assert_eq!(retry.header("idempotent-replayed"), Some("true"));
    assert_eq!(open(&alice).await, 1, "one order, not two");

    // The same key for another request is refused; a refusal is kept like any answer.
    send(&alice, "order-1", &limit_order(Side::Buy, "100.00", "0.6")).await.err(422, "idempotency_key_reused");
    let too_big = limit_order(Side::Buy, "100.00", "50");
    send(&alice, "order-2", &too_big).await.err(400, "insufficient_balance");
    let again = send(&alice, "order-2", &too_big).await;
    again.err(400, "insufficient_balance");
    assert_eq!(again.header("idempotent-replayed"), Some("true"));

    // Keys are per caller; a key must be short visible ASCII.
    send(&bob, "order-1", &order).await.ok();
    assert_eq!(open(&bob).await, 1);
    send(&bob, &"k".repeat(65), &order).await.err(400, "bad_request");
    assert_eq!(open(&bob).await, 1);
    ex.stop().await;
}

#[actix_web::test]
async fn a_retried_withdrawal_or_order_never_acts_twice() {
    use tandem_gateway::idempotency::{IdempotencyStore, MemoryRecords};
    let records = std::sync::Arc::new(MemoryRecords::default());
    let ex = Exchange::start_with_records(records.clone()).await;
    let alice = ex.user().await;
    ex.deposit_usd(&alice, "1000.00").await;
    let send = async |path: &str, key: Option<&str>, body: &str| {
        let mut headers = Exchange::headers(&alice, stamp(), "POST", path, body.as_bytes());
        if let Some(key) = key {
            headers.push(("Idempotency-Key", key.to_owned()));
        }
        ex.raw(Method::POST, path, &headers, body.as_bytes()).await
    };
    let usd = async || {
        let b = ex.signed(&alice, "GET", "/v1/balances", "").await.ok()["balances"].clone();
        let usd = b.as_array().unwrap().iter().find(|b| b["asset"] == "USD").unwrap().clone();
        (usd["available"].as_str().unwrap().to_owned(), usd["locked"].as_str().unwrap().to_owned())
    };
    let payout = |amount: &str, id: Option<&str>| {
        let mut w = json!({"asset": "USD", "amount": amount, "destination": "IBAN DE89"});
        if let Some(id) = id {
            w["client_withdrawal_id"] = json!(id);
        }
        w.to_string()
    };

    // A client withdrawal id is used once per account; the refusal names the withdrawal it made.
    let first = send("/v1/withdrawals", None, &payout("100.00", Some("payout-7"))).await;
    let made = first.ok()["withdrawal"].clone();
    assert_eq!(made["client_withdrawal_id"], "payout-7");
    let again = send("/v1/withdrawals", None, &payout("100.00", Some("payout-7"))).await;
    again.err(409, "duplicate_client_withdrawal_id");
    assert_eq!(again.body["withdrawal"]["withdrawal_id"], made["withdrawal_id"]);
    assert_eq!(again.body["withdrawal"]["amount"], "100.00");
    assert_eq!(usd().await, ("900.00".into(), "100.00".into()));
    // A refused request does not use up its id; a bad id is refused before anything happens.
    send("/v1/withdrawals", None, &payout("5000.00", Some("payout-8"))).await.err(400, "insufficient_balance");
    send("/v1/withdrawals", None, &payout("20.00", Some("payout-8"))).await.ok();
    send("/v1/withdrawals", None, &payout("20.00", Some("no spaces"))).await.err(400, "bad_request");
    assert_eq!(usd().await, ("880.00".into(), "120.00".into()));

    // With an Idempotency-Key and no id of its own, a withdrawal is made under an id derived from
    // the key. Its record lost (a 503 is not kept: the outcome was unknown; or Redis restarted
    // empty), the retry reaches the engine, which refuses it instead of paying twice.
    let first = send("/v1/withdrawals", Some("payout-9"), &payout("50.00", None)).await;
    let made = first.ok()["withdrawal"].clone();
    assert!(made["client_withdrawal_id"].as_str().unwrap().starts_with("idem-"), "{made}");
    records.forget(&format!("{}:payout-9", alice.key)).await.unwrap();
    let retry = send("/v1/withdrawals", Some("payout-9"), &payout("50.00", None)).await;
    retry.err(409, "duplicate_client_withdrawal_id");
    assert_eq!(retry.body["withdrawal"]["withdrawal_id"], made["withdrawal_id"]);
    assert_eq!(usd().await, ("830.00".into(), "170.00".into()));
    let list = ex.signed(&alice, "GET", "/v1/withdrawals", "").await;
    assert_eq!(list.ok()["withdrawals"].as_array().unwrap().len(), 3);
    assert_eq!(list.ok()["withdrawals"][0]["client_withdrawal_id"], made["client_withdrawal_id"]);

    // Orders alike: the retry meets the first order's derived client order id.
    let order = limit_order(Side::Buy, "100.00", "0.5");
    let first = send("/v1/orders", Some("order-1"), &order).await;
    let placed = first.ok().clone();
    records.forget(&format!("{}:order-1", alice.key)).await.unwrap();
    let retry = send("/v1/orders", Some("order-1"), &order).await;
    retry.err(409, "duplicate_client_order_id");
    assert_eq!(retry.body["order"]["order_id"], placed["order"]["order_id"]);
    let open = ex.signed(&alice, "GET", "/v1/orders", "").await.ok()["orders"].as_array().unwrap().len();
    assert_eq!(open, 1, "one order, not two");
    ex.stop().await;
}
