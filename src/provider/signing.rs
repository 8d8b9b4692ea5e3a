//! The provider's side of spending from a vault: [`VaultService::sign`].
//!
//! The provider is the one that asks for spends (its settlement service builds them), so it
//! opens each signing session itself, with the spend's intent on the relay for its partner
//! (the vault's wallet, or its co-signer for forced settlement) to check. Before it opens
//! anything it checks the spend as any other signer would:
//! 1. it holds a share of the named key, and the input really pays that key;
//! 2. its policy ([`provider_check`]) with facts it takes from its own books: the ledger's
//!    pending withdrawal (engine), the vault addresses (store); a settlement batch's
//!    obligations come with the settlement service;
//! 3. it never signs a second spend for the same obligation that does not conflict with the
//!    first (share an input), so at most one can confirm (`provider_signatures`).
//!
//! Every refusal, its own or its partner's (a partner refuses by aborting the session with
//! `refused <code>: <detail>`), is logged and recorded for operators
//! (`GET /v1/operator/refusals`).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use anyhow::Context as _;
use bitcoin::{Amount, ScriptBuf, SignedAmount};
use tandem_custody::PresignatureStore;
use tandem_custody::policy::{
    parse_refusal, provider_batch_check, provider_check, BatchFacts, Payment, ProviderFacts, RefusalCode, SpendRequest,
};
use tandem_custody::{
    ExecutionId, InputSignature, IntentInput, Party, PartyAuxInfo, PartyRole, Refusal, SessionMember, SignerGroup,
    SpendIntent, SpendPurpose, VaultKey,
};
use tandem_gateway::relay::Role;
use tandem_matching::{AccountId, BatchId, Timestamp, WithdrawalId, SETTLEMENT_POOL};
use tandem_store::{RefusalRecord, VaultRecord};

use super::{aux_record, key_record, policy_of, run_on_thread, spec_eid, VaultService};
use crate::mpc_link::{open_session_in_process, relay_role};

/// Why a spend was not signed.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// The provider's own checks refused it.
    #[error("{0}")]
    Refused(Refusal),
    /// The partner (wallet or co-signer) refused it.
    #[error("the {signer} refuses to sign ({code}): {detail}")]
    PartnerRefused { signer: Role, code: String, detail: String },
    /// The session failed (partner offline or timed out, transport, storage).
    #[error("signing failed: {0}")]
    Failed(String),
    /// Custody itself could not be asked (a custody process unreachable): no session was
    /// opened, so nothing about the partner is known.
    #[error("custody unavailable: {0}")]
    CustodyUnavailable(String),
}

/// [`BatchFacts`], owned.
struct BookedBatchFacts {
    holders: HashMap<ScriptBuf, u64>,
    deltas: HashMap<u64, SignedAmount>,
    withdrawals: Vec<Payment>,
    fee: Amount,
}

/// What a wallet says (as its abort reason) when it does not hold the presignature an intent
/// names; the provider then signs interactively.
pub const NO_PRESIGNATURE: &str = "no presignature";

/// Sessions tried in one round before the inputs left are signed interactively.
const MAX_PRESIGNED_ATTEMPTS: usize = 4;

/// A presignature held by a session in flight; released when dropped.
struct Reserved<'a>(&'a VaultService, tandem_custody::PresignatureId);

impl Drop for Reserved<'_> {
    fn drop(&mut self) {
        self.0.reserved_presignatures.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.1);
    }
}

/// Ends a session on the relay when dropped while armed (`eid` set).
struct Abandoned<'a> {
    relay: &'a tandem_gateway::Relay,
    me: bitcoin::secp256k1::XOnlyPublicKey,
    eid: Option<tandem_gateway::relay::Eid>,
}

impl Drop for Abandoned<'_> {
    fn drop(&mut self) {
        if let Some(eid) = self.eid {
            let _ = self.relay.abort(&self.me, eid, "the provider gave up the session");
        }
    }
}

/// What every session of one spend shares.
struct SigningAttempt<'a> {
    vault: &'a VaultRecord,
    members: &'a [SessionMember],
    group_hex: &'a str,
}

