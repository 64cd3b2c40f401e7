//! The apply path on real MariaDB engines: recovery after a crash at each point of the XA write
//! path (decided from the log, `XA RECOVER` and `flux_meta`), idempotent re-delivery, and
//! snapshot build + install.

use std::sync::Arc;
use std::time::Duration;

use mysql_async::prelude::*;
use mysql_async::{Conn, Opts};
use shared_db::cluster::contract::{LogPosition, StateMachine};
use shared_db::protocol::backend::{EngineAddr, EngineTarget};
use shared_db::replication::context::StatementContext;
use shared_db::replication::entry::{
    ApplyReply, DdlEntry, EntryBody, LogEntry, LoggedStatement, Origin, Outcome, TxnEntry,
};
use shared_db::replication::ReplicaEngine;
use testkit::MariaDb;

fn target(db: &MariaDb) -> EngineTarget {
    EngineTarget {
        addr: EngineAddr::Tcp {
            host: "127.0.0.1".into(),
            port: db.port(),
        },
        user: "root".into(),
        password: db.password().into(),
        connect_timeout: Duration::from_secs(10),
    }
}

async fn conn(db: &MariaDb) -> Conn {
    let url = format!(
        "mysql://root:{}@127.0.0.1:{}/?prefer_socket=false",
        db.password(),
        db.port()
    );
    Conn::new(Opts::from_url(&url).unwrap()).await.unwrap()
}

const ORIGIN: Origin = Origin {
    node: 1,
    session: 7,
};

fn pos(index: u64) -> LogPosition {
    LogPosition { term: 1, index }
}

fn stmt(sql: &str, affected: Option<u64>) -> LoggedStatement {
    LoggedStatement {
        sql: sql.into(),
        ctx: StatementContext::fresh(),
        outcome: affected.map(|a| Outcome {
            affected: a,
            ..Default::default()
        }),
    }
}

fn ddl(sql: &str) -> Vec<u8> {
    LogEntry::new(EntryBody::Ddl(Box::new(DdlEntry {
        origin: ORIGIN,
        client_caps: 0,
        statement: stmt(sql, None),
    })))
    .encode()
}

fn txn(xid: &str, sqls: &[&str]) -> Vec<u8> {
    LogEntry::new(EntryBody::Txn(TxnEntry {
        xid: xid.into(),
        origin: ORIGIN,
        client_caps: 0,
        statements: sqls.iter().map(|s| stmt(s, Some(1))).collect(),
    }))
    .encode()
}

async fn apply(sm: &ReplicaEngine, index: u64, payload: Vec<u8>) -> ApplyReply {
    let r = sm.apply(pos(index), payload).await.unwrap();
    ApplyReply::decode(&r).unwrap()
}

/// Prepares an XA transaction the way the leader's executor does, on its own connection.
async fn prepare(db: &MariaDb, xid: &str, sql: &str) -> Conn {
    let mut c = conn(db).await;
    c.query_drop(format!("XA START '{xid}'")).await.unwrap();
    c.query_drop(sql).await.unwrap();
    c.query_drop(format!(
        "INSERT INTO flux_meta.xa_done (xid) VALUES ('{xid}')"
    ))
    .await
    .unwrap();
    c.query_drop(format!("XA END '{xid}'")).await.unwrap();
    c.query_drop(format!("XA PREPARE '{xid}'")).await.unwrap();
    c
}

/// Prepares an XA transaction as the leader's executor does, on an engine connection of the
/// kind the executor registers (which then commits it when the entry is applied).
async fn prepare_on_backend(
    db: &MariaDb,
    xid: &str,
    sql: &str,
) -> shared_db::protocol::backend::Backend {
    let mut b = shared_db::protocol::backend::Backend::connect(
        &target(db),
        shared_db::replication::applier::applier_caps(0),
        45,
        None,
    )
    .await
    .unwrap();
    for q in [
        format!("XA START '{xid}'"),
        sql.to_string(),
        format!("INSERT INTO flux_meta.xa_done (xid) VALUES ('{xid}')"),
        format!("XA END '{xid}'"),
        format!("XA PREPARE '{xid}'"),
    ] {
        b.query_drop(&q).await.unwrap();
    }
    b
}

