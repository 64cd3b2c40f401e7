//! Early replication: the leader sends new entries to its followers while its own sync runs.
//!
//! openraft 0.9 starts replicating an entry only once the leader's own append of it has been
//! flushed, which puts the leader's fsync and the followers' in series on every write. Here
//! the log store offers each append to [`EarlyReplication`] as it is handed to the writer.
//! For every follower whose copy of the log is known to end right before the new entries, a
//! per-follower sender posts them at once as an ordinary append-entries request (the leader's
//! vote, the entry before them as `prev_log_id`), which the follower's raft checks and stores
//! like any other. When openraft's replication stream later sends the same entries,
//! [`EarlyReplication::covered`] answers for the follower with the success it already gave
//! (waiting for it if the early request is still out), so each entry still crosses once.
//!
//! Why this is safe:
//! - Raft lets a leader send entries it has not persisted yet; what it must not do is count
//!   itself before they are. openraft still counts the leader only from the log store's flush
//!   callback.
//! - Nor may it forget them and reuse their log ids. openraft 0.9 resumes as leader of the
//!   same term after a restart, trusting that its log holds everything it ever sent; with
//!   early sending a crash can take an entry its followers already have, and the next entry
//!   it appended in that term would carry the lost one's log id (seen in the Jepsen test: a
//!   node kept the restarted leader's barrier in place of a transaction the others applied).
//!   So a node that led never leads its old term again
//!   ([`super::log_store::LogStore::step_down_on_restart`]).
//! - The follower's raft applies every check to an early request (vote, log matching); an
//!   early request that does not fit is refused there and changes nothing.
//! - A success answered from an earlier one is a delayed true answer: under the same vote the
//!   follower held the leader's log up to at least those entries, and a leader never rewrites
//!   its own log within its term. It is used only while recent, because openraft dates it at
//!   the later request when it tracks how recently a quorum acknowledged the leader.
//! - Anything else (another vote, a refusal, an error, a follower not known to be in step, an
//!   early answer that is late) falls back to openraft's own request.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use hyper::Method;
use openraft::error::RaftError;
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse};
use openraft::{RaftMetrics, ServerState};
use tokio::sync::{mpsc, watch};

use super::client::PeerClient;
use super::contract::NodeId;
use super::flow::{FollowerApplied, APPLIED_HEADER};
use super::network::PATH_APPEND;
use super::types::{Entry, LogId, Member, TypeConfig, Vote};

/// How long an early request may take before it counts as failed.
const SEND_TIMEOUT: Duration = Duration::from_secs(1);

/// How old an early answer may be and still stand for a later request.
const FRESH: Duration = Duration::from_millis(100);

/// Where one follower stands, as far as early replication knows.
#[derive(Debug, Clone, Default)]
struct Progress {
    /// The leader's vote the rest refers to.
    vote: Option<Vote>,
    /// The follower holds the leader's log durably up to here (it said so under `vote`).
    acked: Option<LogId>,
    /// When the request that `acked` answers was sent.
    acked_sent: Option<Instant>,
    /// The last entry handed to the follower's sender (at least `acked`); offers chain on it.
    queued: Option<LogId>,
    /// Bumped whenever the chain breaks (a failed request, another vote): queued offers of an
    /// older count are dropped and waiters fall back.
    breaks: u64,
}

fn index(l: &Option<LogId>) -> Option<u64> {
    l.as_ref().map(|l| l.index)
}

/// Entries for one follower, sent behind the ones before them.
struct Offer {
    vote: Vote,
    prev: Option<LogId>,
    entries: Vec<Entry>,
    breaks: u64,
}

struct Target {
    addr: Arc<Mutex<String>>,
    progress: Arc<watch::Sender<Progress>>,
    queue: mpsc::UnboundedSender<Offer>,
}

/// The leader side of early replication; one per node, shared by its log store and network.
pub struct EarlyReplication {
    client: PeerClient,
    followers: Arc<FollowerApplied>,
    metrics: OnceLock<watch::Receiver<RaftMetrics<NodeId, Member>>>,
    targets: Mutex<HashMap<NodeId, Target>>,
    /// The newest commit openraft sent to any follower; early requests carry it.
    commit: Arc<Mutex<Option<LogId>>>,
    sent: Arc<AtomicU64>,
    answered_early: AtomicU64,
}

