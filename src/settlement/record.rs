//! What the settlement service writes down about a batch besides its PSBT: whose each input
//! and output is and how to sign each input, so a restart resumes without re-planning.

use bitcoin::{OutPoint, ScriptBuf};
use serde::{Deserialize, Serialize};
use tandem_settlement::batch::{BatchPlan, DeferReason, OutputKind};

/// Who signs an input.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum InputSigner {
    /// The provider alone: a pool address, derived for this account.
    Pool { account: u64 },
    /// The provider with the vault's wallet (MPC): this vault key.
    Vault { group: String, key_index: u64 },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredInput {
    pub holder: u64,
    pub outpoint: String,
    pub value: u64,
    pub signer: InputSigner,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredOutput {
    /// `vault` or `withdrawal`.
    pub kind: String,
    /// The holder of a vault output.
    pub holder: Option<u64>,
    /// The withdrawal an output pays.
    pub withdrawal: Option<u64>,
    pub script: String,
    pub amount: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredLeg {
    pub holder: u64,
    pub delta: i64,
    pub fee: u64,
    pub vbytes: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredDeferred {
    pub holder: u64,
    pub target: i64,
    pub reason: String,
}

/// The `plan` column of a batch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredPlan {
    pub inputs: Vec<StoredInput>,
    pub outputs: Vec<StoredOutput>,
    pub legs: Vec<StoredLeg>,
    pub deferred: Vec<StoredDeferred>,
    pub withdrawals: Vec<u64>,
    /// The engine sequence number the targets were read at (the window's cut).
    pub cut_seq: u64,
    /// A forced settlement of this late holder (its vault's inputs signed by the provider and
    /// the co-signer), not a window's netting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forced: Option<u64>,
}

impl StoredPlan {
    /// `signer_of` says who signs an input spending a script (every input's script has one: the
    /// planner only spends coins the caller gave it).
    pub fn of(
        plan: &BatchPlan,
        cut_seq: u64,
        signer_of: impl Fn(&ScriptBuf) -> Option<InputSigner>,
    ) -> anyhow::Result<StoredPlan> {
        let inputs = plan
            .inputs
            .iter()
            .map(|i| {
                let signer = signer_of(&i.utxo.script_pubkey)
                    .ok_or_else(|| anyhow::anyhow!("no signer for input {}", i.utxo.outpoint))?;
                Ok(StoredInput { holder: i.holder, outpoint: i.utxo.outpoint.to_string(), value: i.utxo.value.to_sat(), signer })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let outputs = plan
            .outputs
            .iter()
            .map(|o| {
                let (kind, holder, withdrawal) = match o.kind {
                    OutputKind::Vault { holder } => ("vault", Some(holder), None),
                    OutputKind::Withdrawal { id } => ("withdrawal", None, Some(id)),
                };
                StoredOutput { kind: kind.into(), holder, withdrawal, script: o.script_pubkey.to_hex_string(), amount: o.amount.to_sat() }
            })
            .collect();
        let legs = plan
            .legs
            .iter()
            .map(|l| StoredLeg { holder: l.holder, delta: l.delta.to_sat(), fee: l.fee.to_sat(), vbytes: l.vbytes })
            .collect();
        let deferred = plan
            .deferred
            .iter()
            .map(|d| StoredDeferred {
                holder: d.holder,
                target: d.target.to_sat(),
                reason: match d.reason {
                    DeferReason::NothingToDo => "nothing_to_do".into(),
                    DeferReason::BelowDust { .. } => "below_dust".into(),
                    DeferReason::InsufficientFunds { .. } => "insufficient_funds".into(),
                },
            })
            .collect();
        let withdrawals = plan
            .outputs
            .iter()
            .filter_map(|o| match o.kind {
                OutputKind::Withdrawal { id } => Some(id),
                OutputKind::Vault { .. } => None,
            })
            .collect();
        Ok(StoredPlan { inputs, outputs, legs, deferred, withdrawals, cut_seq, forced: None })
    }

    pub fn outpoint(&self, index: usize) -> anyhow::Result<OutPoint> {
        let input = self.inputs.get(index).ok_or_else(|| anyhow::anyhow!("no input {index}"))?;
        Ok(input.outpoint.parse()?)
    }
}
