//! `fluxon-fs up --workdir W`: a master and an agent on one machine, exporting `W/remote_root`,
//! plus a ready-to-use Python snippet (printed, and written as `W/example_mount.py`).
//!
//! Layout of `W`: `master.yaml`, `agent.yaml`, `fs_master/access.db`, `fs_master/admin_password`
//! (generated once, mode 0600: a default `admin`/`admin` would have to be changed before use),
//! `fs_master/agent_join_secret` (generated once, mode 0600; both configs name it with
//! `agent_join_secret_file` / `join_secret_file`), `remote_root/` and `example_mount.py`.
//! Both services run in this process; Ctrl-C stops them.

use std::fmt::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::config::{AgentConfig, ConfigError, ConfigFile, MasterConfig};

/// Arguments of `fluxon-fs up`.
#[derive(Debug, Clone, clap::Args)]
pub struct UpArgs {
    /// Working directory: configs, access DB and the export root `remote_root`.
    #[arg(long)]
    pub workdir: PathBuf,
    /// Master HTTP port (logins, snapshot, registration; what `master_addr` names).
    #[arg(long, default_value_t = 34181)]
    pub master_port: u16,
    /// Agent data port.
    #[arg(long, default_value_t = 34190)]
    pub agent_port: u16,
    /// Name of the export.
    #[arg(long, default_value = "demo-export")]
    pub export_name: String,
    /// Host clients use to reach the services.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
}

/// Why `up` failed.
#[derive(Debug, thiserror::Error)]
pub enum UpError {
    #[error("workdir {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("master: {0}")]
    Master(#[from] crate::master::MasterError),
    #[error("agent: {0}")]
    Agent(#[from] crate::agent::AgentError),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> UpError + '_ {
    move |source| UpError::Io {
        path: path.display().to_string(),
        source,
    }
}

const MASTER_KEY: &str = "up_fs_master";
const AGENT_KEY: &str = "up_fs_agent";

/// Everything `up` generated.
#[derive(Debug, Clone)]
pub struct Generated {
    pub master_addr: String,
    pub agent_addr: String,
    pub username: String,
    pub password: String,
    pub remote_root: PathBuf,
    pub example: PathBuf,
    pub snippet: String,
}

/// Writes configs and the example into the workdir and returns the parsed configs.
pub fn prepare(args: &UpArgs) -> Result<(MasterConfig, AgentConfig, Generated), UpError> {
    let w = std::path::absolute(&args.workdir).map_err(io(&args.workdir))?;
    let remote_root = w.join("remote_root");
    let master_dir = w.join("fs_master");
    for dir in [&w, &remote_root, &master_dir] {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
    }
    let password = admin_password(&master_dir.join("admin_password"))?;
    let join_secret_file = master_dir.join("agent_join_secret");
    // Only the file's existence matters here: the services read it when they start.
    random_hex_file(&join_secret_file, 32)?;
    let master_addr = format!("{}:{}", args.host, args.master_port);
    let agent_addr = format!("{}:{}", args.host, args.agent_port);
    let export = &args.export_name;
    let master_yaml = format!(
        "fluxon_fs:\n  master:\n    instance_key: {MASTER_KEY}\n    pull_interval_ms: 1000\n    agent_join_secret_file: {secret}\n  master_panel:\n    listen_addr: {master_addr}\n    access_db_path: {db}\n    bootstrap_access_model:\n      users:\n        - username: admin\n          password: \"{password}\"\n          can_manage_users: true\n",
        db = master_dir.join("access.db").display(),
        secret = join_secret_file.display()
    );
    let agent_yaml = format!(
        "fluxon_fs:\n  master:\n    instance_key: {MASTER_KEY}\n  agent:\n    instance_key: {AGENT_KEY}\n    listen_addr: {agent_addr}\n    master_addr: {master_addr}\n    join_secret_file: {secret}\n  cache:\n    exports:\n      {export}:\n        remote_root_dir_abs: {root}\n",
        root = remote_root.display(),
        secret = join_secret_file.display()
    );
    let master_path = w.join("master.yaml");
    let agent_path = w.join("agent.yaml");
    write_private(&master_path, &master_yaml)?;
    std::fs::write(&agent_path, &agent_yaml).map_err(io(&agent_path))?;
    let master = MasterConfig::from_yaml_str(&master_yaml, &master_path.display().to_string())?;
    let agent = AgentConfig::from_yaml_str(&agent_yaml, &agent_path.display().to_string())?;
    let snippet = python_snippet(&master_addr, export, &remote_root, &password);
    let example = w.join("example_mount.py");
    write_private(
        &example,
        &example_script(&master_addr, export, &remote_root, &password),
    )?;
    let mut perms = std::fs::metadata(&example)
        .map_err(io(&example))?
        .permissions();
    perms.set_mode(0o700);
    std::fs::set_permissions(&example, perms).map_err(io(&example))?;
    Ok((
        master,
        agent,
        Generated {
            master_addr,
            agent_addr,
            username: "admin".into(),
            password,
            remote_root,
            example,
            snippet,
        },
    ))
}

/// Runs `up` until SIGINT/SIGTERM.
pub async fn run(args: UpArgs) -> Result<(), UpError> {
    let (master_cfg, agent_cfg, generated) = prepare(&args)?;
    let master = crate::master::start(master_cfg).await?;
    let agent = crate::agent::start(&agent_cfg).await?;
    println!(
        "fluxon-fs up: master on {} (instance_key {MASTER_KEY}), agent on {} exporting `{}` = {}",
        master.addr,
        agent.addr,
        args.export_name,
        generated.remote_root.display()
    );
    println!(
        "admin password (also in {}): kept in the access DB as an argon2 hash",
        args.workdir.join("fs_master/admin_password").display()
    );
    println!(
        "\n# Python: mount the export into this process\n{}",
        generated.snippet
    );
    println!(
        "# or run: python {} /some/empty/dir",
        generated.example.display()
    );
    println!("fluxon-fs up: ready");
    wait_for_shutdown().await;
    agent.abort();
    master.stop().await;
    Ok(())
}

fn write_private(path: &Path, text: &str) -> Result<(), UpError> {
    std::fs::write(path, text).map_err(io(path))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io(path))
}

/// The generated admin password, reused on later runs (the access DB keeps the first one).
fn admin_password(path: &Path) -> Result<String, UpError> {
    random_hex_file(path, 12)
}

/// The content of `path` if it holds something, else `bytes` random bytes in hex written there
/// (mode 0600).
fn random_hex_file(path: &Path, bytes: usize) -> Result<String, UpError> {
    if let Ok(existing) = std::fs::read_to_string(path) {
        let existing = existing.trim().to_string();
        if !existing.is_empty() {
            return Ok(existing);
        }
    }
    let mut bytes = vec![0u8; bytes];
    getrandom::fill(&mut bytes).map_err(|e| UpError::Io {
        path: path.display().to_string(),
        source: std::io::Error::other(e.to_string()),
    })?;
    let password = bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    });
    write_private(path, &password)?;
    Ok(password)
}

