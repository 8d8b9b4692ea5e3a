//! The provider's pool vault: the coins the provider holds itself.
//!
//! It holds the BTC of every account without a vault of its own (partners, the fee account,
//! users who trade through API keys only) and the provider's settlement pool, which fronts a
//! batch's buyers when a seller is late and balances every batch. Each account gets its own
//! pool deposit address, derived from one seed (BIP-32, `m/0/<account id>`), so a deposit says
//! whose it is; the pool's change returns to the settlement pool account's address.
//!
//! Why not an MPC vault: these coins are the provider's custody by definition (no user share to
//! split with); one sealed seed under the operator's master key is the honest model, and an
//! HSM can replace it behind the same two calls (addresses and signing an input).
//!
//! The addresses are derived from the pool's extended public key ([`PoolAddresses`]), so the
//! services that only watch and build (deposits, settlement, reconciliation) need no secret:
//! in a split deployment they get the xpub from the custody process.

use std::collections::HashMap;

use anyhow::Context;
use bitcoin::bip32::{ChildNumber, Xpriv, Xpub};
use bitcoin::secp256k1::Secp256k1;
use bitcoin::{Address, Network, ScriptBuf, Transaction, TxOut, Witness};
use tandem_custody::EncryptedShareStore;
use tandem_matching::AccountId;
use tandem_settlement::SingleKey;

const SEED_RECORD: &str = "pool-seed";

/// The pool's secret side: signs its inputs.
pub struct PoolVault {
    master: Xpriv,
    addresses: PoolAddresses,
}

impl std::fmt::Debug for PoolVault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolVault").field("network", &self.addresses.network).finish_non_exhaustive()
    }
}

/// The pool's public side: every account's pool address, from the extended public key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolAddresses {
    xpub: Xpub,
    network: Network,
}

impl PoolAddresses {
    pub fn new(xpub: Xpub, network: Network) -> PoolAddresses {
        PoolAddresses { xpub, network }
    }

    pub fn xpub(&self) -> &Xpub {
        &self.xpub
    }

    pub fn network(&self) -> Network {
        self.network
    }

    fn index_of(account: AccountId) -> anyhow::Result<u32> {
        // Normal (non-hardened) indexes stop at 2^31.
        u32::try_from(account.0).ok().filter(|i| *i < (1 << 31)).context("account id too large for a pool address")
    }

    fn path(account: AccountId) -> anyhow::Result<[ChildNumber; 2]> {
        Ok([ChildNumber::from_normal_idx(0)?, ChildNumber::from_normal_idx(Self::index_of(account)?)?])
    }

    /// The pool deposit address of `account`.
    pub fn deposit_script(&self, account: AccountId) -> anyhow::Result<ScriptBuf> {
        let child = self.xpub.derive_pub(&Secp256k1::verification_only(), &Self::path(account)?)?;
        Ok(ScriptBuf::new_p2wpkh(&bitcoin::CompressedPublicKey(child.public_key).wpubkey_hash()))
    }

    pub fn deposit_address(&self, account: AccountId) -> anyhow::Result<Address> {
        Ok(Address::from_script(&self.deposit_script(account)?, self.network)?)
    }

    /// The scripts of accounts `1..=accounts`, with their account: every address of the pool.
    pub fn scripts(&self, accounts: u64) -> anyhow::Result<HashMap<ScriptBuf, AccountId>> {
        (1..=accounts).map(|a| Ok((self.deposit_script(AccountId(a))?, AccountId(a)))).collect()
    }
}

impl std::ops::Deref for PoolVault {
    type Target = PoolAddresses;
    fn deref(&self) -> &PoolAddresses {
        &self.addresses
    }
}

impl PoolVault {
    /// The pool of this provider: its seed sealed in the custody secret store, made on first use.
    pub fn load_or_create(secrets: &EncryptedShareStore, network: Network) -> anyhow::Result<PoolVault> {
        // Replicas sharing the custody directory may start together: the first seed written wins.
        let mut fresh = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut fresh);
        let seed: [u8; 32] = secrets.get_or_put(SEED_RECORD, &fresh).context("opening the pool seed (wrong master key?)")?;
        PoolVault::from_seed(&seed, network)
    }

    pub fn from_seed(seed: &[u8; 32], network: Network) -> anyhow::Result<PoolVault> {
        let master = Xpriv::new_master(network, seed).context("deriving the pool's master key")?;
        let xpub = Xpub::from_priv(&Secp256k1::signing_only(), &master);
        Ok(PoolVault { master, addresses: PoolAddresses::new(xpub, network) })
    }

    pub fn addresses(&self) -> &PoolAddresses {
        &self.addresses
    }

    fn key(&self, account: AccountId) -> anyhow::Result<SingleKey> {
        let child = self.master.derive_priv(&Secp256k1::new(), &PoolAddresses::path(account)?)?;
        SingleKey::from_secret_bytes(child.private_key.secret_bytes()).context("a derived pool key is invalid")
    }

    /// Signs input `index` of `tx`, which spends `prevout` from the pool address of `account`.
    pub fn sign_input(&self, account: AccountId, tx: &Transaction, index: usize, prevout: &TxOut) -> anyhow::Result<Witness> {
        let key = self.key(account)?;
        key.sign_input(tx, index, prevout).map_err(|e| anyhow::anyhow!(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_per_account_and_stable() {
        let pool = PoolVault::from_seed(&[7; 32], Network::Regtest).unwrap();
        let a = pool.deposit_script(AccountId(3)).unwrap();
        assert_eq!(a, PoolVault::from_seed(&[7; 32], Network::Regtest).unwrap().deposit_script(AccountId(3)).unwrap());
        assert_ne!(a, pool.deposit_script(AccountId(4)).unwrap());
        assert!(a.is_p2wpkh());
        assert_eq!(pool.scripts(5).unwrap().get(&a), Some(&AccountId(3)));
        assert!(pool.deposit_script(AccountId(1 << 31)).is_err());
    }

    #[test]
    fn the_public_side_derives_the_addresses_the_secret_side_signs_for() {
        let pool = PoolVault::from_seed(&[9; 32], Network::Regtest).unwrap();
        let public = PoolAddresses::new(*pool.xpub(), Network::Regtest);
        for account in [1, 2, 77] {
            let script = public.deposit_script(AccountId(account)).unwrap();
            let key = pool.key(AccountId(account)).unwrap();
            assert_eq!(script, key.script(), "account {account}");
        }
    }
}
