//! The MPC relay: in-memory mailboxes that carry sealed protocol messages between the parties of
//! a vault (wallet, provider, co-signer) for one session at a time.
//!
//! The relay is untrusted by design: it runs inside the provider's node, and the wallet and the
//! co-signer must be able to recover funds without trusting it. Parties seal every message end
//! to end (`tandem_custody::channel`), so the relay sees only routing headers (sender and
//! recipient role, broadcast flag, sequence number, abort flag) and ciphertexts. What it
//! enforces is access and resource control:
//! - a session is opened once per execution id, which is remembered for
//!   [`RelayConfig::eid_memory`] (much longer than a session lives), so an id is never reused;
//! - only the session's parties (by identity key) can post, fetch or abort, and a party can only
//!   post as its own role;
//! - limits: live sessions, bytes per message, queued bytes per session and in total; sessions
//!   expire after [`RelayConfig::session_ttl`];
//! - a fetch acknowledges everything up to its cursor (`after`), which frees it.
//!
//! Callers are identified by their identity key only. The HTTP routes (`routes::mpc`) check
//! signatures before calling in; the provider, which runs in-process, calls [`Relay`] directly
//! with its own identity (it is the relay's operator, so in-process calls are trusted).

use bitcoin::secp256k1::XOnlyPublicKey;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// A party's role in a vault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Wallet,
    Provider,
    Cosigner,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Wallet => "wallet",
            Role::Provider => "provider",
            Role::Cosigner => "cosigner",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Protocols a session may run (the custody crate's protocol tags).
pub const PROTOCOLS: [&str; 4] = ["aux-info", "keygen", "presign", "sign"];

/// Per-message bookkeeping counted against the byte limits besides the payload.
const MESSAGE_OVERHEAD: usize = 64;

#[derive(Clone)]
pub struct RelayConfig {
    /// The provider's identity key: the only key that may take the provider role in a session.
    /// `None`: sessions with a provider are refused (a node without an MPC provider).
    pub provider_identity: Option<XOnlyPublicKey>,
    /// Sessions held at once (live or ended but not yet expired).
    pub max_sessions: usize,
    /// Open sessions one wallet or co-signer may be a party of when it opens another (the
    /// provider is not limited), so one enrolled wallet cannot fill the relay.
    pub max_sessions_per_party: usize,
    /// Largest sealed payload of one message.
    pub max_message_bytes: usize,
    /// Bytes queued (posted, not yet acknowledged by their recipient) per session.
    pub max_session_bytes: usize,
    /// Bytes queued over all sessions.
    pub max_total_bytes: usize,
    /// Largest body of the relay's HTTP requests (payloads travel hex-encoded: twice their size).
    pub max_request_bytes: usize,
    /// A session ends this long after it was opened.
    pub session_ttl: Duration,
    /// An execution id is refused this long after its session was opened.
    pub eid_memory: Duration,
    /// At most this many execution ids are remembered; beyond it the oldest are forgotten first.
    pub max_remembered_eids: usize,
    /// Longest long-poll of a fetch.
    pub max_wait: Duration,
    /// Largest intent a session may carry (a signing session's PSBT is in it).
    pub max_intent_bytes: usize,
    /// The provider runs a demo configuration (fixture primes accepted); shown to wallets in
    /// `GET /v1/mpc/provider` so they may use the fixture primes too.
    pub demo: bool,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            provider_identity: None,
            max_sessions: 1024,
            max_sessions_per_party: 32,
            // The largest message of any protocol is an aux-info proof, about 220 KB sealed; a
            // whole 2-of-3 aux-info session moves about 2.5 MB.
            max_message_bytes: 1 << 20,
            max_session_bytes: 16 << 20,
            max_total_bytes: 256 << 20,
            max_request_bytes: 8 << 20,
            session_ttl: Duration::from_secs(600),
            eid_memory: Duration::from_secs(7 * 24 * 3600),
            max_remembered_eids: 1 << 20,
            max_wait: Duration::from_secs(10),
            // A 100-input, 100-output PSBT is about 20 KB.
            max_intent_bytes: 256 << 10,
            demo: false,
        }
    }
}

impl fmt::Debug for RelayConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RelayConfig")
            .field("provider_identity", &self.provider_identity.map(|k| k.to_string()))
            .field("max_sessions", &self.max_sessions)
            .field("max_sessions_per_party", &self.max_sessions_per_party)
            .field("max_message_bytes", &self.max_message_bytes)
            .field("max_session_bytes", &self.max_session_bytes)
            .field("max_total_bytes", &self.max_total_bytes)
            .field("max_request_bytes", &self.max_request_bytes)
            .field("session_ttl", &self.session_ttl)
            .field("eid_memory", &self.eid_memory)
            .field("max_remembered_eids", &self.max_remembered_eids)
            .field("max_wait", &self.max_wait)
            .field("max_intent_bytes", &self.max_intent_bytes)
            .field("demo", &self.demo)
            .finish()
    }
}

/// An execution id: 32 bytes, hex in URLs and bodies.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Eid(pub [u8; 32]);

impl Eid {
    pub fn from_hex(s: &str) -> Option<Eid> {
        let s = s.trim();
        if s.len() != 64 {
            return None;
        }
        Some(Eid(hex::decode(s).ok()?.try_into().ok()?))
    }
}

impl fmt::Display for Eid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for Eid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Eid({self})")
    }
}

/// A party of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionParty {
    pub role: Role,
    pub identity: XOnlyPublicKey,
}

/// What opening a session needs.
#[derive(Debug, Clone)]
pub struct SessionSpec {
    pub execution_id: Eid,
    pub protocol: String,
    pub parties: Vec<SessionParty>,
    /// What the session is for, as its opener states it (JSON text; a signing session's spend
    /// intent: purpose, PSBT, inputs). Opaque to the relay and untrusted by the parties: each
    /// checks it against its own facts before it joins.
    pub intent: Option<String>,
}

