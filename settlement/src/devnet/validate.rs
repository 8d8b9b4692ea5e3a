//! Admission of a transaction into the devnet mempool: Bitcoin Core's context-free checks,
//! the contextual ones (inputs exist and are unspent, coinbase maturity, lock times, value
//! balance), the relay policy that matters for settlement (standard outputs, dust, minimum
//! relay fee, BIP-125 replacement), and every input script through Bitcoin Core's own
//! interpreter (libbitcoinconsensus). Refusal reasons use Core's strings.

use std::collections::HashSet;

use bitcoin::blockdata::script::Builder;
use bitcoin::consensus::encode;
use bitcoin::{Amount, Block, CompactTarget, FeeRate, OutPoint, Transaction, TxOut, Txid, Weight};

use super::chain_state::ChainState;
use super::mempool::{fee_rate, Mempool};
use super::miner;

/// Blocks before a coinbase output can be spent.
pub(crate) const COINBASE_MATURITY: u32 = 100;
/// Bitcoin Core's largest standard transaction.
const MAX_STANDARD_TX_WEIGHT: u64 = 400_000;
/// Bitcoin Core refuses transactions whose stripped size is below 65 bytes (CVE-2017-12842).
const MIN_STANDARD_TX_NONWITNESS_SIZE: usize = 65;
const MAX_STANDARD_SCRIPTSIG_SIZE: usize = 1650;
/// BIP-125: at most this many transactions evicted by one replacement.
const MAX_REPLACEMENT_CANDIDATES: usize = 100;
const LOCKTIME_THRESHOLD: u32 = 500_000_000;
const SEQUENCE_FINAL: u32 = 0xffff_ffff;
const SEQUENCE_LOCKTIME_DISABLE_FLAG: u32 = 1 << 31;
const SEQUENCE_LOCKTIME_TYPE_FLAG: u32 = 1 << 22;
const SEQUENCE_LOCKTIME_MASK: u32 = 0x0000_ffff;
/// Script rules the devnet enforces: every soft fork up to and including taproot, all of
/// which are active from genesis on regtest. Taproot needs every spent output, which is
/// always passed.
const SCRIPT_FLAGS: u32 = bitcoinconsensus::VERIFY_ALL_PRE_TAPROOT | bitcoinconsensus::VERIFY_TAPROOT;

/// Relay policy knobs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Policy {
    pub min_relay_fee: FeeRate,
    /// What a replacement must pay on top of what it evicts, per vbyte of its own.
    pub incremental_relay_fee: FeeRate,
}

impl Default for Policy {
    fn default() -> Self {
        Policy { min_relay_fee: FeeRate::BROADCAST_MIN, incremental_relay_fee: FeeRate::BROADCAST_MIN }
    }
}

/// A transaction that may enter the mempool.
#[derive(Debug)]
pub(crate) struct Admission {
    pub fee: Amount,
    pub weight: Weight,
    /// Mempool transactions the newcomer replaces (direct conflicts and their descendants).
    pub evicts: HashSet<Txid>,
}

