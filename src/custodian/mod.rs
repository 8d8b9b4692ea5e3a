//! What settlement needs from the provider's custody, behind one small port ([`Custodian`]):
//! the provider's signatures on spends from vaults (made with the vault's wallet or co-signer
//! through the MPC relay), its signatures on the pool's inputs, and the pool's addresses.
//!
//! Two adapters:
//! - [`InProcess`]: the node's own [`VaultService`] (`tandem serve`, `tandem demo`);
//! - [`http::HttpCustodian`]: the internal API of a custody process (`tandem custody`, served by
//!   [`api`]), when settlement runs as a process of its own (`tandem settlement`). Custody keeps
//!   every secret (key shares, presignatures, the pool seed); settlement gets only the pool's
//!   extended public key.
//!
//! Either way the provider's checks run where its shares are: the custody process reads the
//! obligations a spend must pay from its own replica of the ledger, never from the caller.

pub mod api;
pub mod http;

use std::sync::Arc;

use bitcoin::{Psbt, Witness};
use futures::future::BoxFuture;
use tokio::time::Instant;
use tandem_custody::{InputSignature, SpendIntent, SpendPurpose};
use tandem_matching::AccountId;

use crate::provider::pool::PoolAddresses;
use crate::provider::{SignError, VaultService};

/// The provider's custody as the settlement service uses it.
pub trait Custodian: Send + Sync {
    /// The pool's addresses (public derivation: no secret).
    fn pool(&self) -> &PoolAddresses;

    /// The provider's signatures on every input `intent` names, made with the intent's other
    /// signer, after the provider's own checks; in the intent's order. Gives up at `until`
    /// (a partner that never answers must not hold a batch).
    fn sign(&self, intent: SpendIntent, until: Instant) -> BoxFuture<'_, Result<Vec<InputSignature>, SignError>>;

    /// The witness of pool input `index` of the settlement batch `psbt` (`purpose` names the
    /// batch), which spends from `account`'s pool address; after the provider's checks of the
    /// whole batch against the ledger.
    fn sign_pool_input<'a>(
        &'a self,
        purpose: SpendPurpose,
        psbt: &'a Psbt,
        index: usize,
        account: AccountId,
    ) -> BoxFuture<'a, Result<Witness, SignError>>;
}

fn too_late() -> SignError {
    SignError::Failed("no answer before the signing deadline".into())
}

/// The node's own vault service.
pub struct InProcess(pub Arc<VaultService>);

impl Custodian for InProcess {
    fn pool(&self) -> &PoolAddresses {
        self.0.pool.addresses()
    }

    fn sign(&self, intent: SpendIntent, until: Instant) -> BoxFuture<'_, Result<Vec<InputSignature>, SignError>> {
        Box::pin(async move { tokio::time::timeout_at(until, self.0.sign(intent)).await.unwrap_or_else(|_| Err(too_late())) })
    }

    fn sign_pool_input<'a>(
        &'a self,
        purpose: SpendPurpose,
        psbt: &'a Psbt,
        index: usize,
        account: AccountId,
    ) -> BoxFuture<'a, Result<Witness, SignError>> {
        Box::pin(self.0.sign_pool_input(purpose, psbt, index, account))
    }
}
