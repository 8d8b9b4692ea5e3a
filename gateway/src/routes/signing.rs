//! `GET /v1/operator/signing` (operator token): the signatures settlement is waiting for. For
//! each batch still being signed, every input with who signs it (the provider alone for a pool
//! input, the provider with a vault's wallet otherwise) and whether its witness is stored yet;
//! and the wallets that missed a batch's signing deadline (late, sitting out). Read-only, from
//! the store the settlement service writes; refusals are at `GET /v1/operator/refusals`.

use super::resource;
use crate::auth::authenticate_operator;
use crate::error::ApiError;
use crate::Gateway;
use actix_web::web::{self, Data};
use actix_web::{HttpRequest, HttpResponse};
use serde_json::{json, Value};
use std::collections::HashSet;

/// Batch statuses whose inputs are still being signed: `planned` (the issue's *built*) and
/// `booked` (*signing*), as the settlement service writes them.
const SIGNING: [&str; 2] = ["planned", "booked"];

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/v1/operator/signing", |r| r.route(web::get().to(signing))));
}

/// The signatures settlement is waiting for
///
/// For each batch still being signed, every input with who signs it and whether its witness is
/// stored; and the wallets that missed a signing deadline.
#[utoipa::path(get, path = "/v1/operator/signing", tag = "operator",
    responses((status = 200, description = "Batches being signed, input by input, and late wallets", body = crate::openapi::schemas::SigningStatus)),
    security(("operator_token" = [])))]
async fn signing(gw: Data<Gateway>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    authenticate_operator(&gw, &req)?;
    let mut batches = Vec::new();
    for b in gw.store.unfinished_batches().await? {
        if !SIGNING.contains(&b.status.as_str()) {
            continue;
        }
        // The version being signed is the newest one (0 unless the batch was bumped).
        let signed: HashSet<u32> = gw.store.batch_signatures(b.id, b.bumps).await?.into_iter().map(|(i, _)| i).collect();
        let plan: Value = serde_json::from_str(&b.plan).unwrap_or(Value::Null);
        let inputs = plan["inputs"].as_array().map(Vec::as_slice).unwrap_or(&[]);
        let inputs: Vec<Value> = inputs.iter().enumerate().map(|(i, input)| input_status(i, input, &signed)).collect();
        batches.push(json!({
            "batch": b.id,
            "status": b.status,
            "version": b.bumps,
            "created_at": b.created_at.0,
            "inputs": inputs,
            "waiting": inputs.iter().filter(|i| i["signed"] == false).count(),
            "last_error": b.last_error,
        }));
    }
    let late: Vec<Value> = gw
        .store
        .late_holders()
        .await?
        .into_iter()
        .map(|l| json!({"account": l.holder.0, "batch": l.batch, "since": l.since.0}))
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "batches": batches, "late": late })))
}

/// One input of the plan (`{holder, outpoint, value, signer: {kind, ...}}`) and whether its
/// witness is stored.
fn input_status(index: usize, input: &Value, signed: &HashSet<u32>) -> Value {
    let done = u32::try_from(index).is_ok_and(|i| signed.contains(&i));
    json!({
        "input": index,
        "holder": input["holder"],
        "outpoint": input["outpoint"],
        "value_sat": input["value"],
        "signer": input["signer"],
        "signed": done,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_input_is_signed_only_when_its_witness_is_stored() {
        let input = json!({"holder": 7, "outpoint": "aa:0", "value": 1000, "signer": {"kind": "vault", "group": "g", "key_index": 0}});
        let signed: HashSet<u32> = [1].into_iter().collect();
        let waiting = input_status(0, &input, &signed);
        assert_eq!(waiting["signed"], false);
        assert_eq!((waiting["holder"].as_u64(), waiting["value_sat"].as_u64()), (Some(7), Some(1000)));
        assert_eq!(waiting["signer"]["kind"], "vault");
        assert_eq!(input_status(1, &input, &signed)["signed"], true);
    }
}
