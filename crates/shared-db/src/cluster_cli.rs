//! `shared-db cluster …`: operator commands against a running cluster's internal API
//! (`status`, `add-node`, `remove-node`, `resync`), signed with the cluster secret.

use std::path::PathBuf;
use std::time::Duration;

use crate::cluster::auth::ClusterSecret;
use crate::cluster::client::PeerClient;
use crate::cluster::{AddNode, ClusterInfo, ClusterStatus, MemberInfo, RemoveNode};

/// Where to reach the cluster and how to authenticate.
#[derive(Debug, Clone, clap::Args)]
pub struct Target {
    /// Internal API (`host:port`) of any node.
    #[arg(long, env = "SHARED_DB_NODE", default_value = "127.0.0.1:7071")]
    pub node: String,
    /// The cluster secret.
    #[arg(long, env = "CLUSTER_SECRET", hide_env_values = true)]
    pub cluster_secret: Option<String>,
    /// File holding the cluster secret.
    #[arg(long, env = "CLUSTER_SECRET_FILE")]
    pub cluster_secret_file: Option<PathBuf>,
}

#[derive(Debug, clap::Subcommand)]
pub enum ClusterCommand {
    /// Prints every member: role, term, addresses, applied index and replication lag.
    Status(Target),
    /// Adds a node: as a learner, caught up from the log (or a snapshot), then as a voter.
    AddNode {
        #[command(flatten)]
        target: Target,
        /// The new node's NODE_ID.
        #[arg(long)]
        id: u64,
        /// The new node's internal API, `host:port`.
        #[arg(long)]
        internal: String,
        /// The new node's MySQL address, `host:port`.
        #[arg(long)]
        mysql: String,
    },
    /// Re-syncs a diverged node (`--node` is its internal API): it installs a fresh snapshot
    /// of the leader's databases and serves clients again.
    Resync(Target),
    /// Removes a node from the membership (stop it first if it is still running).
    RemoveNode {
        #[command(flatten)]
        target: Target,
        /// The NODE_ID to remove.
        #[arg(long)]
        id: u64,
    },
}

fn client(t: &Target) -> Result<PeerClient, String> {
    let text = match (&t.cluster_secret, &t.cluster_secret_file) {
        (Some(s), _) => s.clone(),
        (None, Some(p)) => {
            std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?
        }
        (None, None) => return Err("give CLUSTER_SECRET or CLUSTER_SECRET_FILE".into()),
    };
    Ok(PeerClient::new(Some(ClusterSecret::new(&text)?), 0))
}

pub async fn run(cmd: ClusterCommand) -> Result<(), String> {
    let timeout = Duration::from_secs(5);
    match cmd {
        ClusterCommand::Status(t) => {
            let c = client(&t)?;
            let first: ClusterInfo = c
                .get_json(&t.node, "/cluster/info", timeout)
                .await
                .map_err(|e| e.to_string())?;
            // The leader knows every member's progress.
            let leader_status: Option<ClusterStatus> = match &first.leader {
                Some(l) => c
                    .get_json(&l.internal_addr, "/cluster/status", timeout)
                    .await
                    .ok(),
                None => None,
            };
            println!(
                "leader: {}",
                first
                    .leader
                    .as_ref()
                    .map_or("none".to_string(), |l| format!(
                        "node {} ({})",
                        l.id, l.mysql_addr
                    ))
            );
            println!(
                "{:>6}  {:<9} {:>5}  {:<22} {:<22} {:>8} {:>6}",
                "id", "role", "term", "internal", "mysql", "applied", "lag"
            );
            let members: Vec<MemberInfo> = if first.members.is_empty() {
                vec![MemberInfo {
                    id: first.id,
                    internal_addr: first.internal_addr.clone(),
                    mysql_addr: first.mysql_addr.clone(),
                    voter: false,
                }]
            } else {
                first.members.clone()
            };
            for m in members {
                let info: Option<ClusterInfo> = c
                    .get_json(&m.internal_addr, "/cluster/info", timeout)
                    .await
                    .ok();
                let lag = leader_status
                    .as_ref()
                    .and_then(|s| s.peers.iter().find(|p| p.id == m.id))
                    .and_then(|p| p.lag);
                let role = match &info {
                    Some(i) if !m.voter && i.role == "follower" => "learner".to_string(),
                    Some(i) => i.role.clone(),
                    None => "down".to_string(),
                };
                println!(
                    "{:>6}  {:<9} {:>5}  {:<22} {:<22} {:>8} {:>6}",
                    m.id,
                    role,
                    info.as_ref().map_or("-".into(), |i| i.term.to_string()),
                    m.internal_addr,
                    m.mysql_addr,
                    info.as_ref()
                        .and_then(|i| i.applied_index)
                        .map_or("-".into(), |a| a.to_string()),
                    lag.map_or("-".into(), |l| l.to_string()),
                );
            }
            Ok(())
        }
        ClusterCommand::AddNode {
            target,
            id,
            internal,
            mysql,
        } => {
            let c = client(&target)?;
            let members: Vec<MemberInfo> = c
                .post_json(
                    &target.node,
                    "/cluster/add-node",
                    &AddNode {
                        id,
                        internal_addr: internal,
                        mysql_addr: mysql,
                    },
                    Duration::from_secs(320),
                )
                .await
                .map_err(|e| e.to_string())?;
            println!("node {id} added; members:");
            print_members(&members);
            Ok(())
        }
        ClusterCommand::RemoveNode { target, id } => {
            let c = client(&target)?;
            let members: Vec<MemberInfo> = c
                .post_json(
                    &target.node,
                    "/cluster/remove-node",
                    &RemoveNode { id },
                    Duration::from_secs(70),
                )
                .await
                .map_err(|e| e.to_string())?;
            println!("node {id} removed; members:");
            print_members(&members);
            Ok(())
        }
        ClusterCommand::Resync(target) => {
            let c = client(&target)?;
            let done: serde_json::Value = c
                .post_json(
                    &target.node,
                    "/replication/resync",
                    &serde_json::json!({}),
                    Duration::from_secs(900),
                )
                .await
                .map_err(|e| e.to_string())?;
            println!(
                "{} re-synced: installed the leader's snapshot at log index {}",
                target.node, done["installed_index"]
            );
            Ok(())
        }
    }
}

fn print_members(members: &[MemberInfo]) {
    for m in members {
        println!(
            "  {} {} {} ({})",
            m.id,
            if m.voter { "voter  " } else { "learner" },
            m.internal_addr,
            m.mysql_addr
        );
    }
}
