//! TLS for client connections: a configured certificate and key, or a self-signed pair
//! generated once into the data dir.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} holds no usable PEM {what}")]
    NoPem { path: PathBuf, what: &'static str },
    #[error("cannot generate a self-signed certificate: {0}")]
    Generate(String),
    #[error("TLS configuration rejected: {0}")]
    Config(String),
}

/// Builds the acceptor from `cert`/`key`, or from a self-signed pair under `dir` (created on
/// first use, key file mode 0600).
pub fn acceptor(
    cert: Option<&Path>,
    key: Option<&Path>,
    dir: &Path,
) -> Result<tokio_rustls::TlsAcceptor, TlsError> {
    let (cert_path, key_path) = match (cert, key) {
        (Some(c), Some(k)) => (c.to_path_buf(), k.to_path_buf()),
        _ => ensure_self_signed(dir)?,
    };
    let certs = read_certs(&cert_path)?;
    let key = read_key(&key_path)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

fn ensure_self_signed(dir: &Path) -> Result<(PathBuf, PathBuf), TlsError> {
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    if cert_path.exists() && key_path.exists() {
        return Ok((cert_path, key_path));
    }
    std::fs::create_dir_all(dir).map_err(|source| TlsError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    let cert =
        rcgen::generate_simple_self_signed(names).map_err(|e| TlsError::Generate(e.to_string()))?;
    crate::private_file::write_private(&key_path, cert.signing_key.serialize_pem().as_bytes())
        .map_err(|source| TlsError::Write {
            path: key_path.clone(),
            source,
        })?;
    std::fs::write(&cert_path, cert.cert.pem()).map_err(|source| TlsError::Write {
        path: cert_path.clone(),
        source,
    })?;
    tracing::info!(cert = %cert_path.display(), "generated a self-signed TLS certificate");
    Ok((cert_path, key_path))
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let data = std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut data.as_slice())
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(TlsError::NoPem {
            path: path.to_path_buf(),
            what: "certificate",
        });
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let data = std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    rustls_pemfile::private_key(&mut data.as_slice())
        .ok()
        .flatten()
        .ok_or(TlsError::NoPem {
            path: path.to_path_buf(),
            what: "private key",
        })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn self_signed_pair_is_generated_once_with_a_private_key_file() {
        let dir = tempfile::tempdir().unwrap();
        super::acceptor(None, None, dir.path()).unwrap();
        let cert1 = std::fs::read(dir.path().join("cert.pem")).unwrap();
        let mode = std::fs::metadata(dir.path().join("key.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        super::acceptor(None, None, dir.path()).unwrap();
        assert_eq!(cert1, std::fs::read(dir.path().join("cert.pem")).unwrap());
    }

    #[test]
    fn missing_files_are_reported_by_path() {
        let err = super::acceptor(
            Some(std::path::Path::new("/nonexistent/c.pem")),
            Some(std::path::Path::new("/nonexistent/k.pem")),
            std::path::Path::new("/tmp"),
        )
        .err()
        .unwrap();
        assert!(err.to_string().contains("/nonexistent/c.pem"));
    }
}
