//! `tandem wallet recover`: leave without the provider. With the vault's co-signer alone (the
//! 2-of-3 wallet + co-signer pair), sweep every output of the vault to an address the user
//! names.
//!
//! The wallet needs nothing from the provider: it finds its outputs on a Bitcoin node the user
//! trusts (`scantxoutset` over its own keys' scripts), builds the sweep with the node's fee
//! estimate, and signs each input with the co-signer through the co-signer's own recovery relay
//! (`tandem cosigner run --recovery-bind`). The co-signer checks the sweep under its policy
//! (only to the named address, only once the provider has been silent long enough) and refuses
//! otherwise. The finished transaction is broadcast through the same node.

use std::time::Duration;

use anyhow::{bail, Context};
use bitcoin::absolute::LockTime;
use bitcoin::transaction::Version;
use bitcoin::{Address, Amount, FeeRate, Psbt, ScriptBuf, Sequence, Transaction, TxIn, TxOut, Witness};
use serde_json::Value;
use tandem_custody::{ExecutionId, IntentInput, Party, PartyRole, SessionMember, SpendIntent, SpendPurpose, VaultKey};
use tandem_settlement::{Bitcoind, BitcoindAuth, BitcoindConfig, Chain};

use super::cli::Session;
use super::vault::{config_for, wallet_keys, wallet_vault};
use crate::client::{Auth, Client};
use crate::mpc_link::{open_session_http, HttpRelayLink, RelayRefused};

const JOIN: Duration = Duration::from_secs(30);

pub struct RecoverOptions {
    /// Where the funds go.
    pub to: String,
    /// The co-signer's recovery relay.
    pub cosigner_url: String,
    /// A Bitcoin node's JSON-RPC, with its credentials.
    pub bitcoind_url: String,
    pub rpc_user: String,
    pub rpc_password: String,
    /// The network, for vaults that did not record it.
    pub network: Option<bitcoin::Network>,
    /// Fee rate; else the node's estimate for 6 blocks.
    pub fee_rate: Option<FeeRate>,
}

pub struct Recovered {
    pub txid: bitcoin::Txid,
    pub inputs: usize,
    pub amount: Amount,
    pub fee: Amount,
}

/// Weight of a P2WPKH witness with a worst-case (72-byte) signature and a compressed key.
fn p2wpkh_witness() -> Witness {
    let mut w = Witness::new();
    w.push([0u8; 72]);
    w.push([0u8; 33]);
    w
}

