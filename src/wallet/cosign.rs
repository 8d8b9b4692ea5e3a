//! `tandem wallet cosign`: the wallet's long-running signer. It waits for signing sessions
//! that name it on the provider's relay and answers each only after checking the spend against
//! what the user itself asked for.
//!
//! For each `sign` session: decode the intent, find the wallet's own key whose script the input
//! spends, then [`wallet_check`] with the wallet's own facts:
//! - its vault scripts (every key it holds);
//! - for a withdrawal: the request the user made from this wallet (`tandem wallet withdraw`
//!   records it in the wallet file before sending it), matched by destination and amount to the
//!   provider's withdrawal of that id; one request backs one withdrawal id;
//! - a second spend for the same withdrawal must conflict with (share an input with) every
//!   earlier one, so at most one confirms.
//!
//! What it signed is appended to the wallet file (`signed-...`) *before* it joins, so a crash
//! cannot let it sign a non-conflicting second spend. A refusal aborts the session with
//! `refused <code>: <detail>`, which the provider records for its operators.
//!
//! - a settlement batch: the window's fills and withdrawals, each checked against a request this
//!   wallet signed, must account for what the batch takes from the vault (see
//!   [`batch_position`]), and the transaction must move the vault by exactly the booked delta.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use bitcoin::{Amount, ScriptBuf, SignedAmount};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tandem_custody::policy::{wallet_check, Payment, RefusalCode, SpendRequest, WalletFacts};
use tandem_custody::{
    ExecutionId, FilePresignatureStore, InputSignature, Party, PartyRole, PresignatureStore, Refusal,
    SessionMember,
    SpendIntent, SpendPurpose, VaultKey,
};

use crate::provider::signing::NO_PRESIGNATURE;

use super::cli::Session;
use super::vault::{config_for, provider_info, wallet_keys, wallet_vault};
use crate::mpc_link::{party_role, HttpRelayLink};

/// Kinds of the wallet's records of what its user asked for and what it signed.
pub const KIND_WITHDRAWAL_REQUEST: &str = "withdrawal-request";
pub const KIND_SIGNED: &str = "signed-spend";
const REQUEST_PREFIX: &str = "withdrawal-request-";
const SIGNED_PREFIX: &str = "signed-";

/// How long one long-poll for new sessions waits.
const POLL: Duration = Duration::from_secs(10);
const JOIN: Duration = Duration::from_secs(30);
/// Sessions signed at once; more wait their turn.
const SIGNING_AT_ONCE: usize = 4;

/// A BTC withdrawal the user asked for from this wallet.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct WithdrawalRequest {
    pub destination: String,
    pub amount_sat: u64,
    pub requested_at: u64,
}

/// A spend this wallet signed (one input).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SignedSpend {
    pub purpose: SpendPurpose,
    /// The request it paid (withdrawals).
    pub request: Option<String>,
    pub txid: String,
    pub outpoints: Vec<String>,
    pub execution_id: String,
}

/// Satoshis of a BTC amount given in decimal (`0.015`), refusing fractions of a satoshi.
pub fn btc_to_sat(amount: &str) -> anyhow::Result<u64> {
    let d: Decimal = amount.trim().parse().with_context(|| format!("{amount:?} is not a decimal amount"))?;
    let sats = d * Decimal::from(100_000_000u64);
    if sats.fract() != Decimal::ZERO || sats.is_sign_negative() {
        bail!("{amount} BTC is not a whole number of satoshis");
    }
    rust_decimal::prelude::ToPrimitive::to_u64(&sats).context("amount out of range")
}

/// Records a withdrawal request before it is sent (`tandem wallet withdraw`).
pub fn record_withdrawal_request(session: &mut Session, destination: &str, amount: &str) -> anyhow::Result<()> {
    let request = WithdrawalRequest {
        destination: destination.trim().to_owned(),
        amount_sat: btc_to_sat(amount)?,
        requested_at: crate::node::now_millis(),
    };
    let name = format!("{REQUEST_PREFIX}{}-{:08x}", request.requested_at, rand::random::<u32>());
    session.append_secret(&name, KIND_WITHDRAWAL_REQUEST, &serde_json::to_vec(&request)?)
}

pub struct CosignOptions {
    pub max_fee: Amount,
    /// Stop after this many sessions (tests, scripts); `None`: run until killed.
    pub sessions: Option<usize>,
    /// Presignatures to keep ready per key (made with the provider while idle), so a spend
    /// is signed in one round; 0: always sign interactively.
    pub presignatures: usize,
}

