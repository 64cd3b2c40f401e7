//! The agent config file (`fluxon-fs agent -c agent.yaml`).
//!
//! ```yaml
//! fluxon_fs:
//!   master:
//!     instance_key: demo_fs_master   # required; must match the running master
//!     pull_interval_ms: 1000         # optional; the master's value wins at runtime
//!   agent:
//!     instance_key: demo_fs_agent    # required; unique per agent machine
//!     listen_addr: 0.0.0.0:34190     # required; data endpoint bind address
//!     advertise_addr: host:34190     # optional; what clients dial (required if listen_addr
//!                                    # is a wildcard address)
//!     master_addr: 127.0.0.1:34180   # required; the master's HTTP endpoint
//!     join_secret_file: /etc/fluxon/join_secret  # one of the two is required: the master's
//!     # join_secret: "..."                       # agent_join_secret, proven on registration
//!   cache:
//!     exports:                       # the static exports this agent serves
//!       demo-export:
//!         remote_root_dir_abs: /tmp/fluxon_fs_demo/remote_root
//! ```
//!
//! `fluxon_fs.agent` is ours: upstream took the agent's identity and addresses from a separate
//! `kvclient` section and the KV cluster, which this product does not have.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::cache::CacheSection;
use super::checks::{self, record};
use super::join_secret::JoinSecretSource;
use super::master::MasterSection;
use super::secret::Secret;
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
    pub listen_addr: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advertise_addr: Option<String>,
    pub master_addr: String,
    /// The master's `agent_join_secret`, proven (HMAC) on every registration; inline form.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub join_secret: Option<Secret>,
    /// The same secret read from a file (trailing newline ignored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub join_secret_file: Option<PathBuf>,
}

impl AgentSection {
    /// The address clients dial: `advertise_addr`, else `listen_addr`.
    pub fn data_addr(&self) -> &str {
        self.advertise_addr.as_deref().unwrap_or(&self.listen_addr)
    }

    /// The join secret source, as configured.
    pub fn join_secret_source(&self) -> JoinSecretSource {
        JoinSecretSource::new(
            "fluxon_fs.agent.join_secret",
            self.join_secret.clone(),
            self.join_secret_file.clone(),
        )
    }
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
        let agent = &fs.agent;
        for (key, value) in [
            ("listen_addr", Some(&agent.listen_addr)),
            ("advertise_addr", agent.advertise_addr.as_ref()),
            ("master_addr", Some(&agent.master_addr)),
        ] {
            if let Some(value) = value {
                record(
                    &mut errors,
                    format!("fluxon_fs.agent.{key}"),
                    checks::host_port(value),
                );
            }
        }
        let wildcard = agent
            .listen_addr
            .parse::<std::net::SocketAddr>()
            .is_ok_and(|a| a.ip().is_unspecified());
        if wildcard && agent.advertise_addr.is_none() {
            errors.push(
                "fluxon_fs.agent.advertise_addr",
                "is required when listen_addr is a wildcard address (clients cannot dial it)",
            );
        }
        if fs.agent.instance_key == fs.master.instance_key {
            errors.push(
                "fluxon_fs.agent.instance_key",
                "must differ from fluxon_fs.master.instance_key",
            );
        }
        agent.join_secret_source().validate_into(&mut errors);
        fs.cache.validate_into("fluxon_fs.cache", &mut errors);
        errors.into_result()
    }
}
