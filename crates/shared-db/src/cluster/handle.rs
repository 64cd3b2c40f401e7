//! [`Cluster`]: one node's raft (openraft over the internal API) as the rest of shared-db uses
//! it: proposing entries, leader checks, waiting for the local applier, membership changes,
//! status, and serving the internal API.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{CheckIsLeaderError, ClientWriteError, RaftError};
use openraft::raft::{VoteRequest, VoteResponse};
use openraft::storage::RaftLogStorage;
use openraft::{ChangeMembers, ServerState};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;

use super::auth::Verifier;
use super::client::PeerClient;
use super::contract::{
    BoxFuture, LogPosition, NodeId, PeerInfo, ProposeError, ReplicatedLog, StateMachine,
};
use super::discovery::PeerSpec;
use super::log_store::{LogStats, LogStore};
use super::network::NetworkFactory;
use super::settings::ClusterSettings;
use super::sm::{SmShared, SmStore};
use super::types::{position, LogId, Member, Raft, StorageError, Vote};

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(transparent)]
    Log(#[from] super::log_store::OpenError),
    #[error("raft state: {0}")]
    State(String),
    #[error("raft: {0}")]
    Raft(String),
}

/// A member as `/cluster/info` and `/status` show it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MemberInfo {
    pub id: NodeId,
    pub internal_addr: String,
    pub mysql_addr: String,
    pub voter: bool,
}

/// `GET /cluster/info`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterInfo {
    pub id: NodeId,
    /// Random per process (a node recognises itself among its peers).
    #[serde(default)]
    pub instance: String,
    /// The caller's IP as this node sees it.
    #[serde(default)]
    pub seen_ip: Option<String>,
    pub internal_addr: String,
    pub mysql_addr: String,
    pub initialized: bool,
    pub role: String,
    pub term: u64,
    pub leader: Option<PeerInfo>,
    pub members: Vec<MemberInfo>,
    pub last_log_index: Option<u64>,
    pub applied_index: Option<u64>,
}

/// Replication progress of one peer, as the leader sees it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PeerProgress {
    pub id: NodeId,
    pub internal_addr: String,
    pub mysql_addr: String,
    pub voter: bool,
    /// Highest index known replicated on that peer (leader only).
    pub match_index: Option<u64>,
    /// Entries the peer is behind the leader's log (leader only).
    pub lag: Option<u64>,
    /// The peer's applied index as its last append answer reported it (leader only; flow
    /// control waits when an in-sync follower falls too far behind, see `cluster::flow`).
    pub applied_index: Option<u64>,
}

/// The cluster part of `/status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterStatus {
    pub node_id: NodeId,
    pub role: String,
    pub term: u64,
    pub leader: Option<PeerInfo>,
    pub commit_index: Option<u64>,
    pub applied_index: Option<u64>,
    pub last_log_index: Option<u64>,
    pub snapshot_index: Option<u64>,
    pub purged_index: Option<u64>,
    pub peers: Vec<PeerProgress>,
    pub diverged: bool,
    /// Why this node's raft stopped (a state machine or storage failure).
    pub fatal: Option<String>,
    pub log_fsyncs: u64,
    pub log_entries_written: u64,
    /// Append requests this node sent as leader ahead of its own log sync.
    pub early_appends_sent: u64,
    /// openraft's append requests answered from an early one instead of being sent again.
    pub early_appends_answered: u64,
    pub auth_refused: u64,
}

/// `POST /cluster/add-node`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AddNode {
    pub id: NodeId,
    pub internal_addr: String,
    pub mysql_addr: String,
}

/// `POST /cluster/remove-node`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RemoveNode {
    pub id: NodeId,
}

fn role(s: ServerState) -> &'static str {
    match s {
        ServerState::Leader => "leader",
        ServerState::Follower => "follower",
        ServerState::Candidate => "candidate",
        ServerState::Learner => "learner",
        ServerState::Shutdown => "shutdown",
    }
}

