//! `mysql_native_password` verification against a stored verifier, and per-connection scrambles.
//!
//! The operator never stores the client password: it keeps `SHA1(SHA1(password))`, the same
//! verifier MySQL keeps in `mysql.user`. A client proves knowledge of `SHA1(password)` with
//! `token = SHA1(password) XOR SHA1(scramble || verifier)`.

use sha1::{Digest, Sha1};

/// Length of the random challenge sent in the handshake.
pub const SCRAMBLE_LEN: usize = 20;

/// The stored form of a password: `SHA1(SHA1(password))`, or "no password".
#[derive(Clone)]
pub struct Verifier(Option<[u8; 20]>);

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Verifier(<redacted>)")
    }
}

impl Verifier {
    /// Builds the verifier for `password`; the empty password means "no password".
    pub fn from_password(password: &str) -> Self {
        if password.is_empty() {
            return Verifier(None);
        }
        let stage1 = Sha1::digest(password.as_bytes());
        Verifier(Some(Sha1::digest(stage1).into()))
    }

    pub fn has_password(&self) -> bool {
        self.0.is_some()
    }

    /// Checks a client's auth response for `scramble`.
    pub fn verify(&self, scramble: &[u8], token: &[u8]) -> bool {
        match self.0 {
            None => token.is_empty(),
            Some(stored) => {
                if token.len() != 20 {
                    return false;
                }
                let mut h = Sha1::new();
                h.update(scramble);
                h.update(stored);
                let mask = h.finalize();
                let mut stage1 = [0u8; 20];
                for i in 0..20 {
                    stage1[i] = token[i] ^ mask[i];
                }
                let candidate: [u8; 20] = Sha1::digest(stage1).into();
                constant_time_eq(&candidate, &stored)
            }
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A fresh random scramble: printable bytes without NUL, as servers send them.
pub fn new_scramble() -> Result<[u8; SCRAMBLE_LEN], getrandom::Error> {
    let mut s = [0u8; SCRAMBLE_LEN];
    getrandom::fill(&mut s)?;
    for b in &mut s {
        // Keep bytes in 1..=127: a NUL would end the field early.
        *b = (*b & 0x7F).max(1);
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifies_what_a_client_computes() {
        let scramble = new_scramble().unwrap();
        let v = Verifier::from_password("s3cret");
        let token = mysql_common::scramble::scramble_native(&scramble, b"s3cret").unwrap();
        assert!(v.verify(&scramble, &token));
        let wrong = mysql_common::scramble::scramble_native(&scramble, b"s3creT").unwrap();
        assert!(!v.verify(&scramble, &wrong));
        assert!(!v.verify(&scramble, &token[..19]));
        assert!(!v.verify(&scramble, b""));
        let other = new_scramble().unwrap();
        assert!(
            !v.verify(&other, &token),
            "a token is bound to its scramble"
        );
    }

    #[test]
    fn empty_password_accepts_only_an_empty_token() {
        let v = Verifier::from_password("");
        assert!(v.verify(b"whatever", b""));
        assert!(!v.verify(b"whatever", &[1; 20]));
    }

    #[test]
    fn scrambles_have_no_nul_and_differ() {
        let a = new_scramble().unwrap();
        let b = new_scramble().unwrap();
        assert!(a.iter().all(|&x| x != 0));
        assert_ne!(a, b);
        assert!(!format!("{:?}", Verifier::from_password("pw")).contains("pw\""));
    }
}
