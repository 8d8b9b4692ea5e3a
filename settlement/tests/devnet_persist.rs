//! A devnet opened from a file continues the same chain after a restart: blocks, UTXOs,
//! mempool, faucet, reorgs; and a damaged file is an error, not a panic.

use std::path::{Path, PathBuf};

use bitcoin::hashes::Hash as _;
use bitcoin::{Amount, ScriptBuf, WPubkeyHash};
use tandem_settlement::{Chain, ChainError, Devnet, DevnetConfig, TxStatus};

fn config() -> DevnetConfig {
    DevnetConfig { initial_blocks: 101, ..DevnetConfig::default() }
}

fn script(seed: u8) -> ScriptBuf {
    ScriptBuf::new_p2wpkh(&WPubkeyHash::from_byte_array([seed; 20]))
}

fn mempool_file(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".mempool");
    PathBuf::from(name)
}

/// Everything a caller can see of a devnet, to compare before and after a restart.
#[derive(Debug, PartialEq)]
struct Snapshot {
    tip: tandem_settlement::BlockRef,
    hashes: Vec<bitcoin::BlockHash>,
    utxos: Vec<tandem_settlement::Utxo>,
    mempool: Vec<bitcoin::Txid>,
    faucet_script: ScriptBuf,
    faucet_balance: Amount,
}

async fn snapshot(devnet: &Devnet) -> Snapshot {
    let tip = devnet.tip().await.unwrap();
    let mut hashes = Vec::new();
    for h in 0..=tip.height {
        hashes.push(devnet.block_hash(h).await.unwrap().unwrap());
    }
    Snapshot {
        tip,
        hashes,
        utxos: devnet.utxos(&[script(1), script(2), devnet.faucet_script()]).await.unwrap(),
        mempool: devnet.mempool().await.unwrap().iter().map(|tx| tx.compute_txid()).collect(),
        faucet_script: devnet.faucet_script(),
        faucet_balance: devnet.faucet_balance(),
    }
}

#[tokio::test]
async fn reopened_devnet_continues_the_same_chain() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("devnet.chain");
    let devnet = Devnet::open(&path, config()).unwrap();
    assert!(path.exists() && mempool_file(&path).exists());
    assert_eq!(devnet.tip().await.unwrap().height, 101);
    devnet.mine(2, None).unwrap();
    let confirmed = devnet.faucet(&script(1), Amount::from_sat(1_000_000)).unwrap();
    devnet.mine(1, Some(script(2))).unwrap();
    // A parent and its child (the faucet spends its unconfirmed change) stay unconfirmed.
    let pending = devnet.faucet(&script(1), Amount::from_sat(20_000)).unwrap();
    let pending_child = devnet.faucet(&script(2), Amount::from_sat(30_000)).unwrap();
    let before = snapshot(&devnet).await;
    assert_eq!(before.tip.height, 104);
    assert_eq!(before.mempool, vec![pending, pending_child]);
    drop(devnet);

    let devnet = Devnet::open(&path, config()).unwrap();
    assert_eq!(snapshot(&devnet).await, before);
    assert!(matches!(devnet.transaction_status(&confirmed).await.unwrap(), TxStatus::Confirmed { height: 104, .. }));
    assert_eq!(devnet.transaction_status(&pending_child).await.unwrap(), TxStatus::InMempool);

    // The faucet still pays (it found its coins and its unconfirmed change), blocks still mine.
    let after_restart = devnet.faucet(&script(1), Amount::from_sat(40_000)).unwrap();
    let mined = devnet.mine(1, None).unwrap();
    let block = devnet.block(&mined[0]).await.unwrap();
    // Parents come first; otherwise the order follows fee rates, so compare as sets.
    let mut in_block: Vec<_> = block.txdata.iter().skip(1).map(|tx| tx.compute_txid()).collect();
    assert_eq!(in_block[0], pending);
    let mut expected = vec![pending, pending_child, after_restart];
    in_block.sort();
    expected.sort();
    assert_eq!(in_block, expected);
    assert!(devnet.mempool().await.unwrap().is_empty());
    let before = snapshot(&devnet).await;
    assert_eq!(before.tip.height, 105);
    drop(devnet);

    // What was mined after the restart was appended and survives the next one.
    let devnet = Devnet::open(&path, config()).unwrap();
    assert_eq!(snapshot(&devnet).await, before);
    let scripts = devnet.utxos(&[script(1)]).await.unwrap();
    let paid: Amount = scripts.iter().map(|u| u.txout.value).sum();
    assert_eq!(paid, Amount::from_sat(1_000_000 + 20_000 + 40_000));
}

