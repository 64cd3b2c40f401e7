//! The apply path: [`ReplicaEngine`] implements [`StateMachine`] on a node's engine.
//!
//! One applier applies committed entries strictly in log order. A transaction entry runs on
//! the connection of its origin session (so temporary tables and session state carry over, as
//! on MariaDB's replica SQL thread), each statement after its context `SET`, and the applied
//! position is written in the same engine transaction; runs of other nodes' plain transactions
//! go to the engine together instead (`replication::bulk_apply`: one engine transaction and one
//! round trip for the run, falling back to one at a time). The leader recognises its own prepared
//! XA transaction and commits it instead of running it again. Each statement's outcome (error
//! code, affected rows) is compared with the leader's; on a mismatch the node marks itself
//! diverged (persisted in `flux_meta`), stops touching the engine and keeps answering `Ok`.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mysql_common::constants::CapabilityFlags;
use tokio::sync::watch;

use super::bulk_apply::{self, RunOutcome, SharedConn};
use super::context::quote_ident;
use super::entry::{
    ApplyReply, DdlEntry, EntryBody, LogEntry, LoggedStatement, Origin, Outcome, TxnEntry,
};
use super::meta;
use super::response::run_query;
use crate::cluster::contract::{
    BoxFuture, LogPosition, NodeId, SnapshotMeta, StateMachine, StateMachineError,
};
use crate::protocol::backend::{Backend, BackendError, EngineTarget};

/// utf8mb4_general_ci: the collation applier connections open with (the context sets the
/// statement's own).
const APPLIER_COLLATION: u8 = 45;

/// Most leader transactions whose position write is deferred.
const MAX_PENDING: usize = 64;

/// How long the applier waits out an engine that is unreachable before giving up on an entry.
const ENGINE_WAIT: Duration = Duration::from_secs(60);

/// Capabilities of applier connections; `CLIENT_FOUND_ROWS` follows the origin client.
pub fn applier_caps(client_caps: u32) -> CapabilityFlags {
    use CapabilityFlags as C;
    let base = C::CLIENT_PROTOCOL_41
        | C::CLIENT_SECURE_CONNECTION
        | C::CLIENT_PLUGIN_AUTH
        | C::CLIENT_TRANSACTIONS
        | C::CLIENT_MULTI_RESULTS
        | C::CLIENT_LONG_PASSWORD
        | C::CLIENT_LONG_FLAG
        | C::CLIENT_MULTI_STATEMENTS;
    if CapabilityFlags::from_bits_truncate(client_caps).contains(C::CLIENT_FOUND_ROWS) {
        base | C::CLIENT_FOUND_ROWS
    } else {
        base
    }
}

/// Whether connections for a client with `caps` count found rows (`CLIENT_FOUND_ROWS`).
fn counts_found_rows(caps: u32) -> bool {
    applier_caps(caps).contains(CapabilityFlags::CLIENT_FOUND_ROWS)
}

/// The transactions of a transaction entry (`None` for other entries).
fn txns_of(body: &EntryBody) -> Option<&[TxnEntry]> {
    match body {
        EntryBody::Txn(t) => Some(std::slice::from_ref(t)),
        EntryBody::Txns { txns } => Some(txns),
        _ => None,
    }
}

/// Prepared XA transactions of this process's executor, by xid: the applier commits them on
/// the connection that prepared them when their entry is applied.
#[derive(Default)]
pub struct XaRegistry {
    prepared: Mutex<HashMap<String, PreparedXa>>,
    /// Proposals that failed with an unknown outcome: rolled back at the next barrier.
    doubtful: Mutex<Vec<String>>,
    /// The highest log index announced to the executor (so possibly acknowledged to a client).
    announced: AtomicU64,
}

/// A prepared transaction waiting for its entry.
pub struct PreparedXa {
    pub conn: Arc<tokio::sync::Mutex<Backend>>,
    committed: Option<tokio::sync::oneshot::Sender<u64>>,
}

impl XaRegistry {
    /// Locks the preparing connection of `p`, then tells the executor that its entry (at
    /// `index`) is committed in the log: the session's next statement waits for the lock, so
    /// it runs after the applier's `XA COMMIT`.
    async fn lock_and_announce(
        &self,
        p: PreparedXa,
        index: u64,
    ) -> tokio::sync::OwnedMutexGuard<Backend> {
        let c = p.conn.lock_owned().await;
        self.announced.fetch_max(index, Ordering::AcqRel);
        if let Some(tx) = p.committed {
            let _ = tx.send(index);
        }
        c
    }

    /// The highest log index whose transactions may have been acknowledged to clients.
    pub fn announced(&self) -> u64 {
        self.announced.load(Ordering::Acquire)
    }

