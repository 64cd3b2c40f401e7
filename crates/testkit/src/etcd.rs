//! Throwaway single-member etcd servers on reserved loopback ports.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::ports::{reserve_port, PortReservation};
use crate::process::{find_program, log_tail, ManagedChild};
use crate::scratch::scratch_dir;

/// How a test etcd is started.
#[derive(Debug, Clone)]
pub struct EtcdOptions {
    /// Upper bound for `/health` to report healthy after start.
    pub ready_timeout: Duration,
}

impl Default for EtcdOptions {
    fn default() -> Self {
        EtcdOptions {
            ready_timeout: Duration::from_secs(30),
        }
    }
}

/// Connection details of a running etcd, as printed by the `testkit` CLI.
#[derive(Debug, Clone, Serialize)]
pub struct EtcdInfo {
    pub endpoint: String,
    pub client_port: u16,
    pub peer_port: u16,
    pub pid: Option<u32>,
}

/// A running etcd owned by the test; stopped and its data deleted on drop.
#[derive(Debug)]
pub struct Etcd {
    child: ManagedChild,
    client: PortReservation,
    peer: PortReservation,
    _dir: tempfile::TempDir,
}

impl Etcd {
    pub fn start() -> Result<Self> {
        Self::start_with(EtcdOptions::default())
    }

    pub fn start_with(opts: EtcdOptions) -> Result<Self> {
        let etcd = find_program("etcd", "etcd-server")?;
        let dir = scratch_dir("etcd")?;
        let client = reserve_port()?;
        let peer = reserve_port()?;
        let client_url = format!("http://127.0.0.1:{}", client.port());
        let peer_url = format!("http://127.0.0.1:{}", peer.port());
        let log = dir.path().join("etcd.log");
        let mut cmd = Command::new(etcd);
        cmd.arg("--name=testkit")
            .arg(format!("--data-dir={}", dir.path().join("data").display()))
            .arg(format!("--listen-client-urls={client_url}"))
            .arg(format!("--advertise-client-urls={client_url}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster=testkit={peer_url}"))
            .arg("--initial-cluster-state=new")
            // Debian's etcd is built without the default env vars of some distributions; keep
            // the environment clean so a stray ETCD_* variable cannot change the instance.
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default());
        let mut child = ManagedChild::spawn("etcd", cmd, &log)?;

        let deadline = Instant::now() + opts.ready_timeout;
        loop {
            if let Some(status) = child.try_wait() {
                return Err(Error::ExitedEarly {
                    what: "etcd".into(),
                    status: status.to_string(),
                    log: log_tail(&log, 20),
                });
            }
            if healthy(client.port()) {
                break;
            }
            if Instant::now() >= deadline {
                return Err(Error::NotReady {
                    what: "etcd".into(),
                    seconds: opts.ready_timeout.as_secs(),
                    log: log_tail(&log, 20),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(Etcd {
            child,
            client,
            peer,
            _dir: dir,
        })
    }

    /// Client endpoint, e.g. `http://127.0.0.1:23456`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client.port())
    }
    pub fn client_port(&self) -> u16 {
        self.client.port()
    }
    pub fn pid(&self) -> Option<u32> {
        self.child.pid()
    }

    pub fn info(&self) -> EtcdInfo {
        EtcdInfo {
            endpoint: self.endpoint(),
            client_port: self.client.port(),
            peer_port: self.peer.port(),
            pid: self.pid(),
        }
    }

    /// Kills etcd with SIGKILL (for fault tests).
    pub fn kill(&mut self) {
        self.child.kill();
    }
}

/// One bounded HTTP/1.0 request; returns the response body on status 200.
fn http_request(port: u16, method: &str, path: &str, body: &str) -> Option<String> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    stream
        .set_write_timeout(Some(Duration::from_secs(2)))
        .ok()?;
    let req = format!(
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(req.as_bytes()).ok()?;
    let mut resp = String::new();
    stream.read_to_string(&mut resp).ok()?;
    let (head, body) = resp.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200")
        .then(|| body.to_string())
        .or_else(|| head.starts_with("HTTP/1.0 200").then(|| body.to_string()))
}

fn healthy(port: u16) -> bool {
    http_request(port, "GET", "/health", "")
        .map(|b| b.contains("\"health\":\"true\""))
        .unwrap_or(false)
}
