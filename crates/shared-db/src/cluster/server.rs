//! The internal API (API_PORT, 7071): raft RPCs, snapshot transfer, membership and info, plus
//! routes other modules mount. Every request must carry a valid cluster-secret signature;
//! others get 401 and are logged (rate-limited; the secret is never logged).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, DefaultBodyLimit, Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use openraft::error::Fatal;
use openraft::error::RaftError;
use openraft::raft::{AppendEntriesRequest, SnapshotResponse, VoteRequest, VoteResponse};
use serde::Deserialize;

use super::auth::{Presented, Verifier, H_BODY, H_NONCE, H_SIGNATURE, H_TIMESTAMP};
use super::contract::NodeId;
use super::handle::{AddNode, Cluster, RemoveNode};
use super::network::{PATH_APPEND, PATH_SNAP_BEGIN, PATH_SNAP_CHUNK, PATH_SNAP_FINISH, PATH_VOTE};
use super::prevote::{PreVoteRequest, PATH_PREVOTE};
use super::snapshot::{self, BeginRequest, BeginResponse, FinishRequest};
use super::types::{Snapshot, SnapshotDir, TypeConfig};

/// Largest request body (raft batches carry whole transactions).
const BODY_LIMIT: usize = 1 << 30;

pub fn router(cluster: Arc<Cluster>, extra: Router) -> Router {
    let own = Router::new()
        .route(PATH_APPEND, post(append))
        .route(PATH_VOTE, post(vote))
        .route(PATH_PREVOTE, post(prevote))
        .route(PATH_SNAP_BEGIN, post(snap_begin))
        .route(PATH_SNAP_CHUNK, post(snap_chunk))
        .route(PATH_SNAP_FINISH, post(snap_finish))
        .route("/cluster/info", get(info))
        .route("/cluster/status", get(status))
        .route("/cluster/add-node", post(add_node))
        .route("/cluster/remove-node", post(remove_node))
        .with_state(Arc::clone(&cluster));
    let gate = Arc::new(Gate {
        cluster,
        last_log: Mutex::new(HashMap::new()),
    });
    own.merge(extra)
        .layer(axum::middleware::from_fn_with_state(gate, authenticate))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
}

struct Gate {
    cluster: Arc<Cluster>,
    /// Per source address: when a refusal was last logged, and refusals since.
    last_log: Mutex<HashMap<IpAddr, (Option<Instant>, u64)>>,
}

fn header<'a>(req: &'a axum::http::request::Parts, name: &str) -> Option<&'a str> {
    req.headers.get(name).and_then(|v| v.to_str().ok())
}

