//! The co-signer's recovery relay: how a user leaves without the provider.
//!
//! When the provider is down its relay is down too, so the co-signer serves a relay of its own
//! (the gateway's relay and routes, [`tandem_gateway::configure_relay`], with this host's
//! rules): only the wallets of the co-signer's vaults may call it (device-key signed requests),
//! and only to open a two-party session with this co-signer. The co-signer joins those sessions
//! in process and signs only what [`tandem_custody::policy::cosigner_check`] allows: a
//! recovery to the address the wallet named, once the provider has been silent long enough.
//!
//! Routes: `GET /v1/cosigner` (its identity, for the wallet to check) and the relay's
//! `/v1/mpc/sessions...`.

use std::collections::HashSet;
use std::net::TcpListener;
use std::sync::Arc;

use actix_web::web::{self, Data};
use actix_web::{App, HttpRequest, HttpResponse, HttpServer};
use bitcoin::secp256k1::XOnlyPublicKey;
use serde_json::json;
use tandem_gateway::auth::{verify_signed_device_request, PartyCaller, PartyKind};
use tandem_gateway::relay::{Role, SessionParty};
use tandem_gateway::replay_guard::ReplayGuard;
use tandem_gateway::{ApiError, Relay, RelayConfig, RelayHost};

use super::Cosigner;

/// How far a request's timestamp may be from this host's clock.
const RECV_WINDOW_MS: u64 = 10_000;

pub struct RecoveryHost {
    relay: Arc<Relay>,
    cosigner: Arc<Cosigner>,
    replays: ReplayGuard,
}

impl RecoveryHost {
    fn wallets(&self) -> Result<HashSet<XOnlyPublicKey>, ApiError> {
        let vaults = self.cosigner.vaults().map_err(|e| ApiError::unavailable(format!("{e:#}")))?;
        Ok(vaults.iter().filter_map(|v| v.wallet_identity.parse().ok()).collect())
    }
}

impl RelayHost for RecoveryHost {
    fn relay(&self) -> &Relay {
        &self.relay
    }

    async fn authenticate(&self, req: &HttpRequest, body: &[u8]) -> Result<PartyCaller, ApiError> {
        let identity = verify_signed_device_request(req, body, RECV_WINDOW_MS, &self.replays)?;
        if !self.wallets()?.contains(&identity) {
            return Err(ApiError::unauthorized("unknown_device", "this co-signer has no vault with this wallet"));
        }
        Ok(PartyCaller { identity, kind: PartyKind::VaultWallet })
    }

    async fn check_parties(&self, caller: &PartyCaller, parties: &[SessionParty]) -> Result<(), ApiError> {
        let me = self.cosigner.identity().keypair().x_only_public_key().0;
        let ok = parties.len() == 2
            && parties.iter().any(|p| p.role == Role::Wallet && p.identity == caller.identity)
            && parties.iter().any(|p| p.role == Role::Cosigner && p.identity == me);
        if ok {
            Ok(())
        } else {
            Err(ApiError::bad_request("a recovery session has two parties: the calling wallet and this co-signer"))
        }
    }
}

async fn identity(host: Data<RecoveryHost>) -> HttpResponse {
    HttpResponse::Ok().json(json!({ "identity": host.cosigner.identity().pubkey_hex() }))
}

/// Serves the recovery relay on `listener` and joins its sessions. Runs until the server stops.
pub async fn serve(cosigner: Arc<Cosigner>, listener: TcpListener) -> anyhow::Result<()> {
    let relay = Arc::new(Relay::new(RelayConfig::default()));
    let mut opened = relay.subscribe_opened();
    let host = Data::new(RecoveryHost { relay: relay.clone(), cosigner: cosigner.clone(), replays: ReplayGuard::new(RECV_WINDOW_MS) });
    let max_request_bytes = relay.config().max_request_bytes;
    let server = HttpServer::new(move || {
        let host = host.clone();
        App::new().app_data(host).configure(move |cfg| {
            cfg.route("/v1/cosigner", web::get().to(identity));
            tandem_gateway::configure_relay::<RecoveryHost>(cfg, max_request_bytes);
        })
    })
    .workers(1)
    .listen(listener)?
    .run();
    let joiner = tokio::spawn(async move {
        loop {
            match opened.recv().await {
                Ok(spec) => {
                    let c = cosigner.clone();
                    let relay = relay.clone();
                    tokio::spawn(async move { c.handle_recovery(relay, spec).await });
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "co-signer missed recovery sessions");
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    });
    let result = server.await;
    joiner.abort();
    Ok(result?)
}
