//! Resolved cluster settings of one node (from [`crate::config::Config`]).

use std::path::PathBuf;
use std::time::Duration;

use super::auth::ClusterSecret;
use super::contract::NodeId;
use super::discovery::PeerSpec;

/// Flux API discovery of peers.
#[derive(Debug, Clone)]
pub struct Discovery {
    pub app_name: String,
    pub api_url: String,
}

#[derive(Debug, Clone)]
pub struct ClusterSettings {
    pub node_id: NodeId,
    /// `<data dir>/raft`.
    pub raft_dir: PathBuf,
    /// `host:port` peers and clients use for this node's internal API.
    pub internal_addr: String,
    /// `host:port` of this node's MySQL listener as clients reach it.
    pub mysql_addr: String,
    /// The advertised host was configured (or is the bind address). When it was not, a node
    /// that discovers its peers through the Flux API takes the address its peers see it
    /// connect from.
    pub advertise_fixed: bool,
    pub peers: Vec<PeerSpec>,
    pub discovery: Option<Discovery>,
    pub secret: Option<ClusterSecret>,
    /// Join an existing cluster (as a learner, then voter) instead of bootstrapping one.
    pub join: bool,
    pub heartbeat: Duration,
    pub election_min: Duration,
    pub election_max: Duration,
    /// Build a snapshot (and compact the log) after this many entries.
    pub snapshot_logs: u64,
    /// Entries kept in the log behind the latest snapshot.
    pub keep_logs: u64,
    /// Re-sync from the leader's snapshot by itself once diverged.
    pub auto_resync: bool,
    /// Send new entries to followers while the leader's own sync runs (see [`super::early`]).
    pub early_replication: bool,
}

impl ClusterSettings {
    /// A node that runs alone: no peers, no discovery, not joining.
    pub fn is_single(&self) -> bool {
        self.peers.is_empty() && self.discovery.is_none() && !self.join
    }
}
