//! One shared-db node: resolves its engine (managed or external), builds the MySQL front end,
//! serves the MySQL and HTTP listeners, and shuts everything down in order.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mysql_common::constants::CapabilityFlags;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::cluster::contract::ReplicatedLog;
use crate::cluster::discovery::with_port;
use crate::cluster::{Cluster, ClusterSettings};
use crate::config::{Config, EngineMode, ReplicationMode};
use crate::engine::{EngineError, EngineState, ManagedEngine, ManagedEngineConfig};
use crate::protocol::auth::Verifier;
use crate::protocol::backend::{
    relayable_capabilities, Backend, EngineAddr, EngineInfo, EngineTarget,
};
use crate::protocol::errors::SqlError;
use crate::protocol::frontend::{Counters, Frontend, Limits, Registry, Whitelist};
use crate::protocol::handshake::LoginPolicy;
use crate::protocol::pool::BackendPool;
use crate::replication::{
    Replication, ReplicationEnv, ReplicationError, ReplicationProvider, SingleNodeProvider,
};

/// utf8mb4_general_ci, used until the engine tells us its default.
const DEFAULT_COLLATION: u8 = 45;

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("the external engine at {addr} is not usable: {reason}")]
    ExternalEngine { addr: String, reason: String },
    #[error("DB_INIT_PASS must be set when the engine is external (it is the engine account's password)")]
    ExternalNeedsPassword,
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error(transparent)]
    Replication(#[from] ReplicationError),
    #[error("data dir {path}: {source}")]
    DataDir {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Cluster(#[from] crate::cluster::ClusterError),
}

/// Engine health as shown in `/status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EngineHealth {
    Running,
    Unreachable,
    Restarting,
    Stopped,
}

/// What the HTTP API reads.
pub struct NodeState {
    pub frontend: Arc<Frontend>,
    pub engine_mode: &'static str,
    pub engine_version: String,
    pub mysql_port: u16,
    health: watch::Receiver<EngineHealth>,
    managed: Option<Arc<ManagedEngine>>,
    /// This node's raft (`REPLICATION=raft`; a cluster of one when it has no peers).
    pub cluster: Option<Arc<Cluster>>,
    pub auth_master_only: bool,
}

impl NodeState {
    pub fn engine_state(&self) -> EngineHealth {
        *self.health.borrow()
    }

    /// Pid of the managed `mariadbd`, if this node manages its engine and it runs.
    pub fn engine_pid(&self) -> Option<u32> {
        self.managed.as_ref().and_then(|m| m.pid())
    }
}

/// A started node; [`Node::shutdown`] stops it.
pub struct Node {
    pub state: Arc<NodeState>,
    pub mysql_addr: SocketAddr,
    pub http_addr: SocketAddr,
    /// The internal cluster API, served only when a cluster secret is configured.
    pub api_addr: Option<SocketAddr>,
    /// The password clients use, and where it came from (for the start-up hint).
    pub password_file: Option<std::path::PathBuf>,
    managed: Option<Arc<ManagedEngine>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Node {
    pub async fn start(config: Config) -> Result<Node, NodeError> {
        Self::start_with(config, None).await
    }

    /// Starts a node; with a provider (or `REPLICATION=single`) writes go through the
    /// replicated log.
    pub async fn start_with(
        config: Config,
        provider: Option<Box<dyn ReplicationProvider>>,
    ) -> Result<Node, NodeError> {
        std::fs::create_dir_all(&config.data_dir).map_err(|source| NodeError::DataDir {
            path: config.data_dir.clone(),
            source,
        })?;
        let (password, password_file) = client_password(&config)?;

        let external = match &config.engine {
            EngineMode::Managed => None,
            EngineMode::ExternalSocket(path) => Some(EngineAddr::Unix(path.clone())),
            EngineMode::External { host, port } => Some(EngineAddr::Tcp {
                host: host.clone(),
                port: *port,
            }),
        };
        let (target, managed, mode) = match external {
            None => {
                let mut cfg = ManagedEngineConfig::new(config.data_dir.clone());
                cfg.buffer_pool = config.engine_buffer_pool.clone();
                let flush = if config.engine_fsync { 1 } else { 2 };
                cfg.extra_args =
                    std::iter::once(format!("--innodb-flush-log-at-trx-commit={flush}"))
                        .chain(config.engine_args.iter().cloned())
                        .collect();
                cfg.max_connections =
                    u32::try_from(config.engine_pool_size + 50).unwrap_or(u32::MAX);
                let engine = ManagedEngine::start(cfg).await?;
                let target = EngineTarget {
                    addr: EngineAddr::Unix(engine.socket_path().to_path_buf()),
                    user: engine.user().to_string(),
                    password: engine.password().to_string(),
                    connect_timeout: Duration::from_secs(10),
                };
                (target, Some(Arc::new(engine)), "managed")
            }
            Some(addr) => {
                let pass = config
                    .db_init_pass
                    .clone()
                    .ok_or(NodeError::ExternalNeedsPassword)?;
                let target = EngineTarget {
                    addr,
                    user: config.db_user.clone(),
                    password: pass,
                    connect_timeout: Duration::from_secs(10),
                };
                (target, None, "external")
            }
        };

        let info = probe_engine(&target, &config.init_db_name).await?;
        let tls = crate::tls::acceptor(
            config.tls_cert.as_deref(),
            config.tls_key.as_deref(),
            &config.data_dir.join("tls"),
        )?;
        let policy = LoginPolicy {
            user: config.db_user.clone(),
            verifier: Verifier::from_password(&password),
            server_version: format!("{}-shared-db", info.version),
            capabilities: (relayable_capabilities() & info.capabilities)
                | CapabilityFlags::CLIENT_CONNECT_ATTRS
                | CapabilityFlags::CLIENT_PROTOCOL_41
                | CapabilityFlags::CLIENT_SECURE_CONNECTION
                | CapabilityFlags::CLIENT_PLUGIN_AUTH,
            collation: info.collation,
            tls: Some(tls),
            require_tls: config.require_tls,
            timeout: config.login_timeout,
        };
        let pool = BackendPool::new(
            target.clone(),
            config.engine_pool_size,
            Duration::from_secs(10),
        );
        let mysql_addr = SocketAddr::new(config.bind, config.port);
        let mysql = TcpListener::bind(mysql_addr)
            .await
            .map_err(|source| NodeError::Bind {
                addr: mysql_addr,
                source,
            })?;
        let mysql_addr = mysql.local_addr().unwrap_or(mysql_addr);
        // The internal API (served only with a cluster secret) and, in Raft mode, the cluster.
        let api = match (&config.cluster.secret, config.replication) {
            (Some(_), ReplicationMode::Raft) => {
                let addr = SocketAddr::new(config.bind, config.api_port);
                let l = TcpListener::bind(addr)
                    .await
                    .map_err(|source| NodeError::Bind { addr, source })?;
                Some(l)
            }
            _ => None,
        };
        let api_addr = api.as_ref().and_then(|l| l.local_addr().ok());
        let env = ReplicationEnv {
            engine: target.clone(),
            data_dir: config.data_dir.clone(),
            mysql_addr: mysql_addr.to_string(),
        };
        let mut cluster = None;
        let mut tasks: Vec<tokio::task::JoinHandle<()>> = Vec::new();
        let parts = match (provider, config.replication) {
            (Some(p), _) => Some(p.start(env).await?),
            (None, ReplicationMode::Single) => Some(
                Box::new(SingleNodeProvider { node_id: 1 })
                    .start(env)
                    .await?,
            ),
            (None, ReplicationMode::Raft) => {
                let settings = cluster_settings(
                    &config,
                    mysql_addr.port(),
                    api_addr.map_or(config.api_port, |a| a.port()),
                )?;
                let started = crate::raft_replication::start(settings, env, api)
                    .await
                    .map_err(|e| match e {
                        crate::raft_replication::RaftReplicationError::Cluster(c) => {
                            NodeError::Cluster(c)
                        }
                        crate::raft_replication::RaftReplicationError::Replication(r) => {
                            NodeError::Replication(r)
                        }
                    })?;
                cluster = Some(started.cluster);
                tasks.extend(started.api_task);
                Some(started.parts)
            }
            (None, ReplicationMode::Off) => None,
        };
        let replication = match parts {
            None => None,
            Some(parts) => {
                let r = Replication::from_parts(parts);
                // A node that leads at start commits its barrier before taking clients. A Raft
                // node leaves it to the background task: leadership it restored from disk may
                // be stale, and its barrier must follow a real election.
                let leading = cluster.is_none() && r.is_leader();
                if leading {
                    r.executor
                        .propose_barrier()
                        .await
                        .map_err(|e| ReplicationError(e.to_string()))?;
                }
                tasks.push(r.spawn_background(leading));
                Some(r)
            }
        };
        let frontend = Arc::new(Frontend {
            replication: replication
                .map(std::sync::OnceLock::from)
                .unwrap_or_default(),
            policy,
            login_gate: Default::default(),
            serve_gate: Default::default(),
            pool,
            whitelist: Whitelist::parse(&config.whitelist).unwrap_or_default(),
            limits: Limits {
                max_connections: config.max_connections,
                idle_timeout: config.idle_timeout,
                max_packet: config.max_allowed_packet,
                write_timeout: config.write_timeout,
            },
            registry: Registry::default(),
            counters: Counters::default(),
            connections: Default::default(),
        });

        let http_addr = SocketAddr::new(config.bind, config.ui_port);
        let http = TcpListener::bind(http_addr)
            .await
            .map_err(|source| NodeError::Bind {
                addr: http_addr,
                source,
            })?;
        let http_addr = http.local_addr().unwrap_or(http_addr);
        if let Some(c) = &cluster {
            if config.auth_master_only {
                let _ = frontend.login_gate.set(master_only_gate(Arc::clone(c)));
            }
            if !config.isolated_reads {
                let _ = frontend
                    .serve_gate
                    .set(majority_gate(Arc::clone(c), config.majority_contact));
            }
        }

        let (health_tx, health) = watch::channel(EngineHealth::Running);
        let state = Arc::new(NodeState {
            frontend: Arc::clone(&frontend),
            engine_mode: mode,
            engine_version: info.version.clone(),
            mysql_port: mysql_addr.port(),
            health,
            managed: managed.clone(),
            cluster: cluster.clone(),
            auth_master_only: config.auth_master_only,
        });
        tasks.push(tokio::spawn(accept_loop(mysql, Arc::clone(&frontend))));
        let app = crate::api::status::router(Arc::clone(&state));
        tasks.push(tokio::spawn(async move {
            if let Err(e) = axum::serve(http, app).await {
                tracing::error!(error = %e, "HTTP server stopped");
            }
        }));
        tasks.push(tokio::spawn(watch_engine(
            Arc::clone(&frontend),
            managed.as_ref().map(|m| m.subscribe()),
            health_tx,
        )));
        Ok(Node {
            state,
            mysql_addr,
            http_addr,
            api_addr,
            password_file,
            managed,
            tasks,
        })
    }

    /// Stops accepting clients, then stops a managed engine cleanly.
    pub async fn shutdown(self) {
        for t in &self.tasks {
            t.abort();
        }
        if let Some(c) = &self.state.cluster {
            c.shutdown().await;
        }
        if let Some(engine) = self.managed {
            engine.shutdown().await;
        }
    }
}

async fn accept_loop(listener: TcpListener, frontend: Arc<Frontend>) {
    loop {
        match listener.accept().await {
            Ok((tcp, peer)) => {
                tokio::spawn(crate::protocol::session::handle_connection(
                    Arc::clone(&frontend),
                    tcp,
                    peer,
                ));
            }
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Connects once to learn the engine's version, capabilities and collation, and creates
/// `INIT_DB_NAME`. Retries for a bounded time (an external engine may still be starting).
async fn probe_engine(target: &EngineTarget, init_db: &str) -> Result<EngineInfo, NodeError> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let attempt = async {
            let mut b =
                Backend::connect(target, relayable_capabilities(), DEFAULT_COLLATION, None).await?;
            let name = init_db.replace('`', "``");
            b.query_drop(&format!("CREATE DATABASE IF NOT EXISTS `{name}`"))
                .await?;
            Ok::<_, crate::protocol::backend::BackendError>(b.info.clone())
        };
        match attempt.await {
            Ok(info) => return Ok(info),
            Err(e) if tokio::time::Instant::now() < deadline => {
                tracing::warn!(engine = %target.addr, error = %e, "engine not usable yet; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => {
                return Err(NodeError::ExternalEngine {
                    addr: target.addr.to_string(),
                    reason: e.to_string(),
                })
            }
        }
    }
}

/// Keeps the health flag current and drops pooled connections when the engine goes away.
async fn watch_engine(
    frontend: Arc<Frontend>,
    managed: Option<watch::Receiver<EngineState>>,
    health: watch::Sender<EngineHealth>,
) {
    match managed {
        Some(mut rx) => loop {
            let h = match &*rx.borrow_and_update() {
                EngineState::Running => EngineHealth::Running,
                EngineState::Stopped => EngineHealth::Stopped,
                EngineState::Failed { .. } => EngineHealth::Unreachable,
                _ => EngineHealth::Restarting,
            };
            if h != EngineHealth::Running {
                frontend.pool.clear_idle();
            }
            let _ = health.send(h);
            if rx.changed().await.is_err() {
                return;
            }
        },
        None => {
            // One kept connection, pinged every 2 s (bounded), reopened when it fails.
            let mut probe: Option<Backend> = None;
            loop {
                let ok = match probe.as_mut() {
                    Some(b) => matches!(
                        tokio::time::timeout(Duration::from_secs(2), b.simple_command(0x0E, &[]))
                            .await,
                        Ok(Ok(_))
                    ),
                    None => false,
                };
                let ok = ok || {
                    probe = Backend::connect(
                        frontend.engine(),
                        CapabilityFlags::CLIENT_PROTOCOL_41,
                        DEFAULT_COLLATION,
                        None,
                    )
                    .await
                    .ok();
                    probe.is_some()
                };
                if !ok {
                    frontend.pool.clear_idle();
                }
                let _ = health.send(if ok {
                    EngineHealth::Running
                } else {
                    EngineHealth::Unreachable
                });
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    }
}

/// The client password: DB_INIT_PASS, or one generated once and kept in the data dir.
fn client_password(config: &Config) -> Result<(String, Option<std::path::PathBuf>), NodeError> {
    if let Some(p) = &config.db_init_pass {
        return Ok((p.clone(), None));
    }
    let path = config.data_dir.join("client-password");
    let io_err = |source| NodeError::DataDir {
        path: path.clone(),
        source,
    };
    if let Ok(existing) = std::fs::read_to_string(&path) {
        return Ok((existing.trim().to_string(), Some(path)));
    }
    let password = crate::private_file::random_hex(12).map_err(io_err)?;
    crate::private_file::write_private(&path, password.as_bytes()).map_err(io_err)?;
    Ok((password, Some(path)))
}

/// A node out of touch with the cluster majority for `within` refuses statements (reads could
/// be stale and writes could not commit), unless `ISOLATED_READS=true`.
fn majority_gate(cluster: Arc<Cluster>, within: Duration) -> crate::protocol::frontend::ServeGate {
    Arc::new(move || {
        if cluster.in_majority_contact(within) {
            return Ok(());
        }
        Err(SqlError::new(
            1290,
            "HY000",
            format!(
                "shared-db node {} has had no contact with the cluster majority for {} ms; it \
                 refuses statements until it is back in touch (ISOLATED_READS=true serves \
                 possibly stale reads)",
                cluster.node_id(),
                within.as_millis()
            ),
        ))
    })
}

/// AUTH_MASTER_ONLY: followers refuse logins with an error naming the leader.
fn master_only_gate(cluster: Arc<Cluster>) -> crate::protocol::frontend::LoginGate {
    Arc::new(move || {
        if cluster.is_leader() {
            return Ok(());
        }
        let msg = match cluster.leader() {
            Some(l) => format!(
                "AUTH_MASTER_ONLY: node {} is not the leader; connect to the leader, node {} at {}",
                cluster.node_id(),
                l.id,
                l.mysql_addr
            ),
            None => format!(
                "AUTH_MASTER_ONLY: node {} is not the leader and no leader is elected; retry shortly",
                cluster.node_id()
            ),
        };
        Err(SqlError::new(1290, "HY000", msg))
    })
}

/// Resolves this node's cluster identity and addresses.
fn cluster_settings(
    config: &Config,
    mysql_port: u16,
    api_port: u16,
) -> Result<ClusterSettings, NodeError> {
    let c = &config.cluster;
    let raft_dir = config.data_dir.join("raft");
    let node_id = match c.node_id {
        Some(id) => id,
        None if !c.is_multi() => 1,
        None => stored_node_id(&raft_dir)?,
    };
    let advertise_fixed = c.advertise_host.is_some() || !config.bind.is_unspecified();
    let host = c.advertise_host.clone().unwrap_or_else(|| {
        if config.bind.is_unspecified() {
            "127.0.0.1".into()
        } else {
            config.bind.to_string()
        }
    });
    let addr = |port: u16| with_port(&host, port).unwrap_or_else(|| format!("{host}:{port}"));
    Ok(ClusterSettings {
        node_id,
        raft_dir,
        internal_addr: addr(api_port),
        mysql_addr: addr(mysql_port),
        advertise_fixed,
        peers: c.peers.clone(),
        discovery: c
            .db_appname
            .clone()
            .map(|app_name| crate::cluster::settings::Discovery {
                app_name,
                api_url: c.flux_api_url.clone(),
            }),
        secret: c.secret.clone(),
        join: c.join,
        heartbeat: c.heartbeat,
        election_min: c.election_min,
        election_max: c.election_max,
        snapshot_logs: c.snapshot_logs,
        keep_logs: c.keep_logs,
        auto_resync: c.auto_resync,
        early_replication: c.early_replication,
    })
}

/// A random node id generated once and kept in `<raft dir>/node-id`.
fn stored_node_id(raft_dir: &std::path::Path) -> Result<u64, NodeError> {
    let path = raft_dir.join("node-id");
    let io_err = |source| NodeError::DataDir {
        path: path.clone(),
        source,
    };
    if let Ok(text) = std::fs::read_to_string(&path) {
        if let Ok(id) = text.trim().parse::<u64>() {
            return Ok(id);
        }
    }
    std::fs::create_dir_all(raft_dir).map_err(io_err)?;
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).map_err(|e| io_err(std::io::Error::other(e.to_string())))?;
    let id = (u64::from_le_bytes(b) >> 2).max(2);
    crate::private_file::write_private(&path, id.to_string().as_bytes()).map_err(io_err)?;
    Ok(id)
}
