//! Operator routes (`Authorization: Bearer <operator_token>`): open accounts with their API
//! credentials, issue wallet enrolment codes, register co-signers (MPC relay identities),
//! credit fiat deposits, halt and resume markets, inspect an account.

use super::{resource, RawBody};
use crate::auth::{authenticate_operator, random_hex};
use crate::dto::{
    self, parse_json, path_id, printable, units, CosignerRequest, DepositRequest, EnrolmentCodeRequest, OpenAccountKind,
    OpenAccountRequest,
};
use crate::error::ApiError;
use crate::openapi::schemas as doc;
use crate::Gateway;
use actix_web::http::StatusCode;
use actix_web::web::{self, Data};
use actix_web::{HttpRequest, HttpResponse};
use serde_json::json;
use tandem_matching::{AccountId, AccountKind, Amount, AssetId, Command, Event, RejectReason, Timestamp};
use tandem_store::{ApiKeyRecord, CosignerRecord, EnrolmentCodeRecord, StoreError};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/v1/operator/accounts", |r| r.route(web::post().to(open_account))))
        .service(resource("/v1/operator/accounts/{id}", |r| r.route(web::get().to(account))))
        .service(resource("/v1/operator/accounts/{id}/freeze", |r| r.route(web::post().to(freeze))))
        .service(resource("/v1/operator/accounts/{id}/unfreeze", |r| r.route(web::post().to(unfreeze))))
        .service(resource("/v1/operator/enrolment-codes", |r| r.route(web::post().to(enrolment_code))))
        .service(resource("/v1/operator/cosigners", |r| {
            r.route(web::post().to(register_cosigner)).route(web::get().to(list_cosigners))
        }))
        .service(resource("/v1/operator/refusals", |r| r.route(web::get().to(refusals))))
        .service(resource("/v1/operator/deposits", |r| r.route(web::post().to(deposit))))
        .service(resource("/v1/operator/deposits/reverse", |r| r.route(web::post().to(reverse_deposit))))
        .service(resource("/v1/operator/state", |r| r.route(web::get().to(state))))
        .service(resource("/v1/operator/markets/{symbol}/halt", |r| r.route(web::post().to(halt))))
        .service(resource("/v1/operator/markets/{symbol}/resume", |r| r.route(web::post().to(resume))))
        .service(resource("/v1/operator/markets/{symbol}/cancel-all", |r| r.route(web::post().to(cancel_market))));
}

/// Open an account with API credentials
///
/// Opens a trading account and hands out its API key and secret (shown this once).
#[utoipa::path(post, path = "/v1/operator/accounts", tag = "operator",
    request_body = OpenAccountRequest,
    responses(
        (status = 200, description = "The account and its credentials; the secret is shown only here", body = doc::OpenedAccount),
        (status = 503, description = "`unavailable`: the account was opened but its key could not be stored (`account_id` says which)", body = doc::ErrorBody),
    ),
    security(("operator_token" = [])))]
async fn open_account(gw: Data<Gateway>, req: HttpRequest, body: RawBody) -> Result<HttpResponse, ApiError> {
    authenticate_operator(&gw, &req)?;
    let r: OpenAccountRequest = parse_json(&body)?;
    let label = r.label.unwrap_or_default();
    printable("label", &label, 0, 128)?;
    let kind = match r.kind {
        OpenAccountKind::User => AccountKind::User,
        OpenAccountKind::Partner => AccountKind::Partner,
    };
    let applied = gw.submit(Command::OpenAccount { kind }).await?;
    if let Some(reason) = dto::rejection(&applied.events) {
        return Err(reason.into());
    }
    let account = applied
        .events
        .iter()
        .find_map(|e| match e {
            Event::AccountOpened { account, .. } => Some(*account),
            _ => None,
        })
        .ok_or_else(|| ApiError::unavailable("the engine opened no account"))?;
    // A random 256-bit key cannot realistically collide, but a conflict must never hand out
    // someone else's key: retry with a fresh one.
    let mut last_error = None;
    for _ in 0..3 {
        let record = ApiKeyRecord {
            api_key: random_hex(32),
            secret: random_hex(32),
            account_id: account,
            label: label.clone(),
            created_at: applied.timestamp,
        };
        match gw.store.insert_api_key(&record).await {
            Ok(()) => {
                let (api_key, api_secret) = (record.api_key.clone(), record.secret.clone());
                gw.keys.insert(record);
                return Ok(HttpResponse::Ok().json(json!({
                    "account_id": account.0,
                    "kind": kind.as_str(),
                    "label": label,
                    "api_key": api_key,
                    "api_secret": api_secret,
                })));
            }
            Err(StoreError::Conflict { .. }) => continue,
            Err(e) => {
                last_error = Some(e);
                break;
            }
        }
    }
    // The account exists without a key; say which, so the operator can follow up.
    let err = match last_error {
        Some(e) => ApiError::from(e),
        None => ApiError::unavailable("could not create a unique API key"),
    };
    Err(err.with("account_id", json!(account.0)))
}

