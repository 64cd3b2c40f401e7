//! The export registry: which agents are online and which exports they serve.
//!
//! In memory: agents re-register on every heartbeat, so a restarted master learns them again
//! within one interval. An agent whose heartbeat is overdue by `expire_after` is forgotten.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use fluxon_fs_proto::master_api::{AgentRoute, ExportInfo};

#[derive(Debug, Clone)]
struct AgentEntry {
    data_addr: String,
    exports: BTreeMap<String, ExportInfo>,
    last_seen: Instant,
}

/// Online agents and their exports.
#[derive(Debug)]
pub struct Registry {
    agents: Mutex<HashMap<String, AgentEntry>>,
    expire_after: Duration,
}

/// One online export: its definition (from the most recently seen agent) and its agents.
#[derive(Debug, Clone)]
pub struct OnlineExport {
    pub info: ExportInfo,
    pub agents: Vec<AgentRoute>,
}

impl Registry {
    pub fn new(expire_after: Duration) -> Registry {
        Registry {
            agents: Mutex::new(HashMap::new()),
            expire_after,
        }
    }

    /// Registers or refreshes an agent.
    pub fn heartbeat(
        &self,
        agent: &str,
        data_addr: &str,
        exports: BTreeMap<String, ExportInfo>,
    ) -> bool {
        let mut agents = self.agents.lock().unwrap_or_else(|e| e.into_inner());
        let entry = AgentEntry {
            data_addr: data_addr.to_string(),
            exports,
            last_seen: Instant::now(),
        };
        agents.insert(agent.to_string(), entry).is_none()
    }

    /// Drops agents whose heartbeat is overdue; returns their keys.
    pub fn prune(&self) -> Vec<String> {
        let mut agents = self.agents.lock().unwrap_or_else(|e| e.into_inner());
        let expired: Vec<String> = agents
            .iter()
            .filter(|(_, a)| a.last_seen.elapsed() > self.expire_after)
            .map(|(k, _)| k.clone())
            .collect();
        for key in &expired {
            agents.remove(key);
        }
        expired
    }

    /// Online exports by name.
    pub fn exports(&self) -> BTreeMap<String, OnlineExport> {
        self.prune();
        let agents = self.agents.lock().unwrap_or_else(|e| e.into_inner());
        let mut by_time: Vec<(&String, &AgentEntry)> = agents.iter().collect();
        by_time.sort_by_key(|(key, a)| (a.last_seen, (*key).clone()));
        let mut out: BTreeMap<String, OnlineExport> = BTreeMap::new();
        for (key, agent) in by_time {
            for (name, info) in &agent.exports {
                let route = AgentRoute {
                    instance_key: key.clone(),
                    addr: agent.data_addr.clone(),
                };
                let entry = out.entry(name.clone()).or_insert_with(|| OnlineExport {
                    info: info.clone(),
                    agents: Vec::new(),
                });
                entry.info = info.clone();
                entry.agents.push(route);
            }
        }
        for export in out.values_mut() {
            export
                .agents
                .sort_by(|a, b| a.instance_key.cmp(&b.instance_key));
        }
        out
    }
}
