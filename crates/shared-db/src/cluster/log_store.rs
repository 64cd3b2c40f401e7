//! The durable raft log and vote of one node, in redb (`<data dir>/raft/raft.redb`).
//!
//! Every mutation goes through one writer thread that drains whatever is queued and commits it
//! in a single fsynced transaction (group commit): appends arriving while an fsync is running
//! share the next one. Appended entries are readable at once from an in-memory pending map
//! until their transaction is durable; openraft is told an append is flushed only after the
//! commit. Vote, truncation and purge wait for their commit.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{AnyError, LogState, RaftLogReader, StorageIOError};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::oneshot;

use super::types::{Entry, LogId, StorageError, TypeConfig, Vote};

const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

const K_VOTE: &str = "vote";
const K_PURGED: &str = "last_purged";

fn db_err(e: impl Into<redb::Error>) -> String {
    e.into().to_string()
}

fn io_write(m: impl ToString) -> StorageError {
    StorageIOError::write_logs(AnyError::error(m)).into()
}

fn io_read(m: impl ToString) -> StorageError {
    StorageIOError::read_logs(AnyError::error(m)).into()
}

enum Op {
    Append {
        entries: Vec<(u64, u64, Vec<u8>)>,
        callback: LogFlushed<TypeConfig>,
    },
    Truncate {
        from: u64,
        done: oneshot::Sender<Result<(), String>>,
    },
    Purge {
        upto: u64,
        record: Vec<u8>,
        done: oneshot::Sender<Result<(), String>>,
    },
    Meta {
        key: &'static str,
        value: Vec<u8>,
        done: oneshot::Sender<Result<(), String>>,
    },
}

/// Counters shown in `/status`.
#[derive(Debug, Default)]
pub struct LogStats {
    /// Transactions committed (one fsync each).
    pub commits: AtomicU64,
    /// Operations those commits carried (appends, votes, truncations, purges).
    pub ops: AtomicU64,
    /// Entries appended.
    pub entries: AtomicU64,
}

struct Shared {
    db: Database,
    /// Appended entries not yet known durable: index → (append sequence, entry).
    pending: Mutex<BTreeMap<u64, (u64, Entry)>>,
    tx: Mutex<mpsc::Sender<Op>>,
    seq: AtomicU64,
    stats: Arc<LogStats>,
}

/// The log store; clones share one database and writer.
#[derive(Clone)]
pub struct LogStore {
    shared: Arc<Shared>,
}

#[derive(Debug, thiserror::Error)]
#[error("raft log {path}: {message}")]
pub struct OpenError {
    pub path: String,
    pub message: String,
}

