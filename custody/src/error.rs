//! Error types of the custody core.
//!
//! Owns: every error this crate returns. Rules kept here:
//! - no error carries secret material (key shares, presignatures, master keys, primes); messages
//!   name *which* thing failed (a path, an execution id, a party), never its contents;
//! - a protocol that fails for any reason (bad message, cheating party, transport fault,
//!   timeout) ends with a [`CustodyError::Protocol`] / [`CustodyError::Timeout`], never a panic.

use std::path::PathBuf;

use crate::group::{ExecutionId, PartyRole};

/// Which MPC protocol a session was running (for error context and execution-id separation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProtocolKind {
    /// Auxiliary info (Paillier keys, ring-Pedersen parameters) generation, once per group.
    AuxInfo,
    /// Threshold key generation, once per vault address.
    Keygen,
    /// Presignature generation (offline part of signing).
    Presign,
    /// Full interactive signing.
    Sign,
}

impl ProtocolKind {
    pub(crate) fn tag(self) -> &'static [u8] {
        match self {
            ProtocolKind::AuxInfo => b"aux-info",
            ProtocolKind::Keygen => b"keygen",
            ProtocolKind::Presign => b"presign",
            ProtocolKind::Sign => b"sign",
        }
    }
}

impl std::fmt::Display for ProtocolKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(std::str::from_utf8(self.tag()).unwrap_or("?"))
    }
}

/// A violation of the session transport rules, detected before a message reaches the protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    /// The envelope belongs to another session (replay from another run, or misrouting).
    #[error("message for execution id {got} arrived in session {expected}")]
    WrongSession {
        /// Execution id of this session.
        expected: ExecutionId,
        /// Execution id carried by the message.
        got: ExecutionId,
    },
    /// Sender index is not a participant of this session (or is ourselves).
    #[error("message from unknown party index {sender} (session has {n} parties, we are {me})")]
    UnknownSender {
        /// Claimed sender index.
        sender: u16,
        /// Number of parties in the session.
        n: u16,
        /// Our index.
        me: u16,
    },
    /// Envelope was addressed to another party.
    #[error("message from party {sender} addressed to party {recipient}, we are {me}")]
    Misrouted {
        /// Sender index.
        sender: u16,
        /// Addressee in the envelope.
        recipient: u16,
        /// Our index.
        me: u16,
    },
    /// Sequence number already seen from this sender: a duplicated or replayed message.
    #[error("duplicated or replayed message from party {sender}: sequence {seq}, expected {expected}")]
    Duplicate {
        /// Sender index.
        sender: u16,
        /// Sequence number carried.
        seq: u64,
        /// Next sequence number we expected.
        expected: u64,
    },
    /// Sequence number skipped ahead: a message was dropped or messages were reordered.
    #[error("out-of-order message from party {sender}: sequence {seq}, expected {expected}")]
    OutOfOrder {
        /// Sender index.
        sender: u16,
        /// Sequence number carried.
        seq: u64,
        /// Next sequence number we expected.
        expected: u64,
    },
    /// Payload did not decode into a protocol message.
    #[error("malformed message from party {sender} (sequence {seq}): {reason}")]
    Malformed {
        /// Sender index.
        sender: u16,
        /// Sequence number carried.
        seq: u64,
        /// Decoder's complaint (about structure, never echoing payload bytes).
        reason: String,
    },
    /// Outgoing message could not be encoded or handed to the network.
    #[error("could not send: {0}")]
    Send(String),
    /// The network closed while the session still needed messages.
    #[error("network closed before the session completed")]
    Closed,
    /// A peer gave up on the session and said so.
    #[error("party {sender} aborted the session: {reason}")]
    PeerAborted {
        /// The peer.
        sender: u16,
        /// Its stated reason (a class of failure).
        reason: String,
    },
    /// A sealed envelope failed authentication ([`crate::channel`]): forged, tampered with,
    /// or sealed for another session, sender or recipient.
    #[error(
        "message from party {sender} (sequence {seq}) failed authentication: forged, tampered with, \
         or sealed for another session or recipient"
    )]
    Unauthenticated {
        /// Claimed sender index.
        sender: u16,
        /// Claimed sequence number.
        seq: u64,
    },
    /// The relay carrying the session refused it or ended it (aborted by a party, expired,
    /// unreachable). The relay is not trusted with message contents, but it can always stop a
    /// session.
    #[error("relay: {0}")]
    Relay(String),
}

