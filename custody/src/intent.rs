//! Spend intents: what a signing session asks its signers to sign, as its opener states it.
//!
//! A signing session carries its intent beside it on the relay: the purpose, the whole PSBT,
//! the input to sign and the vault key that owns it. The intent is a claim, not a fact: every
//! signer decodes it, finds its own share for the named key, checks that the input really pays
//! that key ([`SpendIntent::check_input`]), runs its own policy on the whole PSBT, and only
//! then joins; the sighash it signs is computed from that same PSBT.
//!
//! One session signs one input (interactive cggmp21 signing gives the signature to every
//! signer); a spend with several inputs opens one session per input, concurrently.

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

/// A signing session's intent.
#[derive(Clone, Debug, PartialEq)]
pub struct SpendIntent {
    pub purpose: SpendPurpose,
    pub psbt: Psbt,
    pub input: IntentInput,
    /// The two signers (sorted).
    pub signers: Vec<PartyRole>,
    /// Sign in one round from this presignature, which both signers made together earlier;
    /// `None`: interactive signing.
    pub presignature: Option<PresignatureId>,
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
    #[error("the intent needs exactly two distinct signers, not {0:?}")]
    Signers(Vec<PartyRole>),
}

/// The wire form: the PSBT in hex (BIP-174 bytes).
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    purpose: SpendPurpose,
    psbt: String,
    input: IntentInput,
    signers: Vec<PartyRole>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    presignature: Option<PresignatureId>,
}

impl SpendIntent {
    pub fn new(
        purpose: SpendPurpose,
        psbt: Psbt,
        input: IntentInput,
        signers: &[PartyRole],
    ) -> Result<SpendIntent, IntentError> {
        let mut signers = signers.to_vec();
        signers.sort();
        signers.dedup();
        if signers.len() != 2 {
            return Err(IntentError::Signers(signers));
        }
        if input.index as usize >= psbt.inputs.len() {
            return Err(IntentError::NoSuchInput { index: input.index, inputs: psbt.inputs.len() });
        }
        Ok(SpendIntent { purpose, psbt, input, signers, presignature: None })
    }

    /// The same spend, signed in one round from `presignature`.
    pub fn with_presignature(self, presignature: PresignatureId) -> SpendIntent {
        SpendIntent { presignature: Some(presignature), ..self }
    }

    /// JSON text for the relay.
    pub fn to_json(&self) -> String {
        let wire = Wire {
            purpose: self.purpose,
            psbt: hex::encode(self.psbt.serialize()),
            input: self.input,
            signers: self.signers.clone(),
            presignature: self.presignature,
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
        let intent = SpendIntent::new(wire.purpose, psbt, wire.input, &wire.signers)?;
        Ok(SpendIntent { presignature: wire.presignature, ..intent })
    }

    /// The input this session signs, as the signing calls take it (its value from the PSBT).
    /// Checks that the input spends an output paying `key`: a signer never lends its share
    /// to an input of another key.
    pub fn check_input(&self, me: PartyRole, key: &VaultKey) -> Result<InputToSign, Refusal> {
        let i = self.input.index as usize;
        let utxo = self.psbt.inputs.get(i).and_then(|p| p.witness_utxo.as_ref()).ok_or_else(|| {
            Refusal::new(me, RefusalCode::MissingInputValue, format!("input {i} has no witness_utxo"))
        })?;
        let expected: ScriptBuf = key.script_pubkey();
        if utxo.script_pubkey != expected {
            return Err(Refusal::new(
                me,
                RefusalCode::ForeignInput,
                format!("input {i} pays {}, not key {} of vault {}", utxo.script_pubkey, self.input.key_index, self.input.group),
            ));
        }
        Ok(InputToSign { index: i, prevout_value: utxo.value })
    }

    /// The value of the input being signed (zero when the PSBT lacks it; `check_input` refuses
    /// those).
    pub fn input_value(&self) -> Amount {
        self.psbt
            .inputs
            .get(self.input.index as usize)
            .and_then(|p| p.witness_utxo.as_ref())
            .map_or(Amount::ZERO, |u| u.value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitcoin::absolute::LockTime;
    use bitcoin::transaction::Version;
    use bitcoin::{OutPoint, Sequence, Transaction, TxIn, TxOut, Witness};

    fn psbt() -> Psbt {
        let tx = Transaction {
            version: Version::TWO,
            lock_time: LockTime::ZERO,
            input: vec![TxIn {
                previous_output: OutPoint::null(),
                script_sig: ScriptBuf::new(),
                sequence: Sequence::ENABLE_RBF_NO_LOCKTIME,
                witness: Witness::new(),
            }],
            output: vec![TxOut { value: Amount::from_sat(1_000), script_pubkey: ScriptBuf::new() }],
        };
        Psbt::from_unsigned_tx(tx).unwrap()
    }

    #[test]
    fn an_intent_survives_the_wire_and_bad_ones_are_named() {
        let input = IntentInput { index: 0, group: GroupId([7; 16]), key_index: 3 };
        let intent = SpendIntent::new(
            SpendPurpose::Withdrawal { withdrawal: 9 },
            psbt(),
            input,
            &[PartyRole::Provider, PartyRole::Wallet],
        )
        .unwrap();
        let back = SpendIntent::from_json(&intent.to_json()).unwrap();
        assert_eq!(back, intent);
        let presigned = intent.clone().with_presignature(crate::ExecutionId([5; 32]));
        assert_eq!(SpendIntent::from_json(&presigned.to_json()).unwrap(), presigned);
        assert_eq!(back.signers, vec![PartyRole::Wallet, PartyRole::Provider]);

        assert!(matches!(SpendIntent::from_json("{}"), Err(IntentError::Json(_))));
        let bad_hex = intent.to_json().replace("\"psbt\":\"", "\"psbt\":\"zz");
        assert_eq!(SpendIntent::from_json(&bad_hex), Err(IntentError::PsbtHex));
        let no_input = SpendIntent::new(intent.purpose, psbt(), IntentInput { index: 1, ..input }, &intent.signers);
        assert_eq!(no_input, Err(IntentError::NoSuchInput { index: 1, inputs: 1 }));
        let one_signer = SpendIntent::new(intent.purpose, psbt(), input, &[PartyRole::Wallet, PartyRole::Wallet]);
        assert!(matches!(one_signer, Err(IntentError::Signers(_))));
    }
}
