//! The leader-side write path: one shadow session per client session (local or forwarded from
//! a follower), on which writes and explicit transactions run inside `XA START … XA PREPARE`.
//! The prepared transaction is proposed as one log entry with each statement's context and
//! outcome; the applier commits it (`XA COMMIT`) when the entry applies on the leader. DDL,
//! which cannot run inside XA, is proposed first and executed by every node when applied.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mysql_common::constants::{CapabilityFlags, StatusFlags};
use serde::{Deserialize, Serialize};
use tokio::sync::{OwnedRwLockReadGuard, RwLock};

use super::applier::ReplicaEngine;
use super::context::{quote, quote_ident, user_variables, StatementContext, UserValue};
use super::entry::{
    ApplyReply, DdlEntry, EntryBody, LogEntry, LoggedStatement, Origin, Outcome, TxnEntry,
};
use super::meta;
use super::proposer::Proposer;
use super::response::{outcome_packet, patch_status, run_query, run_query_pair, Cell, Collected};
use super::triggers::TriggerCheck;
use crate::cluster::contract::{PeerInfo, ProposeError, ReplicatedLog};
use crate::protocol::backend::{relayable_capabilities, Backend, BackendError, EngineTarget};
use crate::protocol::errors::SqlError;
use crate::sql::determinism::{make_deterministic, LeaderLiterals, Verdict};

/// What a statement is, as the client side routed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// A write: runs inside XA and is logged.
    Write,
    /// DDL: proposed first, run by every node on apply.
    Ddl,
    /// A read on the leader (inside a transaction, or a leader read): not logged.
    Read,
    /// A session command inside a transaction: runs on the shadow session, not logged.
    Session,
}

/// One operation of a client session on the leader.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ExecOp {
    Query { sql: String, role: Role },
    Begin,
    Commit,
    Rollback,
}

/// A request from a client session (on any node) to the leader.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExecRequest {
    pub origin: Origin,
    /// `user@host` of the client (for `USER()` rewrites).
    pub user: String,
    /// The client's capability flags and collation (the shadow session is opened with them so
    /// its packets can be relayed as they are).
    pub caps: u32,
    pub collation: u8,
    /// Session commands (`SET`, `USE`, …) the client ran so far, oldest first; the shadow
    /// session replays the ones it has not seen.
    pub history: Vec<String>,
    /// The client believes it is inside a transaction (if the leader has none for it, the
    /// transaction was lost with a leader change and must not silently become autocommit).
    #[serde(default)]
    pub in_txn: bool,
    /// Open a fresh transaction before `op` (the client's `BEGIN`, answered on its node, comes
    /// with its first statement); one left open by an earlier attempt whose answer never
    /// reached the client is rolled back first.
    #[serde(default)]
    pub begin: bool,
    pub op: ExecOp,
}

/// The leader's answer: the packets for the client and where its write committed.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ExecResponse {
    pub packets: Vec<Vec<u8>>,
    /// Log index of the committed entry (the client's read-your-writes fence).
    pub commit_index: Option<u64>,
    /// The session is inside a transaction on the leader.
    pub in_txn: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("this node is not the leader")]
    NotLeader { leader: Option<PeerInfo> },
}

/// How long a DDL statement waits for open transactions to finish.
const DDL_GATE_WAIT: Duration = Duration::from_secs(10);
/// `ER_LOCK_DEADLOCK`: the engine rolled the whole transaction back.
const ER_LOCK_DEADLOCK: u16 = 1213;

struct OpenTxn {
    xid: String,
    /// `XA START` was sent (an autocommit write sends it with its first packet).
    started: bool,
    /// `XA END` + `XA PREPARE` ran too (an autocommit write sends them right behind its
    /// statement, in the same round trip).
    prepared: bool,
    statements: Vec<LoggedStatement>,
    _gate: OwnedRwLockReadGuard<()>,
}

struct Shadow {
    conn: Arc<tokio::sync::Mutex<Backend>>,
    replayed: usize,
    txn: Option<OpenTxn>,
    clock_pinned: bool,
    wrote: bool,
    last_used: std::time::Instant,
}

/// A shadow session and its engine thread (known without locking the session, which a
/// running statement holds).
struct ShadowSlot {
    thread: u32,
    shadow: Arc<tokio::sync::Mutex<Shadow>>,
}

/// Collation of the executor's own administrative connections (utf8mb4_general_ci).
const ADMIN_COLLATION: u8 = 45;

