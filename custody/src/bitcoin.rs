//! Bitcoin side of signing: BIP-143 sighash, signature encoding, P2WPKH witness.
//!
//! Owns: computing the P2WPKH sighash of an input from the transaction (or PSBT) a signer was
//! shown ([`p2wpkh_sighash`]), turning cggmp21's signature into a Bitcoin one (low-S, DER,
//! SIGHASH_ALL) after checking it with libsecp256k1, and placing it in a witness / PSBT.
//! A signer never signs a hash handed to it: the signing API takes the transaction and the
//! input, and the hash is computed here.

use bitcoin::hashes::Hash;
use bitcoin::psbt::Psbt;
use bitcoin::secp256k1::{self, Message, Secp256k1};
use bitcoin::sighash::{EcdsaSighashType, SighashCache};
use bitcoin::{Address, Amount, CompressedPublicKey, Network, ScriptBuf, Transaction, Witness};
use cggmp21::supported_curves::Secp256k1 as Curve;

use crate::error::{CustodyError, Result};

/// The transaction a signer is asked to sign an input of: a bare transaction, or a PSBT whose
/// input metadata (`witness_utxo`) is cross-checked against the claimed previous output.
#[derive(Debug, Clone, Copy)]
pub enum SpendTx<'a> {
    /// An unsigned (or partially signed) transaction.
    Tx(&'a Transaction),
    /// A PSBT.
    Psbt(&'a Psbt),
}

impl<'a> From<&'a Transaction> for SpendTx<'a> {
    fn from(tx: &'a Transaction) -> Self {
        SpendTx::Tx(tx)
    }
}

impl<'a> From<&'a Psbt> for SpendTx<'a> {
    fn from(p: &'a Psbt) -> Self {
        SpendTx::Psbt(p)
    }
}

impl<'a> SpendTx<'a> {
    /// The unsigned transaction.
    pub fn tx(&self) -> &'a Transaction {
        match self {
            SpendTx::Tx(t) => t,
            SpendTx::Psbt(p) => &p.unsigned_tx,
        }
    }
}

/// Which input to sign and the value of the output it spends (BIP-143 commits to it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InputToSign {
    /// Input index in the transaction.
    pub index: usize,
    /// Value of the previous output being spent.
    pub prevout_value: Amount,
}

/// The P2WPKH output script paying `pubkey`.
pub fn p2wpkh_script(pubkey: &CompressedPublicKey) -> ScriptBuf {
    ScriptBuf::new_p2wpkh(&pubkey.wpubkey_hash())
}

/// The P2WPKH address of `pubkey` on `network`.
pub fn p2wpkh_address(pubkey: &CompressedPublicKey, network: Network) -> Address {
    Address::p2wpkh(pubkey, network)
}

/// BIP-143 SIGHASH_ALL digest of input `input_index` spending a P2WPKH output of `pubkey`
/// worth `prevout_value`. With a PSBT, the input's `witness_utxo`, if present, must match the
/// claimed script and value.
pub fn p2wpkh_sighash<'a>(
    tx: impl Into<SpendTx<'a>>,
    input_index: usize,
    prevout_value: Amount,
    pubkey: &CompressedPublicKey,
) -> Result<[u8; 32]> {
    let spend = tx.into();
    let script = p2wpkh_script(pubkey);
    if let SpendTx::Psbt(psbt) = spend {
        let input = psbt
            .inputs
            .get(input_index)
            .ok_or_else(|| CustodyError::Transaction(format!("PSBT has no input {input_index}")))?;
        if let Some(utxo) = &input.witness_utxo {
            if utxo.value != prevout_value || utxo.script_pubkey != script {
                return Err(CustodyError::Transaction(format!(
                    "PSBT input {input_index} spends {} to another script than the claimed {prevout_value} to this vault key",
                    utxo.value
                )));
            }
        }
    }
    let tx = spend.tx();
    if input_index >= tx.input.len() {
        return Err(CustodyError::Transaction(format!(
            "input {input_index} out of range ({} inputs)",
            tx.input.len()
        )));
    }
    let mut cache = SighashCache::new(tx);
    let h = cache
        .p2wpkh_signature_hash(input_index, &script, prevout_value, EcdsaSighashType::All)
        .map_err(|e| CustodyError::Transaction(format!("sighash of input {input_index}: {e}")))?;
    Ok(h.to_byte_array())
}

/// A finished input signature: DER + SIGHASH_ALL, for the key `public_key`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InputSignature {
    /// Low-S ECDSA signature with its sighash type (ALL).
    pub signature: bitcoin::ecdsa::Signature,
    /// The vault key it verifies under.
    pub public_key: CompressedPublicKey,
}

impl InputSignature {
    /// `DER(sig) || 0x01`, the first witness item.
    pub fn der_with_sighash(&self) -> Vec<u8> {
        self.signature.to_vec()
    }

    /// The P2WPKH witness `[sig || 0x01, pubkey]`.
    pub fn witness(&self) -> Witness {
        Witness::p2wpkh(&self.signature, &self.public_key.0)
    }

    /// Puts the witness into input `index` of `tx`.
    pub fn apply_to_tx(&self, tx: &mut Transaction, index: usize) -> Result<()> {
        let input = tx
            .input
            .get_mut(index)
            .ok_or_else(|| CustodyError::Transaction(format!("input {index} out of range")))?;
        input.witness = self.witness();
        Ok(())
    }

