//! End-to-end secure channels between the parties of one session.
//!
//! Owns: sealing and opening [`Envelope`]s so that whatever carries them (the gateway's relay,
//! run by the provider) can neither read nor forge what parties send each other, and
//! [`SecureLink`], which wraps any [`Link`] so protocols run unchanged over the encrypted link.
//!
//! Construction:
//! - every party has a long-term secp256k1 **identity key**, known to the others by its BIP-340
//!   x-only public key (the wallet's is its device key, the co-signer's is registered by the
//!   operator, the provider's is configured in its node);
//! - for a session with execution id `eid`, each ordered pair (sender A, recipient B) has its own
//!   key: `HKDF-SHA256(salt = "tandem-custody/channel/v1" || eid, ikm = x(ECDH(a, B)),
//!   info = "send" || role(A) || X(A) || role(B) || X(B))`. ECDH is x-only (the x coordinate of
//!   `a·B`, the same for `b·A`, whichever parity each x-only key lifts to), so the x-only keys
//!   the gateway already knows are enough. Keys differ per session, direction and pair;
//! - each envelope is sealed with XChaCha20-Poly1305 under its pair's key, a random 24-byte
//!   nonce (prefixed to the ciphertext), and associated data binding everything the header
//!   says: `"tandem-custody/envelope/v1" || eid || role(sender) || role(recipient) ||
//!   kind (p2p | broadcast | abort) || seq`. A broadcast is sealed once per recipient (the
//!   session layer already fans it out pairwise). An abort is sealed too (its reason is the
//!   plaintext), so the relay cannot make parties believe a peer gave up.
//!
//! **No signatures.** A successful AEAD open under a pairwise key proves to the recipient that
//! the sender (the only other holder of that key) sealed exactly this header and payload, so
//! signing as well would add nothing for the recipient. What it does not give is
//! transferability: a recipient cannot prove to a third party what a peer sent (a signature
//! would). cggmp21 carries its own proofs where blame matters.
//!
//! Opening checks, in order, each a distinct [`TransportError`], never a panic: execution id
//! ([`TransportError::WrongSession`]), sender ([`TransportError::UnknownSender`]), recipient
//! ([`TransportError::Misrouted`]), authentication ([`TransportError::Unauthenticated`]:
//! tampered, forged, a header rewritten, or sealed for another session/recipient), then the
//! per-sender sequence ([`TransportError::Duplicate`] for a replay,
//! [`TransportError::OutOfOrder`] for a gap or reordering). Sequence numbers are per (sender,
//! recipient) pair, like the pairwise keys. Aborts carry no sequence: an abort replayed within
//! its own session repeats what its sender really said.
//!
//! Session indices: envelopes name parties by their index in the session, which is the
//! position among the session's members sorted by role, the order every protocol of this crate
//! uses ([`crate::Party`] sorts signer sets the same way).

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bitcoin::secp256k1::{ecdh, Keypair, Parity, XOnlyPublicKey};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use futures::{Sink, Stream};
use hkdf::Hkdf;
use rand::RngCore;
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::error::{CustodyError, Result, TransportError};
use crate::group::{ExecutionId, PartyRole};
use crate::transport::{AbortSender, Envelope, Inbound, Link};

const KEY_SALT: &[u8] = b"tandem-custody/channel/v1";
const AAD_TAG: &[u8] = b"tandem-custody/envelope/v1";
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
/// Longest abort reason kept from a peer (reasons are short classes of failure).
const MAX_ABORT_REASON: usize = 200;

const KIND_P2P: u8 = 0;
const KIND_BROADCAST: u8 = 1;
const KIND_ABORT: u8 = 2;

/// One party of a secure session: its role and its identity key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionMember {
    /// Role (decides the session index: members are ordered by role).
    pub role: PartyRole,
    /// Identity key (x-only, as the gateway knows it).
    pub identity: XOnlyPublicKey,
}

impl SessionMember {
    /// A member.
    pub fn new(role: PartyRole, identity: XOnlyPublicKey) -> Self {
        SessionMember { role, identity }
    }
}

