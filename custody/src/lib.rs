//! Tandem custody core: threshold ECDSA (cggmp21, secp256k1) for vault addresses.
//!
//! A vault is a [`SignerGroup`] (wallet = 0, provider = 1, co-signer = 2; 2-of-3 by default,
//! 2-of-2 wallet + provider supported) plus one key per P2WPKH address. The full private key
//! never exists anywhere.
//!
//! Flow, per party ([`Party`]):
//! 1. once per group: [`Party::generate_aux_info`] from pregenerated primes
//!    ([`primes::AuxPrimes`], taken from a [`primes::PrimePool`] in production; checked-in
//!    fixtures only when [`CustodyConfig::allow_fixture_primes`]);
//! 2. per address: [`Party::keygen`] → [`VaultKey`] (share + address), stored sealed with
//!    [`share_store::EncryptedShareStore`];
//! 3. per input: [`Party::sign_input`] (interactive), or ahead of time
//!    [`Party::generate_presignature`] and then one round: [`Party::issue_partial_signature`]
//!    and [`combine_partial_signatures`].
//!
//! Signers always compute the BIP-143 sighash themselves from the transaction / PSBT; a
//! presignature is durably marked used before its partial signature exists.
//!
//! Every protocol run has a fresh random [`ExecutionId`] that each party accepts once, runs
//! over a [`transport::Link`] whose messages are checked (session, sender, order, format)
//! before the protocol sees them, and ends with a [`CustodyError`] (never a panic) on any
//! fault, or on timeout.
//!
//! Modules: `group` (parties, policy, execution ids), `party` (one party's state, config),
//! `primes` (fixture primes, prime pool), `keygen` (aux info, keygen, vault keys), `presign`
//! (presignatures and their single-use store), `sign` (signing), `bitcoin` (sighash, DER,
//! witness), `share_store` (master keys, AEAD at rest), `transport` (envelopes, checks,
//! in-process network), `error`.
//! `channel`: end-to-end sealed envelopes ([`SecureLink`]), so protocols can run through a relay
//! that must not read or forge them (the gateway's).

pub mod bitcoin;
pub mod channel;
pub mod error;
pub mod fsutil;
pub mod group;
pub mod intent;
pub mod keygen;
pub mod party;
pub mod policy;
pub mod presign;
pub mod primes;
pub mod share_store;
pub mod sign;
pub mod transport;

pub use crate::channel::{SecureChannel, SecureLink, SessionMember};
pub use crate::bitcoin::{p2wpkh_sighash, verify_input_consensus, InputSignature, InputToSign, SpendTx};
pub use crate::error::{CustodyError, ProtocolFailure, ProtocolKind, Result, TransportError};
pub use crate::intent::{IntentError, IntentInput, PresignIntent, SpendIntent};
pub use crate::policy::{Refusal, RefusalCode, SpendPurpose};
pub use crate::group::{ExecutionId, ExecutionIdRegistry, GroupId, PartyRole, Policy, SignerGroup};
pub use crate::keygen::{VaultKey, VaultPublicKey};
pub use crate::party::{CustodyConfig, Party, PartyAuxInfo};
pub use crate::presign::{FilePresignatureStore, MemoryPresignatureStore, PresignatureId, PresignatureStore, StoredPresignature};
pub use crate::primes::{AuxPrimes, PrimePool, PrimesOrigin};
pub use crate::share_store::{EncryptedShareStore, Keyring, MasterKey};
pub use crate::sign::{combine_partial_signatures, PartialInputSignature, PresignatureRef};
pub use crate::transport::{Envelope, LocalNetwork, Link};
