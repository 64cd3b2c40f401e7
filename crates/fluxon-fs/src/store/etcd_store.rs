//! `StateStore` on etcd, for multi-master, multi-host deployments.
//!
//! Keys are stored as `namespace + key`, so several stores can share one etcd. A version is the
//! key's etcd `mod_revision`. Compare-and-swap and batches are etcd `Txn`s: compares on
//! `mod_revision` (or `create_revision == 0` for "must not exist"), the writes on success, and a
//! read of every checked key on failure so the caller learns the current value atomically.
//! Every request is bounded by the store's timeout.

use std::future::Future;
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, GetOptions, KeyValue, KvClient, SortOrder,
    SortTarget, Txn, TxnOp, TxnOpResponse, TxnResponse,
};

use super::{
    prefix_end, scan_start, validate_batch, validate_key, Batch, BatchOp, BatchOutcome, Check,
    StateStore, StoreError, StoreFuture, Versioned,
};

/// A [`StateStore`] on an etcd cluster, under a key namespace.
#[derive(Clone)]
pub struct EtcdStore {
    kv: KvClient,
    namespace: Vec<u8>,
    endpoints: String,
    timeout: Duration,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("endpoints", &self.endpoints)
            .field("namespace", &String::from_utf8_lossy(&self.namespace))
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl EtcdStore {
    /// Connects to `endpoints` and checks that etcd answers within `timeout`.
    ///
    /// `timeout` also bounds every later request.
    pub async fn connect(
        endpoints: &[String],
        namespace: &str,
        timeout: Duration,
    ) -> Result<Self, StoreError> {
        let joined = endpoints.join(",");
        if endpoints.is_empty() {
            return Err(StoreError::Config(
                "etcd needs at least one endpoint".into(),
            ));
        }
        if timeout.is_zero() {
            return Err(StoreError::Config("etcd timeout must be above zero".into()));
        }
        let options = ConnectOptions::new()
            .with_connect_timeout(timeout)
            .with_timeout(timeout);
        let connect = Client::connect(endpoints, Some(options));
        let client = match tokio::time::timeout(timeout, connect).await {
            Ok(result) => result.map_err(|e| unreachable(&joined, e))?,
            Err(_) => return Err(no_answer(&joined, timeout)),
        };
        let store = EtcdStore {
            kv: client.kv_client(),
            namespace: namespace.as_bytes().to_vec(),
            endpoints: joined,
            timeout,
        };
        store.probe().await?;
        Ok(store)
    }

    /// The namespace prefixed to every key.
    pub fn namespace(&self) -> &[u8] {
        &self.namespace
    }

    /// One cheap read, so a dead endpoint fails `connect` rather than the first real request.
    async fn probe(&self) -> Result<(), StoreError> {
        let options = GetOptions::new().with_count_only();
        let key = self.full_key(b"\0probe");
        let mut kv = self.kv.clone();
        match self.bounded("connect", kv.get(key, Some(options))).await {
            Ok(_) => Ok(()),
            Err(StoreError::Timeout { timeout, .. }) => Err(no_answer(&self.endpoints, timeout)),
            Err(other) => Err(other),
        }
    }

    fn full_key(&self, key: &[u8]) -> Vec<u8> {
        let mut full = Vec::with_capacity(self.namespace.len() + key.len());
        full.extend_from_slice(&self.namespace);
        full.extend_from_slice(key);
        full
    }

    /// Strips the namespace from a key etcd returned.
    fn user_key(&self, full: &[u8]) -> Result<Vec<u8>, StoreError> {
        full.strip_prefix(self.namespace.as_slice())
            .map(<[u8]>::to_vec)
            .ok_or_else(|| StoreError::Corrupt {
                detail: format!(
                    "etcd returned key {:?} outside the namespace",
                    String::from_utf8_lossy(full)
                ),
            })
    }

    /// Runs one etcd request under the store's timeout and maps its error.
    async fn bounded<T>(
        &self,
        op: &'static str,
        request: impl Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.timeout, request).await {
            Ok(result) => result.map_err(|e| self.map_error(op, e)),
            Err(_) => Err(StoreError::Timeout {
                op,
                timeout: self.timeout,
            }),
        }
    }

