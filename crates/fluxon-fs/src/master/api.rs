//! HTTP handlers of the master (routes listed in [`fluxon_fs_proto::master_api`]), plus the
//! manager-only JSON API for users and scopes:
//!
//! | route | body |
//! |---|---|
//! | `POST /api/v1/account/password` | [`PasswordChange`] (no token: works for must-change users) |
//! | `GET/POST /api/v1/users`, `DELETE /api/v1/users/{name}` | [`NewUser`] |
//! | `GET/POST /api/v1/scopes`, `POST /api/v1/scopes/delete` | [`access::ScopeRecord`] / [`ScopeId`] |

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use fluxon_fs_proto::master_api::{
    ErrorBody, LoginRequest, RegisterReply, RegisterRequest, Snapshot, TokenReply,
};
use fluxon_fs_proto::scope::Grants;
use fluxon_fs_proto::token::now_unix_ms;
use fluxon_fs_proto::Claims;
use serde::{Deserialize, Serialize};

use super::access::{self, verify_password, AccessError, ScopeRecord};
use super::{MasterState, TOKEN_TTL};
use crate::config::{self, CacheConfig, CacheFluxonFs, CacheSection, ExportConfig};

type Shared = Arc<MasterState>;

pub fn router(state: Shared) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/api/v1/login", post(login))
        .route("/api/v1/token/refresh", post(refresh))
        .route("/api/v1/snapshot", get(snapshot))
        .route("/api/v1/agents/register", post(register))
        .route("/api/v1/account/password", post(change_password))
        .route("/api/v1/users", get(list_users).post(create_user))
        .route("/api/v1/users/{name}", delete(delete_user))
        .route("/api/v1/scopes", get(list_scopes).post(put_scope))
        .route("/api/v1/scopes/delete", post(delete_scope))
        .with_state(state)
}

/// An error reply: status + JSON `{error}`.
pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(ErrorBody { error: self.1 })).into_response()
    }
}

impl From<AccessError> for ApiError {
    fn from(e: AccessError) -> ApiError {
        let status = match e {
            AccessError::Invalid(_) => StatusCode::BAD_REQUEST,
            AccessError::NoSuchUser(_) => StatusCode::NOT_FOUND,
            AccessError::UserExists(_) => StatusCode::CONFLICT,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!("access DB: {e}");
        }
        ApiError(status, e.to_string())
    }
}

type ApiResult<T> = Result<Json<T>, ApiError>;

fn unauthorized(message: impl Into<String>) -> ApiError {
    ApiError(StatusCode::UNAUTHORIZED, message.into())
}

/// The caller's verified claims from `Authorization: Bearer <token>`.
fn bearer(state: &MasterState, headers: &HeaderMap) -> Result<Claims, ApiError> {
    let token = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| unauthorized("missing bearer token"))?;
    state
        .verifier
        .verify(token, now_unix_ms())
        .map_err(|e| unauthorized(e.to_string()))
}

fn manager(state: &MasterState, headers: &HeaderMap) -> Result<Claims, ApiError> {
    let claims = bearer(state, headers)?;
    if !claims.manager {
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            format!(
                "user `{}` cannot manage users (can_manage_users is false)",
                claims.username
            ),
        ));
    }
    Ok(claims)
}

async fn issue(state: &MasterState, user: &access::UserRecord) -> Result<TokenReply, ApiError> {
    let scopes = state.access.scopes_of(&user.username).await?;
    let now = now_unix_ms();
    let claims = Claims {
        issuer: state.config.fluxon_fs.master.instance_key.clone(),
        username: user.username.clone(),
        manager: user.can_manage_users,
        scopes,
        issued_unix_ms: now,
        expires_unix_ms: now + TOKEN_TTL.as_millis() as u64,
    };
    Ok(TokenReply {
        token: state.signer.sign(&claims),
        username: claims.username,
        manager: claims.manager,
        expires_unix_ms: claims.expires_unix_ms,
    })
}

