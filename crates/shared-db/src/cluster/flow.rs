//! Flow control: the leader holds new writes while a follower's applier falls behind.
//!
//! A follower answers every append (heartbeats included) with its applied index (HTTP header
//! [`APPLIED_HEADER`]); the leader keeps the latest report of each peer. Before the next entry
//! goes to the log, the proposer waits while an in-sync follower is more than
//! [`MAX_APPLY_LAG`] entries behind the leader's log and still catching up. Without it a
//! sustained write load leaves followers seconds behind, and a session's read on its own node
//! waits that long for its last write. As with Galera's flow control, a slow follower slows
//! the cluster's writes to its pace; but a follower that is down (no report for
//! [`STALE_AFTER`]), far behind (more than [`IN_SYNC_LAG`], e.g. replaying after a restart) or
//! not moving (no progress for [`NO_PROGRESS`]) is not waited for, and one entry never waits
//! longer than [`MAX_WAIT`].

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use tokio::sync::watch;

use super::contract::NodeId;

/// Response header of `POST /raft/append`: the answering node's applied log index.
pub const APPLIED_HEADER: &str = "x-sdb-applied";

/// How many entries a follower's applier may trail the leader's log before writes wait.
pub const MAX_APPLY_LAG: u64 = 256;

/// A follower further behind than this is catching up, not in sync: writes do not wait for it.
pub const IN_SYNC_LAG: u64 = 4 * MAX_APPLY_LAG;

/// A report older than this no longer counts (the follower is down or cut off).
pub const STALE_AFTER: Duration = Duration::from_secs(2);

/// Writes stop waiting for a follower whose applied index did not move for this long.
pub const NO_PROGRESS: Duration = Duration::from_millis(200);

/// The longest one entry waits for followers before it goes anyway.
pub const MAX_WAIT: Duration = Duration::from_secs(1);

/// The followers' latest applied-index reports, on the leader.
pub struct FollowerApplied {
    reports: Mutex<HashMap<NodeId, (u64, Instant)>>,
    changed: watch::Sender<u64>,
}

impl Default for FollowerApplied {
    fn default() -> Self {
        FollowerApplied {
            reports: Mutex::new(HashMap::new()),
            changed: watch::Sender::new(0),
        }
    }
}

impl FollowerApplied {
    /// Records a follower's report.
    pub fn note(&self, node: NodeId, applied: u64) {
        if let Ok(mut r) = self.reports.lock() {
            r.insert(node, (applied, Instant::now()));
        }
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// The last applied index `node` reported, if it did within [`STALE_AFTER`].
    pub fn reported(&self, node: NodeId) -> Option<u64> {
        let r = self.reports.lock().ok()?;
        r.get(&node)
            .filter(|(_, at)| at.elapsed() < STALE_AFTER)
            .map(|(applied, _)| *applied)
    }

    /// The lowest applied index among `followers` that reported within [`STALE_AFTER`] and
    /// are in sync (at or above `in_sync_floor`).
    fn slowest(&self, followers: &[NodeId], in_sync_floor: u64) -> Option<u64> {
        let r = self.reports.lock().ok()?;
        followers
            .iter()
            .filter_map(|id| r.get(id))
            .filter(|(applied, at)| at.elapsed() < STALE_AFTER && *applied >= in_sync_floor)
            .map(|(applied, _)| *applied)
            .min()
    }

    /// Waits while an in-sync follower in `followers` is more than [`MAX_APPLY_LAG`] entries
    /// behind `last_index` and making progress (see the module doc for the bounds). Returns
    /// whether it waited.
    pub async fn wait_for_room(&self, followers: &[NodeId], last_index: u64) -> bool {
        let floor = last_index.saturating_sub(MAX_APPLY_LAG);
        let in_sync_floor = last_index.saturating_sub(IN_SYNC_LAG);
        let lagging = || {
            self.slowest(followers, in_sync_floor)
                .filter(|a| *a < floor)
        };
        let Some(mut seen) = lagging() else {
            return false;
        };
        let mut rx = self.changed.subscribe();
        let deadline = Instant::now() + MAX_WAIT;
        let mut stuck_at = Instant::now() + NO_PROGRESS;
        loop {
            match tokio::time::timeout_at(stuck_at.min(deadline), rx.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => return true,
            }
            match lagging() {
                None => return true,
                Some(a) if a > seen => {
                    seen = a;
                    stuck_at = Instant::now() + NO_PROGRESS;
                }
                Some(_) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test(start_paused = true)]
    async fn writes_wait_for_a_follower_that_fell_behind_and_go_once_it_caught_up() {
        let f = Arc::new(FollowerApplied::default());
        // Nothing reported: no information, no waiting.
        assert!(!f.wait_for_room(&[2, 3], 10_000).await);
        f.note(2, 9_990);
        f.note(3, 9_000);
        let waiting = {
            let f = Arc::clone(&f);
            tokio::spawn(async move { f.wait_for_room(&[2, 3], 10_000).await })
        };
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        // Progress, but still behind: it keeps waiting.
        f.note(3, 9_500);
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        f.note(3, 9_800);
        assert!(
            waiting.await.unwrap(),
            "it waited, and ended when node 3 caught up"
        );
        // Within the bound: no wait.
        assert!(!f.wait_for_room(&[2, 3], 10_000).await);
    }

    #[tokio::test(start_paused = true)]
    async fn followers_that_are_far_behind_stuck_or_silent_are_not_waited_for() {
        let f = FollowerApplied::default();
        // Replaying a long backlog: not in sync, writes go on.
        f.note(2, 1_000);
        assert!(!f.wait_for_room(&[2], 10_000).await);
        // In sync but not moving: waited for NO_PROGRESS, then writes go on.
        f.note(2, 9_500);
        let start = tokio::time::Instant::now();
        assert!(f.wait_for_room(&[2], 10_000).await);
        assert_eq!(start.elapsed(), NO_PROGRESS);
        // Silent for STALE_AFTER (down): no longer counted.
        tokio::time::advance(STALE_AFTER).await;
        assert!(!f.wait_for_room(&[2], 10_000).await);
    }
}
