//! The common `fluxon_fs.cache` section: the export snapshot (master copy, agent static exports,
//! and what `FluxonFsPatcher.set_cache_config_yaml` injects).
//!
//! ```yaml
//! cache:
//!   exports:                          # export name -> export; may be {} (default)
//!     demo-export:
//!       remote_root_dir_abs: /abs/root  # required, absolute, provider-local
//!       nodes: [demo_fs_agent]          # optional; absent = ask the master which agents serve it
//!       cache_max_bytes: 1073741824     # optional, >0: per-file limit for owner caching
//!       inline_bytes_max_bytes: 1048576 # optional: open() returns bytes inline up to this
//!       metadata_cache_ttl_ms: 0        # optional, default 0 = off (close-to-open validation)
//!   stale_window_ms: 1000             # optional, >0 (upstream name, kept for compatibility)
//!   write_session_target_inflight_bytes: 134217728  # optional, >0
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::checks::{self, record};
use super::ValidationErrors;

/// `fluxon_fs.cache`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CacheSection {
    /// Export name → export definition.
    #[serde(default)]
    pub exports: BTreeMap<String, ExportConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stale_window_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_session_target_inflight_bytes: Option<u64>,
}

/// `fluxon_fs.cache.exports.<name>`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ExportConfig {
    /// Root directory on the serving agent.
    pub remote_root_dir_abs: PathBuf,
    /// Agents that serve this export (static routing); absent means the master's registry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_max_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inline_bytes_max_bytes: Option<u64>,
    /// Metadata cache TTL; 0 or absent disables it (the default is close-to-open validation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata_cache_ttl_ms: Option<u64>,
}

impl CacheSection {
    /// Checks every export; `path` is the section's key path (e.g. `fluxon_fs.cache`).
    pub fn validate_into(&self, path: &str, errors: &mut ValidationErrors) {
        for (key, value) in [
            ("stale_window_ms", self.stale_window_ms),
            (
                "write_session_target_inflight_bytes",
                self.write_session_target_inflight_bytes,
            ),
        ] {
            if let Some(v) = value {
                record(errors, format!("{path}.{key}"), checks::positive(v));
            }
        }
        for (name, export) in &self.exports {
            let export_path = format!("{path}.exports.{name}");
            record(errors, &export_path, checks::export_name(name));
            export.validate_into(&export_path, errors);
        }
    }
}

impl ExportConfig {
    fn validate_into(&self, path: &str, errors: &mut ValidationErrors) {
        record(
            errors,
            format!("{path}.remote_root_dir_abs"),
            checks::absolute_path(&self.remote_root_dir_abs),
        );
        if let Some(nodes) = &self.nodes {
            validate_nodes(nodes, &format!("{path}.nodes"), errors);
        }
        for (key, value) in [
            ("cache_max_bytes", self.cache_max_bytes),
            ("inline_bytes_max_bytes", self.inline_bytes_max_bytes),
        ] {
            if let Some(v) = value {
                record(errors, format!("{path}.{key}"), checks::positive(v));
            }
        }
    }
}

fn validate_nodes(nodes: &[String], path: &str, errors: &mut ValidationErrors) {
    if nodes.is_empty() {
        errors.push(
            path,
            "must list at least one agent instance key (or be omitted)",
        );
    }
    for (i, node) in nodes.iter().enumerate() {
        record(errors, format!("{path}[{i}]"), checks::identifier(node));
        if nodes[..i].contains(node) {
            errors.push(format!("{path}[{i}]"), format!("duplicates `{node}`"));
        }
    }
}
