//! Node-to-node authentication: every internal API request carries an HMAC-SHA256 over its
//! method, path, timestamp, a nonce and the SHA-256 of its body, keyed with the shared cluster
//! secret. The receiver checks the MAC in constant time, refuses timestamps outside a window and
//! remembers nonces inside it, so a captured request cannot be replayed.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

pub const H_TIMESTAMP: &str = "x-shared-db-timestamp";
pub const H_NONCE: &str = "x-shared-db-nonce";
pub const H_SIGNATURE: &str = "x-shared-db-signature";
pub const H_NODE: &str = "x-shared-db-node";

/// How far a request's timestamp may be from the receiver's clock.
pub const REPLAY_WINDOW: Duration = Duration::from_secs(30);

/// The shared cluster secret. Its `Debug` never shows the value.
#[derive(Clone)]
pub struct ClusterSecret(Vec<u8>);

impl std::fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterSecret(<redacted>)")
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("missing authentication header {0}")]
    Missing(&'static str),
    #[error("malformed authentication header {0}")]
    Malformed(&'static str),
    #[error("timestamp outside the replay window")]
    Stale,
    #[error("nonce already used")]
    Replayed,
    #[error("bad signature (wrong cluster secret?)")]
    BadSignature,
}

/// The headers of one signed request.
#[derive(Debug, Clone)]
pub struct Signed {
    pub timestamp_ms: u64,
    pub nonce: String,
    pub signature: String,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl ClusterSecret {
    /// At least 16 bytes; surrounding whitespace (a trailing newline in a file) is dropped.
    pub fn new(secret: &str) -> Result<Self, String> {
        let s = secret.trim();
        if s.len() < 16 {
            return Err("the cluster secret must be at least 16 characters".into());
        }
        Ok(ClusterSecret(s.as_bytes().to_vec()))
    }

    fn mac(&self, method: &str, path: &str, ts: u64, nonce: &str, body: &[u8]) -> Hmac<Sha256> {
        let body_hash = hex::encode(Sha256::digest(body));
        // Hmac accepts keys of any length.
        let mut mac = match Hmac::<Sha256>::new_from_slice(&self.0) {
            Ok(m) => m,
            Err(_) => unreachable!("HMAC takes keys of any length"),
        };
        mac.update(format!("v1\n{method}\n{path}\n{ts}\n{nonce}\n{body_hash}").as_bytes());
        mac
    }

    /// Signs a request now.
    pub fn sign(&self, method: &str, path: &str, body: &[u8]) -> Signed {
        let ts = now_ms();
        let mut n = [0u8; 16];
        // A nonce that repeats only weakens replay protection; it never breaks a request.
        let _ = getrandom::fill(&mut n);
        let nonce = hex::encode(n);
        let sig = self
            .mac(method, path, ts, &nonce, body)
            .finalize()
            .into_bytes();
        Signed {
            timestamp_ms: ts,
            nonce,
            signature: hex::encode(sig),
        }
    }
}

/// Verifies signed requests and remembers recent nonces.
#[derive(Debug)]
pub struct Verifier {
    secret: ClusterSecret,
    seen: Mutex<HashMap<String, u64>>,
}

impl Verifier {
    pub fn new(secret: ClusterSecret) -> Self {
        Verifier {
            secret,
            seen: Mutex::new(HashMap::new()),
        }
    }

    pub fn verify(
        &self,
        method: &str,
        path: &str,
        timestamp: Option<&str>,
        nonce: Option<&str>,
        signature: Option<&str>,
        body: &[u8],
    ) -> Result<(), AuthError> {
        let ts: u64 = timestamp
            .ok_or(AuthError::Missing(H_TIMESTAMP))?
            .parse()
            .map_err(|_| AuthError::Malformed(H_TIMESTAMP))?;
        let nonce = nonce.ok_or(AuthError::Missing(H_NONCE))?;
        if nonce.is_empty() || nonce.len() > 64 {
            return Err(AuthError::Malformed(H_NONCE));
        }
        let sig = hex::decode(signature.ok_or(AuthError::Missing(H_SIGNATURE))?)
            .map_err(|_| AuthError::Malformed(H_SIGNATURE))?;
        self.secret
            .mac(method, path, ts, nonce, body)
            .verify_slice(&sig)
            .map_err(|_| AuthError::BadSignature)?;
        let now = now_ms();
        let window = REPLAY_WINDOW.as_millis() as u64;
        if ts.abs_diff(now) > window {
            return Err(AuthError::Stale);
        }
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.len() > 4096 {
            seen.retain(|_, exp| *exp > now);
        }
        if seen.get(nonce).is_some_and(|exp| *exp > now) {
            return Err(AuthError::Replayed);
        }
        seen.insert(nonce.to_string(), ts + window);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(s: &str) -> ClusterSecret {
        ClusterSecret::new(s).unwrap()
    }

    #[test]
    fn signed_requests_verify_once_and_only_with_the_same_secret() {
        let s = secret("0123456789abcdef-one");
        let v = Verifier::new(s.clone());
        let sig = s.sign("POST", "/raft/vote", b"body");
        let check = |v: &Verifier, path: &str, body: &[u8]| {
            v.verify(
                "POST",
                path,
                Some(&sig.timestamp_ms.to_string()),
                Some(&sig.nonce),
                Some(&sig.signature),
                body,
            )
        };
        // Tampered body or path.
        assert_eq!(
            check(&v, "/raft/vote", b"bodx"),
            Err(AuthError::BadSignature)
        );
        assert_eq!(
            check(&v, "/raft/append", b"body"),
            Err(AuthError::BadSignature)
        );
        assert_eq!(check(&v, "/raft/vote", b"body"), Ok(()));
        assert_eq!(check(&v, "/raft/vote", b"body"), Err(AuthError::Replayed));
        let other = Verifier::new(secret("another-secret-value"));
        assert_eq!(
            check(&other, "/raft/vote", b"body"),
            Err(AuthError::BadSignature)
        );
    }

    #[test]
    fn stale_and_missing_headers_are_refused() {
        let s = secret("0123456789abcdef-two");
        let v = Verifier::new(s.clone());
        let old = now_ms() - 120_000;
        let sig = s.mac("GET", "/x", old, "n1", b"").finalize().into_bytes();
        assert_eq!(
            v.verify(
                "GET",
                "/x",
                Some(&old.to_string()),
                Some("n1"),
                Some(&hex::encode(sig)),
                b""
            ),
            Err(AuthError::Stale)
        );
        assert_eq!(
            v.verify("GET", "/x", None, Some("n"), Some("00"), b""),
            Err(AuthError::Missing(H_TIMESTAMP))
        );
        assert!(ClusterSecret::new("short").is_err());
        assert_eq!(format!("{s:?}"), "ClusterSecret(<redacted>)");
    }
}
