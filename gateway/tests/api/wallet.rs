//! Wallets: enrolment of device keys (with single-use codes, or open in the demo) and requests
//! signed by a device key instead of an API key.

use crate::harness::*;
use awc::http::Method;
use awc::ws::{Frame, Message};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::time::Duration;
use tandem_gateway::{auth::now_millis, sign_device};
use tandem_matching::Side;

/// Enrols `device` with a fresh code and answers its account id.
async fn enrolled(ex: &Exchange, device: &Device) -> u64 {
    let code = ex.enrolment_code().await;
    let r = ex.enrol(device, Some(&code)).await;
    let body = r.ok();
    assert_eq!(body["device_pubkey"], device.pubkey());
    assert_eq!(body["label"], "phone");
    body["account_id"].as_u64().unwrap()
}

async fn deposit_usd(ex: &Exchange, account: u64, amount: &str, reference: &str) {
    let body = json!({"account_id": account, "asset": "USD", "amount": amount, "reference": reference});
    ex.operator("POST", "/v1/operator/deposits", &body.to_string()).await.ok();
}

fn usd(balances: &Value) -> Value {
    balances["balances"].as_array().unwrap().iter().find(|b| b["asset"] == "USD").unwrap().clone()
}

#[actix_web::test]
async fn device_signed_requests_trade_like_api_keys() {
    let ex = Exchange::start().await;
    let device = Device::random();
    let account = enrolled(&ex, &device).await;
    deposit_usd(&ex, account, "1000.00", "wire-dev-1").await;

    let b = ex.device_signed(&device, "GET", "/v1/balances", "").await;
    assert_eq!(usd(b.ok()), json!({"asset": "USD", "available": "1000.00", "locked": "0.00", "total": "1000.00"}));
    let order = ex.device_signed(&device, "POST", "/v1/orders", &limit_order(Side::Buy, "100.00", "1")).await;
    let id = order.ok()["order"]["order_id"].as_u64().unwrap();
    assert_eq!(order.body["order"]["status"], "new");
    let open = ex.device_signed(&device, "GET", "/v1/orders?market=BTC-USD", "").await;
    assert_eq!(open.ok()["orders"][0]["order_id"], id);
    let canceled = ex.device_signed(&device, "DELETE", &format!("/v1/orders/{id}"), "").await;
    assert_eq!(canceled.ok()["order"]["status"], "canceled");
    let history = ex.device_signed(&device, "GET", "/v1/orders?status=all", "").await;
    assert_eq!(history.ok()["orders"][0]["status"], "canceled");

    // Everything that must fail, and changes nothing.
    let before = ex.facts(&User { account, key: String::new(), secret: String::new() }).await;
    let body = limit_order(Side::Buy, "100.00", "1");
    let path = "/v1/orders";
    let ts = now_millis();
    // Signed over a different body.
    let mut h = device.headers(ts, "POST", path, b"{}");
    ex.raw(Method::POST, path, &h, body.as_bytes()).await.err(401, "bad_signature");
    // Signed over a different path.
    h = device.headers(ts, "POST", "/v1/orders?x=1", body.as_bytes());
    ex.raw(Method::POST, path, &h, body.as_bytes()).await.err(401, "bad_signature");
    // Garbage and truncated signatures.
    h = device.headers(ts, "POST", path, body.as_bytes());
    h[2].1 = "zz".into();
    ex.raw(Method::POST, path, &h, body.as_bytes()).await.err(401, "bad_signature");
    h = device.headers(ts, "POST", path, body.as_bytes());
    h[2].1.truncate(126);
    ex.raw(Method::POST, path, &h, body.as_bytes()).await.err(401, "bad_signature");
    // Another key's signature under this device's name.
    let stranger = Device::random();
    h = device.headers(ts, "POST", path, body.as_bytes());
    h[2].1 = sign_device(&stranger.keypair, ts, "POST", path, body.as_bytes());
    ex.raw(Method::POST, path, &h, body.as_bytes()).await.err(401, "bad_signature");
    // A key that never enrolled, correctly signed; a malformed key.
    ex.device_signed(&stranger, "POST", path, &body).await.err(401, "unknown_device");
    h = device.headers(ts, "POST", path, body.as_bytes());
    h[0].1 = "not-a-key".into();
    ex.raw(Method::POST, path, &h, body.as_bytes()).await.err(401, "unknown_device");
    // Stale timestamps, both ways, and an unparseable one.
    for stale in [ts - 60_000, ts + 60_000] {
        let h = device.headers(stale, "POST", path, body.as_bytes());
        ex.raw(Method::POST, path, &h, body.as_bytes()).await.err(401, "stale_timestamp");
    }
    h = device.headers(ts, "POST", path, body.as_bytes());
    h[1].1 = "yesterday".into();
    ex.raw(Method::POST, path, &h, body.as_bytes()).await.err(401, "stale_timestamp");
    // A missing header; an API key and a device key at once.
    h = device.headers(ts, "POST", path, body.as_bytes());
    h.remove(2);
    ex.raw(Method::POST, path, &h, body.as_bytes()).await.err(401, "missing_credentials");
    h = device.headers(ts, "POST", path, body.as_bytes());
    h.push(("X-Tandem-Key", "k".into()));
    ex.raw(Method::POST, path, &h, body.as_bytes()).await.err(400, "bad_request");
    assert_eq!(ex.facts(&User { account, key: String::new(), secret: String::new() }).await, before);

    // Upper-case hex names the same device.
    let mut h = device.headers(now_millis(), "GET", "/v1/balances", b"");
    h[0].1 = h[0].1.to_uppercase();
    ex.raw(Method::GET, "/v1/balances", &h, b"").await.ok();
    ex.stop().await;
}