/// Issue a wallet enrolment code
///
/// Issues a single-use code that lets one wallet enrol (`POST /v1/wallet/enrol`). The code is
/// shown only here; the store keeps its hash.
#[utoipa::path(post, path = "/v1/operator/enrolment-codes", tag = "operator",
    request_body = EnrolmentCodeRequest,
    responses((status = 200, description = "The code, shown only here", body = doc::EnrolmentCode)),
    security(("operator_token" = [])))]
async fn enrolment_code(gw: Data<Gateway>, req: HttpRequest, body: RawBody) -> Result<HttpResponse, ApiError> {
    authenticate_operator(&gw, &req)?;
    let r: EnrolmentCodeRequest = parse_json(&body)?;
    let label = r.label.unwrap_or_default();
    printable("label", &label, 0, 128)?;
    let created_at = Timestamp(crate::auth::now_millis());
    for _ in 0..3 {
        let code = random_hex(16);
        let record = EnrolmentCodeRecord {
            code_hash: super::wallet::enrolment_code_hash(&code),
            label: label.clone(),
            created_at,
            used_at: None,
            account_id: None,
        };
        match gw.store.insert_enrolment_code(&record).await {
            Ok(()) => {
                return Ok(HttpResponse::Ok().json(json!({"code": code, "label": label, "created_at": created_at.0})))
            }
            Err(StoreError::Conflict(_)) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::unavailable("could not create a unique enrolment code"))
}

/// Register a co-signer identity key
///
/// Registers a co-signer's identity key: from then on it may sign MPC relay requests
/// (`X-Tandem-Cosigner`) and take the co-signer role in sessions. Never revoked.
#[utoipa::path(post, path = "/v1/operator/cosigners", tag = "operator",
    request_body = CosignerRequest,
    responses(
        (status = 200, description = "The registered co-signer", body = doc::Cosigner),
        (status = 409, description = "`cosigner_registered`: already registered, or an enrolled wallet's device key", body = doc::ErrorBody),
    ),
    security(("operator_token" = [])))]
async fn register_cosigner(gw: Data<Gateway>, req: HttpRequest, body: RawBody) -> Result<HttpResponse, ApiError> {
    authenticate_operator(&gw, &req)?;
    let r: CosignerRequest = parse_json(&body)?;
    let key = crate::auth::parse_device_pubkey(&r.identity_pubkey).ok_or_else(|| {
        ApiError::bad_request("identity_pubkey must be a BIP-340 x-only public key: 64 hex characters")
    })?;
    let label = r.label.unwrap_or_default();
    printable("label", &label, 0, 128)?;
    let conflict = |what: &str| ApiError::new(StatusCode::CONFLICT, "cosigner_registered", what.to_owned());
    if crate::auth::lookup_device(&gw, &key).await?.is_some() {
        return Err(conflict("this key is a wallet's device key; a co-signer needs a key of its own"));
    }
    let record = CosignerRecord { identity_pubkey: key.to_string(), label, created_at: Timestamp(crate::auth::now_millis()) };
    match gw.store.insert_cosigner(&record).await {
        Ok(()) => {}
        Err(StoreError::Conflict(_)) => return Err(conflict("this co-signer is already registered")),
        Err(e) => return Err(e.into()),
    }
    gw.cosigners.insert(key);
    Ok(HttpResponse::Ok().json(json!({
        "identity_pubkey": record.identity_pubkey,
        "label": record.label,
        "created_at": record.created_at.0,
    })))
}

/// List co-signers
///
/// The registered co-signers, oldest first.
#[utoipa::path(get, path = "/v1/operator/cosigners", tag = "operator",
    responses((status = 200, description = "Oldest first", body = doc::Cosigners)),
    security(("operator_token" = [])))]
