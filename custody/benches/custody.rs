//! Custody core costs, all parties in one process (each on its own thread, as separate
//! machines would run them; network = in-process channels, so these are compute costs):
//!
//! - aux info generation for a 2-of-3 group from pregenerated (fixture) primes;
//! - keygen of one address (2-of-3, aux info ready);
//! - presignature generation (one signing pair);
//! - online signing of one input with a ready presignature: both partial signatures (each
//!   with its own sighash computation and store consume) + combine + libsecp256k1 check; with
//!   the in-memory store and with the file store (one fsync per partial signature);
//! - interactive signing of one input without a presignature (one signing pair).
//!
//! Run: `cargo bench -p tandem-custody --bench custody` (add `-- --quick` for a short run).

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use bitcoin::absolute::LockTime;
use bitcoin::hashes::Hash;
use bitcoin::transaction::Version;
use bitcoin::{Amount, OutPoint, ScriptBuf, Sequence, Transaction, TxIn, TxOut, Txid, Witness};
use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion};
use tandem_custody::primes::fixture_primes;
use tandem_custody::{
    combine_partial_signatures, CustodyConfig, ExecutionId, FilePresignatureStore, InputToSign, Keyring, LocalNetwork,
    MasterKey, MemoryPresignatureStore, Party, PartyRole, Policy, PresignatureId, PresignatureStore, Result,
    SignerGroup, VaultKey,
};

type BoxFut<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

fn run_parties<'a, T: Send>(futs: Vec<BoxFut<'a, T>>) -> Vec<T> {
    std::thread::scope(|s| {
        let hs: Vec<_> = futs
            .into_iter()
            .map(|f| s.spawn(move || tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(f)))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

fn config() -> CustodyConfig {
    CustodyConfig { session_timeout: Duration::from_secs(600), ..CustodyConfig::demo() }
}

fn aux_info_group() -> Vec<Party> {
    let group = SignerGroup::new(Policy::TwoOfThree);
    let mut parties: Vec<Party> =
        group.policy.roles().iter().map(|r| Party::new(group.clone(), *r, config()).unwrap()).collect();
    let eid = ExecutionId::random();
    let futs: Vec<BoxFut<'_, Result<()>>> = parties
        .iter_mut()
        .zip(LocalNetwork::session(3))
        .map(|(p, ep)| {
            let primes = fixture_primes(0, p.role()).unwrap();
            Box::pin(async move { p.generate_aux_info(eid, primes, ep).await }) as BoxFut<'_, _>
        })
        .collect();
    for r in run_parties(futs) {
        r.unwrap();
    }
    parties
}

fn keygen(parties: &[Party]) -> Vec<VaultKey> {
    let eid = ExecutionId::random();
    let futs: Vec<BoxFut<'_, Result<VaultKey>>> = parties
        .iter()
        .zip(LocalNetwork::session(parties.len() as u16))
        .map(|(p, ep)| Box::pin(p.keygen(eid, ep)) as BoxFut<'_, _>)
        .collect();
    run_parties(futs).into_iter().map(|r| r.unwrap()).collect()
}

const SIGNERS: [PartyRole; 2] = [PartyRole::Wallet, PartyRole::Provider];

fn presign(parties: &[Party], keys: &[VaultKey], stores: [&dyn PresignatureStore; 2]) -> PresignatureId {
    let eid = ExecutionId::random();
    let futs: Vec<BoxFut<'_, Result<PresignatureId>>> = SIGNERS
        .iter()
        .zip(LocalNetwork::session(2))
        .zip(stores)
        .map(|((r, ep), store)| {
            let i = r.index() as usize;
            Box::pin(parties[i].generate_presignature(&keys[i], &SIGNERS, eid, ep, store)) as BoxFut<'_, _>
        })
        .collect();
    for r in run_parties(futs) {
        r.unwrap();
    }
    eid
}

fn spend_tx(key: &VaultKey) -> Transaction {
    let funding_txid = Txid::from_byte_array([7; 32]);
    Transaction {
        version: Version::TWO,
        lock_time: LockTime::ZERO,
        input: vec![TxIn {
            previous_output: OutPoint { txid: funding_txid, vout: 0 },
            script_sig: ScriptBuf::new(),
            sequence: Sequence::MAX,
            witness: Witness::new(),
        }],
        output: vec![TxOut { value: Amount::from_sat(99_000), script_pubkey: key.script_pubkey() }],
    }
}

const INPUT: InputToSign = InputToSign { index: 0, prevout_value: Amount::from_sat(100_000) };

/// Online signing from ready presignatures. Each signing consumes a presignature, and
/// criterion asks for far more iterations than can be pregenerated (presigning is the slow
/// part), so each sample runs at most `PER_SAMPLE` real signings on fresh presignatures and
/// reports their mean scaled to the requested count.
const PER_SAMPLE: u64 = 3;

fn online_signing(
    c: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    parties: &[Party],
    keys: &[VaultKey],
    stores: [&dyn PresignatureStore; 2],
) {
    let tx = spend_tx(&keys[0]);
    let public = keys[0].public();
    // Enough for a 1 ms warm-up (a few short calls) + 10 samples.
    let mut ready: Vec<PresignatureId> = (0..60).map(|_| presign(parties, keys, stores)).collect();
    c.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let n = iters.min(PER_SAMPLE);
            let mut spent = Duration::ZERO;
            for _ in 0..n {
                let id = ready.pop().expect("pregenerated presignatures exhausted");
                let t = Instant::now();
                let partials: Vec<_> = SIGNERS
                    .iter()
                    .zip(stores)
                    .map(|(r, store)| {
                        let i = r.index() as usize;
                        parties[i].issue_partial_signature(&keys[i], store, id, &tx, INPUT).unwrap()
                    })
                    .collect();
                let sig = combine_partial_signatures(&public, &tx, INPUT, &partials).unwrap();
                spent += t.elapsed();
                criterion::black_box(sig);
            }
            spent.mul_f64(iters as f64 / n as f64)
        })
    });
}

