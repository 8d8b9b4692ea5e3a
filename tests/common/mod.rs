//! Helpers for end-to-end tests: run the real `tandem` binary on a data dir and talk to it.

#![allow(dead_code)]

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tandem::client::{Auth, Client};
use tandem::demo::Credentials;

pub const BIN: &str = env!("CARGO_BIN_EXE_tandem");

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A client of the `tandem serve` on `port`, once it answers `/v1/health` (its log is in `dir`).
pub async fn connect_when_healthy(port: u16, dir: &Path) -> Client {
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Ok(mut c) = Client::connect(&url).await {
            if let Ok((200, _)) = c.send("GET", "/v1/health", None, &Auth::None).await {
                return c;
            }
        }
        assert!(Instant::now() < deadline, "tandem serve did not come up; see {}", dir.display());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The body of a request that must answer 200.
pub async fn ok(c: &mut Client, method: &str, path: &str, body: Option<&Value>, auth: &Auth) -> Value {
    let (s, v) = c.send(method, path, body, auth).await.unwrap();
    assert_eq!(s, 200, "{method} {path}: {v}");
    v
}

/// A PostgreSQL schema of a test's own, named like the store tests' schemas (which drop those
/// over an hour old): `TANDEM_TEST_POSTGRES`, else the test machine's database.
pub fn postgres_store_url() -> String {
    let pg = std::env::var("TANDEM_TEST_POSTGRES").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    format!("{pg}#tandem_test_{now}_{:08x}", rand::random::<u32>())
}

pub struct Demo {
    child: Child,
    pub dir: PathBuf,
    pub port: u16,
    pub creds: Credentials,
}

impl Demo {
    /// Starts `tandem demo` without the market maker and waits until it serves requests.
    pub async fn start(dir: &Path) -> Demo {
        Demo::start_on(dir, free_port()).await
    }

    /// Starts on a given port (a restart that wallets made against the first run can reach).
    /// Without the demo's wallet users, whose background commands would make the exchange's
    /// state depend on timing.
    pub async fn start_on(dir: &Path, port: u16) -> Demo {
        Demo::launch(dir, port, &["--no-wallets"]).await
    }

    /// Starts with the demo's wallet users running.
    pub async fn start_with_wallets(dir: &Path, port: u16) -> Demo {
        Demo::launch(dir, port, &[]).await
    }

    async fn launch(dir: &Path, port: u16, extra: &[&str]) -> Demo {
        let log = std::fs::File::create(dir.join(format!("demo-{port}.log"))).unwrap();
        #[allow(clippy::zombie_processes)] // Demo's Drop kills and waits
        let child = Command::new(BIN)
            // Small snapshot interval: restarts exercise snapshot + journal replay.
            .args(["demo", "--no-market-maker", "--snapshot-every", "200", "--port", &port.to_string(), "--data-dir"])
            .arg(dir)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn tandem demo");
        let creds_path = dir.join("demo-credentials.json");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            assert!(Instant::now() < deadline, "demo did not come up; see {}", dir.display());
            if let Ok(bytes) = std::fs::read(&creds_path) {
                if let Ok(creds) = serde_json::from_slice::<Credentials>(&bytes) {
                    if creds.base_url.ends_with(&format!(":{port}")) {
                        if let Ok(mut c) = Client::connect(&creds.base_url).await {
                            if let Ok((200, _)) = c.send("GET", "/v1/health", None, &Auth::None).await {
                                return Demo { child, dir: dir.to_path_buf(), port, creds };
                            }
                        }
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn client(&self) -> Client {
        Client::connect(&self.creds.base_url).await.unwrap()
    }

    pub fn auth(&self, name: &str) -> Auth {
        self.creds.account(name).unwrap().auth()
    }

    pub fn account_id(&self, name: &str) -> u64 {
        self.creds.account(name).unwrap().account_id
    }

    pub fn operator(&self) -> Auth {
        Auth::Operator(self.creds.operator.token.clone())
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill(self) {
        // Drop does it.
    }
}

impl Drop for Demo {
    /// Also when a test fails: no demo outlives its test.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn journal_verify(dir: &Path) -> Result<Value, String> {
    let out = Command::new(BIN).args(["journal", "verify", "--json", "--data-dir"]).arg(dir).output().unwrap();
    if out.status.success() {
        Ok(serde_json::from_slice(&out.stdout).unwrap())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// The journal's segment files, oldest first.
pub fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir.join("journal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    v.sort();
    v
}

/// `tandem wallet --wallet FILE ...` with the passphrase in the environment.
pub fn wallet_cmd(file: &Path, passphrase: &str) -> Command {
    let mut c = Command::new(BIN);
    c.arg("wallet").arg("--wallet").arg(file).env("TANDEM_WALLET_PASSPHRASE", passphrase).env_remove("TANDEM_WALLET");
    c
}

/// A successful command's stdout as JSON; otherwise the test fails with its stderr.
#[track_caller]
pub fn ok_json(out: std::process::Output) -> Value {
    assert!(
        out.status.success(),
        "tandem failed: {}\nstdout: {}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

/// A child process killed (and reaped) when dropped, also when a test fails.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A node in this process with custody in its demo configuration (fixture primes accepted) on
/// regtest, serving on a free port, so a test can reach its provider and relay directly.
pub async fn custody_node(data_dir: &Path, operator_token: &str) -> tandem::node::Node {
    tandem::node::start(tandem::node::NodeOptions {
        data_dir: data_dir.to_path_buf(),
        store: Default::default(),
        custody: Some(tandem::node::CustodyOptions {
            master_key: tandem_custody::MasterKey::generate(),
            prime_pool_target: 0,
            demo: true,
            secrets_dir: None,
        }),
        bind: "127.0.0.1:0".parse().unwrap(),
        exchange: tandem_matching::ExchangeConfig::default(),
        gateway: tandem_gateway::GatewayConfig {
            operator_token: operator_token.into(),
            bitcoin_network: bitcoin::Network::Regtest,
            ..tandem_gateway::GatewayConfig::default()
        },
        sequencer: tandem_matching::SequencerConfig::default(),
        http_workers: 2,
        redis: None,
        journal: Default::default(),
        project: true,
    })
    .await
    .expect("the node starts")
}

/// "0.12345678" -> 12_345_678.
pub fn sats(decimal: &Value) -> i64 {
    let s = decimal.as_str().unwrap_or_else(|| panic!("not a decimal: {decimal}"));
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    assert!(frac.len() <= 8, "{s}");
    int.parse::<i64>().unwrap() * 100_000_000 + format!("{frac:0<8}").parse::<i64>().unwrap()
}

/// An account's BTC (available and locked) in satoshis, read with the operator `token`.
pub async fn btc_total(c: &mut Client, account: u64, token: &str) -> i64 {
    let a = ok(c, "GET", &format!("/v1/operator/accounts/{account}"), None, &Auth::Operator(token.into())).await;
    let b = a["balances"].as_array().unwrap().iter().find(|b| b["asset"] == "BTC").unwrap().clone();
    sats(&b["available"]) + sats(&b["locked"])
}

/// Polls `f` every 250 ms until it answers `Some`, failing the test after `secs` seconds.
pub async fn wait_for<T>(what: &str, secs: u64, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A gauge of the process on `port`, from its `/metrics` (0 when absent or unreachable).
pub async fn metric(port: u16, name: &str) -> u64 {
    let Ok(text) = plain_text(port, "/metrics").await else { return 0 };
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// A plain-text page (HTTP/1.0: the server closes after the answer).
pub async fn plain_text(port: u16, path: &str) -> Result<String, std::io::Error> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes()).await?;
    let mut text = String::new();
    s.read_to_string(&mut text).await?;
    Ok(text)
}
