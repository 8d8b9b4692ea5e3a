//! The provider's vault service: runs inside the node when custody is configured, and takes the
//! provider's part in vault creation.
//!
//! It watches the node's MPC relay for newly opened sessions that name the provider
//! ([`Relay::subscribe_opened`]) and joins them in process ([`InProcessRelayLink`], sealed end
//! to end with the provider identity):
//! - `aux-info`: a new signer group. The group id is the first 16 bytes of the session's
//!   execution id (the wallet derives it the same way). The wallet must be an enrolled device
//!   key; the group then belongs to its account. The provider's primes come from the node's
//!   prime pool (fixture primes in a demo configuration; generated on the spot, slowly, if the
//!   pool is empty).
//! - `keygen`: a new address of the wallet's newest vault with the same parties (same wallet
//!   device key, same co-signer, same policy).
//! - `presign` (wallet + provider, intent [`tandem_custody::PresignIntent`]): a presignature
//!   for one of the wallet's own keys, up to [`MAX_PRESIGNATURES_PER_KEY`] in stock, kept in
//!   `data/custody/presignatures` for one-round signing ([`signing`]).
//!
//! A co-signer named by a session must be registered. Sessions that fail the checks are
//! aborted on the relay with the reason, so the wallet fails at once.
//!
//! What it keeps: the aux info and every key share sealed under the master key in
//! `data/custody/secrets` (`vault-<group>-aux`, `vault-<group>-key-<index>`), and the vault
//! registry in the store (`vaults`, `vault_addresses`), served by `GET /v1/vaults`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use bitcoin::secp256k1::Keypair;
use tandem_custody::{
    AuxPrimes, CustodyConfig, EncryptedShareStore, ExecutionId, FilePresignatureStore, GroupId, PresignatureStore, Party, PartyAuxInfo, PartyRole, Policy,
    PrimePool, SessionMember, SignerGroup, VaultKey,
};
use tandem_gateway::relay::{Role, SessionSpec};
use tandem_gateway::Relay;
use tandem_matching::{AccountId, AssetId, SequencerHandle, Timestamp};
use tandem_store::{Store, VaultAddressRecord, VaultRecord};

pub mod pool;
pub mod signing;
pub use pool::{PoolAddresses, PoolVault};
pub use signing::SignError;

use crate::mpc_link::{party_role, InProcessRelayLink};

/// How long the provider waits for a session it was told about to be joinable.
const JOIN: Duration = Duration::from_secs(10);

/// The provider's side of vault creation.
pub struct VaultService {
    pub relay: Arc<Relay>,
    pub identity: Keypair,
    pub store: Store,
    pub secrets: EncryptedShareStore,
    /// The provider's presignatures (with wallets, for one-round signing).
    pub presignatures: Arc<FilePresignatureStore>,
    pub prime_pool: Option<Arc<PrimePool>>,
    /// Demo configuration: fixture primes (ours and the wallet's) accepted.
    pub demo: bool,
    /// The node's Bitcoin network, the one withdrawals are checked against too.
    pub network: bitcoin::Network,
    /// The ledger, for the obligations a spend must pay (pending withdrawals).
    pub ledger: Option<SequencerHandle>,
    /// The ledger's BTC asset.
    pub btc: Option<AssetId>,
    /// The largest fee a spend may pay.
    pub max_fee: bitcoin::Amount,
    /// The provider's own coins: custodial accounts' deposit addresses and the settlement pool.
    pub pool: Arc<PoolVault>,
    /// Serialises key index assignment.
    keygen_lock: tokio::sync::Mutex<()>,
    /// Presignatures held by signing sessions in flight (two sessions never use the same one).
    reserved_presignatures: std::sync::Mutex<std::collections::HashSet<tandem_custody::PresignatureId>>,
    /// Each vault's provider party, its aux info opened once.
    parties: std::sync::Mutex<std::collections::HashMap<tandem_custody::GroupId, Arc<tandem_custody::Party>>>,
}

/// Presignatures the provider keeps per key at most (each is a few KB and ~0.6 s of CPU).
pub const MAX_PRESIGNATURES_PER_KEY: usize = 8;

/// The default fee cap of one spend.
pub const DEFAULT_MAX_FEE: bitcoin::Amount = bitcoin::Amount::from_sat(100_000);

/// The policy string stored for a vault.
pub fn policy_name(p: Policy) -> &'static str {
    match p {
        Policy::TwoOfTwo => "2-of-2",
        Policy::TwoOfThree => "2-of-3",
    }
}

