//! Online signing through the gateway's MPC relay on loopback, with transport, the end-to-end
//! sealed channel and both signers' policy checks (issue 3's targets: < 5 ms per input with a
//! ready presignature, < 2 s for a 100-input job).
//!
//! Setup (not timed): a real node (journal, engine, store, HTTP gateway with its relay) on
//! 127.0.0.1, the wallet's device key enrolled; aux info for a 2-of-3 group from the fixture
//! primes, one 2-of-3 keygen and the wallet + provider presignatures (all in process, over
//! `LocalNetwork`: that is the slow offline part, ~0.6 s per presignature).
//!
//! Timed, per signing job (the wallet on its own thread over HTTP with its device key, the
//! provider on another thread in process, like separate machines):
//! 1. the provider opens a `sign` session on the relay; the wallet joins over HTTP, the provider
//!    in process; both wrap their links in `SecureLink` (XChaCha20-Poly1305 per envelope);
//! 2. each runs its own policy check on the PSBT (`wallet_check` / `provider_check`, facts of a
//!    withdrawal: its destination and amount, change back to the vault, fee cap);
//! 3. each issues its partial signature for every input from its `FilePresignatureStore`
//!    (the presignature is marked used in the fsynced `used.log` before the partial exists);
//! 4. the wallet sends all its partials in one sealed envelope (JSON) through the relay; the
//!    provider combines each input's pair and verifies the signature (libsecp256k1).
//!
//! Presignatures and criterion's iteration counts: criterion asks for many more iterations than
//! presignatures can be generated. So each party's presignatures are generated once into a
//! "stock" directory, and every iteration gets *fresh* file stores (new directories, empty
//! `used.log`) holding hard links to the stock files, opened before the timer starts. Each
//! iteration therefore consumes (reads, decrypts, durably marks used, deletes) presignatures it
//! has never seen, exactly as in production; only the cryptographic material repeats across
//! iterations, always for the same message (the same PSBT), which costs the same as fresh
//! material would. Never do this outside a benchmark: a presignature used for two different
//! messages reveals the key.
//!
//! Also measured, for comparison: interactive signing of one input without a presignature
//! through the relay (same session set-up, links and policy checks).
//!
//! Run: `cargo bench -p tandem --bench mpc_signing` (~3.5 min on the 2-core VM; set-up ~80 s,
//! most of it generating 101 presignature pairs). Results: BENCHMARKS.md.

use std::collections::HashSet;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bitcoin::absolute::LockTime;
use bitcoin::hashes::Hash;
use bitcoin::secp256k1::Keypair;
use bitcoin::transaction::Version;
use bitcoin::{Amount, OutPoint, Psbt, ScriptBuf, Sequence, Transaction, TxIn, TxOut, Txid, Witness};
use criterion::{criterion_group, criterion_main, Criterion};
use futures::{SinkExt, StreamExt};
use serde_json::json;
use tandem::client::{Auth, Client};
use tandem::mpc_link::{open_session_in_process, HttpRelayLink, InProcessRelayLink};
use tandem::node::{self, Node, NodeOptions};
use tandem::wallet::device::DeviceKey;
use tandem_custody::channel::random_identity;
use tandem_custody::policy::{
    provider_check, wallet_check, Payment, ProviderFacts, SpendPurpose, SpendRequest, WalletFacts,
};
use tandem_custody::primes::fixture_primes;
use tandem_custody::{
    combine_partial_signatures, CustodyConfig, Envelope, ExecutionId, FilePresignatureStore, InputSignature,
    InputToSign, Keyring, Link, LocalNetwork, MasterKey, PartialInputSignature, Party, PartyRole, Policy,
    PresignatureId, PresignatureStore, SessionMember, SignerGroup, VaultKey,
};
use tandem_gateway::{GatewayConfig, RelayConfig};
use tandem_matching::{ExchangeConfig, SequencerConfig};

