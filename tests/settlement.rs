//! Settlement end to end, on the embedded devnet and on a real regtest bitcoind: wallets make
//! vaults by DKG (the real binary), receive chain deposits, trade through the API, one withdraws
//! to an outside address; the settlement service nets the window into one batch, the seller's
//! wallet (`tandem wallet cosign`, its own process) and the provider sign it with MPC, the chain
//! accepts and confirms it, and the ledger and the chain agree to the satoshi: in total, for every
//! holder, and for each wallet's vault against its own balance.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bitcoin::{Address, Amount, Network, ScriptBuf};
use common::{btc_total, wait_for, ok_json, KillOnDrop};
use serde_json::{json, Value};
use tandem::client::{Auth, Client};
use tandem::deposits::DepositService;
use tandem::settlement::{CrashPoint, SettlementConfig, SettlementService};
use tandem_matching::SETTLEMENT_POOL;
use tandem_settlement::deposits::DepositPolicy;
use tandem_settlement::{Bitcoind, Chain, Devnet, DevnetConfig, RegtestNode};

const TOKEN: &str = "settlement-test-token";
const PASSPHRASE: &str = "settlement test passphrase";
/// An outside address (regtest).
const DEST: &str = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080";

enum TestChain {
    Devnet(Arc<Devnet>),
    Bitcoind(#[allow(dead_code)] RegtestNode, Arc<Bitcoind>),
}

impl TestChain {
    fn chain(&self) -> Arc<dyn Chain> {
        match self {
            TestChain::Devnet(d) => d.clone(),
            TestChain::Bitcoind(_, b) => b.clone(),
        }
    }

    async fn mine(&self, blocks: u32) {
        match self {
            TestChain::Devnet(d) => {
                d.mine(blocks, None).unwrap();
            }
            TestChain::Bitcoind(_, b) => {
                let burn = ScriptBuf::new_p2wsh(&bitcoin::WScriptHash::from_byte_array([7; 32]));
                b.generate_to(&burn, blocks).await.unwrap();
            }
        }
    }