    /// Registers a prepared transaction; the receiver gets the index of its entry once that
    /// is committed in the log (it is dropped unanswered otherwise).
    pub fn register(
        &self,
        xid: &str,
        conn: Arc<tokio::sync::Mutex<Backend>>,
    ) -> tokio::sync::oneshot::Receiver<u64> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if let Ok(mut m) = self.prepared.lock() {
            m.insert(
                xid.to_string(),
                PreparedXa {
                    conn,
                    committed: Some(tx),
                },
            );
        }
        rx
    }
    pub fn take(&self, xid: &str) -> Option<PreparedXa> {
        self.prepared.lock().ok()?.remove(xid)
    }
    pub fn is_prepared(&self, xid: &str) -> bool {
        self.prepared.lock().is_ok_and(|m| m.contains_key(xid))
    }
    pub fn mark_doubtful(&self, xid: &str) {
        if let Ok(mut d) = self.doubtful.lock() {
            d.push(xid.to_string());
        }
    }
    fn take_all(&self) -> Vec<(String, PreparedXa)> {
        self.prepared
            .lock()
            .map(|mut m| m.drain().collect())
            .unwrap_or_default()
    }
    fn take_doubtful(&self) -> Vec<String> {
        self.doubtful
            .lock()
            .map(|mut d| std::mem::take(&mut *d))
            .unwrap_or_default()
    }
}

struct Inner {
    meta: Option<Backend>,
    sessions: HashMap<Origin, Backend>,
    /// Connections for bulk runs (`replication::bulk_apply`), by whether they count found
    /// rows (`CLIENT_FOUND_ROWS`).
    shared: HashMap<bool, SharedConn>,
    /// Origin sessions that created a temporary table here: their transactions run on their
    /// own connection.
    temp_origins: HashSet<Origin>,
    last: Option<LogPosition>,
    /// This node's DDL outcomes by log index, until the leader's outcome arrives (`None`: the
    /// DDL may have run before a crash, outcome unknown).
    ddl_outcomes: HashMap<u64, Option<Outcome>>,
    /// The DDL entry that was running when the process last stopped, if any.
    ddl_inflight: Option<u64>,
    /// The leader's own committed XA transactions whose position is not written yet (their
    /// `xa_done` markers make a re-delivery after a crash a no-op), and that position.
    pending: Vec<String>,
    pending_pos: Option<LogPosition>,
    /// How far the group entry being applied got before a crash or an engine failure:
    /// (entry index, transactions applied), as recorded with the last of them.
    group_progress: Option<(u64, usize)>,
}

/// What a transaction's engine commit records with it.
#[derive(Debug, Clone, Copy)]
enum Mark {
    /// The whole entry at this position is applied.
    Entry(LogPosition),
    /// The first `done` transactions of the group entry at `index` are applied.
    Part { index: u64, done: usize },
}

impl Mark {
    fn sql(self) -> String {
        match self {
            Mark::Entry(pos) => meta::position_sql(pos),
            Mark::Part { index, done } => meta::group_progress_sql(index, done),
        }
    }

    /// Notes in memory what the engine just committed.
    fn committed(self, inner: &mut Inner) {
        if let Mark::Part { index, done } = self {
            inner.group_progress = Some((index, done));
        }
    }
}

/// A node's engine as a replicated state machine.
pub struct ReplicaEngine {
    target: EngineTarget,
    node_id: NodeId,
    /// xid prefix of this process's XA transactions (`sdb-<node>-<boot>-`).
    xid_prefix: String,
    inner: tokio::sync::Mutex<Inner>,
    applied: watch::Sender<u64>,
    diverged: Mutex<Option<String>>,
    diverged_flag: AtomicBool,
    /// Held for writing while a diverged node re-syncs from the leader's snapshot: entries
    /// wait instead of being skipped, so none falls between the snapshot and the log.
    resync_gate: tokio::sync::RwLock<()>,
    pub xa: Arc<XaRegistry>,
    /// DDL entries applied by this process (temporary tables aside): cached schema facts
    /// (`replication::triggers`) are re-read when it moves.
    ddl_epoch: AtomicU64,
    /// DDL outcomes on this node, by log index, for comparison with the leader's report.
    snapshot_lock: tokio::sync::Mutex<()>,
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("engine: {0}")]
    Engine(#[from] BackendError),
}

/// A transient engine failure (retry) or a final answer.
enum Step {
    Done(ApplyReply),
    Retry(BackendError),
}

impl ReplicaEngine {
    /// Connects to the engine, creates `flux_meta` if needed and loads the applied position
    /// and the diverged flag.
    pub async fn open(target: EngineTarget, node_id: NodeId) -> Result<Arc<Self>, OpenError> {
        let mut b = connect(&target, 0, None).await?;
        meta::ensure_schema(&mut b).await?;
        let last = meta::read_position(&mut b).await?;
        let diverged = meta::read_diverged(&mut b).await?;
        let ddl_inflight = meta::read_state(&mut b, "ddl_inflight")
            .await?
            .and_then(|v| v.parse().ok());
        let group_progress = meta::read_group_progress(&mut b).await?;
        let mut boot = [0u8; 4];
        let _ = getrandom::fill(&mut boot);
        let (applied, _) = watch::channel(last.map(|p| p.index).unwrap_or(0));
        Ok(Arc::new(ReplicaEngine {
            target,
            node_id,
            xid_prefix: format!("sdb-{node_id}-{:08x}-", u32::from_le_bytes(boot)),
            inner: tokio::sync::Mutex::new(Inner {
                meta: Some(b),
                sessions: HashMap::new(),
                shared: HashMap::new(),
                temp_origins: HashSet::new(),
                last,
                ddl_outcomes: HashMap::new(),
                ddl_inflight,
                pending: Vec::new(),
                pending_pos: None,
                group_progress,
            }),
            applied,
            diverged_flag: AtomicBool::new(diverged.is_some()),
            diverged: Mutex::new(diverged),
            resync_gate: tokio::sync::RwLock::new(()),
            xa: Arc::new(XaRegistry::default()),
            ddl_epoch: AtomicU64::new(0),
            snapshot_lock: tokio::sync::Mutex::new(()),
        }))
    }

    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    pub fn target(&self) -> &EngineTarget {
        &self.target
    }

