//! The custody process's internal API (`tandem custody`), for the settlement process; operator
//! token required, like the operator routes it sits beside:
//! - `GET /v1/custody/pool`: the pool's extended public key and network ([`PoolKey`]);
//! - `POST /v1/custody/spends` ([`SignSpend`]): the provider's signatures on a spend intent, made
//!   with the intent's other signer through the relay this process hosts, after the provider's
//!   checks against its own replica of the ledger ([`Signed`], or [`SpendNotSigned`]);
//! - `POST /v1/custody/pool-inputs` ([`SignPoolInput`]): the witness of one pool input of a
//!   settlement batch, after the same checks of the batch against the ledger.
//!
//! The wire types live here; [`super::http::HttpCustodian`] is their client.

use std::sync::Arc;
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::web::{self, Data};
use actix_web::{HttpRequest, HttpResponse};
use bitcoin::consensus::encode::serialize_hex;
use serde::{Deserialize, Serialize};
use tandem_custody::policy::{Refusal, RefusalCode};
use tandem_custody::{InputSignature, PartyRole, SpendIntent, SpendPurpose};
use tandem_gateway::relay::Role;
use tandem_gateway::{ApiError, Gateway};
use tandem_matching::AccountId;

use crate::provider::{SignError, VaultService};

/// The longest a signing request may wait for the partner.
pub const MAX_DEADLINE: Duration = Duration::from_secs(3600);

/// Largest request body: a spend intent carries its PSBT (at most 128 KiB) as hex.
const MAX_BODY: usize = 1 << 20;

#[derive(Debug, Serialize, Deserialize)]
pub struct PoolKey {
    pub xpub: String,
    pub network: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignSpend {
    /// [`SpendIntent::to_json`].
    pub intent: String,
    /// How long the provider may wait for its partner, in milliseconds (at most an hour).
    pub deadline_ms: u64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Signed {
    pub signatures: Vec<WireSignature>,
}

/// An [`InputSignature`]: DER with its sighash byte, and the compressed key, both hex.
#[derive(Debug, Serialize, Deserialize)]
pub struct WireSignature {
    pub signature: String,
    pub public_key: String,
}

impl From<&InputSignature> for WireSignature {
    fn from(s: &InputSignature) -> WireSignature {
        WireSignature { signature: hex::encode(s.der_with_sighash()), public_key: s.public_key.to_string() }
    }
}

impl TryFrom<&WireSignature> for InputSignature {
    type Error = anyhow::Error;
    fn try_from(w: &WireSignature) -> anyhow::Result<InputSignature> {
        Ok(InputSignature {
            signature: bitcoin::ecdsa::Signature::from_slice(&hex::decode(&w.signature)?)?,
            public_key: w.public_key.parse()?,
        })
    }
}

/// Why a spend was not signed ([`SignError`] on the wire).
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "error", rename_all = "snake_case")]
pub enum SpendNotSigned {
    Refused { signer: PartyRole, code: String, detail: String },
    PartnerRefused { signer: Role, code: String, detail: String },
    Failed { detail: String },
}

impl From<&SignError> for SpendNotSigned {
    fn from(e: &SignError) -> SpendNotSigned {
        match e {
            SignError::Refused(r) => {
                SpendNotSigned::Refused { signer: r.signer, code: r.code.as_str().into(), detail: r.detail.clone() }
            }
            SignError::PartnerRefused { signer, code, detail } => {
                SpendNotSigned::PartnerRefused { signer: *signer, code: code.clone(), detail: detail.clone() }
            }
            SignError::Failed(detail) | SignError::CustodyUnavailable(detail) => SpendNotSigned::Failed { detail: detail.clone() },
        }
    }
}

