//! The master config file (`fluxon-fs master -c master.yaml`).
//!
//! ```yaml
//! fluxon_fs:
//!   master:
//!     instance_key: demo_fs_master     # required; clients and agents find the master by it
//!     pull_interval_ms: 1000           # optional, >0; snapshot poll interval handed to clients
//!     agent_join_secret_file: /etc/fluxon/join_secret  # one of the two is required: the
//!     # agent_join_secret: "..."                       # secret agents prove when registering
//!   master_panel:
//!     listen_addr: 0.0.0.0:34180       # required, host:port; bind address only
//!     public_base_url: http://h:34180  # optional; links shown by the UI
//!     prometheus_base_url: http://h:4000/v1/prometheus  # optional; transfer history charts
//!     auto_refresh_interval_secs: 2    # optional, >0
//!     access_db_path: /path/to/access.db  # required; the long-lived authority
//!     bootstrap_access_model: {...}    # required; see `access`
//!     transfer_state_store:            # optional; absent = transfers disabled
//!       kind: tikv
//!       tikv: {pd_endpoints: ["127.0.0.1:12379"], key_prefix: /fluxon_fs_transfer/demo/}
//!   cache: {...}                       # optional (default: no exports); see `cache`
//! ```

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::access::BootstrapAccessModel;
use super::cache::CacheSection;
use super::checks::{self, record};
use super::join_secret::JoinSecretSource;
use super::secret::Secret;
use super::{ConfigFile, ValidationErrors};
use crate::store::StoreConfig;

/// The whole master config file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MasterConfig {
    pub fluxon_fs: MasterFluxonFs,
}

/// `fluxon_fs` in the master config.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MasterFluxonFs {
    pub master: MasterServerSection,
    pub master_panel: MasterPanel,
    #[serde(default)]
    pub cache: CacheSection,
}

/// `fluxon_fs.master`: shared by the master, agent and client configs.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MasterSection {
    pub instance_key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_interval_ms: Option<u64>,
}

/// `fluxon_fs.master_panel`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MasterPanel {
    pub listen_addr: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_base_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus_base_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_refresh_interval_secs: Option<u64>,
    pub access_db_path: PathBuf,
    pub bootstrap_access_model: BootstrapAccessModel,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transfer_state_store: Option<StoreConfig>,
}

/// `fluxon_fs.master` in the master's own config: the shared keys plus the agent join secret.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MasterServerSection {
    pub instance_key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_interval_ms: Option<u64>,
    /// The secret agents prove (HMAC) when they register; inline form.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_join_secret: Option<Secret>,
    /// The same secret read from a file (trailing newline ignored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_join_secret_file: Option<PathBuf>,
}

impl MasterServerSection {
    /// The join secret source, as configured.
    pub fn join_secret_source(&self) -> JoinSecretSource {
        JoinSecretSource::new(
            "fluxon_fs.master.agent_join_secret",
            self.agent_join_secret.clone(),
            self.agent_join_secret_file.clone(),
        )
    }

    fn validate_into(&self, path: &str, errors: &mut ValidationErrors) {
        MasterSection {
            instance_key: self.instance_key.clone(),
            pull_interval_ms: self.pull_interval_ms,
        }
        .validate_into(path, errors);
        self.join_secret_source().validate_into(errors);
    }
}

impl ConfigFile for MasterConfig {
    /// Checks values serde cannot: every problem found, each naming its key path.
    fn validate(&self) -> Result<(), ValidationErrors> {
        let mut errors = ValidationErrors::default();
        let fs = &self.fluxon_fs;
        fs.master.validate_into("fluxon_fs.master", &mut errors);
        fs.master_panel
            .validate_into("fluxon_fs.master_panel", &mut errors);
        fs.cache.validate_into("fluxon_fs.cache", &mut errors);
        errors.into_result()
    }
}

impl MasterSection {
    /// Checks the instance key and poll interval.
    pub fn validate_into(&self, path: &str, errors: &mut ValidationErrors) {
        record(
            errors,
            format!("{path}.instance_key"),
            checks::identifier(&self.instance_key),
        );
        if let Some(ms) = self.pull_interval_ms {
            record(
                errors,
                format!("{path}.pull_interval_ms"),
                checks::positive(ms),
            );
        }
    }
}

impl MasterPanel {
    fn validate_into(&self, path: &str, errors: &mut ValidationErrors) {
        record(
            errors,
            format!("{path}.listen_addr"),
            checks::host_port(&self.listen_addr),
        );
        for (key, url) in [
            ("public_base_url", &self.public_base_url),
            ("prometheus_base_url", &self.prometheus_base_url),
        ] {
            if let Some(url) = url {
                record(errors, format!("{path}.{key}"), checks::http_url(url));
            }
        }
        if let Some(secs) = self.auto_refresh_interval_secs {
            record(
                errors,
                format!("{path}.auto_refresh_interval_secs"),
                checks::positive(secs),
            );
        }
        if self.access_db_path.as_os_str().is_empty() {
            errors.push(format!("{path}.access_db_path"), "must be a non-empty path");
        }
        self.bootstrap_access_model
            .validate_into(&format!("{path}.bootstrap_access_model"), errors);
        if let Some(store) = &self.transfer_state_store {
            super::store_serde::validate_into(
                store,
                &format!("{path}.transfer_state_store"),
                errors,
            );
        }
    }
}