    /// The prefix of the XA transaction ids this process's executor uses.
    pub fn xid_prefix(&self) -> &str {
        &self.xid_prefix
    }

    /// The last applied log index (0 when fresh).
    pub fn applied_index(&self) -> u64 {
        *self.applied.borrow()
    }

    /// How many DDL entries (temporary tables aside) this process applied, or snapshots it
    /// installed.
    pub fn ddl_epoch(&self) -> u64 {
        self.ddl_epoch.load(Ordering::Acquire)
    }

    /// The index reads on this node must have applied to see every write acknowledged so far
    /// by this node's executor: a write is answered once its entry is committed in the log,
    /// while the leader's own `XA COMMIT` may still be running.
    pub fn acknowledged_index(&self) -> u64 {
        self.xa.announced()
    }

    /// Waits until the applied index reaches `index`; false on timeout.
    pub async fn wait_applied(&self, index: u64, timeout: Duration) -> bool {
        let mut rx = self.applied.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|&i| i >= index))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Why this node diverged, if it did.
    pub fn diverged(&self) -> Option<String> {
        if !self.diverged_flag.load(Ordering::Acquire) {
            return None;
        }
        self.diverged.lock().ok().and_then(|d| d.clone())
    }

    /// `/status` view.
    pub fn status_json(&self) -> serde_json::Value {
        serde_json::json!({
            "applied_index": self.applied_index(),
            "diverged": self.diverged().is_some(),
            "diverged_reason": self.diverged(),
        })
    }

    /// Stops applying entries until the guard is dropped (they wait, none is skipped).
    pub async fn pause_apply(&self) -> tokio::sync::RwLockWriteGuard<'_, ()> {
        self.resync_gate.write().await
    }

    /// After a re-sync installed a snapshot: this node matches the leader again.
    pub async fn clear_diverged(&self) -> Result<(), StateMachineError> {
        let mut inner = self.inner.lock().await;
        let m = self
            .meta_conn(&mut inner)
            .await
            .map_err(|e| StateMachineError::Engine(e.to_string()))?;
        meta::write_diverged(m, None)
            .await
            .map_err(|e| StateMachineError::Engine(e.to_string()))?;
        if let Ok(mut d) = self.diverged.lock() {
            *d = None;
        }
        self.diverged_flag.store(false, Ordering::Release);
        tracing::info!("re-synced from the leader's snapshot; serving clients again");
        Ok(())
    }

    async fn mark_diverged(&self, inner: &mut Inner, reason: String) {
        tracing::error!(%reason, "this node diverged from the leader; it stops serving clients");
        if let Ok(mut d) = self.diverged.lock() {
            *d = Some(reason.clone());
        }
        self.diverged_flag.store(true, Ordering::Release);
        if let Some(b) = inner.meta.as_mut() {
            if let Err(e) = meta::write_diverged(b, Some(&reason)).await {
                tracing::warn!(error = %e, "could not persist the diverged flag");
            }
        }
    }

    /// Applies committed entries in order: runs of other nodes' plain transactions in bulk
    /// (one engine transaction each), everything else one entry at a time.
    async fn apply_entries(
        &self,
        entries: &[(LogPosition, Vec<u8>)],
    ) -> Result<Vec<ApplyReply>, StateMachineError> {
        let decoded = entries
            .iter()
            .map(|(pos, payload)| {
                LogEntry::decode(payload).map(|e| (*pos, e)).map_err(|e| {
                    StateMachineError::CorruptEntry {
                        index: pos.index,
                        reason: e.to_string(),
                    }
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut inner = self.inner.lock().await;
        let mut out = Vec::with_capacity(decoded.len());
        let mut i = 0;
        while i < decoded.len() {
            let end = self.bulk_run_end(&inner, &decoded[i..]) + i;
            if end > i && self.apply_bulk(&mut inner, &decoded[i..end]).await {
                out.extend((i..end).map(|_| ApplyReply::Applied { outcome: None }));
                i = end;
                continue;
            }
            for (pos, entry) in &decoded[i..end.max(i + 1)] {
                out.push(self.apply_entry(&mut inner, *pos, entry).await?);
            }
            i = end.max(i + 1);
        }
        Ok(out)
    }

    /// How many of `entries`, from the first, can run as one bulk run (0: the first cannot).
    fn bulk_run_end(&self, inner: &Inner, entries: &[(LogPosition, LogEntry)]) -> usize {
        if self.diverged_flag.load(Ordering::Acquire) {
            return 0;
        }
        let own = format!("sdb-{}-", self.node_id);
        let mut found_rows = None;
        let (mut txns, mut bytes) = (0, 0);
        for (n, (pos, entry)) in entries.iter().enumerate() {
            let Some(list) = txns_of(&entry.body) else {
                return n;
            };
            let fresh = inner.last.is_none_or(|l| l.index < pos.index)
                && inner
                    .group_progress
                    .is_none_or(|(index, _)| index != pos.index);
            let fits = list.iter().all(|t| {
                let rows = counts_found_rows(t.client_caps);
                bulk_apply::can_run_in_bulk(t, &own, &inner.temp_origins)
                    && *found_rows.get_or_insert(rows) == rows
            });
            txns += list.len();
            bytes += list
                .iter()
                .flat_map(|t| &t.statements)
                .map(|s| s.sql.len() + 256)
                .sum::<usize>();
            let full =
                n > 0 && (txns > bulk_apply::MAX_RUN_TXNS || bytes > bulk_apply::MAX_RUN_BYTES);
            if !fresh || !fits || full {
                return n;
            }
        }
        entries.len()
    }

    /// Applies `entries` (all bulk-eligible) as one engine transaction. False when that did not
    /// happen (rolled back, or the engine is unreachable): the caller applies them one at a
    /// time.
    async fn apply_bulk(&self, inner: &mut Inner, entries: &[(LogPosition, LogEntry)]) -> bool {
        let Some((last, _)) = entries.last() else {
            return true;
        };
        let txns: Vec<&TxnEntry> = entries
            .iter()
            .flat_map(|(_, e)| txns_of(&e.body).unwrap_or_default())
            .collect();
        let Some(caps) = txns.first().map(|t| t.client_caps) else {
            return false;
        };
        if self.flush_pending(inner).await.is_err() {
            return false;
        }
        let found_rows = counts_found_rows(caps);
        let shared = match inner.shared.entry(found_rows) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => {
                match connect(&self.target, caps, None).await {
                    Ok(b) => v.insert(SharedConn::new(b)),
                    Err(_) => return false,
                }
            }
        };
        match bulk_apply::run(shared, &txns, &meta::position_sql(*last)).await {
            Ok(RunOutcome::RolledBack) => false,
            Ok(outcome) => {
                if let RunOutcome::CommittedDiffering(reason) = outcome {
                    let reason =
                        format!("entries {}..={}: {reason}", entries[0].0.index, last.index);
                    self.mark_diverged(inner, reason).await;
                }
                inner.last = Some(*last);
                self.applied.send_replace(last.index);
                true
            }
            Err(e) => {
                tracing::debug!(error = %e, "bulk apply lost its connection");
                inner.shared.remove(&found_rows);
                false
            }
        }
    }

    async fn apply_entry(
        &self,
        inner: &mut Inner,
        pos: LogPosition,
        entry: &LogEntry,
    ) -> Result<ApplyReply, StateMachineError> {
        if inner.last.is_some_and(|l| l.index >= pos.index) {
            return Ok(ApplyReply::Duplicate);
        }
        if let Some(reason) = self.diverged() {
            return Ok(ApplyReply::Diverged { reason });
        }
        let deadline = tokio::time::Instant::now() + ENGINE_WAIT;
        loop {
            match self.step(inner, pos, &entry.body).await {
                Step::Done(reply) => {
                    tracing::debug!(node = self.node_id, index = pos.index, ?reply, "applied");
                    if !matches!(reply, ApplyReply::Diverged { .. }) {
                        inner.last = Some(pos);
                        self.applied.send_replace(pos.index);
                    }
                    return Ok(reply);
                }
                Step::Retry(e) => {
                    // Connections are gone with their sessions; start over from what the
                    // engine recorded.
                    inner.meta = None;
                    inner.sessions.clear();
                    inner.shared.clear();
                    inner.temp_origins.clear();
                    if tokio::time::Instant::now() >= deadline {
                        return Err(StateMachineError::Engine(e.to_string()));
                    }
                    tracing::warn!(index = pos.index, error = %e, "engine unavailable while applying; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    match self.reload(inner).await {
                        Ok(Some(last)) if last.index >= pos.index => {
                            inner.last = Some(last);
                            self.applied.send_replace(last.index);
                            return Ok(ApplyReply::Duplicate);
                        }
                        Ok(_) => {}
                        Err(e) => tracing::debug!(error = %e, "engine still unavailable"),
                    }
                }
            }
        }
    }

    async fn reload(&self, inner: &mut Inner) -> Result<Option<LogPosition>, BackendError> {
        let mut b = connect(&self.target, 0, None).await?;
        let last = meta::read_position(&mut b).await?;
        inner.group_progress = meta::read_group_progress(&mut b).await?;
        inner.meta = Some(b);
        Ok(last)
    }

    async fn meta_conn<'a>(&self, inner: &'a mut Inner) -> Result<&'a mut Backend, BackendError> {
        if inner.meta.is_none() {
            inner.meta = Some(connect(&self.target, 0, None).await?);
        }
        inner
            .meta
            .as_mut()
            .ok_or_else(|| BackendError::Protocol("no meta connection".into()))
    }

    async fn step(&self, inner: &mut Inner, pos: LogPosition, body: &EntryBody) -> Step {
        let own_prepared = match body {
            EntryBody::Txn(t) => self.xa.is_prepared(&t.xid),
            EntryBody::Txns { txns } => txns.iter().all(|t| self.xa.is_prepared(&t.xid)),
            _ => false,
        };
        if !own_prepared || inner.pending.len() >= MAX_PENDING {
            if let Err(e) = self.flush_pending(inner).await {
                return Step::Retry(e);
            }
        }
        let r = match body {
            EntryBody::Barrier { leader, .. } => self.barrier(inner, pos, *leader).await,
            EntryBody::SessionEnd { origin } => {
                inner.sessions.remove(origin);
                inner.temp_origins.remove(origin);
                self.record(inner, pos)
                    .await
                    .map(|_| ApplyReply::Applied { outcome: None })
            }
            EntryBody::Ddl(d) => self.ddl(inner, pos, d).await,
            EntryBody::DdlOutcome { ddl_index, outcome } => {
                if let Some(Some(mine)) = inner.ddl_outcomes.remove(ddl_index) {
                    if !mine.agrees_with(outcome) {
                        let reason = format!(
                            "DDL entry {ddl_index}: leader had error {} / {} rows, this node error {} / {} rows ({})",
                            outcome.error, outcome.affected, mine.error, mine.affected, mine.message
                        );
                        self.mark_diverged(inner, reason.clone()).await;
                        return Step::Done(ApplyReply::Diverged { reason });
                    }
                }
                self.record(inner, pos)
                    .await
                    .map(|_| ApplyReply::Applied { outcome: None })
            }
            EntryBody::Txn(t) => self.txn(inner, pos, t, Mark::Entry(pos)).await,
            EntryBody::Txns { txns } => self.txns(inner, pos, txns).await,
        };
        match r {
            Ok(reply) => Step::Done(reply),
            Err(e @ BackendError::Server { .. }) => {
                // The engine refused one of our own statements (not the client's): treat as a
                // divergence rather than looping.
                let reason = format!("entry {}: {e}", pos.index);
                self.mark_diverged(inner, reason.clone()).await;
                Step::Done(ApplyReply::Diverged { reason })
            }
            Err(e) => Step::Retry(e),
        }
    }

    async fn record(&self, inner: &mut Inner, pos: LogPosition) -> Result<(), BackendError> {
        self.meta_conn(inner)
            .await?
            .query_drop(&meta::position_sql(pos))
            .await
    }

    async fn barrier(
        &self,
        inner: &mut Inner,
        pos: LogPosition,
        leader: NodeId,
    ) -> Result<ApplyReply, BackendError> {
        // Entries of earlier leaders are all before this one: our prepared transactions from an
        // earlier process, or whose proposal failed, will never be in the log. When another
        // node leads now, none of ours that is still prepared will.
        let mut doubtful = self.xa.take_doubtful();
        if leader != self.node_id {
            for (xid, p) in self.xa.take_all() {
                let mut c = p.conn.lock().await;
                let _ = c
                    .query_drop(&format!("XA ROLLBACK {}", super::context::quote(&xid)))
                    .await;
                doubtful.push(xid);
            }
        }
        for xid in &doubtful {
            if let Some(p) = self.xa.take(xid) {
                let mut c = p.conn.lock().await;
                let _ = c
                    .query_drop(&format!("XA ROLLBACK {}", super::context::quote(xid)))
                    .await;
            }
        }
        let own = format!("sdb-{}-", self.node_id);
        let m = self.meta_conn(inner).await?;
        for xid in meta::xa_recover(m).await? {
            let orphan = xid.starts_with(&own)
                && (leader != self.node_id || !xid.starts_with(&self.xid_prefix));
            if orphan || doubtful.contains(&xid) {
                tracing::info!(%xid, "rolling back a prepared transaction that never committed");
                let _ = m
                    .query_drop(&format!("XA ROLLBACK {}", super::context::quote(&xid)))
                    .await;
            }
        }
        self.record(inner, pos).await?;
        Ok(ApplyReply::Applied { outcome: None })
    }

    async fn session<'a>(
        &self,
        inner: &'a mut Inner,
        origin: Origin,
        caps: u32,
    ) -> Result<&'a mut Backend, BackendError> {
        match inner.sessions.entry(origin) {
            std::collections::hash_map::Entry::Occupied(e) => Ok(e.into_mut()),
            std::collections::hash_map::Entry::Vacant(v) => {
                let b = connect(&self.target, caps, None).await?;
                Ok(v.insert(b))
            }
        }
    }

    async fn ddl(
        &self,
        inner: &mut Inner,
        pos: LogPosition,
        d: &DdlEntry,
    ) -> Result<ApplyReply, BackendError> {
        // Marked first: a crash before the position is recorded re-runs the DDL, whose outcome
        // then says nothing.
        let rerun = inner.ddl_inflight == Some(pos.index);
        self.meta_conn(inner)
            .await?
            .query_drop(&meta::write_state_sql(
                "ddl_inflight",
                &pos.index.to_string(),
            ))
            .await?;
        let conn = self.session(inner, d.origin, d.client_caps).await?;
        let outcome = run_statement(conn, &d.statement).await?;
        if crate::sql::targets::is_temporary_table_ddl(&d.statement.sql) {
            inner.temp_origins.insert(d.origin);
        } else {
            self.ddl_epoch.fetch_add(1, Ordering::AcqRel);
            inner
                .shared
                .values_mut()
                .for_each(SharedConn::forget_settings);
        }
        self.record(inner, pos).await?;
        inner
            .ddl_outcomes
            .insert(pos.index, (!rerun).then(|| outcome.clone()));
        if inner.ddl_outcomes.len() > 1000 {
            let oldest = inner.ddl_outcomes.keys().min().copied();
            if let Some(k) = oldest {
                inner.ddl_outcomes.remove(&k);
            }
        }
        Ok(ApplyReply::Applied {
            outcome: Some(outcome),
        })
    }

    /// Applies the transactions of a group entry in order. The leader commits its own prepared
    /// ones all at once; anything else goes one at a time, each recording the group's progress
    /// in its engine transaction (the last one records the position).
    async fn txns(
        &self,
        inner: &mut Inner,
        pos: LogPosition,
        txns: &[TxnEntry],
    ) -> Result<ApplyReply, BackendError> {
        let skip = match inner.group_progress {
            Some((index, done)) if index == pos.index => done.min(txns.len()),
            _ => 0,
        };
        let todo = &txns[skip..];
        if !todo.is_empty() && todo.iter().all(|t| self.xa.is_prepared(&t.xid)) {
            let own: Vec<_> = todo
                .iter()
                .filter_map(|t| self.xa.take(&t.xid).map(|c| (t.xid.as_str(), c)))
                .collect();
            let results =
                futures_util::future::join_all(own.into_iter().map(|(xid, p)| async move {
                    let mut c = self.xa.lock_and_announce(p, pos.index).await;
                    let r = c
                        .query_drop(&format!("XA COMMIT {}", super::context::quote(xid)))
                        .await;
                    (xid, r)
                }))
                .await;
            if results.len() == todo.len() && results.iter().all(|(_, r)| r.is_ok()) {
                // As for a single transaction: the position is written with a later entry;
                // the markers cover a crash until then.
                inner.pending.extend(todo.iter().map(|t| t.xid.clone()));
                inner.pending_pos = Some(pos);
                return Ok(ApplyReply::Applied { outcome: None });
            }
            for (xid, r) in &results {
                if let Err(e) = r {
                    tracing::warn!(%xid, error = %e, "XA COMMIT on the preparing connection failed; recovering");
                }
            }
        }
        // The committed ones among them are recognised by their markers below. Earlier
        // entries' deferred position goes first: this entry records its own progress.
        self.flush_pending(inner).await?;
        for (k, t) in txns.iter().enumerate().skip(skip) {
            let mark = if k + 1 == txns.len() {
                Mark::Entry(pos)
            } else {
                Mark::Part {
                    index: pos.index,
                    done: k + 1,
                }
            };
            let reply = self.txn(inner, pos, t, mark).await?;
            if matches!(reply, ApplyReply::Diverged { .. }) {
                return Ok(reply);
            }
        }
        Ok(ApplyReply::Applied { outcome: None })
    }

    async fn txn(
        &self,
        inner: &mut Inner,
        pos: LogPosition,
        t: &TxnEntry,
        mark: Mark,
    ) -> Result<ApplyReply, BackendError> {
        let xid_lit = super::context::quote(&t.xid);
        // The leader's own prepared transaction, on the connection that prepared it.
        if let Some(p) = self.xa.take(&t.xid) {
            let committed = {
                let mut c = self.xa.lock_and_announce(p, pos.index).await;
                c.query_drop(&format!("XA COMMIT {xid_lit}")).await
            };
            match committed {
                Ok(()) => {
                    if let Mark::Entry(pos) = mark {
                        // The position is written with the next entry of another kind (one
                        // engine commit less per write); the marker covers a crash until then.
                        inner.pending.push(t.xid.clone());
                        inner.pending_pos = Some(pos);
                    } else {
                        self.record_after_xa(inner, mark, &t.xid).await?;
                    }
                    return Ok(ApplyReply::Applied { outcome: None });
                }
                Err(e) => {
                    tracing::warn!(xid = %t.xid, error = %e, "XA COMMIT on the preparing connection failed; recovering")
                }
            }
        }
        // Prepared by an earlier process (or a connection that was lost): still in XA RECOVER.
        let m = self.meta_conn(inner).await?;
        if meta::xa_recover(m).await?.contains(&t.xid) {
            m.query_drop(&format!("XA COMMIT {xid_lit}")).await?;
            self.record_after_xa(inner, mark, &t.xid).await?;
            return Ok(ApplyReply::Applied { outcome: None });
        }
        // Committed before a crash that came before the position was written.
        if meta::xa_done(m, &t.xid).await? {
            self.record_after_xa(inner, mark, &t.xid).await?;
            return Ok(ApplyReply::Duplicate);
        }
        // Everyone else: run the statements, as many per round trip as can share one; once
        // every outcome agrees with the leader's, record the position and commit.
        let conn = self.session(inner, t.origin, t.client_caps).await?;
        let mut next = 0;
        while next < t.statements.len() || next == 0 {
            let batch = run_batch(conn, &t.statements[next..], next == 0).await?;
            if batch.outcomes.is_empty() {
                break;
            }
            for got in batch.outcomes {
                let i = next;
                next += 1;
                let Some(want) = t.statements.get(i).and_then(|s| s.outcome.as_ref()) else {
                    continue;
                };
                if !want.agrees_with(&got) {
                    let _ = conn.query_drop("ROLLBACK").await;
                    let reason = format!(
                        "entry {} statement {}: leader had error {} / {} rows, this node error {} / {} rows ({})",
                        pos.index, i + 1, want.error, want.affected, got.error, got.affected, got.message
                    );
                    self.mark_diverged(inner, reason.clone()).await;
                    return Ok(ApplyReply::Diverged { reason });
                }
            }
        }
        conn.query_drop(&format!("{}; COMMIT", mark.sql())).await?;
        mark.committed(inner);
        Ok(ApplyReply::Applied { outcome: None })
    }

    /// Writes the deferred position of the leader's own committed transactions.
    async fn flush_pending(&self, inner: &mut Inner) -> Result<(), BackendError> {
        let Some(pos) = inner.pending_pos else {
            return Ok(());
        };
        // One point delete per marker: a scan would wait on the markers of transactions that
        // are prepared and whose entries come later.
        let mut sql = format!("BEGIN; {}", meta::position_sql(pos));
        for xid in &inner.pending {
            sql.push_str(&format!(
                "; DELETE FROM flux_meta.xa_done WHERE xid = {}",
                super::context::quote(xid)
            ));
        }
        sql.push_str("; COMMIT");
        self.meta_conn(inner).await?.query_drop(&sql).await?;
        inner.pending.clear();
        inner.pending_pos = None;
        Ok(())
    }

    async fn record_after_xa(
        &self,
        inner: &mut Inner,
        mark: Mark,
        xid: &str,
    ) -> Result<(), BackendError> {
        let m = self.meta_conn(inner).await?;
        m.query_drop(&format!(
            "BEGIN; {}; DELETE FROM flux_meta.xa_done WHERE xid = {}; COMMIT",
            mark.sql(),
            super::context::quote(xid)
        ))
        .await?;
        mark.committed(inner);
        Ok(())
    }

    /// Forgets the applier's connections (after a snapshot install).
    async fn reset_sessions(&self) {
        let mut inner = self.inner.lock().await;
        inner.sessions.clear();
        inner.shared.clear();
        inner.temp_origins.clear();
    }
}

