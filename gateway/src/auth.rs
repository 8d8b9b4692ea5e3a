//! Who is calling: request signatures for users and partners (an HMAC API key, or a wallet's
//! device key), the bearer token for the operator, and the in-memory caches of keys.
//!
//! Both request signatures cover the same message: timestamp_ms + METHOD + path_and_query +
//! body, with `X-Tandem-Timestamp` (ms since the epoch) inside the same window.
//! - API key: `X-Tandem-Key` and `X-Tandem-Signature` = lowercase hex HMAC-SHA256(secret,
//!   message).
//! - Device key (a wallet): `X-Tandem-Device` = the BIP-340 x-only public key (hex) and
//!   `X-Tandem-Signature` = hex of the 64-byte BIP-340 Schnorr signature of SHA256(message).
//! - Co-signer identity key (MPC relay routes only): `X-Tandem-Cosigner` instead of
//!   `X-Tandem-Device`, the same signature; the key is registered by the operator.
//!
//! The body is covered byte for byte as sent, so handlers parse JSON only after this check.

use crate::error::ApiError;
use crate::Gateway;
use actix_web::HttpRequest;
use bitcoin::secp256k1::{schnorr, All, Keypair, Message, Secp256k1, XOnlyPublicKey};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{OnceLock, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};
use tandem_matching::AccountId;
use tandem_store::{ApiKeyRecord, DeviceKeyRecord};

type HmacSha256 = Hmac<Sha256>;

pub const KEY_HEADER: &str = "X-Tandem-Key";
pub const TIMESTAMP_HEADER: &str = "X-Tandem-Timestamp";
pub const SIGNATURE_HEADER: &str = "X-Tandem-Signature";
pub const DEVICE_HEADER: &str = "X-Tandem-Device";
/// A co-signer's identity key: signs like a device key, on the MPC relay routes only.
pub const COSIGNER_HEADER: &str = "X-Tandem-Cosigner";

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

fn secp() -> &'static Secp256k1<All> {
    static SECP: OnceLock<Secp256k1<All>> = OnceLock::new();
    SECP.get_or_init(Secp256k1::new)
}

/// What a device key signs: SHA256(timestamp_ms + METHOD + path_and_query + body), the same
/// message the HMAC scheme authenticates.
pub fn device_digest(timestamp_ms: u64, method: &str, path_and_query: &str, body: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(timestamp_ms.to_string().as_bytes());
    h.update(method.as_bytes());
    h.update(path_and_query.as_bytes());
    h.update(body);
    h.finalize().into()
}

/// A device-signed request's `X-Tandem-Signature`: lowercase hex of the 64-byte BIP-340
/// signature (fresh auxiliary randomness each time) of [`device_digest`].
pub fn sign_device(keypair: &Keypair, timestamp_ms: u64, method: &str, path_and_query: &str, body: &[u8]) -> String {
    use rand::RngCore;
    let mut aux = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut aux);
    let msg = Message::from_digest(device_digest(timestamp_ms, method, path_and_query, body));
    hex::encode(secp().sign_schnorr_with_aux_rand(&msg, keypair, &aux).serialize())
}

/// Checks a hex BIP-340 signature by `device`; malformed hex or length is a bad signature.
pub fn verify_device(
    device: &XOnlyPublicKey,
    timestamp_ms: u64,
    method: &str,
    path_and_query: &str,
    body: &[u8],
    signature: &str,
) -> bool {
    let Ok(bytes) = hex::decode(signature.trim()) else {
        return false;
    };
    let Ok(sig) = schnorr::Signature::from_slice(&bytes) else {
        return false;
    };
    let msg = Message::from_digest(device_digest(timestamp_ms, method, path_and_query, body));
    secp().verify_schnorr(&sig, &msg, device).is_ok()
}

