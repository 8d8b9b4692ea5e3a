//! MPC sessions through the gateway's relay, end to end: a real node (journal, engine, store,
//! HTTP gateway with its relay), the wallet (enrolled device key, HTTP link), the provider
//! (in-process link) and the co-signer (identity key registered by the operator, HTTP link).
//! Every envelope is sealed end to end (`SecureLink`). Aux info is generated once, in process,
//! from the fixture primes (the slow part, ~12 s); keygen and signing then go through the relay.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bitcoin::absolute::LockTime;
use bitcoin::hashes::Hash;
use bitcoin::secp256k1::Keypair;
use bitcoin::transaction::Version;
use bitcoin::{Amount, OutPoint, ScriptBuf, Sequence, Transaction, TxIn, TxOut, Txid, Witness};
use futures::{Sink, Stream};
use serde_json::json;
use tandem::client::{Auth, Client};
use tandem::mpc_link::{open_session_http, open_session_in_process, HttpRelayLink, InProcessRelayLink, RelayRefused};
use tandem::node::{self, Node, NodeOptions};
use tandem::wallet::device::DeviceKey;
use tandem_custody::channel::random_identity;
use tandem_custody::primes::fixture_primes;
use tandem_custody::transport::AbortSender;
use tandem_custody::{
    CustodyConfig, CustodyError, Envelope, ExecutionId, InputSignature, InputToSign, Link, LocalNetwork, Party,
    PartyAuxInfo, PartyRole, Policy, ProtocolKind, SessionMember, SignerGroup, TransportError, VaultKey,
};
use tandem_gateway::relay::RelayError;
use tandem_gateway::{GatewayConfig, Relay, RelayConfig};
use tandem_matching::{ExchangeConfig, SequencerConfig};

const TOKEN: &str = "relay-test-operator-token";
const ALL: [PartyRole; 3] = [PartyRole::Wallet, PartyRole::Provider, PartyRole::CoSigner];
const JOIN: Duration = Duration::from_secs(10);
const PREVOUT_SAT: u64 = 100_000;

type BoxFut<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Each party on its own thread and runtime, like separate machines.
fn run_parties<'a, T: Send>(futs: Vec<BoxFut<'a, T>>) -> Vec<T> {
    std::thread::scope(|s| {
        let handles: Vec<_> = futs
            .into_iter()
            .map(|f| {
                s.spawn(move || tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f))
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("party thread panicked")).collect()
    })
}

/// The three parties' identities and how to reach the relay.
struct World {
    base: String,
    relay: Arc<Relay>,
    wallet: Arc<DeviceKey>,
    cosigner: Arc<DeviceKey>,
    provider: Keypair,
}

impl World {
    fn identity(&self, role: PartyRole) -> Keypair {
        match role {
            PartyRole::Wallet => *self.wallet.keypair(),
            PartyRole::Provider => self.provider,
            PartyRole::CoSigner => *self.cosigner.keypair(),
        }
    }

    fn members(&self, roles: &[PartyRole]) -> Vec<SessionMember> {
        roles.iter().map(|r| SessionMember::new(*r, self.identity(*r).x_only_public_key().0)).collect()
    }

    fn auth(&self, role: PartyRole) -> Auth {
        match role {
            PartyRole::Wallet => Auth::Device(self.wallet.clone()),
            PartyRole::CoSigner => Auth::Cosigner(self.cosigner.clone()),
            PartyRole::Provider => unreachable!("the provider is in process"),
        }
    }

    async fn client(&self) -> Client {
        Client::connect(&self.base).await.unwrap()
    }

    /// Opens a session over HTTP as `opener` (wallet or co-signer).
    async fn open_http(
        &self,
        opener: PartyRole,
        eid: ExecutionId,
        protocol: ProtocolKind,
        roles: &[PartyRole],
    ) -> anyhow::Result<()> {
        let mut c = self.client().await;
        open_session_http(&mut c, &self.auth(opener), eid, protocol, &self.members(roles), None).await.map(|_| ())
    }