/// One sealed message as the relay sees it: routing header and opaque payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayMessage {
    pub sender: Role,
    pub recipient: Role,
    pub broadcast: bool,
    pub seq: u64,
    pub abort: bool,
    pub payload: Vec<u8>,
}

impl RelayMessage {
    fn cost(&self) -> usize {
        self.payload.len() + MESSAGE_OVERHEAD
    }
}

/// A message in a recipient's mailbox, numbered 1, 2, ... per (session, recipient).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    pub id: u64,
    pub message: RelayMessage,
}

/// What a fetch returns: the messages after the cursor, and the cursor to send next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    pub messages: Vec<Delivered>,
    pub last_id: u64,
}

/// Public facts of a session.
#[derive(Debug, Clone)]
pub struct SessionView {
    pub execution_id: Eid,
    pub protocol: String,
    pub parties: Vec<SessionParty>,
    pub intent: Option<String>,
    /// Opening order on this relay (1, 2, ...): the cursor of [`Relay::sessions_for`].
    pub opened_seq: u64,
    /// `None` while open; the reason once ended.
    pub ended: Option<String>,
    pub expires_in: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RelayError {
    #[error("execution id {0} was used before; every session needs a fresh one")]
    ExecutionIdReused(Eid),
    #[error("no session {0}")]
    UnknownSession(Eid),
    #[error("session {eid} has ended: {reason}")]
    SessionEnded { eid: Eid, reason: String },
    #[error("the caller is not a party of session {0}")]
    NotAParty(Eid),
    #[error("the caller is the session's {actual}, it cannot send as {claimed}")]
    WrongSender { claimed: Role, actual: Role },
    #[error("{0}")]
    Invalid(String),
    #[error("a message of {size} bytes exceeds the relay's limit of {limit}")]
    MessageTooLarge { size: usize, limit: usize },
    #[error("session {eid} has {limit} bytes queued; its parties must fetch first")]
    SessionQueueFull { eid: Eid, limit: usize },
    #[error("the relay (or this party) holds its maximum of {0} open sessions; retry later")]
    TooManySessions(usize),
    #[error("the relay's queues are full; retry later")]
    RelayFull,
    #[error("the relay is shutting down")]
    Closing,
}

impl RelayError {
    /// Stable error code (docs/API.md).
    pub fn code(&self) -> &'static str {
        match self {
            RelayError::ExecutionIdReused(_) => "execution_id_reused",
            RelayError::UnknownSession(_) => "unknown_session",
            RelayError::SessionEnded { .. } => "session_ended",
            RelayError::NotAParty(_) => "not_a_party",
            RelayError::WrongSender { .. } => "wrong_sender",
            RelayError::Invalid(_) => "bad_request",
            RelayError::MessageTooLarge { .. } => "payload_too_large",
            RelayError::SessionQueueFull { .. } => "session_queue_full",
            RelayError::TooManySessions(_) | RelayError::RelayFull => "relay_full",
            RelayError::Closing => "unavailable",
        }
    }

    /// HTTP status.
    pub fn status(&self) -> u16 {
        match self {
            RelayError::ExecutionIdReused(_) => 409,
            RelayError::UnknownSession(_) => 404,
            RelayError::SessionEnded { .. } => 410,
            RelayError::NotAParty(_) | RelayError::WrongSender { .. } => 403,
            RelayError::Invalid(_) => 400,
            RelayError::MessageTooLarge { .. } => 413,
            RelayError::SessionQueueFull { .. } => 429,
            RelayError::TooManySessions(_) | RelayError::RelayFull | RelayError::Closing => 503,
        }
    }
}

struct Mailbox {
    next_id: u64,
    queue: VecDeque<Delivered>,
}

impl Mailbox {
    /// Drops what the recipient acknowledged; answers the bytes freed.
    fn ack(&mut self, upto: u64) -> usize {
        let mut freed = 0;
        while self.queue.front().is_some_and(|d| d.id <= upto) {
            freed += self.queue.pop_front().map_or(0, |d| d.message.cost());
        }
        freed
    }
}

struct Session {
    protocol: String,
    parties: Vec<SessionParty>,
    intent: Option<String>,
    opened_seq: u64,
    expires: Instant,
    ended: Option<String>,
    /// By party index.
    mailboxes: Vec<Mailbox>,
    /// By party index: the party is done with the session (its protocol succeeded).
    finished: Vec<bool>,
    /// Next sequence number per (sender, recipient) pair, `sender * n + recipient`: a message
    /// below it was queued already (a retried post) and is skipped.
    next_seq: Vec<u64>,
    queued_bytes: usize,
    changed: watch::Sender<u64>,
}

impl Session {
    fn party(&self, identity: &XOnlyPublicKey) -> Option<usize> {
        self.parties.iter().position(|p| p.identity == *identity)
    }

    fn index_of(&self, role: Role) -> Option<usize> {
        self.parties.iter().position(|p| p.role == role)
    }

    fn bump(&self) {
        self.changed.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// Ends the session and frees its queues; answers the bytes freed.
    fn end(&mut self, reason: String) -> usize {
        if self.ended.is_none() {
            self.ended = Some(reason);
        }
        for m in &mut self.mailboxes {
            m.queue.clear();
        }
        self.bump();
        std::mem::take(&mut self.queued_bytes)
    }
}

#[derive(Default)]
struct State {
    sessions: HashMap<Eid, Session>,
    /// Execution ids seen, with when they may be forgotten; `used_order` in opening order.
    used: HashMap<Eid, Instant>,
    used_order: VecDeque<(Eid, Instant)>,
    total_bytes: usize,
    next_sweep: Option<Instant>,
    /// Sessions opened so far (the last `opened_seq`).
    opened: u64,
}

impl State {
    fn sweep(&mut self, now: Instant) {
        if self.next_sweep.is_some_and(|t| now < t) {
            return;
        }
        self.next_sweep = Some(now + Duration::from_secs(1));
        let mut freed = 0;
        self.sessions.retain(|_, s| {
            if s.expires <= now {
                freed += s.end("expired".into());
                false
            } else {
                true
            }
        });
        self.total_bytes -= freed;
        while self.used_order.front().is_some_and(|(_, until)| *until <= now) {
            if let Some((eid, _)) = self.used_order.pop_front() {
                self.used.remove(&eid);
            }
        }
    }

