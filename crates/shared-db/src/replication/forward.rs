//! Forwarding a follower's client sessions to the leader over the internal API.
//!
//! The leader serves [`router_deferred`]: `POST /replication/exec` runs an [`ExecRequest`] on
//! the leader's [`Executor`] and answers with the packets for the client; `POST
//! /replication/abort` ends a session's shadow session; `POST /replication/kill` interrupts its
//! statement (`KILL QUERY`) or closes its engine connection (`KILL`). The cluster mounts this router behind
//! its node-to-node authentication. Followers reach it through a [`LeaderChannel`], which the
//! cluster backs with its authenticated peer client ([`HttpLeaderChannel`] is the plain HTTP
//! one used in tests).

use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde::{Deserialize, Serialize};

use super::entry::Origin;
use super::executor::{ExecError, ExecRequest, ExecResponse, Executor};
use crate::cluster::contract::{BoxFuture, PeerInfo};

/// Path of the exec endpoint.
pub const EXEC_PATH: &str = "/replication/exec";
/// Path of the abort endpoint.
pub const ABORT_PATH: &str = "/replication/abort";
/// Path of the kill endpoint.
pub const KILL_PATH: &str = "/replication/kill";

/// Where the node puts its executor once it exists (the router can be mounted earlier).
#[derive(Clone, Default)]
pub struct ExecutorSlot(Arc<RwLock<Option<Arc<Executor>>>>);

impl ExecutorSlot {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn set(&self, e: Arc<Executor>) {
        if let Ok(mut s) = self.0.write() {
            *s = Some(e);
        }
    }
    pub fn get(&self) -> Option<Arc<Executor>> {
        self.0.read().ok().and_then(|s| s.clone())
    }
}

/// Body of `POST /replication/abort`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AbortRequest {
    pub origin: Origin,
}

/// Body of `POST /replication/kill`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KillRequest {
    pub origin: Origin,
    pub query_only: bool,
}

/// Body of a 409 answer: this node is not the leader.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NotLeaderBody {
    pub leader: Option<PeerInfo>,
}

/// The leader-side routes (mount behind the cluster's authentication).
pub fn router_deferred(slot: ExecutorSlot) -> Router {
    Router::new()
        .route(EXEC_PATH, post(exec))
        .route(ABORT_PATH, post(abort))
        .route(KILL_PATH, post(kill))
        .with_state(slot)
}

/// The executor and the decoded request body, or the answer when either is missing.
fn executor_and<T: serde::de::DeserializeOwned>(
    slot: &ExecutorSlot,
    body: &[u8],
) -> Result<(Arc<Executor>, T), Box<Response>> {
    let Some(ex) = slot.get() else {
        return Err(Box::new(
            (StatusCode::SERVICE_UNAVAILABLE, "replication is starting").into_response(),
        ));
    };
    serde_json::from_slice(body)
        .map(|req| (ex, req))
        .map_err(|e| Box::new((StatusCode::BAD_REQUEST, e.to_string()).into_response()))
}

async fn exec(State(slot): State<ExecutorSlot>, body: Bytes) -> Response {
    let (ex, req) = match executor_and::<ExecRequest>(&slot, &body) {
        Ok(v) => v,
        Err(answer) => return *answer,
    };
    match ex.exec(req).await {
        Ok(resp) => json(StatusCode::OK, &resp),
        Err(ExecError::NotLeader { leader }) => {
            json(StatusCode::CONFLICT, &NotLeaderBody { leader })
        }
    }
}

async fn abort(State(slot): State<ExecutorSlot>, body: Bytes) -> Response {
    match executor_and::<AbortRequest>(&slot, &body) {
        Ok((ex, r)) => {
            ex.abort(r.origin).await;
            StatusCode::NO_CONTENT.into_response()
        }
        Err(answer) => *answer,
    }
}

async fn kill(State(slot): State<ExecutorSlot>, body: Bytes) -> Response {
    let (ex, r) = match executor_and::<KillRequest>(&slot, &body) {
        Ok(v) => v,
        Err(answer) => return *answer,
    };
    match ex.kill(r.origin, r.query_only).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    }
}

fn json<T: Serialize>(code: StatusCode, v: &T) -> Response {
    match serde_json::to_vec(v) {
        Ok(b) => (code, [("content-type", "application/json")], b).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// Why a forwarded call failed.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("no leader is known")]
    NoLeader,
    #[error("{0} is not the leader")]
    NotLeader(String),
    #[error("the leader did not answer within {0:?}")]
    Timeout(Duration),
    #[error("cannot reach the leader: {0}")]
    Transport(String),
    #[error("the leader answered {status}: {body}")]
    Status { status: u16, body: String },
}

/// A request/response call to a peer's internal API (POST with a JSON body). The cluster
/// implements it with its authenticated client; tests use [`HttpLeaderChannel`].
pub trait LeaderChannel: Send + Sync + 'static {
    /// POSTs `body` to `path` on `peer`; returns the HTTP status and body.
    fn post(
        &self,
        peer: &PeerInfo,
        path: &'static str,
        body: Vec<u8>,
        timeout: Duration,
    ) -> BoxFuture<'_, Result<(u16, Vec<u8>), ForwardError>>;
}

