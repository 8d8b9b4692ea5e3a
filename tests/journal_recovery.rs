//! A torn journal tail is cut back on start; corruption in the middle stops start-up with an
//! error naming the segment and offset. Both through the real binary.

mod common;

use common::*;
use serde_json::json;
use std::io::{Seek, SeekFrom, Write};

async fn exchange_with_orders(dir: &std::path::Path) -> (u64, serde_json::Value) {
    let demo = Demo::start(dir).await;
    let mut client = demo.client().await;
    for i in 0..20 {
        let order = json!({"market": "BTC-USD", "side": "sell", "type": "limit",
            "price": format!("{}.00", 61_000 + i), "quantity": "0.01"});
        let (status, body) = client.send("POST", "/v1/orders", Some(&order), &demo.auth("bob")).await.unwrap();
        assert_eq!(status, 200, "{body}");
    }
    let (_, state) = client.send("GET", "/v1/operator/state", None, &demo.operator()).await.unwrap();
    demo.kill();
    (state["last_seq"].as_u64().unwrap(), state)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn torn_tail_is_cut_and_the_exchange_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let (last_seq, state) = exchange_with_orders(tmp.path()).await;
    // A crash in the middle of a write: half a record of garbage at the end of the last segment.
    let seg = segments(tmp.path()).pop().unwrap();
    let mut f = std::fs::OpenOptions::new().append(true).open(&seg).unwrap();
    f.write_all(&[0x2a, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef, 1, 2, 3]).unwrap();
    drop(f);
    let report = journal_verify(tmp.path()).expect("a torn tail is not corruption");
    assert!(report["torn_tail"].is_object(), "{report}");
    assert_eq!(report["last_seq"].as_u64(), Some(last_seq));

    let demo = Demo::start(tmp.path()).await;
    let mut client = demo.client().await;
    let (_, after) = client.send("GET", "/v1/operator/state", None, &demo.operator()).await.unwrap();
    assert_eq!(after["state_hash"], state["state_hash"]);
    // And it takes new commands after the cut.
    let order = json!({"market": "BTC-USD", "side": "sell", "type": "limit", "price": "62000.00", "quantity": "0.01"});
    let (status, body) = client.send("POST", "/v1/orders", Some(&order), &demo.auth("bob")).await.unwrap();
    assert_eq!(status, 200, "{body}");
    demo.kill();
    let report = journal_verify(tmp.path()).unwrap();
    assert!(report["torn_tail"].is_null(), "{report}");
    assert_eq!(report["last_seq"].as_u64(), Some(last_seq + 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mid_journal_corruption_stops_start_up_with_segment_and_offset() {
    let tmp = tempfile::tempdir().unwrap();
    exchange_with_orders(tmp.path()).await;
    let seg = segments(tmp.path()).pop().unwrap();
    let len = std::fs::metadata(&seg).unwrap().len();
    // Flip a byte well inside the segment: records after it are intact, so this is not a torn tail.
    let mut f = std::fs::OpenOptions::new().read(true).write(true).open(&seg).unwrap();
    let at = len / 2;
    f.seek(SeekFrom::Start(at)).unwrap();
    let mut b = [0u8; 1];
    std::io::Read::read_exact(&mut f, &mut b).unwrap();
    f.seek(SeekFrom::Start(at)).unwrap();
    f.write_all(&[b[0] ^ 0xff]).unwrap();
    drop(f);

    let err = journal_verify(tmp.path()).expect_err("verify must fail");
    let name = seg.file_name().unwrap().to_string_lossy().to_string();
    assert!(err.contains(&name), "error names the segment: {err}");
    assert!(err.contains("offset"), "error names the offset: {err}");

    let out = std::process::Command::new(BIN)
        .args(["demo", "--no-market-maker", "--port", &free_port().to_string(), "--data-dir"])
        .arg(tmp.path())
        .output()
        .unwrap();
    assert!(!out.status.success(), "start-up must refuse a corrupt journal");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&name) && stderr.contains("offset"), "{stderr}");
    // Nothing was cut or rewritten.
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), len);
}
