//! `transfer_state_store`: reuses [`StoreConfig`] from `store::config` for parsing, and adds
//! what the config files need on top: `Serialize` (written in the parsed shape, with the seed's
//! `key_prefix` spelling for TiKV) and validation that names key paths.

use std::path::Path;

use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};

use super::checks::{self, record};
use super::ValidationErrors;
use crate::store::StoreConfig;

#[derive(Serialize)]
struct RedbOut<'a> {
    path: &'a Path,
}

#[derive(Serialize)]
struct EtcdOut<'a> {
    endpoints: &'a [String],
    namespace: &'a str,
    timeout_ms: u64,
}

#[derive(Serialize)]
struct TikvOut<'a> {
    pd_endpoints: &'a [String],
    key_prefix: &'a str,
}

impl Serialize for StoreConfig {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(2))?;
        match self {
            StoreConfig::Redb(c) => {
                map.serialize_entry("kind", "redb")?;
                map.serialize_entry("redb", &RedbOut { path: &c.path })?;
            }
            StoreConfig::Etcd(c) => {
                map.serialize_entry("kind", "etcd")?;
                let out = EtcdOut {
                    endpoints: &c.endpoints,
                    namespace: &c.namespace,
                    timeout_ms: c.timeout_ms,
                };
                map.serialize_entry("etcd", &out)?;
            }
            StoreConfig::Tikv(c) => {
                map.serialize_entry("kind", "tikv")?;
                let out = TikvOut {
                    pd_endpoints: &c.pd_endpoints,
                    key_prefix: &c.namespace,
                };
                map.serialize_entry("tikv", &out)?;
            }
        }
        map.end()
    }
}

/// Checks a store section; `path` is its key path (e.g. `...transfer_state_store`).
pub(crate) fn validate_into(store: &StoreConfig, path: &str, errors: &mut ValidationErrors) {
    match store {
        StoreConfig::Redb(c) => {
            if c.path.as_os_str().is_empty() {
                errors.push(format!("{path}.redb.path"), "must be a non-empty path");
            }
        }
        StoreConfig::Etcd(c) => {
            endpoints(
                &c.endpoints,
                &format!("{path}.etcd.endpoints"),
                errors,
                false,
            );
        }
        StoreConfig::Tikv(c) => {
            endpoints(
                &c.pd_endpoints,
                &format!("{path}.tikv.pd_endpoints"),
                errors,
                true,
            );
            record(
                errors,
                format!("{path}.tikv.key_prefix"),
                key_prefix(&c.namespace),
            );
        }
    }
}

/// Endpoints must be non-empty; PD endpoints must be `host:port`.
fn endpoints(list: &[String], path: &str, errors: &mut ValidationErrors, host_port: bool) {
    if list.is_empty() {
        errors.push(path, "must list at least one endpoint");
    }
    for (i, endpoint) in list.iter().enumerate() {
        let check = if host_port {
            checks::host_port(endpoint)
        } else {
            checks::identifier(endpoint)
        };
        record(errors, format!("{path}[{i}]"), check);
    }
}

/// The seed's rule for TiKV prefixes: empty, or starts and ends with `/`.
fn key_prefix(prefix: &str) -> Result<(), String> {
    if prefix.is_empty() || (prefix.starts_with('/') && prefix.ends_with('/')) {
        Ok(())
    } else {
        Err(format!("must start and end with `/`, got `{prefix}`"))
    }
}