/// The pairwise keys of one party in one session (shared by a link's halves).
struct Keys {
    eid: ExecutionId,
    me: u16,
    members: Vec<SessionMember>,
    /// Key for sealing to member j (None for ourselves).
    send: Vec<Option<Zeroizing<[u8; 32]>>>,
    /// Key for opening from member j (None for ourselves).
    recv: Vec<Option<Zeroizing<[u8; 32]>>>,
}

impl Keys {
    fn aad(&self, sender: u16, recipient: u16, kind: u8, seq: u64) -> Vec<u8> {
        let mut aad = Vec::with_capacity(AAD_TAG.len() + 32 + 2 + 2 + 1 + 8);
        aad.extend_from_slice(AAD_TAG);
        aad.extend_from_slice(&self.eid.0);
        aad.extend_from_slice(&self.members[sender as usize].role.index().to_be_bytes());
        aad.extend_from_slice(&self.members[recipient as usize].role.index().to_be_bytes());
        aad.push(kind);
        aad.extend_from_slice(&seq.to_be_bytes());
        aad
    }

    fn n(&self) -> u16 {
        self.members.len() as u16
    }

    fn seal(&self, mut env: Envelope) -> std::result::Result<Envelope, TransportError> {
        if env.eid != self.eid {
            return Err(TransportError::Send(format!(
                "envelope of session {} given to the channel of {}",
                env.eid, self.eid
            )));
        }
        if env.sender != self.me {
            return Err(TransportError::Send(format!(
                "envelope from party {} given to party {}'s channel",
                env.sender, self.me
            )));
        }
        let key = match self.send.get(env.recipient as usize) {
            Some(Some(k)) => k,
            _ => return Err(TransportError::Send(format!("no party {} to seal for", env.recipient))),
        };
        let (kind, plaintext) = match env.abort.take() {
            Some(reason) => {
                env.seq = 0;
                env.abort = Some(String::new());
                (KIND_ABORT, Zeroizing::new(reason.into_bytes()))
            }
            None => {
                let kind = if env.broadcast { KIND_BROADCAST } else { KIND_P2P };
                (kind, Zeroizing::new(std::mem::take(&mut env.payload)))
            }
        };
        let aad = self.aad(env.sender, env.recipient, kind, env.seq);
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let cipher = XChaCha20Poly1305::new(Key::from_slice(&key[..]));
        let ct = cipher
            .encrypt(XNonce::from_slice(&nonce), Payload { msg: &plaintext, aad: &aad })
            .map_err(|_| TransportError::Send("sealing failed".into()))?;
        let mut payload = Vec::with_capacity(NONCE_LEN + ct.len());
        payload.extend_from_slice(&nonce);
        payload.extend_from_slice(&ct);
        env.payload = payload;
        Ok(env)
    }

    /// Checks the header and authenticates; the sequence check is the caller's.
    fn open(&self, mut env: Envelope) -> std::result::Result<Envelope, TransportError> {
        if env.eid != self.eid {
            return Err(TransportError::WrongSession { expected: self.eid, got: env.eid });
        }
        if env.sender >= self.n() || env.sender == self.me {
            return Err(TransportError::UnknownSender { sender: env.sender, n: self.n(), me: self.me });
        }
        if env.recipient != self.me {
            return Err(TransportError::Misrouted { sender: env.sender, recipient: env.recipient, me: self.me });
        }
        let unauthenticated = TransportError::Unauthenticated { sender: env.sender, seq: env.seq };
        let Some(key) = &self.recv[env.sender as usize] else {
            return Err(unauthenticated);
        };
        let kind = match (&env.abort, env.broadcast) {
            (Some(_), _) => KIND_ABORT,
            (None, true) => KIND_BROADCAST,
            (None, false) => KIND_P2P,
        };
        if env.payload.len() < NONCE_LEN + TAG_LEN {
            return Err(unauthenticated);
        }
        let aad = self.aad(env.sender, env.recipient, kind, env.seq);
        let cipher = XChaCha20Poly1305::new(Key::from_slice(&key[..]));
        let (nonce, ct) = env.payload.split_at(NONCE_LEN);
        let plaintext =
            cipher.decrypt(XNonce::from_slice(nonce), Payload { msg: ct, aad: &aad }).map_err(|_| unauthenticated)?;
        if kind == KIND_ABORT {
            let mut reason = String::from_utf8_lossy(&plaintext).into_owned();
            if reason.len() > MAX_ABORT_REASON {
                let mut cut = MAX_ABORT_REASON;
                while !reason.is_char_boundary(cut) {
                    cut -= 1;
                }
                reason.truncate(cut);
            }
            env.abort = Some(reason);
            env.payload = Vec::new();
        } else {
            env.payload = plaintext;
        }
        Ok(env)
    }
}

