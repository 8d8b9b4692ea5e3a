//! The WebSocket stream end to end: book snapshot then updates, trades, the user channel, and
//! bad client messages.

use crate::harness::*;
use awc::ws::{Frame, Message};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::time::Duration;
use tandem_gateway::{auth::now_millis, sign};
use tandem_matching::Side;

/// What `awc` hands back for a WebSocket: a sink of messages and a stream of frames.
pub(crate) trait Conn:
    futures_util::Sink<Message, Error = awc::error::WsProtocolError>
    + futures_util::Stream<Item = Result<Frame, awc::error::WsProtocolError>>
    + Unpin
{
}

impl<T> Conn for T where
    T: futures_util::Sink<Message, Error = awc::error::WsProtocolError>
        + futures_util::Stream<Item = Result<Frame, awc::error::WsProtocolError>>
        + Unpin
{
}

pub(crate) async fn send(conn: &mut impl Conn, v: Value) {
    conn.send(Message::Text(v.to_string().into())).await.unwrap();
}

/// The next JSON message (skipping pings), or a panic after a few seconds.
pub(crate) async fn recv(conn: &mut impl Conn) -> Value {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(5), conn.next()).await.expect("no message in time");
        match frame.expect("stream ended").expect("protocol error") {
            Frame::Text(bytes) => return serde_json::from_slice(&bytes).unwrap(),
            Frame::Ping(_) | Frame::Pong(_) => continue,
            other => panic!("unexpected frame {other:?}"),
        }
    }
}

/// Next message of one type, skipping others (e.g. balance updates between fills).
async fn recv_type(conn: &mut impl Conn, ty: &str) -> Value {
    loop {
        let v = recv(conn).await;
        if v["type"] == ty {
            return v;
        }
    }
}

