//! Embedded `StateStore` on redb: one file, durable on return, versions that survive restarts.
//!
//! Layout: table `entries` maps the full key to `(version, value)`; table `meta` holds
//! `last_version`, bumped in the same write transaction as the data it versions, so versions
//! stay monotonic across reopen. One write transaction gets one version (like an etcd revision).
//! redb is synchronous, so every operation runs on `tokio::task::spawn_blocking`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable, Table, TableDefinition, WriteTransaction};

use super::{
    prefix_end, scan_start, validate_batch, validate_key, Batch, BatchOp, BatchOutcome, StateStore,
    StoreError, StoreFuture, Versioned,
};

const ENTRIES: TableDefinition<&[u8], (u64, &[u8])> = TableDefinition::new("entries");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const LAST_VERSION: &str = "last_version";

/// A [`StateStore`] in a single redb file.
#[derive(Clone)]
pub struct RedbStore {
    db: Arc<Database>,
    path: PathBuf,
}

impl std::fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbStore")
            .field("path", &self.path)
            .finish()
    }
}

impl RedbStore {
    /// Opens (or creates, with its parent directories) the store file at `path`.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        let for_task = path.clone();
        let db = tokio::task::spawn_blocking(move || open_db(&for_task))
            .await
            .map_err(|e| StoreError::Task(e.to_string()))??;
        Ok(RedbStore {
            db: Arc::new(db),
            path,
        })
    }

    /// The file this store lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` against the database on the blocking pool.
    async fn run<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Database) -> Result<T, StoreError> + Send + 'static,
    {
        let db = Arc::clone(&self.db);
        tokio::task::spawn_blocking(move || f(&db))
            .await
            .map_err(|e| StoreError::Task(e.to_string()))?
    }
}

fn open_error(path: &Path, reason: impl ToString) -> StoreError {
    StoreError::Open {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

/// Opens the file and makes sure both tables exist, so read transactions can open them.
fn open_db(path: &Path) -> Result<Database, StoreError> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| open_error(path, e))?;
    }
    let db = Database::create(path).map_err(|e| match e {
        redb::DatabaseError::DatabaseAlreadyOpen => {
            open_error(path, "another process or store already has it open")
        }
        other => open_error(path, other),
    })?;
    let txn = db.begin_write().map_err(storage)?;
    txn.open_table(ENTRIES).map_err(storage)?;
    txn.open_table(META).map_err(storage)?;
    txn.commit().map_err(storage)?;
    Ok(db)
}

/// Maps any redb error to the matching [`StoreError`].
fn storage(e: impl Into<redb::Error>) -> StoreError {
    match e.into() {
        redb::Error::Corrupted(detail) => StoreError::Corrupt { detail },
        other => StoreError::Storage(other.to_string()),
    }
}

/// Reads one entry from a table; version 0 means the file was damaged.
fn read_entry(
    table: &impl ReadableTable<&'static [u8], (u64, &'static [u8])>,
    key: &[u8],
) -> Result<Option<Versioned>, StoreError> {
    let Some(guard) = table.get(key).map_err(storage)? else {
        return Ok(None);
    };
    let (version, value) = guard.value();
    checked(key, version, value).map(Some)
}

fn checked(key: &[u8], version: u64, value: &[u8]) -> Result<Versioned, StoreError> {
    if version == 0 {
        let key = String::from_utf8_lossy(key);
        return Err(StoreError::Corrupt {
            detail: format!("entry {key:?} has version 0"),
        });
    }
    Ok(Versioned {
        value: value.to_vec(),
        version,
    })
}

fn get_sync(db: &Database, key: &[u8]) -> Result<Option<Versioned>, StoreError> {
    let txn = db.begin_read().map_err(storage)?;
    let table = txn.open_table(ENTRIES).map_err(storage)?;
    read_entry(&table, key)
}

/// The last version handed out (0 if none yet).
fn last_version(txn: &WriteTransaction) -> Result<u64, StoreError> {
    let meta = txn.open_table(META).map_err(storage)?;
    let last = meta.get(LAST_VERSION).map_err(storage)?;
    Ok(last.map(|g| g.value()).unwrap_or(0))
}

/// Takes the next version and records it in the same transaction.
fn next_version(txn: &WriteTransaction) -> Result<u64, StoreError> {
    let next = last_version(txn)?
        .checked_add(1)
        .ok_or_else(|| StoreError::Corrupt {
            detail: "version counter overflowed".into(),
        })?;
    let mut meta = txn.open_table(META).map_err(storage)?;
    meta.insert(LAST_VERSION, next).map_err(storage)?;
    Ok(next)
}

/// Applies one write to an open table at `version`.
fn apply(
    table: &mut Table<&'static [u8], (u64, &'static [u8])>,
    op: &BatchOp,
    version: u64,
) -> Result<(), StoreError> {
    match op {
        BatchOp::Put { key, value } => {
            table
                .insert(key.as_slice(), (version, value.as_slice()))
                .map_err(storage)?;
        }
        BatchOp::Delete { key } => {
            table.remove(key.as_slice()).map_err(storage)?;
        }
    }
    Ok(())
}