async fn sum(c: &mut Conn) -> Vec<(String, Option<i64>)> {
    c.query("CHECKSUM TABLE app.t").await.unwrap()
}

async fn count(db: &MariaDb, sql: &str) -> u64 {
    let mut c = conn(db).await;
    let n: Option<u64> = c.query_first(sql).await.unwrap();
    c.disconnect().await.unwrap();
    n.unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_is_decided_from_the_log_and_xa_recover() {
    let db = MariaDb::start().unwrap();
    let sm = ReplicaEngine::open(target(&db), 1).await.unwrap();
    assert_eq!(sm.last_applied().await.unwrap(), None);
    assert!(matches!(
        apply(&sm, 1, ddl("CREATE DATABASE app")).await,
        ApplyReply::Applied { .. }
    ));
    apply(&sm, 2, ddl("CREATE TABLE app.t (id INT PRIMARY KEY)")).await;
    drop(sm);

    // Prepared but not committed when the leader crashed (the entry did commit in the log).
    let c = prepare(&db, "sdb-1-0000aaaa-1", "INSERT INTO app.t VALUES (1)").await;
    c.disconnect().await.unwrap();
    // Committed but the position not recorded (crash right after XA COMMIT).
    let mut c = prepare(&db, "sdb-1-0000aaaa-2", "INSERT INTO app.t VALUES (2)").await;
    c.query_drop("XA COMMIT 'sdb-1-0000aaaa-2'").await.unwrap();
    c.disconnect().await.unwrap();
    // Crashed before prepare: the engine rolls it back with the connection.
    let mut c = conn(&db).await;
    c.query_drop("XA START 'sdb-1-0000aaaa-3'").await.unwrap();
    c.query_drop("INSERT INTO app.t VALUES (3)").await.unwrap();
    drop(c);
    // Prepared, and its proposal never committed.
    let c = prepare(&db, "sdb-1-0000aaaa-4", "INSERT INTO app.t VALUES (4)").await;
    c.disconnect().await.unwrap();

    // The node restarts: a new process, the log re-delivers from what the engine recorded.
    let sm = ReplicaEngine::open(target(&db), 1).await.unwrap();
    assert_eq!(sm.last_applied().await.unwrap(), Some(pos(2)));
    let r = apply(
        &sm,
        3,
        txn("sdb-1-0000aaaa-1", &["INSERT INTO app.t VALUES (1)"]),
    )
    .await;
    assert!(matches!(r, ApplyReply::Applied { .. }), "{r:?}");
    let r = apply(
        &sm,
        4,
        txn("sdb-1-0000aaaa-2", &["INSERT INTO app.t VALUES (2)"]),
    )
    .await;
    assert_eq!(r, ApplyReply::Duplicate);
    // Prepared by this process, its proposal still pending when another node took over.
    let mut pending = shared_db::protocol::backend::Backend::connect(
        &target(&db),
        shared_db::replication::applier::applier_caps(0),
        45,
        None,
    )
    .await
    .unwrap();
    let xid = format!("{}1", sm.xid_prefix());
    pending
        .query_drop(&format!("XA START '{xid}'"))
        .await
        .unwrap();
    pending
        .query_drop("INSERT INTO app.t VALUES (5)")
        .await
        .unwrap();
    pending
        .query_drop(&format!("XA END '{xid}'"))
        .await
        .unwrap();
    pending
        .query_drop(&format!("XA PREPARE '{xid}'"))
        .await
        .unwrap();
    sm.xa
        .register(&xid, Arc::new(tokio::sync::Mutex::new(pending)));
    // A new leader's barrier: the never-committed prepared transactions are rolled back.
    let barrier = LogEntry::new(EntryBody::Barrier {
        leader: 2,
        nonce: 1,
    })
    .encode();
    apply(&sm, 5, barrier).await;
    assert_eq!(count(&db, "SELECT COUNT(*) FROM app.t").await, 2);
    assert_eq!(
        count(&db, "SELECT COUNT(*) FROM app.t WHERE id IN (1, 2)").await,
        2
    );
    let mut c = conn(&db).await;
    let prepared: Vec<(i64, i64, i64, String)> = c.query("XA RECOVER").await.unwrap();
    assert!(prepared.is_empty(), "{prepared:?}");

    // Re-delivery of applied entries changes nothing; a restart resumes at the recorded index.
    assert_eq!(
        apply(
            &sm,
            3,
            txn("sdb-1-0000aaaa-1", &["INSERT INTO app.t VALUES (1)"])
        )
        .await,
        ApplyReply::Duplicate
    );
    drop(sm);
    let sm = ReplicaEngine::open(target(&db), 1).await.unwrap();
    assert_eq!(sm.last_applied().await.unwrap(), Some(pos(5)));
    assert_eq!(sm.applied_index(), 5);
    // A follower-style entry (nobody prepared it here) runs its statements.
    let r = apply(
        &sm,
        6,
        txn("sdb-2-0000bbbb-1", &["INSERT INTO app.t VALUES (6)"]),
    )
    .await;
    assert!(matches!(r, ApplyReply::Applied { .. }), "{r:?}");
    let idx: Option<u64> = c
        .query_first("SELECT log_index FROM flux_meta.position")
        .await
        .unwrap();
    assert_eq!(idx, Some(6));
    // A transaction of several statements commits whole.
    let r = apply(
        &sm,
        7,
        txn(
            "sdb-2-0000bbbb-2",
            &[
                "INSERT INTO app.t VALUES (7)",
                "UPDATE app.t SET id = 8 WHERE id = 7",
            ],
        ),
    )
    .await;
    assert!(matches!(r, ApplyReply::Applied { .. }), "{r:?}");
    let ids: Vec<u64> = c
        .query("SELECT id FROM app.t WHERE id >= 6 ORDER BY id")
        .await
        .unwrap();
    assert_eq!(ids, vec![6, 8]);
    // An outcome that differs from the leader's marks the node diverged, persistently, and
    // nothing of that transaction stays: not its first statement, not its position.
    let r = apply(
        &sm,
        8,
        txn(
            "sdb-2-0000bbbb-3",
            &[
                "INSERT INTO app.t VALUES (9)",
                "UPDATE app.t SET id = id WHERE id = 99",
            ],
        ),
    )
    .await;
    assert!(matches!(r, ApplyReply::Diverged { .. }), "{r:?}");
    assert!(sm.diverged().is_some());
    let nine: Option<u64> = c
        .query_first("SELECT id FROM app.t WHERE id = 9")
        .await
        .unwrap();
    assert_eq!(nine, None, "the diverging transaction was rolled back");
    let idx: Option<u64> = c
        .query_first("SELECT log_index FROM flux_meta.position")
        .await
        .unwrap();
    assert_eq!(idx, Some(7));
    drop(sm);
    let sm = ReplicaEngine::open(target(&db), 1).await.unwrap();
    assert!(
        sm.diverged().is_some(),
        "the diverged flag survives a restart"
    );
    assert!(matches!(
        apply(&sm, 9, ddl("CREATE DATABASE other")).await,
        ApplyReply::Diverged { .. }
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_build_and_install() {
    let a = MariaDb::start().unwrap();
    let b = MariaDb::start().unwrap();
    let sa = ReplicaEngine::open(target(&a), 1).await.unwrap();
    let r = apply(&sa, 1, ddl("CREATE DATABASE app")).await;
    assert!(matches!(r, ApplyReply::Applied { .. }), "{r:?}");
    apply(
        &sa,
        2,
        ddl("CREATE TABLE app.t (id INT AUTO_INCREMENT PRIMARY KEY, v VARCHAR(20), b BLOB)"),
    )
    .await;
    apply(
        &sa,
        3,
        txn(
            "sdb-9-00000000-1",
            &[
                "INSERT INTO app.t (v, b) VALUES ('x', X'00FF10')",
                "INSERT INTO app.t (v, b) VALUES ('y', NULL)",
            ],
        ),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let meta = sa.build_snapshot(dir.path()).await.unwrap();
    assert_eq!(meta.last_applied, pos(3));
    assert_eq!(meta.checksum.len(), 64);
    let dump = std::fs::read_to_string(dir.path().join("dump.sql")).unwrap();
    assert!(dump.contains("CREATE TABLE `t`"), "{dump}");

    // The receiving node has other data, which the snapshot replaces.
    let mut cb = conn(&b).await;
    cb.query_drop("CREATE DATABASE stale").await.unwrap();
    let sb = ReplicaEngine::open(target(&b), 2).await.unwrap();
    sb.install_snapshot(dir.path(), &meta).await.unwrap();
    assert_eq!(sb.last_applied().await.unwrap(), Some(pos(3)));
    let dbs: Vec<String> = cb.query("SHOW DATABASES").await.unwrap();
    assert!(!dbs.contains(&"stale".to_string()), "{dbs:?}");
    let mut ca = conn(&a).await;
    assert_eq!(sum(&mut ca).await, sum(&mut cb).await);
    // Both go on with the same next entry and stay equal.
    let next = txn("sdb-9-00000000-2", &["INSERT INTO app.t (v) VALUES ('z')"]);
    apply(&sa, 4, next.clone()).await;
    apply(&sb, 4, next).await;
    assert_eq!(sum(&mut ca).await, sum(&mut cb).await);
}

fn group(txns: &[(&str, u64, &str)]) -> Vec<u8> {
    LogEntry::new(EntryBody::Txns {
        txns: txns
            .iter()
            .map(|(xid, session, sql)| TxnEntry {
                xid: (*xid).into(),
                origin: Origin {
                    node: 1,
                    session: *session,
                },
                client_caps: 0,
                statements: vec![stmt(sql, Some(1))],
            })
            .collect(),
    })
    .encode()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_entries_apply_each_transaction_exactly_once_across_restarts() {
    let db = MariaDb::start().unwrap();
    let sm = follower_with_table(&db, "CREATE TABLE app.t (id INT PRIMARY KEY)").await;

    // A follower applies a group of three transactions from three sessions.
    let r = apply(
        &sm,
        3,
        group(&[
            ("sdb-1-0000aaaa-1", 1, "INSERT INTO app.t VALUES (1)"),
            ("sdb-1-0000aaaa-2", 2, "INSERT INTO app.t VALUES (2)"),
            ("sdb-1-0000aaaa-3", 3, "INSERT INTO app.t VALUES (3)"),
        ]),
    )
    .await;
    assert!(matches!(r, ApplyReply::Applied { .. }), "{r:?}");
    assert_eq!(count(&db, "SELECT COUNT(*) FROM app.t").await, 3);
    assert_eq!(sm.last_applied().await.unwrap(), Some(pos(3)));
    drop(sm);

    // The next group stopped after its first transaction (which committed with its progress
    // mark, as the applier does). After a restart only the other two run: running the first
    // again would fail with a duplicate key where the leader had none, a divergence.
    let mut c = conn(&db).await;
    c.query_drop(
        "BEGIN; INSERT INTO app.t VALUES (4); \
         REPLACE INTO flux_meta.state (k, v) VALUES ('group_progress', '4:1'); COMMIT",
    )
    .await
    .unwrap();
    let sm = ReplicaEngine::open(target(&db), 2).await.unwrap();
    assert_eq!(sm.last_applied().await.unwrap(), Some(pos(3)));
    let r = apply(
        &sm,
        4,
        group(&[
            ("sdb-1-0000aaaa-4", 1, "INSERT INTO app.t VALUES (4)"),
            ("sdb-1-0000aaaa-5", 2, "INSERT INTO app.t VALUES (5)"),
            ("sdb-1-0000aaaa-6", 4, "INSERT INTO app.t VALUES (6)"),
        ]),
    )
    .await;
    assert!(matches!(r, ApplyReply::Applied { .. }), "{r:?}");
    assert!(sm.diverged().is_none());
    assert_eq!(count(&db, "SELECT COUNT(*) FROM app.t").await, 6);

    // On the leader: its own prepared transactions are committed, not run again.
    let prefix = sm.xid_prefix().to_string();
    let xids: Vec<String> = (7..10).map(|n| format!("{prefix}{n}")).collect();
    for (n, xid) in (7..10).zip(&xids) {
        let b = prepare_on_backend(&db, xid, &format!("INSERT INTO app.t VALUES ({n})")).await;
        sm.xa.register(xid, Arc::new(tokio::sync::Mutex::new(b)));
    }
    let own = LogEntry::new(EntryBody::Txns {
        txns: xids
            .iter()
            .map(|xid| TxnEntry {
                xid: xid.clone(),
                origin: ORIGIN,
                client_caps: 0,
                // Would fail (duplicate key) if it ran: only the prepared transaction commits.
                statements: vec![stmt("INSERT INTO app.t VALUES (1)", Some(1))],
            })
            .collect(),
    })
    .encode();
    let r = apply(&sm, 5, own.clone()).await;
    assert!(matches!(r, ApplyReply::Applied { .. }), "{r:?}");
    assert!(sm.diverged().is_none());
    assert_eq!(count(&db, "SELECT COUNT(*) FROM app.t").await, 9);
    assert_eq!(
        count(&db, "SELECT COUNT(*) FROM information_schema.innodb_trx").await,
        0
    );
    drop(sm);

    // A crash before the position was written: the markers make re-delivery a no-op.
    let sm = ReplicaEngine::open(target(&db), 2).await.unwrap();
    assert_eq!(sm.last_applied().await.unwrap(), Some(pos(4)));
    apply(&sm, 5, own).await;
    assert!(sm.diverged().is_none());
    assert_eq!(count(&db, "SELECT COUNT(*) FROM app.t").await, 9);
    assert_eq!(
        count(&db, "SELECT COUNT(*) FROM flux_meta.xa_done").await,
        0
    );
    assert_eq!(sm.last_applied().await.unwrap(), Some(pos(5)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_is_announced_before_its_xa_commit_and_covered_by_the_acknowledged_index() {
    let db = MariaDb::start().unwrap();
    let sm = Arc::new(ReplicaEngine::open(target(&db), 1).await.unwrap());
    apply(&sm, 1, ddl("CREATE DATABASE app")).await;
    apply(&sm, 2, ddl("CREATE TABLE app.t (id INT PRIMARY KEY)")).await;
    let xid = format!("{}1", sm.xid_prefix());
    let b = prepare_on_backend(&db, &xid, "INSERT INTO app.t VALUES (1)").await;
    let announced = sm.xa.register(&xid, Arc::new(tokio::sync::Mutex::new(b)));
    // Commits wait while a backup blocks them: the XA COMMIT stays in flight.
    let mut backup = conn(&db).await;
    backup.query_drop("BACKUP STAGE START").await.unwrap();
    backup
        .query_drop("BACKUP STAGE BLOCK_COMMIT")
        .await
        .unwrap();
    let applying = {
        let sm = Arc::clone(&sm);
        let entry = txn(&xid, &["INSERT INTO app.t VALUES (1)"]);
        tokio::spawn(async move { apply(&sm, 3, entry).await })
    };
    // The executor hears of the commit (and answers its client) before the XA COMMIT ends …
    assert_eq!(announced.await.unwrap(), 3);
    assert_eq!(sm.acknowledged_index(), 3);
    assert!(sm.applied_index() < 3);
    // … and reads that wait for the acknowledged index wait for that XA COMMIT.
    assert!(!sm.wait_applied(3, Duration::from_millis(200)).await);
    assert_eq!(count(&db, "SELECT COUNT(*) FROM app.t").await, 0);
    backup.query_drop("BACKUP STAGE END").await.unwrap();
    assert!(matches!(
        applying.await.unwrap(),
        ApplyReply::Applied { .. }
    ));
    assert!(sm.wait_applied(3, Duration::from_secs(10)).await);
    assert_eq!(count(&db, "SELECT COUNT(*) FROM app.t").await, 1);
}

/// A transaction of another node's client (origin session `session`), one statement with the
/// leader's affected rows, in the given time zone.
fn other_txn(xid: &str, session: u64, sql: &str, affected: u64, tz: &str) -> TxnEntry {
    let mut s = stmt(sql, Some(affected));
    s.ctx.time_zone = tz.into();
    s.ctx.db = Some("app".into());
    TxnEntry {
        xid: xid.into(),
        origin: Origin { node: 1, session },
        client_caps: 0,
        statements: vec![s],
    }
}

fn entry(body: EntryBody) -> Vec<u8> {
    LogEntry::new(body).encode()
}

/// An entry holding one [`other_txn`].
fn single_txn(xid: &str, session: u64, sql: &str, affected: u64, tz: &str) -> Vec<u8> {
    entry(EntryBody::Txn(other_txn(xid, session, sql, affected, tz)))
}

/// A follower (node 2) on a fresh engine, with `app` and the table `create` makes (entries 1
/// and 2).
async fn follower_with_table(db: &MariaDb, create: &str) -> Arc<ReplicaEngine> {
    let sm = ReplicaEngine::open(target(db), 2).await.unwrap();
    apply(&sm, 1, ddl("CREATE DATABASE app")).await;
    apply(&sm, 2, ddl(create)).await;
    sm
}

async fn commits(db: &MariaDb) -> u64 {
    let mut c = conn(db).await;
    let r: Option<(String, u64)> = c
        .query_first("SHOW GLOBAL STATUS LIKE 'Com_commit'")
        .await
        .unwrap();
    r.unwrap().1
}

async fn apply_many(sm: &ReplicaEngine, entries: Vec<(u64, Vec<u8>)>) -> Vec<ApplyReply> {
    sm.apply_many(entries.into_iter().map(|(i, p)| (pos(i), p)).collect())
        .await
        .unwrap()
        .iter()
        .map(|r| ApplyReply::decode(r).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_applies_a_run_of_other_nodes_transactions_in_one_engine_commit() {
    let db = MariaDb::start().unwrap();
    let sm = follower_with_table(
        &db,
        "CREATE TABLE app.t (id INT PRIMARY KEY, at DATETIME(6), v INT NOT NULL DEFAULT 0)",
    )
    .await;

    // Four entries, five transactions from three sessions, two time zones.
    let before = commits(&db).await;
    let replies = apply_many(
        &sm,
        vec![
            (
                3,
                single_txn(
                    "sdb-1-a-1",
                    1,
                    "INSERT INTO t (id, at) VALUES (1, NOW(6))",
                    1,
                    "+00:00",
                ),
            ),
            (
                4,
                entry(EntryBody::Txns {
                    txns: vec![
                        other_txn(
                            "sdb-1-a-2",
                            2,
                            "INSERT INTO t (id, at) VALUES (2, NOW(6))",
                            1,
                            "+05:00",
                        ),
                        other_txn(
                            "sdb-1-a-3",
                            3,
                            "INSERT INTO t (id, at) VALUES (3, NOW(6)), (4, NOW(6))",
                            2,
                            "+05:00",
                        ),
                    ],
                }),
            ),
            (
                5,
                single_txn(
                    "sdb-1-a-4",
                    1,
                    "UPDATE t SET v = v + 1 WHERE id >= 2",
                    3,
                    "+05:00",
                ),
            ),
            (
                6,
                single_txn(
                    "sdb-1-a-5",
                    2,
                    "INSERT INTO t (id, at) VALUES (5, NOW(6))",
                    1,
                    "+00:00",
                ),
            ),
        ],
    )
    .await;
    assert!(
        replies
            .iter()
            .all(|r| matches!(r, ApplyReply::Applied { .. })),
        "{replies:?}"
    );
    assert_eq!(
        commits(&db).await - before,
        1,
        "one engine commit for the whole run"
    );
    assert_eq!(sm.last_applied().await.unwrap(), Some(pos(6)));
    assert_eq!(sm.applied_index(), 6);
    assert!(sm.diverged().is_none());
    // Each statement ran in its own context: the session settings that changed between them
    // (the time zone) were set again, the others were not needed.
    assert_eq!(
        count(&db, "SELECT COUNT(*) FROM app.t WHERE at BETWEEN UTC_TIMESTAMP(6) - INTERVAL 1 MINUTE AND UTC_TIMESTAMP(6)").await,
        2,
        "ids 1 and 5, in UTC"
    );
    assert_eq!(
        count(
            &db,
            "SELECT COUNT(*) FROM app.t WHERE at > UTC_TIMESTAMP(6) + INTERVAL 4 HOUR"
        )
        .await,
        3,
        "ids 2, 3, 4 at +05:00"
    );
    assert_eq!(count(&db, "SELECT SUM(v) FROM app.t").await, 3);

    // Re-delivered entries change nothing.
    let replies = apply_many(
        &sm,
        vec![(
            6,
            single_txn(
                "sdb-1-a-5",
                2,
                "INSERT INTO t (id, at) VALUES (5, NOW(6))",
                1,
                "+00:00",
            ),
        )],
    )
    .await;
    assert!(
        matches!(replies[..], [ApplyReply::Duplicate]),
        "{replies:?}"
    );
    assert_eq!(count(&db, "SELECT COUNT(*) FROM app.t").await, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_with_an_outcome_unlike_the_leaders_is_rolled_back_and_the_entry_reported() {
    let db = MariaDb::start().unwrap();
    let sm = follower_with_table(
        &db,
        "CREATE TABLE app.t (id INT PRIMARY KEY, v INT NOT NULL DEFAULT 0)",
    )
    .await;
    let replies = apply_many(
        &sm,
        vec![
            (
                3,
                single_txn("sdb-1-a-1", 1, "INSERT INTO t (id) VALUES (1)", 1, "SYSTEM"),
            ),
            // The leader's table had three rows here; this one has one.
            (
                4,
                single_txn("sdb-1-a-2", 2, "UPDATE t SET v = v + 1", 3, "SYSTEM"),
            ),
            (
                5,
                single_txn("sdb-1-a-3", 1, "INSERT INTO t (id) VALUES (2)", 1, "SYSTEM"),
            ),
        ],
    )
    .await;
    assert!(
        matches!(replies[0], ApplyReply::Applied { .. }),
        "{replies:?}"
    );
    assert!(
        matches!(&replies[1], ApplyReply::Diverged { reason } if reason.contains("entry 4")),
        "{replies:?}"
    );
    assert!(
        matches!(replies[2], ApplyReply::Diverged { .. }),
        "{replies:?}"
    );
    // Entry 3 applied, entry 4 left nothing, entry 5 never ran.
    assert_eq!(sm.last_applied().await.unwrap(), Some(pos(3)));
    assert_eq!(count(&db, "SELECT COUNT(*) FROM app.t").await, 1);
    assert_eq!(count(&db, "SELECT SUM(v) FROM app.t").await, 0);
    assert!(sm.diverged().is_some_and(|r| r.contains("entry 4")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_with_a_temporary_table_keeps_its_own_connection() {
    let db = MariaDb::start().unwrap();
    let sm = follower_with_table(&db, "CREATE TABLE app.t (id INT PRIMARY KEY)").await;
    // Session 7 (ORIGIN) creates a temporary table that hides app.t in that session.
    apply(
        &sm,
        3,
        ddl("CREATE TEMPORARY TABLE app.t (id INT PRIMARY KEY)"),
    )
    .await;
    let replies = apply_many(
        &sm,
        vec![
            (
                4,
                single_txn("sdb-1-a-1", 5, "INSERT INTO t VALUES (1)", 1, "SYSTEM"),
            ),
            (
                5,
                single_txn(
                    "sdb-1-a-2",
                    ORIGIN.session,
                    "INSERT INTO t VALUES (2)",
                    1,
                    "SYSTEM",
                ),
            ),
            (
                6,
                single_txn("sdb-1-a-3", 5, "INSERT INTO t VALUES (3)", 1, "SYSTEM"),
            ),
        ],
    )
    .await;
    assert!(
        replies
            .iter()
            .all(|r| matches!(r, ApplyReply::Applied { .. })),
        "{replies:?}"
    );
    // Row 2 went to session 7's temporary table, not to the shared table.
    let mut c = conn(&db).await;
    let ids: Vec<i64> = c.query("SELECT id FROM app.t ORDER BY id").await.unwrap();
    assert_eq!(ids, [1, 3]);
    assert_eq!(sm.last_applied().await.unwrap(), Some(pos(6)));
}
