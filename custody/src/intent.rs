//! Spend intents: what a signing session asks its signers to sign, as its opener states it.
//!
//! A signing session carries its intent beside it on the relay: the purpose, the whole PSBT,
//! the input to sign and the vault key that owns it. The intent is a claim, not a fact: every
//! signer decodes it, finds its own share for the named key, checks that the input really pays
//! that key ([`SpendIntent::check_input`]), runs its own policy on the whole PSBT, and only
//! then joins; the sighash it signs is computed from that same PSBT.
//!
//! An interactive session signs one input (cggmp21 signing gives the signature to every
//! signer). A one-round session, from presignatures, signs any number of inputs of one vault at
//! once (one presignature each, all partial signatures in one message): a settlement batch's
//! inputs of one wallet cost one session.

use bitcoin::{Amount, Psbt, ScriptBuf};
use serde::{Deserialize, Serialize};

use crate::bitcoin::InputToSign;
use crate::group::{GroupId, PartyRole};
use crate::keygen::VaultKey;
use crate::policy::{Refusal, RefusalCode, SpendPurpose};
use crate::presign::PresignatureId;

/// Largest PSBT an intent may carry (the relay limits intents too).
pub const MAX_PSBT_BYTES: usize = 128 << 10;

/// Which vault key signs which input.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntentInput {
    /// Input index in the PSBT.
    pub index: u32,
    /// The vault (signer group).
    pub group: GroupId,
    /// The vault's address key, in creation order.
    pub key_index: u64,
}

/// Most inputs one session signs.
pub const MAX_INPUTS_PER_SESSION: usize = 1_000;

/// A signing session's intent.
#[derive(Clone, Debug, PartialEq)]
pub struct SpendIntent {
    pub purpose: SpendPurpose,
    pub psbt: Psbt,
    /// The inputs to sign, all of one vault, distinct; at least one.
    pub inputs: Vec<IntentInput>,
    /// The two signers (sorted).
    pub signers: Vec<PartyRole>,
    /// Sign in one round from these presignatures, one per input in order, which both signers
    /// made together earlier; empty: interactive signing (one input).
    pub presignatures: Vec<PresignatureId>,
}

/// A presigning session's intent: which key the presignature is for (the signers are the
/// session's parties).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PresignIntent {
    pub group: GroupId,
    /// The vault key's compressed public key, hex.
    pub public_key: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IntentError {
    #[error("the intent is not valid JSON of a spend intent: {0}")]
    Json(String),
    #[error("the intent's PSBT is not hex")]
    PsbtHex,
    #[error("the intent's PSBT has {0} bytes; at most {MAX_PSBT_BYTES}")]
    PsbtTooLarge(usize),
    #[error("the intent's PSBT does not decode: {0}")]
    Psbt(String),
    #[error("the intent names input {index}, the PSBT has {inputs}")]
    NoSuchInput { index: u32, inputs: usize },
    #[error("the intent's inputs are not one or more distinct inputs of one vault, at most {MAX_INPUTS_PER_SESSION}")]
    Inputs,
    #[error("the intent names {presignatures} presignatures for {inputs} inputs (one each, or none for one input)")]
    Presignatures { presignatures: usize, inputs: usize },
    #[error("the intent needs exactly two distinct signers, not {0:?}")]
    Signers(Vec<PartyRole>),
}

/// The wire form: the PSBT in hex (BIP-174 bytes).
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    purpose: SpendPurpose,
    psbt: String,
    inputs: Vec<IntentInput>,
    signers: Vec<PartyRole>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    presignatures: Vec<PresignatureId>,
}

