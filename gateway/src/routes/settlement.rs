//! Settlement over HTTP. A trader's view: what its vault holds on chain as the ledger knows it,
//! what the next batch will move, and its part in a batch being signed (which its wallet checks
//! before it co-signs). The operator's: every batch with its transaction and status, and the
//! reconciliation of ledger against chain. Chain quantities are integers in satoshis (`_sat`).

use super::{resource, RawBody};
use crate::auth::{authenticate, authenticate_operator, authenticate_party, PartyKind};
use crate::evidence::evidence;
use crate::dto::{self, path_id};
use crate::error::ApiError;
use crate::openapi::schemas as doc;
use crate::Gateway;
use actix_web::http::StatusCode;
use actix_web::web::{self, Data};
use actix_web::{HttpRequest, HttpResponse};
use serde_json::json;
use tandem_matching::{BatchId, RejectReason};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/v1/settlement", |r| r.route(web::get().to(position))))
        .service(resource("/v1/settlement/batches/{id}", |r| r.route(web::get().to(batch))))
        .service(resource("/v1/cosigner/batches/{id}", |r| r.route(web::get().to(cosigner_batch))));
}

pub fn configure_operator(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/v1/operator/batches", |r| r.route(web::get().to(operator_batches))))
        .service(resource("/v1/operator/reconciliation", |r| r.route(web::get().to(reconciliation))));
}

#[derive(serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct BatchesQuery {
    /// Only batches in this status: `planned`, `booked`, `signed`, `broadcast`, `confirmed`, `cancelled`.
    status: Option<String>,
    /// 1 to 1000, default 100.
    limit: Option<u32>,
}

/// Settlement batches
///
/// Every batch, newest first: its window's figures, inputs and outputs (from its plan), vbytes,
/// fee, the transaction of each version, status and confirmations.
#[utoipa::path(get, path = "/v1/operator/batches", tag = "operator",
    params(BatchesQuery),
    responses((status = 200, description = "Newest first", body = doc::Batches)),
    security(("operator_token" = [])))]
async fn operator_batches(gw: Data<Gateway>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    authenticate_operator(&gw, &req)?;
    let q: BatchesQuery = dto::parse_query(&req)?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request("limit must be 1 to 1000"));
    }
    let mut list = Vec::new();
    for b in gw.store.batches(q.status.as_deref(), limit).await? {
        let versions = gw.store.batch_versions(b.id).await?;
        // The version the chain confirmed, else the newest one sent.
        let shown = b.confirmed_version.unwrap_or(b.bumps);
        let txid = versions.iter().find(|v| v.version == shown).map(|v| v.txid.clone());
        let plan: serde_json::Value = serde_json::from_str(&b.plan).unwrap_or(serde_json::Value::Null);
        list.push(json!({
            "batch": b.id,
            "status": b.status,
            "created_at": b.created_at.0,
            "updated_at": b.updated_at.0,
            "fee_rate_sat_per_kvb": b.fee_rate,
            "vbytes": b.vbytes,
            "fee_sat": b.fee,
            "txid": txid,
            "confirmations": b.confirmations,
            "confirmed_height": b.confirmed_height,
            "confirmed_version": b.confirmed_version,
            "bumps": b.bumps,
            "last_error": b.last_error,
            "window_cut_seq": plan["cut_seq"],
            "forced": plan["forced"],
            "inputs": plan["inputs"],
            "outputs": plan["outputs"],
            "legs": plan["legs"],
            "deferred": plan["deferred"],
            "versions": versions.iter().map(|v| json!({"version": v.version, "txid": v.txid, "fee_sat": v.fee, "broadcast_at": v.broadcast_at.map(|t| t.0)})).collect::<Vec<_>>(),
        }));
    }
    Ok(HttpResponse::Ok().json(json!({ "batches": list })))
}

