//! Signer groups, party roles and execution ids.
//!
//! Owns: who the parties of a vault are (wallet = 0, provider = 1, co-signer = 2), the
//! threshold policy (2-of-3 default, 2-of-2 wallet + provider), which signer sets are valid,
//! and execution ids: fresh random 32 bytes per protocol run, never reused by a party
//! ([`ExecutionIdRegistry`]). The bytes handed to cggmp21 bind the execution id to the
//! protocol, the group and the signer set, so a message of one run can never be valid in
//! another.

use std::collections::HashSet;
use std::fmt;
use std::sync::Mutex;

use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{CustodyError, ProtocolKind, Result};

/// A party of a vault. The discriminant is the party's index in every group protocol
/// (cggmp21 "index at keygen").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[repr(u16)]
pub enum PartyRole {
    /// The user's wallet.
    Wallet = 0,
    /// The exchange (provider).
    Provider = 1,
    /// The independent co-signer (only in 2-of-3).
    CoSigner = 2,
}

impl PartyRole {
    /// Index of this party in group protocols.
    pub fn index(self) -> u16 {
        self as u16
    }

    /// Role for an index.
    pub fn from_index(i: u16) -> Option<Self> {
        match i {
            0 => Some(PartyRole::Wallet),
            1 => Some(PartyRole::Provider),
            2 => Some(PartyRole::CoSigner),
            _ => None,
        }
    }
}

/// Threshold policy of a vault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Policy {
    /// Wallet, provider, co-signer; any two sign.
    TwoOfThree,
    /// Wallet and provider; both sign.
    TwoOfTwo,
}

impl Policy {
    /// Number of parties `n`.
    pub fn n(self) -> u16 {
        match self {
            Policy::TwoOfThree => 3,
            Policy::TwoOfTwo => 2,
        }
    }

    /// Threshold `t` (exactly this many parties sign).
    pub fn t(self) -> u16 {
        2
    }

    /// The parties, in index order.
    pub fn roles(self) -> &'static [PartyRole] {
        match self {
            Policy::TwoOfThree => &[PartyRole::Wallet, PartyRole::Provider, PartyRole::CoSigner],
            Policy::TwoOfTwo => &[PartyRole::Wallet, PartyRole::Provider],
        }
    }
}

/// Identifier of a signer group (vault), chosen at random when the vault is created.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct GroupId(#[serde(with = "hex::serde")] pub [u8; 16]);

impl GroupId {
    /// A fresh random group id.
    pub fn random() -> Self {
        let mut b = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut b);
        GroupId(b)
    }
}

impl std::str::FromStr for GroupId {
    type Err = hex::FromHexError;

    /// 32 hex characters, as [`GroupId`]'s `Display` writes it.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut id = [0u8; 16];
        hex::decode_to_slice(s, &mut id)?;
        Ok(GroupId(id))
    }
}

impl fmt::Display for GroupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for GroupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GroupId({self})")
    }
}

/// A signer group: the vault's parties and its threshold. Aux info is generated once per
/// group; every address key of the vault is shared among the same parties.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignerGroup {
    /// Group id.
    pub id: GroupId,
    /// Threshold policy.
    pub policy: Policy,
}

impl SignerGroup {
    /// A new group with a random id.
    pub fn new(policy: Policy) -> Self {
        SignerGroup { id: GroupId::random(), policy }
    }

    /// Number of parties.
    pub fn n(&self) -> u16 {
        self.policy.n()
    }

    /// Threshold.
    pub fn t(&self) -> u16 {
        self.policy.t()
    }

    /// Whether `role` belongs to this group.
    pub fn contains(&self, role: PartyRole) -> bool {
        role.index() < self.n()
    }

    /// All signer sets that can sign (every `t`-subset of the parties).
    pub fn signing_sets(&self) -> Vec<Vec<PartyRole>> {
        let roles = self.policy.roles();
        let mut out = Vec::new();
        for a in 0..roles.len() {
            for b in a + 1..roles.len() {
                out.push(vec![roles[a], roles[b]]);
            }
        }
        out
    }

    /// Checks a signer set: exactly `t` distinct members of the group, and (if given) that
    /// `me` is one of them. Returns the set sorted by index, which is the order every
    /// signer must use so that all agree on the signing-local indices.
    pub fn check_signers(&self, signers: &[PartyRole], me: Option<PartyRole>) -> Result<Vec<PartyRole>> {
        let mut sorted = signers.to_vec();
        sorted.sort();
        sorted.dedup();
        if sorted.len() != signers.len() {
            return Err(CustodyError::InvalidSigners(format!("duplicate party in {signers:?}")));
        }
        if sorted.len() != self.t() as usize {
            return Err(CustodyError::InvalidSigners(format!(
                "{} signers given, the group's threshold is {}",
                sorted.len(),
                self.t()
            )));
        }
        if let Some(r) = sorted.iter().find(|r| !self.contains(**r)) {
            return Err(CustodyError::InvalidSigners(format!("{r:?} is not a party of this {:?} group", self.policy)));
        }
        if let Some(me) = me {
            if !sorted.contains(&me) {
                return Err(CustodyError::InvalidSigners(format!("{me:?} is not among the signers {sorted:?}")));
            }
        }
        Ok(sorted)
    }
}

