//! Block assembly for the devnet: the coinbase (BIP-34 height, subsidy plus fees, BIP-141
//! witness commitment), the merkle root, and a header whose proof of work meets regtest's
//! minimum difficulty (about two nonces on average).

use bitcoin::blockdata::block::{Header, Version};
use bitcoin::blockdata::opcodes::all::OP_RETURN;
use bitcoin::blockdata::script::Builder;
use bitcoin::hashes::Hash as _;
use bitcoin::{
    absolute, transaction, Amount, Block, BlockHash, CompactTarget, OutPoint, ScriptBuf, Sequence, Transaction, TxIn,
    TxMerkleNode, TxOut, Witness,
};

/// Regtest's proof-of-work limit, used for every devnet block.
pub(crate) const REGTEST_BITS: u32 = 0x207f_ffff;
/// Regtest halves the subsidy every 150 blocks (mainnet: 210,000).
const REGTEST_HALVING_INTERVAL: u32 = 150;
/// BIP-141 header of the witness commitment output.
const WITNESS_COMMITMENT_MAGIC: [u8; 4] = [0xaa, 0x21, 0xa9, 0xed];
/// The coinbase witness reserved value (BIP-141); all zeros like every miner uses.
const WITNESS_RESERVED_VALUE: [u8; 32] = [0; 32];

/// New coins a regtest block at `height` may create.
pub(crate) fn subsidy(height: u32) -> Amount {
    let halvings = height / REGTEST_HALVING_INTERVAL;
    if halvings >= 64 {
        return Amount::ZERO;
    }
    Amount::from_sat(Amount::from_int_btc(50).to_sat() >> halvings)
}

/// Everything needed to build one block on top of the tip.
pub(crate) struct Template {
    pub prev_blockhash: BlockHash,
    pub height: u32,
    pub time: u32,
    /// Non-coinbase transactions, parents before children.
    pub txdata: Vec<Transaction>,
    pub fees: Amount,
    pub reward_to: ScriptBuf,
    /// Makes each coinbase, hence each block, unique even when a reorg re-mines the same
    /// height with the same transactions in the same second.
    pub extra_nonce: u64,
}

pub(crate) fn assemble(t: Template) -> Block {
    let script_sig = Builder::new().push_int(t.height as i64).push_slice(t.extra_nonce.to_le_bytes()).into_script();
    let coinbase = Transaction {
        version: transaction::Version::TWO,
        lock_time: absolute::LockTime::ZERO,
        input: vec![TxIn {
            previous_output: OutPoint::null(),
            script_sig,
            sequence: Sequence::MAX,
            witness: Witness::from_slice(&[WITNESS_RESERVED_VALUE]),
        }],
        output: vec![TxOut { value: subsidy(t.height) + t.fees, script_pubkey: t.reward_to }],
    };
    let mut txdata = Vec::with_capacity(t.txdata.len() + 1);
    txdata.push(coinbase);
    txdata.extend(t.txdata);
    let header = Header {
        version: Version::from_consensus(0x2000_0000),
        prev_blockhash: t.prev_blockhash,
        merkle_root: TxMerkleNode::all_zeros(),
        time: t.time,
        bits: CompactTarget::from_consensus(REGTEST_BITS),
        nonce: 0,
    };
    let mut block = Block { header, txdata };

    // The witness root zeroes the coinbase wtxid, so adding the commitment to the coinbase
    // does not change what it commits to.
    if let Some(witness_root) = block.witness_root() {
        let commitment = Block::compute_witness_commitment(&witness_root, &WITNESS_RESERVED_VALUE);
        let mut payload = [0u8; 36];
        payload[..4].copy_from_slice(&WITNESS_COMMITMENT_MAGIC);
        payload[4..].copy_from_slice(commitment.as_byte_array());
        let script_pubkey = Builder::new().push_opcode(OP_RETURN).push_slice(payload).into_script();
        block.txdata[0].output.push(TxOut { value: Amount::ZERO, script_pubkey });
    }
    if let Some(root) = block.compute_merkle_root() {
        block.header.merkle_root = root;
    }
    grind(&mut block.header);
    block
}

/// Finds a nonce (bumping the time if all 2^32 fail) that meets the header's target.
fn grind(header: &mut Header) {
    let target = header.target();
    loop {
        if header.validate_pow(target).is_ok() {
            return;
        }
        match header.nonce.checked_add(1) {
            Some(n) => header.nonce = n,
            None => {
                header.nonce = 0;
                header.time = header.time.wrapping_add(1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subsidy_halves_every_150_blocks() {
        assert_eq!(subsidy(0), Amount::from_int_btc(50));
        assert_eq!(subsidy(149), Amount::from_int_btc(50));
        assert_eq!(subsidy(150), Amount::from_sat(2_500_000_000));
        assert_eq!(subsidy(300), Amount::from_sat(1_250_000_000));
        assert_eq!(subsidy(150 * 64), Amount::ZERO);
    }

    #[test]
    fn assembled_block_is_well_formed() {
        let block = assemble(Template {
            prev_blockhash: BlockHash::all_zeros(),
            height: 17,
            time: 1_700_000_000,
            txdata: Vec::new(),
            fees: Amount::from_sat(1234),
            reward_to: ScriptBuf::new_op_return([1u8; 4]),
            extra_nonce: 9,
        });
        assert!(block.check_merkle_root());
        assert!(block.check_witness_commitment());
        assert_eq!(block.bip34_block_height().unwrap(), 17);
        assert!(block.header.validate_pow(block.header.target()).is_ok());
        assert_eq!(block.txdata[0].output[0].value, Amount::from_int_btc(50) + Amount::from_sat(1234));
    }
}
