//! Links from a vault's parties to the gateway's MPC relay (`tandem_gateway::relay`), so custody
//! protocols run between processes: the wallet and the co-signer over HTTP
//! ([`HttpRelayLink`], signed with the device key or the co-signer identity key), the provider
//! in-process ([`InProcessRelayLink`], calling the node's [`Relay`] directly).
//!
//! These links only move envelopes; the relay is not trusted with them. Wrap a link in
//! [`SecureLink`] (see [`HttpRelayLink::secure`]) so every envelope is sealed end to end with
//! the parties' identity keys; the relay then sees routing headers and ciphertexts only.
//!
//! Envelopes name parties by session index (position among the session's roles, sorted); on the
//! relay they are named by role. A link is made for one session and joins it once it is open
//! (whoever opens it: [`open_session_http`], [`open_session_in_process`]); it waits for that
//! up to a bound, since parties start independently.
//!
//! The HTTP link does its I/O on a thread of its own (its own small runtime): it keeps fetching
//! while the party computes, and the aborts a failing party sends still go out after the party's
//! runtime is gone. Transient failures (connection lost, `429`, `503`) are retried for a while;
//! anything else ends the session with [`TransportError::Relay`] naming the relay's error code.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bitcoin::secp256k1::{Keypair, XOnlyPublicKey};
use futures::{Sink, Stream};
use serde_json::{json, Value};
use tandem_custody::transport::{AbortSender, FinishNotice};
use tandem_custody::{Envelope, ExecutionId, Link, PartyRole, ProtocolKind, SecureLink, SessionMember, TransportError};
use tandem_gateway::relay::{Eid, Fetched, RelayError, RelayMessage, Role, SessionParty, SessionSpec, SessionView};
use tandem_gateway::Relay;
use tokio::sync::mpsc;

use crate::client::{Auth, Client};

/// How long one fetch waits on the relay for a message.
const POLL_WAIT: Duration = Duration::from_secs(5);
/// Consecutive transient failures tolerated before a link gives up.
const MAX_RETRIES: u32 = 20;
/// Most hex bytes in one posted batch.
const MAX_BATCH_HEX: usize = 4 << 20;

/// The relay's name for a custody role.
pub fn relay_role(r: PartyRole) -> Role {
    match r {
        PartyRole::Wallet => Role::Wallet,
        PartyRole::Provider => Role::Provider,
        PartyRole::CoSigner => Role::Cosigner,
    }
}

/// The custody role of a relay role.
pub fn party_role(r: Role) -> PartyRole {
    match r {
        Role::Wallet => PartyRole::Wallet,
        Role::Provider => PartyRole::Provider,
        Role::Cosigner => PartyRole::CoSigner,
    }
}

/// The relay refused a request.
#[derive(Debug, Clone)]
pub struct RelayRefused {
    pub status: u16,
    pub code: String,
    pub message: String,
}

impl RelayRefused {
    pub fn from_reply(status: u16, reply: &Value) -> RelayRefused {
        let text = |v: &Value| v.as_str().map(str::to_owned);
        RelayRefused {
            status,
            code: text(&reply["error"]["code"]).unwrap_or_else(|| format!("http_{status}")),
            message: text(&reply["error"]["message"]).unwrap_or_default(),
        }
    }
}

impl fmt::Display for RelayRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "relay refused: {} {}: {}", self.status, self.code, self.message)
    }
}

impl std::error::Error for RelayRefused {}

fn eid_of(eid: ExecutionId) -> Eid {
    Eid(eid.0)
}

fn parties_of(members: &[SessionMember]) -> Vec<SessionParty> {
    members.iter().map(|m| SessionParty { role: relay_role(m.role), identity: m.identity }).collect()
}

/// Opens a session on the relay over HTTP (the caller must be one of `members`, signing as
/// itself: [`Auth::Device`] for the wallet, [`Auth::Cosigner`] for the co-signer).
pub async fn open_session_http(
    client: &mut Client,
    auth: &Auth,
    eid: ExecutionId,
    protocol: ProtocolKind,
    members: &[SessionMember],
    intent: Option<&Value>,
) -> anyhow::Result<Value> {
    let parties: Vec<Value> = members
        .iter()
        .map(|m| json!({"role": relay_role(m.role), "identity_pubkey": m.identity.to_string()}))
        .collect();
    let mut body = json!({"execution_id": eid.to_hex(), "protocol": protocol.to_string(), "parties": parties});
    if let Some(intent) = intent {
        body["intent"] = intent.clone();
    }
    let (status, reply) = client.send("POST", "/v1/mpc/sessions", Some(&body), auth).await?;
    if status != 200 {
        return Err(RelayRefused::from_reply(status, &reply).into());
    }
    Ok(reply)
}

