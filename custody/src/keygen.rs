//! Aux info generation (once per group) and key generation (once per vault address).
//!
//! Owns: running cggmp21's `aux_info_gen` from checked pregenerated primes, threshold keygen
//! (`keygen(..).set_threshold(t)`, also for 2-of-2 so every key has the same shape), and the
//! resulting [`VaultKey`]: this party's key share completed with the group's aux info, plus the
//! address it controls (P2WPKH of the compressed shared public key). No HD derivation: each
//! address is its own key (RUSTSEC-2025-0127 is about presignatures combined with derivation
//! paths chosen later; we never derive).

use std::fmt;

use bitcoin::{Address, CompressedPublicKey, Network, ScriptBuf};
use cggmp21::key_share::{AnyKeyShare, IncompleteKeyShare, KeyShare};
use cggmp21::supported_curves::Secp256k1 as Curve;
use round_based::Mpc;
use serde::{Deserialize, Serialize};

use crate::bitcoin::{compressed_key, p2wpkh_address, p2wpkh_script, pubkey_hex};
use crate::error::{CustodyError, ProtocolKind, Result};
use crate::group::{ExecutionId, GroupId, PartyRole};
use crate::party::{Party, PartyAuxInfo};
use crate::primes::{AuxPrimes, Level};
use crate::transport::{run_session, Link};

/// Keygen protocol messages (threshold flavour, SHA-256, default security level).
pub(crate) type KeygenMsg = cggmp21::keygen::msg::threshold::Msg<Curve, Level, sha2::Sha256>;
/// Aux info protocol messages.
pub(crate) type AuxMsg = cggmp21::key_refresh::msg::aux_only::Msg<sha2::Sha256, Level>;

/// One party's share of one vault address key. Secret: store it with
/// [`crate::share_store::EncryptedShareStore`]; Debug shows only public facts.
#[derive(Clone, Serialize, Deserialize)]
pub struct VaultKey {
    /// Group the key belongs to.
    pub group: GroupId,
    /// Holder of this share.
    pub role: PartyRole,
    /// The shared public key (compressed).
    #[serde(with = "pubkey_hex")]
    pub public_key: CompressedPublicKey,
    pub(crate) share: KeyShare<Curve, Level>,
}

impl VaultKey {
    /// The P2WPKH output script paying this key.
    pub fn script_pubkey(&self) -> ScriptBuf {
        p2wpkh_script(&self.public_key)
    }

    /// The P2WPKH address on `network`.
    pub fn address(&self, network: Network) -> Address {
        p2wpkh_address(&self.public_key, network)
    }

    /// Signatures needed.
    pub fn threshold(&self) -> u16 {
        self.share.min_signers()
    }

    /// Public facts of the key (what a combiner or a watcher needs).
    pub fn public(&self) -> VaultPublicKey {
        VaultPublicKey { group: self.group, public_key: self.public_key, threshold: self.threshold() }
    }

    /// Checks that a share loaded from storage belongs to `party` and is internally consistent
    /// (index, group size, public key).
    pub fn check_for(&self, party: &Party) -> Result<()> {
        if self.group != party.group.id || self.role != party.role {
            return Err(CustodyError::InvalidKeyShare(format!(
                "share of {:?} in group {} used by {:?} in group {}",
                self.role, self.group, party.role, party.group.id
            )));
        }
        if self.share.core.i != party.role.index()
            || self.share.n() != party.group.n()
            || self.share.min_signers() != party.group.t()
        {
            return Err(CustodyError::InvalidKeyShare("share index/size/threshold does not fit the group".into()));
        }
        if compressed_key(&self.share.shared_public_key())? != self.public_key {
            return Err(CustodyError::InvalidKeyShare("public key does not match the share".into()));
        }
        Ok(())
    }
}

impl fmt::Debug for VaultKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VaultKey")
            .field("group", &self.group)
            .field("role", &self.role)
            .field("public_key", &self.public_key.to_string())
            .field("share", &"<redacted>")
            .finish()
    }
}

