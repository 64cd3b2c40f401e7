//! Node configuration: command-line flags, the upstream environment variables, and an optional
//! TOML config file, in that order of precedence, then defaults.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::cluster::auth::ClusterSecret;
use crate::cluster::discovery::PeerSpec;

/// `shared-db serve` options. Every field is optional here; [`ServeArgs::resolve`] applies the
/// config file and the defaults.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServeArgs {
    /// TOML config file with any of the keys below (snake_case names of the long flags).
    #[arg(long, env = "SHARED_DB_CONFIG")]
    pub config: Option<PathBuf>,
    /// Directory for the node's state (managed engine datadir, TLS material, secrets).
    #[arg(long, env = "DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// External engine as `host`, `host:port` (default port 3306) or a Unix socket path.
    /// Unset: managed engine.
    #[arg(long = "engine", env = "DB_COMPONENT_NAME")]
    pub engine: Option<String>,
    /// User clients log in as (and, for an external engine, the engine account).
    #[arg(long, env = "DB_USER")]
    pub db_user: Option<String>,
    /// Password of DB_USER. Unset: one is generated and stored in the data dir.
    #[arg(long, env = "DB_INIT_PASS", hide_env_values = true)]
    pub db_init_pass: Option<String>,
    /// Database created at start.
    #[arg(long, env = "INIT_DB_NAME")]
    pub init_db_name: Option<String>,
    /// MySQL protocol port.
    #[arg(long, env = "EXT_DB_PORT")]
    pub port: Option<u16>,
    /// Address the MySQL and HTTP listeners bind to.
    #[arg(long, env = "BIND_ADDRESS")]
    pub bind: Option<IpAddr>,
    /// UI / management HTTP port (`GET /status`).
    #[arg(long, env = "UI_PORT")]
    pub ui_port: Option<u16>,
    /// Internal cluster API port (used by replication).
    #[arg(long, env = "API_PORT")]
    pub api_port: Option<u16>,
    /// Comma list of IPs and CIDRs allowed to log in. Unset or empty: any address.
    #[arg(long, env = "WHITELIST")]
    pub whitelist: Option<String>,
    /// Only the leader accepts client logins (a single node is always the leader).
    #[arg(long, env = "AUTH_MASTER_ONLY")]
    pub auth_master_only: Option<bool>,
    /// A node cut off from the cluster majority (no leader contact for
    /// `MAJORITY_CONTACT_MS`) keeps serving reads (possibly stale) when true; by default it
    /// refuses every statement with an error until it is back in touch.
    #[arg(long, env = "ISOLATED_READS")]
    pub isolated_reads: Option<bool>,
    /// How long without contact with the majority makes a node isolated (ms, default 3000).
    #[arg(long, env = "MAJORITY_CONTACT_MS")]
    pub majority_contact_ms: Option<u64>,
    /// PEM certificate for TLS. Unset: a self-signed one is generated into the data dir.
    #[arg(long, env = "TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for `--tls-cert`.
    #[arg(long, env = "TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Refuse clients that do not use TLS.
    #[arg(long, env = "REQUIRE_TLS")]
    pub require_tls: Option<bool>,
    /// Client connection limit.
    #[arg(long, env = "MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Engine connection limit (pool size).
    #[arg(long, env = "ENGINE_POOL_SIZE")]
    pub engine_pool_size: Option<usize>,
    /// Seconds an idle client connection is kept.
    #[arg(long, env = "IDLE_TIMEOUT_SECS")]
    pub idle_timeout_secs: Option<u64>,
    /// Seconds a write to a client may stall (a client that stops reading its results).
    #[arg(long, env = "WRITE_TIMEOUT_SECS")]
    pub write_timeout_secs: Option<u64>,
    /// Seconds a client has to complete its login.
    #[arg(long, env = "LOGIN_TIMEOUT_SECS")]
    pub login_timeout_secs: Option<u64>,
    /// Largest packet accepted from a client, in bytes.
    #[arg(long, env = "MAX_ALLOWED_PACKET")]
    pub max_allowed_packet: Option<usize>,
    /// Managed engine: InnoDB buffer pool size (e.g. `256M`, `1G`).
    #[arg(long, env = "ENGINE_BUFFER_POOL")]
    pub engine_buffer_pool: Option<String>,
    /// Managed engine: `on` (InnoDB fsyncs its log at every commit), `off` (it writes the log
    /// at every commit and fsyncs it once a second) or `auto` (the default: `off` with
    /// `REPLICATION=raft`, whose log is fsynced on a majority before a write is acknowledged
    /// and replays what an engine lost in an OS crash; `on` otherwise).
    #[arg(long, env = "ENGINE_FSYNC")]
    pub engine_fsync: Option<String>,
    /// Managed engine: further `mariadbd` options, separated by spaces (e.g.
    /// `--innodb-log-file-size=1G`).
    #[arg(long, env = "ENGINE_ARGS", allow_hyphen_values = true)]
    pub engine_args: Option<String>,
    /// `raft` (writes ordered through the Raft cluster; the default when peers, discovery,
    /// joining or a cluster secret are configured), `off` (the default otherwise: every
    /// statement runs on the local engine as sent) or `single` (a one-node in-process log).
    #[arg(long, env = "REPLICATION")]
    pub replication: Option<String>,
    /// Threads serving client connections (default: half the cores, at least 1).
    #[arg(long, env = "WORKER_THREADS")]
    pub worker_threads: Option<usize>,
    /// Raft node id (unique in the cluster). Unset: 1 for a node alone, otherwise a random id
    /// generated once and kept in `<data dir>/raft/node-id`.
    #[arg(long, env = "NODE_ID")]
    pub node_id: Option<u64>,
    /// Comma list of the other nodes' internal API: `host[:port]` or `id=host[:port]`
    /// (port default API_PORT).
    #[arg(long, env = "PEERS")]
    pub peers: Option<String>,
    /// Shared secret every node-to-node request proves (HMAC). Required with peers.
    #[arg(long, env = "CLUSTER_SECRET", hide_env_values = true)]
    pub cluster_secret: Option<String>,
    /// File holding the cluster secret (instead of CLUSTER_SECRET).
    #[arg(long, env = "CLUSTER_SECRET_FILE")]
    pub cluster_secret_file: Option<PathBuf>,
    /// Host or IP under which peers and clients reach this node (default: the bind address,
    /// or 127.0.0.1 when binding to all addresses).
    #[arg(long, env = "ADVERTISE_HOST")]
    pub advertise_host: Option<String>,
    /// Flux app name: peers are discovered from the Flux API's locations of this app.
    #[arg(long, env = "DB_APPNAME")]
    pub db_appname: Option<String>,
    /// Base URL of the Flux API used for discovery.
    #[arg(long, env = "FLUX_API_URL")]
    pub flux_api_url: Option<String>,
    /// Join an existing cluster (learner, caught up, then voter) instead of forming one.
    #[arg(long, env = "JOIN")]
    pub join: Option<bool>,
    /// Raft heartbeat interval in milliseconds.
    #[arg(long, env = "RAFT_HEARTBEAT_MS")]
    pub raft_heartbeat_ms: Option<u64>,
    /// Lower bound of the randomised raft election timeout, in milliseconds.
    #[arg(long, env = "RAFT_ELECTION_MIN_MS")]
    pub raft_election_min_ms: Option<u64>,
    /// Upper bound of the randomised raft election timeout, in milliseconds.
    #[arg(long, env = "RAFT_ELECTION_MAX_MS")]
    pub raft_election_max_ms: Option<u64>,
    /// Take a snapshot (and compact the log) every this many log entries.
    #[arg(long, env = "SNAPSHOT_LOGS")]
    pub snapshot_logs: Option<u64>,
    /// Log entries kept behind the latest snapshot (for followers that are a little behind).
    #[arg(long, env = "RAFT_KEEP_LOGS")]
    pub raft_keep_logs: Option<u64>,
    /// A node that finds itself diverged re-syncs from the leader's snapshot by itself
    /// (default: it waits for `shared-db cluster resync`).
    #[arg(long, env = "AUTO_RESYNC")]
    pub auto_resync: Option<bool>,
    /// The leader sends new entries to followers while its own log sync runs (default true;
    /// `false` replicates only after it, as openraft alone does).
    #[arg(long, env = "RAFT_EARLY_REPLICATION")]
    pub raft_early_replication: Option<bool>,
}

