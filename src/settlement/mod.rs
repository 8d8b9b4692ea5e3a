//! The settlement service: closes settlement windows, nets them into one batch transaction,
//! has every input signed through custody, broadcasts it, follows it to its confirmations and
//! tells the ledger, through the sequencer like every other change.
//!
//! A batch moves through durable states, each written before the next step starts, so a crash
//! anywhere resumes where it stopped (`settlement_batches` in the store):
//!
//! ```text
//! planned --book--> booked --sign every input--> signed --broadcast--> broadcast --N confs--> confirmed
//!    |                 |
//!    +-- refused ------+-- a wallet missed the signing deadline --> cancelled (locks released)
//! ```
//!
//! - *planned*: the PSBT and who signs each input are stored; the ledger has not seen it.
//! - *booked*: the ledger locked each leg's fee share and marked the withdrawals it pays
//!   (`BookSettlement`). On resume, a batch the engine already holds is not booked twice.
//! - *signed*: every input signed (each signature is stored as it arrives, so a restart never
//!   asks twice); the finished transaction is stored as version 0 before it is ever sent.
//! - *broadcast*: sent; sent again whenever the chain has neither it nor a version of it (a
//!   reorg or an eviction).
//! - *confirmed*: `ConfirmSettlement` applied once the transaction has the configured
//!   confirmations: fees and withdrawals leave the ledger, the vaults' settled amounts move.
//! - *cancelled*: only a batch that was never fully signed (no complete transaction exists, so
//!   none can ever confirm), or that the ledger refused to book.
//!
//! One batch is in flight at a time: the next window closes only once the last batch is
//! confirmed or cancelled. So a batch never spends an output of one that is not yet final, and
//! the coins it may spend are simple to tell: outputs the ledger counts (credited deposits and
//! outputs of confirmed batches) at the holders' addresses.
//!
//! Who takes part: every account with a vault holds its own coins and is a participant with its
//! settlement target; every other account's coins are in the provider's pool, which balances the
//! batch. A participant whose wallet does not sign before the deadline is *late*
//! (`settlement_late`): left out of batches for `late_penalty`, the pool paying its buyers, its
//! debt staying in the ledger as exposure. Once it has been late for `force_after` and still
//! owes, its debt is force-settled: a batch of its own, paying the pool from its vault, its
//! inputs signed by the provider with the vault's co-signer, who first checks the window's
//! evidence against the user's own signed orders (2-of-3 vaults only; a 2-of-2 vault's debt
//! waits for its wallet).

pub mod reconcile;
pub mod record;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use base64::Engine as _;
use bitcoin::consensus::encode::{deserialize, serialize_hex};
use bitcoin::{Amount, Psbt, ScriptBuf, SignedAmount, Transaction, Witness};
use tandem_custody::{GroupId, IntentInput, PartyRole, SpendIntent, SpendPurpose};
use tandem_matching::{
    AccountId, AssetId, BatchId, Command, Event, SequencerHandle, SettlementLeg, Timestamp, WithdrawalId, SETTLEMENT_POOL,
};
use tandem_settlement::batch::{self, Participant, PlanParams, Pool, VaultUtxo};
use tandem_settlement::{Chain, TxStatus};
use tandem_store::{BatchLegRecord, BatchRecord, BatchVersionRecord, Store};

use crate::deposits::deposit_reference;
use crate::custodian::{Custodian, InProcess};
use crate::provider::SignError;
use record::{InputSigner, StoredPlan};

/// When windows close and how batches are made.
#[derive(Clone, Debug)]
pub struct SettlementConfig {
    /// A window closes this long after the last batch finished...
    pub window: Duration,
    /// ...or as soon as this many movements (participants with a target, withdrawals) wait.
    pub max_movements: usize,
    /// Confirmations before the ledger is told a batch is final.
    pub confirmations: u32,
    /// Fee estimate target, in blocks.
    pub fee_target_blocks: u16,
    /// No output below this is made.
    pub dust: Amount,
    /// A batch whose inputs are not all signed this long after it was booked is cancelled and
    /// rebuilt without the late wallets.
    pub signing_deadline: Duration,
    /// How long a late wallet stays out of batches.
    pub late_penalty: Duration,
    /// How long after a wallet was first late its debt is force-settled with the co-signer.
    pub force_after: Duration,
    /// A broadcast batch still unconfirmed this long after it was sent, while the chain's
    /// estimate is above its fee rate, is replaced by a version paying more (RBF).
    pub bump_after: Duration,
    pub tick: Duration,
    /// Tests only: stop the service right after this write, as a crash there would.
    pub crash_at: Option<CrashPoint>,
}

/// The points right after a durable write where a crash leaves the service's work half done.
/// A restarted service resumes from each without paying twice or losing anything (tested: a
/// service stopped at each, then a fresh one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrashPoint {
    /// The batch is recorded as planned.
    Planned,
    /// The ledger booked it; the store does not say so yet.
    BookedInLedger,
    /// The store says booked.
    Booked,
    /// A first input signature is stored.
    InputSigned,
    /// The signed transaction is stored (status signed), not sent.
    Signed,
    /// The chain has it; the store does not know it was sent.
    Sent,
    /// The store says broadcast.
    Broadcast,
    /// The ledger confirmed it; the store does not say so yet.
    ConfirmedInLedger,
}

