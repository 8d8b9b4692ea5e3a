//! The wallet's side of its vault: `tandem wallet address`.
//!
//! The first address makes the vault: an aux-info session with the provider (the wallet's own
//! safe primes, generated here, tens of seconds; or the fixture primes with `--demo-primes`,
//! only against a provider that says it is a demo). Every address is then one keygen session.
//! Sessions go through the provider's MPC relay, sealed end to end with the device key
//! (`crate::mpc_link`); the provider's vault service (`crate::provider`) joins them.
//!
//! Kept in the wallet file, sealed like the device key: the vault (`vault`: group, the
//! provider's identity key, this wallet's aux info) and one key share per address
//! (`vault-key-<index>`).
//!
//! The vault is 2-of-3 (wallet, provider, co-signer) when the provider has a registered
//! co-signer (`GET /v1/mpc/provider` lists them; `--cosigner` picks one), else 2-of-2; the
//! co-signer (`tandem cosigner run`) takes its part in the same sessions.

use std::time::Duration;

use anyhow::{bail, Context};
use bitcoin::secp256k1::XOnlyPublicKey;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tandem_custody::{
    AuxPrimes, CustodyConfig, ExecutionId, Party, PartyAuxInfo, PartyRole, Policy, PrimesOrigin, ProtocolKind,
    SessionMember, SignerGroup, VaultKey,
};

use super::cli::Session;
use crate::client::Client;
use crate::mpc_link::{open_session_http, HttpRelayLink};
use crate::provider::group_id_of;

/// Secret names and kinds in the wallet file.
pub const VAULT_NAME: &str = "vault";
pub const KIND_VAULT: &str = "vault-aux-info";
pub const KIND_VAULT_KEY: &str = "vault-key";
const KEY_PREFIX: &str = "vault-key-";

/// How long the wallet waits for the provider to join a session it opened.
const JOIN: Duration = Duration::from_secs(30);
/// How long the wallet waits for the provider to register what it just made.
const REGISTERED: Duration = Duration::from_secs(30);

/// The wallet's vault record (secret: holds the aux info).
#[derive(Serialize, Deserialize)]
pub struct WalletVault {
    pub group: SignerGroup,
    pub provider_identity: String,
    /// The co-signer of a 2-of-3 vault.
    #[serde(default)]
    pub cosigner_identity: Option<String>,
    /// The Bitcoin network of its addresses (`bitcoin`, `regtest`, ...), as the provider said.
    #[serde(default)]
    pub network: Option<String>,
    pub aux: PartyAuxInfo,
}

/// The wallet's vault (its aux info), if it made one.
pub fn wallet_vault(session: &Session) -> anyhow::Result<WalletVault> {
    if !session.file.secret_names().any(|(n, _)| n == VAULT_NAME) {
        bail!("this wallet has no vault yet: make one with `tandem wallet address`");
    }
    serde_json::from_slice(&session.secret(VAULT_NAME)?).context("reading the wallet's vault")
}

/// Every address key share the wallet holds, in creation order.
/// How many vault keys the wallet file holds (without opening them).
pub fn key_count(session: &Session) -> usize {
    session.file.secret_names().filter(|(n, k)| *k == KIND_VAULT_KEY && n.starts_with(KEY_PREFIX)).count()
}

pub fn wallet_keys(session: &Session) -> anyhow::Result<Vec<VaultKey>> {
    let names: Vec<String> = session
        .file
        .secret_names()
        .filter(|(n, k)| *k == KIND_VAULT_KEY && n.starts_with(KEY_PREFIX))
        .map(|(n, _)| n.to_owned())
        .collect();
    names
        .iter()
        .map(|n| serde_json::from_slice(&session.secret(n)?).with_context(|| format!("reading {n} of the wallet file")))
        .collect()
}

/// What the provider says about itself (`GET /v1/mpc/provider`).
pub struct ProviderInfo {
    pub identity: XOnlyPublicKey,
    pub demo: bool,
    /// The co-signers its operator registered (the wallet picks one for a 2-of-3 vault).
    pub cosigners: Vec<XOnlyPublicKey>,
    /// The provider's Bitcoin network: addresses are shown for it.
    pub network: bitcoin::Network,
}

