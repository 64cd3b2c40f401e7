//! The harness starts real servers that real clients can use, and cleans up after itself.

use mysql_async::prelude::*;
use testkit::{Etcd, MariaDb};

fn pid_alive(pid: u32) -> bool {
    // SAFETY: signal 0 only checks for existence.
    unsafe { libc::kill(pid as libc::pid_t, 0) == 0 }
}

#[tokio::test]
async fn two_mariadbs_and_an_etcd_take_writes_and_read_them_back() {
    let a = MariaDb::start().expect("start first MariaDB");
    let b = MariaDb::start().expect("start second MariaDB");
    let etcd = Etcd::start().expect("start etcd");
    assert_ne!(a.port(), b.port());

    for (i, db) in [&a, &b].into_iter().enumerate() {
        let pool = mysql_async::Pool::new(db.url().as_str());
        let mut conn = pool
            .get_conn()
            .await
            .expect("connect over TCP with the root password");
        conn.query_drop("CREATE DATABASE t; CREATE TABLE t.kv (k INT PRIMARY KEY, v TEXT)")
            .await
            .unwrap();
        conn.exec_drop("INSERT INTO t.kv VALUES (?, ?)", (1, format!("server-{i}")))
            .await
            .unwrap();
        let v: Option<String> = conn
            .query_first("SELECT v FROM t.kv WHERE k = 1")
            .await
            .unwrap();
        assert_eq!(v.as_deref(), Some(format!("server-{i}").as_str()));
        drop(conn);
        pool.disconnect().await.unwrap();
    }
    // The two servers are independent: the socket CLI on the first sees only its own row.
    assert_eq!(a.cli("SELECT v FROM t.kv").unwrap().trim(), "server-0");

    let mut client = etcd_client::Client::connect([etcd.endpoint()], None)
        .await
        .expect("connect to etcd");
    client.put("harness/key", "value-1", None).await.unwrap();
    let resp = client.get("harness/key", None).await.unwrap();
    assert_eq!(resp.kvs()[0].value_str().unwrap(), "value-1");
}

#[test]
fn wrong_password_is_refused() {
    let db = MariaDb::start().unwrap();
    let url = format!("mysql://root:not-the-password@127.0.0.1:{}", db.port());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let err = rt
        .block_on(async { mysql_async::Conn::from_url(url.as_str()).await })
        .expect_err("a wrong password must not log in");
    assert!(
        err.to_string().contains("1045") || err.to_string().contains("Access denied"),
        "{err}"
    );
}

#[test]
fn dropping_handles_stops_processes_and_removes_directories() {
    let db = MariaDb::start().unwrap();
    let etcd = Etcd::start().unwrap();
    let (db_pid, etcd_pid) = (db.pid().unwrap(), etcd.pid().unwrap());
    let dir = db.datadir();
    assert!(pid_alive(db_pid) && pid_alive(etcd_pid));
    drop(db);
    drop(etcd);
    assert!(!pid_alive(db_pid), "mariadbd still running after drop");
    assert!(!pid_alive(etcd_pid), "etcd still running after drop");
    assert!(!dir.exists(), "datadir left behind");
}

#[test]
fn servers_are_torn_down_when_a_test_panics() {
    let mut pids = Vec::new();
    let mut dirs = Vec::new();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let db = MariaDb::start().unwrap();
        pids.push(db.pid().unwrap());
        dirs.push(db.datadir());
        panic!("simulated test failure");
    }));
    assert!(result.is_err());
    assert!(!pid_alive(pids[0]), "mariadbd survived the panic");
    assert!(!dirs[0].exists(), "datadir survived the panic");
}

#[test]
fn a_killed_test_binary_leaves_no_server_behind() {
    // The CLI stands in for a test process that dies: SIGKILL it and its children must go too.
    let exe = env!("CARGO_BIN_EXE_testkit");
    let mut child = std::process::Command::new(exe)
        .args(["--mariadb", "1", "--etcd", "1"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let info: serde_json::Value = serde_json::from_str(&line).expect("CLI prints JSON");
    let db_pid = info["mariadb"][0]["pid"].as_u64().unwrap() as u32;
    let etcd_pid = info["etcd"][0]["pid"].as_u64().unwrap() as u32;
    assert!(info["mariadb"][0]["port"].as_u64().unwrap() > 0);
    assert!(pid_alive(db_pid) && pid_alive(etcd_pid));
    child.kill().unwrap();
    child.wait().unwrap();
    // Parent-death delivery is asynchronous; wait for both to disappear with a bound.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while (pid_alive(db_pid) || pid_alive(etcd_pid)) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(!pid_alive(db_pid), "mariadbd outlived its killed parent");
    assert!(!pid_alive(etcd_pid), "etcd outlived its killed parent");
    // The killed process could not remove its directories; the next start sweeps them.
    let datadir = std::path::PathBuf::from(info["mariadb"][0]["datadir"].as_str().unwrap());
    let scratch = datadir.parent().unwrap().to_path_buf();
    let _next = MariaDb::start().unwrap();
    assert!(
        !scratch.exists(),
        "scratch dir of a killed test process was not swept"
    );
}

#[test]
fn cli_tears_down_when_stdin_closes() {
    let exe = env!("CARGO_BIN_EXE_testkit");
    let mut child = std::process::Command::new(exe)
        .args(["--mariadb", "1"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let info: serde_json::Value = serde_json::from_str(&line).unwrap();
    let pid = info["mariadb"][0]["pid"].as_u64().unwrap() as u32;
    let datadir = std::path::PathBuf::from(info["mariadb"][0]["datadir"].as_str().unwrap());
    assert!(datadir.exists());
    drop(child.stdin.take());
    let status = child.wait().unwrap();
    assert!(status.success());
    assert!(!pid_alive(pid));
    assert!(!datadir.exists(), "CLI left its datadir behind");
}
