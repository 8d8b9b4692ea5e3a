//! Operator custody tools through the real binary: a master key, safe primes generated into the
//! node's pool, and the pool's size in `/metrics`.

mod common;

use common::*;
use std::process::Command;
use std::time::{Duration, Instant};
use tandem::client::{Auth, Client};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gen_primes_fills_the_pool_the_node_reports() {
    let tmp = tempfile::tempdir().unwrap();
    let key = tmp.path().join("master.hex");
    let data = tmp.path().join("node");

    let out = Command::new(BIN).args(["custody", "new-master-key", "--out"]).arg(&key).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // Never overwrites: a lost master key loses every secret sealed under it.
    let again = Command::new(BIN).args(["custody", "new-master-key", "--out"]).arg(&key).output().unwrap();
    assert!(!again.status.success());

    let out = Command::new(BIN)
        .args(["custody", "gen-primes", "--count", "1", "--master-key-file"])
        .arg(&key)
        .arg("--data-dir")
        .arg(&data)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 pairs ready"));

    // Without a master key the tool refuses rather than writing unsealed secrets.
    let out = Command::new(BIN)
        .args(["custody", "gen-primes", "--count", "1", "--data-dir"])
        .arg(&data)
        .env_remove("TANDEM_MASTER_KEY")
        .output()
        .unwrap();
    assert!(!out.status.success());

    let (metrics, identity) = serve_once(&data, &key).await;
    assert!(metrics.lines().any(|l| l == "tandem_custody_prime_pool_size 1"), "{metrics}");
    // The provider's MPC identity is made once, sealed under the master key, and stable.
    let identity = identity.as_str().expect("a provider identity").to_string();
    assert_eq!(identity.len(), 64);
    let (_, again) = serve_once(&data, &key).await;
    assert_eq!(again.as_str(), Some(identity.as_str()));
    let sealed = std::fs::read(data.join("custody/secrets/provider-identity.sealed")).unwrap();
    assert!(!sealed.windows(8).any(|w| w == b"identity"), "sealed, not plain JSON");
}

/// Starts `tandem serve` with custody, reads `/metrics` and the provider identity, stops it.
async fn serve_once(data: &std::path::Path, key: &std::path::Path) -> (String, serde_json::Value) {
    let port = free_port();
    let mut child = Command::new(BIN)
        .args(["serve", "--operator-token", "op", "--prime-pool-target", "0", "--bind", &format!("127.0.0.1:{port}")])
        .arg("--master-key-file")
        .arg(key)
        .arg("--data-dir")
        .arg(data)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(60);
    let result = loop {
        assert!(Instant::now() < deadline, "node did not start");
        if let Ok(mut c) = Client::connect(&url).await {
            if let Ok((200, _)) = c.send("GET", "/v1/health", None, &Auth::None).await {
                let (_, provider) = c.send("GET", "/v1/mpc/provider", None, &Auth::None).await.unwrap();
                break (metrics_text(&url).await, provider["identity"].clone());
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let _ = child.kill();
    let _ = child.wait();
    result
}

/// `/metrics` is text, not JSON: read it raw.
async fn metrics_text(url: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let host = url.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(host).await.unwrap();
    s.write_all(format!("GET /metrics HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes()).await.unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).await.unwrap();
    body
}