/// Opens a session on the node's own relay, as the in-process provider.
pub fn open_session_in_process(
    relay: &Relay,
    identity: &XOnlyPublicKey,
    eid: ExecutionId,
    protocol: ProtocolKind,
    members: &[SessionMember],
    intent: Option<String>,
) -> Result<SessionView, RelayError> {
    relay.open(
        identity,
        SessionSpec { execution_id: eid_of(eid), protocol: protocol.to_string(), parties: parties_of(members), intent },
    )
}

/// Maps envelopes (session indices) to relay messages (roles) and back, for one session.
#[derive(Clone)]
struct Naming {
    eid: ExecutionId,
    /// Session roles, sorted: index i is roles[i].
    roles: Arc<[PartyRole]>,
}

impl Naming {
    fn new(eid: ExecutionId, roles: &[PartyRole]) -> Naming {
        let mut roles = roles.to_vec();
        roles.sort();
        roles.dedup();
        Naming { eid, roles: roles.into() }
    }

    fn role(&self, index: u16) -> Result<Role, TransportError> {
        self.roles
            .get(index as usize)
            .map(|r| relay_role(*r))
            .ok_or_else(|| TransportError::Send(format!("no party {index} in this session")))
    }

    /// An abort that is not sealed carries its reason as the payload.
    fn to_relay(&self, env: Envelope) -> Result<RelayMessage, TransportError> {
        let abort = env.abort.is_some();
        let payload = match env.abort {
            Some(reason) if env.payload.is_empty() => reason.into_bytes(),
            _ => env.payload,
        };
        Ok(RelayMessage {
            sender: self.role(env.sender)?,
            recipient: self.role(env.recipient)?,
            broadcast: env.broadcast,
            seq: env.seq,
            abort,
            payload,
        })
    }

    /// Unknown roles become out-of-range indices, which the session's checks then name.
    fn to_envelope(&self, m: RelayMessage) -> Envelope {
        let index = |r: Role| self.roles.iter().position(|x| *x == party_role(r)).map_or(u16::MAX, |i| i as u16);
        // An abort's reason: the payload's text. A sealed abort's real reason replaces it once
        // opened (and a sealed one that does not open fails authentication).
        let abort = m.abort.then(|| String::from_utf8_lossy(&m.payload).chars().take(200).collect());
        Envelope {
            eid: self.eid,
            sender: index(m.sender),
            recipient: index(m.recipient),
            broadcast: m.broadcast,
            seq: m.seq,
            payload: m.payload,
            abort,
        }
    }
}

fn message_json(m: &RelayMessage) -> Value {
    json!({
        "sender": m.sender, "recipient": m.recipient, "broadcast": m.broadcast, "seq": m.seq,
        "abort": m.abort, "payload": hex::encode(&m.payload),
    })
}

fn message_from_json(v: &Value) -> Option<RelayMessage> {
    Some(RelayMessage {
        sender: serde_json::from_value(v["sender"].clone()).ok()?,
        recipient: serde_json::from_value(v["recipient"].clone()).ok()?,
        broadcast: v["broadcast"].as_bool()?,
        seq: v["seq"].as_u64()?,
        abort: v["abort"].as_bool()?,
        payload: hex::decode(v["payload"].as_str()?).ok()?,
    })
}

/// Wraps a relay link in the end-to-end secure channel (see `tandem_custody::channel`).
fn secure<L: Link>(
    link: L,
    identity: &Keypair,
    eid: ExecutionId,
    members: &[SessionMember],
) -> tandem_custody::Result<SecureLink<L>> {
    SecureLink::new(link, identity, eid, members)
}

// ---------------------------------------------------------------------------------------------
// HTTP

/// A party's link to a remote relay over HTTP (the wallet, the co-signer).
pub struct HttpRelayLink {
    naming: Naming,
    incoming: mpsc::UnboundedReceiver<Result<Envelope, TransportError>>,
    outgoing: mpsc::UnboundedSender<Outgoing>,
    failed: Arc<Mutex<Option<TransportError>>>,
}

