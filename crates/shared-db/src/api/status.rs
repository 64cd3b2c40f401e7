//! `GET /status`: version, engine state and connection counts of this node, as JSON.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::node::NodeState;

pub fn router(state: Arc<NodeState>) -> Router {
    Router::new()
        .route("/status", get(status))
        .with_state(state)
}

async fn status(State(node): State<Arc<NodeState>>) -> Json<Value> {
    let f = &node.frontend;
    let c = &f.counters;
    let replication = f.replication.get().map(|r| {
        let mut v = r.status_json();
        if let Some(o) = v.as_object_mut() {
            o.insert("engine_state".into(), json!(node.engine_state()));
        }
        v
    });
    let role = f
        .replication
        .get()
        .map(|r| if r.is_leader() { "leader" } else { "follower" })
        .unwrap_or("leader");
    Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "node": {
            "pid": std::process::id(),
            "role": role,
            "mysql_port": node.mysql_port,
        },
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
