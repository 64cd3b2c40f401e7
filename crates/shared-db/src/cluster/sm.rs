//! openraft's state machine side, driving any [`StateMachine`]: applies committed entries in
//! order, keeps the membership and the applied position of non-data entries in the raft
//! database, builds and installs snapshots as directories. An error from the state machine is
//! returned to openraft as a storage error, which stops this node's raft (never skipped).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use openraft::storage::RaftStateMachine;
use openraft::{AnyError, EntryPayload, RaftSnapshotBuilder, StorageIOError};
use tokio::sync::watch;

use super::contract::StateMachine;
use super::log_store::LogStore;
use super::snapshot::{self, StoredSnapshot};
use super::types::{
    log_id, position, Entry, LogId, RaftSnapshotMeta, Snapshot, SnapshotDir, StorageError,
    StoredMembership, TypeConfig,
};

/// Applied position of blank/membership entries and the last applied membership.
const K_SM: &str = "sm_state";

fn sm_err(m: impl ToString) -> StorageError {
    StorageIOError::write_state_machine(AnyError::error(m)).into()
}

fn snap_err(m: impl ToString) -> StorageError {
    StorageIOError::write_snapshot(None, AnyError::error(m)).into()
}

#[derive(Default)]
struct State {
    applied: Option<LogId>,
    membership: StoredMembership,
    /// Memberships applied since start (newest last), to describe a snapshot taken at an
    /// earlier point than the newest applied entry.
    history: Vec<StoredMembership>,
    current: Option<StoredSnapshot>,
}

/// Shared between the state machine store, its snapshot builders and the cluster handle.
pub struct SmShared {
    sm: Arc<dyn StateMachine>,
    log: LogStore,
    dir: PathBuf,
    state: Mutex<State>,
    /// Index of the last entry applied on this node.
    pub applied_tx: watch::Sender<u64>,
    /// Set when the state machine failed; the node's raft has stopped.
    pub fatal: Mutex<Option<String>>,
}