/// The leader's executor.
pub struct Executor {
    log: Arc<dyn ReplicatedLog>,
    engine: Arc<ReplicaEngine>,
    target: EngineTarget,
    shadows: Mutex<HashMap<Origin, ShadowSlot>>,
    gate: Arc<RwLock<()>>,
    counter: AtomicU64,
    proposer: Proposer,
    triggers: TriggerCheck,
    pub propose_timeout: Duration,
}

/// ERR for statements refused by the determinism check (ER_NOT_SUPPORTED_YET).
pub fn refused(reason: &str) -> SqlError {
    SqlError::new(
        1235,
        "42000",
        format!("shared-db cannot replicate this statement safely: {reason}"),
    )
}

fn cluster_error(msg: impl Into<String>) -> SqlError {
    SqlError::new(1105, "HY000", msg)
}

fn err_response(e: &SqlError, in_txn: bool) -> ExecResponse {
    ExecResponse {
        packets: vec![e.to_payload()],
        commit_index: None,
        in_txn,
    }
}

fn ok_response(status: StatusFlags, commit_index: Option<u64>, in_txn: bool) -> ExecResponse {
    ExecResponse {
        packets: vec![crate::protocol::wire::ok_packet(0, 0, status, 0)],
        commit_index,
        in_txn,
    }
}

fn engine_error(e: &BackendError) -> SqlError {
    match e {
        BackendError::Server { code, message, .. } => {
            SqlError::new(*code, "HY000", message.clone())
        }
        other => SqlError::engine_unavailable(&other.to_string()),
    }
}

impl Executor {
    pub fn new(log: Arc<dyn ReplicatedLog>, engine: Arc<ReplicaEngine>) -> Arc<Self> {
        let proposer = Proposer::start(Arc::clone(&log));
        Arc::new(Executor {
            log,
            target: engine.target().clone(),
            engine,
            shadows: Mutex::new(HashMap::new()),
            gate: Arc::new(RwLock::new(())),
            counter: AtomicU64::new(0),
            proposer,
            triggers: TriggerCheck::default(),
            propose_timeout: Duration::from_secs(10),
        })
    }

    fn is_leader(&self) -> bool {
        self.log.leader().map(|p| p.id) == Some(self.log.node_id())
    }

    /// Proposes a barrier (call when this node becomes leader).
    pub async fn propose_barrier(&self) -> Result<u64, ProposeError> {
        let mut n = [0u8; 8];
        let _ = getrandom::fill(&mut n);
        let e = LogEntry::new(EntryBody::Barrier {
            leader: self.log.node_id(),
            nonce: u64::from_le_bytes(n),
        });
        let (pos, _) = self.log.propose(e.encode(), self.propose_timeout).await?;
        Ok(pos.index)
    }

    /// Ends a client session's shadow session (rolls back an open transaction).
    pub async fn abort(&self, origin: Origin) {
        let shadow = self
            .shadows
            .lock()
            .ok()
            .and_then(|mut m| m.remove(&origin))
            .map(|slot| slot.shadow);
        let Some(shadow) = shadow else { return };
        let mut s = shadow.lock().await;
        if let Some(txn) = s.txn.take() {
            let mut c = s.conn.lock().await;
            let x = quote(&txn.xid);
            let _ = c.query_drop(&format!("XA END {x}")).await;
            let _ = c.query_drop(&format!("XA ROLLBACK {x}")).await;
        }
        if s.wrote && self.is_leader() {
            let e = LogEntry::new(EntryBody::SessionEnd { origin });
            let _ = self.log.propose(e.encode(), self.propose_timeout).await;
        }
    }

    /// `KILL [QUERY]` of a client session reaches its shadow session: the statement it runs
    /// here is interrupted (or its engine connection closed), through a separate connection.
    pub async fn kill(&self, origin: Origin, query_only: bool) -> Result<(), BackendError> {
        let thread = self
            .shadows
            .lock()
            .ok()
            .and_then(|m| m.get(&origin).map(|slot| slot.thread));
        let Some(thread) = thread else {
            return Ok(());
        };
        let mut admin = Backend::connect(
            &self.target,
            CapabilityFlags::CLIENT_PROTOCOL_41,
            ADMIN_COLLATION,
            None,
        )
        .await?;
        let what = if query_only { "QUERY " } else { "" };
        match admin.query_drop(&format!("KILL {what}{thread}")).await {
            // The shadow session ended meanwhile.
            Err(BackendError::Server { code: 1094, .. }) => Ok(()),
            other => other,
        }
    }

