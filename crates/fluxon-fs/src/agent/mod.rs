//! `fluxon-fs agent`: serves export directories to clients over the binary protocol of
//! [`fluxon_fs_proto`], registers its exports with the master and heartbeats.
//!
//! The agent never sees passwords: it verifies the master's signed tokens with the public key
//! it receives on registration and checks the token's scopes on every request. It keeps serving
//! with the last key it learned while the master is down.

pub mod conn;
pub mod fsops;
pub mod handles;
mod register;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use fluxon_fs_proto::master_api::ExportInfo;
use fluxon_fs_proto::TokenVerifier;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::config::AgentConfig;
use fsops::{ExportRoot, FsError, FsResult};
use handles::Coordination;

/// Why the agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("export `{export}`: cannot open remote_root_dir_abs {path}: {source}")]
    ExportRoot {
        export: String,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    JoinSecret(#[from] crate::config::join_secret::JoinSecretError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
}

/// State shared by every connection.
#[derive(Debug)]
pub struct AgentState {
    exports: HashMap<String, ExportRoot>,
    coord: Arc<Coordination>,
    /// Set (and refreshed) by registration with the master.
    verifier: RwLock<Option<TokenVerifier>>,
}

impl AgentState {
    fn export(&self, name: &str) -> FsResult<&ExportRoot> {
        self.exports
            .get(name)
            .ok_or_else(|| FsError::new(libc::ENOENT, format!("unknown export_name: {name}")))
    }
}

/// A running agent.
#[derive(Debug)]
pub struct RunningAgent {
    /// The bound data address.
    pub addr: SocketAddr,
    accept: JoinHandle<()>,
    register: JoinHandle<()>,
}

impl RunningAgent {
    /// Stops accepting and heartbeating (open connections end with the runtime).
    pub fn abort(&self) {
        self.accept.abort();
        self.register.abort();
    }
}

impl Drop for RunningAgent {
    fn drop(&mut self) {
        self.abort();
    }
}

/// Opens the export roots, binds the data port and starts serving and registering.
pub async fn start(config: &AgentConfig) -> Result<RunningAgent, AgentError> {
    let fs = &config.fluxon_fs;
    let join_secret = fs.agent.join_secret_source().load()?;
    let mut exports = HashMap::new();
    let mut announced = BTreeMap::new();
    for (name, export) in &fs.cache.exports {
        let root = ExportRoot::open(name, &export.remote_root_dir_abs).map_err(|source| {
            AgentError::ExportRoot {
                export: name.clone(),
                path: export.remote_root_dir_abs.display().to_string(),
                source,
            }
        })?;
        exports.insert(name.clone(), root);
        announced.insert(
            name.clone(),
            ExportInfo {
                remote_root_dir_abs: export.remote_root_dir_abs.display().to_string(),
                cache_max_bytes: export.cache_max_bytes,
                inline_bytes_max_bytes: export.inline_bytes_max_bytes,
                metadata_cache_ttl_ms: export.metadata_cache_ttl_ms,
            },
        );
    }
    let listener = TcpListener::bind(&fs.agent.listen_addr)
        .await
        .map_err(|source| AgentError::Bind {
            addr: fs.agent.listen_addr.clone(),
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| AgentError::Bind {
        addr: fs.agent.listen_addr.clone(),
        source,
    })?;
    // With port 0 in listen_addr (tests), advertise the port actually bound.
    let data_addr = match fs.agent.advertise_addr.clone() {
        Some(a) => a,
        None => addr.to_string(),
    };
    let state = Arc::new(AgentState {
        exports,
        coord: Arc::new(Coordination::default()),
        verifier: RwLock::new(None),
    });
    let accept = tokio::spawn(accept_loop(listener, state.clone()));
    let register = tokio::spawn(register::run(
        state,
        register::Target {
            master_addr: fs.agent.master_addr.clone(),
            master_instance_key: fs.master.instance_key.clone(),
            agent_instance_key: fs.agent.instance_key.clone(),
            data_addr,
            exports: announced,
            join_secret,
        },
    ));
    tracing::info!(%addr, "fluxon-fs agent serving");
    Ok(RunningAgent {
        addr,
        accept,
        register,
    })
}

async fn accept_loop(listener: TcpListener, state: Arc<AgentState>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(conn::serve(state.clone(), stream));
            }
            Err(e) => {
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}
