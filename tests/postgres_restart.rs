//! PostgreSQL restarted under a running node: a private PostgreSQL cluster of the test's own
//! (initdb, run as the `postgres` user when the tests run as root) holds the node's store. While
//! it is down, the exchange goes on (the engine and its journal do not need the store: deposits
//! and orders are accepted, balances answer); once it is back, the projections catch up with
//! everything that happened meanwhile, nothing missing and nothing twice.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{connect_when_healthy, free_port, ok, KillOnDrop, BIN};
use serde_json::json;
use tandem::client::Auth;

const TOKEN: &str = "postgres-restart-test-token";

/// A PostgreSQL cluster in a temporary directory, on a free port of 127.0.0.1.
struct PrivatePostgres {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    _dir: tempfile::TempDir,
}

impl PrivatePostgres {
    fn start() -> PrivatePostgres {
        let bin = match std::env::var_os("TANDEM_PG_BIN") {
            Some(b) => PathBuf::from(b),
            None => {
                let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
                    .expect("PostgreSQL's binaries in /usr/lib/postgresql (or set TANDEM_PG_BIN)")
                    .map(|e| e.unwrap().path().join("bin"))
                    .filter(|p| p.join("initdb").exists())
                    .collect();
                versions.sort();
                versions.pop().expect("an initdb under /usr/lib/postgresql")
            }
        };
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        chown_to_postgres(dir.path());
        chown_to_postgres(&data);
        let pg = PrivatePostgres { bin, data, port: free_port(), _dir: dir };
        let out = pg.command("initdb").args(["-U", "postgres", "--auth=trust", "-D"]).arg(&pg.data).output().unwrap();
        assert!(out.status.success(), "initdb: {}", String::from_utf8_lossy(&out.stderr));
        pg.start_again();
        pg
    }

    /// A PostgreSQL tool, run as `postgres` if we are root (the server refuses to run as root).
    fn command(&self, tool: &str) -> Command {
        let mut c = Command::new(self.bin.join(tool));
        c.stdout(Stdio::null()).stderr(Stdio::piped());
        // SAFETY: geteuid only reads this process's credentials.
        if unsafe { libc::geteuid() } == 0 {
            use std::os::unix::process::CommandExt;
            let (uid, gid) = postgres_user();
            c.uid(uid).gid(gid);
        }
        c
    }

