//! Mutual authentication of agent registration with the join secret (HMAC-SHA256).
//!
//! The agent signs every registration ([`sign_request`]); the master checks the MAC and the
//! clock skew before it lists the agent ([`check_request`]) and signs its reply, binding the
//! request's nonce ([`sign_reply`]); the agent accepts the master's token key only from a reply
//! that verifies ([`check_reply`]). The secret itself never leaves either process.

use std::fmt::Write as _;

use fluxon_fs_proto::master_api::{RegisterReply, RegisterRequest};
use ring::hmac;

use crate::config::JoinSecret;

/// Largest accepted difference between the agent's and the master's clocks.
pub const MAX_CLOCK_SKEW_MS: u64 = 5 * 60 * 1000;

/// Why the master refused a registration (safe to log and to send back: no secret in it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JoinRefusal {
    #[error("registration MAC does not verify (wrong or missing join secret)")]
    BadMac,
    #[error("registration timestamp is {skew_ms} ms away from the master's clock (limit {MAX_CLOCK_SKEW_MS} ms)")]
    Skew { skew_ms: u64 },
}

fn key(secret: &JoinSecret) -> hmac::Key {
    hmac::Key::new(hmac::HMAC_SHA256, secret.expose())
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn from_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.is_ascii() {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}

fn mac_hex(secret: &JoinSecret, input: &[u8]) -> String {
    to_hex(hmac::sign(&key(secret), input).as_ref())
}

/// Constant-time check of a hex MAC.
fn verifies(secret: &JoinSecret, input: &[u8], mac: &str) -> bool {
    match from_hex(mac) {
        Some(tag) => hmac::verify(&key(secret), input, &tag).is_ok(),
        None => false,
    }
}

/// A fresh random nonce (hex).
pub fn new_nonce() -> String {
    let mut bytes = [0u8; 16];
    // A failing OS RNG leaves zeros: the MAC still proves the secret, only replay of the reply
    // becomes possible, which carries nothing but public data.
    let _ = getrandom::fill(&mut bytes);
    to_hex(&bytes)
}

/// Sets the request's timestamp, nonce and MAC.
pub fn sign_request(secret: &JoinSecret, req: &mut RegisterRequest, now_unix_ms: u64) {
    req.sent_unix_ms = now_unix_ms;
    req.nonce = new_nonce();
    req.mac = mac_hex(secret, &req.mac_input());
}

/// The master's check of a registration.
pub fn check_request(
    secret: &JoinSecret,
    req: &RegisterRequest,
    now_unix_ms: u64,
) -> Result<(), JoinRefusal> {
    if !verifies(secret, &req.mac_input(), &req.mac) {
        return Err(JoinRefusal::BadMac);
    }
    let skew_ms = now_unix_ms.abs_diff(req.sent_unix_ms);
    if skew_ms > MAX_CLOCK_SKEW_MS {
        return Err(JoinRefusal::Skew { skew_ms });
    }
    Ok(())
}

/// Sets the reply's MAC, bound to the request's nonce.
pub fn sign_reply(secret: &JoinSecret, request_nonce: &str, reply: &mut RegisterReply) {
    reply.mac = mac_hex(secret, &reply.mac_input(request_nonce));
}

/// The agent's check of the master's reply.
pub fn check_reply(secret: &JoinSecret, request_nonce: &str, reply: &RegisterReply) -> bool {
    verifies(secret, &reply.mac_input(request_nonce), &reply.mac)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn secret(s: &str) -> JoinSecret {
        JoinSecret::new(s.as_bytes().to_vec()).unwrap()
    }

    fn request() -> RegisterRequest {
        RegisterRequest {
            agent_instance_key: "a".into(),
            master_instance_key: "m".into(),
            data_addr: "127.0.0.1:1".into(),
            exports: BTreeMap::new(),
            sent_unix_ms: 0,
            nonce: String::new(),
            mac: String::new(),
        }
    }

    #[test]
    fn right_secret_verifies_and_any_change_does_not() {
        let s = secret("0123456789abcdef0123");
        let mut req = request();
        sign_request(&s, &mut req, 1_000_000);
        assert_eq!(check_request(&s, &req, 1_000_000 + 1000), Ok(()));
        assert_eq!(
            check_request(&secret("0123456789abcdef0124"), &req, 1_000_000),
            Err(JoinRefusal::BadMac)
        );
        let mut moved = req.clone();
        moved.data_addr = "10.0.0.1:1".into();
        assert_eq!(
            check_request(&s, &moved, 1_000_000),
            Err(JoinRefusal::BadMac)
        );
        let mut garbage = req.clone();
        garbage.mac = "zz".into();
        assert_eq!(
            check_request(&s, &garbage, 1_000_000),
            Err(JoinRefusal::BadMac)
        );
        assert!(matches!(
            check_request(&s, &req, 1_000_000 + MAX_CLOCK_SKEW_MS + 1),
            Err(JoinRefusal::Skew { .. })
        ));
    }

    #[test]
    fn reply_is_bound_to_the_nonce_and_the_secret() {
        let s = secret("0123456789abcdef0123");
        let mut reply = RegisterReply {
            master_instance_key: "m".into(),
            token_public_key: "k".into(),
            heartbeat_interval_ms: 1000,
            expire_after_ms: 3000,
            mac: String::new(),
        };
        sign_reply(&s, "n1", &mut reply);
        assert!(check_reply(&s, "n1", &reply));
        assert!(!check_reply(&s, "n2", &reply));
        assert!(!check_reply(&secret("another-secret-of-16"), "n1", &reply));
        reply.token_public_key = "attacker".into();
        assert!(!check_reply(&s, "n1", &reply));
    }
}
