//! TEMPORARY state machine, used until the engine side of replication (`replication/`) lands.
//!
//! It records every committed payload in the node's engine, in `flux_cluster_placeholder.entries`
//! (index, term, payload), together with the applied position in the same engine transaction,
//! so tests can observe replication, catch-up and snapshots on every node with plain SQL. Its
//! snapshot is a dump of that table. Replace it by swapping the one function in `node.rs` that
//! builds the state machine (`state_machine`).

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder, TxOpts};

use super::contract::{BoxFuture, LogPosition, SnapshotMeta, StateMachine, StateMachineError};
use crate::protocol::backend::{EngineAddr, EngineTarget};

const SCHEMA: &[&str] = &[
    "CREATE DATABASE IF NOT EXISTS flux_cluster_placeholder",
    "CREATE TABLE IF NOT EXISTS flux_cluster_placeholder.entries (idx BIGINT UNSIGNED PRIMARY KEY, term BIGINT UNSIGNED NOT NULL, payload LONGBLOB NOT NULL) ENGINE=InnoDB",
    "CREATE TABLE IF NOT EXISTS flux_cluster_placeholder.applied (id TINYINT PRIMARY KEY, term BIGINT UNSIGNED NOT NULL, idx BIGINT UNSIGNED NOT NULL) ENGINE=InnoDB",
];

const NO_TABLE: &str = "placeholder tables absent";

/// How long an operation waits out a restarting engine before it fails.
const ENGINE_WAIT: Duration = Duration::from_secs(60);

/// The placeholder state machine (TEMPORARY).
pub struct PlaceholderStateMachine {
    opts: OptsBuilder,
    conn: tokio::sync::Mutex<Option<Conn>>,
    schema: std::sync::atomic::AtomicBool,
}

fn engine(e: impl std::fmt::Display) -> StateMachineError {
    StateMachineError::Engine(e.to_string())
}

impl PlaceholderStateMachine {
    pub fn new(target: &EngineTarget) -> Self {
        let base = OptsBuilder::default()
            .user(Some(target.user.clone()))
            .pass(Some(target.password.clone()));
        let opts = match &target.addr {
            EngineAddr::Unix(p) => base.socket(Some(p.display().to_string())),
            EngineAddr::Tcp { host, port } => base.ip_or_hostname(host.clone()).tcp_port(*port),
        };
        PlaceholderStateMachine {
            opts,
            conn: tokio::sync::Mutex::new(None),
            schema: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Runs `f` on a connection, reconnecting (bounded) while the engine is unavailable.
    /// `create`: make sure the placeholder's tables exist first (only writes create them, so a
    /// node that never replicates anything leaves its engine untouched).
    async fn with_conn<T>(
        &self,
        create: bool,
        f: impl for<'c> Fn(&'c mut Conn) -> BoxFuture<'c, Result<T, mysql_async::Error>>,
    ) -> Result<T, StateMachineError> {
        use std::sync::atomic::Ordering;
        let deadline = Instant::now() + ENGINE_WAIT;
        let mut guard = self.conn.lock().await;
        loop {
            if guard.is_none() {
                match Conn::new(self.opts.clone()).await {
                    Ok(c) => *guard = Some(c),
                    Err(e) if Instant::now() < deadline => {
                        tracing::warn!(error = %e, "placeholder state machine: engine unavailable; retrying");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        continue;
                    }
                    Err(e) => return Err(engine(e)),
                }
            }
            let Some(conn) = guard.as_mut() else { continue };
            if create && !self.schema.load(Ordering::Acquire) {
                for s in SCHEMA {
                    conn.query_drop(*s).await.map_err(engine)?;
                }
                self.schema.store(true, Ordering::Release);
            }
            match f(conn).await {
                // No table yet: nothing was ever applied here.
                Err(mysql_async::Error::Server(e))
                    if !create && (e.code == 1146 || e.code == 1049) =>
                {
                    return Err(StateMachineError::Engine(NO_TABLE.into()));
                }
                Ok(v) => return Ok(v),
                Err(mysql_async::Error::Server(e)) => return Err(engine(e)),
                Err(e) if Instant::now() < deadline => {
                    tracing::warn!(error = %e, "placeholder state machine: engine connection lost; retrying");
                    *guard = None;
                }
                Err(e) => return Err(engine(e)),
            }
        }
    }
}

impl StateMachine for PlaceholderStateMachine {
    fn apply(
        &self,
        pos: LogPosition,
        payload: Vec<u8>,
    ) -> BoxFuture<'_, Result<Vec<u8>, StateMachineError>> {
        Box::pin(async move {
            self.with_conn(true, |c| {
                let payload = payload.clone();
                Box::pin(async move {
                    let mut tx = c.start_transaction(TxOpts::default()).await?;
                    let done: Option<u64> = tx
                        .query_first("SELECT idx FROM flux_cluster_placeholder.applied WHERE id = 1 FOR UPDATE")
                        .await?;
                    if done.is_some_and(|d| d >= pos.index) {
                        tx.rollback().await?;
                        return Ok(format!("already applied {}", pos.index).into_bytes());
                    }
                    tx.exec_drop(
                        "INSERT INTO flux_cluster_placeholder.entries (idx, term, payload) VALUES (?, ?, ?)",
                        (pos.index, pos.term, payload),
                    )
                    .await?;
                    tx.exec_drop(
                        "REPLACE INTO flux_cluster_placeholder.applied (id, term, idx) VALUES (1, ?, ?)",
                        (pos.term, pos.index),
                    )
                    .await?;
                    tx.commit().await?;
                    Ok(format!("applied {}", pos.index).into_bytes())
                })
            })
            .await
        })
    }

