//! Signing policy: before a signer contributes anything to a signature, it checks the whole
//! spend against facts it trusts itself, and refuses with a reason otherwise.
//!
//! Each signer has its own policy and its own facts; none trusts another's judgement:
//! - the **provider** signs only spends the ledger backs: every output pays an obligation the
//!   ledger names (a requested withdrawal, a settlement batch's payments) or returns to a vault;
//! - the **wallet** signs only what its user's own withdrawals and fills back: it checks every
//!   satoshi that leaves its vault;
//! - the **co-signer**, with the wallet, lets the user exit to an address the user names, for at
//!   most the balance net of obligations, once the provider has been silent long enough; with the
//!   provider, it signs only forced settlement of obligations the user's own signed orders prove,
//!   and only after the settlement deadline.
//!
//! The checks read input values from the PSBT's `witness_utxo` (each signer also recomputes the
//! BIP-143 sighash from the same PSBT, which commits to those values, so a lie there makes the
//! signature invalid). Refusals are logged with their reason ([`Refusal::log`]).

use crate::group::PartyRole;
use bitcoin::{Amount, Psbt, ScriptBuf, SignedAmount};
use std::collections::{HashMap, HashSet};
use std::fmt;

/// What a spend claims to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SpendPurpose {
    /// Pays out a withdrawal the user requested.
    Withdrawal { withdrawal: u64 },
    /// A netted settlement batch.
    SettlementBatch { batch: u64 },
    /// The user leaves with the co-signer, without the provider.
    Recovery,
    /// Provider and co-signer settle what a late user owes, after the deadline.
    ForcedSettlement { batch: u64 },
}

/// A spend put to a signer.
#[derive(Clone, Copy, Debug)]
pub struct SpendRequest<'a> {
    pub psbt: &'a Psbt,
    pub purpose: SpendPurpose,
    /// The two parties signing.
    pub signers: &'a [PartyRole],
}

/// An output a spend must contain: to this script, exactly this amount.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Payment {
    pub script_pubkey: ScriptBuf,
    pub amount: Amount,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RefusalCode {
    /// This signer is not part of the spend, or the pair cannot sign this purpose.
    WrongSigners,
    /// This signer never signs this kind of spend.
    WrongPurpose,
    /// An input lacks the previous output the checks need.
    MissingInputValue,
    /// An input spends something that is not a vault this signer knows.
    ForeignInput,
    /// An output pays someone the facts do not name.
    UnexpectedOutput,
    /// An obligation is not paid exactly.
    ObligationUnpaid,
    /// Outputs exceed inputs, or the fee exceeds the cap.
    BadFee,
    /// More leaves the vault than the user's withdrawals and fills account for.
    OverSpend,
    /// The settlement deadline has not passed.
    TooEarly,
    /// The provider has not been silent long enough for a recovery without it.
    ProviderReachable,
    /// The session's intent does not decode or does not fit the session.
    BadIntent,
    /// The signer holds no share of the key the intent names.
    UnknownKey,
    /// This obligation was signed for before with other inputs: both could confirm and pay it
    /// twice. A replacement must spend at least one input of the spend it replaces.
    DoublePay,
}

impl RefusalCode {
    pub const ALL: [RefusalCode; 13] = [
        RefusalCode::WrongSigners,
        RefusalCode::WrongPurpose,
        RefusalCode::MissingInputValue,
        RefusalCode::ForeignInput,
        RefusalCode::UnexpectedOutput,
        RefusalCode::ObligationUnpaid,
        RefusalCode::BadFee,
        RefusalCode::OverSpend,
        RefusalCode::TooEarly,
        RefusalCode::ProviderReachable,
        RefusalCode::BadIntent,
        RefusalCode::UnknownKey,
        RefusalCode::DoublePay,
    ];

    /// The code named by [`RefusalCode::as_str`].
    pub fn parse(name: &str) -> Option<RefusalCode> {
        RefusalCode::ALL.into_iter().find(|c| c.as_str() == name)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RefusalCode::WrongSigners => "wrong_signers",
            RefusalCode::WrongPurpose => "wrong_purpose",
            RefusalCode::MissingInputValue => "missing_input_value",
            RefusalCode::ForeignInput => "foreign_input",
            RefusalCode::UnexpectedOutput => "unexpected_output",
            RefusalCode::ObligationUnpaid => "obligation_unpaid",
            RefusalCode::BadFee => "bad_fee",
            RefusalCode::OverSpend => "over_spend",
            RefusalCode::TooEarly => "too_early",
            RefusalCode::ProviderReachable => "provider_reachable",
            RefusalCode::BadIntent => "bad_intent",
            RefusalCode::UnknownKey => "unknown_key",
            RefusalCode::DoublePay => "double_pay",
        }
    }
}