fn failed(e: impl std::fmt::Display) -> SignError {
    SignError::Failed(format!("{e:#}"))
}

/// The key of an obligation in `provider_signatures`.
fn purpose_key(p: SpendPurpose) -> String {
    match p {
        SpendPurpose::Withdrawal { withdrawal } => format!("withdrawal:{withdrawal}"),
        SpendPurpose::SettlementBatch { batch } => format!("batch:{batch}"),
        SpendPurpose::ForcedSettlement { batch } => format!("forced:{batch}"),
        SpendPurpose::Recovery => "recovery".into(),
    }
}

impl VaultService {
    /// Signs every input the intent names with the intent's other signer, after the provider's
    /// checks; answers their signatures in the intent's order. With the wallet, in one round:
    /// every input the provider holds a presignature for goes into one session (the others,
    /// and all of them if the wallet lost its halves, are signed interactively, one session
    /// each). With the co-signer, interactively. Each session waits for the partner up to the
    /// custody session timeout.
    pub async fn sign(self: &Arc<Self>, intent: SpendIntent) -> Result<Vec<InputSignature>, SignError> {
        let eid = ExecutionId::random();
        let group_hex = intent.input().group.to_string();
        let vault = self.store.vault(&group_hex).await.map_err(failed)?;
        let refuse = |code, detail: String| Refusal::new(PartyRole::Provider, code, detail);
        let checked = match vault {
            None => Err(refuse(RefusalCode::UnknownKey, format!("no vault {group_hex}"))),
            Some(vault) => self.check_spend(&intent, &vault).await.map(|key| (vault, key)),
        };
        let (vault, keys, partner) = match checked {
            Ok((vault, (keys, partner))) => (vault, keys, partner),
            Err(refusal) => {
                let account = self.store.vault(&group_hex).await.ok().flatten().map(|v| v.account_id);
                self.record_refusal(&refusal, &intent, eid, account).await;
                return Err(SignError::Refused(refusal));
            }
        };
        let me = self.identity.x_only_public_key().0;
        let mut members = vec![partner, SessionMember::new(PartyRole::Provider, me)];
        members.sort_by_key(|m| m.role);

        // Durable before the session: a crash after signing must still block a second,
        // non-conflicting spend of the same obligation. Once per transaction.
        let tx = &intent.psbt.unsigned_tx;
        let (purpose, txid) = (purpose_key(intent.purpose), tx.compute_txid().to_string());
        let recorded = self.store.provider_signatures(&purpose).await.map_err(failed)?.iter().any(|(t, _)| *t == txid);
        if !recorded {
            let outpoints: Vec<String> = tx.input.iter().map(|i| i.previous_output.to_string()).collect();
            let at = Timestamp(crate::node::now_millis());
            self.store.record_provider_signature(&purpose, &txid, &outpoints, &eid.to_hex(), at).await.map_err(failed)?;
        }

        // One round for every input the provider holds a presignature for. A presignature the
        // wallet says it lacks (its half was lost: a crash mid-presign) can never be used: it is
        // burned, and the session tried again with the others.
        let attempt = SigningAttempt { vault: &vault, members: &members, group_hex: &group_hex };
        let mut signatures: Vec<Option<InputSignature>> = vec![None; keys.len()];
        let one_round = matches!(intent.signers.as_slice(), [PartyRole::Wallet, PartyRole::Provider]) && !intent.presigned();
        let mut interactive: Vec<usize> = if one_round { Vec::new() } else { (0..keys.len()).collect() };
        let mut pending: Vec<usize> = if one_round { (0..keys.len()).collect() } else { Vec::new() };
        for _ in 0..MAX_PRESIGNED_ATTEMPTS {
            if pending.is_empty() {
                break;
            }
            // Held until this attempt is over, whatever happens (a used one is gone from the
            // store, so it cannot be picked twice).
            let mut held = Vec::new();
            let mut presigned = Vec::new();
            for n in std::mem::take(&mut pending) {
                match self.reserve_presignature(&keys[n]).map_err(failed)? {
                    Some(id) => {
                        held.push(Reserved(self, id));
                        presigned.push(n);
                    }
                    None => interactive.push(n),
                }
            }
            if presigned.is_empty() {
                break;
            }
            let ids: Vec<tandem_custody::PresignatureId> = held.iter().map(|r| r.1).collect();
            let inputs: Vec<IntentInput> = presigned.iter().map(|n| intent.inputs[*n]).collect();
            let session_intent =
                SpendIntent { inputs, presignatures: Vec::new(), ..intent.clone() }.with_presignatures(ids.clone()).map_err(failed)?;
            let ks: Vec<VaultKey> = presigned.iter().map(|n| keys[*n].clone()).collect();
            match self.session(ExecutionId::random(), session_intent, ks, &attempt).await {
                Ok(sigs) => {
                    for (n, sig) in presigned.iter().zip(sigs) {
                        signatures[*n] = Some(sig);
                    }
                }
                Err(SignError::Failed(why)) if why.contains(NO_PRESIGNATURE) => {
                    let lost: Vec<_> = ids.iter().filter(|id| why.contains(&id.to_hex())).copied().collect();
                    tracing::info!(lost = lost.len(), "the wallet lacks presignatures; burning those and trying again");
                    for id in &lost {
                        if let Err(e) = self.presignatures.consume(id) {
                            tracing::warn!(presignature = %id.to_hex(), error = %e, "could not burn a presignature");
                        }
                    }
                    if lost.is_empty() {
                        interactive.extend(presigned);
                    } else {
                        pending = presigned;
                    }
                }
                Err(e) => return Err(e),
            }
        }
        interactive.extend(pending);
        interactive.sort_unstable();
        for n in interactive {
            let single = SpendIntent { inputs: vec![intent.inputs[n]], presignatures: Vec::new(), ..intent.clone() };
            let sig = self.session(ExecutionId::random(), single, vec![keys[n].clone()], &attempt).await?;
            signatures[n] = sig.into_iter().next();
        }
        signatures.into_iter().map(|s| s.ok_or_else(|| SignError::Failed("an input was left unsigned".into()))).collect()
    }