impl From<SpendNotSigned> for SignError {
    fn from(e: SpendNotSigned) -> SignError {
        match e {
            SpendNotSigned::Refused { signer, code, detail } => match RefusalCode::parse(&code) {
                Some(code) => SignError::Refused(Refusal::new(signer, code, detail)),
                None => SignError::Failed(format!("custody refused ({code}): {detail}")),
            },
            SpendNotSigned::PartnerRefused { signer, code, detail } => SignError::PartnerRefused { signer, code, detail },
            SpendNotSigned::Failed { detail } => SignError::Failed(detail),
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignPoolInput {
    /// The settlement batch the transaction is (checked against the ledger).
    pub purpose: SpendPurpose,
    /// The batch's PSBT (with every input's value), hex.
    pub psbt: String,
    pub index: usize,
    /// Whose pool address the input spends from.
    pub account: u64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct PoolWitness {
    /// Consensus hex.
    pub witness: String,
}

/// The custody API's state.
pub struct CustodyApi {
    pub vaults: Arc<VaultService>,
}

/// Registers the routes (the gateway's `Data<Gateway>` must be in the app: it checks the token).
pub fn configure(cfg: &mut web::ServiceConfig, vaults: Arc<VaultService>) {
    cfg.app_data(Data::new(CustodyApi { vaults }))
        .service(web::resource("/v1/custody/pool").route(web::get().to(pool)))
        .service(
            web::resource("/v1/custody/spends")
                .app_data(web::JsonConfig::default().limit(MAX_BODY))
                .route(web::post().to(sign_spend)),
        )
        .service(
            web::resource("/v1/custody/pool-inputs")
                .app_data(web::JsonConfig::default().limit(MAX_BODY))
                .route(web::post().to(sign_pool_input)),
        );
}

async fn pool(gw: Data<Gateway>, api: Data<CustodyApi>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    tandem_gateway::auth::authenticate_operator(&gw, &req)?;
    let pool = api.vaults.pool.addresses();
    Ok(HttpResponse::Ok().json(PoolKey { xpub: pool.xpub().to_string(), network: pool.network().to_string() }))
}

async fn sign_spend(
    gw: Data<Gateway>,
    api: Data<CustodyApi>,
    req: HttpRequest,
    body: web::Json<SignSpend>,
) -> Result<HttpResponse, ApiError> {
    tandem_gateway::auth::authenticate_operator(&gw, &req)?;
    let intent = SpendIntent::from_json(&body.intent).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let deadline = Duration::from_millis(body.deadline_ms).min(MAX_DEADLINE);
    let signed = tokio::time::timeout(deadline, api.vaults.sign(intent))
        .await
        .unwrap_or_else(|_| Err(SignError::Failed("no answer before the signing deadline".into())));
    Ok(match signed {
        Ok(sigs) => HttpResponse::Ok().json(Signed { signatures: sigs.iter().map(WireSignature::from).collect() }),
        Err(e) => HttpResponse::build(not_signed_status(&e)).json(SpendNotSigned::from(&e)),
    })
}

async fn sign_pool_input(
    gw: Data<Gateway>,
    api: Data<CustodyApi>,
    req: HttpRequest,
    body: web::Json<SignPoolInput>,
) -> Result<HttpResponse, ApiError> {
    tandem_gateway::auth::authenticate_operator(&gw, &req)?;
    let bytes = hex::decode(&body.psbt).map_err(|_| ApiError::bad_request("psbt is not hex"))?;
    let psbt = bitcoin::Psbt::deserialize(&bytes).map_err(|e| ApiError::bad_request(format!("psbt: {e}")))?;
    Ok(match api.vaults.sign_pool_input(body.purpose, &psbt, body.index, AccountId(body.account)).await {
        Ok(witness) => HttpResponse::Ok().json(PoolWitness { witness: serialize_hex(&witness) }),
        Err(e) => HttpResponse::build(not_signed_status(&e)).json(SpendNotSigned::from(&e)),
    })
}

fn not_signed_status(e: &SignError) -> StatusCode {
    match e {
        SignError::Refused(_) | SignError::PartnerRefused { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        SignError::Failed(_) | SignError::CustodyUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tandem_custody::policy::RefusalCode;

    fn round_trip(e: SignError) -> SignError {
        let wire = serde_json::to_string(&SpendNotSigned::from(&e)).unwrap();
        serde_json::from_str::<SpendNotSigned>(&wire).unwrap().into()
    }

    #[test]
    fn why_a_spend_was_not_signed_survives_the_wire() {
        let refused = SignError::Refused(Refusal::new(PartyRole::Provider, RefusalCode::DoublePay, "batch 3 was signed with other inputs"));
        match round_trip(refused) {
            SignError::Refused(r) => {
                assert_eq!((r.signer, r.code, r.detail.as_str()), (PartyRole::Provider, RefusalCode::DoublePay, "batch 3 was signed with other inputs"))
            }
            other => panic!("{other:?}"),
        }
        let partner = SignError::PartnerRefused { signer: Role::Wallet, code: "over_spend".into(), detail: "no".into() };
        assert!(matches!(round_trip(partner), SignError::PartnerRefused { signer: Role::Wallet, code, .. } if code == "over_spend"));
        assert!(matches!(round_trip(SignError::Failed("timed out".into())), SignError::Failed(d) if d == "timed out"));
    }

    #[test]
    fn a_signature_survives_the_wire() {
        let secp = bitcoin::secp256k1::Secp256k1::new();
        let key = bitcoin::secp256k1::SecretKey::from_slice(&[3; 32]).unwrap();
        let msg = bitcoin::secp256k1::Message::from_digest([5; 32]);
        let sig = InputSignature {
            signature: bitcoin::ecdsa::Signature::sighash_all(secp.sign_ecdsa(&msg, &key)),
            public_key: bitcoin::CompressedPublicKey(key.public_key(&secp)),
        };
        let wire = WireSignature::from(&sig);
        assert_eq!(InputSignature::try_from(&wire).unwrap(), sig);
        assert!(InputSignature::try_from(&WireSignature { signature: "zz".into(), public_key: wire.public_key }).is_err());
    }
}