/// The config file: the same keys as the long flags.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    data_dir: Option<PathBuf>,
    engine: Option<String>,
    db_user: Option<String>,
    db_init_pass: Option<String>,
    init_db_name: Option<String>,
    port: Option<u16>,
    bind: Option<IpAddr>,
    ui_port: Option<u16>,
    api_port: Option<u16>,
    whitelist: Option<String>,
    auth_master_only: Option<bool>,
    isolated_reads: Option<bool>,
    majority_contact_ms: Option<u64>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    require_tls: Option<bool>,
    max_connections: Option<usize>,
    engine_pool_size: Option<usize>,
    idle_timeout_secs: Option<u64>,
    login_timeout_secs: Option<u64>,
    write_timeout_secs: Option<u64>,
    max_allowed_packet: Option<usize>,
    engine_buffer_pool: Option<String>,
    engine_fsync: Option<String>,
    engine_args: Option<String>,
    node_id: Option<u64>,
    peers: Option<String>,
    cluster_secret: Option<String>,
    cluster_secret_file: Option<PathBuf>,
    advertise_host: Option<String>,
    db_appname: Option<String>,
    flux_api_url: Option<String>,
    join: Option<bool>,
    raft_heartbeat_ms: Option<u64>,
    raft_election_min_ms: Option<u64>,
    raft_election_max_ms: Option<u64>,
    snapshot_logs: Option<u64>,
    raft_keep_logs: Option<u64>,
    auto_resync: Option<bool>,
    raft_early_replication: Option<bool>,
    replication: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid {key}: {message}")]
    Invalid { key: &'static str, message: String },
}

