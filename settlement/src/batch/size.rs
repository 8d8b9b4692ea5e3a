//! Transaction sizes and fees in whole vbytes and satoshis: the arithmetic every leg's share
//! is computed with.

use bitcoin::{Amount, Script};

/// Version, locktime, segwit marker and flag (rounded up) and the two one-byte counts.
pub const TX_OVERHEAD_VBYTES: u64 = 11;

/// A P2WPKH input: 41 bytes outside the witness, a witness of at most 109 weight units
/// (a 72-byte signature); an upper bound, so the real fee rate is never below the asked one.
pub const INPUT_VBYTES: u64 = 68;

fn varint_len(n: u64) -> u64 {
    match n {
        0..=0xfc => 1,
        0xfd..=0xffff => 3,
        0x1_0000..=0xffff_ffff => 5,
        _ => 9,
    }
}

/// Value (8), script length and script.
pub fn output_vbytes(script: &Script) -> u64 {
    let len = script.len() as u64;
    8 + varint_len(len) + len
}

/// The overhead of a transaction with these counts: 11 vB while both fit a one-byte count.
pub(crate) fn overhead_vbytes(inputs: usize, outputs: usize) -> u64 {
    TX_OVERHEAD_VBYTES + (varint_len(inputs as u64) - 1) + (varint_len(outputs as u64) - 1)
}

/// `ceil(vbytes * rate / 1000)`; `None` on overflow.
pub fn fee_for(vbytes: u64, fee_rate_sat_per_kvb: u64) -> Option<Amount> {
    let millisats = vbytes.checked_mul(fee_rate_sat_per_kvb)?;
    Some(Amount::from_sat(millisats.div_ceil(1000)))
}