/// Why a signer will not sign.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub signer: PartyRole,
    pub code: RefusalCode,
    pub detail: String,
}

impl Refusal {
    pub fn new(signer: PartyRole, code: RefusalCode, detail: impl Into<String>) -> Refusal {
        Refusal { signer, code, detail: detail.into() }
    }

    /// Every refusal goes to the log with its reason, for operators.
    pub fn log(&self, purpose: SpendPurpose) {
        tracing::warn!(signer = ?self.signer, code = self.code.as_str(), detail = %self.detail, ?purpose, "signing refused");
    }
}

/// How a party that refuses tells the others, as the reason of its session abort:
/// `refused <code>: <detail>`.
impl Refusal {
    pub fn abort_reason(&self) -> String {
        format!("refused {}: {}", self.code.as_str(), self.detail)
    }
}

/// Reads a refusal back from a session's end reason (the relay prefixes it with who aborted):
/// the code and the detail.
pub fn parse_refusal(reason: &str) -> Option<(String, String)> {
    let at = reason.find("refused ")?;
    let rest = &reason[at + "refused ".len()..];
    let (code, detail) = rest.split_once(": ")?;
    let code_ok = !code.is_empty() && code.chars().all(|c| c.is_ascii_lowercase() || c == '_');
    code_ok.then(|| (code.to_owned(), detail.to_owned()))
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} refuses to sign ({}): {}", self.signer, self.code.as_str(), self.detail)
    }
}

impl std::error::Error for Refusal {}

/// What the ledger tells the provider this spend must do.
#[derive(Clone, Debug)]
pub struct ProviderFacts<'a> {
    /// Every vault address the exchange manages: inputs must come from them, change may return.
    pub vault_scripts: &'a HashSet<ScriptBuf>,
    /// The ledger's obligations for this spend: the withdrawal's destination and amount, or the
    /// settlement batch's payments.
    pub obligations: &'a [Payment],
    pub max_fee: Amount,
}

/// What the ledger booked for a settlement batch: the provider checks the whole transaction
/// against it before it signs any input.
#[derive(Clone, Debug)]
pub struct BatchFacts<'a> {
    /// Every script of every holder in the batch (vault addresses, pool addresses), by holder.
    pub holders: &'a HashMap<ScriptBuf, u64>,
    /// Each holder's booked delta: outputs to its scripts minus its inputs, exactly.
    pub deltas: &'a HashMap<u64, SignedAmount>,
    /// The withdrawals the batch pays, each exactly once.
    pub withdrawals: &'a [Payment],
    /// The booked fee (the legs' shares plus the bumps this version carries).
    pub fee: Amount,
}

/// What the wallet knows from its own user.
#[derive(Clone, Debug)]
pub struct WalletFacts<'a> {
    /// This user's vault addresses.
    pub own_scripts: &'a HashSet<ScriptBuf>,
    /// Withdrawals the user requested that this spend may pay.
    pub requested_withdrawals: &'a [Payment],
    /// BTC the user owes a settlement batch from its own fills (net sold), zero otherwise.
    pub owed_to_batch: Amount,
    /// For a settlement batch: this vault's booked delta and fee share in the ledger.
    pub batch_leg: Option<(SignedAmount, Amount)>,
    /// The user's address for a recovery.
    pub recovery_destination: Option<&'a ScriptBuf>,
    /// Largest fee share the wallet pays.
    pub max_fee: Amount,
}

/// What the co-signer knows from following the event stream and from the user.
#[derive(Clone, Debug)]
pub struct CoSignerFacts<'a> {
    /// Unix seconds now.
    pub now: u64,
    /// The user's vault addresses.
    pub user_scripts: &'a HashSet<ScriptBuf>,
    /// Since when the provider has not answered (unix seconds), if it is silent.
    pub provider_silent_since: Option<u64>,
    /// How long the provider must be silent before a recovery without it.
    pub provider_timeout_secs: u64,
    /// The address the user named for a recovery (in a request the user signed).
    pub recovery_destination: Option<&'a ScriptBuf>,
    /// What the user may take out: its balance net of the obligations of its signed orders.
    pub recoverable: Amount,
    /// When the settlement in question was due (unix seconds).
    pub settlement_deadline: Option<u64>,
    /// Obligations proven by the user's own signed orders, for forced settlement.
    pub proven_obligations: &'a [Payment],
    pub max_fee: Amount,
}

/// The spend's inputs (script, value) and outputs, read from the PSBT.
struct Flows {
    inputs: Vec<(ScriptBuf, Amount)>,
    outputs: Vec<Payment>,
}