/// Sends an exec request to `leader` and decodes the answer.
pub async fn forward_exec(
    ch: &dyn LeaderChannel,
    leader: &PeerInfo,
    req: &ExecRequest,
    timeout: Duration,
) -> Result<ExecResponse, ForwardError> {
    let body = serde_json::to_vec(req).map_err(|e| ForwardError::Transport(e.to_string()))?;
    let (status, body) = ch.post(leader, EXEC_PATH, body, timeout).await?;
    match status {
        200 => serde_json::from_slice(&body).map_err(|e| ForwardError::Transport(e.to_string())),
        409 => Err(ForwardError::NotLeader(leader.internal_addr.clone())),
        s => Err(ForwardError::Status {
            status: s,
            body: String::from_utf8_lossy(&body).chars().take(200).collect(),
        }),
    }
}

/// Ends a session's shadow session on `leader` (best effort).
pub async fn forward_abort(ch: &dyn LeaderChannel, leader: &PeerInfo, origin: Origin) {
    if let Ok(body) = serde_json::to_vec(&AbortRequest { origin }) {
        let _ = ch
            .post(leader, ABORT_PATH, body, Duration::from_secs(5))
            .await;
    }
}

/// Kills a session's shadow statement or connection on `leader`.
pub async fn forward_kill(
    ch: &dyn LeaderChannel,
    leader: &PeerInfo,
    req: &KillRequest,
    timeout: Duration,
) -> Result<(), ForwardError> {
    let body = serde_json::to_vec(req).map_err(|e| ForwardError::Transport(e.to_string()))?;
    match ch.post(leader, KILL_PATH, body, timeout).await? {
        (204, _) => Ok(()),
        (status, body) => Err(ForwardError::Status {
            status,
            body: String::from_utf8_lossy(&body).chars().take(200).collect(),
        }),
    }
}

/// Plain HTTP/1.1 to the peer's `internal_addr` (no authentication: tests only).
#[derive(Default)]
pub struct HttpLeaderChannel;

impl LeaderChannel for HttpLeaderChannel {
    fn post(
        &self,
        peer: &PeerInfo,
        path: &'static str,
        body: Vec<u8>,
        timeout: Duration,
    ) -> BoxFuture<'_, Result<(u16, Vec<u8>), ForwardError>> {
        let addr = peer.internal_addr.clone();
        Box::pin(async move {
            tokio::time::timeout(timeout, http_post(&addr, path, body))
                .await
                .map_err(|_| ForwardError::Timeout(timeout))?
        })
    }
}

async fn http_post(addr: &str, path: &str, body: Vec<u8>) -> Result<(u16, Vec<u8>), ForwardError> {
    use http_body_util::{BodyExt, Full};
    let t = |e: &dyn std::fmt::Display| ForwardError::Transport(e.to_string());
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| t(&e))?;
    let _ = tcp.set_nodelay(true);
    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
        .await
        .map_err(|e| t(&e))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = hyper::Request::post(path)
        .header("host", addr)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| t(&e))?;
    let resp = send.send_request(req).await.map_err(|e| t(&e))?;
    let status = resp.status().as_u16();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| t(&e))?
        .to_bytes();
    Ok((status, bytes.to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replication::executor::ExecOp;

    #[tokio::test]
    async fn routes_answer_before_the_executor_exists_and_refuse_garbage() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let slot = ExecutorSlot::new();
        let app = router_deferred(slot.clone());
        let server = tokio::spawn(async move { axum::serve(listener, app).await });
        let peer = PeerInfo {
            id: 1,
            internal_addr: addr.to_string(),
            mysql_addr: "127.0.0.1:3307".into(),
        };
        let req = ExecRequest {
            origin: Origin {
                node: 2,
                session: 9,
            },
            user: "u@h".into(),
            caps: 0,
            collation: 45,
            history: Vec::new(),
            in_txn: false,
            begin: false,
            op: ExecOp::Begin,
        };
        let ch = HttpLeaderChannel;
        let t = Duration::from_secs(5);
        match forward_exec(&ch, &peer, &req, t).await {
            Err(ForwardError::Status { status: 503, .. }) => {}
            other => panic!("expected 503, got {other:?}"),
        }
        let (status, _) = ch.post(&peer, EXEC_PATH, b"{".to_vec(), t).await.unwrap();
        // Still starting: the slot is checked first.
        assert_eq!(status, 503);
        let unreachable = PeerInfo {
            internal_addr: "127.0.0.1:1".into(),
            ..peer.clone()
        };
        assert!(matches!(
            forward_exec(&ch, &unreachable, &req, t).await,
            Err(ForwardError::Transport(_))
        ));
        server.abort();
    }
}
