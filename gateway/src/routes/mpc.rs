//! The MPC relay over HTTP (`/v1/mpc/sessions...`): the wallet (device-key signatures) and the
//! co-signer (co-signer identity-key signatures) open sessions, post sealed messages, fetch
//! (long-poll) the messages addressed to them, and abort. The mailboxes are [`crate::relay`]'s;
//! the provider uses them in-process.
//!
//! On top of the relay's own checks this layer binds roles to kinds of keys: a session's
//! wallet must be an enrolled device key and its co-signer a registered co-signer identity
//! (the provider's key is the relay's configuration).

use super::{resource, BodyLimit, RawBody};
use crate::auth::{authenticate_party, is_cosigner, lookup_device, parse_device_pubkey, PartyCaller};
use crate::dto::{parse_json, parse_query, printable};
use crate::error::ApiError;
use crate::openapi::schemas as doc;
use crate::relay::{Delivered, Eid, Relay, RelayError, RelayMessage, Role, SessionParty, SessionSpec, SessionView};
use crate::Gateway;
use actix_web::http::StatusCode;
use actix_web::web::{self, Data};
use actix_web::{HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::time::Duration;

pub fn configure(cfg: &mut web::ServiceConfig, max_request_bytes: usize) {
    cfg.service(resource("/v1/mpc/provider", |r| r.route(web::get().to(provider))));
    configure_relay::<Gateway>(cfg, max_request_bytes);
}

/// Who serves a relay over HTTP: the provider's gateway ([`Gateway`]: enrolled devices and
/// registered co-signers), or a co-signer serving its recovery relay to its vaults' wallets.
/// The routes are the same; who may call them, and which sessions they may open, is the host's.
pub trait RelayHost: 'static {
    fn relay(&self) -> &Relay;
    /// Who signed the request (and that they did).
    fn authenticate(&self, req: &HttpRequest, body: &[u8]) -> impl std::future::Future<Output = Result<PartyCaller, ApiError>>;
    /// Whether the caller may open a session with these parties.
    fn check_parties(
        &self,
        caller: &PartyCaller,
        parties: &[SessionParty],
    ) -> impl std::future::Future<Output = Result<(), ApiError>>;
}

impl RelayHost for Gateway {
    fn relay(&self) -> &Relay {
        &self.relay
    }

    async fn authenticate(&self, req: &HttpRequest, body: &[u8]) -> Result<PartyCaller, ApiError> {
        authenticate_party(self, req, body).await
    }

    async fn check_parties(&self, caller: &PartyCaller, parties: &[SessionParty]) -> Result<(), ApiError> {
        check_registered(self, caller, parties).await
    }
}

/// The relay's routes (`/v1/mpc/sessions...`) for host `H` (its `Data<H>` must be in the app).
pub fn configure_relay<H: RelayHost>(cfg: &mut web::ServiceConfig, max_request_bytes: usize) {
    let limit = max_request_bytes.max(1024);
    cfg.service(resource("/v1/mpc/sessions", |r| r.route(web::post().to(open::<H>)).route(web::get().to(list::<H>))))
        .service(resource("/v1/mpc/sessions/{eid}", |r| r.route(web::get().to(session::<H>))))
        .service(resource("/v1/mpc/sessions/{eid}/messages", move |r| {
            r.app_data(web::PayloadConfig::new(limit))
                .app_data(BodyLimit(limit))
                .route(web::post().to(post_messages::<H>))
                .route(web::get().to(fetch_messages::<H>))
        }))
        .service(resource("/v1/mpc/sessions/{eid}/abort", |r| r.route(web::post().to(abort::<H>))))
        .service(resource("/v1/mpc/sessions/{eid}/finish", |r| r.route(web::post().to(finish::<H>))));
}

