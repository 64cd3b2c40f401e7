//! Errors reported by the harness; each says what failed and what to do about it.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("`{program}` was not found on PATH; install the `{package}` package (scripts/install-deps does)")]
    MissingProgram {
        program: &'static str,
        package: &'static str,
    },
    #[error("could not start `{program}`: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("`{program}` failed ({status}): {output}")]
    CommandFailed {
        program: String,
        status: String,
        output: String,
    },
    #[error("{what} did not become ready within {seconds} s; last log lines:\n{log}")]
    NotReady {
        what: String,
        seconds: u64,
        log: String,
    },
    #[error("{what} exited during start-up ({status}); last log lines:\n{log}")]
    ExitedEarly {
        what: String,
        status: String,
        log: String,
    },
    #[error("no free TCP port found on 127.0.0.1 after {attempts} attempts")]
    NoFreePort { attempts: usize },
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