    /// Pays `script` from outside (devnet faucet: `sats`; bitcoind: a 50 BTC coinbase, matured).
    async fn fund(&self, script: &ScriptBuf, sats: u64) {
        match self {
            TestChain::Devnet(d) => {
                d.faucet(script, Amount::from_sat(sats)).unwrap();
            }
            TestChain::Bitcoind(_, b) => {
                b.generate_to(script, 1).await.unwrap();
                self.mine(100).await;
            }
        }
    }
}

use bitcoin::hashes::Hash as _;

struct Wallet {
    file: std::path::PathBuf,
    account: u64,
    vault: ScriptBuf,
}

impl Wallet {
    fn cmd(&self, args: &[&str]) -> Value {
        ok_json(common::wallet_cmd(&self.file, PASSPHRASE).args(args).arg("--json").output().unwrap())
    }
}

async fn make_wallet(dir: &Path, name: &str, url: &str, c: &mut Client, cosigner: bool) -> Wallet {
    let (s, code) = c.send("POST", "/v1/operator/enrolment-codes", Some(&json!({"label": name})), &Auth::Operator(TOKEN.into())).await.unwrap();
    assert_eq!(s, 200, "{code}");
    let file = dir.join(format!("{name}.wallet"));
    let w = Wallet { file, account: 0, vault: ScriptBuf::new() };
    let init = w.cmd(&["init", "--provider", url, "--enrolment-code", code["code"].as_str().unwrap()]);
    let made = if cosigner { w.cmd(&["address", "--demo-primes"]) } else { w.cmd(&["address", "--demo-primes", "--no-cosigner"]) };
    assert_eq!(made["policy"], if cosigner { "2-of-3" } else { "2-of-2" }, "{made}");
    let vault = Address::from_str(made["address"].as_str().unwrap()).unwrap().require_network(Network::Regtest).unwrap();
    Wallet { account: init["account_id"].as_u64().unwrap(), vault: vault.script_pubkey(), ..w }
}

/// An independent co-signer (`tandem cosigner run`, its own process), registered with the node.
fn start_cosigner(dir: &Path, url: &str, settlement_deadline_secs: u64) -> (KillOnDrop, String) {
    let cdir = dir.join("cosigner");
    let ckey = dir.join("cosigner-master-key.hex");
    let ok = |o: std::process::Output| assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    ok(std::process::Command::new(common::BIN).args(["custody", "new-master-key", "--out"]).arg(&ckey).output().unwrap());
    let init = std::process::Command::new(common::BIN)
        .args(["cosigner", "init", "--data-dir"])
        .arg(&cdir)
        .arg("--master-key-file")
        .arg(&ckey)
        .output()
        .unwrap();
    ok(init.clone());
    let identity = String::from_utf8(init.stdout).unwrap().trim().to_owned();
    let log = std::fs::File::create(dir.join("cosigner.log")).unwrap();
    let process = KillOnDrop(
        std::process::Command::new(common::BIN)
            .args(["cosigner", "run", "--data-dir"])
            .arg(&cdir)
            .arg("--master-key-file")
            .arg(&ckey)
            .args(["--provider", url, "--demo-primes"])
            .args(["--settlement-deadline-secs", &settlement_deadline_secs.to_string()])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    );
    (process, identity)
}


async fn operator(c: &mut Client, path: &str) -> Value {
    let (s, v) = c.send("GET", path, None, &Auth::Operator(TOKEN.into())).await.unwrap();
    assert_eq!(s, 200, "{path}: {v}");
    v
}

async fn chain_balance(chain: &dyn Chain, script: &ScriptBuf) -> i64 {
    chain.utxos(std::slice::from_ref(script)).await.unwrap().iter().map(|u| u.txout.value.to_sat() as i64).sum()
}

/// A node with custody on `chain`, its deposit service, two wallets (carol funded from outside,
/// dave with USD), the pool funded, and carol's signer running.
struct World {
    node: tandem::node::Node,
    chain: TestChain,
    url: String,
    c: Client,
    carol: Wallet,
    dave: Wallet,
    carol_deposit: i64,
    deposits: tokio::task::JoinHandle<()>,
    _processes: Vec<KillOnDrop>,
    tmp: tempfile::TempDir,
}

/// How the world is made.
struct Options {
    /// Carol's vault is 2-of-3 with an independent co-signer (whose process runs), else 2-of-2.
    carol_cosigned: bool,
    /// Carol's wallet signer (`tandem wallet cosign`) runs: she is online.
    carol_online: bool,
    pool_sat: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options { carol_cosigned: false, carol_online: true, pool_sat: 1_000_000 }
    }
}

async fn world(test_chain: TestChain) -> World {
    world_with(test_chain, Options::default()).await
}

async fn world_with(test_chain: TestChain, opts: Options) -> World {
    let tmp = tempfile::tempdir().unwrap();
    let node = common::custody_node(&tmp.path().join("node"), TOKEN).await;
    let vaults = node.vaults.clone().unwrap();
    let url = node.base_url();
    let mut c = Client::connect(&url).await.unwrap();
    let policy = DepositPolicy { confirmations: 1 };
    let deposits =
        DepositService { interval: Duration::from_millis(200), ..DepositService::for_node(&node, test_chain.chain(), policy).unwrap() }
            .spawn();

    let mut processes = Vec::new();
    if opts.carol_cosigned {
        let (cosigner, identity) = start_cosigner(tmp.path(), &url, 1);
        let body = json!({"identity_pubkey": identity, "label": "independent co-signer"});
        let (s, r) = c.send("POST", "/v1/operator/cosigners", Some(&body), &Auth::Operator(TOKEN.into())).await.unwrap();
        assert_eq!(s, 200, "{r}");
        processes.push(cosigner);
    }
    let carol = make_wallet(tmp.path(), "carol", &url, &mut c, opts.carol_cosigned).await;
    let dave = make_wallet(tmp.path(), "dave", &url, &mut c, false).await;
    test_chain.fund(&carol.vault, 50_000_000).await;
    test_chain.fund(&vaults.pool.deposit_script(SETTLEMENT_POOL).unwrap(), opts.pool_sat).await;
    test_chain.mine(1).await;
    let carol_deposit = wait_for("carol's deposit", 30, async || {
        let t = btc_total(&mut c, carol.account, TOKEN).await;
        (t > 0).then_some(t)
    })
    .await;
    wait_for("the pool's deposit", 30, async || (btc_total(&mut c, SETTLEMENT_POOL.0, TOKEN).await > 0).then_some(())).await;
    let usd = json!({"account_id": dave.account, "asset": "USD", "amount": "100000.00", "reference": "wire-dave"});
    let (s, r) = c.send("POST", "/v1/operator/deposits", Some(&usd), &Auth::Operator(TOKEN.into())).await.unwrap();
    assert_eq!(s, 200, "{r}");
    if opts.carol_online {
        let cosign_log = std::fs::File::create(tmp.path().join("carol-cosign.log")).unwrap();
        processes.push(KillOnDrop(
            common::wallet_cmd(&carol.file, PASSPHRASE)
                .args(["cosign"])
                .stdout(cosign_log.try_clone().unwrap())
                .stderr(cosign_log)
                .stdin(Stdio::null())
                .spawn()
                .unwrap(),
        ));
    }
    World { node, chain: test_chain, url, c, carol, dave, carol_deposit, deposits, _processes: processes, tmp }
}