async fn check_password(
    state: &MasterState,
    username: &str,
    password: &str,
) -> Result<access::UserRecord, ApiError> {
    let bad = || unauthorized("invalid username or password");
    let user = state.access.user(username).await?.ok_or_else(bad)?;
    let hash = user.password_hash.clone();
    let password = password.to_string();
    let ok = tokio::task::spawn_blocking(move || verify_password(&password, &hash))
        .await
        .unwrap_or(false);
    if ok {
        Ok(user)
    } else {
        Err(bad())
    }
}

async fn login(
    State(state): State<Shared>,
    Json(req): Json<LoginRequest>,
) -> ApiResult<TokenReply> {
    let user = check_password(&state, &req.username, &req.password).await?;
    if user.must_change_password {
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            format!(
                "the initial password of `{}` must be changed before first use (POST /api/v1/account/password)",
                user.username
            ),
        ));
    }
    Ok(Json(issue(&state, &user).await?))
}

async fn refresh(State(state): State<Shared>, headers: HeaderMap) -> ApiResult<TokenReply> {
    let claims = bearer(&state, &headers)?;
    let user = state
        .access
        .user(&claims.username)
        .await?
        .ok_or_else(|| unauthorized(format!("user `{}` no longer exists", claims.username)))?;
    Ok(Json(issue(&state, &user).await?))
}

async fn snapshot(State(state): State<Shared>, headers: HeaderMap) -> ApiResult<Snapshot> {
    let claims = bearer(&state, &headers)?;
    let online = state.registry.exports();
    let master_cache = &state.config.fluxon_fs.cache;
    let mut cache = CacheSection {
        exports: BTreeMap::new(),
        stale_window_ms: master_cache.stale_window_ms,
        write_session_target_inflight_bytes: master_cache.write_session_target_inflight_bytes,
    };
    let mut exports = BTreeMap::new();
    for (name, export) in &online {
        cache.exports.insert(
            name.clone(),
            ExportConfig {
                remote_root_dir_abs: export.info.remote_root_dir_abs.clone().into(),
                nodes: Some(
                    export
                        .agents
                        .iter()
                        .map(|a| a.instance_key.clone())
                        .collect(),
                ),
                cache_max_bytes: export.info.cache_max_bytes,
                inline_bytes_max_bytes: export.info.inline_bytes_max_bytes,
                metadata_cache_ttl_ms: export.info.metadata_cache_ttl_ms,
            },
        );
        exports.insert(name.clone(), export.agents.clone());
    }
    let doc = CacheConfig {
        fluxon_fs: CacheFluxonFs { cache },
    };
    let cache_config_yaml = serde_yaml::to_string(&doc)
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let visible_exports = online
        .keys()
        .filter(|n| claims.sees_export(n))
        .cloned()
        .collect();
    Ok(Json(Snapshot {
        master_instance_key: state.config.fluxon_fs.master.instance_key.clone(),
        pull_interval_ms: state.pull_interval_ms,
        token_public_key: state.signer.public_key_b64(),
        cache_config_yaml,
        exports,
        visible_exports,
    }))
}

async fn register(
    State(state): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Json(req): Json<RegisterRequest>,
) -> ApiResult<RegisterReply> {
    if let Err(refusal) = crate::join::check_request(&state.join_secret, &req, now_unix_ms()) {
        tracing::warn!(
            agent = %req.agent_instance_key,
            %peer,
            "agent registration refused: {refusal}"
        );
        return Err(unauthorized(format!(
            "agent registration refused: {refusal}"
        )));
    }
    let key = &state.config.fluxon_fs.master.instance_key;
    if &req.master_instance_key != key {
        return Err(ApiError(
            StatusCode::CONFLICT,
            format!(
                "this master is `{key}` but the agent's fluxon_fs.master.instance_key is `{}`",
                req.master_instance_key
            ),
        ));
    }
    let new =
        state
            .registry
            .heartbeat(&req.agent_instance_key, &req.data_addr, req.exports.clone());
    if new {
        tracing::info!(
            agent = %req.agent_instance_key,
            addr = %req.data_addr,
            exports = ?req.exports.keys().collect::<Vec<_>>(),
            "agent registered"
        );
    }
    let mut reply = RegisterReply {
        master_instance_key: key.clone(),
        token_public_key: state.signer.public_key_b64(),
        heartbeat_interval_ms: state.pull_interval_ms,
        expire_after_ms: state.pull_interval_ms * super::MISSED_HEARTBEATS as u64,
        mac: String::new(),
    };
    crate::join::sign_reply(&state.join_secret, &req.nonce, &mut reply);
    Ok(Json(reply))
}

