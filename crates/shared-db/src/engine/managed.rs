//! Managed engine (temporary interface stub until the real module lands).

use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("managed engine not available yet")]
    NotInstalled,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EngineState {
    Starting,
    Running,
    Restarting { attempt: u32 },
    Stopped,
    Failed { reason: String },
}

pub struct ManagedEngineConfig {
    pub data_dir: PathBuf,
    pub tcp_port: Option<u16>,
    pub buffer_pool: String,
    pub max_connections: u32,
    pub extra_args: Vec<String>,
    pub ready_timeout: Duration,
}

impl ManagedEngineConfig {
    pub fn new(data_dir: PathBuf) -> Self {
        ManagedEngineConfig {
            data_dir,
            tcp_port: None,
            buffer_pool: "256M".into(),
            max_connections: 1000,
            extra_args: Vec::new(),
            ready_timeout: Duration::from_secs(60),
        }
    }
}

pub struct ManagedEngine {
    socket: PathBuf,
    rx: tokio::sync::watch::Receiver<EngineState>,
}

impl ManagedEngine {
    pub async fn start(_cfg: ManagedEngineConfig) -> Result<Self, EngineError> {
        Err(EngineError::NotInstalled)
    }
    pub fn socket_path(&self) -> &Path {
        &self.socket
    }
    pub fn user(&self) -> &str {
        "root"
    }
    pub fn password(&self) -> &str {
        ""
    }
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<EngineState> {
        self.rx.clone()
    }
    pub async fn shutdown(self) {}
}
