//! Export-relative paths: '/'-separated, no leading '/', '' for the export root.
//!
//! Only normal components are accepted: no empty, `.` or `..` components and no NUL bytes, so a
//! path can never name anything above the export root lexically. (Symlinks are handled by the
//! agent's resolution, which stays beneath the root.)

/// Why a path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("path `{path}` is not a valid export-relative path: {reason}")]
pub struct RelPathError {
    pub path: String,
    pub reason: &'static str,
}

/// Splits a validated export-relative path into its components ('' gives none).
pub fn components(path: &str) -> Result<Vec<&str>, RelPathError> {
    let err = |reason| RelPathError {
        path: path.to_string(),
        reason,
    };
    if path.is_empty() {
        return Ok(Vec::new());
    }
    if path.starts_with('/') {
        return Err(err("it must not start with '/'"));
    }
    if path.contains('\0') {
        return Err(err("it contains a NUL byte"));
    }
    let mut parts = Vec::new();
    for part in path.split('/') {
        match part {
            "" => return Err(err("it has an empty component")),
            "." => return Err(err("it has a `.` component")),
            ".." => return Err(err("it leaves its directory with `..`")),
            other => parts.push(other),
        }
    }
    Ok(parts)
}

/// `parent/name` ('' parent gives `name`).
pub fn join(parent: &str, name: &str) -> String {
    if parent.is_empty() {
        name.to_string()
    } else {
        format!("{parent}/{name}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_normal_paths() {
        assert_eq!(components("").unwrap(), Vec::<&str>::new());
        assert_eq!(components("a/b.txt").unwrap(), vec!["a", "b.txt"]);
        assert_eq!(components("...").unwrap(), vec!["..."]);
    }

    #[test]
    fn rejects_escapes() {
        for bad in ["/etc", "..", "a/../b", "a//b", "a/", "./a", "a\0b"] {
            assert!(components(bad).is_err(), "{bad:?} accepted");
        }
    }
}
