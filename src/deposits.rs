//! The deposit service: watches the chain for outputs paying vault addresses and credits them
//! in the ledger, through the sequencer like every other change.
//!
//! The rules are the scanner's (`tandem_settlement::deposits`): credit once per outpoint, at 0
//! confirmations when the provider co-signed every input (a vault-to-vault move nobody can
//! double-spend), otherwise after `confirmations` blocks. The credit's reference is
//! `chain:<txid>:<vout>`, so the engine refuses a second credit of the same outpoint even after
//! a restart (the scanner's own memory starts empty and rescans from its start height).
//!
//! The addresses to watch: every vault address in the store (registered by the provider's vault
//! service), credited to its vault's account, which holds the coins; and each account's pool
//! deposit address (`provider::PoolVault`), credited to the account and held by the settlement
//! pool. Outputs of the settlement service's own batches pay vault and pool addresses too: they
//! are never deposits (the batch's confirmation moves the ledger), so they are skipped.
//!
//! A deposit a reorg removes after it was credited is taken back (`Command::ReverseDeposit`).
//! If the account already spent it, the engine freezes the account and cancels its orders; if
//! that is still not enough the reversal waits for an operator: an `ALERT` in the error log,
//! counted in `reversals_pending`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tandem_matching::{AccountId, Amount, AssetId, Command, Event, RejectReason, SequencerHandle, SETTLEMENT_POOL};
use tandem_settlement::deposits::{DepositEvent, DepositPolicy, DepositScanner};
use tandem_settlement::Chain;
use tandem_store::Store;

#[derive(Clone)]
pub struct DepositService {
    pub chain: Arc<dyn Chain>,
    pub sequencer: SequencerHandle,
    pub store: Store,
    pub btc: AssetId,
    pub policy: DepositPolicy,
    /// Scan from this height (the chain's history before it holds no vault outputs).
    pub start_height: u32,
    pub interval: Duration,
    /// Reversals waiting for an operator (see the module docs).
    pub reversals_pending: Arc<AtomicI64>,
    /// The provider's pool: custodial deposit addresses (none: only vault addresses are watched).
    pub pool: Option<crate::provider::PoolAddresses>,
    /// The settlement leadership turn it runs in (see [`crate::leadership`]); its commands
    /// carry it. `None` on an embedded journal.
    pub leader_epoch: Option<u64>,
}

/// The engine reference of a chain deposit.
pub fn deposit_reference(outpoint: &bitcoin::OutPoint) -> String {
    format!("chain:{}:{}", outpoint.txid, outpoint.vout)
}

impl DepositService {
    /// A deposit service for `node` on `chain`: the node's ledger, store, BTC asset and pool;
    /// scanning from height 0 every second (set the fields to change that).
    pub fn for_node(node: &crate::node::Node, chain: Arc<dyn Chain>, policy: DepositPolicy) -> anyhow::Result<DepositService> {
        Ok(DepositService {
            chain,
            sequencer: node.sequencer.clone(),
            store: node.store.clone(),
            btc: crate::node::btc_asset(&node.engine_config)?,
            policy,
            start_height: 0,
            interval: Duration::from_secs(1),
            reversals_pending: Default::default(),
            pool: node.vaults.as_ref().map(|v| v.pool.addresses().clone()),
            leader_epoch: None,
        })
    }