impl World {
    fn settlement(&self) -> Arc<SettlementService> {
        self.settlement_on(self.chain.chain(), SettlementConfig::default())
    }

    /// A settlement service on `chain` with test windows and ticks, else as `config`.
    fn settlement_on(&self, chain: Arc<dyn Chain>, config: SettlementConfig) -> Arc<SettlementService> {
        let config = SettlementConfig { window: Duration::from_secs(2), confirmations: 1, tick: Duration::from_millis(200), ..config };
        SettlementService::for_node(&self.node, chain, config).unwrap()
    }

    /// Carol sells 0.1 BTC to dave and withdraws 0.05 BTC to an outside address.
    fn trade_and_withdraw(&self) {
        self.carol.cmd(&["order", "--market", "BTC-USD", "--side", "sell", "--price", "60000", "--quantity", "0.1"]);
        let bought = self.dave.cmd(&["order", "--market", "BTC-USD", "--side", "buy", "--price", "60000", "--quantity", "0.1"]);
        assert_eq!(bought["order"]["status"], "filled", "{bought}");
        self.carol.cmd(&["withdraw", "--asset", "BTC", "--amount", "0.05", "--to", DEST]);
    }

    async fn newest_batch(&mut self) -> Option<Value> {
        let b = operator(&mut self.c, "/v1/operator/batches").await;
        b["batches"].as_array().unwrap().first().cloned()
    }

