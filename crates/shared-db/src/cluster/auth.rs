//! Node-to-node authentication: every internal API request carries an HMAC-SHA256 over its
//! method, path, timestamp, a nonce and the SHA-256 of its body, keyed with the shared cluster
//! secret. The body's SHA-256 also travels as a header, so the receiver checks the MAC (in
//! constant time) before reading any body, and then checks the body against it. Timestamps
//! outside a window are refused and nonces inside it remembered, so a captured request cannot be
//! replayed.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

pub const H_TIMESTAMP: &str = "x-shared-db-timestamp";
pub const H_NONCE: &str = "x-shared-db-nonce";
pub const H_SIGNATURE: &str = "x-shared-db-signature";
pub const H_BODY: &str = "x-shared-db-body-sha256";
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
    #[error("the body does not match its signed hash")]
    BodyMismatch,
}

/// The headers of one signed request.
#[derive(Debug, Clone)]
pub struct Signed {
    pub body_sha256: String,
    pub timestamp_ms: u64,
    pub nonce: String,
    pub signature: String,
}

/// The authentication headers of a request, as received.
#[derive(Debug, Default, Clone, Copy)]
pub struct Presented<'a> {
    pub timestamp: Option<&'a str>,
    pub nonce: Option<&'a str>,
    pub signature: Option<&'a str>,
    pub body_sha256: Option<&'a str>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Hex SHA-256 of a request body.