/// Reconcile the ledger against the chain
///
/// The settlement service's reconciliation of ledger against chain, computed now.
#[utoipa::path(get, path = "/v1/operator/reconciliation", tag = "operator",
    description = "Computed now by the settlement service: `{\"balanced\", \"differences\", \"ledger_owes_sat\", \"ledger_settled_sat\", \"chain_holds_sat\", \"in_flight_out_sat\", \"fees_paid_sat\", \"uncredited_sat\", \"chain_height\", \"holders\", \"accounts\", \"last_audit\"}` (see `docs/API.md`). Served only by the process running settlement.",
    responses(
        (status = 200, description = "The report; `balanced` is true when ledger and chain agree to the satoshi", body = Object),
        (status = 503, description = "`settlement_not_running`: no chain configured here; `unavailable`: the chain or the ledger cannot be read", body = doc::ErrorBody),
    ),
    security(("operator_token" = [])))]
async fn reconciliation(gw: Data<Gateway>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    authenticate_operator(&gw, &req)?;
    let Some(reconciler) = gw.reconciler.get().cloned() else {
        return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "settlement_not_running", "this node runs no settlement service (no chain configured)"));
    };
    let report = reconciler.reconcile().await.map_err(|e| {
        tracing::warn!(error = %e, "reconciliation failed");
        ApiError::unavailable("the chain or the ledger cannot be read right now")
    })?;
    Ok(HttpResponse::Ok().json(report))
}

/// The account's settlement position
///
/// `settled_sat`: held by the account's own vault per the ledger (0 for an account whose coins
/// the pool holds); `target_sat`: what the next batch moves into (+) or out of (−) it.
#[utoipa::path(get, path = "/v1/settlement", tag = "settlement",
    responses(
        (status = 200, description = "Satoshis", body = doc::SettlementPosition),
        (status = 404, description = "`unknown_account`", body = doc::ErrorBody),
    ),
    security(("api_key" = [], "timestamp" = [], "signature" = []), ("device_key" = [], "timestamp" = [], "signature" = [])))]
async fn position(gw: Data<Gateway>, req: HttpRequest, body: RawBody) -> Result<HttpResponse, ApiError> {
    let account = authenticate(&gw, &req, &body).await?;
    let (btc, _) = dto::asset_by_symbol(&gw.engine_config, "BTC")?;
    let (settled, in_flight, target) = gw
        .sequencer
        .read(move |e| (e.settled(account, btc), e.in_flight_delta(account, btc), e.settlement_target(account, btc)))
        .await?;
    let target = target.ok_or(RejectReason::UnknownAccount)?;
    Ok(HttpResponse::Ok().json(json!({
        "asset": "BTC",
        "settled_sat": settled as i64,
        "in_flight_sat": in_flight as i64,
        "target_sat": target as i64,
    })))
}

/// The caller's part in a batch being signed
///
/// The caller's leg in a booked batch (`null` if it has none), its withdrawals the batch pays,
/// and the figures its wallet checks the leg against: its BTC balance, its pending withdrawals
/// and what its vault holds, all as the ledger knows them now.
#[utoipa::path(get, path = "/v1/settlement/batches/{id}", tag = "settlement",
    params(("id" = u64, Path, description = "The batch id")),
    responses(
        (status = 200, description = "The caller's leg and the evidence its wallet checks before it co-signs", body = doc::BatchPart),
        (status = 404, description = "`unknown_batch`: confirmed, cancelled, or never existed", body = doc::ErrorBody),
    ),
    security(("api_key" = [], "timestamp" = [], "signature" = []), ("device_key" = [], "timestamp" = [], "signature" = [])))]
