//! Access tokens: claims signed by the master with Ed25519, verified by agents.
//!
//! A token is `base64url(postcard(Claims)) "." base64url(signature)`; the signature covers a
//! domain tag followed by the encoded claims. The claims carry the user's scopes, so an agent
//! checks every request without a password, a password hash or a call to the master. Tokens
//! are short-lived; revocation takes effect when the token expires.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::scope::{Grants, Scope};

const DOMAIN: &[u8] = b"fluxon-fs token v1\0";
/// Accepted clock difference between master and agent.
pub const CLOCK_SKEW_MS: u64 = 30_000;

/// What a token says about its holder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// `fluxon_fs.master.instance_key` of the issuing master.
    pub issuer: String,
    pub username: String,
    pub manager: bool,
    pub scopes: Vec<Scope>,
    pub issued_unix_ms: u64,
    pub expires_unix_ms: u64,
}

impl Grants for Claims {
    fn is_manager(&self) -> bool {
        self.manager
    }
    fn scopes(&self) -> &[Scope] {
        &self.scopes
    }
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("malformed access token")]
    Malformed,
    #[error("access token signature mismatch (not issued by this master, or altered)")]
    BadSignature,
    #[error("access token expired; log in again")]
    Expired,
    #[error("access token was issued by master `{got}`, expected `{expected}`")]
    WrongIssuer { expected: String, got: String },
    #[error("invalid public key: {0}")]
    BadKey(String),
}

/// Signs tokens (master side).
pub struct TokenSigner {
    key: SigningKey,
}

impl std::fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSigner")
            .field("public_key", &self.public_key_b64())
            .finish()
    }
}

impl TokenSigner {
    /// A signer from a 32-byte secret seed.
    pub fn from_seed(seed: &[u8; 32]) -> TokenSigner {
        TokenSigner {
            key: SigningKey::from_bytes(seed),
        }
    }

    /// The verifying key, base64url encoded (what agents and clients receive).
    pub fn public_key_b64(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.key.verifying_key().as_bytes())
    }

    /// Signs `claims` into a token string.
    pub fn sign(&self, claims: &Claims) -> String {
        // Encoding a struct of strings, bools and integers into a Vec cannot fail.
        let body = postcard::to_allocvec(claims).unwrap_or_default();
        let signature = self.key.sign(&signed_bytes(&body));
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(&body),
            URL_SAFE_NO_PAD.encode(signature.to_bytes())
        )
    }
}

/// Verifies tokens (agent and master side).
#[derive(Debug, Clone)]
pub struct TokenVerifier {
    key: VerifyingKey,
    issuer: String,
}

impl TokenVerifier {
    /// A verifier for tokens of master `issuer` with public key `public_key_b64`.
    pub fn new(
        public_key_b64: &str,
        issuer: impl Into<String>,
    ) -> Result<TokenVerifier, TokenError> {
        let bytes = URL_SAFE_NO_PAD
            .decode(public_key_b64)
            .map_err(|e| TokenError::BadKey(e.to_string()))?;
        let bytes: [u8; 32] = bytes
            .try_into()
            .map_err(|_| TokenError::BadKey("expected 32 bytes".into()))?;
        let key =
            VerifyingKey::from_bytes(&bytes).map_err(|e| TokenError::BadKey(e.to_string()))?;
        Ok(TokenVerifier {
            key,
            issuer: issuer.into(),
        })
    }

    /// Checks signature, issuer and expiry (at `now_unix_ms`) and returns the claims.
    pub fn verify(&self, token: &str, now_unix_ms: u64) -> Result<Claims, TokenError> {
        let claims = self.verify_signature(token)?;
        if claims.issuer != self.issuer {
            return Err(TokenError::WrongIssuer {
                expected: self.issuer.clone(),
                got: claims.issuer,
            });
        }
        check_expiry(&claims, now_unix_ms)?;
        Ok(claims)
    }

    fn verify_signature(&self, token: &str) -> Result<Claims, TokenError> {
        let (body, sig) = token.split_once('.').ok_or(TokenError::Malformed)?;
        let body = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| TokenError::Malformed)?;
        let sig = URL_SAFE_NO_PAD
            .decode(sig)
            .map_err(|_| TokenError::Malformed)?;
        let sig: [u8; 64] = sig.try_into().map_err(|_| TokenError::Malformed)?;
        self.key
            .verify_strict(&signed_bytes(&body), &Signature::from_bytes(&sig))
            .map_err(|_| TokenError::BadSignature)?;
        postcard::from_bytes(&body).map_err(|_| TokenError::Malformed)
    }
}

/// Fails if the claims are expired at `now_unix_ms` (allowing [`CLOCK_SKEW_MS`]).
pub fn check_expiry(claims: &Claims, now_unix_ms: u64) -> Result<(), TokenError> {
    if claims.expires_unix_ms.saturating_add(CLOCK_SKEW_MS) < now_unix_ms {
        Err(TokenError::Expired)
    } else {
        Ok(())
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn signed_bytes(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(DOMAIN.len() + body.len());
    out.extend_from_slice(DOMAIN);
    out.extend_from_slice(body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scope::AccessMode;

    fn claims(expires: u64) -> Claims {
        Claims {
            issuer: "m".into(),
            username: "alice".into(),
            manager: false,
            scopes: vec![Scope::new("e", "docs/", AccessMode::Read)],
            issued_unix_ms: 0,
            expires_unix_ms: expires,
        }
    }

    #[test]
    fn sign_and_verify() {
        let signer = TokenSigner::from_seed(&[7; 32]);
        let verifier = TokenVerifier::new(&signer.public_key_b64(), "m").unwrap();
        let token = signer.sign(&claims(1_000_000));
        assert_eq!(verifier.verify(&token, 1_000).unwrap(), claims(1_000_000));
        assert_eq!(verifier.verify(&token, 2_000_000), Err(TokenError::Expired));
        let other = TokenVerifier::new(&signer.public_key_b64(), "n").unwrap();
        assert!(matches!(
            other.verify(&token, 1_000),
            Err(TokenError::WrongIssuer { .. })
        ));
    }

    #[test]
    fn rejects_tampering_and_foreign_keys() {
        let signer = TokenSigner::from_seed(&[7; 32]);
        let verifier = TokenVerifier::new(&signer.public_key_b64(), "m").unwrap();
        let mut forged = claims(u64::MAX / 2);
        forged.manager = true;
        let evil = TokenSigner::from_seed(&[8; 32]).sign(&forged);
        assert_eq!(verifier.verify(&evil, 0), Err(TokenError::BadSignature));
        let token = signer.sign(&claims(u64::MAX / 2));
        let (_, sig) = token.split_once('.').unwrap();
        let body = URL_SAFE_NO_PAD.encode(postcard::to_allocvec(&forged).unwrap());
        assert_eq!(
            verifier.verify(&format!("{body}.{sig}"), 0),
            Err(TokenError::BadSignature)
        );
        assert_eq!(verifier.verify("garbage", 0), Err(TokenError::Malformed));
    }
}