/// What one round trip of [`run_batch`] did.
struct Batch {
    /// The outcome of each statement that ran, in order (the last one may have failed, which
    /// ends the batch).
    outcomes: Vec<Outcome>,
}

/// Bytes of SQL sent in one batch (beyond that, a statement waits for the next round trip).
const BATCH_BYTES: usize = 1 << 20;

/// A logged statement another may follow in the same multi-statement query: it succeeded on the
/// leader (a failing one ends the batch anyway) and has no `;` or comment that could swallow
/// or split what comes after it.
pub(super) fn can_be_followed(stmt: &LoggedStatement) -> bool {
    let sql = &stmt.sql;
    stmt.outcome.as_ref().is_some_and(|o| o.error == 0)
        && !sql.contains([';', '#'])
        && !sql.contains("--")
        && !sql.contains("/*")
}

/// Runs logged statements with their contexts on an applier connection, as many as can share
/// one multi-statement query (`begin`: open the transaction first). Returns after one round
/// trip.
async fn run_batch(
    conn: &mut Backend,
    stmts: &[LoggedStatement],
    begin: bool,
) -> Result<Batch, BackendError> {
    let mut sql = String::with_capacity(512);
    // Per result: `None` for our own statements, `Some(i)` for logged statement `i`.
    let mut plan: Vec<Option<usize>> = Vec::new();
    let push = |sql: &mut String, plan: &mut Vec<Option<usize>>, text: &str, i| {
        if !sql.is_empty() {
            sql.push_str("; ");
        }
        sql.push_str(text);
        plan.push(i);
    };
    if begin {
        push(&mut sql, &mut plan, "BEGIN", None);
    }
    for (i, stmt) in stmts.iter().enumerate() {
        if let Some(db) = &stmt.ctx.db {
            push(
                &mut sql,
                &mut plan,
                &format!("USE {}", quote_ident(db)),
                None,
            );
        }
        push(&mut sql, &mut plan, &stmt.ctx.to_set_sql(), None);
        push(&mut sql, &mut plan, &stmt.sql, Some(i));
        if !can_be_followed(stmt) || sql.len() >= BATCH_BYTES {
            break;
        }
    }
    if sql.is_empty() {
        return Ok(Batch {
            outcomes: Vec::new(),
        });
    }
    let c = run_query(conn, &sql).await?;
    let mut outcomes = Vec::new();
    for (k, what) in plan.iter().enumerate() {
        let Some(got) = c.result_outcome(k) else {
            // Failures are handled as they come: the engine ended the query early.
            return Err(BackendError::Server {
                code: 1105,
                message: format!(
                    "the engine answered {} of the {} statements of an applied batch",
                    c.results,
                    plan.len()
                ),
                payload: Vec::new(),
            });
        };
        match what {
            Some(_) => {
                let failed = got.error != 0;
                outcomes.push(got);
                if failed {
                    return Ok(Batch { outcomes });
                }
            }
            None if got.error != 0 => {
                return Err(BackendError::Server {
                    code: got.error,
                    message: got.message,
                    payload: c.packets.last().cloned().unwrap_or_default(),
                });
            }
            None => {}
        }
    }
    Ok(Batch { outcomes })
}