fn benches(c: &mut Criterion) {
    let mut slow = c.benchmark_group("custody");
    slow.sample_size(10).warm_up_time(Duration::from_millis(1)).measurement_time(Duration::from_secs(5));
    slow.bench_function("aux_info_gen_2of3_pregenerated_primes", |b| b.iter(aux_info_group));
    drop(slow);

    let parties = aux_info_group();
    let keys = keygen(&parties);
    let tx = spend_tx(&keys[0]);

    let mut g = c.benchmark_group("custody");
    g.sample_size(10).measurement_time(Duration::from_secs(5));
    g.bench_function("keygen_per_address_2of3", |b| b.iter(|| keygen(&parties)));
    let mem = [MemoryPresignatureStore::new(), MemoryPresignatureStore::new()];
    g.bench_function("presignature_generation_pair", |b| {
        b.iter(|| presign(&parties, &keys, [&mem[0], &mem[1]]))
    });
    g.bench_function("sign_input_interactive_no_presignature_pair", |b| {
        b.iter(|| {
            let eid = ExecutionId::random();
            let futs: Vec<BoxFut<'_, Result<_>>> = SIGNERS
                .iter()
                .zip(LocalNetwork::session(2))
                .map(|(r, ep)| {
                    let i = r.index() as usize;
                    Box::pin(parties[i].sign_input(&keys[i], &SIGNERS, eid, &tx, INPUT, ep)) as BoxFut<'_, _>
                })
                .collect();
            run_parties(futs).into_iter().map(|r| r.unwrap()).last()
        })
    });
    drop(g);

    let mut g = c.benchmark_group("custody");
    g.sample_size(10).warm_up_time(Duration::from_millis(1)).measurement_time(Duration::from_secs(1));
    let mem = [MemoryPresignatureStore::new(), MemoryPresignatureStore::new()];
    online_signing(&mut g, "sign_input_online_with_presignature_memory_store", &parties, &keys, [&mem[0], &mem[1]]);
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let files = [
        FilePresignatureStore::open(dirs[0].path(), Keyring::new(MasterKey::generate())).unwrap(),
        FilePresignatureStore::open(dirs[1].path(), Keyring::new(MasterKey::generate())).unwrap(),
    ];
    online_signing(&mut g, "sign_input_online_with_presignature_file_store", &parties, &keys, [&files[0], &files[1]]);
    g.finish();
}

criterion_group!(custody, benches);
criterion_main!(custody);