    /// A presignature for `key` that no session in flight holds, held until released.
    fn reserve_presignature(&self, key: &VaultKey) -> anyhow::Result<Option<tandem_custody::PresignatureId>> {
        let available = self.presignatures.available(&key.public_key)?;
        let mut reserved = self.reserved_presignatures.lock().unwrap_or_else(|p| p.into_inner());
        let free = available.into_iter().find(|id| !reserved.contains(id));
        if let Some(id) = free {
            reserved.insert(id);
        }
        Ok(free)
    }

    /// The provider's party of a vault: its aux info opened once.
    fn party(&self, group: SignerGroup) -> anyhow::Result<Arc<Party>> {
        let mut parties = self.parties.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = parties.get(&group.id) {
            return Ok(p.clone());
        }
        let aux: PartyAuxInfo = self.secrets.get(&aux_record(group.id))?;
        let party = Arc::new(Party::with_aux_info(group.clone(), PartyRole::Provider, self.config(), aux)?);
        parties.insert(group.id, party.clone());
        Ok(party)
    }

    /// One signing session on the relay with the partner: opened with the intent, joined in
    /// process; one round from the intent's presignatures (any number of inputs), or
    /// interactive (one input). `keys`: the intent's inputs' keys, in order.
    async fn session(
        self: &Arc<Self>,
        eid: ExecutionId,
        intent: SpendIntent,
        keys: Vec<VaultKey>,
        a: &SigningAttempt<'_>,
    ) -> Result<Vec<InputSignature>, SignError> {
        let me = self.identity.x_only_public_key().0;
        let group = SignerGroup { id: intent.input().group, policy: policy_of(a.vault).map_err(failed)? };
        let party = self.party(group).map_err(failed)?;
        open_session_in_process(
            &self.relay,
            &me,
            eid,
            tandem_custody::ProtocolKind::Sign,
            a.members,
            Some(intent.to_json()),
        )
        .map_err(failed)?;
        // If this future is dropped (the caller gave up, or was stopped), the session ends at
        // once: the partner stops waiting and no work goes on for nothing.
        let mut abandoned = Abandoned { relay: &self.relay, me, eid: Some(spec_eid(eid)) };
        let svc = self.clone();
        let members = a.members.to_vec();
        let roles: Vec<PartyRole> = members.iter().map(|m| m.role).collect();
        let inputs: Vec<tandem_custody::InputToSign> = intent
            .inputs
            .iter()
            .zip(&keys)
            .map(|(i, k)| intent.check_input(PartyRole::Provider, i, k))
            .collect::<Result<_, _>>()
            .map_err(SignError::Refused)?;
        let (signers, psbt, presignatures) = (intent.signers.clone(), intent.psbt.clone(), intent.presignatures.clone());
        let result = run_on_thread(move || async move {
            let link = svc.join(eid, &roles, &members).await?;
            Ok(if presignatures.is_empty() {
                vec![party.sign_input(&keys[0], &signers, eid, &psbt, inputs[0], link).await?]
            } else {
                let each: Vec<_> = keys.iter().zip(presignatures).zip(inputs).map(|((k, id), i)| (k, id, i)).collect();
                party.sign_inputs_presigned(&each, &signers, &*svc.presignatures, eid, &psbt, link).await?
            })
        })
        .await;
        abandoned.eid = None;
        let ended = self.relay.session(&me, spec_eid(eid)).ok().and_then(|v| v.ended);
        if result.is_err() {
            let _ = self.relay.abort(&me, spec_eid(eid), "done");
        }
        let partner = a.members.iter().find(|m| m.role != PartyRole::Provider).map_or(PartyRole::Wallet, |m| m.role);
        match result {
            Ok(sigs) => {
                tracing::info!(
                    eid = %eid.to_hex(), purpose = ?intent.purpose, inputs = sigs.len(), presigned = intent.presigned(),
                    "inputs signed"
                );
                Ok(sigs)
            }
            Err(e) => {
                let partner_role = relay_role(partner);
                if let Some((code, detail)) = ended.as_deref().and_then(parse_refusal) {
                    tracing::warn!(signer = %partner_role, %code, %detail, purpose = ?intent.purpose, "partner refused to sign");
                    let record = RefusalRecord {
                        id: 0,
                        at: Timestamp(crate::node::now_millis()),
                        signer: partner_role.as_str().into(),
                        code: code.clone(),
                        detail: detail.clone(),
                        purpose: serde_json::to_string(&intent.purpose).unwrap_or_default(),
                        execution_id: eid.to_hex(),
                        group_id: Some(a.group_hex.to_owned()),
                        account_id: Some(a.vault.account_id),
                    };
                    if let Err(e) = self.store.insert_refusal(&record).await {
                        tracing::error!(error = %e, "could not record a refusal");
                    }
                    return Err(SignError::PartnerRefused { signer: partner_role, code, detail });
                }
                Err(SignError::Failed(match ended {
                    Some(reason) => format!("{e:#} (session ended: {reason})"),
                    None => format!("{e:#}"),
                }))
            }
        }
    }

