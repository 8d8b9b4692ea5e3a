//! Binance's market history (aggregate trades, candles, 24-hour ticker), listen keys, and the
//! WebSocket streams under `/ws` and `/stream`, as a Binance client uses them.

use crate::binance::binance;
use crate::harness::{limit_order, Exchange, User};
use crate::websocket::{recv, send, Conn};
use serde_json::{json, Value};
use tandem_matching::Side;

async fn funded(ex: &Exchange) -> User {
    let u = ex.user().await;
    ex.deposit_usd(&u, "100000").await;
    ex.deposit_btc(&u, 100_000_000).await;
    u
}

/// Closes from the client's side, so the server's graceful stop need not wait for it.
async fn close(conn: &mut impl Conn) {
    use futures_util::SinkExt;
    let _ = conn.send(awc::ws::Message::Close(None)).await;
}

/// The next message matching `pick` (others skipped), or a panic after a few seconds each.
async fn recv_where(conn: &mut impl Conn, pick: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..200 {
        let v = recv(conn).await;
        if pick(&v) {
            return v;
        }
    }
    panic!("no such message");
}

#[actix_web::test]
async fn aggregate_trades_candles_and_the_24_hour_ticker() {
    let ex = Exchange::start().await;
    let (a, b, taker) = (funded(&ex).await, funded(&ex).await, funded(&ex).await);
    // Empty before any trade.
    assert_eq!(ex.public("/api/v3/klines?symbol=BTCUSD&interval=1m").await.ok(), &json!([]));
    let t = ex.public("/api/v3/ticker/24hr?symbol=BTCUSD").await;
    assert_eq!((t.ok()["count"].as_u64(), t.ok()["firstId"].as_i64()), (Some(0), Some(-1)));

    ex.signed(&a, "POST", "/v1/orders", &limit_order(Side::Sell, "60000", "0.1")).await.ok();
    ex.signed(&b, "POST", "/v1/orders", &limit_order(Side::Sell, "60000", "0.2")).await.ok();
    ex.signed(&b, "POST", "/v1/orders", &limit_order(Side::Sell, "60100", "0.5")).await.ok();
    ex.signed(&a, "POST", "/v1/orders", &limit_order(Side::Buy, "59000", "0.5")).await.ok();
    // One taker order: two fills at 60,000 (one aggregate), one at 60,100.
    ex.signed(&taker, "POST", "/v1/orders", &limit_order(Side::Buy, "60100", "0.4")).await.ok();
    ex.signed(&taker, "POST", "/v1/orders", &limit_order(Side::Sell, "59000", "0.05")).await.ok();

    let agg = ex.public("/api/v3/aggTrades?symbol=BTCUSD").await;
    let runs = agg.ok().as_array().unwrap().clone();
    assert_eq!(runs.len(), 3, "{runs:?}");
    assert_eq!((runs[0]["p"].as_str(), runs[0]["q"].as_str()), (Some("60000.00000000"), Some("0.30000000")));
    assert_eq!(runs[0]["l"].as_u64().unwrap(), runs[0]["f"].as_u64().unwrap() + 1);
    assert_eq!((runs[1]["p"].as_str(), runs[1]["q"].as_str(), runs[1]["m"].as_bool()), (Some("60100.00000000"), Some("0.10000000"), Some(false)));
    assert_eq!((runs[2]["q"].as_str(), runs[2]["m"].as_bool()), (Some("0.05000000"), Some(true)), "the seller took");
    // Paging from an id never cuts a run.
    let next = runs[0]["a"].as_u64().unwrap() + 1;
    let paged = ex.public(&format!("/api/v3/aggTrades?symbol=BTCUSD&fromId={next}&limit=1")).await;
    assert_eq!(paged.ok()[0]["a"], runs[1]["a"]);
    let too_long = ex.public("/api/v3/aggTrades?symbol=BTCUSD&startTime=0&endTime=7200000").await;
    assert_eq!(too_long.body["code"].as_i64(), Some(-1127));

    // A month's candle holds them all (minutes could split them).
    let month = ex.public("/api/v3/klines?symbol=BTCUSD&interval=1M").await;
    let k = month.ok().as_array().unwrap().last().unwrap().clone();
    assert_eq!(&k.as_array().unwrap()[1..6], &[json!("60000.00000000"), json!("60100.00000000"), json!("59000.00000000"), json!("59000.00000000"), json!("0.45000000")][..]);
    assert_eq!((k[8].as_u64(), k[9].as_str(), k[7].as_str()), (Some(4), Some("0.40000000"), Some("26960.00000000")), "4 trades; takers bought 0.4");
    let minutes = ex.public("/api/v3/klines?symbol=BTCUSD&interval=1m&limit=3").await;
    let minutes = minutes.ok().as_array().unwrap().clone();
    // Minutes before the first trade have no candle; the last is the current minute's.
    assert!(!minutes.is_empty() && minutes.len() <= 2, "{minutes:?}");
    let volume: f64 = minutes.iter().map(|m| m[5].as_str().unwrap().parse::<f64>().unwrap()).sum();
    assert!((volume - 0.45).abs() < 1e-9);
    let m = minutes.last().unwrap();
    assert_eq!(m[6].as_u64().unwrap(), m[0].as_u64().unwrap() + 59_999);
    assert_eq!(ex.public("/api/v3/uiKlines?symbol=BTCUSD&interval=1w").await.ok().as_array().unwrap().last().unwrap()[8], 4);
    let bad = ex.public("/api/v3/klines?symbol=BTCUSD&interval=2m").await;
    assert_eq!((bad.status, bad.body["code"].as_i64(), bad.body["msg"].as_str()), (400, Some(-1120), Some("Invalid interval.")));

    let t = ex.public("/api/v3/ticker/24hr?symbol=BTCUSD").await;
    let t = t.ok();
    assert_eq!((t["openPrice"].as_str(), t["lastPrice"].as_str()), (Some("60000.00000000"), Some("59000.00000000")));
    assert_eq!((t["highPrice"].as_str(), t["lowPrice"].as_str()), (Some("60100.00000000"), Some("59000.00000000")));
    assert_eq!((t["volume"].as_str(), t["count"].as_u64()), (Some("0.45000000"), Some(4)));
    assert_eq!((t["priceChange"].as_str(), t["priceChangePercent"].as_str()), (Some("-1000.00000000"), Some("-1.667")));
    // 18,000 + 6,010 + 2,950 quote for 0.45 BTC.
    assert_eq!(t["quoteVolume"], "26960.00000000");
    assert_eq!(t["weightedAvgPrice"], "59911.11111111");
    assert_eq!((t["bidPrice"].as_str(), t["bidQty"].as_str(), t["askPrice"].as_str()), (Some("59000.00000000"), Some("0.45000000"), Some("60100.00000000")));
    assert_eq!(t["lastQty"], "0.05000000");
    let mini = ex.public("/api/v3/ticker/24hr?type=MINI").await;
    assert!(mini.ok()[0].get("priceChange").is_none());
    ex.stop().await;
}

