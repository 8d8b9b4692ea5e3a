//! Idempotency keys for requests a client may have to retry (a timeout, a dropped connection):
//! a write sent with `Idempotency-Key: <1 to 64 visible ASCII characters>` is done once, and its
//! answer is kept for a day and given again, marked `Idempotent-Replayed: true`, to every retry
//! with the same key from the same caller (a retry is signed anew: the replay guard refuses the
//! very same signed bytes). The same key for a different request (method, path or body) is
//! refused with `422 idempotency_key_reused`; a retry while the first is still being answered
//! gets `409 request_in_progress`. A 5xx answer is not kept: the request had no known outcome,
//! and the retry decides it. Client ids remain the engine's own, deeper guard: an order or a
//! withdrawal with a key but no client id gets one derived from the key
//! ([`derived_client_id`]), so the engine refuses a retry of one that did land.
//!
//! Records live in this process ([`MemoryRecords`]) or in Redis ([`RedisRecords`], shared by
//! every gateway). When Redis cannot be reached, a request with a key is answered `503
//! unavailable` and nothing is done: never a second execution nobody can detect.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::body::MessageBody as _;
use actix_web::http::StatusCode;
use actix_web::web::Data;
use actix_web::{HttpRequest, HttpResponse, ResponseError as _};
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tandem_matching::{AccountId, ClientOrderId};

use crate::auth::{authenticate, path_and_query};
use crate::error::ApiError;
use crate::routes::RawBody;
use crate::Gateway;

pub const HEADER: &str = "idempotency-key";
const REPLAYED: &str = "idempotent-replayed";
/// How long an answer is kept.
const KEEP: Duration = Duration::from_secs(24 * 3600);
/// How long a request being answered holds its key (longer than any answer takes).
const HOLD: Duration = Duration::from_secs(60);

/// A kept answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    pub status: u16,
    pub body: String,
}

/// What a key holds, as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Record {
    fingerprint: String,
    answer: Option<Answer>,
}

/// What claiming a key found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claim {
    /// Nobody had it: go ahead, then [`IdempotencyStore::remember`] or `forget`.
    Fresh,
    Replay(Answer),
    InProgress,
    /// The key was used for a different request.
    Mismatch,
}

pub trait IdempotencyStore: Send + Sync {
    fn claim<'a>(&'a self, key: &'a str, fingerprint: &'a str) -> BoxFuture<'a, Result<Claim, String>>;
    fn remember<'a>(&'a self, key: &'a str, fingerprint: &'a str, answer: Answer) -> BoxFuture<'a, Result<(), String>>;
    fn forget<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), String>>;
}

fn found(record: &Record, fingerprint: &str) -> Claim {
    match &record.answer {
        _ if record.fingerprint != fingerprint => Claim::Mismatch,
        Some(answer) => Claim::Replay(answer.clone()),
        None => Claim::InProgress,
    }
}

/// Records in this process.
#[derive(Default)]
pub struct MemoryRecords {
    records: Mutex<MemoryMap>,
}

#[derive(Default)]
struct MemoryMap {
    by_key: HashMap<String, (Record, Instant)>,
    /// When expired records were last dropped (once a minute at most).
    swept: Option<Instant>,
}

impl IdempotencyStore for MemoryRecords {
    fn claim<'a>(&'a self, key: &'a str, fingerprint: &'a str) -> BoxFuture<'a, Result<Claim, String>> {
        let mut records = self.records.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if records.swept.is_none_or(|t| now.duration_since(t) > Duration::from_secs(60)) {
            records.by_key.retain(|_, (_, expires)| *expires > now);
            records.swept = Some(now);
        }
        let claim = match records.by_key.get(key) {
            Some((record, expires)) if *expires > now => found(record, fingerprint),
            _ => {
                let record = Record { fingerprint: fingerprint.to_owned(), answer: None };
                records.by_key.insert(key.to_owned(), (record, now + HOLD));
                Claim::Fresh
            }
        };
        Box::pin(async move { Ok(claim) })
    }

    fn remember<'a>(&'a self, key: &'a str, fingerprint: &'a str, answer: Answer) -> BoxFuture<'a, Result<(), String>> {
        let record = Record { fingerprint: fingerprint.to_owned(), answer: Some(answer) };
        let expires = Instant::now() + KEEP;
        self.records.lock().unwrap_or_else(|p| p.into_inner()).by_key.insert(key.to_owned(), (record, expires));
        Box::pin(async { Ok(()) })
    }

    fn forget<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), String>> {
        self.records.lock().unwrap_or_else(|p| p.into_inner()).by_key.remove(key);
        Box::pin(async { Ok(()) })
    }
}

/// Records in Redis: `SET NX PX` claims a key, `SET PX` keeps its answer.
pub struct RedisRecords {
    connection: crate::redis_link::RedisConnection,
    prefix: String,
}