impl CrashPoint {
    pub const ALL: [CrashPoint; 8] = [
        CrashPoint::Planned,
        CrashPoint::BookedInLedger,
        CrashPoint::Booked,
        CrashPoint::InputSigned,
        CrashPoint::Signed,
        CrashPoint::Sent,
        CrashPoint::Broadcast,
        CrashPoint::ConfirmedInLedger,
    ];
}

/// The service stopped at a [`CrashPoint`].
#[derive(Debug, thiserror::Error)]
#[error("stopped right after {0:?}, as a crash there would")]
pub struct Crashed(pub CrashPoint);

impl Default for SettlementConfig {
    fn default() -> Self {
        SettlementConfig {
            window: Duration::from_secs(60),
            max_movements: 1_000,
            confirmations: 1,
            fee_target_blocks: 2,
            dust: Amount::from_sat(546),
            signing_deadline: Duration::from_secs(60),
            late_penalty: Duration::from_secs(600),
            force_after: Duration::from_secs(24 * 3600),
            bump_after: Duration::from_secs(1_800),
            tick: Duration::from_secs(1),
            crash_at: None,
        }
    }
}

#[derive(Clone)]
pub struct SettlementService {
    pub chain: Arc<dyn Chain>,
    pub sequencer: SequencerHandle,
    pub store: Store,
    /// The provider's signatures and pool addresses (in process, or a custody process).
    pub custodian: Arc<dyn Custodian>,
    pub btc: AssetId,
    pub config: SettlementConfig,
    /// The leadership turn it runs in, among replicas of a shared journal (`None`: the only
    /// settlement service of an embedded journal). Its commands carry it.
    pub leader_epoch: Option<u64>,
}

/// State kept between ticks (in memory: losing it only closes a window early or retries a
/// forced settlement sooner).
struct Progress {
    window_opened: Instant,
    /// Forced settlements that failed to be signed, by holder: not tried again for `late_penalty`.
    forced_failed: HashMap<u64, Instant>,
}

/// The `meta` key of the last audit after a batch.
pub const LAST_AUDIT: &str = "last_audit";

const PLANNED: &str = "planned";
const BOOKED: &str = "booked";
const SIGNED: &str = "signed";
const BROADCAST: &str = "broadcast";
const CONFIRMED: &str = "confirmed";
const CANCELLED: &str = "cancelled";

fn now() -> Timestamp {
    Timestamp(crate::node::now_millis())
}

impl tandem_gateway::Reconciler for SettlementService {
    fn reconcile(&self) -> futures::future::BoxFuture<'_, Result<serde_json::Value, String>> {
        Box::pin(async move {
            let report = SettlementService::reconcile(self).await.map_err(|e| format!("{e:#}"))?;
            serde_json::to_value(report).map_err(|e| e.to_string())
        })
    }
}

impl SettlementService {
    /// The settlement service of `node` (which must run custody) on `chain`.
    pub fn for_node(node: &crate::node::Node, chain: Arc<dyn Chain>, config: SettlementConfig) -> anyhow::Result<Arc<Self>> {
        Self::for_leader(node, chain, config, None)
    }

    /// For the settlement leader of `epoch` among replicas (see [`crate::leadership`]).
    pub fn for_leader(
        node: &crate::node::Node,
        chain: Arc<dyn Chain>,
        config: SettlementConfig,
        leader_epoch: Option<u64>,
    ) -> anyhow::Result<Arc<Self>> {
        let custodian = Arc::new(InProcess(node.vaults.clone().context("settlement needs the node's custody")?));
        Ok(Arc::new(SettlementService { leader_epoch, ..(*Self::with_custodian(node, custodian, chain, config)?).clone() }))
    }

    /// Settlement on `node`'s ledger with the provider's custody elsewhere (a custody process).
    pub fn with_custodian(
        node: &crate::node::Node,
        custodian: Arc<dyn Custodian>,
        chain: Arc<dyn Chain>,
        config: SettlementConfig,
    ) -> anyhow::Result<Arc<Self>> {
        Ok(Arc::new(SettlementService {
            chain,
            sequencer: node.sequencer.clone(),
            store: node.store.clone(),
            custodian,
            btc: crate::node::btc_asset(&node.engine_config)?,
            config,
            leader_epoch: None,
        }))
    }

    /// Runs until the task is dropped; serves reconciliation at the node's API from now on.
    pub fn spawn(self: Arc<Self>, reconciler: &tandem_gateway::ReconcilerSlot) -> tokio::task::JoinHandle<()> {
        let _ = reconciler.set(self.clone());
        tokio::spawn(async move { self.run().await })
    }

    async fn run(self: Arc<Self>) {
        // A window opens with the first movement after the last batch. A (re)started service
        // does not know when that was: it settles whatever is waiting at once.
        let opened = Instant::now().checked_sub(self.config.window).unwrap_or_else(Instant::now);
        let mut progress = Progress { window_opened: opened, forced_failed: HashMap::new() };
        loop {
            if let Err(e) = self.step(&mut progress).await {
                if e.downcast_ref::<Crashed>().is_some() {
                    tracing::warn!(error = %e, "settlement service stopped");
                    return;
                }
                tracing::warn!(error = %format!("{e:#}"), "settlement step failed; retrying");
            }
            tokio::time::sleep(self.config.tick).await;
        }
    }