/// What the I/O thread sends, in order.
enum Outgoing {
    Message(Envelope),
    /// This party is done with the session (after everything it sent before).
    Finish,
}

impl HttpRelayLink {
    /// Joins session `eid` on the relay at `base_url` as `me`, among `roles`, signing with
    /// `auth`. Waits up to `join_timeout` for the session to be opened.
    pub async fn connect(
        base_url: &str,
        auth: Auth,
        eid: ExecutionId,
        me: PartyRole,
        roles: &[PartyRole],
        join_timeout: Duration,
    ) -> anyhow::Result<HttpRelayLink> {
        let naming = Naming::new(eid, roles);
        anyhow::ensure!(naming.roles.contains(&me), "{me:?} is not among the session's roles {roles:?}");
        let mut client = Client::connect(base_url).await?;
        let path = format!("/v1/mpc/sessions/{}", eid.to_hex());
        let deadline = tokio::time::Instant::now() + join_timeout;
        loop {
            let (status, reply) = client.send("GET", &path, None, &auth).await?;
            match status {
                200 => break,
                404 if tokio::time::Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(50)).await,
                _ => return Err(RelayRefused::from_reply(status, &reply).into()),
            }
        }
        let (in_tx, incoming) = mpsc::unbounded_channel();
        let (outgoing, out_rx) = mpsc::unbounded_channel();
        let failed: Arc<Mutex<Option<TransportError>>> = Arc::default();
        let io = Io { base_url: base_url.to_owned(), auth, naming: naming.clone(), in_tx, failed: failed.clone() };
        std::thread::Builder::new().name(format!("relay-{}", &eid.to_hex()[..8])).spawn(move || io.run(out_rx))?;
        Ok(HttpRelayLink { naming, incoming, outgoing, failed })
    }

    /// This link wrapped in the end-to-end secure channel, as the holder of `identity`.
    pub fn secure(self, identity: &Keypair, members: &[SessionMember]) -> tandem_custody::Result<SecureLink<Self>> {
        let eid = self.naming.eid;
        secure(self, identity, eid, members)
    }
}

impl Link for HttpRelayLink {
    type Rx = HttpRx;
    type Tx = HttpTx;

    fn abort_sender(&self) -> Option<AbortSender> {
        let out = self.outgoing.clone();
        Some(Box::new(move |env| {
            let _ = out.send(Outgoing::Message(env));
        }))
    }

    fn finish_notice(&self) -> Option<FinishNotice> {
        let out = self.outgoing.clone();
        Some(Box::new(move || {
            let _ = out.send(Outgoing::Finish);
        }))
    }

    fn split(self) -> (HttpRx, HttpTx) {
        (HttpRx(self.incoming), HttpTx { out: self.outgoing, failed: self.failed })
    }
}

/// Incoming half of an [`HttpRelayLink`].
pub struct HttpRx(mpsc::UnboundedReceiver<Result<Envelope, TransportError>>);

impl Stream for HttpRx {
    type Item = Result<Envelope, TransportError>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(cx)
    }
}

/// Outgoing half of an [`HttpRelayLink`]: queues for the link's I/O thread.
pub struct HttpTx {
    out: mpsc::UnboundedSender<Outgoing>,
    failed: Arc<Mutex<Option<TransportError>>>,
}

impl HttpTx {
    fn check(&self) -> Result<(), TransportError> {
        match &*self.failed.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }
}

impl Sink<Envelope> for HttpTx {
    type Error = TransportError;
    fn poll_ready(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), TransportError>> {
        Poll::Ready(self.check())
    }
    fn start_send(self: Pin<&mut Self>, env: Envelope) -> Result<(), TransportError> {
        self.check()?;
        self.out.send(Outgoing::Message(env)).map_err(|_| TransportError::Relay("the link's I/O thread stopped".into()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), TransportError>> {
        Poll::Ready(self.check())
    }
    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), TransportError>> {
        Poll::Ready(Ok(()))
    }
}

/// The I/O thread of an [`HttpRelayLink`]: one connection fetches, one posts.
struct Io {
    base_url: String,
    auth: Auth,
    naming: Naming,
    in_tx: mpsc::UnboundedSender<Result<Envelope, TransportError>>,
    failed: Arc<Mutex<Option<TransportError>>>,
}

enum Outcome {
    Ok(Value),
    /// Worth retrying (connection lost, relay busy).
    Transient(String),
    Fatal(TransportError),
}

impl Io {
    fn run(self, out_rx: mpsc::UnboundedReceiver<Outgoing>) {
        let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(rt) => rt,
            Err(e) => {
                let _ = self.in_tx.send(Err(TransportError::Relay(format!("no runtime for the link: {e}"))));
                return;
            }
        };
        rt.block_on(async {
            tokio::join!(self.fetch_loop(), self.post_loop(out_rx));
        });
    }