impl RedisRecords {
    pub fn new(connection: crate::redis_link::RedisConnection, prefix: &str) -> RedisRecords {
        RedisRecords { connection, prefix: prefix.to_owned() }
    }

    fn key(&self, key: &str) -> String {
        format!("{}idem:{key}", self.prefix)
    }
}

impl IdempotencyStore for RedisRecords {
    fn claim<'a>(&'a self, key: &'a str, fingerprint: &'a str) -> BoxFuture<'a, Result<Claim, String>> {
        Box::pin(async move {
            let mut c = self.connection.clone();
            let key = self.key(key);
            let fresh = serde_json::to_string(&Record { fingerprint: fingerprint.to_owned(), answer: None })
                .map_err(|e| e.to_string())?;
            let set: Option<String> = redis::cmd("SET")
                .arg(&key)
                .arg(&fresh)
                .arg("NX")
                .arg("PX")
                .arg(HOLD.as_millis() as u64)
                .query_async(&mut c)
                .await
                .map_err(|e| e.to_string())?;
            if set.is_some() {
                return Ok(Claim::Fresh);
            }
            let held: Option<String> = redis::cmd("GET").arg(&key).query_async(&mut c).await.map_err(|e| e.to_string())?;
            match held {
                // Expired between the two commands: the caller may retry.
                None => Ok(Claim::InProgress),
                Some(json) => {
                    let record: Record = serde_json::from_str(&json).map_err(|e| format!("record {key}: {e}"))?;
                    Ok(found(&record, fingerprint))
                }
            }
        })
    }

    fn remember<'a>(&'a self, key: &'a str, fingerprint: &'a str, answer: Answer) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let mut c = self.connection.clone();
            let record = serde_json::to_string(&Record { fingerprint: fingerprint.to_owned(), answer: Some(answer) })
                .map_err(|e| e.to_string())?;
            redis::cmd("SET")
                .arg(self.key(key))
                .arg(record)
                .arg("PX")
                .arg(KEEP.as_millis() as u64)
                .query_async::<()>(&mut c)
                .await
                .map_err(|e| e.to_string())
        })
    }

    fn forget<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let mut c = self.connection.clone();
            redis::cmd("DEL").arg(self.key(key)).query_async::<()>(&mut c).await.map_err(|e| e.to_string())
        })
    }
}

/// Runs a write for an authenticated caller, once per idempotency key when the request has one.
pub async fn guarded<F, Fut>(gw: Data<Gateway>, req: HttpRequest, body: RawBody, handler: F) -> Result<HttpResponse, ApiError>
where
    F: FnOnce(Data<Gateway>, AccountId, HttpRequest, RawBody) -> Fut + 'static,
    Fut: std::future::Future<Output = Result<HttpResponse, ApiError>> + 'static,
{
    let account = authenticate(&gw, &req, &body).await?;
    let Some(key) = req.headers().get(HEADER) else {
        return handler(gw, account, req, body).await;
    };
    let key = key
        .to_str()
        .ok()
        .filter(|k| (1..=64).contains(&k.len()) && k.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or_else(|| ApiError::bad_request("Idempotency-Key must be 1 to 64 visible ASCII characters"))?;
    let scoped = scoped_key(&req, key);
    let fingerprint = {
        let mut h = Sha256::new();
        h.update(req.method().as_str());
        h.update(b" ");
        h.update(path_and_query(&req));
        h.update(b"\n");
        h.update(&body.0);
        hex::encode(h.finalize())
    };
    let store = gw.idempotency.clone();
    let unavailable = |e: String| {
        tracing::error!(error = %e, "idempotency records unavailable");
        ApiError::unavailable("idempotency records are unavailable: nothing was done, retry shortly")
    };
    match store.claim(&scoped, &fingerprint).await.map_err(unavailable)? {
        Claim::Replay(answer) => return Ok(rebuild(&answer, true)),
        Claim::InProgress => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "request_in_progress",
                "a request with this Idempotency-Key is still being answered: retry shortly",
            ))
        }
        Claim::Mismatch => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                "this Idempotency-Key was used for a different request",
            ))
        }
        Claim::Fresh => {}
    }
    let response = async move {
        match handler(gw, account, req, body).await {
            Ok(r) => r,
            Err(e) => e.error_response(),
        }
    };
    let answer = execute(store, scoped, fingerprint, response)
        .await
        .map_err(|_| ApiError::unavailable("the request was interrupted; retry with the same Idempotency-Key"))?;
    Ok(rebuild(&answer, false))
}

/// Per caller: the key header that signed the request (API key or device key), then the
/// client's key.
fn scoped_key(req: &HttpRequest, key: &str) -> String {
    let caller = ["x-tandem-key", "x-tandem-device"]
        .iter()
        .find_map(|h| req.headers().get(*h).and_then(|v| v.to_str().ok()))
        .unwrap_or_default();
    format!("{caller}:{key}")
}