impl SpendIntent {
    /// An intent to sign `inputs` (of one vault) interactively, or from presignatures once
    /// [`SpendIntent::with_presignatures`] names them.
    pub fn new(
        purpose: SpendPurpose,
        psbt: Psbt,
        inputs: Vec<IntentInput>,
        signers: &[PartyRole],
    ) -> Result<SpendIntent, IntentError> {
        let mut signers = signers.to_vec();
        signers.sort();
        signers.dedup();
        if signers.len() != 2 {
            return Err(IntentError::Signers(signers));
        }
        let Some(first) = inputs.first() else { return Err(IntentError::Inputs) };
        if inputs.len() > MAX_INPUTS_PER_SESSION || inputs.iter().any(|i| i.group != first.group) {
            return Err(IntentError::Inputs);
        }
        let mut seen = std::collections::HashSet::new();
        for i in &inputs {
            if i.index as usize >= psbt.inputs.len() {
                return Err(IntentError::NoSuchInput { index: i.index, inputs: psbt.inputs.len() });
            }
            if !seen.insert(i.index) {
                return Err(IntentError::Inputs);
            }
        }
        Ok(SpendIntent { purpose, psbt, inputs, signers, presignatures: Vec::new() })
    }

    /// The same spend, signed in one round from `presignatures` (one per input, in order).
    pub fn with_presignatures(self, presignatures: Vec<PresignatureId>) -> Result<SpendIntent, IntentError> {
        if presignatures.len() != self.inputs.len() {
            return Err(IntentError::Presignatures { presignatures: presignatures.len(), inputs: self.inputs.len() });
        }
        Ok(SpendIntent { presignatures, ..self })
    }

    /// The first input (the only one of an interactive session).
    pub fn input(&self) -> IntentInput {
        self.inputs[0]
    }

    /// Whether the session signs in one round from presignatures.
    pub fn presigned(&self) -> bool {
        !self.presignatures.is_empty()
    }

    /// JSON text for the relay.
    pub fn to_json(&self) -> String {
        let wire = Wire {
            purpose: self.purpose,
            psbt: hex::encode(self.psbt.serialize()),
            inputs: self.inputs.clone(),
            signers: self.signers.clone(),
            presignatures: self.presignatures.clone(),
        };
        serde_json::to_string(&wire).unwrap_or_default()
    }

    /// Decodes and checks the shape (not the policy) of an intent someone else wrote.
    pub fn from_json(text: &str) -> Result<SpendIntent, IntentError> {
        let wire: Wire = serde_json::from_str(text).map_err(|e| IntentError::Json(e.to_string()))?;
        if wire.psbt.len() / 2 > MAX_PSBT_BYTES {
            return Err(IntentError::PsbtTooLarge(wire.psbt.len() / 2));
        }
        let bytes = hex::decode(wire.psbt.trim()).map_err(|_| IntentError::PsbtHex)?;
        let psbt = Psbt::deserialize(&bytes).map_err(|e| IntentError::Psbt(e.to_string()))?;
        let intent = SpendIntent::new(wire.purpose, psbt, wire.inputs, &wire.signers)?;
        match wire.presignatures.is_empty() {
            true if intent.inputs.len() > 1 => Err(IntentError::Presignatures { presignatures: 0, inputs: intent.inputs.len() }),
            true => Ok(intent),
            false => intent.with_presignatures(wire.presignatures),
        }
    }

    /// Input `input` of this intent as the signing calls take it (its value from the PSBT).
    /// Checks that it spends an output paying `key`: a signer never lends its share to an
    /// input of another key.
    pub fn check_input(&self, me: PartyRole, input: &IntentInput, key: &VaultKey) -> Result<InputToSign, Refusal> {
        let i = input.index as usize;
        let utxo = self.psbt.inputs.get(i).and_then(|p| p.witness_utxo.as_ref()).ok_or_else(|| {
            Refusal::new(me, RefusalCode::MissingInputValue, format!("input {i} has no witness_utxo"))
        })?;
        let expected: ScriptBuf = key.script_pubkey();
        if utxo.script_pubkey != expected {
            return Err(Refusal::new(
                me,
                RefusalCode::ForeignInput,
                format!("input {i} pays {}, not key {} of vault {}", utxo.script_pubkey, input.key_index, input.group),
            ));
        }
        Ok(InputToSign { index: i, prevout_value: utxo.value })
    }

