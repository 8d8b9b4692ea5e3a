//! Shared test scaffolding: signer groups with aux info (from fixture primes, built once per
//! test binary), running several parties at once, and Bitcoin transactions to sign and verify.

use std::future::Future;
use std::pin::Pin;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use bitcoin::absolute::LockTime;
use bitcoin::hashes::Hash;
use bitcoin::secp256k1::{Message, Secp256k1};
use bitcoin::transaction::Version;
use bitcoin::{Amount, OutPoint, ScriptBuf, Sequence, Transaction, TxIn, TxOut, Txid, Witness};
use tandem_custody::primes::fixture_primes;
use tandem_custody::{
    CustodyConfig, ExecutionId, InputSignature, InputToSign, LocalNetwork, Party, PartyRole, Policy, SignerGroup,
    VaultKey,
};

pub type BoxFut<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Runs each future on its own thread (own current-thread tokio runtime with timers), like
/// separate machines would, and returns the outputs in order.
pub fn run_parties<'a, T: Send>(futs: Vec<BoxFut<'a, T>>) -> Vec<T> {
    std::thread::scope(|s| {
        let handles: Vec<_> = futs
            .into_iter()
            .map(|f| {
                s.spawn(move || {
                    tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(f)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("party thread panicked")).collect()
    })
}

pub fn test_config() -> CustodyConfig {
    CustodyConfig { session_timeout: Duration::from_secs(120), ..CustodyConfig::demo() }
}

/// A signer group whose parties have aux info.
pub struct TestGroup {
    pub group: SignerGroup,
    pub parties: Vec<Party>,
}

impl TestGroup {
    /// Runs aux info generation for `policy` with fixture prime set `set`.
    pub fn build(policy: Policy, set: usize) -> TestGroup {
        let t0 = Instant::now();
        let group = SignerGroup::new(policy);
        let mut parties: Vec<Party> =
            policy.roles().iter().map(|r| Party::new(group.clone(), *r, test_config()).unwrap()).collect();
        let eid = ExecutionId::random();
        let endpoints = LocalNetwork::session(group.n());
        let futs: Vec<BoxFut<'_, tandem_custody::Result<_>>> = parties
            .iter_mut()
            .zip(endpoints)
            .map(|(p, ep)| {
                let primes = fixture_primes(set, p.role()).unwrap();
                Box::pin(async move { p.generate_aux_info(eid, primes, ep).await }) as BoxFut<'_, tandem_custody::Result<_>>
            })
            .collect();
        for r in run_parties(futs) {
            r.expect("aux info generation");
        }
        eprintln!("aux info for {policy:?}: {:.1}s", t0.elapsed().as_secs_f64());
        TestGroup { group, parties }
    }

    pub fn party(&self, role: PartyRole) -> &Party {
        &self.parties[role.index() as usize]
    }

    /// Keygen for a new address; returns each party's share, by role index.
    pub fn keygen(&self) -> Vec<VaultKey> {
        let eid = ExecutionId::random();
        let endpoints = LocalNetwork::session(self.group.n());
        let futs: Vec<BoxFut<'_, tandem_custody::Result<_>>> = self
            .parties
            .iter()
            .zip(endpoints)
            .map(|(p, ep)| Box::pin(p.keygen(eid, ep)) as BoxFut<'_, tandem_custody::Result<_>>)
            .collect();
        run_parties(futs).into_iter().map(|r| r.expect("keygen")).collect()
    }
}

pub static GROUP_2OF3: LazyLock<TestGroup> = LazyLock::new(|| TestGroup::build(Policy::TwoOfThree, 0));
pub static GROUP_2OF2: LazyLock<TestGroup> = LazyLock::new(|| TestGroup::build(Policy::TwoOfTwo, 1));

pub const PREVOUT_SAT: u64 = 100_000;

/// A transaction paying `script` (the "real output" to spend) and a transaction spending its
/// output 0, unsigned.
pub fn funding_and_spend(script: &ScriptBuf) -> (Transaction, Transaction) {
    let funding = Transaction {
        version: Version::TWO,
        lock_time: LockTime::ZERO,
        input: vec![TxIn {
            previous_output: OutPoint { txid: Txid::from_byte_array([0x42; 32]), vout: 3 },
            script_sig: ScriptBuf::new(),
            sequence: Sequence::MAX,
            witness: Witness::new(),
        }],
        output: vec![TxOut { value: Amount::from_sat(PREVOUT_SAT), script_pubkey: script.clone() }],
    };
    let spend = Transaction {
        version: Version::TWO,
        lock_time: LockTime::ZERO,
        input: vec![TxIn {
            previous_output: OutPoint { txid: funding.compute_txid(), vout: 0 },
            script_sig: ScriptBuf::new(),
            sequence: Sequence::ENABLE_RBF_NO_LOCKTIME,
            witness: Witness::new(),
        }],
        output: vec![TxOut {
            value: Amount::from_sat(PREVOUT_SAT - 1_000),
            script_pubkey: ScriptBuf::new_op_return([1u8, 2, 3]),
        }],
    };
    (funding, spend)
}

pub fn input0() -> InputToSign {
    InputToSign { index: 0, prevout_value: Amount::from_sat(PREVOUT_SAT) }
}

/// Verifies `sig` with libsecp256k1 against the key and the sighash, then as a P2WPKH witness
/// spending `funding`'s output with Bitcoin Core's script interpreter.
pub fn verify_spend(key: &VaultKey, funding: &Transaction, spend: &Transaction, sig: &InputSignature) {
    assert_eq!(sig.public_key, key.public_key);
    let der = sig.der_with_sighash();
    assert_eq!(*der.last().unwrap(), 0x01, "SIGHASH_ALL");
    let secp = Secp256k1::verification_only();
    let sighash = tandem_custody::p2wpkh_sighash(spend, 0, Amount::from_sat(PREVOUT_SAT), &key.public_key).unwrap();
    let ecdsa = bitcoin::secp256k1::ecdsa::Signature::from_der(&der[..der.len() - 1]).expect("strict DER");
    let mut normalized = ecdsa;
    normalized.normalize_s();
    assert_eq!(normalized, ecdsa, "low-S");
    secp.verify_ecdsa(&Message::from_digest(sighash), &ecdsa, &key.public_key.0).expect("libsecp256k1 verify");

    let mut signed = spend.clone();
    sig.apply_to_tx(&mut signed, 0).unwrap();
    let prevout = &funding.output[0];
    bitcoinconsensus::verify(
        prevout.script_pubkey.as_bytes(),
        prevout.value.to_sat(),
        &bitcoin::consensus::serialize(&signed),
        None,
        0,
    )
    .expect("consensus script verification");
    tandem_custody::verify_input_consensus(&signed, 0, prevout).expect("library consensus check");

    // The same witness on a changed transaction must not verify.
    let mut tampered = signed.clone();
    tampered.output[0].value = Amount::from_sat(PREVOUT_SAT - 2_000);
    assert!(bitcoinconsensus::verify(
        prevout.script_pubkey.as_bytes(),
        prevout.value.to_sat(),
        &bitcoin::consensus::serialize(&tampered),
        None,
        0,
    )
    .is_err());
    assert!(tandem_custody::verify_input_consensus(&tampered, 0, prevout).is_err());
}

/// Endpoints for a session among `signers`, keyed by role (session indices follow role order).
pub fn signer_endpoints(signers: &[PartyRole]) -> Vec<(PartyRole, tandem_custody::transport::LocalEndpoint)> {
    let mut sorted = signers.to_vec();
    sorted.sort();
    sorted.into_iter().zip(LocalNetwork::session(signers.len() as u16)).collect()
}