/// The client id an order or withdrawal sent with an `Idempotency-Key` but without a client id
/// of its own is placed under: `idem-` and 31 hex digits of the caller's scoped key. The
/// idempotency record answers retries while it lives, but a write whose outcome was unknown
/// (a `503` from a shared journal the command may still have reached) is not recorded; under
/// this id the engine itself refuses the retry, so it can never act twice.
pub fn derived_client_id(req: &HttpRequest) -> Option<ClientOrderId> {
    let key = req.headers().get(HEADER)?.to_str().ok()?;
    let digest = hex::encode(Sha256::digest(scoped_key(req, key).as_bytes()));
    ClientOrderId::new(&format!("idem-{}", &digest[..31])).ok()
}

/// Runs a claimed write to its end and keeps its answer, in a task of its own: if the client
/// goes away mid-request (its future is dropped), the write still finishes and is recorded, so
/// a retry replays it instead of doing it again.
fn execute(
    store: Arc<dyn IdempotencyStore>,
    scoped: String,
    fingerprint: String,
    response: impl std::future::Future<Output = HttpResponse> + 'static,
) -> actix_web::rt::task::JoinHandle<Answer> {
    actix_web::rt::spawn(async move {
        let response = response.await;
        let status = response.status();
        let body = response.into_body().try_into_bytes().map(|b| String::from_utf8_lossy(&b).into_owned());
        let answer = Answer { status: status.as_u16(), body: body.unwrap_or_default() };
        // A 5xx has no known outcome: the retry decides it, so the key is let go.
        let kept = if status.is_server_error() {
            store.forget(&scoped).await
        } else {
            store.remember(&scoped, &fingerprint, answer.clone()).await
        };
        if let Err(e) = kept {
            // The write is done; a retry would meet the engine's own duplicate checks.
            tracing::error!(error = %e, "could not keep an idempotent answer");
        }
        answer
    })
}

fn rebuild(answer: &Answer, replayed: bool) -> HttpResponse {
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::OK);
    let mut response = HttpResponse::build(status);
    if replayed {
        response.insert_header((REPLAYED, "true"));
    }
    if answer.body.is_empty() {
        response.finish()
    } else {
        response.content_type("application/json").body(answer.body.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn claims_remember_and_replay(store: &dyn IdempotencyStore, key: &str) {
        assert_eq!(store.claim(key, "fp1").await.unwrap(), Claim::Fresh);
        assert_eq!(store.claim(key, "fp1").await.unwrap(), Claim::InProgress);
        assert_eq!(store.claim(key, "fp2").await.unwrap(), Claim::Mismatch);
        let answer = Answer { status: 200, body: "{\"ok\":1}".into() };
        store.remember(key, "fp1", answer.clone()).await.unwrap();
        assert_eq!(store.claim(key, "fp1").await.unwrap(), Claim::Replay(answer));
        assert_eq!(store.claim(key, "fp2").await.unwrap(), Claim::Mismatch);
        store.forget(key).await.unwrap();
        assert_eq!(store.claim(key, "fp2").await.unwrap(), Claim::Fresh);
    }

    #[actix_web::test]
    async fn a_write_whose_client_went_away_is_still_recorded() {
        let store: Arc<dyn IdempotencyStore> = Arc::new(MemoryRecords::default());
        assert_eq!(store.claim("k", "fp").await.unwrap(), Claim::Fresh);
        let (done, finish) = tokio::sync::oneshot::channel::<()>();
        let write = async move {
            let _ = finish.await;
            HttpResponse::Ok().content_type("application/json").body("{\"order\":1}")
        };
        // The request's future is dropped before the write finishes, as on a disconnect.
        drop(execute(store.clone(), "k".into(), "fp".into(), write));
        assert_eq!(store.claim("k", "fp").await.unwrap(), Claim::InProgress);
        done.send(()).unwrap();
        for _ in 0..100 {
            if let Claim::Replay(answer) = store.claim("k", "fp").await.unwrap() {
                assert_eq!(answer, Answer { status: 200, body: "{\"order\":1}".into() });
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the write's answer was never recorded");
    }

    #[tokio::test]
    async fn in_process() {
        claims_remember_and_replay(&MemoryRecords::default(), "k").await;
    }

    #[tokio::test]
    async fn in_redis() {
        let url = std::env::var("TANDEM_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
        let prefix = format!("tandem-test:{}:{}:", std::process::id(), rand::random::<u32>());
        let store = RedisRecords::new(crate::redis_link::connect(&url).await.unwrap(), &prefix);
        claims_remember_and_replay(&store, "caller:k").await;
        // Another gateway on the same Redis sees the same records.
        let other = RedisRecords::new(crate::redis_link::connect(&url).await.unwrap(), &prefix);
        assert_eq!(other.claim("caller:k", "fp2").await.unwrap(), Claim::InProgress);
    }
}
