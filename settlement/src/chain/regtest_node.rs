//! A throwaway regtest `bitcoind` for tests and local runs: its own temporary datadir and RPC
//! port, stopped (and killed, if need be) on drop.
//!
//! The binary comes from `BITCOIND_EXE`, else `../shared/bin/bitcoind` beside the repository;
//! `scripts/bitcoind` finds or builds one.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bitcoin::Network;

use super::bitcoind::{Bitcoind, BitcoindAuth, BitcoindConfig};
use super::{ChainError, Result};

/// Where to find bitcoind: `BITCOIND_EXE`, else `<repo>/../shared/bin/bitcoind`.
pub fn bitcoind_exe() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("BITCOIND_EXE") {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(ChainError::InvalidRequest(format!(
                "BITCOIND_EXE={} is not a file; unset it or run `scripts/bitcoind` to get one",
                path.display()
            )))
        };
    }
    let shared = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/bin/bitcoind");
    if shared.is_file() {
        return Ok(shared);
    }
    Err(ChainError::InvalidRequest(format!(
        "no bitcoind: set BITCOIND_EXE or provide {}; `export BITCOIND_EXE=$(scripts/bitcoind)` finds or builds one",
        shared.display()
    )))
}

/// A running regtest node.
pub struct RegtestNode {
    process: Child,
    datadir: tempfile::TempDir,
    url: String,
    auth: BitcoindAuth,
}

impl RegtestNode {
    /// Starts a node (user/password RPC auth, or a cookie file with `cookie`) and waits until
    /// its RPC answers.
    pub async fn start(cookie: bool) -> Result<RegtestNode> {
        let exe = bitcoind_exe()?;
        let datadir = tempfile::tempdir().map_err(|e| ChainError::Transport(format!("temp datadir: {e}")))?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| ChainError::Transport(format!("no free port: {e}")))?
            .port();
        let mut command = Command::new(&exe);
        command
            .arg("-regtest")
            .arg(format!("-datadir={}", datadir.path().display()))
            .args(["-txindex", "-listen=0", "-rpcbind=127.0.0.1", "-rpcallowip=127.0.0.1"])
            .arg(format!("-rpcport={port}"))
            .arg("-fallbackfee=0.0001");
        let auth = if cookie {
            BitcoindAuth::CookieFile(datadir.path().join("regtest").join(".cookie"))
        } else {
            command.args(["-rpcuser=tandem", "-rpcpassword=tandem"]);
            BitcoindAuth::UserPass { user: "tandem".into(), password: "tandem".into() }
        };
        let process = command
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| ChainError::Transport(format!("cannot start {}: {e}", exe.display())))?;
        let mut node = RegtestNode { process, datadir, url: format!("http://127.0.0.1:{port}"), auth };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match Bitcoind::connect(node.config()).await {
                Ok(_) => return Ok(node),
                Err(e) => {
                    if let Ok(Some(status)) = node.process.try_wait() {
                        let mut stderr = String::new();
                        if let Some(mut pipe) = node.process.stderr.take() {
                            std::io::Read::read_to_string(&mut pipe, &mut stderr).ok();
                        }
                        return Err(ChainError::Transport(format!("bitcoind exited with {status}: {stderr}")));
                    }
                    if Instant::now() >= deadline {
                        return Err(ChainError::Transport(format!("bitcoind RPC did not come up within 60 s: {e}")));
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    /// The RPC configuration of this node.
    pub fn config(&self) -> BitcoindConfig {
        BitcoindConfig::new(self.url.clone(), self.auth.clone(), Network::Regtest)
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn datadir(&self) -> &Path {
        self.datadir.path()
    }

    /// A connected client.
    pub async fn client(&self) -> Result<Bitcoind> {
        Bitcoind::connect(self.config()).await
    }
}

impl Drop for RegtestNode {
    fn drop(&mut self) {
        // A clean stop first (it flushes quickly on regtest), then the hard way.
        if let Ok(rpc) = Bitcoind::new_unchecked(self.config()) {
            let stopped = std::thread::scope(|s| {
                s.spawn(|| {
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .ok()
                        .map(|rt| rt.block_on(rpc.stop()).is_ok())
                        .unwrap_or(false)
                })
                .join()
                .unwrap_or(false)
            });
            if stopped {
                let deadline = Instant::now() + Duration::from_secs(20);
                while Instant::now() < deadline {
                    if let Ok(Some(_)) = self.process.try_wait() {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}
