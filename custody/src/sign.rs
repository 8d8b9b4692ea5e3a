//! Signing a P2WPKH input: interactively, or in one round from a presignature.
//!
//! Owns: the signing entry points. Every one takes the transaction (or PSBT) and the input,
//! and computes the BIP-143 sighash itself ([`crate::bitcoin::p2wpkh_sighash`]); signing an
//! arbitrary 32-byte hash is crate-private. Every produced signature is verified against the
//! vault key and that sighash before it is returned.
//!
//! - [`Party::sign_input`]: full interactive signing (cggmp21 `signing(..).sign(..)`).
//! - [`Party::issue_partial_signature`]: one round from a stored presignature, which the store
//!   marks used on disk before the partial signature exists; [`Party::sign_inputs_presigned`]
//!   exchanges them for any number of inputs in one message.
//! - [`combine_partial_signatures`]: any party (or the coordinator) combines the threshold's
//!   partial signatures and checks the result.

use cggmp21::supported_curves::Secp256k1 as Curve;
use cggmp21::{PartialSignature, Signature};
use round_based::Mpc;
use serde::{Deserialize, Serialize};

use crate::bitcoin::{data_to_sign, finalize_signature, p2wpkh_sighash, InputSignature, InputToSign, SpendTx};
use crate::error::{CustodyError, ProtocolKind, Result};
use crate::group::{ExecutionId, PartyRole};
use crate::keygen::{VaultKey, VaultPublicKey};
use crate::party::Party;
use crate::presign::{PresignatureId, PresignatureStore};
use crate::primes::Level;
use crate::transport::{run_session, Envelope, Inbound, Link};

/// Signing / presigning protocol messages.
pub(crate) type SigningMsg = cggmp21::signing::msg::Msg<Curve, sha2::Sha256>;

/// A partial signature for one input, issued from a presignature. Not secret: it is sent to
/// the combiner.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PartialInputSignature {
    /// Presignature used (the same id for every signer of the set).
    pub presignature: PresignatureId,
    /// Issuer.
    pub signer: PartyRole,
    /// Signer set of the presignature (sorted).
    pub signers: Vec<PartyRole>,
    partial: PartialSignature<Curve>,
}

impl Party {
    /// Signs input `input.index` of `tx` for `key`, interactively with `signers` (exactly the
    /// threshold, including this party). The sighash is computed here from `tx`.
    pub async fn sign_input<'a, L: Link>(
        &self,
        key: &VaultKey,
        signers: &[PartyRole],
        eid: ExecutionId,
        tx: impl Into<SpendTx<'a>>,
        input: InputToSign,
        link: L,
    ) -> Result<InputSignature> {
        let sighash = p2wpkh_sighash(tx, input.index, input.prevout_value, &key.public_key)?;
        let sig = self.sign_hash(key, signers, eid, &sighash, link).await?;
        finalize_signature(sig, &sighash, &key.public_key)
    }

    /// Interactive signing of a raw hash. Crate-private on purpose: outside callers must go
    /// through [`Party::sign_input`], which derives the hash from the transaction.
    pub(crate) async fn sign_hash<L: Link>(
        &self,
        key: &VaultKey,
        signers: &[PartyRole],
        eid: ExecutionId,
        sighash: &[u8; 32],
        link: L,
    ) -> Result<Signature<Curve>> {
        key.check_for(self)?;
        let signers = self.group.check_signers(signers, Some(self.role))?;
        let (info, eid_bytes) = self.open_session(ProtocolKind::Sign, eid, &signers)?;
        let at_keygen: Vec<u16> = signers.iter().map(|r| r.index()).collect();
        let msg = data_to_sign(sighash);
        run_session::<SigningMsg, _, _, _, _, _>(ProtocolKind::Sign, info, link, self.config.session_timeout, |party| {
            sign_core(eid_bytes, info.me, at_keygen, &key.share, msg, party)
        })
        .await
    }

    /// Issues this party's partial signature for input `input.index` of `tx` from the
    /// presignature `presignature`. The store marks the presignature used (durably) first, so
    /// it can never sign a second message; if the presignature turns out not to fit this key /
    /// party, it is burned and an error returned.
    pub fn issue_partial_signature<'a>(
        &self,
        key: &VaultKey,
        store: &dyn PresignatureStore,
        presignature: PresignatureId,
        tx: impl Into<SpendTx<'a>>,
        input: InputToSign,
    ) -> Result<PartialInputSignature> {
        key.check_for(self)?;
        let sighash = p2wpkh_sighash(tx, input.index, input.prevout_value, &key.public_key)?;
        let stored = store.consume(&presignature)?;
        let mismatch = |reason: &str| CustodyError::PresignatureMismatch { id: presignature, reason: reason.into() };
        if stored.id() != presignature {
            return Err(mismatch("store returned another presignature"));
        }
        if stored.group() != self.group.id || stored.public_key() != key.public_key {
            return Err(mismatch("made for another key"));
        }
        if stored.holder() != self.role || !stored.signers().contains(&self.role) {
            return Err(mismatch("held by another party"));
        }
        let (signers, presig) = stored.into_parts();
        let partial = presig.issue_partial_signature(data_to_sign(&sighash));
        Ok(PartialInputSignature { presignature, signer: self.role, signers, partial })
    }
}

