//! State shared by every client session of one node: login policy, engine pool, whitelist,
//! limits, and the registry of live sessions (for KILL, limits and `/status`).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ipnet::IpNet;
use mysql_common::constants::CapabilityFlags;
use serde::Serialize;

use super::backend::{Backend, EngineTarget};
use super::errors::SqlError;
use super::handshake::LoginPolicy;
use super::pool::BackendPool;

/// Addresses allowed to log in; empty means everyone.
#[derive(Debug, Clone, Default)]
pub struct Whitelist(Vec<IpNet>);

impl Whitelist {
    /// Parses a comma list of IPs and CIDRs (IPv4 and IPv6).
    pub fn parse(list: &str) -> Result<Self, String> {
        let mut nets = Vec::new();
        for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let net = match item.parse::<IpNet>() {
                Ok(n) => n,
                Err(_) => match item.parse::<IpAddr>() {
                    Ok(ip) => IpNet::from(ip),
                    Err(_) => return Err(format!("WHITELIST entry `{item}` is not an IP or CIDR")),
                },
            };
            nets.push(net);
        }
        Ok(Whitelist(nets))
    }

    pub fn allows(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.is_empty() || self.0.iter().any(|n| n.contains(&ip))
    }
}

/// Per-connection bounds.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_connections: usize,
    /// Idle time after which a client connection is closed (like `wait_timeout`).
    pub idle_timeout: Duration,
    /// Largest logical packet accepted from a client.
    pub max_packet: usize,
    /// How long a write to a client may stall before the connection is dropped.
    pub write_timeout: Duration,
}

#[derive(Debug, Default, Serialize)]
pub struct Counters {
    pub accepted: AtomicU64,
    pub rejected_whitelist: AtomicU64,
    pub rejected_limit: AtomicU64,
    pub auth_failures: AtomicU64,
    pub commands: AtomicU64,
    pub engine_errors: AtomicU64,
    /// Text-protocol and prepared statements by classification (what replication will route).
    pub statements_read: AtomicU64,
    pub statements_write: AtomicU64,
    pub statements_session: AtomicU64,
    pub statements_transaction: AtomicU64,
}

