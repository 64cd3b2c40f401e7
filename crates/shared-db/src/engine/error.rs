//! Errors of the managed engine; each message says what failed and what to do about it.

use std::path::PathBuf;

/// What can go wrong while installing, starting, supervising or talking to the managed engine.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(
        "`{program}` was not found (looked in: {searched}); install the `mariadb-server` package \
         (e.g. `apt-get install mariadb-server`) or configure an external engine host"
    )]
    NotInstalled { program: String, searched: String },

    #[error("could not {what} `{}`: {source}; check that the path exists and is writable by the operator's user", path.display())]
    Io {
        what: String,
        path: PathBuf,
        source: std::io::Error,
    },

    #[error(
        "another shared-db operator is already using the data directory `{}`; stop it or give \
         this one a different data directory",
        path.display()
    )]
    InUse { path: PathBuf },

    #[error(
        "the socket directory `{}` is not private to this user ({reason}); remove it so it can \
         be recreated with mode 0700",
        path.display()
    )]
    SocketDir { path: PathBuf, reason: String },

    #[error(
        "the engine datadir `{}` exists but its password file `{}` is missing; restore the file \
         from a backup, or remove the datadir to reinitialise the engine (this deletes its data)",
        datadir.display(),
        secret.display()
    )]
    SecretMissing { datadir: PathBuf, secret: PathBuf },

    #[error(
        "the password file `{}` is malformed (expected 64 hex characters); restore it from a \
         backup, or remove it together with the engine datadir to reinitialise the engine",
        path.display()
    )]
    SecretInvalid { path: PathBuf },

    #[error("could not generate the engine password: {0}; the OS random source is unavailable")]
    Random(String),

    #[error(
        "`mariadb-install-db` failed ({status}); fix the cause shown in its output and start \
         again:\n{output}"
    )]
    InstallFailed { status: String, output: String },

    #[error("could not start `{}`: {source}; check the binary is executable", program.display())]
    Spawn {
        program: PathBuf,
        source: std::io::Error,
    },

    #[error(
        "mariadbd exited during start-up ({status}); see `{}`, last lines:\n{tail}",
        log.display()
    )]
    ExitedEarly {
        status: String,
        log: PathBuf,
        tail: String,
    },

    #[error(
        "mariadbd did not answer on `{}` within {seconds} s; raise the ready timeout or look \
         at `{}`, last lines:\n{tail}",
        socket.display(),
        log.display()
    )]
    NotReady {
        socket: PathBuf,
        seconds: u64,
        log: PathBuf,
        tail: String,
    },

    #[error(
        "a mariadbd left by a previous run (pid {pid}) still uses `{}` and did not stop on \
         SIGTERM or SIGKILL; stop it by hand and start again",
        dir.display()
    )]
    StaleEngine { pid: u32, dir: PathBuf },

    #[error("could not {what} on the engine: {source}; see the engine's error log")]
    Sql {
        what: String,
        source: mysql_async::Error,
    },

    #[error(
        "timed out after {seconds} s trying to {what} on the engine; see the engine's error log"
    )]
    SqlTimeout { what: String, seconds: u64 },

    #[error(
        "invalid database name {name:?}: {reason}; use a non-empty name of at most 64 characters"
    )]
    InvalidName { name: String, reason: &'static str },

    #[error("the engine is not running (state: {state}); see the operator log for why")]
    NotRunning { state: String },

    #[error(
        "the engine did not reach the running state within {seconds} s (state: {state}); see \
         the operator log and the engine's error log"
    )]
    WaitTimeout { seconds: u64, state: String },
}

impl EngineError {
    pub(crate) fn io(
        what: impl Into<String>,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        EngineError::Io {
            what: what.into(),
            path: path.into(),
            source,
        }
    }

    pub(crate) fn sql(what: impl Into<String>, source: mysql_async::Error) -> Self {
        EngineError::Sql {
            what: what.into(),
            source,
        }
    }

    /// True if retrying the same start cannot help (the binary is gone or not executable).
    pub(crate) fn is_permanent(&self) -> bool {
        match self {
            EngineError::NotInstalled { .. } => true,
            EngineError::Spawn { source, .. } => matches!(
                source.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied
            ),
            _ => false,
        }
    }
}
