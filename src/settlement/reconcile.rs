//! Reconciliation: the ledger against the chain, to the satoshi.
//!
//! For every holder (an account with a vault; the pool for every other account) the ledger's
//! settled amount must equal what its addresses hold on chain, counting only coins the ledger
//! counts (credited deposits, outputs of confirmed batches) and counting the inputs of the batch
//! in flight as still held until the ledger confirms it. In total, what the ledger owes
//! (every BTC balance) must equal what the holders hold. Coins at watched addresses the ledger
//! has not credited yet (deposits waiting for confirmations) are listed apart, not as a
//! difference.

use std::collections::{BTreeMap, HashSet};

use serde::Serialize;
use tandem_matching::{AccountId, SETTLEMENT_POOL};

use super::record::StoredPlan;
use super::SettlementService;

#[derive(Clone, Debug, Serialize)]
pub struct HolderReport {
    pub holder: u64,
    /// What the ledger says this holder's addresses hold.
    pub ledger_sat: i64,
    /// What they hold on chain (counted coins, plus inputs of the batch in flight).
    pub chain_sat: i64,
    pub difference_sat: i64,
    /// Coins at its addresses not credited yet (deposits waiting for confirmations).
    pub uncredited_sat: i64,
}

#[derive(Clone, Debug, Serialize)]
pub struct AccountReport {
    pub account: u64,
    pub holder: u64,
    pub balance_sat: u64,
    /// What the next batch moves into (+) or out of (−) its own vault; for an account the
    /// pool holds, its balance is the pool's to hold.
    pub exposure_sat: Option<i64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Reconciliation {
    /// Every BTC balance in the ledger, summed.
    pub ledger_owes_sat: i64,
    /// What the ledger says the holders hold (summed `ledger_sat`).
    pub ledger_settled_sat: i64,
    /// What the holders hold on chain (summed `chain_sat`).
    pub chain_holds_sat: i64,
    /// Fees and withdrawals booked by the batch in flight (they leave at its confirmation).
    pub in_flight_out_sat: i64,
    /// Fees paid by confirmed batches.
    pub fees_paid_sat: u64,
    pub uncredited_sat: i64,
    pub chain_height: u32,
    pub holders: Vec<HolderReport>,
    pub accounts: Vec<AccountReport>,
    /// Holders whose chain and ledger differ, and the total if it differs.
    pub differences: Vec<String>,
    pub balanced: bool,
    /// The audit run after the last confirmed batch (when, after which batch, its verdict).
    pub last_audit: Option<serde_json::Value>,
}

impl SettlementService {
    pub async fn reconcile(&self) -> anyhow::Result<Reconciliation> {
        let btc = self.btc;
        let holders = self.vault_holders().await?;
        let (accounts, settled, balances, in_flight_out) = self
            .sequencer
            .read(move |e| {
                let n = e.account_count();
                let balances: Vec<(AccountId, u64, Option<i128>)> = (1..=n)
                    .map(AccountId)
                    .map(|a| (a, e.balance(a, btc).map(|b| b.total() as u64).unwrap_or(0), e.settlement_target(a, btc)))
                    .collect();
                let pending = e.pending_withdrawals();
                let in_flight_out: i128 = e
                    .open_batches()
                    .iter()
                    .filter(|(_, b)| b.asset == btc)
                    .map(|(_, b)| {
                        let fees: i128 = b.legs.iter().map(|l| l.fee.0 as i128).sum::<i128>()
                            + b.bumps.iter().map(|x| x.extra.0 as i128).sum::<i128>();
                        let paid: i128 = b
                            .withdrawals
                            .iter()
                            .filter_map(|w| pending.iter().find(|(id, _)| id == w))
                            .map(|(_, p)| p.amount.0 as i128)
                            .sum();
                        fees + paid
                    })
                    .sum();
                (n, e.settled_all(btc), balances, in_flight_out)
            })
            .await?;

        // Inputs of batches not yet confirmed in the ledger are still their holders' coins.
        let mut in_flight_inputs: BTreeMap<u64, Vec<(bitcoin::OutPoint, i64)>> = BTreeMap::new();
        for b in self.store.unfinished_batches().await? {
            let plan: StoredPlan = serde_json::from_str(&b.plan)?;
            for (i, input) in plan.inputs.iter().enumerate() {
                in_flight_inputs.entry(input.holder).or_default().push((plan.outpoint(i)?, input.value as i64));
            }
        }

        let mut scripts_of: BTreeMap<u64, Vec<bitcoin::ScriptBuf>> = BTreeMap::new();
        for (account, addresses) in &holders {
            scripts_of.insert(account.0, addresses.iter().map(|(s, _, _)| s.clone()).collect());
        }
        scripts_of.insert(SETTLEMENT_POOL.0, self.custodian.pool().scripts(accounts)?.into_keys().collect());
        let settled: BTreeMap<u64, i64> = settled.into_iter().map(|(h, v)| (h.0, v as i64)).collect();

        let mut report = Vec::new();
        let mut differences = Vec::new();
        let all: HashSet<u64> = scripts_of.keys().chain(settled.keys()).copied().collect();
        let mut all: Vec<u64> = all.into_iter().collect();
        all.sort_unstable();
        for holder in all {
            let scripts = scripts_of.get(&holder).cloned().unwrap_or_default();
            let utxos = if scripts.is_empty() { Vec::new() } else { self.chain.utxos(&scripts).await? };
            let counted = self.counted_utxos(&scripts).await?;
            let counted_set: HashSet<bitcoin::OutPoint> = counted.iter().map(|u| u.outpoint).collect();
            let mut chain: i64 = counted.iter().map(|u| u.value.to_sat() as i64).sum();
            for (outpoint, value) in in_flight_inputs.get(&holder).map(Vec::as_slice).unwrap_or(&[]) {
                if !counted_set.contains(outpoint) {
                    chain += value;
                }
            }
            let uncredited: i64 =
                utxos.iter().filter(|u| !counted_set.contains(&u.outpoint)).map(|u| u.txout.value.to_sat() as i64).sum();
            let ledger = settled.get(&holder).copied().unwrap_or(0);
            if ledger != chain {
                differences.push(format!("holder {holder}: ledger {ledger} sat, chain {chain} sat"));
            }
            report.push(HolderReport { holder, ledger_sat: ledger, chain_sat: chain, difference_sat: chain - ledger, uncredited_sat: uncredited });
        }

        let owes: i64 = balances.iter().map(|(_, b, _)| *b as i64).sum();
        let ledger_settled: i64 = report.iter().map(|h| h.ledger_sat).sum();
        let chain_holds: i64 = report.iter().map(|h| h.chain_sat).sum();
        if owes != ledger_settled {
            differences.push(format!("the ledger owes {owes} sat but says its holders hold {ledger_settled} sat"));
        }
        let vault_holders: HashSet<u64> = holders.keys().map(|a| a.0).collect();
        let accounts_report = balances
            .into_iter()
            .filter(|(a, b, _)| *b > 0 || vault_holders.contains(&a.0))
            .map(|(a, balance, target)| {
                let own = vault_holders.contains(&a.0);
                AccountReport {
                    account: a.0,
                    holder: if own { a.0 } else { SETTLEMENT_POOL.0 },
                    balance_sat: balance,
                    exposure_sat: if own { target.map(|t| t as i64) } else { None },
                }
            })
            .collect();
        let fees_paid = self.store.confirmed_fees_total().await?;
        Ok(Reconciliation {
            ledger_owes_sat: owes,
            ledger_settled_sat: ledger_settled,
            chain_holds_sat: chain_holds,
            in_flight_out_sat: in_flight_out as i64,
            fees_paid_sat: fees_paid,
            uncredited_sat: report.iter().map(|h| h.uncredited_sat).sum(),
            chain_height: self.chain.tip().await?.height,
            holders: report,
            accounts: accounts_report,
            balanced: differences.is_empty(),
            differences,
            last_audit: self.store.meta(super::LAST_AUDIT).await?.and_then(|v| serde_json::from_str(&v).ok()),
        })
    }
}
