//! [`Custodian`] over the custody process's internal API ([`super::api`]).
//!
//! Each call opens its own connection: settlement signs every wallet's inputs at once, and the
//! calls are few and long (a signing session waits for its partner).

use std::str::FromStr;
use std::time::Duration;

use anyhow::{bail, Context};
use bitcoin::bip32::Xpub;
use bitcoin::consensus::encode::deserialize_hex;
use bitcoin::{Psbt, Witness};
use futures::future::BoxFuture;
use tokio::time::Instant;
use serde_json::Value;
use tandem_custody::{InputSignature, SpendIntent, SpendPurpose};
use tandem_matching::AccountId;

use super::api::{PoolKey, PoolWitness, SignPoolInput, SignSpend, Signed, SpendNotSigned};
use super::Custodian;
use crate::client::{Auth, Client};
use crate::provider::pool::PoolAddresses;
use crate::provider::SignError;

/// How long after the deadline an answer from custody may still arrive.
const ANSWER_SLACK: Duration = Duration::from_secs(10);

pub struct HttpCustodian {
    url: String,
    auth: Auth,
    pool: PoolAddresses,
}

impl HttpCustodian {
    /// The custody process at `url` (`http://host:port`), which must be of `network`.
    pub async fn connect(url: &str, operator_token: &str, network: bitcoin::Network) -> anyhow::Result<HttpCustodian> {
        let url = url.trim_end_matches('/').to_owned();
        let auth = Auth::Operator(operator_token.to_owned());
        let (status, body) = Client::connect(&url)
            .await?
            .send("GET", "/v1/custody/pool", None, &auth)
            .await
            .with_context(|| format!("asking custody at {url} for its pool"))?;
        if status != 200 {
            bail!("custody at {url} answered {status} for its pool: {body}");
        }
        let key: PoolKey = serde_json::from_value(body).context("custody's pool key")?;
        let theirs = bitcoin::Network::from_str(&key.network).with_context(|| format!("custody's network {:?}", key.network))?;
        if theirs != network {
            bail!("custody at {url} runs on {theirs}, this process on {network}");
        }
        let xpub = Xpub::from_str(&key.xpub).context("custody's pool xpub")?;
        Ok(HttpCustodian { url, auth, pool: PoolAddresses::new(xpub, network) })
    }

    async fn post(&self, path: &str, body: &impl serde::Serialize) -> anyhow::Result<(u16, Value)> {
        let body = serde_json::to_value(body)?;
        Client::connect(&self.url).await?.send("POST", path, Some(&body), &self.auth).await
    }
}

impl Custodian for HttpCustodian {
    fn pool(&self) -> &PoolAddresses {
        &self.pool
    }

    fn sign(&self, intent: SpendIntent, until: Instant) -> BoxFuture<'_, Result<Vec<InputSignature>, SignError>> {
        Box::pin(async move {
            let failed = |e: anyhow::Error| SignError::Failed(format!("custody at {}: {e:#}", self.url));
            // Custody stops its session at the deadline and answers; the slack is for the answer.
            let left = until.saturating_duration_since(Instant::now());
            let request = SignSpend { intent: intent.to_json(), deadline_ms: left.as_millis() as u64 };
            let asked = tokio::time::timeout(left + ANSWER_SLACK, self.post("/v1/custody/spends", &request));
            let (status, body) = asked
                .await
                .map_err(|_| super::too_late())?
                .map_err(|e| SignError::CustodyUnavailable(format!("custody at {}: {e:#}", self.url)))?;
            match status {
                200 => {
                    let signed: Signed = serde_json::from_value(body).map_err(|e| failed(e.into()))?;
                    if signed.signatures.len() != intent.inputs.len() {
                        return Err(failed(anyhow::anyhow!(
                            "{} signatures for {} inputs",
                            signed.signatures.len(),
                            intent.inputs.len()
                        )));
                    }
                    signed.signatures.iter().map(|s| InputSignature::try_from(s).map_err(failed)).collect()
                }
                _ => match serde_json::from_value::<SpendNotSigned>(body.clone()) {
                    Ok(not) => Err(not.into()),
                    // Not custody's answer (a proxy's, or a process starting): nothing was tried.
                    Err(_) => Err(SignError::CustodyUnavailable(format!("custody at {}: HTTP {status}: {body}", self.url))),
                },
            }
        })
    }

    fn sign_pool_input<'a>(
        &'a self,
        purpose: SpendPurpose,
        psbt: &'a Psbt,
        index: usize,
        account: AccountId,
    ) -> BoxFuture<'a, Result<Witness, SignError>> {
        Box::pin(async move {
            let unavailable = |e: anyhow::Error| SignError::CustodyUnavailable(format!("custody at {}: {e:#}", self.url));
            let request = SignPoolInput { purpose, psbt: hex::encode(psbt.serialize()), index, account: account.0 };
            let (status, body) = self.post("/v1/custody/pool-inputs", &request).await.map_err(unavailable)?;
            if status == 200 {
                let witness: PoolWitness = serde_json::from_value(body).map_err(|e| unavailable(e.into()))?;
                return deserialize_hex(&witness.witness).map_err(|e| SignError::Failed(format!("custody's witness: {e}")));
            }
            match serde_json::from_value::<SpendNotSigned>(body.clone()) {
                Ok(not) => Err(not.into()),
                Err(_) => Err(unavailable(anyhow::anyhow!("HTTP {status}: {body}"))),
            }
        })
    }
}