    fn crash(&self, at: CrashPoint) -> anyhow::Result<()> {
        match self.config.crash_at {
            Some(point) if point == at => Err(Crashed(at).into()),
            _ => Ok(()),
        }
    }

    /// One round: advance the batch in flight, or close the window and build the next.
    async fn step(&self, progress: &mut Progress) -> anyhow::Result<()> {
        if let Some(batch) = self.store.unfinished_batches().await?.into_iter().next() {
            return self.advance(batch, progress).await;
        }
        progress.forced_failed.retain(|_, at| at.elapsed() < self.config.late_penalty);
        if self.force_settle_due(progress).await? {
            return Ok(());
        }
        let waiting = self.movements_waiting().await?;
        if waiting == 0 {
            progress.window_opened = Instant::now();
            return Ok(());
        }
        if progress.window_opened.elapsed() < self.config.window && waiting < self.config.max_movements {
            return Ok(());
        }
        progress.window_opened = Instant::now();
        self.build().await
    }

    /// Movements a batch would make now: participants with a target, and withdrawals.
    async fn movements_waiting(&self) -> anyhow::Result<usize> {
        let holders = self.vault_holders().await?;
        let btc = self.btc;
        let n = self
            .sequencer
            .read(move |e| {
                let targets = holders.keys().filter(|h| e.settlement_target(**h, btc).is_some_and(|t| t != 0)).count();
                let withdrawals =
                    e.pending_withdrawals().iter().filter(|(_, w)| w.asset == btc && w.batch.is_none()).count();
                targets + withdrawals
            })
            .await?;
        Ok(n)
    }

    /// Every account with a vault, with its vaults' addresses (group, key index) by script.
    async fn vault_holders(&self) -> anyhow::Result<HashMap<AccountId, Vec<(ScriptBuf, String, u64)>>> {
        let network = self.chain.network();
        let mut owners: HashMap<String, AccountId> = HashMap::new();
        let mut holders: HashMap<AccountId, Vec<(ScriptBuf, String, u64)>> = HashMap::new();
        for a in self.store.all_vault_addresses().await? {
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
            holders.entry(account).or_default().push((script, a.group_id, a.key_index));
        }
        Ok(holders)
    }

    /// The coins at `scripts` the ledger counts as held: credited deposits and outputs of
    /// confirmed batches (a deposit still waiting for its confirmations is not spendable yet).
    async fn counted_utxos(&self, scripts: &[ScriptBuf]) -> anyhow::Result<Vec<VaultUtxo>> {
        if scripts.is_empty() {
            return Ok(Vec::new());
        }
        let utxos = self.chain.utxos(scripts).await?;
        let references: Vec<String> = utxos.iter().map(|u| deposit_reference(&u.outpoint)).collect();
        let btc = self.btc;
        let credited: Vec<bool> = self
            .sequencer
            .read(move |e| references.iter().map(|r| e.deposit(btc, r).is_some_and(|d| !d.reversed)).collect())
            .await?;
        let mut counted = Vec::new();
        for (u, credited) in utxos.into_iter().zip(credited) {
            let ours = credited || self.store.confirmed_batch_txid(&u.outpoint.txid.to_string()).await?;
            if ours {
                counted.push(VaultUtxo { outpoint: u.outpoint, value: u.txout.value, script_pubkey: u.txout.script_pubkey });
            }
        }
        Ok(counted)
    }