async fn batch(gw: Data<Gateway>, req: HttpRequest, body: RawBody) -> Result<HttpResponse, ApiError> {
    let account = authenticate(&gw, &req, &body).await?;
    let id = BatchId(path_id(&req, "id")?);
    let (btc, _) = dto::asset_by_symbol(&gw.engine_config, "BTC")?;
    let found = gw
        .sequencer
        .read(move |e| {
            let (_, open) = e.open_batches().into_iter().find(|(b, _)| *b == id)?;
            let withdrawals = e.pending_withdrawals();
            let mine: Vec<u64> = open
                .withdrawals
                .iter()
                .filter(|w| withdrawals.iter().any(|(id, p)| id == *w && p.account == account))
                .map(|w| w.0)
                .collect();
            let pending: u64 =
                withdrawals.iter().filter(|(_, w)| w.account == account && w.asset == btc).map(|(_, w)| w.amount.0).sum();
            let balance = e.balance(account, btc).map(|b| b.total() as u64).unwrap_or(0);
            let leg = open.legs.iter().find(|l| l.holder == account).copied();
            Some((leg, mine, pending, balance, e.settled(account, btc)))
        })
        .await?;
    let Some((leg, withdrawals, pending, balance, settled)) = found else {
        return Err(unknown_batch(id));
    };
    let evidence = match (leg, gw.store.batch_cut(id.0).await?) {
        (Some(_), Some(cut)) => Some(evidence(&gw, account, cut).await?),
        _ => None,
    };
    Ok(HttpResponse::Ok().json(json!({
        "batch": id.0,
        "leg": leg.map(|l| json!({"delta_sat": l.delta, "fee_sat": l.fee.0})),
        "withdrawals": withdrawals,
        "balance_sat": balance,
        "pending_withdrawals_sat": pending,
        "settled_sat": settled as i64,
        "evidence": evidence,
    })))
}

fn unknown_batch(id: BatchId) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "unknown_batch", format!("no batch {} is being settled", id.0))
}

#[derive(serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct CosignerBatchQuery {
    /// The vault (group id, hex) whose holder the co-signer is asked to settle.
    group: String,
}

/// A vault holder's leg, for its co-signer
///
/// For a vault's co-signer: its holder's leg in a batch being signed, and the evidence of that
/// window (fills, withdrawals and the requests the wallet signed for them), which the co-signer
/// checks with the wallet's key before it force-settles.
#[utoipa::path(get, path = "/v1/cosigner/batches/{id}", tag = "settlement",
    params(("id" = u64, Path, description = "The batch id"), CosignerBatchQuery),
    responses(
        (status = 200, description = "The holder's leg and the window's evidence", body = doc::CosignerBatchPart),
        (status = 403, description = "`not_a_party`: not a co-signer, or not this vault's", body = doc::ErrorBody),
        (status = 404, description = "`unknown_batch`: not open, or nothing booked for that vault", body = doc::ErrorBody),
    ),
    security(("cosigner_key" = [], "timestamp" = [], "signature" = [])))]
async fn cosigner_batch(gw: Data<Gateway>, req: HttpRequest, body: RawBody) -> Result<HttpResponse, ApiError> {
    let caller = authenticate_party(&gw, &req, &body).await?;
    if caller.kind != PartyKind::Cosigner {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "not_a_party", "only a vault's co-signer reads this"));
    }
    let id = BatchId(path_id(&req, "id")?);
    let q: CosignerBatchQuery = dto::parse_query(&req)?;
    let vault = gw.store.vault(&q.group).await?.filter(|v| v.cosigner_identity.as_deref() == Some(caller.identity.to_string().as_str()));
    let Some(vault) = vault else {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "not_a_party", "this co-signer holds no share of that vault"));
    };
    let account = vault.account_id;
    let leg = gw
        .sequencer
        .read(move |e| e.open_batches().into_iter().find(|(b, _)| *b == id).map(|(_, o)| o.legs.iter().find(|l| l.holder == account).copied()))
        .await?
        .ok_or_else(|| unknown_batch(id))?;
    let Some(leg) = leg else {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "unknown_batch", format!("batch {} books nothing for that vault", id.0)));
    };
    let cut = gw.store.batch_cut(id.0).await?.ok_or_else(|| unknown_batch(id))?;
    Ok(HttpResponse::Ok().json(json!({
        "batch": id.0,
        "account": account.0,
        "leg": {"delta_sat": leg.delta, "fee_sat": leg.fee.0},
        "evidence": evidence(&gw, account, cut).await?,
    })))
}