    /// Runs `op` for `party` over its sealed link to the relay: HTTP for the wallet and the
    /// co-signer, in-process for the provider. `stop_after`: the party goes silent after that
    /// many envelopes and is gone two seconds later (a crash: no abort).
    fn run<'a, T: Send + 'a>(
        &'a self,
        party: &'a Party,
        eid: ExecutionId,
        roles: &'a [PartyRole],
        stop_after: Option<usize>,
        op: impl FnOnce(&'a Party, Silent) -> BoxFut<'a, tandem_custody::Result<T>> + Send + 'a,
    ) -> BoxFut<'a, tandem_custody::Result<T>> {
        Box::pin(async move {
            let role = party.role();
            let identity = self.identity(role);
            let members = self.members(roles);
            let link = match role {
                PartyRole::Provider => DynLink::new(
                    InProcessRelayLink::join(
                        self.relay.clone(),
                        identity.x_only_public_key().0,
                        eid,
                        role,
                        roles,
                        JOIN,
                    )
                    .await
                    .expect("the provider joins")
                    .secure(&identity, &members)
                    .unwrap(),
                ),
                _ => DynLink::new(
                    HttpRelayLink::connect(&self.base, self.auth(role), eid, role, roles, JOIN)
                        .await
                        .expect("the party joins over HTTP")
                        .secure(&identity, &members)
                        .unwrap(),
                ),
            };
            let fut = op(party, Silent { inner: link, left: stop_after.unwrap_or(usize::MAX) });
            match stop_after {
                None => fut.await,
                Some(_) => match tokio::time::timeout(Duration::from_secs(2), fut).await {
                    Ok(r) => r,
                    Err(_) => Err(CustodyError::InvalidSession("stopped on purpose".into())),
                },
            }
        })
    }
}

type DynRx = Pin<Box<dyn Stream<Item = Result<Envelope, TransportError>> + Send>>;
type DynTx = Pin<Box<dyn Sink<Envelope, Error = TransportError> + Send>>;

/// Any link, type-erased (HTTP and in-process links are different types).
struct DynLink {
    rx: DynRx,
    tx: DynTx,
    abort: Option<Arc<dyn Fn(Envelope) + Send + Sync>>,
}

impl DynLink {
    fn new<L>(link: L) -> DynLink
    where
        L: Link,
        L::Rx: Stream<Item = Result<Envelope, TransportError>> + Send + 'static,
        L::Tx: Send + 'static,
    {
        let abort = link.abort_sender().map(Arc::from);
        let (rx, tx) = link.split();
        DynLink { rx: Box::pin(rx), tx: Box::pin(tx), abort }
    }
}

/// A link whose party stops sending after `left` envelopes (it hangs, like a crashed process,
/// and sends no abort); `usize::MAX`: a normal link.
struct Silent {
    inner: DynLink,
    left: usize,
}

impl Link for Silent {
    type Rx = DynRx;
    type Tx = SilentTx;
    fn abort_sender(&self) -> Option<AbortSender> {
        let abort = self.inner.abort.clone().filter(|_| self.left == usize::MAX)?;
        Some(Box::new(move |env| abort(env)))
    }
    fn split(self) -> (DynRx, SilentTx) {
        (self.inner.rx, SilentTx { inner: self.inner.tx, left: self.left })
    }
}

struct SilentTx {
    inner: DynTx,
    left: usize,
}

impl Sink<Envelope> for SilentTx {
    type Error = TransportError;
    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), TransportError>> {
        if self.left == 0 {
            return Poll::Pending; // never woken: the party is stuck for good
        }
        self.inner.as_mut().poll_ready(cx)
    }
    fn start_send(mut self: Pin<&mut Self>, env: Envelope) -> Result<(), TransportError> {
        self.left = self.left.saturating_sub(1);
        self.inner.as_mut().start_send(env)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), TransportError>> {
        self.inner.as_mut().poll_flush(cx)
    }
    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), TransportError>> {
        self.inner.as_mut().poll_close(cx)
    }
}