/// Where the engine is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EngineMode {
    Managed,
    External {
        host: String,
        port: u16,
    },
    /// An engine on this host reached through its Unix socket.
    ExternalSocket(PathBuf),
}

/// Fully resolved node settings.
#[derive(Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub engine: EngineMode,
    pub db_user: String,
    /// `None`: generate (or reuse) a password stored in the data dir.
    pub db_init_pass: Option<String>,
    pub init_db_name: String,
    pub bind: IpAddr,
    pub port: u16,
    pub ui_port: u16,
    pub api_port: u16,
    pub whitelist: String,
    pub auth_master_only: bool,
    pub isolated_reads: bool,
    pub majority_contact: Duration,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub require_tls: bool,
    pub max_connections: usize,
    pub engine_pool_size: usize,
    pub idle_timeout: Duration,
    pub login_timeout: Duration,
    pub write_timeout: Duration,
    pub max_allowed_packet: usize,
    pub engine_buffer_pool: String,
    /// The managed engine fsyncs its log at every commit.
    pub engine_fsync: bool,
    /// Further `mariadbd` options for the managed engine.
    pub engine_args: Vec<String>,
    pub cluster: ClusterConfig,
    pub replication: ReplicationMode,
}

/// Cluster settings as configured (see [`crate::cluster::ClusterSettings`] for the resolved
/// form a node runs with).
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    pub node_id: Option<u64>,
    pub peers: Vec<PeerSpec>,
    pub secret: Option<ClusterSecret>,
    pub advertise_host: Option<String>,
    pub db_appname: Option<String>,
    pub flux_api_url: String,
    pub join: bool,
    pub heartbeat: Duration,
    pub election_min: Duration,
    pub election_max: Duration,
    pub snapshot_logs: u64,
    pub keep_logs: u64,
    pub auto_resync: bool,
    pub early_replication: bool,
}

impl ClusterConfig {
    /// Peers, discovery or joining: this node takes part in a cluster of several.
    pub fn is_multi(&self) -> bool {
        !self.peers.is_empty() || self.db_appname.is_some() || self.join
    }
}

