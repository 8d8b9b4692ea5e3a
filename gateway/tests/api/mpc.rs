//! The MPC relay over HTTP: co-signer registration, sessions opened by device and co-signer
//! keys, sealed messages posted and fetched (long-poll), execution ids never reused, aborts,
//! and who may do what. The payloads here are opaque bytes: sealing is the parties' business.

use crate::harness::*;
use awc::http::Method;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tandem_gateway::relay::{RelayMessage, Role};
use tandem_gateway::sign_device;

/// A co-signer's identity key: signs like a device, under `X-Tandem-Cosigner`.
fn cosigner_headers(key: &Device, method: &str, path: &str, body: &[u8]) -> Vec<(&'static str, String)> {
    let ts = stamp();
    vec![
        ("X-Tandem-Cosigner", key.pubkey()),
        ("X-Tandem-Timestamp", ts.to_string()),
        ("X-Tandem-Signature", sign_device(&key.keypair, ts, method, path, body)),
    ]
}

enum As<'a> {
    Wallet(&'a Device),
    Cosigner(&'a Device),
}

async fn call(ex: &Exchange, who: &As<'_>, method: &str, path: &str, body: &str) -> Reply {
    match who {
        As::Wallet(d) => ex.device_signed(d, method, path, body).await,
        As::Cosigner(k) => {
            let h = cosigner_headers(k, method, path, body.as_bytes());
            ex.raw(Method::from_bytes(method.as_bytes()).unwrap(), path, &h, body.as_bytes()).await
        }
    }
}

struct Parties {
    wallet: Device,
    provider: Device,
    cosigner: Device,
}

/// An exchange whose relay knows `provider` as its provider, with an enrolled wallet and a
/// registered co-signer.
async fn setup() -> (Exchange, Parties) {
    let provider = Device::random();
    let provider_key = provider.keypair.x_only_public_key().0;
    let ex = Exchange::start_with(|c| {
        c.mpc.provider_identity = Some(provider_key);
        c.mpc.max_message_bytes = 1000;
    })
    .await;
    let wallet = Device::random();
    let code = ex.enrolment_code().await;
    ex.enrol(&wallet, Some(&code)).await.ok();
    let cosigner = Device::random();
    let r = ex
        .operator(
            "POST",
            "/v1/operator/cosigners",
            &json!({"identity_pubkey": cosigner.pubkey(), "label": "acme"}).to_string(),
        )
        .await;
    assert_eq!(r.ok()["identity_pubkey"], cosigner.pubkey());
    (ex, Parties { wallet, provider, cosigner })
}

fn eid(b: u8) -> String {
    hex::encode([b; 32])
}

fn open_body(eid: &str, protocol: &str, p: &Parties, with_provider: bool) -> String {
    let mut parties = vec![json!({"role": "wallet", "identity_pubkey": p.wallet.pubkey()})];
    if with_provider {
        parties.push(json!({"role": "provider", "identity_pubkey": p.provider.pubkey()}));
    }
    parties.push(json!({"role": "cosigner", "identity_pubkey": p.cosigner.pubkey()}));
    json!({"execution_id": eid, "protocol": protocol, "parties": parties}).to_string()
}

fn message(sender: &str, recipient: &str, seq: u64, payload: &[u8]) -> Value {
    json!({"sender": sender, "recipient": recipient, "broadcast": false, "seq": seq, "abort": false, "payload": hex::encode(payload)})
}

#[actix_web::test]
async fn cosigners_are_registered_once_by_the_operator() {
    let (ex, p) = setup().await;
    let body = json!({"identity_pubkey": p.cosigner.pubkey()}).to_string();
    ex.operator("POST", "/v1/operator/cosigners", &body).await.err(409, "cosigner_registered");
    // A wallet's device key cannot double as a co-signer.
    let body = json!({"identity_pubkey": p.wallet.pubkey()}).to_string();
    ex.operator("POST", "/v1/operator/cosigners", &body).await.err(409, "cosigner_registered");
    ex.operator("POST", "/v1/operator/cosigners", r#"{"identity_pubkey":"02ab"}"#).await.err(400, "bad_request");
    ex.raw(Method::POST, "/v1/operator/cosigners", &[], b"{}").await.err(401, "bad_operator_token");
    let list = ex.operator("GET", "/v1/operator/cosigners", "").await;
    assert_eq!(list.ok()["cosigners"].as_array().unwrap().len(), 1);
    assert_eq!(list.body["cosigners"][0]["label"], "acme");
    ex.stop().await;
}

#[actix_web::test]
async fn parties_exchange_messages_through_their_mailboxes() {
    let (ex, p) = setup().await;
    let relay_provider = p.provider.keypair.x_only_public_key().0;
    let e = eid(1);
    let r = call(&ex, &As::Wallet(&p.wallet), "POST", "/v1/mpc/sessions", &open_body(&e, "keygen", &p, true)).await;
    assert_eq!(r.ok()["status"], "open");
    assert_eq!(r.body["parties"].as_array().unwrap().len(), 3);
    assert!(r.body["expires_in_ms"].as_u64().unwrap() > 500_000);

    // The wallet sends to the co-signer and the provider.
    let path = format!("/v1/mpc/sessions/{e}/messages");
    let batch = json!({"messages": [message("wallet", "cosigner", 0, b"sealed-1"), message("wallet", "provider", 0, b"sealed-2")]});
    let r = call(&ex, &As::Wallet(&p.wallet), "POST", &path, &batch.to_string()).await;
    assert_eq!(r.ok()["accepted"], 2);

    // The co-signer fetches over HTTP.
    let r = call(&ex, &As::Cosigner(&p.cosigner), "GET", &format!("{path}?after=0"), "").await;
    let got = r.ok()["messages"].as_array().unwrap().clone();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["sender"], "wallet");
    assert_eq!(got[0]["id"], 1);
    assert_eq!(hex::decode(got[0]["payload"].as_str().unwrap()).unwrap(), b"sealed-1");
    assert_eq!(r.body["last_id"], 1);

    // The provider, in-process, gets its own and answers.
    let relay = ex.relay.clone();
    let eid_bytes = tandem_gateway::relay::Eid([1; 32]);
    let got = relay.fetch(&relay_provider, eid_bytes, 0, Duration::ZERO).await.unwrap();
    assert_eq!(got.messages.len(), 1);
    assert_eq!(got.messages[0].message.payload, b"sealed-2");
    relay
        .post(
            &relay_provider,
            eid_bytes,
            vec![RelayMessage {
                sender: Role::Provider,
                recipient: Role::Cosigner,
                broadcast: true,
                seq: 0,
                abort: false,
                payload: b"p".to_vec(),
            }],
        )
        .unwrap();

    // A long-poll returns as soon as something arrives.
    let t0 = Instant::now();
    let r = call(&ex, &As::Cosigner(&p.cosigner), "GET", &format!("{path}?after=1&wait_ms=5000"), "").await;
    assert!(t0.elapsed() < Duration::from_secs(2));
    assert_eq!(r.ok()["messages"][0]["sender"], "provider");
    assert_eq!(r.body["messages"][0]["broadcast"], true);
    // ... and waits when nothing is there.
    let t0 = Instant::now();
    let r = call(&ex, &As::Cosigner(&p.cosigner), "GET", &format!("{path}?after=2&wait_ms=300"), "").await;
    assert_eq!(r.ok()["messages"], json!([]));
    assert!(t0.elapsed() >= Duration::from_millis(300));

    // Session facts, for parties only.
    let r = call(&ex, &As::Cosigner(&p.cosigner), "GET", &format!("/v1/mpc/sessions/{e}"), "").await;
    assert_eq!(r.ok()["protocol"], "keygen");
    ex.stop().await;
}

#[actix_web::test]
async fn who_may_do_what() {
    let (ex, p) = setup().await;
    let e = eid(2);
    let path = format!("/v1/mpc/sessions/{e}/messages");
    let w = As::Wallet(&p.wallet);
    let c = As::Cosigner(&p.cosigner);

    // Authentication: API keys are not relay identities; unknown co-signers are refused.
    let user = ex.user().await;
    ex.signed(&user, "POST", "/v1/mpc/sessions", &open_body(&e, "keygen", &p, true))
        .await
        .err(401, "missing_credentials");
    let stranger = Device::random();
    call(&ex, &As::Cosigner(&stranger), "POST", "/v1/mpc/sessions", &open_body(&e, "keygen", &p, true))
        .await
        .err(401, "unknown_cosigner");
    call(&ex, &As::Wallet(&stranger), "GET", &path, "").await.err(401, "unknown_device");

    // Opening: listed identities must be registered for their roles; the opener must be listed
    // in the role its key is registered for; the provider must be this relay's.
    let swapped = json!({"execution_id": e, "protocol": "keygen", "parties": [
        {"role": "wallet", "identity_pubkey": p.cosigner.pubkey()},
        {"role": "cosigner", "identity_pubkey": p.wallet.pubkey()}]});
    call(&ex, &w, "POST", "/v1/mpc/sessions", &swapped.to_string()).await.err(400, "unregistered_identity");
    let other_provider = json!({"execution_id": e, "protocol": "keygen", "parties": [
        {"role": "wallet", "identity_pubkey": p.wallet.pubkey()},
        {"role": "provider", "identity_pubkey": stranger.pubkey()}]});
    call(&ex, &w, "POST", "/v1/mpc/sessions", &other_provider.to_string()).await.err(400, "bad_request");
    call(&ex, &w, "POST", "/v1/mpc/sessions", &open_body(&e, "mine-bitcoin", &p, true)).await.err(400, "bad_request");
    call(&ex, &w, "POST", "/v1/mpc/sessions", r#"{"execution_id":"abc","protocol":"sign","parties":[]}"#)
        .await
        .err(400, "bad_request");
    // None of that used up the id; the co-signer opens a wallet + co-signer session.
    let r = call(&ex, &c, "POST", "/v1/mpc/sessions", &open_body(&e, "sign", &p, false)).await;
    assert_eq!(r.ok()["parties"].as_array().unwrap().len(), 2);

    // The id is never accepted again.
    call(&ex, &w, "POST", "/v1/mpc/sessions", &open_body(&e, "sign", &p, false)).await.err(409, "execution_id_reused");

    // Posting: only as oneself, only to a party, within the size limit.
    let as_cosigner = json!({"messages": [message("cosigner", "wallet", 0, b"x")]}).to_string();
    call(&ex, &w, "POST", &path, &as_cosigner).await.err(403, "wrong_sender");
    let to_provider = json!({"messages": [message("wallet", "provider", 0, b"x")]}).to_string();
    call(&ex, &w, "POST", &path, &to_provider).await.err(400, "bad_request");
    let too_big = json!({"messages": [message("wallet", "cosigner", 0, &[0u8; 1001])]}).to_string();
    call(&ex, &w, "POST", &path, &too_big).await.err(413, "payload_too_large");
    let not_hex =
        json!({"messages": [{"sender": "wallet", "recipient": "cosigner", "seq": 0, "payload": "zz"}]}).to_string();
    call(&ex, &w, "POST", &path, &not_hex).await.err(400, "bad_request");
    // A wallet that is not a party of this session.
    let other_wallet = Device::random();
    let code = ex.enrolment_code().await;
    ex.enrol(&other_wallet, Some(&code)).await.ok();
    call(&ex, &As::Wallet(&other_wallet), "GET", &path, "").await.err(403, "not_a_party");
    call(&ex, &w, "GET", &format!("/v1/mpc/sessions/{}/messages", eid(99)), "").await.err(404, "unknown_session");
    call(&ex, &w, "GET", "/v1/mpc/sessions/nothex/messages", "").await.err(400, "bad_request");

    // A replayed post is refused by the gateway's replay guard.
    let ts = stamp();
    let h = p.wallet.headers(ts, "POST", &path, b"{\"messages\":[]}");
    ex.raw(Method::POST, &path, &h, b"{\"messages\":[]}").await.ok();
    ex.raw(Method::POST, &path, &h, b"{\"messages\":[]}").await.err(401, "replayed_request");
    ex.stop().await;
}

#[actix_web::test]
async fn an_abort_ends_the_session_for_everyone() {
    let (ex, p) = setup().await;
    let e = eid(3);
    let w = As::Wallet(&p.wallet);
    let c = As::Cosigner(&p.cosigner);
    call(&ex, &w, "POST", "/v1/mpc/sessions", &open_body(&e, "sign", &p, false)).await.ok();
    let path = format!("/v1/mpc/sessions/{e}/messages");

    // The co-signer is waiting when the wallet aborts.
    let poll_path = format!("{path}?wait_ms=5000");
    let h = cosigner_headers(&p.cosigner, "GET", &poll_path, b"");
    let poll = ex.raw(Method::GET, &poll_path, &h, b"");
    let abort = async {
        actix_web::rt::time::sleep(Duration::from_millis(200)).await;
        call(&ex, &w, "POST", &format!("/v1/mpc/sessions/{e}/abort"), r#"{"reason":"user cancelled"}"#).await
    };
    let (polled, aborted) = futures_util::join!(poll, abort);
    assert_eq!(aborted.ok()["status"], "ended");
    polled.err(410, "session_ended");
    assert!(polled.body["error"]["message"].as_str().unwrap().contains("user cancelled"), "{}", polled.body);
    let msg = json!({"messages": [message("cosigner", "wallet", 0, b"x")]}).to_string();
    call(&ex, &c, "POST", &path, &msg).await.err(410, "session_ended");
    let r = call(&ex, &c, "GET", &format!("/v1/mpc/sessions/{e}"), "").await;
    assert!(r.ok()["ended_reason"].as_str().unwrap().contains("aborted by the wallet"));
    // Still never reusable.
    call(&ex, &w, "POST", "/v1/mpc/sessions", &open_body(&e, "sign", &p, false)).await.err(409, "execution_id_reused");
    ex.stop().await;
}