impl Counters {
    /// Counts one classified statement.
    pub fn count_statement(&self, kind: crate::sql::classify::StatementKind) {
        use crate::sql::classify::StatementKind as K;
        let c = match kind {
            K::Read => &self.statements_read,
            K::Write => &self.statements_write,
            K::Session => &self.statements_session,
            K::Transaction(_) => &self.statements_transaction,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// Connection ids handed to clients start here, above the engine's own thread ids (which a
/// client sees through `CONNECTION_ID()`), so `KILL n` can tell the two apart.
pub const FIRST_CONNECTION_ID: u32 = 1 << 24;

/// Live sessions: our connection id → the engine thread id serving it.
#[derive(Default)]
pub struct Registry {
    next_id: AtomicU32,
    sessions: Mutex<HashMap<u32, u32>>,
}

impl Registry {
    pub fn next_id(&self) -> u32 {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed) % (u32::MAX - FIRST_CONNECTION_ID);
        FIRST_CONNECTION_ID + n
    }
    pub fn insert(&self, id: u32, engine_thread: u32) {
        if let Ok(mut m) = self.sessions.lock() {
            m.insert(id, engine_thread);
        }
    }
    pub fn remove(&self, id: u32) {
        if let Ok(mut m) = self.sessions.lock() {
            m.remove(&id);
        }
    }
    pub fn active(&self) -> usize {
        self.sessions.lock().map(|m| m.len()).unwrap_or(0)
    }
    /// The engine thread of a session, looked up by our id or by its engine thread id (what
    /// `CONNECTION_ID()` returns inside the session).
    pub fn engine_thread(&self, id: u64) -> Option<u32> {
        self.find(id).map(|(_, thread)| thread)
    }
    /// A session looked up as for [`Registry::engine_thread`]: (our id, its engine thread).
    pub fn find(&self, id: u64) -> Option<(u32, u32)> {
        let m = self.sessions.lock().ok()?;
        let id32 = u32::try_from(id).ok()?;
        if id32 >= FIRST_CONNECTION_ID {
            m.get(&id32).map(|t| (id32, *t))
        } else {
            m.iter().find(|(_, t)| **t == id32).map(|(s, t)| (*s, *t))
        }
    }
}

/// Decides, after a client's credentials were accepted, whether this node admits it
/// (`AUTH_MASTER_ONLY`: only the leader does). An `Err` is sent to the client as is.
pub type LoginGate = Arc<dyn Fn() -> Result<(), SqlError> + Send + Sync>;

/// Decides, before each command, whether this node serves clients now (a node cut off from
/// the cluster majority refuses unless configured to serve stale reads). Same shape as
/// [`LoginGate`].
pub type ServeGate = LoginGate;

pub struct Frontend {
    pub policy: LoginPolicy,
    /// Set once at start when logins depend on cluster state.
    pub login_gate: std::sync::OnceLock<LoginGate>,
    /// Set once at start when serving depends on cluster state.
    pub serve_gate: std::sync::OnceLock<ServeGate>,
    pub pool: Arc<BackendPool>,
    pub whitelist: Whitelist,
    pub limits: Limits,
    pub registry: Registry,
    pub counters: Counters,
    /// Sessions being set up or running (bounded by `limits.max_connections`).
    pub connections: AtomicU64,
    /// Set (once, at start) when the node is part of a replicated cluster (or runs
    /// `REPLICATION=single`); unset, every statement runs on the local engine.
    pub replication: std::sync::OnceLock<Arc<crate::replication::Replication>>,
}

impl Frontend {
    pub fn engine(&self) -> &EngineTarget {
        self.pool.target()
    }

    /// KILL [QUERY] of a client session of this node, through a separate engine connection;
    /// in a cluster its shadow session on the leader (where its transaction runs) first.
    pub async fn kill(&self, id: u64, query_only: bool) -> Result<(), SqlError> {
        let (session, thread) = self.registry.find(id).ok_or(SqlError::unknown_thread(id))?;
        // The local kill happens even when the leader cannot be reached; that error is
        // reported after it.
        let shadow = match self.replication.get() {
            Some(r) => r.kill(r.origin(session), query_only).await,
            None => Ok(()),
        };
        let mut admin = Backend::connect(
            self.engine(),
            CapabilityFlags::CLIENT_PROTOCOL_41,
            self.policy.collation,
            None,
        )
        .await
        .map_err(|e| SqlError::engine_unavailable(&e.to_string()))?;
        let what = if query_only { "QUERY " } else { "" };
        admin
            .query_drop(&format!("KILL {what}{thread}"))
            .await
            .map_err(|e| match e {
                super::backend::BackendError::Server { code, message, .. } => {
                    SqlError::new(code, "HY000", message)
                }
                other => SqlError::engine_unavailable(&other.to_string()),
            })?;
        shadow
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whitelist_matches_ips_and_cidrs_of_both_families() {
        let w = Whitelist::parse("10.0.0.0/8, 192.168.1.7,::1, 2001:db8::/32").unwrap();
        assert!(w.allows("10.1.2.3".parse().unwrap()));
        assert!(w.allows("192.168.1.7".parse().unwrap()));
        assert!(!w.allows("192.168.1.8".parse().unwrap()));
        assert!(w.allows("::1".parse().unwrap()));
        assert!(w.allows("2001:db8::5".parse().unwrap()));
        assert!(!w.allows("2001:db9::5".parse().unwrap()));
        // IPv4 clients seen through an IPv6 socket are matched as IPv4.
        assert!(w.allows("::ffff:10.9.9.9".parse().unwrap()));
        assert!(Whitelist::parse("")
            .unwrap()
            .allows("8.8.8.8".parse().unwrap()));
        assert!(Whitelist::parse("nonsense").is_err());
    }

    #[test]
    fn registry_finds_sessions_by_either_id() {
        let r = Registry::default();
        let a = r.next_id();
        r.insert(a, 900);
        assert_eq!(r.engine_thread(u64::from(a)), Some(900));
        assert_eq!(r.engine_thread(900), Some(900));
        assert_eq!(r.engine_thread(12345), None);
        r.remove(a);
        assert_eq!(r.active(), 0);
    }
}