/// One party's end of the secure channels of one session: seals what it sends, opens (and
/// checks the order of) what it receives.
pub struct SecureChannel {
    keys: Arc<Keys>,
    expected_seq: Vec<u64>,
}

impl SecureChannel {
    /// Derives the pairwise keys of `identity`'s holder for session `eid` among `members`
    /// (any order; session indices follow role order). `identity` must be one of the members;
    /// roles and identity keys must be distinct.
    pub fn new(identity: &Keypair, eid: ExecutionId, members: &[SessionMember]) -> Result<Self> {
        let mut members = members.to_vec();
        members.sort_by_key(|m| m.role);
        if members.len() < 2 {
            return Err(CustodyError::InvalidSession(format!(
                "{} member(s); a session needs at least two",
                members.len()
            )));
        }
        for w in members.windows(2) {
            if w[0].role == w[1].role {
                return Err(CustodyError::InvalidSession(format!("role {:?} appears twice", w[0].role)));
            }
        }
        for (i, a) in members.iter().enumerate() {
            if members[i + 1..].iter().any(|b| b.identity == a.identity) {
                return Err(CustodyError::InvalidSession(format!("identity key {} appears twice", a.identity)));
            }
        }
        let (my_pk, _) = identity.x_only_public_key();
        let me = members.iter().position(|m| m.identity == my_pk).ok_or_else(|| {
            CustodyError::InvalidSession(format!("our identity key {my_pk} is not a member of the session"))
        })?;
        let secret = identity.secret_key();
        let mine = members[me];
        let mut send = Vec::with_capacity(members.len());
        let mut recv = Vec::with_capacity(members.len());
        for (j, peer) in members.iter().enumerate() {
            if j == me {
                send.push(None);
                recv.push(None);
                continue;
            }
            // x-only ECDH: lift the peer's x-only key to either point; the x coordinate of the
            // product is the same for both, and the same the peer computes.
            let point = Zeroizing::new(ecdh::shared_secret_point(&peer.identity.public_key(Parity::Even), &secret));
            let hk = Hkdf::<Sha256>::new(Some(&[KEY_SALT, &eid.0[..]].concat()), &point[..32]);
            send.push(Some(derive(&hk, &mine, peer)?));
            recv.push(Some(derive(&hk, peer, &mine)?));
        }
        let n = members.len();
        Ok(SecureChannel { keys: Arc::new(Keys { eid, me: me as u16, members, send, recv }), expected_seq: vec![0; n] })
    }

    /// Our index in the session.
    pub fn me(&self) -> u16 {
        self.keys.me
    }

    /// The members in session-index order.
    pub fn members(&self) -> &[SessionMember] {
        &self.keys.members
    }

    /// The session.
    pub fn eid(&self) -> ExecutionId {
        self.keys.eid
    }

    /// Seals an outgoing envelope (ours, for a member of the session): the payload (or the
    /// abort reason) becomes `nonce || ciphertext`; the header stays readable for routing.
    pub fn seal(&self, env: Envelope) -> std::result::Result<Envelope, TransportError> {
        self.keys.seal(env)
    }

