//! The boundary between consensus and the engine side of replication.
//!
//! `cluster` (openraft, the internal API, membership) implements [`ReplicatedLog`] and drives a
//! [`StateMachine`]; `replication` (the leader-side executor, the applier, determinism context,
//! read-your-writes) implements [`StateMachine`] and uses [`ReplicatedLog`]. Neither side knows
//! the other's internals: log payloads are opaque bytes here.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A boxed, sendable future (the traits below are used as trait objects).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Raft node id.
pub type NodeId = u64;

/// Where an entry sits in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct LogPosition {
    pub term: u64,
    pub index: u64,
}

/// A cluster member as clients and peers reach it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerInfo {
    pub id: NodeId,
    /// `host:port` of the internal API (7071 by default).
    pub internal_addr: String,
    /// `host:port` of the MySQL listener (3307 by default), for error messages naming the leader.
    pub mysql_addr: String,
}

/// Why a proposal did not commit. A proposal that fails may still commit later only in the
/// [`ProposeError::Unknown`] case; every other variant means it was never appended by a leader.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProposeError {
    #[error("this node is not the leader")]
    NotLeader { leader: Option<PeerInfo> },
    #[error("the write was not committed within {0:?}; its outcome is unknown")]
    Unknown(Duration),
    #[error("this node is shutting down")]
    ShuttingDown,
    #[error("the entry committed but applying it on this node failed: {0}")]
    Apply(String),
}

/// Consensus as the replication layer sees it. Implemented by the openraft node in `cluster`
/// (and by a single-node log in tests).
pub trait ReplicatedLog: Send + Sync + 'static {
    /// Appends `payload` as one entry, waits until a majority has it and this node's
    /// [`StateMachine::apply`] returned for it, and gives back its position and the bytes the
    /// state machine returned. Only the leader accepts proposals. Bounded by `timeout`.
    fn propose(
        &self,
        payload: Vec<u8>,
        timeout: Duration,
    ) -> BoxFuture<'_, Result<(LogPosition, Vec<u8>), ProposeError>>;

    /// Confirms with a majority that this node still leads (a read index), within `timeout`.
    fn ensure_leader(&self, timeout: Duration) -> BoxFuture<'_, Result<(), ProposeError>>;

    /// The leader as this node currently knows it.
    fn leader(&self) -> Option<PeerInfo>;

    /// This node's id.
    fn node_id(&self) -> NodeId;

    /// A counter that moves each time this node's log has synced appended entries, when the
    /// log works that way. A proposer can gather what arrives while one entry is being synced
    /// into the next (see `replication::proposer`); without it, each proposal goes alone.
    fn appends_synced(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        None
    }

    /// Resolves when followers' appliers are close enough behind for the next entry (flow
    /// control, bounded; see `cluster::flow`). At once for logs without followers.
    fn wait_for_followers(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

/// Information about a snapshot written by [`StateMachine::build_snapshot`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotMeta {
    /// The last entry whose effects the snapshot contains.
    pub last_applied: LogPosition,
    /// Total bytes of the files in the snapshot directory.
    pub size_bytes: u64,
    /// SHA-256 (hex) over the snapshot files, in name order.
    pub checksum: String,
}

/// Errors the engine side reports to consensus.
#[derive(Debug, thiserror::Error)]
pub enum StateMachineError {
    #[error("engine: {0}")]
    Engine(String),
    #[error("snapshot: {0}")]
    Snapshot(String),
    #[error("corrupt log entry at index {index}: {reason}")]
    CorruptEntry { index: u64, reason: String },
}

/// The engine as consensus sees it. Implemented by `replication`.
///
/// Entries are handed over strictly in log order, one at a time. `apply` must be idempotent
/// per entry (after a crash consensus may hand over entries the engine already has; the engine
/// side recognises them from what it recorded in `flux_meta` in the same engine transaction).
/// It waits out a restarting engine rather than failing. A follower whose outcome differs from
/// the leader's marks itself diverged and keeps returning `Ok` without touching the engine, so
/// consensus keeps running while the node refuses clients.
pub trait StateMachine: Send + Sync + 'static {
    /// Applies one committed entry; the returned bytes go back to the proposer.
    fn apply(
        &self,
        pos: LogPosition,
        payload: Vec<u8>,
    ) -> BoxFuture<'_, Result<Vec<u8>, StateMachineError>>;

    /// Applies committed entries in order (one reply each); an implementation may apply
    /// several in one engine transaction.
    fn apply_many(
        &self,
        entries: Vec<(LogPosition, Vec<u8>)>,
    ) -> BoxFuture<'_, Result<Vec<Vec<u8>>, StateMachineError>> {
        Box::pin(async move {
            let mut out = Vec::with_capacity(entries.len());
            for (pos, payload) in entries {
                out.push(self.apply(pos, payload).await?);
            }
            Ok(out)
        })
    }

    /// The last entry applied to the engine, as recorded in the engine; `None` when fresh.
    fn last_applied(&self) -> BoxFuture<'_, Result<Option<LogPosition>, StateMachineError>>;

    /// Writes a consistent snapshot of every user database into the empty directory `dir`.
    fn build_snapshot<'a>(
        &'a self,
        dir: &'a Path,
    ) -> BoxFuture<'a, Result<SnapshotMeta, StateMachineError>>;

    /// Replaces every user database with the snapshot in `dir` (already verified against
    /// `meta.checksum`); afterwards `last_applied()` is `meta.last_applied`.
    fn install_snapshot<'a>(
        &'a self,
        dir: &'a Path,
        meta: &'a SnapshotMeta,
    ) -> BoxFuture<'a, Result<(), StateMachineError>>;
}
