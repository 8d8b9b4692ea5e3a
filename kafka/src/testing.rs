//! For tests (here and of the nodes that use this crate): a Kafka-protocol broker of the test's
//! own, Tansu (memory storage) from `TANSU_EXE` (`scripts/tansu` fetches it; the test command
//! exports it), on a free port of 127.0.0.1, run as `nobody` when the tests run as root.
//! Stopped when dropped.

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Broker {
    pub addr: String,
    child: Child,
}

impl Broker {
    pub fn start() -> Broker {
        let exe = std::env::var("TANSU_EXE")
            .expect("TANSU_EXE: the broker binary (export TANSU_EXE=\"$(scripts/tansu)\")");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("tcp://127.0.0.1:{port}");
        let mut command = Command::new(&exe);
        command
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
                "--storage-engine",
                "memory://tansu/",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: geteuid only reads this process's credentials.
        if unsafe { libc::geteuid() } == 0 {
            use std::os::unix::process::CommandExt;
            command.uid(65534).gid(65534);
        }
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("starting {exe}: {e}"));
        let broker = Broker {
            addr: format!("127.0.0.1:{port}"),
            child,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(&broker.addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "the broker did not listen on {}",
                broker.addr
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        broker
    }

    /// Freezes the broker (SIGSTOP): it keeps its data but answers nothing, like a broker that
    /// hangs or a network that drops its packets.
    pub fn pause(&self) {
        signal(self.child.id(), libc::SIGSTOP);
    }

    pub fn resume(&self) {
        signal(self.child.id(), libc::SIGCONT);
    }
}

fn signal(pid: u32, signal: libc::c_int) {
    // SAFETY: a signal to our own child process.
    let sent = unsafe { libc::kill(pid as libc::pid_t, signal) };
    assert_eq!(sent, 0, "signal {signal} to {pid}");
}

impl Drop for Broker {
    fn drop(&mut self) {
        // SAFETY: a signal to our own child process.
        let _ = unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGCONT) };
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