    /// Adds the signature to the PSBT input's `partial_sigs`.
    pub fn apply_to_psbt(&self, psbt: &mut Psbt, index: usize) -> Result<()> {
        let input = psbt
            .inputs
            .get_mut(index)
            .ok_or_else(|| CustodyError::Transaction(format!("PSBT input {index} out of range")))?;
        input.partial_sigs.insert(bitcoin::PublicKey::new(self.public_key.0), self.signature);
        Ok(())
    }
}

/// Checks input `index` of a signed `tx` against the output it spends with Bitcoin Core's
/// script interpreter (libbitcoinconsensus, all pre-taproot soft-fork rules): the last check
/// before a transaction is handed to the network.
pub fn verify_input_consensus(tx: &Transaction, index: usize, prevout: &bitcoin::TxOut) -> Result<()> {
    bitcoinconsensus::verify(
        prevout.script_pubkey.as_bytes(),
        prevout.value.to_sat(),
        &bitcoin::consensus::serialize(tx),
        None,
        index,
    )
    .map_err(|e| CustodyError::Transaction(format!("input {index} fails script verification: {e:?}")))
}

/// Converts a vault key's public point to a compressed Bitcoin key.
pub(crate) fn compressed_key(point: &cggmp21::generic_ec::Point<Curve>) -> Result<CompressedPublicKey> {
    CompressedPublicKey::from_slice(&point.to_bytes(true))
        .map_err(|e| CustodyError::InvalidKeyShare(format!("shared public key is not a valid secp256k1 point: {e}")))
}

/// The scalar cggmp21 signs for a 32-byte sighash (ECDSA takes the hash as a big-endian
/// integer mod n, exactly as libsecp256k1 does).
pub(crate) fn data_to_sign(sighash: &[u8; 32]) -> cggmp21::DataToSign<Curve> {
    cggmp21::DataToSign::from_scalar(cggmp21::generic_ec::Scalar::from_be_bytes_mod_order(sighash))
}

/// Normalizes to low-S, checks the signature with libsecp256k1 against `pubkey` and
/// `sighash`, and wraps it as a SIGHASH_ALL Bitcoin signature. A signature that does not
/// verify (a cheating signer, a mismatched presignature) is an error, never released.
pub(crate) fn finalize_signature(
    sig: cggmp21::Signature<Curve>,
    sighash: &[u8; 32],
    pubkey: &CompressedPublicKey,
) -> Result<InputSignature> {
    let sig = sig.normalize_s();
    let mut compact = [0u8; 64];
    sig.write_to_slice(&mut compact);
    let mut ecdsa = secp256k1::ecdsa::Signature::from_compact(&compact).map_err(|_| CustodyError::SignatureInvalid)?;
    // cggmp21 already normalizes; libsecp256k1's normalization is the one consensus enforces.
    ecdsa.normalize_s();
    let secp = Secp256k1::verification_only();
    secp.verify_ecdsa(&Message::from_digest(*sighash), &ecdsa, &pubkey.0)
        .map_err(|_| CustodyError::SignatureInvalid)?;
    Ok(InputSignature { signature: bitcoin::ecdsa::Signature::sighash_all(ecdsa), public_key: *pubkey })
}

/// Serde for compressed public keys as hex (bitcoin's serde feature is off in this workspace).
pub(crate) mod pubkey_hex {
    use bitcoin::CompressedPublicKey;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(pk: &CompressedPublicKey, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(pk.to_bytes()))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<CompressedPublicKey, D::Error> {
        let s = String::deserialize(d)?;
        let b = hex::decode(&s).map_err(serde::de::Error::custom)?;
        CompressedPublicKey::from_slice(&b).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitcoin::absolute::LockTime;
    use bitcoin::transaction::Version;
    use bitcoin::{OutPoint, Sequence, TxIn, TxOut, Txid};

    fn key() -> CompressedPublicKey {
        let secp = Secp256k1::new();
        let sk = secp256k1::SecretKey::from_slice(&[7u8; 32]).unwrap();
        CompressedPublicKey(secp256k1::PublicKey::from_secret_key(&secp, &sk))
    }

    fn tx() -> Transaction {
        Transaction {
            version: Version::TWO,
            lock_time: LockTime::ZERO,
            input: vec![TxIn {
                previous_output: OutPoint { txid: Txid::all_zeros(), vout: 0 },
                script_sig: ScriptBuf::new(),
                sequence: Sequence::MAX,
                witness: Witness::new(),
            }],
            output: vec![TxOut { value: Amount::from_sat(9_000), script_pubkey: p2wpkh_script(&key()) }],
        }
    }

    #[test]
    fn sighash_checks_input_and_psbt_utxo() {
        let pk = key();
        let t = tx();
        let h = p2wpkh_sighash(&t, 0, Amount::from_sat(10_000), &pk).unwrap();
        assert_ne!(h, p2wpkh_sighash(&t, 0, Amount::from_sat(10_001), &pk).unwrap());
        assert!(p2wpkh_sighash(&t, 1, Amount::from_sat(10_000), &pk).is_err());
        let mut psbt = Psbt::from_unsigned_tx(t.clone()).unwrap();
        assert_eq!(p2wpkh_sighash(&psbt, 0, Amount::from_sat(10_000), &pk).unwrap(), h);
        psbt.inputs[0].witness_utxo = Some(TxOut { value: Amount::from_sat(10_000), script_pubkey: p2wpkh_script(&pk) });
        assert_eq!(p2wpkh_sighash(&psbt, 0, Amount::from_sat(10_000), &pk).unwrap(), h);
        psbt.inputs[0].witness_utxo = Some(TxOut { value: Amount::from_sat(5), script_pubkey: p2wpkh_script(&pk) });
        assert!(p2wpkh_sighash(&psbt, 0, Amount::from_sat(10_000), &pk).is_err());
    }
}