    fn map_error(&self, op: &'static str, e: etcd_client::Error) -> StoreError {
        match classify(&e) {
            ErrorClass::Unreachable => unreachable(&self.endpoints, e),
            ErrorClass::Timeout => StoreError::Timeout {
                op,
                timeout: self.timeout,
            },
            ErrorClass::Other => StoreError::Rejected(format!("{op}: {e}")),
        }
    }

    async fn txn(&self, op: &'static str, txn: Txn) -> Result<TxnResponse, StoreError> {
        let mut kv = self.kv.clone();
        self.bounded(op, kv.txn(txn)).await
    }

    /// Builds the etcd transaction for `batch`.
    fn batch_txn(&self, batch: &Batch) -> Txn {
        let compares: Vec<Compare> = batch.checks.iter().map(|c| self.compare(c)).collect();
        let writes: Vec<TxnOp> = batch.ops.iter().map(|op| self.write_op(op)).collect();
        let reads: Vec<TxnOp> = batch
            .checks
            .iter()
            .map(|c| TxnOp::get(self.full_key(&c.key), None))
            .collect();
        Txn::new().when(compares).and_then(writes).or_else(reads)
    }

    fn compare(&self, check: &Check) -> Compare {
        let key = self.full_key(&check.key);
        match check.expected_version {
            None => Compare::create_revision(key, CompareOp::Equal, 0),
            Some(version) => {
                let revision = i64::try_from(version).unwrap_or(i64::MAX);
                Compare::mod_revision(key, CompareOp::Equal, revision)
            }
        }
    }

    fn write_op(&self, op: &BatchOp) -> TxnOp {
        match op {
            BatchOp::Put { key, value } => TxnOp::put(self.full_key(key), value.clone(), None),
            BatchOp::Delete { key } => TxnOp::delete(self.full_key(key), None),
        }
    }

    async fn run_batch(&self, batch: Batch) -> Result<BatchOutcome, StoreError> {
        validate_batch(&batch)?;
        let response = self.txn("batch", self.batch_txn(&batch)).await?;
        if response.succeeded() {
            let version = header_revision(response.header().map(|h| h.revision()))?;
            return Ok(BatchOutcome::Applied { version });
        }
        first_conflict(&batch.checks, &response)
    }

    async fn get_one(&self, key: &[u8]) -> Result<Option<Versioned>, StoreError> {
        validate_key(key)?;
        let mut kv = self.kv.clone();
        let response = self
            .bounded("get", kv.get(self.full_key(key), None))
            .await?;
        response.kvs().first().map(versioned).transpose()
    }

    async fn put_one(&self, key: &[u8], value: Vec<u8>) -> Result<u64, StoreError> {
        validate_key(key)?;
        let mut kv = self.kv.clone();
        let response = self
            .bounded("put", kv.put(self.full_key(key), value, None))
            .await?;
        header_revision(response.header().map(|h| h.revision()))
    }

    async fn delete_one(&self, key: &[u8]) -> Result<bool, StoreError> {
        validate_key(key)?;
        let mut kv = self.kv.clone();
        let response = self
            .bounded("delete", kv.delete(self.full_key(key), None))
            .await?;
        Ok(response.deleted() > 0)
    }

    async fn list(
        &self,
        prefix: &[u8],
        start_after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Versioned)>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let full_prefix = self.full_key(prefix);
        let mut start = self.full_key(&scan_start(prefix, start_after));
        if start.is_empty() {
            // etcd refuses an empty range key; "\0" is the smallest key it accepts.
            start.push(0);
        }
        let options = GetOptions::new()
            .with_limit(i64::try_from(limit).unwrap_or(i64::MAX))
            .with_sort(SortTarget::Key, SortOrder::Ascend);
        let options = match prefix_end(&full_prefix) {
            Some(end) => options.with_range(end),
            None => options.with_from_key(),
        };
        let mut kv = self.kv.clone();
        let response = self
            .bounded("list_prefix", kv.get(start, Some(options)))
            .await?;
        response
            .kvs()
            .iter()
            .map(|kv| Ok((self.user_key(kv.key())?, versioned(kv)?)))
            .collect()
    }
}