pub fn body_hash(body: &[u8]) -> String {
    hex::encode(Sha256::digest(body))
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

    fn mac(&self, method: &str, path: &str, ts: u64, nonce: &str, body_hash: &str) -> Hmac<Sha256> {
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
        let body_sha256 = body_hash(body);
        let sig = self
            .mac(method, path, ts, &nonce, &body_sha256)
            .finalize()
            .into_bytes();
        Signed {
            body_sha256,
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
    seen: Mutex<SeenNonces>,
}

/// Nonces seen within the replay window, with the time each may be forgotten. Expired ones
/// are dropped oldest first as new ones arrive, so a check costs O(1) however busy the
/// cluster is.
#[derive(Debug, Default)]
struct SeenNonces {
    expiry: HashMap<String, u64>,
    /// Nonces in arrival order with their expiry.
    order: std::collections::VecDeque<(u64, String)>,
}

impl SeenNonces {
    /// Records `nonce` (expiring at `until`) unless it is already known and unexpired at `now`.
    fn insert_fresh(&mut self, nonce: &str, now: u64, until: u64) -> bool {
        // Arrival order is close to expiry order (timestamps are within the window of the
        // clock), so popping expired ones from the front keeps the set near its live size.
        while let Some((exp, _)) = self.order.front() {
            if *exp > now {
                break;
            }
            if let Some((exp, old)) = self.order.pop_front() {
                if self.expiry.get(&old) == Some(&exp) {
                    self.expiry.remove(&old);
                }
            }
        }
        if self.expiry.get(nonce).is_some_and(|exp| *exp > now) {
            return false;
        }
        self.expiry.insert(nonce.to_string(), until);
        self.order.push_back((until, nonce.to_string()));
        true
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.expiry.len()
    }
}

impl Verifier {
    pub fn new(secret: ClusterSecret) -> Self {
        Verifier {
            secret,
            seen: Mutex::new(SeenNonces::default()),
        }
    }

    /// Checks the headers (signature, freshness, nonce) without the body; the caller then
    /// checks the body with [`Verifier::check_body`].
    pub fn verify_headers(
        &self,
        method: &str,
        path: &str,
        h: Presented<'_>,
    ) -> Result<(), AuthError> {
        let ts: u64 = h
            .timestamp
            .ok_or(AuthError::Missing(H_TIMESTAMP))?
            .parse()
            .map_err(|_| AuthError::Malformed(H_TIMESTAMP))?;
        let nonce = h.nonce.ok_or(AuthError::Missing(H_NONCE))?;
        if nonce.is_empty() || nonce.len() > 64 {
            return Err(AuthError::Malformed(H_NONCE));
        }
        let body_sha = h.body_sha256.ok_or(AuthError::Missing(H_BODY))?;
        if body_sha.len() != 64 {
            return Err(AuthError::Malformed(H_BODY));
        }
        let sig = hex::decode(h.signature.ok_or(AuthError::Missing(H_SIGNATURE))?)
            .map_err(|_| AuthError::Malformed(H_SIGNATURE))?;
        self.secret
            .mac(method, path, ts, nonce, body_sha)
            .verify_slice(&sig)
            .map_err(|_| AuthError::BadSignature)?;
        let now = now_ms();
        let window = REPLAY_WINDOW.as_millis() as u64;
        if ts.abs_diff(now) > window {
            return Err(AuthError::Stale);
        }
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if !seen.insert_fresh(nonce, now, ts + window) {
            return Err(AuthError::Replayed);
        }
        Ok(())
    }

    /// Checks a body against the hash the signature covered.
    pub fn check_body(signed_hash: &str, body: &[u8]) -> Result<(), AuthError> {
        if body_hash(body).eq_ignore_ascii_case(signed_hash) {
            Ok(())
        } else {
            Err(AuthError::BodyMismatch)
        }
    }

    /// Headers and body at once.
    pub fn verify(
        &self,
        method: &str,
        path: &str,
        h: Presented<'_>,
        body: &[u8],
    ) -> Result<(), AuthError> {
        self.verify_headers(method, path, h)?;
        Self::check_body(h.body_sha256.unwrap_or_default(), body)
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
        let sig = s.sign("POST", "/raft/vote", b"body");
        let ts = sig.timestamp_ms.to_string();
        let h = Presented {
            timestamp: Some(&ts),
            nonce: Some(&sig.nonce),
            signature: Some(&sig.signature),
            body_sha256: Some(&sig.body_sha256),
        };
        let v = Verifier::new(s.clone());
        // Tampered path, or a different body with its own hash under the old signature.
        assert_eq!(
            v.verify("POST", "/raft/append", h, b"body"),
            Err(AuthError::BadSignature)
        );
        let other_hash = body_hash(b"bodx");
        let forged = Presented {
            body_sha256: Some(&other_hash),
            ..h
        };
        assert_eq!(
            v.verify("POST", "/raft/vote", forged, b"bodx"),
            Err(AuthError::BadSignature)
        );
        // A body swapped under valid headers.
        let v = Verifier::new(s.clone());
        assert_eq!(
            v.verify("POST", "/raft/vote", h, b"bodx"),
            Err(AuthError::BodyMismatch)
        );
        let v = Verifier::new(s.clone());
        assert_eq!(v.verify("POST", "/raft/vote", h, b"body"), Ok(()));
        assert_eq!(
            v.verify("POST", "/raft/vote", h, b"body"),
            Err(AuthError::Replayed)
        );
        let other = Verifier::new(secret("another-secret-value"));
        assert_eq!(
            other.verify("POST", "/raft/vote", h, b"body"),
            Err(AuthError::BadSignature)
        );
    }

    #[test]
    fn seen_nonces_are_refused_until_they_expire_and_then_forgotten() {
        let mut seen = SeenNonces::default();
        assert!(seen.insert_fresh("a", 1_000, 31_000));
        assert!(!seen.insert_fresh("a", 2_000, 32_000));
        for i in 0..10_000u64 {
            assert!(seen.insert_fresh(&format!("n{i}"), 2_000 + i, 32_000 + i));
        }
        assert_eq!(seen.len(), 10_001);
        // Past the window everything before is forgotten: the set stays at its live size.
        assert!(seen.insert_fresh("b", 50_000, 80_000));
        assert_eq!(seen.len(), 1);
        assert!(seen.insert_fresh("a", 50_001, 80_001));
    }

    #[test]
    fn stale_and_missing_headers_are_refused() {
        let s = secret("0123456789abcdef-two");
        let v = Verifier::new(s.clone());
        let old = now_ms() - 120_000;
        let hash = body_hash(b"");
        let sig = hex::encode(s.mac("GET", "/x", old, "n1", &hash).finalize().into_bytes());
        let ts = old.to_string();
        let h = Presented {
            timestamp: Some(&ts),
            nonce: Some("n1"),
            signature: Some(&sig),
            body_sha256: Some(&hash),
        };
        assert_eq!(v.verify("GET", "/x", h, b""), Err(AuthError::Stale));
        let missing = Presented {
            timestamp: None,
            ..h
        };
        assert_eq!(
            v.verify("GET", "/x", missing, b""),
            Err(AuthError::Missing(H_TIMESTAMP))
        );
        assert!(ClusterSecret::new("short").is_err());
        assert_eq!(format!("{s:?}"), "ClusterSecret(<redacted>)");
    }
}