/// A presignature to sign from: its id, in the store that holds this party's half.
#[derive(Clone, Copy)]
pub struct PresignatureRef<'s> {
    pub store: &'s dyn PresignatureStore,
    pub id: PresignatureId,
}

impl Party {
    /// Signs input `input.index` of `tx` in one round from presignature `presignature`: see
    /// [`Party::sign_inputs_presigned`], for one input.
    #[allow(clippy::too_many_arguments)]
    pub async fn sign_input_presigned<'a, L: Link>(
        &self,
        key: &VaultKey,
        presignature: PresignatureRef<'_>,
        signers: &[PartyRole],
        eid: ExecutionId,
        tx: impl Into<SpendTx<'a>>,
        input: InputToSign,
        link: L,
    ) -> Result<InputSignature> {
        let signed = self.sign_inputs_presigned(&[(key, presignature.id, input)], signers, presignature.store, eid, tx, link).await?;
        signed.into_iter().next().ok_or_else(|| CustodyError::Combine("no signature".into()))
    }

    /// Signs several inputs of `tx` in one round, each with its key from its presignature, over
    /// a link among exactly the presignatures' signers (session `eid`, a fresh execution id; the
    /// link's indices are the sorted signer roles). Every signer burns its presignatures and
    /// issues its partial signatures ([`Party::issue_partial_signature`]) only once it has the
    /// partials of every signer before it in role order, and sends them all to every other
    /// signer in one message; then combines. So a session the first signer refuses, or cannot
    /// join (it lacks a presignature), costs the others none of theirs. Every signer ends with
    /// every input's verified signature, in the order given.
    pub async fn sign_inputs_presigned<'a, L: Link>(
        &self,
        inputs: &[(&VaultKey, PresignatureId, InputToSign)],
        signers: &[PartyRole],
        store: &dyn PresignatureStore,
        eid: ExecutionId,
        tx: impl Into<SpendTx<'a>>,
        link: L,
    ) -> Result<Vec<InputSignature>> {
        use futures::{SinkExt, StreamExt};
        let tx: SpendTx<'a> = tx.into();
        let library = |why: String| CustodyError::Protocol {
            protocol: ProtocolKind::Sign,
            eid,
            reason: crate::error::ProtocolFailure::Library(why),
        };
        let failed = |e: crate::error::TransportError| CustodyError::Protocol {
            protocol: ProtocolKind::Sign,
            eid,
            reason: crate::error::ProtocolFailure::Transport(e),
        };
        if inputs.is_empty() {
            return Err(library("no input to sign".into()));
        }
        // The presignatures' signer set (each is checked against it when it is burned).
        let signers = self.group.check_signers(signers, Some(self.role))?;
        let (info, _) = self.open_session(ProtocolKind::Sign, eid, &signers)?;
        let finisher = link.finish_notice();
        let aborter = link.abort_sender();
        let (mut rx, mut tx_sink) = link.split();
        let exchange = async {
            // Each signer's partials, by signer index.
            let mut by_signer: Vec<Option<Vec<PartialInputSignature>>> = vec![None; info.n as usize];
            let mut sent = false;
            loop {
                if !sent && by_signer[..info.me as usize].iter().all(Option::is_some) {
                    let mine: Vec<PartialInputSignature> = inputs
                        .iter()
                        .map(|(key, id, input)| self.issue_partial_signature(key, store, *id, tx, *input))
                        .collect::<Result<_>>()?;
                    if mine.iter().any(|p| p.signers != signers) {
                        return Err(library("the presignatures were made by different signer sets".into()));
                    }
                    let payload =
                        serde_json::to_vec(&mine).map_err(|e| library(format!("encoding the partial signatures: {e}")))?;
                    for peer in (0..info.n).filter(|i| *i != info.me) {
                        let env = Envelope { eid, sender: info.me, recipient: peer, broadcast: true, seq: 0, payload: payload.clone(), abort: None };
                        tx_sink.send(env).await.map_err(failed)?;
                    }
                    by_signer[info.me as usize] = Some(mine);
                    sent = true;
                }
                if by_signer.iter().all(Option::is_some) {
                    break;
                }
                let env = rx
                    .next()
                    .await
                    .ok_or_else(|| failed(crate::error::TransportError::Closed))?
                    .into_inbound()
                    .map_err(failed)?;
                if env.eid != eid {
                    return Err(failed(crate::error::TransportError::WrongSession { expected: eid, got: env.eid }));
                }
                if env.sender >= info.n || env.sender == info.me {
                    return Err(failed(crate::error::TransportError::UnknownSender { sender: env.sender, n: info.n, me: info.me }));
                }
                if env.recipient != info.me {
                    return Err(failed(crate::error::TransportError::Misrouted {
                        sender: env.sender,
                        recipient: env.recipient,
                        me: info.me,
                    }));
                }
                if let Some(reason) = env.abort {
                    return Err(library(format!("party {} aborted: {reason}", env.sender)));
                }
                let theirs: Vec<PartialInputSignature> = serde_json::from_slice(&env.payload)
                    .map_err(|e| library(format!("party {} sent malformed partial signatures: {e}", env.sender)))?;
                if theirs.len() != inputs.len() || theirs.iter().any(|p| p.signer != signers[env.sender as usize]) {
                    return Err(library(format!("party {} sent partial signatures for other inputs or as another signer", env.sender)));
                }
                if by_signer[env.sender as usize].replace(theirs).is_some() {
                    return Err(library(format!("two sets of partial signatures from party {}", env.sender)));
                }
            }
            Ok(by_signer.into_iter().flatten().collect::<Vec<_>>())
        };
        let sets = match tokio::time::timeout(self.config.session_timeout, exchange).await {
            Ok(Ok(sets)) => sets,
            failure => {
                let err = match failure {
                    Ok(Err(e)) => e,
                    _ => CustodyError::Timeout { protocol: ProtocolKind::Sign, eid, after: self.config.session_timeout },
                };
                // The others need not wait for their deadline (unless they are the ones who
                // gave up).
                let peer_aborted = matches!(&err, CustodyError::Protocol { reason: crate::error::ProtocolFailure::Library(why), .. } if why.contains("aborted"));
                if let (Some(send), false) = (aborter, peer_aborted) {
                    for peer in (0..info.n).filter(|j| *j != info.me) {
                        send(Envelope { eid, sender: info.me, recipient: peer, broadcast: false, seq: 0, payload: Vec::new(), abort: Some("signing failed".into()) });
                    }
                }
                return Err(err);
            }
        };
        let signatures = inputs
            .iter()
            .enumerate()
            .map(|(i, (key, _, input))| {
                let partials: Vec<PartialInputSignature> = sets.iter().map(|set| set[i].clone()).collect();
                combine_partial_signatures(&key.public(), tx, *input, &partials)
            })
            .collect::<Result<Vec<_>>>()?;
        if let Some(finish) = finisher {
            finish();
        }
        Ok(signatures)
    }
}

