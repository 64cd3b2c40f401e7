//! The `StateStore` trait: versioned byte keys and values for the master's state.
//!
//! Every piece of master state (export registry, access DB, transfer jobs, leases) goes through
//! [`StateStore`]. Backends: [`RedbStore`] (embedded, one file, the default) and [`EtcdStore`]
//! (multi-master, multi-host). Keys live under the store's namespace; callers see keys without it.
//!
//! Versions are modification revisions: every write gets a version greater than any version the
//! store handed out before (0 is never used), so a reader can compare-and-swap on what it saw.

pub mod config;
pub mod etcd_store;
pub mod redb_store;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

pub use config::{open_store, EtcdConfig, RedbConfig, StoreConfig, TikvConfig};
pub use etcd_store::EtcdStore;
pub use redb_store::RedbStore;

/// Default bound for a single network operation.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// A boxed future returned by [`StateStore`] methods; keeps the trait usable as `dyn`.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// A value with the version (modification revision) of its last write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    pub value: Vec<u8>,
    pub version: u64,
}

/// Result of [`StateStore::compare_and_swap`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CasOutcome {
    /// The write happened. For a delete, `version` is the revision of the delete.
    Swapped { version: u64 },
    /// The key did not match the expectation; `current` is what the store holds now.
    Conflict { current: Option<Versioned> },
}

/// A precondition of a [`Batch`]: the key's current version (`None` = must not exist).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub key: Vec<u8>,
    pub expected_version: Option<u64>,
}

/// One write of a [`Batch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchOp {
    Put { key: Vec<u8>, value: Vec<u8> },
    Delete { key: Vec<u8> },
}

impl BatchOp {
    pub fn key(&self) -> &[u8] {
        match self {
            BatchOp::Put { key, .. } | BatchOp::Delete { key } => key,
        }
    }
}

/// Writes applied atomically, only if every check holds. A key may appear in at most one op.
///
/// On etcd a batch is one `Txn`, so checks + ops are limited by the server's `--max-txn-ops`
/// (128 by default); a larger batch is rejected by the server.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    pub checks: Vec<Check>,
    pub ops: Vec<BatchOp>,
}

impl Batch {
    pub fn new() -> Self {
        Self::default()
    }
    /// Adds a precondition: `key` must be at `expected_version` (`None` = absent).
    pub fn check(mut self, key: &[u8], expected_version: Option<u64>) -> Self {
        let key = key.to_vec();
        self.checks.push(Check {
            key,
            expected_version,
        });
        self
    }
    pub fn put(mut self, key: &[u8], value: &[u8]) -> Self {
        let (key, value) = (key.to_vec(), value.to_vec());
        self.ops.push(BatchOp::Put { key, value });
        self
    }
    pub fn delete(mut self, key: &[u8]) -> Self {
        self.ops.push(BatchOp::Delete { key: key.to_vec() });
        self
    }
}

/// Result of [`StateStore::batch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchOutcome {
    /// Every op was applied; puts got `version`.
    Applied { version: u64 },
    /// The first failing check; nothing was written.
    Conflict {
        key: Vec<u8>,
        current: Option<Versioned>,
    },
}

/// Errors of a state store, each saying what to look at.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state store at {endpoints} is unreachable ({reason}); check that the server runs and the endpoint is right")]
    Unreachable { endpoints: String, reason: String },
    #[error("state store operation `{op}` did not finish within {timeout:?}; the server may be overloaded or partitioned (raise timeout_ms if it is just slow)")]
    Timeout { op: &'static str, timeout: Duration },
    #[error(
        "corrupt data in the state store ({detail}); restore from a backup or delete the entry"
    )]
    Corrupt { detail: String },
    #[error("cannot open state store file {path}: {reason}")]
    Open { path: String, reason: String },
    #[error("state store storage failed: {0}; check the disk and the file's permissions")]
    Storage(String),
    #[error("state store server rejected the request: {0}")]
    Rejected(String),
    #[error("invalid state store request: {0}")]
    InvalidRequest(String),
    #[error("invalid state store config: {0}")]
    Config(String),
    #[error("the {kind} state store is not built into this binary; use kind: etcd or redb")]
    NotBuiltIn { kind: &'static str },
    #[error("state store worker task failed: {0}")]
    Task(String),
}