    /// Checks and opens an incoming sealed envelope, enforcing the per-sender order: each
    /// sender's envelopes must arrive with sequence 0, 1, 2, ... exactly once.
    pub fn open(&mut self, env: Envelope) -> std::result::Result<Envelope, TransportError> {
        let env = self.keys.open(env)?;
        if env.abort.is_some() {
            return Ok(env);
        }
        let expected = self.expected_seq[env.sender as usize];
        if env.seq < expected {
            return Err(TransportError::Duplicate { sender: env.sender, seq: env.seq, expected });
        }
        if env.seq > expected {
            return Err(TransportError::OutOfOrder { sender: env.sender, seq: env.seq, expected });
        }
        self.expected_seq[env.sender as usize] += 1;
        Ok(env)
    }
}

impl fmt::Debug for SecureChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecureChannel")
            .field("eid", &self.keys.eid)
            .field("me", &self.keys.me)
            .field("members", &self.keys.members)
            .field("keys", &"<redacted>")
            .finish()
    }
}

fn derive(hk: &Hkdf<Sha256>, from: &SessionMember, to: &SessionMember) -> Result<Zeroizing<[u8; 32]>> {
    let mut info = Vec::with_capacity(4 + 2 * (2 + 32));
    info.extend_from_slice(b"send");
    info.extend_from_slice(&from.role.index().to_be_bytes());
    info.extend_from_slice(&from.identity.serialize());
    info.extend_from_slice(&to.role.index().to_be_bytes());
    info.extend_from_slice(&to.identity.serialize());
    let mut key = Zeroizing::new([0u8; 32]);
    hk.expand(&info, &mut key[..]).map_err(|_| CustodyError::InvalidSession("key derivation failed".into()))?;
    Ok(key)
}

/// A [`Link`] whose envelopes are sealed on the way out and opened (and checked) on the way in;
/// the inner link only ever carries ciphertexts. Protocols run over it unchanged.
pub struct SecureLink<L> {
    inner: L,
    channel: SecureChannel,
}

impl<L: Link> SecureLink<L> {
    /// Wraps `inner` for session `eid` among `members`, as the holder of `identity`.
    pub fn new(inner: L, identity: &Keypair, eid: ExecutionId, members: &[SessionMember]) -> Result<Self> {
        Ok(SecureLink { inner, channel: SecureChannel::new(identity, eid, members)? })
    }

    /// Wraps `inner` with a channel made earlier.
    pub fn with_channel(inner: L, channel: SecureChannel) -> Self {
        SecureLink { inner, channel }
    }
}

impl<L: Link> Link for SecureLink<L> {
    type Rx = SecureRx<L::Rx>;
    type Tx = SecureTx<L::Tx>;

    fn finish_notice(&self) -> Option<crate::transport::FinishNotice> {
        self.inner.finish_notice()
    }

    fn abort_sender(&self) -> Option<AbortSender> {
        let send = self.inner.abort_sender()?;
        let keys = self.channel.keys.clone();
        Some(Box::new(move |env| match keys.seal(env) {
            Ok(sealed) => send(sealed),
            Err(e) => tracing::warn!(error = %e, "could not seal an abort"),
        }))
    }

    fn split(self) -> (Self::Rx, Self::Tx) {
        let (rx, tx) = self.inner.split();
        let keys = self.channel.keys.clone();
        (SecureRx { inner: rx, channel: self.channel }, SecureTx { inner: tx, keys })
    }
}

/// Incoming half of a [`SecureLink`]: yields opened envelopes, or why one could not be opened.
pub struct SecureRx<S> {
    inner: S,
    channel: SecureChannel,
}

impl<S: Stream<Item: Inbound> + Unpin> Stream for SecureRx<S> {
    type Item = std::result::Result<Envelope, TransportError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_next(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Ready(Some(item)) => Poll::Ready(Some(item.into_inbound().and_then(|env| this.channel.open(env)))),
        }
    }
}

/// Outgoing half of a [`SecureLink`]: seals each envelope before the inner sink sees it.
pub struct SecureTx<K> {
    inner: K,
    keys: Arc<Keys>,
}