async fn list_cosigners(gw: Data<Gateway>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    authenticate_operator(&gw, &req)?;
    let list: Vec<_> = gw
        .store
        .cosigners()
        .await?
        .into_iter()
        .map(|c| json!({"identity_pubkey": c.identity_pubkey, "label": c.label, "created_at": c.created_at.0}))
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "cosigners": list })))
}

#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct RefusalsQuery {
    /// Only this account's.
    account: Option<u64>,
    /// 1 to 1000, default 100.
    limit: Option<u32>,
}

/// Signing refusals
///
/// Signing refusals, newest first: which signer refused which spend, and why.
#[utoipa::path(get, path = "/v1/operator/refusals", tag = "operator",
    params(RefusalsQuery),
    responses((status = 200, description = "Newest first", body = doc::Refusals)),
    security(("operator_token" = [])))]
async fn refusals(gw: Data<Gateway>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    authenticate_operator(&gw, &req)?;
    let q: RefusalsQuery = crate::dto::parse_query(&req)?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request("limit must be 1 to 1000"));
    }
    let list: Vec<_> = gw
        .store
        .refusals(q.account.map(AccountId), limit)
        .await?
        .into_iter()
        .map(|r| {
            json!({
                "id": r.id, "at": r.at.0, "signer": r.signer, "code": r.code, "detail": r.detail,
                "purpose": serde_json::from_str::<serde_json::Value>(&r.purpose).unwrap_or(json!(r.purpose)),
                "execution_id": r.execution_id, "group_id": r.group_id, "account_id": r.account_id.map(|a| a.0),
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "refusals": list })))
}

/// Inspect an account
///
/// An account's kind, balances, open order count and whether it is frozen.
#[utoipa::path(get, path = "/v1/operator/accounts/{id}", tag = "operator",
    params(("id" = u64, Path, description = "The account id")),
    responses(
        (status = 200, description = "The account", body = doc::OperatorAccount),
        (status = 404, description = "`unknown_account`", body = doc::ErrorBody),
    ),
    security(("operator_token" = [])))]
async fn account(gw: Data<Gateway>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    authenticate_operator(&gw, &req)?;
    let id = AccountId(path_id(&req, "id")?);
    let found = gw
        .sequencer
        .read(move |e| {
            let kind = e.account_kind(id)?;
            let open = e.open_orders(Some(id), None).len();
            Some((kind, e.balances(id).unwrap_or_default(), open, e.is_frozen(id)))
        })
        .await?;
    let (kind, balances, open_orders, frozen) = found.ok_or(RejectReason::UnknownAccount)?;
    let f = gw.fmt();
    let balances: Vec<_> = balances.into_iter().enumerate().map(|(i, b)| f.balance(AssetId(i as u16), b)).collect();
    Ok(HttpResponse::Ok().json(json!({
        "account_id": id.0,
        "kind": kind.as_str(),
        "balances": balances,
        "open_orders": open_orders,
        "frozen": frozen,
    })))
}

#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct ReverseRequest {
    asset: String,
    reference: String,
}

/// Reverse a credited deposit
///
/// Takes back a credited deposit (a chain deposit a reorg lost, whose automatic reversal was
/// left pending because the account had spent it; the operator retries once the account has
/// the funds again). Answers whether it was reversed or is still pending.
#[utoipa::path(post, path = "/v1/operator/deposits/reverse", tag = "operator",
    request_body(content = ReverseRequest, example = json!({"asset": "BTC", "reference": "chain:<txid>:<vout>"})),
    responses(
        (status = 200, description = "`reversed`, or `pending` until the account has the funds", body = doc::Reversal),
        (status = 404, description = "`unknown_deposit`, `unknown_asset`", body = doc::ErrorBody),
        (status = 409, description = "`deposit_already_reversed`", body = doc::ErrorBody),
    ),
    security(("operator_token" = [])))]
async fn reverse_deposit(gw: Data<Gateway>, req: HttpRequest, body: RawBody) -> Result<HttpResponse, ApiError> {
    authenticate_operator(&gw, &req)?;
    let r: ReverseRequest = parse_json(&body)?;
    printable("reference", &r.reference, 1, 128)?;
    let (asset, spec) = dto::asset_by_symbol(&gw.engine_config, &r.asset)?;
    let applied = gw.submit(Command::ReverseDeposit { asset, reference: r.reference.clone() }).await?;
    if let Some(reason) = dto::rejection(&applied.events) {
        return Err(reason.into());
    }
    let reversed = applied.events.iter().any(|e| matches!(e, Event::DepositReversed { .. }));
    let frozen = applied.events.iter().any(|e| matches!(e, Event::AccountFrozen { .. }));
    Ok(HttpResponse::Ok().json(json!({
        "asset": spec.symbol, "reference": r.reference,
        "status": if reversed { "reversed" } else { "pending" }, "account_frozen_now": frozen,
    })))
}

