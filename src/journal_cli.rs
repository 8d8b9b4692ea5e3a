//! `tandem journal verify` and `tandem journal inspect`: operator views of the journal.

use crate::node::DataDir;
use crate::replay::{fresh_state_hash, replay};
use anyhow::{bail, Context};
use std::path::Path;
use tandem_journal::SnapshotStore;
use tandem_matching::sequencer::decode_record;
use tandem_matching::Seq;

/// Checks every record, replays the journal from genesis, checks the ledger invariants, and
/// checks that every snapshot leads to the same state. Read-only: a torn tail is reported, not cut.
pub fn verify(data_dir: &Path, json: bool) -> anyhow::Result<()> {
    let dirs = DataDir::new(data_dir);
    let report = tandem_journal::verify(&dirs.journal()).with_context(|| format!("verifying {}", dirs.journal().display()))?;
    let (last_seq, hash, engine) = fresh_state_hash(&dirs.journal())?.context("the journal is empty")?;
    engine.check_invariants().context("the replayed state breaks a ledger invariant")?;
    let mut snapshot_results = Vec::new();
    if dirs.snapshots().exists() {
        let store = SnapshotStore::open(&dirs.snapshots())?;
        for seq in store.list()? {
            let r = replay(&dirs.journal(), Some(&store), Some(Seq(seq)), Seq(u64::MAX), |_| {})?
                .context("journal empty")?;
            let ok = r.engine.state_hash() == hash;
            snapshot_results.push((seq, ok));
        }
    }
    if json {
        let v = serde_json::json!({
            "segments": report.segments.len(),
            "records": report.records,
            "first_seq": report.first_seq,
            "last_seq": last_seq.0,
            "state_hash": hash.to_string(),
            "torn_tail": report.torn_tail.as_ref().map(|t| serde_json::json!({
                "segment": t.segment.display().to_string(), "offset": t.offset, "bytes": t.bytes_dropped })),
            "snapshots": snapshot_results.iter().map(|(s, ok)| serde_json::json!({"seq": s, "agrees": ok})).collect::<Vec<_>>(),
            "open_orders": engine.open_order_count(),
            "accounts": engine.account_count(),
        });
        println!("{v}");
    } else {
        println!("journal   {}", dirs.journal().display());
        println!("segments  {}", report.segments.len());
        println!("records   {} (seq {} to {})", report.records, report.first_seq.unwrap_or(0), report.last_seq);
        if let Some(t) = &report.torn_tail {
            println!(
                "torn tail {} bytes at offset {} of {} (cut on next start)",
                t.bytes_dropped,
                t.offset,
                t.segment.display()
            );
        }
        println!("state     seq {last_seq}, hash {hash}");
        println!("ledger    invariants hold; {} accounts, {} open orders", engine.account_count(), engine.open_order_count());
        for (seq, ok) in &snapshot_results {
            println!("snapshot  {seq}: {}", if *ok { "agrees with the journal" } else { "DISAGREES with the journal" });
        }
    }
    if snapshot_results.iter().any(|(_, ok)| !ok) {
        bail!("a snapshot disagrees with the journal");
    }
    Ok(())
}

/// Lists segments, then prints records from `from` as JSON lines.
pub fn inspect(data_dir: &Path, from: Option<u64>, limit: usize) -> anyhow::Result<()> {
    let dirs = DataDir::new(data_dir);
    let segments = tandem_journal::segments(&dirs.journal()).with_context(|| format!("reading {}", dirs.journal().display()))?;
    for s in &segments {
        println!(
            "# segment {} seq {}..{} records {} bytes {}",
            s.path.display(),
            s.first_seq,
            s.last_seq.map_or("-".to_string(), |l| l.to_string()),
            s.records,
            s.bytes
        );
    }
    if limit == 0 {
        return Ok(());
    }
    let mut reader = match from {
        Some(f) => tandem_journal::read_from(&dirs.journal(), f.max(1))?,
        None => tandem_journal::read_all(&dirs.journal())?,
    };
    let mut shown = 0;
    while let Some(r) = reader.next_ref() {
        let r = r?;
        let line = match decode_record(r.payload) {
            Ok(e) => serde_json::json!({
                "seq": e.seq.0, "timestamp": e.timestamp.0, "offset": r.offset,
                "command": e.command.name(), "detail": serde_json::to_value(&e.command)?,
            }),
            Err(err) => serde_json::json!({"seq": r.seq, "offset": r.offset, "undecodable": err.to_string()}),
        };
        println!("{line}");
        shown += 1;
        if shown >= limit {
            break;
        }
    }
    Ok(())
}
