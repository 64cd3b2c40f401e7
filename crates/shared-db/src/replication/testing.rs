//! An in-process replicated log for tests and for a node running alone (`REPLICATION=single`):
//! every member's state machine receives each entry in order before `propose` returns. It has
//! no persistence of its own: a restarted single node continues from the index its engine
//! recorded.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::cluster::contract::{
    BoxFuture, LogPosition, NodeId, PeerInfo, ProposeError, ReplicatedLog, StateMachine,
};

struct Member {
    peer: PeerInfo,
    sm: Arc<dyn StateMachine>,
    /// Paused members get no entries until [`InProcessCluster::resume`] (a node that is down).
    paused: bool,
}

/// The shared log of an in-process cluster.
pub struct InProcessCluster {
    log: tokio::sync::Mutex<Vec<(LogPosition, Vec<u8>)>>,
    members: Mutex<Vec<Member>>,
    leader: AtomicU64,
    term: AtomicU64,
    first_index: AtomicU64,
    /// Keep every entry (for [`InProcessCluster::resume`]); a node alone keeps only the last.
    keep_history: bool,
}

impl InProcessCluster {
    /// A cluster that keeps its whole log in memory (tests).
    pub fn new() -> Arc<Self> {
        Self::build(true)
    }

    /// A log that keeps only its last entry (a node running alone).
    pub fn without_history() -> Arc<Self> {
        Self::build(false)
    }

    fn build(keep_history: bool) -> Arc<Self> {
        Arc::new(InProcessCluster {
            log: tokio::sync::Mutex::new(Vec::new()),
            members: Mutex::new(Vec::new()),
            leader: AtomicU64::new(0),
            term: AtomicU64::new(1),
            first_index: AtomicU64::new(0),
            keep_history,
        })
    }

    /// Adds a member; the log continues after the highest index any member recorded.
    pub async fn join(&self, peer: PeerInfo, sm: Arc<dyn StateMachine>) {
        if let Ok(Some(last)) = sm.last_applied().await {
            self.first_index.fetch_max(last.index, Ordering::AcqRel);
            self.term.fetch_max(last.term, Ordering::AcqRel);
        }
        if self.leader.load(Ordering::Acquire) == 0 {
            self.leader.store(peer.id, Ordering::Release);
        }
        if let Ok(mut m) = self.members.lock() {
            m.push(Member {
                peer,
                sm,
                paused: false,
            });
        }
    }

    /// The [`ReplicatedLog`] as member `id` sees it.
    pub fn handle(self: &Arc<Self>, id: NodeId) -> Arc<dyn ReplicatedLog> {
        Arc::new(MemberLog {
            cluster: Arc::clone(self),
            id,
        })
    }

    /// Makes `id` the leader in a new term.
    pub fn set_leader(&self, id: NodeId) {
        self.leader.store(id, Ordering::Release);
        self.term.fetch_add(1, Ordering::AcqRel);
    }

    /// Stops delivering entries to `id`.
    pub fn pause(&self, id: NodeId) {
        self.set_paused(id, true);
    }

    fn set_paused(&self, id: NodeId, paused: bool) {
        if let Ok(mut m) = self.members.lock() {
            for member in m.iter_mut().filter(|m| m.peer.id == id) {
                member.paused = paused;
            }
        }
    }

    /// Delivers the entries `id` missed, then resumes normal delivery.
    pub async fn resume(&self, id: NodeId) -> Result<(), String> {
        let log = self.log.lock().await;
        let sm = self.member(id).ok_or("no such member")?;
        let last = sm.last_applied().await.map_err(|e| e.to_string())?;
        let from = last.map(|p| p.index).unwrap_or(0);
        for (pos, payload) in log.iter().filter(|(p, _)| p.index > from) {
            sm.apply(*pos, payload.clone())
                .await
                .map_err(|e| e.to_string())?;
        }
        self.set_paused(id, false);
        Ok(())
    }

    fn member(&self, id: NodeId) -> Option<Arc<dyn StateMachine>> {
        let m = self.members.lock().ok()?;
        m.iter()
            .find(|m| m.peer.id == id)
            .map(|m| Arc::clone(&m.sm))
    }

    /// Every entry so far.
    pub async fn entries(&self) -> Vec<(LogPosition, Vec<u8>)> {
        self.log.lock().await.clone()
    }

