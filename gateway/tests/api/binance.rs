//! The Binance spot v3 public endpoints, in Binance's shapes and error codes.

use crate::harness::{limit_order, Exchange};
use tandem_matching::Side;

#[actix_web::test]
async fn market_data_in_binance_shapes() {
    let ex = Exchange::start().await;
    assert_eq!(ex.public("/api/v3/ping").await.ok(), &serde_json::json!({}));
    let t = ex.public("/api/v3/time").await;
    assert!(t.ok()["serverTime"].as_u64().unwrap() > 1_700_000_000_000);

    let info = ex.public("/api/v3/exchangeInfo").await;
    let s = &info.ok()["symbols"][0];
    assert_eq!((s["symbol"].as_str(), s["baseAsset"].as_str(), s["quoteAsset"].as_str()), (Some("BTCUSD"), Some("BTC"), Some("USD")));
    assert_eq!(s["status"], "TRADING");
    let filter = |name: &str| s["filters"].as_array().unwrap().iter().find(|f| f["filterType"] == name).unwrap().clone();
    assert_eq!(filter("PRICE_FILTER")["tickSize"], "0.10000000", "the harness market's tick");
    assert_eq!(filter("LOT_SIZE")["stepSize"], "0.00001000");
    assert!(filter("NOTIONAL")["minNotional"].as_str().is_some());
    let one = ex.public("/api/v3/exchangeInfo?symbol=BTCUSD").await;
    assert_eq!(one.ok()["symbols"].as_array().unwrap().len(), 1);

    // A resting bid and ask, and a trade between two other orders.
    let (maker, taker) = (ex.user().await, ex.user().await);
    ex.deposit_usd(&maker, "100000").await;
    ex.deposit_btc(&maker, 100_000_000).await;
    ex.deposit_usd(&taker, "100000").await;
    ex.deposit_btc(&taker, 100_000_000).await;
    ex.signed(&maker, "POST", "/v1/orders", &limit_order(Side::Buy, "59000", "0.5")).await.ok();
    ex.signed(&maker, "POST", "/v1/orders", &limit_order(Side::Sell, "61000", "0.25")).await.ok();
    ex.signed(&maker, "POST", "/v1/orders", &limit_order(Side::Sell, "60000", "0.1")).await.ok();
    ex.signed(&taker, "POST", "/v1/orders", &limit_order(Side::Buy, "60000", "0.1")).await.ok();

    let depth = ex.public("/api/v3/depth?symbol=BTCUSD&limit=5").await;
    let d = depth.ok();
    assert!(d["lastUpdateId"].as_u64().unwrap() > 0);
    assert_eq!(d["bids"], serde_json::json!([["59000.00000000", "0.50000000"]]));
    assert_eq!(d["asks"], serde_json::json!([["61000.00000000", "0.25000000"]]));

    let trades = ex.public("/api/v3/trades?symbol=BTCUSD").await;
    let t = &trades.ok()[0];
    assert_eq!((t["price"].as_str(), t["qty"].as_str(), t["quoteQty"].as_str()), (Some("60000.00000000"), Some("0.10000000"), Some("6000.00000000")));
    assert_eq!(t["isBuyerMaker"], false, "the buyer took");

    let price = ex.public("/api/v3/ticker/price?symbol=BTCUSD").await;
    assert_eq!(price.ok()["price"], "60000.00000000");
    let all = ex.public("/api/v3/ticker/price").await;
    assert_eq!(all.ok()[0]["symbol"], "BTCUSD");
    let book = ex.public("/api/v3/ticker/bookTicker?symbol=BTCUSD").await;
    assert_eq!((book.ok()["bidPrice"].as_str(), book.ok()["askQty"].as_str()), (Some("59000.00000000"), Some("0.25000000")));
    let avg = ex.public("/api/v3/avgPrice?symbol=BTCUSD").await;
    assert_eq!((avg.ok()["mins"].as_u64(), avg.ok()["price"].as_str()), (Some(5), Some("60000.00000000")));

    // Binance's errors.
    let bad = ex.public("/api/v3/depth?symbol=DOGEUSD").await;
    assert_eq!((bad.status, bad.body["code"].as_i64(), bad.body["msg"].as_str()), (400, Some(-1121), Some("Invalid symbol.")));
    let missing = ex.public("/api/v3/depth").await;
    assert_eq!((missing.status, missing.body["code"].as_i64()), (400, Some(-1102)));
    let limit = ex.public("/api/v3/trades?symbol=BTCUSD&limit=ten").await;
    assert_eq!((limit.status, limit.body["code"].as_i64()), (400, Some(-1100)));
    let listed = ex.public("/api/v3/ticker/price?symbols=%5B%22BTCUSD%22%5D").await;
    assert_eq!(listed.ok()[0]["price"], "60000.00000000", "a list for symbols=");
    let both = ex.public("/api/v3/ticker/price?symbol=BTCUSD&symbols=%5B%22BTCUSD%22%5D").await;
    assert_eq!(both.body["code"].as_i64(), Some(-1128));
    ex.stop().await;
}