    /// The session, if it is open (not ended, not expired).
    fn open_session(&mut self, eid: Eid, now: Instant) -> Result<&mut Session, RelayError> {
        let known = self.used.contains_key(&eid);
        let Some(s) = self.sessions.get_mut(&eid) else {
            return Err(if known {
                RelayError::SessionEnded { eid, reason: "expired".into() }
            } else {
                RelayError::UnknownSession(eid)
            });
        };
        if s.ended.is_none() && s.expires <= now {
            self.total_bytes -= s.end("expired".into());
        }
        match &s.ended {
            Some(reason) => Err(RelayError::SessionEnded { eid, reason: reason.clone() }),
            None => Ok(s),
        }
    }
}

/// The relay. Shared by the HTTP routes and in-process parties (`Gateway::relay`).
pub struct Relay {
    config: RelayConfig,
    state: Mutex<State>,
    closing: std::sync::atomic::AtomicBool,
    /// Every newly opened session's spec (parties sorted by role), for the in-process provider.
    opened: tokio::sync::broadcast::Sender<SessionSpec>,
    /// The count of sessions opened, for parties long-polling [`Relay::sessions_for`].
    opened_count: watch::Sender<u64>,
}

impl Relay {
    pub fn new(config: RelayConfig) -> Relay {
        let (opened, _) = tokio::sync::broadcast::channel(256);
        let (opened_count, _) = watch::channel(0);
        Relay { config, state: Mutex::new(State::default()), closing: Default::default(), opened, opened_count }
    }

    /// Notifications of newly opened sessions (their specs, parties sorted by role), so the
    /// in-process provider can join sessions that name it. Additive: the relay works the same
    /// with no subscriber; a subscriber that lags misses the oldest notifications.
    pub fn subscribe_opened(&self) -> tokio::sync::broadcast::Receiver<SessionSpec> {
        self.opened.subscribe()
    }

    pub fn config(&self) -> &RelayConfig {
        &self.config
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn check_open(&self) -> Result<(), RelayError> {
        if self.closing.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(RelayError::Closing);
        }
        Ok(())
    }

    /// Stops the relay (node shutdown): waiting fetches return at once and every later call
    /// answers `503 unavailable`, so long polls do not hold up a graceful shutdown.
    pub fn close(&self) {
        self.closing.store(true, std::sync::atomic::Ordering::SeqCst);
        let st = self.state();
        for s in st.sessions.values() {
            s.bump();
        }
        self.opened_count.send_modify(|_| {});
    }

    /// Opens a session. `caller` must be one of its parties. The execution id must never have
    /// been used on this relay; the provider role may only be taken by the configured provider
    /// identity. (Whether a wallet or co-signer identity is registered is the HTTP layer's check.)
    pub fn open(&self, caller: &XOnlyPublicKey, spec: SessionSpec) -> Result<SessionView, RelayError> {
        if !PROTOCOLS.contains(&spec.protocol.as_str()) {
            return Err(RelayError::Invalid(format!("protocol must be one of {PROTOCOLS:?}")));
        }
        let mut parties = spec.parties;
        parties.sort_by_key(|p| p.role);
        if !(2..=3).contains(&parties.len()) {
            return Err(RelayError::Invalid("a session has 2 or 3 parties".into()));
        }
        if parties.windows(2).any(|w| w[0].role == w[1].role) {
            return Err(RelayError::Invalid("each role may appear once".into()));
        }
        for (i, p) in parties.iter().enumerate() {
            if parties[i + 1..].iter().any(|q| q.identity == p.identity) {
                return Err(RelayError::Invalid("each identity key may appear once".into()));
            }
        }
        if !parties.iter().any(|p| p.identity == *caller) {
            return Err(RelayError::Invalid("the caller's identity key must be one of the parties".into()));
        }
        if let Some(intent) = &spec.intent {
            if intent.len() > self.config.max_intent_bytes {
                return Err(RelayError::Invalid(format!(
                    "the intent has {} bytes; the relay's limit is {}",
                    intent.len(),
                    self.config.max_intent_bytes
                )));
            }
        }
        if let Some(p) = parties.iter().find(|p| p.role == Role::Provider) {
            match self.config.provider_identity {
                None => return Err(RelayError::Invalid("this relay has no provider identity configured".into())),
                Some(k) if k != p.identity => {
                    return Err(RelayError::Invalid("the provider's identity key is not this provider's".into()))
                }
                Some(_) => {}
            }
        }
        let eid = spec.execution_id;
        let now = Instant::now();
        let mut st = self.state();
        self.check_open()?;
        st.sweep(now);
        if st.used.contains_key(&eid) || st.sessions.contains_key(&eid) {
            return Err(RelayError::ExecutionIdReused(eid));
        }
        if st.sessions.len() >= self.config.max_sessions {
            return Err(RelayError::TooManySessions(self.config.max_sessions));
        }
        if self.config.provider_identity != Some(*caller) {
            let mine = st
                .sessions
                .values()
                .filter(|s| s.ended.is_none() && s.expires > now && s.party(caller).is_some_and(|i| !s.finished[i]))
                .count();
            if mine >= self.config.max_sessions_per_party {
                return Err(RelayError::TooManySessions(self.config.max_sessions_per_party));
            }
        }
        if st.used_order.len() >= self.config.max_remembered_eids {
            if let Some((old, _)) = st.used_order.pop_front() {
                tracing::warn!("relay forgets execution ids before their time: raise max_remembered_eids");
                st.used.remove(&old);
            }
        }
        let forget_at = now + self.config.eid_memory.max(self.config.session_ttl);
        st.used.insert(eid, forget_at);
        st.used_order.push_back((eid, forget_at));
        let (changed, _) = watch::channel(0);
        st.opened += 1;
        let session = Session {
            protocol: spec.protocol,
            intent: spec.intent,
            opened_seq: st.opened,
            mailboxes: parties.iter().map(|_| Mailbox { next_id: 1, queue: VecDeque::new() }).collect(),
            finished: vec![false; parties.len()],
            next_seq: vec![0; parties.len() * parties.len()],
            parties,
            expires: now + self.config.session_ttl,
            ended: None,
            queued_bytes: 0,
            changed,
        };
        let view = view(eid, &session, now);
        let spec = SessionSpec {
            execution_id: eid,
            protocol: session.protocol.clone(),
            parties: session.parties.clone(),
            intent: session.intent.clone(),
        };
        let opened = st.opened;
        st.sessions.insert(eid, session);
        drop(st);
        let _ = self.opened.send(spec);
        self.opened_count.send_replace(opened);
        tracing::info!(eid = %eid, protocol = %view.protocol, "mpc session opened");
        Ok(view)
    }