/// Where `cosign` reports: one line per answered session, and its status lines.
pub trait Report: Sync {
    fn session(&self, line: &str);
    fn status(&self, line: &str);
}

/// The command line's report: answers on stdout, status on stderr.
pub struct Console;

impl Report for Console {
    fn session(&self, line: &str) {
        println!("{line}");
    }
    fn status(&self, line: &str) {
        eprintln!("cosign: {line}");
    }
}

/// What the signer keeps between sessions, so a batch of many inputs (a session each) costs one
/// check, not one per input: the wallet's keys and its party (decrypted once), each batch
/// transaction's checked position, and the spends it signed. Refusals are not kept: the next
/// session asks again.
#[derive(Default)]
struct Caches {
    /// By the number of key secrets in the wallet file (keys are only ever added).
    keys: Option<(usize, Arc<Vec<VaultKey>>)>,
    party: Option<Arc<Party>>,
    positions: HashMap<(u64, bitcoin::Txid), (Amount, (SignedAmount, Amount))>,
    signed: Option<Vec<SignedSpend>>,
}

impl Caches {
    fn keys(&mut self, session: &Session) -> anyhow::Result<Arc<Vec<VaultKey>>> {
        let count = super::vault::key_count(session);
        match &self.keys {
            Some((n, keys)) if *n == count => Ok(keys.clone()),
            _ => {
                let keys = Arc::new(wallet_keys(session)?);
                self.keys = Some((count, keys.clone()));
                Ok(keys)
            }
        }
    }

    fn party(&mut self, session: &Session) -> anyhow::Result<Arc<Party>> {
        if let Some(p) = &self.party {
            return Ok(p.clone());
        }
        let vault = wallet_vault(session)?;
        let party = Arc::new(Party::with_aux_info(vault.group.clone(), PartyRole::Wallet, config_for(vault.aux.primes_origin), vault.aux)?);
        self.party = Some(party.clone());
        Ok(party)
    }

    fn signed(&mut self, session: &Session) -> anyhow::Result<&mut Vec<SignedSpend>> {
        if self.signed.is_none() {
            self.signed = Some(signed_spends(session)?);
        }
        Ok(self.signed.get_or_insert_with(Vec::new))
    }
}