/// How a node replicates (`REPLICATION`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReplicationMode {
    /// No replication: statements run on the local engine as sent.
    #[default]
    Off,
    /// A one-node in-process log (no Raft state on disk; for tests and experiments).
    Single,
    /// The Raft cluster (a cluster of one when no peers are configured). The default whenever
    /// peers, discovery, joining or a cluster secret are configured.
    Raft,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("data_dir", &self.data_dir)
            .field("engine", &self.engine)
            .field("db_user", &self.db_user)
            .field("db_init_pass", &self.db_init_pass.as_ref().map(|_| "<set>"))
            .field("port", &self.port)
            .field("ui_port", &self.ui_port)
            .finish_non_exhaustive()
    }
}

/// Parses `host`, `host:port` (IPv6 as `[::1]:3306`) or an absolute Unix socket path.
pub fn parse_engine(spec: &str) -> Result<EngineMode, ConfigError> {
    let bad = |m: &str| ConfigError::Invalid {
        key: "DB_COMPONENT_NAME",
        message: format!("`{spec}`: {m}"),
    };
    let spec = spec.trim();
    if spec.is_empty() {
        return Ok(EngineMode::Managed);
    }
    if spec.starts_with('/') {
        return Ok(EngineMode::ExternalSocket(PathBuf::from(spec)));
    }
    let (host, port) = if let Some(rest) = spec.strip_prefix('[') {
        let (h, tail) = rest.split_once(']').ok_or_else(|| bad("missing `]`"))?;
        let port = match tail.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| bad("port is not a number"))?,
            None if tail.is_empty() => 3306,
            None => return Err(bad("unexpected text after `]`")),
        };
        (h.to_string(), port)
    } else {
        match spec.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') => (
                h.to_string(),
                p.parse().map_err(|_| bad("port is not a number"))?,
            ),
            _ => (spec.to_string(), 3306),
        }
    };
    if host.is_empty() {
        return Err(bad("empty host"));
    }
    Ok(EngineMode::External { host, port })
}

fn load_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

