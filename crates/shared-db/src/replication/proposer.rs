//! Group commit: transactions that commit at the same time share one log entry.
//!
//! openraft 0.9 syncs each appended entry before it takes the next client write, so
//! transactions proposed one by one each pay a sync of the leader's log, one after the other,
//! and then one replication round each. The proposer keeps one entry in the leader's sync at a
//! time: transactions that arrive meanwhile wait and go out together in the next entry
//! ([`EntryBody::Txns`]). A transaction that finds nothing in flight is proposed at once, as a
//! plain [`EntryBody::Txn`].

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};

use super::entry::{EntryBody, LogEntry, TxnEntry};
use crate::cluster::contract::{LogPosition, ProposeError, ReplicatedLog};

/// Most transactions in one entry.
const MAX_GROUP: usize = 256;

/// Most statement bytes in one entry (a larger transaction still goes, alone).
const MAX_GROUP_BYTES: usize = 4 << 20;

/// Longest wait for the entry in flight to be synced before the next one goes anyway (a sync
/// takes well under a millisecond; this only bounds a stalled disk's effect on grouping).
const SYNC_WAIT: Duration = Duration::from_millis(50);

/// What a proposal returns: the entry's position and this node's apply reply.
pub type Proposed = Result<(LogPosition, Vec<u8>), ProposeError>;

struct Waiting {
    txn: TxnEntry,
    bytes: usize,
    timeout: Duration,
    reply: oneshot::Sender<Proposed>,
}

/// Hands transactions to the log, gathering those that arrive together.
pub struct Proposer {
    tx: mpsc::UnboundedSender<Waiting>,
}

impl Proposer {
    /// Starts the proposer's task (it ends when the proposer is dropped).
    pub fn start(log: Arc<dyn ReplicatedLog>) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(log, rx));
        Proposer { tx }
    }

    /// Proposes `txn` (alone or with others) and waits for its entry to be applied here.
    pub async fn propose(&self, txn: TxnEntry, timeout: Duration) -> Proposed {
        let bytes = txn
            .statements
            .iter()
            .map(|s| s.sql.len() + 256)
            .sum::<usize>()
            + 128;
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Waiting {
                txn,
                bytes,
                timeout,
                reply,
            })
            .map_err(|_| ProposeError::ShuttingDown)?;
        rx.await.unwrap_or(Err(ProposeError::ShuttingDown))
    }
}

async fn run(log: Arc<dyn ReplicatedLog>, mut rx: mpsc::UnboundedReceiver<Waiting>) {
    let mut synced: Option<watch::Receiver<u64>> = log.appends_synced();
    let mut carried: Option<Waiting> = None;
    loop {
        // Flow control first: what arrives while followers catch up joins this entry.
        let first = match carried.take() {
            Some(w) => w,
            None => match rx.recv().await {
                Some(w) => w,
                None => return,
            },
        };
        log.wait_for_followers().await;
        let mut bytes = first.bytes;
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(w) if bytes + w.bytes > MAX_GROUP_BYTES => {
                    carried = Some(w);
                    break;
                }
                Ok(w) => {
                    bytes += w.bytes;
                    group.push(w);
                }
                Err(_) => break,
            }
        }
        let seen = synced.as_mut().map(|s| *s.borrow_and_update());
        tokio::spawn(propose_group(Arc::clone(&log), group));
        if let (Some(s), Some(seen)) = (synced.as_mut(), seen) {
            // A sync that ends after this point covers the entry just handed over, or one
            // before it: either way the log is ready for the next entry.
            let _ = tokio::time::timeout(SYNC_WAIT, s.wait_for(|n| *n > seen)).await;
        }
    }
}