/// Freeze an account
///
/// Stops an account: no new orders, amends or withdrawals (cancels still work). The engine also
/// freezes an account by itself when a deposit the chain lost was already spent.
#[utoipa::path(post, path = "/v1/operator/accounts/{id}/freeze", tag = "operator",
    params(("id" = u64, Path, description = "The account id")),
    responses(
        (status = 200, description = "Frozen", body = doc::Frozen),
        (status = 404, description = "`unknown_account`", body = doc::ErrorBody),
        (status = 409, description = "`already_frozen`", body = doc::ErrorBody),
    ),
    security(("operator_token" = [])))]
async fn freeze(gw: Data<Gateway>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    set_frozen(gw, req, true).await
}

/// Unfreeze an account
///
/// Lets a frozen account place orders, amend and withdraw again.
#[utoipa::path(post, path = "/v1/operator/accounts/{id}/unfreeze", tag = "operator",
    params(("id" = u64, Path, description = "The account id")),
    responses(
        (status = 200, description = "Unfrozen", body = doc::Frozen),
        (status = 404, description = "`unknown_account`", body = doc::ErrorBody),
        (status = 409, description = "`not_frozen`", body = doc::ErrorBody),
    ),
    security(("operator_token" = [])))]
async fn unfreeze(gw: Data<Gateway>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    set_frozen(gw, req, false).await
}

async fn set_frozen(gw: Data<Gateway>, req: HttpRequest, frozen: bool) -> Result<HttpResponse, ApiError> {
    authenticate_operator(&gw, &req)?;
    let account = AccountId(path_id(&req, "id")?);
    let command = if frozen { Command::FreezeAccount { account } } else { Command::UnfreezeAccount { account } };
    let applied = gw.submit(command).await?;
    if let Some(reason) = dto::rejection(&applied.events) {
        return Err(reason.into());
    }
    Ok(HttpResponse::Ok().json(json!({ "account_id": account.0, "frozen": frozen })))
}

/// Credit a fiat deposit
///
/// Credits a fiat deposit. BTC is refused: it is credited by settlement from the chain.
#[utoipa::path(post, path = "/v1/operator/deposits", tag = "operator",
    request_body = DepositRequest,
    responses(
        (status = 200, description = "The deposit and the balance after it", body = doc::Credited),
        (status = 400, description = "`unsupported_asset` (BTC), `bad_precision`, `out_of_range`, `supply_exceeded`", body = doc::ErrorBody),
        (status = 404, description = "`unknown_account`, `unknown_asset`", body = doc::ErrorBody),
        (status = 409, description = "`duplicate_deposit`: this `(asset, reference)` was credited before", body = doc::ErrorBody),
    ),
    security(("operator_token" = [])))]
async fn deposit(gw: Data<Gateway>, req: HttpRequest, body: RawBody) -> Result<HttpResponse, ApiError> {
    authenticate_operator(&gw, &req)?;
    let r: DepositRequest = parse_json(&body)?;
    let (asset, spec) = dto::asset_by_symbol(&gw.engine_config, &r.asset)?;
    if spec.symbol.eq_ignore_ascii_case("BTC") {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "unsupported_asset",
            "BTC deposits are credited by settlement from the chain, not by the operator",
        ));
    }
    let amount = Amount(units("amount", &r.amount, spec.decimals)?);
    printable("reference", &r.reference, 1, 128)?;
    let account = AccountId(r.account_id);
    let applied = gw.submit(Command::CreditDeposit { account, asset, amount, reference: r.reference.clone() }).await?;
    if let Some(reason) = dto::rejection(&applied.events) {
        return Err(reason.into());
    }
    let f = gw.fmt();
    let balance = applied.events.iter().find_map(|e| match e {
        Event::BalanceChanged { account: a, asset: s, available, locked } if *a == account && *s == asset => {
            Some(f.balance(asset, tandem_matching::Balance { available: *available, locked: *locked }))
        }
        _ => None,
    });
    Ok(HttpResponse::Ok().json(json!({
        "deposit": {
            "account_id": account.0,
            "asset": spec.symbol,
            "amount": f.amount(asset, amount),
            "reference": r.reference,
            "seq": applied.seq.0,
        },
        "balance": balance,
    })))
}

