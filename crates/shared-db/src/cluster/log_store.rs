//! The durable raft log and vote of one node: entries in segment files (`<data dir>/raft/wal/`,
//! see [`super::wal`]), the vote, the purge point and the state machine glue's small records in
//! redb (`<data dir>/raft/raft.redb`).
//!
//! Every mutation goes through one writer thread that drains whatever is queued and makes it
//! durable together (group commit): appends arriving while an fsync is running share the next
//! one, and an append costs one `fdatasync` of the segment. Appended entries are readable at
//! once from an in-memory pending map until they are durable; openraft is told an append is
//! flushed only after the sync. Vote, truncation and purge wait for theirs.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, OnceLock};

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{AnyError, LogState, RaftLogReader, StorageIOError};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::oneshot;

use super::contract::NodeId;
use super::types::{Entry, LogId, StorageError, TypeConfig, Vote};
use super::wal::Wal;

/// Where entries were kept before the segment files (moved into them at open).
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
    wal: Mutex<Wal>,
    /// Appended entries not yet known durable: index → (append sequence, entry).
    pending: Mutex<BTreeMap<u64, (u64, Entry)>>,
    tx: Mutex<mpsc::Sender<Op>>,
    seq: AtomicU64,
    stats: Arc<LogStats>,
    /// Counts the writer's rounds that carried appends (each ends with their sync, or with
    /// its failure reported to openraft).
    appends_synced: tokio::sync::watch::Sender<u64>,
    /// Told of every append as it is handed to the writer (see [`LogStore::on_append`]).
    on_append: OnceLock<AppendHook>,
    /// The last entry appended, while no truncation has happened since.
    last_appended: Mutex<Option<LogId>>,
}

