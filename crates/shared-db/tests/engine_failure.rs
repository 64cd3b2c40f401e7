//! A managed engine killed with SIGKILL: clients get an error, the operator restarts the engine,
//! and new connections work again without restarting the operator; committed data survives.

mod common;

use std::time::{Duration, Instant};

use common::{Operator, PASSWORD};
use mysql_async::prelude::*;
use mysql_async::{Conn, Opts};

fn engine_pid(op: &Operator) -> Option<u64> {
    op.status()["engine"]["pid"].as_u64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_engine_is_restarted_and_clients_recover() {
    let op = Operator::managed(&[]);
    let url = op.url(PASSWORD);
    let mut setup = Conn::new(Opts::from_url(&url).unwrap()).await.unwrap();
    setup
        .query_drop("CREATE TABLE test_db.kept (id INT PRIMARY KEY); INSERT INTO test_db.kept VALUES (1), (2)")
        .await
        .unwrap();
    let mut idle = Conn::new(Opts::from_url(&url).unwrap()).await.unwrap();
    let mut busy = Conn::new(Opts::from_url(&url).unwrap()).await.unwrap();
    let running = tokio::spawn(async move {
        let started = Instant::now();
        let r = busy.query_drop("SELECT SLEEP(60)").await;
        (r, started.elapsed())
    });
    common::wait_until_running(&mut setup, "SELECT SLEEP(60)").await;

    let old_pid = engine_pid(&op).expect("managed engine pid in /status");
    // SAFETY: SIGKILL to the engine process the operator reported.
    assert_eq!(
        unsafe { libc::kill(old_pid as libc::pid_t, libc::SIGKILL) },
        0
    );

    // The client waiting on the engine gets an error at once, not a hang.
    let (result, elapsed) = tokio::time::timeout(Duration::from_secs(20), running)
        .await
        .expect("the in-flight query was left hanging")
        .unwrap();
    let err = result.expect_err("a query whose engine died must fail");
    assert!(elapsed < Duration::from_secs(30), "{elapsed:?}");
    if let mysql_async::Error::Server(e) = &err {
        assert_eq!(e.code, 2013, "{e:?}");
    }
    // An idle session's next command fails too (its engine connection is gone).
    assert!(idle.query_drop("SELECT 1").await.is_err());

    // The operator restarts the engine; new connections work again.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = op.status();
        let pid = s["engine"]["pid"].as_u64();
        if s["engine"]["state"] == "running" && pid.is_some() && pid != Some(old_pid) {
            break;
        }
        assert!(Instant::now() < deadline, "engine not restarted: {s}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut fresh = Conn::new(Opts::from_url(&url).unwrap()).await.unwrap();
    let ids: Vec<i64> = fresh
        .query("SELECT id FROM test_db.kept ORDER BY id")
        .await
        .unwrap();
    assert_eq!(ids, vec![1, 2]);
    fresh
        .query_drop("INSERT INTO test_db.kept VALUES (3)")
        .await
        .unwrap();
}

#[test]
fn managed_node_prints_how_to_connect_and_stops_its_engine_on_sigterm() {
    let op = Operator::managed(&[]);
    let log = op.log_text();
    assert!(
        log.contains(&format!("mysql -h 127.0.0.1 -P {} -u root -p", op.port())),
        "{log}"
    );
    assert_eq!(op.status()["engine"]["mode"], "managed");
    let (ok, out) = common::mariadb_cli(
        op.port(),
        PASSWORD,
        &[],
        "SELECT DATABASE(); USE test_db; SELECT DATABASE()",
    );
    assert!(ok, "{out}");
    assert_eq!(out, "NULL\ntest_db\n");
    // SIGTERM stops the operator and its engine cleanly.
    let engine = engine_pid(&op).unwrap();
    let mut op = op;
    assert!(op.stop(), "operator did not exit cleanly");
    // SAFETY: signal 0 only checks for existence.
    assert_ne!(
        unsafe { libc::kill(engine as libc::pid_t, 0) },
        0,
        "engine outlived the operator"
    );
}