impl LogStore {
    /// Opens (or creates) the database and starts its writer thread.
    pub fn open(path: &Path) -> Result<LogStore, OpenError> {
        let fail = |m: String| OpenError {
            path: path.display().to_string(),
            message: m,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| fail(e.to_string()))?;
        }
        let db = Database::create(path).map_err(|e| fail(db_err(e)))?;
        let txn = db.begin_write().map_err(|e| fail(db_err(e)))?;
        txn.open_table(LOG).map_err(|e| fail(db_err(e)))?;
        txn.open_table(META).map_err(|e| fail(db_err(e)))?;
        txn.commit().map_err(|e| fail(db_err(e)))?;
        let (tx, rx) = mpsc::channel();
        let shared = Arc::new(Shared {
            db,
            pending: Mutex::new(BTreeMap::new()),
            tx: Mutex::new(tx),
            seq: AtomicU64::new(0),
            stats: Arc::new(LogStats::default()),
        });
        let weak = Arc::downgrade(&shared);
        std::thread::Builder::new()
            .name("raft-log-writer".into())
            .spawn(move || writer(weak, rx))
            .map_err(|e| fail(e.to_string()))?;
        Ok(LogStore { shared })
    }

    pub fn stats(&self) -> Arc<LogStats> {
        Arc::clone(&self.shared.stats)
    }

    fn send(&self, op: Op) -> Result<(), String> {
        let tx = self.shared.tx.lock().unwrap_or_else(|p| p.into_inner());
        tx.send(op)
            .map_err(|_| "the log writer has stopped".to_string())
    }

    async fn send_wait(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<(), String>>) -> Op,
    ) -> Result<(), String> {
        let (done, rx) = oneshot::channel();
        self.send(make(done))?;
        rx.await
            .map_err(|_| "the log writer has stopped".to_string())?
    }

    /// Durably stores a small value in the metadata table (used by the state machine glue).
    pub async fn put_meta(&self, key: &'static str, value: Vec<u8>) -> Result<(), String> {
        self.send_wait(|done| Op::Meta { key, value, done }).await
    }

    pub fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>, String> {
        let txn = self.shared.db.begin_read().map_err(db_err)?;
        let t = txn.open_table(META).map_err(db_err)?;
        Ok(t.get(key).map_err(db_err)?.map(|v| v.value().to_vec()))
    }

    fn get_decoded<T: serde::de::DeserializeOwned>(&self, key: &str) -> Result<Option<T>, String> {
        match self.get_meta(key)? {
            None => Ok(None),
            Some(b) => postcard::from_bytes(&b)
                .map(Some)
                .map_err(|e| format!("corrupt {key}: {e}")),
        }
    }

    fn read_range(&self, start: u64, end: Option<u64>) -> Result<Vec<Entry>, String> {
        let mut out: BTreeMap<u64, Entry> = BTreeMap::new();
        {
            let txn = self.shared.db.begin_read().map_err(db_err)?;
            let t = txn.open_table(LOG).map_err(db_err)?;
            let iter = match end {
                Some(e) => t.range(start..e),
                None => t.range(start..),
            }
            .map_err(db_err)?;
            for item in iter {
                let (k, v) = item.map_err(db_err)?;
                let entry: Entry = postcard::from_bytes(v.value())
                    .map_err(|e| format!("corrupt log entry {}: {e}", k.value()))?;
                out.insert(k.value(), entry);
            }
        }
        let pending = self
            .shared
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let range = (
            Bound::Included(start),
            end.map_or(Bound::Unbounded, Bound::Excluded),
        );
        for (i, (_, e)) in pending.range(range) {
            out.insert(*i, e.clone());
        }
        Ok(out.into_values().collect())
    }

    fn last_in_db(&self) -> Result<Option<Entry>, String> {
        let txn = self.shared.db.begin_read().map_err(db_err)?;
        let t = txn.open_table(LOG).map_err(db_err)?;
        let last = t.last().map_err(db_err)?;
        let bytes = last.map(|(_, v)| v.value().to_vec());
        match bytes {
            None => Ok(None),
            Some(b) => postcard::from_bytes(&b)
                .map(Some)
                .map_err(|e| format!("corrupt last entry: {e}")),
        }
    }
}

fn writer(shared: std::sync::Weak<Shared>, rx: mpsc::Receiver<Op>) {
    while let Ok(first) = rx.recv() {
        let mut ops = vec![first];
        while ops.len() < 1024 {
            match rx.try_recv() {
                Ok(op) => ops.push(op),
                Err(_) => break,
            }
        }
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let result = commit(&shared.db, &ops);
        shared.stats.commits.fetch_add(1, Ordering::Relaxed);
        shared
            .stats
            .ops
            .fetch_add(ops.len() as u64, Ordering::Relaxed);
        if let Err(e) = &result {
            tracing::error!(error = %e, "raft log write failed");
        }
        for op in ops {
            match op {
                Op::Append { entries, callback } => {
                    if result.is_ok() {
                        let mut pending = shared.pending.lock().unwrap_or_else(|p| p.into_inner());
                        for (i, seq, _) in &entries {
                            if pending.get(i).is_some_and(|(s, _)| s == seq) {
                                pending.remove(i);
                            }
                        }
                        shared
                            .stats
                            .entries
                            .fetch_add(entries.len() as u64, Ordering::Relaxed);
                    }
                    callback.log_io_completed(
                        result.clone().map_err(|e| std::io::Error::other(e.clone())),
                    );
                }
                Op::Truncate { done, .. } | Op::Purge { done, .. } | Op::Meta { done, .. } => {
                    let _ = done.send(result.clone());
                }
            }
        }
    }
}