/// Decides whether `tx` may enter `mempool` on top of `chain`; the error is the reason.
pub(crate) fn check(
    tx: &Transaction,
    chain: &ChainState,
    mempool: &Mempool,
    policy: &Policy,
) -> Result<Admission, String> {
    check_context_free(tx)?;
    check_standard(tx)?;
    let txid = tx.compute_txid();
    let next_height = chain.tip_height() + 1;
    if !is_final(tx, next_height, chain.median_time_past()) {
        return Err("non-final".into());
    }
    if mempool.contains(&txid) {
        return Err("txn-already-in-mempool".into());
    }
    if chain.has_unspent_outputs(tx) {
        return Err("txn-already-known".into());
    }

    // Resolve every spent output, from the UTXO set or from a mempool parent, and collect
    // the mempool transactions this one conflicts with.
    let mut spent: Vec<TxOut> = Vec::with_capacity(tx.input.len());
    let mut conflicts: HashSet<Txid> = HashSet::new();
    for input in &tx.input {
        let outpoint = input.previous_output;
        if let Some(spender) = mempool.spender(&outpoint) {
            conflicts.insert(spender);
        }
        let (txout, coin_height) = if let Some(coin) = chain.coin(&outpoint) {
            if coin.is_coinbase && next_height - coin.height < COINBASE_MATURITY {
                return Err(format!(
                    "bad-txns-premature-spend-of-coinbase, tried to spend coinbase at depth {}",
                    next_height - coin.height
                ));
            }
            (coin.txout.clone(), coin.height)
        } else if let Some(txout) = mempool.output(&outpoint) {
            // Unconfirmed coins count as if mined in the next block, as in Core.
            (txout.clone(), next_height)
        } else {
            return Err("bad-txns-inputs-missingorspent".into());
        };
        if !sequence_lock_met(tx, input.sequence.to_consensus_u32(), coin_height, chain) {
            return Err("non-BIP68-final".into());
        }
        spent.push(txout);
    }

    let value_in = spent.iter().try_fold(Amount::ZERO, |sum, o| sum.checked_add(o.value));
    let value_out = tx.output.iter().try_fold(Amount::ZERO, |sum, o| sum.checked_add(o.value));
    let (Some(value_in), Some(value_out)) = (value_in, value_out) else {
        return Err("bad-txns-inputvalues-outofrange".into());
    };
    let Some(fee) = value_in.checked_sub(value_out) else {
        return Err(format!("bad-txns-in-belowout, value in ({value_in}) < value out ({value_out})"));
    };
    let weight = tx.weight();
    let vsize = weight.to_vbytes_ceil();
    let min_fee = policy.min_relay_fee.fee_vb(vsize).unwrap_or(Amount::MAX_MONEY);
    if fee < min_fee {
        return Err(format!("min relay fee not met, {} < {}", fee.to_sat(), min_fee.to_sat()));
    }

    let evicts = if conflicts.is_empty() {
        HashSet::new()
    } else {
        check_replacement(tx, fee, weight, &conflicts, mempool, policy)?
    };

    verify_scripts(tx, &spent)?;
    Ok(Admission { fee, weight, evicts })
}

/// Decides whether `block` may be connected on top of `chain`; the error is the reason.
///
/// The block rules Bitcoin Core applies (links to the tip, regtest proof of work, time above
/// the median time past, one coinbase first with the BIP-34 height, merkle root, witness
/// commitment, weight, coinbase value at most subsidy plus fees), and every other
/// transaction, in block order, through the same admission as the mempool ([`check`]) with
/// the block's earlier transactions as the only mempool. That is stricter than consensus
/// (relay policy applies too), which every devnet block meets: the miner takes only what the
/// mempool admitted. Used to replay a persisted chain, so a bad file is refused, not trusted.
pub(crate) fn check_block(block: &Block, chain: &ChainState, policy: &Policy) -> Result<(), String> {
    let header = &block.header;
    if header.prev_blockhash != chain.tip_hash() {
        return Err(format!("prev-blk-not-found: builds on {}, tip is {}", header.prev_blockhash, chain.tip_hash()));
    }
    if header.bits != CompactTarget::from_consensus(miner::REGTEST_BITS) {
        return Err("bad-diffbits".into());
    }
    if header.validate_pow(header.target()).is_err() {
        return Err("high-hash".into());
    }
    if header.time <= chain.median_time_past() {
        return Err("time-too-old".into());
    }
    let Some((coinbase, rest)) = block.txdata.split_first() else {
        return Err("bad-blk-length".into());
    };
    if !coinbase.is_coinbase() || coinbase.input.len() != 1 {
        return Err("bad-cb-missing".into());
    }
    if rest.iter().any(Transaction::is_coinbase) {
        return Err("bad-cb-multiple".into());
    }
    if !block.check_merkle_root() {
        return Err("bad-txnmrklroot".into());
    }
    if !block.check_witness_commitment() {
        return Err("bad-witness-merkle-match".into());
    }
    if block.weight() > Weight::MAX_BLOCK {
        return Err("bad-blk-weight".into());
    }
    let height = chain.tip_height() + 1;
    let script_sig = coinbase.input[0].script_sig.as_bytes();
    let height_push = Builder::new().push_int(i64::from(height)).into_script();
    if !(2..=100).contains(&script_sig.len()) {
        return Err("bad-cb-length".into());
    }
    if !script_sig.starts_with(height_push.as_bytes()) {
        return Err("bad-cb-height".into());
    }

    let mut in_block = Mempool::default();
    let mut fees = Amount::ZERO;
    for tx in rest {
        let txid = tx.compute_txid();
        let admission =
            check(tx, chain, &in_block, policy).map_err(|reason| format!("transaction {txid}: {reason}"))?;
        if !admission.evicts.is_empty() {
            return Err(format!("transaction {txid}: bad-txns-inputs-missingorspent (conflicts in block)"));
        }
        fees = fees.checked_add(admission.fee).ok_or("bad-txns-accumulated-fee-outofrange")?;
        in_block.insert(tx.clone(), admission.fee, admission.weight);
    }
    let reward = coinbase.output.iter().try_fold(Amount::ZERO, |sum, o| sum.checked_add(o.value));
    let allowed = miner::subsidy(height).checked_add(fees);
    match (reward, allowed) {
        (Some(reward), Some(allowed)) if reward <= allowed => Ok(()),
        _ => Err("bad-cb-amount".into()),
    }
}