/// Execution id of one protocol run: 32 random bytes agreed by all parties of the run
/// (the initiator draws it, the others accept it only if they never saw it).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ExecutionId(#[serde(with = "hex::serde")] pub [u8; 32]);

impl ExecutionId {
    /// A fresh random execution id.
    pub fn random() -> Self {
        let mut b = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut b);
        ExecutionId(b)
    }

    /// The bytes handed to cggmp21: a hash binding this id to the protocol, the group and the
    /// participants, so the same random id in another context yields unrelated sessions.
    pub(crate) fn bind(&self, kind: ProtocolKind, group: &SignerGroup, participants: &[PartyRole]) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(b"tandem-custody/eid/v1");
        h.update([kind.tag().len() as u8]);
        h.update(kind.tag());
        h.update(group.id.0);
        h.update([group.n() as u8, group.t() as u8, participants.len() as u8]);
        for p in participants {
            h.update(p.index().to_be_bytes());
        }
        h.update(self.0);
        h.finalize().into()
    }

    /// Hex form.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses the hex form.
    pub fn from_hex(s: &str) -> Option<Self> {
        let v = hex::decode(s).ok()?;
        Some(ExecutionId(v.try_into().ok()?))
    }
}

impl fmt::Display for ExecutionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Short form is enough to correlate logs; ids are random, not secret.
        f.write_str(&hex::encode(&self.0[..8]))
    }
}

impl fmt::Debug for ExecutionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ExecutionId({})", self.to_hex())
    }
}

/// The execution ids a party has taken part in. A session is refused if its id was seen:
/// reusing an id would let messages of an earlier run be replayed into a new one.
#[derive(Default)]
pub struct ExecutionIdRegistry {
    used: Mutex<HashSet<ExecutionId>>,
}

impl ExecutionIdRegistry {
    /// Empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Restores a registry from ids persisted earlier.
    pub fn from_used(ids: impl IntoIterator<Item = ExecutionId>) -> Self {
        ExecutionIdRegistry { used: Mutex::new(ids.into_iter().collect()) }
    }

    /// Marks `eid` used, or fails if it already was.
    pub fn claim(&self, eid: ExecutionId) -> Result<()> {
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        if used.insert(eid) {
            Ok(())
        } else {
            Err(CustodyError::ExecutionIdReused(eid))
        }
    }

    /// Whether `eid` was used.
    pub fn is_used(&self, eid: &ExecutionId) -> bool {
        self.used.lock().unwrap_or_else(|p| p.into_inner()).contains(eid)
    }

    /// Snapshot of used ids (to persist).
    pub fn snapshot(&self) -> Vec<ExecutionId> {
        let mut v: Vec<_> = self.used.lock().unwrap_or_else(|p| p.into_inner()).iter().copied().collect();
        v.sort();
        v
    }
}

impl fmt::Debug for ExecutionIdRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.used.lock().map(|u| u.len()).unwrap_or(0);
        write!(f, "ExecutionIdRegistry({n} used)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signer_sets() {
        let g = SignerGroup::new(Policy::TwoOfThree);
        assert_eq!(g.signing_sets().len(), 3);
        assert!(g.check_signers(&[PartyRole::CoSigner, PartyRole::Wallet], Some(PartyRole::Wallet)).is_ok());
        assert_eq!(
            g.check_signers(&[PartyRole::CoSigner, PartyRole::Wallet], None).unwrap(),
            vec![PartyRole::Wallet, PartyRole::CoSigner]
        );
        assert!(g.check_signers(&[PartyRole::Wallet, PartyRole::Wallet], None).is_err());
        assert!(g.check_signers(&[PartyRole::Wallet], None).is_err());
        assert!(g.check_signers(&[PartyRole::Wallet, PartyRole::Provider], Some(PartyRole::CoSigner)).is_err());
        let g2 = SignerGroup::new(Policy::TwoOfTwo);
        assert_eq!(g2.signing_sets(), vec![vec![PartyRole::Wallet, PartyRole::Provider]]);
        assert!(g2.check_signers(&[PartyRole::Wallet, PartyRole::CoSigner], None).is_err());
    }

    #[test]
    fn execution_ids_are_single_use_and_bound() {
        let reg = ExecutionIdRegistry::new();
        let eid = ExecutionId::random();
        reg.claim(eid).unwrap();
        assert!(matches!(reg.claim(eid), Err(CustodyError::ExecutionIdReused(_))));
        let g = SignerGroup::new(Policy::TwoOfThree);
        let a = eid.bind(ProtocolKind::Sign, &g, &[PartyRole::Wallet, PartyRole::Provider]);
        let b = eid.bind(ProtocolKind::Presign, &g, &[PartyRole::Wallet, PartyRole::Provider]);
        let c = eid.bind(ProtocolKind::Sign, &g, &[PartyRole::Wallet, PartyRole::CoSigner]);
        assert_ne!(a, b);
        assert_ne!(a, c);
    }
}