    fn last_applied(&self) -> BoxFuture<'_, Result<Option<LogPosition>, StateMachineError>> {
        Box::pin(async move {
            let r = self.with_conn(false, |c| {
                Box::pin(async move {
                    let row: Option<(u64, u64)> = c
                        .query_first("SELECT term, idx FROM flux_cluster_placeholder.applied WHERE id = 1")
                        .await?;
                    Ok(row.map(|(term, index)| LogPosition { term, index }))
                })
            })
            .await;
            match r {
                Err(StateMachineError::Engine(m)) if m == NO_TABLE => Ok(None),
                other => other,
            }
        })
    }

    fn build_snapshot<'a>(
        &'a self,
        dir: &'a Path,
    ) -> BoxFuture<'a, Result<SnapshotMeta, StateMachineError>> {
        Box::pin(async move {
            let (applied, rows) = self
                .with_conn(true, |c| {
                    Box::pin(async move {
                        let mut opts = TxOpts::default();
                        opts.with_consistent_snapshot(true)
                            .with_readonly(Some(true));
                        let mut tx = c.start_transaction(opts).await?;
                        let applied: Option<(u64, u64)> = tx
                            .query_first("SELECT term, idx FROM flux_cluster_placeholder.applied WHERE id = 1")
                            .await?;
                        let rows: Vec<(u64, u64, Vec<u8>)> = tx
                            .query("SELECT idx, term, payload FROM flux_cluster_placeholder.entries ORDER BY idx")
                            .await?;
                        tx.commit().await?;
                        Ok((applied, rows))
                    })
                })
                .await?;
            let (term, index) = applied.unwrap_or((0, 0));
            let path = dir.join("entries.txt");
            let snap = |e: std::io::Error| StateMachineError::Snapshot(e.to_string());
            let mut f = std::io::BufWriter::new(std::fs::File::create(&path).map_err(snap)?);
            writeln!(f, "applied {term} {index}").map_err(snap)?;
            for (i, t, p) in rows {
                writeln!(f, "{i} {t} {}", hex::encode(p)).map_err(snap)?;
            }
            f.into_inner()
                .map_err(|e| StateMachineError::Snapshot(e.to_string()))?
                .sync_all()
                .map_err(snap)?;
            let (size_bytes, checksum) = super::snapshot::checksum_dir(dir)
                .map_err(|e| StateMachineError::Snapshot(e.to_string()))?;
            Ok(SnapshotMeta {
                last_applied: LogPosition { term, index },
                size_bytes,
                checksum,
            })
        })
    }

    fn install_snapshot<'a>(
        &'a self,
        dir: &'a Path,
        meta: &'a SnapshotMeta,
    ) -> BoxFuture<'a, Result<(), StateMachineError>> {
        Box::pin(async move {
            let text = std::fs::read_to_string(dir.join("entries.txt"))
                .map_err(|e| StateMachineError::Snapshot(e.to_string()))?;
            let mut rows = Vec::new();
            for line in text.lines().skip(1) {
                let mut it = line.split(' ');
                let parsed = (|| {
                    let i: u64 = it.next()?.parse().ok()?;
                    let t: u64 = it.next()?.parse().ok()?;
                    let p = hex::decode(it.next()?).ok()?;
                    Some((i, t, p))
                })();
                rows.push(parsed.ok_or_else(|| {
                    StateMachineError::Snapshot(format!("bad snapshot line `{line}`"))
                })?);
            }
            let pos = meta.last_applied;
            self.with_conn(true, |c| {
                let rows = rows.clone();
                Box::pin(async move {
                    let mut tx = c.start_transaction(TxOpts::default()).await?;
                    tx.query_drop("DELETE FROM flux_cluster_placeholder.entries")
                        .await?;
                    tx.exec_batch(
                        "INSERT INTO flux_cluster_placeholder.entries (idx, term, payload) VALUES (?, ?, ?)",
                        rows,
                    )
                    .await?;
                    tx.exec_drop(
                        "REPLACE INTO flux_cluster_placeholder.applied (id, term, idx) VALUES (1, ?, ?)",
                        (pos.term, pos.index),
                    )
                    .await?;
                    tx.commit().await
                })
            })
            .await
        })
    }
}
