//! A gateway that does not host the MPC relay forwards `/v1/mpc/...` to the process that does
//! (the custody process, which holds the provider's party): wallets and co-signers keep one
//! base URL whichever gateway they reach, and every session has one set of mailboxes.
//!
//! The request goes on as it came (method, path, query, signature headers, body): the relay's
//! host authenticates it, checks the replay guard and answers; the gateway only carries bytes.
//! Long polls are held up to the relay's longest wait plus a margin.

use crate::error::ApiError;
use actix_web::http::header::{HeaderName, CONNECTION, CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use actix_web::http::StatusCode;
use actix_web::web::{self, Bytes, Data};
use actix_web::{HttpRequest, HttpResponse};
use std::time::Duration;

/// Where the relay is, and the client that reaches it (one per worker: awc is not `Send`).
struct Upstream {
    base: String,
    client: awc::Client,
}

/// Largest answer forwarded back (a batch of sealed messages).
const MAX_ANSWER_BYTES: usize = 16 << 20;

pub fn configure(cfg: &mut web::ServiceConfig, upstream: &str, max_request_bytes: usize, max_wait: Duration) {
    let client = awc::Client::builder().timeout(max_wait + Duration::from_secs(30)).disable_redirects().finish();
    let upstream = Data::new(Upstream { base: upstream.trim_end_matches('/').to_owned(), client });
    let limit = max_request_bytes.max(1024);
    cfg.service(
        web::resource(["/v1/mpc/provider", "/v1/mpc/sessions", "/v1/mpc/sessions/{tail:.*}"])
            .app_data(upstream)
            .app_data(web::PayloadConfig::new(limit))
            .route(web::route().to(forward)),
    );
}

/// Headers that belong to one hop, not to the request.
fn hop_by_hop(name: &HeaderName) -> bool {
    name == CONNECTION || name == HOST || name == CONTENT_LENGTH || name == TRANSFER_ENCODING || name.as_str() == "keep-alive"
}

async fn forward(up: Data<Upstream>, req: HttpRequest, body: Bytes) -> Result<HttpResponse, ApiError> {
    let path = req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let mut out = up.client.request(req.method().clone(), format!("{}{path}", up.base));
    for (name, value) in req.headers().iter().filter(|(n, _)| !hop_by_hop(n)) {
        out = out.append_header((name.clone(), value.clone()));
    }
    if let Some(peer) = req.peer_addr() {
        out = out.insert_header(("x-forwarded-for", peer.ip().to_string()));
    }
    let mut answer = out.send_body(body).await.map_err(|e| {
        tracing::warn!(upstream = %up.base, error = %e, "MPC relay unreachable");
        ApiError::unavailable(format!("the MPC relay is unreachable: {e}"))
    })?;
    let bytes = answer
        .body()
        .limit(MAX_ANSWER_BYTES)
        .await
        .map_err(|e| ApiError::unavailable(format!("the MPC relay's answer was cut: {e}")))?;
    let status = StatusCode::from_u16(answer.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut reply = HttpResponse::build(status);
    for (name, value) in answer.headers().iter().filter(|(n, _)| !hop_by_hop(n)) {
        reply.append_header((name.clone(), value.clone()));
    }
    Ok(reply.body(bytes))
}