impl EarlyReplication {
    pub fn new(client: PeerClient, followers: Arc<FollowerApplied>) -> Self {
        EarlyReplication {
            client,
            followers,
            metrics: OnceLock::new(),
            targets: Mutex::new(HashMap::new()),
            commit: Arc::new(Mutex::new(None)),
            sent: Arc::new(AtomicU64::new(0)),
            answered_early: AtomicU64::new(0),
        }
    }

    /// Early requests posted.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// openraft requests answered from an early one.
    pub fn answered_early(&self) -> u64 {
        self.answered_early.load(Ordering::Relaxed)
    }

    /// Gives access to the node's raft state (whether it leads, under which vote).
    pub fn set_metrics(&self, metrics: watch::Receiver<RaftMetrics<NodeId, Member>>) {
        let _ = self.metrics.set(metrics);
    }

    /// Registers a follower openraft replicates to (or its new address); starts its sender.
    pub fn register(&self, target: NodeId, addr: &str) {
        if let Some(rx) = self.add_target(target, addr) {
            tokio::spawn(send_loop(Sender {
                target,
                addr: self.addr_of(target),
                progress: self.progress(target).unwrap_or_default(),
                client: self.client.clone(),
                followers: Arc::clone(&self.followers),
                commit: Arc::clone(&self.commit),
                sent: Arc::clone(&self.sent),
                rx,
            }));
        }
    }

    /// Adds `target` (the receiver of its offers) or updates its address (`None`).
    fn add_target(&self, target: NodeId, addr: &str) -> Option<mpsc::UnboundedReceiver<Offer>> {
        let mut targets = self.targets.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = targets.get(&target) {
            *t.addr.lock().unwrap_or_else(|p| p.into_inner()) = addr.to_string();
            return None;
        }
        let (queue, rx) = mpsc::unbounded_channel();
        let t = Target {
            addr: Arc::new(Mutex::new(addr.to_string())),
            progress: Arc::new(watch::Sender::new(Progress::default())),
            queue,
        };
        targets.insert(target, t);
        Some(rx)
    }

    fn addr_of(&self, target: NodeId) -> Arc<Mutex<String>> {
        let targets = self.targets.lock().unwrap_or_else(|p| p.into_inner());
        targets
            .get(&target)
            .map(|t| Arc::clone(&t.addr))
            .unwrap_or_default()
    }

    fn progress(&self, target: NodeId) -> Option<Arc<watch::Sender<Progress>>> {
        let targets = self.targets.lock().unwrap_or_else(|p| p.into_inner());
        targets.get(&target).map(|t| Arc::clone(&t.progress))
    }