    /// After the batch confirmed: the outside address got exactly 0.05 BTC, every vault holds
    /// exactly what its account owns, nothing is left to settle, reconciliation agrees.
    async fn check_settled(&mut self) {
        let chain = self.chain.chain();
        let dest = Address::from_str(DEST).unwrap().require_network(Network::Regtest).unwrap().script_pubkey();
        assert_eq!(chain_balance(&*chain, &dest).await, 5_000_000, "paid exactly once");
        let carol_ledger = btc_total(&mut self.c, self.carol.account, TOKEN).await;
        let dave_ledger = btc_total(&mut self.c, self.dave.account, TOKEN).await;
        assert_eq!(chain_balance(&*chain, &self.carol.vault).await, carol_ledger, "carol");
        assert_eq!(chain_balance(&*chain, &self.dave.vault).await, dave_ledger, "dave");
        assert!(dave_ledger > 9_900_000 && dave_ledger < 10_000_000, "dave got 0.1 BTC less his fees: {dave_ledger}");
        assert!(carol_ledger < self.carol_deposit - 15_000_000, "carol paid 0.15 BTC plus her fee share: {carol_ledger}");
        let pending = self.node.sequencer.read(|e| e.pending_withdrawals().len()).await.unwrap();
        assert_eq!(pending, 0, "the confirmed batch completed the withdrawal");
        let report = operator(&mut self.c, "/v1/operator/reconciliation").await;
        assert_eq!(report["balanced"], true, "{report}");
        assert_eq!(report["ledger_owes_sat"], report["chain_holds_sat"], "{report}");
        let exposure: Vec<_> = report["accounts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["exposure_sat"].as_i64().is_some_and(|e| e != 0))
            .collect();
        assert!(exposure.is_empty(), "nothing left to settle: {exposure:?}");
    }
}

async fn scenario(test_chain: TestChain) {
    let mut w = world(test_chain).await;
    let settlement_task = w.settlement().spawn(&w.node.reconciler);
    w.trade_and_withdraw();

    // The window closes: one batch, signed by carol's wallet with the provider, broadcast.
    let batch = wait_for("a broadcast batch", 90, async || w.newest_batch().await.filter(|b| b["status"] == "broadcast")).await;
    assert_eq!(batch["batch"], 1, "{batch}");
    let inputs = batch["inputs"].as_array().unwrap();
    assert_eq!(inputs.len(), 1, "one input (carol's coin) pays for everything: {batch}");
    assert_eq!(inputs[0]["holder"], w.carol.account);
    // Before the chain confirms, the ledger still counts carol's coin as hers: balanced.
    let before = operator(&mut w.c, "/v1/operator/reconciliation").await;
    assert_eq!(before["balanced"], true, "{before}");

    w.chain.mine(1).await;
    let confirmed = wait_for("the batch confirmed", 30, async || w.newest_batch().await.filter(|b| b["status"] == "confirmed")).await;
    let txid: bitcoin::Txid = confirmed["txid"].as_str().unwrap().parse().unwrap();
    assert!(matches!(w.chain.chain().transaction_status(&txid).await.unwrap(), tandem_settlement::TxStatus::Confirmed { .. }));
    w.check_settled().await;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tandem"))
        .args(["reconcile", "--url", &w.url, "--operator-token", TOKEN])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    settlement_task.abort();
    w.deposits.abort();
    w.node.shutdown().await.unwrap();
}

/// The service stopped right after each durable write of a batch's life in turn (a crash
/// there), then a fresh one started: every window is still paid exactly once, every batch
/// confirmed once, and ledger and chain agree after each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_each_durable_write_resumes_and_pays_once() {
    let devnet = Devnet::new(DevnetConfig::default()).unwrap();
    let mut w = world(TestChain::Devnet(devnet.clone())).await;
    let chain = w.chain.chain();
    let dest = Address::from_str(DEST).unwrap().require_network(Network::Regtest).unwrap().script_pubkey();
    for (round, point) in CrashPoint::ALL.into_iter().enumerate() {
        w.carol.cmd(&["order", "--market", "BTC-USD", "--side", "sell", "--price", "60000", "--quantity", "0.01"]);
        let bought = w.dave.cmd(&["order", "--market", "BTC-USD", "--side", "buy", "--price", "60000", "--quantity", "0.01"]);
        assert_eq!(bought["order"]["status"], "filled", "{bought}");
        w.carol.cmd(&["withdraw", "--asset", "BTC", "--amount", "0.001", "--to", DEST]);

        let crashing = w.settlement_on(chain.clone(), SettlementConfig { crash_at: Some(point), ..SettlementConfig::default() });
        let task = crashing.spawn(&w.node.reconciler);
        // The chain goes on meanwhile: a sent batch gets mined.
        wait_for(&format!("the service to stop at {point:?}"), 60, async || {
            if w.newest_batch().await.is_some_and(|b| b["status"] == "broadcast") {
                devnet.mine(1, None).unwrap();
            }
            task.is_finished().then_some(())
        })
        .await;

        let task = w.settlement().spawn(&w.node.reconciler);
        wait_for(&format!("round {round} ({point:?}) settled"), 60, async || {
            let newest = w.newest_batch().await?;
            if newest["status"] == "broadcast" {
                devnet.mine(1, None).unwrap();
            }
            let pending = w.node.sequencer.read(|e| e.pending_withdrawals().len()).await.unwrap();
            (newest["status"] == "confirmed" && pending == 0).then_some(())
        })
        .await;
        task.abort();
        let _ = task.await;

        assert_eq!(chain_balance(&*chain, &dest).await, 100_000 * (round as i64 + 1), "{point:?}: each withdrawal paid once");
        let batches = operator(&mut w.c, "/v1/operator/batches").await;
        let confirmed = batches["batches"].as_array().unwrap().iter().filter(|b| b["status"] == "confirmed").count();
        assert_eq!(confirmed, round + 1, "{point:?}: one batch per window: {batches}");
        let report = operator(&mut w.c, "/v1/operator/reconciliation").await;
        assert_eq!(report["balanced"], true, "{point:?}: {report}");
    }
    w.deposits.abort();
    w.node.shutdown().await.unwrap();
}