/// Called with the entry before an append (`None` before the first) and the appended entries.
pub type AppendHook = Box<dyn Fn(Option<LogId>, Vec<Entry>) + Send + Sync>;

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
        let wal_dir = path
            .parent()
            .map_or_else(|| PathBuf::from("wal"), |d| d.join("wal"));
        let mut wal = Wal::open(&wal_dir).map_err(|e| fail(e.to_string()))?;
        move_entries_out_of_redb(&db, &mut wal).map_err(fail)?;
        // Entries up to the purge point may still be in a segment that holds later ones.
        let purged: Option<LogId> = {
            let txn = db.begin_read().map_err(|e| fail(db_err(e)))?;
            let t = txn.open_table(META).map_err(|e| fail(db_err(e)))?;
            let v = t.get(K_PURGED).map_err(|e| fail(db_err(e)))?;
            match v {
                Some(b) => Some(
                    postcard::from_bytes(b.value())
                        .map_err(|e| fail(format!("corrupt {K_PURGED}: {e}")))?,
                ),
                None => None,
            }
        };
        if let Some(p) = purged {
            wal.purge(p.index).map_err(|e| fail(e.to_string()))?;
        }
        let (tx, rx) = mpsc::channel();
        let shared = Arc::new(Shared {
            db,
            wal: Mutex::new(wal),
            pending: Mutex::new(BTreeMap::new()),
            tx: Mutex::new(tx),
            seq: AtomicU64::new(0),
            stats: Arc::new(LogStats::default()),
            appends_synced: tokio::sync::watch::Sender::new(0),
            on_append: OnceLock::new(),
            last_appended: Mutex::new(None),
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

    /// A counter of the syncs that made appended entries durable. openraft 0.9 waits for each
    /// append's sync before it takes the next write, so a proposer that gathers the writes
    /// arriving meanwhile into one entry waits on this between entries.
    pub fn appends_synced(&self) -> tokio::sync::watch::Receiver<u64> {
        self.shared.appends_synced.subscribe()
    }

    /// Has `hook` told of every append from now on, as soon as it is handed to the writer and
    /// before it is durable (early replication, see [`super::early`]).
    pub fn on_append(&self, hook: AppendHook) {
        let _ = self.shared.on_append.set(hook);
    }

    /// The id of the entry at `index`, if the log (or its purge point) still knows it.
    fn log_id_at(&self, index: u64) -> Option<LogId> {
        if let Some(l) = *self
            .shared
            .last_appended
            .lock()
            .unwrap_or_else(|p| p.into_inner())
        {
            if l.index == index {
                return Some(l);
            }
        }
        if let Ok(found) = self.read_range(index, Some(index + 1)) {
            if let Some(e) = found.first().filter(|e| e.log_id.index == index) {
                return Some(e.log_id);
            }
        }
        self.last_purged()
            .ok()
            .flatten()
            .filter(|l| l.index == index)
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

    /// Run before openraft starts: a node that led when it stopped does not lead that term
    /// again. Its vote is kept (it still voted for itself in that term) but no longer marked
    /// committed, so openraft starts it as a follower and it must win a new term to lead
    /// (why: [`super::early`], "Nor may it forget them"). Returns whether the vote changed.
    pub async fn step_down_on_restart(&self, me: NodeId) -> Result<bool, String> {
        let vote: Option<Vote> = self.get_decoded(K_VOTE)?;
        match vote {
            Some(mut v) if v.is_committed() && v.leader_id.voted_for() == Some(me) => {
                v.committed = false;
                let bytes = postcard::to_allocvec(&v).map_err(|e| e.to_string())?;
                self.put_meta(K_VOTE, bytes).await?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    pub fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>, String> {
        let txn = self.shared.db.begin_read().map_err(db_err)?;
        let t = txn.open_table(META).map_err(db_err)?;
        Ok(t.get(key).map_err(db_err)?.map(|v| v.value().to_vec()))
    }

    /// The last entry removed from the log (everything up to it is only in a snapshot).
    pub fn last_purged(&self) -> Result<Option<LogId>, String> {
        self.get_decoded(K_PURGED)
    }

    fn get_decoded<T: serde::de::DeserializeOwned>(&self, key: &str) -> Result<Option<T>, String> {
        match self.get_meta(key)? {
            None => Ok(None),
            Some(b) => postcard::from_bytes(&b)
                .map(Some)
                .map_err(|e| format!("corrupt {key}: {e}")),
        }
    }

    /// Entries in `[start, end)` that the log holds, in order.
    pub fn read_range(&self, start: u64, end: Option<u64>) -> Result<Vec<Entry>, String> {
        // Entries not yet flushed first: an entry the writer flushes meanwhile is then in one
        // of the two reads. Replication usually asks for exactly these (still being flushed):
        // they are served from memory without waiting on the database.
        let mut out: BTreeMap<u64, Entry> = {
            let pending = self
                .shared
                .pending
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let range = (
                Bound::Included(start),
                end.map_or(Bound::Unbounded, Bound::Excluded),
            );
            pending
                .range(range)
                .map(|(i, (_, e))| (*i, e.clone()))
                .collect()
        };
        let covered = end.is_some_and(|e| {
            e <= start
                || (out.first_key_value().map(|(i, _)| *i) == Some(start)
                    && out.len() as u64 == e - start)
        });
        if covered {
            return Ok(out.into_values().collect());
        }
        let located = self
            .shared
            .wal
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .locate(start, end);
        for l in located {
            if out.contains_key(&l.index) {
                continue;
            }
            let bytes = l.read().map_err(|e| e.to_string())?;
            let entry: Entry = postcard::from_bytes(&bytes)
                .map_err(|e| format!("corrupt log entry {}: {e}", l.index))?;
            out.insert(l.index, entry);
        }
        Ok(out.into_values().collect())
    }

    fn last_in_wal(&self) -> Result<Option<Entry>, String> {
        let located = {
            let wal = self.shared.wal.lock().unwrap_or_else(|p| p.into_inner());
            match wal.last_index() {
                Some(last) => wal.locate(last, None),
                None => Vec::new(),
            }
        };
        match located.first() {
            None => Ok(None),
            Some(l) => {
                let bytes = l.read().map_err(|e| e.to_string())?;
                postcard::from_bytes(&bytes)
                    .map(Some)
                    .map_err(|e| format!("corrupt last entry: {e}"))
            }
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
        let result = commit(&shared, &ops);
        shared.stats.commits.fetch_add(1, Ordering::Relaxed);
        shared
            .stats
            .ops
            .fetch_add(ops.len() as u64, Ordering::Relaxed);
        if let Err(e) = &result {
            tracing::error!(error = %e, "raft log write failed");
        }
        let appended = ops.iter().any(|op| matches!(op, Op::Append { .. }));
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
        if appended {
            shared.appends_synced.send_modify(|n| *n += 1);
        }
    }
}

/// Makes a batch of operations durable, in their order: entries and truncations in the
/// segment files, records in redb (committed before the segments are synced, so a purge point
/// is on disk before the segments it frees are deleted).
fn commit(shared: &Shared, ops: &[Op]) -> Result<(), String> {
    let has_meta = ops
        .iter()
        .any(|op| matches!(op, Op::Purge { .. } | Op::Meta { .. }));
    let mut purge_upto = None;
    let job = {
        let mut wal = shared.wal.lock().unwrap_or_else(|p| p.into_inner());
        for op in ops {
            match op {
                Op::Append { entries, .. } => {
                    for (i, _, bytes) in entries {
                        wal.append(*i, bytes).map_err(|e| e.to_string())?;
                    }
                }
                Op::Truncate { from, .. } => wal.truncate(*from).map_err(|e| e.to_string())?,
                Op::Purge { upto, .. } => purge_upto = purge_upto.max(Some(*upto)),
                Op::Meta { .. } => {}
            }
        }
        wal.write().map_err(|e| e.to_string())?
    };
    if has_meta {
        let txn = shared.db.begin_write().map_err(db_err)?;
        {
            let mut meta = txn.open_table(META).map_err(db_err)?;
            for op in ops {
                match op {
                    Op::Purge { record, .. } => {
                        meta.insert(K_PURGED, record.as_slice()).map_err(db_err)?;
                    }
                    Op::Meta { key, value, .. } => {
                        meta.insert(*key, value.as_slice()).map_err(db_err)?;
                    }
                    Op::Append { .. } | Op::Truncate { .. } => {}
                }
            }
        }
        txn.commit().map_err(db_err)?;
    }
    job.run().map_err(|e| e.to_string())?;
    if let Some(upto) = purge_upto {
        let mut wal = shared.wal.lock().unwrap_or_else(|p| p.into_inner());
        wal.purge(upto).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Moves entries a node stored in redb before the segment files existed into them.
fn move_entries_out_of_redb(db: &Database, wal: &mut Wal) -> Result<(), String> {
    let entries: Vec<(u64, Vec<u8>)> = {
        let txn = db.begin_read().map_err(db_err)?;
        let t = txn.open_table(LOG).map_err(db_err)?;
        let mut out = Vec::new();
        for item in t.iter().map_err(db_err)? {
            let (k, v) = item.map_err(db_err)?;
            out.push((k.value(), v.value().to_vec()));
        }
        out
    };
    if entries.is_empty() {
        return Ok(());
    }
    for (i, bytes) in &entries {
        wal.append(*i, bytes).map_err(|e| e.to_string())?;
    }
    wal.sync().map_err(|e| e.to_string())?;
    let txn = db.begin_write().map_err(db_err)?;
    txn.open_table(LOG)
        .map_err(db_err)?
        .retain(|_, _| false)
        .map_err(db_err)?;
    txn.commit().map_err(db_err)?;
    tracing::info!(
        entries = entries.len(),
        "moved the raft log from redb into segment files"
    );
    Ok(())
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
        let db_last = self.last_in_wal().map_err(io_read)?.map(|e| e.log_id);
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
        let entries: Vec<Entry> = entries.into_iter().collect();
        let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
            return self
                .send(Op::Append {
                    entries: Vec::new(),
                    callback,
                })
                .map_err(io_write);
        };
        let (first, last) = (first.log_id.index, last.log_id);
        // The entry before these, for the hook: `None` when it is not known.
        let prev = match (self.shared.on_append.get(), first) {
            (None, _) => None,
            (Some(_), 0) => Some(None),
            (Some(_), i) => self.log_id_at(i - 1).map(Some),
        };
        let mut batch = Vec::with_capacity(entries.len());
        // Copies for the hook only when it will be called.
        let mut offered = Vec::new();
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
                if prev.is_some() {
                    offered.push(entry.clone());
                }
                pending.insert(index, (seq, entry));
                batch.push((index, seq, bytes));
            }
        }
        *self
            .shared
            .last_appended
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(last);
        self.send(Op::Append {
            entries: batch,
            callback,
        })
        .map_err(io_write)?;
        if let (Some(hook), Some(prev)) = (self.shared.on_append.get(), prev) {
            hook(prev, offered);
        }
        Ok(())
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
        *self
            .shared
            .last_appended
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = None;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_node_that_led_restarts_as_a_follower_of_its_term() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = LogStore::open(&dir.path().join("raft.redb")).unwrap();
        let led = Vote::new_committed(3, 2);
        log.save_vote(&led).await.unwrap();
        assert!(log.step_down_on_restart(2).await.unwrap());
        let kept = log.read_vote().await.unwrap().unwrap();
        assert_eq!(
            kept.leader_id, led.leader_id,
            "it still voted for itself in term 3"
        );
        assert!(!kept.is_committed());
        // A follower's vote for another leader is left as it is.
        let followed = Vote::new_committed(4, 1);
        log.save_vote(&followed).await.unwrap();
        assert!(!log.step_down_on_restart(2).await.unwrap());
        assert_eq!(log.read_vote().await.unwrap(), Some(followed));
    }
}