/// A Binance client's signature: HMAC-SHA256 of the query (and body), hex.
fn binance_signature(secret: &str, payload: &str) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(payload.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

#[actix_web::test]
async fn signed_requests_follow_binances_rules() {
    use actix_web::http::Method;
    let ex = Exchange::start().await;
    let user = ex.user().await;
    ex.deposit_usd(&user, "1234.5").await;
    let now = tandem_gateway::auth::now_millis();
    let get = |query: String, key: Option<String>| {
        let ex = &ex;
        async move {
            let headers: Vec<(&str, String)> = key.into_iter().map(|k| ("X-MBX-APIKEY", k)).collect();
            ex.raw(Method::GET, &format!("/api/v3/account?{query}"), &headers, b"").await
        }
    };
    let signed = |query: &str| format!("{query}&signature={}", binance_signature(&user.secret, query));

    let ok = get(signed(&format!("timestamp={now}")), Some(user.key.clone())).await;
    let usd = ok.ok()["balances"].as_array().unwrap().iter().find(|b| b["asset"] == "USD").unwrap().clone();
    assert_eq!((usd["free"].as_str(), usd["locked"].as_str()), (Some("1234.50000000"), Some("0.00000000")));
    assert_eq!((ok.body["canTrade"].as_bool(), ok.body["accountType"].as_str()), (Some(true), Some("SPOT")));
    let windowed = get(signed(&format!("recvWindow=20000&timestamp={}", now - 15_000)), Some(user.key.clone())).await;
    assert_eq!(windowed.status, 200, "a read inside its own recvWindow: {}", windowed.body);

    let code = |r: &crate::harness::Reply| (r.status, r.body["code"].as_i64().unwrap_or(0));
    assert_eq!(code(&get(signed(&format!("timestamp={now}")), None).await), (401, -2014));
    assert_eq!(code(&get(signed(&format!("timestamp={now}")), Some("abc123".into())).await), (401, -2015));
    let forged = format!("timestamp={now}&signature={}", binance_signature("not the secret", &format!("timestamp={now}")));
    assert_eq!(code(&get(forged, Some(user.key.clone())).await), (400, -1022));
    assert_eq!(code(&get(signed(&format!("timestamp={}", now - 60_000)), Some(user.key.clone())).await), (400, -1021));
    assert_eq!(code(&get(signed(&format!("timestamp={}", now + 30_000)), Some(user.key.clone())).await), (400, -1021));
    assert_eq!(code(&get(signed(&format!("recvWindow=70000&timestamp={now}")), Some(user.key.clone())).await), (400, -1131));
    assert_eq!(code(&get(signed("recvWindow=5000"), Some(user.key.clone())).await), (400, -1102));
    ex.stop().await;
}

/// A signed Binance request: `params` in the query (GET, DELETE) or the form body (POST).
pub(crate) async fn binance(ex: &Exchange, user: &crate::harness::User, method: &str, path: &str, params: &str) -> crate::harness::Reply {
    use actix_web::http::Method;
    let params = match params {
        "" => format!("timestamp={}", crate::harness::stamp()),
        _ => format!("{params}&timestamp={}", crate::harness::stamp()),
    };
    let signed = format!("{params}&signature={}", binance_signature(&user.secret, &params));
    let key = [("X-MBX-APIKEY", user.key.clone()), ("Content-Type", "application/x-www-form-urlencoded".into())];
    match method {
        "POST" => ex.raw(Method::POST, path, &key, signed.as_bytes()).await,
        "DELETE" => ex.raw(Method::DELETE, &format!("{path}?{signed}"), &key, b"").await,
        _ => ex.raw(Method::GET, &format!("{path}?{signed}"), &key, b"").await,
    }
}

#[actix_web::test]
async fn orders_the_binance_way() {
    let ex = Exchange::start().await;
    let (maker, taker) = (ex.user().await, ex.user().await);
    ex.deposit_usd(&maker, "10000").await;
    ex.deposit_btc(&taker, 50_000_000).await;
    let code = |r: &crate::harness::Reply| (r.status, r.body["code"].as_i64().unwrap_or(0), r.body["msg"].as_str().unwrap_or("").to_owned());

    // A resting bid, answered in full.
    let placed = binance(&ex, &maker, "POST", "/api/v3/order",
        "symbol=BTCUSD&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.1&price=60000&newClientOrderId=bid-1").await;
    let p = placed.ok().clone();
    assert_eq!((p["status"].as_str(), p["type"].as_str(), p["side"].as_str()), (Some("NEW"), Some("LIMIT"), Some("BUY")));
    assert_eq!((p["origQty"].as_str(), p["price"].as_str(), p["clientOrderId"].as_str()), (Some("0.10000000"), Some("60000.00000000"), Some("bid-1")));
    assert_eq!(p["fills"], serde_json::json!([]));
    let id = p["orderId"].as_u64().unwrap();

    // The same client order id again; a post-only order that would take; more than the balance.
    let again = binance(&ex, &maker, "POST", "/api/v3/order", "symbol=BTCUSD&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.1&price=60000&newClientOrderId=bid-1").await;
    assert_eq!(code(&again), (400, -2010, "Duplicate order sent.".into()));
    let maker_sell = binance(&ex, &taker, "POST", "/api/v3/order", "symbol=BTCUSD&side=SELL&type=LIMIT_MAKER&quantity=0.01&price=59000").await;
    assert_eq!(code(&maker_sell), (400, -2010, "Order would immediately match and take.".into()));
    let too_big = binance(&ex, &maker, "POST", "/api/v3/order", "symbol=BTCUSD&side=BUY&type=LIMIT&timeInForce=GTC&quantity=1&price=60000").await;
    assert_eq!(code(&too_big), (400, -2010, "Account has insufficient balance for requested action.".into()));
    let off_tick = binance(&ex, &maker, "POST", "/api/v3/order", "symbol=BTCUSD&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.01&price=60000.05").await;
    assert_eq!(code(&off_tick).1, -1013);
    assert_eq!(code(&binance(&ex, &maker, "POST", "/api/v3/order", "symbol=BTCUSD&side=BUY&type=LIMIT&quantity=0.01&price=60000").await).1, -1102, "LIMIT needs timeInForce");
    assert_eq!(code(&binance(&ex, &maker, "POST", "/api/v3/order", "symbol=BTCUSD&side=UP&type=LIMIT&timeInForce=GTC&quantity=0.01&price=1").await).1, -1117);
    assert_eq!(code(&binance(&ex, &maker, "POST", "/api/v3/order", "symbol=BTCUSD&side=BUY&type=STOP&quantity=0.01").await).1, -1116);
    let tested = binance(&ex, &maker, "POST", "/api/v3/order/test", "symbol=BTCUSD&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.01&price=50000").await;
    assert_eq!(tested.ok(), &serde_json::json!({}));

    let open = binance(&ex, &maker, "GET", "/api/v3/openOrders", "symbol=BTCUSD").await;
    assert_eq!(open.ok().as_array().unwrap().len(), 1, "the test order placed nothing: {}", open.body);

    // A market sell takes part of the bid: its fills, with their commission.
    let sold = binance(&ex, &taker, "POST", "/api/v3/order", "symbol=BTCUSD&side=SELL&type=MARKET&quantity=0.04").await;
    let s = sold.ok();
    assert_eq!((s["status"].as_str(), s["type"].as_str(), s["executedQty"].as_str()), (Some("FILLED"), Some("MARKET"), Some("0.04000000")));
    assert_eq!(s["fills"][0]["price"], "60000.00000000");
    assert_eq!(s["fills"][0]["commissionAsset"], "USD");
    let ack = binance(&ex, &taker, "POST", "/api/v3/order", "symbol=BTCUSD&side=SELL&type=MARKET&quantity=0.01&newOrderRespType=ACK").await;
    assert!(ack.ok()["transactTime"].as_u64().is_some() && ack.body.get("status").is_none(), "{}", ack.body);

    // The bid, by id and by client id; then canceled, once.
    let by_id = binance(&ex, &maker, "GET", "/api/v3/order", &format!("symbol=BTCUSD&orderId={id}")).await;
    assert_eq!((by_id.ok()["status"].as_str(), by_id.ok()["executedQty"].as_str()), (Some("PARTIALLY_FILLED"), Some("0.05000000")));
    let by_cid = binance(&ex, &maker, "GET", "/api/v3/order", "symbol=BTCUSD&origClientOrderId=bid-1").await;
    assert_eq!(by_cid.ok()["orderId"].as_u64(), Some(id));
    let canceled = binance(&ex, &maker, "DELETE", "/api/v3/order", "symbol=BTCUSD&origClientOrderId=bid-1").await;
    assert_eq!((canceled.ok()["status"].as_str(), canceled.ok()["origClientOrderId"].as_str()), (Some("CANCELED"), Some("bid-1")));
    assert_eq!(code(&binance(&ex, &maker, "DELETE", "/api/v3/order", &format!("symbol=BTCUSD&orderId={id}")).await).1, -2011);
    assert_eq!(code(&binance(&ex, &maker, "GET", "/api/v3/order", "symbol=BTCUSD&orderId=999999").await), (400, -2013, "Order does not exist.".into()));
    assert_eq!(code(&binance(&ex, &taker, "GET", "/api/v3/order", &format!("symbol=BTCUSD&orderId={id}")).await).1, -2013, "someone else's order");
    let none = binance(&ex, &maker, "GET", "/api/v3/openOrders", "").await;
    assert_eq!(none.ok().as_array().unwrap().len(), 0);

    // History: every order oldest first, paged from an id; the taker's trades, paged by id.
    let all = binance(&ex, &maker, "GET", "/api/v3/allOrders", "symbol=BTCUSD").await;
    let all = all.ok().as_array().unwrap().clone();
    assert_eq!(all.len(), 1, "the maker's one order: {all:?}");
    assert_eq!((all[0]["status"].as_str(), all[0]["executedQty"].as_str()), (Some("CANCELED"), Some("0.05000000")));
    let later = binance(&ex, &maker, "GET", "/api/v3/allOrders", &format!("symbol=BTCUSD&orderId={}", id + 1)).await;
    assert_eq!(later.ok().as_array().unwrap().len(), 0);
    let mine = binance(&ex, &taker, "GET", "/api/v3/myTrades", "symbol=BTCUSD").await;
    let mine = mine.ok().as_array().unwrap().clone();
    assert_eq!(mine.len(), 2, "{mine:?}");
    assert_eq!((mine[0]["qty"].as_str(), mine[0]["isBuyer"].as_bool(), mine[0]["isMaker"].as_bool()), (Some("0.04000000"), Some(false), Some(false)));
    assert!(mine[0]["id"].as_u64() < mine[1]["id"].as_u64(), "oldest first");
    let from = binance(&ex, &taker, "GET", "/api/v3/myTrades", &format!("symbol=BTCUSD&fromId={}", mine[1]["id"])).await;
    assert_eq!(from.ok().as_array().unwrap().len(), 1);
    let window = binance(&ex, &taker, "GET", "/api/v3/myTrades", "symbol=BTCUSD&startTime=1&endTime=999999999").await;
    assert_eq!(code(&window).1, -1127);

    // Every open order of a market canceled at once.
    for price in ["50000", "51000"] {
        binance(&ex, &maker, "POST", "/api/v3/order", &format!("symbol=BTCUSD&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.01&price={price}")).await.ok();
    }
    let swept = binance(&ex, &maker, "DELETE", "/api/v3/openOrders", "symbol=BTCUSD").await;
    assert_eq!(swept.ok().as_array().unwrap().iter().filter(|o| o["status"] == "CANCELED").count(), 2, "{}", swept.body);

    // A fill-or-kill the book cannot fill in full: 200, EXPIRED, nothing filled or left locked.
    let before = ex.facts(&maker).await;
    let fok = binance(&ex, &maker, "POST", "/api/v3/order", "symbol=BTCUSD&side=BUY&type=LIMIT&timeInForce=FOK&quantity=1&price=100").await;
    assert_eq!((fok.ok()["status"].as_str(), fok.ok()["executedQty"].as_str()), (Some("EXPIRED"), Some("0.00000000")), "{}", fok.body);
    assert!(fok.ok()["orderId"].as_u64().is_some());
    assert_eq!(ex.facts(&maker).await, before);

    // A change's exact bytes sent twice: the second is refused.
    use actix_web::http::Method;
    let params = format!("symbol=BTCUSD&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.01&price=50000&timestamp={}", crate::harness::stamp());
    let body = format!("{params}&signature={}", binance_signature(&maker.secret, &params));
    let key = [("X-MBX-APIKEY", maker.key.clone()), ("Content-Type", "application/x-www-form-urlencoded".into())];
    assert_eq!(ex.raw(Method::POST, "/api/v3/order", &key, body.as_bytes()).await.status, 200);
    assert_eq!(code(&ex.raw(Method::POST, "/api/v3/order", &key, body.as_bytes()).await).1, -1022, "replayed");
    ex.stop().await;
}

#[actix_web::test]
async fn request_weights_are_counted_and_enforced_the_binance_way() {
    let ex = Exchange::start_with(|c| c.limits.per_ip_per_minute = 30).await;
    let ping = ex.public("/api/v3/ping").await;
    let first: u32 = ping.header("x-mbx-used-weight-1m").unwrap().parse().unwrap();
    let info = ex.public("/api/v3/exchangeInfo").await;
    assert_eq!(info.header("x-mbx-used-weight-1m").unwrap().parse::<u32>().unwrap(), first + 20, "exchangeInfo weighs 20");
    let over = ex.public("/api/v3/exchangeInfo").await;
    assert_eq!((over.status, over.body["code"].as_i64()), (429, Some(-1003)), "{}", over.body);
    assert!(over.header("retry-after").unwrap().parse::<u64>().unwrap() >= 1);
    assert!(over.body["msg"].as_str().unwrap().contains("30 request weight per 1 MINUTE"));
    ex.stop().await;
}