pub async fn provider_info(session: &Session) -> anyhow::Result<ProviderInfo> {
    let reply = session.call("GET", "/v1/mpc/provider", None).await?;
    let identity = reply["identity"]
        .as_str()
        .context("the provider has no MPC identity (it runs without custody)")?
        .parse()
        .context("the provider's identity key is malformed")?;
    let network = reply["network"].as_str().context("the provider did not say its Bitcoin network")?;
    let network = bitcoin::Network::from_core_arg(network)
        .with_context(|| format!("the provider names an unknown Bitcoin network {network:?}"))?;
    let cosigners = reply["cosigners"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["identity_pubkey"].as_str().and_then(|k| k.parse().ok()))
        .collect();
    Ok(ProviderInfo { identity, demo: reply["demo"].as_bool().unwrap_or(false), cosigners, network })
}

/// A new deposit address.
pub struct NewAddress {
    pub address: String,
    pub group_id: String,
    pub key_index: u64,
    /// Whether this call made the vault first.
    pub vault_created: bool,
    pub two_of_three: bool,
}

pub fn config_for(origin: PrimesOrigin) -> CustodyConfig {
    if origin == PrimesOrigin::Fixture {
        CustodyConfig::demo()
    } else {
        CustodyConfig::production()
    }
}

/// Who the vault's third party is, when the wallet makes its vault.
#[derive(Clone, Debug, Default)]
pub enum CosignerChoice {
    /// The provider's first registered co-signer (2-of-3), or none if it has none (2-of-2).
    #[default]
    ProvidersFirst,
    /// This co-signer (2-of-3); it must be registered with the provider.
    Given(XOnlyPublicKey),
    /// No co-signer (2-of-2: wallet + provider).
    None,
}

/// Makes a new deposit address (and first the vault, if the wallet has none). `progress` gets
/// one line per step.
pub async fn new_address(
    session: &mut Session,
    demo_primes: bool,
    cosigner: CosignerChoice,
    progress: &(dyn Fn(&str) + Sync),
) -> anyhow::Result<NewAddress> {
    let provider = provider_info(session).await?;
    let mut vault_created = false;
    let vault: WalletVault = if session.file.secret_names().any(|(n, _)| n == VAULT_NAME) {
        let v: WalletVault = serde_json::from_slice(&session.secret(VAULT_NAME)?).context("reading the wallet's vault")?;
        if v.provider_identity != provider.identity.to_string() {
            bail!("the provider's identity key changed since the vault was made: refusing to run a session with it");
        }
        v
    } else {
        if demo_primes && !provider.demo {
            bail!("--demo-primes: the provider is not a demo; fixture primes are public and unsafe for real funds");
        }
        let primes = if demo_primes {
            tandem_custody::primes::fixture_primes(0, PartyRole::Wallet)?
        } else {
            progress("generating this wallet's safe primes (tens of seconds, once per vault)...");
            generate_primes().await?
        };
        let cosigner = match cosigner {
            CosignerChoice::ProvidersFirst => provider.cosigners.first().copied(),
            CosignerChoice::Given(k) => {
                if !provider.cosigners.contains(&k) {
                    bail!("co-signer {k} is not registered with this provider");
                }
                Some(k)
            }
            CosignerChoice::None => None,
        };
        progress(if cosigner.is_some() {
            "creating the 2-of-3 vault with the provider and the co-signer (aux info, about ten seconds)..."
        } else {
            "creating the 2-of-2 vault with the provider (aux info, about ten seconds)..."
        });
        let v = make_vault(session, &provider, cosigner, primes).await?;
        session.add_secret(VAULT_NAME, KIND_VAULT, &serde_json::to_vec(&v)?)?;
        wait_registered(session, &v.group.id.to_string(), None).await?;
        vault_created = true;
        v
    };
    progress("generating the address key with the provider (keygen)...");
    let key = keygen(session, &provider, &vault).await?;
    let index = session.file.secret_names().filter(|(n, _)| n.starts_with(KEY_PREFIX)).count() as u64;
    session.add_secret(&format!("{KEY_PREFIX}{index}"), KIND_VAULT_KEY, &serde_json::to_vec(&key)?)?;
    let address = key.address(provider.network).to_string();
    let group_id = vault.group.id.to_string();
    wait_registered(session, &group_id, Some(&address)).await?;
    let two_of_three = vault.cosigner_identity.is_some();
    Ok(NewAddress { address, group_id, key_index: index, vault_created, two_of_three })
}

/// Safe primes for this wallet's aux info, on a blocking thread, with a spinner.
async fn generate_primes() -> anyhow::Result<AuxPrimes> {
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} safe primes, elapsed {elapsed}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    let primes = tokio::task::spawn_blocking(AuxPrimes::generate).await?;
    bar.finish_and_clear();
    Ok(primes)
}

