//! Node configuration: command-line flags, the upstream environment variables, and an optional
//! TOML config file, in that order of precedence, then defaults.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

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
    /// `off` (default: every statement runs on the local engine as sent) or `single` (a
    /// one-node replicated log: writes go through the replication write path and `flux_meta`).
    #[arg(long, env = "REPLICATION")]
    pub replication: Option<String>,
    /// Threads serving client connections (default: half the cores, at least 1).
    #[arg(long, env = "WORKER_THREADS")]
    pub worker_threads: Option<usize>,
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
    pub replication: ReplicationMode,
}

/// How a node replicates when no cluster provider is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReplicationMode {
    /// No replication: statements run on the local engine as sent.
    #[default]
    Off,
    /// A one-node in-process log.
    Single,
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
        Ok(Config {
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
            api_port: self.api_port.or(f.api_port).unwrap_or(7071),
            whitelist,
            auth_master_only: self
                .auth_master_only
                .or(f.auth_master_only)
                .unwrap_or(false),
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
            replication: match self.replication.or(f.replication).as_deref() {
                None | Some("off") | Some("") => ReplicationMode::Off,
                Some("single") => ReplicationMode::Single,
                Some(other) => {
                    return Err(ConfigError::Invalid {
                        key: "REPLICATION",
                        message: format!("`{other}`: expected `off` or `single`"),
                    })
                }
            },
        })
    }
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