impl ServeArgs {
    pub fn resolve(self) -> Result<Config, ConfigError> {
        let f = match &self.config {
            Some(p) => load_file(p)?,
            None => FileConfig::default(),
        };
        let engine_spec = self.engine.or(f.engine).unwrap_or_default();
        let tls_cert = self.tls_cert.or(f.tls_cert);
        let tls_key = self.tls_key.or(f.tls_key);
        if tls_cert.is_some() != tls_key.is_some() {
            return Err(ConfigError::Invalid {
                key: "TLS_CERT/TLS_KEY",
                message: "give both the certificate and the key, or neither".into(),
            });
        }
        let whitelist = self.whitelist.or(f.whitelist).unwrap_or_default();
        crate::protocol::frontend::Whitelist::parse(&whitelist).map_err(|m| {
            ConfigError::Invalid {
                key: "WHITELIST",
                message: m,
            }
        })?;
        let max_connections = self.max_connections.or(f.max_connections).unwrap_or(1000);
        let api_port = self.api_port.or(f.api_port).unwrap_or(7071);
        let cluster = resolve_cluster(
            ClusterArgs {
                node_id: self.node_id.or(f.node_id),
                peers: self.peers.or(f.peers),
                secret: self.cluster_secret.or(f.cluster_secret),
                secret_file: self.cluster_secret_file.or(f.cluster_secret_file),
                advertise_host: self.advertise_host.or(f.advertise_host),
                db_appname: self.db_appname.or(f.db_appname),
                flux_api_url: self.flux_api_url.or(f.flux_api_url),
                join: self.join.or(f.join),
                heartbeat_ms: self.raft_heartbeat_ms.or(f.raft_heartbeat_ms),
                election_min_ms: self.raft_election_min_ms.or(f.raft_election_min_ms),
                election_max_ms: self.raft_election_max_ms.or(f.raft_election_max_ms),
                snapshot_logs: self.snapshot_logs.or(f.snapshot_logs),
                keep_logs: self.raft_keep_logs.or(f.raft_keep_logs),
                auto_resync: self.auto_resync.or(f.auto_resync),
                early_replication: self.raft_early_replication.or(f.raft_early_replication),
            },
            api_port,
        )?;
        let clustered = cluster.is_multi() || cluster.secret.is_some();
        let replication = match self.replication.or(f.replication).as_deref() {
            None | Some("") if clustered => ReplicationMode::Raft,
            None | Some("") | Some("off") => ReplicationMode::Off,
            Some("single") => ReplicationMode::Single,
            Some("raft") => ReplicationMode::Raft,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    key: "REPLICATION",
                    message: format!("`{other}`: expected `off`, `single` or `raft`"),
                })
            }
        };
        let engine_fsync = match self.engine_fsync.or(f.engine_fsync).as_deref() {
            None | Some("") | Some("auto") => replication != ReplicationMode::Raft,
            Some("on") => true,
            Some("off") => false,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    key: "ENGINE_FSYNC",
                    message: format!("`{other}`: expected `auto`, `on` or `off`"),
                })
            }
        };
        let engine_args = self
            .engine_args
            .or(f.engine_args)
            .map(|a| a.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default();
        Ok(Config {
            cluster,
            data_dir: self
                .data_dir
                .or(f.data_dir)
                .unwrap_or_else(|| PathBuf::from("shared-db-data")),
            engine: parse_engine(&engine_spec)?,
            db_user: self.db_user.or(f.db_user).unwrap_or_else(|| "root".into()),
            db_init_pass: self.db_init_pass.or(f.db_init_pass),
            init_db_name: self
                .init_db_name
                .or(f.init_db_name)
                .unwrap_or_else(|| "test_db".into()),
            bind: self.bind.or(f.bind).unwrap_or(IpAddr::from([0, 0, 0, 0])),
            port: self.port.or(f.port).unwrap_or(3307),
            ui_port: self.ui_port.or(f.ui_port).unwrap_or(8008),
            api_port,
            whitelist,
            auth_master_only: self
                .auth_master_only
                .or(f.auth_master_only)
                .unwrap_or(false),
            isolated_reads: self.isolated_reads.or(f.isolated_reads).unwrap_or(false),
            majority_contact: Duration::from_millis(
                self.majority_contact_ms
                    .or(f.majority_contact_ms)
                    .unwrap_or(3000)
                    .max(500),
            ),
            tls_cert,
            tls_key,
            require_tls: self.require_tls.or(f.require_tls).unwrap_or(false),
            max_connections,
            engine_pool_size: self
                .engine_pool_size
                .or(f.engine_pool_size)
                .unwrap_or(max_connections),
            idle_timeout: Duration::from_secs(
                self.idle_timeout_secs
                    .or(f.idle_timeout_secs)
                    .unwrap_or(28_800),
            ),
            login_timeout: Duration::from_secs(
                self.login_timeout_secs
                    .or(f.login_timeout_secs)
                    .unwrap_or(10)
                    .max(1),
            ),
            write_timeout: Duration::from_secs(
                self.write_timeout_secs
                    .or(f.write_timeout_secs)
                    .unwrap_or(60)
                    .max(1),
            ),
            max_allowed_packet: self
                .max_allowed_packet
                .or(f.max_allowed_packet)
                .unwrap_or(1 << 30),
            engine_buffer_pool: self
                .engine_buffer_pool
                .or(f.engine_buffer_pool)
                .unwrap_or_else(|| "256M".into()),
            engine_fsync,
            engine_args,
            replication,
        })
    }
}

struct ClusterArgs {
    node_id: Option<u64>,
    peers: Option<String>,
    secret: Option<String>,
    secret_file: Option<PathBuf>,
    advertise_host: Option<String>,
    db_appname: Option<String>,
    flux_api_url: Option<String>,
    join: Option<bool>,
    heartbeat_ms: Option<u64>,
    election_min_ms: Option<u64>,
    election_max_ms: Option<u64>,
    snapshot_logs: Option<u64>,
    keep_logs: Option<u64>,
    auto_resync: Option<bool>,
    early_replication: Option<bool>,
}