const TOKEN: &str = "mpc-signing-bench-operator-token";
const ALL: [PartyRole; 3] = [PartyRole::Wallet, PartyRole::Provider, PartyRole::CoSigner];
/// The everyday pair: the wallet (index 0 in the session) and the provider (index 1).
const PAIR: [PartyRole; 2] = [PartyRole::Wallet, PartyRole::Provider];
const JOIN: Duration = Duration::from_secs(10);
const PREVOUT_SAT: u64 = 100_000;
const FEE_SAT: u64 = 5_000;
const MAX_FEE_SAT: u64 = 10_000;
const BIG_JOB: usize = 100;

type BoxFut<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

fn current_thread_rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// Each party on its own thread and runtime, like separate machines.
fn run_parties<'a, T: Send>(futs: Vec<BoxFut<'a, T>>) -> Vec<T> {
    std::thread::scope(|s| {
        let handles: Vec<_> =
            futs.into_iter().map(|f| s.spawn(move || current_thread_rt().block_on(f))).collect();
        handles.into_iter().map(|h| h.join().expect("party thread panicked")).collect()
    })
}

fn config() -> CustodyConfig {
    CustodyConfig { session_timeout: Duration::from_secs(120), ..CustodyConfig::demo() }
}

/// Aux info for a 2-of-3 group from fixture primes, then one keygen, both in process.
fn parties_and_keys() -> (Vec<Party>, Vec<VaultKey>) {
    let group = SignerGroup::new(Policy::TwoOfThree);
    let mut parties: Vec<Party> = ALL.iter().map(|r| Party::new(group.clone(), *r, config()).unwrap()).collect();
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
    let eid = ExecutionId::random();
    let futs: Vec<BoxFut<'_, tandem_custody::Result<VaultKey>>> = parties
        .iter()
        .zip(LocalNetwork::session(3))
        .map(|(p, ep)| Box::pin(p.keygen(eid, ep)) as BoxFut<'_, _>)
        .collect();
    let keys = run_parties(futs).into_iter().map(|r| r.expect("keygen")).collect();
    (parties, keys)
}

/// One wallet + provider presignature, generated in process into the two stock stores.
fn presign(parties: &[Party], keys: &[VaultKey], stores: [&dyn PresignatureStore; 2]) -> PresignatureId {
    let eid = ExecutionId::random();
    let futs: Vec<BoxFut<'_, tandem_custody::Result<PresignatureId>>> = PAIR
        .iter()
        .zip(LocalNetwork::session(2))
        .zip(stores)
        .map(|((r, ep), store)| {
            let i = r.index() as usize;
            Box::pin(parties[i].generate_presignature(&keys[i], &PAIR, eid, ep, store)) as BoxFut<'_, _>
        })
        .collect();
    for r in run_parties(futs) {
        r.expect("presignature");
    }
    eid
}

/// A withdrawal from the vault: `n` inputs of the vault's address, one payment out, change back.
struct Job {
    psbt: Psbt,
    inputs: Vec<InputToSign>,
    prevouts: Vec<TxOut>,
    destination: Payment,
}

fn withdrawal(vault: &ScriptBuf, n: usize) -> Job {
    let funding = Txid::from_byte_array([0x42; 32]);
    let total = PREVOUT_SAT * n as u64;
    let amount = total / 2;
    let dest = ScriptBuf::new_p2wpkh(&bitcoin::WPubkeyHash::from_byte_array([9; 20]));
    let tx = Transaction {
        version: Version::TWO,
        lock_time: LockTime::ZERO,
        input: (0..n)
            .map(|i| TxIn {
                previous_output: OutPoint { txid: funding, vout: i as u32 },
                script_sig: ScriptBuf::new(),
                sequence: Sequence::ENABLE_RBF_NO_LOCKTIME,
                witness: Witness::new(),
            })
            .collect(),
        output: vec![
            TxOut { value: Amount::from_sat(amount), script_pubkey: dest.clone() },
            TxOut { value: Amount::from_sat(total - amount - FEE_SAT), script_pubkey: vault.clone() },
        ],
    };
    let prevout = TxOut { value: Amount::from_sat(PREVOUT_SAT), script_pubkey: vault.clone() };
    let mut psbt = Psbt::from_unsigned_tx(tx).unwrap();
    for input in &mut psbt.inputs {
        input.witness_utxo = Some(prevout.clone());
    }
    Job {
        psbt,
        inputs: (0..n).map(|index| InputToSign { index, prevout_value: Amount::from_sat(PREVOUT_SAT) }).collect(),
        prevouts: vec![prevout; n],
        destination: Payment { script_pubkey: dest, amount: Amount::from_sat(amount) },
    }
}

/// The relay, the node behind it, and the two signers' identities and state.
struct World {
    _tmp: tempfile::TempDir,
    rt: tokio::runtime::Runtime,
    node: Option<Node>,
    base: String,
    wallet_device: Arc<DeviceKey>,
    provider_identity: Keypair,
    parties: Vec<Party>,
    keys: Vec<VaultKey>,
    vault_scripts: HashSet<ScriptBuf>,
    /// Per signer of `PAIR`: the stock directory of generated presignatures and its keyring.
    stock: [(PathBuf, Keyring); 2],
    scratch: tempfile::TempDir,
}

impl World {
    fn members(&self) -> Vec<SessionMember> {
        vec![
            SessionMember::new(PartyRole::Wallet, self.wallet_device.keypair().x_only_public_key().0),
            SessionMember::new(PartyRole::Provider, self.provider_identity.x_only_public_key().0),
        ]
    }

    fn relay(&self) -> Arc<tandem_gateway::Relay> {
        self.node.as_ref().unwrap().relay.clone()
    }

    /// Fresh file stores (new directories) holding hard links to the stock files of `ids`.
    /// Removed (with what the iteration left in them) when the returned guards drop.
    fn fresh_stores(&self, ids: &[PresignatureId]) -> ([FilePresignatureStore; 2], [tempfile::TempDir; 2]) {
        let make = |(stock, keyring): &(PathBuf, Keyring)| {
            let dir = tempfile::tempdir_in(self.scratch.path()).unwrap();
            for id in ids {
                let name = format!("{}.presig", id.to_hex());
                std::fs::hard_link(stock.join(&name), dir.path().join(&name)).unwrap();
            }
            (FilePresignatureStore::open(dir.path(), keyring.clone()).unwrap(), dir)
        };
        let ((s0, d0), (s1, d1)) = (make(&self.stock[0]), make(&self.stock[1]));
        ([s0, s1], [d0, d1])
    }
}

fn start_node(rt: &tokio::runtime::Runtime, dir: &Path, provider: &Keypair) -> Node {
    rt.block_on(node::start(NodeOptions {
        data_dir: dir.to_path_buf(),
        store: Default::default(),
        custody: None,
        bind: "127.0.0.1:0".parse().unwrap(),
        exchange: ExchangeConfig::default(),
        gateway: GatewayConfig {
            operator_token: TOKEN.into(),
            mpc: RelayConfig {
                provider_identity: Some(provider.x_only_public_key().0),
                // Criterion opens thousands of sessions within one session lifetime.
                max_sessions: 1 << 20,
                ..RelayConfig::default()
            },
            ..GatewayConfig::default()
        },
        sequencer: SequencerConfig::default(),
        http_workers: 2,
        redis: None,
        journal: Default::default(),
        project: true,
    }))
    .unwrap()
}

/// Enrols the wallet's device key.
async fn enrol(base: &str, wallet: &Arc<DeviceKey>) {
    let mut c = Client::connect(base).await.unwrap();
    let op = Auth::Operator(TOKEN.into());
    let (s, r) =
        c.send("POST", "/v1/operator/enrolment-codes", Some(&json!({"label": "bench"})), &op).await.unwrap();
    assert_eq!(s, 200, "{r}");
    let body = json!({"device_pubkey": wallet.pubkey_hex(), "label": "phone", "enrolment_code": r["code"]});
    let (s, r) = c.send("POST", "/v1/wallet/enrol", Some(&body), &Auth::Device(wallet.clone())).await.unwrap();
    assert_eq!(s, 200, "{r}");
}

fn setup(presignatures: usize) -> (World, Vec<PresignatureId>) {
    let t0 = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let provider_identity = random_identity();
    let node = start_node(&rt, &tmp.path().join("node"), &provider_identity);
    let base = node.base_url();
    let wallet_device = Arc::new(DeviceKey::generate());
    rt.block_on(enrol(&base, &wallet_device));

    let (parties, keys) = parties_and_keys();
    eprintln!("setup: aux info + keygen in {:.1}s", t0.elapsed().as_secs_f64());
    let stock_dirs = [tmp.path().join("stock-wallet"), tmp.path().join("stock-provider")];
    let keyrings = [Keyring::new(MasterKey::generate()), Keyring::new(MasterKey::generate())];
    let stores = [
        FilePresignatureStore::open(&stock_dirs[0], keyrings[0].clone()).unwrap(),
        FilePresignatureStore::open(&stock_dirs[1], keyrings[1].clone()).unwrap(),
    ];
    let t = Instant::now();
    let ids: Vec<PresignatureId> =
        (0..presignatures).map(|_| presign(&parties, &keys, [&stores[0], &stores[1]])).collect();
    eprintln!(
        "setup: {presignatures} presignature pairs in {:.1}s ({:.0} ms each)",
        t.elapsed().as_secs_f64(),
        t.elapsed().as_secs_f64() * 1000.0 / presignatures as f64
    );
    let vault_scripts: HashSet<ScriptBuf> = [keys[0].script_pubkey()].into_iter().collect();
    let [k0, k1] = keyrings;
    let [d0, d1] = stock_dirs;
    let scratch = tempfile::tempdir_in(tmp.path()).unwrap();
    let w = World {
        rt,
        node: Some(node),
        base,
        wallet_device,
        provider_identity,
        parties,
        keys,
        vault_scripts,
        stock: [(d0, k0), (d1, k1)],
        scratch,
        _tmp: tmp,
    };
    (w, ids)
}

fn wallet_policy(w: &World, job: &Job) {
    let asked = [job.destination.clone()];
    let facts = WalletFacts {
        own_scripts: &w.vault_scripts,
        requested_withdrawals: &asked,
        owed_to_batch: Amount::ZERO,
        batch_leg: None,
        recovery_destination: None,
        max_fee: Amount::from_sat(MAX_FEE_SAT),
    };
    let req = SpendRequest { psbt: &job.psbt, purpose: SpendPurpose::Withdrawal { withdrawal: 1 }, signers: &PAIR };
    wallet_check(&req, &facts).expect("the wallet's policy accepts the withdrawal");
}

fn provider_policy(w: &World, job: &Job) {
    let obligations = [job.destination.clone()];
    let facts = ProviderFacts {
        vault_scripts: &w.vault_scripts,
        obligations: &obligations,
        max_fee: Amount::from_sat(MAX_FEE_SAT),
    };
    let req = SpendRequest { psbt: &job.psbt, purpose: SpendPurpose::Withdrawal { withdrawal: 1 }, signers: &PAIR };
    provider_check(&req, &facts).expect("the provider's policy accepts the withdrawal");
}

/// One online signing job through the relay (see the module doc). `presigs[i]` signs input i.
/// Returns the session's id and the combined signatures (the provider's side).
fn online_job(
    w: &World,
    job: &Job,
    presigs: &[PresignatureId],
    stores: &[FilePresignatureStore; 2],
) -> (ExecutionId, Vec<InputSignature>) {
    let eid = ExecutionId::random();
    let members = w.members();
    let relay = w.relay();
    let provider_x = w.provider_identity.x_only_public_key().0;
    // The provider opens the signing session and tells the wallet its id.
    open_session_in_process(&relay, &provider_x, eid, tandem_custody::ProtocolKind::Sign, &members, None)
        .expect("session opens");
    let (wallet_i, provider_i) = (PartyRole::Wallet.index() as usize, PartyRole::Provider.index() as usize);
    std::thread::scope(|s| {
        let wallet = s.spawn(|| {
            current_thread_rt().block_on(async {
                let link = HttpRelayLink::connect(
                    &w.base,
                    Auth::Device(w.wallet_device.clone()),
                    eid,
                    PartyRole::Wallet,
                    &PAIR,
                    JOIN,
                )
                .await
                .expect("the wallet joins over HTTP")
                .secure(w.wallet_device.keypair(), &members)
                .unwrap();
                let (_rx, mut tx) = link.split();
                wallet_policy(w, job);
                let p = &w.parties[wallet_i];
                let partials: Vec<PartialInputSignature> = job
                    .inputs
                    .iter()
                    .zip(presigs)
                    .map(|(input, id)| {
                        p.issue_partial_signature(&w.keys[wallet_i], &stores[0], *id, &job.psbt, *input).unwrap()
                    })
                    .collect();
                let env = Envelope {
                    eid,
                    sender: 0,
                    recipient: 1,
                    broadcast: false,
                    seq: 0,
                    payload: serde_json::to_vec(&partials).unwrap(),
                    abort: None,
                };
                tx.send(env).await.expect("the wallet's partials go out");
            })
        });
        let provider = s.spawn(|| {
            current_thread_rt().block_on(async {
                let link = InProcessRelayLink::join(relay.clone(), provider_x, eid, PartyRole::Provider, &PAIR, JOIN)
                    .await
                    .expect("the provider joins")
                    .secure(&w.provider_identity, &members)
                    .unwrap();
                let (mut rx, _tx) = link.split();
                provider_policy(w, job);
                let p = &w.parties[provider_i];
                let mine: Vec<PartialInputSignature> = job
                    .inputs
                    .iter()
                    .zip(presigs)
                    .map(|(input, id)| {
                        p.issue_partial_signature(&w.keys[provider_i], &stores[1], *id, &job.psbt, *input).unwrap()
                    })
                    .collect();
                let env = rx.next().await.expect("the wallet's message").expect("it opens");
                let theirs: Vec<PartialInputSignature> = serde_json::from_slice(&env.payload).unwrap();
                assert_eq!(theirs.len(), mine.len());
                let public = w.keys[provider_i].public();
                job.inputs
                    .iter()
                    .zip(theirs.into_iter().zip(mine))
                    .map(|(input, (a, b))| {
                        combine_partial_signatures(&public, &job.psbt, *input, &[a, b]).expect("combines and verifies")
                    })
                    .collect::<Vec<_>>()
            })
        });
        wallet.join().expect("wallet thread");
        (eid, provider.join().expect("provider thread"))
    })
}

/// Ends a finished session on the relay, so its unacknowledged mailbox (the last message each
/// party fetched) is freed now rather than at the session's expiry. Not part of signing.
fn end_session(w: &World, eid: ExecutionId) {
    let provider_x = w.provider_identity.x_only_public_key().0;
    w.relay().abort(&provider_x, tandem_gateway::relay::Eid(eid.0), "done").expect("session ends");
}

/// Interactive signing of input 0 (no presignature) through the relay, with the policy checks.
fn interactive_job(w: &World, job: &Job) -> InputSignature {
    let eid = ExecutionId::random();
    let members = w.members();
    let relay = w.relay();
    let provider_x = w.provider_identity.x_only_public_key().0;
    open_session_in_process(&relay, &provider_x, eid, tandem_custody::ProtocolKind::Sign, &members, None)
        .expect("session opens");
    let input = job.inputs[0];
    let (wallet_i, provider_i) = (PartyRole::Wallet.index() as usize, PartyRole::Provider.index() as usize);
    let wallet: BoxFut<'_, InputSignature> = Box::pin(async {
        let link =
            HttpRelayLink::connect(&w.base, Auth::Device(w.wallet_device.clone()), eid, PartyRole::Wallet, &PAIR, JOIN)
                .await
                .expect("the wallet joins over HTTP")
                .secure(w.wallet_device.keypair(), &members)
                .unwrap();
        wallet_policy(w, job);
        w.parties[wallet_i].sign_input(&w.keys[wallet_i], &PAIR, eid, &job.psbt, input, link).await.unwrap()
    });
    let provider: BoxFut<'_, InputSignature> = Box::pin(async {
        let link = InProcessRelayLink::join(relay.clone(), provider_x, eid, PartyRole::Provider, &PAIR, JOIN)
            .await
            .expect("the provider joins")
            .secure(&w.provider_identity, &members)
            .unwrap();
        provider_policy(w, job);
        w.parties[provider_i].sign_input(&w.keys[provider_i], &PAIR, eid, &job.psbt, input, link).await.unwrap()
    });
    let sigs = run_parties(vec![wallet, provider]);
    assert_eq!(sigs[0], sigs[1]);
    end_session(w, eid);
    sigs[1]
}

