//! `shared-db serve` with `REPLICATION=single`: a real node process whose writes go through the
//! replication write path (XA on the leader, one-node log, `flux_meta` position), with
//! mysql_async as the client.

mod common;

use common::Operator;
use mysql_async::prelude::*;
use mysql_async::{Conn, Opts};
use testkit::MariaDb;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_node_log_applies_writes_and_reports_status() {
    let db = MariaDb::start().unwrap();
    let op = Operator::external(&db, &[("REPLICATION", "single")]);
    let url = op.url(db.password());
    let mut c = Conn::new(Opts::from_url(&url).unwrap()).await.unwrap();
    c.query_drop("CREATE TABLE test_db.t (id INT AUTO_INCREMENT PRIMARY KEY, at DATETIME(6) DEFAULT NOW(6), u CHAR(36))")
        .await
        .unwrap();
    c.query_drop("INSERT INTO test_db.t (u) VALUES (UUID()), (UUID())")
        .await
        .unwrap();
    assert_eq!(c.affected_rows(), 2);
    assert_eq!(c.last_insert_id(), Some(1));
    // A failing autocommit write (its XA END + PREPARE went out right behind it) gives the
    // engine's error and leaves nothing prepared or logged; the session writes on.
    let err = c
        .query_drop("INSERT INTO test_db.t (id, u) VALUES (1, 'dup')")
        .await
        .unwrap_err();
    match err {
        mysql_async::Error::Server(e) => assert_eq!(e.code, 1062, "{e:?}"),
        other => panic!("{other:?}"),
    }
    c.query_drop("SET autocommit = 0").await.unwrap();
    c.query_drop("INSERT INTO test_db.t (u) VALUES ('a')")
        .await
        .unwrap();
    c.query_drop("ROLLBACK").await.unwrap();
    c.query_drop("INSERT INTO test_db.t (u) VALUES ('b')")
        .await
        .unwrap();
    c.query_drop("COMMIT").await.unwrap();
    c.query_drop("SET autocommit = 1").await.unwrap();
    c.query_drop("CREATE TABLE test_db.t2 (a INT)")
        .await
        .unwrap();
    let rows: Vec<(u32, String)> = c
        .query("SELECT id, u FROM test_db.t ORDER BY id")
        .await
        .unwrap();
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert_eq!(rows[2].1, "b");
    assert_ne!(rows[0].1, rows[1].1, "each UUID() row gets its own value");

    // The engine recorded the applied position; /status shows it.
    let mut e = Conn::new(
        Opts::from_url(&format!(
            "mysql://root:{}@127.0.0.1:{}/?prefer_socket=false",
            db.password(),
            db.port()
        ))
        .unwrap(),
    )
    .await
    .unwrap();
    let prepared: Vec<mysql_async::Row> = e.query("XA RECOVER").await.unwrap();
    assert!(prepared.is_empty(), "{prepared:?}");
    let markers: Option<u64> = e
        .query_first("SELECT COUNT(*) FROM flux_meta.xa_done")
        .await
        .unwrap();
    assert_eq!(markers, Some(0), "markers are cleared with the position");
    let idx: Option<u64> = e
        .query_first("SELECT log_index FROM flux_meta.position")
        .await
        .unwrap();
    // Barrier, CREATE TABLE and its outcome report, two transactions, CREATE TABLE and its
    // outcome report.
    assert_eq!(idx, Some(7));
    let status = op.status();
    assert_eq!(status["replication"]["applied_index"], 7, "{status}");
    assert_eq!(status["replication"]["diverged"], false);
    assert_eq!(status["replication"]["engine_state"], "running");
    assert_eq!(status["node"]["role"], "leader");
}