impl Flows {
    fn of(psbt: &Psbt, signer: PartyRole) -> Result<Flows, Refusal> {
        let mut inputs = Vec::with_capacity(psbt.inputs.len());
        for (i, input) in psbt.inputs.iter().enumerate() {
            let utxo = input.witness_utxo.as_ref().ok_or_else(|| {
                Refusal::new(signer, RefusalCode::MissingInputValue, format!("input {i} has no witness_utxo"))
            })?;
            inputs.push((utxo.script_pubkey.clone(), utxo.value));
        }
        let outputs = psbt
            .unsigned_tx
            .output
            .iter()
            .map(|o| Payment { script_pubkey: o.script_pubkey.clone(), amount: o.value })
            .collect();
        Ok(Flows { inputs, outputs })
    }

    fn fee(&self, signer: PartyRole) -> Result<Amount, Refusal> {
        let inputs = self.inputs.iter().try_fold(Amount::ZERO, |a, (_, v)| a.checked_add(*v));
        let outputs = self.outputs.iter().try_fold(Amount::ZERO, |a, p| a.checked_add(p.amount));
        match (inputs, outputs) {
            (Some(i), Some(o)) if o <= i => Ok(i - o),
            _ => Err(Refusal::new(signer, RefusalCode::BadFee, "outputs exceed inputs")),
        }
    }

    fn inputs_from(&self, scripts: &HashSet<ScriptBuf>) -> Amount {
        self.inputs.iter().filter(|(s, _)| scripts.contains(s)).map(|(_, v)| *v).sum()
    }

    fn outputs_to(&self, scripts: &HashSet<ScriptBuf>) -> Amount {
        self.outputs.iter().filter(|p| scripts.contains(&p.script_pubkey)).map(|p| p.amount).sum()
    }
}

fn require_signers(signer: PartyRole, signers: &[PartyRole], partner: &[PartyRole]) -> Result<(), Refusal> {
    let ok = signers.len() == 2 && signers.contains(&signer) && signers.iter().any(|s| *s != signer && partner.contains(s));
    if ok {
        Ok(())
    } else {
        Err(Refusal::new(signer, RefusalCode::WrongSigners, format!("signers {signers:?}")))
    }
}

fn check_fee(signer: PartyRole, flows: &Flows, max: Amount) -> Result<Amount, Refusal> {
    let fee = flows.fee(signer)?;
    if fee > max {
        return Err(Refusal::new(signer, RefusalCode::BadFee, format!("fee {fee} exceeds the cap {max}")));
    }
    Ok(fee)
}

/// Matches every obligation to a distinct output with the same script and exact amount; every
/// other output must go to one of `change_scripts`.
fn match_outputs(
    signer: PartyRole,
    outputs: &[Payment],
    obligations: &[Payment],
    change_scripts: &HashSet<ScriptBuf>,
) -> Result<(), Refusal> {
    let mut used = vec![false; outputs.len()];
    for ob in obligations {
        let found = outputs.iter().enumerate().position(|(i, o)| !used[i] && o == ob);
        match found {
            Some(i) => used[i] = true,
            None => {
                return Err(Refusal::new(
                    signer,
                    RefusalCode::ObligationUnpaid,
                    format!("no output pays {} to {}", ob.amount, ob.script_pubkey),
                ))
            }
        }
    }
    for (o, used) in outputs.iter().zip(used) {
        if !used && !change_scripts.contains(&o.script_pubkey) {
            return Err(Refusal::new(
                signer,
                RefusalCode::UnexpectedOutput,
                format!("output of {} to {} is neither an obligation nor change", o.amount, o.script_pubkey),
            ));
        }
    }
    Ok(())
}

/// The provider's policy.
pub fn provider_check(req: &SpendRequest<'_>, facts: &ProviderFacts<'_>) -> Result<(), Refusal> {
    let me = PartyRole::Provider;
    match req.purpose {
        SpendPurpose::Withdrawal { .. } | SpendPurpose::SettlementBatch { .. } => {
            require_signers(me, req.signers, &[PartyRole::Wallet, PartyRole::CoSigner])?
        }
        SpendPurpose::ForcedSettlement { .. } => require_signers(me, req.signers, &[PartyRole::CoSigner])?,
        SpendPurpose::Recovery => {
            return Err(Refusal::new(me, RefusalCode::WrongPurpose, "a recovery is signed without the provider"))
        }
    }
    let flows = Flows::of(req.psbt, me)?;
    if let Some((s, _)) = flows.inputs.iter().find(|(s, _)| !facts.vault_scripts.contains(s)) {
        return Err(Refusal::new(me, RefusalCode::ForeignInput, format!("input from {s}")));
    }
    check_fee(me, &flows, facts.max_fee)?;
    match_outputs(me, &flows.outputs, facts.obligations, facts.vault_scripts)
}

