//! HTTP handlers, one module per audience: public market data, a trader's orders, a trader's
//! account (balances, funds, history), wallets enrolling their device keys, the parties of MPC
//! sessions (the relay), and the operator.

pub mod account;
pub mod mpc;
pub mod mpc_forward;
pub mod operator;
pub mod orders;
pub mod public;
pub mod settlement;
pub mod signing;
pub mod wallet;

use crate::error::{payload_too_large, ApiError};
use crate::Gateway;
use actix_web::dev::HttpServiceFactory;
use actix_web::dev::Payload;
use actix_web::middleware::from_fn;
use actix_web::web::{self, Bytes, Data};
use actix_web::Resource;
use actix_web::{FromRequest, HttpRequest};
use futures_util::future::LocalBoxFuture;

/// The request body exactly as sent: signatures cover these bytes, so JSON is parsed only
/// after authentication (see [`crate::dto::parse_json`]). Failures use the common error shape.
pub struct RawBody(pub Bytes);

/// A resource's own body limit (set together with its `web::PayloadConfig`), so a refusal
/// names the right number.
#[derive(Clone, Copy)]
pub(crate) struct BodyLimit(pub usize);

impl std::ops::Deref for RawBody {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl FromRequest for RawBody {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<RawBody, ApiError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let limit = match req.app_data::<BodyLimit>() {
            Some(l) => l.0,
            None => req.app_data::<Data<Gateway>>().map_or(64 * 1024, |g| g.config.max_body_bytes),
        };
        let fut = Bytes::from_request(req, payload);
        Box::pin(async move {
            fut.await.map(RawBody).map_err(|e| {
                if e.as_response_error().status_code() == actix_web::http::StatusCode::PAYLOAD_TOO_LARGE {
                    payload_too_large(limit)
                } else {
                    ApiError::bad_request(format!("could not read the request body: {e}"))
                }
            })
        })
    }
}

/// A resource with its routes, whose wrong methods answer 405 in the common error shape and
/// whose requests are counted and timed. Middleware sits on each resource rather than on a
/// catch-all scope, so an embedding app can still register routes of its own next to these.
/// Every route goes through here, which is also how [`recording`] learns the registered paths.
pub(crate) fn resource(path: &str, routes: impl FnOnce(Resource) -> Resource) -> impl HttpServiceFactory {
    RECORDED.with(|r| {
        if let Some(paths) = r.borrow_mut().as_mut() {
            paths.push(path.to_owned());
        }
    });
    routes(web::resource(path))
        .default_service(web::to(crate::error::method_not_allowed))
        .wrap(from_fn(crate::metrics::track))
}

thread_local! {
    /// The paths [`resource`] was given while [`recording`] runs on this thread; `None` (nothing
    /// kept) otherwise, so serving costs nothing.
    static RECORDED: std::cell::RefCell<Option<Vec<String>>> = const { std::cell::RefCell::new(None) };
}

/// Every path `register` passes to [`resource`]: the drift check of the API document
/// (`crate::openapi`) compares them with the documented ones. Building an actix `App` runs its
/// `configure` closures at once on the calling thread, so a thread-local sees all of them.
pub(crate) fn recording(register: impl FnOnce()) -> Vec<String> {
    let previous = RECORDED.with(|r| r.borrow_mut().replace(Vec::new()));
    register();
    RECORDED.with(|r| std::mem::replace(&mut *r.borrow_mut(), previous)).unwrap_or_default()
}
