//! Managed engine against a real `mariadbd`: install, credentials, restart persistence,
//! supervision after SIGKILL, shutdown, missing binaries, and engines left by a dead operator.
//!
//! Each test has its own temporary data directory and leaves no `mariadbd` running, also when it
//! fails (handles stop their engine on drop; the test's own stray child is killed by a guard).

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder};
use shared_db::engine::{
    EngineError, EnginePaths, EngineState, ManagedEngine, ManagedEngineConfig,
};

const WAIT: Duration = Duration::from_secs(60);

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter("shared_db=debug")
        .try_init();
}

fn config(dir: &Path) -> ManagedEngineConfig {
    let mut cfg = ManagedEngineConfig::new(dir);
    cfg.buffer_pool = "64M".into();
    cfg.max_connections = 50;
    cfg
}

async fn start(dir: &Path) -> ManagedEngine {
    init_tracing();
    ManagedEngine::start(config(dir)).await.unwrap()
}

async fn write_row(engine: &ManagedEngine, value: &str) {
    let mut conn = Conn::new(engine.opts()).await.unwrap();
    conn.query_drop(
        "CREATE DATABASE IF NOT EXISTS t; \
         CREATE TABLE IF NOT EXISTS t.kv (k INT PRIMARY KEY, v TEXT)",
    )
    .await
    .unwrap();
    conn.exec_drop("REPLACE INTO t.kv VALUES (1, ?)", (value,))
        .await
        .unwrap();
    conn.disconnect().await.unwrap();
}

async fn read_row(engine: &ManagedEngine) -> Option<String> {
    let mut conn = Conn::new(engine.opts()).await.unwrap();
    let v = conn
        .query_first("SELECT v FROM t.kv WHERE k = 1")
        .await
        .unwrap();
    conn.disconnect().await.unwrap();
    v
}

/// True if no process with this pid exists (`kill(pid, 0)` fails with ESRCH).
fn gone(pid: u32) -> bool {
    // SAFETY: signal 0 only checks for existence.
    let rc = unsafe { libc::kill(pid as libc::pid_t, 0) };
    rc == -1 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
}

/// Pids of processes started with a `--datadir` inside `engine_dir`.
fn engine_pids(engine_dir: &Path) -> Vec<u32> {
    let needle = format!("--datadir={}", engine_dir.display());
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            cmdline
                .split(|&b| b == 0)
                .any(|arg| arg.starts_with(needle.as_bytes()))
        })
        .collect()
}

