//! State store configuration (`transfer_state_store` and friends) and `open_store`.
//!
//! Shape: `{ kind: redb, redb: { path } }`, `{ kind: etcd, etcd: { endpoints, namespace,
//! timeout_ms } }` or `{ kind: tikv, tikv: { pd_endpoints, namespace } }`. `tikv` parses for
//! seed compatibility (the seed spells its prefix `key_prefix`, accepted as an alias) but has no
//! backend. Unknown keys are errors that name the key.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::{EtcdStore, RedbStore, StateStore, StoreError, DEFAULT_TIMEOUT};

/// Which backend holds the state, with its settings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawStoreConfig")]
pub enum StoreConfig {
    Redb(RedbConfig),
    Etcd(EtcdConfig),
    Tikv(TikvConfig),
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedbConfig {
    pub path: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EtcdConfig {
    pub endpoints: Vec<String>,
    #[serde(default)]
    pub namespace: String,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

impl EtcdConfig {
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TikvConfig {
    pub pd_endpoints: Vec<String>,
    #[serde(default, alias = "key_prefix")]
    pub namespace: String,
}

fn default_timeout_ms() -> u64 {
    u64::try_from(DEFAULT_TIMEOUT.as_millis()).unwrap_or(u64::MAX)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum StoreKind {
    Redb,
    Etcd,
    Tikv,
}

/// The on-disk shape before the `kind` and its section are matched up.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStoreConfig {
    kind: StoreKind,
    redb: Option<RedbConfig>,
    etcd: Option<EtcdConfig>,
    tikv: Option<TikvConfig>,
}

impl TryFrom<RawStoreConfig> for StoreConfig {
    type Error = String;

    fn try_from(raw: RawStoreConfig) -> Result<Self, String> {
        let present = [
            ("redb", raw.redb.is_some()),
            ("etcd", raw.etcd.is_some()),
            ("tikv", raw.tikv.is_some()),
        ];
        let kind = kind_name(raw.kind);
        if let Some((other, _)) = present.iter().find(|(name, set)| *set && *name != kind) {
            return Err(format!(
                "kind is {kind} but a `{other}` section is present; remove it or change kind"
            ));
        }
        let missing = || format!("kind is {kind} but the `{kind}` section is missing");
        match raw.kind {
            StoreKind::Redb => raw.redb.map(StoreConfig::Redb).ok_or_else(missing),
            StoreKind::Etcd => raw.etcd.map(StoreConfig::Etcd).ok_or_else(missing),
            StoreKind::Tikv => raw.tikv.map(StoreConfig::Tikv).ok_or_else(missing),
        }
    }
}

fn kind_name(kind: StoreKind) -> &'static str {
    match kind {
        StoreKind::Redb => "redb",
        StoreKind::Etcd => "etcd",
        StoreKind::Tikv => "tikv",
    }
}

/// Opens the store `config` describes.
pub async fn open_store(config: &StoreConfig) -> Result<Arc<dyn StateStore>, StoreError> {
    match config {
        StoreConfig::Redb(redb) => Ok(Arc::new(RedbStore::open(&redb.path).await?)),
        StoreConfig::Etcd(etcd) => {
            let store = EtcdStore::connect(&etcd.endpoints, &etcd.namespace, etcd.timeout());
            Ok(Arc::new(store.await?))
        }
        StoreConfig::Tikv(_) => open_tikv(),
    }
}

#[cfg(not(feature = "tikv"))]
fn open_tikv() -> Result<Arc<dyn StateStore>, StoreError> {
    Err(StoreError::NotBuiltIn { kind: "tikv" })
}

#[cfg(feature = "tikv")]
fn open_tikv() -> Result<Arc<dyn StateStore>, StoreError> {
    Err(StoreError::Config(
        "the tikv feature is enabled but no TiKV backend is implemented yet; use kind: etcd or redb"
            .into(),
    ))
}
