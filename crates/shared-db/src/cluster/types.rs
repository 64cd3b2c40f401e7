//! The openraft type configuration of a shared-db cluster: node ids, member addresses, the
//! opaque log payload and the snapshot handle (a directory on disk).

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::contract::{LogPosition, NodeId, PeerInfo};

/// How peers and clients reach a member; stored in the membership config of the log.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// `host:port` of the internal API.
    pub internal_addr: String,
    /// `host:port` of the MySQL listener.
    pub mysql_addr: String,
}

impl fmt::Display for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (mysql {})", self.internal_addr, self.mysql_addr)
    }
}

impl Member {
    pub fn peer_info(&self, id: NodeId) -> PeerInfo {
        PeerInfo {
            id,
            internal_addr: self.internal_addr.clone(),
            mysql_addr: self.mysql_addr.clone(),
        }
    }
}

/// A snapshot as openraft carries it: the directory the state machine wrote, plus our
/// description of it (checksum, size, what it contains).
#[derive(Debug, Clone)]
pub struct SnapshotDir {
    pub path: PathBuf,
    pub meta: super::contract::SnapshotMeta,
}

openraft::declare_raft_types!(
    /// The shared-db cluster's raft types.
    pub TypeConfig:
        D = Vec<u8>,
        R = Vec<u8>,
        NodeId = NodeId,
        Node = Member,
        SnapshotData = SnapshotDir,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type Entry = openraft::impls::Entry<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type Vote = openraft::Vote<NodeId>;
pub type StoredMembership = openraft::StoredMembership<NodeId, Member>;
pub type RaftSnapshotMeta = openraft::SnapshotMeta<NodeId, Member>;
pub type Snapshot = openraft::Snapshot<TypeConfig>;
pub type StorageError = openraft::StorageError<NodeId>;

/// A log id from a term and an index (with `single-term-leader`, that is all a log id is).
pub fn log_id(pos: LogPosition) -> LogId {
    LogId::new(openraft::CommittedLeaderId::new(pos.term, 0), pos.index)
}

pub fn position(id: &LogId) -> LogPosition {
    LogPosition {
        term: id.leader_id.term,
        index: id.index,
    }
}