/// Finds the first check the failed transaction's reads contradict.
fn first_conflict(checks: &[Check], response: &TxnResponse) -> Result<BatchOutcome, StoreError> {
    let responses = response.op_responses();
    for (check, read) in checks.iter().zip(responses.iter()) {
        let TxnOpResponse::Get(get) = read else {
            return Err(StoreError::Rejected(
                "etcd answered a failed batch with a non-read response".into(),
            ));
        };
        let current = get.kvs().first().map(versioned).transpose()?;
        if current.as_ref().map(|v| v.version) != check.expected_version {
            let key = check.key.clone();
            return Ok(BatchOutcome::Conflict { key, current });
        }
    }
    Err(StoreError::Rejected(
        "etcd reported a failed comparison but every checked key matches".into(),
    ))
}

fn versioned(kv: &KeyValue) -> Result<Versioned, StoreError> {
    let version = positive(kv.mod_revision(), "mod_revision")?;
    Ok(Versioned {
        value: kv.value().to_vec(),
        version,
    })
}

fn header_revision(revision: Option<i64>) -> Result<u64, StoreError> {
    let revision = revision.ok_or_else(|| StoreError::Corrupt {
        detail: "etcd response without a header".into(),
    })?;
    positive(revision, "revision")
}

fn positive(revision: i64, what: &str) -> Result<u64, StoreError> {
    u64::try_from(revision)
        .ok()
        .filter(|r| *r > 0)
        .ok_or_else(|| StoreError::Corrupt {
            detail: format!("etcd returned {what} {revision}"),
        })
}

fn unreachable(endpoints: &str, reason: impl ToString) -> StoreError {
    StoreError::Unreachable {
        endpoints: endpoints.to_string(),
        reason: reason.to_string(),
    }
}

fn no_answer(endpoints: &str, timeout: Duration) -> StoreError {
    unreachable(endpoints, format!("no answer within {timeout:?}"))
}

/// How an etcd client error should be reported.
enum ErrorClass {
    Unreachable,
    Timeout,
    Other,
}

/// Classifies an etcd client error by its transport failure or gRPC status.
fn classify(e: &etcd_client::Error) -> ErrorClass {
    match e {
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => {
            ErrorClass::Unreachable
        }
        etcd_client::Error::GRpcStatus(status) => match status.code() {
            tonic::Code::Unavailable => ErrorClass::Unreachable,
            tonic::Code::DeadlineExceeded => ErrorClass::Timeout,
            _ if caused_by_io(status) => ErrorClass::Unreachable,
            _ => ErrorClass::Other,
        },
        _ => ErrorClass::Other,
    }
}

/// Whether a status wraps an I/O failure (a connection that broke mid-request arrives as
/// `Unknown` with the transport error as its source).
fn caused_by_io(status: &tonic::Status) -> bool {
    let mut cause = std::error::Error::source(status);
    while let Some(e) = cause {
        if e.is::<std::io::Error>() {
            return true;
        }
        cause = e.source();
    }
    false
}

impl StateStore for EtcdStore {
    fn get<'a>(&'a self, key: &'a [u8]) -> StoreFuture<'a, Option<Versioned>> {
        Box::pin(self.get_one(key))
    }

    fn put<'a>(&'a self, key: &'a [u8], value: Vec<u8>) -> StoreFuture<'a, u64> {
        Box::pin(self.put_one(key, value))
    }

    fn delete<'a>(&'a self, key: &'a [u8]) -> StoreFuture<'a, bool> {
        Box::pin(self.delete_one(key))
    }

    fn list_prefix<'a>(
        &'a self,
        prefix: &'a [u8],
        start_after: Option<&'a [u8]>,
        limit: usize,
    ) -> StoreFuture<'a, Vec<(Vec<u8>, Versioned)>> {
        Box::pin(self.list(prefix, start_after, limit))
    }

    fn batch(&self, batch: Batch) -> StoreFuture<'_, BatchOutcome> {
        Box::pin(self.run_batch(batch))
    }
}
