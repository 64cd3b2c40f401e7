//! The agent config file (`fluxon-fs agent -c agent.yaml`).
//!
//! ```yaml
//! fluxon_fs:
//!   master:
//!     instance_key: demo_fs_master   # required; must match the running master
//!     pull_interval_ms: 1000         # optional; the master's value wins at runtime
//!   agent:
//!     instance_key: demo_fs_agent    # required; unique per agent machine
//!   cache:
//!     exports:                       # the static exports this agent serves
//!       demo-export:
//!         remote_root_dir_abs: /tmp/fluxon_fs_demo/remote_root
//! ```
//!
//! `fluxon_fs.agent.instance_key` is ours: upstream took the agent's identity from a separate
//! `kvclient` section, which this product does not have.

use serde::{Deserialize, Serialize};

use super::cache::CacheSection;
use super::checks::{self, record};
use super::master::MasterSection;
use super::{ConfigFile, ValidationErrors};

/// The whole agent config file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    pub fluxon_fs: AgentFluxonFs,
}

/// `fluxon_fs` in the agent config.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AgentFluxonFs {
    pub master: MasterSection,
    pub agent: AgentSection,
    pub cache: CacheSection,
}

/// `fluxon_fs.agent`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AgentSection {
    pub instance_key: String,
}

impl ConfigFile for AgentConfig {
    /// Checks values serde cannot, naming each key path.
    fn validate(&self) -> Result<(), ValidationErrors> {
        let mut errors = ValidationErrors::default();
        let fs = &self.fluxon_fs;
        fs.master.validate_into("fluxon_fs.master", &mut errors);
        record(
            &mut errors,
            "fluxon_fs.agent.instance_key",
            checks::identifier(&fs.agent.instance_key),
        );
        if fs.agent.instance_key == fs.master.instance_key {
            errors.push(
                "fluxon_fs.agent.instance_key",
                "must differ from fluxon_fs.master.instance_key",
            );
        }
        fs.cache.validate_into("fluxon_fs.cache", &mut errors);
        errors.into_result()
    }
}
