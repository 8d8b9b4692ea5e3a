//! Session transport: envelopes, per-session message checks, the in-process network, and the
//! session runner every protocol goes through.
//!
//! Owns: the [`Envelope`] a protocol message travels in, the checks a party applies to every
//! incoming envelope before cggmp21 sees it (right execution id, known sender, addressed to
//! us, strictly sequential per sender so duplicates, replays and reordering are caught, payload
//! decodes), and the rule that any failure ends the session with a [`CustodyError`] naming
//! the violation (or a timeout), never a panic or a hang.
//!
//! Transport-agnostic: a protocol run takes any [`Link`] (a stream of incoming envelopes and a
//! sink for outgoing ones). [`LocalNetwork`] links parties in one process (tests, benchmarks,
//! demo) and can tap messages to inject faults. What this layer does not do, sender
//! authentication and encryption (keygen sends secret shares point-to-point), is
//! [`crate::channel::SecureLink`]'s job: it wraps any link, so the same protocols run over an
//! encrypted link to the gateway's relay.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::channel::mpsc;
use futures::{Sink, SinkExt, Stream, StreamExt};
use round_based::{Incoming, MessageDestination, MessageType, MpcParty, Outgoing};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::{chain, CustodyError, ProtocolFailure, ProtocolKind, Result, TransportError};
use crate::group::ExecutionId;

/// One protocol message on the wire, addressed to exactly one party (broadcasts are fanned out
/// by the sender, so every (sender, recipient) pair has its own gapless sequence).
#[derive(Clone, Serialize, Deserialize)]
pub struct Envelope {
    /// Session this message belongs to.
    pub eid: ExecutionId,
    /// Sender's index in the session.
    pub sender: u16,
    /// Recipient's index in the session.
    pub recipient: u16,
    /// Whether the protocol sent it as a broadcast.
    pub broadcast: bool,
    /// Position in the sender → recipient sequence, from 0.
    pub seq: u64,
    /// Encoded protocol message (JSON: the serialization cggmp21 supports and tests).
    pub payload: Vec<u8>,
    /// Set when the sender gave up on the session (with its reason); `payload` is then empty
    /// and `seq` unused. Lets peers fail at once instead of waiting for their deadline.
    pub abort: Option<String>,
}

impl fmt::Debug for Envelope {
    // Payloads can carry secret shares (keygen p2p): never print them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Envelope")
            .field("eid", &self.eid)
            .field("sender", &self.sender)
            .field("recipient", &self.recipient)
            .field("broadcast", &self.broadcast)
            .field("seq", &self.seq)
            .field("payload_len", &self.payload.len())
            .field("abort", &self.abort)
            .finish()
    }
}

/// Who we are in a session.
#[derive(Debug, Clone, Copy)]
pub struct SessionInfo {
    /// Execution id.
    pub eid: ExecutionId,
    /// Our index among the session's participants.
    pub me: u16,
    /// Number of participants.
    pub n: u16,
}

/// Best-effort, synchronous delivery of an envelope (used to tell peers a session is over).
pub type AbortSender = Box<dyn Fn(Envelope) + Send + Sync>;

/// Tells the relay a party is done with a session (its protocol succeeded), after whatever it
/// sent before.
pub type FinishNotice = Box<dyn FnOnce() + Send>;

/// What a link's incoming stream yields: an envelope, or (for links that check or decrypt
/// before the session does, like [`crate::channel::SecureLink`], or that learn from their
/// network that the session is over) the transport violation that ends the session.
pub trait Inbound {
    /// The envelope, or why there is none.
    fn into_inbound(self) -> std::result::Result<Envelope, TransportError>;
}

impl Inbound for Envelope {
    fn into_inbound(self) -> std::result::Result<Envelope, TransportError> {
        Ok(self)
    }
}

impl Inbound for std::result::Result<Envelope, TransportError> {
    fn into_inbound(self) -> std::result::Result<Envelope, TransportError> {
        self
    }
}

/// A party's connection for one session: incoming envelopes and a sink for outgoing ones.
pub trait Link {
    /// Incoming envelopes (`Envelope` or `Result<Envelope, TransportError>`, see [`Inbound`]).
    type Rx: Stream<Item: Inbound> + Unpin;
    /// Outgoing envelopes.
    type Tx: Sink<Envelope, Error = TransportError> + Unpin;
    /// A way to reach peers after the protocol has given up its sink, to send them an abort.
    /// Without one, peers of a failed session only stop at their deadline.
    fn abort_sender(&self) -> Option<AbortSender> {
        None
    }
    /// A way to tell the relay the session succeeded for this party, so it can free it.
    fn finish_notice(&self) -> Option<FinishNotice> {
        None
    }
    /// Splits into both halves.
    fn split(self) -> (Self::Rx, Self::Tx);
}

