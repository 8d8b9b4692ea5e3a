//! The provider's vault service in process (a node with custody in its demo configuration):
//! it joins sessions that name it only after its checks, and aborts the others with the
//! reason. (The happy path, a wallet making its vault and addresses, is `wallet_vault.rs`.)

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tandem::client::{Auth, Client};
use tandem::mpc_link::{open_session_http, open_session_in_process};
use tandem::wallet::device::DeviceKey;
use tandem_custody::{ExecutionId, PartyRole, ProtocolKind, SessionMember};
use tandem_gateway::relay::Eid;
use tandem_gateway::Relay;

const TOKEN: &str = "provider-vault-test-token";

/// Waits for the session to end; its reason.
async fn ended(relay: &Relay, me: &bitcoin::secp256k1::XOnlyPublicKey, eid: ExecutionId) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v = relay.session(me, Eid(eid.0)).unwrap();
        if let Some(reason) = v.ended {
            return reason;
        }
        assert!(Instant::now() < deadline, "the provider did not abort the session");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_provider_refuses_sessions_that_fail_its_checks() {
    let tmp = tempfile::tempdir().unwrap();
    let node = common::custody_node(tmp.path(), TOKEN).await;
    let provider = node.provider_identity.unwrap().x_only_public_key().0;
    let mut c = Client::connect(&node.base_url()).await.unwrap();
    let (s, r) = c.send("GET", "/v1/mpc/provider", None, &Auth::None).await.unwrap();
    assert_eq!((s, r["demo"].as_bool()), (200, Some(true)), "{r}");

    // An enrolled wallet.
    let wallet = Arc::new(DeviceKey::generate());
    let op = Auth::Operator(TOKEN.into());
    let (s, r) = c.send("POST", "/v1/operator/enrolment-codes", Some(&json!({"label": "t"})), &op).await.unwrap();
    assert_eq!(s, 200, "{r}");
    let body = json!({"device_pubkey": wallet.pubkey_hex(), "label": "phone", "enrolment_code": r["code"]});
    let (s, r) = c.send("POST", "/v1/wallet/enrol", Some(&body), &Auth::Device(wallet.clone())).await.unwrap();
    assert_eq!(s, 200, "{r}");

    let members = |w: &DeviceKey| {
        vec![
            SessionMember::new(PartyRole::Wallet, w.keypair().x_only_public_key().0),
            SessionMember::new(PartyRole::Provider, provider),
        ]
    };

    // A wallet that is not enrolled (the session opened in process: HTTP would refuse it first).
    let stranger = DeviceKey::generate();
    let eid = ExecutionId::random();
    open_session_in_process(&node.relay, &provider, eid, ProtocolKind::AuxInfo, &members(&stranger), None).unwrap();
    let reason = ended(&node.relay, &provider, eid).await;
    assert!(reason.contains("not an enrolled device key"), "{reason}");

    // Keygen before the wallet has a vault.
    let eid = ExecutionId::random();
    let mut c = Client::connect(&node.base_url()).await.unwrap();
    open_session_http(&mut c, &Auth::Device(wallet.clone()), eid, ProtocolKind::Keygen, &members(&wallet), None)
        .await
        .unwrap();
    let reason = ended(&node.relay, &provider, eid).await;
    assert!(reason.contains("no vault"), "{reason}");

    // Nothing was registered.
    let (s, r) = c.send("GET", "/v1/vaults", None, &Auth::Device(wallet.clone())).await.unwrap();
    assert_eq!((s, r["vaults"].as_array().map(Vec::len)), (200, Some(0)), "{r}");
    node.shutdown().await.unwrap();
}

/// The pool's own coins are signed only into a settlement batch the ledger booked, from the
/// named account's pool address, over the custody API as in process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_provider_signs_pool_inputs_only_for_booked_batches() {
    use bitcoin::{absolute::LockTime, transaction::Version, Amount, OutPoint, Psbt, Sequence, Transaction, TxIn, TxOut, Witness};
    use tandem::provider::SignError;
    use tandem_custody::policy::RefusalCode;
    use tandem_custody::SpendPurpose;
    use tandem_matching::AccountId;

    let tmp = tempfile::tempdir().unwrap();
    let node = common::custody_node(tmp.path(), TOKEN).await;
    let vaults = node.vaults.clone().unwrap();
    let from = vaults.pool.deposit_script(AccountId(5)).unwrap();
    let tx = Transaction {
        version: Version::TWO,
        lock_time: LockTime::ZERO,
        input: vec![TxIn { previous_output: OutPoint::null(), script_sig: Default::default(), sequence: Sequence::MAX, witness: Witness::new() }],
        output: vec![TxOut { value: Amount::from_sat(90_000), script_pubkey: from.clone() }],
    };
    let mut psbt = Psbt::from_unsigned_tx(tx).unwrap();
    psbt.inputs[0].witness_utxo = Some(TxOut { value: Amount::from_sat(100_000), script_pubkey: from });
    let batch = SpendPurpose::SettlementBatch { batch: 99 };
    let custodians: [Box<dyn tandem::custodian::Custodian>; 2] = [
        Box::new(tandem::custodian::InProcess(vaults.clone())),
        Box::new(tandem::custodian::http::HttpCustodian::connect(&node.base_url(), TOKEN, bitcoin::Network::Regtest).await.unwrap()),
    ];
    for custodian in &custodians {
        let refused = |r: Result<Witness, SignError>| match r {
            Err(SignError::Refused(r)) => r.code,
            other => panic!("not refused: {other:?}"),
        };
        let withdrawal = SpendPurpose::Withdrawal { withdrawal: 1 };
        assert_eq!(refused(custodian.sign_pool_input(withdrawal, &psbt, 0, AccountId(5)).await), RefusalCode::WrongPurpose);
        assert_eq!(refused(custodian.sign_pool_input(batch, &psbt, 0, AccountId(6)).await), RefusalCode::ForeignInput, "another account's address");
        assert_eq!(refused(custodian.sign_pool_input(batch, &psbt, 0, AccountId(5)).await), RefusalCode::ObligationUnpaid, "no such batch booked");
        assert_eq!(refused(custodian.sign_pool_input(batch, &psbt, 1, AccountId(5)).await), RefusalCode::MissingInputValue);
    }
    let (s, _) = Client::connect(&node.base_url())
        .await
        .unwrap()
        .send("GET", "/v1/custody/pool", None, &Auth::Operator("wrong".into()))
        .await
        .unwrap();
    assert_eq!(s, 401, "custody's API is the operator's");
    node.shutdown().await.unwrap();
}