#[tokio::test]
async fn reorg_then_reopen_gives_the_post_reorg_chain() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("devnet.chain");
    let devnet = Devnet::open(&path, config()).unwrap();
    let dropped = devnet.faucet(&script(1), Amount::from_sat(500_000)).unwrap();
    let returning = devnet.faucet(&script(2), Amount::from_sat(600_000)).unwrap();
    let old_tip = devnet.mine(2, None).unwrap()[1];
    // Drop one transaction and mine a longer branch; then a plain reorg that sends the
    // other back to the mempool.
    devnet.reorg_dropping(2, &[dropped], 3).unwrap();
    let mid_tip = devnet.tip().await.unwrap().hash;
    devnet.reorg(1, 0).unwrap();
    let before = snapshot(&devnet).await;
    assert_eq!(before.tip.height, 103);
    assert!(before.utxos.iter().all(|u| u.txout.script_pubkey != script(1)));
    drop(devnet);

    let devnet = Devnet::open(&path, config()).unwrap();
    assert_eq!(snapshot(&devnet).await, before);
    assert_eq!(devnet.transaction_status(&dropped).await.unwrap(), TxStatus::Unknown);
    let status = devnet.transaction_status(&returning).await.unwrap();
    assert!(status == TxStatus::InMempool || matches!(status, TxStatus::Confirmed { .. }), "{status:?}");
    // Stale blocks stay readable by hash, as before the restart.
    assert_ne!(devnet.block_hash(102).await.unwrap(), Some(old_tip));
    devnet.block(&old_tip).await.unwrap();
    devnet.block(&mid_tip).await.unwrap();
    devnet.mine(1, None).unwrap();
    assert_eq!(devnet.tip().await.unwrap().height, 104);
}

#[tokio::test]
async fn mempool_entries_a_block_confirmed_are_dropped_on_reopen() {
    // As after a crash between appending a block and rewriting the mempool file.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("devnet.chain");
    let devnet = Devnet::open(&path, config()).unwrap();
    let txid = devnet.faucet(&script(1), Amount::from_sat(100_000)).unwrap();
    let stale_mempool = std::fs::read(mempool_file(&path)).unwrap();
    devnet.mine(1, None).unwrap();
    drop(devnet);
    std::fs::write(mempool_file(&path), stale_mempool).unwrap();

    let devnet = Devnet::open(&path, config()).unwrap();
    assert!(devnet.mempool().await.unwrap().is_empty());
    assert!(matches!(devnet.transaction_status(&txid).await.unwrap(), TxStatus::Confirmed { height: 102, .. }));
    // A missing mempool file is an empty mempool.
    drop(devnet);
    std::fs::remove_file(mempool_file(&path)).unwrap();
    let devnet = Devnet::open(&path, config()).unwrap();
    assert!(devnet.mempool().await.unwrap().is_empty());
    assert!(mempool_file(&path).exists());
}

/// Writes `journal` (and `mempool`, if any) under `name` in `dir` and opens it; the tip height.
async fn open_copy(dir: &Path, name: &str, journal: &[u8], mempool: Option<&[u8]>) -> Result<u32, ChainError> {
    let path = dir.join(name);
    std::fs::write(&path, journal).unwrap();
    match mempool {
        Some(bytes) => std::fs::write(mempool_file(&path), bytes).unwrap(),
        None => {
            let _ = std::fs::remove_file(mempool_file(&path));
        }
    }
    let devnet = Devnet::open(&path, config())?;
    Ok(devnet.tip().await?.height)
}

#[tokio::test]
async fn damaged_files_are_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("devnet.chain");
    let devnet = Devnet::open(&path, config()).unwrap();
    devnet.faucet(&script(1), Amount::from_sat(100_000)).unwrap();
    devnet.mine(1, None).unwrap();
    devnet.faucet(&script(2), Amount::from_sat(100_000)).unwrap();
    let height = devnet.tip().await.unwrap().height;
    drop(devnet);
    let journal = std::fs::read(&path).unwrap();
    let mempool = std::fs::read(mempool_file(&path)).unwrap();
    let dir = dir.path();
    let is_decode = |r: &Result<u32, ChainError>| matches!(r, Err(ChainError::Decode(_)));

    // The unchanged copy opens.
    assert_eq!(open_copy(dir, "copy", &journal, Some(&mempool)).await.unwrap(), height);
    // Empty, garbage, cut inside the header or the faucet key.
    for cut in [0, 5, 11, 12, 20, 48] {
        assert!(is_decode(&open_copy(dir, "cut", &journal[..cut], None).await), "cut at {cut}");
    }
    assert!(is_decode(&open_copy(dir, "garbage", &[0x42; 300], None).await));
    // Cut anywhere: an error, or (exactly at a record boundary) a shorter chain.
    let mut errors = 0;
    for cut in (49..journal.len()).step_by(211).chain([journal.len() - 1, journal.len() - 4]) {
        match open_copy(dir, "cut", &journal[..cut], None).await {
            Ok(h) => assert!(h < height, "cut at {cut} kept the whole chain"),
            Err(ChainError::Decode(_)) => errors += 1,
            Err(other) => panic!("cut at {cut}: unexpected {other:?}"),
        }
    }
    assert!(errors > 0);
    // Any flipped byte.
    for at in (0..journal.len()).step_by(97).chain([journal.len() - 1]) {
        let mut bad = journal.clone();
        bad[at] ^= 0x10;
        assert!(is_decode(&open_copy(dir, "flip", &bad, None).await), "flip at {at}");
    }
    // A damaged mempool file too.
    let mut bad = mempool.clone();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    assert!(is_decode(&open_copy(dir, "mempool", &journal, Some(&bad)).await));
    assert!(is_decode(&open_copy(dir, "mempool", &journal, Some(&mempool[..mempool.len() - 3])).await));
    // A mempool file is not a journal.
    assert!(is_decode(&open_copy(dir, "swapped", &mempool, None).await));
    // A directory where the file should be is an I/O error.
    assert!(matches!(Devnet::open(dir, config()), Err(ChainError::Transport(_))));
}