impl From<RelayError> for ApiError {
    fn from(e: RelayError) -> ApiError {
        let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST);
        ApiError::new(status, e.code(), e.to_string())
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct OpenRequest {
    /// 32 random bytes as 64 hex characters, never used on this relay before.
    execution_id: String,
    /// `aux-info`, `keygen`, `presign` or `sign`.
    #[schema(example = "keygen")]
    protocol: String,
    /// 2 or 3 parties, each role and each key once; the caller among them.
    parties: Vec<PartyJson>,
    /// What the session is for (a signing session's spend intent); any JSON.
    #[serde(default)]
    intent: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// Only sessions opened after this `opened_seq`.
    #[serde(default)]
    after: u64,
    /// Long poll: wait up to this long (capped at 10000) for a session.
    #[serde(default)]
    wait_ms: u64,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct PartyJson {
    role: Role,
    #[schema(value_type = doc::XOnlyKey)]
    identity_pubkey: String,
}

/// A batch of sealed messages from the caller, queued all or none.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct PostRequest {
    messages: Vec<MessageJson>,
}

/// One sealed message on the wire; `id` only in fetch replies.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct MessageJson {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id: Option<u64>,
    sender: Role,
    recipient: Role,
    #[serde(default)]
    broadcast: bool,
    seq: u64,
    #[serde(default)]
    abort: bool,
    /// The sealed payload, hex.
    payload: String,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct FetchQuery {
    /// The previous reply's `last_id`: acknowledges (and frees) every message up to it.
    #[serde(default)]
    after: u64,
    /// Long poll: wait up to this long (capped at 10000) for a message.
    #[serde(default)]
    wait_ms: u64,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct AbortRequest {
    /// Up to 200 printable characters.
    #[serde(default)]
    reason: Option<String>,
}

fn path_eid(req: &HttpRequest) -> Result<Eid, ApiError> {
    let raw = req.match_info().get("eid").unwrap_or("");
    Eid::from_hex(raw).ok_or_else(|| ApiError::bad_request("the execution id must be 64 hex characters"))
}

fn session_json(v: &SessionView) -> serde_json::Value {
    json!({
        "execution_id": v.execution_id.to_string(),
        "protocol": v.protocol,
        "parties": v.parties.iter().map(|p| json!({"role": p.role, "identity_pubkey": p.identity.to_string()})).collect::<Vec<_>>(),
        "intent": v.intent.as_deref().and_then(|i| serde_json::from_str::<serde_json::Value>(i).ok()),
        "opened_seq": v.opened_seq,
        "status": if v.ended.is_some() { "ended" } else { "open" },
        "ended_reason": v.ended,
        "expires_in_ms": v.expires_in.as_millis() as u64,
    })
}

/// A party's role must fit how its key is registered.
async fn check_registered(gw: &Gateway, caller: &PartyCaller, parties: &[SessionParty]) -> Result<(), ApiError> {
    let unregistered = |what: String| ApiError::new(StatusCode::BAD_REQUEST, "unregistered_identity", what);
    for p in parties {
        match p.role {
            Role::Wallet => {
                if lookup_device(gw, &p.identity).await?.is_none() {
                    return Err(unregistered(format!(
                        "the wallet's identity key {} is not an enrolled device key",
                        p.identity
                    )));
                }
            }
            Role::Cosigner => {
                if !is_cosigner(gw, &p.identity).await? {
                    return Err(unregistered(format!(
                        "the co-signer's identity key {} is not a registered co-signer",
                        p.identity
                    )));
                }
            }
            Role::Provider => {}
        }
    }
    // The caller's own entry must match how it authenticated (a device cannot open as co-signer).
    let mine = parties.iter().find(|p| p.identity == caller.identity).map(|p| p.role);
    let fits = match caller.kind {
        crate::auth::PartyKind::Device(_) | crate::auth::PartyKind::VaultWallet => mine == Some(Role::Wallet),
        crate::auth::PartyKind::Cosigner => mine == Some(Role::Cosigner),
    };
    if !fits {
        return Err(ApiError::bad_request(
            "the caller must be among the parties: a device key as the wallet, a co-signer key as the co-signer",
        ));
    }
    Ok(())
}

/// The provider's identity and the registered co-signers
///
/// The provider's identity key, for wallets and co-signers to pin (public: it is what every
/// session with this provider will name).
/// Also lists the registered co-signers, so a wallet can make a 2-of-3 vault.
#[utoipa::path(get, path = "/v1/mpc/provider", tag = "mpc",
    responses((status = 200, description = "Public: what every session with this provider names", body = doc::Provider)))]