    /// The session's public facts, for its parties only.
    pub fn session(&self, caller: &XOnlyPublicKey, eid: Eid) -> Result<SessionView, RelayError> {
        let now = Instant::now();
        let mut st = self.state();
        st.sweep(now);
        let known = st.used.contains_key(&eid);
        let s = st.sessions.get(&eid).ok_or(if known {
            RelayError::SessionEnded { eid, reason: "expired".into() }
        } else {
            RelayError::UnknownSession(eid)
        })?;
        s.party(caller).ok_or(RelayError::NotAParty(eid))?;
        Ok(view(eid, s, now))
    }

    /// The open sessions that name `caller` as a party and were opened after the cursor `after`
    /// (an `opened_seq`), oldest first, waiting up to `wait` (at most [`RelayConfig::max_wait`])
    /// for one. This is how a wallet or co-signer learns that someone wants it in a session.
    pub async fn sessions_for(
        &self,
        caller: &XOnlyPublicKey,
        after: u64,
        wait: Duration,
    ) -> Result<Vec<SessionView>, RelayError> {
        let deadline = tokio::time::Instant::now() + wait.min(self.config.max_wait);
        loop {
            let mut changed = self.opened_count.subscribe();
            {
                let now = Instant::now();
                let mut st = self.state();
                self.check_open()?;
                st.sweep(now);
                let mut found: Vec<SessionView> = st
                    .sessions
                    .iter()
                    .filter(|(_, s)| {
                        s.opened_seq > after && s.ended.is_none() && s.expires > now && s.party(caller).is_some()
                    })
                    .map(|(eid, s)| view(*eid, s, now))
                    .collect();
                if !found.is_empty() || tokio::time::Instant::now() >= deadline {
                    found.sort_by_key(|v| v.opened_seq);
                    return Ok(found);
                }
            }
            // Subscribed before the check: an opening after it wakes us.
            let _ = tokio::time::timeout_at(deadline, changed.changed()).await;
        }
    }

    /// Queues a batch of messages from `caller`, all or none. Each must be sent as the caller's
    /// own role to another party of the session. Idempotent: a data message whose sequence number
    /// the (sender, recipient) pair already carried is skipped (a retried post after a lost
    /// reply), but still counted as accepted.
    pub fn post(&self, caller: &XOnlyPublicKey, eid: Eid, messages: Vec<RelayMessage>) -> Result<usize, RelayError> {
        let now = Instant::now();
        let mut guard = self.state();
        self.check_open()?;
        let st = &mut *guard;
        st.sweep(now);
        let total_bytes = st.total_bytes;
        let s = st.open_session(eid, now)?;
        let me = s.party(caller).ok_or(RelayError::NotAParty(eid))?;
        let my_role = s.parties[me].role;
        let n = s.parties.len();
        let mut next_seq = s.next_seq.clone();
        let mut cost = 0;
        let mut routed = Vec::with_capacity(messages.len());
        for m in &messages {
            if m.sender != my_role {
                return Err(RelayError::WrongSender { claimed: m.sender, actual: my_role });
            }
            let to = s
                .index_of(m.recipient)
                .filter(|to| *to != me)
                .ok_or_else(|| RelayError::Invalid(format!("{} is not another party of this session", m.recipient)))?;
            if m.payload.len() > self.config.max_message_bytes {
                return Err(RelayError::MessageTooLarge {
                    size: m.payload.len(),
                    limit: self.config.max_message_bytes,
                });
            }
            // Idempotent retries: a data message the pair already carried is skipped. (Order is
            // the parties' to check; aborts are never skipped.)
            let pair = me * n + to;
            if !m.abort && m.seq < next_seq[pair] {
                routed.push(None);
                continue;
            }
            if !m.abort {
                next_seq[pair] = m.seq + 1;
            }
            cost += m.cost();
            routed.push(Some(to));
        }
        if s.queued_bytes + cost > self.config.max_session_bytes {
            return Err(RelayError::SessionQueueFull { eid, limit: self.config.max_session_bytes });
        }
        if total_bytes + cost > self.config.max_total_bytes {
            return Err(RelayError::RelayFull);
        }
        let accepted = messages.len();
        let mut queued = 0;
        for (m, to) in messages.into_iter().zip(routed) {
            let Some(to) = to else { continue };
            let mailbox = &mut s.mailboxes[to];
            let id = mailbox.next_id;
            mailbox.next_id += 1;
            mailbox.queue.push_back(Delivered { id, message: m });
            queued += 1;
        }
        s.next_seq = next_seq;
        s.queued_bytes += cost;
        if queued > 0 {
            s.bump();
        }
        st.total_bytes += cost;
        Ok(accepted)
    }