/// Errors of the custody core.
#[derive(Debug, thiserror::Error)]
pub enum CustodyError {
    /// A protocol run failed. `reason` is the transport violation if one was detected, otherwise
    /// the protocol library's error chain (e.g. a failed zero-knowledge proof of a named party).
    #[error("{protocol} session {eid} failed: {reason}")]
    Protocol {
        /// Protocol being run.
        protocol: ProtocolKind,
        /// Session execution id.
        eid: ExecutionId,
        /// What went wrong.
        reason: ProtocolFailure,
    },
    /// The session did not finish in time (a party went silent or a message was dropped).
    #[error("{protocol} session {eid} timed out after {after:?}")]
    Timeout {
        /// Protocol being run.
        protocol: ProtocolKind,
        /// Session execution id.
        eid: ExecutionId,
        /// Configured deadline.
        after: std::time::Duration,
    },
    /// This party already took part in a session with this execution id.
    #[error("execution id {0} was already used by this party; every session needs a fresh one")]
    ExecutionIdReused(ExecutionId),
    /// The signer set / roles given do not fit the group.
    #[error("invalid signer set: {0}")]
    InvalidSigners(String),
    /// Group configuration is not supported.
    #[error("invalid signer group: {0}")]
    InvalidGroup(String),
    /// Aux info is missing: run aux info generation for the group first.
    #[error("aux info for party {0:?} is not ready")]
    AuxInfoMissing(PartyRole),
    /// A key share did not validate (wrong party, wrong group, inconsistent with aux info).
    #[error("invalid key share: {0}")]
    InvalidKeyShare(String),
    /// Fixture primes were offered to a configuration that does not allow them.
    #[error("refusing fixture (test/demo-only, publicly known) primes: allow_fixture_primes is not set")]
    FixturePrimesRefused,
    /// Primes were unusable (wrong size) or the pool was empty.
    #[error("primes: {0}")]
    Primes(String),
    /// The presignature was already consumed (possibly before a restart).
    #[error("presignature {0} was already used; a presignature signs at most once")]
    PresignatureAlreadyUsed(ExecutionId),
    /// No presignature with this id in the store.
    #[error("unknown presignature {0}")]
    PresignatureUnknown(ExecutionId),
    /// Presignature exists but belongs to another key or signer set.
    #[error("presignature {id} does not fit: {reason}")]
    PresignatureMismatch {
        /// Presignature id.
        id: ExecutionId,
        /// Which binding failed.
        reason: String,
    },
    /// Partial signatures could not be combined into a valid signature.
    #[error("cannot combine partial signatures: {0}")]
    Combine(String),
    /// The produced signature failed verification against the key and the sighash we computed.
    #[error("signature does not verify for the vault key and this input's sighash")]
    SignatureInvalid,
    /// The transaction / PSBT does not fit the requested input.
    #[error("transaction: {0}")]
    Transaction(String),
    /// Master key could not be loaded / parsed.
    #[error("master key: {0}")]
    MasterKey(String),
    /// Decryption failed: wrong master key, tampered file, or a record moved under another name.
    #[error("cannot decrypt {what}: wrong master key or corrupted/tampered data")]
    Decrypt {
        /// What was being decrypted (a path or record label; never contents).
        what: String,
    },
    /// The record was encrypted under a key id we do not hold.
    #[error("{what} is encrypted under master key {key_id}, which is not loaded")]
    UnknownMasterKey {
        /// Record.
        what: String,
        /// Key id (hex) from the ciphertext header.
        key_id: String,
    },
    /// The parties or identity keys given for a secure session do not fit (we are not among
    /// them, a role or a key appears twice, ...).
    #[error("invalid secure session: {0}")]
    InvalidSession(String),
    /// Stored data has an unexpected format.
    #[error("{what}: bad format: {reason}")]
    Format {
        /// Record.
        what: String,
        /// Structural complaint only.
        reason: String,
    },
    /// Filesystem error with the path involved.
    #[error("i/o on {path}: {source}")]
    Io {
        /// Path involved.
        path: PathBuf,
        /// Underlying error.
        #[source]
        source: std::io::Error,
    },
}

impl CustodyError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        CustodyError::Io { path: path.into(), source }
    }

    /// The transport violation that ended a protocol session, if that is what happened.
    pub fn transport_violation(&self) -> Option<&TransportError> {
        match self {
            CustodyError::Protocol { reason: ProtocolFailure::Transport(t), .. } => Some(t),
            _ => None,
        }
    }
}

/// Why a protocol session failed.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolFailure {
    /// A message broke the transport rules (malformed, duplicated, replayed, reordered, from an
    /// unknown party) or the network closed.
    #[error("{0}")]
    Transport(TransportError),
    /// The protocol library aborted (invalid proof, inconsistent data, ...). The text is the
    /// library's error chain; it names culprits by index, never secret values.
    #[error("{0}")]
    Library(String),
}

/// Result alias.
pub type Result<T, E = CustodyError> = std::result::Result<T, E>;

/// Formats an error with its whole `source()` chain: cggmp21's top-level errors are opaque
/// ("signing protocol failed"), the useful part is further down.
pub(crate) fn chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        out.push_str(": ");
        out.push_str(&e.to_string());
        cur = e.source();
    }
    out
}