/// `POST /api/v1/account/password`.
#[derive(Debug, Deserialize)]
pub struct PasswordChange {
    pub username: String,
    pub old_password: String,
    pub new_password: String,
}

async fn change_password(
    State(state): State<Shared>,
    Json(req): Json<PasswordChange>,
) -> ApiResult<serde_json::Value> {
    check_password(&state, &req.username, &req.old_password).await?;
    if req.new_password == req.old_password {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "the new password must differ from the old one".into(),
        ));
    }
    state
        .access
        .set_password(&req.username, &req.new_password)
        .await?;
    Ok(Json(serde_json::json!({"ok": true})))
}

/// A user as listed (no password hash).
#[derive(Debug, Serialize)]
pub struct UserView {
    pub username: String,
    pub can_manage_users: bool,
    pub must_change_password: bool,
}

/// `POST /api/v1/users`.
#[derive(Debug, Deserialize)]
pub struct NewUser {
    pub username: String,
    pub password: String,
    #[serde(default)]
    pub can_manage_users: bool,
}

async fn list_users(State(state): State<Shared>, headers: HeaderMap) -> ApiResult<Vec<UserView>> {
    manager(&state, &headers)?;
    let users = state.access.users().await?;
    Ok(Json(
        users
            .into_iter()
            .map(|u| UserView {
                username: u.username,
                can_manage_users: u.can_manage_users,
                must_change_password: u.must_change_password,
            })
            .collect(),
    ))
}

async fn create_user(
    State(state): State<Shared>,
    headers: HeaderMap,
    Json(req): Json<NewUser>,
) -> ApiResult<serde_json::Value> {
    manager(&state, &headers)?;
    state
        .access
        .create_user(&req.username, &req.password, req.can_manage_users)
        .await?;
    Ok(Json(serde_json::json!({"ok": true})))
}

async fn delete_user(
    State(state): State<Shared>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> ApiResult<serde_json::Value> {
    let claims = manager(&state, &headers)?;
    if claims.username == name {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "a manager cannot delete itself".into(),
        ));
    }
    state.access.delete_user(&name).await?;
    Ok(Json(serde_json::json!({"ok": true})))
}

async fn list_scopes(
    State(state): State<Shared>,
    headers: HeaderMap,
) -> ApiResult<Vec<ScopeRecord>> {
    manager(&state, &headers)?;
    Ok(Json(state.access.scopes().await?))
}

async fn put_scope(
    State(state): State<Shared>,
    headers: HeaderMap,
    Json(scope): Json<ScopeRecord>,
) -> ApiResult<serde_json::Value> {
    manager(&state, &headers)?;
    state.access.put_scope(scope).await?;
    Ok(Json(serde_json::json!({"ok": true})))
}

/// `POST /api/v1/scopes/delete`.
#[derive(Debug, Deserialize)]
pub struct ScopeId {
    pub export_name: String,
    #[serde(default)]
    pub prefix: String,
    pub mode: config::AccessMode,
}

async fn delete_scope(
    State(state): State<Shared>,
    headers: HeaderMap,
    Json(id): Json<ScopeId>,
) -> ApiResult<serde_json::Value> {
    manager(&state, &headers)?;
    let existed = state
        .access
        .delete_scope(&id.export_name, &id.prefix, id.mode)
        .await?;
    Ok(Json(serde_json::json!({"ok": true, "existed": existed})))
}
