//! When a node campaigns. openraft 0.9 draws one election timeout per process and checks it on
//! a tick of 1.5 heartbeats (225 ms by default), so two followers started together can keep
//! campaigning on the same tick and split the vote round after round (seen: 6 s without a
//! leader). openraft's own timer is therefore off (`enable_elect: false`) and this one decides:
//! a voter that has heard neither a leader nor a vote change for a timeout drawn afresh from
//! the configured range every time campaigns, checked every 10 ms. A voter whose last campaign
//! was refused by one with a longer log waits twice the range's maximum more, so the voters that
//! can win campaign first (openraft's own rule, kept). Before campaigning it asks the others
//! whether they would vote for it ([`super::prevote`]) and campaigns only if a majority would,
//! so a node that merely missed the leader for a while does not unseat it.

use std::sync::{Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use openraft::ServerState;

use super::handle::Cluster;

/// How often the timer looks.
const CHECK_EVERY: Duration = Duration::from_millis(10);
/// A voter alone in the cluster campaigns this long after its last attempt.
const ALONE_RETRY: Duration = Duration::from_millis(100);

/// What the network learns during a campaign.
#[derive(Debug, Default)]
pub struct ElectionSignals {
    greater_log_at: Mutex<Option<Instant>>,
}

impl ElectionSignals {
    /// A voter refused this node's vote request and has a longer log.
    pub fn note_greater_log(&self) {
        *self
            .greater_log_at
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
    }

    fn greater_log_since(&self, t: Instant) -> bool {
        self.greater_log_at
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some_and(|at| at >= t)
    }
}

/// A timeout in `[min, max]`, drawn from the OS's randomness.
fn draw(min: Duration, max: Duration) -> Duration {
    let mut b = [0u8; 8];
    let _ = getrandom::fill(&mut b);
    let span = max.saturating_sub(min).as_micros().max(1) as u64;
    min + Duration::from_micros(u64::from_le_bytes(b) % span)
}

/// Runs until the cluster is dropped.
pub(super) async fn run(
    cluster: Weak<Cluster>,
    signals: std::sync::Arc<ElectionSignals>,
    min: Duration,
    max: Duration,
) {
    let mut tick = tokio::time::interval(CHECK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut quiet_since = Instant::now();
    let mut timeout = draw(min, max);
    let mut last_vote = None;
    // When this node last campaigned.
    let mut campaigned = None;
    loop {
        tick.tick().await;
        let Some(c) = cluster.upgrade() else { return };
        let (leader, voter, alone, vote, stopped) = {
            let metrics = c.raft_metrics();
            let m = metrics.borrow();
            let members = m.membership_config.membership();
            (
                m.state == ServerState::Leader,
                members.voter_ids().any(|v| v == m.id),
                members.voter_ids().nth(1).is_none(),
                m.vote,
                m.running_state.is_err(),
            )
        };
        if stopped {
            return;
        }
        let now = Instant::now();
        if last_vote != Some(vote) {
            // Our own campaign, a vote granted or a newer term seen: wait a fresh timeout.
            last_vote = Some(vote);
            quiet_since = now;
            timeout = draw(min, max);
        }
        if let Some(contact) = c.last_leader_contact() {
            quiet_since = quiet_since.max(contact);
            if campaigned.is_some_and(|t| contact > t) {
                // A leader brought this node's log up to date since.
                campaigned = None;
            }
        }
        if leader || !voter {
            quiet_since = now;
            campaigned = None;
            continue;
        }
        // A voter alone needs no votes: it takes over at once (after a short pause, so a
        // failing campaign is not retried in a busy loop).
        let behind = campaigned.is_some_and(|t| signals.greater_log_since(t));
        let due = if alone {
            ALONE_RETRY
        } else if behind {
            timeout + 2 * max
        } else {
            timeout
        };
        if now.duration_since(quiet_since) >= due {
            let silent_ms = now.duration_since(quiet_since).as_millis() as u64;
            if !alone {
                let asked = super::prevote::ask(&c, super::prevote::round_timeout(min)).await;
                if asked.greater_log {
                    signals.note_greater_log();
                }
                if !asked.majority {
                    tracing::debug!(silent_ms, "no leader heard, but no majority would vote for this node: not campaigning");
                    campaigned = Some(now);
                    quiet_since = Instant::now();
                    timeout = draw(min, max);
                    continue;
                }
            }
            tracing::debug!(silent_ms, "no leader heard: campaigning");
            if c.campaign().await.is_err() {
                return;
            }
            campaigned = Some(now);
            quiet_since = now;
            timeout = draw(min, max);
        }
        drop(c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_are_drawn_across_the_range() {
        let (min, max) = (Duration::from_millis(500), Duration::from_millis(900));
        let draws: Vec<Duration> = (0..200).map(|_| draw(min, max)).collect();
        assert!(draws.iter().all(|d| *d >= min && *d <= max));
        let low = draws
            .iter()
            .filter(|d| **d < Duration::from_millis(700))
            .count();
        assert!(low > 50 && low < 150, "{low} of 200 below the middle");
    }

    #[test]
    fn an_empty_range_gives_its_bound() {
        let d = Duration::from_millis(300);
        assert_eq!(draw(d, d), d);
    }
}
