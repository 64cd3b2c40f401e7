//! Client errors: an errno with a message (and the path when known), a timeout, or a bad
//! argument. The Python binding maps them to `OSError(errno, msg, filename)`, `TimeoutError`
//! and `ValueError`.

use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// An operating-system style error (from the agent's filesystem, access checks or the
    /// network).
    #[error("{message}")]
    Os {
        errno: i32,
        message: String,
        path: Option<String>,
    },
    /// A master or agent did not answer within the bound.
    #[error("{what} did not answer within {after:?}")]
    Timeout { what: String, after: Duration },
    /// The caller passed something unusable.
    #[error("{0}")]
    InvalidArgument(String),
}

impl ClientError {
    pub fn os(errno: i32, message: impl Into<String>) -> ClientError {
        ClientError::Os {
            errno,
            message: message.into(),
            path: None,
        }
    }

    /// Attaches `path` to an `Os` error that has none.
    pub fn with_path(self, path: &str) -> ClientError {
        match self {
            ClientError::Os {
                errno,
                message,
                path: None,
            } => ClientError::Os {
                errno,
                message,
                path: Some(path.to_string()),
            },
            other => other,
        }
    }

    /// The errno of an `Os` error.
    pub fn errno(&self) -> Option<i32> {
        match self {
            ClientError::Os { errno, .. } => Some(*errno),
            ClientError::Timeout { .. } => Some(libc::ETIMEDOUT),
            ClientError::InvalidArgument(_) => Some(libc::EINVAL),
        }
    }
}

pub type Result<T> = std::result::Result<T, ClientError>;