    /// The provider's checks of a spend: its key share of every input, the partner, its policy.
    /// Answers the keys (in the intent's order) and the partner.
    async fn check_spend(&self, intent: &SpendIntent, vault: &VaultRecord) -> Result<(Vec<VaultKey>, SessionMember), Refusal> {
        let me = PartyRole::Provider;
        let refuse = |code, detail: String| Refusal::new(me, code, detail);
        let internal = |e: &dyn std::fmt::Display| refuse(RefusalCode::BadIntent, format!("cannot check the spend: {e}"));
        if !intent.signers.contains(&me) {
            return Err(refuse(RefusalCode::WrongSigners, format!("signers {:?}", intent.signers)));
        }
        let partner_role = intent.signers.iter().copied().find(|r| *r != me).unwrap_or(PartyRole::Wallet);
        let partner_key = match partner_role {
            PartyRole::Wallet => Some(vault.wallet_identity.as_str()),
            PartyRole::CoSigner => vault.cosigner_identity.as_deref(),
            PartyRole::Provider => None,
        };
        let partner_key = partner_key
            .and_then(|k| k.parse().ok())
            .ok_or_else(|| refuse(RefusalCode::WrongSigners, format!("vault {} has no {partner_role:?}", vault.group_id)))?;
        let mut keys = Vec::with_capacity(intent.inputs.len());
        for input in &intent.inputs {
            let key: VaultKey = self.secrets.get(&key_record(input.group, input.key_index)).map_err(|_| {
                refuse(RefusalCode::UnknownKey, format!("no share of key {} of vault {}", input.key_index, vault.group_id))
            })?;
            intent.check_input(me, input, &key)?;
            keys.push(key);
        }

        let (scripts, obligations) = match intent.purpose {
            SpendPurpose::Withdrawal { withdrawal } => {
                // A withdrawal is paid from the withdrawing account's own vaults.
                let w = self.pending_withdrawal(WithdrawalId(withdrawal)).await.map_err(|e| internal(&e))?;
                let (account, payment) = w.ok_or_else(|| {
                    refuse(RefusalCode::ObligationUnpaid, format!("withdrawal {withdrawal} is not pending in the ledger"))
                })?;
                if account != vault.account_id {
                    return Err(refuse(
                        RefusalCode::ForeignInput,
                        format!("withdrawal {withdrawal} is account {}'s, the vault is account {}'s", account.0, vault.account_id.0),
                    ));
                }
                (self.account_scripts(account).await.map_err(|e| internal(&e))?, vec![payment])
            }
            SpendPurpose::SettlementBatch { batch } | SpendPurpose::ForcedSettlement { batch } => {
                let signers = intent.signers.clone();
                let request = SpendRequest { psbt: &intent.psbt, purpose: intent.purpose, signers: &signers };
                let booked = self.booked_batch(BatchId(batch)).await.map_err(|e| internal(&e))?;
                let Some(booked) = booked else {
                    return Err(refuse(RefusalCode::ObligationUnpaid, format!("the ledger has no open settlement batch {batch}")));
                };
                let facts = BatchFacts {
                    holders: &booked.holders,
                    deltas: &booked.deltas,
                    withdrawals: &booked.withdrawals,
                    fee: booked.fee,
                };
                provider_batch_check(&request, &facts)?;
                if let Some(refusal) = self.paid_before(intent).await.map_err(|e| internal(&e))? {
                    return Err(refusal);
                }
                return Ok((keys, SessionMember::new(partner_role, partner_key)));
            }
            SpendPurpose::Recovery => (HashSet::new(), Vec::new()),
        };
        let signers = intent.signers.clone();
        let request = SpendRequest { psbt: &intent.psbt, purpose: intent.purpose, signers: &signers };
        let facts = ProviderFacts { vault_scripts: &scripts, obligations: &obligations, max_fee: self.max_fee };
        provider_check(&request, &facts)?;
        if let Some(refusal) = self.paid_before(intent).await.map_err(|e| internal(&e))? {
            return Err(refusal);
        }
        Ok((keys, SessionMember::new(partner_role, partner_key)))
    }

