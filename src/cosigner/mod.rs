//! The co-signer (`tandem cosigner`): the third, independent party of a 2-of-3 vault.
//!
//! It runs apart from the provider (another operator, another machine), with its own identity
//! key and master key, and talks to the provider only through the MPC relay over HTTP, signing
//! every request with its identity (`X-Tandem-Cosigner`). The provider's operator registers
//! that identity (`POST /v1/operator/cosigners`); wallets then name it in their vaults.
//!
//! What it does, for sessions that name it ([`Cosigner::run`] long-polls `GET /v1/mpc/sessions`):
//! - `aux-info` / `keygen` of a 2-of-3 vault with the pinned provider: it takes part, seals
//!   its aux info and key shares under its master key (`<data>/secrets`), and keeps a public
//!   index of its vaults (`<data>/vaults.json`: group, wallet identity, key count);
//! - `sign`: [`cosigner_check`] with its own facts. It signs with the wallet only a recovery
//!   once the provider has been silent for `provider_timeout`, and with the provider only forced
//!   settlement of a late seller: what leaves the vault must be proven by the window's evidence
//!   (its fills and withdrawals, each backed by a request the wallet signed, checked with the
//!   wallet's key: [`crate::obligations::prove`]), paid to one creditor (the provider's pool),
//!   only `settlement_deadline` after the window's last signed act, and never for a window it
//!   already force-settled. Every refusal aborts the session with `refused <code>: <detail>`.
//!
//! The provider's identity is pinned at the first start (`<data>/provider.json`); a provider
//! that later shows another key is refused.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use bitcoin::secp256k1::XOnlyPublicKey;
use bitcoin::{Amount, ScriptBuf};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tandem_custody::policy::{cosigner_check, CoSignerFacts, Payment, RefusalCode, SpendRequest};
use tandem_custody::{
    AuxPrimes, CustodyConfig, EncryptedShareStore, ExecutionId, Keyring, MasterKey, Party, PartyAuxInfo, PartyRole,
    Policy, Refusal, SessionMember, SignerGroup, SpendIntent, VaultKey,
};

use crate::client::{Auth, Client};
use crate::mpc_link::{party_role, HttpRelayLink, InProcessRelayLink};

pub mod probes;
pub mod recovery;

/// Which relay a session runs on.
#[derive(Clone)]
enum Via {
    /// The provider's, over HTTP.
    Provider,
    /// The co-signer's own recovery relay, in process.
    Own(Arc<tandem_gateway::Relay>),
}
use crate::provider::group_id_of;
use crate::wallet::device::DeviceKey;

const IDENTITY: &str = "cosigner-identity";
const POLL: Duration = Duration::from_secs(10);
const JOIN: Duration = Duration::from_secs(30);

/// The co-signer's files.
pub struct CosignerDir(pub PathBuf);

impl CosignerDir {
    fn secrets(&self) -> PathBuf {
        self.0.join("secrets")
    }
    fn vaults(&self) -> PathBuf {
        self.0.join("vaults.json")
    }
    fn provider(&self) -> PathBuf {
        self.0.join("provider.json")
    }
}

/// The co-signer's identity key: made on first use, sealed under the master key.
pub fn identity(dir: &Path, master_key: &MasterKey) -> anyhow::Result<Arc<DeviceKey>> {
    let secrets = EncryptedShareStore::open(CosignerDir(dir.to_owned()).secrets(), Keyring::new(master_key.clone()))?;
    if secrets.contains(IDENTITY)? {
        let hex = zeroize::Zeroizing::new(secrets.get::<String>(IDENTITY).context("opening the identity (wrong master key?)")?);
        let mut bytes = zeroize::Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(hex.as_str(), &mut bytes[..]).context("the identity record is not 32 bytes of hex")?;
        return Ok(Arc::new(DeviceKey::from_secret_bytes(&bytes[..])?));
    }
    let key = DeviceKey::generate();
    secrets.put(IDENTITY, &*zeroize::Zeroizing::new(hex::encode(&key.secret_bytes()[..])))?;
    tracing::info!(identity = %key.pubkey_hex(), "co-signer identity created");
    Ok(Arc::new(key))
}

/// One vault the co-signer is a party of (public facts only).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct CosignerVault {
    pub group: SignerGroup,
    pub wallet_identity: String,
    pub keys: u64,
    /// The forced settlements it signed for this vault: the evidence of each is never used again.
    #[serde(default)]
    pub forced: Vec<ForcedRecord>,
}

