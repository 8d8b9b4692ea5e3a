//! Wallets: `POST /v1/wallet/enrol` opens a user account for a wallet's device key.
//!
//! The request is signed by the device key being enrolled (proof of possession). It needs a
//! single-use enrolment code from the operator, unless the gateway runs with `open_enrolment`
//! (the demo). Steps, each atomic: consume the code, open the account in the engine, register
//! the device key and bind the code to the account in one store transaction. A failure before
//! the last step hands the code back; an account opened for a request that then fails (two
//! concurrent enrolments of one device) stays empty and without credentials.

use super::{resource, RawBody};
use crate::auth::{check_possession, lookup_device, now_millis, parse_device_pubkey};
use crate::dto::{self, parse_json, printable, EnrolRequest};
use crate::error::ApiError;
use crate::openapi::schemas as doc;
use crate::Gateway;
use actix_web::http::StatusCode;
use actix_web::web::{self, Data};
use actix_web::{HttpRequest, HttpResponse};
use bitcoin::secp256k1::XOnlyPublicKey;
use serde_json::json;
use sha2::{Digest, Sha256};
use tandem_matching::{AccountId, AccountKind, Command, Event, Timestamp};
use tandem_store::{DeviceKeyRecord, StoreError};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/v1/wallet/enrol", |r| r.route(web::post().to(enrol))))
        .service(resource("/v1/vaults", |r| r.route(web::get().to(vaults))));
}

/// The account's vaults and deposit addresses
///
/// `GET /v1/vaults`: the caller's account's vaults (signer groups) and their deposit addresses,
/// as the provider's vault service registered them.
#[utoipa::path(get, path = "/v1/vaults", tag = "wallet",
    responses((status = 200, description = "The vaults", body = doc::Vaults)),
    security(("api_key" = [], "timestamp" = [], "signature" = []), ("device_key" = [], "timestamp" = [], "signature" = [])))]
async fn vaults(gw: Data<Gateway>, req: HttpRequest, body: RawBody) -> Result<HttpResponse, ApiError> {
    let account = crate::auth::authenticate(&gw, &req, &body).await?;
    let mut out = Vec::new();
    for v in gw.store.vaults_for(account).await? {
        let addresses: Vec<serde_json::Value> = gw
            .store
            .vault_addresses(&v.group_id)
            .await?
            .into_iter()
            .map(|a| json!({"address": a.address, "key_index": a.key_index, "created_at": a.created_at.0}))
            .collect();
        out.push(json!({
            "group_id": v.group_id,
            "policy": v.policy,
            "wallet_identity": v.wallet_identity,
            "cosigner_identity": v.cosigner_identity,
            "created_at": v.created_at.0,
            "addresses": addresses,
        }));
    }
    Ok(HttpResponse::Ok().json(json!({ "account_id": account.0, "vaults": out })))
}

/// How an enrolment code is stored: hex SHA-256 of the code as typed, trimmed, lowercase.
/// Codes are 128 random bits, so a plain hash is enough to make a leaked table useless.
pub(crate) fn enrolment_code_hash(code: &str) -> String {
    hex::encode(Sha256::digest(code.trim().to_ascii_lowercase().as_bytes()))
}

fn bad_code(message: &str) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "bad_enrolment_code", message)
}

fn device_registered() -> ApiError {
    ApiError::new(StatusCode::CONFLICT, "device_registered", "this device key is already enrolled")
}

/// Enrol a wallet's device key
///
/// Registers the signing device key and opens a user account for it.
///
/// Signed by that device key (proof of possession: `X-Tandem-Device` must be `device_pubkey`,
/// not registered yet). Needs a single-use code from the operator unless the gateway runs with
/// `open_enrolment` (the demo). From then on the device signs the account's requests.
#[utoipa::path(post, path = "/v1/wallet/enrol", tag = "wallet",
    request_body = EnrolRequest,
    responses(
        (status = 200, description = "The account opened for the device", body = doc::Enrolled),
        (status = 400, description = "`bad_request`: `device_pubkey` is not the signing key, bad label, unknown field", body = doc::ErrorBody),
        (status = 403, description = "`bad_enrolment_code`: none where one is needed, unknown, or used", body = doc::ErrorBody),
        (status = 409, description = "`device_registered`: nothing changes and the code is not used up", body = doc::ErrorBody),
    ),
    security(("device_key" = [], "timestamp" = [], "signature" = [])))]
