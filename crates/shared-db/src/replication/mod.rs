//! The engine side of replication: how writes reach the log and how entries reach the engine.
//!
//! - [`entry`]: the versioned log entry format.
//! - [`context`]: the statement context shipped with every statement.
//! - [`executor`]: the leader's write path (shadow sessions, XA, proposals).
//! - [`applier`]: [`ReplicaEngine`], the [`StateMachine`] every node runs.
//! - [`meta`]: the `flux_meta` schema (applied position, XA markers, diverged flag).
//! - [`prepared`]: prepared statements translated to text (writes; reads on the leader).
//! - [`binary_rows`]: text result sets re-encoded as binary ones (prepared reads run as text).
//! - [`snapshot`]: dumps and installs of all user databases.
//! - [`forward`]: the internal API routes and the [`LeaderChannel`] followers use.
//! - [`router`]: per-session routing decisions (local, leader, refused).
//! - [`response`]: whole engine responses as packets.
//! - [`testing`]: an in-process log (tests, and a node running alone).
//!
//! A node gets replication from a [`ReplicationProvider`] (the Raft cluster, or
//! [`SingleNodeProvider`]); see `docs/shared-db-replication.md`.

pub mod applier;
pub mod binary_rows;
pub mod bulk_apply;
pub mod context;
pub mod cursor;
pub mod entry;
pub mod executor;
pub mod forward;
pub mod meta;
pub mod prepared;
pub mod proposer;
pub mod response;
pub mod router;
pub mod snapshot;
pub mod testing;
pub mod triggers;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use applier::ReplicaEngine;
pub use executor::{ExecOp, ExecRequest, ExecResponse, Executor, Role};
pub use forward::{router_deferred, ExecutorSlot, HttpLeaderChannel, LeaderChannel};

use crate::cluster::contract::{BoxFuture, NodeId, PeerInfo, ReplicatedLog, StateMachine};
use crate::protocol::backend::EngineTarget;
use crate::protocol::errors::SqlError;
use entry::Origin;

/// How long a `KILL` waits for the leader to interrupt a shadow session.
const KILL_TIMEOUT: Duration = Duration::from_secs(5);

/// What a node hands its replication provider.
#[derive(Debug, Clone)]
pub struct ReplicationEnv {
    /// How to reach this node's engine (as the operator's engine account).
    pub engine: EngineTarget,
    pub data_dir: PathBuf,
    /// `host:port` of this node's MySQL listener (for peers' error messages).
    pub mysql_addr: String,
}

/// What a provider gives back once consensus runs.
pub struct ReplicationParts {
    /// Consensus: proposals, leader, node id.
    pub log: Arc<dyn ReplicatedLog>,
    /// How this node calls the leader's `/replication/*` routes.
    pub channel: Arc<dyn LeaderChannel>,
    /// The slot behind the provider's mounted [`router_deferred`]; the node fills it.
    pub executor_slot: ExecutorSlot,
    /// The state machine consensus drives (also the diverged flag and the applied-index
    /// wait).
    pub engine: Arc<ReplicaEngine>,
}

#[derive(Debug, thiserror::Error)]
#[error("replication: {0}")]
pub struct ReplicationError(pub String);

/// Starts consensus for a node. Implementations: the Raft cluster, [`SingleNodeProvider`].
pub trait ReplicationProvider: Send + 'static {
    fn start(
        self: Box<Self>,
        env: ReplicationEnv,
    ) -> BoxFuture<'static, Result<ReplicationParts, ReplicationError>>;
}

/// A node alone: an in-process log with one member (`REPLICATION=single`).
pub struct SingleNodeProvider {
    pub node_id: NodeId,
}

impl ReplicationProvider for SingleNodeProvider {
    fn start(
        self: Box<Self>,
        env: ReplicationEnv,
    ) -> BoxFuture<'static, Result<ReplicationParts, ReplicationError>> {
        Box::pin(async move {
            let engine = ReplicaEngine::open(env.engine.clone(), self.node_id)
                .await
                .map_err(|e| ReplicationError(e.to_string()))?;
            let cluster = testing::InProcessCluster::without_history();
            cluster
                .join(
                    PeerInfo {
                        id: self.node_id,
                        internal_addr: String::new(),
                        mysql_addr: env.mysql_addr.clone(),
                    },
                    Arc::clone(&engine) as Arc<dyn StateMachine>,
                )
                .await;
            Ok(ReplicationParts {
                log: cluster.handle(self.node_id),
                channel: Arc::new(HttpLeaderChannel),
                executor_slot: ExecutorSlot::new(),
                engine,
            })
        })
    }
}

/// Replication as a node's client sessions use it.
pub struct Replication {
    pub log: Arc<dyn ReplicatedLog>,
    pub channel: Arc<dyn LeaderChannel>,
    pub executor: Arc<Executor>,
    pub engine: Arc<ReplicaEngine>,
    /// High bits of this process's origin session ids (so ids never repeat across restarts).
    pub boot: u64,
    /// Longest a read waits for this node to apply the session's last write.
    pub read_wait: Duration,
    /// Longest a forwarded call to the leader may take.
    pub forward_timeout: Duration,
}

