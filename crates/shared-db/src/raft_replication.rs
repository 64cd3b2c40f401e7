//! Replication backed by the Raft cluster: this node's [`ReplicaEngine`] is the state machine
//! openraft drives, the [`Cluster`] is the replicated log, and statements a follower forwards
//! to the leader travel over the cluster's signed peer client to the leader's
//! `/replication/*` routes, which the internal API serves behind the cluster-secret check.

use std::sync::Arc;
use std::time::Duration;

use hyper::Method;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::cluster::client::{PeerClient, PeerError};
use crate::cluster::contract::{BoxFuture, PeerInfo, StateMachine};
use crate::cluster::{Cluster, ClusterError, ClusterSettings};
use crate::replication::forward::ForwardError;
use crate::replication::{
    router_deferred, ExecutorSlot, LeaderChannel, ReplicaEngine, ReplicationEnv, ReplicationError,
    ReplicationParts,
};

/// A follower's way to the leader: signed requests to its internal API.
pub struct ClusterChannel(PeerClient);

impl LeaderChannel for ClusterChannel {
    fn post(
        &self,
        peer: &PeerInfo,
        path: &'static str,
        body: Vec<u8>,
        timeout: Duration,
    ) -> BoxFuture<'_, Result<(u16, Vec<u8>), ForwardError>> {
        let addr = peer.internal_addr.clone();
        Box::pin(async move {
            match self
                .0
                .call_raw(&addr, Method::POST, path, body, timeout)
                .await
            {
                Ok((status, bytes)) => Ok((status.as_u16(), bytes.to_vec())),
                Err(PeerError::Timeout { timeout, .. }) => Err(ForwardError::Timeout(timeout)),
                Err(e) => Err(ForwardError::Transport(e.to_string())),
            }
        })
    }
}

/// Replication running on Raft, as a node holds it.
pub struct RaftReplication {
    pub parts: ReplicationParts,
    pub cluster: Arc<Cluster>,
    /// The internal API server (only when a cluster secret is configured).
    pub api_task: Option<JoinHandle<()>>,
}

#[derive(Debug, thiserror::Error)]
pub enum RaftReplicationError {
    #[error(transparent)]
    Replication(#[from] ReplicationError),
    #[error(transparent)]
    Cluster(#[from] ClusterError),
}

/// Opens the engine side, starts Raft driving it and serves the internal API on `api`.
pub async fn start(
    settings: ClusterSettings,
    env: ReplicationEnv,
    api: Option<TcpListener>,
) -> Result<RaftReplication, RaftReplicationError> {
    let engine = ReplicaEngine::open(env.engine.clone(), settings.node_id)
        .await
        .map_err(|e| ReplicationError(e.to_string()))?;
    let cluster = Cluster::start(settings, Arc::clone(&engine) as Arc<dyn StateMachine>).await?;
    let slot = ExecutorSlot::new();
    let api_task = api.map(|listener| {
        let c = Arc::clone(&cluster);
        let routes = router_deferred(slot.clone());
        tokio::spawn(async move {
            if let Err(e) = c.serve(listener, routes).await {
                tracing::error!(error = %e, "internal API server stopped");
            }
        })
    });
    let parts = ReplicationParts {
        log: Arc::clone(&cluster) as Arc<dyn crate::cluster::contract::ReplicatedLog>,
        channel: Arc::new(ClusterChannel(cluster.peer_client())),
        executor_slot: slot,
        engine,
    };
    Ok(RaftReplication {
        parts,
        cluster,
        api_task,
    })
}
