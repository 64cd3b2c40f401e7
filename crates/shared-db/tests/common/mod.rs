//! Starts the real `shared-db` binary for integration tests, in front of a testkit MariaDB
//! (external engine) or its own managed engine, on reserved ports with a private data dir.

#![allow(dead_code)]

pub mod raw;

use std::process::Command;
use std::time::{Duration, Instant};

use testkit::{reserve_port, ManagedChild, MariaDb, PortReservation};

pub const PASSWORD: &str = "op-secret-pw";

pub struct Operator {
    child: ManagedChild,
    mysql: PortReservation,
    http: PortReservation,
    pub data_dir: tempfile::TempDir,
    pub log: std::path::PathBuf,
}

impl Operator {
    /// An operator in front of `db`, with extra environment variables.
    pub fn external(db: &MariaDb, env: &[(&str, &str)]) -> Operator {
        let engine = format!("127.0.0.1:{}", db.port());
        let mut all = vec![
            ("DB_COMPONENT_NAME", engine.as_str()),
            ("DB_USER", "root"),
            ("DB_INIT_PASS", db.password()),
        ];
        all.extend_from_slice(env);
        Self::start(&all)
    }

    /// An operator with its own managed engine.
    pub fn managed(env: &[(&str, &str)]) -> Operator {
        let mut all = vec![("DB_INIT_PASS", PASSWORD), ("ENGINE_BUFFER_POOL", "64M")];
        all.extend_from_slice(env);
        Self::start(&all)
    }

    fn start(env: &[(&str, &str)]) -> Operator {
        let mysql = reserve_port().expect("reserve MySQL port");
        let http = reserve_port().expect("reserve HTTP port");
        let data_dir = tempfile::Builder::new()
            .prefix("sdb-op-")
            .tempdir()
            .expect("temp dir");
        let log = data_dir.path().join("operator.log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_shared-db"));
        cmd.arg("serve")
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("RUST_LOG", "info,shared_db=debug")
            .env("DATA_DIR", data_dir.path().join("node"))
            .env("EXT_DB_PORT", mysql.port().to_string())
            .env("UI_PORT", http.port().to_string())
            .env("BIND_ADDRESS", "127.0.0.1");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = ManagedChild::spawn("shared-db", cmd, &log).expect("spawn shared-db");
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.contains("shared-db is ready") {
                break;
            }
            if let Some(status) = child.try_wait() {
                panic!("shared-db exited during start ({status}):\n{text}");
            }
            assert!(
                Instant::now() < deadline,
                "shared-db not ready in 90 s:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Operator {
            child,
            mysql,
            http,
            data_dir,
            log,
        }
    }

    pub fn port(&self) -> u16 {
        self.mysql.port()
    }
    pub fn http_port(&self) -> u16 {
        self.http.port()
    }
    pub fn pid(&self) -> Option<u32> {
        self.child.pid()
    }
    /// `mysql://root:<pw>@127.0.0.1:<port>` for a password (TCP only: never let the driver
    /// switch to a local socket, which would bypass the operator).
    pub fn url(&self, password: &str) -> String {
        format!(
            "mysql://root:{password}@127.0.0.1:{}?prefer_socket=false",
            self.port()
        )
    }
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `GET /status` as JSON.
    pub fn status(&self) -> serde_json::Value {
        let body = http_get(self.http_port(), "/status").expect("GET /status");
        serde_json::from_str(&body).expect("status is JSON")
    }

    /// Polls `/status` until `done` holds (a client's disconnect is processed a moment after
    /// the client exits); panics with the last status after `within`.
    pub fn wait_for_status(
        &self,
        what: &str,
        within: std::time::Duration,
        done: impl Fn(&serde_json::Value) -> bool,
    ) {
        let deadline = std::time::Instant::now() + within;
        loop {
            let st = self.status();
            if done(&st) {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{what}: not within {within:?}: {st}"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Stops the operator with SIGTERM and returns whether it exited cleanly.
    pub fn stop(&mut self) -> bool {
        self.child.stop().is_some_and(|s| s.success())
    }
}

/// A bounded HTTP/1.0 GET on 127.0.0.1; the body of a 200 response.
pub fn http_get(port: u16, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).ok()?;
    let (head, body) = resp.split_once("\r\n\r\n")?;
    head.contains(" 200 ").then(|| body.to_string())
}

/// Runs the `mariadb` CLI against the operator; returns (success, stdout+stderr).
pub fn mariadb_cli(port: u16, password: &str, args: &[&str], sql: &str) -> (bool, String) {
    let out = Command::new("mariadb")
        .arg("--no-defaults")
        .arg("-h127.0.0.1")
        .arg(format!("-P{port}"))
        .arg("-uroot")
        .arg("--batch")
        .arg("--skip-column-names")
        .args(args)
        .arg("-e")
        .arg(sql)
        .env("MYSQL_PWD", password)
        .output()
        .expect("run mariadb CLI");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Waits (bounded, 10 s) until the engine shows `sql` running in its process list.
pub async fn wait_until_running(conn: &mut mysql_async::Conn, sql: &str) {
    use mysql_async::prelude::Queryable;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let n: i64 = conn
            .exec_first(
                "SELECT COUNT(*) FROM information_schema.processlist WHERE info = ?",
                (sql,),
            )
            .await
            .unwrap()
            .unwrap();
        if n == 1 {
            return;
        }
        assert!(Instant::now() < deadline, "`{sql}` never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