async fn enrol(gw: Data<Gateway>, req: HttpRequest, body: RawBody) -> Result<HttpResponse, ApiError> {
    let device = check_possession(&gw, &req, &body)?;
    let r: EnrolRequest = parse_json(&body)?;
    if parse_device_pubkey(&r.device_pubkey) != Some(device) {
        return Err(ApiError::bad_request(
            "device_pubkey must be the x-only public key (64 hex characters) that signed the request",
        ));
    }
    let label = r.label.unwrap_or_default();
    printable("label", &label, 0, 128)?;
    if lookup_device(&gw, &device).await?.is_some() {
        return Err(device_registered());
    }
    let code = r.enrolment_code.as_deref().map(str::trim).filter(|c| !c.is_empty());
    let consumed = match code {
        Some(code) => {
            let hash = enrolment_code_hash(code);
            let at = Timestamp(now_millis());
            if !gw.store.consume_enrolment_code(&hash, at).await? {
                return Err(bad_code("the enrolment code is unknown or already used"));
            }
            Some((hash, at))
        }
        None if gw.config.open_enrolment => None,
        None => return Err(bad_code("an enrolment code from the operator is required")),
    };
    let result = open_and_register(&gw, device, label, consumed.as_ref().map(|(h, _)| h.as_str())).await;
    if result.is_err() {
        if let Some((hash, at)) = &consumed {
            if let Err(e) = gw.store.release_enrolment_code(hash, *at).await {
                tracing::warn!(error = %e, "could not release an enrolment code after a failed enrolment");
            }
        }
    }
    result
}

async fn open_and_register(
    gw: &Gateway,
    device: XOnlyPublicKey,
    label: String,
    code_hash: Option<&str>,
) -> Result<HttpResponse, ApiError> {
    let applied = gw.submit(Command::OpenAccount { kind: AccountKind::User }).await?;
    if let Some(reason) = dto::rejection(&applied.events) {
        return Err(reason.into());
    }
    let account: AccountId = applied
        .events
        .iter()
        .find_map(|e| match e {
            Event::AccountOpened { account, .. } => Some(*account),
            _ => None,
        })
        .ok_or_else(|| ApiError::unavailable("the engine opened no account"))?;
    let record = DeviceKeyRecord {
        device_pubkey: device.to_string(),
        account_id: account,
        label,
        created_at: applied.timestamp,
    };
    match gw.store.insert_device_key(&record, code_hash).await {
        Ok(()) => {}
        Err(StoreError::Conflict(why)) => {
            tracing::warn!(account = account.0, %why, "enrolment lost a race; the account opened for it stays unused");
            // Either the device was enrolled concurrently, or (never expected) the code moved on.
            return Err(match gw.store.device_key(&record.device_pubkey).await? {
                Some(_) => device_registered(),
                None => ApiError::unavailable("the enrolment could not be completed; retry"),
            });
        }
        Err(e) => return Err(ApiError::from(e).with("account_id", json!(account.0))),
    }
    gw.devices.insert(device, account);
    Ok(HttpResponse::Ok().json(json!({
        "account_id": account.0,
        "device_pubkey": record.device_pubkey,
        "label": record.label,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_hash_as_typed_modulo_case_and_spaces() {
        let h = enrolment_code_hash("ABCDEF0123");
        assert_eq!(h, enrolment_code_hash("  abcdef0123\n"));
        assert_ne!(h, enrolment_code_hash("abcdef0124"));
        assert_eq!(h.len(), 64);
    }
}