    fn peer(&self, id: NodeId) -> Option<PeerInfo> {
        let m = self.members.lock().ok()?;
        m.iter().find(|m| m.peer.id == id).map(|m| m.peer.clone())
    }
}

struct MemberLog {
    cluster: Arc<InProcessCluster>,
    id: NodeId,
}

impl ReplicatedLog for MemberLog {
    fn propose(
        &self,
        payload: Vec<u8>,
        timeout: Duration,
    ) -> BoxFuture<'_, Result<(LogPosition, Vec<u8>), ProposeError>> {
        Box::pin(async move {
            let c = &self.cluster;
            if c.leader.load(Ordering::Acquire) != self.id {
                return Err(ProposeError::NotLeader {
                    leader: self.leader(),
                });
            }
            let mut log = tokio::time::timeout(timeout, c.log.lock())
                .await
                .map_err(|_| ProposeError::Unknown(timeout))?;
            let index = log
                .last()
                .map(|(p, _)| p.index)
                .unwrap_or(0)
                .max(c.first_index.load(Ordering::Acquire))
                + 1;
            let pos = LogPosition {
                term: c.term.load(Ordering::Acquire),
                index,
            };
            if !c.keep_history {
                log.clear();
            }
            log.push((pos, payload.clone()));
            let members: Vec<(NodeId, Arc<dyn StateMachine>)> = match c.members.lock() {
                Ok(m) => m
                    .iter()
                    .filter(|m| !m.paused)
                    .map(|m| (m.peer.id, Arc::clone(&m.sm)))
                    .collect(),
                Err(_) => return Err(ProposeError::ShuttingDown),
            };
            let mut own = Vec::new();
            for (id, sm) in members {
                match sm.apply(pos, payload.clone()).await {
                    Ok(r) if id == self.id => own = r,
                    Ok(_) => {}
                    Err(e) if id == self.id => return Err(ProposeError::Apply(e.to_string())),
                    Err(e) => {
                        tracing::warn!(node = id, error = %e, "in-process member failed to apply")
                    }
                }
            }
            Ok((pos, own))
        })
    }

    fn ensure_leader(&self, _timeout: Duration) -> BoxFuture<'_, Result<(), ProposeError>> {
        Box::pin(async move {
            if self.cluster.leader.load(Ordering::Acquire) == self.id {
                Ok(())
            } else {
                Err(ProposeError::NotLeader {
                    leader: self.leader(),
                })
            }
        })
    }

    fn leader(&self) -> Option<PeerInfo> {
        self.cluster
            .peer(self.cluster.leader.load(Ordering::Acquire))
    }

    fn node_id(&self) -> NodeId {
        self.id
    }
}

/// A [`ReplicationProvider`](super::ReplicationProvider) that joins an [`InProcessCluster`]
/// and serves the forwarding routes on its own loopback HTTP listener (plain HTTP: tests only).
pub struct InProcessProvider {
    pub cluster: Arc<InProcessCluster>,
    pub node_id: NodeId,
}

impl super::ReplicationProvider for InProcessProvider {
    fn start(
        self: Box<Self>,
        env: super::ReplicationEnv,
    ) -> BoxFuture<'static, Result<super::ReplicationParts, super::ReplicationError>> {
        Box::pin(async move {
            let fail = |e: &dyn std::fmt::Display| super::ReplicationError(e.to_string());
            let engine = super::ReplicaEngine::open(env.engine.clone(), self.node_id)
                .await
                .map_err(|e| fail(&e))?;
            let slot = super::ExecutorSlot::new();
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .map_err(|e| fail(&e))?;
            let addr = listener.local_addr().map_err(|e| fail(&e))?;
            let app = super::router_deferred(slot.clone());
            tokio::spawn(async move {
                let _ = axum::serve(listener, app).await;
            });
            self.cluster
                .join(
                    PeerInfo {
                        id: self.node_id,
                        internal_addr: addr.to_string(),
                        mysql_addr: env.mysql_addr.clone(),
                    },
                    Arc::clone(&engine) as Arc<dyn StateMachine>,
                )
                .await;
            Ok(super::ReplicationParts {
                log: self.cluster.handle(self.node_id),
                channel: Arc::new(super::HttpLeaderChannel),
                executor_slot: slot,
                engine,
            })
        })
    }
}
