//! Test support: an in-process master and agent on a temp directory, with users for every
//! access level, and clients that log in as them.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fluxon_fs::agent::RunningAgent;
use fluxon_fs::config::{AgentConfig, ConfigFile, MasterConfig};
use fluxon_fs::master::RunningMaster;
use fluxon_fs_client::{Client, ClientOptions};

pub const EXPORT: &str = "demo-export";
/// The agent join secret of the test master and agent.
pub const JOIN_SECRET: &str = "test-join-secret-0123456789";

/// Users: admin (manager), rw (whole export), ro (read only), pre (read_write on docs/, read on
/// pub/), nobody (no scopes).
pub fn master_yaml(listen: &str, db: &Path) -> String {
    format!(
        r#"fluxon_fs:
  master:
    instance_key: test_master
    pull_interval_ms: 200
    agent_join_secret: {JOIN_SECRET}
  master_panel:
    listen_addr: {listen}
    access_db_path: {db}
    bootstrap_access_model:
      users:
        - {{username: admin, password: admin-pw, can_manage_users: true}}
        - {{username: rw, password: rw-pw}}
        - {{username: ro, password: ro-pw}}
        - {{username: pre, password: pre-pw}}
        - {{username: nobody, password: nobody-pw}}
      scope_access:
        - {{export_name: {EXPORT}, prefix: "", mode: read_write, usernames: [rw]}}
        - {{export_name: {EXPORT}, prefix: "", mode: read, usernames: [ro]}}
        - {{export_name: {EXPORT}, prefix: "docs/", mode: read_write, usernames: [pre]}}
        - {{export_name: {EXPORT}, prefix: "pub/", mode: read, usernames: [pre]}}
"#,
        db = db.display()
    )
}

pub fn agent_yaml(listen: &str, master: &str, root: &Path) -> String {
    format!(
        r#"fluxon_fs:
  master:
    instance_key: test_master
  agent:
    instance_key: test_agent
    listen_addr: {listen}
    master_addr: {master}
    join_secret: {JOIN_SECRET}
  cache:
    exports:
      {EXPORT}:
        remote_root_dir_abs: {root}
"#,
        root = root.display()
    )
}

/// A master and an agent running in this process.
pub struct Stack {
    pub dir: tempfile::TempDir,
    pub root: PathBuf,
    pub master: RunningMaster,
    pub agent: RunningAgent,
    pub runtime: tokio::runtime::Runtime,
}

impl Stack {
    pub fn start() -> Stack {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("remote_root");
        std::fs::create_dir_all(&root).unwrap();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let master_cfg = MasterConfig::from_yaml_str(
            &master_yaml("127.0.0.1:0", &dir.path().join("access.db")),
            "master.yaml",
        )
        .unwrap();
        let master = runtime
            .block_on(fluxon_fs::master::start(master_cfg))
            .unwrap();
        let agent_cfg = AgentConfig::from_yaml_str(
            &agent_yaml("127.0.0.1:0", &master.addr.to_string(), &root),
            "agent.yaml",
        )
        .unwrap();
        let agent = runtime
            .block_on(fluxon_fs::agent::start(&agent_cfg))
            .unwrap();
        let stack = Stack {
            dir,
            root,
            master,
            agent,
            runtime,
        };
        stack.wait_online();
        stack
    }

    pub fn master_addr(&self) -> String {
        self.master.addr.to_string()
    }

    /// Polls until the agent's export is in the master's snapshot.
    pub fn wait_online(&self) {
        let client = self.client("admin", "admin-pw");
        wait_until(Duration::from_secs(10), "export online", || {
            client
                .routes()
                .map(|r| r.contains_key(EXPORT))
                .unwrap_or(false)
        });
    }

    pub fn client(&self, user: &str, password: &str) -> Client {
        Client::connect(&self.master_addr(), user, password, options()).unwrap()
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }
}

pub fn options() -> ClientOptions {
    ClientOptions {
        timeout: Duration::from_secs(5),
        ..ClientOptions::default()
    }
}

/// Polls `cond` until it holds or `limit` passes (then panics naming `what`).
pub fn wait_until(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("timed out after {limit:?} waiting for {what}");
}

pub fn errno<T: std::fmt::Debug>(result: Result<T, fluxon_fs_client::ClientError>) -> i32 {
    match result {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => e.errno().unwrap_or(0),
    }
}
