//! Throwaway MariaDB servers: fresh datadir, private socket, reserved port, root password set.

use std::io::Read;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::ports::{reserve_port, PortReservation};
use crate::process::{find_program, log_tail, run, ManagedChild};
use crate::scratch::scratch_dir;

/// How a test MariaDB is started.
#[derive(Debug, Clone)]
pub struct MariaDbOptions {
    /// Password set for `root` (both `root@localhost` and `root@'%'`).
    pub root_password: String,
    /// Upper bound for the server to accept connections after start.
    pub ready_timeout: Duration,
    /// Extra `mariadbd` arguments (e.g. `--innodb-buffer-pool-size=1G`).
    pub extra_args: Vec<String>,
}

impl Default for MariaDbOptions {
    fn default() -> Self {
        MariaDbOptions {
            root_password: "testkit-root-pw".to_string(),
            ready_timeout: Duration::from_secs(60),
            extra_args: Vec::new(),
        }
    }
}

/// Connection details of a running test server, as printed by the `testkit` CLI.
#[derive(Debug, Clone, Serialize)]
pub struct MariaDbInfo {
    pub host: String,
    pub port: u16,
    pub socket: PathBuf,
    pub user: String,
    pub password: String,
    pub pid: Option<u32>,
    pub datadir: PathBuf,
}

/// A running MariaDB server owned by the test; stopped and deleted on drop.
#[derive(Debug)]
pub struct MariaDb {
    // Field order matters: the child stops before the directory is removed.
    child: ManagedChild,
    port: PortReservation,
    password: String,
    dir: tempfile::TempDir,
}

impl MariaDb {
    /// Starts a server with default options.
    pub fn start() -> Result<Self> {
        Self::start_with(MariaDbOptions::default())
    }