    /// Shadow sessions currently open.
    pub fn shadow_count(&self) -> usize {
        self.shadows.lock().map(|m| m.len()).unwrap_or(0)
    }

    /// Ends every shadow session (this node stopped leading: their open transactions would
    /// hold locks the applier needs).
    pub async fn abort_all(&self) {
        let all: Vec<Origin> = match self.shadows.lock() {
            Ok(m) => m.keys().copied().collect(),
            Err(_) => return,
        };
        for origin in all {
            self.abort(origin).await;
        }
    }

    /// Ends shadow sessions unused for longer than `idle` (their client, or the follower it
    /// was connected to, went away without an abort).
    pub async fn sweep_idle(&self, idle: Duration) {
        let all: Vec<(Origin, Arc<tokio::sync::Mutex<Shadow>>)> = match self.shadows.lock() {
            Ok(m) => m.iter().map(|(o, s)| (*o, Arc::clone(&s.shadow))).collect(),
            Err(_) => return,
        };
        for (origin, shadow) in all {
            let stale = match shadow.try_lock() {
                Ok(s) => s.last_used.elapsed() > idle,
                Err(_) => false,
            };
            if stale {
                tracing::info!(?origin, "ending an idle shadow session");
                self.abort(origin).await;
            }
        }
    }

    /// Runs one operation of a client session.
    pub async fn exec(&self, req: ExecRequest) -> Result<ExecResponse, ExecError> {
        if !self.is_leader() {
            // A shadow session left from our leadership holds locks the applier would wait on.
            self.abort(req.origin).await;
            return Err(ExecError::NotLeader {
                leader: self.log.leader(),
            });
        }
        let shadow = match self.shadow(&req).await {
            Ok(s) => s,
            Err(e) => return Ok(err_response(&engine_error(&e), false)),
        };
        let mut s = shadow.lock().await;
        s.last_used = std::time::Instant::now();
        // Catch up on the session's commands.
        if s.replayed < req.history.len() {
            let mut c = s.conn.lock().await;
            for cmd in &req.history[s.replayed..] {
                if let Err(e) = c.query_drop(cmd).await {
                    tracing::debug!(error = %e, "replaying a session command on the leader failed");
                }
            }
            drop(c);
            s.replayed = req.history.len();
        }
        if req.begin {
            self.rollback(&mut s).await;
            // A write carries `XA START` in its own round trip.
            let lazy = matches!(
                req.op,
                ExecOp::Query {
                    role: Role::Write,
                    ..
                }
            );
            if let Err(e) = self.begin(&mut s, lazy).await {
                return Ok(err_response(&e, false));
            }
        }
        if req.in_txn && s.txn.is_none() && !matches!(req.op, ExecOp::Begin | ExecOp::Rollback) {
            return Ok(err_response(
                &SqlError::new(
                    1180,
                    "HY000",
                    "the transaction was rolled back because the leader changed; run it again",
                ),
                false,
            ));
        }
        let resp = match req.op.clone() {
            ExecOp::Begin => {
                if s.txn.is_some() {
                    let r = self.commit(&mut s, &req).await;
                    if r.packets.first().is_some_and(|p| p.first() == Some(&0xFF)) {
                        return Ok(r);
                    }
                }
                match self.begin(&mut s, false).await {
                    Ok(()) => ok_response(
                        StatusFlags::SERVER_STATUS_IN_TRANS | StatusFlags::SERVER_STATUS_AUTOCOMMIT,
                        None,
                        true,
                    ),
                    Err(e) => err_response(&e, false),
                }
            }
            ExecOp::Commit => {
                if s.txn.is_some() {
                    self.commit(&mut s, &req).await
                } else {
                    ok_response(StatusFlags::SERVER_STATUS_AUTOCOMMIT, None, false)
                }
            }
            ExecOp::Rollback => {
                self.rollback(&mut s).await;
                ok_response(StatusFlags::SERVER_STATUS_AUTOCOMMIT, None, false)
            }
            ExecOp::Query { sql, role } => self.query(&mut s, &req, &sql, role).await,
        };
        // The shadow's engine connection failed (engine restarted): its session is gone, and
        // so is any transaction on it; the next operation starts a new one.
        let lost = resp.packets.last().is_some_and(|p| {
            p.first() == Some(&0xFF) && p.get(1..3) == Some(&2003u16.to_le_bytes()[..])
        });
        if lost {
            s.txn = None;
            drop(s);
            if let Ok(mut m) = self.shadows.lock() {
                m.remove(&req.origin);
            }
            let mut r = resp;
            r.in_txn = false;
            return Ok(r);
        }
        Ok(resp)
    }