    /// The caller's messages numbered above `after` (acknowledging, and freeing, those up to
    /// it), waiting up to `wait` (at most [`RelayConfig::max_wait`]) for one to arrive. An empty
    /// answer means nothing arrived in time. At most about `max_request_bytes / 2` payload bytes
    /// are returned at once (hex doubles them); the rest comes with the next fetch.
    pub async fn fetch(
        &self,
        caller: &XOnlyPublicKey,
        eid: Eid,
        after: u64,
        wait: Duration,
    ) -> Result<Fetched, RelayError> {
        let deadline = tokio::time::Instant::now() + wait.min(self.config.max_wait);
        let budget = (self.config.max_request_bytes / 2).max(1);
        loop {
            let mut changed = {
                let now = Instant::now();
                let mut guard = self.state();
                // Checked under the lock: `close` flags, then wakes under it, so a waiter never
                // misses it.
                self.check_open()?;
                let st = &mut *guard;
                st.sweep(now);
                let s = st.open_session(eid, now)?;
                let me = s.party(caller).ok_or(RelayError::NotAParty(eid))?;
                let freed = s.mailboxes[me].ack(after);
                s.queued_bytes -= freed;
                let mut size = 0;
                let messages: Vec<Delivered> = s.mailboxes[me]
                    .queue
                    .iter()
                    .take_while(|d| {
                        let fits = size == 0 || size + d.message.payload.len() <= budget;
                        size += d.message.payload.len();
                        fits
                    })
                    .cloned()
                    .collect();
                let rx = s.changed.subscribe();
                st.total_bytes -= freed;
                if !messages.is_empty() || tokio::time::Instant::now() >= deadline {
                    let last_id = messages.last().map_or(after, |d| d.id);
                    return Ok(Fetched { messages, last_id });
                }
                rx
            };
            // Subscribed under the lock: a post after it is seen. A closed channel cannot
            // happen while the session exists; re-check at once then.
            let _ = tokio::time::timeout_at(deadline, changed.changed()).await;
        }
    }

    /// Ends the session for every party; their next post or fetch answers `session_ended` with
    /// this reason. Ending an ended session again changes nothing.
    pub fn abort(&self, caller: &XOnlyPublicKey, eid: Eid, reason: &str) -> Result<(), RelayError> {
        let reason: String = reason.chars().filter(|c| !c.is_control()).take(200).collect();
        self.end_if(caller, eid, |s, me| {
            let role = s.parties[me].role;
            tracing::info!(eid = %eid, by = %role, %reason, "mpc session aborted");
            Some(format!("aborted by the {role}: {reason}"))
        })
    }

    /// The caller is done with the session (its protocol succeeded): it no longer counts
    /// against the caller's open sessions, and once every party is done the session ends
    /// ("finished") and its queues are freed. The others may still fetch what is queued for them
    /// until then; a finished party may still post (its last messages may trail its notice).
    pub fn finish(&self, caller: &XOnlyPublicKey, eid: Eid) -> Result<(), RelayError> {
        self.end_if(caller, eid, |s, me| {
            s.finished[me] = true;
            s.finished.iter().all(|f| *f).then(|| {
                tracing::debug!(eid = %eid, "mpc session finished");
                "finished".to_owned()
            })
        })
    }

    /// Applies `change` (given the caller's party index) to the caller's session unless it has
    /// ended, and ends it with the reason `change` answers, if any.
    fn end_if(
        &self,
        caller: &XOnlyPublicKey,
        eid: Eid,
        change: impl FnOnce(&mut Session, usize) -> Option<String>,
    ) -> Result<(), RelayError> {
        let now = Instant::now();
        let mut guard = self.state();
        let st = &mut *guard;
        st.sweep(now);
        let known = st.used.contains_key(&eid);
        let s = st.sessions.get_mut(&eid).ok_or(if known {
            RelayError::SessionEnded { eid, reason: "expired".into() }
        } else {
            RelayError::UnknownSession(eid)
        })?;
        let me = s.party(caller).ok_or(RelayError::NotAParty(eid))?;
        if s.ended.is_some() {
            return Ok(());
        }
        if let Some(reason) = change(s, me) {
            let freed = s.end(reason);
            st.total_bytes -= freed;
        }
        Ok(())
    }