impl SmShared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn fail(&self, what: &str, e: impl std::fmt::Display) -> String {
        let m = format!("{what}: {e}");
        tracing::error!(error = %m, "state machine failed; this node's raft stops");
        *self.fatal.lock().unwrap_or_else(|p| p.into_inner()) = Some(m.clone());
        m
    }

    fn snapshots(&self) -> PathBuf {
        self.dir.join("snapshots")
    }

    /// The newest complete snapshot on disk, if any.
    pub fn current_snapshot(&self) -> Option<StoredSnapshot> {
        self.lock().current.clone()
    }

    async fn persist(&self) -> Result<(), String> {
        let bytes = {
            let st = self.lock();
            postcard::to_allocvec(&(st.applied, st.membership.clone()))
                .map_err(|e| e.to_string())?
        };
        self.log.put_meta(K_SM, bytes).await
    }

    /// Makes `snap_dir` (holding `meta.json` and `data/`) the current snapshot and removes older
    /// ones.
    fn adopt(&self, id: &str, stored: StoredSnapshot) {
        let keep = self.snapshots().join(id);
        if let Ok(rd) = std::fs::read_dir(self.snapshots()) {
            for e in rd.flatten() {
                if e.path() != keep {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        self.lock().current = Some(stored);
    }
}

/// The openraft state machine store.
pub struct SmStore {
    shared: Arc<SmShared>,
}

impl SmStore {
    /// Loads the applied position, the membership and the newest snapshot.
    ///
    /// The engine's own record of what it applied is the truth: an engine that does not fsync
    /// every commit (Raft mode) can come back from an OS crash behind what this node had
    /// applied, and the entries it lost are applied again from the log. When the log no longer
    /// holds them, the local snapshot is installed first.
    pub async fn open(
        sm: Arc<dyn StateMachine>,
        log: LogStore,
        raft_dir: &Path,
    ) -> Result<(SmStore, Arc<SmShared>), String> {
        let engine = sm
            .last_applied()
            .await
            .map_err(|e| format!("reading the engine's applied position: {e}"))?
            .map(log_id);
        let (ours, membership): (Option<LogId>, StoredMembership) = match log.get_meta(K_SM)? {
            Some(b) => postcard::from_bytes(&b).map_err(|e| format!("corrupt {K_SM}: {e}"))?,
            None => (None, StoredMembership::default()),
        };
        // Snapshots received but not installed before a restart: the leader sends again.
        let _ = std::fs::remove_dir_all(raft_dir.join("received"));
        let snaps = raft_dir.join("snapshots");
        std::fs::create_dir_all(&snaps).map_err(|e| format!("{}: {e}", snaps.display()))?;
        let mut current: Option<StoredSnapshot> = None;
        if let Ok(rd) = std::fs::read_dir(&snaps) {
            for e in rd.flatten() {
                match snapshot::read_meta(&e.path()) {
                    Ok(m) if e.path().join("data").is_dir() => {
                        if current
                            .as_ref()
                            .is_none_or(|c| c.raft.last_log_id < m.raft.last_log_id)
                        {
                            current = Some(m);
                        }
                    }
                    // Incomplete (crashed while building): not a snapshot.
                    _ => {
                        let _ = std::fs::remove_dir_all(e.path());
                    }
                }
            }
        }
        let purged = log.last_purged()?;
        let applied = match recovery(engine, purged, current.as_ref()) {
            Recovery::Replay(applied) => {
                // Blank and membership entries after the engine's position are ours alone;
                // only data entries count as missing from the engine.
                let missing = match (applied, ours) {
                    (a, Some(o)) if Some(o) > a => log
                        .read_range(a.map_or(0, |l| l.index + 1), Some(o.index + 1))?
                        .iter()
                        .filter(|e| matches!(e.payload, EntryPayload::Normal(_)))
                        .count(),
                    _ => 0,
                };
                if missing > 0 {
                    tracing::warn!(
                        engine = applied.map_or(0, |l| l.index),
                        raft = ours.map_or(0, |l| l.index),
                        entries = missing,
                        "the engine is behind what this node applied before it stopped; applying the missing entries again from the log (any it already holds are recognised and skipped)"
                    );
                }
                applied
            }
            Recovery::Install(snap) => {
                tracing::warn!(
                    engine = engine.map_or(0, |l| l.index),
                    purged = purged.map_or(0, |l| l.index),
                    snapshot = %snap.raft.snapshot_id,
                    "the engine lost entries the log no longer holds; installing the local snapshot"
                );
                let data = snaps.join(&snap.raft.snapshot_id).join("data");
                sm.install_snapshot(&data, &snap.sm)
                    .await
                    .map_err(|e| format!("installing the local snapshot: {e}"))?;
                snap.raft.last_log_id
            }
            Recovery::Lost => {
                return Err(format!(
                    "the engine has applied up to index {} but the log starts after {} and no local snapshot covers the gap; re-sync this node (shared-db cluster resync) or give it a fresh data directory",
                    engine.map_or(0, |l| l.index),
                    purged.map_or(0, |l| l.index)
                ))
            }
        };
        let (applied_tx, _) = watch::channel(applied.map_or(0, |l| l.index));
        let shared = Arc::new(SmShared {
            sm,
            log,
            dir: raft_dir.to_path_buf(),
            state: Mutex::new(State {
                applied,
                history: vec![membership.clone()],
                membership,
                current,
            }),
            applied_tx,
            fatal: Mutex::new(None),
        });
        Ok((
            SmStore {
                shared: Arc::clone(&shared),
            },
            shared,
        ))
    }
}

/// How a node resumes, given what its engine applied, where its log starts and its newest
/// snapshot.
enum Recovery<'a> {
    /// Everything after this point is still in the log: openraft applies it again.
    Replay(Option<LogId>),
    /// The engine is missing entries only this snapshot holds.
    Install(&'a StoredSnapshot),
    /// The engine is missing entries nothing here holds.
    Lost,
}

fn recovery<'a>(
    engine: Option<LogId>,
    purged: Option<LogId>,
    snapshot: Option<&'a StoredSnapshot>,
) -> Recovery<'a> {
    if engine >= purged {
        return Recovery::Replay(engine);
    }
    match snapshot {
        // The snapshot's data is what the engine has: the entries up to the snapshot's point
        // after the engine's are membership or blank entries.
        Some(s) if Some(log_id(s.sm.last_applied)) <= engine => {
            Recovery::Replay(engine.max(s.raft.last_log_id))
        }
        Some(s) if s.raft.last_log_id >= purged => Recovery::Install(s),
        _ => Recovery::Lost,
    }
}