pub async fn recover(session: &Session, opts: &RecoverOptions) -> anyhow::Result<Recovered> {
    let vault = wallet_vault(session)?;
    let cosigner: bitcoin::secp256k1::XOnlyPublicKey = vault
        .cosigner_identity
        .as_deref()
        .context("this vault is 2-of-2 (wallet + provider): it has no co-signer to recover with")?
        .parse()
        .context("the vault's co-signer key")?;
    let network = match (&vault.network, opts.network) {
        (_, Some(n)) => n,
        (Some(n), None) => bitcoin::Network::from_core_arg(n).context("the vault's network")?,
        (None, None) => bail!("this vault did not record its network: give --network"),
    };
    let destination = opts
        .to
        .trim()
        .parse::<Address<bitcoin::address::NetworkUnchecked>>()
        .with_context(|| format!("{} is not a Bitcoin address", opts.to))?
        .require_network(network)
        .with_context(|| format!("{} is not a {network} address", opts.to))?;

    // The co-signer we reach must be the vault's.
    let base = opts.cosigner_url.trim_end_matches('/').to_owned();
    let mut c = Client::connect(&base).await.with_context(|| format!("cannot reach the co-signer at {base}"))?;
    let (status, info) = c.send("GET", "/v1/cosigner", None, &Auth::None).await?;
    if status != 200 || info["identity"] != cosigner.to_string() {
        bail!("the service at {base} is not this vault's co-signer ({cosigner}): {status} {info}");
    }

    let chain = Bitcoind::connect(BitcoindConfig::new(
        opts.bitcoind_url.clone(),
        BitcoindAuth::UserPass { user: opts.rpc_user.clone(), password: opts.rpc_password.clone() },
        network,
    ))
    .await
    .context("connecting to the Bitcoin node")?;
    let keys = wallet_keys(session)?;
    let scripts: Vec<ScriptBuf> = keys.iter().map(|k| k.script_pubkey()).collect();
    let utxos = chain.utxos(&scripts).await.context("finding the vault's outputs")?;
    if utxos.is_empty() {
        bail!("the vault has no confirmed outputs on this node");
    }
    let fee_rate = match opts.fee_rate {
        Some(f) => f,
        None => chain.fee_rate(6).await.context("the node's fee estimate")?,
    };

    let mut tx = Transaction {
        version: Version::TWO,
        lock_time: LockTime::ZERO,
        input: utxos
            .iter()
            .map(|u| TxIn {
                previous_output: u.outpoint,
                script_sig: ScriptBuf::new(),
                sequence: Sequence::ENABLE_RBF_NO_LOCKTIME,
                witness: p2wpkh_witness(),
            })
            .collect(),
        output: vec![TxOut { value: Amount::ZERO, script_pubkey: destination.script_pubkey() }],
    };
    let total: Amount = utxos.iter().map(|u| u.txout.value).sum();
    let fee = fee_rate.fee_wu(tx.weight()).context("fee overflow")?;
    let amount = total.checked_sub(fee).filter(|a| *a >= Amount::from_sat(546)).with_context(|| {
        format!("the vault holds {total}, not enough to pay the fee of {fee} and leave a spendable output")
    })?;
    tx.output[0].value = amount;
    for i in &mut tx.input {
        i.witness = Witness::new();
    }
    let mut psbt = Psbt::from_unsigned_tx(tx.clone()).context("building the PSBT")?;
    for (i, u) in utxos.iter().enumerate() {
        psbt.inputs[i].witness_utxo = Some(u.txout.clone());
    }

    let party = Party::with_aux_info(vault.group.clone(), PartyRole::Wallet, config_for(vault.aux.primes_origin), vault.aux)?;
    let members = vec![
        SessionMember::new(PartyRole::Wallet, session.device().keypair().x_only_public_key().0),
        SessionMember::new(PartyRole::CoSigner, cosigner),
    ];
    let signers = [PartyRole::Wallet, PartyRole::CoSigner];
    let auth = session.auth().clone();
    for (i, u) in utxos.iter().enumerate() {
        let key: &VaultKey = keys
            .iter()
            .find(|k| k.script_pubkey() == u.txout.script_pubkey)
            .context("an output of the scan pays none of the wallet's keys")?;
        let key_index = keys.iter().position(|k| k.script_pubkey() == u.txout.script_pubkey).unwrap_or(0) as u64;
        let input = IntentInput { index: i as u32, group: vault.group.id, key_index };
        let intent = SpendIntent::new(SpendPurpose::Recovery, psbt.clone(), vec![input], &signers)?;
        let eid = ExecutionId::random();
        let intent_json: Value = serde_json::from_str(&intent.to_json())?;
        open_session_http(&mut c, &auth, eid, tandem_custody::ProtocolKind::Sign, &members, Some(&intent_json))
            .await
            .context("opening the recovery session with the co-signer")?;
        let link = HttpRelayLink::connect(&base, auth.clone(), eid, PartyRole::Wallet, &signers, JOIN)
            .await?
            .secure(session.device().keypair(), &members)?;
        let to_sign = intent.check_input(PartyRole::Wallet, &input, key)?;
        let sig = match party.sign_input(key, &signers, eid, &psbt, to_sign, link).await {
            Ok(sig) => sig,
            Err(e) => {
                // The co-signer refuses by ending the session with its reason.
                let reason = session_end_reason(&mut c, &auth, eid).await;
                return Err(match reason {
                    Some(r) => anyhow::anyhow!("the co-signer did not sign: {r}"),
                    None => anyhow::Error::new(e).context("signing with the co-signer"),
                });
            }
        };
        sig.apply_to_tx(&mut tx, i)?;
    }
    for (i, u) in utxos.iter().enumerate() {
        tandem_custody::verify_input_consensus(&tx, i, &u.txout)?;
    }
    let txid = chain.broadcast(&tx).await.context("broadcasting the recovery")?;
    Ok(Recovered { txid, inputs: utxos.len(), amount, fee })
}

async fn session_end_reason(c: &mut Client, auth: &Auth, eid: ExecutionId) -> Option<String> {
    match c.send("GET", &format!("/v1/mpc/sessions/{}", eid.to_hex()), None, auth).await {
        Ok((200, v)) => v["ended_reason"].as_str().map(str::to_owned),
        Ok((status, v)) => Some(RelayRefused::from_reply(status, &v).to_string()),
        Err(_) => None,
    }
}