/// A device public key as sent: 64 hex characters of a BIP-340 x-only key (either case).
/// Its canonical spelling (how the store keys it) is `to_string()`, lowercase hex.
pub fn parse_device_pubkey(s: &str) -> Option<XOnlyPublicKey> {
    let s = s.trim();
    if s.len() != 64 {
        return None;
    }
    XOnlyPublicKey::from_slice(&hex::decode(s).ok()?).ok()
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

/// Device keys seen so far, like [`KeyCache`]: never revoked, so entries stay valid; unknown
/// keys are not cached (a wallet enrolled later must still work).
#[derive(Default)]
pub struct DeviceCache {
    devices: RwLock<HashMap<XOnlyPublicKey, AccountId>>,
}

impl DeviceCache {
    fn get(&self, device: &XOnlyPublicKey) -> Option<AccountId> {
        let devices = self.devices.read().unwrap_or_else(|p| p.into_inner());
        devices.get(device).copied()
    }

    pub fn insert(&self, device: XOnlyPublicKey, account: AccountId) {
        let mut devices = self.devices.write().unwrap_or_else(|p| p.into_inner());
        devices.insert(device, account);
    }
}

/// Co-signer identity keys seen so far, like [`DeviceCache`]: never revoked, so entries stay
/// valid; unknown keys are not cached (a co-signer registered later must still work).
#[derive(Default)]
pub struct CosignerCache {
    cosigners: RwLock<std::collections::HashSet<XOnlyPublicKey>>,
}

impl CosignerCache {
    fn contains(&self, key: &XOnlyPublicKey) -> bool {
        self.cosigners.read().unwrap_or_else(|p| p.into_inner()).contains(key)
    }

    pub fn insert(&self, key: XOnlyPublicKey) {
        self.cosigners.write().unwrap_or_else(|p| p.into_inner()).insert(key);
    }
}

/// Whether `key` is a registered co-signer: cache first, then the store.
pub async fn is_cosigner(gw: &Gateway, key: &XOnlyPublicKey) -> Result<bool, ApiError> {
    if gw.cosigners.contains(key) {
        return Ok(true);
    }
    if gw.store.cosigner(&key.to_string()).await?.is_some() {
        gw.cosigners.insert(*key);
        return Ok(true);
    }
    Ok(false)
}

/// The account of a registered device key: cache first, then the store.
pub async fn lookup_device(gw: &Gateway, device: &XOnlyPublicKey) -> Result<Option<AccountId>, ApiError> {
    if let Some(hit) = gw.devices.get(device) {
        return Ok(Some(hit));
    }
    match gw.store.device_key(&device.to_string()).await? {
        Some(DeviceKeyRecord { account_id, .. }) => {
            gw.devices.insert(*device, account_id);
            Ok(Some(account_id))
        }
        None => Ok(None),
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

/// Parses `X-Tandem-Timestamp` and checks it is within the window of the server clock.
pub fn check_timestamp(gw: &Gateway, timestamp: &str) -> Result<u64, ApiError> {
    let ts: u64 = timestamp.trim().parse().map_err(|_| {
        ApiError::unauthorized("stale_timestamp", "the timestamp must be milliseconds since the Unix epoch")
    })?;
    if now_millis().abs_diff(ts) > gw.config.recv_window_ms {
        return Err(ApiError::unauthorized(
            "stale_timestamp",
            format!("the timestamp is more than {} ms away from the server's clock", gw.config.recv_window_ms),
        ));
    }
    Ok(ts)
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
    let ts = check_timestamp(gw, timestamp)?;
    let Some((account, secret)) = lookup_key(gw, api_key).await? else {
        return Err(ApiError::unauthorized("unknown_api_key", "unknown API key"));
    };
    if !verify(&secret, ts, method, path_and_query, body, signature) {
        return Err(ApiError::unauthorized("bad_signature", "the request signature does not match"));
    }
    first_use(gw, method, path_and_query, signature, ts).await?;
    Ok(account)
}

/// A valid signature is accepted once: a captured request replayed inside the timestamp window
/// is refused. Hex case is folded so the same signature bytes count as the same signature.
/// Reads (`GET`) are exempt: repeating one changes nothing, and pollers may legitimately send
/// the same read twice in a millisecond. A WebSocket `auth` counts as a change.
async fn first_use(gw: &Gateway, method: &str, path_and_query: &str, signature: &str, ts: u64) -> Result<(), ApiError> {
    let read = method == "GET" && path_and_query != "/v1/ws";
    if read {
        return Ok(());
    }
    match gw.replays.first_use_everywhere(&signature.to_ascii_lowercase(), ts, now_millis()).await {
        Ok(true) => Ok(()),
        Ok(false) => Err(ApiError::unauthorized("replayed_request", "this exact signed request was already received")),
        Err(e) => {
            tracing::error!(error = %e, "replay guard unavailable");
            Err(ApiError::unavailable("the replay guard cannot be reached: nothing was done, retry shortly"))
        }
    }
}

/// The device-key twin of [`check_credentials`]: timestamp, registered device, signature.
pub async fn check_device_credentials(
    gw: &Gateway,
    device: &str,
    timestamp: &str,
    signature: &str,
    method: &str,
    path_and_query: &str,
    body: &[u8],
) -> Result<AccountId, ApiError> {
    let ts = check_timestamp(gw, timestamp)?;
    let unknown = || ApiError::unauthorized("unknown_device", "no wallet with this device key is enrolled");
    let device = parse_device_pubkey(device).ok_or_else(unknown)?;
    let account = lookup_device(gw, &device).await?.ok_or_else(unknown)?;
    if !verify_device(&device, ts, method, path_and_query, body, signature) {
        return Err(ApiError::unauthorized("bad_signature", "the request signature does not match"));
    }
    first_use(gw, method, path_and_query, signature, ts).await?;
    Ok(account)
}

/// The co-signer twin of [`check_device_credentials`]: timestamp, registered co-signer
/// identity key, BIP-340 signature (the device scheme exactly).
pub async fn check_cosigner_credentials(
    gw: &Gateway,
    identity: &str,
    timestamp: &str,
    signature: &str,
    method: &str,
    path_and_query: &str,
    body: &[u8],
) -> Result<XOnlyPublicKey, ApiError> {
    let ts = check_timestamp(gw, timestamp)?;
    let unknown = || ApiError::unauthorized("unknown_cosigner", "no co-signer with this identity key is registered");
    let key = parse_device_pubkey(identity).ok_or_else(unknown)?;
    if !is_cosigner(gw, &key).await? {
        return Err(unknown());
    }
    if !verify_device(&key, ts, method, path_and_query, body, signature) {
        return Err(ApiError::unauthorized("bad_signature", "the request signature does not match"));
    }
    first_use(gw, method, path_and_query, signature, ts).await?;
    Ok(key)
}

/// Who called an MPC relay route: an identity key, and how it was authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartyCaller {
    pub identity: XOnlyPublicKey,
    pub kind: PartyKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartyKind {
    /// A wallet's enrolled device key (of this account).
    Device(AccountId),
    /// A registered co-signer.
    Cosigner,
    /// A wallet's device key that a host without accounts knows by its vault (a co-signer's
    /// recovery relay).
    VaultWallet,
}

/// Authenticates a request to the MPC relay: signed by an enrolled device key
/// (`X-Tandem-Device`) or by a registered co-signer identity key (`X-Tandem-Cosigner`). API
/// keys are not accepted: a relay party must be an identity key.
pub async fn authenticate_party(gw: &Gateway, req: &HttpRequest, body: &[u8]) -> Result<PartyCaller, ApiError> {
    let caller = check_party(gw, req, body).await?;
    spend_caller_budget(gw, req, &caller.identity.to_string()).await?;
    Ok(caller)
}

async fn check_party(gw: &Gateway, req: &HttpRequest, body: &[u8]) -> Result<PartyCaller, ApiError> {
    let (key, device, cosigner) = (header(req, KEY_HEADER), header(req, DEVICE_HEADER), header(req, COSIGNER_HEADER));
    let (ts, sig) = (header(req, TIMESTAMP_HEADER), header(req, SIGNATURE_HEADER));
    let method = req.method().as_str();
    let pq = path_and_query(req);
    match (key, device, cosigner, ts, sig) {
        (_, Some(_), Some(_), _, _) | (Some(_), Some(_), _, _, _) | (Some(_), _, Some(_), _, _) => Err(
            ApiError::bad_request(format!("send one of {DEVICE_HEADER} or {COSIGNER_HEADER}")),
        ),
        (None, Some(device), None, Some(ts), Some(sig)) => {
            let account = check_device_credentials(gw, device, ts, sig, method, pq, body).await?;
            let identity = parse_device_pubkey(device).ok_or_else(|| ApiError::unauthorized("unknown_device", "bad key"))?;
            Ok(PartyCaller { identity, kind: PartyKind::Device(account) })
        }
        (None, None, Some(cosigner), Some(ts), Some(sig)) => {
            let identity = check_cosigner_credentials(gw, cosigner, ts, sig, method, pq, body).await?;
            Ok(PartyCaller { identity, kind: PartyKind::Cosigner })
        }
        _ => Err(ApiError::unauthorized(
            "missing_credentials",
            format!(
                "MPC relay requests are signed by a device key ({DEVICE_HEADER}) or a co-signer identity key \
                 ({COSIGNER_HEADER}), with {TIMESTAMP_HEADER} and {SIGNATURE_HEADER}; API keys are not accepted"
            ),
        )),
    }
}

fn header<'a>(req: &'a HttpRequest, name: &str) -> Option<&'a str> {
    req.headers().get(name).and_then(|v| v.to_str().ok()).filter(|v| !v.is_empty())
}

/// A request signed by a device key, checked without any registry (the caller decides whether
/// it knows the key): the headers, the timestamp within `recv_window_ms`, the BIP-340 signature
/// over the exact body, and (for changes) that this signature was not seen before. For hosts
/// other than the gateway: a co-signer's recovery relay.
pub fn verify_signed_device_request(
    req: &HttpRequest,
    body: &[u8],
    recv_window_ms: u64,
    replays: &crate::replay_guard::ReplayGuard,
) -> Result<XOnlyPublicKey, ApiError> {
    let (Some(device), Some(ts), Some(sig)) =
        (header(req, DEVICE_HEADER), header(req, TIMESTAMP_HEADER), header(req, SIGNATURE_HEADER))
    else {
        return Err(ApiError::unauthorized(
            "missing_credentials",
            format!("sign the request with a device key: {DEVICE_HEADER}, {TIMESTAMP_HEADER}, {SIGNATURE_HEADER}"),
        ));
    };
    let ts: u64 = ts.trim().parse().map_err(|_| {
        ApiError::unauthorized("stale_timestamp", "the timestamp must be milliseconds since the Unix epoch")
    })?;
    if now_millis().abs_diff(ts) > recv_window_ms {
        return Err(ApiError::unauthorized(
            "stale_timestamp",
            format!("the timestamp is more than {recv_window_ms} ms away from the server's clock"),
        ));
    }
    let key = parse_device_pubkey(device).ok_or_else(|| ApiError::unauthorized("unknown_device", "bad key"))?;
    let (method, pq) = (req.method().as_str(), path_and_query(req));
    if !verify_device(&key, ts, method, pq, body, sig) {
        return Err(ApiError::unauthorized("bad_signature", "the request signature does not match"));
    }
    if method != "GET" && !replays.first_use(&sig.to_ascii_lowercase(), ts, now_millis()) {
        return Err(ApiError::unauthorized("replayed_request", "this exact signed request was already received"));
    }
    Ok(key)
}

pub(crate) fn path_and_query(req: &HttpRequest) -> &str {
    req.uri().path_and_query().map(|p| p.as_str()).unwrap_or_else(|| req.uri().path())
}

/// Authenticates a signed HTTP request over its exact body bytes: by API key
/// (`X-Tandem-Key`) or by device key (`X-Tandem-Device`), never both.
pub async fn authenticate(gw: &Gateway, req: &HttpRequest, body: &[u8]) -> Result<AccountId, ApiError> {
    let account = check_signed(gw, req, body).await?;
    // Counted only once the signature checks: nobody can spend another caller's budget.
    let caller = header(req, KEY_HEADER).or_else(|| header(req, DEVICE_HEADER)).unwrap_or_default();
    spend_caller_budget(gw, req, caller).await?;
    Ok(account)
}

/// Spends from an authenticated caller's budget: `429 rate_limited` once it is spent; the
/// budget is kept with the request for the answer's headers.
pub(crate) async fn spend_caller_budget(gw: &Gateway, req: &HttpRequest, caller: &str) -> Result<(), ApiError> {
    use actix_web::HttpMessage as _;
    if let Some(budget) = gw.limiter.spend(crate::limits::Subject::Caller(caller), 1).await {
        req.extensions_mut().insert(budget);
        if budget.exceeded() {
            return Err(ApiError::rate_limited(&budget));
        }
    }
    Ok(())
}

async fn check_signed(gw: &Gateway, req: &HttpRequest, body: &[u8]) -> Result<AccountId, ApiError> {
    let (key, device) = (header(req, KEY_HEADER), header(req, DEVICE_HEADER));
    let (ts, sig) = (header(req, TIMESTAMP_HEADER), header(req, SIGNATURE_HEADER));
    let method = req.method().as_str();
    match (key, device, ts, sig) {
        (Some(_), Some(_), _, _) => {
            Err(ApiError::bad_request(format!("send {KEY_HEADER} or {DEVICE_HEADER}, not both")))
        }
        (Some(key), None, Some(ts), Some(sig)) => {
            check_credentials(gw, key, ts, sig, method, path_and_query(req), body).await
        }
        (None, Some(device), Some(ts), Some(sig)) => {
            check_device_credentials(gw, device, ts, sig, method, path_and_query(req), body).await
        }
        _ => Err(ApiError::unauthorized(
            "missing_credentials",
            format!("send {KEY_HEADER} (or {DEVICE_HEADER}), {TIMESTAMP_HEADER} and {SIGNATURE_HEADER}"),
        )),
    }
}

/// The request as its wallet signed it, if it was signed by a device key (call after
/// [`authenticate`] accepted it): kept as the user's own proof that it asked for what the request
/// became (`kind`, `ref_id`, at engine sequence `seq`).
pub fn device_signed_request(
    req: &HttpRequest,
    body: &[u8],
    account: AccountId,
    kind: tandem_store::SignedRequestKind,
    ref_id: u64,
    seq: tandem_matching::Seq,
) -> Option<tandem_store::SignedRequestRecord> {
    let device = parse_device_pubkey(header(req, DEVICE_HEADER)?)?;
    let timestamp_ms = header(req, TIMESTAMP_HEADER)?.trim().parse().ok()?;
    Some(tandem_store::SignedRequestRecord {
        kind,
        ref_id,
        account_id: account,
        seq,
        device_pubkey: device.to_string(),
        timestamp_ms,
        method: req.method().as_str().to_owned(),
        path: path_and_query(req).to_owned(),
        body: body.to_vec(),
        signature: header(req, SIGNATURE_HEADER)?.trim().to_ascii_lowercase(),
    })
}

/// Keeps a device-signed request (see [`device_signed_request`]). A failure to write is logged,
/// not answered: the command already stands, it only lacks its proof.
pub async fn keep_signed_request(gw: &Gateway, record: Option<tandem_store::SignedRequestRecord>) {
    let Some(record) = record else { return };
    if let Err(e) = gw.store.insert_signed_request(&record).await {
        tracing::error!(kind = record.kind.as_str(), id = record.ref_id, error = %e, "could not keep a signed request");
    }
}

/// Proof of possession for enrolment: the request is signed by the key named in
/// `X-Tandem-Device`, which need not be registered yet. Answers that key; the handler then
/// requires the body to enrol exactly it.
pub fn check_possession(gw: &Gateway, req: &HttpRequest, body: &[u8]) -> Result<XOnlyPublicKey, ApiError> {
    let (Some(device), Some(ts), Some(sig)) =
        (header(req, DEVICE_HEADER), header(req, TIMESTAMP_HEADER), header(req, SIGNATURE_HEADER))
    else {
        return Err(ApiError::unauthorized(
            "missing_credentials",
            format!("sign the enrolment with the device key: send {DEVICE_HEADER}, {TIMESTAMP_HEADER} and {SIGNATURE_HEADER}"),
        ));
    };
    let ts = check_timestamp(gw, ts)?;
    let device = parse_device_pubkey(device).ok_or_else(|| {
        ApiError::bad_request(format!("{DEVICE_HEADER} must be a BIP-340 x-only public key: 64 hex characters"))
    })?;
    if !verify_device(&device, ts, req.method().as_str(), path_and_query(req), body, sig) {
        return Err(ApiError::unauthorized("bad_signature", "the request signature does not match"));
    }
    Ok(device)
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

    fn test_keypair(byte: u8) -> Keypair {
        Keypair::from_seckey_slice(secp(), &[byte; 32]).unwrap()
    }

    #[test]
    fn device_signatures_verify_only_for_their_key_and_message() {
        let key = test_keypair(7);
        let device = key.x_only_public_key().0;
        let sig = sign_device(&key, 1_700_000_000_000, "GET", "/v1/balances", b"");
        assert_eq!(sig.len(), 128);
        assert!(verify_device(&device, 1_700_000_000_000, "GET", "/v1/balances", b"", &sig));
        assert!(verify_device(&device, 1_700_000_000_000, "GET", "/v1/balances", b"", &sig.to_uppercase()));
        assert!(!verify_device(&device, 1_700_000_000_001, "GET", "/v1/balances", b"", &sig));
        assert!(!verify_device(&device, 1_700_000_000_000, "POST", "/v1/balances", b"", &sig));
        assert!(!verify_device(&device, 1_700_000_000_000, "GET", "/v1/balances?x", b"", &sig));
        assert!(!verify_device(&device, 1_700_000_000_000, "GET", "/v1/balances", b"x", &sig));
        let other = test_keypair(8).x_only_public_key().0;
        assert!(!verify_device(&other, 1_700_000_000_000, "GET", "/v1/balances", b"", &sig));
        assert!(!verify_device(&device, 1_700_000_000_000, "GET", "/v1/balances", b"", "zz"));
        assert!(!verify_device(&device, 1_700_000_000_000, "GET", "/v1/balances", b"", &sig[..126]));
        // Fresh auxiliary randomness: two signatures of one request differ, both verify.
        let again = sign_device(&key, 1_700_000_000_000, "GET", "/v1/balances", b"");
        assert_ne!(sig, again);
        assert!(verify_device(&device, 1_700_000_000_000, "GET", "/v1/balances", b"", &again));
    }

    /// Independent check of the signed digest (Python: hashlib.sha256(b"...").hexdigest()), and
    /// the worked example of docs/API.md.
    #[test]
    fn device_digest_matches_known_vectors_and_the_documented_example() {
        assert_eq!(
            hex::encode(device_digest(1_700_000_000_000, "GET", "/v1/balances", b"")),
            "f0d0b9dedea322e7524b99d5a00e2a05be972d0a9a66157cc8dafd551fdba47f"
        );
        let body = br#"{"market":"BTC-USD","side":"buy","type":"limit","price":"65000.00","quantity":"0.001"}"#;
        let digest = device_digest(1_718_000_000_000, "POST", "/v1/orders", body);
        assert_eq!(hex::encode(digest), "7f3dc13b8f471aa7a3422f54911f5303dc197601d7275b9019dc27fe99e44147");
        let key = test_keypair(1);
        let device = key.x_only_public_key().0;
        assert_eq!(device.to_string(), DOC_DEVICE);
        let sig = secp().sign_schnorr_with_aux_rand(&Message::from_digest(digest), &key, &[0u8; 32]);
        assert_eq!(hex::encode(sig.serialize()), DOC_SIGNATURE);
        assert!(verify_device(&device, 1_718_000_000_000, "POST", "/v1/orders", body, DOC_SIGNATURE));
    }

    const DOC_DEVICE: &str = "1b84c5567b126440995d3ed5aaba0565d71e1834604819ff9c17f5e9d5dd078f";
    const DOC_SIGNATURE: &str = "81ac88a12d6f4518132c231958cadbaa3770696fb7d1eea7a9648ded8c44c0dc6abec7c51413f73f2fb0c50036fe878e6cb783e96b61cbd238c260fda29f26d0";

    #[test]
    fn device_pubkeys_parse_strictly() {
        let device = test_keypair(7).x_only_public_key().0;
        let hex = device.to_string();
        assert_eq!(hex.len(), 64);
        assert_eq!(parse_device_pubkey(&hex), Some(device));
        assert_eq!(parse_device_pubkey(&hex.to_uppercase()), Some(device));
        assert_eq!(parse_device_pubkey(&format!(" {hex}\n")), Some(device));
        assert_eq!(parse_device_pubkey(&hex[..62]), None);
        assert_eq!(parse_device_pubkey(&format!("02{hex}")), None, "compressed keys are not x-only");
        assert_eq!(parse_device_pubkey(&"zz".repeat(32)), None);
        // Not the x coordinate of any curve point.
        assert_eq!(parse_device_pubkey(&"ff".repeat(32)), None);
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