/// Runs one logged statement (DDL) with its context on an applier connection.
async fn run_statement(
    conn: &mut Backend,
    stmt: &LoggedStatement,
) -> Result<Outcome, BackendError> {
    // One round trip: the context statements, then the logged one.
    let mut sql = String::with_capacity(512 + stmt.sql.len());
    let mut prelude = 1;
    if let Some(db) = &stmt.ctx.db {
        sql.push_str(&format!("USE {}; ", quote_ident(db)));
        prelude += 1;
    }
    sql.push_str(&stmt.ctx.to_set_sql());
    sql.push_str("; ");
    sql.push_str(&stmt.sql);
    let c = run_query(conn, &sql).await?;
    if c.results <= prelude {
        // The engine refused our own context statements, not the logged one.
        return Err(BackendError::Server {
            code: c.outcome.error,
            message: c.outcome.message,
            payload: c.packets.last().cloned().unwrap_or_default(),
        });
    }
    Ok(c.outcome)
}

async fn connect(
    target: &EngineTarget,
    caps: u32,
    db: Option<&[u8]>,
) -> Result<Backend, BackendError> {
    Backend::connect(target, applier_caps(caps), APPLIER_COLLATION, db).await
}

impl StateMachine for ReplicaEngine {
    fn apply(
        &self,
        pos: LogPosition,
        payload: Vec<u8>,
    ) -> BoxFuture<'_, Result<Vec<u8>, StateMachineError>> {
        Box::pin(async move {
            let mut replies = self.apply_many(vec![(pos, payload)]).await?;
            Ok(replies.pop().unwrap_or_default())
        })
    }

    fn apply_many(
        &self,
        entries: Vec<(LogPosition, Vec<u8>)>,
    ) -> BoxFuture<'_, Result<Vec<Vec<u8>>, StateMachineError>> {
        Box::pin(async move {
            // The re-sync gate first: a paused entry must not hold the snapshot lock the
            // re-sync's install needs.
            let _resync = self.resync_gate.read().await;
            let _snap = self.snapshot_lock.lock().await;
            let replies = self.apply_entries(&entries).await?;
            Ok(replies.into_iter().map(|r| r.encode()).collect())
        })
    }

    fn last_applied(&self) -> BoxFuture<'_, Result<Option<LogPosition>, StateMachineError>> {
        Box::pin(async move { Ok(self.inner.lock().await.last) })
    }

    fn build_snapshot<'a>(
        &'a self,
        dir: &'a Path,
    ) -> BoxFuture<'a, Result<SnapshotMeta, StateMachineError>> {
        Box::pin(async move {
            let _snap = self.snapshot_lock.lock().await;
            let last = self
                .inner
                .lock()
                .await
                .last
                .unwrap_or(LogPosition { term: 0, index: 0 });
            super::snapshot::build(&self.target, dir, last).await
        })
    }

    fn install_snapshot<'a>(
        &'a self,
        dir: &'a Path,
        meta_in: &'a SnapshotMeta,
    ) -> BoxFuture<'a, Result<(), StateMachineError>> {
        Box::pin(async move {
            let _snap = self.snapshot_lock.lock().await;
            self.reset_sessions().await;
            super::snapshot::install(&self.target, dir).await?;
            let mut inner = self.inner.lock().await;
            inner.pending.clear();
            inner.pending_pos = None;
            inner.group_progress = None;
            let m = self
                .meta_conn(&mut inner)
                .await
                .map_err(|e| StateMachineError::Engine(e.to_string()))?;
            m.query_drop(&format!(
                "{}; DELETE FROM flux_meta.state WHERE k = {}",
                meta::position_sql(meta_in.last_applied),
                super::context::quote(meta::GROUP_PROGRESS)
            ))
            .await
            .map_err(|e| StateMachineError::Engine(e.to_string()))?;
            inner.last = Some(meta_in.last_applied);
            self.applied.send_replace(meta_in.last_applied.index);
            self.ddl_epoch.fetch_add(1, Ordering::AcqRel);
            Ok(())
        })
    }
}
