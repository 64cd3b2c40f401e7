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
