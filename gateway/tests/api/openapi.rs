//! The API document (`/v1/openapi.json`) against the running server: every route the app
//! registers is documented and every documented route is served (the drift check), real replies
//! have the documented shapes, and the reference page (`/v1/docs`) lists every operation.

use crate::harness::*;
use actix_web::web::Data;
use awc::http::Method;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use tandem_matching::Side;

const METHODS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];

/// `(METHOD, path)` of every operation in the document.
fn documented(doc: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in METHODS {
            if item.get(method.to_lowercase()).is_some() {
                out.insert((method.to_owned(), path.clone()));
            }
        }
    }
    out
}

/// A concrete path for a route template.
fn concrete(template: &str) -> String {
    template.replace("{symbol}", "BTC-USD").replace("{id}", "1").replace("{eid}", &"0".repeat(64))
}

/// The drift check. The paths come from the app itself (every route is registered through
/// `routes::resource`, which records them); the methods from asking the running server: a
/// resource answers a method it has no route for with `405 method_not_allowed`, so anything else
/// means the method is served. Unsigned requests are refused before any handler acts, so the
/// probing changes nothing. Adding a route without documenting it, documenting a method that is
/// not served, or removing a documented route fails here.
#[actix_web::test]
async fn every_route_is_documented_and_every_documented_route_is_served() {
    let (owner, gateway) = build(|_| {}).await;
    let paths = tandem_gateway::openapi::registered_paths(Data::new(gateway));
    let _ = tokio::task::spawn_blocking(move || owner.shutdown()).await;
    assert!(paths.contains(&"/v1/orders/{id}".to_owned()) && paths.contains(&"/v1/openapi.json".to_owned()), "{paths:?}");

    let ex = Exchange::start().await;
    let mut served = BTreeSet::new();
    for path in &paths {
        for method in METHODS {
            let reply = ex.raw(Method::from_bytes(method.as_bytes()).unwrap(), &concrete(path), &[], b"").await;
            assert_ne!(reply.body["error"]["code"], "not_found", "{method} {path} is registered but unmatched");
            if reply.status != 405 {
                served.insert((method.to_owned(), path.clone()));
            }
        }
    }
    let doc = ex.public("/v1/openapi.json").await.ok().clone();
    let documented = documented(&doc);
    let undocumented: Vec<_> = served.difference(&documented).collect();
    let not_served: Vec<_> = documented.difference(&served).collect();
    assert!(undocumented.is_empty(), "served but not in the API document: {undocumented:?}");
    assert!(not_served.is_empty(), "documented but not served: {not_served:?}");
    assert!(served.len() > 40, "{served:?}");
    ex.stop().await;
}

#[actix_web::test]
async fn the_document_is_openapi_3_served_publicly() {
    let ex = Exchange::start().await;
    let reply = ex.public("/v1/openapi.json").await;
    assert!(reply.header("content-type").is_some_and(|c| c.starts_with("application/json")));
    let doc = reply.ok();
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")), "{}", doc["openapi"]);
    assert_eq!(doc["info"]["title"], "Tandem API");
    assert!(doc["info"]["version"].as_str().is_some_and(|v| !v.is_empty()));
    assert_eq!(doc, &tandem_gateway::openapi::document_json());
    // The Binance-compatible API is documented elsewhere.
    assert!(doc["paths"].as_object().unwrap().keys().all(|p| p.starts_with("/v1/")));
    ex.stop().await;
}

/// A schema with its `$ref` followed.
fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema["$ref"].as_str().and_then(|r| r.strip_prefix("#/components/schemas/")) {
        Some(name) => resolve(doc, &doc["components"]["schemas"][name]),
        None => schema,
    }
}

fn types(schema: &Value) -> Vec<&str> {
    match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    }
}

