//! One `Cluster` in this process (a cluster of one, no engine): the `ReplicatedLog` contract as
//! the engine side uses it, durability of the redb log and vote across a restart, snapshots of
//! the state machine's directory, and a failing state machine stopping raft instead of being
//! skipped. The state machine here is a small file-backed recorder implementing the contract.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shared_db::cluster::contract::{
    BoxFuture, LogPosition, ProposeError, ReplicatedLog, SnapshotMeta, StateMachine,
    StateMachineError,
};
use shared_db::cluster::{Cluster, ClusterSettings};

/// Records applied payloads in memory and the applied position in a file (its "engine").
struct Recorder {
    state: PathBuf,
    applied: Mutex<Vec<(u64, Vec<u8>)>>,
    fail_at: AtomicU64,
}

impl Recorder {
    fn new(dir: &Path) -> Arc<Recorder> {
        Arc::new(Recorder {
            state: dir.join("sm-state"),
            applied: Mutex::new(Vec::new()),
            fail_at: AtomicU64::new(u64::MAX),
        })
    }
    fn payloads(&self) -> Vec<String> {
        self.applied
            .lock()
            .unwrap()
            .iter()
            .map(|(_, p)| String::from_utf8(p.clone()).unwrap())
            .collect()
    }
}

impl StateMachine for Recorder {
    fn apply(
        &self,
        pos: LogPosition,
        payload: Vec<u8>,
    ) -> BoxFuture<'_, Result<Vec<u8>, StateMachineError>> {
        Box::pin(async move {
            if pos.index >= self.fail_at.load(Ordering::SeqCst) {
                return Err(StateMachineError::Engine("disk full".into()));
            }
            let mut a = self.applied.lock().unwrap();
            if a.last().is_some_and(|(i, _)| *i >= pos.index) {
                return Ok(b"dup".to_vec());
            }
            a.push((pos.index, payload));
            std::fs::write(&self.state, format!("{} {}", pos.term, pos.index)).unwrap();
            Ok(format!("ok {}", pos.index).into_bytes())
        })
    }

    fn last_applied(&self) -> BoxFuture<'_, Result<Option<LogPosition>, StateMachineError>> {
        Box::pin(async move {
            Ok(std::fs::read_to_string(&self.state).ok().map(|s| {
                let (t, i) = s.split_once(' ').unwrap();
                LogPosition {
                    term: t.parse().unwrap(),
                    index: i.parse().unwrap(),
                }
            }))
        })
    }

    fn build_snapshot<'a>(
        &'a self,
        dir: &'a Path,
    ) -> BoxFuture<'a, Result<SnapshotMeta, StateMachineError>> {
        Box::pin(async move {
            let a = self.applied.lock().unwrap().clone();
            let text: String = a
                .iter()
                .map(|(i, p)| format!("{i} {}\n", String::from_utf8_lossy(p)))
                .collect();
            std::fs::write(dir.join("rows.txt"), &text).unwrap();
            let (size_bytes, checksum) = shared_db::cluster::snapshot::checksum_dir(dir).unwrap();
            let last = a.last().map_or(0, |(i, _)| *i);
            Ok(SnapshotMeta {
                last_applied: LogPosition {
                    term: 1,
                    index: last,
                },
                size_bytes,
                checksum,
            })
        })
    }

    fn install_snapshot<'a>(
        &'a self,
        _dir: &'a Path,
        _meta: &'a SnapshotMeta,
    ) -> BoxFuture<'a, Result<(), StateMachineError>> {
        Box::pin(async { Err(StateMachineError::Snapshot("not used alone".into())) })
    }
}

fn settings(dir: &Path, snapshot_logs: u64) -> ClusterSettings {
    ClusterSettings {
        node_id: 1,
        raft_dir: dir.join("raft"),
        internal_addr: "127.0.0.1:1".into(),
        mysql_addr: "127.0.0.1:3307".into(),
        advertise_fixed: true,
        peers: Vec::new(),
        discovery: None,
        secret: None,
        join: false,
        heartbeat: Duration::from_millis(50),
        election_min: Duration::from_millis(150),
        election_max: Duration::from_millis(300),
        snapshot_logs,
        keep_logs: 2,
        auto_resync: false,
        early_replication: true,
    }
}