/// The settlement service is killed at random points again and again (an aborted task stops at
/// whichever await it was in: between any two durable writes, mid-signing, mid-broadcast), and a
/// fresh one resumes from the store each time; blocks are mined meanwhile, and one reorg puts
/// the broadcast batch back out of the chain. The batch is still paid exactly once, and ledger
/// and chain agree.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_survives_crashes_at_any_point_and_pays_once() {
    use rand::{Rng, SeedableRng};
    let devnet = Devnet::new(DevnetConfig::default()).unwrap();
    let mut w = world(TestChain::Devnet(devnet.clone())).await;
    w.trade_and_withdraw();
    let mut rng = rand::rngs::StdRng::seed_from_u64(4);
    let deadline = Instant::now() + Duration::from_secs(180);
    // A batch may miss its signing deadline while the service keeps dying: carol is then late,
    // and sits out only briefly here, so the next batch pays (still exactly once).
    let config = SettlementConfig { late_penalty: Duration::from_secs(2), ..SettlementConfig::default() };
    let (mut restarts, mut reorged) = (0, false);
    let mut seen = Vec::new();
    loop {
        let task = w.settlement_on(w.chain.chain(), config.clone()).spawn(&w.node.reconciler);
        // Mostly short lives, so crashes land in every state; now and then a long enough one
        // for an MPC signature (about a second without a presignature) to finish.
        let life = if restarts % 3 == 2 { rng.gen_range(1_000..4_000) } else { rng.gen_range(20..600) };
        tokio::time::sleep(Duration::from_millis(life)).await;
        task.abort();
        let _ = task.await;
        restarts += 1;
        let newest = w.newest_batch().await;
        let status = newest.as_ref().map(|b| b["status"].as_str().unwrap().to_owned());
        seen.push(status.clone().unwrap_or_default());
        match status.as_deref() {
            Some("confirmed") => break,
            Some("broadcast") if !reorged => {
                // Into a block, then that block reorged away with the batch in it: the batch is
                // neither confirmed nor in the mempool, and the service must send it again.
                let txid: bitcoin::Txid = newest.as_ref().unwrap()["txid"].as_str().unwrap().parse().unwrap();
                devnet.mine(1, None).unwrap();
                devnet.reorg_dropping(1, &[txid], 2).unwrap();
                reorged = true;
            }
            Some("broadcast") => {
                devnet.mine(1, None).unwrap();
            }
            _ => {}
        }
        if Instant::now() >= deadline {
            let log = std::fs::read_to_string(w.tmp.path().join("carol-cosign.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            panic!("no confirmed batch after {restarts} restarts: {seen:?}\ncarol's signer, last lines first:\n{}", tail.join("\n"));
        }
    }
    assert!(reorged, "the batch went through a reorg: {seen:?}");
    assert!(restarts >= 4, "the service was killed in several states: {seen:?}");
    let batches = operator(&mut w.c, "/v1/operator/batches").await;
    let live: Vec<_> = batches["batches"].as_array().unwrap().iter().filter(|b| b["status"] != "cancelled").collect();
    assert_eq!(live.len(), 1, "one batch paid it all: {batches}");
    assert_eq!(live[0]["versions"].as_array().unwrap().len(), 1, "one transaction, sent again after the reorg: {batches}");
    w.check_settled().await;
    w.deposits.abort();
    w.node.shutdown().await.unwrap();
}

/// A batch stuck by a fee spike after it was sent: the service books a bump paid by the pool,
/// carol's wallet and the provider sign the new version (her leg is unchanged), it replaces the
/// first in the mempool and confirms. Both versions spend the same inputs: paid once.
/// `spike` raises the fee market and answers the chain the (restarted) service then watches.
async fn bump_scenario(test_chain: TestChain, spike: impl AsyncFnOnce(&TestChain) -> Arc<dyn Chain>) {
    let mut w = world(test_chain).await;
    let bump_soon = SettlementConfig { bump_after: Duration::from_secs(1), ..SettlementConfig::default() };
    let first = w.settlement_on(w.chain.chain(), bump_soon.clone()).spawn(&w.node.reconciler);
    w.trade_and_withdraw();
    let sent = wait_for("a broadcast batch", 90, async || w.newest_batch().await.filter(|b| b["status"] == "broadcast")).await;
    let first_fee = sent["versions"][0]["fee_sat"].as_u64().unwrap();
    first.abort();
    let _ = first.await;

    let chain = spike(&w.chain).await;
    let task = w.settlement_on(chain, bump_soon).spawn(&w.node.reconciler);
    let bumped = wait_for("a bumped version", 90, async || {
        w.newest_batch().await.filter(|b| b["versions"].as_array().is_some_and(|v| v.len() == 2))
    })
    .await;
    let versions = bumped["versions"].as_array().unwrap();
    let bumped_fee = versions[1]["fee_sat"].as_u64().unwrap();
    assert!(bumped_fee > first_fee, "the new version pays more: {bumped}");
    let replaced: bitcoin::Txid = versions[0]["txid"].as_str().unwrap().parse().unwrap();
    let replacement: bitcoin::Txid = versions[1]["txid"].as_str().unwrap().parse().unwrap();
    let chain = w.chain.chain();
    wait_for("the replacement in the mempool", 30, async || {
        matches!(chain.transaction_status(&replacement).await.unwrap(), tandem_settlement::TxStatus::InMempool).then_some(())
    })
    .await;
    assert_eq!(chain.transaction_status(&replaced).await.unwrap(), tandem_settlement::TxStatus::Unknown, "replaced");

    w.chain.mine(1).await;
    let confirmed = wait_for("the batch confirmed", 30, async || w.newest_batch().await.filter(|b| b["status"] == "confirmed")).await;
    assert_eq!(confirmed["confirmed_version"], 1, "{confirmed}");
    assert_eq!(confirmed["txid"], versions[1]["txid"], "{confirmed}");
    w.check_settled().await;
    let fees = operator(&mut w.c, "/v1/operator/reconciliation").await["fees_paid_sat"].as_u64().unwrap();
    assert_eq!(fees, bumped_fee, "the ledger paid the fee of the version that confirmed, bump included");
    task.abort();
    w.deposits.abort();
    w.node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_batch_is_replaced_by_fee_on_the_devnet() {
    bump_scenario(TestChain::Devnet(Devnet::new(DevnetConfig::default()).unwrap()), async |c| {
        let TestChain::Devnet(devnet) = c else { unreachable!() };
        // The rest of the network outbids the batch: a block comes and leaves it out.
        devnet.set_outside_demand(Some(bitcoin::FeeRate::from_sat_per_vb_u32(10)));
        c.mine(1).await;
        c.chain()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_batch_is_replaced_by_fee_on_bitcoind() {
    let node = RegtestNode::start(false).await.unwrap_or_else(|e| panic!("{e}"));
    let rpc = Arc::new(node.client().await.unwrap());
    bump_scenario(TestChain::Bitcoind(node, rpc), async |c| {
        // Regtest has no fee estimates: the adapter answers its configured rate, now higher,
        // and bitcoind itself judges the replacement (BIP-125).
        let TestChain::Bitcoind(node, _) = c else { unreachable!() };
        let mut config = node.config();
        config.fallback_fee_rate = bitcoin::FeeRate::from_sat_per_vb_u32(25);
        Arc::new(tandem_settlement::Bitcoind::connect(config).await.unwrap()) as Arc<dyn Chain>
    })
    .await;
}

/// Carol (2-of-3 vault with an independent co-signer) sells 0.1 BTC to dave, then her wallet is
/// offline: the batch misses its signing deadline and is cancelled; the next pays dave from the
/// pool while carol's debt stays as exposure; once she has been late long enough, the provider
/// and her co-signer force her debt to the pool, the co-signer having checked her own signed
/// sell order first. Ledger and chain agree to the satoshi, and carol owes nothing.
async fn late_seller_scenario(test_chain: TestChain) {
    let opts = Options { carol_cosigned: true, carol_online: false, pool_sat: 50_000_000 };
    let mut w = world_with(test_chain, opts).await;
    let config = SettlementConfig {
        // Long enough for interactive signing with the co-signer while other tests share the
        // cores: a forced settlement that misses it is not tried again for `late_penalty`.
        signing_deadline: Duration::from_secs(10),
        late_penalty: Duration::from_secs(600),
        force_after: Duration::from_secs(1),
        ..SettlementConfig::default()
    };
    let task = w.settlement_on(w.chain.chain(), config).spawn(&w.node.reconciler);
    w.carol.cmd(&["order", "--market", "BTC-USD", "--side", "sell", "--price", "60000", "--quantity", "0.1"]);
    let bought = w.dave.cmd(&["order", "--market", "BTC-USD", "--side", "buy", "--price", "60000", "--quantity", "0.1"]);
    assert_eq!(bought["order"]["status"], "filled", "{bought}");

    // Batch 1 waits for carol's wallet, in vain.
    let missed = wait_for("the first batch cancelled", 60, async || {
        let b = operator(&mut w.c, "/v1/operator/batches?status=cancelled").await;
        b["batches"].as_array().unwrap().first().cloned()
    })
    .await;
    assert!(missed["legs"].as_array().unwrap().iter().any(|l| l["holder"] == w.carol.account), "{missed}");

    // Then the pool pays dave; carol's debt stays with her as exposure.
    let fronted = wait_for("the batch without carol", 60, async || w.newest_batch().await.filter(|b| b["status"] == "broadcast")).await;
    assert!(fronted["legs"].as_array().unwrap().iter().all(|l| l["holder"] != w.carol.account), "{fronted}");
    w.chain.mine(1).await;
    let id = fronted["batch"].as_u64().unwrap();
    wait_for("the pool's batch confirmed", 30, async || {
        w.newest_batch().await.filter(|b| b["batch"].as_u64() > Some(id) || b["status"] == "confirmed").map(|_| ())
    })
    .await;
    let report = operator(&mut w.c, "/v1/operator/reconciliation").await;
    assert_eq!(report["balanced"], true, "{report}");

    // Carol is late long enough: her debt is forced with her co-signer, from her vault alone.
    let forced = wait_for("the forced settlement broadcast", 90, async || {
        w.newest_batch().await.filter(|b| b["batch"].as_u64() > Some(id) && b["status"] == "broadcast")
    })
    .await;
    let inputs = forced["inputs"].as_array().unwrap();
    assert!(inputs.iter().all(|i| i["holder"] == w.carol.account), "only carol's vault pays: {forced}");
    w.chain.mine(1).await;
    let id = forced["batch"].as_u64().unwrap();
    wait_for("the forced settlement confirmed", 30, async || {
        operator(&mut w.c, "/v1/operator/batches?status=confirmed").await["batches"]
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b["batch"].as_u64() == Some(id))
            .then_some(())
    })
    .await;

    let chain = w.chain.chain();
    let carol_ledger = btc_total(&mut w.c, w.carol.account, TOKEN).await;
    let dave_ledger = btc_total(&mut w.c, w.dave.account, TOKEN).await;
    assert_eq!(chain_balance(&*chain, &w.carol.vault).await, carol_ledger, "carol (one address: her change comes back to it)");
    assert_eq!(chain_balance(&*chain, &w.dave.vault).await, dave_ledger, "dave");
    assert!(carol_ledger < w.carol_deposit - 10_000_000, "carol paid 0.1 BTC and her fee share: {carol_ledger}");
    let report = operator(&mut w.c, "/v1/operator/reconciliation").await;
    assert_eq!(report["balanced"], true, "{report}");
    let carol_exposure = report["accounts"].as_array().unwrap().iter().find(|a| a["account"] == w.carol.account).unwrap().clone();
    assert_eq!(carol_exposure["exposure_sat"], 0, "carol owes nothing now: {report}");
    // The co-signer wrote down the window it force-settled.
    let index: Value = serde_json::from_slice(&std::fs::read(w.tmp.path().join("cosigner/vaults.json")).unwrap()).unwrap();
    assert_eq!(index["vaults"][0]["forced"][0]["batch"], id, "{index}");
    task.abort();
    w.deposits.abort();
    w.node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_sellers_debt_is_fronted_by_the_pool_then_forced_with_the_cosigner() {
    late_seller_scenario(TestChain::Devnet(Devnet::new(DevnetConfig::default()).unwrap())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_sellers_debt_is_forced_with_the_cosigner_on_bitcoind() {
    let node = RegtestNode::start(false).await.unwrap_or_else(|e| panic!("{e}"));
    let rpc = Arc::new(node.client().await.unwrap());
    late_seller_scenario(TestChain::Bitcoind(node, rpc)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_window_settles_in_one_mpc_signed_batch_on_the_devnet() {
    scenario(TestChain::Devnet(Devnet::new(DevnetConfig::default()).unwrap())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_window_settles_in_one_mpc_signed_batch_on_bitcoind() {
    let node = RegtestNode::start(false).await.unwrap_or_else(|e| panic!("{e}"));
    let rpc = Arc::new(node.client().await.unwrap());
    scenario(TestChain::Bitcoind(node, rpc)).await;
}
