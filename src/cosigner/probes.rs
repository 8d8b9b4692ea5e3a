//! The co-signer's probes, like every other process's: `/health` (the process lives),
//! `/ready` (it reaches the provider: it would join a session opened now) and `/metrics`
//! (Prometheus: how long the provider has been silent, how many vaults it holds a share of).

use std::net::TcpListener;
use std::sync::Arc;

use actix_web::web::{self, Data};
use actix_web::{App, HttpResponse, HttpServer};
use prometheus::{Encoder as _, IntGauge, Registry, TextEncoder};
use serde_json::json;

use super::Cosigner;

struct Probes {
    cosigner: Arc<Cosigner>,
    registry: Registry,
    silent: IntGauge,
    vaults: IntGauge,
}

impl Cosigner {
    /// Seconds since the provider last failed to answer, while it is failing (`None`: it answers).
    pub fn provider_silent_for(&self) -> Option<u64> {
        let since = (*self.silent_since.lock().unwrap_or_else(|p| p.into_inner()))?;
        Some((crate::node::now_millis() / 1000).saturating_sub(since))
    }
}

/// Serves the probes on `listener` until the server stops.
pub async fn serve(cosigner: Arc<Cosigner>, listener: TcpListener) -> anyhow::Result<()> {
    let registry = Registry::new();
    let silent = IntGauge::new("tandem_cosigner_provider_silent_seconds", "Seconds the provider has not answered (0: it answers)")?;
    let vaults = IntGauge::new("tandem_cosigner_vaults", "Vaults this co-signer holds a key share of")?;
    registry.register(Box::new(silent.clone()))?;
    registry.register(Box::new(vaults.clone()))?;
    let probes = Data::new(Probes { cosigner, registry, silent, vaults });
    let server = HttpServer::new(move || {
        App::new()
            .app_data(probes.clone())
            .route("/health", web::get().to(|| async { HttpResponse::Ok().json(json!({"status": "ok"})) }))
            .route("/ready", web::get().to(ready))
            .route("/metrics", web::get().to(metrics))
    })
    .workers(1)
    .listen(listener)?
    .run();
    Ok(server.await?)
}

async fn ready(p: Data<Probes>) -> HttpResponse {
    match p.cosigner.provider_silent_for() {
        None => HttpResponse::Ok().json(json!({"ready": true})),
        Some(secs) => HttpResponse::ServiceUnavailable().json(json!({"ready": false, "provider_silent_seconds": secs})),
    }
}

async fn metrics(p: Data<Probes>) -> HttpResponse {
    p.silent.set(p.cosigner.provider_silent_for().unwrap_or(0) as i64);
    if let Ok(v) = p.cosigner.vaults() {
        p.vaults.set(v.len() as i64);
    }
    let mut out = Vec::new();
    match TextEncoder::new().encode(&p.registry.gather(), &mut out) {
        Ok(()) => HttpResponse::Ok().content_type("text/plain; version=0.0.4").body(out),
        Err(e) => HttpResponse::InternalServerError().body(e.to_string()),
    }
}
