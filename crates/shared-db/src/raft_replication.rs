//! Replication backed by the Raft cluster: this node's [`ReplicaEngine`] is the state machine
//! openraft drives, the [`Cluster`] is the replicated log, and statements a follower forwards
//! to the leader travel over the cluster's signed peer client to the leader's
//! `/replication/*` routes, which the internal API serves behind the cluster-secret check.
//!
//! It also re-syncs a diverged node (`POST /replication/resync` on that node, `shared-db
//! cluster resync`): the node pauses its applier, has the leader dump a snapshot covering at
//! least what it has passed in the log, fetches it in chunks, checks its SHA-256, installs it
//! and serves clients again; the paused entries then apply (or are recognised as included).

use std::sync::Arc;
use std::time::Duration;

use hyper::Method;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::cluster::client::{PeerClient, PeerError};
use crate::cluster::contract::{BoxFuture, PeerInfo, ReplicatedLog, StateMachine};
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
    let auto_resync = settings.auto_resync;
    let cluster = Cluster::start(settings, Arc::clone(&engine) as Arc<dyn StateMachine>).await?;
    let slot = ExecutorSlot::new();
    let resync = Arc::new(Resync {
        cluster: Arc::clone(&cluster),
        engine: Arc::clone(&engine),
        dir: env.data_dir.join("resync"),
    });
    if auto_resync {
        tokio::spawn(resync_when_diverged(Arc::downgrade(&resync)));
    }
    let api_task = api.map(|listener| {
        let c = Arc::clone(&cluster);
        let routes = router_deferred(slot.clone()).merge(resync_routes(resync));
        tokio::spawn(async move {
            if let Err(e) = c.serve(listener, routes).await {
                tracing::error!(error = %e, "internal API server stopped");
            }
        })
    });
    let parts = ReplicationParts {
        log: Arc::clone(&cluster) as Arc<dyn ReplicatedLog>,
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

/// What the re-sync routes work with.
struct Resync {
    cluster: Arc<Cluster>,
    engine: Arc<ReplicaEngine>,
    /// `<data dir>/resync`: `out/<id>` snapshots built for a peer, `in/` one being received.
    dir: std::path::PathBuf,
}

/// `POST /replication/snapshot` body: build a snapshot covering at least this index.
#[derive(serde::Serialize, serde::Deserialize)]
struct BuildRequest {
    min_index: u64,
}

/// The answer: where to fetch it and what it holds.
#[derive(serde::Serialize, serde::Deserialize)]
struct BuiltSnapshot {
    id: String,
    meta: crate::cluster::contract::SnapshotMeta,
    files: Vec<(String, u64)>,
}

const RESYNC_CHUNK: u64 = 4 << 20;
const RESYNC_TIMEOUT: Duration = Duration::from_secs(600);

fn resync_routes(r: Arc<Resync>) -> axum::Router {
    use axum::routing::{get, post};
    axum::Router::new()
        .route("/replication/snapshot", post(build_for_peer))
        .route("/replication/snapshot/{id}/{name}", get(snapshot_chunk))
        .route("/replication/resync", post(resync_here))
        .with_state(r)
}

type HttpResult<T> = Result<T, (axum::http::StatusCode, String)>;

fn http_err(
    status: axum::http::StatusCode,
    e: impl std::fmt::Display,
) -> (axum::http::StatusCode, String) {
    (status, e.to_string())
}

/// A name we generated or listed ourselves: no separators, no dot-dot.
fn plain(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// On the leader: dumps a snapshot covering at least `min_index` for a peer to fetch.
async fn build_for_peer(
    axum::extract::State(r): axum::extract::State<Arc<Resync>>,
    body: axum::body::Bytes,
) -> HttpResult<axum::Json<BuiltSnapshot>> {
    use axum::http::StatusCode;
    // Peers send JSON without a content type: parse the body as such.
    let req: BuildRequest =
        serde_json::from_slice(&body).map_err(|e| http_err(StatusCode::BAD_REQUEST, e))?;
    if !r
        .cluster
        .wait_applied(req.min_index, Duration::from_secs(30))
        .await
    {
        return Err(http_err(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("this node has not applied index {} yet", req.min_index),
        ));
    }
    let out = r.dir.join("out");
    // One snapshot at a time is kept for peers: the previous one goes.
    let _ = tokio::fs::remove_dir_all(&out).await;
    let mut raw = [0u8; 8];
    getrandom::fill(&mut raw).map_err(|e| http_err(StatusCode::INTERNAL_SERVER_ERROR, e))?;
    let id: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    let dir = out.join(&id);
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(|e| http_err(StatusCode::INTERNAL_SERVER_ERROR, e))?;
    let meta = r
        .engine
        .build_snapshot(&dir)
        .await
        .map_err(|e| http_err(StatusCode::INTERNAL_SERVER_ERROR, e))?;
    let mut files = Vec::new();
    let mut rd = tokio::fs::read_dir(&dir)
        .await
        .map_err(|e| http_err(StatusCode::INTERNAL_SERVER_ERROR, e))?;
    while let Some(f) = rd
        .next_entry()
        .await
        .map_err(|e| http_err(StatusCode::INTERNAL_SERVER_ERROR, e))?
    {
        let len = f
            .metadata()
            .await
            .map_err(|e| http_err(StatusCode::INTERNAL_SERVER_ERROR, e))?
            .len();
        files.push((f.file_name().to_string_lossy().into_owned(), len));
    }
    Ok(axum::Json(BuiltSnapshot { id, meta, files }))
}

#[derive(serde::Deserialize)]
struct ChunkQuery {
    offset: u64,
}

/// On the leader: up to 4 MiB of one file of a snapshot built for a peer.
async fn snapshot_chunk(
    axum::extract::State(r): axum::extract::State<Arc<Resync>>,
    axum::extract::Path((id, name)): axum::extract::Path<(String, String)>,
    axum::extract::Query(q): axum::extract::Query<ChunkQuery>,
) -> HttpResult<Vec<u8>> {
    use axum::http::StatusCode;
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    if !plain(&id) || !plain(&name) {
        return Err(http_err(StatusCode::BAD_REQUEST, "bad snapshot file name"));
    }
    let path = r.dir.join("out").join(id).join(name);
    let mut f = tokio::fs::File::open(&path)
        .await
        .map_err(|e| http_err(StatusCode::NOT_FOUND, e))?;
    f.seek(std::io::SeekFrom::Start(q.offset))
        .await
        .map_err(|e| http_err(StatusCode::BAD_REQUEST, e))?;
    let mut buf = Vec::new();
    f.take(RESYNC_CHUNK)
        .read_to_end(&mut buf)
        .await
        .map_err(|e| http_err(StatusCode::INTERNAL_SERVER_ERROR, e))?;
    Ok(buf)
}

/// First wait, and longest wait, between automatic re-sync attempts.
const AUTO_RESYNC_RETRY: (Duration, Duration) = (Duration::from_secs(5), Duration::from_secs(300));

/// `AUTO_RESYNC`: once this node is diverged, re-syncs it (retrying failures, with growing
/// pauses) until it is not. Ends with the node.
async fn resync_when_diverged(r: std::sync::Weak<Resync>) {
    let mut retry = AUTO_RESYNC_RETRY.0;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let Some(r) = r.upgrade() else { return };
        if r.engine.diverged().is_none() {
            retry = AUTO_RESYNC_RETRY.0;
            continue;
        }
        tracing::warn!(
            "this node diverged; re-syncing it from the leader's snapshot (AUTO_RESYNC)"
        );
        match resync(&r).await {
            Ok(v) => tracing::info!(result = %v, "automatic re-sync done"),
            Err((_, e)) => {
                tracing::warn!(error = %e, retry_in = ?retry, "automatic re-sync failed");
                drop(r);
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(AUTO_RESYNC_RETRY.1);
            }
        }
    }
}

/// On the diverged node: fetch the leader's snapshot and install it.
async fn resync_here(
    axum::extract::State(r): axum::extract::State<Arc<Resync>>,
) -> HttpResult<axum::Json<serde_json::Value>> {
    resync(&r).await.map(axum::Json)
}

/// Re-syncs this node from the leader's snapshot; returns what was installed.
async fn resync(r: &Resync) -> HttpResult<serde_json::Value> {
    use axum::http::StatusCode;
    use tokio::io::AsyncWriteExt;
    let Some(leader) = r.cluster.leader() else {
        return Err(http_err(
            StatusCode::SERVICE_UNAVAILABLE,
            "no leader is known",
        ));
    };
    if leader.id == r.cluster.node_id() {
        return Err(http_err(
            StatusCode::CONFLICT,
            "this node is the leader; re-sync a follower (or move the leadership first)",
        ));
    }
    // Entries wait from here on; everything this node passed is in the leader's snapshot.
    let _paused = r.engine.pause_apply().await;
    let passed = r.cluster.applied_index();
    let client = r.cluster.peer_client();
    let built: BuiltSnapshot = client
        .post_json(
            &leader.internal_addr,
            "/replication/snapshot",
            &BuildRequest { min_index: passed },
            RESYNC_TIMEOUT,
        )
        .await
        .map_err(|e| http_err(StatusCode::BAD_GATEWAY, e))?;
    if !plain(&built.id) {
        return Err(http_err(
            StatusCode::BAD_GATEWAY,
            "bad snapshot id from the leader",
        ));
    }
    let dir = r.dir.join("in");
    let _ = tokio::fs::remove_dir_all(&dir).await;
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(|e| http_err(StatusCode::INTERNAL_SERVER_ERROR, e))?;
    for (name, size) in &built.files {
        if !plain(name) {
            return Err(http_err(
                StatusCode::BAD_GATEWAY,
                "bad snapshot file name from the leader",
            ));
        }
        // Streamed to disk chunk by chunk: a dump can be far larger than memory.
        let mut file = tokio::fs::File::create(dir.join(name))
            .await
            .map_err(|e| http_err(StatusCode::INTERNAL_SERVER_ERROR, e))?;
        let mut written = 0u64;
        while written < *size {
            let path = format!("/replication/snapshot/{}/{name}?offset={written}", built.id);
            let chunk = client
                .call(
                    &leader.internal_addr,
                    Method::GET,
                    &path,
                    Vec::new(),
                    Duration::from_secs(60),
                )
                .await
                .map_err(|e| http_err(StatusCode::BAD_GATEWAY, e))?;
            if chunk.is_empty() {
                return Err(http_err(
                    StatusCode::BAD_GATEWAY,
                    format!("{name} ended early"),
                ));
            }
            file.write_all(&chunk)
                .await
                .map_err(|e| http_err(StatusCode::INTERNAL_SERVER_ERROR, e))?;
            written += chunk.len() as u64;
        }
        file.sync_all()
            .await
            .map_err(|e| http_err(StatusCode::INTERNAL_SERVER_ERROR, e))?;
    }
    let (_, sum) = crate::cluster::snapshot::checksum_dir(&dir)
        .map_err(|e| http_err(StatusCode::INTERNAL_SERVER_ERROR, e))?;
    if sum != built.meta.checksum {
        return Err(http_err(
            StatusCode::BAD_GATEWAY,
            "the snapshot's checksum does not match; nothing was installed",
        ));
    }
    r.engine
        .install_snapshot(&dir, &built.meta)
        .await
        .map_err(|e| http_err(StatusCode::INTERNAL_SERVER_ERROR, e))?;
    r.engine
        .clear_diverged()
        .await
        .map_err(|e| http_err(StatusCode::INTERNAL_SERVER_ERROR, e))?;
    r.cluster.set_diverged(false);
    let _ = tokio::fs::remove_dir_all(&dir).await;
    Ok(serde_json::json!({
        "installed_index": built.meta.last_applied.index,
        "passed_index": passed,
    }))
}