    /// The witness of pool input `index` of a settlement batch's `psbt` (the provider's own
    /// key: no partner), after the checks its vault inputs get: the input spends from
    /// `account`'s pool address, the ledger has the batch open and the transaction pays exactly
    /// what it booked (`provider_batch_check`), and no other spend of the batch that shares no
    /// input with this one was signed (recorded before signing, as for vault inputs).
    pub async fn sign_pool_input(
        &self,
        purpose: SpendPurpose,
        psbt: &bitcoin::Psbt,
        index: usize,
        account: AccountId,
    ) -> Result<bitcoin::Witness, SignError> {
        let refuse = |code, detail: String| {
            let refusal = Refusal::new(PartyRole::Provider, code, detail);
            refusal.log(purpose);
            SignError::Refused(refusal)
        };
        // The signers the batch's vault inputs have: a pool input signs with the same spend.
        let (batch, signers) = match purpose {
            SpendPurpose::SettlementBatch { batch } => (batch, [PartyRole::Wallet, PartyRole::Provider]),
            SpendPurpose::ForcedSettlement { batch } => (batch, [PartyRole::Provider, PartyRole::CoSigner]),
            other => return Err(refuse(RefusalCode::WrongPurpose, format!("the pool pays only settlement batches, not {other:?}"))),
        };
        let prevout = psbt
            .inputs
            .get(index)
            .and_then(|i| i.witness_utxo.as_ref())
            .ok_or_else(|| refuse(RefusalCode::MissingInputValue, format!("input {index} has no value")))?;
        if prevout.script_pubkey != self.pool.deposit_script(account).map_err(failed)? {
            return Err(refuse(RefusalCode::ForeignInput, format!("input {index} is not from account {}'s pool address", account.0)));
        }
        let Some(booked) = self.booked_batch(BatchId(batch)).await.map_err(failed)? else {
            return Err(refuse(RefusalCode::ObligationUnpaid, format!("the ledger has no open settlement batch {batch}")));
        };
        let facts = BatchFacts { holders: &booked.holders, deltas: &booked.deltas, withdrawals: &booked.withdrawals, fee: booked.fee };
        provider_batch_check(&SpendRequest { psbt, purpose, signers: &signers }, &facts).map_err(|r| {
            r.log(purpose);
            SignError::Refused(r)
        })?;
        if let Some(refusal) = self.paid_before_by(purpose, &psbt.unsigned_tx).await.map_err(failed)? {
            refusal.log(purpose);
            return Err(SignError::Refused(refusal));
        }
        let tx = &psbt.unsigned_tx;
        let (key, txid) = (purpose_key(purpose), tx.compute_txid().to_string());
        if !self.store.provider_signatures(&key).await.map_err(failed)?.iter().any(|(t, _)| *t == txid) {
            let outpoints: Vec<String> = tx.input.iter().map(|i| i.previous_output.to_string()).collect();
            let at = Timestamp(crate::node::now_millis());
            self.store.record_provider_signature(&key, &txid, &outpoints, "pool", at).await.map_err(failed)?;
        }
        self.pool.sign_input(account, tx, index, prevout).map_err(failed)
    }

