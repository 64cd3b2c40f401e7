//! Starting one `mariadbd` process and waiting, with a bound, until it accepts connections.

use std::ffi::OsString;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::admin::handshake_ready;
use super::child::{ChildProc, Exit, OwnedChild};
use super::error::EngineError;
use super::layout::{path_arg, EnginePaths};

/// Pause between readiness probes.
const READY_POLL: Duration = Duration::from_millis(50);
/// How many error-log lines go into start-up errors.
const LOG_TAIL_LINES: usize = 20;
/// How much of the end of the error log is read to find those lines.
const LOG_TAIL_BYTES: u64 = 64 * 1024;

/// Where one engine process keeps its data and listens.
#[derive(Debug, Clone)]
pub(crate) struct Instance {
    pub(crate) datadir: PathBuf,
    pub(crate) socket: PathBuf,
    pub(crate) pid_file: PathBuf,
    pub(crate) tcp_port: Option<u16>,
}

impl Instance {
    /// The engine proper, as configured.
    pub(crate) fn main(paths: &EnginePaths, tcp_port: Option<u16>) -> Instance {
        Instance {
            datadir: paths.datadir.clone(),
            socket: paths.socket.clone(),
            pid_file: paths.pid_file.clone(),
            tcp_port,
        }
    }
}

/// Everything needed to start `mariadbd`, fixed at start-up.
#[derive(Debug, Clone)]
pub(crate) struct Launcher {
    pub(crate) mariadbd: PathBuf,
    pub(crate) user: String,
    pub(crate) log_file: PathBuf,
    pub(crate) tmp_dir: PathBuf,
    pub(crate) buffer_pool: String,
    pub(crate) max_connections: u32,
    pub(crate) extra_args: Vec<String>,
    pub(crate) ready_timeout: Duration,
}

impl Launcher {
    /// The `mariadbd` command line for `inst` (`--no-defaults` must come first).
    pub(crate) fn args(&self, inst: &Instance) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec![
            "--no-defaults".into(),
            path_arg("--datadir", &inst.datadir),
            path_arg("--socket", &inst.socket),
            path_arg("--pid-file", &inst.pid_file),
            path_arg("--log-error", &self.log_file),
            path_arg("--tmpdir", &self.tmp_dir),
            format!("--user={}", self.user).into(),
            "--skip-name-resolve".into(),
            format!("--innodb-buffer-pool-size={}", self.buffer_pool).into(),
            format!("--max-connections={}", self.max_connections).into(),
            "--skip-log-bin".into(),
        ];
        match inst.tcp_port {
            Some(port) => {
                args.push(format!("--port={port}").into());
                args.push("--bind-address=127.0.0.1".into());
            }
            None => args.push("--skip-networking".into()),
        }
        args.extend(self.extra_args.iter().map(OsString::from));
        args
    }

    /// Spawns `mariadbd` for `inst`; its stdout and stderr go to the error log too.
    pub(crate) async fn spawn(&self, inst: &Instance) -> Result<OwnedChild, EngineError> {
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(&self.log_file)
            .map_err(|e| EngineError::io("open the engine log", &self.log_file, e))?;
        let log_err = log
            .try_clone()
            .map_err(|e| EngineError::io("open the engine log", &self.log_file, e))?;
        let mut cmd = Command::new(&self.mariadbd);
        cmd.args(self.args(inst))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        let child =
            ChildProc::spawn("mariadbd", cmd)
                .await
                .map_err(|source| EngineError::Spawn {
                    program: self.mariadbd.clone(),
                    source,
                })?;
        tracing::debug!(pid = child.pid(), datadir = %inst.datadir.display(), "spawned mariadbd");
        Ok(OwnedChild::new(child))
    }

    /// Waits until `child` answers on `socket`, it exits, or the ready timeout passes.
    pub(crate) async fn wait_ready(
        &self,
        child: &ChildProc,
        socket: &Path,
    ) -> Result<(), EngineError> {
        let deadline = Instant::now() + self.ready_timeout;
        loop {
            if let Some(status) = child.exit_status() {
                return Err(self.exited_early(status));
            }
            if handshake_ready(socket).await {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(EngineError::NotReady {
                    socket: socket.to_path_buf(),
                    seconds: self.ready_timeout.as_secs(),
                    log: self.log_file.clone(),
                    tail: log_tail(&self.log_file),
                });
            }
            tokio::select! {
                _ = child.wait_exit() => {}
                _ = tokio::time::sleep(READY_POLL) => {}
            }
        }
    }

    fn exited_early(&self, exit: Exit) -> EngineError {
        EngineError::ExitedEarly {
            status: exit.to_string(),
            log: self.log_file.clone(),
            tail: log_tail(&self.log_file),
        }
    }
}

/// The last lines of the error log (only its end is read; it grows without bound).
pub(crate) fn log_tail(path: &Path) -> String {
    let Ok(mut file) = std::fs::File::open(path) else {
        return format!("(no log at {})", path.display());
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(LOG_TAIL_BYTES)));
    let mut bytes = Vec::new();
    let _ = file.read_to_end(&mut bytes);
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn launcher() -> Launcher {
        Launcher {
            mariadbd: "/usr/sbin/mariadbd".into(),
            user: "mysql".into(),
            log_file: "/d/engine/mariadbd.log".into(),
            tmp_dir: "/d/engine/tmp".into(),
            buffer_pool: "256M".into(),
            max_connections: 1000,
            extra_args: vec!["--innodb-flush-log-at-trx-commit=2".into()],
            ready_timeout: Duration::from_secs(60),
        }
    }

    #[test]
    fn socket_only_by_default_and_loopback_tcp_on_request() {
        let paths = EnginePaths::new(Path::new("/d"));
        let args = launcher().args(&Instance::main(&paths, None));
        assert_eq!(args[0], "--no-defaults");
        assert!(args.contains(&"--skip-networking".into()));
        assert!(args.contains(&"--datadir=/d/engine/data".into()));
        assert!(args.contains(&"--user=mysql".into()));
        assert!(args.contains(&"--tmpdir=/d/engine/tmp".into()));
        assert_eq!(
            args.last(),
            Some(&OsString::from("--innodb-flush-log-at-trx-commit=2"))
        );
        let tcp = launcher().args(&Instance::main(&paths, Some(3306)));
        assert!(!tcp.contains(&"--skip-networking".into()));
        assert!(tcp.contains(&"--port=3306".into()));
        assert!(tcp.contains(&"--bind-address=127.0.0.1".into()));
    }

    #[test]
    fn log_tail_keeps_the_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("x.log");
        let text: String = (0..100).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&log, text).unwrap();
        let tail = log_tail(&log);
        assert!(tail.starts_with("line 80"));
        assert!(tail.ends_with("line 99"));
        assert!(log_tail(&dir.path().join("missing")).contains("no log"));
    }
}
