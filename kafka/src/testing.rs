//! For tests (here and of the nodes that use this crate): a Kafka-protocol broker of the test's
//! own, Tansu from `TANSU_EXE` (`scripts/tansu` fetches it; the test command exports it), on a
//! free port of 127.0.0.1, run as `nobody` when the tests run as root. Its storage is memory, or
//! a local S3 server ([`ObjectStore`], moto from `MOTO_SERVER_EXE`, which `scripts/moto`
//! installs) when its data must outlive a restart. Stopped when dropped.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Broker {
    pub addr: String,
    port: u16,
    storage: Storage,
    child: Option<Child>,
}

#[derive(Clone)]
enum Storage {
    Memory,
    S3 { endpoint: String },
}

/// The bucket a broker on S3 keeps its data in.
const BUCKET: &str = "tansu";

impl Broker {
    /// A broker keeping its data in memory: lost when it stops.
    pub fn start() -> Broker {
        Broker::start_with(Storage::Memory)
    }

    /// A broker keeping its data in `store`: a restart finds it again.
    pub fn start_on(store: &ObjectStore) -> Broker {
        Broker::start_with(Storage::S3 { endpoint: store.endpoint.clone() })
    }

    fn start_with(storage: Storage) -> Broker {
        let port = free_port();
        let mut broker = Broker { addr: format!("127.0.0.1:{port}"), port, storage, child: None };
        broker.spawn();
        broker
    }

    fn spawn(&mut self) {
        let exe = std::env::var("TANSU_EXE")
            .expect("TANSU_EXE: the broker binary (export TANSU_EXE=\"$(scripts/tansu)\")");
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let mut command = Command::new(&exe);
        command.args(["broker", "--listener-url", &url, "--advertised-listener-url", &url, "--storage-engine"]);
        match &self.storage {
            Storage::Memory => {
                command.arg("memory://tansu/");
            }
            Storage::S3 { endpoint } => {
                command
                    .arg(format!("s3://{BUCKET}/"))
                    .env("AWS_ENDPOINT", endpoint)
                    .env("AWS_ALLOW_HTTP", "true")
                    .env("AWS_ACCESS_KEY_ID", "test")
                    .env("AWS_SECRET_ACCESS_KEY", "test")
                    .env("AWS_DEFAULT_REGION", "us-east-1");
            }
        }
        command.stdout(Stdio::null()).stderr(Stdio::null());
        // SAFETY: geteuid only reads this process's credentials.
        if unsafe { libc::geteuid() } == 0 {
            use std::os::unix::process::CommandExt;
            command.uid(65534).gid(65534);
        }
        self.child = Some(command.spawn().unwrap_or_else(|e| panic!("starting {exe}: {e}")));
        wait_listening(&self.addr, "the broker");
    }

    /// Stops the broker (SIGKILL): connections drop, nothing answers on its port.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(child.id(), libc::SIGCONT);
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts a stopped broker again on the same port and storage.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "the broker is running");
        self.spawn();
    }

    /// Freezes the broker (SIGSTOP): it keeps its data but answers nothing, like a broker that
    /// hangs or a network that drops its packets.
    pub fn pause(&self) {
        signal(self.pid(), libc::SIGSTOP);
    }

    pub fn resume(&self) {
        signal(self.pid(), libc::SIGCONT);
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().expect("the broker is running").id()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A local S3-compatible server (moto) with the bucket a broker on S3 uses.
pub struct ObjectStore {
    pub endpoint: String,
    child: Child,
}

impl ObjectStore {
    pub fn start() -> ObjectStore {
        let exe = std::env::var("MOTO_SERVER_EXE")
            .expect("MOTO_SERVER_EXE: a local S3 server (export MOTO_SERVER_EXE=\"$(scripts/moto)\")");
        let port = free_port();
        let child = Command::new(&exe)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {exe}: {e}"));
        let store = ObjectStore { endpoint: format!("http://127.0.0.1:{port}"), child };
        let addr = format!("127.0.0.1:{port}");
        wait_listening(&addr, "the S3 server");
        // Create the bucket (an unsigned request: moto accepts any credentials).
        let mut s = TcpStream::connect(&addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(s, "PUT /{BUCKET} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").unwrap();
        // The status line is all we need (the server may hold the connection open after it).
        let mut answer = [0u8; 12];
        s.read_exact(&mut answer).unwrap();
        let status = String::from_utf8_lossy(&answer);
        assert!(status.ends_with(" 200"), "creating the bucket: {status}");
        store
    }
}

impl Drop for ObjectStore {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn wait_listening(addr: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "{what} did not listen on {addr}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn signal(pid: u32, signal: libc::c_int) {
    // SAFETY: a signal to our own child process.
    let sent = unsafe { libc::kill(pid as libc::pid_t, signal) };
    assert_eq!(sent, 0, "signal {signal} to {pid}");
}