    async fn shadow(
        &self,
        req: &ExecRequest,
    ) -> Result<Arc<tokio::sync::Mutex<Shadow>>, BackendError> {
        if let Some(s) = self
            .shadows
            .lock()
            .ok()
            .and_then(|m| m.get(&req.origin).map(|slot| Arc::clone(&slot.shadow)))
        {
            return Ok(s);
        }
        let caps = CapabilityFlags::from_bits_truncate(req.caps) & relayable_capabilities();
        let caps = caps - CapabilityFlags::CLIENT_CONNECT_WITH_DB;
        let mut b = Backend::connect(&self.target, caps, req.collation, None).await?;
        // Multi-statement packets for the executor's own bookkeeping (COM_SET_OPTION).
        b.simple_command(0x1B, &[0, 0]).await?;
        let thread = b.thread_id;
        let s = Arc::new(tokio::sync::Mutex::new(Shadow {
            conn: Arc::new(tokio::sync::Mutex::new(b)),
            replayed: 0,
            txn: None,
            clock_pinned: false,
            wrote: false,
            last_used: std::time::Instant::now(),
        }));
        if let Ok(mut m) = self.shadows.lock() {
            m.insert(
                req.origin,
                ShadowSlot {
                    thread,
                    shadow: Arc::clone(&s),
                },
            );
        }
        Ok(s)
    }

    /// Opens a transaction; `XA START` goes out now, or (`lazy`) with the next write.
    async fn begin(&self, s: &mut Shadow, lazy: bool) -> Result<(), SqlError> {
        let gate = tokio::time::timeout(DDL_GATE_WAIT, Arc::clone(&self.gate).read_owned())
            .await
            .map_err(|_| cluster_error("a DDL statement holds the cluster; try again"))?;
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let xid = format!("{}{n}", self.engine.xid_prefix());
        if !lazy {
            let mut c = s.conn.lock().await;
            c.query_drop(&format!("XA START {}", quote(&xid)))
                .await
                .map_err(|e| engine_error(&e))?;
        }
        s.txn = Some(OpenTxn {
            xid,
            started: !lazy,
            prepared: false,
            statements: Vec::new(),
            _gate: gate,
        });
        Ok(())
    }

    async fn rollback(&self, s: &mut Shadow) {
        if let Some(txn) = s.txn.take().filter(|t| t.started) {
            let mut c = s.conn.lock().await;
            let x = quote(&txn.xid);
            let _ = c.query_drop(&format!("XA END {x}")).await;
            let _ = c.query_drop(&format!("XA ROLLBACK {x}")).await;
        }
    }

    /// Ends the open transaction: prepare, propose, and (once the entry applied here, which
    /// commits it) report success; roll back and report an error otherwise.
    async fn commit(&self, s: &mut Shadow, req: &ExecRequest) -> ExecResponse {
        let Some(txn) = s.txn.take() else {
            return ok_response(StatusFlags::SERVER_STATUS_AUTOCOMMIT, None, false);
        };
        let x = quote(&txn.xid);
        if txn.statements.is_empty() {
            let mut c = s.conn.lock().await;
            let _ = c.query_drop(&format!("XA END {x}")).await;
            let _ = c.query_drop(&format!("XA ROLLBACK {x}")).await;
            return ok_response(StatusFlags::SERVER_STATUS_AUTOCOMMIT, None, false);
        }
        let prepared = if txn.prepared {
            Ok(())
        } else {
            let mut c = s.conn.lock().await;
            let r = c.query_drop(&prepare_sql(&txn.xid)).await;
            if r.is_err() {
                let _ = c.query_drop(&format!("XA END {x}")).await;
                let _ = c.query_drop(&format!("XA ROLLBACK {x}")).await;
            }
            r
        };
        if let Err(e) = prepared {
            return err_response(&engine_error(&e), false);
        }
        s.wrote = true;
        let committed = self.engine.xa.register(&txn.xid, Arc::clone(&s.conn));
        let entry = TxnEntry {
            xid: txn.xid.clone(),
            origin: req.origin,
            client_caps: req.caps,
            statements: txn.statements,
        };
        // The gate stays held until the entry is in the log: a DDL proposed meanwhile could
        // land before it and then wait forever on this prepared transaction's metadata lock.
        let _gate = txn._gate;
        // The client hears as soon as the entry is committed in the log: the applier's
        // `XA COMMIT` holds the session's connection, so its next statement comes after, and
        // its reads wait for the applied index the answer carries.
        let pr = tokio::select! {
            pr = self.proposer.propose(entry, self.propose_timeout) => pr,
            Ok(index) = committed => {
                return ok_response(StatusFlags::SERVER_STATUS_AUTOCOMMIT, Some(index), false);
            }
        };
        match pr {
            Ok((pos, reply)) => {
                if let Some(ApplyReply::Diverged { reason }) = ApplyReply::decode(&reply) {
                    return err_response(
                        &cluster_error(format!("the leader diverged while committing: {reason}")),
                        false,
                    );
                }
                ok_response(
                    StatusFlags::SERVER_STATUS_AUTOCOMMIT,
                    Some(pos.index),
                    false,
                )
            }
            Err(e @ (ProposeError::NotLeader { .. } | ProposeError::ShuttingDown)) => {
                if let Some(p) = self.engine.xa.take(&txn.xid) {
                    let mut c = p.conn.lock().await;
                    let _ = c.query_drop(&format!("XA ROLLBACK {x}")).await;
                }
                err_response(
                    &cluster_error(format!(
                        "transaction rolled back: {e}; retry on the new leader"
                    )),
                    false,
                )
            }
            Err(e) => {
                // May still commit: leave it prepared; the next barrier decides.
                self.engine.xa.mark_doubtful(&txn.xid);
                err_response(
                    &cluster_error(format!("commit outcome unknown: {e}")),
                    false,
                )
            }
        }
    }