async fn authenticate(State(gate): State<Arc<Gate>>, req: Request, next: Next) -> Response {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let (parts, body) = req.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map_or(parts.uri.path(), |p| p.as_str())
        .to_string();
    let presented = Presented {
        timestamp: header(&parts, H_TIMESTAMP),
        nonce: header(&parts, H_NONCE),
        signature: header(&parts, H_SIGNATURE),
        body_sha256: header(&parts, H_BODY),
    };
    // The headers are checked before any body is read: an unauthenticated sender cannot make
    // this node buffer anything.
    let mut verdict = match &gate.cluster.verifier {
        None => Err("no CLUSTER_SECRET is configured on this node".to_string()),
        Some(v) => v
            .verify_headers(parts.method.as_str(), &path, presented)
            .map_err(|e| e.to_string()),
    };
    let mut bytes = Bytes::new();
    if verdict.is_ok() {
        match axum::body::to_bytes(body, BODY_LIMIT).await {
            Ok(b) => bytes = b,
            Err(_) => return (StatusCode::PAYLOAD_TOO_LARGE, "body too large").into_response(),
        }
        verdict = Verifier::check_body(presented.body_sha256.unwrap_or_default(), &bytes)
            .map_err(|e| e.to_string());
    }
    if let Err(reason) = verdict {
        gate.cluster.auth_refused.fetch_add(1, Ordering::Relaxed);
        let ip = peer.unwrap_or(IpAddr::from([0, 0, 0, 0]));
        let mut log = gate.last_log.lock().unwrap_or_else(|p| p.into_inner());
        if log.len() > 1024 {
            log.clear();
        }
        let e = log.entry(ip).or_insert((None, 0));
        e.1 += 1;
        if e.0
            .is_none_or(|t: Instant| t.elapsed() >= Duration::from_secs(5))
        {
            tracing::warn!(peer = %ip, path = %parts.uri.path(), %reason, refused = e.1, "internal API request refused: not authenticated");
            *e = (Some(Instant::now()), 0);
        }
        return (StatusCode::UNAUTHORIZED, "cluster authentication failed\n").into_response();
    }
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

fn postcard_response<T: serde::Serialize>(v: &T) -> Response {
    match postcard::to_allocvec(v) {
        Ok(b) => (StatusCode::OK, b).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

fn bad_request(m: impl ToString) -> Response {
    (StatusCode::BAD_REQUEST, m.to_string()).into_response()
}

async fn append(State(c): State<Arc<Cluster>>, body: Bytes) -> Response {
    let req: AppendEntriesRequest<TypeConfig> = match postcard::from_bytes(&body) {
        Ok(r) => r,
        Err(e) => return bad_request(e),
    };
    let resp = c.raft.append_entries(req).await;
    if matches!(&resp, Ok(r) if r.is_success()) {
        c.note_leader_contact();
    }
    let mut answer = postcard_response(&resp);
    if let Ok(v) = axum::http::HeaderValue::from_str(&c.applied_index().to_string()) {
        answer.headers_mut().insert(super::flow::APPLIED_HEADER, v);
    }
    answer
}

async fn vote(State(c): State<Arc<Cluster>>, body: Bytes) -> Response {
    let req: VoteRequest<NodeId> = match postcard::from_bytes(&body) {
        Ok(r) => r,
        Err(e) => return bad_request(e),
    };
    if let Some(refusal) = c.refuse_vote_while_leading(&req).await {
        let resp: Result<VoteResponse<NodeId>, RaftError<NodeId>> = Ok(refusal);
        return postcard_response(&resp);
    }
    postcard_response(&c.raft.vote(req).await)
}

async fn prevote(State(c): State<Arc<Cluster>>, body: Bytes) -> Response {
    let req: PreVoteRequest = match postcard::from_bytes(&body) {
        Ok(r) => r,
        Err(e) => return bad_request(e),
    };
    let quiet = super::prevote::quiet_period(c.settings().heartbeat);
    postcard_response(&super::prevote::answer(&c, &req, quiet).await)
}

fn incoming(c: &Cluster) -> PathBuf {
    c.settings().raft_dir.join("incoming")
}

fn transfer_file(c: &Cluster, id: &str) -> PathBuf {
    incoming(c).join(id).join("transfer.json")
}

async fn snap_begin(State(c): State<Arc<Cluster>>, body: Bytes) -> Response {
    let req: BeginRequest = match postcard::from_bytes(&body) {
        Ok(r) => r,
        Err(e) => return bad_request(e),
    };
    let id = req.snapshot.raft.snapshot_id.clone();
    if !snapshot::valid_id(&id) {
        return bad_request("bad snapshot id");
    }
    let mut guard = c.receiving.lock().await;
    *guard = c.note_snapshot_contact(&req.vote).then_some(req.vote);
    let root = incoming(&c);
    // Only one transfer is kept: a different snapshot replaces an interrupted one.
    if let Ok(rd) = std::fs::read_dir(&root) {
        for e in rd.flatten() {
            if e.file_name().to_string_lossy() != id {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    let data = root.join(&id).join("data");
    if let Err(e) = std::fs::create_dir_all(&data) {
        return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response();
    }
    for f in &req.files {
        if snapshot::contained(&data, &f.path).is_err() {
            return bad_request(format!("bad file path {}", f.path));
        }
    }
    let json = match serde_json::to_vec(&(&req.snapshot, &req.files)) {
        Ok(j) => j,
        Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    };
    if let Err(e) = std::fs::write(transfer_file(&c, &id), json) {
        return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response();
    }
    let have = snapshot::resume_points(&data, &req.files);
    if !have.is_empty() {
        tracing::info!(snapshot = %id, resumed_bytes = have.values().sum::<u64>(), "resuming a snapshot transfer");
    }
    postcard_response(&BeginResponse { have })
}

type Transfer = (snapshot::StoredSnapshot, Vec<snapshot::FileEntry>);

fn load_transfer(c: &Cluster, id: &str) -> Result<Transfer, String> {
    if !snapshot::valid_id(id) {
        return Err("bad snapshot id".into());
    }
    let bytes = std::fs::read(transfer_file(c, id)).map_err(|_| "unknown transfer".to_string())?;
    serde_json::from_slice(&bytes).map_err(|e| e.to_string())
}

#[derive(Deserialize)]
struct ChunkQuery {
    id: String,
    offset: u64,
    path: String,
}

async fn snap_chunk(
    State(c): State<Arc<Cluster>>,
    Query(q): Query<ChunkQuery>,
    body: Bytes,
) -> Response {
    let guard = c.receiving.lock().await;
    if let Some(vote) = guard.as_ref() {
        c.note_snapshot_contact(vote);
    }
    let (_, files) = match load_transfer(&c, &q.id) {
        Ok(t) => t,
        Err(e) => return bad_request(e),
    };
    let Some(entry) = files.iter().find(|f| f.path == q.path) else {
        return bad_request("file not in the manifest");
    };
    if q.offset + body.len() as u64 > entry.size {
        return bad_request("chunk beyond the announced size");
    }
    let data = incoming(&c).join(&q.id).join("data");
    let path = match snapshot::contained(&data, &q.path) {
        Ok(p) => p,
        Err(e) => return bad_request(e),
    };
    let offset = q.offset;
    match tokio::task::spawn_blocking(move || snapshot::write_chunk(&path, offset, &body)).await {
        Ok(Ok(())) => StatusCode::OK.into_response(),
        Ok(Err(e)) => (StatusCode::CONFLICT, e.to_string()).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn snap_finish(State(c): State<Arc<Cluster>>, body: Bytes) -> Response {
    let req: FinishRequest = match postcard::from_bytes(&body) {
        Ok(r) => r,
        Err(e) => return bad_request(e),
    };
    let guard = c.receiving.lock().await;
    let (stored, files) = match load_transfer(&c, &req.snapshot_id) {
        Ok(t) => t,
        Err(e) => return bad_request(e),
    };
    let dir = incoming(&c).join(&req.snapshot_id);
    let data = dir.join("data");
    let d = data.clone();
    let expected = stored.sm.checksum.clone();
    let checked = tokio::task::spawn_blocking(move || {
        snapshot::verify(&d, &files)?;
        let (_, sum) = snapshot::checksum_dir(&d)?;
        if sum != expected {
            return Err(snapshot::SnapshotError::Checksum {
                path: "(snapshot checksum)".into(),
            });
        }
        Ok(())
    })
    .await;
    match checked {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::warn!(snapshot = %req.snapshot_id, error = %e, "received snapshot is corrupt; discarding it");
            let _ = std::fs::remove_dir_all(&dir);
            return (StatusCode::UNPROCESSABLE_ENTITY, e.to_string()).into_response();
        }
        Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
    let _ = std::fs::remove_file(dir.join("transfer.json"));
    // Out of `incoming/` (which the next transfer clears) into `received/`, from where the
    // state machine store moves it into `snapshots/` once installed.
    let received = c
        .settings()
        .raft_dir
        .join("received")
        .join(&req.snapshot_id);
    let moved = std::fs::create_dir_all(c.settings().raft_dir.join("received")).and_then(|()| {
        let _ = std::fs::remove_dir_all(&received);
        std::fs::rename(&dir, &received)
    });
    if let Err(e) = moved {
        return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response();
    }
    tracing::info!(snapshot = %req.snapshot_id, "snapshot received and verified");
    let snap = Snapshot {
        meta: stored.raft.clone(),
        snapshot: Box::new(SnapshotDir {
            path: received.join("data"),
            meta: stored.sm.clone(),
        }),
    };
    // Runs to the end even if the sender goes away meanwhile.
    let cc = Arc::clone(&c);
    let vote = req.vote;
    let _installing = c
        .note_snapshot_contact(&vote)
        .then(|| c.installing_snapshot());
    let task = tokio::spawn(async move {
        let res: Result<SnapshotResponse<NodeId>, Fatal<NodeId>> =
            cc.raft.install_full_snapshot(vote, snap).await;
        // Installed (moved into place) or not installed (stale): nothing is left to keep.
        let _ = std::fs::remove_dir_all(&received);
        res
    });
    drop(guard);
    match task.await {
        Ok(res) => postcard_response(&res),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn info(State(c): State<Arc<Cluster>>, req: Request) -> Response {
    let mut info = c.info();
    info.seen_ip = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ci| ci.0.ip().to_canonical().to_string());
    Json(info).into_response()
}

async fn status(State(c): State<Arc<Cluster>>) -> Response {
    Json(c.status().await).into_response()
}

async fn add_node(State(c): State<Arc<Cluster>>, body: Bytes) -> Response {
    let req: AddNode = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return bad_request(e),
    };
    match c.add_node(req, Duration::from_secs(300)).await {
        Ok(members) => Json(members).into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e).into_response(),
    }
}

async fn remove_node(State(c): State<Arc<Cluster>>, body: Bytes) -> Response {
    let req: RemoveNode = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return bad_request(e),
    };
    match c.remove_node(req.id, Duration::from_secs(60)).await {
        Ok(members) => Json(members).into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e).into_response(),
    }
}