/// Bitcoin Core's CheckTransaction: rules that need no context.
fn check_context_free(tx: &Transaction) -> Result<(), String> {
    if tx.input.is_empty() {
        return Err("bad-txns-vin-empty".into());
    }
    if tx.output.is_empty() {
        return Err("bad-txns-vout-empty".into());
    }
    if tx.base_size() * 4 > Weight::MAX_BLOCK.to_wu() as usize {
        return Err("bad-txns-oversize".into());
    }
    let mut total = Amount::ZERO;
    for output in &tx.output {
        if output.value > Amount::MAX_MONEY {
            return Err("bad-txns-vout-toolarge".into());
        }
        total = match total.checked_add(output.value) {
            Some(t) if t <= Amount::MAX_MONEY => t,
            _ => return Err("bad-txns-txouttotal-toolarge".into()),
        };
    }
    if tx.is_coinbase() {
        return Err("coinbase".into());
    }
    let mut seen: HashSet<OutPoint> = HashSet::with_capacity(tx.input.len());
    for input in &tx.input {
        if input.previous_output.is_null() {
            return Err("bad-txns-prevout-null".into());
        }
        if !seen.insert(input.previous_output) {
            return Err("bad-txns-inputs-duplicate".into());
        }
    }
    Ok(())
}

/// The part of Bitcoin Core's IsStandardTx that protects what settlement builds.
fn check_standard(tx: &Transaction) -> Result<(), String> {
    if !(1..=2).contains(&tx.version.0) {
        return Err("version".into());
    }
    if tx.weight().to_wu() > MAX_STANDARD_TX_WEIGHT {
        return Err("tx-size".into());
    }
    if tx.base_size() < MIN_STANDARD_TX_NONWITNESS_SIZE {
        return Err("tx-size-small".into());
    }
    for input in &tx.input {
        if input.script_sig.len() > MAX_STANDARD_SCRIPTSIG_SIZE {
            return Err("scriptsig-size".into());
        }
        if !input.script_sig.is_push_only() {
            return Err("scriptsig-not-pushonly".into());
        }
    }
    for output in &tx.output {
        let script = &output.script_pubkey;
        let standard = script.is_p2pkh()
            || script.is_p2sh()
            || script.is_p2pk()
            || script.is_witness_program()
            || script.is_op_return()
            || script.is_multisig();
        if !standard {
            return Err("scriptpubkey".into());
        }
        // The dust limit is what spending the output would cost at 3 sat/vB (294 sat for
        // P2WPKH, 546 for P2PKH); OP_RETURN outputs have none.
        if output.value < script.minimal_non_dust() {
            return Err("dust".into());
        }
    }
    Ok(())
}

/// nLockTime is met by the next block (height) or by the median time past (time).
fn is_final(tx: &Transaction, next_height: u32, median_time_past: u32) -> bool {
    let lock_time = tx.lock_time.to_consensus_u32();
    if lock_time == 0 {
        return true;
    }
    let limit = if lock_time < LOCKTIME_THRESHOLD { next_height } else { median_time_past };
    lock_time < limit || tx.input.iter().all(|i| i.sequence.to_consensus_u32() == SEQUENCE_FINAL)
}

/// BIP-68 relative lock of one input whose coin was created at `coin_height`.
fn sequence_lock_met(tx: &Transaction, sequence: u32, coin_height: u32, chain: &ChainState) -> bool {
    if tx.version.0 < 2 || sequence & SEQUENCE_LOCKTIME_DISABLE_FLAG != 0 {
        return true;
    }
    let next_height = chain.tip_height() + 1;
    let value = sequence & SEQUENCE_LOCKTIME_MASK;
    if sequence & SEQUENCE_LOCKTIME_TYPE_FLAG != 0 {
        // Time is counted from the median time past of the block before the coin's.
        let coin_time = chain.median_time_past_at(coin_height.saturating_sub(1)) as u64;
        let min_time = coin_time + ((value as u64) << 9);
        min_time <= chain.median_time_past() as u64
    } else {
        coin_height as u64 + value as u64 <= next_height as u64
    }
}