    /// The log store has been handed `entries`, which follow `prev`. If this node leads in
    /// their term, they go to every member known to hold the log up to `prev` (never to a node
    /// removed from the membership, which openraft no longer replicates to).
    pub fn offer(&self, prev: Option<LogId>, entries: Vec<Entry>) {
        let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
            return;
        };
        let last = last.log_id;
        let (vote, members) = {
            let Some(metrics) = self.metrics.get() else {
                return;
            };
            let m = metrics.borrow();
            if m.state != ServerState::Leader
                || !m.vote.is_committed()
                || m.vote.leader_id.term != first.log_id.leader_id.term
            {
                return;
            }
            let members: Vec<NodeId> = m
                .membership_config
                .membership()
                .nodes()
                .map(|(id, _)| *id)
                .collect();
            (m.vote, members)
        };
        let targets = self.targets.lock().unwrap_or_else(|p| p.into_inner());
        let mut chained = Vec::new();
        for (id, t) in targets.iter() {
            if !members.contains(id) {
                continue;
            }
            let mut breaks = None;
            t.progress.send_if_modified(|p| {
                if p.vote == Some(vote) && p.queued == prev {
                    p.queued = Some(last);
                    breaks = Some(p.breaks);
                }
                // Waiters look at `acked`; a longer queue alone does not concern them.
                false
            });
            if let Some(breaks) = breaks {
                chained.push((t.queue.clone(), breaks));
            }
        }
        drop(targets);
        let mut entries = Some(entries);
        let n = chained.len();
        for (i, (queue, breaks)) in chained.into_iter().enumerate() {
            let entries = if i + 1 == n {
                entries.take().unwrap_or_default()
            } else {
                entries.clone().unwrap_or_default()
            };
            let _ = queue.send(Offer {
                vote,
                prev,
                entries,
                breaks,
            });
        }
    }

    /// Records the commit openraft is sending (early requests carry the newest).
    pub fn note_commit(&self, commit: Option<LogId>) {
        let mut c = self.commit.lock().unwrap_or_else(|p| p.into_inner());
        if index(&commit) > index(&c) {
            *c = commit;
        }
    }

    /// The answer to `rpc` if the follower already gave it to an early request: waits (at
    /// most `wait`) while one that covers it is out. `None`: send `rpc`.
    pub async fn covered(
        &self,
        target: NodeId,
        rpc: &AppendEntriesRequest<TypeConfig>,
        wait: Duration,
    ) -> Option<AppendEntriesResponse<NodeId>> {
        let last = rpc.entries.last()?.log_id.index;
        let progress = self.progress(target)?;
        let mut rx = progress.subscribe();
        let deadline = tokio::time::Instant::now() + wait;
        let breaks = rx.borrow().breaks;
        loop {
            {
                let p = rx.borrow_and_update();
                if p.vote != Some(rpc.vote) || p.breaks != breaks {
                    return None;
                }
                if index(&p.acked) >= Some(last) {
                    if p.acked_sent.is_none_or(|s| s.elapsed() > FRESH) {
                        return None;
                    }
                    self.answered_early.fetch_add(1, Ordering::Relaxed);
                    return Some(AppendEntriesResponse::Success);
                }
                if index(&p.queued) < Some(last) {
                    return None;
                }
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                _ => return None,
            }
        }
    }

    /// openraft's own request `rpc` to `target`, sent at `sent`, succeeded or not (refused,
    /// failed, timed out).
    pub fn answered(
        &self,
        target: NodeId,
        rpc: &AppendEntriesRequest<TypeConfig>,
        sent: Instant,
        success: bool,
    ) {
        let Some(progress) = self.progress(target) else {
            return;
        };
        let last = rpc.entries.last().map(|e| e.log_id).or(rpc.prev_log_id);
        progress.send_modify(|p| {
            if !success {
                // The follower's log is not what was thought (or the leader is stale): start
                // over from openraft's next success.
                *p = Progress {
                    breaks: p.breaks + 1,
                    ..Progress::default()
                };
                return;
            }
            if p.vote != Some(rpc.vote) {
                *p = Progress {
                    vote: Some(rpc.vote),
                    acked: last,
                    acked_sent: Some(sent),
                    queued: last,
                    breaks: p.breaks + 1,
                };
                return;
            }
            if index(&last) > index(&p.acked) {
                p.acked = last;
                p.acked_sent = Some(sent);
            }
            if index(&p.queued) < index(&p.acked) {
                p.queued = p.acked;
            }
        });
    }
}

/// One follower's sender: posts offers in order, several at once when they queue up.
struct Sender {
    target: NodeId,
    addr: Arc<Mutex<String>>,
    progress: Arc<watch::Sender<Progress>>,
    client: PeerClient,
    followers: Arc<FollowerApplied>,
    commit: Arc<Mutex<Option<LogId>>>,
    sent: Arc<AtomicU64>,
    rx: mpsc::UnboundedReceiver<Offer>,
}

async fn send_loop(mut s: Sender) {
    while let Some(mut batch) = s.rx.recv().await {
        while let Ok(next) = s.rx.try_recv() {
            let follows = next.breaks == batch.breaks
                && next.vote == batch.vote
                && next.prev == batch.entries.last().map(|e| e.log_id);
            if follows {
                batch.entries.extend(next.entries);
            } else if next.breaks > batch.breaks {
                batch = next;
            }
        }
        if s.progress.borrow().breaks != batch.breaks {
            continue;
        }
        let Some(last) = batch.entries.last().map(|e| e.log_id) else {
            continue;
        };
        let vote = batch.vote;
        let req = AppendEntriesRequest::<TypeConfig> {
            vote,
            prev_log_id: batch.prev,
            leader_commit: *s.commit.lock().unwrap_or_else(|p| p.into_inner()),
            entries: std::mem::take(&mut batch.entries),
        };
        let sent = Instant::now();
        s.sent.fetch_add(1, Ordering::Relaxed);
        let success = send(&s, &req).await;
        record_early(&s.progress, &batch, last, sent, success);
    }
}