fn commit(db: &Database, ops: &[Op]) -> Result<(), String> {
    let txn = db.begin_write().map_err(db_err)?;
    {
        let mut log = txn.open_table(LOG).map_err(db_err)?;
        let mut meta = txn.open_table(META).map_err(db_err)?;
        for op in ops {
            match op {
                Op::Append { entries, .. } => {
                    for (i, _, bytes) in entries {
                        log.insert(*i, bytes.as_slice()).map_err(db_err)?;
                    }
                }
                Op::Truncate { from, .. } => {
                    log.retain_in(*from.., |_, _| false).map_err(db_err)?;
                }
                Op::Purge { upto, record, .. } => {
                    log.retain_in(..=*upto, |_, _| false).map_err(db_err)?;
                    meta.insert(K_PURGED, record.as_slice()).map_err(db_err)?;
                }
                Op::Meta { key, value, .. } => {
                    meta.insert(*key, value.as_slice()).map_err(db_err)?;
                }
            }
        }
    }
    txn.commit().map_err(db_err)
}

fn bounds(range: &impl RangeBounds<u64>) -> (u64, Option<u64>) {
    let start = match range.start_bound() {
        Bound::Included(s) => *s,
        Bound::Excluded(s) => s.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(e) => Some(e.saturating_add(1)),
        Bound::Excluded(e) => Some(*e),
        Bound::Unbounded => None,
    };
    (start, end)
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let (start, end) = bounds(&range);
        self.read_range(start, end).map_err(io_read)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged: Option<LogId> = self.get_decoded(K_PURGED).map_err(io_read)?;
        let pending_last = {
            let p = self
                .shared
                .pending
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            p.last_key_value().map(|(_, (_, e))| e.log_id)
        };
        let db_last = self.last_in_db().map_err(io_read)?.map(|e| e.log_id);
        let last = pending_last.max(db_last).max(last_purged);
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        let bytes = postcard::to_allocvec(vote).map_err(io_write)?;
        self.put_meta(K_VOTE, bytes)
            .await
            .map_err(|e| StorageIOError::write_vote(AnyError::error(e)).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        self.get_decoded(K_VOTE)
            .map_err(|e| StorageIOError::read_vote(AnyError::error(e)).into())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut batch = Vec::new();
        {
            let mut pending = self
                .shared
                .pending
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            for entry in entries {
                let bytes = postcard::to_allocvec(&entry).map_err(io_write)?;
                let seq = self.shared.seq.fetch_add(1, Ordering::Relaxed);
                let index = entry.log_id.index;
                pending.insert(index, (seq, entry));
                batch.push((index, seq, bytes));
            }
        }
        self.send(Op::Append {
            entries: batch,
            callback,
        })
        .map_err(io_write)
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        {
            let mut pending = self
                .shared
                .pending
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let _ = pending.split_off(&log_id.index);
        }
        let from = log_id.index;
        self.send_wait(|done| Op::Truncate { from, done })
            .await
            .map_err(io_write)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let record = postcard::to_allocvec(&log_id).map_err(io_write)?;
        {
            let mut pending = self
                .shared
                .pending
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let keep = pending.split_off(&(log_id.index + 1));
            *pending = keep;
        }
        let upto = log_id.index;
        self.send_wait(|done| Op::Purge { upto, record, done })
            .await
            .map_err(io_write)
    }
}