impl<Rx, Tx> Link for (Rx, Tx)
where
    Rx: Stream<Item: Inbound> + Unpin,
    Tx: Sink<Envelope, Error = TransportError> + Unpin,
{
    type Rx = Rx;
    type Tx = Tx;
    fn split(self) -> (Rx, Tx) {
        self
    }
}

/// First transport violation seen in a session (so the session's error can name it instead of
/// cggmp21's generic "i/o error").
#[derive(Clone, Default)]
struct Violation(Arc<Mutex<Option<TransportError>>>);

impl Violation {
    fn record(&self, e: &TransportError) {
        let mut slot = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            *slot = Some(e.clone());
        }
    }
    fn take(&self) -> Option<TransportError> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// Incoming side: checks and decodes envelopes into round-based `Incoming` messages.
pub(crate) struct Inbox<M, S> {
    inner: S,
    info: SessionInfo,
    expected_seq: Vec<u64>,
    next_id: u64,
    violation: Violation,
    _m: PhantomData<fn() -> M>,
}

impl<M: DeserializeOwned, S> Inbox<M, S> {
    fn check(&mut self, env: Envelope) -> std::result::Result<Incoming<M>, TransportError> {
        let info = self.info;
        if env.eid != info.eid {
            return Err(TransportError::WrongSession { expected: info.eid, got: env.eid });
        }
        if env.sender >= info.n || env.sender == info.me {
            return Err(TransportError::UnknownSender { sender: env.sender, n: info.n, me: info.me });
        }
        if env.recipient != info.me {
            return Err(TransportError::Misrouted { sender: env.sender, recipient: env.recipient, me: info.me });
        }
        if let Some(reason) = env.abort {
            return Err(TransportError::PeerAborted { sender: env.sender, reason });
        }
        let expected = self.expected_seq[env.sender as usize];
        if env.seq < expected {
            return Err(TransportError::Duplicate { sender: env.sender, seq: env.seq, expected });
        }
        if env.seq > expected {
            return Err(TransportError::OutOfOrder { sender: env.sender, seq: env.seq, expected });
        }
        self.expected_seq[env.sender as usize] += 1;
        let msg: M = serde_json::from_slice(&env.payload).map_err(|e| TransportError::Malformed {
            sender: env.sender,
            seq: env.seq,
            // Category and position only: serde's message may quote the (secret) payload.
            reason: format!("{:?} error at column {}", e.classify(), e.column()),
        })?;
        let id = self.next_id;
        self.next_id += 1;
        Ok(Incoming {
            id,
            sender: env.sender,
            msg_type: if env.broadcast { MessageType::Broadcast } else { MessageType::P2P },
            msg,
        })
    }
}

impl<M: DeserializeOwned, S: Stream<Item: Inbound> + Unpin> Stream for Inbox<M, S> {
    type Item = std::result::Result<Incoming<M>, TransportError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        match this.inner.poll_next_unpin(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => {
                this.violation.record(&TransportError::Closed);
                Poll::Ready(None)
            }
            Poll::Ready(Some(item)) => match item.into_inbound().and_then(|env| this.check(env)) {
                Ok(m) => Poll::Ready(Some(Ok(m))),
                Err(e) => {
                    this.violation.record(&e);
                    Poll::Ready(Some(Err(e)))
                }
            },
        }
    }
}

/// Outgoing side: encodes, fans broadcasts out, numbers envelopes per recipient.
pub(crate) struct Outbox<M, K> {
    inner: K,
    info: SessionInfo,
    next_seq: Vec<u64>,
    pending: VecDeque<Envelope>,
    violation: Violation,
    _m: PhantomData<fn(M)>,
}

impl<M, K: Sink<Envelope, Error = TransportError> + Unpin> Outbox<M, K> {
    fn drain(&mut self, cx: &mut Context<'_>) -> Poll<std::result::Result<(), TransportError>> {
        while !self.pending.is_empty() {
            match self.inner.poll_ready_unpin(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(self.fail(e))),
                Poll::Ready(Ok(())) => {}
            }
            let env = self.pending.pop_front().expect("non-empty");
            if let Err(e) = self.inner.start_send_unpin(env) {
                return Poll::Ready(Err(self.fail(e)));
            }
        }
        Poll::Ready(Ok(()))
    }

    fn fail(&self, e: TransportError) -> TransportError {
        self.violation.record(&e);
        e
    }
}

impl<M: Serialize, K: Sink<Envelope, Error = TransportError> + Unpin> Sink<Outgoing<M>> for Outbox<M, K> {
    type Error = TransportError;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::result::Result<(), Self::Error>> {
        self.drain(cx)
    }