    /// A second spend of the same obligation must conflict with every earlier one: the refusal
    /// if it does not.
    async fn paid_before(&self, intent: &SpendIntent) -> anyhow::Result<Option<Refusal>> {
        self.paid_before_by(intent.purpose, &intent.psbt.unsigned_tx).await
    }

    async fn paid_before_by(&self, purpose: SpendPurpose, tx: &bitcoin::Transaction) -> anyhow::Result<Option<Refusal>> {
        let txid = tx.compute_txid().to_string();
        let mine: HashSet<String> = tx.input.iter().map(|i| i.previous_output.to_string()).collect();
        for (other_txid, outpoints) in self.store.provider_signatures(&purpose_key(purpose)).await? {
            if other_txid != txid && !outpoints.iter().any(|o| mine.contains(o)) {
                return Ok(Some(Refusal::new(
                    PartyRole::Provider,
                    RefusalCode::DoublePay,
                    format!("{other_txid} already pays this obligation and shares no input with {txid}"),
                )));
            }
        }
        Ok(None)
    }

    /// A pending BTC withdrawal: its account and the payment it asks for.
    async fn pending_withdrawal(&self, id: WithdrawalId) -> anyhow::Result<Option<(AccountId, Payment)>> {
        let Some(ledger) = &self.ledger else { anyhow::bail!("the vault service has no ledger") };
        let btc = self.btc;
        let found = ledger.read(move |e| e.pending_withdrawals().into_iter().find(|(w, _)| *w == id)).await?;
        let Some((_, w)) = found else { return Ok(None) };
        if Some(w.asset) != btc {
            anyhow::bail!("withdrawal {} is not in BTC", id.0);
        }
        let script = self.destination_script(&w.destination).with_context(|| format!("withdrawal {}", id.0))?;
        Ok(Some((w.account, Payment { script_pubkey: script, amount: Amount::from_sat(w.amount.0) })))
    }