/// The provider's check of a settlement batch against what the ledger booked: inputs only from
/// the batch's holders, every withdrawal paid exactly once, nothing else leaving, each holder's
/// net exactly its booked delta, and the fee exactly the booked fee.
pub fn provider_batch_check(req: &SpendRequest<'_>, facts: &BatchFacts<'_>) -> Result<(), Refusal> {
    let me = PartyRole::Provider;
    match req.purpose {
        SpendPurpose::SettlementBatch { .. } => require_signers(me, req.signers, &[PartyRole::Wallet, PartyRole::CoSigner])?,
        // Forced settlement: the vault's co-signer stands in for the late wallet.
        SpendPurpose::ForcedSettlement { .. } => require_signers(me, req.signers, &[PartyRole::CoSigner])?,
        _ => return Err(Refusal::new(me, RefusalCode::WrongPurpose, "not a settlement batch")),
    }
    let flows = Flows::of(req.psbt, me)?;
    if let Some((s, _)) = flows.inputs.iter().find(|(s, _)| !facts.holders.contains_key(s)) {
        return Err(Refusal::new(me, RefusalCode::ForeignInput, format!("input from {s}")));
    }
    let scripts: HashSet<ScriptBuf> = facts.holders.keys().cloned().collect();
    match_outputs(me, &flows.outputs, facts.withdrawals, &scripts)?;
    let fee = flows.fee(me)?;
    if fee != facts.fee {
        return Err(Refusal::new(me, RefusalCode::BadFee, format!("fee {fee}, the ledger booked {}", facts.fee)));
    }
    let mut net: HashMap<u64, i64> = HashMap::new();
    for (s, v) in &flows.inputs {
        *net.entry(facts.holders[s]).or_default() -= v.to_sat() as i64;
    }
    // Outputs to holder scripts that are not withdrawals: a withdrawal to a vault address is
    // matched first by `match_outputs`, so count by script only what is not an obligation.
    let mut unmatched: Vec<&Payment> = facts.withdrawals.iter().collect();
    for o in &flows.outputs {
        if let Some(i) = unmatched.iter().position(|w| *w == o) {
            unmatched.swap_remove(i);
            continue;
        }
        if let Some(h) = facts.holders.get(&o.script_pubkey) {
            *net.entry(*h).or_default() += o.amount.to_sat() as i64;
        }
    }
    let holders: HashSet<u64> = net.keys().chain(facts.deltas.keys()).copied().collect();
    for h in holders {
        let got = SignedAmount::from_sat(net.get(&h).copied().unwrap_or(0));
        let booked = facts.deltas.get(&h).copied().unwrap_or(SignedAmount::ZERO);
        if got != booked {
            return Err(Refusal::new(
                me,
                RefusalCode::ObligationUnpaid,
                format!("holder {h} moves {got} on chain, the ledger booked {booked}"),
            ));
        }
    }
    Ok(())
}

/// The wallet's policy.
pub fn wallet_check(req: &SpendRequest<'_>, facts: &WalletFacts<'_>) -> Result<(), Refusal> {
    let me = PartyRole::Wallet;
    let flows = Flows::of(req.psbt, me)?;
    let leaving = flows.inputs_from(facts.own_scripts).checked_sub(flows.outputs_to(facts.own_scripts));
    let leaving = leaving.unwrap_or(Amount::ZERO);
    match req.purpose {
        SpendPurpose::Withdrawal { .. } => {
            require_signers(me, req.signers, &[PartyRole::Provider])?;
            check_fee(me, &flows, facts.max_fee)?;
            // Every output is the user's own withdrawal or change to the user's own vault.
            match_outputs(me, &flows.outputs, facts.requested_withdrawals, facts.own_scripts)
        }
        SpendPurpose::SettlementBatch { .. } => {
            require_signers(me, req.signers, &[PartyRole::Provider])?;
            // The batch's fee is shared by all its participants, so only its sanity is checked
            // here; what leaves this wallet's own vault is checked to the satoshi: what its
            // fills owe plus at most its fee share.
            flows.fee(me)?;
            if let Some((delta, fee)) = facts.batch_leg {
                // The transaction must do to this vault exactly what the ledger booked.
                let own_in = flows.inputs_from(facts.own_scripts).to_sat() as i64;
                let own_out = flows.outputs_to(facts.own_scripts).to_sat() as i64;
                let net = SignedAmount::from_sat(own_out - own_in);
                if net != delta {
                    return Err(Refusal::new(
                        me,
                        RefusalCode::ObligationUnpaid,
                        format!("the batch moves {net} for this vault, the ledger booked {delta}"),
                    ));
                }
                if fee > facts.max_fee {
                    return Err(Refusal::new(me, RefusalCode::BadFee, format!("fee share {fee} exceeds the cap {}", facts.max_fee)));
                }
            }
            let allowed = facts.owed_to_batch + facts.max_fee;
            if leaving > allowed {
                return Err(Refusal::new(
                    me,
                    RefusalCode::OverSpend,
                    format!("{leaving} would leave the vault; fills owe {} plus fee", facts.owed_to_batch),
                ));
            }
            Ok(())
        }
        SpendPurpose::Recovery => {
            require_signers(me, req.signers, &[PartyRole::CoSigner])?;
            check_fee(me, &flows, facts.max_fee)?;
            let dest = facts
                .recovery_destination
                .ok_or_else(|| Refusal::new(me, RefusalCode::UnexpectedOutput, "no recovery address chosen"))?;
            let mut allowed = facts.own_scripts.clone();
            allowed.insert(dest.clone());
            match_outputs(me, &flows.outputs, &[], &allowed)
        }
        SpendPurpose::ForcedSettlement { .. } => {
            Err(Refusal::new(me, RefusalCode::WrongPurpose, "forced settlement is signed without the wallet"))
        }
    }
}

