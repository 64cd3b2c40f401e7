//! Pre-vote (Raft thesis §9.6): before a voter campaigns, it asks the other voters whether they
//! would vote for it, and campaigns only if a majority of every voting configuration would.
//!
//! A campaign raises the candidate's term even when it loses, and the next append the leader
//! sends it is then refused with the higher vote, which makes the leader step down. So a voter
//! that merely missed the leader for a while (restarted, paused, busy installing a snapshot)
//! would unseat a healthy leader and fail the writes in flight. Asked first, the others say no:
//! a follower that heard a leader within two heartbeats, and a leader with a quorum in touch,
//! refuse; so does a voter whose log is longer. When the leader is really gone, the followers
//! stopped hearing it at the same moment, so by the time the first one's election timeout (at
//! least `RAFT_ELECTION_MIN_MS`) runs out the others have been without it for more than two
//! heartbeats and agree. The vote itself is openraft's, unchanged; a pre-vote only decides
//! whether to ask for it.

use std::collections::BTreeSet;
use std::time::Duration;

use hyper::Method;
use serde::{Deserialize, Serialize};

use super::contract::NodeId;
use super::handle::Cluster;
use super::types::LogId;

pub const PATH_PREVOTE: &str = "/raft/prevote";

/// Would the receiver vote for this candidate now?
#[derive(Debug, Serialize, Deserialize)]
pub struct PreVoteRequest {
    pub candidate: NodeId,
    pub last_log_id: Option<LogId>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct PreVoteResponse {
    pub granted: bool,
    /// The receiver's last log entry (a longer one delays the candidate's next attempt).
    pub last_log_id: Option<LogId>,
}

/// The receiver's answer. `quiet` is how long a follower must have heard no leader.
pub(super) async fn answer(c: &Cluster, req: &PreVoteRequest, quiet: Duration) -> PreVoteResponse {
    let last_log_id = c.last_log_id().await;
    let leader_in_touch = if c.is_leader() {
        c.leads_within_lease()
    } else {
        c.last_leader_contact().is_some_and(|t| t.elapsed() < quiet)
    };
    let log_ok = match &last_log_id {
        Ok(mine) => req.last_log_id >= *mine,
        Err(_) => false,
    };
    let granted = log_ok && !leader_in_touch;
    if !granted {
        tracing::debug!(
            candidate = req.candidate,
            leader_in_touch,
            log_ok,
            "pre-vote refused"
        );
    }
    PreVoteResponse {
        granted,
        last_log_id: last_log_id.unwrap_or_default(),
    }
}

/// What the other voters said.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// A majority of every configuration (this node included) would vote for it.
    pub majority: bool,
    /// Some voter has a longer log.
    pub greater_log: bool,
}

/// Asks every other voter (at most `timeout` each, in parallel); an unreachable one says no.
pub(super) async fn ask(c: &Cluster, timeout: Duration) -> Outcome {
    let Ok(mine) = c.last_log_id().await else {
        return Outcome::default();
    };
    let (configs, peers) = {
        let metrics = c.raft_metrics();
        let m = metrics.borrow();
        let membership = m.membership_config.membership();
        let configs: Vec<BTreeSet<NodeId>> = membership.get_joint_config().clone();
        let peers: Vec<(NodeId, String)> = membership
            .voter_ids()
            .filter(|id| *id != c.id)
            .filter_map(|id| {
                membership
                    .get_node(&id)
                    .map(|n| (id, n.internal_addr.clone()))
            })
            .collect();
        (configs, peers)
    };
    let req = PreVoteRequest {
        candidate: c.id,
        last_log_id: mine,
    };
    let Ok(body) = postcard::to_allocvec(&req) else {
        return Outcome::default();
    };
    let asked = peers.into_iter().map(|(id, addr)| {
        let client = c.client.clone();
        let body = body.clone();
        async move {
            let resp = client
                .call(&addr, Method::POST, PATH_PREVOTE, body, timeout)
                .await
                .ok()
                .and_then(|b| postcard::from_bytes::<PreVoteResponse>(&b).ok());
            (id, resp)
        }
    });
    let answers = futures_util::future::join_all(asked).await;
    let mut granted = BTreeSet::from([c.id]);
    let mut greater_log = false;
    for (id, resp) in answers {
        let Some(resp) = resp else { continue };
        if resp.granted {
            granted.insert(id);
        }
        greater_log |= resp.last_log_id > mine;
    }
    Outcome {
        majority: majority_of_each(&configs, &granted),
        greater_log,
    }
}

/// Whether `granted` holds a majority of every configuration (one, or two while joint).
fn majority_of_each(configs: &[BTreeSet<NodeId>], granted: &BTreeSet<NodeId>) -> bool {
    !configs.is_empty()
        && configs
            .iter()
            .all(|voters| voters.intersection(granted).count() * 2 > voters.len())
}

/// How long the pre-vote round may take: long enough for a loaded peer, short beside the
/// election timeout it delays.
pub fn round_timeout(election_min: Duration) -> Duration {
    (election_min / 2).clamp(Duration::from_millis(50), Duration::from_secs(1))
}

/// A follower refuses a pre-vote while it heard a leader within this long.
pub fn quiet_period(heartbeat: Duration) -> Duration {
    heartbeat * 2
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ids: &[NodeId]) -> BTreeSet<NodeId> {
        ids.iter().copied().collect()
    }

    #[test]
    fn a_majority_of_one_configuration() {
        let c = vec![set(&[1, 2, 3])];
        assert!(majority_of_each(&c, &set(&[1, 2])));
        assert!(!majority_of_each(&c, &set(&[1])));
        assert!(!majority_of_each(&c, &set(&[1, 4, 5])));
    }

    #[test]
    fn a_joint_configuration_needs_both_majorities() {
        let c = vec![set(&[1, 2, 3, 4]), set(&[1, 2, 3])];
        assert!(
            !majority_of_each(&c, &set(&[1, 2])),
            "2 of 4 is no majority"
        );
        assert!(majority_of_each(&c, &set(&[1, 2, 3])));
        assert!(!majority_of_each(&[], &set(&[1])));
    }

    #[test]
    fn the_round_is_bounded() {
        assert_eq!(
            round_timeout(Duration::from_millis(500)),
            Duration::from_millis(250)
        );
        assert_eq!(
            round_timeout(Duration::from_secs(10)),
            Duration::from_secs(1)
        );
        assert_eq!(
            quiet_period(Duration::from_millis(150)),
            Duration::from_millis(300)
        );
    }
}
