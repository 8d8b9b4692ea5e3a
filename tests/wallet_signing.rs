//! Spending from a vault, end to end: a node with custody (in process, so the test can ask its
//! provider to sign as the settlement service will), a wallet made with the real binary, and
//! `tandem wallet cosign` running as its own process.
//!
//! The provider signs a withdrawal's spend only when the ledger has the withdrawal pending and
//! the spend pays exactly it; the wallet only when its user asked for it from this wallet; each
//! refusal reaches the operator's list. The finished witness is checked by Bitcoin's consensus
//! library. (The spent output is stated in the PSBT, not on a chain yet: the chain comes with
//! settlement.)

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::str::FromStr;
use std::sync::Arc;

use bitcoin::absolute::LockTime;
use bitcoin::transaction::Version;
use bitcoin::{Address, Amount, OutPoint, Psbt, ScriptBuf, Sequence, Transaction, TxIn, TxOut, Txid, Witness};
use common::{ok_json, KillOnDrop};
use serde_json::{json, Value};
use tandem::client::{Auth, Client};
use tandem::provider::{group_of, SignError, VaultService};
use tandem::wallet::cli::Session;
use tandem_custody::{IntentInput, PartyRole, PresignatureStore, SpendIntent, SpendPurpose};
use tandem_matching::{AccountId, Command as EngineCommand};

const TOKEN: &str = "wallet-signing-test-token";
const PASSPHRASE: &str = "signing test passphrase";
/// An outside address to withdraw to (regtest).
const DEST: &str = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080";

fn wallet_cmd(file: &Path) -> Command {
    common::wallet_cmd(file, PASSPHRASE)
}


fn script_of(address: &str) -> ScriptBuf {
    Address::from_str(address).unwrap().require_network(bitcoin::Network::Regtest).unwrap().script_pubkey()
}

/// A spend of one vault output (`prevout`, stated in the PSBT) paying `outputs`.
fn spend(prevout: OutPoint, vault: &ScriptBuf, value: u64, outputs: &[(ScriptBuf, u64)]) -> Psbt {
    let tx = Transaction {
        version: Version::TWO,
        lock_time: LockTime::ZERO,
        input: vec![TxIn {
            previous_output: prevout,
            script_sig: ScriptBuf::new(),
            sequence: Sequence::ENABLE_RBF_NO_LOCKTIME,
            witness: Witness::new(),
        }],
        output: outputs.iter().map(|(s, v)| TxOut { script_pubkey: s.clone(), value: Amount::from_sat(*v) }).collect(),
    };
    let mut psbt = Psbt::from_unsigned_tx(tx).unwrap();
    psbt.inputs[0].witness_utxo = Some(TxOut { script_pubkey: vault.clone(), value: Amount::from_sat(value) });
    psbt
}