    /// Scans until the task is dropped.
    pub fn spawn(self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move { self.run().await })
    }

    async fn run(self) {
        let mut scanner = DepositScanner::new(self.policy, self.start_height);
        let mut watched: HashMap<String, ()> = HashMap::new();
        let mut pool_watched: u64 = 0;
        let network = self.chain.network();
        // Credits the sequencer could not take yet (stopped, overloaded): the scanner reports
        // an outpoint once, so they wait here, never dropped.
        let mut unapplied: Vec<DepositEvent> = Vec::new();
        loop {
            if let Err(e) = self.watch_new(&mut scanner, &mut watched, network).await {
                tracing::warn!(error = %format!("{e:#}"), "deposit service cannot read the vault addresses");
            }
            if let Err(e) = self.watch_pool(&mut scanner, &mut pool_watched).await {
                tracing::warn!(error = %format!("{e:#}"), "deposit service cannot derive the pool addresses");
            }
            match scanner.poll(&*self.chain).await {
                Ok(events) => unapplied.extend(events),
                Err(e) => tracing::warn!(error = %e, "deposit service cannot read the chain; retrying"),
            }
            let mut left = Vec::new();
            for event in unapplied.drain(..) {
                if let Some(again) = self.apply(event).await {
                    left.push(again);
                }
            }
            unapplied = left;
            tokio::time::sleep(self.interval).await;
        }
    }

    /// Watches the vault addresses registered since the last round.
    async fn watch_new(
        &self,
        scanner: &mut DepositScanner,
        watched: &mut HashMap<String, ()>,
        network: bitcoin::Network,
    ) -> anyhow::Result<()> {
        let mut owners: HashMap<String, AccountId> = HashMap::new();
        for a in self.store.all_vault_addresses().await? {
            if watched.contains_key(&a.address) {
                continue;
            }
            let account = match owners.get(&a.group_id) {
                Some(acc) => *acc,
                None => {
                    let Some(v) = self.store.vault(&a.group_id).await? else { continue };
                    owners.insert(a.group_id.clone(), v.account_id);
                    v.account_id
                }
            };
            let address = a.address.parse::<bitcoin::Address<bitcoin::address::NetworkUnchecked>>()?;
            let script = address.require_network(network)?.script_pubkey();
            scanner.watch(script, account.0, account.0);
            watched.insert(a.address, ());
        }
        Ok(())
    }

    /// Watches the pool deposit address of every account opened since the last round.
    async fn watch_pool(&self, scanner: &mut DepositScanner, watched: &mut u64) -> anyhow::Result<()> {
        let Some(pool) = &self.pool else { return Ok(()) };
        let accounts = self.sequencer.read(|e| e.account_count()).await?;
        for account in (*watched + 1)..=accounts {
            scanner.watch(pool.deposit_script(AccountId(account))?, account, SETTLEMENT_POOL.0);
            *watched = account;
        }
        Ok(())
    }

    /// Applies one event; answers it back if it must be tried again.
    async fn apply(&self, event: DepositEvent) -> Option<DepositEvent> {
        // The settlement service's own transactions: recorded before they are ever sent.
        match self.store.batch_of_txid(&event.outpoint().txid.to_string()).await {
            Ok(Some(_)) => return None,
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %e, "cannot tell a deposit from a batch output yet; retrying");
                return Some(event);
            }
        }
        match event {
            DepositEvent::Credit { outpoint, account, holder, amount, instant, confirmations } => {
                let reference = deposit_reference(&outpoint);
                // A restarted scanner reports every deposit again: the ones the ledger holds
                // need no command (the engine would refuse them, but into the journal).
                let (btc, r) = (self.btc, reference.clone());
                match self.sequencer.read(move |e| e.deposit(btc, &r).is_some_and(|d| !d.reversed)).await {
                    Ok(true) => return None,
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(%reference, error = %e, "deposit not checked yet; retrying");
                        return Some(DepositEvent::Credit { outpoint, account, holder, amount, instant, confirmations });
                    }
                }
                let command = Command::CreditChainDeposit {
                    account: AccountId(account),
                    holder: AccountId(holder),
                    asset: self.btc,
                    amount: Amount(amount.to_sat()),
                    reference: reference.clone(),
                };
                match self.sequencer.submit(command.from_leader(self.leader_epoch)).await {
                    Ok(applied) => {
                        let rejected = applied.events.iter().find_map(|e| match e {
                            Event::Rejected { reason } => Some(*reason),
                            _ => None,
                        });
                        match rejected {
                            None => tracing::info!(
                                %reference, account, sat = amount.to_sat(), instant, confirmations, "deposit credited"
                            ),
                            Some(RejectReason::DuplicateDeposit) => {}
                            Some(reason) => tracing::error!(%reference, account, %reason, "ALERT: the ledger refused a deposit"),
                        }
                        None
                    }
                    Err(e) => {
                        tracing::warn!(%reference, error = %e, "deposit not submitted yet; retrying");
                        Some(DepositEvent::Credit { outpoint, account, holder, amount, instant, confirmations })
                    }
                }
            }
            DepositEvent::Reverse { outpoint, account, holder, amount } => {
                let reference = deposit_reference(&outpoint);
                let command = Command::ReverseDeposit { asset: self.btc, reference: reference.clone() };
                let applied = match self.sequencer.submit(command.from_leader(self.leader_epoch)).await {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(%reference, error = %e, "reversal not submitted yet; retrying");
                        return Some(DepositEvent::Reverse { outpoint, account, holder, amount });
                    }
                };
                for e in &applied.events {
                    match e {
                        Event::DepositReversed { .. } => {
                            tracing::warn!(%reference, account, sat = amount.to_sat(), "deposit reversed: the chain lost it")
                        }
                        Event::AccountFrozen { account } => {
                            tracing::error!(%reference, account = account.0, "ALERT: account frozen: it spent a deposit the chain lost")
                        }
                        Event::DepositReversalPending { .. } => {
                            self.reversals_pending.fetch_add(1, Ordering::Relaxed);
                            tracing::error!(
                                %reference, account, sat = amount.to_sat(),
                                "ALERT: a lost deposit could not be taken back (spent); an operator must settle it"
                            );
                        }
                        Event::Rejected { reason } => {
                            tracing::error!(%reference, account, %reason, "ALERT: the ledger refused a deposit reversal")
                        }
                        _ => {}
                    }
                }
                None
            }
        }
    }
}
