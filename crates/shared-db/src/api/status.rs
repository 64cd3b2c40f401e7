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
    if node.cluster.is_leader() {
        (StatusCode::OK, "leader\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not the leader\n")
    }
}

async fn status(State(node): State<Arc<NodeState>>) -> Json<Value> {
    let f = &node.frontend;
    let c = &f.counters;
    let cluster = node.cluster.status().await;
    Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "node": {
            "id": cluster.node_id,
            "pid": std::process::id(),
            "role": cluster.role,
            "term": cluster.term,
            "leader": cluster.leader,
            "mysql_port": node.mysql_port,
            "auth_master_only": node.auth_master_only,
            "diverged": cluster.diverged,
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
    }))
}