    fn start_send(mut self: Pin<&mut Self>, item: Outgoing<M>) -> std::result::Result<(), Self::Error> {
        let this = &mut *self;
        let payload = serde_json::to_vec(&item.msg)
            .map_err(|e| this.fail(TransportError::Send(format!("encode: {:?}", e.classify()))))?;
        let info = this.info;
        let (recipients, broadcast): (Vec<u16>, bool) = match item.recipient {
            MessageDestination::AllParties => ((0..info.n).filter(|j| *j != info.me).collect(), true),
            MessageDestination::OneParty(j) if j < info.n && j != info.me => (vec![j], false),
            MessageDestination::OneParty(j) => {
                return Err(this.fail(TransportError::Send(format!("no party {j} to send to"))));
            }
        };
        for j in recipients {
            let seq = this.next_seq[j as usize];
            this.next_seq[j as usize] += 1;
            this.pending.push_back(Envelope {
                eid: info.eid,
                sender: info.me,
                recipient: j,
                broadcast,
                seq,
                payload: payload.clone(),
                abort: None,
            });
        }
        Ok(())
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::result::Result<(), Self::Error>> {
        match self.drain(cx) {
            Poll::Ready(Ok(())) => {}
            other => return other,
        }
        let this = &mut *self;
        match this.inner.poll_flush_unpin(cx) {
            Poll::Ready(Err(e)) => Poll::Ready(Err(this.fail(e))),
            other => other,
        }
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::result::Result<(), Self::Error>> {
        match self.drain(cx) {
            Poll::Ready(Ok(())) => {}
            other => return other,
        }
        let this = &mut *self;
        match this.inner.poll_close_unpin(cx) {
            Poll::Ready(Err(e)) => Poll::Ready(Err(this.fail(e))),
            other => other,
        }
    }
}

/// The round-based party type protocols run on.
pub(crate) type SessionParty<M, L> =
    MpcParty<M, (Inbox<M, <L as Link>::Rx>, Outbox<M, <L as Link>::Tx>)>;

/// Runs one protocol session over `link` with a deadline, turning every failure into a
/// [`CustodyError`] that names the transport violation when there was one.
pub(crate) async fn run_session<M, L, T, E, F, Fut>(
    kind: ProtocolKind,
    info: SessionInfo,
    link: L,
    timeout: Duration,
    protocol: F,
) -> Result<T>
where
    M: Serialize + DeserializeOwned,
    L: Link,
    E: std::error::Error,
    F: FnOnce(SessionParty<M, L>) -> Fut,
    Fut: Future<Output = std::result::Result<T, E>>,
{
    let violation = Violation::default();
    let aborter = link.abort_sender();
    let finisher = link.finish_notice();
    let (rx, tx) = link.split();
    let n = info.n as usize;
    let inbox = Inbox { inner: rx, info, expected_seq: vec![0; n], next_id: 0, violation: violation.clone(), _m: PhantomData };
    let outbox = Outbox {
        inner: tx,
        info,
        next_seq: vec![0; n],
        pending: VecDeque::new(),
        violation: violation.clone(),
        _m: PhantomData,
    };
    let party = MpcParty::connected((inbox, outbox));
    let err = match tokio::time::timeout(timeout, protocol(party)).await {
        Ok(Ok(v)) => {
            if let Some(finish) = finisher {
                finish();
            }
            return Ok(v);
        }
        Err(_) => CustodyError::Timeout { protocol: kind, eid: info.eid, after: timeout },
        Ok(Err(e)) => {
            let reason = match violation.take() {
                Some(t) => ProtocolFailure::Transport(t),
                None => ProtocolFailure::Library(chain(&e)),
            };
            CustodyError::Protocol { protocol: kind, eid: info.eid, reason }
        }
    };
    tracing::warn!(protocol = %kind, eid = %info.eid, error = %err, "session failed");
    // Tell the peers, unless they are the ones who ended it: they need not wait for a deadline.
    if let Some(send) = aborter {
        let peer_aborted = matches!(err.transport_violation(), Some(TransportError::PeerAborted { .. }));
        if !peer_aborted {
            let reason = short_reason(&err);
            for j in (0..info.n).filter(|j| *j != info.me) {
                send(Envelope {
                    eid: info.eid,
                    sender: info.me,
                    recipient: j,
                    broadcast: false,
                    seq: 0,
                    payload: Vec::new(),
                    abort: Some(reason.clone()),
                });
            }
        }
    }
    Err(err)
}

/// What a party tells its peers when it gives up (no detail that could help an attacker
/// probe, just the class of failure).
fn short_reason(err: &CustodyError) -> String {
    match err {
        CustodyError::Timeout { .. } => "timeout".into(),
        CustodyError::Protocol { reason: ProtocolFailure::Transport(t), .. } => match t {
            TransportError::WrongSession { .. } => "foreign-session message".into(),
            TransportError::UnknownSender { .. } => "message from unknown party".into(),
            TransportError::Misrouted { .. } => "misrouted message".into(),
            TransportError::Duplicate { .. } => "duplicated message".into(),
            TransportError::OutOfOrder { .. } => "out-of-order message".into(),
            TransportError::Malformed { .. } => "malformed message".into(),
            TransportError::Send(_) => "send failure".into(),
            TransportError::Closed => "network closed".into(),
            TransportError::PeerAborted { .. } => "peer aborted".into(),
            TransportError::Unauthenticated { .. } => "unauthenticated message".into(),
            TransportError::Relay(_) => "relay failure".into(),
        },
        CustodyError::Protocol { reason: ProtocolFailure::Library(_), .. } => "protocol check failed".into(),
        _ => "aborted".into(),
    }
}

/// A hook on the in-process network: sees every envelope and returns what to deliver instead
/// (nothing = drop, several = duplicate/inject). For fault-injection tests.
pub type Tap = Arc<dyn Fn(Envelope) -> Vec<Envelope> + Send + Sync>;

/// In-process network for one session: `n` endpoints, each delivering to the others' inboxes.
pub struct LocalNetwork;

impl LocalNetwork {
    /// Endpoints for a session of `n` parties, indexed by session index.
    pub fn session(n: u16) -> Vec<LocalEndpoint> {
        Self::session_with_tap(n, None)
    }

    /// Like [`LocalNetwork::session`], with every envelope passing through `tap`.
    pub fn session_with_tap(n: u16, tap: Option<Tap>) -> Vec<LocalEndpoint> {
        let (txs, rxs): (Vec<_>, Vec<_>) = (0..n).map(|_| mpsc::unbounded::<Envelope>()).unzip();
        rxs.into_iter()
            .enumerate()
            .map(|(i, rx)| {
                // An endpoint holds senders to the *other* inboxes only, so a party's inbox
                // closes once all its peers are gone (it then fails fast instead of waiting).
                let peers = txs
                    .iter()
                    .enumerate()
                    .map(|(j, tx)| if j == i { None } else { Some(tx.clone()) })
                    .collect();
                LocalEndpoint { rx, tx: LocalSender { peers, tap: tap.clone() } }
            })
            .collect()
    }
}

/// One party's end of a [`LocalNetwork`] session.
pub struct LocalEndpoint {
    rx: mpsc::UnboundedReceiver<Envelope>,
    tx: LocalSender,
}

impl LocalEndpoint {
    /// A sender that can push raw envelopes into the network (tests injecting messages).
    pub fn injector(&self) -> LocalSender {
        LocalSender { peers: self.tx.peers.clone(), tap: None }
    }
}

impl Link for LocalEndpoint {
    type Rx = mpsc::UnboundedReceiver<Envelope>;
    type Tx = LocalSender;
    fn abort_sender(&self) -> Option<AbortSender> {
        let tx = self.injector();
        Some(Box::new(move |env| tx.deliver(env)))
    }
    fn split(self) -> (Self::Rx, Self::Tx) {
        (self.rx, self.tx)
    }
}

/// Outgoing half of a [`LocalEndpoint`].
pub struct LocalSender {
    peers: Vec<Option<mpsc::UnboundedSender<Envelope>>>,
    tap: Option<Tap>,
}

impl LocalSender {
    /// Delivers an envelope to its recipient (through the tap, if any). Envelopes for
    /// recipients that do not exist or have left are dropped, as a network would.
    pub fn deliver(&self, env: Envelope) {
        let out = match &self.tap {
            Some(tap) => tap(env),
            None => vec![env],
        };
        for env in out {
            if let Some(Some(tx)) = self.peers.get(env.recipient as usize) {
                let _ = tx.unbounded_send(env);
            }
        }
    }
}

impl Sink<Envelope> for LocalSender {
    type Error = TransportError;
    fn poll_ready(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::result::Result<(), TransportError>> {
        Poll::Ready(Ok(()))
    }
    fn start_send(self: Pin<&mut Self>, env: Envelope) -> std::result::Result<(), TransportError> {
        self.deliver(env);
        Ok(())
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::result::Result<(), TransportError>> {
        Poll::Ready(Ok(()))
    }
    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::result::Result<(), TransportError>> {
        Poll::Ready(Ok(()))
    }
}