    async fn query(
        &self,
        s: &mut Shadow,
        req: &ExecRequest,
        sql: &str,
        role: Role,
    ) -> ExecResponse {
        match role {
            Role::Ddl => {
                if s.txn.is_some() {
                    // DDL commits the open transaction first, as in MariaDB.
                    let r = self.commit(s, req).await;
                    if r.packets.first().is_some_and(|p| p.first() == Some(&0xFF)) {
                        return r;
                    }
                }
                self.ddl(s, req, sql).await
            }
            Role::Write => {
                let refusal = {
                    let mut c = s.conn.lock().await;
                    self.triggers
                        .refusal(&mut c, self.engine.ddl_epoch(), sql)
                        .await
                };
                match refusal {
                    Ok(None) => {}
                    Ok(Some(reason)) => return err_response(&refused(&reason), s.txn.is_some()),
                    Err(e) => return err_response(&engine_error(&e), s.txn.is_some()),
                }
                let autocommit = s.txn.is_none();
                if autocommit {
                    if let Err(e) = self.begin(s, true).await {
                        return err_response(&e, false);
                    }
                }
                let mut resp = self.write_in_txn(s, req, sql, autocommit).await;
                if autocommit {
                    let failed = resp
                        .packets
                        .last()
                        .is_some_and(|p| p.first() == Some(&0xFF));
                    if failed {
                        self.rollback(s).await;
                        resp.in_txn = false;
                        return resp;
                    }
                    let c = self.commit(s, req).await;
                    if c.commit_index.is_none() {
                        return c;
                    }
                    if let Some(last) = resp.packets.last_mut() {
                        patch_status(last, |f| f - StatusFlags::SERVER_STATUS_IN_TRANS);
                    }
                    resp.commit_index = c.commit_index;
                    resp.in_txn = false;
                }
                resp
            }
            Role::Read | Role::Session => {
                let in_txn = s.txn.is_some();
                // Writes of other sessions acknowledged before this read are visible to it.
                let floor = self.engine.acknowledged_index();
                if floor > self.engine.applied_index()
                    && !self.engine.wait_applied(floor, self.propose_timeout).await
                {
                    return err_response(
                        &cluster_error(format!(
                            "the leader has not applied log index {floor} within {:?}; try again",
                            self.propose_timeout
                        )),
                        in_txn,
                    );
                }
                let mut c = s.conn.lock().await;
                if s.clock_pinned {
                    let _ = c.query_drop("SET TIMESTAMP=DEFAULT").await;
                    s.clock_pinned = false;
                }
                if role == Role::Session {
                    s.replayed += 1;
                }
                match run_query(&mut c, sql).await {
                    Ok(r) if in_txn && r.outcome.error == ER_LOCK_DEADLOCK => {
                        drop(c);
                        self.end_deadlocked(s, r.packets).await
                    }
                    Ok(r) => ExecResponse {
                        packets: r.packets,
                        commit_index: None,
                        in_txn,
                    },
                    Err(e) => err_response(&engine_error(&e), in_txn),
                }
            }
        }
    }

