//! First start: create the engine datadir so that it either does not exist or is complete.
//!
//! `mariadb-install-db` writes into `<engine>/data.installing-<pid>`. A short-lived `mariadbd`
//! (socket only) then runs on that directory to drop the password-less default root accounts
//! and set the internal password, and is shut down cleanly. Only then is the directory renamed
//! to `data`. A crash at any point leaves just a `data.installing-*` directory, which the next
//! start removes; an existing `data` therefore always has its credentials set.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use super::admin::secure_fresh_install;
use super::error::EngineError;
use super::launch::{log_tail, Instance, Launcher};
use super::layout::{path_arg, EnginePaths};
use super::secret::{sync_dir, Secret};

/// Upper bound for `mariadb-install-db` (it usually takes a few seconds).
const INSTALL_TIMEOUT: Duration = Duration::from_secs(300);

/// Creates `paths.datadir` with the internal password set on `root@localhost`.
pub(crate) async fn install(
    install_db: &Path,
    launcher: &Launcher,
    paths: &EnginePaths,
    secret: &Secret,
) -> Result<(), EngineError> {
    let tmp = paths.install_dir();
    tracing::info!(datadir = %paths.datadir.display(), "initialising a new engine datadir");
    let result = build(install_db, launcher, paths, secret, &tmp).await;
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
        return result;
    }
    std::fs::rename(&tmp, &paths.datadir)
        .map_err(|e| EngineError::io("rename the new datadir into place at", &paths.datadir, e))?;
    sync_dir(&paths.engine_dir)?;
    tracing::info!(datadir = %paths.datadir.display(), "engine datadir initialised");
    Ok(())
}

async fn build(
    install_db: &Path,
    launcher: &Launcher,
    paths: &EnginePaths,
    secret: &Secret,
    tmp: &Path,
) -> Result<(), EngineError> {
    run_install_db(install_db, &launcher.user, &launcher.tmp_dir, tmp).await?;
    secure(launcher, paths, secret, tmp).await
}

async fn run_install_db(
    install_db: &Path,
    user: &str,
    tmp_dir: &Path,
    datadir: &Path,
) -> Result<(), EngineError> {
    let mut cmd = tokio::process::Command::new(install_db);
    // The bootstrap server's tmpdir: through the environment, because the script word-splits
    // the options it passes on (a path with spaces would break).
    cmd.env("TMPDIR", tmp_dir);
    cmd.arg("--no-defaults")
        .arg(path_arg("--datadir", datadir))
        .arg("--auth-root-authentication-method=normal")
        .arg("--skip-test-db")
        .arg(format!("--user={user}"))
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let output = tokio::time::timeout(INSTALL_TIMEOUT, cmd.output())
        .await
        .map_err(|_| EngineError::InstallFailed {
            status: format!("no result within {} s", INSTALL_TIMEOUT.as_secs()),
            output: String::new(),
        })?
        .map_err(|source| EngineError::Spawn {
            program: install_db.to_path_buf(),
            source,
        })?;
    if output.status.success() {
        return Ok(());
    }
    Err(EngineError::InstallFailed {
        status: output.status.to_string(),
        output: format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    })
}

/// Runs a private `mariadbd` on the new datadir to set the credentials, then stops it.
async fn secure(
    launcher: &Launcher,
    paths: &EnginePaths,
    secret: &Secret,
    tmp: &Path,
) -> Result<(), EngineError> {
    let inst = Instance {
        datadir: tmp.to_path_buf(),
        socket: paths.install_socket(),
        pid_file: tmp.join("install.pid"),
        tcp_port: None,
    };
    let child = launcher.spawn(&inst).await?;
    let mut result = launcher.wait_ready(&child, &inst.socket).await;
    if result.is_ok() {
        result = secure_fresh_install(&inst.socket, secret).await;
    }
    let stopped = child.stop(super::managed::STOP_GRACE).await;
    result?;
    match stopped {
        Some(exit) if exit.success => Ok(()),
        other => Err(EngineError::InstallFailed {
            status: format!(
                "the engine did not shut down cleanly after the install ({})",
                other.map_or_else(|| "still running".to_string(), |e| e.to_string())
            ),
            output: log_tail(&launcher.log_file),
        }),
    }
}