#[actix_web::test]
async fn enrolment_codes_are_single_use() {
    let ex = Exchange::start().await;
    // The operator's route needs the operator token.
    ex.raw(Method::POST, "/v1/operator/enrolment-codes", &[], br#"{"label":"x"}"#).await.err(401, "bad_operator_token");
    ex.operator("POST", "/v1/operator/enrolment-codes", r#"{"label":"x","extra":1}"#).await.err(400, "bad_request");
    let r = ex.operator("POST", "/v1/operator/enrolment-codes", r#"{"label":"for carol"}"#).await;
    assert_eq!(r.ok()["label"], "for carol");
    let code = r.body["code"].as_str().unwrap().to_owned();
    assert_eq!(code.len(), 32);
    assert_ne!(code, ex.enrolment_code().await);

    // Without a code (enrolment is closed) or with a wrong one: refused.
    let (a, b) = (Device::random(), Device::random());
    ex.enrol(&a, None).await.err(403, "bad_enrolment_code");
    ex.enrol(&a, Some("")).await.err(403, "bad_enrolment_code");
    ex.enrol(&a, Some("0123456789abcdef0123456789abcdef")).await.err(403, "bad_enrolment_code");
    let accounts_before = ex.sequencer.read(|e| e.account_count()).await.unwrap();

    // The code works once (typed in upper case with spaces: the same code).
    let r = ex.enrol(&a, Some(&format!(" {} ", code.to_uppercase()))).await;
    let account = r.ok()["account_id"].as_u64().unwrap();
    assert_eq!(ex.sequencer.read(|e| e.account_count()).await.unwrap(), accounts_before + 1);
    ex.enrol(&b, Some(&code)).await.err(403, "bad_enrolment_code");
    // The account is a user account with the device's access and nothing else.
    let acct = ex.operator("GET", &format!("/v1/operator/accounts/{account}"), "").await;
    assert_eq!(acct.ok()["kind"], "user");
    ex.device_signed(&a, "GET", "/v1/balances", "").await.ok();
    ex.device_signed(&b, "GET", "/v1/balances", "").await.err(401, "unknown_device");

    // The same device again: 409, and the fresh code it brought is not used up.
    let fresh = ex.enrolment_code().await;
    ex.enrol(&a, Some(&fresh)).await.err(409, "device_registered");
    let r = ex.enrol(&b, Some(&fresh)).await;
    assert_ne!(r.ok()["account_id"].as_u64().unwrap(), account);

    // Proof of possession: the request must be signed by the key it enrols.
    let c = Device::random();
    let code = ex.enrolment_code().await;
    let body = json!({"device_pubkey": c.pubkey(), "enrolment_code": code}).to_string();
    let path = "/v1/wallet/enrol";
    let stranger = Device::random();
    // Signed by another key that names itself: the body's key does not match.
    let h = stranger.headers(now_millis(), "POST", path, body.as_bytes());
    ex.raw(Method::POST, path, &h, body.as_bytes()).await.err(400, "bad_request");
    // Signed by another key in the device's name.
    let mut h = c.headers(now_millis(), "POST", path, body.as_bytes());
    h[2].1 = sign_device(&stranger.keypair, now_millis(), "POST", path, body.as_bytes());
    ex.raw(Method::POST, path, &h, body.as_bytes()).await.err(401, "bad_signature");
    // Unsigned, stale, malformed key, bad bodies.
    ex.raw(Method::POST, path, &[], body.as_bytes()).await.err(401, "missing_credentials");
    let h = c.headers(now_millis() - 60_000, "POST", path, body.as_bytes());
    ex.raw(Method::POST, path, &h, body.as_bytes()).await.err(401, "stale_timestamp");
    let mut h = c.headers(now_millis(), "POST", path, body.as_bytes());
    h[0].1 = "abcd".into();
    ex.raw(Method::POST, path, &h, body.as_bytes()).await.err(400, "bad_request");
    for bad in [
        json!({"device_pubkey": c.pubkey(), "enrolment_code": code, "extra": true}).to_string(),
        json!({"device_pubkey": c.pubkey(), "enrolment_code": code, "label": "\u{7}"}).to_string(),
        json!({"device_pubkey": c.pubkey(), "enrolment_code": code, "label": "x".repeat(129)}).to_string(),
        json!({"enrolment_code": code}).to_string(),
    ] {
        let h = c.headers(now_millis(), "POST", path, bad.as_bytes());
        ex.raw(Method::POST, path, &h, bad.as_bytes()).await.err(400, "bad_request");
    }
    // None of those used the code.
    let h = c.headers(now_millis(), "POST", path, body.as_bytes());
    ex.raw(Method::POST, path, &h, body.as_bytes()).await.ok();
    ex.stop().await;
}

#[actix_web::test]
async fn open_enrolment_needs_no_code_but_checks_one_given() {
    let ex = Exchange::start_with(|c| c.open_enrolment = true).await;
    let a = Device::random();
    let account = ex.enrol(&a, None).await.ok()["account_id"].as_u64().unwrap();
    ex.enrol(&a, None).await.err(409, "device_registered");
    let b = Device::random();
    ex.enrol(&b, Some("not-a-code")).await.err(403, "bad_enrolment_code");
    let code = ex.enrolment_code().await;
    let other = ex.enrol(&b, Some(&code)).await.ok()["account_id"].as_u64().unwrap();
    assert_ne!(account, other);
    // Racing enrolments of one device: exactly one wins, the other is told it is registered.
    let c = Device::random();
    let (r1, r2) = futures_util::join!(ex.enrol(&c, None), ex.enrol(&c, None));
    let mut statuses = [r1.status, r2.status];
    statuses.sort();
    assert_eq!(statuses, [200, 409], "{} {}", r1.body, r2.body);
    for r in [&r1, &r2] {
        if r.status == 409 {
            r.err(409, "device_registered");
        }
    }
    deposit_usd(&ex, account, "5.00", "wire-open-1").await;
    let r = ex.device_signed(&a, "GET", "/v1/balances", "").await;
    assert_eq!(usd(r.ok())["available"], "5.00");
    ex.stop().await;
}

#[actix_web::test]
async fn websocket_auth_accepts_a_device_key() {
    let ex = Exchange::start().await;
    let device = Device::random();
    let account = enrolled(&ex, &device).await;
    let ws_url = format!("{}/v1/ws", ex.base.replace("http://", "ws://"));
    let (_res, mut conn) = ex.client.ws(ws_url.as_str()).connect().await.unwrap();
    async fn roundtrip(
        conn: &mut (impl futures_util::Sink<Message>
                  + futures_util::Stream<Item = Result<Frame, awc::error::WsProtocolError>>
                  + Unpin),
        msg: Value,
    ) -> Value {
        let _ = conn.send(Message::Text(msg.to_string().into())).await;
        loop {
            let frame = tokio::time::timeout(Duration::from_secs(5), conn.next()).await.unwrap().unwrap().unwrap();
            if let Frame::Text(bytes) = frame {
                return serde_json::from_slice(&bytes).unwrap();
            }
        }
    }
    let ts = now_millis();
    let sig = sign_device(&device.keypair, ts, "GET", "/v1/ws", b"");
    let stranger = Device::random();
    let r = roundtrip(&mut conn, json!({"op": "auth", "device": stranger.pubkey(), "timestamp": ts, "signature": sig}))
        .await;
    assert_eq!(r["code"], "unknown_device");
    let r = roundtrip(&mut conn, json!({"op": "auth", "device": device.pubkey(), "timestamp": ts, "signature": "00"}))
        .await;
    assert_eq!(r["code"], "bad_signature");
    let r = roundtrip(
        &mut conn,
        json!({"op": "auth", "device": device.pubkey(), "api_key": "k", "timestamp": ts, "signature": sig}),
    )
    .await;
    assert_eq!(r["code"], "bad_request");
    let r =
        roundtrip(&mut conn, json!({"op": "auth", "device": device.pubkey(), "timestamp": ts, "signature": sig})).await;
    assert_eq!(r, json!({"type": "authenticated", "account_id": account}));
    // Closed, so the graceful stop need not wait for the connection.
    conn.send(Message::Close(None)).await.unwrap();
    drop(conn);
    ex.stop().await;
}