fn resolve_cluster(a: ClusterArgs, api_port: u16) -> Result<ClusterConfig, ConfigError> {
    let invalid = |key: &'static str, message: String| ConfigError::Invalid { key, message };
    let peers = crate::cluster::discovery::parse_peers(a.peers.as_deref().unwrap_or(""), api_port)
        .map_err(|m| invalid("PEERS", m))?;
    let secret_text = match (a.secret, a.secret_file) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                "CLUSTER_SECRET",
                "give CLUSTER_SECRET or CLUSTER_SECRET_FILE, not both".into(),
            ))
        }
        (Some(s), None) => Some(s),
        (None, Some(path)) => Some(
            std::fs::read_to_string(&path)
                .map_err(|e| invalid("CLUSTER_SECRET_FILE", format!("{}: {e}", path.display())))?,
        ),
        (None, None) => None,
    };
    let secret = secret_text
        .filter(|s| !s.trim().is_empty())
        .map(|s| ClusterSecret::new(&s).map_err(|m| invalid("CLUSTER_SECRET", m)))
        .transpose()?;
    let db_appname = a.db_appname.filter(|s| !s.trim().is_empty());
    let cfg = ClusterConfig {
        node_id: a.node_id,
        peers,
        secret,
        advertise_host: a.advertise_host.filter(|s| !s.trim().is_empty()),
        db_appname,
        flux_api_url: a
            .flux_api_url
            .unwrap_or_else(|| "https://api.runonflux.io".into()),
        join: a.join.unwrap_or(false),
        heartbeat: Duration::from_millis(a.heartbeat_ms.unwrap_or(150)),
        election_min: Duration::from_millis(a.election_min_ms.unwrap_or(500)),
        election_max: Duration::from_millis(a.election_max_ms.unwrap_or(900)),
        snapshot_logs: a.snapshot_logs.unwrap_or(10_000).max(1),
        keep_logs: a.keep_logs.unwrap_or(1_000),
        auto_resync: a.auto_resync.unwrap_or(false),
        early_replication: a.early_replication.unwrap_or(true),
    };
    if cfg.node_id == Some(0) {
        return Err(invalid("NODE_ID", "node ids start at 1".into()));
    }
    if cfg.is_multi() && cfg.secret.is_none() {
        return Err(invalid(
            "CLUSTER_SECRET",
            "a node with peers (PEERS, DB_APPNAME or JOIN) needs the shared cluster secret".into(),
        ));
    }
    if cfg.heartbeat.is_zero() || cfg.election_min <= cfg.heartbeat * 2 {
        return Err(invalid(
            "RAFT_HEARTBEAT_MS",
            "the heartbeat must be positive and under half the election timeout".into(),
        ));
    }
    if cfg.election_max <= cfg.election_min {
        return Err(invalid(
            "RAFT_ELECTION_MAX_MS",
            "must be above RAFT_ELECTION_MIN_MS".into(),
        ));
    }
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_specs() {
        assert_eq!(parse_engine("").unwrap(), EngineMode::Managed);
        assert_eq!(
            parse_engine("db").unwrap(),
            EngineMode::External {
                host: "db".into(),
                port: 3306
            }
        );
        assert_eq!(
            parse_engine("db:3310").unwrap(),
            EngineMode::External {
                host: "db".into(),
                port: 3310
            }
        );
        assert_eq!(
            parse_engine("[::1]:3310").unwrap(),
            EngineMode::External {
                host: "::1".into(),
                port: 3310
            }
        );
        assert_eq!(
            parse_engine("::1").unwrap(),
            EngineMode::External {
                host: "::1".into(),
                port: 3306
            }
        );
        assert!(parse_engine("db:x").is_err());
        assert_eq!(
            parse_engine("/run/mysqld/mysqld.sock").unwrap(),
            EngineMode::ExternalSocket("/run/mysqld/mysqld.sock".into())
        );
    }

    #[test]
    fn flags_beat_file_and_file_beats_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "port = 4000\nui_port = 9000\ndb_user = \"app\"\n").unwrap();
        let args = ServeArgs {
            config: Some(path.clone()),
            port: Some(5000),
            ..Default::default()
        };
        let c = args.resolve().unwrap();
        assert_eq!(c.port, 5000);
        assert_eq!(c.ui_port, 9000);
        assert_eq!(c.db_user, "app");
        assert_eq!(c.init_db_name, "test_db");
        assert_eq!(c.engine, EngineMode::Managed);

        std::fs::write(&path, "prot = 1\n").unwrap();
        let err = ServeArgs {
            config: Some(path),
            ..Default::default()
        }
        .resolve()
        .unwrap_err();
        assert!(err.to_string().contains("prot"), "{err}");
    }

    #[test]
    fn cluster_settings_need_a_secret_with_peers() {
        let err = ServeArgs {
            peers: Some("1=10.0.0.1,2=10.0.0.2:9000".into()),
            ..Default::default()
        }
        .resolve()
        .unwrap_err();
        assert!(err.to_string().contains("CLUSTER_SECRET"), "{err}");
        let c = ServeArgs {
            peers: Some("1=10.0.0.1,2=10.0.0.2:9000".into()),
            cluster_secret: Some("a-long-enough-secret".into()),
            api_port: Some(17071),
            ..Default::default()
        }
        .resolve()
        .unwrap();
        assert_eq!(c.cluster.peers[0].addr, "10.0.0.1:17071");
        assert_eq!(c.cluster.peers[1].id, Some(2));
        assert_eq!(c.cluster.heartbeat, Duration::from_millis(150));
        assert!(!format!("{:?}", c.cluster).contains("a-long-enough-secret"));
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("s");
        std::fs::write(&f, "file-secret-0123456789\n").unwrap();
        let c = ServeArgs {
            join: Some(true),
            cluster_secret_file: Some(f),
            ..Default::default()
        }
        .resolve()
        .unwrap();
        assert!(c.cluster.secret.is_some());
        let err = ServeArgs {
            raft_election_min_ms: Some(900),
            raft_election_max_ms: Some(500),
            ..Default::default()
        }
        .resolve()
        .unwrap_err();
        assert!(err.to_string().contains("RAFT_ELECTION_MAX_MS"), "{err}");
    }

    #[test]
    fn engine_fsync_follows_replication_unless_set() {
        let c = ServeArgs::default().resolve().unwrap();
        assert_eq!(c.replication, ReplicationMode::Off);
        assert!(c.engine_fsync, "an unreplicated engine is the only copy");
        let c = ServeArgs {
            replication: Some("raft".into()),
            engine_args: Some(" --innodb-log-file-size=1G  --skip-name-resolve ".into()),
            ..Default::default()
        }
        .resolve()
        .unwrap();
        assert!(
            !c.engine_fsync,
            "the Raft log holds what the engine could lose"
        );
        assert_eq!(
            c.engine_args,
            ["--innodb-log-file-size=1G", "--skip-name-resolve"]
        );
        let c = ServeArgs {
            replication: Some("raft".into()),
            engine_fsync: Some("on".into()),
            ..Default::default()
        }
        .resolve()
        .unwrap();
        assert!(c.engine_fsync);
        let err = ServeArgs {
            engine_fsync: Some("sometimes".into()),
            ..Default::default()
        }
        .resolve()
        .unwrap_err();
        assert!(err.to_string().contains("ENGINE_FSYNC"), "{err}");
    }

    #[test]
    fn invalid_values_are_named() {
        let err = ServeArgs {
            whitelist: Some("1.2.3.4, bogus".into()),
            ..Default::default()
        }
        .resolve()
        .unwrap_err();
        assert!(err.to_string().contains("WHITELIST"));
        let err = ServeArgs {
            tls_cert: Some("c.pem".into()),
            ..Default::default()
        }
        .resolve()
        .unwrap_err();
        assert!(err.to_string().contains("TLS_KEY"));
    }
}