/// The group id of a vault made by the aux-info session `eid` (wallet and provider agree on it
/// without another message).
pub fn group_id_of(eid: ExecutionId) -> GroupId {
    let mut id = [0u8; 16];
    id.copy_from_slice(&eid.0[..16]);
    GroupId(id)
}

/// The script of a withdrawal's destination address, which must be of `network`.
pub fn destination_script(destination: &str, network: bitcoin::Network) -> anyhow::Result<bitcoin::ScriptBuf> {
    let address = destination
        .parse::<bitcoin::Address<bitcoin::address::NetworkUnchecked>>()
        .map_err(|e| anyhow!("destination {destination:?} does not parse: {e}"))?
        .require_network(network)
        .map_err(|e| anyhow!("destination {destination:?}: {e}"))?;
    Ok(address.script_pubkey())
}

/// Names of the provider's sealed records.
pub fn aux_record(group: GroupId) -> String {
    format!("vault-{group}-aux")
}
pub fn key_record(group: GroupId, index: u64) -> String {
    format!("vault-{group}-key-{index}")
}


/// What a session asks of the provider, once checked.
struct Checked {
    eid: ExecutionId,
    account: AccountId,
    policy: Policy,
    wallet: String,
    cosigner: Option<String>,
    members: Vec<SessionMember>,
    roles: Vec<PartyRole>,
}