    /// A deadlock rolled the engine's whole transaction back and left its XA branch
    /// rollback-only: end the branch and leave the session outside a transaction, as MariaDB
    /// does for a plain transaction, so the client's retry (`BEGIN` …) starts afresh.
    async fn end_deadlocked(&self, s: &mut Shadow, packets: Vec<Vec<u8>>) -> ExecResponse {
        self.rollback(s).await;
        ExecResponse {
            packets,
            commit_index: None,
            in_txn: false,
        }
    }

    /// Runs a write inside the open transaction and logs it. `last`: the transaction ends
    /// with this statement (autocommit), so its `XA END` + `XA PREPARE` go out right behind it.
    async fn write_in_txn(
        &self,
        s: &mut Shadow,
        req: &ExecRequest,
        sql: &str,
        last: bool,
    ) -> ExecResponse {
        let mut c = s.conn.lock().await;
        // One round trip: start the XA transaction if needed, pin the clock and seeds, read
        // the rest of the context.
        let start = match s.txn.as_mut() {
            Some(t) if !t.started => {
                t.started = true;
                Some(t.xid.clone())
            }
            _ => None,
        };
        let end = match s.txn.as_ref() {
            Some(t) if last && !may_ask_for_file(sql) => Some(prepare_sql(&t.xid)),
            _ => None,
        };
        let (mut ctx, sql, r, ended) = if needs_rewrite(sql) {
            let (ctx, offset) = match capture(&mut c, sql, true, start.as_deref()).await {
                Ok(v) => v,
                Err(e) => return err_response(&engine_error(&e), true),
            };
            s.clock_pinned = true;
            let sql = match rewrite(sql, &req.user, offset, self.log.node_id()) {
                Ok(s) => s,
                Err(e) => return err_response(&e, true),
            };
            let (r, ended) = match run_then(&mut c, &sql, end.as_deref()).await {
                Ok(r) => r,
                Err(e) => return err_response(&engine_error(&e), true),
            };
            (ctx, sql, r, ended)
        } else {
            // Nothing to rewrite: the context is read in the same round trip as the statement
            // runs, and the client gets only the statement's packets.
            let q = CaptureQuery::new(sql, true, start.as_deref());
            let both = format!("{}; {sql}", q.sql);
            let (mut r, ended) = match run_then(&mut c, &both, end.as_deref()).await {
                Ok(r) => r,
                Err(e) => return err_response(&engine_error(&e), true),
            };
            s.clock_pinned = true;
            if r.results <= q.statements {
                return err_response(&engine_error(&meta::server_error(&r.outcome)), true);
            }
            let row = r.first_row.take().unwrap_or_default();
            let from = r.result_starts.get(q.statements).copied().unwrap_or(0);
            r.packets.drain(..from);
            let (ctx, _) = q.parse(row, c.thread_id);
            (ctx, sql.to_string(), r, ended)
        };
        if r.outcome.error == ER_LOCK_DEADLOCK {
            drop(c);
            return self.end_deadlocked(s, r.packets).await;
        }
        if r.outcome.error == 0 && r.outcome.last_insert_id > 0 {
            ctx.insert_id = Some(r.outcome.last_insert_id);
        }
        if let Some(ended) = ended.filter(|_| r.outcome.error == 0) {
            if ended.outcome.error != 0 {
                return err_response(&engine_error(&meta::server_error(&ended.outcome)), true);
            }
            if let Some(t) = s.txn.as_mut() {
                t.prepared = true;
            }
        }
        let outcome = Outcome {
            message: String::new(),
            ..r.outcome.clone()
        };
        if let Some(txn) = s.txn.as_mut() {
            txn.statements.push(LoggedStatement {
                sql,
                ctx,
                outcome: Some(outcome),
            });
        }
        ExecResponse {
            packets: r.packets,
            commit_index: None,
            in_txn: true,
        }
    }