async fn propose_group(log: Arc<dyn ReplicatedLog>, group: Vec<Waiting>) {
    let timeout = group.iter().map(|w| w.timeout).max().unwrap_or_default();
    let (txns, replies): (Vec<TxnEntry>, Vec<oneshot::Sender<Proposed>>) =
        group.into_iter().map(|w| (w.txn, w.reply)).unzip();
    let body = if txns.len() == 1 {
        match txns.into_iter().next() {
            Some(t) => EntryBody::Txn(t),
            None => return,
        }
    } else {
        EntryBody::Txns { txns }
    };
    let result = log.propose(LogEntry::new(body).encode(), timeout).await;
    for reply in replies {
        let _ = reply.send(result.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::contract::{BoxFuture, NodeId, PeerInfo};
    use crate::replication::entry::Origin;
    use std::sync::Mutex;

    /// A log whose appends are synced only when the test says so.
    struct ManualLog {
        proposed: Mutex<Vec<LogEntry>>,
        appended: mpsc::UnboundedSender<()>,
        synced: watch::Sender<u64>,
    }

    impl ReplicatedLog for ManualLog {
        fn propose(
            &self,
            payload: Vec<u8>,
            _timeout: Duration,
        ) -> BoxFuture<'_, Result<(LogPosition, Vec<u8>), ProposeError>> {
            Box::pin(async move {
                let entry =
                    LogEntry::decode(&payload).map_err(|e| ProposeError::Apply(e.to_string()))?;
                let index = {
                    let mut p = self.proposed.lock().unwrap();
                    p.push(entry);
                    p.len() as u64
                };
                let _ = self.appended.send(());
                Ok((LogPosition { term: 1, index }, b"ok".to_vec()))
            })
        }
        fn ensure_leader(&self, _t: Duration) -> BoxFuture<'_, Result<(), ProposeError>> {
            Box::pin(async { Ok(()) })
        }
        fn leader(&self) -> Option<PeerInfo> {
            None
        }
        fn node_id(&self) -> NodeId {
            1
        }
        fn appends_synced(&self) -> Option<watch::Receiver<u64>> {
            Some(self.synced.subscribe())
        }
    }

    fn txn(n: u64) -> TxnEntry {
        TxnEntry {
            xid: format!("sdb-1-t-{n}"),
            origin: Origin {
                node: 1,
                session: n,
            },
            client_caps: 0,
            statements: Vec::new(),
        }
    }

    #[tokio::test]
    async fn transactions_arriving_during_a_sync_share_the_next_entry() {
        let (appended, mut appends) = mpsc::unbounded_channel();
        let log = Arc::new(ManualLog {
            proposed: Mutex::new(Vec::new()),
            appended,
            synced: watch::Sender::new(0),
        });
        let proposer = Proposer::start(Arc::clone(&log) as Arc<dyn ReplicatedLog>);
        let t = Duration::from_secs(5);
        // The first goes alone, at once.
        let mut first = Box::pin(proposer.propose(txn(0), t));
        assert!(futures_util::poll!(&mut first).is_pending());
        appends.recv().await.unwrap();
        // Its sync has not happened: these four are queued (a first poll hands each over)
        // and wait for it, then go out as one entry.
        let mut later: Vec<_> = (1..5)
            .map(|n| Box::pin(proposer.propose(txn(n), t)))
            .collect();
        for f in &mut later {
            assert!(futures_util::poll!(f).is_pending());
        }
        log.synced.send_modify(|n| *n += 1);
        appends.recv().await.unwrap();
        assert_eq!(first.await.unwrap().0.index, 1);
        for f in later {
            assert_eq!(f.await.unwrap().0.index, 2, "all four in entry 2");
        }
        let proposed = log.proposed.lock().unwrap();
        assert_eq!(proposed.len(), 2);
        assert!(matches!(&proposed[0].body, EntryBody::Txn(t) if t.xid == "sdb-1-t-0"));
        match &proposed[1].body {
            EntryBody::Txns { txns } => {
                let xids: Vec<&str> = txns.iter().map(|t| t.xid.as_str()).collect();
                assert_eq!(xids, ["sdb-1-t-1", "sdb-1-t-2", "sdb-1-t-3", "sdb-1-t-4"]);
            }
            other => panic!("expected a group, got {other:?}"),
        }
    }
}