async fn provider(gw: Data<Gateway>) -> Result<HttpResponse, ApiError> {
    let identity = gw.config.mpc.provider_identity.map(|k| k.to_string());
    let network = gw.config.bitcoin_network.to_core_arg();
    let cosigners: Vec<_> = gw
        .store
        .cosigners()
        .await?
        .into_iter()
        .map(|c| json!({"identity_pubkey": c.identity_pubkey, "label": c.label}))
        .collect();
    Ok(HttpResponse::Ok().json(json!({
        "identity": identity, "demo": gw.config.mpc.demo, "network": network, "cosigners": cosigners,
    })))
}

/// Open an MPC session
///
/// Opens a session of the caller's with its parties; the others join by fetching.
#[utoipa::path(post, path = "/v1/mpc/sessions", tag = "mpc", operation_id = "open_session",
    request_body = OpenRequest,
    responses(
        (status = 200, description = "The session", body = doc::Session),
        (status = 400, description = "`bad_request`, `unregistered_identity`", body = doc::ErrorBody),
        (status = 409, description = "`execution_id_reused`", body = doc::ErrorBody),
        (status = 503, description = "`relay_full`", body = doc::ErrorBody),
    ),
    security(("device_key" = [], "timestamp" = [], "signature" = []), ("cosigner_key" = [], "timestamp" = [], "signature" = [])))]
async fn open<H: RelayHost>(gw: Data<H>, req: HttpRequest, body: RawBody) -> Result<HttpResponse, ApiError> {
    let caller = gw.authenticate(&req, &body).await?;
    let r: OpenRequest = parse_json(&body)?;
    let execution_id = Eid::from_hex(&r.execution_id)
        .ok_or_else(|| ApiError::bad_request("execution_id must be 64 hex characters"))?;
    let parties = r
        .parties
        .iter()
        .map(|p| {
            let identity = parse_device_pubkey(&p.identity_pubkey).ok_or_else(|| {
                ApiError::bad_request("identity_pubkey must be a BIP-340 x-only public key: 64 hex characters")
            })?;
            Ok(SessionParty { role: p.role, identity })
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    gw.check_parties(&caller, &parties).await?;
    let intent = r.intent.map(|i| i.to_string());
    let view = gw.relay().open(&caller.identity, SessionSpec { execution_id, protocol: r.protocol, parties, intent })?;
    Ok(HttpResponse::Ok().json(session_json(&view)))
}

/// Sessions naming the caller
///
/// The open sessions naming the caller, opened after the cursor; long-polls with `wait_ms`.
#[utoipa::path(get, path = "/v1/mpc/sessions", tag = "mpc", operation_id = "list_sessions",
    params(ListQuery),
    responses((status = 200, description = "Oldest first", body = doc::Sessions)),
    security(("device_key" = [], "timestamp" = [], "signature" = []), ("cosigner_key" = [], "timestamp" = [], "signature" = [])))]
async fn list<H: RelayHost>(gw: Data<H>, req: HttpRequest, body: RawBody) -> Result<HttpResponse, ApiError> {
    let caller = gw.authenticate(&req, &body).await?;
    let q: ListQuery = parse_query(&req)?;
    let found = gw.relay().sessions_for(&caller.identity, q.after, Duration::from_millis(q.wait_ms)).await?;
    let last_seq = found.last().map_or(q.after, |v| v.opened_seq);
    let sessions: Vec<serde_json::Value> = found.iter().map(session_json).collect();
    Ok(HttpResponse::Ok().json(json!({ "sessions": sessions, "last_seq": last_seq })))
}