impl SmStore {
    /// Applies a run of normal entries through the state machine, pushing their replies.
    async fn apply_normal(
        &mut self,
        entries: Vec<(LogId, Vec<u8>)>,
        out: &mut Vec<Vec<u8>>,
    ) -> Result<(), StorageError> {
        let Some(&(last, _)) = entries.last() else {
            return Ok(());
        };
        let first = entries[0].0.index;
        let n = entries.len();
        let replies = self
            .shared
            .sm
            .apply_many(
                entries
                    .into_iter()
                    .map(|(id, payload)| (position(&id), payload))
                    .collect(),
            )
            .await
            .map_err(|e| {
                let what = if n == 1 {
                    format!("applying entry {first}")
                } else {
                    format!("applying entries {first}..={}", last.index)
                };
                sm_err(self.shared.fail(&what, e))
            })?;
        if replies.len() != n {
            return Err(sm_err(self.shared.fail(
                "applying entries",
                format!("{} replies for {n} entries", replies.len()),
            )));
        }
        out.extend(replies);
        self.shared.lock().applied = Some(last);
        self.shared.applied_tx.send_replace(last.index);
        Ok(())
    }
}

impl RaftStateMachine<TypeConfig> for SmStore {
    type SnapshotBuilder = Builder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let st = self.shared.lock();
        Ok((st.applied, st.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Vec<u8>>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut out = Vec::new();
        // Consecutive normal entries go to the state machine together.
        let mut normal: Vec<(LogId, Vec<u8>)> = Vec::new();
        for entry in entries {
            let id = entry.log_id;
            if let EntryPayload::Normal(payload) = entry.payload {
                normal.push((id, payload));
                continue;
            }
            self.apply_normal(std::mem::take(&mut normal), &mut out)
                .await?;
            match entry.payload {
                EntryPayload::Normal(_) => {}
                EntryPayload::Blank => {
                    self.shared.lock().applied = Some(id);
                    self.shared.persist().await.map_err(sm_err)?;
                    out.push(Vec::new());
                }
                EntryPayload::Membership(m) => {
                    {
                        let mut st = self.shared.lock();
                        st.applied = Some(id);
                        st.membership = StoredMembership::new(Some(id), m);
                        let m = st.membership.clone();
                        st.history.push(m);
                        if st.history.len() > 16 {
                            st.history.remove(0);
                        }
                    }
                    self.shared.persist().await.map_err(sm_err)?;
                    out.push(Vec::new());
                }
            }
            self.shared.applied_tx.send_replace(id.index);
        }
        self.apply_normal(normal, &mut out).await?;
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Builder {
        let st = self.shared.lock();
        Builder {
            shared: Arc::clone(&self.shared),
            applied: st.applied,
            membership: st.membership.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<SnapshotDir>, StorageError> {
        Err(snap_err(
            "snapshots are received through the internal API's /raft/snapshot",
        ))
    }

    async fn install_snapshot(
        &mut self,
        meta: &RaftSnapshotMeta,
        snapshot: Box<SnapshotDir>,
    ) -> Result<(), StorageError> {
        let sh = &self.shared;
        tracing::info!(snapshot = %meta.snapshot_id, "installing snapshot");
        sh.sm
            .install_snapshot(&snapshot.path, &snapshot.meta)
            .await
            .map_err(|e| snap_err(sh.fail("installing a snapshot", e)))?;
        // `snapshot.path` is `<staging>/<id>/data`; move `<staging>/<id>` into snapshots/.
        let id = meta.snapshot_id.clone();
        let stored = StoredSnapshot {
            raft: meta.clone(),
            sm: snapshot.meta.clone(),
        };
        if let Some(src) = snapshot.path.parent() {
            let dst = sh.snapshots().join(&id);
            if src != dst {
                let _ = std::fs::remove_dir_all(&dst);
                snapshot::write_meta(src, &stored).map_err(snap_err)?;
                std::fs::rename(src, &dst).map_err(snap_err)?;
            }
        }
        {
            let mut st = sh.lock();
            st.applied = meta.last_log_id;
            st.membership = meta.last_membership.clone();
            let m = st.membership.clone();
            st.history.push(m);
        }
        sh.persist().await.map_err(sm_err)?;
        sh.adopt(&id, stored);
        sh.applied_tx
            .send_replace(meta.last_log_id.map_or(0, |l| l.index));
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        let Some(cur) = self.shared.current_snapshot() else {
            return Ok(None);
        };
        let path = self
            .shared
            .snapshots()
            .join(&cur.raft.snapshot_id)
            .join("data");
        Ok(Some(Snapshot {
            meta: cur.raft.clone(),
            snapshot: Box::new(SnapshotDir { path, meta: cur.sm }),
        }))
    }
}

/// Builds one snapshot: asks the state machine to write it, then records it as current.
pub struct Builder {
    shared: Arc<SmShared>,
    applied: Option<LogId>,
    membership: StoredMembership,
}

impl RaftSnapshotBuilder<TypeConfig> for Builder {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        let sh = &self.shared;
        let mut rnd = [0u8; 4];
        let _ = getrandom::fill(&mut rnd);
        let tmp = sh
            .snapshots()
            .join(format!("building-{}", hex::encode(rnd)));
        let data = tmp.join("data");
        std::fs::create_dir_all(&data).map_err(snap_err)?;
        let mut meta = match sh.sm.build_snapshot(&data).await {
            Ok(m) => m,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&tmp);
                return Err(snap_err(sh.fail("building a snapshot", e)));
            }
        };
        let (size, sum) = snapshot::checksum_dir(&data).map_err(snap_err)?;
        if meta.checksum != sum || meta.size_bytes != size {
            tracing::warn!(
                "the state machine's snapshot checksum differs from the files; using the files'"
            );
            meta.checksum = sum;
            meta.size_bytes = size;
        }
        // Everything applied before the builder was made is in the snapshot; the engine may
        // have applied more since.
        let point = Some(log_id(meta.last_applied)).max(self.applied);
        let Some(point) = point else {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(snap_err("nothing applied yet; no snapshot to build"));
        };
        let membership = {
            let st = sh.lock();
            st.history
                .iter()
                .rev()
                .find(|m| m.log_id().is_some_and(|l| l.index <= point.index))
                .cloned()
                .unwrap_or_else(|| self.membership.clone())
        };
        let id = format!(
            "{}-{}-{}",
            point.leader_id.term,
            point.index,
            hex::encode(rnd)
        );
        let raft_meta = RaftSnapshotMeta {
            last_log_id: Some(point),
            last_membership: membership,
            snapshot_id: id.clone(),
        };
        let stored = StoredSnapshot {
            raft: raft_meta.clone(),
            sm: meta.clone(),
        };
        // The log is purged behind this snapshot: it must be on disk before it is adopted.
        snapshot::sync_tree(&data).map_err(snap_err)?;
        snapshot::write_meta(&tmp, &stored).map_err(snap_err)?;
        let dst = sh.snapshots().join(&id);
        std::fs::rename(&tmp, &dst).map_err(snap_err)?;
        snapshot::sync_dir(&sh.snapshots()).map_err(snap_err)?;
        sh.adopt(&id, stored);
        tracing::info!(snapshot = %id, bytes = size, "snapshot built");
        Ok(Snapshot {
            meta: raft_meta,
            snapshot: Box::new(SnapshotDir {
                path: dst.join("data"),
                meta,
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::contract::{LogPosition, SnapshotMeta};

    fn id(index: u64) -> Option<LogId> {
        Some(log_id(LogPosition { term: 1, index }))
    }

    /// A snapshot taken at raft index `point` whose data is the engine at index `data`.
    fn snap(data: u64, point: u64) -> StoredSnapshot {
        StoredSnapshot {
            raft: RaftSnapshotMeta {
                last_log_id: id(point),
                last_membership: StoredMembership::default(),
                snapshot_id: format!("1-{point}"),
            },
            sm: SnapshotMeta {
                last_applied: LogPosition {
                    term: 1,
                    index: data,
                },
                size_bytes: 0,
                checksum: String::new(),
            },
        }
    }

    #[test]
    fn an_engine_behind_replays_from_its_own_position_while_the_log_holds_the_rest() {
        // Fresh node, nothing purged.
        assert!(matches!(recovery(None, None, None), Recovery::Replay(None)));
        // The engine lost 95..100 in an OS crash; the log starts after 50.
        let s = snap(40, 50);
        assert!(matches!(recovery(id(95), id(50), Some(&s)), Recovery::Replay(a) if a == id(95)));
        // An engine that lost everything replays the whole log when nothing was purged.
        assert!(matches!(recovery(None, None, None), Recovery::Replay(None)));
    }

    #[test]
    fn an_engine_behind_the_purged_log_gets_the_local_snapshot() {
        let s = snap(180, 200);
        assert!(
            matches!(recovery(id(120), id(150), Some(&s)), Recovery::Install(x) if x.raft.last_log_id == id(200))
        );
        assert!(matches!(
            recovery(None, id(150), Some(&s)),
            Recovery::Install(_)
        ));
    }

    #[test]
    fn an_installed_snapshot_whose_tail_is_not_data_is_not_installed_again() {
        // Installed from a leader: the data is at 180, the snapshot's point (a membership entry)
        // at 200, and the log was purged up to 200.
        let s = snap(180, 200);
        assert!(
            matches!(recovery(id(180), id(200), Some(&s)), Recovery::Replay(a) if a == id(200))
        );
    }

    #[test]
    fn a_gap_nothing_covers_is_reported() {
        assert!(matches!(recovery(id(10), id(150), None), Recovery::Lost));
    }
}