/// Drivers and sysbench (by default) prepare `BEGIN`/`COMMIT`/`ROLLBACK` and the writes between
/// them: the transaction runs on the leader's shadow session and commits or rolls back whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_transaction_control_and_writes_replicate() {
    let db = MariaDb::start().unwrap();
    let op = Operator::external(&db, &[("REPLICATION", "single")]);
    let mut c = Conn::new(Opts::from_url(&op.url(db.password())).unwrap())
        .await
        .unwrap();
    c.query_drop("CREATE TABLE test_db.p (id INT PRIMARY KEY, v INT)")
        .await
        .unwrap();
    // Outside a transaction COMMIT and ROLLBACK do nothing and answer OK, as on MariaDB.
    c.exec_drop("COMMIT", ()).await.unwrap();
    c.exec_drop("ROLLBACK", ()).await.unwrap();
    c.exec_drop("BEGIN", ()).await.unwrap();
    c.exec_drop("INSERT INTO test_db.p VALUES (?, ?)", (1, 10))
        .await
        .unwrap();
    c.exec_drop("ROLLBACK", ()).await.unwrap();
    c.exec_drop("START TRANSACTION", ()).await.unwrap();
    c.exec_drop("INSERT INTO test_db.p VALUES (?, ?)", (2, 20))
        .await
        .unwrap();
    c.exec_drop("UPDATE test_db.p SET v = v + ? WHERE id = ?", (1, 2))
        .await
        .unwrap();
    assert_eq!(c.affected_rows(), 1);
    c.exec_drop("COMMIT", ()).await.unwrap();
    let rows: Vec<(i32, i32)> = c.query("SELECT id, v FROM test_db.p").await.unwrap();
    assert_eq!(rows, vec![(2, 21)]);
    // The committed transaction went through the log (barrier, DDL + its report, one txn).
    let status = op.status();
    assert_eq!(status["replication"]["applied_index"], 4, "{status}");

    // Prepared DDL (drivers that prepare every statement) takes the DDL path of its text.
    c.exec_drop("CREATE TABLE test_db.p2 (a INT)", ())
        .await
        .unwrap();
    c.exec_drop("ALTER TABLE test_db.p2 ADD COLUMN b INT", ())
        .await
        .unwrap();
    c.exec_drop("INSERT INTO test_db.p2 VALUES (?, ?)", (1, 2))
        .await
        .unwrap();
    let again = c
        .exec_drop("CREATE TABLE test_db.p2 (a INT)", ())
        .await
        .unwrap_err();
    match again {
        mysql_async::Error::Server(e) => assert_eq!(e.code, 1050, "{e:?}"),
        other => panic!("{other:?}"),
    }
    let rows: Vec<(i32, i32)> = c.query("SELECT a, b FROM test_db.p2").await.unwrap();
    assert_eq!(rows, vec![(1, 2)]);
    c.exec_drop("DROP TABLE test_db.p2", ()).await.unwrap();
    // CREATE, ALTER, the failed CREATE and DROP, each with its outcome report, and the
    // insert: every one went through the log.
    let status = op.status();
    assert_eq!(
        status["replication"]["applied_index"],
        4 + 4 * 2 + 1,
        "{status}"
    );
}

/// A deadlock rolls the loser's whole transaction back, as on MariaDB; its retry (a new
/// `BEGIN`) starts afresh instead of hitting the rolled-back XA branch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadlocked_transaction_ends_and_its_retry_starts_afresh() {
    let db = MariaDb::start().unwrap();
    let op = Operator::external(&db, &[("REPLICATION", "single")]);
    let url = op.url(db.password());
    let mut a = Conn::new(Opts::from_url(&url).unwrap()).await.unwrap();
    let mut b = Conn::new(Opts::from_url(&url).unwrap()).await.unwrap();
    a.query_drop("CREATE TABLE test_db.d (id INT PRIMARY KEY, v INT)")
        .await
        .unwrap();
    a.query_drop("INSERT INTO test_db.d VALUES (1, 0), (2, 0)")
        .await
        .unwrap();
    a.query_drop("BEGIN").await.unwrap();
    b.query_drop("BEGIN").await.unwrap();
    a.query_drop("UPDATE test_db.d SET v = v + 1 WHERE id = 1")
        .await
        .unwrap();
    b.query_drop("UPDATE test_db.d SET v = v + 10 WHERE id = 2")
        .await
        .unwrap();
    // Each now wants the other's row: whichever order they arrive in, one deadlocks.
    let ta = tokio::spawn(async move {
        let r = a
            .query_drop("UPDATE test_db.d SET v = v + 1 WHERE id = 2")
            .await;
        (a, r)
    });
    let tb = tokio::spawn(async move {
        let r = b
            .query_drop("UPDATE test_db.d SET v = v + 10 WHERE id = 1")
            .await;
        (b, r)
    });
    let (mut a, ra) = ta.await.unwrap();
    let (mut b, rb) = tb.await.unwrap();
    let code = |r: &Result<(), mysql_async::Error>| match r {
        Err(mysql_async::Error::Server(e)) => Some(e.code),
        _ => None,
    };
    let (winner, loser, step) = match (code(&ra), code(&rb)) {
        (Some(1213), None) => (&mut b, &mut a, 1),
        (None, Some(1213)) => (&mut a, &mut b, 10),
        other => panic!("expected exactly one deadlock, got {other:?}"),
    };
    winner.query_drop("COMMIT").await.unwrap();
    // The loser's transaction is gone; its retry works.
    loser.query_drop("BEGIN").await.unwrap();
    loser
        .exec_drop("UPDATE test_db.d SET v = v + ? WHERE id IN (1, 2)", (step,))
        .await
        .unwrap();
    loser.query_drop("COMMIT").await.unwrap();
    let rows: Vec<(i32, i32)> = a
        .query("SELECT id, v FROM test_db.d ORDER BY id")
        .await
        .unwrap();
    assert_eq!(rows, vec![(1, 11), (2, 11)]);
}