const IMPORTS: &str = "from fluxon_py.config import FluxonKvClientConfig
from fluxon_py.kvclient import new_store
from fluxon_py.fluxon_fs import FluxonFsPatcher";

/// The seed's call order, mounting at the Python expression `mount_dir`.
fn setup_lines(
    master_addr: &str,
    export: &str,
    root: &Path,
    password: &str,
    mount_dir: &str,
) -> Vec<String> {
    vec![
        format!("store = new_store(FluxonKvClientConfig(master_addr=\"{master_addr}\"))"),
        "patcher = FluxonFsPatcher(store)".into(),
        format!("patcher.set_master_config_yaml(\"fluxon_fs:\\n  master:\\n    instance_key: {MASTER_KEY}\\n\")"),
        "patcher.set_cache_config_yaml(".into(),
        format!("    \"fluxon_fs:\\n  cache:\\n    exports:\\n      {export}:\\n\""),
        format!(
            "    \"        remote_root_dir_abs: {}\\n        nodes: [{AGENT_KEY}]\\n\"",
            root.display()
        ),
        ")".into(),
        format!("patcher.set_request_identity(\"admin\", \"{password}\")"),
        "patcher.install()".into(),
        format!("patcher.mount_remote_dir(local_mount_dir_abs={mount_dir}, export_name=\"{export}\")"),
    ]
}

fn python_snippet(master_addr: &str, export: &str, root: &Path, password: &str) -> String {
    let lines = setup_lines(master_addr, export, root, password, "\"/tmp/fluxon_mount\"");
    format!("{IMPORTS}\n\n{}\n", lines.join("\n"))
}

fn example_script(master_addr: &str, export: &str, root: &Path, password: &str) -> String {
    let setup: String = setup_lines(master_addr, export, root, password, "local_dir")
        .iter()
        .map(|l| format!("    {l}\n"))
        .collect();
    format!(
        r#"#!/usr/bin/env python3
"""Mount the fluxon-fs export started by `fluxon-fs up` (generated file).

Run it:     python example_mount.py /some/empty/dir   (mounts, writes, reads back)
Import it:  from example_mount import mount; patcher = mount("/some/empty/dir")
            ... any Python code on /some/empty/dir ...; patcher.uninstall()
"""
import os
import sys

{IMPORTS}


def mount(local_dir):
    """Installs the patcher and mounts the export at `local_dir`; returns the patcher."""
    local_dir = os.path.abspath(local_dir)
{setup}    return patcher


def main():
    if len(sys.argv) != 2:
        print(f"usage: {{sys.argv[0]}} LOCAL_MOUNT_DIR", file=sys.stderr)
        return 2
    local_dir = os.path.abspath(sys.argv[1])
    patcher = mount(local_dir)
    path = os.path.join(local_dir, "hello_from_example_mount.txt")
    with open(path, "w") as f:
        f.write("hello through fluxon-fs\n")
    with open(path) as f:
        content = f.read()
    print(f"wrote and read back {{path}}: {{content!r}}")
    print("entries:", sorted(os.listdir(local_dir)))
    patcher.uninstall()
    return 0 if content == "hello through fluxon-fs\n" else 1


if __name__ == "__main__":
    sys.exit(main())
"#
    )
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prepare_writes_configs_and_a_valid_example() {
        let dir = tempfile::tempdir().unwrap();
        let args = UpArgs {
            workdir: dir.path().join("w"),
            master_port: 34181,
            agent_port: 34190,
            export_name: "demo-export".into(),
            host: "127.0.0.1".into(),
        };
        let (_, _, generated) = prepare(&args).unwrap();
        let script = std::fs::read_to_string(&generated.example).unwrap();
        assert!(script.contains("def mount(local_dir):"));
        assert!(script.contains(&generated.password));
        assert!(script.contains("    patcher.install()"));
        // Second run reuses the password (the access DB keeps the first one).
        let (_, _, again) = prepare(&args).unwrap();
        assert_eq!(again.password, generated.password);
    }
}
