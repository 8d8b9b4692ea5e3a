//! One party's state in one signer group.
//!
//! Owns: [`CustodyConfig`] (whether fixture primes are acceptable, session deadline), the
//! [`Party`] (role, group, this party's aux info, used execution ids) and [`PartyAuxInfo`]
//! (the aux info with the origin of the primes it was made from, so aux info built on public
//! fixture primes stays marked and a production party refuses it). The protocol entry points
//! are `impl Party` blocks in `keygen.rs`, `presign.rs` and `sign.rs`.

use std::fmt;
use std::time::Duration;

use cggmp21::key_share::AuxInfo;
use serde::{Deserialize, Serialize};

use crate::error::{CustodyError, ProtocolKind, Result};
use crate::group::{ExecutionId, ExecutionIdRegistry, GroupId, PartyRole, SignerGroup};
use crate::primes::{Level, PrimesOrigin};
use crate::transport::SessionInfo;

/// Configuration of the custody core.
#[derive(Debug, Clone)]
pub struct CustodyConfig {
    /// Accept fixture (publicly known) primes and aux info made from them. Only for tests and
    /// the demo; [`CustodyConfig::production`] leaves it off.
    pub allow_fixture_primes: bool,
    /// Deadline for one protocol session; a silent or stuck peer ends the session with
    /// [`CustodyError::Timeout`].
    pub session_timeout: Duration,
}

impl CustodyConfig {
    /// Production: fixture primes refused.
    pub fn production() -> Self {
        CustodyConfig { allow_fixture_primes: false, session_timeout: Duration::from_secs(300) }
    }

    /// Demo / tests: fixture primes allowed.
    pub fn demo() -> Self {
        CustodyConfig { allow_fixture_primes: true, session_timeout: Duration::from_secs(300) }
    }
}

impl Default for CustodyConfig {
    fn default() -> Self {
        Self::production()
    }
}

/// A party's aux info for a group (its Paillier secret key and everyone's public parameters),
/// with the origin of the primes behind it. Secret: store it sealed; Debug is redacted.
#[derive(Clone, Serialize, Deserialize)]
pub struct PartyAuxInfo {
    /// Group.
    pub group: GroupId,
    /// Holder.
    pub role: PartyRole,
    /// Origin of the primes this aux info was generated from.
    pub primes_origin: PrimesOrigin,
    pub(crate) aux: AuxInfo<Level>,
}

impl fmt::Debug for PartyAuxInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PartyAuxInfo")
            .field("group", &self.group)
            .field("role", &self.role)
            .field("primes_origin", &self.primes_origin)
            .finish_non_exhaustive()
    }
}

/// One party (wallet, provider or co-signer) of one signer group.
pub struct Party {
    pub(crate) role: PartyRole,
    pub(crate) group: SignerGroup,
    pub(crate) config: CustodyConfig,
    pub(crate) aux: Option<PartyAuxInfo>,
    pub(crate) eids: ExecutionIdRegistry,
}

impl Party {
    /// A party without aux info yet (run [`Party::generate_aux_info`] next).
    pub fn new(group: SignerGroup, role: PartyRole, config: CustodyConfig) -> Result<Self> {
        if !group.contains(role) {
            return Err(CustodyError::InvalidGroup(format!("{role:?} is not a party of a {:?} group", group.policy)));
        }
        Ok(Party { role, group, config, aux: None, eids: ExecutionIdRegistry::new() })
    }

    /// A party restored with aux info loaded from storage. Aux info made from fixture primes is
    /// refused unless the configuration allows fixtures.
    pub fn with_aux_info(group: SignerGroup, role: PartyRole, config: CustodyConfig, aux: PartyAuxInfo) -> Result<Self> {
        let mut p = Self::new(group, role, config)?;
        p.install_aux(aux)?;
        Ok(p)
    }

    pub(crate) fn install_aux(&mut self, aux: PartyAuxInfo) -> Result<()> {
        if aux.group != self.group.id || aux.role != self.role {
            return Err(CustodyError::InvalidKeyShare(format!(
                "aux info belongs to {:?} of group {}, not {:?} of group {}",
                aux.role, aux.group, self.role, self.group.id
            )));
        }
        if aux.primes_origin == PrimesOrigin::Fixture && !self.config.allow_fixture_primes {
            return Err(CustodyError::FixturePrimesRefused);
        }
        if aux.aux.parties.len() != self.group.n() as usize {
            return Err(CustodyError::InvalidKeyShare(format!(
                "aux info has {} parties, the group has {}",
                aux.aux.parties.len(),
                self.group.n()
            )));
        }
        self.aux = Some(aux);
        Ok(())
    }

    /// This party's role.
    pub fn role(&self) -> PartyRole {
        self.role
    }

    /// The group.
    pub fn group(&self) -> &SignerGroup {
        &self.group
    }

    /// Configuration.
    pub fn config(&self) -> &CustodyConfig {
        &self.config
    }

    /// Aux info, if generated (to seal and store).
    pub fn aux_info(&self) -> Option<&PartyAuxInfo> {
        self.aux.as_ref()
    }

    /// Execution ids this party has used (to persist across restarts).
    pub fn used_execution_ids(&self) -> Vec<ExecutionId> {
        self.eids.snapshot()
    }

    /// Re-loads used execution ids persisted earlier.
    pub fn restore_used_execution_ids(&mut self, ids: impl IntoIterator<Item = ExecutionId>) {
        for id in ids {
            let _ = self.eids.claim(id);
        }
    }

    /// Claims `eid` for a session of `kind` among `participants` (sorted roles) and returns the
    /// session info (our index among them) and the bound id bytes for cggmp21.
    pub(crate) fn open_session(
        &self,
        kind: ProtocolKind,
        eid: ExecutionId,
        participants: &[PartyRole],
    ) -> Result<(SessionInfo, [u8; 32])> {
        let me = participants
            .iter()
            .position(|r| *r == self.role)
            .ok_or_else(|| CustodyError::InvalidSigners(format!("{:?} is not a participant", self.role)))?;
        self.eids.claim(eid)?;
        let info = SessionInfo { eid, me: me as u16, n: participants.len() as u16 };
        Ok((info, eid.bind(kind, &self.group, participants)))
    }
}

impl fmt::Debug for Party {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Party")
            .field("role", &self.role)
            .field("group", &self.group)
            .field("aux_info", &self.aux)
            .field("eids", &self.eids)
            .finish()
    }
}
