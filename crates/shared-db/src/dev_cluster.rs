//! `shared-db dev-cluster`: a local cluster on one machine for development and tests. Starts N
//! `shared-db serve` child processes, each with its own data dir and managed engine (node *i*
//! on MySQL 3307+i−1, internal API 7071+i−1, UI 8008+i−1 unless other bases are given), writes
//! `<data dir>/nodes.json` (mode 0600) with each node's pid, ports and the exact argv and
//! environment that start it again, and stops the nodes on SIGINT/SIGTERM. A node that dies is
//! reported, never restarted.

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, clap::Args)]
pub struct DevClusterArgs {
    /// Number of nodes.
    #[arg(long, default_value_t = 3)]
    pub nodes: u16,
    /// Directory for the cluster: one `node<i>/` data dir per node, the secret, `nodes.json`.
    #[arg(long)]
    pub data_dir: PathBuf,
    /// MySQL port of node 1 (node i gets this + i − 1; 0: any free port).
    #[arg(long, default_value_t = 3307)]
    pub mysql_port: u16,
    /// Internal API port of node 1 (0: any free port).
    #[arg(long, default_value_t = 7071)]
    pub api_port: u16,
    /// UI port of node 1 (0: any free port).
    #[arg(long, default_value_t = 8008)]
    pub ui_port: u16,
    /// Seconds to wait for every node to be ready.
    #[arg(long, default_value_t = 180)]
    pub start_timeout: u64,
    /// Extra `shared-db serve` arguments for every node (after `--`).
    #[arg(last = true)]
    pub serve_args: Vec<String>,
}

/// One node in `nodes.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DevNode {
    pub id: u64,
    pub pid: u32,
    pub mysql_port: u16,
    pub api_port: u16,
    pub ui_port: u16,
    pub data_dir: PathBuf,
    /// Standard output and error of the node (appended).
    pub log: PathBuf,
    /// The exact command line (argv[0] is the binary).
    pub argv: Vec<String>,
    /// The complete environment the node runs with.
    pub env: BTreeMap<String, String>,
}

/// `nodes.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DevClusterFile {
    pub cluster_secret_file: PathBuf,
    pub client_user: String,
    pub client_password_file: PathBuf,
    pub nodes: Vec<DevNode>,
}

fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind(("127.0.0.1", 0)).map_err(|e| e.to_string())?;
    l.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
}

fn port(base: u16, i: u16) -> Result<u16, String> {
    if base == 0 {
        free_port()
    } else {
        base.checked_add(i - 1)
            .ok_or_else(|| format!("port {base}+{} is out of range", i - 1))
    }
}

/// Reads a secret file or creates it with `bytes` random bytes (hex, mode 0600).
fn secret_file(path: &Path, bytes: usize) -> Result<String, String> {
    if let Ok(s) = std::fs::read_to_string(path) {
        if !s.trim().is_empty() {
            return Ok(s.trim().to_string());
        }
    }
    let s = crate::private_file::random_hex(bytes).map_err(|e| e.to_string())?;
    crate::private_file::write_private(path, s.as_bytes())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(s)
}

/// Starts a node from its `nodes.json` record (argv and env exactly), output appended to its log.
pub fn spawn(node: &DevNode) -> Result<Child, String> {
    let (prog, args) = node.argv.split_first().ok_or("empty argv")?;
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&node.log)
        .map_err(|e| format!("{}: {e}", node.log.display()))?;
    let err = out.try_clone().map_err(|e| e.to_string())?;
    let mut cmd = Command::new(prog);
    cmd.args(args)
        .env_clear()
        .envs(&node.env)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    // The node stops cleanly if dev-cluster itself dies.
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn().map_err(|e| format!("starting {prog}: {e}"))
}