/// Versioned key-value state shared by the master's components.
///
/// Implementations are cheap to share as `Arc<dyn StateStore>`. Every network operation is
/// bounded by the store's timeout.
pub trait StateStore: Send + Sync {
    /// The value and version of `key`, if it exists.
    fn get<'a>(&'a self, key: &'a [u8]) -> StoreFuture<'a, Option<Versioned>>;

    /// Writes `value` unconditionally; returns the new version.
    fn put<'a>(&'a self, key: &'a [u8], value: Vec<u8>) -> StoreFuture<'a, u64>;

    /// Removes `key`; `true` if it existed.
    fn delete<'a>(&'a self, key: &'a [u8]) -> StoreFuture<'a, bool>;

    /// Writes `new_value` (`None` = delete) only if `key` is at `expected_version`
    /// (`None` = must not exist). A one-op conditional [`StateStore::batch`].
    fn compare_and_swap<'a>(
        &'a self,
        key: &'a [u8],
        expected_version: Option<u64>,
        new_value: Option<Vec<u8>>,
    ) -> StoreFuture<'a, CasOutcome> {
        let batch = Batch::new().check(key, expected_version);
        let batch = match new_value {
            Some(value) => batch.put(key, &value),
            None => batch.delete(key),
        };
        Box::pin(async move {
            Ok(match self.batch(batch).await? {
                BatchOutcome::Applied { version } => CasOutcome::Swapped { version },
                BatchOutcome::Conflict { current, .. } => CasOutcome::Conflict { current },
            })
        })
    }

    /// Up to `limit` entries whose key starts with `prefix`, in key order, strictly after
    /// `start_after` when given (pass the last key of the previous page to continue).
    fn list_prefix<'a>(
        &'a self,
        prefix: &'a [u8],
        start_after: Option<&'a [u8]>,
        limit: usize,
    ) -> StoreFuture<'a, Vec<(Vec<u8>, Versioned)>>;

    /// Applies `batch` atomically: all ops or none, and none if a check fails.
    fn batch(&self, batch: Batch) -> StoreFuture<'_, BatchOutcome>;
}

/// Rejects empty keys (etcd cannot store them, so no backend accepts them).
pub(crate) fn validate_key(key: &[u8]) -> Result<(), StoreError> {
    if key.is_empty() {
        return Err(StoreError::InvalidRequest("keys must not be empty".into()));
    }
    Ok(())
}

/// Rejects empty keys and a key written twice in one batch.
pub(crate) fn validate_batch(batch: &Batch) -> Result<(), StoreError> {
    let mut seen = std::collections::HashSet::new();
    for key in batch.checks.iter().map(|c| c.key.as_slice()) {
        validate_key(key)?;
    }
    for op in &batch.ops {
        validate_key(op.key())?;
        if !seen.insert(op.key()) {
            let key = String::from_utf8_lossy(op.key());
            return Err(StoreError::InvalidRequest(format!(
                "key {key:?} appears in more than one op of a batch"
            )));
        }
    }
    Ok(())
}

/// The smallest key greater than every key starting with `prefix`; `None` = no upper bound.
pub(crate) fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// The smallest key strictly after `key`.
pub(crate) fn key_after(key: &[u8]) -> Vec<u8> {
    let mut next = key.to_vec();
    next.push(0);
    next
}

/// Where a `list_prefix` scan starts: the prefix, or just after `start_after` if that is later.
pub(crate) fn scan_start(prefix: &[u8], start_after: Option<&[u8]>) -> Vec<u8> {
    match start_after {
        Some(after) if after >= prefix => key_after(after),
        _ => prefix.to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_increments_last_byte() {
        assert_eq!(prefix_end(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_end(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_end(b"\xff\xff"), None);
        assert_eq!(prefix_end(b""), None);
    }

    #[test]
    fn scan_start_ignores_earlier_cursor() {
        assert_eq!(scan_start(b"b/", Some(b"a")), b"b/".to_vec());
        assert_eq!(scan_start(b"b/", Some(b"b/x")), b"b/x\0".to_vec());
    }

    #[test]
    fn batch_rejects_duplicate_keys() {
        let batch = Batch::new().put(b"k", b"1").delete(b"k");
        assert!(matches!(
            validate_batch(&batch),
            Err(StoreError::InvalidRequest(_))
        ));
    }
}
