//! Who is calling: API-key request signatures for users and partners, the bearer token for the
//! operator, and the in-memory cache of API keys.
//!
//! A signed request carries `X-Tandem-Key`, `X-Tandem-Timestamp` (ms since the epoch) and
//! `X-Tandem-Signature` = lowercase hex HMAC-SHA256(secret, timestamp + METHOD + path_and_query +
//! body). The body is covered byte for byte as sent, so handlers parse JSON only after this check.

use crate::error::ApiError;
use crate::Gateway;
use actix_web::HttpRequest;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{SystemTime, UNIX_EPOCH};
use tandem_matching::AccountId;
use tandem_store::ApiKeyRecord;

type HmacSha256 = Hmac<Sha256>;

pub const KEY_HEADER: &str = "X-Tandem-Key";
pub const TIMESTAMP_HEADER: &str = "X-Tandem-Timestamp";
pub const SIGNATURE_HEADER: &str = "X-Tandem-Signature";

/// The request signature: lowercase hex of HMAC-SHA256(secret, timestamp_ms + METHOD +
/// path_and_query + body). The key is the secret string's bytes as handed out (the hex text).
pub fn sign(secret: &str, timestamp_ms: u64, method: &str, path_and_query: &str, body: &[u8]) -> String {
    hex::encode(mac(secret, timestamp_ms, method, path_and_query, body).finalize().into_bytes())
}

fn mac(secret: &str, timestamp_ms: u64, method: &str, path_and_query: &str, body: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length.
    let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC accepts any key length");
    mac.update(timestamp_ms.to_string().as_bytes());
    mac.update(method.as_bytes());
    mac.update(path_and_query.as_bytes());
    mac.update(body);
    mac
}

/// Constant-time check of a hex signature; malformed hex is simply a bad signature.
pub fn verify(
    secret: &str,
    timestamp_ms: u64,
    method: &str,
    path_and_query: &str,
    body: &[u8],
    signature: &str,
) -> bool {
    let Ok(given) = hex::decode(signature.trim()) else {
        return false;
    };
    mac(secret, timestamp_ms, method, path_and_query, body).verify_slice(&given).is_ok()
}

/// Equality that takes the same time wherever the inputs differ. Both sides are hashed first
/// so not even the length of the secret leaks.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let (ha, hb) = (Sha256::digest(a), Sha256::digest(b));
    ha.iter().zip(hb.iter()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub fn now_millis() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// API keys seen so far. Keys are never revoked by this service, so a cached entry stays valid;
/// unknown keys are not cached (a key created later must still work).
#[derive(Default)]
pub struct KeyCache {
    keys: RwLock<HashMap<String, ApiKeyRecord>>,
}

impl KeyCache {
    fn get(&self, api_key: &str) -> Option<(AccountId, String)> {
        let keys = self.keys.read().unwrap_or_else(|p| p.into_inner());
        keys.get(api_key).map(|k| (k.account_id, k.secret.clone()))
    }

    pub fn insert(&self, record: ApiKeyRecord) {
        let mut keys = self.keys.write().unwrap_or_else(|p| p.into_inner());
        keys.insert(record.api_key.clone(), record);
    }
}

/// The account and secret of an API key: cache first, then the store.
pub async fn lookup_key(gw: &Gateway, api_key: &str) -> Result<Option<(AccountId, String)>, ApiError> {
    if let Some(hit) = gw.keys.get(api_key) {
        return Ok(Some(hit));
    }
    match gw.store.api_key(api_key).await? {
        Some(record) => {
            let hit = (record.account_id, record.secret.clone());
            gw.keys.insert(record);
            Ok(Some(hit))
        }
        None => Ok(None),
    }
}

/// Checks the timestamp, the key and the signature of a credential triple; the common core of
/// HTTP and WebSocket authentication.
pub async fn check_credentials(
    gw: &Gateway,
    api_key: &str,
    timestamp: &str,
    signature: &str,
    method: &str,
    path_and_query: &str,
    body: &[u8],
) -> Result<AccountId, ApiError> {
    let ts: u64 = timestamp.trim().parse().map_err(|_| {
        ApiError::unauthorized("stale_timestamp", "the timestamp must be milliseconds since the Unix epoch")
    })?;
    if now_millis().abs_diff(ts) > gw.config.recv_window_ms {
        return Err(ApiError::unauthorized(
            "stale_timestamp",
            format!("the timestamp is more than {} ms away from the server's clock", gw.config.recv_window_ms),
        ));
    }
    let Some((account, secret)) = lookup_key(gw, api_key).await? else {
        return Err(ApiError::unauthorized("unknown_api_key", "unknown API key"));
    };
    if !verify(&secret, ts, method, path_and_query, body, signature) {
        return Err(ApiError::unauthorized("bad_signature", "the request signature does not match"));
    }
    Ok(account)
}

/// Authenticates a signed HTTP request over its exact body bytes.
pub async fn authenticate(gw: &Gateway, req: &HttpRequest, body: &[u8]) -> Result<AccountId, ApiError> {
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok()).filter(|v| !v.is_empty());
    let (Some(key), Some(ts), Some(sig)) = (header(KEY_HEADER), header(TIMESTAMP_HEADER), header(SIGNATURE_HEADER))
    else {
        return Err(ApiError::unauthorized(
            "missing_credentials",
            format!("send {KEY_HEADER}, {TIMESTAMP_HEADER} and {SIGNATURE_HEADER}"),
        ));
    };
    let path_and_query = req.uri().path_and_query().map(|p| p.as_str()).unwrap_or_else(|| req.uri().path());
    check_credentials(gw, key, ts, sig, req.method().as_str(), path_and_query, body).await
}

