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