/// The co-signer's policy.
pub fn cosigner_check(req: &SpendRequest<'_>, facts: &CoSignerFacts<'_>) -> Result<(), Refusal> {
    let me = PartyRole::CoSigner;
    let flows = Flows::of(req.psbt, me)?;
    check_fee(me, &flows, facts.max_fee)?;
    if let Some((s, _)) = flows.inputs.iter().find(|(s, _)| !facts.user_scripts.contains(s)) {
        return Err(Refusal::new(me, RefusalCode::ForeignInput, format!("input from {s}")));
    }
    match req.purpose {
        SpendPurpose::Recovery => {
            require_signers(me, req.signers, &[PartyRole::Wallet])?;
            let silent_for = facts.provider_silent_since.map(|t| facts.now.saturating_sub(t));
            if silent_for.is_none_or(|s| s < facts.provider_timeout_secs) {
                return Err(Refusal::new(
                    me,
                    RefusalCode::ProviderReachable,
                    format!("provider silent for {silent_for:?} s, {} s needed", facts.provider_timeout_secs),
                ));
            }
            let dest = facts
                .recovery_destination
                .ok_or_else(|| Refusal::new(me, RefusalCode::UnexpectedOutput, "the user named no recovery address"))?;
            let mut allowed = facts.user_scripts.clone();
            allowed.insert(dest.clone());
            match_outputs(me, &flows.outputs, &[], &allowed)?;
            let paid_out: Amount =
                flows.outputs.iter().filter(|o| &o.script_pubkey == dest).map(|o| o.amount).sum();
            if paid_out > facts.recoverable {
                return Err(Refusal::new(
                    me,
                    RefusalCode::OverSpend,
                    format!("{paid_out} to the recovery address, but only {} is free of obligations", facts.recoverable),
                ));
            }
            Ok(())
        }
        SpendPurpose::ForcedSettlement { .. } => {
            require_signers(me, req.signers, &[PartyRole::Provider])?;
            match facts.settlement_deadline {
                Some(deadline) if facts.now >= deadline => {}
                other => {
                    return Err(Refusal::new(
                        me,
                        RefusalCode::TooEarly,
                        format!("settlement deadline {other:?}, now {}", facts.now),
                    ))
                }
            }
            match_outputs(me, &flows.outputs, facts.proven_obligations, facts.user_scripts)
        }
        SpendPurpose::Withdrawal { .. } | SpendPurpose::SettlementBatch { .. } => Err(Refusal::new(
            me,
            RefusalCode::WrongPurpose,
            "withdrawals and batches are signed by the wallet and the provider",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitcoin::absolute::LockTime;
    use bitcoin::transaction::Version;
    use bitcoin::{OutPoint, Sequence, Transaction, TxIn, TxOut, Txid, Witness};
    use std::str::FromStr;

    #[test]
    fn every_refusal_code_reads_back_from_its_name() {
        for code in RefusalCode::ALL {
            assert_eq!(RefusalCode::parse(code.as_str()), Some(code));
        }
        assert_eq!(RefusalCode::parse("no_such_code"), None);
    }

    fn script(n: u8) -> ScriptBuf {
        // A P2WPKH-shaped script with a recognisable 20-byte program.
        let mut bytes = vec![0x00, 0x14];
        bytes.extend([n; 20]);
        ScriptBuf::from_bytes(bytes)
    }

    fn sats(n: u64) -> Amount {
        Amount::from_sat(n)
    }

    fn psbt(inputs: &[(ScriptBuf, u64)], outputs: &[(ScriptBuf, u64)]) -> Psbt {
        let txid = Txid::from_str("0101010101010101010101010101010101010101010101010101010101010101").unwrap();
        let tx = Transaction {
            version: Version::TWO,
            lock_time: LockTime::ZERO,
            input: (0..inputs.len())
                .map(|i| TxIn {
                    previous_output: OutPoint { txid, vout: i as u32 },
                    script_sig: ScriptBuf::new(),
                    sequence: Sequence::ENABLE_RBF_NO_LOCKTIME,
                    witness: Witness::new(),
                })
                .collect(),
            output: outputs.iter().map(|(s, v)| TxOut { script_pubkey: s.clone(), value: sats(*v) }).collect(),
        };
        let mut p = Psbt::from_unsigned_tx(tx).unwrap();
        for (i, (s, v)) in inputs.iter().enumerate() {
            p.inputs[i].witness_utxo = Some(TxOut { script_pubkey: s.clone(), value: sats(*v) });
        }
        p
    }

    fn set(scripts: &[ScriptBuf]) -> HashSet<ScriptBuf> {
        scripts.iter().cloned().collect()
    }

    const VAULT: u8 = 1;
    const OTHER_VAULT: u8 = 2;
    const DEST: u8 = 9;
    const THIEF: u8 = 66;
    const WP: &[PartyRole] = &[PartyRole::Wallet, PartyRole::Provider];
    const WC: &[PartyRole] = &[PartyRole::Wallet, PartyRole::CoSigner];
    const PC: &[PartyRole] = &[PartyRole::Provider, PartyRole::CoSigner];

    fn withdrawal_psbt(to: u8, amount: u64) -> Psbt {
        psbt(&[(script(VAULT), 100_000)], &[(script(to), amount), (script(VAULT), 100_000 - amount - 500)])
    }

    #[test]
    fn provider_signs_a_requested_withdrawal_and_nothing_else() {
        let vaults = set(&[script(VAULT), script(OTHER_VAULT)]);
        let ob = [Payment { script_pubkey: script(DEST), amount: sats(40_000) }];
        let facts = ProviderFacts { vault_scripts: &vaults, obligations: &ob, max_fee: sats(1_000) };
        let ok = withdrawal_psbt(DEST, 40_000);
        let check = |p: &Psbt| provider_check(&SpendRequest { psbt: p, purpose: SpendPurpose::Withdrawal { withdrawal: 1 }, signers: WP }, &facts);
        assert_eq!(check(&ok), Ok(()));

        // An unbacked spend: the money goes somewhere the ledger does not name.
        let unbacked = withdrawal_psbt(THIEF, 40_000);
        assert_eq!(check(&unbacked).unwrap_err().code, RefusalCode::ObligationUnpaid);
        // The right address, the wrong amount.
        let more = withdrawal_psbt(DEST, 41_000);
        assert_eq!(check(&more).unwrap_err().code, RefusalCode::ObligationUnpaid);
        // The withdrawal plus an extra payment to someone else.
        let extra = psbt(&[(script(VAULT), 100_000)], &[(script(DEST), 40_000), (script(THIEF), 59_000)]);
        assert_eq!(check(&extra).unwrap_err().code, RefusalCode::UnexpectedOutput);
        // A fee above the cap.
        let greedy = psbt(&[(script(VAULT), 100_000)], &[(script(DEST), 40_000), (script(VAULT), 50_000)]);
        assert_eq!(check(&greedy).unwrap_err().code, RefusalCode::BadFee);
        // An input from outside the vaults.
        let foreign = psbt(&[(script(THIEF), 100_000)], &[(script(DEST), 40_000), (script(VAULT), 59_500)]);
        assert_eq!(check(&foreign).unwrap_err().code, RefusalCode::ForeignInput);
        // No input values.
        let mut blind = ok.clone();
        blind.inputs[0].witness_utxo = None;
        assert_eq!(check(&blind).unwrap_err().code, RefusalCode::MissingInputValue);
        // Not a pair the provider signs a recovery with.
        let rec = SpendRequest { psbt: &ok, purpose: SpendPurpose::Recovery, signers: WC };
        assert_eq!(provider_check(&rec, &facts).unwrap_err().code, RefusalCode::WrongPurpose);
    }

    #[test]
    fn wallet_checks_every_satoshi_leaving_its_vault() {
        let own = set(&[script(VAULT)]);
        let asked = [Payment { script_pubkey: script(DEST), amount: sats(40_000) }];
        let facts = WalletFacts {
            own_scripts: &own,
            requested_withdrawals: &asked,
            owed_to_batch: sats(0),
            batch_leg: None,
            recovery_destination: None,
            max_fee: sats(1_000),
        };
        let check = |p: &Psbt, facts: &WalletFacts<'_>| {
            wallet_check(&SpendRequest { psbt: p, purpose: SpendPurpose::Withdrawal { withdrawal: 1 }, signers: WP }, facts)
        };
        assert_eq!(check(&withdrawal_psbt(DEST, 40_000), &facts), Ok(()));
        assert_eq!(check(&withdrawal_psbt(DEST, 45_000), &facts).unwrap_err().code, RefusalCode::ObligationUnpaid);

        // A settlement batch: its fills owe 30,000 sats; paying away more than that is refused.
        let facts = WalletFacts { owed_to_batch: sats(30_000), ..facts };
        let batch = |paid: u64| {
            psbt(
                &[(script(VAULT), 100_000), (script(OTHER_VAULT), 50_000)],
                &[(script(OTHER_VAULT), 50_000 + paid), (script(VAULT), 100_000 - paid - 400)],
            )
        };
        let settle = |p: &Psbt| {
            wallet_check(&SpendRequest { psbt: p, purpose: SpendPurpose::SettlementBatch { batch: 7 }, signers: WP }, &facts)
        };
        assert_eq!(settle(&batch(30_000)), Ok(()));
        assert_eq!(settle(&batch(35_000)).unwrap_err().code, RefusalCode::OverSpend);
    }

    #[test]
    fn cosigner_recovery_needs_a_silent_provider_and_stays_within_the_free_balance() {
        let user = set(&[script(VAULT)]);
        let dest = script(DEST);
        let facts = CoSignerFacts {
            now: 10_000,
            user_scripts: &user,
            provider_silent_since: Some(10_000 - 3_600),
            provider_timeout_secs: 3_600,
            recovery_destination: Some(&dest),
            recoverable: sats(90_000),
            settlement_deadline: None,
            proven_obligations: &[],
            max_fee: sats(1_000),
        };
        let sweep = |amount: u64| psbt(&[(script(VAULT), 100_000)], &[(script(DEST), amount), (script(VAULT), 100_000 - amount - 500)]);
        let check = |p: &Psbt, facts: &CoSignerFacts<'_>| {
            cosigner_check(&SpendRequest { psbt: p, purpose: SpendPurpose::Recovery, signers: WC }, facts)
        };
        assert_eq!(check(&sweep(90_000), &facts), Ok(()));
        // More than the balance net of obligations.
        assert_eq!(check(&sweep(95_000), &facts).unwrap_err().code, RefusalCode::OverSpend);
        // To an address the user did not name.
        let elsewhere = psbt(&[(script(VAULT), 100_000)], &[(script(THIEF), 90_000), (script(VAULT), 9_500)]);
        assert_eq!(check(&elsewhere, &facts).unwrap_err().code, RefusalCode::UnexpectedOutput);
        // The provider answered recently.
        let early = CoSignerFacts { provider_silent_since: Some(10_000 - 60), ..facts.clone() };
        assert_eq!(check(&sweep(90_000), &early).unwrap_err().code, RefusalCode::ProviderReachable);
        let never = CoSignerFacts { provider_silent_since: None, ..facts.clone() };
        assert_eq!(check(&sweep(90_000), &never).unwrap_err().code, RefusalCode::ProviderReachable);
        // A recovery is a wallet + co-signer spend only.
        let swept = sweep(90_000);
        let with_provider = SpendRequest { psbt: &swept, purpose: SpendPurpose::Recovery, signers: PC };
        assert_eq!(cosigner_check(&with_provider, &facts).unwrap_err().code, RefusalCode::WrongSigners);
    }

    #[test]
    fn cosigner_forces_settlement_only_after_the_deadline_and_only_proven_obligations() {
        let user = set(&[script(VAULT)]);
        let proven = [Payment { script_pubkey: script(OTHER_VAULT), amount: sats(30_000) }];
        let facts = CoSignerFacts {
            now: 5_000,
            user_scripts: &user,
            provider_silent_since: None,
            provider_timeout_secs: 3_600,
            recovery_destination: None,
            recoverable: sats(0),
            settlement_deadline: Some(4_000),
            proven_obligations: &proven,
            max_fee: sats(1_000),
        };
        let forced = psbt(&[(script(VAULT), 100_000)], &[(script(OTHER_VAULT), 30_000), (script(VAULT), 69_500)]);
        let check = |p: &Psbt, facts: &CoSignerFacts<'_>| {
            cosigner_check(&SpendRequest { psbt: p, purpose: SpendPurpose::ForcedSettlement { batch: 3 }, signers: PC }, facts)
        };
        assert_eq!(check(&forced, &facts), Ok(()));
        // Before the deadline.
        let early = CoSignerFacts { now: 3_999, ..facts.clone() };
        assert_eq!(check(&forced, &early).unwrap_err().code, RefusalCode::TooEarly);
        // An obligation the user's signed orders do not prove.
        let unproven = psbt(&[(script(VAULT), 100_000)], &[(script(OTHER_VAULT), 60_000), (script(VAULT), 39_500)]);
        assert_eq!(check(&unproven, &facts).unwrap_err().code, RefusalCode::ObligationUnpaid);
        // Nor does it sign plain withdrawals.
        let w = SpendRequest { psbt: &forced, purpose: SpendPurpose::Withdrawal { withdrawal: 1 }, signers: PC };
        assert_eq!(cosigner_check(&w, &facts).unwrap_err().code, RefusalCode::WrongPurpose);
    }

    #[test]
    fn outputs_above_inputs_are_refused_by_everyone() {
        let vaults = set(&[script(VAULT)]);
        let bad = psbt(&[(script(VAULT), 1_000)], &[(script(VAULT), 2_000)]);
        let facts = ProviderFacts { vault_scripts: &vaults, obligations: &[], max_fee: sats(1_000) };
        let req = SpendRequest { psbt: &bad, purpose: SpendPurpose::SettlementBatch { batch: 1 }, signers: WP };
        assert_eq!(provider_check(&req, &facts).unwrap_err().code, RefusalCode::BadFee);
    }

    #[test]
    fn provider_signs_a_batch_only_as_the_ledger_booked_it() {
        // Seller vault 1 gives 60,000 + 300 fee; buyer vault 2 gets 30,000 - 100; a withdrawal
        // of 29,000 to DEST; the pool (3) pays 100 of fee and keeps the rest.
        let p = psbt(
            &[(script(1), 100_000), (script(3), 10_000)],
            &[(script(DEST), 29_000), (script(1), 39_700), (script(2), 29_900), (script(3), 10_900)],
        );
        let holders: HashMap<ScriptBuf, u64> = [(script(1), 1), (script(2), 2), (script(3), 3)].into_iter().collect();
        let deltas: HashMap<u64, SignedAmount> =
            [(1, SignedAmount::from_sat(-60_300)), (2, SignedAmount::from_sat(29_900)), (3, SignedAmount::from_sat(900))]
                .into_iter()
                .collect();
        let withdrawals = [Payment { script_pubkey: script(DEST), amount: sats(29_000) }];
        let facts = BatchFacts { holders: &holders, deltas: &deltas, withdrawals: &withdrawals, fee: sats(500) };
        let check = |p: &Psbt, f: &BatchFacts<'_>| {
            provider_batch_check(&SpendRequest { psbt: p, purpose: SpendPurpose::SettlementBatch { batch: 1 }, signers: WP }, f)
        };
        assert_eq!(check(&p, &facts), Ok(()));
        // One satoshi moved from the buyer to the pool: the deltas no longer match.
        let mut shifted = p.clone();
        shifted.unsigned_tx.output[2].value = sats(29_899);
        shifted.unsigned_tx.output[3].value = sats(10_901);
        assert_eq!(check(&shifted, &facts).unwrap_err().code, RefusalCode::ObligationUnpaid);
        // The withdrawal underpaid, the rest to the fee.
        let mut short = p.clone();
        short.unsigned_tx.output[0].value = sats(28_000);
        assert_eq!(check(&short, &facts).unwrap_err().code, RefusalCode::ObligationUnpaid);
        // A bigger fee than booked, taken from the pool's output.
        let mut greedy = p.clone();
        greedy.unsigned_tx.output[3].value = sats(10_800);
        assert_eq!(check(&greedy, &facts).unwrap_err().code, RefusalCode::BadFee);
        // An output to a stranger.
        let mut stolen = p.clone();
        stolen.unsigned_tx.output[3].script_pubkey = script(THIEF);
        assert_eq!(check(&stolen, &facts).unwrap_err().code, RefusalCode::UnexpectedOutput);

        // The wallet of vault 1 checks its own leg to the satoshi.
        let own = set(&[script(1)]);
        let wallet = |leg: (i64, u64)| {
            let facts = WalletFacts {
                own_scripts: &own,
                requested_withdrawals: &[],
                owed_to_batch: sats(60_000),
                batch_leg: Some((SignedAmount::from_sat(leg.0), sats(leg.1))),
                recovery_destination: None,
                max_fee: sats(1_000),
            };
            wallet_check(&SpendRequest { psbt: &p, purpose: SpendPurpose::SettlementBatch { batch: 1 }, signers: WP }, &facts)
        };
        assert_eq!(wallet((-60_300, 300)), Ok(()));
        assert_eq!(wallet((-60_299, 300)).unwrap_err().code, RefusalCode::ObligationUnpaid);
        assert_eq!(wallet((-60_300, 3_000)).unwrap_err().code, RefusalCode::BadFee);
    }
}