/// One node's membership in the cluster.
pub struct Cluster {
    pub(super) id: NodeId,
    /// How peers and clients reach this node (learned from peers when not configured, until
    /// the node is part of a membership).
    me: std::sync::RwLock<Member>,
    /// Random per process: recognises this node in its own peer list.
    pub(super) instance: String,
    pub(super) raft: Raft,
    pub(super) client: PeerClient,
    pub(super) verifier: Option<Arc<Verifier>>,
    pub(super) sm: Arc<SmShared>,
    log_stats: Arc<LogStats>,
    /// The raft log (read here only for its last entry).
    log: LogStore,
    early: Arc<super::early::EarlyReplication>,
    appends_synced: tokio::sync::watch::Receiver<u64>,
    /// Followers' applied indexes as their append answers report them (flow control).
    followers_applied: Arc<super::flow::FollowerApplied>,
    diverged: AtomicBool,
    /// When this node last accepted entries or a heartbeat from a leader.
    last_leader_contact: std::sync::Mutex<Option<std::time::Instant>>,
    /// Snapshots from a leader being installed right now (the leader is busy with this node).
    installing: AtomicU64,
    pub(super) auth_refused: AtomicU64,
    pub(super) settings: ClusterSettings,
    /// Serialises snapshot receptions; holds the vote of the leader whose transfer is open.
    pub(super) receiving: tokio::sync::Mutex<Option<Vote>>,
}

/// Counts a snapshot installation in progress as contact with the leader until dropped.
pub(super) struct Installing<'a>(&'a Cluster);

impl Drop for Installing<'_> {
    fn drop(&mut self) {
        self.0.installing.fetch_sub(1, Ordering::Relaxed);
        self.0.note_leader_contact();
    }
}

impl Cluster {
    /// Opens the raft state in `<data dir>/raft`, starts openraft driving `sm`, and starts
    /// bootstrapping or joining in the background (see `docs/shared-db-cluster.md`).
    pub async fn start(
        settings: ClusterSettings,
        sm: Arc<dyn StateMachine>,
    ) -> Result<Arc<Cluster>, ClusterError> {
        let log = LogStore::open(&settings.raft_dir.join("raft.redb"))?;
        if log
            .step_down_on_restart(settings.node_id)
            .await
            .map_err(ClusterError::State)?
        {
            tracing::info!("this node led when it stopped; it restarts as a follower");
        }
        let log_stats = log.stats();
        let appends_synced = log.appends_synced();
        let (sm_store, sm_shared) = SmStore::open(sm, log.clone(), &settings.raft_dir)
            .await
            .map_err(ClusterError::State)?;
        let (election_min, election_max) = openraft_election_timeouts(&settings);
        let config = openraft::Config {
            cluster_name: "shared-db".into(),
            heartbeat_interval: settings.heartbeat.as_millis() as u64,
            election_timeout_min: election_min,
            election_timeout_max: election_max,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(settings.snapshot_logs),
            max_in_snapshot_log_to_keep: settings.keep_logs,
            install_snapshot_timeout: 10_000,
            // Campaigns are timed by `election::run`.
            enable_elect: false,
            ..Default::default()
        }
        .validate()
        .map_err(|e| ClusterError::Raft(e.to_string()))?;
        let client = PeerClient::new(settings.secret.clone(), settings.node_id);
        let signals = Arc::new(super::election::ElectionSignals::default());
        let followers_applied = Arc::new(super::flow::FollowerApplied::default());
        let early = Arc::new(super::early::EarlyReplication::new(
            client.clone(),
            Arc::clone(&followers_applied),
        ));
        if settings.early_replication {
            let e = Arc::clone(&early);
            log.on_append(Box::new(move |prev, entries| e.offer(prev, entries)));
        }
        let network = NetworkFactory {
            client: client.clone(),
            id: settings.node_id,
            signals: Arc::clone(&signals),
            followers: Arc::clone(&followers_applied),
            early: Arc::clone(&early),
        };
        let raft = Raft::new(
            settings.node_id,
            Arc::new(config),
            network,
            log.clone(),
            sm_store,
        )
        .await
        .map_err(|e| ClusterError::Raft(e.to_string()))?;
        early.set_metrics(raft.metrics());
        let me = Member {
            internal_addr: settings.internal_addr.clone(),
            mysql_addr: settings.mysql_addr.clone(),
        };
        let mut token = [0u8; 12];
        let _ = getrandom::fill(&mut token);
        let cluster = Arc::new(Cluster {
            id: settings.node_id,
            me: std::sync::RwLock::new(me),
            instance: hex::encode(token),
            raft,
            verifier: settings.secret.clone().map(|s| Arc::new(Verifier::new(s))),
            client,
            sm: sm_shared,
            log_stats,
            log,
            early,
            appends_synced,
            followers_applied,
            diverged: AtomicBool::new(false),
            last_leader_contact: std::sync::Mutex::new(None),
            installing: AtomicU64::new(0),
            auth_refused: AtomicU64::new(0),
            settings,
            receiving: tokio::sync::Mutex::new(None),
        });
        tokio::spawn(super::bootstrap::run(Arc::clone(&cluster)));
        tokio::spawn(super::election::run(
            Arc::downgrade(&cluster),
            signals,
            cluster.settings.election_min,
            cluster.settings.election_max,
        ));
        Ok(cluster)
    }