    /// Closes the window: plans, records and books the next batch.
    async fn build(&self) -> anyhow::Result<()> {
        // The batch's `created_at` is when its window closed.
        let closed_at = now();
        let penalty = self.config.late_penalty.as_millis() as u64;
        let sitting_out: HashSet<AccountId> = self
            .store
            .late_holders()
            .await?
            .into_iter()
            .filter(|l| closed_at.0.saturating_sub(l.since.0) < penalty)
            .map(|l| l.holder)
            .collect();
        let btc = self.btc;
        let holders = self.vault_holders().await?;
        let ids: Vec<AccountId> = holders.keys().copied().collect();
        let (targets, withdrawals, accounts, cut, last_batch) = self
            .sequencer
            .read(move |e| {
                let targets: Vec<(AccountId, Option<i128>)> = ids.iter().map(|h| (*h, e.settlement_target(*h, btc))).collect();
                let withdrawals: Vec<_> = e
                    .pending_withdrawals()
                    .into_iter()
                    .filter(|(_, w)| w.asset == btc && w.batch.is_none())
                    .collect();
                (targets, withdrawals, e.account_count(), e.last_seq(), e.last_batch())
            })
            .await?;

        // A destination that is not an address on this network can never be paid: refund it.
        let mut payable = Vec::new();
        for (id, w) in withdrawals {
            match crate::provider::destination_script(&w.destination, self.custodian.pool().network()) {
                Ok(script) => payable.push((id, w, script)),
                Err(e) => {
                    tracing::error!(withdrawal = id.0, error = %format!("{e:#}"), "withdrawal cannot be paid; refunding it");
                    self.submit(Command::FailWithdrawal { withdrawal: id }).await?;
                    return Ok(());
                }
            }
        }

        let mut signer_of: HashMap<ScriptBuf, InputSigner> = HashMap::new();
        let mut participants = Vec::new();
        let mut in_batch: HashSet<AccountId> = HashSet::new();
        for (holder, target) in targets {
            let Some(target) = target else { continue };
            if sitting_out.contains(&holder) {
                continue;
            }
            let target = i64::try_from(target).context("a settlement target out of range")?;
            let addresses = &holders[&holder];
            let scripts: Vec<ScriptBuf> = addresses.iter().map(|(s, _, _)| s.clone()).collect();
            for (s, group, key_index) in addresses {
                signer_of.insert(s.clone(), InputSigner::Vault { group: group.clone(), key_index: *key_index });
            }
            let has_withdrawal = payable.iter().any(|(_, w, _)| w.account == holder);
            if target == 0 && !has_withdrawal {
                continue;
            }
            // Receives to the newest address of its newest key (wallets keep fresh ones made).
            let receive = addresses.iter().max_by_key(|(_, _, k)| *k).map(|(s, _, _)| s.clone()).context("a vault without addresses")?;
            participants.push(Participant {
                holder: holder.0,
                target: SignedAmount::from_sat(target),
                utxos: self.counted_utxos(&scripts).await?,
                receive_script: receive,
            });
            in_batch.insert(holder);
        }
        let pool_scripts = self.custodian.pool().scripts(accounts)?;
        for (s, account) in &pool_scripts {
            signer_of.insert(s.clone(), InputSigner::Pool { account: account.0 });
        }
        let pool = Pool {
            holder: SETTLEMENT_POOL.0,
            utxos: self.counted_utxos(&pool_scripts.keys().cloned().collect::<Vec<_>>()).await?,
            receive_script: self.custodian.pool().deposit_script(SETTLEMENT_POOL)?,
        };
        let plan_withdrawals: Vec<batch::Withdrawal> = payable
            .iter()
            .map(|(id, w, script)| batch::Withdrawal {
                id: id.0,
                holder: if in_batch.contains(&w.account) { w.account.0 } else { SETTLEMENT_POOL.0 },
                script_pubkey: script.clone(),
                amount: Amount::from_sat(w.amount.0),
            })
            .collect();
        let rate = self.chain.fee_rate(self.config.fee_target_blocks).await?;
        let params = PlanParams { fee_rate_sat_per_kvb: (rate.to_sat_per_kwu() * 4).max(1_000), dust: self.config.dust };
        let Some(plan) = batch::plan(&participants, &plan_withdrawals, &pool, &params)? else {
            return Ok(());
        };
        let stored = StoredPlan::of(&plan, cut.0, |s| signer_of.get(s).cloned())?;
        let record = self.record(&plan, &stored, &params, closed_at, last_batch).await?;
        self.book(&record, &stored).await
    }

    /// Writes a planned batch down (its id the next after every batch the store or the ledger
    /// has seen), before anything else happens to it.
    async fn record(
        &self,
        plan: &batch::BatchPlan,
        stored: &StoredPlan,
        params: &PlanParams,
        closed_at: Timestamp,
        last_batch: BatchId,
    ) -> anyhow::Result<BatchRecord> {
        let id = self.store.last_batch_id().await?.max(last_batch.0) + 1;
        let record = BatchRecord {
            id,
            status: PLANNED.into(),
            created_at: closed_at,
            updated_at: now(),
            asset: self.btc.0,
            fee_rate: params.fee_rate_sat_per_kvb,
            vbytes: plan.vbytes,
            fee: plan.fee.to_sat(),
            plan: serde_json::to_string(stored)?,
            psbt: base64::engine::general_purpose::STANDARD.encode(plan.psbt.serialize()),
            bumps: 0,
            confirmations: 0,
            confirmed_height: None,
            confirmed_version: None,
            last_error: None,
        };
        let legs: Vec<BatchLegRecord> =
            stored.legs.iter().map(|l| BatchLegRecord { holder: AccountId(l.holder), delta: l.delta, fee: l.fee }).collect();
        self.store.insert_batch(&record, tandem_matching::Seq(stored.cut_seq), &legs).await?;
        self.crash(CrashPoint::Planned)?;
        tracing::info!(
            batch = id, inputs = plan.inputs.len(), outputs = plan.outputs.len(), vbytes = plan.vbytes,
            fee = plan.fee.to_sat(), deferred = plan.deferred.len(), forced = ?stored.forced, "settlement batch planned"
        );
        Ok(record)
    }

