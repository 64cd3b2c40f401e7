//! Forming and joining a cluster. A node that is not yet part of a membership asks its initial
//! peers (static `PEERS` or Flux discovery) for `/cluster/info`:
//! - if one of them belongs to an initialised cluster that does not list this node, this node
//!   asks to be added (learner, caught up, then voter);
//! - otherwise, once every initial peer answered, the node with the lowest id initialises the
//!   membership with all of them as voters; the others wait to hear from the leader.
//!
//! A node with no peers (and not joining) initialises a cluster of one.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::contract::NodeId;
use super::discovery::{flux_locations, PeerSpec};
use super::handle::{AddNode, Cluster, ClusterInfo};
use super::types::Member;

const INFO_TIMEOUT: Duration = Duration::from_secs(2);
const JOIN_TIMEOUT: Duration = Duration::from_secs(300);

pub async fn run(cluster: Arc<Cluster>) {
    let mut delay = Duration::from_millis(200);
    loop {
        if cluster.raft.is_initialized().await.unwrap_or(true) {
            return;
        }
        match step(&cluster).await {
            Ok(true) => return,
            Ok(false) => {}
            Err(e) => tracing::info!(error = %e, "cluster not formed yet; retrying"),
        }
        // Back off between rounds (bounded): peers are still starting.
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}

async fn peers(cluster: &Cluster) -> Result<Vec<PeerSpec>, String> {
    let s = cluster.settings();
    let mut list = cluster.initial_peers();
    if let Some(d) = &s.discovery {
        let api_port = s
            .internal_addr
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse().ok())
            .unwrap_or(7071);
        let found = flux_locations(&d.api_url, &d.app_name, api_port, Duration::from_secs(15))
            .await
            .map_err(|e| e.to_string())?;
        list.extend(found);
    }
    let me = cluster.me();
    list.retain(|p| p.addr != me.internal_addr && p.id != Some(s.node_id));
    list.dedup_by(|a, b| a.addr == b.addr);
    Ok(list)
}

/// One round; `Ok(true)` when this node is (or is being made) part of a cluster.
async fn step(cluster: &Arc<Cluster>) -> Result<bool, String> {
    let s = cluster.settings().clone();
    if s.is_single() {
        let members = BTreeMap::from([(s.node_id, cluster.me())]);
        cluster.initialize(members).await?;
        tracing::info!(node = s.node_id, "initialised a cluster of one");
        return Ok(true);
    }
    let peers = peers(cluster).await?;
    let client = cluster.peer_client();
    let answers = futures_util::future::join_all(peers.iter().map(|p| {
        let client = client.clone();
        async move {
            let r: Result<ClusterInfo, _> = client
                .get_json(&p.addr, "/cluster/info", INFO_TIMEOUT)
                .await;
            (p.clone(), r)
        }
    }))
    .await;
    let mut infos = Vec::new();
    let mut missing = Vec::new();
    for (p, r) in answers {
        match r {
            Ok(info) => {
                if p.id.is_some_and(|id| id != info.id) {
                    return Err(format!(
                        "peer {} says it is node {}, PEERS says {}",
                        p.addr,
                        info.id,
                        p.id.unwrap_or_default()
                    ));
                }
                if info.instance == cluster.instance {
                    // Ourselves, listed under another address (discovery).
                    continue;
                }
                if info.id == s.node_id {
                    return Err(format!(
                        "peer {} has this node's id {}; NODE_ID must be unique",
                        p.addr, s.node_id
                    ));
                }
                infos.push(info);
            }
            Err(e) => missing.push(format!("{}: {e}", p.addr)),
        }
    }
    // Not configured where we are reachable: take the address our peers see us at.
    if !s.advertise_fixed && s.discovery.is_some() {
        if let Some(ip) = infos.iter().filter_map(|i| i.seen_ip.as_deref()).next() {
            cluster.learn_host(ip);
        }
    }
    // An existing cluster that does not have us: ask to join.
    if let Some(info) = infos.iter().find(|i| i.initialized) {
        if info.members.iter().any(|m| m.id == s.node_id) {
            // Already a member: the leader will replicate to us.
            return Ok(false);
        }
        let me = cluster.me();
        let req = AddNode {
            id: s.node_id,
            internal_addr: me.internal_addr,
            mysql_addr: me.mysql_addr,
        };
        tracing::info!(via = %info.internal_addr, "joining the existing cluster");
        let _: serde_json::Value = client
            .post_json(&info.internal_addr, "/cluster/add-node", &req, JOIN_TIMEOUT)
            .await
            .map_err(|e| format!("join via {}: {e}", info.internal_addr))?;
        tracing::info!("joined the cluster as a voter");
        return Ok(true);
    }
    if s.join {
        return Err("JOIN is set but no peer belongs to an initialised cluster yet".into());
    }
    if !missing.is_empty() {
        return Err(format!("waiting for peers: {}", missing.join("; ")));
    }
    let lowest: NodeId = infos.iter().map(|i| i.id).min().unwrap_or(s.node_id);
    if s.node_id < lowest {
        let mut members = BTreeMap::from([(s.node_id, cluster.me())]);
        for i in &infos {
            members.insert(
                i.id,
                Member {
                    internal_addr: i.internal_addr.clone(),
                    mysql_addr: i.mysql_addr.clone(),
                },
            );
        }
        tracing::info!(voters = ?members.keys().collect::<Vec<_>>(), "initialising the cluster (lowest id)");
        cluster.initialize(members).await?;
        return Ok(true);
    }
    Ok(false)
}