impl<K: Sink<Envelope, Error = TransportError> + Unpin> Sink<Envelope> for SecureTx<K> {
    type Error = TransportError;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::result::Result<(), TransportError>> {
        Pin::new(&mut self.inner).poll_ready(cx)
    }

    fn start_send(mut self: Pin<&mut Self>, env: Envelope) -> std::result::Result<(), TransportError> {
        let sealed = self.keys.seal(env)?;
        Pin::new(&mut self.inner).start_send(sealed)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::result::Result<(), TransportError>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::result::Result<(), TransportError>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}

/// A fresh random identity keypair (tests, demo; real parties load theirs).
pub fn random_identity() -> Keypair {
    let secp = bitcoin::secp256k1::Secp256k1::signing_only();
    loop {
        let mut secret = Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng.fill_bytes(&mut secret[..]);
        if let Ok(k) = Keypair::from_seckey_slice(&secp, &secret[..]) {
            return k;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Trio {
        ids: Vec<Keypair>,
        members: Vec<SessionMember>,
    }

    fn trio() -> Trio {
        let ids: Vec<Keypair> = (0..3).map(|_| random_identity()).collect();
        let roles = [PartyRole::Wallet, PartyRole::Provider, PartyRole::CoSigner];
        let members = ids.iter().zip(roles).map(|(k, r)| SessionMember::new(r, k.x_only_public_key().0)).collect();
        Trio { ids, members }
    }

    impl Trio {
        fn channel(&self, i: usize, eid: ExecutionId) -> SecureChannel {
            SecureChannel::new(&self.ids[i], eid, &self.members).unwrap()
        }
    }

    fn env(eid: ExecutionId, sender: u16, recipient: u16, seq: u64, payload: &[u8]) -> Envelope {
        Envelope { eid, sender, recipient, broadcast: false, seq, payload: payload.to_vec(), abort: None }
    }

    #[test]
    fn round_trip_every_pair_and_kind() {
        let t = trio();
        let eid = ExecutionId::random();
        let mut chans: Vec<SecureChannel> = (0..3).map(|i| t.channel(i, eid)).collect();
        for s in 0..3u16 {
            for r in (0..3u16).filter(|r| *r != s) {
                for (seq, broadcast) in [(0, false), (1, true)] {
                    let mut e = env(eid, s, r, seq, format!("hello {s}->{r} #{seq}").as_bytes());
                    e.broadcast = broadcast;
                    let sealed = chans[s as usize].seal(e.clone()).unwrap();
                    assert_ne!(sealed.payload, e.payload);
                    assert_eq!((sealed.sender, sealed.recipient, sealed.seq, sealed.broadcast), (s, r, seq, broadcast));
                    let opened = chans[r as usize].open(sealed).unwrap();
                    assert_eq!(opened.payload, e.payload);
                    assert_eq!(opened.broadcast, broadcast);
                }
            }
        }
        // Sealing the same message twice gives different ciphertexts (random nonces).
        let a = chans[0].seal(env(eid, 0, 1, 2, b"x")).unwrap();
        let b = chans[0].seal(env(eid, 0, 1, 2, b"x")).unwrap();
        assert_ne!(a.payload, b.payload);
    }

    #[test]
    fn member_order_does_not_matter_but_membership_does() {
        let t = trio();
        let eid = ExecutionId::random();
        let mut reversed = t.members.clone();
        reversed.reverse();
        let a = SecureChannel::new(&t.ids[0], eid, &t.members).unwrap();
        let mut b = SecureChannel::new(&t.ids[1], eid, &reversed).unwrap();
        assert_eq!((a.me(), b.me()), (0, 1));
        b.open(a.seal(env(eid, 0, 1, 0, b"m")).unwrap()).unwrap();

        let outsider = random_identity();
        assert!(matches!(SecureChannel::new(&outsider, eid, &t.members), Err(CustodyError::InvalidSession(_))));
        let mut dup_role = t.members.clone();
        dup_role[2].role = PartyRole::Provider;
        assert!(matches!(SecureChannel::new(&t.ids[0], eid, &dup_role), Err(CustodyError::InvalidSession(_))));
        let mut dup_key = t.members.clone();
        dup_key[2].identity = dup_key[1].identity;
        assert!(matches!(SecureChannel::new(&t.ids[0], eid, &dup_key), Err(CustodyError::InvalidSession(_))));
        assert!(matches!(SecureChannel::new(&t.ids[0], eid, &t.members[..1]), Err(CustodyError::InvalidSession(_))));
    }

    #[test]
    fn tampered_ciphertext_or_header_fails_authentication() {
        let t = trio();
        let eid = ExecutionId::random();
        let a = t.channel(0, eid);
        let sealed = a.seal(env(eid, 0, 1, 0, b"secret share")).unwrap();
        let unauth = |r: std::result::Result<Envelope, TransportError>| {
            matches!(r, Err(TransportError::Unauthenticated { sender: 0, .. }))
        };
        // Every byte of the nonce, ciphertext and tag is covered.
        for i in [0, NONCE_LEN - 1, NONCE_LEN, sealed.payload.len() - 1] {
            let mut e = sealed.clone();
            e.payload[i] ^= 0x01;
            assert!(unauth(t.channel(1, eid).open(e)), "byte {i}");
        }
        let mut e = sealed.clone();
        e.payload.truncate(10);
        assert!(unauth(t.channel(1, eid).open(e)));
        // Header fields are bound too.
        let mut e = sealed.clone();
        e.broadcast = true;
        assert!(unauth(t.channel(1, eid).open(e)));
        let mut e = sealed.clone();
        e.abort = Some(String::new());
        assert!(unauth(t.channel(1, eid).open(e)));
        // A forged sender: party 2 cannot pass a message off as party 0's.
        let forged = t.channel(2, eid).seal(env(eid, 2, 1, 0, b"forged")).unwrap();
        let mut e = forged.clone();
        e.sender = 0;
        assert!(unauth(t.channel(1, eid).open(e)));
        // A changed sequence number on an otherwise valid message.
        let mut b = t.channel(1, eid);
        let mut e = sealed.clone();
        e.seq = 1;
        assert!(matches!(b.open(e), Err(TransportError::Unauthenticated { sender: 0, seq: 1 })));
        // The untouched original still opens (failures consume nothing).
        assert_eq!(b.open(sealed).unwrap().payload, b"secret share");
    }

    #[test]
    fn replays_and_reordering_fail() {
        let t = trio();
        let eid = ExecutionId::random();
        let a = t.channel(0, eid);
        let m0 = a.seal(env(eid, 0, 1, 0, b"m0")).unwrap();
        let m1 = a.seal(env(eid, 0, 1, 1, b"m1")).unwrap();
        let m2 = a.seal(env(eid, 0, 1, 2, b"m2")).unwrap();
        let mut b = t.channel(1, eid);
        // Reordered: m1 before m0.
        assert_eq!(b.open(m1.clone()).unwrap_err(), TransportError::OutOfOrder { sender: 0, seq: 1, expected: 0 });
        b.open(m0.clone()).unwrap();
        b.open(m1.clone()).unwrap();
        // Replayed.
        assert_eq!(b.open(m0).unwrap_err(), TransportError::Duplicate { sender: 0, seq: 0, expected: 2 });
        assert_eq!(b.open(m1).unwrap_err(), TransportError::Duplicate { sender: 0, seq: 1, expected: 2 });
        b.open(m2).unwrap();
    }

    #[test]
    fn wrongly_addressed_envelopes_fail() {
        let t = trio();
        let eid = ExecutionId::random();
        let a = t.channel(0, eid);
        let to_2 = a.seal(env(eid, 0, 2, 0, b"for the co-signer")).unwrap();
        // Delivered to party 1 as is: misrouted.
        assert_eq!(
            t.channel(1, eid).open(to_2.clone()).unwrap_err(),
            TransportError::Misrouted { sender: 0, recipient: 2, me: 1 }
        );
        // Header rewritten to party 1: it cannot open what was sealed for party 2.
        let mut e = to_2.clone();
        e.recipient = 1;
        assert_eq!(t.channel(1, eid).open(e).unwrap_err(), TransportError::Unauthenticated { sender: 0, seq: 0 });
        // Claimed sender out of range or ourselves.
        let mut e = to_2.clone();
        e.sender = 9;
        assert!(matches!(t.channel(2, eid).open(e), Err(TransportError::UnknownSender { sender: 9, .. })));
        let mut e = to_2.clone();
        e.sender = 2;
        assert!(matches!(t.channel(2, eid).open(e), Err(TransportError::UnknownSender { sender: 2, .. })));
        // Sealing for a non-member or from the wrong party is refused at the sender.
        assert!(matches!(a.seal(env(eid, 0, 5, 0, b"x")), Err(TransportError::Send(_))));
        assert!(matches!(a.seal(env(eid, 0, 0, 0, b"x")), Err(TransportError::Send(_))));
        assert!(matches!(a.seal(env(eid, 1, 2, 0, b"x")), Err(TransportError::Send(_))));
        assert_eq!(t.channel(2, eid).open(to_2).unwrap().payload, b"for the co-signer");
    }

    #[test]
    fn wrong_execution_id_fails() {
        let t = trio();
        let (eid, other) = (ExecutionId::random(), ExecutionId::random());
        let sealed = t.channel(0, eid).seal(env(eid, 0, 1, 0, b"old session")).unwrap();
        // Replayed into another session as is.
        assert_eq!(
            t.channel(1, other).open(sealed.clone()).unwrap_err(),
            TransportError::WrongSession { expected: other, got: eid }
        );
        // With the header rewritten to the new session: the keys are per session.
        let mut e = sealed;
        e.eid = other;
        assert_eq!(t.channel(1, other).open(e).unwrap_err(), TransportError::Unauthenticated { sender: 0, seq: 0 });
        // Sealing an envelope of another session is refused.
        assert!(matches!(t.channel(0, eid).seal(env(other, 0, 1, 0, b"x")), Err(TransportError::Send(_))));
    }

    #[test]
    fn aborts_are_sealed_and_authenticated() {
        let t = trio();
        let eid = ExecutionId::random();
        let abort = Envelope {
            eid,
            sender: 0,
            recipient: 1,
            broadcast: false,
            seq: 0,
            payload: Vec::new(),
            abort: Some("timeout".into()),
        };
        let sealed = t.channel(0, eid).seal(abort).unwrap();
        assert_eq!(sealed.abort.as_deref(), Some(""), "the reason travels sealed");
        let opened = t.channel(1, eid).open(sealed.clone()).unwrap();
        assert_eq!(opened.abort.as_deref(), Some("timeout"));
        // An abort the relay makes up does not open.
        let mut forged = sealed;
        forged.payload = vec![0u8; 60];
        assert!(matches!(t.channel(1, eid).open(forged), Err(TransportError::Unauthenticated { .. })));
        // A data message relabelled as an abort neither.
        let mut e = t.channel(0, eid).seal(env(eid, 0, 1, 0, b"data")).unwrap();
        e.abort = Some(String::new());
        assert!(matches!(t.channel(1, eid).open(e), Err(TransportError::Unauthenticated { .. })));
    }

    #[test]
    fn pairwise_keys_agree_and_differ() {
        let t = trio();
        let eid = ExecutionId::random();
        let a = t.channel(0, eid);
        let b = t.channel(1, eid);
        let other = t.channel(0, ExecutionId::random());
        assert_eq!(a.keys.send[1].as_deref(), b.keys.recv[0].as_deref());
        assert_eq!(a.keys.recv[1].as_deref(), b.keys.send[0].as_deref());
        assert_ne!(a.keys.send[1].as_deref(), a.keys.recv[1].as_deref(), "directional");
        assert_ne!(a.keys.send[1].as_deref(), a.keys.send[2].as_deref(), "per pair");
        assert_ne!(a.keys.send[1].as_deref(), other.keys.send[1].as_deref(), "per session");
        let dbg = format!("{a:?}");
        assert!(dbg.contains("redacted"));
    }
}