async fn start_node(dir: &Path, provider: &Keypair) -> Node {
    node::start(NodeOptions {
        data_dir: dir.to_path_buf(),
        store: Default::default(),
        custody: None,
        bind: "127.0.0.1:0".parse().unwrap(),
        exchange: ExchangeConfig::default(),
        gateway: GatewayConfig {
            operator_token: TOKEN.into(),
            mpc: RelayConfig { provider_identity: Some(provider.x_only_public_key().0), ..RelayConfig::default() },
            ..GatewayConfig::default()
        },
        sequencer: SequencerConfig::default(),
        http_workers: 2,
        redis: None,
        journal: Default::default(),
        project: true,
    })
    .await
    .unwrap()
}

/// Enrols the wallet's device key and registers the co-signer's identity key.
async fn register(base: &str, wallet: &Arc<DeviceKey>, cosigner: &DeviceKey) {
    let mut c = Client::connect(base).await.unwrap();
    let op = Auth::Operator(TOKEN.into());
    let (s, r) =
        c.send("POST", "/v1/operator/enrolment-codes", Some(&json!({"label": "relay test"})), &op).await.unwrap();
    assert_eq!(s, 200, "{r}");
    let body = json!({"device_pubkey": wallet.pubkey_hex(), "label": "phone", "enrolment_code": r["code"]});
    let (s, r) = c.send("POST", "/v1/wallet/enrol", Some(&body), &Auth::Device(wallet.clone())).await.unwrap();
    assert_eq!(s, 200, "{r}");
    let body = json!({"identity_pubkey": cosigner.pubkey_hex(), "label": "acme co-signing"});
    let (s, r) = c.send("POST", "/v1/operator/cosigners", Some(&body), &op).await.unwrap();
    assert_eq!(s, 200, "{r}");
}

/// Aux info for a 2-of-3 group from fixture primes, over the in-process network.
fn aux_info(group: &SignerGroup) -> Vec<PartyAuxInfo> {
    let config = CustodyConfig { session_timeout: Duration::from_secs(120), ..CustodyConfig::demo() };
    let mut parties: Vec<Party> = ALL.iter().map(|r| Party::new(group.clone(), *r, config.clone()).unwrap()).collect();
    let eid = ExecutionId::random();
    let futs: Vec<BoxFut<'_, tandem_custody::Result<()>>> = parties
        .iter_mut()
        .zip(LocalNetwork::session(3))
        .map(|(p, ep)| {
            let primes = fixture_primes(0, p.role()).unwrap();
            Box::pin(async move { p.generate_aux_info(eid, primes, ep).await }) as BoxFut<'_, _>
        })
        .collect();
    for r in run_parties(futs) {
        r.expect("aux info");
    }
    parties.iter().map(|p| p.aux_info().unwrap().clone()).collect()
}

fn parties(group: &SignerGroup, aux: &[PartyAuxInfo], timeout: Duration) -> Vec<Party> {
    let config = CustodyConfig { session_timeout: timeout, ..CustodyConfig::demo() };
    ALL.iter()
        .map(|r| Party::with_aux_info(group.clone(), *r, config.clone(), aux[r.index() as usize].clone()).unwrap())
        .collect()
}

