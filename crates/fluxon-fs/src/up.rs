//! `fluxon-fs up --workdir W`: a master and an agent on one machine, plus a ready-to-use Python
//! snippet (printed, and written as `W/example_mount.py`).

use std::path::PathBuf;

/// Arguments of `fluxon-fs up`.
#[derive(Debug, clap::Args)]
pub struct UpArgs {
    /// Working directory: configs, access DB, logs and the export root `remote_root`.
    #[arg(long)]
    pub workdir: PathBuf,
}

/// Why `up` failed.
#[derive(Debug, thiserror::Error)]
pub enum UpError {
    #[error("not implemented yet")]
    Todo,
}

pub async fn run(_args: UpArgs) -> Result<(), UpError> {
    Err(UpError::Todo)
}

/// Resolves on SIGINT or SIGTERM.
pub async fn wait_for_shutdown() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}