    /// Serves the internal API (`/raft/*`, `/cluster/*`) and `extra` routes on `listener`, all
    /// behind the cluster-secret authentication. Runs until the listener fails.
    pub async fn serve(
        self: &Arc<Self>,
        listener: TcpListener,
        extra: axum::Router,
    ) -> std::io::Result<()> {
        let app = super::server::router(Arc::clone(self), extra);
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .await
    }

    /// A signed client for any peer's internal API (every call takes a timeout).
    pub fn peer_client(&self) -> PeerClient {
        self.client.clone()
    }

    /// Marks this node diverged (its engine no longer matches the log); shown in `/status`.
    pub fn set_diverged(&self, diverged: bool) {
        if self.diverged.swap(diverged, Ordering::AcqRel) != diverged {
            tracing::warn!(diverged, "divergence flag changed");
        }
    }

    pub fn diverged(&self) -> bool {
        self.diverged.load(Ordering::Acquire)
    }

    /// The index of the last entry applied on this node.
    pub fn applied_index(&self) -> u64 {
        *self.sm.applied_tx.borrow()
    }

    /// Waits until this node has applied `index` (true), or `timeout` passed (false).
    pub async fn wait_applied(&self, index: u64, timeout: Duration) -> bool {
        let mut rx = self.sm.applied_tx.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|a| *a >= index))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Records that a leader's AppendEntries (or heartbeat) was accepted just now.
    pub(super) fn note_leader_contact(&self) {
        let mut at = self
            .last_leader_contact
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *at = Some(std::time::Instant::now());
    }

    /// When a leader's AppendEntries (or heartbeat) was last accepted; now while a leader's
    /// snapshot is being installed (its replication to this node waits for the install, so
    /// no heartbeat comes meanwhile).
    pub(super) fn last_leader_contact(&self) -> Option<std::time::Instant> {
        if self.installing.load(Ordering::Relaxed) > 0 {
            return Some(std::time::Instant::now());
        }
        *self
            .last_leader_contact
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A snapshot transfer request came under `vote`: if that is a leader's vote at least as
    /// new as this node's, it counts as contact with the leader.
    pub(super) fn note_snapshot_contact(&self, vote: &Vote) -> bool {
        let mine = self.raft.metrics().borrow().vote;
        let current =
            vote.is_committed() && *vote >= mine && vote.leader_id.voted_for() != Some(self.id);
        if current {
            self.note_leader_contact();
        }
        current
    }

    /// Marks a leader's snapshot as being installed until the guard is dropped.
    pub(super) fn installing_snapshot(&self) -> Installing<'_> {
        self.installing.fetch_add(1, Ordering::Relaxed);
        Installing(self)
    }

    /// Whether this node leads and a quorum acknowledged it within the leader lease.
    pub(super) fn leads_within_lease(&self) -> bool {
        let lease = Duration::from_millis(openraft_election_timeouts(&self.settings).1);
        self.is_leader() && self.in_majority_contact(lease)
    }

    /// The last entry of this node's raft log.
    pub(super) async fn last_log_id(&self) -> Result<Option<LogId>, StorageError> {
        self.log
            .clone()
            .get_log_state()
            .await
            .map(|s| s.last_log_id)
    }

    /// The refusal of `req` if this node leads and a quorum acknowledged it within the leader
    /// lease. openraft 0.9 renews the lease of a follower that hears its leader but not the
    /// leader's own, so without this a node that campaigns with an up-to-date log (after a
    /// pause, say) would be granted the leader's vote and depose a healthy leader. Refusing a
    /// vote never endangers safety; the candidate learns this node's vote and last log.
    pub(super) async fn refuse_vote_while_leading(
        &self,
        req: &VoteRequest<NodeId>,
    ) -> Option<VoteResponse<NodeId>> {
        if req.vote.leader_id.voted_for() == Some(self.id) || !self.leads_within_lease() {
            return None;
        }
        let mine = self.raft.metrics().borrow().vote;
        let last = self.last_log_id().await.ok()?;
        tracing::debug!(candidate = %req.vote, "vote refused: this node leads with a quorum in touch");
        Some(VoteResponse::new(mine, last, false))
    }

    pub(super) fn raft_metrics(
        &self,
    ) -> tokio::sync::watch::Receiver<openraft::RaftMetrics<NodeId, Member>> {
        self.raft.metrics()
    }

    /// Starts an election now (a leader ignores it).
    pub(super) async fn campaign(&self) -> Result<(), openraft::error::Fatal<NodeId>> {
        self.raft.trigger().elect().await
    }

    /// Whether this node has been in touch with a majority within `within`: as leader, a
    /// quorum acknowledged it; as follower, a leader's heartbeat or entries arrived. A node
    /// cut off from the majority answers `false` after `within` (or at once before any
    /// contact).
    pub fn in_majority_contact(&self, within: Duration) -> bool {
        // Called before every client command: read the metrics in place, no clone.
        let metrics = self.raft.metrics();
        {
            let m = metrics.borrow();
            if m.state == ServerState::Leader {
                let alone = m
                    .membership_config
                    .membership()
                    .voter_ids()
                    .nth(1)
                    .is_none();
                return alone
                    || m.millis_since_quorum_ack
                        .is_some_and(|ms| u128::from(ms) <= within.as_millis());
            }
        }
        let at = *self
            .last_leader_contact
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        at.is_some_and(|t| t.elapsed() <= within)
    }

    /// Whether this node currently believes it leads (no round trip; see
    /// [`ReplicatedLog::ensure_leader`] for a confirmed answer).
    pub fn is_leader(&self) -> bool {
        self.raft.metrics().borrow().state == ServerState::Leader
    }

    /// This node's raft has stopped (state machine or storage failure).
    pub fn fatal(&self) -> Option<String> {
        if let Some(m) = self
            .sm
            .fatal
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        {
            return Some(m);
        }
        match &self.raft.metrics().borrow().running_state {
            Ok(()) => None,
            Err(e) => Some(e.to_string()),
        }
    }

    pub fn settings(&self) -> &ClusterSettings {
        &self.settings
    }

    /// Members of the current membership config.
    pub fn members(&self) -> Vec<MemberInfo> {
        let m = self.raft.metrics().borrow().membership_config.clone();
        let voters: BTreeSet<NodeId> = m.voter_ids().collect();
        m.nodes()
            .map(|(id, n)| MemberInfo {
                id: *id,
                internal_addr: n.internal_addr.clone(),
                mysql_addr: n.mysql_addr.clone(),
                voter: voters.contains(id),
            })
            .collect()
    }

    /// This node's advertised addresses.
    pub fn me(&self) -> Member {
        self.me.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Adopts `host` as the advertised host (learned from a peer, see
    /// [`ClusterSettings::advertise_fixed`]).
    pub(super) fn learn_host(&self, host: &str) {
        let port = |a: &str| a.rsplit_once(':').and_then(|(_, p)| p.parse::<u16>().ok());
        let mut me = self.me.write().unwrap_or_else(|p| p.into_inner());
        let (Some(api), Some(mysql)) = (port(&me.internal_addr), port(&me.mysql_addr)) else {
            return;
        };
        let (Some(internal), Some(mysql)) = (
            super::discovery::with_port(host, api),
            super::discovery::with_port(host, mysql),
        ) else {
            return;
        };
        if me.internal_addr != internal {
            tracing::info!(address = %internal, "advertising the address peers see this node at");
            *me = Member {
                internal_addr: internal,
                mysql_addr: mysql,
            };
        }
    }

    pub fn info(&self) -> ClusterInfo {
        let m = self.raft.metrics().borrow().clone();
        let initialized = m.membership_config.membership().nodes().next().is_some();
        let me = self.me();
        ClusterInfo {
            id: self.id,
            instance: self.instance.clone(),
            seen_ip: None,
            internal_addr: me.internal_addr,
            mysql_addr: me.mysql_addr,
            initialized,
            role: role(m.state).into(),
            term: m.current_term,
            leader: self.leader(),
            members: self.members(),
            last_log_index: m.last_log_index,
            applied_index: m.last_applied.map(|l| l.index),
        }
    }

    pub async fn status(&self) -> ClusterStatus {
        let m = self.raft.metrics().borrow().clone();
        let commit = match tokio::time::timeout(
            Duration::from_secs(1),
            self.raft
                .with_raft_state(|st| st.committed.map(|l| l.index)),
        )
        .await
        {
            Ok(Ok(c)) => c,
            _ => None,
        };
        let last = m.last_log_index.unwrap_or(0);
        let matched: BTreeMap<NodeId, Option<u64>> = m
            .replication
            .as_ref()
            .map(|r| r.iter().map(|(id, l)| (*id, l.map(|l| l.index))).collect())
            .unwrap_or_default();
        let peers = self
            .members()
            .into_iter()
            .map(|mi| {
                let mine = mi.id == self.id;
                let match_index = if mine && m.state == ServerState::Leader {
                    m.last_log_index
                } else {
                    matched.get(&mi.id).copied().flatten()
                };
                let lag = if m.state == ServerState::Leader {
                    Some(last.saturating_sub(match_index.unwrap_or(0)))
                } else {
                    None
                };
                PeerProgress {
                    id: mi.id,
                    internal_addr: mi.internal_addr,
                    mysql_addr: mi.mysql_addr,
                    voter: mi.voter,
                    match_index,
                    lag,
                    applied_index: if mine || m.state != ServerState::Leader {
                        None
                    } else {
                        self.followers_applied.reported(mi.id)
                    },
                }
            })
            .collect();
        ClusterStatus {
            node_id: self.id,
            role: role(m.state).into(),
            term: m.current_term,
            leader: self.leader(),
            commit_index: commit,
            applied_index: m.last_applied.map(|l| l.index),
            last_log_index: m.last_log_index,
            snapshot_index: m.snapshot.map(|l| l.index),
            purged_index: m.purged.map(|l| l.index),
            peers,
            diverged: self.diverged(),
            fatal: self.fatal(),
            log_fsyncs: self.log_stats.commits.load(Ordering::Relaxed),
            log_entries_written: self.log_stats.entries.load(Ordering::Relaxed),
            early_appends_sent: self.early.sent(),
            early_appends_answered: self.early.answered_early(),
            auth_refused: self.auth_refused.load(Ordering::Relaxed),
        }
    }

    /// Adds a node: as a learner first (returns once it has caught up with the log), then as a
    /// voter. On a follower the request is forwarded to the leader.
    pub async fn add_node(
        &self,
        req: AddNode,
        timeout: Duration,
    ) -> Result<Vec<MemberInfo>, String> {
        if !self.is_leader() {
            let leader = self.leader().ok_or("no leader is known; retry later")?;
            if leader.id == self.id {
                return Err("leadership is changing; retry later".into());
            }
            return self
                .client
                .post_json(&leader.internal_addr, "/cluster/add-node", &req, timeout)
                .await
                .map_err(|e| e.to_string());
        }
        let member = Member {
            internal_addr: req.internal_addr.clone(),
            mysql_addr: req.mysql_addr.clone(),
        };
        let voters: BTreeSet<NodeId> = self
            .raft
            .metrics()
            .borrow()
            .membership_config
            .voter_ids()
            .collect();
        if !voters.contains(&req.id) {
            tracing::info!(node = req.id, addr = %req.internal_addr, "adding a learner");
            tokio::time::timeout(timeout, self.raft.add_learner(req.id, member, true))
                .await
                .map_err(|_| format!("the learner did not catch up within {timeout:?}"))?
                .map_err(|e| e.to_string())?;
            tracing::info!(node = req.id, "learner caught up; promoting it to voter");
            tokio::time::timeout(
                timeout,
                self.raft
                    .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([req.id])), false),
            )
            .await
            .map_err(|_| format!("promotion not committed within {timeout:?}"))?
            .map_err(|e| e.to_string())?;
        }
        Ok(self.members())
    }

    /// Removes a node from the membership (a voter is demoted and dropped in one change). On a
    /// follower the request is forwarded to the leader.
    pub async fn remove_node(
        &self,
        id: NodeId,
        timeout: Duration,
    ) -> Result<Vec<MemberInfo>, String> {
        if !self.is_leader() {
            let leader = self.leader().ok_or("no leader is known; retry later")?;
            if leader.id == self.id {
                return Err("leadership is changing; retry later".into());
            }
            return self
                .client
                .post_json(
                    &leader.internal_addr,
                    "/cluster/remove-node",
                    &RemoveNode { id },
                    timeout,
                )
                .await
                .map_err(|e| e.to_string());
        }
        let members = self.members();
        let Some(m) = members.iter().find(|m| m.id == id) else {
            return Ok(members);
        };
        let change = if m.voter {
            if members.iter().filter(|m| m.voter).count() <= 1 {
                return Err("cannot remove the last voter".into());
            }
            ChangeMembers::RemoveVoters(BTreeSet::from([id]))
        } else {
            ChangeMembers::RemoveNodes(BTreeSet::from([id]))
        };
        tracing::info!(node = id, "removing a node from the cluster");
        tokio::time::timeout(timeout, self.raft.change_membership(change, false))
            .await
            .map_err(|_| format!("removal not committed within {timeout:?}"))?
            .map_err(|e| e.to_string())?;
        Ok(self.members())
    }

    /// Initialises the membership with `members` (bootstrap by the lowest id).
    pub(super) async fn initialize(&self, members: BTreeMap<NodeId, Member>) -> Result<(), String> {
        self.raft
            .initialize(members)
            .await
            .map_err(|e| e.to_string())
    }

    pub(super) fn initial_peers(&self) -> Vec<PeerSpec> {
        self.settings.peers.clone()
    }

    /// Stops raft (the node stops taking part in the cluster).
    pub async fn shutdown(&self) {
        let _ = tokio::time::timeout(Duration::from_secs(5), self.raft.shutdown()).await;
    }

    fn peer_info(&self, id: NodeId) -> Option<PeerInfo> {
        let m = self.raft.metrics().borrow().membership_config.clone();
        m.membership().get_node(&id).map(|n| n.peer_info(id))
    }
}