async fn refusals(c: &mut Client) -> Vec<Value> {
    let (s, r) = c.send("GET", "/v1/operator/refusals", None, &Auth::Operator(TOKEN.into())).await.unwrap();
    assert_eq!(s, 200, "{r}");
    r["refusals"].as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_provider_and_the_wallet_sign_only_the_withdrawal_the_user_asked_for() {
    let tmp = tempfile::tempdir().unwrap();
    let node = common::custody_node(&tmp.path().join("node"), TOKEN).await;
    let vaults: Arc<VaultService> = node.vaults.clone().expect("custody runs the vault service");
    let url = node.base_url();
    let mut c = Client::connect(&url).await.unwrap();
    let op = Auth::Operator(TOKEN.into());

    // A wallet with a 2-of-2 vault and one address.
    let (s, code) = c.send("POST", "/v1/operator/enrolment-codes", Some(&json!({"label": "t"})), &op).await.unwrap();
    assert_eq!(s, 200, "{code}");
    let file = tmp.path().join("wallet.json");
    let init = ok_json(
        wallet_cmd(&file)
            .args(["init", "--provider", &url, "--enrolment-code", code["code"].as_str().unwrap(), "--json"])
            .output()
            .unwrap(),
    );
    let account = init["account_id"].as_u64().unwrap();
    let made = ok_json(wallet_cmd(&file).args(["address", "--demo-primes", "--json"]).output().unwrap());
    let vault_address = made["address"].as_str().unwrap().to_owned();
    let vault_script = script_of(&vault_address);
    let group = group_of(&node.store.vault(made["group_id"].as_str().unwrap()).await.unwrap().unwrap()).unwrap();
    let input = IntentInput { index: 0, group, key_index: 0 };

    // 0.05 BTC credited (as settlement will, from the chain: the operator cannot credit BTC);
    // the user withdraws 0.01 from the wallet (which notes the request).
    let btc = node.engine_config.asset_by_symbol("BTC").unwrap();
    let credit = EngineCommand::CreditDeposit {
        account: AccountId(account),
        asset: btc,
        amount: tandem_matching::Amount(5_000_000),
        reference: "chain:t-1".into(),
    };
    node.sequencer.submit(credit).await.unwrap();
    let w = ok_json(wallet_cmd(&file).args(["withdraw", "--asset", "BTC", "--amount", "0.01", "--to", DEST, "--json"]).output().unwrap());
    let asked = w["withdrawal"]["withdrawal_id"].as_u64().unwrap();

    let log = std::fs::File::create(tmp.path().join("cosign.log")).unwrap();
    let cosign = KillOnDrop(
        wallet_cmd(&file)
            .args(["cosign", "--presignatures", "2"])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // While idle, the wallet tops up its presignatures with the provider.
    let public_key = {
        let k: tandem_custody::VaultKey =
            vaults.secrets.get(&tandem::provider::key_record(group, 0)).expect("the provider's share of key 0");
        k.public_key
    };
    let stock = || vaults.presignatures.available(&public_key).unwrap().len();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while stock() < 2 {
        assert!(std::time::Instant::now() < deadline, "no presignatures after 60 s; see cosign.log");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    let prevout = OutPoint { txid: Txid::from_str(&"11".repeat(32)).unwrap(), vout: 0 };
    let dest = script_of(DEST);
    let signers = [PartyRole::Wallet, PartyRole::Provider];
    let withdrawal = |id| SpendPurpose::Withdrawal { withdrawal: id };
    let intent = |purpose, psbt: Psbt| SpendIntent::new(purpose, psbt, vec![input], &signers).unwrap();

    // The spend the user asked for: both sign, in one round from a presignature; the witness
    // is valid by consensus rules.
    let good = spend(prevout, &vault_script, 5_000_000, &[(dest.clone(), 1_000_000), (vault_script.clone(), 3_999_000)]);
    let sig = vaults.sign(intent(withdrawal(asked), good.clone())).await.expect("both sign the asked-for withdrawal").remove(0);
    assert_eq!(stock(), 1, "one presignature was used");
    let mut tx = good.unsigned_tx.clone();
    sig.apply_to_tx(&mut tx, 0).unwrap();
    let prev = good.inputs[0].witness_utxo.clone().unwrap();
    tandem_custody::verify_input_consensus(&tx, 0, &prev).expect("the witness verifies under consensus rules");

    // A fee bump of the same spend (it conflicts: same input) is signed too. The wallet lost
    // its presignatures meanwhile (a new device, say): the provider falls back to interactive
    // signing when the wallet says it lacks the one named.
    // The wallet combines after the provider (it sends its partial first): let it finish and
    // say so before it goes.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !std::fs::read_to_string(tmp.path().join("cosign.log")).unwrap_or_default().contains("(one round, presigned)") {
        assert!(std::time::Instant::now() < deadline, "the wallet never reported its signature; see cosign.log");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    drop(cosign);
    std::fs::remove_dir_all(tmp.path().join("wallet.json.presignatures")).unwrap();
    let log = std::fs::File::options().append(true).open(tmp.path().join("cosign.log")).unwrap();
    let _cosign = KillOnDrop(
        wallet_cmd(&file)
            .args(["cosign", "--presignatures", "0"])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let bumped = spend(prevout, &vault_script, 5_000_000, &[(dest.clone(), 1_000_000), (vault_script.clone(), 3_998_000)]);
    let sig = vaults.sign(intent(withdrawal(asked), bumped.clone())).await.expect("a replacement that conflicts is signed").remove(0);
    let mut tx = bumped.unsigned_tx.clone();
    sig.apply_to_tx(&mut tx, 0).unwrap();
    tandem_custody::verify_input_consensus(&tx, 0, &prev).expect("the interactive signature verifies too");
    assert_eq!(stock(), 0, "the provider's half was burned when it tried it");

    // The provider: a spend that pays the withdrawal the wrong amount, and one that pays it a
    // second time from another output (both could confirm), are refused before any session.
    let wrong = spend(prevout, &vault_script, 5_000_000, &[(dest.clone(), 2_000_000), (vault_script.clone(), 2_999_000)]);
    match vaults.sign(intent(withdrawal(asked), wrong)).await {
        Err(SignError::Refused(r)) => assert_eq!(r.code.as_str(), "obligation_unpaid", "{r}"),
        other => panic!("expected the provider's refusal, got {other:?}"),
    }
    let other_prevout = OutPoint { vout: 1, ..prevout };
    let twice = spend(other_prevout, &vault_script, 5_000_000, &[(dest.clone(), 1_000_000), (vault_script.clone(), 3_999_000)]);
    match vaults.sign(intent(withdrawal(asked), twice)).await {
        Err(SignError::Refused(r)) => assert_eq!(r.code.as_str(), "double_pay", "{r}"),
        other => panic!("expected a double-pay refusal, got {other:?}"),
    }

    // The wallet: a withdrawal its user never asked for from this wallet (requested with the
    // device key directly, as a thief with the provider's API would) is refused by the wallet;
    // the provider, whose ledger backs it, records the wallet's refusal.
    let pass_file = tmp.path().join("passphrase");
    std::fs::write(&pass_file, PASSPHRASE).unwrap();
    let session = Session::open(&file, Some(&pass_file)).unwrap();
    let mut dc = Client::connect(&url).await.unwrap();
    let body = json!({"asset": "BTC", "amount": "0.02", "destination": DEST});
    let (s, r) = dc.send("POST", "/v1/withdrawals", Some(&body), session.auth()).await.unwrap();
    assert_eq!(s, 200, "{r}");
    let unasked = r["withdrawal"]["withdrawal_id"].as_u64().unwrap();
    let prevout3 = OutPoint { vout: 3, ..prevout };
    let theft = spend(prevout3, &vault_script, 5_000_000, &[(dest.clone(), 2_000_000), (vault_script.clone(), 2_999_000)]);
    match vaults.sign(intent(withdrawal(unasked), theft)).await {
        Err(SignError::PartnerRefused { signer, code, detail }) => {
            assert_eq!((signer.as_str(), code.as_str()), ("wallet", "obligation_unpaid"), "{detail}");
        }
        other => panic!("expected the wallet's refusal, got {other:?}"),
    }

    let listed = refusals(&mut Client::connect(&url).await.unwrap()).await;
    let codes: Vec<(&str, &str)> =
        listed.iter().map(|r| (r["signer"].as_str().unwrap(), r["code"].as_str().unwrap())).collect();
    assert_eq!(codes, vec![("wallet", "obligation_unpaid"), ("provider", "double_pay"), ("provider", "obligation_unpaid")]);
    assert!(listed.iter().all(|r| r["account_id"] == account), "{listed:?}");
    assert_eq!(listed[0]["purpose"], json!({"withdrawal": {"withdrawal": unasked}}));

    // What the wallet did, in its own words.
    let said = std::fs::read_to_string(tmp.path().join("cosign.log")).unwrap();
    assert!(said.contains("(one round, presigned)"), "{said}");
    assert!(said.contains("no presignature"), "{said}");
    assert!(said.contains("refused (obligation_unpaid)"), "{said}");

    node.shutdown().await.unwrap();
}
