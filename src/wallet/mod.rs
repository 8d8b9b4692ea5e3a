//! The user's wallet: trade straight from it, against a provider's API.
//!
//! - [`device`]: the device key, a secp256k1 keypair whose BIP-340 signatures authenticate the
//!   wallet's requests (instead of an HMAC API key).
//! - [`keystore`]: the wallet file, every secret encrypted with XChaCha20-Poly1305 under a key
//!   derived from the passphrase with Argon2id. It holds a list of named secrets so vault key
//!   shares join the device key later.
//! - [`passphrase`]: `--passphrase-file`, `TANDEM_WALLET_PASSPHRASE`, or a prompt without echo.
//! - [`cli`]: `tandem wallet init | balance | orders | order | cancel | withdraw | address`.
//! - [`vault`]: the wallet's side of its MPC vault (aux info, keygen, deposit addresses).
//! - [`recover`]: leave without the provider, with the co-signer alone.
//! - [`cosign`]: the wallet's long-running signer, which checks every spend against its own
//!   withdrawal requests first.

pub mod cli;
pub mod cosign;
pub mod device;
pub mod keystore;
pub mod passphrase;
pub mod recover;
pub mod vault;
