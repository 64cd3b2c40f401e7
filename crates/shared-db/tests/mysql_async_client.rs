//! mysql_async through the operator: prepared statements, binary types, errors with codes and
//! SQLSTATE, multi-results, large packets, pooled-connection reset, COM_CHANGE_USER and KILL.

mod common;

use std::time::{Duration, Instant};

use common::Operator;
use mysql_async::prelude::*;
use mysql_async::{Conn, Opts, Value};
use testkit::{MariaDb, MariaDbOptions};

async fn connect(op: &Operator, pw: &str) -> Conn {
    Conn::new(Opts::from_url(&op.url(pw)).unwrap())
        .await
        .unwrap()
}

fn server_error(e: mysql_async::Error) -> (u16, String, String) {
    match e {
        mysql_async::Error::Server(s) => (s.code, s.state, s.message),
        other => panic!("expected a server error, got {other:?}"),
    }
}

#[tokio::test]
async fn prepared_statements_binary_types_and_errors() {
    let db = MariaDb::start().unwrap();
    let op = Operator::external(&db, &[]);
    let mut c = connect(&op, db.password()).await;
    c.query_drop(
        "CREATE TABLE test_db.types (id INT PRIMARY KEY, dt DATETIME(6), d DECIMAL(20,6), \
         j JSON, b MEDIUMBLOB, s VARCHAR(20), n INT NULL, f DOUBLE)",
    )
    .await
    .unwrap();
    let stmt = c
        .prep("INSERT INTO test_db.types VALUES (?, ?, ?, ?, ?, ?, ?, ?)")
        .await
        .unwrap();
    let blob: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    c.exec_drop(
        &stmt,
        (
            1,
            "2024-02-29 13:14:15.123456",
            "12345678901234.123456",
            r#"{"k": [1, 2, {"x": null}]}"#,
            blob.clone(),
            "héllo",
            Value::NULL,
            2.5f64,
        ),
    )
    .await
    .unwrap();
    let info = c.affected_rows();
    assert_eq!(info, 1);

    let row: Option<mysql_async::Row> = c
        .exec_first(
            "SELECT dt, d, j, b, s, n, f FROM test_db.types WHERE id = ?",
            (1,),
        )
        .await
        .unwrap();
    let row = row.expect("row inserted through the prepared statement");
    assert_eq!(
        row.get::<Value, _>(0).unwrap(),
        Value::Date(2024, 2, 29, 13, 14, 15, 123_456)
    );
    assert_eq!(row.get::<String, _>(1).unwrap(), "12345678901234.123456");
    let j: String = row.get(2).unwrap();
    assert!(j.contains("\"x\": null"), "{j}");
    assert_eq!(row.get::<Vec<u8>, _>(3).unwrap(), blob);
    assert_eq!(row.get::<String, _>(4).unwrap(), "héllo");
    assert_eq!(row.get::<Value, _>(5).unwrap(), Value::NULL);
    assert_eq!(row.get::<f64, _>(6).unwrap(), 2.5);

    // Errors keep their code and SQLSTATE.
    let e = c
        .exec_drop(
            &stmt,
            (
                1,
                Value::NULL,
                Value::NULL,
                Value::NULL,
                Value::NULL,
                "x",
                1,
                1.0,
            ),
        )
        .await
        .unwrap_err();
    let (code, state, msg) = server_error(e);
    assert_eq!((code, state.as_str()), (1062, "23000"), "{msg}");
    let (code, state, _) = server_error(c.query_drop("SELEC 1").await.unwrap_err());
    assert_eq!((code, state.as_str()), (1064, "42000"));
    let (code, state, _) = server_error(
        c.query_drop("SELECT * FROM test_db.nope")
            .await
            .unwrap_err(),
    );
    assert_eq!((code, state.as_str()), (1146, "42S02"));
    let (code, _, _) = server_error(
        c.prep("SELECT * FROM test_db.nope WHERE a = ?")
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 1146);

    // Warnings are relayed.
    c.query_drop("SELECT CAST('12abc' AS SIGNED)")
        .await
        .unwrap();
    assert_eq!(c.get_warnings(), 1);

    // Multi-statements with several result sets.
    let mut res = c.query_iter("SELECT 1; SELECT 2, 3; DO 0").await.unwrap();
    let first: Vec<i64> = res.collect().await.unwrap();
    let second: Vec<(i64, i64)> = res.collect().await.unwrap();
    assert_eq!(first, vec![1]);
    assert_eq!(second, vec![(2, 3)]);
    drop(res);

    c.ping().await.unwrap();
    c.close(stmt).await.unwrap();
    c.reset().await.unwrap();
    c.disconnect().await.unwrap();
}

