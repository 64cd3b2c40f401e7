//! Snapshots of every user database: `build` dumps them with `mariadb-dump
//! --single-transaction` while the applier is held (so the dump matches the applied position),
//! `install` drops the node's user databases and loads the dump. The files are `dump.sql` and
//! `position.json`; the checksum is SHA-256 over the files in name order.

use std::path::Path;
use std::process::Stdio;

use sha2::{Digest, Sha256};
use tokio::process::Command;

use super::meta::META_DB;
use crate::cluster::contract::{LogPosition, SnapshotMeta, StateMachineError};
use crate::protocol::backend::{Backend, EngineAddr, EngineTarget};

/// Databases that belong to the engine or the operator, never to users.
const SYSTEM_DBS: [&str; 5] = [
    "mysql",
    "information_schema",
    "performance_schema",
    "sys",
    META_DB,
];

fn err(e: impl std::fmt::Display) -> StateMachineError {
    StateMachineError::Snapshot(e.to_string())
}

fn client_cmd(program: &str, target: &EngineTarget) -> Command {
    let mut cmd = Command::new(program);
    match &target.addr {
        EngineAddr::Unix(path) => {
            cmd.arg(format!("--socket={}", path.display()));
        }
        EngineAddr::Tcp { host, port } => {
            cmd.arg(format!("--host={host}"))
                .arg(format!("--port={port}"))
                .arg("--protocol=TCP");
        }
    }
    cmd.arg(format!("--user={}", target.user))
        // The password goes through the environment, never the command line or logs.
        .env("MYSQL_PWD", &target.password)
        .kill_on_drop(true);
    cmd
}

/// The user databases of an engine.
pub async fn user_databases(target: &EngineTarget) -> Result<Vec<String>, StateMachineError> {
    let mut b = Backend::connect(target, super::applier::applier_caps(0), 45, None)
        .await
        .map_err(err)?;
    let c = super::response::run_query(&mut b, "SHOW DATABASES")
        .await
        .map_err(err)?;
    Ok(c.column(0)
        .into_iter()
        .map(|v| String::from_utf8_lossy(&v).into_owned())
        .filter(|name| !SYSTEM_DBS.contains(&name.as_str()))
        .collect())
}

/// SHA-256 over the snapshot files in name order, and their total size.
pub fn checksum(dir: &Path) -> Result<(String, u64), StateMachineError> {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .map_err(err)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    names.sort();
    let mut h = Sha256::new();
    let mut size = 0;
    for p in names {
        let bytes = std::fs::read(&p).map_err(err)?;
        size += bytes.len() as u64;
        h.update(&bytes);
    }
    let hex = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    Ok((hex, size))
}

/// Dumps every user database into `dir` (the caller holds the applier at `last`).
pub async fn build(
    target: &EngineTarget,
    dir: &Path,
    last: LogPosition,
) -> Result<SnapshotMeta, StateMachineError> {
    let dbs = user_databases(target).await?;
    let dump = dir.join("dump.sql");
    if dbs.is_empty() {
        std::fs::write(&dump, b"").map_err(err)?;
    } else {
        let file = std::fs::File::create(&dump).map_err(err)?;
        let mut cmd = client_cmd("mariadb-dump", target);
        cmd.args([
            "--single-transaction",
            "--routines",
            "--triggers",
            "--hex-blob",
            "--skip-dump-date",
            "--databases",
        ])
        .args(&dbs)
        .stdout(Stdio::from(file))
        .stderr(Stdio::piped());
        // `spawn`, not `output`: `output` would replace the file with a pipe.
        let out = cmd
            .spawn()
            .map_err(|e| err(format!("mariadb-dump: {e}")))?
            .wait_with_output()
            .await
            .map_err(|e| err(format!("mariadb-dump: {e}")))?;
        if !out.status.success() {
            return Err(err(format!(
                "mariadb-dump failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
    }
    std::fs::write(
        dir.join("position.json"),
        serde_json::to_vec(&last).map_err(err)?,
    )
    .map_err(err)?;
    let (checksum, size_bytes) = checksum(dir)?;
    Ok(SnapshotMeta {
        last_applied: last,
        size_bytes,
        checksum,
    })
}

/// Replaces every user database with the dump in `dir`.
pub async fn install(target: &EngineTarget, dir: &Path) -> Result<(), StateMachineError> {
    let dump = dir.join("dump.sql");
    let mut b = Backend::connect(target, super::applier::applier_caps(0), 45, None)
        .await
        .map_err(err)?;
    for db in user_databases(target).await? {
        b.query_drop(&format!(
            "DROP DATABASE {}",
            super::context::quote_ident(&db)
        ))
        .await
        .map_err(err)?;
    }
    let file = std::fs::File::open(&dump).map_err(err)?;
    let mut cmd = client_cmd("mariadb", target);
    cmd.arg("--binary-mode")
        .stdin(Stdio::from(file))
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let out = cmd
        .spawn()
        .map_err(|e| err(format!("mariadb: {e}")))?
        .wait_with_output()
        .await
        .map_err(|e| err(format!("mariadb: {e}")))?;
    if !out.status.success() {
        return Err(err(format!(
            "loading the snapshot failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}
