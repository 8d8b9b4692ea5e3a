//! `/api/v3/userDataStream`: listen keys, the names of user data streams (`/ws/<listenKey>`).
//! Binance's `USER_STREAM` security (the API key, no signature). A key lives 60 minutes unless
//! kept alive (`PUT`); an account has one at a time, and `POST` while it lives returns it again.
//! Keys are kept in the store, so every gateway on it serves every stream.

use std::collections::HashMap;

use actix_web::http::StatusCode;
use actix_web::web::{self, Bytes, Data};
use actix_web::{HttpRequest, HttpResponse};
use rand::distributions::{Alphanumeric, DistString};
use serde_json::json;

use super::signed::authenticate_key;
use super::BinanceError;
use crate::auth::now_millis;
use crate::Gateway;

/// How long a key lives without a keep-alive, ms.
pub const LISTEN_KEY_TTL_MS: u64 = 60 * 60 * 1000;
const KEY_LENGTH: usize = 60;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/v3/userDataStream", web::post().to(open))
        .route("/api/v3/userDataStream", web::put().to(keep_alive))
        .route("/api/v3/userDataStream", web::delete().to(close));
}

/// Whether `key` could be a listen key (before any lookup).
pub fn looks_like_listen_key(key: &str) -> bool {
    key.len() == KEY_LENGTH && key.bytes().all(|b| b.is_ascii_alphanumeric())
}

async fn open(gw: Data<Gateway>, req: HttpRequest) -> Result<HttpResponse, BinanceError> {
    let account = authenticate_key(&gw, &req).await?;
    let candidate = Alphanumeric.sample_string(&mut rand::thread_rng(), KEY_LENGTH);
    let key = gw.store.open_listen_key(account, &candidate, now_millis(), LISTEN_KEY_TTL_MS).await?;
    Ok(HttpResponse::Ok().json(json!({ "listenKey": key })))
}

/// `listenKey` from the query or the form body.
fn listen_key_param(req: &HttpRequest, body: &[u8]) -> Result<String, BinanceError> {
    let mut p = super::public::params(req)?;
    if !p.contains_key("listenKey") && !body.is_empty() {
        if let Ok(form) = web::Query::<HashMap<String, String>>::from_query(std::str::from_utf8(body).unwrap_or("")) {
            p.extend(form.into_inner());
        }
    }
    match p.remove("listenKey") {
        Some(k) if !k.is_empty() => Ok(k),
        _ => Err(BinanceError::mandatory("listenKey")),
    }
}

fn no_such_key() -> BinanceError {
    BinanceError::new(StatusCode::BAD_REQUEST, -1125, "This listenKey does not exist.")
}

async fn keep_alive(gw: Data<Gateway>, req: HttpRequest, body: Bytes) -> Result<HttpResponse, BinanceError> {
    let account = authenticate_key(&gw, &req).await?;
    let key = listen_key_param(&req, &body)?;
    match gw.store.keep_listen_key_alive(&key, account, now_millis(), LISTEN_KEY_TTL_MS).await? {
        true => Ok(HttpResponse::Ok().json(json!({}))),
        false => Err(no_such_key()),
    }
}

async fn close(gw: Data<Gateway>, req: HttpRequest, body: Bytes) -> Result<HttpResponse, BinanceError> {
    let account = authenticate_key(&gw, &req).await?;
    let key = listen_key_param(&req, &body)?;
    match gw.store.close_listen_key(&key, account).await? {
        true => Ok(HttpResponse::Ok().json(json!({}))),
        false => Err(no_such_key()),
    }
}
