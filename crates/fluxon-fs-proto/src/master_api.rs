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
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegisterRequest {
    pub agent_instance_key: String,
    /// The master the agent's config names; a mismatch is refused.
    pub master_instance_key: String,
    /// `host:port` clients connect to.
    pub data_addr: String,
    pub exports: BTreeMap<String, ExportInfo>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegisterReply {
    pub master_instance_key: String,
    pub token_public_key: String,
    /// Send the next heartbeat after this long.
    pub heartbeat_interval_ms: u64,
    /// The master forgets the agent if no heartbeat arrives within this.
    pub expire_after_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}