#[actix_web::test]
async fn listen_keys_need_the_api_key_and_live_an_hour() {
    use actix_web::http::Method;
    let ex = Exchange::start().await;
    let u = ex.user().await;
    let key = [("X-MBX-APIKEY", u.key.clone())];
    let opened = ex.raw(Method::POST, "/api/v3/userDataStream", &key, b"").await;
    let listen_key = opened.ok()["listenKey"].as_str().unwrap().to_owned();
    assert_eq!(listen_key.len(), 60);
    // The same key while it lives.
    let again = ex.raw(Method::POST, "/api/v3/userDataStream", &key, b"").await;
    assert_eq!(again.ok()["listenKey"], listen_key.as_str());
    let keep = ex.raw(Method::PUT, &format!("/api/v3/userDataStream?listenKey={listen_key}"), &key, b"").await;
    assert_eq!(keep.ok(), &json!({}));
    let form = [("X-MBX-APIKEY", u.key.clone()), ("Content-Type", "application/x-www-form-urlencoded".into())];
    let keep = ex.raw(Method::PUT, "/api/v3/userDataStream", &form, format!("listenKey={listen_key}").as_bytes()).await;
    assert_eq!(keep.ok(), &json!({}));
    // Someone else's key, no key, an unknown key.
    let other = ex.user().await;
    let theirs = ex.raw(Method::PUT, &format!("/api/v3/userDataStream?listenKey={listen_key}"), &[("X-MBX-APIKEY", other.key.clone())], b"").await;
    assert_eq!((theirs.status, theirs.body["code"].as_i64(), theirs.body["msg"].as_str()), (400, Some(-1125), Some("This listenKey does not exist.")));
    let anonymous = ex.raw(Method::POST, "/api/v3/userDataStream", &[], b"").await;
    assert_eq!((anonymous.status, anonymous.body["code"].as_i64()), (401, Some(-2014)));
    let missing = ex.raw(Method::PUT, "/api/v3/userDataStream", &key, b"").await;
    assert_eq!(missing.body["code"].as_i64(), Some(-1102));
    let closed = ex.raw(Method::DELETE, &format!("/api/v3/userDataStream?listenKey={listen_key}"), &key, b"").await;
    assert_eq!(closed.ok(), &json!({}));
    let gone = ex.raw(Method::PUT, &format!("/api/v3/userDataStream?listenKey={listen_key}"), &key, b"").await;
    assert_eq!(gone.body["code"].as_i64(), Some(-1125));
    let refused = ex.client.ws(format!("{}/ws/{listen_key}", ex.base.replace("http://", "ws://")).as_str()).connect().await;
    assert!(refused.is_err(), "a closed key opens no stream");
    ex.stop().await;
}

