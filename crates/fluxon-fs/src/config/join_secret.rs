//! The agent join secret: configured inline (`agent_join_secret` on the master, `join_secret`
//! on the agent) or as a file (`..._file`), exactly one of the two. Agents prove it with an HMAC
//! when they register (see [`crate::join`]); it is never logged or sent.

use std::fmt;
use std::path::PathBuf;

use super::secret::Secret;
use super::ValidationErrors;

/// Shortest accepted secret, in bytes.
pub const MIN_SECRET_BYTES: usize = 16;

/// Where a join secret comes from, as configured.
#[derive(Clone)]
pub struct JoinSecretSource {
    /// Key path of the inline form; the file form is the same path with `_file` appended.
    key_path: &'static str,
    inline: Option<Secret>,
    file: Option<PathBuf>,
}

/// Why a join secret could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum JoinSecretError {
    #[error("{key}: cannot read {path}: {source}")]
    Read {
        key: String,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{key}: {message}")]
    Invalid { key: String, message: String },
}

/// A loaded join secret. `Debug` is redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinSecret(Vec<u8>);

impl JoinSecret {
    /// Wraps secret bytes (at least [`MIN_SECRET_BYTES`] long).
    pub fn new(bytes: impl Into<Vec<u8>>) -> Result<JoinSecret, String> {
        let bytes = bytes.into();
        if bytes.len() < MIN_SECRET_BYTES {
            return Err(format!(
                "must be at least {MIN_SECRET_BYTES} bytes (got {})",
                bytes.len()
            ));
        }
        Ok(JoinSecret(bytes))
    }

    /// The secret bytes (for the HMAC key only).
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for JoinSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JoinSecret(<redacted>)")
    }
}

impl fmt::Debug for JoinSecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinSecretSource")
            .field("key_path", &self.key_path)
            .field("inline", &self.inline.as_ref().map(|_| "<redacted>"))
            .field("file", &self.file)
            .finish()
    }
}

impl JoinSecretSource {
    pub fn new(key_path: &'static str, inline: Option<Secret>, file: Option<PathBuf>) -> Self {
        JoinSecretSource {
            key_path,
            inline,
            file,
        }
    }

    fn file_key(&self) -> String {
        format!("{}_file", self.key_path)
    }

    /// Checks that exactly one form is set and that an inline secret is long enough.
    pub fn validate_into(&self, errors: &mut ValidationErrors) {
        match (&self.inline, &self.file) {
            (None, None) => errors.push(
                self.key_path,
                format!(
                    "(or {}) is required: agents prove this secret when they register",
                    self.file_key()
                ),
            ),
            (Some(_), Some(_)) => errors.push(
                self.key_path,
                format!("and {} are exclusive: set one", self.file_key()),
            ),
            (Some(inline), None) => {
                if let Err(message) = JoinSecret::new(inline.expose().as_bytes()) {
                    errors.push(self.key_path, message);
                }
            }
            (None, Some(path)) => {
                if path.as_os_str().is_empty() {
                    errors.push(self.file_key(), "must be a non-empty path");
                }
            }
        }
    }

    /// Loads the secret (reads the file form; a trailing newline is not part of it).
    pub fn load(&self) -> Result<JoinSecret, JoinSecretError> {
        match (&self.inline, &self.file) {
            (Some(inline), None) => {
                JoinSecret::new(inline.expose().as_bytes()).map_err(|message| {
                    JoinSecretError::Invalid {
                        key: self.key_path.to_string(),
                        message,
                    }
                })
            }
            (None, Some(path)) => {
                let text = std::fs::read(path).map_err(|source| JoinSecretError::Read {
                    key: self.file_key(),
                    path: path.display().to_string(),
                    source,
                })?;
                let trimmed = text.trim_ascii_end();
                JoinSecret::new(trimmed).map_err(|message| JoinSecretError::Invalid {
                    key: self.file_key(),
                    message: format!("{}: the file's content {message}", path.display()),
                })
            }
            _ => Err(JoinSecretError::Invalid {
                key: self.key_path.to_string(),
                message: format!("exactly one of it and {} must be set", self.file_key()),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_form_ignores_the_trailing_newline_and_checks_length() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        std::fs::write(&path, "0123456789abcdef\n").unwrap();
        let src = JoinSecretSource::new("fluxon_fs.agent.join_secret", None, Some(path.clone()));
        assert_eq!(src.load().unwrap().expose(), b"0123456789abcdef");
        std::fs::write(&path, "short\n").unwrap();
        let err = src.load().unwrap_err().to_string();
        assert!(
            err.starts_with("fluxon_fs.agent.join_secret_file:"),
            "{err}"
        );
        assert!(!err.contains("short"), "{err}");
    }

    #[test]
    fn debug_is_redacted() {
        let s = JoinSecret::new(b"0123456789abcdef-secret".to_vec()).unwrap();
        assert_eq!(format!("{s:?}"), "JoinSecret(<redacted>)");
        let src = JoinSecretSource::new("k", Some(Secret::new("0123456789abcdef-secret")), None);
        assert!(!format!("{src:?}").contains("0123456789abcdef"));
    }
}
