//! The internal engine password: 32 random bytes as hex, kept in a 0600 file.
//!
//! The operator connects to its engine as `root@localhost` with this password. It is generated
//! once, before the engine datadir is created, written atomically (temp file, fsync, rename) and
//! never logged: [`Secret`]'s `Debug` output is redacted.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use sha1::{Digest, Sha1};

use super::error::EngineError;

const SECRET_BYTES: usize = 32;

/// The internal password. `Debug` does not show it.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Secret(String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl Secret {
    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }

    /// The `mysql_native_password` hash (`*` + hex SHA1(SHA1(password))), so that statements
    /// setting the password never carry it in clear text (e.g. into a general query log).
    pub(crate) fn native_hash(&self) -> String {
        let inner = Sha1::digest(self.0.as_bytes());
        let outer = Sha1::digest(inner);
        format!("*{}", hex_upper(&outer))
    }
}

/// Reads the secret file, or `None` if it does not exist. Tightens a too-open mode to 0600.
pub(crate) fn load(path: &Path) -> Result<Option<Secret>, EngineError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(EngineError::io("read the password file", path, e)),
    };
    let secret = text.trim();
    if secret.len() != 2 * SECRET_BYTES || !secret.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(EngineError::SecretInvalid {
            path: path.to_path_buf(),
        });
    }
    restrict_mode(path)?;
    Ok(Some(Secret(secret.to_string())))
}

fn restrict_mode(path: &Path) -> Result<(), EngineError> {
    let meta = std::fs::metadata(path).map_err(|e| EngineError::io("inspect", path, e))?;
    if meta.permissions().mode() & 0o077 == 0 {
        return Ok(());
    }
    tracing::warn!(path = %path.display(), "the engine password file was readable by others; setting mode 0600");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| EngineError::io("set the mode of", path, e))
}

/// Generates a new secret and stores it at `path` (mode 0600), replacing any previous file.
pub(crate) fn create(path: &Path) -> Result<Secret, EngineError> {
    let secret = Secret(
        crate::private_file::random_hex(SECRET_BYTES)
            .map_err(|e| EngineError::Random(e.to_string()))?,
    );
    crate::private_file::write_private(path, secret.as_str().as_bytes())
        .map_err(|e| EngineError::io("write", path, e))?;
    Ok(secret)
}

/// Makes a rename in `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), EngineError> {
    crate::private_file::sync_dir(dir).map_err(|e| EngineError::io("sync", dir, e))
}

fn hex_upper(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn native_hash_matches_mariadb_password_function() {
        // SELECT PASSWORD('password') in MariaDB.
        let s = Secret("password".into());
        assert_eq!(s.native_hash(), "*2470C0C06DEE42FD1618BB99005ADCA2EC9D1E19");
    }

    #[test]
    fn debug_output_is_redacted() {
        let s = Secret("topsecret".into());
        assert!(!format!("{s:?}").contains("topsecret"));
    }

    #[test]
    fn created_secrets_are_private_hex_and_load_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("operator.secret");
        assert!(load(&path).unwrap().is_none());
        let s = create(&path).unwrap();
        assert_eq!(s.as_str().len(), 64);
        assert!(s.as_str().bytes().all(|b| b.is_ascii_hexdigit()));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(load(&path).unwrap(), Some(s));
    }

    #[test]
    fn malformed_or_open_files_are_handled() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("operator.secret");
        std::fs::write(&path, "not hex").unwrap();
        assert!(matches!(
            load(&path),
            Err(EngineError::SecretInvalid { .. })
        ));
        std::fs::write(&path, "ab".repeat(32)).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(load(&path).unwrap().is_some());
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