#[actix_web::test]
async fn depth_diffs_follow_the_snapshot_and_sync_rules() {
    let ex = Exchange::start().await;
    let maker = funded(&ex).await;
    ex.signed(&maker, "POST", "/v1/orders", &limit_order(Side::Buy, "59000", "1")).await.ok();

    let ws = ex.base.replace("http://", "ws://");
    let (_r, mut conn) = ex.client.ws(format!("{ws}/ws/btcusd@depth@100ms").as_str()).connect().await.unwrap();
    let conn = &mut conn;
    // Changes while the client reads the snapshot: buffered, then applied on it.
    ex.signed(&maker, "POST", "/v1/orders", &limit_order(Side::Sell, "61000", "0.5")).await.ok();
    let snapshot = ex.public("/api/v3/depth?symbol=BTCUSD").await.ok().clone();
    ex.signed(&maker, "POST", "/v1/orders", &limit_order(Side::Buy, "59500", "0.25")).await.ok();
    ex.signed(&maker, "POST", "/v1/orders", &limit_order(Side::Sell, "61000", "0.5")).await.ok();

    let last_update = snapshot["lastUpdateId"].as_u64().unwrap();
    let mut book: std::collections::BTreeMap<(String, String), String> = Default::default();
    for (side, levels) in [("b", &snapshot["bids"]), ("a", &snapshot["asks"])] {
        for l in levels.as_array().unwrap() {
            book.insert((side.into(), l[0].as_str().unwrap().into()), l[1].as_str().unwrap().into());
        }
    }
    let mut previous: Option<u64> = None;
    while book.get(&("a".into(), "61000.00000000".into())).map(String::as_str) != Some("1.00000000")
        || !book.contains_key(&("b".into(), "59500.00000000".into()))
    {
        let e = recv(conn).await;
        assert_eq!((e["e"].as_str(), e["s"].as_str()), (Some("depthUpdate"), Some("BTCUSD")));
        let (first, last) = (e["U"].as_u64().unwrap(), e["u"].as_u64().unwrap());
        assert!(first <= last);
        if last <= last_update {
            continue; // older than the snapshot
        }
        match previous {
            None => assert!(first <= last_update + 1 && last_update < last, "the first event straddles the snapshot"),
            Some(p) => assert_eq!(first, p + 1, "events continue"),
        }
        previous = Some(last);
        for (side, key) in [("b", "b"), ("a", "a")] {
            for l in e[key].as_array().unwrap() {
                let (price, qty) = (l[0].as_str().unwrap().to_owned(), l[1].as_str().unwrap().to_owned());
                if qty == "0.00000000" {
                    book.remove(&(side.into(), price));
                } else {
                    book.insert((side.into(), price), qty);
                }
            }
        }
    }
    // The synced book is the engine's.
    let now = ex.public("/api/v3/depth?symbol=BTCUSD").await.ok().clone();
    assert_eq!(now["lastUpdateId"].as_u64(), previous);
    assert_eq!(now["bids"], json!([["59500.00000000", "0.25000000"], ["59000.00000000", "1.00000000"]]));
    assert_eq!(now["asks"], json!([["61000.00000000", "1.00000000"]]));
    close(conn).await;
    ex.stop().await;
}