#[tokio::test]
async fn packets_over_16_mib_both_ways() {
    let db = MariaDb::start_with(MariaDbOptions {
        extra_args: vec!["--max-allowed-packet=128M".into()],
        ..Default::default()
    })
    .unwrap();
    let op = Operator::external(&db, &[]);
    let mut c = connect(&op, db.password()).await;
    c.query_drop("CREATE TABLE test_db.big (id INT PRIMARY KEY, b LONGBLOB)")
        .await
        .unwrap();
    let big: Vec<u8> = (0..20 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    c.exec_drop("INSERT INTO test_db.big VALUES (1, ?)", (big.clone(),))
        .await
        .unwrap();
    // Text protocol: the statement itself is a > 16 MiB packet.
    let hex: String = big[..9 * 1024 * 1024]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    c.query_drop(format!("INSERT INTO test_db.big VALUES (2, x'{hex}')"))
        .await
        .unwrap();
    let back: Vec<u8> = c
        .exec_first("SELECT b FROM test_db.big WHERE id = ?", (1,))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(back.len(), big.len());
    assert!(back == big, "20 MiB blob came back different");
    let back: Vec<u8> = c
        .query_first("SELECT b FROM test_db.big WHERE id = 2")
        .await
        .unwrap()
        .unwrap();
    assert!(back == big[..9 * 1024 * 1024]);
}

#[tokio::test]
async fn a_pooled_engine_connection_carries_nothing_to_the_next_client() {
    let db = MariaDb::start().unwrap();
    let op = Operator::external(&db, &[]);
    let pw = db.password();
    let mut setup = connect(&op, pw).await;
    setup
        .query_drop("CREATE DATABASE other; CREATE TABLE test_db.r (id INT PRIMARY KEY)")
        .await
        .unwrap();
    setup.disconnect().await.unwrap();
    wait_for_idle(&op, 1).await;

    let opened = op.status()["connections"]["engine_connections_opened"].clone();
    let mut a = connect(&op, pw).await;
    a.query_drop(
        "SET @leak = 5; SET SESSION sql_mode = 'ANSI_QUOTES'; \
         CREATE TEMPORARY TABLE test_db.tmp (x INT); USE other; \
         BEGIN; INSERT INTO test_db.r VALUES (1)",
    )
    .await
    .unwrap();
    a.prep("SELECT 1").await.unwrap();
    drop(a); // vanish without COM_QUIT, mid-transaction
    wait_for_idle(&op, 1).await;

    let mut b = connect(&op, pw).await;
    assert_eq!(
        op.status()["connections"]["engine_connections_opened"],
        opened,
        "A and B should have used the same pooled engine connection"
    );
    let leak: Option<Option<i64>> = b.query_first("SELECT @leak").await.unwrap();
    assert_eq!(leak, Some(None));
    let db_now: Option<Option<String>> = b.query_first("SELECT DATABASE()").await.unwrap();
    assert_eq!(db_now, Some(None));
    let mode: String = b
        .query_first("SELECT @@SESSION.sql_mode")
        .await
        .unwrap()
        .unwrap();
    assert!(!mode.contains("ANSI_QUOTES"), "{mode}");
    let (code, _, _) = server_error(b.query_drop("SELECT * FROM test_db.tmp").await.unwrap_err());
    assert_eq!(code, 1146, "temporary table leaked");
    // The uncommitted row was rolled back and its lock released.
    b.query_drop("SET SESSION innodb_lock_wait_timeout = 2")
        .await
        .unwrap();
    b.query_drop("INSERT INTO test_db.r VALUES (1)")
        .await
        .unwrap();
}

async fn wait_for_idle(op: &Operator, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = op.status();
        if s["connections"]["engine_pool_idle"].as_u64().unwrap_or(0) >= n
            && s["connections"]["active"] == 0
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "engine connection not returned to the pool: {s}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn change_user_resets_the_session_and_checks_the_password() {
    let db = MariaDb::start().unwrap();
    let op = Operator::external(&db, &[]);
    let pw = db.password();
    let mut c = connect(&op, pw).await;
    c.query_drop("CREATE DATABASE other; SET @v = 1")
        .await
        .unwrap();
    c.change_user(
        mysql_async::ChangeUserOpts::default()
            .with_db_name(Some("other".into()))
            .with_pass(Some(pw.into())),
    )
    .await
    .unwrap();
    let (dbname, v): (String, Option<i64>) = c
        .query_first("SELECT DATABASE(), @v")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(dbname, "other");
    assert_eq!(v, None);
    let e = c
        .change_user(mysql_async::ChangeUserOpts::default().with_pass(Some("wrong".into())))
        .await
        .unwrap_err();
    let (code, _, _) = server_error(e);
    assert_eq!(code, 1045);
}

#[tokio::test]
async fn kill_query_and_kill_connection_by_operator_or_engine_id() {
    let db = MariaDb::start().unwrap();
    let op = Operator::external(&db, &[]);
    let pw = db.password();
    let mut victim = connect(&op, pw).await;
    let victim_id = victim.id();
    let mut killer = connect(&op, pw).await;

    let started = Instant::now();
    let sleeper = tokio::spawn(async move {
        let r = victim.query_first::<i64, _>("SELECT SLEEP(60)").await;
        (r, victim)
    });
    common::wait_until_running(&mut killer, "SELECT SLEEP(60)").await;
    killer
        .query_drop(format!("KILL QUERY {victim_id}"))
        .await
        .unwrap();
    let (r, mut victim) = tokio::time::timeout(Duration::from_secs(20), sleeper)
        .await
        .expect("KILL QUERY did not interrupt the sleep")
        .unwrap();
    let (code, _, _) = server_error(r.unwrap_err());
    assert_eq!(code, 1317, "query execution was interrupted");
    assert!(started.elapsed() < Duration::from_secs(50));
    // The connection survives KILL QUERY.
    let engine_id: u64 = victim
        .query_first("SELECT CONNECTION_ID()")
        .await
        .unwrap()
        .unwrap();

    // KILL by the engine's id (what CONNECTION_ID() shows) ends the connection.
    killer
        .query_drop(format!("KILL {engine_id}"))
        .await
        .unwrap();
    assert!(victim.query_drop("SELECT 1").await.is_err());

    let (code, _, _) = server_error(killer.query_drop("KILL 4000000").await.unwrap_err());
    assert_eq!(code, 1094);
}

#[tokio::test]
async fn a_driver_that_prefers_a_local_socket_stays_on_the_operator() {
    let db = MariaDb::start().unwrap();
    let op = Operator::external(&db, &[]);
    // mysql_async's default: ask for `@@socket` and reconnect there when it is local.
    let url = format!("mysql://root:{}@127.0.0.1:{}", db.password(), op.port());
    let mut c = Conn::new(Opts::from_url(&url).unwrap()).await.unwrap();
    let socket: Option<Option<String>> = c.query_first("SELECT @@socket").await.unwrap();
    assert_eq!(socket, Some(None));
    // The connection still talks to the operator: it counts this session's commands.
    let before = op.status()["commands"].as_u64().unwrap();
    let _: Option<i64> = c.query_first("SELECT 1").await.unwrap();
    let after = op.status()["commands"].as_u64().unwrap();
    assert!(after > before, "the session bypassed the operator");
    c.disconnect().await.unwrap();
}