fn funding_and_spend(script: &ScriptBuf) -> (Transaction, Transaction) {
    let funding = Transaction {
        version: Version::TWO,
        lock_time: LockTime::ZERO,
        input: vec![TxIn {
            previous_output: OutPoint { txid: Txid::from_byte_array([0x24; 32]), vout: 1 },
            script_sig: ScriptBuf::new(),
            sequence: Sequence::MAX,
            witness: Witness::new(),
        }],
        output: vec![TxOut { value: Amount::from_sat(PREVOUT_SAT), script_pubkey: script.clone() }],
    };
    let spend = Transaction {
        version: Version::TWO,
        lock_time: LockTime::ZERO,
        input: vec![TxIn {
            previous_output: OutPoint { txid: funding.compute_txid(), vout: 0 },
            script_sig: ScriptBuf::new(),
            sequence: Sequence::ENABLE_RBF_NO_LOCKTIME,
            witness: Witness::new(),
        }],
        output: vec![TxOut {
            value: Amount::from_sat(PREVOUT_SAT - 1_000),
            script_pubkey: ScriptBuf::new_op_return([7u8; 4]),
        }],
    };
    (funding, spend)
}

fn keygen(w: &World, parties: &[Party], eid: ExecutionId) -> Vec<tandem_custody::Result<VaultKey>> {
    let futs = parties
        .iter()
        .map(|p| w.run(p, eid, &ALL, None, move |p, link| Box::pin(p.keygen(eid, link)) as BoxFut<'_, _>))
        .collect();
    run_parties(futs)
}

fn sign(w: &World, parties: &[Party], keys: &[VaultKey], signers: &[PartyRole], spend: &Transaction) -> InputSignature {
    let eid = ExecutionId::random();
    let opener = signers[0];
    // The session is opened by its first signer: the wallet over HTTP, or the provider in process.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    match opener {
        PartyRole::Provider => {
            open_session_in_process(
                &w.relay,
                &w.provider.x_only_public_key().0,
                eid,
                ProtocolKind::Sign,
                &w.members(signers),
                None,
            )
            .unwrap();
        }
        r => rt.block_on(w.open_http(r, eid, ProtocolKind::Sign, signers)).unwrap(),
    }
    let futs = signers
        .iter()
        .map(|r| {
            let key = &keys[r.index() as usize];
            let input = InputToSign { index: 0, prevout_value: Amount::from_sat(PREVOUT_SAT) };
            w.run(&parties[r.index() as usize], eid, signers, None, move |p, link| {
                Box::pin(p.sign_input(key, signers, eid, spend, input, link)) as BoxFut<'_, _>
            })
        })
        .collect();
    let sigs: Vec<InputSignature> =
        run_parties(futs).into_iter().map(|r| r.expect("signing through the relay")).collect();
    assert!(sigs.windows(2).all(|s| s[0] == s[1]));
    sigs[0]
}

fn check_spend(funding: &Transaction, spend: &Transaction, sig: &InputSignature) {
    let mut signed = spend.clone();
    sig.apply_to_tx(&mut signed, 0).unwrap();
    tandem_custody::verify_input_consensus(&signed, 0, &funding.output[0]).expect("the signature verifies");
    let mut tampered = signed.clone();
    tampered.output[0].value = Amount::from_sat(1);
    assert!(tandem_custody::verify_input_consensus(&tampered, 0, &funding.output[0]).is_err());
}

#[test]
fn parties_keygen_and_sign_through_the_relay() {
    let t0 = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let provider = random_identity();
    let node = rt.block_on(start_node(tmp.path(), &provider));
    let w = World {
        base: node.base_url(),
        relay: node.relay.clone(),
        wallet: Arc::new(DeviceKey::generate()),
        cosigner: Arc::new(DeviceKey::generate()),
        provider,
    };
    rt.block_on(register(&w.base, &w.wallet, &w.cosigner));

    let group = SignerGroup::new(Policy::TwoOfThree);
    let aux = aux_info(&group);
    eprintln!("aux info (in process): {:.1}s", t0.elapsed().as_secs_f64());
    let parties = parties(&group, &aux, Duration::from_secs(60));

    // Keygen: the wallet opens the session; all three run it through the relay.
    let t = Instant::now();
    let eid = ExecutionId::random();
    rt.block_on(w.open_http(PartyRole::Wallet, eid, ProtocolKind::Keygen, &ALL)).unwrap();
    let keys: Vec<VaultKey> =
        keygen(&w, &parties, eid).into_iter().map(|r| r.expect("keygen through the relay")).collect();
    assert!(keys.iter().all(|k| k.public_key == keys[0].public_key));
    eprintln!("keygen through the relay: {:.2}s", t.elapsed().as_secs_f64());

    // The execution id is never accepted again, whoever asks.
    let again = rt.block_on(w.open_http(PartyRole::CoSigner, eid, ProtocolKind::Keygen, &ALL)).unwrap_err();
    let refused = again.downcast_ref::<RelayRefused>().expect("a relay refusal");
    assert_eq!((refused.status, refused.code.as_str()), (409, "execution_id_reused"), "{refused}");
    let in_process = open_session_in_process(
        &w.relay,
        &w.provider.x_only_public_key().0,
        eid,
        ProtocolKind::Keygen,
        &w.members(&ALL),
        None,
    );
    assert!(matches!(in_process, Err(RelayError::ExecutionIdReused(_))), "{in_process:?}");

    // One signature by wallet + provider (the everyday pair; the provider opens in process),
    // and one by wallet + co-signer (recovery without the provider's share).
    let (funding, spend) = funding_and_spend(&keys[0].script_pubkey());
    let t = Instant::now();
    let sig = sign(&w, &parties, &keys, &[PartyRole::Wallet, PartyRole::Provider], &spend);
    check_spend(&funding, &spend, &sig);
    let sig = sign(&w, &parties, &keys, &[PartyRole::Wallet, PartyRole::CoSigner], &spend);
    check_spend(&funding, &spend, &sig);
    eprintln!("two signatures through the relay: {:.2}s", t.elapsed().as_secs_f64());

    // The co-signer stops after its first round: the others fail with a clear error by their
    // deadline, not later.
    let deadline = Duration::from_secs(8);
    let short = self::parties(&group, &aux, deadline);
    let eid = ExecutionId::random();
    rt.block_on(w.open_http(PartyRole::Wallet, eid, ProtocolKind::Keygen, &ALL)).unwrap();
    let t = Instant::now();
    let futs = short
        .iter()
        .map(|p| {
            let stop = (p.role() == PartyRole::CoSigner).then_some(2);
            w.run(p, eid, &ALL, stop, move |p, link| Box::pin(p.keygen(eid, link)) as BoxFut<'_, _>)
        })
        .collect();
    let results = run_parties(futs);
    let elapsed = t.elapsed();
    for r in &results[..2] {
        let e = r.as_ref().expect_err("keygen cannot finish without the co-signer");
        eprintln!("after the co-signer stopped: {e}");
        let clear = matches!(e, CustodyError::Timeout { protocol: ProtocolKind::Keygen, .. })
            || matches!(e.transport_violation(), Some(TransportError::PeerAborted { reason, .. }) if reason == "timeout");
        assert!(clear, "{e}");
    }
    assert!(elapsed < deadline + Duration::from_secs(4), "took {elapsed:?}");
    assert!(elapsed >= deadline - Duration::from_secs(1), "gave up early: {elapsed:?}");

    // A new session with a new execution id succeeds.
    let eid = ExecutionId::random();
    rt.block_on(w.open_http(PartyRole::Wallet, eid, ProtocolKind::Keygen, &ALL)).unwrap();
    let fresh: Vec<VaultKey> = keygen(&w, &parties, eid).into_iter().map(|r| r.expect("fresh keygen")).collect();
    assert_ne!(fresh[0].public_key, keys[0].public_key);

    let (sessions, queued) = w.relay.stats();
    eprintln!("relay: {sessions} sessions held, {queued} bytes queued; total {:.1}s", t0.elapsed().as_secs_f64());
    rt.block_on(node.shutdown()).unwrap();
}