#[actix_web::test]
async fn trades_tops_candles_and_live_subscriptions() {
    let ex = Exchange::start().await;
    let (maker, taker) = (funded(&ex).await, funded(&ex).await);
    let ws = ex.base.replace("http://", "ws://");
    let streams = "btcusd@trade/btcusd@aggTrade/btcusd@bookTicker/btcusd@kline_1m";
    let (_r, mut conn) = ex.client.ws(format!("{ws}/stream?streams={streams}").as_str()).connect().await.unwrap();
    let conn = &mut conn;

    ex.signed(&maker, "POST", "/v1/orders", &limit_order(Side::Sell, "60000", "0.1")).await.ok();
    let top = recv_where(conn, |v| v["stream"] == "btcusd@bookTicker").await;
    assert_eq!((top["data"]["a"].as_str(), top["data"]["A"].as_str(), top["data"]["b"].as_str()), (Some("60000.00000000"), Some("0.10000000"), Some("0.00000000")));
    ex.signed(&maker, "POST", "/v1/orders", &limit_order(Side::Sell, "60000", "0.1")).await.ok();
    ex.signed(&taker, "POST", "/v1/orders", &limit_order(Side::Buy, "60000", "0.15")).await.ok();

    // Streams of one update come in no set order.
    let (mut trade, mut agg) = (Value::Null, Value::Null);
    while trade.is_null() || agg.is_null() {
        let v = recv(conn).await;
        match v["stream"].as_str() {
            Some("btcusd@trade") if trade.is_null() => trade = v["data"].clone(),
            Some("btcusd@aggTrade") => agg = v["data"].clone(),
            _ => {}
        }
    }
    assert_eq!((trade["e"].as_str(), trade["p"].as_str(), trade["q"].as_str(), trade["m"].as_bool()), (Some("trade"), Some("60000.00000000"), Some("0.10000000"), Some(false)));
    assert_eq!((agg["q"].as_str(), agg["a"].as_u64(), agg["f"].as_u64()), (Some("0.15000000"), trade["t"].as_u64(), trade["t"].as_u64()));
    assert_eq!(agg["l"].as_u64(), Some(trade["t"].as_u64().unwrap() + 1));
    // The top at once, the candle at the next second's send.
    let top = recv_where(conn, |v| v["stream"] == "btcusd@bookTicker" && v["data"]["A"] == "0.05000000").await;
    assert_eq!(top["data"]["a"], "60000.00000000");
    let kline = recv_where(conn, |v| v["stream"] == "btcusd@kline_1m" && v["data"]["k"]["n"] == 2).await["data"].clone();
    assert_eq!((kline["k"]["i"].as_str(), kline["k"]["v"].as_str(), kline["k"]["x"].as_bool()), (Some("1m"), Some("0.15000000"), Some(false)));

    // Live requests: list, unsubscribe, subscribe a bad name, raw frames.
    send(conn, json!({"method": "LIST_SUBSCRIPTIONS", "id": 1})).await;
    let list = recv_where(conn, |v| v["id"] == 1).await;
    assert_eq!(list["result"].as_array().unwrap().len(), 4);
    send(conn, json!({"method": "UNSUBSCRIBE", "params": ["btcusd@kline_1m", "btcusd@bookTicker", "btcusd@aggTrade"], "id": "two"})).await;
    assert_eq!(recv_where(conn, |v| v["id"] == "two").await, json!({"result": null, "id": "two"}));
    send(conn, json!({"method": "SUBSCRIBE", "params": ["dogeusd@trade"], "id": 3})).await;
    assert_eq!(recv_where(conn, |v| v["id"] == 3).await["error"]["code"], 2);
    send(conn, json!({"method": "SET_PROPERTY", "params": ["combined", false], "id": 4})).await;
    recv_where(conn, |v| v["id"] == 4).await;
    ex.signed(&taker, "POST", "/v1/orders", &limit_order(Side::Buy, "60000", "0.05")).await.ok();
    let raw = recv_where(conn, |v| v["e"] == "trade").await;
    assert_eq!(raw["q"], "0.05000000", "no longer wrapped");

    // A client that subscribes after connecting, as ccxt does.
    let (_r, mut late) = ex.client.ws(format!("{ws}/ws/0").as_str()).connect().await.unwrap();
    send(&mut late, json!({"method": "SUBSCRIBE", "params": ["btcusd@depth20@100ms"], "id": 7})).await;
    assert_eq!(recv(&mut late).await, json!({"result": null, "id": 7}));
    ex.signed(&maker, "POST", "/v1/orders", &limit_order(Side::Buy, "58000", "0.3")).await.ok();
    let partial = recv_where(&mut late, |v| v["bids"].as_array().is_some_and(|b| !b.is_empty())).await;
    assert_eq!(partial["bids"], json!([["58000.00000000", "0.30000000"]]));
    assert!(partial["lastUpdateId"].as_u64().is_some());
    close(conn).await;
    close(&mut late).await;
    ex.stop().await;
}

