//! Registration with the master: announce exports, learn the token key, heartbeat.
//!
//! The same call is repeated every heartbeat interval; the master treats it as both
//! registration and heartbeat. When the master is unreachable the agent keeps the key it has
//! and retries; failures are logged at most every 15 s.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fluxon_fs_proto::http::call_json;
use fluxon_fs_proto::master_api::{ExportInfo, RegisterReply, RegisterRequest};
use fluxon_fs_proto::TokenVerifier;
use hyper::Method;

use super::AgentState;

/// Bound of one registration call.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
const RETRY: Duration = Duration::from_millis(500);
const WARN_EVERY: Duration = Duration::from_secs(15);

pub struct Target {
    pub master_addr: String,
    pub master_instance_key: String,
    pub agent_instance_key: String,
    pub data_addr: String,
    pub exports: BTreeMap<String, ExportInfo>,
}

pub async fn run(state: Arc<AgentState>, target: Target) {
    let request = RegisterRequest {
        agent_instance_key: target.agent_instance_key.clone(),
        master_instance_key: target.master_instance_key.clone(),
        data_addr: target.data_addr.clone(),
        exports: target.exports.clone(),
    };
    let mut last_warn: Option<Instant> = None;
    let mut registered = false;
    loop {
        let result: Result<RegisterReply, _> = call_json(
            &target.master_addr,
            Method::POST,
            "/api/v1/agents/register",
            None,
            Some(&request),
            CALL_TIMEOUT,
        )
        .await;
        let wait = match result {
            Ok(reply) => {
                match TokenVerifier::new(&reply.token_public_key, &target.master_instance_key) {
                    Ok(verifier) => {
                        *state.verifier.write().unwrap_or_else(|e| e.into_inner()) = Some(verifier);
                        if !registered {
                            tracing::info!(master = %target.master_addr, "registered with the master");
                            registered = true;
                        }
                        Duration::from_millis(reply.heartbeat_interval_ms.clamp(100, 60_000))
                    }
                    Err(e) => {
                        tracing::error!("master sent an unusable token key: {e}");
                        RETRY
                    }
                }
            }
            Err(e) => {
                if registered || last_warn.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
                    tracing::warn!("cannot register with the master (still serving): {e}");
                    last_warn = Some(Instant::now());
                }
                registered = false;
                RETRY
            }
        };
        tokio::time::sleep(wait).await;
    }
}