    fn start_again(&self) {
        let options = format!("-p {} -c listen_addresses=127.0.0.1 -k {}", self.port, self.data.display());
        let out = self.command("pg_ctl").args(["start", "-w", "-t", "60", "-o", &options, "-D"]).arg(&self.data).output().unwrap();
        assert!(out.status.success(), "pg_ctl start: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// Stops at once, as a crash would (`immediate`: no checkpoint, connections cut).
    fn stop(&self) {
        let out = self.command("pg_ctl").args(["stop", "-w", "-m", "immediate", "-D"]).arg(&self.data).output().unwrap();
        assert!(out.status.success(), "pg_ctl stop: {}", String::from_utf8_lossy(&out.stderr));
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = self.command("pg_ctl").args(["stop", "-m", "immediate", "-D"]).arg(&self.data).output();
    }
}

fn postgres_user() -> (u32, u32) {
    let name = std::ffi::CString::new("postgres").unwrap();
    // SAFETY: getpwnam returns a pointer to static storage or null; read at once.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    assert!(!pw.is_null(), "no postgres user");
    unsafe { ((*pw).pw_uid, (*pw).pw_gid) }
}

fn chown_to_postgres(path: &Path) {
    // SAFETY: geteuid only reads this process's credentials.
    if unsafe { libc::geteuid() } == 0 {
        let (uid, gid) = postgres_user();
        std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap();
    }
}


#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projections_catch_up_after_postgresql_restarts() {
    let pg = PrivatePostgres::start();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let log = std::fs::File::create(dir.path().join("serve.log")).unwrap();
    let _node = KillOnDrop(
        Command::new(BIN)
            .args(["serve", "--store-url", &pg.url(), "--migrate", "--operator-token", TOKEN])
            .args(["--bind", &format!("127.0.0.1:{port}"), "--data-dir"])
            .arg(dir.path())
            .env_remove("TANDEM_MASTER_KEY")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let mut c = connect_when_healthy(port, dir.path()).await;
    let op = Auth::Operator(TOKEN.into());
    let made = ok(&mut c, "POST", "/v1/operator/accounts", Some(&json!({"kind": "partner", "label": "p"})), &op).await;
    let account = made["account_id"].as_u64().unwrap();
    let key = Auth::Key { key: made["api_key"].as_str().unwrap().into(), secret: made["api_secret"].as_str().unwrap().into() };
    let deposit = |n: u32| json!({"account_id": account, "asset": "USD", "amount": "100.00", "reference": format!("wire-{n}")});
    let order = |n: u32| json!({"market": "BTC-USD", "side": "buy", "type": "limit", "price": "10000.00", "quantity": "0.001",
                                "client_order_id": format!("o-{n}")});
    ok(&mut c, "POST", "/v1/operator/deposits", Some(&deposit(1)), &op).await;
    ok(&mut c, "POST", "/v1/orders", Some(&order(1)), &key).await;
    let deposits = ok(&mut c, "GET", "/v1/deposits", None, &key).await;
    assert_eq!(deposits["deposits"].as_array().unwrap().len(), 1);

    // PostgreSQL goes away. The exchange does not: money moves, orders rest, balances answer.
    pg.stop();
    for n in 2..=4 {
        ok(&mut c, "POST", "/v1/operator/deposits", Some(&deposit(n)), &op).await;
        ok(&mut c, "POST", "/v1/orders", Some(&order(n)), &key).await;
    }
    let balances = ok(&mut c, "GET", "/v1/balances", None, &key).await;
    let usd = balances["balances"].as_array().unwrap().iter().find(|b| b["asset"] == "USD").unwrap().clone();
    assert_eq!((usd["available"].as_str(), usd["locked"].as_str()), (Some("360.00"), Some("40.00")), "{usd}");
    // History lives in the store: it is unavailable, not wrong; the node says it is not ready
    // (a load balancer sends traffic elsewhere) but alive.
    let (status, body) = c.send("GET", "/v1/deposits", None, &key).await.unwrap();
    assert_eq!(status, 503, "{body}");
    let (status, body) = c.send("GET", "/ready", None, &Auth::None).await.unwrap();
    assert_eq!((status, &body["checks"]["store"]), (503, &json!("unavailable")), "{body}");
    assert_eq!(c.send("GET", "/health", None, &Auth::None).await.unwrap().0, 200);

    // Back: the projector, which kept its batch, writes everything that happened meanwhile.
    pg.start_again();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = c.send("GET", "/v1/deposits", None, &key).await.unwrap();
        if status == 200 && body["deposits"].as_array().unwrap().len() == 4 {
            let mut refs: Vec<&str> = body["deposits"].as_array().unwrap().iter().map(|d| d["reference"].as_str().unwrap()).collect();
            refs.sort();
            assert_eq!(refs, ["wire-1", "wire-2", "wire-3", "wire-4"]);
            break;
        }
        assert!(Instant::now() < deadline, "the projections did not catch up: {status} {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let ready = ok(&mut c, "GET", "/ready", None, &Auth::None).await;
    assert_eq!(ready["ready"], json!(true), "{ready}");
    let orders = ok(&mut c, "GET", "/v1/orders?status=all&limit=100", None, &key).await;
    let mut ids: Vec<&str> = orders["orders"].as_array().unwrap().iter().map(|o| o["client_order_id"].as_str().unwrap()).collect();
    ids.sort();
    assert_eq!(ids, ["o-1", "o-2", "o-3", "o-4"], "{orders}");
}