    async fn ddl(&self, s: &mut Shadow, req: &ExecRequest, sql: &str) -> ExecResponse {
        let gate = match tokio::time::timeout(DDL_GATE_WAIT, self.gate.write()).await {
            Ok(g) => g,
            Err(_) => {
                return err_response(
                    &cluster_error("DDL waited too long for open transactions to finish"),
                    false,
                )
            }
        };
        let (ctx, offset) = {
            let mut c = s.conn.lock().await;
            match capture(&mut c, sql, false, None).await {
                Ok(v) => v,
                Err(e) => return err_response(&engine_error(&e), false),
            }
        };
        let sql = match rewrite(sql, &req.user, offset, self.log.node_id()) {
            Ok(s) => s,
            Err(e) => return err_response(&e, false),
        };
        s.wrote = true;
        let entry = LogEntry::new(EntryBody::Ddl(Box::new(DdlEntry {
            origin: req.origin,
            client_caps: req.caps,
            statement: LoggedStatement {
                sql,
                ctx,
                outcome: None,
            },
        })));
        let r = self.log.propose(entry.encode(), self.propose_timeout).await;
        drop(gate);
        match r {
            Ok((pos, reply)) => match ApplyReply::decode(&reply) {
                Some(ApplyReply::Applied { outcome: Some(o) }) => {
                    // Followers compare their outcome of the DDL with this one.
                    let report = LogEntry::new(EntryBody::DdlOutcome {
                        ddl_index: pos.index,
                        outcome: Outcome {
                            message: String::new(),
                            ..o.clone()
                        },
                    });
                    let index = match self
                        .log
                        .propose(report.encode(), self.propose_timeout)
                        .await
                    {
                        Ok((p, _)) => p.index,
                        Err(e) => {
                            tracing::warn!(error = %e, "could not propose a DDL outcome");
                            pos.index
                        }
                    };
                    ExecResponse {
                        packets: vec![outcome_packet(&o, StatusFlags::SERVER_STATUS_AUTOCOMMIT)],
                        commit_index: Some(index),
                        in_txn: false,
                    }
                }
                Some(ApplyReply::Diverged { reason }) => err_response(
                    &cluster_error(format!("the leader diverged: {reason}")),
                    false,
                ),
                _ => ok_response(
                    StatusFlags::SERVER_STATUS_AUTOCOMMIT,
                    Some(pos.index),
                    false,
                ),
            },
            Err(e) => err_response(&cluster_error(format!("DDL not committed: {e}")), false),
        }
    }
}

/// The statements that end a transaction on the leader: its committed-marker, `XA END` and
/// `XA PREPARE`.
fn prepare_sql(xid: &str) -> String {
    let x = quote(xid);
    format!("{}; XA END {x}; XA PREPARE {x}", meta::xa_done_sql(xid))
}

/// `LOAD DATA LOCAL INFILE` makes the engine ask for a file: nothing may be queued behind it.
/// (Runs on every autocommit write: no copy of the statement.)
fn may_ask_for_file(sql: &str) -> bool {
    sql.as_bytes()
        .windows(6)
        .any(|w| w.eq_ignore_ascii_case(b"INFILE"))
}

/// Runs `sql`, and `then` right behind it in the same round trip (if given).
async fn run_then(
    c: &mut Backend,
    sql: &str,
    then: Option<&str>,
) -> Result<(Collected, Option<Collected>), BackendError> {
    match then {
        Some(then) => {
            let (r, t) = run_query_pair(c, sql, then).await?;
            Ok((r, Some(t)))
        }
        None => Ok((run_query(c, sql).await?, None)),
    }
}

/// Applies the determinism rewrite; refusals become ERR 1235 naming the reason.
/// The statement has calls that are replaced by literals at the leader (or is refused).
fn needs_rewrite(sql: &str) -> bool {
    let mut lit = LeaderLiterals {
        user: String::new(),
        current_user: String::new(),
        current_role: None,
        utc_offset_secs: 0,
        server_id: 0,
    };
    !matches!(make_deterministic(sql, &mut lit), Verdict::Unchanged)
}

fn rewrite(sql: &str, user: &str, offset: i32, node: u64) -> Result<String, SqlError> {
    let mut lit = LeaderLiterals {
        user: user.to_string(),
        current_user: user.to_string(),
        current_role: None,
        utc_offset_secs: offset,
        server_id: u32::try_from(node & 0xffff_ffff).unwrap_or(0),
    };
    match make_deterministic(sql, &mut lit) {
        Verdict::Unchanged => Ok(sql.to_string()),
        Verdict::Rewritten(s) => Ok(s),
        Verdict::Refused { reason } => Err(refused(&reason)),
    }
}