/// Operator routes: `Authorization: Bearer <operator_token>`. An empty configured token
/// disables them all.
pub fn authenticate_operator(gw: &Gateway, req: &HttpRequest) -> Result<(), ApiError> {
    let bad =
        || ApiError::unauthorized("bad_operator_token", "operator routes need Authorization: Bearer <operator token>");
    let token = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(bad)?;
    if gw.config.operator_token.is_empty()
        || !constant_time_eq(token.trim().as_bytes(), gw.config.operator_token.as_bytes())
    {
        return Err(bad());
    }
    Ok(())
}

/// A fresh random secret: `bytes` random bytes as lowercase hex.
pub fn random_hex(bytes: usize) -> String {
    use rand::RngCore;
    let mut buf = vec![0u8; bytes];
    rand::rngs::OsRng.fill_bytes(&mut buf);
    hex::encode(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_matches_a_known_vector() {
        // Independent check: HMAC-SHA256(key="secret", "1700000000000GET/v1/balances").
        let s = sign("secret", 1_700_000_000_000, "GET", "/v1/balances", b"");
        assert_eq!(s, "efb70b5267aa3a4b5a8f9c6e7ec5299a7f5813e45702599e64edddfde55beef2");
        assert!(verify("secret", 1_700_000_000_000, "GET", "/v1/balances", b"", &s));
        assert!(verify("secret", 1_700_000_000_000, "GET", "/v1/balances", b"", &s.to_uppercase()));
        assert!(!verify("secret", 1_700_000_000_001, "GET", "/v1/balances", b"", &s));
        assert!(!verify("secret", 1_700_000_000_000, "GET", "/v1/balances", b"x", &s));
        assert!(!verify("other", 1_700_000_000_000, "GET", "/v1/balances", b"", &s));
        assert!(!verify("secret", 1_700_000_000_000, "GET", "/v1/balances", b"", "zz"));
    }

    /// The worked example in docs/API.md.
    #[test]
    fn documented_example_signs_as_shown() {
        let secret = "3f1c0e9a6d2b47f8a1e5c9d0b3a7f2e6c4d8b1a9e0f3c7d2b5a8e1f4c6d9b2a7";
        let body = br#"{"market":"BTC-USD","side":"buy","type":"limit","price":"65000.00","quantity":"0.001"}"#;
        assert_eq!(
            sign(secret, 1_718_000_000_000, "POST", "/v1/orders", body),
            "915a00d2408a15ea9420bb8678124b3660e552a9007554fa8f3357ce582562f9"
        );
    }

    #[test]
    fn constant_time_eq_compares() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }

    #[test]
    fn random_hex_is_long_and_fresh() {
        let (a, b) = (random_hex(32), random_hex(32));
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
    }
}