/// Runs the signer until killed (or `opts.sessions` sessions were answered), reporting one
/// line per session.
pub async fn run(session: &mut Session, opts: &CosignOptions, report: &dyn Report) -> anyhow::Result<()> {
    let provider = provider_info(session).await?;
    let me = session.device().keypair().x_only_public_key().0;
    report.status(&format!("waiting for signing sessions for device {me} at {}", session.file.provider_url));
    let store = Arc::new(session.presignature_store()?);
    let mut cursor = 0u64;
    let mut answered = 0usize;
    let mut idle = true;
    let mut caches = Caches::default();
    // Sessions being signed in the background, and their report lines: a partner that vanished
    // mid-session holds only its own session (until the custody timeout), never the signer.
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let mut in_flight = 0usize;
    let permits = Arc::new(tokio::sync::Semaphore::new(SIGNING_AT_ONCE));
    loop {
        while let Ok(line) = done_rx.try_recv() {
            report.session(&line);
            in_flight -= 1;
            answered += 1;
        }
        if opts.sessions.is_some_and(|n| answered >= n) {
            return Ok(());
        }
        if idle && in_flight == 0 && opts.presignatures > 0 {
            match top_up(session, &mut caches, &provider, &store, opts.presignatures).await {
                Ok(Some(line)) => report.status(&line),
                Ok(None) => {}
                Err(e) => report.status(&format!("could not make a presignature ({e:#})")),
            }
        }
        // No wait while the stock is being topped up, long ones otherwise.
        let wait = if idle && in_flight == 0 && opts.presignatures > 0 && stock_low(session, &mut caches, &store, opts.presignatures) {
            Duration::ZERO
        } else {
            POLL
        };
        let path = format!("/v1/mpc/sessions?after={cursor}&wait_ms={}", wait.as_millis());
        // A session signed in the background is reported as soon as it is done.
        let polled = tokio::select! {
            polled = session.call("GET", &path, None) => polled,
            Some(line) = done_rx.recv() => {
                report.session(&line);
                in_flight -= 1;
                answered += 1;
                continue;
            }
        };
        let reply = match polled {
            Ok(r) => r,
            Err(e) => {
                report.status(&format!("cannot list sessions ({e:#}); retrying"));
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        cursor = reply["last_seq"].as_u64().unwrap_or(cursor);
        let sessions: Vec<&Value> = reply["sessions"].as_array().into_iter().flatten().filter(|s| s["protocol"] == "sign").collect();
        idle = sessions.is_empty();
        for s in sessions {
            session.reload()?;
            let eid = s["execution_id"].as_str().unwrap_or("?").to_owned();
            match prepare(session, &mut caches, &provider.identity, s, opts, &store).await {
                Ok(Prepared::Sign(id, checked)) => {
                    let signer = Signer {
                        base: session.file.provider_url.clone(),
                        auth: session.auth().clone(),
                        identity: *session.device().keypair(),
                        party: caches.party(session)?,
                        store: store.clone(),
                    };
                    let (done, permits) = (done_tx.clone(), permits.clone());
                    in_flight += 1;
                    tokio::spawn(async move {
                        // A few at a time: interactive signing is CPU-bound.
                        let _permit = permits.acquire_owned().await;
                        let line = match signer.sign(id, (*checked).clone()).await {
                            Ok(sigs) => describe(&checked, &sigs),
                            Err(e) => format!("failed: {e:#}"),
                        };
                        let _ = done.send(format!("{eid} {line}"));
                    });
                }
                Ok(Prepared::Answered(line)) => {
                    report.session(&format!("{eid} {line}"));
                    answered += 1;
                }
                Err(e) => {
                    report.session(&format!("{eid} failed: {e:#}"));
                    answered += 1;
                }
            }
        }
    }
}

/// What a session needs after its check.
enum Prepared {
    /// Checked: sign it.
    Sign(ExecutionId, Box<Checked>),
    /// Refused or sent back (the line says why).
    Answered(String),
}

/// Checks one session: refuses it (telling the provider why), asks for interactive signing
/// when the named presignature is gone, or answers it ready to sign.
async fn prepare(
    session: &mut Session,
    caches: &mut Caches,
    provider: &bitcoin::secp256k1::XOnlyPublicKey,
    s: &Value,
    opts: &CosignOptions,
    store: &FilePresignatureStore,
) -> anyhow::Result<Prepared> {
    let eid = s["execution_id"].as_str().and_then(ExecutionId::from_hex).context("the session has no execution id")?;
    match check(session, caches, provider, s, opts).await {
        Err(refusal) => {
            refusal.log(purpose_of(s));
            let body = serde_json::json!({ "reason": refusal.abort_reason() });
            session.call("POST", &format!("/v1/mpc/sessions/{}/abort", eid.to_hex()), Some(&body)).await.ok();
            Ok(Prepared::Answered(format!("refused ({}): {}", refusal.code.as_str(), refusal.detail)))
        }
        Ok(checked) => {
            let mut missing = Vec::new();
            for (id, key) in checked.intent.presignatures.iter().zip(&checked.keys) {
                if !store.available(&key.public_key)?.contains(id) {
                    missing.push(id.to_hex());
                }
            }
            if !missing.is_empty() {
                // As many as the abort reason holds; the provider asks again for the rest.
                let named: Vec<String> = missing.iter().take(2).cloned().collect();
                let body = serde_json::json!({ "reason": format!("{NO_PRESIGNATURE} {}", named.join(" ")) });
                session.call("POST", &format!("/v1/mpc/sessions/{}/abort", eid.to_hex()), Some(&body)).await.ok();
                return Ok(Prepared::Answered(format!("{NO_PRESIGNATURE} {}: asked to sign without it", named.join(", "))));
            }
            Ok(Prepared::Sign(eid, Box::new(checked)))
        }
    }
}

/// The report line of a signed session.
fn describe(checked: &Checked, sigs: &[InputSignature]) -> String {
    let what = match checked.intent.purpose {
        SpendPurpose::Withdrawal { withdrawal } => format!("withdrawal {withdrawal}"),
        p => format!("{p:?}"),
    };
    let inputs: Vec<String> = checked.intent.inputs.iter().map(|i| i.index.to_string()).collect();
    let keys: Vec<String> = sigs.iter().map(|s| s.public_key.to_string()).collect();
    format!(
        "signed input{} {} of {} for {what} with key{} {}{}",
        if inputs.len() == 1 { "" } else { "s" },
        inputs.join(", "),
        checked.intent.psbt.unsigned_tx.compute_txid(),
        if keys.len() == 1 { "" } else { "s" },
        keys.join(", "),
        if checked.intent.presigned() { " (one round, presigned)" } else { "" }
    )
}

fn purpose_of(s: &Value) -> SpendPurpose {
    serde_json::from_value(s["intent"]["purpose"].clone()).unwrap_or(SpendPurpose::Recovery)
}

#[derive(Clone)]
struct Checked {
    intent: SpendIntent,
    /// The key of each of the intent's inputs, in order.
    keys: Vec<VaultKey>,
    members: Vec<SessionMember>,
}

async fn check(
    session: &mut Session,
    caches: &mut Caches,
    provider: &bitcoin::secp256k1::XOnlyPublicKey,
    s: &Value,
    opts: &CosignOptions,
) -> Result<Checked, Refusal> {
    let me = PartyRole::Wallet;
    let refuse = |code, detail: String| Refusal::new(me, code, detail);
    let text = s["intent"].to_string();
    let intent = SpendIntent::from_json(&text).map_err(|e| refuse(RefusalCode::BadIntent, e.to_string()))?;
    let members = session_members(s).map_err(|e| refuse(RefusalCode::BadIntent, format!("{e:#}")))?;
    let my_identity = session.device().keypair().x_only_public_key().0;
    if !members.iter().any(|m| m.role == me && m.identity == my_identity) {
        return Err(refuse(RefusalCode::WrongSigners, "the session does not name this wallet as its wallet".into()));
    }
    if members.iter().any(|m| m.role == PartyRole::Provider && m.identity != *provider) {
        return Err(refuse(RefusalCode::WrongSigners, "the session's provider is not this wallet's provider".into()));
    }
    let roles: Vec<PartyRole> = members.iter().map(|m| m.role).collect();
    if roles != intent.signers {
        return Err(refuse(RefusalCode::WrongSigners, format!("session parties {roles:?}, intent signers {:?}", intent.signers)));
    }
    let keys = caches.keys(session).map_err(|e| refuse(RefusalCode::UnknownKey, format!("{e:#}")))?;
    let by_script: HashMap<ScriptBuf, &VaultKey> = keys.iter().map(|k| (k.script_pubkey(), k)).collect();
    let mut signing = Vec::with_capacity(intent.inputs.len());
    for input in &intent.inputs {
        let script = intent.psbt.inputs.get(input.index as usize).and_then(|i| i.witness_utxo.as_ref()).map(|u| &u.script_pubkey);
        let key = script
            .and_then(|s| by_script.get(s))
            .map(|k| (*k).clone())
            .ok_or_else(|| refuse(RefusalCode::UnknownKey, format!("input {} does not spend any key of this wallet", input.index)))?;
        intent.check_input(me, input, &key)?;
        signing.push(key);
    }
    let own: HashSet<ScriptBuf> = by_script.keys().cloned().collect();

    let (requested, request_name) = match intent.purpose {
        SpendPurpose::Withdrawal { withdrawal } => {
            let (name, payment) = backing_request(session, withdrawal).await?;
            (vec![payment], Some(name))
        }
        _ => (Vec::new(), None),
    };
    let (owed_to_batch, batch_leg) = match intent.purpose {
        SpendPurpose::SettlementBatch { batch } => {
            // One check per batch transaction, whatever the number of its inputs.
            let at = (batch, intent.psbt.unsigned_tx.compute_txid());
            let (owed, leg) = match caches.positions.get(&at) {
                Some(known) => *known,
                None => {
                    let found = batch_position(session, batch, opts.max_fee).await?;
                    caches.positions.insert(at, found);
                    found
                }
            };
            (owed, Some(leg))
        }
        _ => (Amount::ZERO, None),
    };
    let facts = WalletFacts {
        own_scripts: &own,
        requested_withdrawals: &requested,
        owed_to_batch,
        batch_leg,
        recovery_destination: None,
        max_fee: opts.max_fee,
    };
    wallet_check(&SpendRequest { psbt: &intent.psbt, purpose: intent.purpose, signers: &intent.signers }, &facts)?;
    // Durably note the spend first: never a second, non-conflicting spend of the same request.
    let tx = &intent.psbt.unsigned_tx;
    let signed = SignedSpend {
        purpose: intent.purpose,
        request: request_name,
        txid: tx.compute_txid().to_string(),
        outpoints: tx.input.iter().map(|i| i.previous_output.to_string()).collect(),
        execution_id: s["execution_id"].as_str().unwrap_or_default().to_owned(),
    };
    let earlier = caches.signed(session).map_err(|e| refuse(RefusalCode::BadIntent, format!("{e:#}")))?;
    check_not_paid_twice(earlier, &signed)?;
    // One record per transaction: its other inputs add nothing to what it pays.
    if !earlier.iter().any(|e| e.purpose == signed.purpose && e.txid == signed.txid) {
        let name = format!("{SIGNED_PREFIX}{}", signed.execution_id.get(..32).unwrap_or("x"));
        let bytes = serde_json::to_vec(&signed).map_err(|e| refuse(RefusalCode::BadIntent, e.to_string()))?;
        session
            .append_secret(&name, KIND_SIGNED, &bytes)
            .map_err(|e| refuse(RefusalCode::BadIntent, format!("cannot record the spend in the wallet file: {e:#}")))?;
        if let Some(list) = caches.signed.as_mut() {
            list.push(signed);
        }
    }
    Ok(Checked { intent, keys: signing, members })
}

/// What this account's part in batch `batch` may take from its vault, and the part the ledger
/// booked (delta, fee share). What a batch may take is what the ledger says the vault holds
/// beyond what the account still owns: its balance net of pending withdrawals (BTC it sold, and
/// withdrawals this batch pays).
///
/// Before that, the window's evidence is checked against this wallet's own signatures
/// ([`crate::obligations::prove`]): every fill is of an order it signed, within its terms, every
/// withdrawal one it asked for; and the leg takes no more out of the vault than those signed acts
/// add up to, plus its fee share and at most `slack` (change too small for an output of its own
/// goes to the pool: what the wallet accepts to lose to fees anyway).
async fn batch_position(session: &Session, batch: u64, slack: Amount) -> Result<(Amount, (SignedAmount, Amount)), Refusal> {
    let refuse = |code, detail: String| Refusal::new(PartyRole::Wallet, code, detail);
    let reply = session
        .call("GET", &format!("/v1/settlement/batches/{batch}"), None)
        .await
        .map_err(|e| refuse(RefusalCode::ObligationUnpaid, format!("cannot read batch {batch}: {e:#}")))?;
    let int = |field: &str| {
        reply[field].as_i64().ok_or_else(|| refuse(RefusalCode::BadIntent, format!("batch {batch}: no {field} in {reply}")))
    };
    let leg = &reply["leg"];
    if leg.is_null() {
        return Err(refuse(RefusalCode::ForeignInput, format!("batch {batch} books nothing for this account")));
    }
    let delta = leg["delta_sat"].as_i64().ok_or_else(|| refuse(RefusalCode::BadIntent, format!("batch {batch}: bad leg {leg}")))?;
    let fee = leg["fee_sat"].as_u64().ok_or_else(|| refuse(RefusalCode::BadIntent, format!("batch {batch}: bad leg {leg}")))?;
    let evidence: tandem_gateway::evidence::Evidence = serde_json::from_value(reply["evidence"].clone())
        .map_err(|e| refuse(RefusalCode::ObligationUnpaid, format!("batch {batch} comes without the evidence of its window: {e}")))?;
    let proven = crate::obligations::prove(&evidence, &session.device().x_only())
        .map_err(|e| refuse(RefusalCode::ObligationUnpaid, format!("batch {batch}: {e}")))?;
    let allowed = proven.net_out_sat.saturating_add((fee + slack.to_sat()) as i64);
    if -delta > allowed {
        return Err(refuse(
            RefusalCode::ObligationUnpaid,
            format!(
                "batch {batch} takes {} sat from this vault, but this wallet's own orders and withdrawals since its last \
                 settlement account for {} sat (fee share {fee} sat)",
                -delta, proven.net_out_sat
            ),
        ));
    }
    let owned = int("balance_sat")? - int("pending_withdrawals_sat")?;
    // Withdrawals this batch pays leave the vault too: they are owed, not owned.
    let owed = (int("settled_sat")? - owned).max(0);
    Ok((Amount::from_sat(owed as u64), (SignedAmount::from_sat(delta), Amount::from_sat(fee))))
}

/// The wallet's request that backs the provider's withdrawal `id`: the same destination and
/// amount, and not already used for another withdrawal id.
async fn backing_request(session: &Session, id: u64) -> Result<(String, Payment), Refusal> {
    let refuse = |code, detail: String| Refusal::new(PartyRole::Wallet, code, detail);
    let reply = session
        .call("GET", "/v1/withdrawals?limit=1000", None)
        .await
        .map_err(|e| refuse(RefusalCode::ObligationUnpaid, format!("cannot read the withdrawals: {e:#}")))?;
    let w = reply["withdrawals"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|w| w["withdrawal_id"].as_u64() == Some(id))
        .ok_or_else(|| refuse(RefusalCode::ObligationUnpaid, format!("withdrawal {id} is not this account's")))?;
    if w["asset"] != "BTC" {
        return Err(refuse(RefusalCode::ObligationUnpaid, format!("withdrawal {id} is not in BTC")));
    }
    let destination = w["destination"].as_str().unwrap_or_default().to_owned();
    let amount_sat = btc_to_sat(w["amount"].as_str().unwrap_or_default())
        .map_err(|e| refuse(RefusalCode::ObligationUnpaid, format!("withdrawal {id}: {e:#}")))?;
    let signed = signed_spends(session).map_err(|e| refuse(RefusalCode::BadIntent, format!("{e:#}")))?;
    let used_by_other: HashSet<String> = signed
        .iter()
        .filter(|s| s.purpose != SpendPurpose::Withdrawal { withdrawal: id })
        .filter_map(|s| s.request.clone())
        .collect();
    let mine_for_id: Option<String> =
        signed.iter().find(|s| s.purpose == SpendPurpose::Withdrawal { withdrawal: id }).and_then(|s| s.request.clone());
    let requests = withdrawal_requests(session).map_err(|e| refuse(RefusalCode::BadIntent, format!("{e:#}")))?;
    let found = requests.into_iter().find(|(name, r)| {
        r.destination == destination
            && r.amount_sat == amount_sat
            && match &mine_for_id {
                Some(bound) => bound == name,
                None => !used_by_other.contains(name),
            }
    });
    let (name, _) = found.ok_or_else(|| {
        refuse(
            RefusalCode::ObligationUnpaid,
            format!("this wallet never asked to withdraw {amount_sat} sat to {destination} (withdrawal {id})"),
        )
    })?;
    let address = destination
        .parse::<bitcoin::Address<bitcoin::address::NetworkUnchecked>>()
        .map_err(|e| refuse(RefusalCode::UnexpectedOutput, format!("{destination}: {e}")))?
        .assume_checked();
    Ok((name, Payment { script_pubkey: address.script_pubkey(), amount: Amount::from_sat(amount_sat) }))
}

fn check_not_paid_twice(earlier: &[SignedSpend], new: &SignedSpend) -> Result<(), Refusal> {
    let mine: HashSet<&String> = new.outpoints.iter().collect();
    for s in earlier.iter().filter(|s| s.purpose == new.purpose && s.txid != new.txid) {
        if !s.outpoints.iter().any(|o| mine.contains(o)) {
            return Err(Refusal::new(
                PartyRole::Wallet,
                RefusalCode::DoublePay,
                format!("{} already pays this and shares no input with {}", s.txid, new.txid),
            ));
        }
    }
    Ok(())
}

fn withdrawal_requests(session: &Session) -> anyhow::Result<Vec<(String, WithdrawalRequest)>> {
    records(session, KIND_WITHDRAWAL_REQUEST)
}

fn signed_spends(session: &Session) -> anyhow::Result<Vec<SignedSpend>> {
    Ok(records(session, KIND_SIGNED)?.into_iter().map(|(_, s)| s).collect())
}

fn records<T: serde::de::DeserializeOwned>(session: &Session, kind: &str) -> anyhow::Result<Vec<(String, T)>> {
    let names: Vec<String> =
        session.file.secret_names().filter(|(_, k)| *k == kind).map(|(n, _)| n.to_owned()).collect();
    names
        .into_iter()
        .map(|n| {
            let bytes = session.secret(&n)?;
            Ok((n.clone(), serde_json::from_slice(&bytes).with_context(|| format!("reading {n} of the wallet file"))?))
        })
        .collect()
}

fn session_members(s: &Value) -> anyhow::Result<Vec<SessionMember>> {
    let mut members = Vec::new();
    for p in s["parties"].as_array().context("the session lists no parties")? {
        let role: tandem_gateway::relay::Role = serde_json::from_value(p["role"].clone())?;
        let identity = p["identity_pubkey"].as_str().context("a party without identity")?.parse()?;
        members.push(SessionMember::new(party_role(role), identity));
    }
    members.sort_by_key(|m| m.role);
    Ok(members)
}

/// Whether some key has fewer than `target` presignatures ready.
fn stock_low(session: &Session, caches: &mut Caches, store: &FilePresignatureStore, target: usize) -> bool {
    caches
        .keys(session)
        .map(|keys| keys.iter().any(|k| store.available(&k.public_key).is_ok_and(|a| a.len() < target)))
        .unwrap_or(false)
}

/// Makes one presignature with the provider for the first key below `target`; answers what
/// it did, or `None` when every key has its stock.
async fn top_up(
    session: &Session,
    caches: &mut Caches,
    provider: &super::vault::ProviderInfo,
    store: &FilePresignatureStore,
    target: usize,
) -> anyhow::Result<Option<String>> {
    let keys = caches.keys(session)?;
    if keys.is_empty() {
        return Ok(None);
    }
    let Some(key) = keys.iter().find(|k| store.available(&k.public_key).is_ok_and(|a| a.len() < target)) else {
        return Ok(None);
    };
    let signers = [PartyRole::Wallet, PartyRole::Provider];
    let members = vec![
        SessionMember::new(PartyRole::Wallet, session.device().keypair().x_only_public_key().0),
        SessionMember::new(PartyRole::Provider, provider.identity),
    ];
    let party = caches.party(session)?;
    let intent = tandem_custody::PresignIntent { group: party.group().id, public_key: key.public_key.to_string() };
    let eid = ExecutionId::random();
    let base = session.file.provider_url.clone();
    let mut client = crate::client::Client::connect(&base).await?;
    let intent_json = serde_json::to_value(&intent)?;
    crate::mpc_link::open_session_http(
        &mut client,
        session.auth(),
        eid,
        tandem_custody::ProtocolKind::Presign,
        &members,
        Some(&intent_json),
    )
    .await?;
    let link = HttpRelayLink::connect(&base, session.auth().clone(), eid, PartyRole::Wallet, &signers, JOIN)
        .await?
        .secure(session.device().keypair(), &members)?;
    party.generate_presignature(key, &signers, eid, link, store).await?;
    let have = store.available(&key.public_key)?.len();
    Ok(Some(format!("presignature made for key {} ({have} ready)", key.public_key)))
}

/// What signing a checked session needs, owned, so it runs beside the signer's loop.
struct Signer {
    base: String,
    auth: crate::client::Auth,
    identity: bitcoin::secp256k1::Keypair,
    party: Arc<Party>,
    store: Arc<FilePresignatureStore>,
}

impl Signer {
    /// Joins the session over the relay and signs: every input in one round from the intent's
    /// presignatures, or its one input interactively.
    async fn sign(&self, eid: ExecutionId, c: Checked) -> anyhow::Result<Vec<InputSignature>> {
        let roles: Vec<PartyRole> = c.members.iter().map(|m| m.role).collect();
        let link = HttpRelayLink::connect(&self.base, self.auth.clone(), eid, PartyRole::Wallet, &roles, JOIN)
            .await?
            .secure(&self.identity, &c.members)?;
        let inputs: Vec<_> =
            c.intent.inputs.iter().zip(&c.keys).map(|(i, k)| c.intent.check_input(PartyRole::Wallet, i, k)).collect::<Result<_, _>>()?;
        Ok(if c.intent.presigned() {
            let each: Vec<_> = c.keys.iter().zip(c.intent.presignatures.iter().copied()).zip(inputs).map(|((k, id), i)| (k, id, i)).collect();
            self.party.sign_inputs_presigned(&each, &c.intent.signers, &*self.store, eid, &c.intent.psbt, link).await?
        } else {
            vec![self.party.sign_input(&c.keys[0], &c.intent.signers, eid, &c.intent.psbt, inputs[0], link).await?]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn btc_amounts_become_whole_satoshis_or_errors() {
        assert_eq!(btc_to_sat("0.015").unwrap(), 1_500_000);
        assert_eq!(btc_to_sat("1").unwrap(), 100_000_000);
        assert_eq!(btc_to_sat("0.00000001").unwrap(), 1);
        assert!(btc_to_sat("0.000000001").is_err());
        assert!(btc_to_sat("-1").is_err());
        assert!(btc_to_sat("abc").is_err());
    }
}