    /// Starts a server; retries with another port if the chosen one was taken meanwhile.
    pub fn start_with(opts: MariaDbOptions) -> Result<Self> {
        let mut last = None;
        for _ in 0..3 {
            match Self::try_start(&opts) {
                Ok(db) => return Ok(db),
                Err(e @ Error::ExitedEarly { .. })
                    if e.to_string().contains("Address already in use") =>
                {
                    last = Some(e)
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or(Error::NoFreePort { attempts: 3 }))
    }

    fn try_start(opts: &MariaDbOptions) -> Result<Self> {
        let install_db = find_program("mariadb-install-db", "mariadb-server")?;
        let mariadbd = find_program("mariadbd", "mariadb-server")?;
        find_program("mariadb", "mariadb-client")?;

        let dir = scratch_dir("mariadb")?;
        let datadir = dir.path().join("data");
        let log = dir.path().join("mariadbd.log");
        // A private tmpdir: a starting mariadbd deletes every `#sql*` file in its tmpdir, which
        // in a shared /tmp includes other servers' live temporary tables.
        let tmp = dir.path().join("tmp");
        std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
        let user = current_user();

        let mut install = Command::new(install_db);
        install
            .arg("--no-defaults")
            .arg(format!("--datadir={}", datadir.display()))
            .arg("--auth-root-authentication-method=normal")
            .arg("--skip-test-db")
            .arg(format!("--tmpdir={}", tmp.display()))
            .arg(format!("--user={user}"))
            .arg("--innodb-log-file-size=16M");
        run(install)?;

        let port = reserve_port()?;
        let socket = dir.path().join("mysqld.sock");
        let mut cmd = Command::new(mariadbd);
        cmd.arg("--no-defaults")
            .arg(format!("--datadir={}", datadir.display()))
            .arg(format!("--socket={}", socket.display()))
            .arg(format!("--port={}", port.port()))
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--tmpdir={}", tmp.display()))
            .arg(format!("--user={user}"))
            .arg(format!(
                "--pid-file={}",
                dir.path().join("mysqld.pid").display()
            ))
            .arg("--innodb-log-file-size=16M")
            .arg("--innodb-buffer-pool-size=64M")
            .arg("--skip-log-bin")
            .arg("--skip-name-resolve")
            .arg("--max-connections=500")
            .args(&opts.extra_args);
        let mut child = ManagedChild::spawn("mariadbd", cmd, &log)?;

        wait_for_handshake(&mut child, &socket, &log, opts.ready_timeout)?;

        let db = MariaDb {
            child,
            port,
            password: opts.root_password.clone(),
            dir,
        };
        // mariadb-install-db creates password-less root accounts for several hosts; keep one
        // for the socket and one for TCP, both with the password.
        let hosts = db.cli_as(None, "SELECT host FROM mysql.user WHERE user = 'root'")?;
        let mut sql = String::new();
        for host in hosts
            .lines()
            .map(str::trim)
            .filter(|h| !h.is_empty() && *h != "localhost")
        {
            sql.push_str(&format!("DROP USER 'root'@{};", sql_quote(host)));
        }
        let pw = sql_quote(&opts.root_password);
        sql.push_str(&format!(
            "ALTER USER 'root'@'localhost' IDENTIFIED BY {pw};\
             CREATE USER 'root'@'%' IDENTIFIED BY {pw};\
             GRANT ALL PRIVILEGES ON *.* TO 'root'@'%' WITH GRANT OPTION;"
        ));
        db.cli_as(None, &sql)?;
        Ok(db)
    }

    pub fn host(&self) -> &'static str {
        "127.0.0.1"
    }
    pub fn port(&self) -> u16 {
        self.port.port()
    }
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("mysqld.sock")
    }
    pub fn user(&self) -> &'static str {
        "root"
    }
    pub fn password(&self) -> &str {
        &self.password
    }
    pub fn datadir(&self) -> PathBuf {
        self.dir.path().join("data")
    }
    pub fn pid(&self) -> Option<u32> {
        self.child.pid()
    }
    /// `mysql://root:<pw>@127.0.0.1:<port>`; the password is URL-safe by construction in tests.
    pub fn url(&self) -> String {
        format!(
            "mysql://{}:{}@{}:{}",
            self.user(),
            self.password,
            self.host(),
            self.port()
        )
    }

    pub fn info(&self) -> MariaDbInfo {
        MariaDbInfo {
            host: self.host().to_string(),
            port: self.port(),
            socket: self.socket(),
            user: self.user().to_string(),
            password: self.password.clone(),
            pid: self.pid(),
            datadir: self.datadir(),
        }
    }

    /// Runs SQL through the `mariadb` CLI over the socket; returns tab-separated rows.
    pub fn cli(&self, sql: &str) -> Result<String> {
        self.cli_as(Some(&self.password), sql)
    }

    fn cli_as(&self, password: Option<&str>, sql: &str) -> Result<String> {
        let mut cmd = Command::new("mariadb");
        cmd.arg("--no-defaults")
            .arg("--protocol=socket")
            .arg(format!("--socket={}", self.socket().display()))
            .arg("--user=root")
            .arg("--batch")
            .arg("--skip-column-names")
            .arg("-e")
            .arg(sql);
        if let Some(pw) = password {
            // Passed through the environment so it does not show in `ps`.
            cmd.env("MYSQL_PWD", pw);
        }
        run(cmd)
    }

    /// Kills the server with SIGKILL (for fault tests). The directory stays until drop.
    pub fn kill(&mut self) {
        self.child.kill();
    }
}

fn wait_for_handshake(
    child: &mut ManagedChild,
    socket: &Path,
    log: &Path,
    timeout: Duration,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait() {
            return Err(Error::ExitedEarly {
                what: "mariadbd".into(),
                status: status.to_string(),
                log: log_tail(log, 20),
            });
        }
        if handshake_ok(socket) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(Error::NotReady {
                what: "mariadbd".into(),
                seconds: timeout.as_secs(),
                log: log_tail(log, 20),
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// True if the server on `socket` sends a protocol-10 handshake.
fn handshake_ok(socket: &Path) -> bool {
    let Ok(mut stream) = UnixStream::connect(socket) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut head = [0u8; 5];
    stream.read_exact(&mut head).is_ok() && head[4] == 10
}

fn sql_quote(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
}

fn current_user() -> String {
    // SAFETY: getpwuid returns a pointer into static storage or null; we copy out at once.
    unsafe {
        let pw = libc::getpwuid(libc::geteuid());
        if pw.is_null() {
            return "root".into();
        }
        std::ffi::CStr::from_ptr((*pw).pw_name)
            .to_string_lossy()
            .into_owned()
    }
}
