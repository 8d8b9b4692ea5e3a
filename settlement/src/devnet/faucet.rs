//! The devnet's own single-key P2WPKH wallet: it collects the coinbase of the blocks mined
//! at creation (and of any block mined without another reward script) and pays test and
//! demo addresses from it. It builds and signs ordinary transactions that then pass the
//! same mempool validation as anyone else's.

use bitcoin::{absolute, transaction, Amount, FeeRate, OutPoint, Script, ScriptBuf, Sequence, Transaction, TxIn, TxOut, Witness};

use crate::single_key::SingleKey;

pub(crate) struct FaucetWallet {
    key: SingleKey,
    /// The key's secret, kept so a persisted devnet can write it down (see `store`).
    secret: [u8; 32],
    script: ScriptBuf,
}

impl std::fmt::Debug for FaucetWallet {
    // Never print the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaucetWallet").field("script", &self.script).finish_non_exhaustive()
    }
}

/// A coin the faucet may spend.
#[derive(Debug, Clone)]
pub(crate) struct Spendable {
    pub outpoint: OutPoint,
    pub value: Amount,
}

impl FaucetWallet {
    /// A wallet with a fresh random key.
    pub fn random() -> Self {
        loop {
            let mut secret = [0u8; 32];
            rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut secret);
            // Zero or at least the curve order: astronomically rare, draw again.
            if let Some(wallet) = Self::from_secret(secret) {
                return wallet;
            }
        }
    }

    /// The wallet of a known key (a persisted devnet's), `None` if `secret` is no valid key.
    pub fn from_secret(secret: [u8; 32]) -> Option<Self> {
        let key = SingleKey::from_secret_bytes(secret)?;
        Some(FaucetWallet { script: key.script(), key, secret })
    }

    pub fn secret(&self) -> &[u8; 32] {
        &self.secret
    }

    pub fn script(&self) -> &Script {
        &self.script
    }

    /// A transaction paying `amount` to `to` from `coins` (spent in the given order until
    /// they cover amount plus fee), with change back to the faucet unless it would be dust.
    pub fn pay(
        &self,
        coins: &[Spendable],
        to: &Script,
        amount: Amount,
        fee_rate: FeeRate,
    ) -> Result<Transaction, String> {
        let mut tx = Transaction {
            version: transaction::Version::TWO,
            lock_time: absolute::LockTime::ZERO,
            input: Vec::new(),
            output: vec![TxOut { value: amount, script_pubkey: to.to_owned() }],
        };
        let mut selected: Vec<&Spendable> = Vec::new();
        let mut total = Amount::ZERO;
        for coin in coins {
            selected.push(coin);
            total = total.checked_add(coin.value).ok_or("faucet value overflow")?;
            tx.input.push(TxIn {
                previous_output: coin.outpoint,
                script_sig: ScriptBuf::new(),
                // Opts in to replacement, like current wallets.
                sequence: Sequence::ENABLE_RBF_NO_LOCKTIME,
                witness: placeholder_witness(),
            });
            let fee_without_change = fee_rate.fee_wu(tx.weight()).ok_or("fee overflow")?;
            let Some(left) = total.checked_sub(amount).and_then(|l| l.checked_sub(fee_without_change)) else {
                continue;
            };
            let change = TxOut { value: Amount::ZERO, script_pubkey: self.script.clone() };
            let change_fee = fee_rate.fee_wu(change.weight()).ok_or("fee overflow")?;
            match left.checked_sub(change_fee) {
                Some(value) if value >= self.script.minimal_non_dust() => {
                    tx.output.push(TxOut { value, ..change });
                }
                // Change too small to be worth an output: it goes to the miner.
                _ => {}
            }
            let values: Vec<TxOut> =
                selected.iter().map(|c| TxOut { value: c.value, script_pubkey: self.script.clone() }).collect();
            self.key.sign_all(&mut tx, &values)?;
            return Ok(tx);
        }
        Err(format!("faucet has {total} spendable, not enough for {amount} plus fee"))
    }
}

/// A witness the size of the largest P2WPKH witness (72-byte signature with sighash flag,
/// 33-byte key), so the fee computed before signing is never short.
fn placeholder_witness() -> Witness {
    Witness::from_slice(&[vec![0u8; 72], vec![0u8; 33]])
}