/// Records how the early request for `batch` (up to `last`, sent at `sent`) went.
fn record_early(
    progress: &watch::Sender<Progress>,
    batch: &Offer,
    last: LogId,
    sent: Instant,
    success: bool,
) {
    progress.send_modify(|p| {
        if p.vote != Some(batch.vote) || p.breaks != batch.breaks {
            return;
        }
        if !success {
            p.breaks += 1;
            p.queued = p.acked;
        } else if index(&p.acked) < Some(last.index) {
            p.acked = Some(last);
            p.acked_sent = Some(sent);
        }
    });
}

/// Posts one early request; whether the follower stored its entries.
async fn send(s: &Sender, req: &AppendEntriesRequest<TypeConfig>) -> bool {
    let Ok(body) = postcard::to_allocvec(req) else {
        return false;
    };
    let addr = s.addr.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let answer = s
        .client
        .call_with_header(
            &addr,
            Method::POST,
            PATH_APPEND,
            body,
            SEND_TIMEOUT,
            APPLIED_HEADER,
        )
        .await;
    let Ok((bytes, applied)) = answer else {
        return false;
    };
    if let Some(n) = applied.and_then(|v| v.parse().ok()) {
        s.followers.note(s.target, n);
    }
    matches!(
        postcard::from_bytes::<Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>>(&bytes),
        Ok(Ok(AppendEntriesResponse::Success))
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::{CommittedLeaderId, EntryPayload};

    const TERM: u64 = 3;

    fn log_id(index: u64) -> LogId {
        LogId::new(CommittedLeaderId::new(TERM, 1), index)
    }

    fn entry(index: u64) -> Entry {
        Entry {
            log_id: log_id(index),
            payload: EntryPayload::Blank,
        }
    }

    fn vote() -> Vote {
        Vote::new_committed(TERM, 1)
    }

    fn rpc(prev: u64, entries: &[u64]) -> AppendEntriesRequest<TypeConfig> {
        AppendEntriesRequest {
            vote: vote(),
            prev_log_id: Some(log_id(prev)),
            entries: entries.iter().map(|i| entry(*i)).collect(),
            leader_commit: None,
        }
    }

    /// Node 1, leading in `TERM` (or a follower) of members 1 and 2, with follower 2 whose
    /// offers the test takes.
    fn early(leading: bool) -> (EarlyReplication, mpsc::UnboundedReceiver<Offer>) {
        let e = EarlyReplication::new(
            PeerClient::new(None, 1),
            Arc::new(FollowerApplied::default()),
        );
        let mut m = RaftMetrics::new_initial(1);
        let members: std::collections::BTreeSet<NodeId> = [1, 2].into();
        m.membership_config = Arc::new(openraft::StoredMembership::new(
            Some(log_id(1)),
            openraft::Membership::new(vec![members], None),
        ));
        if leading {
            m.state = ServerState::Leader;
            m.vote = vote();
        }
        let (_tx, rx) = watch::channel(m);
        e.set_metrics(rx);
        let offers = e.add_target(2, "127.0.0.1:1").expect("new target");
        (e, offers)
    }

    #[tokio::test]
    async fn entries_go_early_only_to_a_follower_known_to_hold_the_log_before_them() {
        let (e, mut offers) = early(true);
        // Nothing is known of follower 2 yet.
        e.offer(Some(log_id(5)), vec![entry(6)]);
        assert!(offers.try_recv().is_err());
        // openraft's heartbeat says it holds the log up to 5.
        e.answered(2, &rpc(5, &[]), Instant::now(), true);
        // Entries after a gap do not fit.
        e.offer(Some(log_id(6)), vec![entry(7)]);
        assert!(offers.try_recv().is_err());
        e.offer(Some(log_id(5)), vec![entry(6)]);
        e.offer(Some(log_id(6)), vec![entry(7), entry(8)]);
        let a = offers.try_recv().expect("first offer");
        let b = offers.try_recv().expect("second offer");
        assert_eq!(a.prev, Some(log_id(5)));
        assert_eq!(b.prev, Some(log_id(6)));
        assert_eq!(b.entries.len(), 2);
        assert_eq!(b.vote, vote());
    }

    #[tokio::test]
    async fn a_node_removed_from_the_membership_gets_nothing_early() {
        let (e, mut offers) = early(true);
        let mut removed = e.add_target(3, "127.0.0.1:1").expect("new target");
        e.answered(2, &rpc(5, &[]), Instant::now(), true);
        e.answered(3, &rpc(5, &[]), Instant::now(), true);
        e.offer(Some(log_id(5)), vec![entry(6)]);
        assert!(offers.try_recv().is_ok());
        assert!(removed.try_recv().is_err());
    }

    #[tokio::test]
    async fn a_node_that_does_not_lead_in_the_entries_term_sends_nothing_early() {
        let (e, mut offers) = early(false);
        e.answered(2, &rpc(5, &[]), Instant::now(), true);
        e.offer(Some(log_id(5)), vec![entry(6)]);
        assert!(offers.try_recv().is_err());
    }

    /// Follower 2 in step up to 5, entry 6 sent early, openraft's request for 6 waiting on it
    /// while the early request ends as `success` says: what that request gets.
    async fn early_answer_to_openraft(
        success: bool,
    ) -> (
        EarlyReplication,
        mpsc::UnboundedReceiver<Offer>,
        Option<AppendEntriesResponse<NodeId>>,
    ) {
        let (e, mut offers) = early(true);
        e.answered(2, &rpc(5, &[]), Instant::now(), true);
        e.offer(Some(log_id(5)), vec![entry(6)]);
        let offer = offers.try_recv().expect("offer");
        let progress = e.progress(2).expect("target");
        let real = rpc(5, &[6]);
        let answer = {
            let waiting = e.covered(2, &real, Duration::from_secs(5));
            tokio::pin!(waiting);
            assert!(futures_util::poll!(&mut waiting).is_pending());
            record_early(&progress, &offer, log_id(6), Instant::now(), success);
            waiting.await
        };
        (e, offers, answer)
    }

    #[tokio::test]
    async fn openrafts_request_waits_for_the_early_answer_and_takes_it() {
        let (e, _offers, answer) = early_answer_to_openraft(true).await;
        assert!(matches!(answer, Some(AppendEntriesResponse::Success)));
        let real = rpc(5, &[6]);
        assert_eq!(e.answered_early(), 1);
        // Later requests for what it holds are answered at once; others go out.
        assert!(e.covered(2, &real, Duration::ZERO).await.is_some());
        assert!(e
            .covered(2, &rpc(6, &[7]), Duration::from_secs(5))
            .await
            .is_none());
        let mut other = real.clone();
        other.vote = Vote::new_committed(TERM + 1, 3);
        assert!(e.covered(2, &other, Duration::from_secs(5)).await.is_none());
    }

    #[tokio::test]
    async fn a_failed_early_request_sends_openrafts_own_and_stops_the_chain() {
        let (e, mut offers, answer) = early_answer_to_openraft(false).await;
        assert!(answer.is_none());
        // The next entries do not chain on the failed ones.
        e.offer(Some(log_id(6)), vec![entry(7)]);
        assert!(offers.try_recv().is_err());
        // openraft's own success puts the follower back in step.
        e.answered(2, &rpc(5, &[6]), Instant::now(), true);
        e.offer(Some(log_id(6)), vec![entry(7)]);
        assert!(offers.try_recv().is_ok());
    }

    #[tokio::test]
    async fn an_old_answer_does_not_stand_for_a_new_request() {
        let (e, _offers) = early(true);
        let long_ago = Instant::now()
            .checked_sub(Duration::from_secs(1))
            .expect("a second ago");
        e.answered(2, &rpc(5, &[6]), long_ago, true);
        assert!(e
            .covered(2, &rpc(5, &[6]), Duration::from_secs(5))
            .await
            .is_none());
        // A refused request forgets the follower's place altogether.
        e.answered(2, &rpc(5, &[6]), Instant::now(), true);
        e.answered(2, &rpc(6, &[7]), Instant::now(), false);
        assert!(e.covered(2, &rpc(5, &[6]), Duration::ZERO).await.is_none());
    }
}