#[actix_web::test]
async fn the_user_data_stream_reports_orders_and_balances() {
    use actix_web::http::Method;
    let ex = Exchange::start().await;
    let (me, other) = (funded(&ex).await, funded(&ex).await);
    // An order resting before the stream opens: its totals come from the store.
    let resting = binance(&ex, &me, "POST", "/api/v3/order", "symbol=BTCUSD&side=SELL&type=LIMIT&timeInForce=GTC&quantity=0.3&price=60000&newClientOrderId=early").await;
    let resting_id = resting.ok()["orderId"].as_u64().unwrap();
    ex.signed(&other, "POST", "/v1/orders", &limit_order(Side::Buy, "60000", "0.1")).await.ok();

    let key = ex.raw(Method::POST, "/api/v3/userDataStream", &[("X-MBX-APIKEY", me.key.clone())], b"").await.ok()["listenKey"].as_str().unwrap().to_owned();
    let (_r, mut conn) = ex.client.ws(format!("{}/ws/{key}", ex.base.replace("http://", "ws://")).as_str()).connect().await.unwrap();
    let conn = &mut conn;

    ex.signed(&other, "POST", "/v1/orders", &limit_order(Side::Buy, "60000", "0.05")).await.ok();
    let fill = recv_where(conn, |v| v["e"] == "executionReport").await;
    assert_eq!((fill["i"].as_u64(), fill["c"].as_str(), fill["x"].as_str(), fill["X"].as_str()), (Some(resting_id), Some("early"), Some("TRADE"), Some("PARTIALLY_FILLED")));
    assert_eq!((fill["l"].as_str(), fill["z"].as_str(), fill["Z"].as_str()), (Some("0.05000000"), Some("0.15000000"), Some("9000.00000000")), "totals include the fill before the stream");
    assert_eq!((fill["m"].as_bool(), fill["N"].as_str(), fill["L"].as_str()), (Some(true), Some("USD"), Some("60000.00000000")));
    let position = recv_where(conn, |v| v["e"] == "outboundAccountPosition").await;
    let usd = position["B"].as_array().unwrap().iter().find(|b| b["a"] == "USD").unwrap().clone();
    assert!(usd["f"].as_str().unwrap().starts_with("10"), "{usd}");

    // A new order, filled at once, then a cancel of the rest of the first.
    binance(&ex, &me, "POST", "/api/v3/order", "symbol=BTCUSD&side=BUY&type=LIMIT&timeInForce=IOC&quantity=0.01&price=50000&newClientOrderId=ioc").await.ok();
    let new = recv_where(conn, |v| v["e"] == "executionReport" && v["c"] == "ioc").await;
    assert_eq!((new["x"].as_str(), new["f"].as_str(), new["o"].as_str()), (Some("NEW"), Some("IOC"), Some("LIMIT")));
    let expired = recv_where(conn, |v| v["e"] == "executionReport" && v["c"] == "ioc").await;
    assert_eq!((expired["x"].as_str(), expired["X"].as_str()), (Some("EXPIRED"), Some("EXPIRED")));
    binance(&ex, &me, "DELETE", "/api/v3/order", &format!("symbol=BTCUSD&orderId={resting_id}")).await.ok();
    let cancel = recv_where(conn, |v| v["e"] == "executionReport" && v["i"] == resting_id).await;
    assert_eq!((cancel["x"].as_str(), cancel["X"].as_str(), cancel["z"].as_str()), (Some("CANCELED"), Some("CANCELED"), Some("0.15000000")));
    ex.deposit_usd(&me, "5").await;
    let deposit = recv_where(conn, |v| v["e"] == "balanceUpdate").await;
    assert_eq!((deposit["a"].as_str(), deposit["d"].as_str()), (Some("USD"), Some("5.00000000")));

    // Closing the key ends the stream at the next check; a key in /stream opens it combined.
    let (_r, mut combined) = ex.client.ws(format!("{}/stream?streams={key}", ex.base.replace("http://", "ws://")).as_str()).connect().await.unwrap();
    ex.signed(&other, "POST", "/v1/orders", &limit_order(Side::Sell, "70000", "0.01")).await.ok();
    binance(&ex, &me, "POST", "/api/v3/order", "symbol=BTCUSD&side=BUY&type=MARKET&quantity=0.01").await.ok();
    let wrapped = recv_where(&mut combined, |v| v["data"]["e"] == "executionReport").await;
    assert_eq!((wrapped["stream"].as_str(), wrapped["data"]["o"].as_str()), (Some(key.as_str()), Some("MARKET")));
    close(conn).await;
    close(&mut combined).await;
    ex.stop().await;
}
