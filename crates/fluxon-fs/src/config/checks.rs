//! Small value checks shared by the config validators. Each returns `Err(message)` where the
//! message completes the sentence "<key path> ...".

use std::net::SocketAddr;
use std::path::{Component, Path};

/// Export names: non-empty, no `/`, `\`, whitespace or control characters, not `.` or `..`.
pub(crate) fn export_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must be a non-empty export name".into());
    }
    if name == "." || name == ".." {
        return Err("must not be `.` or `..`".into());
    }
    let bad = |c: char| c == '/' || c == '\\' || c.is_whitespace() || c.is_control();
    if name.chars().any(bad) {
        return Err("must not contain `/`, `\\`, whitespace or control characters".into());
    }
    Ok(())
}

/// A non-empty identifier without surrounding whitespace (instance keys).
pub(crate) fn identifier(value: &str) -> Result<(), String> {
    if value.trim().is_empty() {
        return Err("must be non-empty".into());
    }
    if value.trim() != value {
        return Err("must not have leading or trailing whitespace".into());
    }
    Ok(())
}

/// An absolute path with no `..` components.
pub(crate) fn absolute_path(path: &Path) -> Result<(), String> {
    if !path.is_absolute() {
        return Err("must be an absolute path".into());
    }
    if path.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err("must not contain `..`".into());
    }
    Ok(())
}

/// `host:port` (or `[v6]:port`) with a non-empty host and a port in 1..=65535.
pub(crate) fn host_port(value: &str) -> Result<(), String> {
    if value.parse::<SocketAddr>().is_ok() {
        return Ok(());
    }
    let Some((host, port)) = value.rsplit_once(':') else {
        return Err(format!("must be host:port, got `{value}`"));
    };
    let port_ok = port.parse::<u16>().is_ok_and(|p| p != 0);
    let host_ok = !host.is_empty() && !host.contains(['/', ' ', ':']);
    if port_ok && host_ok {
        Ok(())
    } else {
        Err(format!("must be host:port, got `{value}`"))
    }
}

/// An `http://` or `https://` URL with a host (optionally `:port` and a path).
pub(crate) fn http_url(value: &str) -> Result<(), String> {
    let rest = value
        .strip_prefix("http://")
        .or_else(|| value.strip_prefix("https://"));
    let Some(rest) = rest else {
        return Err(format!(
            "must start with http:// or https://, got `{value}`"
        ));
    };
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.is_empty() || authority.contains(char::is_whitespace) {
        return Err(format!("must name a host, got `{value}`"));
    }
    Ok(())
}

/// A scope prefix: empty (whole export) or a relative path of normal components, optionally
/// ending in `/`.
pub(crate) fn scope_prefix(prefix: &str) -> Result<(), String> {
    if prefix.is_empty() {
        return Ok(());
    }
    if prefix.starts_with('/') {
        return Err("must be relative to the export root (no leading `/`)".into());
    }
    let trimmed = prefix.strip_suffix('/').unwrap_or(prefix);
    let bad = trimmed
        .split('/')
        .any(|part| part.is_empty() || part == "." || part == "..");
    if bad {
        return Err("must be empty or `dir/...` without empty, `.` or `..` components".into());
    }
    Ok(())
}

/// Zero is rejected where a positive number is required.
pub(crate) fn positive(value: u64) -> Result<(), String> {
    if value == 0 {
        Err("must be greater than 0".into())
    } else {
        Ok(())
    }
}

/// Runs `check` and records its failure under `key_path`.
pub(crate) fn record(
    errors: &mut super::ValidationErrors,
    key_path: impl Into<String>,
    check: Result<(), String>,
) {
    if let Err(message) = check {
        errors.push(key_path, message);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_accepts_ips_and_names() {
        for ok in ["0.0.0.0:34180", "[::1]:1", "localhost:80", "pd-0.svc:2379"] {
            assert_eq!(host_port(ok), Ok(()), "{ok}");
        }
        for bad in ["", "host", ":80", "h:0", "h:65536", "http://h:80", "a b:1"] {
            assert!(host_port(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn http_url_needs_scheme_and_host() {
        assert_eq!(http_url("https://h:4000/v1/prometheus"), Ok(()));
        assert_eq!(http_url("http://h"), Ok(()));
        for bad in ["h:80", "ftp://h", "http://", "http:///x"] {
            assert!(http_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn scope_prefixes() {
        for ok in ["", "docs/", "a/b", "a/b/"] {
            assert_eq!(scope_prefix(ok), Ok(()), "{ok}");
        }
        for bad in ["/", "/a/", "a//b/", "../a/", "a/./b", "/"] {
            assert!(scope_prefix(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn export_names_and_paths() {
        assert_eq!(export_name("demo-export"), Ok(()));
        for bad in ["", ".", "..", "a/b", "a\\b", "a\tb", "a\u{7}"] {
            assert!(export_name(bad).is_err(), "{bad:?}");
        }
        assert_eq!(absolute_path(Path::new("/srv/x")), Ok(()));
        assert!(absolute_path(Path::new("srv/x")).is_err());
        assert!(absolute_path(Path::new("/srv/../etc")).is_err());
    }
}