/// Polls (the process is not ours to wait on) until `pid` is gone; bounded.
async fn wait_gone(pid: u32, bound: Duration) -> bool {
    let deadline = Instant::now() + bound;
    while !gone(pid) {
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_start_installs_secures_and_serves() {
    let dir = tempfile::tempdir().unwrap();
    let engine = start(dir.path()).await;
    assert_eq!(engine.state(), EngineState::Running);
    assert!(engine
        .socket_path()
        .starts_with(dir.path().canonicalize().unwrap()));
    assert_eq!(engine.user(), "root");

    write_row(&engine, "hello").await;
    assert_eq!(read_row(&engine).await.as_deref(), Some("hello"));

    let mut conn = Conn::new(engine.opts()).await.unwrap();
    let root_hosts: Vec<String> = conn
        .query("SELECT host FROM mysql.user WHERE user = 'root'")
        .await
        .unwrap();
    assert_eq!(root_hosts, ["localhost"]);
    let anonymous: u64 = conn
        .query_first("SELECT COUNT(*) FROM mysql.user WHERE user = ''")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(anonymous, 0);
    conn.disconnect().await.unwrap();

    let no_password = OptsBuilder::default()
        .socket(Some(engine.socket_path().to_string_lossy()))
        .user(Some("root"));
    assert!(Conn::new(no_password).await.is_err());

    let secret = &engine.paths().secret_file;
    let mode = std::fs::metadata(secret).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(std::fs::read_to_string(secret).unwrap(), engine.password());
    assert_eq!(engine.password().len(), 64);

    engine.ensure_database("odd`name").await.unwrap();
    engine.ensure_database("odd`name").await.unwrap();
    let mut conn = Conn::new(engine.opts()).await.unwrap();
    let dbs: Vec<String> = conn.query("SHOW DATABASES").await.unwrap();
    assert!(dbs.iter().any(|d| d == "odd`name"), "{dbs:?}");
    conn.disconnect().await.unwrap();

    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_data_and_password_without_reinstalling() {
    let dir = tempfile::tempdir().unwrap();
    let engine = start(dir.path()).await;
    write_row(&engine, "persisted").await;
    let password = engine.password().to_string();
    let datadir = engine.paths().datadir.clone();
    let inode = std::fs::metadata(&datadir).unwrap().ino();
    engine.shutdown().await;
    drop(engine);

    let engine = start(dir.path()).await;
    assert_eq!(engine.password(), password);
    assert_eq!(std::fs::metadata(&datadir).unwrap().ino(), inode);
    assert_eq!(read_row(&engine).await.as_deref(), Some("persisted"));
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_engine_is_restarted_by_the_supervisor() {
    let dir = tempfile::tempdir().unwrap();
    let engine = start(dir.path()).await;
    write_row(&engine, "survives").await;
    let old_pid = engine.pid().unwrap();
    let mut states = engine.subscribe();

    // SAFETY: SIGKILL to the engine child this test owns.
    assert_eq!(
        unsafe { libc::kill(old_pid as libc::pid_t, libc::SIGKILL) },
        0
    );

    let restarting = states.wait_for(|s| matches!(s, EngineState::Restarting { .. }));
    tokio::time::timeout(WAIT, restarting)
        .await
        .unwrap()
        .unwrap();
    engine.wait_running(WAIT).await.unwrap();

    let new_pid = engine.pid().unwrap();
    assert_ne!(new_pid, old_pid);
    assert!(gone(old_pid));
    assert_eq!(read_row(&engine).await.as_deref(), Some("survives"));
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_the_engine_for_good() {
    let dir = tempfile::tempdir().unwrap();
    let engine = start(dir.path()).await;
    let pid = engine.pid().unwrap();
    let mut states = engine.subscribe();

    engine.shutdown().await;
    assert!(gone(pid));
    assert_eq!(engine.state(), EngineState::Stopped);
    assert_eq!(engine.pid(), None);
    assert!(engine_pids(&engine.paths().engine_dir).is_empty());
    assert!(matches!(
        engine.wait_running(Duration::from_secs(1)).await,
        Err(EngineError::NotRunning { .. })
    ));
    // The supervisor has been joined, so nothing can restart the engine; a restart would also
    // begin within the 100 ms first backoff, well inside this observation window.
    states.borrow_and_update();
    let changed = tokio::time::timeout(Duration::from_secs(1), states.changed()).await;
    assert!(
        changed.is_err(),
        "state changed after shutdown: {:?}",
        engine.state()
    );
    assert!(engine_pids(&engine.paths().engine_dir).is_empty());
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_binaries_say_which_package_to_install() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.mariadbd_path = Some(dir.path().join("nonexistent/mariadbd"));
    let err = ManagedEngine::start(cfg).await.unwrap_err();
    assert!(matches!(err, EngineError::NotInstalled { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("apt-get install mariadb-server"), "{msg}");

    let mut cfg = config(dir.path());
    cfg.install_db_path = Some(dir.path().join("nonexistent/mariadb-install-db"));
    let msg = ManagedEngine::start(cfg).await.unwrap_err().to_string();
    assert!(
        msg.contains("mariadb-install-db") && msg.contains("mariadb-server"),
        "{msg}"
    );
    assert!(!dir.path().join("engine").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_handle_stops_the_engine() {
    let dir = tempfile::tempdir().unwrap();
    let engine = start(dir.path()).await;
    let pid = engine.pid().unwrap();
    drop(engine);
    assert!(wait_gone(pid, Duration::from_secs(45)).await);

    // The directory is free again at once.
    let engine = start(dir.path()).await;
    engine.shutdown().await;
}

/// A `mariadbd` this test started itself, killed on drop if still running.
struct StrayEngine(Child);

impl Drop for StrayEngine {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `mariadbd` on the managed layout the way an operator that then died would have.
fn start_stray_engine(paths: &EnginePaths) -> StrayEngine {
    let mut cmd = Command::new("mariadbd");
    cmd.env("PATH", "/usr/sbin:/usr/local/sbin:/usr/bin:/bin")
        .arg("--no-defaults")
        .arg(format!("--datadir={}", paths.datadir.display()))
        .arg(format!("--socket={}", paths.socket.display()))
        .arg(format!("--pid-file={}", paths.pid_file.display()))
        .arg(format!("--log-error={}", paths.log_file.display()))
        .arg("--skip-networking")
        .arg("--innodb-buffer-pool-size=64M")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: geteuid has no failure mode.
    if unsafe { libc::geteuid() } == 0 {
        cmd.arg("--user=root");
    }
    StrayEngine(cmd.spawn().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_left_by_a_dead_operator_is_stopped_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let engine = start(dir.path()).await;
    write_row(&engine, "before the crash").await;
    let paths = engine.paths().clone();
    let password = engine.password().to_string();
    engine.shutdown().await;
    drop(engine);

    let mut stray = start_stray_engine(&paths);
    let opts = OptsBuilder::default()
        .socket(Some(paths.socket.to_string_lossy()))
        .user(Some("root"))
        .pass(Some(password));
    let deadline = Instant::now() + WAIT;
    while Conn::new(opts.clone()).await.is_err() {
        assert!(Instant::now() < deadline, "the stray engine never came up");
        assert!(
            stray.0.try_wait().unwrap().is_none(),
            "the stray engine exited"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stray_pid = stray.0.id();

    let engine = start(dir.path()).await;
    // The stray engine was stopped (it is this test's child, so reap it here).
    let status = stray.0.try_wait().unwrap();
    assert!(status.is_some(), "the stray engine is still running");
    assert_ne!(engine.pid(), Some(stray_pid));
    assert_eq!(engine_pids(&paths.engine_dir), vec![engine.pid().unwrap()]);
    assert_eq!(read_row(&engine).await.as_deref(), Some("before the crash"));
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_that_exits_at_start_reports_its_log_and_leaves_no_datadir() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.extra_args = vec!["--no-such-option-for-this-test".into()];
    let err = ManagedEngine::start(cfg).await.unwrap_err();
    assert!(matches!(err, EngineError::ExitedEarly { .. }), "{err}");
    assert!(
        err.to_string().contains("no-such-option-for-this-test"),
        "{err}"
    );
    let engine_dir = dir.path().canonicalize().unwrap().join("engine");
    let leftovers: Vec<_> = std::fs::read_dir(&engine_dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| n.to_string_lossy().starts_with("data"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    assert!(engine_pids(&engine_dir).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_data_dir_gets_a_short_private_socket() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("d".repeat(100));
    let engine = start(&data_dir).await;
    let socket = engine.socket_path().to_path_buf();
    assert!(socket.starts_with("/tmp") && !socket.starts_with(dir.path()));
    assert!(socket.as_os_str().len() <= 107);
    let socket_dir = socket.parent().unwrap().to_path_buf();
    let mode = std::fs::metadata(&socket_dir).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700);
    write_row(&engine, "via the short socket").await;
    engine.shutdown().await;
    std::fs::remove_dir_all(socket_dir).unwrap();
}

/// Environment variable that turns [`operator_helper`] on (it is a no-op otherwise).
const HELPER_DIR_VAR: &str = "SHARED_DB_TEST_OPERATOR_DIR";

/// Plays an operator process for [`engine_dies_with_a_killed_operator`]: starts an engine,
/// records its pid, then waits (bounded) to be killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "helper process for engine_dies_with_a_killed_operator"]
async fn operator_helper() {
    let Some(dir) = std::env::var_os(HELPER_DIR_VAR) else {
        return;
    };
    let dir = Path::new(&dir);
    let engine = start(&dir.join("data")).await;
    let pid = engine.pid().unwrap();
    std::fs::write(dir.join("engine.pid.tmp"), pid.to_string()).unwrap();
    std::fs::rename(dir.join("engine.pid.tmp"), dir.join("engine.pid")).unwrap();
    // Bounded: the parent test kills this process long before.
    tokio::time::sleep(WAIT).await;
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_dies_with_a_killed_operator() {
    let dir = tempfile::tempdir().unwrap();
    let mut operator = StrayEngine(
        Command::new(std::env::current_exe().unwrap())
            .args([
                "--ignored",
                "--exact",
                "operator_helper",
                "--test-threads=1",
            ])
            .env(HELPER_DIR_VAR, dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let pid_file = dir.path().join("engine.pid");
    let deadline = Instant::now() + WAIT;
    let engine_pid: u32 = loop {
        if let Ok(pid) = std::fs::read_to_string(&pid_file) {
            break pid.parse().unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "the helper never started its engine"
        );
        assert!(
            operator.0.try_wait().unwrap().is_none(),
            "the helper exited"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(!gone(engine_pid));

    // SIGKILL: no destructor, no shutdown; only the parent-death signal can stop the engine.
    operator.0.kill().unwrap();
    operator.0.wait().unwrap();
    assert!(wait_gone(engine_pid, Duration::from_secs(10)).await);
}