    /// Whether a late holder's debt is due for forced settlement, and if so plans and books it
    /// (answers true: this round is its).
    async fn force_settle_due(&self, progress: &Progress) -> anyhow::Result<bool> {
        let due_after = self.config.force_after.as_millis() as u64;
        let at = now();
        for late in self.store.late_holders().await? {
            if at.0.saturating_sub(late.since.0) < due_after || progress.forced_failed.contains_key(&late.holder.0) {
                continue;
            }
            if self.force_settle(late.holder).await? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Plans and books the forced settlement of `holder`'s debt: its vault pays the pool what it
    /// owes and its share of the fee; no other input (the co-signer signs nothing else). False if
    /// there is nothing to force: no debt any more (no longer late), no co-signer, no coins.
    async fn force_settle(&self, holder: AccountId) -> anyhow::Result<bool> {
        let closed_at = now();
        let btc = self.btc;
        let (target, cut, last_batch) =
            self.sequencer.read(move |e| (e.settlement_target(holder, btc), e.last_seq(), e.last_batch())).await?;
        let owes = target.is_some_and(|t| t < 0);
        let cosigned = self.store.vaults_for(holder).await?.iter().any(|v| v.cosigner_identity.is_some());
        if !owes {
            self.store.clear_late(holder).await?;
            return Ok(false);
        }
        if !cosigned {
            return Ok(false);
        }
        let holders = self.vault_holders().await?;
        let Some(addresses) = holders.get(&holder) else { return Ok(false) };
        let target = i64::try_from(target.unwrap_or(0)).context("a settlement target out of range")?;
        let scripts: Vec<ScriptBuf> = addresses.iter().map(|(s, _, _)| s.clone()).collect();
        let receive = addresses.iter().max_by_key(|(_, _, k)| *k).map(|(s, _, _)| s.clone()).context("a vault without addresses")?;
        let participant = Participant {
            holder: holder.0,
            target: SignedAmount::from_sat(target),
            utxos: self.counted_utxos(&scripts).await?,
            receive_script: receive,
        };
        let pool = Pool { holder: SETTLEMENT_POOL.0, utxos: Vec::new(), receive_script: self.custodian.pool().deposit_script(SETTLEMENT_POOL)? };
        let rate = self.chain.fee_rate(self.config.fee_target_blocks).await?;
        let params = PlanParams { fee_rate_sat_per_kvb: (rate.to_sat_per_kwu() * 4).max(1_000), dust: self.config.dust };
        let plan = match batch::plan(std::slice::from_ref(&participant), &[], &pool, &params) {
            Ok(Some(plan)) if plan.deferred.is_empty() => plan,
            Ok(_) => {
                tracing::warn!(holder = holder.0, target, "a late holder's debt cannot be forced now (too small, or its vault cannot pay it)");
                return Ok(false);
            }
            Err(e) => {
                tracing::warn!(holder = holder.0, target, error = %e, "a late holder's debt cannot be forced now");
                return Ok(false);
            }
        };
        let signer_of: HashMap<ScriptBuf, InputSigner> = addresses
            .iter()
            .map(|(s, group, key_index)| (s.clone(), InputSigner::Vault { group: group.clone(), key_index: *key_index }))
            .collect();
        let mut stored = StoredPlan::of(&plan, cut.0, |s| signer_of.get(s).cloned())?;
        stored.forced = Some(holder.0);
        let record = self.record(&plan, &stored, &params, closed_at, last_batch).await?;
        tracing::warn!(batch = record.id, holder = holder.0, owed = -target, "forcing the settlement of a late holder's debt with its co-signer");
        self.book(&record, &stored).await?;
        Ok(true)
    }

    async fn submit(&self, command: Command) -> anyhow::Result<Vec<Event>> {
        let name = command.name();
        let applied =
            self.sequencer.submit(command.from_leader(self.leader_epoch)).await.with_context(|| format!("submitting {name}"))?;
        Ok(applied.events.clone())
    }

    async fn advance(&self, b: BatchRecord, progress: &mut Progress) -> anyhow::Result<()> {
        let stored: StoredPlan = serde_json::from_str(&b.plan).context("the stored plan does not parse")?;
        let result = match b.status.as_str() {
            PLANNED => self.book(&b, &stored).await,
            BOOKED => self.sign(&b, &stored, progress).await,
            SIGNED | BROADCAST => self.track(&b, &stored).await,
            other => bail!("batch {} has unknown status {other}", b.id),
        };
        match &result {
            // A simulated crash writes nothing more, like a real one.
            Err(e) if e.downcast_ref::<Crashed>().is_none() => {
                self.store.set_batch_error(b.id, Some(&format!("{e:#}")), now()).await?;
            }
            _ => {}
        }
        result
    }

    /// planned -> booked (or cancelled if the ledger refuses it).
    async fn book(&self, b: &BatchRecord, stored: &StoredPlan) -> anyhow::Result<()> {
        let id = BatchId(b.id);
        let already = self.sequencer.read(move |e| e.open_batches().iter().any(|(open, _)| *open == id)).await?;
        if !already {
            let legs = stored
                .legs
                .iter()
                .map(|l| SettlementLeg { holder: AccountId(l.holder), delta: l.delta, fee: tandem_matching::Amount(l.fee) })
                .collect();
            let withdrawals = stored.withdrawals.iter().map(|w| WithdrawalId(*w)).collect();
            let events = self.submit(Command::BookSettlement { batch: id, asset: self.btc, legs, withdrawals }).await?;
            if let Some(Event::Rejected { reason }) = events.first() {
                tracing::error!(batch = b.id, %reason, "ALERT: the ledger refused a settlement batch; dropping it");
                self.store.set_batch_error(b.id, Some(&format!("the ledger refused it: {reason}")), now()).await?;
                self.store.set_batch_status(b.id, PLANNED, CANCELLED, now()).await?;
                return Ok(());
            }
            self.crash(CrashPoint::BookedInLedger)?;
        }
        self.store.set_batch_status(b.id, PLANNED, BOOKED, now()).await?;
        self.crash(CrashPoint::Booked)?;
        tracing::info!(batch = b.id, "settlement batch booked");
        Ok(())
    }

    /// booked -> signed: every input of version 0 signed, then the finished transaction
    /// stored. A batch not fully signed by the deadline is cancelled (no complete transaction of
    /// it exists, so none can ever confirm) and rebuilt without the late wallets.
    async fn sign(&self, b: &BatchRecord, stored: &StoredPlan, progress: &mut Progress) -> anyhow::Result<()> {
        let psbt = decode_psbt(&b.psbt)?;
        let late = self.sign_inputs(b, stored, 0, &psbt).await?;
        if !late.is_empty() {
            let booked_for = Duration::from_millis(now().0.saturating_sub(b.created_at.0));
            if booked_for >= self.config.signing_deadline {
                match stored.forced {
                    // The co-signer would not or could not sign: try again later.
                    Some(holder) => {
                        progress.forced_failed.insert(holder, Instant::now());
                    }
                    None => {
                        for holder in &late {
                            self.store.mark_late(AccountId(*holder), b.id, now()).await?;
                        }
                    }
                }
                let events = self.submit(Command::CancelSettlement { batch: BatchId(b.id) }).await?;
                if let Some(Event::Rejected { reason }) = events.first() {
                    bail!("cancelling batch {}: {reason}", b.id);
                }
                self.store.set_batch_status(b.id, BOOKED, CANCELLED, now()).await?;
                tracing::warn!(batch = b.id, ?late, "wallets missed the signing deadline; batch cancelled, rebuilding without them");
                return Ok(());
            }
            bail!("inputs of {} holder(s) still unsigned", late.len());
        }
        let version = self.finish_version(b, 0, &psbt, b.fee).await?;
        self.store.set_batch_status(b.id, BOOKED, SIGNED, now()).await?;
        self.crash(CrashPoint::Signed)?;
        tracing::info!(batch = b.id, txid = %version.txid, "settlement batch signed");
        self.track(&BatchRecord { status: SIGNED.into(), ..b.clone() }, stored).await
    }

    /// Signs every input of `version` that has no stored signature yet: pool inputs by the
    /// provider alone here, vault inputs by the provider with the vault's wallet, each wallet's
    /// inputs in its own task, all wallets at once (a wallet answers its sessions one after
    /// another). Each signature is stored as it arrives. Answers the holders whose wallet did
    /// not sign.
    async fn sign_inputs(&self, b: &BatchRecord, stored: &StoredPlan, version: u32, psbt: &Psbt) -> anyhow::Result<Vec<u64>> {
        let have: HashMap<u32, String> = self.store.batch_signatures(b.id, version).await?.into_iter().collect();
        // A forced settlement is signed with the vault's co-signer instead of its wallet.
        let (purpose, signers) = match stored.forced {
            Some(_) => (SpendPurpose::ForcedSettlement { batch: b.id }, [PartyRole::Provider, PartyRole::CoSigner]),
            None => (SpendPurpose::SettlementBatch { batch: b.id }, [PartyRole::Wallet, PartyRole::Provider]),
        };
        let mut by_holder: BTreeMap<u64, Vec<(usize, String, u64)>> = BTreeMap::new();
        for (index, input) in stored.inputs.iter().enumerate() {
            if have.contains_key(&(index as u32)) {
                continue;
            }
            match &input.signer {
                InputSigner::Pool { account } => {
                    let witness = self.custodian.sign_pool_input(purpose, psbt, index, AccountId(*account)).await.map_err(|e| anyhow!(e))?;
                    self.store.add_batch_signature(b.id, version, index as u32, &serialize_hex(&witness)).await?;
                    self.crash(CrashPoint::InputSigned)?;
                }
                InputSigner::Vault { group, key_index } => {
                    by_holder.entry(input.holder).or_default().push((index, group.clone(), *key_index));
                }
            }
        }
        // Version 0 until the batch's signing deadline; a bump's version, one deadline's worth
        // per attempt (its earlier version is in the mempool meanwhile).
        let booked_for = Duration::from_millis(now().0.saturating_sub(b.created_at.0));
        let left = match version {
            0 => self.config.signing_deadline.saturating_sub(booked_for),
            _ => self.config.signing_deadline,
        };
        let until = tokio::time::Instant::now() + left.max(Duration::from_millis(100));
        // Each wallet's inputs of one vault in one request (one session when its presignatures
        // are ready), every wallet at once.
        let wallets = by_holder.into_iter().map(|(holder, inputs)| async move {
            let mut by_group: BTreeMap<String, Vec<IntentInput>> = BTreeMap::new();
            for (index, group, key_index) in inputs {
                let input = IntentInput { index: index as u32, group: group.parse::<GroupId>()?, key_index };
                by_group.entry(group).or_default().push(input);
            }
            for (_, inputs) in by_group {
                let indexes: Vec<u32> = inputs.iter().map(|i| i.index).collect();
                let intent = SpendIntent::new(purpose, psbt.clone(), inputs, &signers)?;
                // A wallet that never answers must not hold the batch past its deadline.
                let signed = self.custodian.sign(intent, until).await;
                match signed {
                    Ok(sigs) => {
                        for (index, sig) in indexes.iter().zip(sigs) {
                            self.store.add_batch_signature(b.id, version, *index, &serialize_hex(&sig.witness())).await?;
                            self.crash(CrashPoint::InputSigned)?;
                        }
                    }
                    // Not the wallet's fault: try again next tick, nobody is late.
                    Err(e @ SignError::CustodyUnavailable(_)) => return Err(anyhow!(e)),
                    Err(e) => {
                        tracing::warn!(batch = b.id, version, inputs = indexes.len(), holder, error = %e, "batch inputs not signed yet");
                        return Ok::<_, anyhow::Error>(Some(holder));
                    }
                }
            }
            Ok(None)
        });
        let mut late = Vec::new();
        for outcome in futures::future::join_all(wallets).await {
            if let Some(holder) = outcome? {
                late.push(holder);
            }
        }
        Ok(late)
    }

    /// Puts the stored signatures of `version` into its transaction and stores that, before it
    /// is ever sent, as the batch's current version.
    async fn finish_version(&self, b: &BatchRecord, version: u32, psbt: &Psbt, fee: u64) -> anyhow::Result<BatchVersionRecord> {
        let tx = finished_tx(psbt, self.store.batch_signatures(b.id, version).await?)?;
        let record = BatchVersionRecord {
            batch: b.id,
            version,
            txid: tx.compute_txid().to_string(),
            tx_hex: serialize_hex(&tx),
            fee,
            created_at: now(),
            broadcast_at: None,
        };
        self.store.insert_batch_version(&record).await?;
        Ok(record)
    }

    /// signed/broadcast -> confirmed: confirm in the ledger once any version has the configured
    /// depth; keep the newest version in the chain's mempool (send it when the chain has no
    /// version of the batch: never sent, evicted, reorged out; or when an older one is there);
    /// then see to fee bumps.
    async fn track(&self, b: &BatchRecord, stored: &StoredPlan) -> anyhow::Result<()> {
        let versions = self.store.batch_versions(b.id).await?;
        let newest = versions.last().context("a signed batch without a stored version")?;
        let mut waiting = None;
        for v in &versions {
            let txid: bitcoin::Txid = v.txid.parse()?;
            match self.chain.transaction_status(&txid).await? {
                TxStatus::Confirmed { height, confirmations, .. } => {
                    self.store.set_batch_confirmations(b.id, confirmations, Some(height), Some(v.version), now()).await?;
                    if confirmations >= self.config.confirmations.max(1) {
                        return self.confirm(b, v.version).await;
                    }
                    return Ok(());
                }
                TxStatus::InMempool => waiting = Some(v.version),
                TxStatus::Unknown => {}
            }
        }
        self.store.set_batch_confirmations(b.id, 0, None, None, now()).await?;
        if waiting != Some(newest.version) {
            self.send(b, newest).await?;
        }
        if b.status == SIGNED {
            self.store.set_batch_status(b.id, SIGNED, BROADCAST, now()).await?;
            self.crash(CrashPoint::Broadcast)?;
        }
        self.bump(b, stored, newest).await
    }

    /// Sends a version to the chain (a replacement of an older one in the mempool, or again).
    async fn send(&self, b: &BatchRecord, v: &BatchVersionRecord) -> anyhow::Result<()> {
        let tx: Transaction = deserialize(&hex::decode(&v.tx_hex)?)?;
        let txid = self
            .chain
            .broadcast(&tx)
            .await
            .map_err(|e| anyhow!("broadcasting version {} of batch {}: {e}", v.version, b.id))?;
        self.crash(CrashPoint::Sent)?;
        self.store.mark_batch_broadcast(b.id, v.version, now()).await?;
        tracing::info!(batch = b.id, version = v.version, %txid, "settlement batch broadcast");
        Ok(())
    }

    /// RBF. A bump the ledger has booked but no version carries yet is signed and sent. Else, a
    /// batch waiting longer than `bump_after` since it was sent, paying less than the chain's
    /// estimate, gets a bump booked: the pool pays it from its output (the other holders'
    /// deltas stay exactly as booked, so their wallets sign the new version as they signed the
    /// first). Every version spends the same inputs, so at most one can ever confirm.
    async fn bump(&self, b: &BatchRecord, stored: &StoredPlan, newest: &BatchVersionRecord) -> anyhow::Result<()> {
        let id = BatchId(b.id);
        let Some(bumps) = self.sequencer.read(move |e| e.open_batches().into_iter().find(|(o, _)| *o == id)).await? else {
            return Ok(());
        };
        let bumps = bumps.1.bumps;
        if bumps.len() > newest.version as usize {
            let version = bumps.len() as u32;
            let psbt = version_psbt(&decode_psbt(&b.psbt)?, stored, &bumps)?;
            let late = self.sign_inputs(b, stored, version, &psbt).await?;
            if !late.is_empty() {
                bail!("version {version}: inputs of {} holder(s) still unsigned (version {} stays in the mempool)", late.len(), newest.version);
            }
            let fee = b.fee + bumps.iter().map(|x| x.extra.0).sum::<u64>();
            let record = self.finish_version(b, version, &psbt, fee).await?;
            tracing::info!(batch = b.id, version, fee, txid = %record.txid, "settlement batch bumped");
            return self.send(b, &record).await;
        }
        let sent = newest.broadcast_at.unwrap_or(newest.created_at);
        if Duration::from_millis(now().0.saturating_sub(sent.0)) < self.config.bump_after {
            return Ok(());
        }
        let tx: Transaction = deserialize(&hex::decode(&newest.tx_hex)?)?;
        let vsize = tx.vsize() as u64;
        let rate = self.chain.fee_rate(self.config.fee_target_blocks).await?;
        let wanted = batch::fee_for(vsize, rate.to_sat_per_kwu() * 4).context("a fee out of range")?.to_sat();
        if wanted <= newest.fee {
            return Ok(());
        }
        // BIP-125: the replacement pays its own relay on top of what it replaces.
        let extra = (wanted - newest.fee).max(vsize * BUMP_INCREMENT_SAT_PER_VB);
        let pool_output = version_psbt(&decode_psbt(&b.psbt)?, stored, &bumps)
            .ok()
            .and_then(|p| payer_output(stored, SETTLEMENT_POOL).map(|i| p.unsigned_tx.output[i].value.to_sat()));
        match pool_output {
            Some(v) if v >= extra + self.config.dust.to_sat() => {}
            _ => bail!("batch {} is stuck at {} sat but the pool has no output to pay a bump of {extra} sat from", b.id, newest.fee),
        }
        let events =
            self.submit(Command::BumpSettlement { batch: id, payer: SETTLEMENT_POOL, extra: tandem_matching::Amount(extra) }).await?;
        if let Some(Event::Rejected { reason }) = events.first() {
            bail!("the ledger refused a bump of batch {} by {extra} sat: {reason}", b.id);
        }
        tracing::info!(batch = b.id, extra, wanted, "settlement batch stuck; fee bump booked");
        Ok(())
    }

    async fn confirm(&self, b: &BatchRecord, version: u32) -> anyhow::Result<()> {
        let id = BatchId(b.id);
        let open = self.sequencer.read(move |e| e.open_batches().iter().any(|(o, _)| *o == id)).await?;
        if open {
            let events = self.submit(Command::ConfirmSettlement { batch: id, bumps: version }).await?;
            if let Some(Event::Rejected { reason }) = events.first() {
                bail!("ALERT: the ledger refused to confirm batch {}: {reason}", b.id);
            }
            self.crash(CrashPoint::ConfirmedInLedger)?;
        }
        self.store.set_batch_status(b.id, &b.status, CONFIRMED, now()).await?;
        // Whoever settled here is no longer late.
        let stored: StoredPlan = serde_json::from_str(&b.plan).context("the stored plan does not parse")?;
        for leg in &stored.legs {
            self.store.clear_late(AccountId(leg.holder)).await?;
        }
        tracing::info!(batch = b.id, version, "settlement batch confirmed");
        self.audit(b.id).await;
        Ok(())
    }

    /// The audit after every batch: ledger against chain, kept as the last audit
    /// (`meta` "last_audit", shown with every reconciliation); a difference is an alert.
    async fn audit(&self, batch: u64) {
        match self.reconcile().await {
            Ok(report) => {
                if report.balanced {
                    tracing::info!(batch, owes = report.ledger_owes_sat, holds = report.chain_holds_sat, "audit after the batch: balanced");
                } else {
                    tracing::error!(batch, differences = ?report.differences, "ALERT: audit after the batch: ledger and chain differ");
                }
                let last = serde_json::json!({
                    "at": now().0, "after_batch": batch, "balanced": report.balanced, "differences": report.differences,
                    "ledger_owes_sat": report.ledger_owes_sat, "chain_holds_sat": report.chain_holds_sat,
                });
                if let Err(e) = self.store.set_meta(LAST_AUDIT, &last.to_string()).await {
                    tracing::warn!(error = %e, "could not keep the last audit");
                }
            }
            Err(e) => tracing::warn!(batch, error = %format!("{e:#}"), "audit after the batch could not run; it runs again on demand"),
        }
    }
}

/// Each RBF bump adds at least this per vbyte (Bitcoin Core's incremental relay fee, rounded up).
const BUMP_INCREMENT_SAT_PER_VB: u64 = 1;

/// The index of `payer`'s own output among the batch's outputs.
fn payer_output(stored: &StoredPlan, payer: AccountId) -> Option<usize> {
    stored.outputs.iter().position(|o| o.kind == "vault" && o.holder == Some(payer.0))
}

/// The unsigned transaction of the version carrying `bumps`: version 0 with each bump's payer's
/// output lowered by the bump.
fn version_psbt(base: &Psbt, stored: &StoredPlan, bumps: &[tandem_matching::FeeBump]) -> anyhow::Result<Psbt> {
    let mut tx = base.unsigned_tx.clone();
    for bump in bumps {
        let i = payer_output(stored, bump.payer).with_context(|| format!("holder {} has no output to pay a bump", bump.payer.0))?;
        let out = &mut tx.output[i];
        out.value = out.value.checked_sub(Amount::from_sat(bump.extra.0)).context("a bump larger than its payer's output")?;
    }
    let mut psbt = Psbt::from_unsigned_tx(tx)?;
    for (to, from) in psbt.inputs.iter_mut().zip(&base.inputs) {
        to.witness_utxo = from.witness_utxo.clone();
    }
    Ok(psbt)
}

fn decode_psbt(base64: &str) -> anyhow::Result<Psbt> {
    let bytes = base64::engine::general_purpose::STANDARD.decode(base64)?;
    Ok(Psbt::deserialize(&bytes)?)
}

/// The unsigned transaction with every input's stored witness.
fn finished_tx(psbt: &Psbt, signatures: Vec<(u32, String)>) -> anyhow::Result<Transaction> {
    let mut tx = psbt.unsigned_tx.clone();
    if signatures.len() != tx.input.len() {
        bail!("{} signatures for {} inputs", signatures.len(), tx.input.len());
    }
    for (index, witness_hex) in signatures {
        let witness: Witness = deserialize(&hex::decode(&witness_hex)?)?;
        let input = tx.input.get_mut(index as usize).ok_or_else(|| anyhow!("a signature for input {index}, out of range"))?;
        input.witness = witness;
    }
    Ok(tx)
}
