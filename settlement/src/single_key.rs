//! One secp256k1 key paying to its own P2WPKH script, and the signing of inputs that spend it:
//! the devnet's faucet wallet, and test funders against the devnet or a regtest bitcoind.
//! (Vault keys are never single keys: they are split with MPC in `tandem-custody`.)

use bitcoin::hashes::Hash as _;
use bitcoin::secp256k1::{Message, Secp256k1, SecretKey};
use bitcoin::sighash::{EcdsaSighashType, SighashCache};
use bitcoin::{ecdsa, CompressedPublicKey, ScriptBuf, Transaction, TxOut, Witness};
use rand::RngCore as _;

pub struct SingleKey {
    secret: SecretKey,
    public: CompressedPublicKey,
}

impl std::fmt::Debug for SingleKey {
    // Never print the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SingleKey").field("public", &self.public).finish_non_exhaustive()
    }
}

impl SingleKey {
    /// A fresh random key.
    pub fn random() -> Self {
        loop {
            let mut bytes = [0u8; 32];
            rand::thread_rng().fill_bytes(&mut bytes);
            // Fails only for zero or a value above the curve order (probability ~2^-128).
            if let Some(key) = SingleKey::from_secret_bytes(bytes) {
                return key;
            }
        }
    }

    /// The key with these secret bytes; `None` if they are not a valid secret key.
    pub fn from_secret_bytes(bytes: [u8; 32]) -> Option<Self> {
        let secret = SecretKey::from_slice(&bytes).ok()?;
        let public = CompressedPublicKey(secret.public_key(&Secp256k1::new()));
        Some(SingleKey { secret, public })
    }

    pub fn public_key(&self) -> CompressedPublicKey {
        self.public
    }

    pub fn script(&self) -> ScriptBuf {
        ScriptBuf::new_p2wpkh(&self.public.wpubkey_hash())
    }

    /// Signs every input of `tx` (SIGHASH_ALL, low-S, low-R), input `i` spending `spent[i]`,
    /// which must pay this key.
    pub fn sign_all(&self, tx: &mut Transaction, spent: &[TxOut]) -> Result<(), String> {
        if spent.len() != tx.input.len() {
            return Err(format!("{} spent outputs for {} inputs", spent.len(), tx.input.len()));
        }
        let secp = Secp256k1::new();
        let mut cache = SighashCache::new(&*tx);
        let mut witnesses = Vec::with_capacity(spent.len());
        for (index, prevout) in spent.iter().enumerate() {
            witnesses.push(self.witness(&secp, &mut cache, index, prevout)?);
        }
        for (input, witness) in tx.input.iter_mut().zip(witnesses) {
            input.witness = witness;
        }
        Ok(())
    }

    /// The witness of input `index` of `tx`, which spends `prevout` (paying this key); the
    /// other inputs are left alone (a batch has inputs of many owners).
    pub fn sign_input(&self, tx: &Transaction, index: usize, prevout: &TxOut) -> Result<Witness, String> {
        if prevout.script_pubkey != self.script() {
            return Err(format!("input {index} does not pay this key"));
        }
        self.witness(&Secp256k1::new(), &mut SighashCache::new(tx), index, prevout)
    }

    fn witness(
        &self,
        secp: &Secp256k1<bitcoin::secp256k1::All>,
        cache: &mut SighashCache<&Transaction>,
        index: usize,
        prevout: &TxOut,
    ) -> Result<Witness, String> {
        let sighash = cache
            .p2wpkh_signature_hash(index, &prevout.script_pubkey, prevout.value, EcdsaSighashType::All)
            .map_err(|e| format!("sighash of input {index}: {e}"))?;
        // libsecp256k1 always signs low-S; low-R keeps the size at most the estimate.
        let signature = secp.sign_ecdsa_low_r(&Message::from_digest(sighash.to_byte_array()), &self.secret);
        let signature = ecdsa::Signature { signature, sighash_type: EcdsaSighashType::All };
        Ok(Witness::p2wpkh(&signature, &self.public.0))
    }
}