/// Get a session
///
/// A session, for its parties.
#[utoipa::path(get, path = "/v1/mpc/sessions/{eid}", tag = "mpc", operation_id = "get_session",
    params(("eid" = String, Path, description = "The execution id: 64 hex characters")),
    responses(
        (status = 200, description = "`status` is `open` or `ended` (with `ended_reason`)", body = doc::Session),
        (status = 403, description = "`not_a_party`", body = doc::ErrorBody),
        (status = 404, description = "`unknown_session`", body = doc::ErrorBody),
        (status = 410, description = "`session_ended`: aborted, expired or finished", body = doc::ErrorBody),
    ),
    security(("device_key" = [], "timestamp" = [], "signature" = []), ("cosigner_key" = [], "timestamp" = [], "signature" = [])))]
async fn session<H: RelayHost>(gw: Data<H>, req: HttpRequest, body: RawBody) -> Result<HttpResponse, ApiError> {
    let caller = gw.authenticate(&req, &body).await?;
    let eid = path_eid(&req)?;
    Ok(HttpResponse::Ok().json(session_json(&gw.relay().session(&caller.identity, eid)?)))
}

/// Post sealed messages
///
/// Queues sealed messages; a message whose `seq` its sender already sent to that recipient is
/// skipped but counted, so a batch can be retried after a lost reply.
#[utoipa::path(post, path = "/v1/mpc/sessions/{eid}/messages", tag = "mpc",
    params(("eid" = String, Path, description = "The execution id: 64 hex characters")),
    request_body = PostRequest,
    responses(
        (status = 200, description = "How many were accepted", body = doc::Accepted),
        (status = 403, description = "`not_a_party`, `wrong_sender`", body = doc::ErrorBody),
        (status = 404, description = "`unknown_session`", body = doc::ErrorBody),
        (status = 410, description = "`session_ended`", body = doc::ErrorBody),
        (status = 413, description = "`payload_too_large`", body = doc::ErrorBody),
        (status = 429, description = "`session_queue_full`: the parties must fetch first", body = doc::ErrorBody),
        (status = 503, description = "`relay_full`", body = doc::ErrorBody),
    ),
    security(("device_key" = [], "timestamp" = [], "signature" = []), ("cosigner_key" = [], "timestamp" = [], "signature" = [])))]
async fn post_messages<H: RelayHost>(gw: Data<H>, req: HttpRequest, body: RawBody) -> Result<HttpResponse, ApiError> {
    let caller = gw.authenticate(&req, &body).await?;
    let eid = path_eid(&req)?;
    let r: PostRequest = parse_json(&body)?;
    let messages = r
        .messages
        .into_iter()
        .map(|m| {
            if m.id.is_some() {
                return Err(ApiError::bad_request("id is given by the relay, not the sender"));
            }
            let payload = hex::decode(m.payload.trim()).map_err(|_| ApiError::bad_request("payload must be hex"))?;
            Ok(RelayMessage {
                sender: m.sender,
                recipient: m.recipient,
                broadcast: m.broadcast,
                seq: m.seq,
                abort: m.abort,
                payload,
            })
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    let accepted = gw.relay().post(&caller.identity, eid, messages)?;
    Ok(HttpResponse::Ok().json(json!({ "accepted": accepted })))
}

fn message_json(d: &Delivered) -> MessageJson {
    let m = &d.message;
    MessageJson {
        id: Some(d.id),
        sender: m.sender,
        recipient: m.recipient,
        broadcast: m.broadcast,
        seq: m.seq,
        abort: m.abort,
        payload: hex::encode(&m.payload),
    }
}

/// Fetch messages
///
/// The messages addressed to the caller after `after`, oldest first; long-polls with `wait_ms`.
#[utoipa::path(get, path = "/v1/mpc/sessions/{eid}/messages", tag = "mpc",
    params(("eid" = String, Path, description = "The execution id: 64 hex characters"), FetchQuery),
    responses(
        (status = 200, description = "Oldest first; at most about half the request limit of payload bytes", body = doc::Messages),
        (status = 403, description = "`not_a_party`", body = doc::ErrorBody),
        (status = 404, description = "`unknown_session`", body = doc::ErrorBody),
        (status = 410, description = "`session_ended`: aborted, expired or finished", body = doc::ErrorBody),
    ),
    security(("device_key" = [], "timestamp" = [], "signature" = []), ("cosigner_key" = [], "timestamp" = [], "signature" = [])))]