#[actix_web::test]
async fn book_snapshot_then_updates_trades_and_user_stream() {
    let ex = Exchange::start().await;
    let maker = ex.user().await;
    let taker = ex.user().await;
    ex.deposit_usd(&maker, "10000.00").await;
    ex.deposit_btc(&taker, 100_000_000).await;
    // Something on the book before anyone subscribes.
    ex.signed(&maker, "POST", "/v1/orders", &limit_order(Side::Buy, "100.00", "1")).await.ok();

    let ws_url = format!("{}/v1/ws", ex.base.replace("http://", "ws://"));
    let (_res, mut conn) = ex.client.ws(ws_url.as_str()).connect().await.unwrap();
    let conn = &mut conn;

    // Bad messages get an error and the connection stays open.
    conn.send(Message::Text("{not json".into())).await.unwrap();
    assert_eq!(recv(conn).await["code"], "malformed_json");
    send(conn, json!({"op": "dance"})).await;
    assert_eq!(recv(conn).await["code"], "bad_request");
    send(conn, json!({"op": "subscribe", "channels": ["candles:BTC-USD"]})).await;
    assert_eq!(recv(conn).await["code"], "unknown_channel");
    assert_eq!(recv(conn).await, json!({"type": "subscribed", "channels": []}));
    send(conn, json!({"op": "subscribe", "channels": ["user"]})).await;
    assert_eq!(recv(conn).await["code"], "auth_required");
    recv_type(conn, "subscribed").await;
    send(conn, json!({"op": "ping"})).await;
    assert_eq!(recv(conn).await, json!({"type": "pong"}));

    // Snapshot first, with the level already resting.
    send(conn, json!({"op": "subscribe", "channels": ["book:BTC-USD", "trades:BTC-USD"]})).await;
    assert_eq!(recv(conn).await, json!({"type": "subscribed", "channels": ["book:BTC-USD", "trades:BTC-USD"]}));
    let snap = recv(conn).await;
    assert_eq!(snap["type"], "book_snapshot");
    assert_eq!(snap["market"], "BTC-USD");
    assert_eq!(snap["bids"], json!([["100.00", "1.00000000"]]));
    assert_eq!(snap["asks"], json!([]));
    let base = snap["book_seq"].as_u64().unwrap();

    // A new level arrives as the next update.
    ex.signed(&maker, "POST", "/v1/orders", &limit_order(Side::Buy, "99.00", "0.5")).await.ok();
    let up = recv(conn).await;
    assert_eq!(up["type"], "book_update");
    assert_eq!(up["book_seq"].as_u64(), Some(base + 1));
    assert_eq!(up["bids"], json!([["99.00", "0.50000000"]]));
    assert_eq!(up["asks"], json!([]));

    // Authenticate for the user stream (as the taker).
    let ts = now_millis();
    let bad = json!({"op": "auth", "api_key": taker.key, "timestamp": ts, "signature": "00"});
    send(conn, bad).await;
    assert_eq!(recv(conn).await["code"], "bad_signature");
    let stale = json!({"op": "auth", "api_key": taker.key, "timestamp": ts - 60_000,
        "signature": sign(&taker.secret, ts - 60_000, "GET", "/v1/ws", b"")});
    send(conn, stale).await;
    assert_eq!(recv(conn).await["code"], "stale_timestamp");
    let good = json!({"op": "auth", "api_key": taker.key, "timestamp": ts, "signature": sign(&taker.secret, ts, "GET", "/v1/ws", b"")});
    send(conn, good).await;
    assert_eq!(recv(conn).await, json!({"type": "authenticated", "account_id": taker.account}));
    send(conn, json!({"op": "subscribe", "channels": ["user"]})).await;
    assert_eq!(recv(conn).await, json!({"type": "subscribed", "channels": ["user"]}));

    // The taker sells into the top bid: a book update (level shrinks), a trade, and user events.
    ex.signed(&taker, "POST", "/v1/orders", &limit_order(Side::Sell, "100.00", "0.4")).await.ok();
    let mut seen = Vec::new();
    while !["book_update", "trade", "order_accepted", "fill", "order_closed", "balance"]
        .iter()
        .all(|t| seen.contains(&t.to_string()))
    {
        let m = recv(conn).await;
        match m["type"].as_str().unwrap() {
            "book_update" => {
                assert_eq!(m["book_seq"].as_u64(), Some(base + 2));
                assert_eq!(m["bids"], json!([["100.00", "0.60000000"]]));
            }
            "trade" => {
                assert_eq!((m["price"].as_str(), m["quantity"].as_str()), (Some("100.00"), Some("0.40000000")));
                assert_eq!(m["taker_side"], "sell");
            }
            "fill" => {
                assert_eq!((m["liquidity"].as_str(), m["side"].as_str()), (Some("taker"), Some("sell")));
                assert_eq!(m["fee_asset"], "USD");
            }
            "order_closed" => assert_eq!(m["status"], "filled"),
            "balance" | "order_accepted" => {}
            other => panic!("unexpected {other}: {m}"),
        }
        seen.push(m["type"].as_str().unwrap().to_owned());
    }

    // Unsubscribed books send nothing more; a removed level shows as quantity 0 to subscribers.
    send(conn, json!({"op": "unsubscribe", "channels": ["trades:BTC-USD", "user"]})).await;
    assert_eq!(recv_type(conn, "unsubscribed").await["channels"], json!(["trades:BTC-USD", "user"]));
    let open = ex.signed(&maker, "GET", "/v1/orders", "").await;
    let low = open.ok()["orders"].as_array().unwrap().iter().find(|o| o["price"] == "99.00").unwrap()["order_id"]
        .as_u64()
        .unwrap();
    ex.signed(&maker, "DELETE", &format!("/v1/orders/{low}"), "").await.ok();
    let gone = recv_type(conn, "book_update").await;
    assert_eq!(gone["bids"], json!([["99.00", "0.00000000"]]));
    assert_eq!(gone["book_seq"].as_u64(), Some(base + 3));

    conn.send(Message::Close(None)).await.unwrap();
    ex.stop().await;
}