async fn leader_of_one(c: &Cluster) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !c.is_leader() {
        assert!(
            Instant::now() < deadline,
            "a node alone did not become leader"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proposals_apply_in_order_survive_a_restart_and_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let sm = Recorder::new(dir.path());
    let c = Cluster::start(settings(dir.path(), 20), sm.clone())
        .await
        .unwrap();
    leader_of_one(&c).await;
    assert_eq!(c.node_id(), 1);
    assert_eq!(c.leader().unwrap().mysql_addr, "127.0.0.1:3307");
    c.ensure_leader(Duration::from_secs(5)).await.unwrap();

    // Concurrent proposals: each gets its own position and the state machine's answer;
    // the state machine sees them in log order.
    let mut handles = Vec::new();
    for i in 0..30 {
        let c = Arc::clone(&c);
        handles.push(tokio::spawn(async move {
            c.propose(format!("p{i}").into_bytes(), Duration::from_secs(10))
                .await
                .unwrap()
        }));
    }
    let mut positions = Vec::new();
    for h in handles {
        let (pos, result) = h.await.unwrap();
        assert_eq!(result, format!("ok {}", pos.index).into_bytes());
        positions.push(pos.index);
    }
    positions.sort();
    positions.dedup();
    assert_eq!(positions.len(), 30);
    let st = c.status().await;
    println!(
        "30 concurrent proposals: {} log entries written in {} fsynced commits",
        st.log_entries_written, st.log_fsyncs
    );
    let applied = sm.applied.lock().unwrap().clone();
    assert!(applied.windows(2).all(|w| w[0].0 < w[1].0));
    assert!(
        c.wait_applied(*positions.last().unwrap(), Duration::from_secs(5))
            .await
    );
    assert!(!c.wait_applied(10_000, Duration::from_millis(50)).await);

    // 30 entries with a snapshot every 20: a snapshot directory with the recorder's file.
    let deadline = Instant::now() + Duration::from_secs(20);
    let snap = loop {
        let s = c.status().await;
        if let Some(i) = s.snapshot_index {
            break i;
        }
        assert!(Instant::now() < deadline, "no snapshot: {s:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(snap >= 15, "snapshot at {snap}");
    let snaps: Vec<_> = std::fs::read_dir(dir.path().join("raft/snapshots"))
        .unwrap()
        .flatten()
        .collect();
    assert_eq!(snaps.len(), 1);
    assert!(snaps[0].path().join("data/rows.txt").is_file());
    assert!(snaps[0].path().join("meta.json").is_file());

    c.set_diverged(true);
    assert!(c.status().await.diverged);
    let before = sm.payloads();
    c.shutdown().await;
    drop(c);

    // Restart on the same directory: the log, vote and position survive; new proposals follow.
    let deadline = Instant::now() + Duration::from_secs(20);
    let c = loop {
        match Cluster::start(settings(dir.path(), 20), sm.clone()).await {
            Ok(c) => break c,
            // The old instance's database closes as its tasks wind down.
            Err(e) if Instant::now() < deadline => {
                eprintln!("restart: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("{e}"),
        }
    };
    leader_of_one(&c).await;
    let (pos, _) = c
        .propose(b"after-restart".to_vec(), Duration::from_secs(10))
        .await
        .unwrap();
    assert!(pos.index > *positions.last().unwrap());
    let mut expected = before.clone();
    expected.push("after-restart".into());
    assert_eq!(sm.payloads(), expected, "nothing applied twice or skipped");
    assert!(c.status().await.term >= 1);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_state_machine_stops_raft_instead_of_skipping() {
    let dir = tempfile::tempdir().unwrap();
    let sm = Recorder::new(dir.path());
    let c = Cluster::start(settings(dir.path(), 10_000), sm.clone())
        .await
        .unwrap();
    leader_of_one(&c).await;
    let (pos, _) = c
        .propose(b"ok".to_vec(), Duration::from_secs(10))
        .await
        .unwrap();
    sm.fail_at.store(pos.index + 1, Ordering::SeqCst);
    match c.propose(b"boom".to_vec(), Duration::from_secs(10)).await {
        Err(ProposeError::Apply(m)) => assert!(m.contains("disk full"), "{m}"),
        other => panic!("expected an apply error, got {other:?}"),
    }
    assert!(c.fatal().unwrap().contains("disk full"));
    assert!(c.status().await.fatal.is_some());
    // Nothing more is applied or accepted.
    assert!(matches!(
        c.propose(b"after".to_vec(), Duration::from_secs(2)).await,
        Err(ProposeError::ShuttingDown)
    ));
    assert_eq!(sm.payloads(), vec!["ok".to_string()]);
}