impl VaultService {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        relay: Arc<Relay>,
        identity: Keypair,
        store: Store,
        (secrets, presignatures): (EncryptedShareStore, Arc<FilePresignatureStore>),
        prime_pool: Option<Arc<PrimePool>>,
        demo: bool,
        network: bitcoin::Network,
        ledger: Option<(SequencerHandle, Option<AssetId>)>,
    ) -> anyhow::Result<Arc<VaultService>> {
        let (ledger, btc) = match ledger {
            Some((l, btc)) => (Some(l), btc),
            None => (None, None),
        };
        let pool = Arc::new(PoolVault::load_or_create(&secrets, network)?);
        Ok(Arc::new(VaultService {
            relay,
            identity,
            store,
            secrets,
            presignatures,
            prime_pool,
            demo,
            network,
            ledger,
            btc,
            max_fee: DEFAULT_MAX_FEE,
            pool,
            keygen_lock: tokio::sync::Mutex::new(()),
            reserved_presignatures: Default::default(),
            parties: Default::default(),
        }))
    }

    fn config(&self) -> CustodyConfig {
        if self.demo {
            CustodyConfig::demo()
        } else {
            CustodyConfig::production()
        }
    }

    /// Subscribes to the relay now (so no session opened after this call is missed) and
    /// handles sessions on the current runtime until it stops.
    pub fn spawn(self: Arc<Self>) -> tokio::task::JoinHandle<()> {
        let mut opened = self.relay.subscribe_opened();
        tokio::spawn(async move {
            loop {
                match opened.recv().await {
                    Ok(spec) => {
                        let me = self.identity.x_only_public_key().0;
                        let names_me = spec.parties.iter().any(|p| p.role == Role::Provider && p.identity == me);
                        let joins = ["aux-info", "keygen", "presign"].contains(&spec.protocol.as_str());
                        if names_me && joins {
                            let svc = self.clone();
                            tokio::spawn(async move { svc.handle(spec).await });
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, "vault service missed session notifications");
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        })
    }

    async fn handle(self: Arc<Self>, spec: SessionSpec) {
        let eid = ExecutionId(spec.execution_id.0);
        let protocol = spec.protocol.clone();
        let result = match protocol.as_str() {
            "aux-info" => self.aux_info(spec).await,
            "presign" => self.presign(spec).await,
            _ => self.keygen(spec).await,
        };
        if let Err(e) = result {
            tracing::warn!(eid = %eid.to_hex(), %protocol, error = %format!("{e:#}"), "vault session failed");
            let me = self.identity.x_only_public_key().0;
            let reason: String = format!("provider: {e:#}").chars().take(200).collect();
            let _ = self.relay.abort(&me, spec_eid(eid), &reason);
        }
    }

    /// The checks before joining: an enrolled wallet, a registered co-signer, a known policy.
    async fn check(&self, spec: &SessionSpec) -> anyhow::Result<Checked> {
        let eid = ExecutionId(spec.execution_id.0);
        let wallet = spec.parties.iter().find(|p| p.role == Role::Wallet).context("the session has no wallet")?;
        let cosigner = spec.parties.iter().find(|p| p.role == Role::Cosigner);
        let policy = if cosigner.is_some() { Policy::TwoOfThree } else { Policy::TwoOfTwo };
        if spec.parties.len() != policy.n() as usize {
            bail!("the session's parties do not form a vault");
        }
        let wallet_hex = wallet.identity.to_string();
        let device = self.store.device_key(&wallet_hex).await?.context("the wallet is not an enrolled device key")?;
        let cosigner_hex = match cosigner {
            Some(c) => {
                let hex = c.identity.to_string();
                self.store.cosigner(&hex).await?.context("the co-signer is not registered")?;
                Some(hex)
            }
            None => None,
        };
        let members = spec.parties.iter().map(|p| SessionMember::new(party_role(p.role), p.identity)).collect();
        let roles = spec.parties.iter().map(|p| party_role(p.role)).collect();
        Ok(Checked { eid, account: device.account_id, policy, wallet: wallet_hex, cosigner: cosigner_hex, members, roles })
    }

    fn primes(&self) -> anyhow::Result<AuxPrimes> {
        if self.demo {
            return Ok(tandem_custody::primes::fixture_primes(0, PartyRole::Provider)?);
        }
        if let Some(p) = self.prime_pool.as_ref().map(|pool| pool.take()).transpose()?.flatten() {
            return Ok(p);
        }
        tracing::warn!("the prime pool is empty: generating safe primes for aux info now (slow)");
        Ok(AuxPrimes::generate())
    }

    async fn aux_info(self: &Arc<Self>, spec: SessionSpec) -> anyhow::Result<()> {
        let c = self.check(&spec).await?;
        let group = SignerGroup { id: group_id_of(c.eid), policy: c.policy };
        let group_hex = group.id.to_string();
        if self.store.vault(&group_hex).await?.is_some() || self.secrets.contains(&aux_record(group.id))? {
            bail!("vault {group_hex} exists already");
        }
        let svc = self.clone();
        let (eid, members, roles, config) = (c.eid, c.members.clone(), c.roles.clone(), self.config());
        let g = group.clone();
        let aux: PartyAuxInfo = run_on_thread(move || async move {
            let s2 = svc.clone();
            let primes = tokio::task::spawn_blocking(move || s2.primes()).await??;
            let mut party = Party::new(g, PartyRole::Provider, config)?;
            let link = svc.join(eid, &roles, &members).await?;
            party.generate_aux_info(eid, primes, link).await?;
            party.aux_info().cloned().ok_or_else(|| anyhow!("aux info missing after the session"))
        })
        .await?;
        self.secrets.put(&aux_record(group.id), &aux)?;
        self.store
            .insert_vault(&VaultRecord {
                group_id: group_hex.clone(),
                account_id: c.account,
                policy: policy_name(c.policy).into(),
                wallet_identity: c.wallet,
                cosigner_identity: c.cosigner,
                created_at: Timestamp(crate::node::now_millis()),
            })
            .await?;
        tracing::info!(group = %group_hex, account = c.account.0, policy = policy_name(c.policy), "vault created");
        Ok(())
    }

    /// A presignature for one of the wallet's own keys, with the wallet.
    async fn presign(self: &Arc<Self>, spec: SessionSpec) -> anyhow::Result<()> {
        let eid = ExecutionId(spec.execution_id.0);
        let intent: tandem_custody::PresignIntent =
            serde_json::from_str(spec.intent.as_deref().context("a presign session names its key in its intent")?)
                .context("the presign intent")?;
        let roles: Vec<PartyRole> = spec.parties.iter().map(|p| party_role(p.role)).collect();
        if roles != [PartyRole::Wallet, PartyRole::Provider] {
            bail!("presignatures are made by the wallet and the provider");
        }
        let wallet = spec.parties[0].identity.to_string();
        let device = self.store.device_key(&wallet).await?.context("the wallet is not an enrolled device key")?;
        let vault = self.store.vault(&intent.group.to_string()).await?.context("no such vault")?;
        if vault.wallet_identity != wallet || vault.account_id != device.account_id {
            bail!("vault {} is not this wallet's", vault.group_id);
        }
        let public_key: bitcoin::CompressedPublicKey = intent.public_key.parse().context("the intent's public key")?;
        let address = bitcoin::Address::p2wpkh(&public_key, self.network).to_string();
        let record = self
            .store
            .vault_addresses(&vault.group_id)
            .await?
            .into_iter()
            .find(|a| a.address == address)
            .context("the vault has no such key")?;
        let group = SignerGroup { id: intent.group, policy: policy_of(&vault)? };
        let key: VaultKey = self.secrets.get(&key_record(group.id, record.key_index))?;
        let stock = self.presignatures.available(&key.public_key)?.len();
        if stock >= MAX_PRESIGNATURES_PER_KEY {
            bail!("the provider holds {stock} presignatures for this key already");
        }
        let aux: PartyAuxInfo = self.secrets.get(&aux_record(group.id))?;
        let party = Party::with_aux_info(group, PartyRole::Provider, self.config(), aux)?;
        let members: Vec<SessionMember> =
            spec.parties.iter().map(|p| SessionMember::new(party_role(p.role), p.identity)).collect();
        let svc = self.clone();
        let id = run_on_thread(move || async move {
            let link = svc.join(eid, &roles, &members).await?;
            Ok(party.generate_presignature(&key, &roles, eid, link, &*svc.presignatures).await?)
        })
        .await?;
        tracing::info!(group = %vault.group_id, key = record.key_index, presignature = %id.to_hex(), "presignature made");
        Ok(())
    }

    async fn keygen(self: &Arc<Self>, spec: SessionSpec) -> anyhow::Result<()> {
        let c = self.check(&spec).await?;
        let policy = policy_name(c.policy);
        let vault = self
            .store
            .vaults_for(c.account)
            .await?
            .into_iter()
            .rev()
            .find(|v| v.policy == policy && v.wallet_identity == c.wallet && v.cosigner_identity == c.cosigner)
            .context("the wallet has no vault with these parties: run aux info first")?;
        let group = SignerGroup { id: group_of(&vault)?, policy: c.policy };
        let aux: PartyAuxInfo = self.secrets.get(&aux_record(group.id)).context("opening the vault's aux info")?;
        let party = Party::with_aux_info(group.clone(), PartyRole::Provider, self.config(), aux)?;
        let svc = self.clone();
        let (eid, members, roles) = (c.eid, c.members.clone(), c.roles.clone());
        let key: VaultKey = run_on_thread(move || async move {
            let link = svc.join(eid, &roles, &members).await?;
            Ok(party.keygen(eid, link).await?)
        })
        .await?;
        let address = key.address(self.network).to_string();
        let _guard = self.keygen_lock.lock().await;
        let index = self.store.vault_addresses(&vault.group_id).await?.len() as u64;
        self.secrets.put(&key_record(group.id, index), &key)?;
        self.store
            .insert_vault_address(&VaultAddressRecord {
                address: address.clone(),
                group_id: vault.group_id.clone(),
                key_index: index,
                created_at: Timestamp(crate::node::now_millis()),
            })
            .await?;
        tracing::info!(group = %vault.group_id, index, %address, "vault address created");
        Ok(())
    }

    async fn join(
        &self,
        eid: ExecutionId,
        roles: &[PartyRole],
        members: &[SessionMember],
    ) -> anyhow::Result<tandem_custody::SecureLink<InProcessRelayLink>> {
        let me = self.identity.x_only_public_key().0;
        let link = InProcessRelayLink::join(self.relay.clone(), me, eid, PartyRole::Provider, roles, JOIN)
            .await
            .map_err(|e| anyhow!("joining the session: {e}"))?;
        Ok(link.secure(&self.identity, members)?)
    }
}

/// The group id of a vault record.
pub fn group_of(vault: &VaultRecord) -> anyhow::Result<GroupId> {
    vault.group_id.parse().context("a vault's group id is not 16 bytes of hex")
}

/// The threshold policy of a vault record.
pub fn policy_of(vault: &VaultRecord) -> anyhow::Result<Policy> {
    match vault.policy.as_str() {
        "2-of-2" => Ok(Policy::TwoOfTwo),
        "2-of-3" => Ok(Policy::TwoOfThree),
        other => bail!("vault {} has an unknown policy {other:?}", vault.group_id),
    }
}

fn spec_eid(eid: ExecutionId) -> tandem_gateway::relay::Eid {
    tandem_gateway::relay::Eid(eid.0)
}

/// Runs a protocol on a thread of its own (its own runtime): the proofs are CPU-heavy and must
/// not hold the node's async workers.
async fn run_on_thread<T, F, Fut>(f: F) -> anyhow::Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new().name("vault-session".into()).spawn(move || {
        let result = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(f()));
        let _ = tx.send(result);
    })?;
    rx.await.map_err(|_| anyhow!("the session thread panicked"))?
}