/// openraft's election timeouts for the configured ones. openraft does not campaign by itself
/// here (`election::run` does, after a timeout drawn from the configured range); what is left
/// of its timeouts is the leader lease, its `election_timeout_max`, during which a follower that
/// heard the leader refuses to vote. It must outlast a heartbeat and end before the earliest
/// campaign: nine tenths of the configured minimum (450 ms for 500–900 ms), at least two
/// heartbeats.
pub fn openraft_election_timeouts(s: &ClusterSettings) -> (u64, u64) {
    let hb = s.heartbeat.as_millis() as u64;
    let max = (s.election_min.as_millis() as u64 * 9 / 10).max(hb * 2 + 2);
    (hb + 1, max)
}

impl ReplicatedLog for Cluster {
    fn propose(
        &self,
        payload: Vec<u8>,
        timeout: Duration,
    ) -> BoxFuture<'_, Result<(LogPosition, Vec<u8>), ProposeError>> {
        Box::pin(async move {
            if self.fatal().is_some() {
                return Err(ProposeError::ShuttingDown);
            }
            match tokio::time::timeout(timeout, self.raft.client_write(payload)).await {
                Err(_) => Err(ProposeError::Unknown(timeout)),
                Ok(Ok(resp)) => Ok((position(&resp.log_id), resp.data)),
                Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
                    Err(ProposeError::NotLeader {
                        leader: f.leader_id.and_then(|id| {
                            f.leader_node
                                .map(|n| n.peer_info(id))
                                .or_else(|| self.peer_info(id))
                        }),
                    })
                }
                Ok(Err(RaftError::APIError(e))) => Err(ProposeError::Apply(e.to_string())),
                // The entry may have been appended (even committed) before raft stopped.
                Ok(Err(RaftError::Fatal(_))) => {
                    match self
                        .sm
                        .fatal
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .clone()
                    {
                        Some(m) => Err(ProposeError::Apply(m)),
                        None => Err(ProposeError::Unknown(timeout)),
                    }
                }
            }
        })
    }

    fn appends_synced(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        Some(self.appends_synced.clone())
    }

    fn wait_for_followers(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let (followers, last) = {
                let m = self.raft.metrics().borrow().clone();
                if m.state != ServerState::Leader {
                    return;
                }
                let followers: Vec<NodeId> = m
                    .membership_config
                    .voter_ids()
                    .filter(|id| *id != self.id)
                    .collect();
                (followers, m.last_log_index.unwrap_or(0))
            };
            if self.followers_applied.wait_for_room(&followers, last).await {
                tracing::debug!("writes waited for a follower's applier (flow control)");
            }
        })
    }

    fn ensure_leader(&self, timeout: Duration) -> BoxFuture<'_, Result<(), ProposeError>> {
        Box::pin(async move {
            match tokio::time::timeout(timeout, self.raft.ensure_linearizable()).await {
                Err(_) => Err(ProposeError::Unknown(timeout)),
                Ok(Ok(_)) => Ok(()),
                Ok(Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f)))) => {
                    Err(ProposeError::NotLeader {
                        leader: f.leader_id.and_then(|id| self.peer_info(id)),
                    })
                }
                Ok(Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(_)))) => {
                    Err(ProposeError::NotLeader { leader: None })
                }
                Ok(Err(RaftError::Fatal(_))) => Err(ProposeError::ShuttingDown),
            }
        })
    }

    fn leader(&self) -> Option<PeerInfo> {
        let id = self.raft.metrics().borrow().current_leader?;
        self.peer_info(id)
    }

    fn node_id(&self) -> NodeId {
        self.id
    }
}