    fn fail(&self, e: TransportError) {
        let mut slot = self.failed.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            *slot = Some(e.clone());
        }
        drop(slot);
        let _ = self.in_tx.send(Err(e));
    }

    async fn request(&self, client: &mut Option<Client>, method: &str, path: &str, body: Vec<u8>) -> Outcome {
        if client.is_none() {
            match Client::connect(&self.base_url).await {
                Ok(c) => *client = Some(c),
                Err(e) => return Outcome::Transient(format!("connecting: {e:#}")),
            }
        }
        let c = client.as_mut().expect("connected");
        match c.send_raw(method, path, body, &self.auth).await {
            Ok((200, v)) => Outcome::Ok(v),
            Ok((status @ (429 | 502 | 503), v)) => Outcome::Transient(RelayRefused::from_reply(status, &v).to_string()),
            Ok((status, v)) => {
                let r = RelayRefused::from_reply(status, &v);
                Outcome::Fatal(TransportError::Relay(format!("{} ({}): {}", r.code, r.status, r.message)))
            }
            Err(e) => {
                // The connection may have been closed while idle: reconnect next time.
                *client = None;
                Outcome::Transient(format!("{e:#}"))
            }
        }
    }

    async fn fetch_loop(&self) {
        let mut client = None;
        let mut after = 0u64;
        let mut failures = 0;
        let eid = self.naming.eid.to_hex();
        loop {
            let path = format!("/v1/mpc/sessions/{eid}/messages?after={after}&wait_ms={}", POLL_WAIT.as_millis());
            let outcome = tokio::select! {
                _ = self.in_tx.closed() => return,
                o = self.request(&mut client, "GET", &path, Vec::new()) => o,
            };
            match outcome {
                Outcome::Ok(reply) => {
                    failures = 0;
                    for m in reply["messages"].as_array().into_iter().flatten() {
                        let Some(msg) = message_from_json(m) else {
                            return self.fail(TransportError::Relay("the relay sent a malformed message".into()));
                        };
                        if self.in_tx.send(Ok(self.naming.to_envelope(msg))).is_err() {
                            return;
                        }
                    }
                    after = reply["last_id"].as_u64().unwrap_or(after).max(after);
                }
                Outcome::Transient(why) => {
                    failures += 1;
                    if failures > MAX_RETRIES {
                        return self.fail(TransportError::Relay(format!("relay unreachable: {why}")));
                    }
                    tokio::time::sleep(backoff(failures)).await;
                }
                Outcome::Fatal(e) => return self.fail(e),
            }
        }
    }

    async fn post_loop(&self, mut out_rx: mpsc::UnboundedReceiver<Outgoing>) {
        let mut client = None;
        let eid = self.naming.eid.to_hex();
        let path = format!("/v1/mpc/sessions/{eid}/messages");
        let mut broken = false;
        while let Some(first) = out_rx.recv().await {
            // Whatever is queued, up to a batch, posted at once; a finish after it.
            let (mut batch, mut size, mut finish) = (Vec::new(), 0, false);
            let mut next = Some(first);
            while let Some(item) = next.take() {
                match item {
                    Outgoing::Message(env) => {
                        size += env.payload.len() * 2;
                        batch.push(env);
                    }
                    Outgoing::Finish => {
                        finish = true;
                        break;
                    }
                }
                if size < MAX_BATCH_HEX {
                    next = out_rx.try_recv().ok();
                }
            }
            if broken {
                continue;
            }
            if !batch.is_empty() {
                let messages: Result<Vec<Value>, TransportError> =
                    batch.into_iter().map(|env| self.naming.to_relay(env).map(|m| message_json(&m))).collect();
                let body = match messages {
                    Ok(m) => json!({ "messages": m }).to_string().into_bytes(),
                    Err(e) => {
                        broken = true;
                        self.fail(e);
                        continue;
                    }
                };
                if let Err(e) = self.post_retrying(&mut client, &path, body).await {
                    broken = true;
                    self.fail(e);
                    continue;
                }
            }
            if finish {
                // Only frees the relay's room early: a failure just leaves the session to expire.
                let finish_path = format!("/v1/mpc/sessions/{eid}/finish");
                if let Err(e) = self.post_retrying(&mut client, &finish_path, Vec::new()).await {
                    tracing::debug!(error = %e, "could not tell the relay the session finished");
                }
            }
        }
    }

    async fn post_retrying(&self, client: &mut Option<Client>, path: &str, body: Vec<u8>) -> Result<(), TransportError> {
        let mut failures = 0;
        loop {
            match self.request(client, "POST", path, body.clone()).await {
                Outcome::Ok(_) => return Ok(()),
                Outcome::Transient(why) => {
                    failures += 1;
                    if failures > MAX_RETRIES {
                        return Err(TransportError::Relay(format!("relay unreachable: {why}")));
                    }
                    tokio::time::sleep(backoff(failures)).await;
                }
                Outcome::Fatal(e) => return Err(e),
            }
        }
    }
}