/// Writes `ops` in one durable transaction after `checks` pass; `Err(conflict)` if one fails.
fn write_sync(db: &Database, batch: &Batch) -> Result<BatchOutcome, StoreError> {
    let txn = db.begin_write().map_err(storage)?;
    if let Some(conflict) = first_conflict(&txn, batch)? {
        txn.abort().map_err(storage)?;
        return Ok(conflict);
    }
    let version = if writes_anything(&txn, &batch.ops)? {
        next_version(&txn)?
    } else {
        last_version(&txn)?
    };
    {
        let mut table = txn.open_table(ENTRIES).map_err(storage)?;
        for op in &batch.ops {
            apply(&mut table, op, version)?;
        }
    }
    txn.commit().map_err(storage)?;
    Ok(BatchOutcome::Applied { version })
}

/// The first check that does not hold, as a conflict outcome.
fn first_conflict(
    txn: &WriteTransaction,
    batch: &Batch,
) -> Result<Option<BatchOutcome>, StoreError> {
    let table = txn.open_table(ENTRIES).map_err(storage)?;
    for check in &batch.checks {
        let current = read_entry(&table, &check.key)?;
        if current.as_ref().map(|v| v.version) != check.expected_version {
            let key = check.key.clone();
            return Ok(Some(BatchOutcome::Conflict { key, current }));
        }
    }
    Ok(None)
}

/// Whether `ops` change anything (a delete of a missing key does not, as in etcd).
fn writes_anything(txn: &WriteTransaction, ops: &[BatchOp]) -> Result<bool, StoreError> {
    let table = txn.open_table(ENTRIES).map_err(storage)?;
    for op in ops {
        match op {
            BatchOp::Put { .. } => return Ok(true),
            BatchOp::Delete { key } => {
                if table.get(key.as_slice()).map_err(storage)?.is_some() {
                    return Ok(true);
                }
            }
        }
    }
    Ok(false)
}

fn list_sync(
    db: &Database,
    prefix: &[u8],
    start_after: Option<&[u8]>,
    limit: usize,
) -> Result<Vec<(Vec<u8>, Versioned)>, StoreError> {
    let txn = db.begin_read().map_err(storage)?;
    let table = txn.open_table(ENTRIES).map_err(storage)?;
    let start = scan_start(prefix, start_after);
    let range = match prefix_end(prefix) {
        Some(end) => table.range::<&[u8]>(start.as_slice()..end.as_slice()),
        None => table.range::<&[u8]>(start.as_slice()..),
    }
    .map_err(storage)?;
    let mut out = Vec::new();
    for item in range.take(limit) {
        let (key, value) = item.map_err(storage)?;
        let (version, bytes) = value.value();
        out.push((key.value().to_vec(), checked(key.value(), version, bytes)?));
    }
    Ok(out)
}

fn applied_version(outcome: BatchOutcome) -> Result<u64, StoreError> {
    match outcome {
        BatchOutcome::Applied { version } => Ok(version),
        BatchOutcome::Conflict { .. } => Err(StoreError::Task(
            "an unconditional write reported a conflict".into(),
        )),
    }
}

impl StateStore for RedbStore {
    fn get<'a>(&'a self, key: &'a [u8]) -> StoreFuture<'a, Option<Versioned>> {
        let key = key.to_vec();
        Box::pin(async move {
            validate_key(&key)?;
            self.run(move |db| get_sync(db, &key)).await
        })
    }

    fn put<'a>(&'a self, key: &'a [u8], value: Vec<u8>) -> StoreFuture<'a, u64> {
        let batch = Batch::new().put(key, &value);
        Box::pin(async move { applied_version(self.batch(batch).await?) })
    }

    fn delete<'a>(&'a self, key: &'a [u8]) -> StoreFuture<'a, bool> {
        let key = key.to_vec();
        Box::pin(async move {
            validate_key(&key)?;
            self.run(move |db| delete_sync(db, &key)).await
        })
    }

    fn list_prefix<'a>(
        &'a self,
        prefix: &'a [u8],
        start_after: Option<&'a [u8]>,
        limit: usize,
    ) -> StoreFuture<'a, Vec<(Vec<u8>, Versioned)>> {
        let prefix = prefix.to_vec();
        let start_after = start_after.map(<[u8]>::to_vec);
        Box::pin(async move {
            self.run(move |db| list_sync(db, &prefix, start_after.as_deref(), limit))
                .await
        })
    }

    fn batch(&self, batch: Batch) -> StoreFuture<'_, BatchOutcome> {
        Box::pin(async move {
            validate_batch(&batch)?;
            self.run(move |db| write_sync(db, &batch)).await
        })
    }
}

/// Deletes `key` if present; the delete takes a version like any write.
fn delete_sync(db: &Database, key: &[u8]) -> Result<bool, StoreError> {
    let txn = db.begin_write().map_err(storage)?;
    let existed = {
        let table = txn.open_table(ENTRIES).map_err(storage)?;
        let found = table.get(key).map_err(storage)?.is_some();
        found
    };
    if !existed {
        txn.abort().map_err(storage)?;
        return Ok(false);
    }
    next_version(&txn)?;
    txn.open_table(ENTRIES)
        .map_err(storage)?
        .remove(key)
        .map_err(storage)?;
    txn.commit().map_err(storage)?;
    Ok(true)
}
