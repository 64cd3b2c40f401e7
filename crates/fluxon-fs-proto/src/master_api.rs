//! JSON bodies of the master's HTTP API (`/api/v1/...`), shared by the master, agents and
//! clients.
//!
//! | route | who | body → reply |
//! |---|---|---|
//! | `POST /api/v1/login` | client | [`LoginRequest`] → [`TokenReply`] |
//! | `POST /api/v1/token/refresh` | client (bearer token) | – → [`TokenReply`] |
//! | `GET /api/v1/snapshot` | client (bearer token) | – → [`Snapshot`] |
//! | `POST /api/v1/agents/register` | agent (register + heartbeat) | [`RegisterRequest`] → [`RegisterReply`] |
//!
//! Errors come back with a non-2xx status and an [`ErrorBody`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoginRequest {
    pub username: String,
    pub password: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenReply {
    pub token: String,
    pub username: String,
    pub manager: bool,
    pub expires_unix_ms: u64,
}

/// One agent serving an export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentRoute {
    pub instance_key: String,
    /// `host:port` of the agent's data endpoint.
    pub addr: String,
}

/// What a client needs to reach the online exports.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Snapshot {
    pub master_instance_key: String,
    pub pull_interval_ms: u64,
    /// Ed25519 public key (base64url) that verifies the master's tokens.
    pub token_public_key: String,
    /// The online exports as a `fluxon_fs.cache` YAML document (what `set_cache_config_yaml`
    /// takes).
    pub cache_config_yaml: String,
    /// Export name → agents serving it (every online export).
    pub exports: BTreeMap<String, Vec<AgentRoute>>,
    /// Exports the caller may see.
    pub visible_exports: Vec<String>,
}

/// An export as an agent announces it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportInfo {
    pub remote_root_dir_abs: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_max_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inline_bytes_max_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata_cache_ttl_ms: Option<u64>,
}

/// Agent registration and heartbeat (the same call, repeated).
///
/// Authenticated with the join secret both agent and master are configured with: `mac` is
/// HMAC-SHA256 over [`RegisterRequest::mac_input`], and the reply's `mac` covers the request's
/// nonce and the reply, so neither side accepts the other without the secret.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegisterRequest {
    pub agent_instance_key: String,
    /// The master the agent's config names; a mismatch is refused.
    pub master_instance_key: String,
    /// `host:port` clients connect to.
    pub data_addr: String,
    pub exports: BTreeMap<String, ExportInfo>,
    /// The agent's clock when sending; the master refuses requests too far from its own.
    pub sent_unix_ms: u64,
    /// Random, fresh per request (hex); echoed into the reply's MAC.
    pub nonce: String,
    /// HMAC-SHA256 of [`RegisterRequest::mac_input`] with the join secret (hex).
    pub mac: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegisterReply {
    pub master_instance_key: String,
    pub token_public_key: String,
    /// Send the next heartbeat after this long.
    pub heartbeat_interval_ms: u64,
    /// The master forgets the agent if no heartbeat arrives within this.
    pub expire_after_ms: u64,
    /// HMAC-SHA256 of [`RegisterReply::mac_input`] with the join secret (hex).
    pub mac: String,
}

/// Appends a length-prefixed field (so field boundaries cannot be shifted).
fn field(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u64).to_be_bytes());
    out.extend_from_slice(bytes);
}

impl RegisterRequest {
    /// The bytes the request MAC covers: every field but `mac`, length-prefixed, after a
    /// domain tag.
    pub fn mac_input(&self) -> Vec<u8> {
        let mut out = b"fluxon-fs agent register request v1".to_vec();
        field(&mut out, self.agent_instance_key.as_bytes());
        field(&mut out, self.master_instance_key.as_bytes());
        field(&mut out, self.data_addr.as_bytes());
        // BTreeMap order and fixed field order make this deterministic on both sides.
        let exports = serde_json::to_vec(&self.exports).unwrap_or_default();
        field(&mut out, &exports);
        field(&mut out, &self.sent_unix_ms.to_be_bytes());
        field(&mut out, self.nonce.as_bytes());
        out
    }
}

impl RegisterReply {
    /// The bytes the reply MAC covers: the request's nonce and every reply field but `mac`.
    pub fn mac_input(&self, request_nonce: &str) -> Vec<u8> {
        let mut out = b"fluxon-fs agent register reply v1".to_vec();
        field(&mut out, request_nonce.as_bytes());
        field(&mut out, self.master_instance_key.as_bytes());
        field(&mut out, self.token_public_key.as_bytes());
        field(&mut out, &self.heartbeat_interval_ms.to_be_bytes());
        field(&mut out, &self.expire_after_ms.to_be_bytes());
        out
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}