    /// What the intent's inputs spend, together (zero for inputs the PSBT lacks the value of;
    /// `check_input` refuses those).
    pub fn input_value(&self) -> Amount {
        self.inputs
            .iter()
            .filter_map(|i| self.psbt.inputs.get(i.index as usize).and_then(|p| p.witness_utxo.as_ref()))
            .map(|u| u.value)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitcoin::absolute::LockTime;
    use bitcoin::transaction::Version;
    use bitcoin::hashes::Hash as _;
    use bitcoin::{OutPoint, Sequence, Transaction, TxIn, TxOut, Witness};

    fn psbt(inputs: u32) -> Psbt {
        let tx = Transaction {
            version: Version::TWO,
            lock_time: LockTime::ZERO,
            input: (0..inputs)
                .map(|vout| TxIn {
                    previous_output: OutPoint { txid: bitcoin::Txid::from_byte_array([1; 32]), vout },
                    script_sig: ScriptBuf::new(),
                    sequence: Sequence::ENABLE_RBF_NO_LOCKTIME,
                    witness: Witness::new(),
                })
                .collect(),
            output: vec![TxOut { value: Amount::from_sat(1_000), script_pubkey: ScriptBuf::new() }],
        };
        Psbt::from_unsigned_tx(tx).unwrap()
    }

    #[test]
    fn an_intent_survives_the_wire_and_bad_ones_are_named() {
        let input = IntentInput { index: 0, group: GroupId([7; 16]), key_index: 3 };
        let intent = SpendIntent::new(
            SpendPurpose::Withdrawal { withdrawal: 9 },
            psbt(2),
            vec![input],
            &[PartyRole::Provider, PartyRole::Wallet],
        )
        .unwrap();
        let back = SpendIntent::from_json(&intent.to_json()).unwrap();
        assert_eq!(back, intent);
        let presigned = intent.clone().with_presignatures(vec![crate::ExecutionId([5; 32])]).unwrap();
        assert_eq!(SpendIntent::from_json(&presigned.to_json()).unwrap(), presigned);
        assert_eq!(back.signers, vec![PartyRole::Wallet, PartyRole::Provider]);

        // Several inputs of one vault, one presignature each.
        let second = IntentInput { index: 1, key_index: 4, ..input };
        let two = SpendIntent::new(intent.purpose, psbt(2), vec![input, second], &intent.signers).unwrap();
        assert!(matches!(two.clone().with_presignatures(vec![crate::ExecutionId([5; 32])]), Err(IntentError::Presignatures { .. })));
        let two = two.with_presignatures(vec![crate::ExecutionId([5; 32]), crate::ExecutionId([6; 32])]).unwrap();
        assert_eq!(SpendIntent::from_json(&two.to_json()).unwrap(), two);
        // ...but never several interactively, twice the same, or of two vaults.
        let interactive = two.to_json().replace(&format!(",\"presignatures\":{}", serde_json::to_string(&two.presignatures).unwrap()), "");
        assert!(matches!(SpendIntent::from_json(&interactive), Err(IntentError::Presignatures { presignatures: 0, inputs: 2 })));
        let twice = SpendIntent::new(intent.purpose, psbt(2), vec![input, input], &intent.signers);
        assert_eq!(twice, Err(IntentError::Inputs));
        let other_vault = IntentInput { group: GroupId([8; 16]), ..second };
        assert_eq!(SpendIntent::new(intent.purpose, psbt(2), vec![input, other_vault], &intent.signers), Err(IntentError::Inputs));
        assert_eq!(SpendIntent::new(intent.purpose, psbt(2), vec![], &intent.signers), Err(IntentError::Inputs));

        assert!(matches!(SpendIntent::from_json("{}"), Err(IntentError::Json(_))));
        let bad_hex = intent.to_json().replace("\"psbt\":\"", "\"psbt\":\"zz");
        assert_eq!(SpendIntent::from_json(&bad_hex), Err(IntentError::PsbtHex));
        let no_input = SpendIntent::new(intent.purpose, psbt(2), vec![IntentInput { index: 2, ..input }], &intent.signers);
        assert_eq!(no_input, Err(IntentError::NoSuchInput { index: 2, inputs: 2 }));
        let one_signer = SpendIntent::new(intent.purpose, psbt(2), vec![input], &[PartyRole::Wallet, PartyRole::Wallet]);
        assert!(matches!(one_signer, Err(IntentError::Signers(_))));
    }
}