/// Reads the session's context values (and the referenced user variables) and picks a fresh
/// timestamp and random seeds, pinning them on the session first when `pin` is set. Returns the
/// context and the session's UTC offset.
async fn capture(
    c: &mut Backend,
    sql: &str,
    pin: bool,
    xa_start: Option<&str>,
) -> Result<(StatementContext, i32), BackendError> {
    let q = CaptureQuery::new(sql, pin, xa_start);
    let r = run_query(c, &q.sql).await?;
    if r.outcome.error != 0 {
        return Err(meta::server_error(&r.outcome));
    }
    Ok(q.parse(r.first_row.unwrap_or_default(), c.thread_id))
}

/// The statements that read a statement's context (after `XA START` and pinning the clock
/// when asked), as one multi-statement query; its first result set is the context.
struct CaptureQuery {
    sql: String,
    /// Statements in `sql`.
    statements: usize,
    ctx: StatementContext,
    vars: Vec<String>,
}

impl CaptureQuery {
    fn new(sql: &str, pin: bool, xa_start: Option<&str>) -> CaptureQuery {
        let vars = user_variables(sql);
        let ctx = StatementContext::fresh();
        let mut statements = 1;
        let mut q = match xa_start {
            Some(xid) => {
                statements += 1;
                format!("XA START {}; ", quote(xid))
            }
            None => String::new(),
        };
        if pin {
            statements += 1;
            q.push_str(&ctx.pin_sql());
            q.push_str("; ");
        }
        q.push_str(
            "SELECT @@sql_mode, @@time_zone, @@character_set_client, @@collation_connection, \
             @@foreign_key_checks, @@unique_checks, DATABASE(), LAST_INSERT_ID(), \
             TIMESTAMPDIFF(SECOND, UTC_TIMESTAMP(), NOW())",
        );
        for v in &vars {
            let id = quote_ident(v);
            q.push_str(&format!(", @{id}, CHARSET(@{id})"));
        }
        CaptureQuery {
            sql: q,
            statements,
            ctx,
            vars,
        }
    }

    /// The context from the first row of the capture's result set, and the session's UTC
    /// offset.
    fn parse(self, row: Vec<Cell>, thread_id: u32) -> (StatementContext, i32) {
        parse_context(self.ctx, self.vars, row, thread_id)
    }
}

fn parse_context(
    mut ctx: StatementContext,
    vars: Vec<String>,
    row: Vec<Cell>,
    thread_id: u32,
) -> (StatementContext, i32) {
    let text = |i: usize| -> Option<String> {
        row.get(i)
            .and_then(|(_, _, v)| v.as_ref())
            .map(|v| String::from_utf8_lossy(v).into_owned())
    };
    ctx.sql_mode = text(0).unwrap_or_default();
    ctx.thread_id = Some(thread_id);
    ctx.time_zone = text(1).unwrap_or_else(|| "SYSTEM".into());
    ctx.character_set_client = text(2).unwrap_or_else(|| "utf8mb4".into());
    ctx.collation_connection = text(3).unwrap_or_else(|| "utf8mb4_general_ci".into());
    ctx.foreign_key_checks = text(4).as_deref() != Some("0");
    ctx.unique_checks = text(5).as_deref() != Some("0");
    ctx.db = text(6);
    ctx.last_insert_id = text(7).and_then(|v| v.parse().ok()).unwrap_or(0);
    let offset = text(8).and_then(|v| v.parse().ok()).unwrap_or(0);
    for (i, name) in vars.into_iter().enumerate() {
        let at = 9 + 2 * i;
        let value = match row.get(at) {
            None | Some((_, _, None)) => UserValue::Null,
            Some((ty, _, Some(v))) => {
                let s = String::from_utf8_lossy(v).into_owned();
                let numeric = !s.is_empty()
                    && s.bytes()
                        .all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b));
                match ty {
                    1 | 2 | 3 | 8 | 9 | 13 | 246 | 0 if numeric => UserValue::Number(s),
                    4 | 5 if numeric => UserValue::Real(s),
                    _ => UserValue::Str {
                        hex: v.iter().map(|b| format!("{b:02X}")).collect(),
                        charset: text(at + 1).unwrap_or_else(|| "binary".into()),
                    },
                }
            }
        };
        ctx.user_vars.push((name, value));
    }
    (ctx, offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_statements_that_can_ask_for_a_file_keep_the_round_trip_to_themselves() {
        assert!(may_ask_for_file("load data local infile '/x' INTO TABLE t"));
        assert!(may_ask_for_file("LOAD DATA LOCAL InFile 'x' INTO TABLE t"));
        assert!(!may_ask_for_file("INSERT INTO t VALUES (1)"));
        assert!(!may_ask_for_file("INF"));
    }
}