/// Public facts of a vault address key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VaultPublicKey {
    /// Group.
    pub group: GroupId,
    /// Shared public key.
    pub public_key: CompressedPublicKey,
    /// Signatures needed.
    pub threshold: u16,
}

impl Party {
    /// Runs aux info generation with all parties of the group (once per group). `primes` are
    /// checked first: fixture primes are refused unless the configuration allows them.
    pub async fn generate_aux_info<L: Link>(&mut self, eid: ExecutionId, primes: AuxPrimes, link: L) -> Result<()> {
        let origin = primes.origin();
        let primes = primes.into_checked(self.config.allow_fixture_primes)?;
        let participants = self.group.policy.roles();
        let (info, eid_bytes) = self.open_session(ProtocolKind::AuxInfo, eid, participants)?;
        let (i, n) = (self.role.index(), self.group.n());
        let aux = run_session::<AuxMsg, _, _, _, _, _>(ProtocolKind::AuxInfo, info, link, self.config.session_timeout, |party| async move {
            let eid = cggmp21::ExecutionId::new(&eid_bytes);
            cggmp21::aux_info_gen(eid, i, n, primes).start(&mut rand::rngs::OsRng, party).await
        })
        .await?;
        self.install_aux(PartyAuxInfo { group: self.group.id, role: self.role, primes_origin: origin, aux })
    }

    /// Runs threshold key generation with all parties of the group and completes the share
    /// with this party's aux info. Every party ends with the same public key / address.
    pub async fn keygen<L: Link>(&self, eid: ExecutionId, link: L) -> Result<VaultKey> {
        let aux = self.aux.as_ref().ok_or(CustodyError::AuxInfoMissing(self.role))?;
        let participants = self.group.policy.roles();
        let (info, eid_bytes) = self.open_session(ProtocolKind::Keygen, eid, participants)?;
        let (i, n, t) = (self.role.index(), self.group.n(), self.group.t());
        let incomplete = run_session::<KeygenMsg, _, _, _, _, _>(ProtocolKind::Keygen, info, link, self.config.session_timeout, |party| {
            keygen_core(eid_bytes, i, n, t, party)
        })
        .await?;
        self.complete_share(incomplete, aux)
    }

    fn complete_share(&self, incomplete: IncompleteKeyShare<Curve>, aux: &PartyAuxInfo) -> Result<VaultKey> {
        let public_key = compressed_key(&incomplete.shared_public_key)?;
        let share = KeyShare::from_parts((incomplete, aux.aux.clone()))
            .map_err(|e| CustodyError::InvalidKeyShare(crate::error::chain(&e)))?;
        let key = VaultKey { group: self.group.id, role: self.role, public_key, share };
        key.check_for(self)?;
        Ok(key)
    }
}

/// Threshold keygen over any round-based party (the public entry point adds the transport
/// checks; tests also drive this with `round_based::sim`).
pub(crate) async fn keygen_core<M>(
    eid_bytes: [u8; 32],
    i: u16,
    n: u16,
    t: u16,
    party: M,
) -> std::result::Result<IncompleteKeyShare<Curve>, cggmp21::KeygenError>
where
    M: Mpc<ProtocolMessage = KeygenMsg>,
{
    let eid = cggmp21::ExecutionId::new(&eid_bytes);
    cggmp21::keygen::<Curve>(eid, i, n).set_threshold(t).start(&mut rand::rngs::OsRng, party).await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The protocol core runs on round-based's own simulator too (no custody transport).
    #[test]
    fn keygen_core_on_round_based_simulation() {
        let eid = [9u8; 32];
        let shares = round_based::sim::run(3, |i, party| keygen_core(eid, i, 3, 2, party))
            .unwrap()
            .expect_ok()
            .into_vec();
        let pk = shares[0].shared_public_key;
        assert!(shares.iter().all(|s| s.shared_public_key == pk));
        assert!(shares.iter().all(|s| s.min_signers() == 2));
    }
}