fn members(session: &Session, provider: &ProviderInfo, cosigner: Option<XOnlyPublicKey>) -> Vec<SessionMember> {
    let mut m = vec![
        SessionMember::new(PartyRole::Wallet, session.device().keypair().x_only_public_key().0),
        SessionMember::new(PartyRole::Provider, provider.identity),
    ];
    if let Some(c) = cosigner {
        m.push(SessionMember::new(PartyRole::CoSigner, c));
    }
    m
}

async fn open_and_join(
    session: &Session,
    provider: &ProviderInfo,
    cosigner: Option<XOnlyPublicKey>,
    eid: ExecutionId,
    protocol: ProtocolKind,
) -> anyhow::Result<tandem_custody::SecureLink<HttpRelayLink>> {
    let base = session.file.provider_url.clone();
    let members = members(session, provider, cosigner);
    let mut client = Client::connect(&base).await.with_context(|| format!("cannot reach the provider at {base}"))?;
    open_session_http(&mut client, session.auth(), eid, protocol, &members, None).await?;
    let roles = if cosigner.is_some() { Policy::TwoOfThree.roles() } else { Policy::TwoOfTwo.roles() };
    let link = HttpRelayLink::connect(&base, session.auth().clone(), eid, PartyRole::Wallet, roles, JOIN).await?;
    Ok(link.secure(session.device().keypair(), &members)?)
}

async fn make_vault(
    session: &Session,
    provider: &ProviderInfo,
    cosigner: Option<XOnlyPublicKey>,
    primes: AuxPrimes,
) -> anyhow::Result<WalletVault> {
    let eid = ExecutionId::random();
    let policy = if cosigner.is_some() { Policy::TwoOfThree } else { Policy::TwoOfTwo };
    let group = SignerGroup { id: group_id_of(eid), policy };
    let mut party = Party::new(group.clone(), PartyRole::Wallet, config_for(primes.origin()))?;
    let link = open_and_join(session, provider, cosigner, eid, ProtocolKind::AuxInfo).await?;
    party.generate_aux_info(eid, primes, link).await.context("aux info with the vault's parties")?;
    let aux = party.aux_info().cloned().context("aux info missing after the session")?;
    Ok(WalletVault {
        group,
        provider_identity: provider.identity.to_string(),
        cosigner_identity: cosigner.map(|c| c.to_string()),
        network: Some(provider.network.to_core_arg().to_owned()),
        aux,
    })
}

async fn keygen(session: &Session, provider: &ProviderInfo, vault: &WalletVault) -> anyhow::Result<VaultKey> {
    let config = config_for(vault.aux.primes_origin);
    let party = Party::with_aux_info(vault.group.clone(), PartyRole::Wallet, config, vault.aux.clone())?;
    let eid = ExecutionId::random();
    let cosigner = vault.cosigner_identity.as_deref().map(str::parse).transpose().context("the vault's co-signer key")?;
    let link = open_and_join(session, provider, cosigner, eid, ProtocolKind::Keygen).await?;
    party.keygen(eid, link).await.context("keygen with the vault's parties")
}

/// Waits until `GET /v1/vaults` shows the vault (and the address): the provider registers
/// them once its side is sealed, just after the session ends.
async fn wait_registered(session: &Session, group_id: &str, address: Option<&str>) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + REGISTERED;
    loop {
        let reply = session.call("GET", "/v1/vaults", None).await?;
        let vault = reply["vaults"].as_array().into_iter().flatten().find(|v| v["group_id"] == group_id);
        let found = match (vault, address) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some(v), Some(a)) => v["addresses"].as_array().into_iter().flatten().any(|x| x["address"] == a),
        };
        if found {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("the provider did not register {} in time", address.unwrap_or(group_id));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The summary `tandem wallet address` prints.
pub fn address_text(a: &NewAddress) -> String {
    let mut s = String::new();
    if a.vault_created {
        let policy = if a.two_of_three { "2-of-3: wallet + provider + co-signer" } else { "2-of-2: wallet + provider" };
        s.push_str(&format!("Vault created: {} ({policy})\n", a.group_id));
    }
    s.push_str(&format!("Deposit address #{}: {}", a.key_index, a.address));
    s
}

/// The JSON `tandem wallet address --json` prints.
pub fn address_json(a: &NewAddress) -> Value {
    serde_json::json!({
        "address": a.address, "group_id": a.group_id, "key_index": a.key_index, "vault_created": a.vault_created,
        "policy": if a.two_of_three { "2-of-3" } else { "2-of-2" },
    })
}
