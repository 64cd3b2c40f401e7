//! openraft's network over the internal HTTP API: append-entries and vote as postcard-encoded
//! bodies, snapshots with the chunked, checksummed, resumable transfer of [`super::snapshot`].

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::Method;
use openraft::error::{
    Fatal, NetworkError, RPCError, RaftError, RemoteError, ReplicationClosed, StreamingError,
    Timeout, Unreachable,
};
use openraft::network::{RPCOption, RPCTypes, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};

use super::client::{PeerClient, PeerError};
use super::contract::NodeId;
use super::early::EarlyReplication;
use super::election::ElectionSignals;
use super::flow::{FollowerApplied, APPLIED_HEADER};
use super::snapshot::{self, BeginRequest, BeginResponse, FinishRequest, StoredSnapshot};
use super::types::{Member, Snapshot, TypeConfig, Vote};

pub const PATH_APPEND: &str = "/raft/append";
pub const PATH_VOTE: &str = "/raft/vote";
pub const PATH_SNAP_BEGIN: &str = "/raft/snapshot/begin";
pub const PATH_SNAP_CHUNK: &str = "/raft/snapshot/chunk";
pub const PATH_SNAP_FINISH: &str = "/raft/snapshot/finish";

/// Time a receiver gets to install a complete snapshot into its engine.
const INSTALL_TIMEOUT: Duration = Duration::from_secs(600);

/// Creates one [`Network`] per target.
pub struct NetworkFactory {
    pub client: PeerClient,
    pub id: NodeId,
    /// Told when a vote was refused by a voter with a longer log.
    pub signals: Arc<ElectionSignals>,
    /// Told each follower's applied index, as its append answers report it.
    pub followers: Arc<FollowerApplied>,
    /// Sends new entries ahead of openraft and answers for them.
    pub early: Arc<EarlyReplication>,
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = Network;

    async fn new_client(&mut self, target: NodeId, node: &Member) -> Network {
        self.early.register(target, &node.internal_addr);
        Network {
            client: self.client.clone(),
            id: self.id,
            target,
            addr: node.internal_addr.clone(),
            signals: Arc::clone(&self.signals),
            followers: Arc::clone(&self.followers),
            early: Arc::clone(&self.early),
        }
    }
}

