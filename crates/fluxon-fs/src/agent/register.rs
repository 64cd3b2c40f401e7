//! Registration with the master: announce exports, learn the token key, heartbeat.
//!
//! The same call is repeated every heartbeat interval; the master treats it as both
//! registration and heartbeat. Each call carries an HMAC made with the join secret and the
//! master's reply must carry one too (see [`crate::join`]): the token key is taken only from a
//! reply that proves the secret. When the master is unreachable the agent keeps the key it has
//! and retries; failures are logged at most every 15 s.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fluxon_fs_proto::http::call_json;
use fluxon_fs_proto::master_api::{ExportInfo, RegisterReply, RegisterRequest};
use fluxon_fs_proto::token::now_unix_ms;
use fluxon_fs_proto::TokenVerifier;
use hyper::Method;

use super::AgentState;
use crate::config::JoinSecret;

/// Bound of one registration call.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
const RETRY: Duration = Duration::from_millis(500);
/// Retry interval after the master refused our join secret (a config error: no hurry).
const REFUSED_RETRY: Duration = Duration::from_secs(5);
const WARN_EVERY: Duration = Duration::from_secs(15);

/// Kinds of registration failure, for log rate limiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    Unreachable,
    Refused,
    BadReply,
}

pub struct Target {
    pub master_addr: String,
    pub master_instance_key: String,
    pub agent_instance_key: String,
    pub data_addr: String,
    pub exports: BTreeMap<String, ExportInfo>,
    pub join_secret: JoinSecret,
}

pub async fn run(state: Arc<AgentState>, target: Target) {
    let mut request = RegisterRequest {
        agent_instance_key: target.agent_instance_key.clone(),
        master_instance_key: target.master_instance_key.clone(),
        data_addr: target.data_addr.clone(),
        exports: target.exports.clone(),
        sent_unix_ms: 0,
        nonce: String::new(),
        mac: String::new(),
    };
    // Failures are reported when their kind changes, else at most every WARN_EVERY.
    let mut last_warn: Option<(Failure, Instant)> = None;
    let mut should_warn = |kind: Failure| {
        let due = match last_warn {
            Some((last, at)) => last != kind || at.elapsed() >= WARN_EVERY,
            None => true,
        };
        if due {
            last_warn = Some((kind, Instant::now()));
        }
        due
    };
    let mut registered = false;
    loop {
        crate::join::sign_request(&target.join_secret, &mut request, now_unix_ms());
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
            Ok(reply) if !crate::join::check_reply(&target.join_secret, &request.nonce, &reply) => {
                if should_warn(Failure::BadReply) {
                    tracing::error!(
                        master = %target.master_addr,
                        "the master's reply does not prove the join secret: ignored (is \
                         fluxon_fs.agent.join_secret the master's agent_join_secret?)"
                    );
                }
                registered = false;
                REFUSED_RETRY
            }
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
            Err(e) if e.status() == Some(401) => {
                if should_warn(Failure::Refused) {
                    tracing::error!("the master refused this agent: {e}");
                }
                registered = false;
                REFUSED_RETRY
            }
            Err(e) => {
                if registered || should_warn(Failure::Unreachable) {
                    tracing::warn!("cannot register with the master (still serving): {e}");
                }
                registered = false;
                RETRY
            }
        };
        tokio::time::sleep(wait).await;
    }
}
