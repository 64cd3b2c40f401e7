//! Typed YAML config files for fluxon-fs.
//!
//! - [`MasterConfig`]: `fluxon-fs master -c master.yaml`
//! - [`AgentConfig`]: `fluxon-fs agent -c agent.yaml`
//! - [`ClientMasterConfig`] / [`CacheConfig`]: the strings `FluxonFsPatcher.set_master_config_yaml`
//!   and `set_cache_config_yaml` take.
//!
//! Every file has one top-level key, `fluxon_fs:`, and uses the seed's key names
//! (`fluxon_fs.master.instance_key`, `fluxon_fs.master_panel.access_db_path`,
//! `fluxon_fs.master_panel.bootstrap_access_model`, `fluxon_fs.master_panel.transfer_state_store`,
//! `fluxon_fs.cache.exports.<name>.remote_root_dir_abs`, ...). Each struct denies unknown
//! fields, so a typo is an error naming the key, its path and its line and column. After
//! parsing, `validate()` checks values and reports every problem with its dotted key path.
//!
//! Choices where the seed is silent (documented per file):
//! - No `kvclient` section: this product has no separate KV client config. The agent's identity
//!   is `fluxon_fs.agent.instance_key`.
//! - `bootstrap_access_model` and `transfer_state_store` sit under `master_panel`, as in the
//!   seed's example and upstream. `transfer_state_store` reuses [`crate::store::StoreConfig`]
//!   (`kind: redb | etcd | tikv`), so the seed's TiKV block parses as written.
//! - Upstream's `s3_gateway`, `cache.rules`, `agent_mounts` and legacy `rpc_*` keys are not
//!   accepted (unknown-key errors); `prometheus_base_url` is optional.
//! - `metadata_cache_ttl_ms` defaults to off (close-to-open consistency).

pub mod access;
pub mod agent;
pub mod cache;
mod checks;
pub mod client;
pub mod error;
pub mod join_secret;
pub mod master;
pub mod secret;
mod store_serde;

use std::path::Path;

use serde::de::DeserializeOwned;

pub use access::{AccessMode, BootstrapAccessModel, BootstrapUser, ScopeAccess};
pub use agent::{AgentConfig, AgentFluxonFs, AgentSection};
pub use cache::{CacheSection, ExportConfig};
pub use client::{CacheConfig, CacheFluxonFs, ClientMasterConfig, ClientMasterFluxonFs};
pub use error::{ConfigError, ValidationErrors, ValidationIssue};
pub use join_secret::{JoinSecret, JoinSecretSource};
pub use master::{MasterConfig, MasterFluxonFs, MasterPanel, MasterSection, MasterServerSection};
pub use secret::Secret;

/// A config file: parsed from YAML (unknown keys rejected by serde), then validated.
///
/// Each file type only says how it validates; parsing and loading are shared.
pub trait ConfigFile: DeserializeOwned {
    /// Checks values serde cannot, reporting every problem with its dotted key path.
    fn validate(&self) -> Result<(), ValidationErrors>;

    /// Parses and validates `text`; `origin` (usually the file path) labels errors.
    fn from_yaml_str(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let value: Self = serde_yaml::from_str(text).map_err(|e| ConfigError::parse(origin, &e))?;
        value
            .validate()
            .map_err(|errors| ConfigError::invalid(origin, errors))?;
        Ok(value)
    }

    /// Reads, parses and validates the file at `path`.
    fn load(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            origin: origin.clone(),
            source,
        })?;
        Self::from_yaml_str(&text, &origin)
    }
}
