//! The YAML strings a client process injects through `FluxonFsPatcher`:
//! `set_master_config_yaml` takes [`ClientMasterConfig`] (`fluxon_fs.master.instance_key`,
//! optional `pull_interval_ms`) and `set_cache_config_yaml` takes [`CacheConfig`]
//! (`fluxon_fs.cache`, the export snapshot). Both are wrapped in the top-level `fluxon_fs:` key
//! so the same keys mean the same thing in every file.

use serde::{Deserialize, Serialize};

use super::cache::CacheSection;
use super::master::MasterSection;
use super::{ConfigFile, ValidationErrors};

/// Input of `set_master_config_yaml`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClientMasterConfig {
    pub fluxon_fs: ClientMasterFluxonFs,
}

/// `fluxon_fs` in [`ClientMasterConfig`].
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClientMasterFluxonFs {
    pub master: MasterSection,
}

/// Input of `set_cache_config_yaml`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    pub fluxon_fs: CacheFluxonFs,
}

/// `fluxon_fs` in [`CacheConfig`].
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CacheFluxonFs {
    pub cache: CacheSection,
}

impl ConfigFile for ClientMasterConfig {
    /// Checks values serde cannot, naming each key path.
    fn validate(&self) -> Result<(), ValidationErrors> {
        let mut errors = ValidationErrors::default();
        self.fluxon_fs
            .master
            .validate_into("fluxon_fs.master", &mut errors);
        errors.into_result()
    }
}

impl ConfigFile for CacheConfig {
    /// Checks values serde cannot, naming each key path.
    fn validate(&self) -> Result<(), ValidationErrors> {
        let mut errors = ValidationErrors::default();
        self.fluxon_fs
            .cache
            .validate_into("fluxon_fs.cache", &mut errors);
        errors.into_result()
    }
}