/// A prepared read inside a transaction runs on the shadow session, so it sees the
/// transaction's own writes, and answers the same binary rows the engine itself gives a
/// prepared read outside one (statements prepared before `BEGIN`, as sysbench does, included).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_reads_in_a_transaction_see_its_writes_in_the_binary_protocol() {
    let db = MariaDb::start().unwrap();
    let op = Operator::external(&db, &[("REPLICATION", "single")]);
    let mut c = Conn::new(Opts::from_url(&op.url(db.password())).unwrap())
        .await
        .unwrap();
    c.query_drop(
        "CREATE TABLE test_db.ty (id INT PRIMARY KEY, ti TINYINT, si SMALLINT UNSIGNED, \
         mi MEDIUMINT, bi BIGINT UNSIGNED, f FLOAT, d DOUBLE, de DECIMAL(10,3), dt DATE, \
         dtm DATETIME(6), ts TIMESTAMP NULL, tm TIME(6), y YEAR, vc VARCHAR(20), bl BLOB, \
         bt BIT(5), n INT)",
    )
    .await
    .unwrap();
    c.query_drop(
        "INSERT INTO test_db.ty VALUES \
         (1, -5, 65535, -70000, 18446744073709551615, 1.5, -2.25, 12.345, '2026-12-03', \
          '2026-12-03 07:08:09.123456', '2026-01-02 03:04:05', '-838:59:59.000001', 2026, \
          'héllo', x'00ff', b'10101', NULL), \
         (2, 0, 0, 0, 0, 0, 0, 0, '2026-01-01', '2026-12-03 00:00:00', NULL, '00:00:00', \
          NULL, '', '', b'0', 7)",
    )
    .await
    .unwrap();
    let select = "SELECT * FROM test_db.ty WHERE id <= ? ORDER BY id";
    let rows = |rs: Vec<mysql_async::Row>| -> Vec<Vec<mysql_async::Value>> {
        rs.into_iter().map(mysql_async::Row::unwrap).collect()
    };
    // Outside a transaction the local engine answers in the binary protocol itself.
    let direct = rows(c.exec(select, (10,)).await.unwrap());
    assert_eq!(direct.len(), 2);

    c.exec_drop("BEGIN", ()).await.unwrap();
    c.exec_drop("INSERT INTO test_db.ty (id, vc) VALUES (?, ?)", (3, "mine"))
        .await
        .unwrap();
    assert_eq!(rows(c.exec(select, (2,)).await.unwrap()), direct);
    let mine: Option<String> = c
        .exec_first("SELECT vc FROM test_db.ty WHERE id = ?", (3,))
        .await
        .unwrap();
    assert_eq!(mine.as_deref(), Some("mine"), "the transaction's own write");
    let returned: Vec<(i32, String)> = c
        .exec(
            "INSERT INTO test_db.ty (id, vc) VALUES (?, ?) RETURNING id, vc",
            (4, "back"),
        )
        .await
        .unwrap();
    assert_eq!(returned, vec![(4, "back".to_string())]);
    c.exec_drop("ROLLBACK", ()).await.unwrap();
    let gone: Option<String> = c
        .exec_first("SELECT vc FROM test_db.ty WHERE id = ?", (3,))
        .await
        .unwrap();
    assert_eq!(gone, None);
}