async fn fetch_messages<H: RelayHost>(gw: Data<H>, req: HttpRequest, body: RawBody) -> Result<HttpResponse, ApiError> {
    let caller = gw.authenticate(&req, &body).await?;
    let eid = path_eid(&req)?;
    let q: FetchQuery = parse_query(&req)?;
    let fetched = gw.relay().fetch(&caller.identity, eid, q.after, Duration::from_millis(q.wait_ms)).await?;
    let messages: Vec<MessageJson> = fetched.messages.iter().map(message_json).collect();
    Ok(HttpResponse::Ok().json(json!({ "messages": messages, "last_id": fetched.last_id })))
}

/// Finish the caller's part
///
/// The caller is done with the session: see [`crate::relay::Relay::finish`].
#[utoipa::path(post, path = "/v1/mpc/sessions/{eid}/finish", tag = "mpc",
    description = "No body. The caller's protocol succeeded: the session stops counting against its open sessions, and ends once every party finished.",
    params(("eid" = String, Path, description = "The execution id: 64 hex characters")),
    responses(
        (status = 200, description = "The session", body = doc::Session),
        (status = 403, description = "`not_a_party`", body = doc::ErrorBody),
        (status = 404, description = "`unknown_session`", body = doc::ErrorBody),
        (status = 410, description = "`session_ended`: aborted, expired or finished", body = doc::ErrorBody),
    ),
    security(("device_key" = [], "timestamp" = [], "signature" = []), ("cosigner_key" = [], "timestamp" = [], "signature" = [])))]
async fn finish<H: RelayHost>(gw: Data<H>, req: HttpRequest, body: RawBody) -> Result<HttpResponse, ApiError> {
    let caller = gw.authenticate(&req, &body).await?;
    let eid = path_eid(&req)?;
    gw.relay().finish(&caller.identity, eid)?;
    let view = gw.relay().session(&caller.identity, eid)?;
    Ok(HttpResponse::Ok().json(session_json(&view)))
}

/// Abort a session
///
/// Ends the session for every party: their fetches answer `410 session_ended` with the reason.
#[utoipa::path(post, path = "/v1/mpc/sessions/{eid}/abort", tag = "mpc",
    params(("eid" = String, Path, description = "The execution id: 64 hex characters")),
    request_body(content = Option<AbortRequest>, description = "Optional"),
    responses(
        (status = 200, description = "The session, ended", body = doc::Session),
        (status = 403, description = "`not_a_party`", body = doc::ErrorBody),
        (status = 404, description = "`unknown_session`", body = doc::ErrorBody),
        (status = 410, description = "`session_ended`: aborted, expired or finished", body = doc::ErrorBody),
    ),
    security(("device_key" = [], "timestamp" = [], "signature" = []), ("cosigner_key" = [], "timestamp" = [], "signature" = [])))]
async fn abort<H: RelayHost>(gw: Data<H>, req: HttpRequest, body: RawBody) -> Result<HttpResponse, ApiError> {
    let caller = gw.authenticate(&req, &body).await?;
    let eid = path_eid(&req)?;
    let r: AbortRequest = if body.is_empty() { AbortRequest { reason: None } } else { parse_json(&body)? };
    let reason = r.reason.unwrap_or_default();
    printable("reason", &reason, 0, 200)?;
    gw.relay().abort(&caller.identity, eid, &reason)?;
    let view = gw.relay().session(&caller.identity, eid)?;
    Ok(HttpResponse::Ok().json(session_json(&view)))
}