pub async fn run(args: DevClusterArgs) -> Result<(), String> {
    if args.nodes == 0 {
        return Err("--nodes must be at least 1".into());
    }
    let dir = &args.data_dir;
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let dir = dir
        .canonicalize()
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    let secret_path = dir.join("cluster.secret");
    secret_file(&secret_path, 32)?;
    let password_path = dir.join("client-password");
    let password = secret_file(&password_path, 12)?;
    let exe = std::env::current_exe().map_err(|e| format!("own executable: {e}"))?;

    let mut ports = Vec::new();
    for i in 1..=args.nodes {
        ports.push((
            port(args.mysql_port, i)?,
            port(args.api_port, i)?,
            port(args.ui_port, i)?,
        ));
    }
    let peers = ports
        .iter()
        .enumerate()
        .map(|(i, (_, api, _))| format!("{}=127.0.0.1:{api}", i + 1))
        .collect::<Vec<_>>()
        .join(",");

    let mut nodes = Vec::new();
    let mut children = Vec::new();
    for (i, (mysql, api, ui)) in ports.iter().enumerate() {
        let id = i as u64 + 1;
        let data_dir = dir.join(format!("node{id}"));
        std::fs::create_dir_all(&data_dir).map_err(|e| format!("{}: {e}", data_dir.display()))?;
        let mut env = BTreeMap::new();
        for key in ["PATH", "HOME", "TMPDIR", "RUST_LOG", "LANG"] {
            if let Ok(v) = std::env::var(key) {
                env.insert(key.to_string(), v);
            }
        }
        let mut set = |k: &str, v: String| {
            env.insert(k.to_string(), v);
        };
        set("DATA_DIR", data_dir.display().to_string());
        set("NODE_ID", id.to_string());
        set("EXT_DB_PORT", mysql.to_string());
        set("API_PORT", api.to_string());
        set("UI_PORT", ui.to_string());
        set("BIND_ADDRESS", "127.0.0.1".into());
        set("ADVERTISE_HOST", "127.0.0.1".into());
        set("CLUSTER_SECRET_FILE", secret_path.display().to_string());
        set("DB_INIT_PASS", password.clone());
        if args.nodes > 1 {
            set("PEERS", peers.clone());
        }
        let mut argv = vec![exe.display().to_string(), "serve".to_string()];
        argv.extend(args.serve_args.iter().cloned());
        let mut node = DevNode {
            id,
            pid: 0,
            mysql_port: *mysql,
            api_port: *api,
            ui_port: *ui,
            log: data_dir.join("shared-db.log"),
            data_dir,
            argv,
            env,
        };
        let child = spawn(&node)?;
        node.pid = child.id();
        children.push((id, Some(child)));
        nodes.push(node);
    }
    let file = DevClusterFile {
        cluster_secret_file: secret_path.clone(),
        client_user: "root".into(),
        client_password_file: password_path.clone(),
        nodes: nodes.clone(),
    };
    let json = serde_json::to_vec_pretty(&file).map_err(|e| e.to_string())?;
    let nodes_json = dir.join("nodes.json");
    crate::private_file::write_private(&nodes_json, &json)
        .map_err(|e| format!("{}: {e}", nodes_json.display()))?;

    let ready = wait_ready(
        &nodes,
        &mut children,
        Duration::from_secs(args.start_timeout),
    )
    .await;
    if let Err(e) = ready {
        stop_all(&mut children).await;
        return Err(e);
    }
    println!(
        "shared-db dev cluster of {} node(s) is running (data in {}).",
        args.nodes,
        dir.display()
    );
    for n in &nodes {
        println!(
            "  node {}: mysql -h 127.0.0.1 -P {} -u root -p   (pid {}, internal 127.0.0.1:{}, status http://127.0.0.1:{}/status, log {})",
            n.id, n.mysql_port, n.pid, n.api_port, n.ui_port, n.log.display()
        );
    }
    println!("Password: in {}", password_path.display());
    println!(
        "Cluster status: CLUSTER_SECRET_FILE={} {} cluster status --node 127.0.0.1:{}",
        secret_path.display(),
        exe.display(),
        nodes[0].api_port
    );
    println!(
        "Each node's command and environment: {} (a killed node is not restarted).",
        nodes_json.display()
    );
    println!("dev-cluster is ready. Stop it with Ctrl-C.");

    supervise(&mut children).await;
    stop_all(&mut children).await;
    Ok(())
}

async fn wait_ready(
    nodes: &[DevNode],
    children: &mut [(u64, Option<Child>)],
    timeout: Duration,
) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    let mut pending: Vec<&DevNode> = nodes.iter().collect();
    while !pending.is_empty() {
        pending.retain(|n| {
            !std::fs::read_to_string(&n.log)
                .unwrap_or_default()
                .contains("shared-db is ready")
        });
        for (id, child) in children.iter_mut() {
            if let Some(c) = child {
                if let Ok(Some(status)) = c.try_wait() {
                    let log = nodes.iter().find(|n| n.id == *id).map(|n| &n.log);
                    let tail = log.map(|l| crate::engine::log_tail(l)).unwrap_or_default();
                    return Err(format!(
                        "node {id} exited during start ({status}); last lines of its log:\n{tail}"
                    ));
                }
            }
        }
        if Instant::now() > deadline {
            return Err(format!(
                "nodes {:?} not ready within {timeout:?}",
                pending.iter().map(|n| n.id).collect::<Vec<_>>()
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// Until SIGINT/SIGTERM: reports nodes that exit (they are not restarted).
async fn supervise(children: &mut [(u64, Option<Child>)]) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return;
    };
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            _ = int.recv() => return,
            _ = term.recv() => return,
            _ = tick.tick() => {
                for (id, slot) in children.iter_mut() {
                    if let Some(c) = slot {
                        if let Ok(Some(status)) = c.try_wait() {
                            eprintln!("dev-cluster: node {id} (pid {}) exited ({status}); not restarting it", c.id());
                            *slot = None;
                        }
                    }
                }
            }
        }
    }
}

/// SIGTERM to every running node, then SIGKILL to those still running after 30 s.
async fn stop_all(children: &mut [(u64, Option<Child>)]) {
    for (_, c) in children
        .iter_mut()
        .filter_map(|(i, c)| c.as_mut().map(|c| (i, c)))
    {
        // SAFETY: kill(2) on our own child, not yet reaped.
        unsafe {
            libc::kill(c.id() as libc::pid_t, libc::SIGTERM);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut running = 0;
        for (_, slot) in children.iter_mut() {
            if let Some(c) = slot {
                match c.try_wait() {
                    Ok(Some(_)) | Err(_) => *slot = None,
                    Ok(None) => running += 1,
                }
            }
        }
        if running == 0 {
            return;
        }
        if Instant::now() > deadline {
            for (id, slot) in children.iter_mut() {
                if let Some(c) = slot {
                    eprintln!("dev-cluster: node {id} did not stop in 30 s; killing it");
                    let _ = c.kill();
                    let _ = c.wait();
                }
            }
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
