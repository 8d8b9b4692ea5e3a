//! The wallet's device key: a secp256k1 keypair whose BIP-340 signatures authenticate the
//! wallet's API requests (see `tandem_gateway::auth`). The provider knows only the x-only
//! public key; the secret lives in the wallet file, encrypted.

use bitcoin::secp256k1::{Keypair, Secp256k1};
use rand::RngCore;
use std::fmt;
use zeroize::Zeroizing;

pub struct DeviceKey {
    keypair: Keypair,
}

impl DeviceKey {
    /// A fresh key from the operating system's random source.
    pub fn generate() -> DeviceKey {
        let secp = Secp256k1::signing_only();
        loop {
            let mut secret = Zeroizing::new([0u8; 32]);
            rand::rngs::OsRng.fill_bytes(&mut secret[..]);
            // All but a negligible fraction of 32-byte strings are valid secret keys.
            if let Ok(keypair) = Keypair::from_seckey_slice(&secp, &secret[..]) {
                return DeviceKey { keypair };
            }
        }
    }

    /// From the 32 secret bytes as the wallet stores them.
    pub fn from_secret_bytes(secret: &[u8]) -> anyhow::Result<DeviceKey> {
        let keypair = Keypair::from_seckey_slice(&Secp256k1::signing_only(), secret)
            .map_err(|_| anyhow::anyhow!("the wallet's device key is not a valid secp256k1 secret key"))?;
        Ok(DeviceKey { keypair })
    }

    /// The 32 secret bytes, to be sealed in the wallet file.
    pub fn secret_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.keypair.secret_bytes())
    }

    /// The x-only public key in lowercase hex: the `X-Tandem-Device` header.
    pub fn pubkey_hex(&self) -> String {
        self.keypair.x_only_public_key().0.to_string()
    }

    /// The keypair: also the wallet's identity key in MPC sessions (its secure channels to the
    /// other parties are keyed from it, see `tandem_custody::channel`).
    pub fn keypair(&self) -> &Keypair {
        &self.keypair
    }

    /// The x-only public key.
    pub fn x_only(&self) -> bitcoin::secp256k1::XOnlyPublicKey {
        self.keypair.x_only_public_key().0
    }

    /// `X-Tandem-Signature` of a request.
    pub fn sign_request(&self, timestamp_ms: u64, method: &str, path_and_query: &str, body: &[u8]) -> String {
        tandem_gateway::sign_device(&self.keypair, timestamp_ms, method, path_and_query, body)
    }
}

impl Drop for DeviceKey {
    fn drop(&mut self) {
        self.keypair.non_secure_erase();
    }
}

impl fmt::Debug for DeviceKey {
    /// The public key only.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceKey").field("pubkey", &self.pubkey_hex()).field("secret", &"<redacted>").finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_through_their_secret_bytes_and_sign() {
        let k = DeviceKey::generate();
        let again = DeviceKey::from_secret_bytes(&k.secret_bytes()[..]).unwrap();
        assert_eq!(k.pubkey_hex(), again.pubkey_hex());
        assert_eq!(k.pubkey_hex().len(), 64);
        assert_ne!(k.pubkey_hex(), DeviceKey::generate().pubkey_hex());
        let sig = again.sign_request(1, "GET", "/v1/balances", b"");
        let device = tandem_gateway::auth::parse_device_pubkey(&k.pubkey_hex()).unwrap();
        assert!(tandem_gateway::auth::verify_device(&device, 1, "GET", "/v1/balances", b"", &sig));
        assert!(DeviceKey::from_secret_bytes(&[0u8; 32]).is_err());
        assert!(DeviceKey::from_secret_bytes(&[1u8; 31]).is_err());
    }
}