/// Engine position and state hash
///
/// The engine's position and state hash: equal to a fresh replay of the journal up to
/// `last_seq` (what `tandem journal verify` prints). Hashing walks the whole state: operator use.
#[utoipa::path(get, path = "/v1/operator/state", tag = "operator",
    responses((status = 200, description = "The engine's position and state hash", body = doc::EngineState)),
    security(("operator_token" = [])))]
async fn state(gw: Data<Gateway>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    authenticate_operator(&gw, &req)?;
    let (last_seq, hash, accounts, open_orders) = gw
        .sequencer
        .read(|e| (e.last_seq().0, e.state_hash().to_string(), e.account_count(), e.open_order_count()))
        .await?;
    Ok(HttpResponse::Ok().json(json!({
        "last_seq": last_seq,
        "state_hash": hash,
        "projected_seq": gw.projector.projected_seq().0,
        "accounts": accounts,
        "open_orders": open_orders,
    })))
}

/// Halt a market
///
/// Stops trading in a market: no new orders or amends (cancels still work).
#[utoipa::path(post, path = "/v1/operator/markets/{symbol}/halt", tag = "operator",
    params(("symbol" = String, Path, description = "Market symbol")),
    responses(
        (status = 200, description = "Halted", body = doc::Halted),
        (status = 404, description = "`unknown_market`", body = doc::ErrorBody),
        (status = 409, description = "`already_halted`", body = doc::ErrorBody),
    ),
    security(("operator_token" = [])))]
async fn halt(gw: Data<Gateway>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    set_halted(gw, req, true).await
}

#[utoipa::path(post, path = "/v1/operator/markets/{symbol}/resume", tag = "operator", summary = "Resume a halted market",
    params(("symbol" = String, Path, description = "Market symbol")),
    responses(
        (status = 200, description = "Trading again", body = doc::Halted),
        (status = 404, description = "`unknown_market`", body = doc::ErrorBody),
        (status = 409, description = "`not_halted`", body = doc::ErrorBody),
    ),
    security(("operator_token" = [])))]
async fn resume(gw: Data<Gateway>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    set_halted(gw, req, false).await
}

/// Cancel every order in a market
///
/// Cancels every open order in a market, of every account (an operator's kill switch, often
/// used together with a halt).
#[utoipa::path(post, path = "/v1/operator/markets/{symbol}/cancel-all", tag = "operator",
    params(("symbol" = String, Path, description = "Market symbol")),
    responses(
        (status = 200, description = "How many orders were canceled", body = doc::MarketCanceled),
        (status = 404, description = "`unknown_market`", body = doc::ErrorBody),
    ),
    security(("operator_token" = [])))]
async fn cancel_market(gw: Data<Gateway>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    authenticate_operator(&gw, &req)?;
    let symbol = req.match_info().get("symbol").unwrap_or("");
    let (market, spec) = dto::market_by_symbol(&gw.engine_config, symbol)?;
    let applied = gw.submit(Command::CancelAll { account: None, market: Some(market) }).await?;
    if let Some(reason) = dto::rejection(&applied.events) {
        return Err(reason.into());
    }
    let canceled = applied.events.iter().filter(|e| matches!(e, tandem_matching::Event::OrderClosed { .. })).count();
    Ok(HttpResponse::Ok().json(json!({ "market": spec.symbol, "canceled": canceled })))
}

async fn set_halted(gw: Data<Gateway>, req: HttpRequest, halt: bool) -> Result<HttpResponse, ApiError> {
    authenticate_operator(&gw, &req)?;
    let symbol = req.match_info().get("symbol").unwrap_or("");
    let (market, spec) = dto::market_by_symbol(&gw.engine_config, symbol)?;
    let command = if halt { Command::HaltMarket { market } } else { Command::ResumeMarket { market } };
    let applied = gw.submit(command).await?;
    if let Some(reason) = dto::rejection(&applied.events) {
        return Err(reason.into());
    }
    Ok(HttpResponse::Ok().json(json!({ "market": spec.symbol, "halted": halt })))
}