fn backoff(failures: u32) -> Duration {
    Duration::from_millis((50u64 << failures.min(4)).min(1000))
}

// ---------------------------------------------------------------------------------------------
// In-process

/// The provider's link: the node's relay, called directly (no HTTP, no signatures: the provider
/// runs the relay).
pub struct InProcessRelayLink {
    relay: Arc<Relay>,
    identity: XOnlyPublicKey,
    naming: Naming,
}

impl InProcessRelayLink {
    /// Joins session `eid` as `me` (whose identity key is `identity`) among `roles`, waiting up
    /// to `join_timeout` for the session to be opened.
    pub async fn join(
        relay: Arc<Relay>,
        identity: XOnlyPublicKey,
        eid: ExecutionId,
        me: PartyRole,
        roles: &[PartyRole],
        join_timeout: Duration,
    ) -> Result<InProcessRelayLink, RelayError> {
        let naming = Naming::new(eid, roles);
        if !naming.roles.contains(&me) {
            return Err(RelayError::Invalid(format!("{me:?} is not among the session's roles")));
        }
        let deadline = tokio::time::Instant::now() + join_timeout;
        loop {
            match relay.session(&identity, eid_of(eid)) {
                Ok(_) => break,
                Err(RelayError::UnknownSession(_)) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await
                }
                Err(e) => return Err(e),
            }
        }
        Ok(InProcessRelayLink { relay, identity, naming })
    }

    /// This link wrapped in the end-to-end secure channel, as the holder of `identity`.
    pub fn secure(self, identity: &Keypair, members: &[SessionMember]) -> tandem_custody::Result<SecureLink<Self>> {
        let eid = self.naming.eid;
        secure(self, identity, eid, members)
    }

    fn post(relay: &Relay, identity: &XOnlyPublicKey, naming: &Naming, env: Envelope) -> Result<(), TransportError> {
        let m = naming.to_relay(env)?;
        relay
            .post(identity, eid_of(naming.eid), vec![m])
            .map_err(|e| TransportError::Relay(format!("{}: {e}", e.code())))?;
        Ok(())
    }
}

impl Link for InProcessRelayLink {
    type Rx = InProcessRx;
    type Tx = InProcessTx;

    fn finish_notice(&self) -> Option<FinishNotice> {
        let (relay, identity, eid) = (self.relay.clone(), self.identity, eid_of(self.naming.eid));
        Some(Box::new(move || {
            if let Err(e) = relay.finish(&identity, eid) {
                tracing::debug!(error = %e, "could not tell the relay the session finished");
            }
        }))
    }

    fn abort_sender(&self) -> Option<AbortSender> {
        let (relay, identity, naming) = (self.relay.clone(), self.identity, self.naming.clone());
        Some(Box::new(move |env| {
            if let Err(e) = InProcessRelayLink::post(&relay, &identity, &naming, env) {
                tracing::debug!(error = %e, "abort not delivered");
            }
        }))
    }