#[actix_web::test]
async fn placing_an_order_is_documented_with_decimal_strings_and_its_auth() {
    let doc = tandem_gateway::openapi::document_json();
    let op = &doc["paths"]["/v1/orders"]["post"];
    let body = resolve(&doc, &op["requestBody"]["content"]["application/json"]["schema"]);
    let props = &body["properties"];
    for field in ["market", "side", "type", "quantity", "price", "time_in_force", "client_order_id", "protection_price"] {
        assert!(props.get(field).is_some(), "{field} missing from {body}");
    }
    let required: Vec<&str> = body["required"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert_eq!(required, ["market", "side", "type", "quantity"]);
    // Amounts and prices are strings with a decimal pattern, never numbers.
    let decimal = resolve(&doc, &props["quantity"]);
    assert_eq!(types(decimal), ["string"]);
    assert!(decimal["pattern"].as_str().is_some());
    let price = &props["price"];
    let alternatives: Vec<&Value> = price["oneOf"].as_array().map(|a| a.iter().collect()).unwrap_or_else(|| vec![price]);
    assert!(alternatives.iter().any(|s| types(resolve(&doc, s)) == ["string"]), "{price}");
    assert!(alternatives.iter().all(|s| !types(resolve(&doc, s)).contains(&"number")), "{price}");
    let side = resolve(&doc, &props["side"]);
    assert_eq!(side["enum"], json!(["buy", "sell"]));
    // Signed with an API key or a device key, each with timestamp and signature.
    assert_eq!(
        op["security"],
        json!([{"api_key": [], "timestamp": [], "signature": []}, {"device_key": [], "timestamp": [], "signature": []}])
    );
    assert_eq!(doc["components"]["securitySchemes"]["api_key"]["name"], "X-Tandem-Key");
    assert_eq!(doc["components"]["securitySchemes"]["operator_token"]["scheme"], "bearer");
    let params: Vec<&str> = op["parameters"].as_array().unwrap().iter().filter_map(|p| p["name"].as_str()).collect();
    assert_eq!(params, ["Idempotency-Key"]);
    for status in ["200", "400", "401", "409", "429", "503"] {
        assert!(op["responses"].get(status).is_some(), "no {status}");
    }
    let error = resolve(&doc, &op["responses"]["409"]["content"]["application/json"]["schema"]);
    assert!(error["properties"]["error"].is_object() && error["properties"]["order"].is_object(), "{error}");
    // Public routes are not signed; operator routes take the bearer token.
    assert!(doc["paths"]["/v1/markets"]["get"].get("security").is_none());
    assert_eq!(doc["paths"]["/v1/operator/state"]["get"]["security"], json!([{"operator_token": []}]));
    assert!(doc["paths"]["/v1/ws"]["get"]["description"].as_str().unwrap().contains("book:SYMBOL"));
}

/// Where `value` departs from `schema`: a kind the schema does not allow, a field it does not
/// name, a required field missing, a value outside its enum.
fn departures(doc: &Value, schema: &Value, value: &Value, at: &str, out: &mut Vec<String>) {
    let schema = resolve(doc, schema);
    for key in ["oneOf", "anyOf"] {
        if let Some(alternatives) = schema[key].as_array() {
            let fits = alternatives.iter().any(|s| {
                let mut errs = Vec::new();
                departures(doc, s, value, at, &mut errs);
                errs.is_empty()
            });
            if !fits {
                out.push(format!("{at}: {value} fits none of {key}"));
            }
            return;
        }
    }
    let kinds = types(schema);
    let kind = match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    };
    // No `type` documents any value (free-form JSON such as an intent).
    let integer_as_number = kind == "integer" && kinds.contains(&"number");
    if !kinds.is_empty() && !kinds.contains(&kind) && !integer_as_number {
        out.push(format!("{at}: {value} is {kind}, documented {kinds:?}"));
        return;
    }
    if let Some(allowed) = schema["enum"].as_array() {
        if !allowed.contains(value) {
            out.push(format!("{at}: {value} is not one of {allowed:?}"));
        }
    }
    match value {
        Value::Object(fields) if schema.get("properties").is_some() => {
            let props = schema["properties"].as_object().unwrap();
            for (name, v) in fields {
                match props.get(name) {
                    Some(s) => departures(doc, s, v, &format!("{at}.{name}"), out),
                    None => out.push(format!("{at}.{name}: not documented")),
                }
            }
            for required in schema["required"].as_array().into_iter().flatten().filter_map(Value::as_str) {
                if !fields.contains_key(required) {
                    out.push(format!("{at}.{required}: required but missing"));
                }
            }
        }
        Value::Array(items) if schema.get("items").is_some() => {
            for (i, v) in items.iter().enumerate() {
                departures(doc, &schema["items"], v, &format!("{at}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// The reply has a status the operation documents, with the documented body.
#[track_caller]
fn check(doc: &Value, method: &str, template: &str, reply: Reply) -> Reply {
    let op = &doc["paths"][template][method.to_lowercase()];
    assert!(op.is_object(), "{method} {template} is not documented");
    let response = &op["responses"][reply.status.to_string()];
    assert!(response.is_object(), "{method} {template} answered {} (undocumented): {}", reply.status, reply.body);
    let schema = &response["content"]["application/json"]["schema"];
    assert!(schema.is_object(), "{method} {template} {}: no documented body", reply.status);
    let mut out = Vec::new();
    departures(doc, schema, &reply.body, "body", &mut out);
    assert!(out.is_empty(), "{method} {template} {}: {out:#?}\n{}", reply.status, reply.body);
    reply
}

/// Real replies of every kind of route have the shapes the document gives them, so the
/// schemas of replies built with `json!` cannot drift from the handlers either.
#[actix_web::test]
async fn replies_have_the_documented_shapes() {
    let ex = Exchange::start().await;
    let doc = ex.public("/v1/openapi.json").await.ok().clone();

    check(&doc, "GET", "/v1/health", ex.public("/v1/health").await);
    check(&doc, "GET", "/v1/markets", ex.public("/v1/markets").await);
    check(&doc, "GET", "/v1/mpc/provider", ex.public("/v1/mpc/provider").await);
    check(&doc, "GET", "/v1/markets/{symbol}/book", ex.public("/v1/markets/nope/book").await).err(404, "unknown_market");

    let a = ex.user().await;
    let b = ex.user().await;
    ex.deposit_usd(&a, "100000.00").await;
    ex.deposit_btc(&b, 100_000_000).await;
    let r = check(&doc, "POST", "/v1/orders", ex.signed(&a, "POST", "/v1/orders", &limit_order(Side::Buy, "65000.00", "0.002")).await);
    let resting = r.ok()["order"]["order_id"].as_u64().unwrap();
    let body = r#"{"market":"BTC-USD","side":"sell","type":"limit","price":"65000.00","quantity":"0.001","client_order_id":"s-1"}"#;
    let r = check(&doc, "POST", "/v1/orders", ex.signed(&b, "POST", "/v1/orders", body).await);
    assert_eq!(r.ok()["fills"].as_array().unwrap().len(), 1);
    check(&doc, "POST", "/v1/orders", ex.signed(&b, "POST", "/v1/orders", body).await).err(409, "duplicate_client_order_id");
    check(&doc, "POST", "/v1/orders", ex.signed(&b, "POST", "/v1/orders", r#"{"market":1}"#).await).err(400, "bad_request");
    check(&doc, "GET", "/v1/orders", ex.public("/v1/orders").await).err(401, "missing_credentials");

    check(&doc, "GET", "/v1/markets/{symbol}/book", ex.public("/v1/markets/BTC-USD/book").await).ok();
    check(&doc, "GET", "/v1/markets/{symbol}/trades", ex.public("/v1/markets/BTC-USD/trades").await).ok();
    let path = format!("/v1/orders/{resting}");
    check(&doc, "GET", "/v1/orders/{id}", ex.signed(&a, "GET", &path, "").await).ok();
    check(&doc, "PATCH", "/v1/orders/{id}", ex.signed(&a, "PATCH", &path, r#"{"quantity":"0.0015"}"#).await).ok();
    check(&doc, "GET", "/v1/orders", ex.signed(&a, "GET", "/v1/orders", "").await).ok();
    check(&doc, "GET", "/v1/orders", ex.signed(&a, "GET", "/v1/orders?status=all", "").await).ok();
    check(&doc, "DELETE", "/v1/orders/{id}", ex.signed(&a, "DELETE", &path, "").await).ok();
    check(&doc, "DELETE", "/v1/orders/{id}", ex.signed(&a, "DELETE", &path, "").await).err(404, "unknown_order");
    ex.signed(&a, "POST", "/v1/orders", &limit_order(Side::Buy, "60000.00", "0.001")).await.ok();
    check(&doc, "DELETE", "/v1/orders", ex.signed(&a, "DELETE", "/v1/orders?market=BTC-USD", "").await).ok();

    check(&doc, "GET", "/v1/balances", ex.signed(&a, "GET", "/v1/balances", "").await).ok();
    let withdrawal = r#"{"asset":"USD","amount":"10.00","destination":"iban-1","client_withdrawal_id":"w-1"}"#;
    check(&doc, "POST", "/v1/withdrawals", ex.signed(&a, "POST", "/v1/withdrawals", withdrawal).await).ok();
    check(&doc, "POST", "/v1/withdrawals", ex.signed(&a, "POST", "/v1/withdrawals", withdrawal).await).err(409, "duplicate_client_withdrawal_id");
    check(&doc, "GET", "/v1/withdrawals", ex.signed(&a, "GET", "/v1/withdrawals", "").await).ok();
    check(&doc, "GET", "/v1/deposits", ex.signed(&a, "GET", "/v1/deposits", "").await).ok();
    check(&doc, "GET", "/v1/trades", ex.signed(&a, "GET", "/v1/trades", "").await).ok();
    check(&doc, "GET", "/v1/ledger", ex.signed(&a, "GET", "/v1/ledger", "").await).ok();
    check(&doc, "GET", "/v1/settlement", ex.signed(&a, "GET", "/v1/settlement", "").await).ok();
    check(&doc, "GET", "/v1/settlement/batches/{id}", ex.signed(&a, "GET", "/v1/settlement/batches/9", "").await).err(404, "unknown_batch");
    check(&doc, "GET", "/v1/vaults", ex.signed(&a, "GET", "/v1/vaults", "").await).ok();

    let device = Device::random();
    let code = ex.enrolment_code().await;
    check(&doc, "POST", "/v1/wallet/enrol", ex.enrol(&device, Some(&code)).await).ok();
    check(&doc, "POST", "/v1/wallet/enrol", ex.enrol(&device, Some(&code)).await).err(409, "device_registered");
    check(&doc, "GET", "/v1/mpc/sessions", ex.device_signed(&device, "GET", "/v1/mpc/sessions", "").await).ok();
    let eid = format!("/v1/mpc/sessions/{}", "ab".repeat(32));
    check(&doc, "GET", "/v1/mpc/sessions/{eid}", ex.device_signed(&device, "GET", &eid, "").await).err(404, "unknown_session");

    let account = format!("/v1/operator/accounts/{}", a.account);
    check(&doc, "GET", "/v1/operator/accounts/{id}", ex.operator("GET", &account, "").await).ok();
    check(&doc, "POST", "/v1/operator/accounts/{id}/freeze", ex.operator("POST", &format!("{account}/freeze"), "").await).ok();
    check(&doc, "POST", "/v1/operator/accounts/{id}/unfreeze", ex.operator("POST", &format!("{account}/unfreeze"), "").await).ok();
    check(&doc, "POST", "/v1/operator/enrolment-codes", ex.operator("POST", "/v1/operator/enrolment-codes", "{}").await).ok();
    let cosigner = Device::random().pubkey();
    let body = format!(r#"{{"identity_pubkey":"{cosigner}","label":"c"}}"#);
    check(&doc, "POST", "/v1/operator/cosigners", ex.operator("POST", "/v1/operator/cosigners", &body).await).ok();
    check(&doc, "GET", "/v1/operator/cosigners", ex.operator("GET", "/v1/operator/cosigners", "").await).ok();
    check(&doc, "GET", "/v1/operator/refusals", ex.operator("GET", "/v1/operator/refusals", "").await).ok();
    let deposit = format!(r#"{{"account_id":{},"asset":"USD","amount":"5","reference":"wire-x"}}"#, b.account);
    check(&doc, "POST", "/v1/operator/deposits", ex.operator("POST", "/v1/operator/deposits", &deposit).await).ok();
    let reverse = r#"{"asset":"USD","reference":"wire-x"}"#;
    check(&doc, "POST", "/v1/operator/deposits/reverse", ex.operator("POST", "/v1/operator/deposits/reverse", reverse).await).ok();
    check(&doc, "GET", "/v1/operator/state", ex.operator("GET", "/v1/operator/state", "").await).ok();
    check(&doc, "GET", "/v1/operator/batches", ex.operator("GET", "/v1/operator/batches", "").await).ok();
    check(&doc, "GET", "/v1/operator/reconciliation", ex.operator("GET", "/v1/operator/reconciliation", "").await)
        .err(503, "settlement_not_running");
    let market = "/v1/operator/markets/BTC-USD";
    check(&doc, "POST", "/v1/operator/markets/{symbol}/halt", ex.operator("POST", &format!("{market}/halt"), "").await).ok();
    check(&doc, "POST", "/v1/operator/markets/{symbol}/resume", ex.operator("POST", &format!("{market}/resume"), "").await).ok();
    check(&doc, "POST", "/v1/operator/markets/{symbol}/cancel-all", ex.operator("POST", &format!("{market}/cancel-all"), "").await).ok();
    check(&doc, "GET", "/v1/operator/state", ex.public("/v1/operator/state").await).err(401, "bad_operator_token");
    ex.stop().await;
}

#[actix_web::test]
async fn the_reference_page_lists_every_operation() {
    let ex = Exchange::start().await;
    let reply = ex.public("/v1/docs").await;
    assert_eq!(reply.status, 200);
    assert!(reply.header("content-type").is_some_and(|c| c.starts_with("text/html")));
    let html = reply.body.as_str().expect("an HTML page");
    let doc = tandem_gateway::openapi::document_json();
    for (method, path) in documented(&doc) {
        let id = doc["paths"][&path][method.to_lowercase()]["operationId"].as_str().unwrap();
        let anchor: String = id.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '-' }).collect();
        assert!(html.contains(&format!("id=\"op-{anchor}\"")), "{method} {path} has no section");
        assert!(html.contains(&format!("<span class=\"method {}\">{method}</span><code>{path}</code>", method.to_lowercase())), "{method} {path}");
    }
    for expected in ["X-Tandem-Key", "X-Tandem-Device", "Authorization: Bearer", "id=\"schema-PlaceOrderRequest\"", "Decimal"] {
        assert!(html.contains(expected), "{expected} missing");
    }
    assert!(!html.contains("<script"), "the page needs no scripts");
    ex.stop().await;
}