/// A forced settlement the co-signer signed (some input of it), and the window it proved.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ForcedRecord {
    pub batch: u64,
    pub after_seq: u64,
    pub through_seq: u64,
}

#[derive(Default, Serialize, Deserialize)]
struct VaultIndex {
    vaults: Vec<CosignerVault>,
}

pub struct CosignerOptions {
    pub provider_url: String,
    /// Accept the public fixture primes for aux info (only with a demo provider).
    pub demo: bool,
    /// How long the provider must be silent before a recovery without it.
    pub provider_timeout: Duration,
    pub max_fee: Amount,
    /// How long after the user's last signed order or withdrawal of a window the provider may
    /// force its settlement.
    pub settlement_deadline: Duration,
}

pub struct Cosigner {
    dir: CosignerDir,
    identity: Arc<DeviceKey>,
    secrets: EncryptedShareStore,
    opts: CosignerOptions,
    provider: XOnlyPublicKey,
    network: bitcoin::Network,
    /// Serialises changes of the vault index.
    index_lock: tokio::sync::Mutex<()>,
    /// When the provider last failed to answer, if it is failing now (unix seconds).
    silent_since: std::sync::Mutex<Option<u64>>,
}

impl Cosigner {
    /// Opens the co-signer's data dir, reaches the provider and pins its identity.
    pub async fn open(dir: &Path, master_key: &MasterKey, opts: CosignerOptions) -> anyhow::Result<Arc<Cosigner>> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let identity = identity(dir, master_key)?;
        let secrets = EncryptedShareStore::open(CosignerDir(dir.to_owned()).secrets(), Keyring::new(master_key.clone()))?;
        let dirs = CosignerDir(dir.to_owned());
        let mut c = Client::connect(&opts.provider_url)
            .await
            .with_context(|| format!("cannot reach the provider at {}", opts.provider_url))?;
        let (status, info) = c.send("GET", "/v1/mpc/provider", None, &Auth::None).await?;
        if status != 200 {
            bail!("the provider answered {status} to GET /v1/mpc/provider: {info}");
        }
        let provider: XOnlyPublicKey =
            info["identity"].as_str().context("the provider runs without custody")?.parse().context("provider identity")?;
        let network = bitcoin::Network::from_core_arg(info["network"].as_str().unwrap_or_default())
            .context("the provider names no known Bitcoin network")?;
        if opts.demo && info["demo"] != true {
            bail!("--demo: the provider is not a demo; fixture primes are public and unsafe for real funds");
        }
        match std::fs::read(dirs.provider()) {
            Ok(bytes) => {
                let pinned: Value = serde_json::from_slice(&bytes).context("reading the pinned provider")?;
                if pinned["identity"] != provider.to_string() {
                    bail!("the provider's identity changed since it was pinned in {}: refusing it", dirs.provider().display());
                }
            }
            Err(_) => {
                let pinned = json!({"identity": provider.to_string(), "url": opts.provider_url});
                tandem_custody::fsutil::write_atomic(&dirs.provider(), &serde_json::to_vec_pretty(&pinned)?)?;
            }
        }
        Ok(Arc::new(Cosigner {
            dir: dirs,
            identity,
            secrets,
            opts,
            provider,
            network,
            index_lock: tokio::sync::Mutex::new(()),
            silent_since: std::sync::Mutex::new(None),
        }))
    }

    pub fn identity(&self) -> &DeviceKey {
        &self.identity
    }

    fn auth(&self) -> Auth {
        Auth::Cosigner(self.identity.clone())
    }

    /// The vaults it is a party of.
    pub fn vaults(&self) -> anyhow::Result<Vec<CosignerVault>> {
        Ok(self.index()?.vaults)
    }

    fn index(&self) -> anyhow::Result<VaultIndex> {
        match std::fs::read(self.dir.vaults()) {
            Ok(b) => serde_json::from_slice(&b).with_context(|| format!("reading {}", self.dir.vaults().display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(VaultIndex::default()),
            Err(e) => Err(e).with_context(|| format!("reading {}", self.dir.vaults().display())),
        }
    }

    fn save_index(&self, index: &VaultIndex) -> anyhow::Result<()> {
        Ok(tandem_custody::fsutil::write_atomic(&self.dir.vaults(), &serde_json::to_vec_pretty(index)?)?)
    }

    fn config(&self) -> CustodyConfig {
        if self.opts.demo {
            CustodyConfig::demo()
        } else {
            CustodyConfig::production()
        }
    }

    /// Answers sessions until the task is dropped. Network errors are retried; they also
    /// start the provider's silence clock.
    pub async fn run(self: Arc<Self>) {
        let mut cursor = 0u64;
        loop {
            match self.poll(cursor).await {
                Ok((sessions, last)) => {
                    *self.silent_since.lock().unwrap_or_else(|p| p.into_inner()) = None;
                    cursor = last;
                    for s in sessions {
                        let me = self.clone();
                        tokio::spawn(async move { me.handle(s).await });
                    }
                }
                Err(e) => {
                    self.silent_since
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .get_or_insert(crate::node::now_millis() / 1000);
                    tracing::warn!(error = %format!("{e:#}"), "co-signer cannot reach the provider; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    async fn poll(&self, after: u64) -> anyhow::Result<(Vec<Value>, u64)> {
        let mut c = Client::connect(&self.opts.provider_url).await?;
        let path = format!("/v1/mpc/sessions?after={after}&wait_ms={}", POLL.as_millis());
        let (status, reply) = c.send("GET", &path, None, &self.auth()).await?;
        if status != 200 {
            bail!("listing sessions: {status} {reply}");
        }
        let sessions = reply["sessions"].as_array().cloned().unwrap_or_default();
        Ok((sessions, reply["last_seq"].as_u64().unwrap_or(after)))
    }

    async fn handle(self: Arc<Self>, s: Value) {
        let eid = s["execution_id"].as_str().and_then(ExecutionId::from_hex);
        let protocol = s["protocol"].as_str().unwrap_or_default().to_owned();
        let Some(eid) = eid else { return };
        let result = match protocol.as_str() {
            "aux-info" => self.aux_info(eid, &s).await,
            "keygen" => self.keygen(eid, &s).await,
            "sign" => self.sign(eid, &s, &Via::Provider).await,
            _ => Ok(()),
        };
        self.finish(eid, &protocol, &s, result, &Via::Provider).await;
    }

    /// A session opened on the co-signer's own recovery relay (by a wallet it knows).
    async fn handle_recovery(self: Arc<Self>, relay: Arc<tandem_gateway::Relay>, spec: tandem_gateway::relay::SessionSpec) {
        let eid = ExecutionId(spec.execution_id.0);
        let s = json!({
            "execution_id": eid.to_hex(),
            "protocol": spec.protocol,
            "parties": spec.parties.iter().map(|p| json!({"role": p.role, "identity_pubkey": p.identity.to_string()})).collect::<Vec<_>>(),
            "intent": spec.intent.as_deref().and_then(|i| serde_json::from_str::<Value>(i).ok()),
        });
        let via = Via::Own(relay);
        let result = if spec.protocol == "sign" {
            self.sign(eid, &s, &via).await
        } else {
            Err(anyhow::anyhow!("the recovery relay only signs"))
        };
        self.finish(eid, &spec.protocol, &s, result, &via).await;
    }

    async fn finish(&self, eid: ExecutionId, protocol: &str, s: &Value, result: anyhow::Result<()>, via: &Via) {
        if let Err(e) = result {
            let reason = match e.downcast_ref::<Refusal>() {
                Some(r) => {
                    r.log(serde_json::from_value(s["intent"]["purpose"].clone()).unwrap_or(tandem_custody::SpendPurpose::Recovery));
                    r.abort_reason()
                }
                None => {
                    tracing::warn!(eid = %eid.to_hex(), %protocol, error = %format!("{e:#}"), "co-signer session failed");
                    format!("cosigner: {e:#}").chars().take(200).collect()
                }
            };
            match via {
                Via::Provider => self.abort(eid, &reason).await,
                Via::Own(relay) => {
                    let me = self.identity.keypair().x_only_public_key().0;
                    let _ = relay.abort(&me, tandem_gateway::relay::Eid(eid.0), &reason);
                }
            }
        }
    }

    async fn abort(&self, eid: ExecutionId, reason: &str) {
        if let Ok(mut c) = Client::connect(&self.opts.provider_url).await {
            let body = json!({ "reason": reason });
            let _ = c.send("POST", &format!("/v1/mpc/sessions/{}/abort", eid.to_hex()), Some(&body), &self.auth()).await;
        }
    }

    /// The session's members, checked: this co-signer as co-signer, the pinned provider.
    fn members(&self, s: &Value) -> anyhow::Result<Vec<SessionMember>> {
        let mut members = Vec::new();
        for p in s["parties"].as_array().context("the session lists no parties")? {
            let role: tandem_gateway::relay::Role = serde_json::from_value(p["role"].clone())?;
            let identity: XOnlyPublicKey = p["identity_pubkey"].as_str().context("a party without identity")?.parse()?;
            members.push(SessionMember::new(party_role(role), identity));
        }
        members.sort_by_key(|m| m.role);
        let me = self.identity.keypair().x_only_public_key().0;
        if !members.iter().any(|m| m.role == PartyRole::CoSigner && m.identity == me) {
            bail!("the session does not name this co-signer as its co-signer");
        }
        if members.iter().any(|m| m.role == PartyRole::Provider && m.identity != self.provider) {
            bail!("the session's provider is not the pinned provider");
        }
        Ok(members)
    }

    async fn link(&self, eid: ExecutionId, members: &[SessionMember]) -> anyhow::Result<tandem_custody::SecureLink<HttpRelayLink>> {
        let roles: Vec<PartyRole> = members.iter().map(|m| m.role).collect();
        let link = HttpRelayLink::connect(&self.opts.provider_url, self.auth(), eid, PartyRole::CoSigner, &roles, JOIN).await?;
        Ok(link.secure(self.identity.keypair(), members)?)
    }

    fn wallet_of(members: &[SessionMember]) -> anyhow::Result<String> {
        Ok(members.iter().find(|m| m.role == PartyRole::Wallet).context("the session has no wallet")?.identity.to_string())
    }

    async fn aux_info(&self, eid: ExecutionId, s: &Value) -> anyhow::Result<()> {
        let members = self.members(s)?;
        if members.len() != 3 {
            bail!("a co-signer is only in 2-of-3 vaults");
        }
        let group = SignerGroup { id: group_id_of(eid), policy: Policy::TwoOfThree };
        let wallet = Self::wallet_of(&members)?;
        if self.index()?.vaults.iter().any(|v| v.group.id == group.id) {
            bail!("vault {} exists already", group.id);
        }
        let primes = if self.opts.demo {
            tandem_custody::primes::fixture_primes(0, PartyRole::CoSigner)?
        } else {
            tokio::task::spawn_blocking(AuxPrimes::generate).await?
        };
        let mut party = Party::new(group.clone(), PartyRole::CoSigner, self.config())?;
        let link = self.link(eid, &members).await?;
        party.generate_aux_info(eid, primes, link).await?;
        let aux = party.aux_info().cloned().context("aux info missing after the session")?;
        self.secrets.put(&format!("vault-{}-aux", group.id), &aux)?;
        let _guard = self.index_lock.lock().await;
        let mut index = self.index()?;
        index.vaults.push(CosignerVault { group: group.clone(), wallet_identity: wallet, keys: 0, forced: Vec::new() });
        self.save_index(&index)?;
        tracing::info!(group = %group.id, "co-signer joined a vault");
        Ok(())
    }

    async fn keygen(&self, eid: ExecutionId, s: &Value) -> anyhow::Result<()> {
        let members = self.members(s)?;
        let wallet = Self::wallet_of(&members)?;
        // The wallet may start keygen the moment its side of aux info ends, a little before this
        // co-signer has sealed its own: give that a moment.
        let deadline = tokio::time::Instant::now() + JOIN;
        let vault = loop {
            if let Some(v) = self.index()?.vaults.into_iter().rev().find(|v| v.wallet_identity == wallet) {
                break v;
            }
            if tokio::time::Instant::now() >= deadline {
                bail!("no vault of this wallet with this co-signer: run aux info first");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let aux: PartyAuxInfo = self.secrets.get(&format!("vault-{}-aux", vault.group.id))?;
        let party = Party::with_aux_info(vault.group.clone(), PartyRole::CoSigner, self.config(), aux)?;
        let link = self.link(eid, &members).await?;
        let key: VaultKey = party.keygen(eid, link).await?;
        let _guard = self.index_lock.lock().await;
        let mut index = self.index()?;
        let entry = index.vaults.iter_mut().find(|v| v.group.id == vault.group.id).context("the vault left the index")?;
        self.secrets.put(&format!("vault-{}-key-{}", vault.group.id, entry.keys), &key)?;
        entry.keys += 1;
        self.save_index(&index)?;
        tracing::info!(group = %vault.group.id, address = %key.address(self.network), "co-signer key made");
        Ok(())
    }

    /// The keys of one vault.
    /// What a forced settlement of `batch` may pay out of `vault`, proven by the user's own
    /// signatures: the window's evidence (read from the provider) checked against the wallet's
    /// key, never a window this co-signer already force-settled for another batch. Answers the
    /// one payment the transaction makes (to the provider's pool) if what leaves the vault is at
    /// most what the evidence proves plus the fee cap, the deadline (the newest signed act of the
    /// window plus `settlement_deadline`, unix seconds) and what to record once it signs.
    async fn forced_obligation(
        &self,
        batch: u64,
        vault: &CosignerVault,
        psbt: &bitcoin::Psbt,
        user_scripts: &HashSet<ScriptBuf>,
    ) -> anyhow::Result<(Payment, u64, ForcedRecord)> {
        let me = PartyRole::CoSigner;
        let refuse = |code, detail: String| anyhow::Error::new(Refusal::new(me, code, detail));
        let mut c = Client::connect(&self.opts.provider_url).await?;
        let path = format!("/v1/cosigner/batches/{batch}?group={}", vault.group.id);
        let (status, reply) = c.send("GET", &path, None, &self.auth()).await?;
        if status != 200 {
            return Err(refuse(RefusalCode::ObligationUnpaid, format!("no evidence for batch {batch}: {status} {reply}")));
        }
        let evidence: tandem_gateway::evidence::Evidence = serde_json::from_value(reply["evidence"].clone())
            .map_err(|e| refuse(RefusalCode::ObligationUnpaid, format!("batch {batch}: unreadable evidence: {e}")))?;
        let wallet: XOnlyPublicKey = vault.wallet_identity.parse().context("the vault's wallet identity")?;
        let proven = crate::obligations::prove(&evidence, &wallet)
            .map_err(|e| refuse(RefusalCode::ObligationUnpaid, format!("batch {batch}: {e}")))?;
        if let Some(used) = vault.forced.iter().find(|f| f.batch != batch && evidence.after_seq < f.through_seq) {
            return Err(refuse(
                RefusalCode::DoublePay,
                format!("batch {batch}'s window starts at {} but batch {} already settled through {}", evidence.after_seq, used.batch, used.through_seq),
            ));
        }
        let tx = &psbt.unsigned_tx;
        let spent: u64 = psbt.inputs.iter().filter_map(|i| i.witness_utxo.as_ref()).map(|u| u.value.to_sat()).sum();
        let back: u64 = tx.output.iter().filter(|o| user_scripts.contains(&o.script_pubkey)).map(|o| o.value.to_sat()).sum();
        let leaving = spent.saturating_sub(back) as i64;
        let allowed = proven.net_out_sat.saturating_add(self.opts.max_fee.to_sat() as i64);
        if leaving > allowed {
            return Err(refuse(
                RefusalCode::ObligationUnpaid,
                format!("batch {batch} takes {leaving} sat from the vault; the user's signed orders and withdrawals prove {} sat", proven.net_out_sat),
            ));
        }
        let paid: Vec<&bitcoin::TxOut> = tx.output.iter().filter(|o| !user_scripts.contains(&o.script_pubkey)).collect();
        let [to] = paid.as_slice() else {
            return Err(refuse(RefusalCode::UnexpectedOutput, format!("a forced settlement pays one creditor, not {}", paid.len())));
        };
        let payment = Payment { script_pubkey: to.script_pubkey.clone(), amount: to.value };
        let deadline = proven.latest_signed_ms / 1000 + self.opts.settlement_deadline.as_secs();
        Ok((payment, deadline, ForcedRecord { batch, after_seq: evidence.after_seq, through_seq: evidence.through_seq }))
    }

    /// Notes a forced settlement it signs (before it signs: a crash must not let the same window
    /// be forced twice).
    async fn record_forced(&self, group: &SignerGroup, record: ForcedRecord) -> anyhow::Result<()> {
        let _guard = self.index_lock.lock().await;
        let mut index = self.index()?;
        let vault = index.vaults.iter_mut().find(|v| v.group.id == group.id).context("the vault left the index")?;
        if !vault.forced.contains(&record) {
            vault.forced.push(record);
            self.save_index(&index)?;
        }
        Ok(())
    }

    fn keys_of(&self, vault: &CosignerVault) -> anyhow::Result<Vec<VaultKey>> {
        (0..vault.keys).map(|i| Ok(self.secrets.get(&format!("vault-{}-key-{i}", vault.group.id))?)).collect()
    }

    async fn sign(&self, eid: ExecutionId, s: &Value, via: &Via) -> anyhow::Result<()> {
        let me = PartyRole::CoSigner;
        let refuse = |code, detail: String| anyhow::Error::new(Refusal::new(me, code, detail));
        let intent = SpendIntent::from_json(&s["intent"].to_string()).map_err(|e| refuse(RefusalCode::BadIntent, e.to_string()))?;
        let members = self.members(s).map_err(|e| refuse(RefusalCode::WrongSigners, format!("{e:#}")))?;
        // The co-signer signs interactively (it makes no presignatures): one input a session.
        let [signing] = intent.inputs.as_slice() else {
            return Err(refuse(RefusalCode::BadIntent, format!("{} inputs in one session; the co-signer signs one", intent.inputs.len())));
        };
        let vault = self
            .index()?
            .vaults
            .into_iter()
            .find(|v| v.group.id == signing.group)
            .ok_or_else(|| refuse(RefusalCode::UnknownKey, format!("no vault {}", signing.group)))?;
        let keys = self.keys_of(&vault)?;
        let key = keys
            .iter()
            .find(|k| {
                intent.psbt.inputs.get(signing.index as usize).and_then(|i| i.witness_utxo.as_ref()).map(|u| &u.script_pubkey)
                    == Some(&k.script_pubkey())
            })
            .cloned()
            .ok_or_else(|| refuse(RefusalCode::UnknownKey, "the input spends none of this vault's keys".into()))?;
        let input = intent.check_input(me, signing, &key)?;
        let user_scripts: HashSet<ScriptBuf> = keys.iter().map(|k| k.script_pubkey()).collect();
        // A recovery pays the one output that is not the vault's: the address the user named in
        // the session it opened with its device key.
        let named: Vec<&ScriptBuf> = intent
            .psbt
            .unsigned_tx
            .output
            .iter()
            .map(|o| &o.script_pubkey)
            .filter(|s| !user_scripts.contains(*s))
            .collect();
        let destination = (named.len() == 1).then(|| named[0].clone());
        let (proven_obligations, settlement_deadline, forced) = match intent.purpose {
            tandem_custody::SpendPurpose::ForcedSettlement { batch } => {
                let (payment, deadline, record) = self.forced_obligation(batch, &vault, &intent.psbt, &user_scripts).await?;
                (vec![payment], Some(deadline), Some(record))
            }
            _ => (Vec::new(), None, None),
        };
        let silent_since = *self.silent_since.lock().unwrap_or_else(|p| p.into_inner());
        let facts = CoSignerFacts {
            now: crate::node::now_millis() / 1000,
            user_scripts: &user_scripts,
            provider_silent_since: silent_since,
            provider_timeout_secs: self.opts.provider_timeout.as_secs(),
            recovery_destination: destination.as_ref(),
            // Until the co-signer follows the ledger's obligations (settlement), a recovery may
            // take only what the vault spends; forced settlement has no proven obligations.
            recoverable: intent.psbt.inputs.iter().filter_map(|i| i.witness_utxo.as_ref()).map(|u| u.value).sum(),
            settlement_deadline,
            proven_obligations: &proven_obligations,
            max_fee: self.opts.max_fee,
        };
        cosigner_check(&SpendRequest { psbt: &intent.psbt, purpose: intent.purpose, signers: &intent.signers }, &facts)?;
        if let Some(record) = forced {
            self.record_forced(&vault.group, record).await?;
        }
        let party = Party::with_aux_info(
            vault.group.clone(),
            me,
            self.config(),
            self.secrets.get(&format!("vault-{}-aux", vault.group.id))?,
        )?;
        match via {
            Via::Provider => {
                let link = self.link(eid, &members).await?;
                party.sign_input(&key, &intent.signers, eid, &intent.psbt, input, link).await?;
            }
            Via::Own(relay) => {
                let roles: Vec<PartyRole> = members.iter().map(|m| m.role).collect();
                let me = self.identity.keypair().x_only_public_key().0;
                let link = InProcessRelayLink::join(relay.clone(), me, eid, PartyRole::CoSigner, &roles, JOIN)
                    .await
                    .map_err(|e| anyhow::anyhow!("joining the recovery session: {e}"))?
                    .secure(self.identity.keypair(), &members)?;
                party.sign_input(&key, &intent.signers, eid, &intent.psbt, input, link).await?;
            }
        }
        tracing::info!(eid = %eid.to_hex(), purpose = ?intent.purpose, "co-signer signed");
        Ok(())
    }
}