    fn split(self) -> (InProcessRx, InProcessTx) {
        let rx = InProcessRx {
            relay: self.relay.clone(),
            identity: self.identity,
            naming: self.naming.clone(),
            after: 0,
            buffer: VecDeque::new(),
            pending: None,
            done: false,
        };
        (rx, InProcessTx { relay: self.relay, identity: self.identity, naming: self.naming })
    }
}

type FetchFuture = Pin<Box<dyn Future<Output = Result<Fetched, RelayError>> + Send>>;

/// Incoming half of an [`InProcessRelayLink`]: long-polls the relay.
pub struct InProcessRx {
    relay: Arc<Relay>,
    identity: XOnlyPublicKey,
    naming: Naming,
    after: u64,
    buffer: VecDeque<Envelope>,
    pending: Option<FetchFuture>,
    done: bool,
}

impl Stream for InProcessRx {
    type Item = Result<Envelope, TransportError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if let Some(env) = this.buffer.pop_front() {
                return Poll::Ready(Some(Ok(env)));
            }
            if this.done {
                return Poll::Ready(None);
            }
            let fut = this.pending.get_or_insert_with(|| {
                let (relay, identity, eid, after) =
                    (this.relay.clone(), this.identity, eid_of(this.naming.eid), this.after);
                Box::pin(async move { relay.fetch(&identity, eid, after, POLL_WAIT).await })
            });
            match fut.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(result) => {
                    this.pending = None;
                    match result {
                        Ok(fetched) => {
                            this.after = this.after.max(fetched.last_id);
                            for d in fetched.messages {
                                this.buffer.push_back(this.naming.to_envelope(d.message));
                            }
                        }
                        Err(e) => {
                            this.done = true;
                            return Poll::Ready(Some(Err(TransportError::Relay(format!("{}: {e}", e.code())))));
                        }
                    }
                }
            }
        }
    }
}

/// Outgoing half of an [`InProcessRelayLink`]: posts synchronously.
pub struct InProcessTx {
    relay: Arc<Relay>,
    identity: XOnlyPublicKey,
    naming: Naming,
}

impl Sink<Envelope> for InProcessTx {
    type Error = TransportError;
    fn poll_ready(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), TransportError>> {
        Poll::Ready(Ok(()))
    }
    fn start_send(self: Pin<&mut Self>, env: Envelope) -> Result<(), TransportError> {
        InProcessRelayLink::post(&self.relay, &self.identity, &self.naming, env)
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), TransportError>> {
        Poll::Ready(Ok(()))
    }
    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), TransportError>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_and_relay_messages_map_both_ways() {
        let eid = ExecutionId::random();
        // A signing session of wallet and co-signer: indices 0 and 1.
        let n = Naming::new(eid, &[PartyRole::CoSigner, PartyRole::Wallet]);
        let env =
            Envelope { eid, sender: 1, recipient: 0, broadcast: true, seq: 4, payload: vec![1, 2, 3], abort: None };
        let m = n.to_relay(env).unwrap();
        assert_eq!(
            (m.sender, m.recipient, m.broadcast, m.seq, m.abort),
            (Role::Cosigner, Role::Wallet, true, 4, false)
        );
        let back = n.to_envelope(m.clone());
        assert_eq!((back.sender, back.recipient, back.seq, back.payload.clone()), (1, 0, 4, vec![1, 2, 3]));
        assert_eq!(message_from_json(&message_json(&m)), Some(m));
        // A role outside the session maps to an index the session refuses.
        let stray = RelayMessage {
            sender: Role::Provider,
            recipient: Role::Wallet,
            broadcast: false,
            seq: 0,
            abort: false,
            payload: vec![],
        };
        assert_eq!(n.to_envelope(stray).sender, u16::MAX);
        assert!(n
            .to_relay(Envelope { eid, sender: 2, recipient: 0, broadcast: false, seq: 0, payload: vec![], abort: None })
            .is_err());
        // An unsealed abort keeps its reason.
        let abort = Envelope {
            eid,
            sender: 0,
            recipient: 1,
            broadcast: false,
            seq: 0,
            payload: vec![],
            abort: Some("timeout".into()),
        };
        let m = n.to_relay(abort).unwrap();
        assert!(m.abort);
        assert_eq!(n.to_envelope(m).abort.as_deref(), Some("timeout"));
    }
}