/// The signatures make the transaction valid by consensus rules (checked once, not timed).
fn check_consensus(job: &Job, sigs: &[InputSignature]) {
    let mut tx = job.psbt.unsigned_tx.clone();
    for (i, sig) in sigs.iter().enumerate() {
        sig.apply_to_tx(&mut tx, i).unwrap();
    }
    for i in 0..sigs.len() {
        tandem_custody::verify_input_consensus(&tx, i, &job.prevouts[i]).expect("the signature verifies");
    }
}

/// Criterion's `iters` online jobs, each on fresh stores (opened before the timer starts).
fn time_online(w: &World, job: &Job, ids: &[PresignatureId], iters: u64) -> Duration {
    let mut spent = Duration::ZERO;
    for _ in 0..iters {
        let (stores, dirs) = w.fresh_stores(ids);
        let t = Instant::now();
        let (eid, sigs) = online_job(w, job, ids, &stores);
        spent += t.elapsed();
        criterion::black_box(sigs);
        end_session(w, eid);
        drop((stores, dirs));
    }
    spent
}

fn benches(c: &mut Criterion) {
    // One presignature pair for the 1-input job, BIG_JOB for the 100-input job.
    let (w, ids) = setup(1 + BIG_JOB);
    let vault = w.keys[0].script_pubkey();
    let one = withdrawal(&vault, 1);
    let big = withdrawal(&vault, BIG_JOB);
    let (one_ids, big_ids) = (&ids[..1], &ids[1..]);

    // Sanity, not timed: both paths produce signatures valid by consensus rules.
    check_consensus(&one, &online_job(&w, &one, one_ids, &w.fresh_stores(one_ids).0).1);
    check_consensus(&big, &online_job(&w, &big, big_ids, &w.fresh_stores(big_ids).0).1);
    check_consensus(&one, &[interactive_job(&w, &one)]);

    let mut g = c.benchmark_group("mpc_signing_relay");
    g.sample_size(30).measurement_time(Duration::from_secs(8));
    g.bench_function("online_1_input_presignature_ready", |b| b.iter_custom(|iters| time_online(&w, &one, one_ids, iters)));
    g.sample_size(10).measurement_time(Duration::from_secs(10));
    g.bench_function("online_100_inputs_presignatures_ready", |b| {
        b.iter_custom(|iters| time_online(&w, &big, big_ids, iters))
    });
    g.sample_size(10).measurement_time(Duration::from_secs(15));
    g.bench_function("interactive_1_input_no_presignature", |b| b.iter(|| interactive_job(&w, &one)));
    g.finish();

    let (sessions, queued) = w.relay().stats();
    eprintln!("relay at the end: {sessions} sessions held, {queued} bytes queued");
    let mut w = w;
    let node = w.node.take().unwrap();
    w.rt.block_on(node.shutdown()).unwrap();
}

criterion_group!(mpc_signing, benches);
criterion_main!(mpc_signing);