/// BIP-125 rules for a transaction spending outputs already spent in the mempool. Returns
/// everything it evicts.
fn check_replacement(
    tx: &Transaction,
    fee: Amount,
    weight: Weight,
    conflicts: &HashSet<Txid>,
    mempool: &Mempool,
    policy: &Policy,
) -> Result<HashSet<Txid>, String> {
    // Rule 1: every conflict opted in, itself or through an unconfirmed ancestor.
    for conflict in conflicts {
        let signals = std::iter::once(*conflict)
            .chain(mempool.ancestors(conflict))
            .filter_map(|t| mempool.get(&t))
            .any(|e| e.tx.is_explicitly_rbf());
        if !signals {
            return Err(format!("txn-mempool-conflict, {conflict} does not signal replaceability"));
        }
    }
    let evicts = mempool.with_descendants(conflicts.iter().copied());
    if evicts.len() > MAX_REPLACEMENT_CANDIDATES {
        return Err(format!("too many potential replacements, {} > {MAX_REPLACEMENT_CANDIDATES}", evicts.len()));
    }
    // A replacement cannot spend what it evicts.
    if tx.input.iter().any(|i| evicts.contains(&i.previous_output.txid)) {
        return Err("bad-txns-spends-conflicting-tx".into());
    }
    // Rule 2: no unconfirmed input that the conflicts did not already spend from.
    let known_parents: HashSet<Txid> = conflicts
        .iter()
        .filter_map(|c| mempool.get(c))
        .flat_map(|e| e.tx.input.iter().map(|i| i.previous_output.txid))
        .collect();
    if tx
        .input
        .iter()
        .any(|i| mempool.contains(&i.previous_output.txid) && !known_parents.contains(&i.previous_output.txid))
    {
        return Err("replacement-adds-unconfirmed".into());
    }
    // Pays a better rate than each transaction it directly replaces (keeps mining incentive).
    let new_rate = fee_rate(fee, weight);
    for conflict in conflicts.iter().filter_map(|c| mempool.get(c)) {
        if new_rate <= conflict.fee_rate() {
            return Err(format!(
                "insufficient fee, rejecting replacement {}; new feerate {new_rate} <= old feerate {}",
                tx.compute_txid(),
                conflict.fee_rate()
            ));
        }
    }
    // Rules 3 and 4: pays for everything evicted, plus its own relay at the incremental rate.
    let evicted_fees: Amount = evicts.iter().filter_map(|t| mempool.get(t)).map(|e| e.fee).sum();
    if fee < evicted_fees {
        return Err(format!(
            "insufficient fee, rejecting replacement {}, less fees than conflicting txs; {} < {}",
            tx.compute_txid(),
            fee.to_sat(),
            evicted_fees.to_sat()
        ));
    }
    let relay = policy.incremental_relay_fee.fee_vb(weight.to_vbytes_ceil()).unwrap_or(Amount::MAX_MONEY);
    if fee - evicted_fees < relay {
        return Err(format!(
            "insufficient fee, rejecting replacement {}, not enough additional fees to relay; {} < {}",
            tx.compute_txid(),
            (fee - evicted_fees).to_sat(),
            relay.to_sat()
        ));
    }
    Ok(evicts)
}

/// Runs every input script through libbitcoinconsensus, always with all spent outputs.
pub(crate) fn verify_scripts(tx: &Transaction, spent: &[TxOut]) -> Result<(), String> {
    let serialized = encode::serialize(tx);
    // The FFI structs borrow the script bytes of `spent`, which outlives every call below.
    let spent_outputs: Vec<bitcoinconsensus::Utxo> = spent
        .iter()
        .map(|o| bitcoinconsensus::Utxo {
            script_pubkey: o.script_pubkey.as_bytes().as_ptr(),
            script_pubkey_len: o.script_pubkey.len() as u32,
            value: o.value.to_sat() as i64,
        })
        .collect();
    for (index, prevout) in spent.iter().enumerate() {
        bitcoinconsensus::verify_with_flags(
            prevout.script_pubkey.as_bytes(),
            prevout.value.to_sat(),
            &serialized,
            Some(&spent_outputs),
            index,
            SCRIPT_FLAGS,
        )
        .map_err(|e| format!("mandatory-script-verify-flag-failed (input {index}: {e:?})"))?;
    }
    Ok(())
}