impl Replication {
    /// Builds the runtime from a provider's parts and fills its executor slot.
    pub fn from_parts(parts: ReplicationParts) -> Arc<Self> {
        let executor = Executor::new(Arc::clone(&parts.log), Arc::clone(&parts.engine));
        parts.executor_slot.set(Arc::clone(&executor));
        let mut b = [0u8; 4];
        let _ = getrandom::fill(&mut b);
        Arc::new(Replication {
            log: parts.log,
            channel: parts.channel,
            executor,
            engine: parts.engine,
            boot: u64::from(u32::from_le_bytes(b)) << 32,
            read_wait: Duration::from_secs(5),
            forward_timeout: Duration::from_secs(30),
        })
    }

    /// Proposes a barrier whenever this node becomes leader, and ends idle shadow sessions.
    /// `leading` tells whether a barrier for the current leadership was already proposed.
    pub fn spawn_background(self: &Arc<Self>, leading: bool) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut was_leader = leading;
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            let mut last_sweep = tokio::time::Instant::now();
            loop {
                tick.tick().await;
                let Some(r) = weak.upgrade() else { return };
                let leader = r.is_leader();
                if leader && !was_leader {
                    match r.executor.propose_barrier().await {
                        Ok(index) => tracing::info!(index, "leader barrier committed"),
                        Err(e) => {
                            tracing::warn!(error = %e, "leader barrier not committed; retrying");
                            continue;
                        }
                    }
                }
                if was_leader && !leader {
                    tracing::info!("no longer the leader; ending shadow sessions");
                    r.executor.abort_all().await;
                }
                was_leader = leader;
                if last_sweep.elapsed() > Duration::from_secs(60) {
                    last_sweep = tokio::time::Instant::now();
                    r.executor.sweep_idle(Duration::from_secs(600)).await;
                }
            }
        })
    }

    /// The origin of a client session of this node.
    pub fn origin(&self, session_id: u32) -> Origin {
        Origin {
            node: self.log.node_id(),
            session: self.boot | u64::from(session_id),
        }
    }

    pub fn is_leader(&self) -> bool {
        self.log.leader().map(|p| p.id) == Some(self.log.node_id())
    }

    /// Runs an operation on the leader (this node's executor, or forwarded).
    pub async fn exec(&self, req: ExecRequest) -> Result<ExecResponse, SqlError> {
        let leader = self.log.leader().ok_or_else(|| no_leader(None))?;
        if leader.id == self.log.node_id() {
            return self
                .executor
                .exec(req)
                .await
                .map_err(|executor::ExecError::NotLeader { leader }| no_leader(leader));
        }
        forward::forward_exec(self.channel.as_ref(), &leader, &req, self.forward_timeout)
            .await
            .map_err(|e| {
                SqlError::new(
                    1105,
                    "HY000",
                    format!("cannot reach the leader ({}): {e}", leader.mysql_addr),
                )
            })
    }

    /// Ends a client session's shadow session on the leader.
    pub async fn abort(&self, origin: Origin) {
        let Some(leader) = self.log.leader() else {
            return;
        };
        if leader.id == self.log.node_id() {
            self.executor.abort(origin).await;
        } else {
            forward::forward_abort(self.channel.as_ref(), &leader, origin).await;
        }
    }

    /// `KILL [QUERY]` of a client session of this node, on its shadow session on the leader.
    pub async fn kill(&self, origin: Origin, query_only: bool) -> Result<(), SqlError> {
        let Some(leader) = self.log.leader() else {
            // No leader: no shadow session runs anywhere that this node could reach.
            return Ok(());
        };
        let failed = |e: String| {
            SqlError::new(
                1105,
                "HY000",
                format!(
                    "could not kill the session's statement on the leader ({}): {e}",
                    leader.mysql_addr
                ),
            )
        };
        if leader.id == self.log.node_id() {
            match tokio::time::timeout(KILL_TIMEOUT, self.executor.kill(origin, query_only)).await {
                Ok(r) => r.map_err(|e| failed(e.to_string())),
                Err(_) => Err(failed(format!(
                    "no answer from the engine within {KILL_TIMEOUT:?}"
                ))),
            }
        } else {
            let req = forward::KillRequest { origin, query_only };
            forward::forward_kill(self.channel.as_ref(), &leader, &req, KILL_TIMEOUT)
                .await
                .map_err(|e| failed(e.to_string()))
        }
    }

    /// The refusal clients get when this node diverged.
    pub fn diverged_error(&self) -> Option<SqlError> {
        self.engine.diverged().map(|reason| {
            SqlError::new(
                1105,
                "HY000",
                format!("this shared-db node diverged from the cluster and does not serve clients: {reason}"),
            )
        })
    }

    /// `/status` view.
    pub fn status_json(&self) -> serde_json::Value {
        let mut v = self.engine.status_json();
        if let Some(o) = v.as_object_mut() {
            o.insert("node_id".into(), self.log.node_id().into());
            o.insert(
                "role".into(),
                (if self.is_leader() {
                    "leader"
                } else {
                    "follower"
                })
                .into(),
            );
            o.insert(
                "leader".into(),
                serde_json::to_value(self.log.leader()).unwrap_or_default(),
            );
        }
        v
    }
}

fn no_leader(leader: Option<PeerInfo>) -> SqlError {
    let msg = match leader {
        Some(l) => format!(
            "this node is not the leader; the leader is {}",
            l.mysql_addr
        ),
        None => "no leader is elected; try again".to_string(),
    };
    SqlError::new(1105, "HY000", msg)
}
