//! `fluxon-fs master`: the control plane.
//!
//! HTTP (axum) on `master_panel.listen_addr`: logins and token refresh, the export snapshot for
//! clients, agent registration and heartbeats, and a minimal JSON user/scope API for managers
//! (the panel UI builds on it later). State lives in the access DB ([`access::AccessDb`]).

pub mod access;
mod api;
pub mod registry;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::config::MasterConfig;
use crate::store::{RedbStore, StoreError};
use access::{AccessDb, AccessError};
use registry::Registry;

/// Default heartbeat interval handed to agents (`fluxon_fs.master.pull_interval_ms`).
pub const DEFAULT_PULL_INTERVAL_MS: u64 = 1000;
/// An agent is forgotten after this many missed heartbeats.
pub const MISSED_HEARTBEATS: u32 = 3;
/// Token lifetime.
pub const TOKEN_TTL: Duration = Duration::from_secs(600);

/// Why the master could not start.
#[derive(Debug, thiserror::Error)]
pub enum MasterError {
    #[error("access DB {path}: {source}")]
    Store {
        path: String,
        #[source]
        source: StoreError,
    },
    #[error("access DB: {0}")]
    Access(#[from] AccessError),
    #[error("{0}")]
    JoinSecret(#[from] crate::config::join_secret::JoinSecretError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
}

/// State shared by the handlers.
pub struct MasterState {
    pub config: MasterConfig,
    pub access: AccessDb,
    pub signer: fluxon_fs_proto::TokenSigner,
    pub verifier: fluxon_fs_proto::TokenVerifier,
    pub registry: Registry,
    pub pull_interval_ms: u64,
    /// What agents must prove when registering.
    pub join_secret: crate::config::JoinSecret,
}

/// A running master.
#[derive(Debug)]
pub struct RunningMaster {
    pub addr: SocketAddr,
    server: JoinHandle<()>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl RunningMaster {
    pub fn abort(&self) {
        self.server.abort();
    }

    /// Stops serving and waits (bounded) until open HTTP connections are done, which releases
    /// the access DB.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let server = &mut self.server;
        if tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .is_err()
        {
            self.server.abort();
        }
    }
}

impl Drop for RunningMaster {
    fn drop(&mut self) {
        self.abort();
    }
}

/// Opens the access DB (bootstrapping an empty one), binds and serves.
pub async fn start(config: MasterConfig) -> Result<RunningMaster, MasterError> {
    let join_secret = config.fluxon_fs.master.join_secret_source().load()?;
    let panel = &config.fluxon_fs.master_panel;
    let path = panel.access_db_path.clone();
    let store = RedbStore::open(&path)
        .await
        .map_err(|source| MasterError::Store {
            path: path.display().to_string(),
            source,
        })?;
    restrict_permissions(&path);
    let access = AccessDb::new(Arc::new(store));
    if access.bootstrap(&panel.bootstrap_access_model).await? {
        tracing::info!(db = %path.display(), "access DB was empty: applied bootstrap_access_model");
    }
    let signer = access.signer().await?;
    let instance_key = config.fluxon_fs.master.instance_key.clone();
    let verifier = fluxon_fs_proto::TokenVerifier::new(&signer.public_key_b64(), &instance_key)
        .map_err(|e| MasterError::Access(AccessError::Invalid(e.to_string())))?;
    let pull_interval_ms = config
        .fluxon_fs
        .master
        .pull_interval_ms
        .unwrap_or(DEFAULT_PULL_INTERVAL_MS);
    let listen = panel.listen_addr.clone();
    let listener = TcpListener::bind(&listen)
        .await
        .map_err(|source| MasterError::Bind {
            addr: listen.clone(),
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| MasterError::Bind {
        addr: listen.clone(),
        source,
    })?;
    let state = Arc::new(MasterState {
        config,
        access,
        signer,
        verifier,
        registry: Registry::new(Duration::from_millis(
            pull_interval_ms * MISSED_HEARTBEATS as u64,
        )),
        pull_interval_ms,
        join_secret,
    });
    let app = api::router(state);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let app = app.into_make_service_with_connect_info::<SocketAddr>();
        let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
            let _ = stopped.await;
        });
        if let Err(e) = serve.await {
            tracing::error!("master HTTP server stopped: {e}");
        }
    });
    tracing::info!(%addr, "fluxon-fs master serving");
    Ok(RunningMaster {
        addr,
        server,
        stop: Some(stop),
    })
}

fn restrict_permissions(path: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Err(e) = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)) {
        tracing::warn!(path = %path.display(), "cannot restrict access DB permissions to 0600: {e}");
    }
}