/// The connection to one peer.
pub struct Network {
    client: PeerClient,
    id: NodeId,
    target: NodeId,
    addr: String,
    signals: Arc<ElectionSignals>,
    followers: Arc<FollowerApplied>,
    early: Arc<EarlyReplication>,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Msg(String);

impl Network {
    async fn rpc<Req, Resp>(
        &self,
        action: RPCTypes,
        path: &str,
        req: &Req,
        timeout: Duration,
    ) -> Result<Resp, RPCError<NodeId, Member, RaftError<NodeId>>>
    where
        Req: serde::Serialize,
        Resp: serde::de::DeserializeOwned,
    {
        let body =
            postcard::to_allocvec(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let bytes = self
            .client
            .call(&self.addr, Method::POST, path, body, timeout)
            .await
            .map_err(|e| self.peer_error(action, timeout, e))?;
        let res: Result<Resp, RaftError<NodeId>> =
            postcard::from_bytes(&bytes).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        res.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }

    fn peer_error<E: std::error::Error>(
        &self,
        action: RPCTypes,
        timeout: Duration,
        e: PeerError,
    ) -> RPCError<NodeId, Member, E> {
        match e {
            PeerError::Timeout { .. } => RPCError::Timeout(Timeout {
                action,
                id: self.id,
                target: self.target,
                timeout,
            }),
            other => RPCError::Unreachable(Unreachable::new(&Msg(other.to_string()))),
        }
    }

    async fn send_snapshot(
        &self,
        vote: Vote,
        snapshot: Snapshot,
        timeout: Duration,
    ) -> Result<SnapshotResponse<NodeId>, StreamingError<TypeConfig, Fatal<NodeId>>> {
        let unreachable = |m: String| StreamingError::Unreachable(Unreachable::new(&Msg(m)));
        let data = snapshot.snapshot.path.clone();
        let files = {
            let d = data.clone();
            tokio::task::spawn_blocking(move || snapshot::manifest(&d))
                .await
                .map_err(|e| unreachable(e.to_string()))?
                .map_err(|e| unreachable(e.to_string()))?
        };
        let id = snapshot.meta.snapshot_id.clone();
        let begin = BeginRequest {
            vote,
            snapshot: StoredSnapshot {
                raft: snapshot.meta.clone(),
                sm: snapshot.snapshot.meta.clone(),
            },
            files: files.clone(),
        };
        let body = postcard::to_allocvec(&begin).map_err(|e| unreachable(e.to_string()))?;
        let resp = self
            .client
            .call(&self.addr, Method::POST, PATH_SNAP_BEGIN, body, timeout)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let have: BeginResponse =
            postcard::from_bytes(&resp).map_err(|e| unreachable(e.to_string()))?;
        let total: u64 = files.iter().map(|f| f.size).sum();
        let resumed: u64 = have.have.values().sum();
        tracing::info!(target_node = self.target, snapshot = %id, bytes = total, resumed, "sending snapshot");
        for f in &files {
            let mut offset = have.have.get(&f.path).copied().unwrap_or(0);
            let path =
                snapshot::contained(&data, &f.path).map_err(|e| unreachable(e.to_string()))?;
            while offset < f.size {
                let p = path.clone();
                let chunk = tokio::task::spawn_blocking(move || snapshot::read_chunk(&p, offset))
                    .await
                    .map_err(|e| unreachable(e.to_string()))?
                    .map_err(|e| unreachable(e.to_string()))?;
                if chunk.is_empty() {
                    return Err(unreachable(format!("{} shrank while sending", f.path)));
                }
                let q = format!(
                    "{PATH_SNAP_CHUNK}?id={id}&offset={offset}&path={}",
                    encode_query(&f.path)
                );
                let n = chunk.len() as u64;
                self.client
                    .call(&self.addr, Method::POST, &q, chunk, timeout)
                    .await
                    .map_err(|e| unreachable(e.to_string()))?;
                offset += n;
            }
        }
        let fin = FinishRequest {
            vote,
            snapshot_id: id,
        };
        let body = postcard::to_allocvec(&fin).map_err(|e| unreachable(e.to_string()))?;
        let resp = self
            .client
            .call(
                &self.addr,
                Method::POST,
                PATH_SNAP_FINISH,
                body,
                INSTALL_TIMEOUT,
            )
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let res: Result<SnapshotResponse<NodeId>, Fatal<NodeId>> =
            postcard::from_bytes(&resp).map_err(|e| unreachable(e.to_string()))?;
        res.map_err(|e| StreamingError::RemoteError(RemoteError::new(self.target, e)))
    }
}

/// Percent-encodes a snapshot file path for a query string.
pub fn encode_query(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Network {
    async fn post_append(
        &self,
        rpc: &AppendEntriesRequest<TypeConfig>,
        timeout: Duration,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, Member, RaftError<NodeId>>> {
        let body =
            postcard::to_allocvec(&rpc).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let (bytes, applied) = self
            .client
            .call_with_header(
                &self.addr,
                Method::POST,
                PATH_APPEND,
                body,
                timeout,
                APPLIED_HEADER,
            )
            .await
            .map_err(|e| self.peer_error(RPCTypes::AppendEntries, timeout, e))?;
        if let Some(n) = applied.and_then(|v| v.parse().ok()) {
            self.followers.note(self.target, n);
        }
        let res: Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>> =
            postcard::from_bytes(&bytes).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        res.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for Network {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, Member, RaftError<NodeId>>> {
        let timeout = option.hard_ttl();
        self.early.note_commit(rpc.leader_commit);
        if let Some(answer) = self.early.covered(self.target, &rpc, timeout / 2).await {
            return Ok(answer);
        }
        let sent = std::time::Instant::now();
        let res = self.post_append(&rpc, timeout).await;
        let success = matches!(res, Ok(AppendEntriesResponse::Success));
        self.early.answered(self.target, &rpc, sent, success);
        res
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, Member, RaftError<NodeId>>> {
        let mine = rpc.last_log_id;
        let resp: VoteResponse<NodeId> = self
            .rpc(RPCTypes::Vote, PATH_VOTE, &rpc, option.hard_ttl())
            .await?;
        if !resp.vote_granted && resp.last_log_id > mine {
            self.signals.note_greater_log();
        }
        Ok(resp)
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<NodeId>, StreamingError<TypeConfig, Fatal<NodeId>>> {
        let timeout = option.hard_ttl().max(Duration::from_secs(10));
        tokio::select! {
            closed = cancel => Err(StreamingError::Closed(closed)),
            r = self.send_snapshot(vote, snapshot, timeout) => r,
        }
    }
}
