//! `GET /status`: version, cluster role and progress, engine state and connection counts of
//! this node, as JSON. `GET /`: upstream's load-balancer probe (without a `Host` header it
//! answers 200 only on the leader).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::node::NodeState;

pub fn router(state: Arc<NodeState>) -> Router {
    Router::new()
        .route("/status", get(status))
        .route("/", get(root))
        .with_state(state)
}

/// Without a `Host` header (the Flux domain manager's health probe): 200 on the leader, 503
/// elsewhere, so a load balancer sends traffic to the leader only. With one: 200.
async fn root(
    State(node): State<Arc<NodeState>>,
    headers: HeaderMap,
) -> (StatusCode, &'static str) {
    if headers.contains_key(axum::http::header::HOST) {
        return (StatusCode::OK, "shared-db\n");
    }
    let leading = match (&node.cluster, node.frontend.replication.get()) {
        (Some(c), _) => c.is_leader(),
        (None, Some(r)) => r.is_leader(),
        // Not replicated: the node is its own leader.
        (None, None) => true,
    };
    if leading {
        (StatusCode::OK, "leader\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not the leader\n")
    }
}

async fn status(State(node): State<Arc<NodeState>>) -> Json<Value> {
    let f = &node.frontend;
    let c = &f.counters;
    let cluster = match &node.cluster {
        Some(c) => Some(c.status().await),
        None => None,
    };
    let replication = f.replication.get().map(|r| {
        let mut v = r.status_json();
        if let Some(o) = v.as_object_mut() {
            o.insert("engine_state".into(), json!(node.engine_state()));
        }
        v
    });
    // Diverged: the engine side detected it (persisted in the engine) or consensus was told.
    let diverged = f
        .replication
        .get()
        .is_some_and(|r| r.diverged_error().is_some())
        || cluster.as_ref().is_some_and(|c| c.diverged);
    let role = match (&cluster, f.replication.get()) {
        (Some(c), _) => c.role.clone(),
        (None, Some(r)) if r.is_leader() => "leader".to_string(),
        (None, Some(_)) => "follower".to_string(),
        (None, None) => "standalone".to_string(),
    };
    Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "node": {
            "id": cluster.as_ref().map(|c| c.node_id),
            "pid": std::process::id(),
            "role": role,
            "term": cluster.as_ref().map(|c| c.term),
            "leader": cluster.as_ref().and_then(|c| c.leader.clone()),
            "mysql_port": node.mysql_port,
            "auth_master_only": node.auth_master_only,
            "diverged": diverged,
        },
        "cluster": cluster,
        "engine": {
            "mode": node.engine_mode,
            "state": node.engine_state(),
            "pid": node.engine_pid(),
            "version": node.engine_version,
            "address": f.engine().addr.to_string(),
        },
        "connections": {
            "active": f.registry.active(),
            "open": f.connections.load(Ordering::Relaxed),
            "accepted": c.accepted.load(Ordering::Relaxed),
            "rejected_whitelist": c.rejected_whitelist.load(Ordering::Relaxed),
            "rejected_limit": c.rejected_limit.load(Ordering::Relaxed),
            "auth_failures": c.auth_failures.load(Ordering::Relaxed),
            "engine_pool_in_use": f.pool.in_use(),
            "engine_pool_idle": f.pool.idle_count(),
            "engine_connections_opened": f.pool.opened(),
        },
        "commands": c.commands.load(Ordering::Relaxed),
        "statements": {
            "read": c.statements_read.load(Ordering::Relaxed),
            "write": c.statements_write.load(Ordering::Relaxed),
            "session": c.statements_session.load(Ordering::Relaxed),
            "transaction": c.statements_transaction.load(Ordering::Relaxed),
        },
        "engine_errors": c.engine_errors.load(Ordering::Relaxed),
        "replication": replication,
    }))
}