/// Combines the partial signatures of a presignature's whole signer set into the input's
/// signature, computing the sighash from `tx` and verifying the result. A cheating signer or
/// partials for another transaction yield an error, not a bad signature.
pub fn combine_partial_signatures<'a>(
    key: &VaultPublicKey,
    tx: impl Into<SpendTx<'a>>,
    input: InputToSign,
    partials: &[PartialInputSignature],
) -> Result<InputSignature> {
    let sighash = p2wpkh_sighash(tx, input.index, input.prevout_value, &key.public_key)?;
    let first = partials.first().ok_or_else(|| CustodyError::Combine("no partial signatures".into()))?;
    if partials.len() != key.threshold as usize {
        return Err(CustodyError::Combine(format!("{} partial signatures, threshold is {}", partials.len(), key.threshold)));
    }
    let mut signers: Vec<PartyRole> = partials.iter().map(|p| p.signer).collect();
    signers.sort();
    signers.dedup();
    if signers.len() != partials.len() {
        return Err(CustodyError::Combine("two partial signatures from the same signer".into()));
    }
    if partials.iter().any(|p| p.presignature != first.presignature || p.signers != first.signers) {
        return Err(CustodyError::Combine("partial signatures come from different presignatures".into()));
    }
    if signers != first.signers {
        return Err(CustodyError::Combine(format!("signers {signers:?} are not the presignature's set {:?}", first.signers)));
    }
    if partials.iter().any(|p| p.partial.r != first.partial.r) {
        return Err(CustodyError::Combine("partial signatures disagree on r".into()));
    }
    let raw: Vec<PartialSignature<Curve>> = partials.iter().map(|p| p.partial.clone()).collect();
    let sig = PartialSignature::combine(&raw).ok_or_else(|| CustodyError::Combine("degenerate signature".into()))?;
    finalize_signature(sig, &sighash, &key.public_key)
}

/// Interactive signing over any round-based party.
async fn sign_core<M>(
    eid_bytes: [u8; 32],
    i: u16,
    at_keygen: Vec<u16>,
    share: &cggmp21::KeyShare<Curve, Level>,
    msg: cggmp21::DataToSign<Curve>,
    party: M,
) -> std::result::Result<Signature<Curve>, cggmp21::SigningError>
where
    M: Mpc<ProtocolMessage = SigningMsg>,
{
    let eid = cggmp21::ExecutionId::new(&eid_bytes);
    cggmp21::signing(eid, i, &at_keygen, share).sign(&mut rand::rngs::OsRng, party, msg).await
}