    /// Sessions held and bytes queued (metrics, tests).
    pub fn stats(&self) -> (usize, usize) {
        let st = self.state();
        (st.sessions.len(), st.total_bytes)
    }
}

fn view(eid: Eid, s: &Session, now: Instant) -> SessionView {
    SessionView {
        execution_id: eid,
        protocol: s.protocol.clone(),
        parties: s.parties.clone(),
        intent: s.intent.clone(),
        opened_seq: s.opened_seq,
        ended: s.ended.clone(),
        expires_in: s.expires.saturating_duration_since(now),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitcoin::secp256k1::{Keypair, Secp256k1};

    fn key(b: u8) -> XOnlyPublicKey {
        Keypair::from_seckey_slice(&Secp256k1::new(), &[b; 32]).unwrap().x_only_public_key().0
    }

    fn relay(change: impl FnOnce(&mut RelayConfig)) -> Relay {
        let mut c = RelayConfig { provider_identity: Some(key(2)), ..RelayConfig::default() };
        change(&mut c);
        Relay::new(c)
    }

    const W: u8 = 1;
    const P: u8 = 2;
    const C: u8 = 3;

    fn spec(eid: u8) -> SessionSpec {
        SessionSpec {
            execution_id: Eid([eid; 32]),
            protocol: "keygen".into(),
            parties: vec![
                SessionParty { role: Role::Wallet, identity: key(W) },
                SessionParty { role: Role::Provider, identity: key(P) },
                SessionParty { role: Role::Cosigner, identity: key(C) },
            ],
            intent: None,
        }
    }

    fn msg(sender: Role, recipient: Role, seq: u64, len: usize) -> RelayMessage {
        RelayMessage { sender, recipient, broadcast: false, seq, abort: false, payload: vec![7; len] }
    }

    #[test]
    fn subscribers_hear_of_each_opened_session_once() {
        let r = relay(|_| {});
        let mut opened = r.subscribe_opened();
        let mut s = spec(9);
        s.parties.reverse(); // announced sorted by role, like the session holds them
        r.open(&key(W), s).unwrap();
        assert!(r.open(&key(C), spec(9)).is_err(), "a reused id is refused and not announced");
        let got = opened.try_recv().unwrap();
        assert_eq!((got.execution_id, got.protocol.as_str()), (Eid([9; 32]), "keygen"));
        assert_eq!(got.parties.iter().map(|p| p.role).collect::<Vec<_>>(), vec![Role::Wallet, Role::Provider, Role::Cosigner]);
        assert!(opened.try_recv().is_err());
    }

    #[tokio::test]
    async fn messages_reach_their_recipient_in_order_and_acks_free_them() {
        let r = relay(|_| {});
        let eid = Eid([1; 32]);
        r.open(&key(W), spec(1)).unwrap();
        r.post(&key(W), eid, vec![msg(Role::Wallet, Role::Provider, 0, 10), msg(Role::Wallet, Role::Cosigner, 0, 10)])
            .unwrap();
        r.post(&key(W), eid, vec![msg(Role::Wallet, Role::Provider, 1, 5)]).unwrap();
        let got = r.fetch(&key(P), eid, 0, Duration::ZERO).await.unwrap();
        assert_eq!(got.messages.iter().map(|d| (d.id, d.message.seq)).collect::<Vec<_>>(), vec![(1, 0), (2, 1)]);
        assert_eq!(got.last_id, 2);
        let got = r.fetch(&key(C), eid, 0, Duration::ZERO).await.unwrap();
        assert_eq!(got.messages.len(), 1);
        assert_eq!(r.fetch(&key(W), eid, 0, Duration::ZERO).await.unwrap().messages, vec![]);
        // Refetching with an older cursor repeats; a newer cursor acknowledges.
        assert_eq!(r.fetch(&key(P), eid, 1, Duration::ZERO).await.unwrap().messages.len(), 1);
        assert!(r.stats().1 > 0);
        r.fetch(&key(P), eid, 2, Duration::ZERO).await.unwrap();
        r.fetch(&key(C), eid, 1, Duration::ZERO).await.unwrap();
        assert_eq!(r.stats(), (1, 0));
    }

    #[tokio::test]
    async fn long_poll_wakes_on_a_post() {
        let r = std::sync::Arc::new(relay(|_| {}));
        let eid = Eid([1; 32]);
        r.open(&key(W), spec(1)).unwrap();
        let r2 = r.clone();
        let t0 = Instant::now();
        let poll = tokio::spawn(async move { r2.fetch(&key(P), eid, 0, Duration::from_secs(5)).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        r.post(&key(W), eid, vec![msg(Role::Wallet, Role::Provider, 0, 1)]).unwrap();
        let got = poll.await.unwrap().unwrap();
        assert_eq!(got.messages.len(), 1);
        assert!(t0.elapsed() < Duration::from_secs(2));
        // Nothing arrives: an empty answer after the wait.
        let t0 = Instant::now();
        let got = r.fetch(&key(C), eid, 0, Duration::from_millis(100)).await.unwrap();
        assert!(got.messages.is_empty());
        assert!(t0.elapsed() >= Duration::from_millis(100));
    }

    #[tokio::test]
    async fn execution_ids_are_single_use() {
        let r = relay(|c| c.session_ttl = Duration::from_millis(10));
        r.open(&key(W), spec(1)).unwrap();
        assert_eq!(r.open(&key(W), spec(1)).unwrap_err(), RelayError::ExecutionIdReused(Eid([1; 32])));
        std::thread::sleep(Duration::from_millis(1100));
        // Expired and swept, still remembered.
        assert!(matches!(
            r.fetch(&key(W), Eid([1; 32]), 0, Duration::ZERO).await,
            Err(RelayError::SessionEnded { .. })
        ));
        assert_eq!(r.stats().0, 0);
        assert_eq!(r.open(&key(P), spec(1)).unwrap_err().code(), "execution_id_reused");
        r.open(&key(P), spec(2)).unwrap();
    }

    #[tokio::test]
    async fn only_parties_post_and_only_as_themselves() {
        let r = relay(|_| {});
        let eid = Eid([1; 32]);
        let mut two = spec(1);
        two.parties.pop();
        r.open(&key(W), two).unwrap();
        let e = r.post(&key(C), eid, vec![msg(Role::Cosigner, Role::Wallet, 0, 1)]).unwrap_err();
        assert_eq!(e, RelayError::NotAParty(eid));
        let e = r.post(&key(W), eid, vec![msg(Role::Provider, Role::Wallet, 0, 1)]).unwrap_err();
        assert_eq!(e, RelayError::WrongSender { claimed: Role::Provider, actual: Role::Wallet });
        let e = r.post(&key(W), eid, vec![msg(Role::Wallet, Role::Cosigner, 0, 1)]).unwrap_err();
        assert_eq!(e.code(), "bad_request");
        let e = r.post(&key(W), eid, vec![msg(Role::Wallet, Role::Wallet, 0, 1)]).unwrap_err();
        assert_eq!(e.code(), "bad_request");
        assert_eq!(r.fetch(&key(C), eid, 0, Duration::ZERO).await.unwrap_err(), RelayError::NotAParty(eid));
        assert_eq!(r.post(&key(W), Eid([9; 32]), vec![]).unwrap_err(), RelayError::UnknownSession(Eid([9; 32])));
        // A batch with one bad message queues nothing.
        let e = r.post(
            &key(W),
            eid,
            vec![msg(Role::Wallet, Role::Provider, 0, 1), msg(Role::Provider, Role::Wallet, 0, 1)],
        );
        assert!(e.is_err());
        assert_eq!(r.stats().1, 0);
    }

    #[tokio::test]
    async fn closing_wakes_waiting_fetches() {
        let r = std::sync::Arc::new(relay(|_| {}));
        let eid = Eid([1; 32]);
        r.open(&key(W), spec(1)).unwrap();
        let r2 = r.clone();
        let t0 = Instant::now();
        let waiting = tokio::spawn(async move { r2.fetch(&key(P), eid, 0, Duration::from_secs(5)).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        r.close();
        assert_eq!(waiting.await.unwrap().unwrap_err(), RelayError::Closing);
        assert!(t0.elapsed() < Duration::from_secs(2));
        assert_eq!(r.post(&key(W), eid, vec![]).unwrap_err().status(), 503);
        assert_eq!(r.open(&key(W), spec(2)).unwrap_err(), RelayError::Closing);
    }

    #[tokio::test]
    async fn a_retried_post_queues_nothing_twice() {
        let r = relay(|_| {});
        let eid = Eid([1; 32]);
        r.open(&key(W), spec(1)).unwrap();
        let batch = vec![msg(Role::Wallet, Role::Provider, 0, 10), msg(Role::Wallet, Role::Cosigner, 0, 10)];
        assert_eq!(r.post(&key(W), eid, batch.clone()).unwrap(), 2);
        assert_eq!(r.post(&key(W), eid, batch).unwrap(), 2, "a retry is accepted");
        let dup_in_batch = vec![msg(Role::Wallet, Role::Provider, 1, 10), msg(Role::Wallet, Role::Provider, 1, 10)];
        r.post(&key(W), eid, dup_in_batch).unwrap();
        let mut abort = msg(Role::Wallet, Role::Provider, 0, 10);
        abort.abort = true;
        r.post(&key(W), eid, vec![abort]).unwrap();
        let got = r.fetch(&key(P), eid, 0, Duration::ZERO).await.unwrap();
        let seen: Vec<(u64, bool)> = got.messages.iter().map(|d| (d.message.seq, d.message.abort)).collect();
        assert_eq!(seen, vec![(0, false), (1, false), (0, true)]);
        assert_eq!(r.fetch(&key(C), eid, 0, Duration::ZERO).await.unwrap().messages.len(), 1);
    }

    #[test]
    fn opening_checks_the_parties() {
        let r = relay(|_| {});
        let mut s = spec(1);
        s.protocol = "steal".into();
        assert_eq!(r.open(&key(W), s).unwrap_err().code(), "bad_request");
        let mut s = spec(1);
        s.parties[2].role = Role::Wallet;
        assert!(r.open(&key(W), s).is_err());
        let mut s = spec(1);
        s.parties[2].identity = key(W);
        assert!(r.open(&key(W), s).is_err());
        let mut s = spec(1);
        s.parties[1].identity = key(9);
        assert!(r.open(&key(W), s).is_err(), "not our provider");
        assert!(r.open(&key(8), spec(1)).is_err(), "the opener must be a party");
        let mut s = spec(1);
        s.parties.truncate(1);
        assert!(r.open(&key(W), s).is_err());
        let no_provider = relay(|c| c.provider_identity = None);
        assert!(no_provider.open(&key(W), spec(1)).is_err());
        let mut s = spec(1);
        s.parties.remove(1);
        no_provider.open(&key(W), s).unwrap();
        // Failed opens did not use up the id.
        r.open(&key(W), spec(1)).unwrap();
    }

    #[tokio::test]
    async fn limits_hold() {
        let r = relay(|c| {
            c.max_sessions = 2;
            c.max_message_bytes = 100;
            c.max_session_bytes = 500;
            c.max_total_bytes = 700;
        });
        r.open(&key(W), spec(1)).unwrap();
        r.open(&key(W), spec(2)).unwrap();
        assert_eq!(r.open(&key(W), spec(3)).unwrap_err(), RelayError::TooManySessions(2));
        let per_party = relay(|c| c.max_sessions_per_party = 1);
        per_party.open(&key(W), spec(1)).unwrap();
        assert_eq!(per_party.open(&key(C), spec(2)).unwrap_err(), RelayError::TooManySessions(1));
        per_party.open(&key(P), spec(3)).unwrap(); // the provider is not limited
        per_party.abort(&key(W), Eid([1; 32]), "done").unwrap();
        per_party.open(&key(W), spec(4)).unwrap_err(); // still a party of session 3
        per_party.abort(&key(P), Eid([3; 32]), "done").unwrap();
        per_party.open(&key(W), spec(4)).unwrap();
        // A session its caller finished no longer counts against it, though the others go on.
        per_party.finish(&key(W), Eid([4; 32])).unwrap();
        per_party.open(&key(W), spec(5)).unwrap();
        assert!(per_party.session(&key(P), Eid([4; 32])).unwrap().ended.is_none(), "the provider is not done yet");
        per_party.finish(&key(P), Eid([4; 32])).unwrap();
        per_party.finish(&key(C), Eid([4; 32])).unwrap();
        assert_eq!(per_party.session(&key(P), Eid([4; 32])).unwrap().ended.as_deref(), Some("finished"));
        assert_eq!(per_party.finish(&key(8), Eid([5; 32])).unwrap_err(), RelayError::NotAParty(Eid([5; 32])));
        let (a, b) = (Eid([1; 32]), Eid([2; 32]));
        let e = r.post(&key(W), a, vec![msg(Role::Wallet, Role::Provider, 0, 101)]).unwrap_err();
        assert_eq!(e.status(), 413);
        // 3 x (100 + 64) fits in 500, a fourth does not.
        for seq in 0..3 {
            r.post(&key(W), a, vec![msg(Role::Wallet, Role::Provider, seq, 100)]).unwrap();
        }
        let e = r.post(&key(W), a, vec![msg(Role::Wallet, Role::Provider, 3, 100)]).unwrap_err();
        assert_eq!(e.code(), "session_queue_full");
        // The relay-wide limit: 492 queued, 2 x 164 more do not fit in 700.
        r.post(&key(W), b, vec![msg(Role::Wallet, Role::Provider, 0, 100)]).unwrap();
        let e = r.post(&key(W), b, vec![msg(Role::Wallet, Role::Provider, 1, 100)]).unwrap_err();
        assert_eq!(e, RelayError::RelayFull);
        // Fetching with a cursor frees space.
        let got = r.fetch(&key(P), a, 0, Duration::ZERO).await.unwrap();
        r.fetch(&key(P), a, got.last_id, Duration::ZERO).await.unwrap();
        r.post(&key(W), a, vec![msg(Role::Wallet, Role::Provider, 3, 100)]).unwrap();
        r.post(&key(W), b, vec![msg(Role::Wallet, Role::Provider, 1, 100)]).unwrap();
    }

    #[tokio::test]
    async fn a_fetch_returns_a_bounded_amount() {
        let r = relay(|c| c.max_request_bytes = 400);
        let eid = Eid([1; 32]);
        r.open(&key(W), spec(1)).unwrap();
        for seq in 0..5 {
            r.post(&key(W), eid, vec![msg(Role::Wallet, Role::Provider, seq, 150)]).unwrap();
        }
        let mut after = 0;
        let mut sizes = vec![];
        loop {
            let got = r.fetch(&key(P), eid, after, Duration::ZERO).await.unwrap();
            if got.messages.is_empty() {
                break;
            }
            sizes.push(got.messages.len());
            after = got.last_id;
        }
        assert_eq!(sizes, vec![1, 1, 1, 1, 1]);
    }

    #[tokio::test]
    async fn abort_ends_the_session_for_everyone() {
        let r = std::sync::Arc::new(relay(|_| {}));
        let eid = Eid([1; 32]);
        r.open(&key(W), spec(1)).unwrap();
        r.post(&key(W), eid, vec![msg(Role::Wallet, Role::Provider, 0, 10)]).unwrap();
        let r2 = r.clone();
        let waiting = tokio::spawn(async move { r2.fetch(&key(C), eid, 0, Duration::from_secs(5)).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(r.abort(&key(P), Eid([9; 32]), "x").unwrap_err().code(), "unknown_session");
        assert_eq!(r.abort(&key(8), eid, "x").unwrap_err().code(), "not_a_party");
        r.abort(&key(P), eid, "operator stop\n").unwrap();
        let e = waiting.await.unwrap().unwrap_err();
        assert_eq!(e.status(), 410);
        assert!(e.to_string().contains("aborted by the provider: operator stop"), "{e}");
        let e = r.post(&key(W), eid, vec![msg(Role::Wallet, Role::Provider, 1, 10)]).unwrap_err();
        assert_eq!(e.code(), "session_ended");
        r.abort(&key(W), eid, "again").unwrap();
        assert_eq!(r.stats().1, 0);
        let view = r.session(&key(W), eid).unwrap();
        assert!(view.ended.unwrap().contains("provider"));
    }

    #[tokio::test]
    async fn a_party_finds_the_sessions_that_name_it_in_opening_order() {
        let r = relay(|_| {});
        let mut first = spec(1);
        first.intent = Some(r#"{"purpose":"recovery"}"#.into());
        r.open(&key(W), first).unwrap();
        let two_party = SessionSpec { parties: spec(2).parties[..2].to_vec(), ..spec(2) };
        r.open(&key(W), two_party).unwrap();
        // The co-signer is named in session 1 only; it sees the intent as opened.
        let mine = r.sessions_for(&key(C), 0, Duration::ZERO).await.unwrap();
        assert_eq!(mine.len(), 1);
        assert_eq!(mine[0].execution_id, Eid([1; 32]));
        assert_eq!(mine[0].intent.as_deref(), Some(r#"{"purpose":"recovery"}"#));
        // The wallet, in both, oldest first; the cursor skips what it has seen.
        let all = r.sessions_for(&key(W), 0, Duration::ZERO).await.unwrap();
        assert_eq!(all.iter().map(|v| v.opened_seq).collect::<Vec<_>>(), vec![1, 2]);
        assert!(r.sessions_for(&key(W), 2, Duration::ZERO).await.unwrap().is_empty());
        // An ended session is no longer offered.
        r.abort(&key(W), Eid([2; 32]), "done").unwrap();
        assert_eq!(r.sessions_for(&key(W), 1, Duration::ZERO).await.unwrap().len(), 0);
    }

    #[tokio::test]
    async fn a_waiting_party_wakes_when_a_session_naming_it_opens() {
        let r = std::sync::Arc::new(relay(|c| c.max_wait = Duration::from_secs(5)));
        let waiter = {
            let r = r.clone();
            tokio::spawn(async move { r.sessions_for(&key(C), 0, Duration::from_secs(5)).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        r.open(&key(W), spec(9)).unwrap();
        let found = tokio::time::timeout(Duration::from_secs(2), waiter).await.unwrap().unwrap().unwrap();
        assert_eq!(found.len(), 1);
    }

    #[test]
    fn an_oversized_intent_is_refused() {
        let r = relay(|c| c.max_intent_bytes = 10);
        let mut s = spec(3);
        s.intent = Some("x".repeat(11));
        assert!(matches!(r.open(&key(W), s), Err(RelayError::Invalid(_))));
    }
}
