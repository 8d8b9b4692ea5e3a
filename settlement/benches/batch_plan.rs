//! On-chain cost of settlement: 1,000 trades among 100 users in one window, netted into one
//! batch, against the naive cost of one transaction per trade; and how long planning takes.
//!
//! Each user holds one vault coin (P2WPKH). A trade moves a random amount of BTC from a random
//! seller to a random buyer. Naive settlement pays each trade on its own: one input (the
//! seller's coin), two outputs (the buyer, the seller's change), 11 + 68 + 2 × 31 = 141 vB. The
//! batch pays only each user's net, in one transaction.
//!
//! `cargo bench -p tandem-settlement --bench batch_plan` prints the vbytes figures before the
//! timing.

use bitcoin::hashes::Hash as _;
use bitcoin::{Amount, OutPoint, ScriptBuf, SignedAmount, Txid, WPubkeyHash};
use criterion::{criterion_group, criterion_main, Criterion};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tandem_settlement::batch::{self, Participant, PlanParams, Pool, VaultUtxo};

const USERS: u64 = 100;
const TRADES: usize = 1_000;
/// Per trade, paid alone: one input, two P2WPKH outputs.
const NAIVE_VBYTES_PER_TRADE: u64 = 11 + 68 + 2 * 31;

fn script(n: u64) -> ScriptBuf {
    let mut h = [0u8; 20];
    h[..8].copy_from_slice(&n.to_le_bytes());
    ScriptBuf::new_p2wpkh(&WPubkeyHash::from_byte_array(h))
}

fn coin(owner: u64, value: u64) -> VaultUtxo {
    let mut t = [0u8; 32];
    t[..8].copy_from_slice(&owner.to_le_bytes());
    VaultUtxo { outpoint: OutPoint { txid: Txid::from_byte_array(t), vout: 0 }, value: Amount::from_sat(value), script_pubkey: script(owner) }
}

/// The window: every user's net over 1,000 random trades (sums to zero), each user with one
/// 1 BTC coin, the pool with one coin for its fee share.
fn window(seed: u64) -> (Vec<Participant>, Pool) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut net = vec![0i64; USERS as usize];
    for _ in 0..TRADES {
        let seller = rng.gen_range(0..USERS) as usize;
        let mut buyer = rng.gen_range(0..USERS) as usize;
        while buyer == seller {
            buyer = rng.gen_range(0..USERS) as usize;
        }
        let amount = rng.gen_range(10_000..1_000_000);
        net[seller] -= amount;
        net[buyer] += amount;
    }
    let participants = (0..USERS)
        .map(|u| Participant {
            holder: 10 + u,
            target: SignedAmount::from_sat(net[u as usize]),
            utxos: vec![coin(10 + u, 100_000_000)],
            receive_script: script(10 + u),
        })
        .collect();
    let pool = Pool { holder: 2, utxos: vec![coin(2, 10_000_000)], receive_script: script(2) };
    (participants, pool)
}

fn bench(c: &mut Criterion) {
    let (participants, pool) = window(7);
    let params = PlanParams { fee_rate_sat_per_kvb: 2_000, dust: Amount::from_sat(546) };
    let plan = batch::plan(&participants, &[], &pool, &params).unwrap().expect("a batch");
    let per_trade = plan.vbytes as f64 / TRADES as f64;
    eprintln!(
        "batch_plan: {TRADES} trades among {USERS} users: one batch of {} inputs, {} outputs, {} vB = {per_trade:.2} vB per trade; \
         naive {NAIVE_VBYTES_PER_TRADE} vB per trade ({} vB): {:.1}x fewer vbytes; fee {} sat at 2 sat/vB",
        plan.inputs.len(),
        plan.outputs.len(),
        plan.vbytes,
        NAIVE_VBYTES_PER_TRADE * TRADES as u64,
        (NAIVE_VBYTES_PER_TRADE * TRADES as u64) as f64 / plan.vbytes as f64,
        plan.fee.to_sat(),
    );
    c.bench_function("plan a 1,000-trade window among 100 users", |b| {
        b.iter(|| batch::plan(&participants, &[], &pool, &params).unwrap())
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