    /// What the ledger booked for an open batch, as the provider's policy needs it: each holder's
    /// scripts and delta, the withdrawals it pays, its fee; all as its newest version (with every
    /// fee bump booked) must pay them.
    async fn booked_batch(&self, batch: BatchId) -> anyhow::Result<Option<BookedBatchFacts>> {
        let Some(ledger) = &self.ledger else { anyhow::bail!("the vault service has no ledger") };
        let read = ledger
            .read(move |e| {
                let open = e.open_batches().into_iter().find(|(id, _)| *id == batch).map(|(_, b)| b);
                let withdrawals = e.pending_withdrawals();
                (open, withdrawals, e.account_count())
            })
            .await?;
        let (Some(open), pending, accounts) = read else { return Ok(None) };
        if Some(open.asset) != self.btc {
            anyhow::bail!("batch {} is not in BTC", batch.0);
        }
        let mut facts = BookedBatchFacts {
            holders: HashMap::new(),
            deltas: HashMap::new(),
            withdrawals: Vec::new(),
            fee: Amount::ZERO,
        };
        for leg in &open.legs {
            let scripts = if leg.holder == SETTLEMENT_POOL {
                self.pool.scripts(accounts)?.into_keys().collect()
            } else {
                self.account_scripts(leg.holder).await?
            };
            facts.holders.extend(scripts.into_iter().map(|s| (s, leg.holder.0)));
            facts.deltas.insert(leg.holder.0, SignedAmount::from_sat(leg.delta));
            facts.fee += Amount::from_sat(leg.fee.0);
        }
        // The newest version carries every bump booked so far: each adds to the fee and comes
        // out of its payer's output.
        for bump in &open.bumps {
            facts.fee += Amount::from_sat(bump.extra.0);
            let delta = facts.deltas.entry(bump.payer.0).or_insert(SignedAmount::ZERO);
            *delta -= SignedAmount::from_sat(i64::try_from(bump.extra.0).context("a bump out of range")?);
        }
        for id in &open.withdrawals {
            let (_, w) = pending.iter().find(|(w, _)| w == id).context("a booked withdrawal is not pending")?;
            facts.withdrawals.push(Payment { script_pubkey: self.destination_script(&w.destination)?, amount: Amount::from_sat(w.amount.0) });
        }
        Ok(Some(facts))
    }

    /// The script of a withdrawal's destination address on this provider's network.
    pub(crate) fn destination_script(&self, destination: &str) -> anyhow::Result<ScriptBuf> {
        super::destination_script(destination, self.network)
    }

    /// The scripts of an account's vault addresses.
    pub(crate) async fn account_scripts(&self, account: AccountId) -> anyhow::Result<HashSet<ScriptBuf>> {
        let mut scripts = HashSet::new();
        for v in self.store.vaults_for(account).await? {
            for a in self.store.vault_addresses(&v.group_id).await? {
                let address = a.address.parse::<bitcoin::Address<bitcoin::address::NetworkUnchecked>>()?;
                scripts.insert(address.require_network(self.network)?.script_pubkey());
            }
        }
        Ok(scripts)
    }

    async fn record_refusal(&self, refusal: &Refusal, intent: &SpendIntent, eid: ExecutionId, account: Option<AccountId>) {
        refusal.log(intent.purpose);
        let record = RefusalRecord {
            id: 0,
            at: Timestamp(crate::node::now_millis()),
            signer: relay_role(refusal.signer).as_str().into(),
            code: refusal.code.as_str().into(),
            detail: refusal.detail.clone(),
            purpose: serde_json::to_string(&intent.purpose).unwrap_or_default(),
            execution_id: eid.to_hex(),
            group_id: Some(intent.input().group.to_string()),
            account_id: account,
        };
        if let Err(e) = self.store.insert_refusal(&record).await {
            tracing::error!(error = %e, "could not record a refusal");
        }
    }
}
