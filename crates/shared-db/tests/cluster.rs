//! Clusters of real `shared-db serve` processes, each with its own managed MariaDB, started by
//! `shared-db dev-cluster`: election, ordered replication of client writes (observed in every
//! engine directly), wrong-secret refusal, leader SIGKILL and failover time,
//! a killed node restarted from `nodes.json` catching up from the log and, after compaction,
//! from a snapshot, a fourth node added as learner then voter, AUTH_MASTER_ONLY and the
//! leader-only `GET /` probe.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use hyper::Method;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder};
use serde_json::Value;
use shared_db::cluster::auth::ClusterSecret;
use shared_db::cluster::client::{PeerClient, PeerError};
use shared_db::dev_cluster::{DevClusterFile, DevNode};
use testkit::{reserve_port, ManagedChild};

const START: Duration = Duration::from_secs(180);
const WAIT: Duration = Duration::from_secs(60);

struct DevCluster {
    child: ManagedChild,
    dir: tempfile::TempDir,
    file: DevClusterFile,
    client: PeerClient,
    secret: String,
    /// Nodes the test restarted or added itself.
    extra: Vec<ManagedChild>,
}

impl DevCluster {
    fn start(nodes: u16, serve_args: &[&str]) -> DevCluster {
        let dir = tempfile::Builder::new()
            .prefix("sdb-dc-")
            .tempdir()
            .unwrap();
        let log = dir.path().join("dev-cluster.log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_shared-db"));
        cmd.arg("dev-cluster")
            .arg("--nodes")
            .arg(nodes.to_string())
            .arg("--data-dir")
            .arg(dir.path().join("c"))
            .args(["--mysql-port", "0", "--api-port", "0", "--ui-port", "0"])
            .arg("--")
            .args(["--engine-buffer-pool", "64M"])
            .args(serve_args)
            .env("RUST_LOG", "info,shared_db=debug,openraft=warn");
        let child = ManagedChild::spawn("dev-cluster", cmd, &log).unwrap();
        let mut child = child;
        let deadline = Instant::now() + START;
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.contains("dev-cluster is ready") {
                break;
            }
            if let Some(s) = child.try_wait() {
                panic!("dev-cluster exited ({s}):\n{text}");
            }
            assert!(Instant::now() < deadline, "dev-cluster not ready:\n{text}");
            std::thread::sleep(Duration::from_millis(50));
        }
        let nodes_json = dir.path().join("c/nodes.json");
        let mode = std::fs::metadata(&nodes_json).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "nodes.json must be private");
        let file: DevClusterFile =
            serde_json::from_slice(&std::fs::read(&nodes_json).unwrap()).unwrap();
        let secret = std::fs::read_to_string(&file.cluster_secret_file).unwrap();
        let client = PeerClient::new(Some(ClusterSecret::new(&secret).unwrap()), 0);
        DevCluster {
            child,
            dir,
            file,
            client,
            secret: secret.trim().to_string(),
            extra: Vec::new(),
        }
    }

    fn node(&self, id: u64) -> &DevNode {
        self.file.nodes.iter().find(|n| n.id == id).unwrap()
    }

    fn password(&self) -> String {
        std::fs::read_to_string(&self.file.client_password_file)
            .unwrap()
            .trim()
            .to_string()
    }

    fn all_logs(&self) -> String {
        let mut s = String::new();
        for n in &self.file.nodes {
            s.push_str(&std::fs::read_to_string(&n.log).unwrap_or_default());
        }
        s
    }

    /// Restarts a node exactly as `nodes.json` says (argv and environment).
    fn restart(&mut self, id: u64) {
        let n = self.node(id).clone();
        let mut cmd = Command::new(&n.argv[0]);
        cmd.args(&n.argv[1..]).env_clear().envs(&n.env);
        let child = ManagedChild::spawn(&format!("node{id}"), cmd, &n.log).unwrap();
        self.extra.push(child);
    }
}

fn status(ui_port: u16) -> Option<Value> {
    common::http_get(ui_port, "/status").and_then(|b| serde_json::from_str(&b).ok())
}

/// Polls until `f` returns `Some`, at most `limit`.
fn poll<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The leader id all of `nodes` agree on.
fn agreed_leader(c: &DevCluster, nodes: &[u64]) -> Option<u64> {
    let mut leader = None;
    for id in nodes {
        let s = status(c.node(*id).ui_port)?;
        let l = s["node"]["leader"]["id"].as_u64()?;
        if leader.is_some_and(|x| x != l) {
            return None;
        }
        leader = Some(l);
    }
    let l = leader?;
    let s = status(c.node(l).ui_port)?;
    (s["node"]["role"] == "leader").then_some(l)
}

fn kill(pid: u32) {
    signal(pid, libc::SIGKILL);
}

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) with the pid of a node of this test's cluster (from nodes.json or its
    // own /status).
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

/// Creates the table [`propose`] writes to, through node `id`.
async fn create_table(c: &DevCluster, id: u64) {
    let mut conn = login(c.node(id).mysql_port, &c.password()).await.unwrap();
    conn.query_drop("CREATE DATABASE flux_test").await.unwrap();
    conn.query_drop(
        "CREATE TABLE flux_test.entries \
         (seq INT AUTO_INCREMENT PRIMARY KEY, payload VARCHAR(64) NOT NULL)",
    )
    .await
    .unwrap();
    conn.disconnect().await.unwrap();
}

/// Writes `payload` as one row through node `id`'s MySQL port (a real client; the write is
/// ordered through the Raft log and applied on every engine).
async fn propose(c: &DevCluster, id: u64, payload: &str) -> Result<(), mysql_async::Error> {
    let mut conn = login(c.node(id).mysql_port, &c.password()).await?;
    conn.exec_drop(
        "INSERT INTO flux_test.entries (payload) VALUES (?)",
        (payload,),
    )
    .await?;
    // Read-your-writes on the node it was written through.
    let seen: Option<String> = conn
        .exec_first(
            "SELECT payload FROM flux_test.entries WHERE payload = ?",
            (payload,),
        )
        .await?;
    assert_eq!(seen.as_deref(), Some(payload));
    conn.disconnect().await
}

/// The engine's own socket and operator password (read directly, bypassing the operator).
/// `None` while the node is not up.
fn engine_opts(c: &DevCluster, id: u64) -> Option<OptsBuilder> {
    let n = c.node(id);
    let s = status(n.ui_port)?;
    let addr = s["engine"]["address"].as_str()?.to_string();
    let socket = addr.strip_prefix("unix:")?.to_string();
    let pw = std::fs::read_to_string(n.data_dir.join("engine/operator.secret")).ok()?;
    Some(
        OptsBuilder::default()
            .socket(Some(socket))
            .user(Some("root"))
            .pass(Some(pw.trim().to_string())),
    )
}

/// Payloads in node `id`'s engine (read directly, bypassing the operator), in commit order.
async fn recorded(c: &DevCluster, id: u64) -> Vec<String> {
    let Some(opts) = engine_opts(c, id) else {
        return Vec::new();
    };
    let mut conn = match Conn::new(opts).await {
        Ok(c) => c,
        Err(_) => return Vec::new(),
    };
    let rows: Vec<Vec<u8>> = conn
        .query("SELECT payload FROM flux_test.entries ORDER BY seq")
        .await
        .unwrap_or_default();
    let _ = conn.disconnect().await;
    rows.into_iter()
        .map(|r| String::from_utf8(r).unwrap())
        .collect()
}

async fn wait_recorded(c: &DevCluster, id: u64, expected: &[String]) {
    let deadline = Instant::now() + WAIT;
    loop {
        let got = recorded(c, id).await;
        if got == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "node {id} has {} entries, expected {}; first difference at {:?}",
            got.len(),
            expected.len(),
            got.iter().zip(expected).position(|(a, b)| a != b)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn login(port: u16, password: &str) -> Result<Conn, mysql_async::Error> {
    let opts = OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(port)
        .user(Some("root"))
        .pass(Some(password.to_string()))
        .prefer_socket(false);
    Conn::new(opts).await
}

fn raw_get_root(port: u16) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    // HTTP/1.0 without a Host header: the load balancer's probe.
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").ok()?;
    let mut r = String::new();
    s.read_to_string(&mut r).ok()?;
    r.lines().next().map(str::to_string)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_replicate_fail_over_catch_up_and_grow() {
    let t0 = Instant::now();
    let mut c = DevCluster::start(
        3,
        &[
            "--auth-master-only",
            "true",
            "--snapshot-logs",
            "40",
            "--raft-keep-logs",
            "5",
        ],
    );
    println!("3-node dev cluster ready in {:?}", t0.elapsed());
    let all = [1, 2, 3];
    let leader = poll("a leader", WAIT, || agreed_leader(&c, &all));
    println!("leader elected: node {leader}");
    let followers: Vec<u64> = all.iter().copied().filter(|&i| i != leader).collect();

    // A wrong cluster secret is refused (401) and logged, without the secret.
    let wrong = PeerClient::new(
        Some(ClusterSecret::new("not-the-cluster-secret").unwrap()),
        9,
    );
    let addr = format!("127.0.0.1:{}", c.node(leader).api_port);
    match wrong
        .call(
            &addr,
            Method::GET,
            "/cluster/info",
            Vec::new(),
            Duration::from_secs(5),
        )
        .await
    {
        Err(PeerError::Status { status, .. }) => assert_eq!(status, 401),
        other => panic!("wrong secret accepted: {other:?}"),
    }
    let unsigned = PeerClient::new(None, 9);
    let payload = b"forged".to_vec();
    match unsigned
        .call(
            &addr,
            Method::POST,
            "/replication/exec",
            payload,
            Duration::from_secs(5),
        )
        .await
    {
        Err(PeerError::Status { status, .. }) => assert_eq!(status, 401),
        other => panic!("unsigned request accepted: {other:?}"),
    }
    poll("the refusal in the log", WAIT, || {
        std::fs::read_to_string(&c.node(leader).log)
            .unwrap()
            .contains("internal API request refused")
            .then_some(())
    });

    // Ordered replication to every engine.
    create_table(&c, leader).await;
    let mut expected: Vec<String> = Vec::new();
    for i in 0..10 {
        let p = format!("entry-{i:03}");
        propose(&c, leader, &p).await.unwrap();
        expected.push(p);
    }
    for id in all {
        wait_recorded(&c, id, &expected).await;
    }

    // The probe without Host: 200 on the leader only.
    assert!(raw_get_root(c.node(leader).ui_port)
        .unwrap()
        .contains(" 200 "));
    for f in &followers {
        assert!(raw_get_root(c.node(*f).ui_port).unwrap().contains(" 503 "));
    }

    // AUTH_MASTER_ONLY: the leader admits clients, a follower refuses and names the leader.
    let pw = c.password();
    let mut conn = login(c.node(leader).mysql_port, &pw).await.unwrap();
    let one: Option<i64> = conn.query_first("SELECT 1").await.unwrap();
    assert_eq!(one, Some(1));
    drop(conn);
    match login(c.node(followers[0]).mysql_port, &pw).await {
        Err(mysql_async::Error::Server(e)) => {
            assert_eq!(e.code, 1290);
            assert!(
                e.message
                    .contains(&format!("127.0.0.1:{}", c.node(leader).mysql_port)),
                "{}",
                e.message
            );
        }
        other => panic!("a follower admitted a client: {:?}", other.map(|_| ())),
    }

    // Status shows role, term, commit/applied and per-peer progress on the leader.
    let s = status(c.node(leader).ui_port).unwrap();
    assert_eq!(s["node"]["id"], leader);
    assert!(s["node"]["pid"].as_u64().is_some());
    assert!(s["cluster"]["term"].as_u64().unwrap() >= 1);
    assert!(s["cluster"]["commit_index"].as_u64().unwrap() >= 10);
    assert_eq!(s["cluster"]["peers"].as_array().unwrap().len(), 3);
    assert_eq!(s["cluster"]["diverged"], false);

    // Leader SIGKILL: a new leader within 3 s.
    let old = leader;
    kill(c.node(old).pid);
    let killed_at = Instant::now();
    let leader = poll("a new leader", WAIT, || agreed_leader(&c, &followers));
    let failover = killed_at.elapsed();
    println!("failover: new leader node {leader} after {failover:?}");
    assert_ne!(leader, old);
    assert!(
        failover < Duration::from_secs(3),
        "failover took {failover:?}"
    );
    for i in 10..15 {
        let p = format!("entry-{i:03}");
        propose(&c, leader, &p).await.unwrap();
        expected.push(p);
    }
    // The killed node restarted from nodes.json catches up from the log (nothing compacted).
    let s = status(c.node(leader).ui_port).unwrap();
    assert!(s["cluster"]["purged_index"].is_null(), "{s}");
    c.restart(old);
    wait_recorded(&c, old, &expected).await;
    println!("node {old} rejoined and caught up from the log");

    // A follower down while the log is compacted catches up from a snapshot.
    let down = *all.iter().find(|&&i| i != leader && i != old).unwrap();
    kill(c.node(down).pid);
    let t = Instant::now();
    for i in 15..75 {
        let p = format!("entry-{i:03}");
        propose(&c, leader, &p).await.unwrap();
        expected.push(p);
    }
    println!(
        "60 sequential client writes (2 of 3 nodes up) in {:?}: {:?} each, including a login",
        t.elapsed(),
        t.elapsed() / 60
    );
    let purged = poll("log compaction on the leader", WAIT, || {
        status(c.node(leader).ui_port).and_then(|s| s["cluster"]["purged_index"].as_u64())
    });
    println!("leader compacted its log up to {purged}");
    let term = |ui: u16| status(ui).and_then(|s| s["cluster"]["term"].as_u64());
    let leader_ui = c.node(leader).ui_port;
    let term_before = term(leader_ui);
    c.restart(down);
    wait_recorded(&c, down, &expected).await;
    let s = poll("the restarted node's status", WAIT, || {
        status(c.node(down).ui_port)
    });
    assert!(
        s["cluster"]["snapshot_index"].as_u64().is_some(),
        "node {down} did not install a snapshot: {s}"
    );
    // Receiving and installing the snapshot is contact with the leader: the node does not
    // campaign meanwhile, and the leader keeps its term.
    assert_eq!(
        term(leader_ui),
        term_before,
        "the leader changed while node {down} caught up from a snapshot:\n{}",
        tail(&c.node(down).log, 30)
    );

    // A follower paused for longer than the election timeout comes back without unseating the
    // leader: the others tell it they hear the leader (pre-vote), so it does not campaign.
    let pid = s["node"]["pid"].as_u64().unwrap() as u32;
    signal(pid, libc::SIGSTOP);
    let paused = Instant::now();
    let p = "while-paused".to_string();
    propose(&c, leader, &p).await.unwrap();
    expected.push(p);
    // The fault itself: 1.5 s without the node (election timeouts are 0.5-0.9 s).
    tokio::time::sleep(Duration::from_millis(1500).saturating_sub(paused.elapsed())).await;
    signal(pid, libc::SIGCONT);
    wait_recorded(&c, down, &expected).await;
    assert_eq!(
        term(leader_ui),
        term_before,
        "the leader changed after node {down} was paused:\n{}",
        tail(&c.node(down).log, 30)
    );
    let p = "after-pause".to_string();
    propose(&c, leader, &p).await.unwrap();
    expected.push(p);
    println!("node {down} caught up from a snapshot");

    // A fourth node: learner, caught up (from the compacted log: a snapshot), then voter.
    let mysql = reserve_port().unwrap();
    let api = reserve_port().unwrap();
    let ui = reserve_port().unwrap();
    let data = c.dir.path().join("c/node4");
    std::fs::create_dir_all(&data).unwrap();
    let log4 = data.join("shared-db.log");
    let mut env = c.node(1).env.clone();
    env.remove("PEERS");
    env.insert("NODE_ID".into(), "4".into());
    env.insert("JOIN".into(), "true".into());
    env.insert("DATA_DIR".into(), data.display().to_string());
    env.insert("EXT_DB_PORT".into(), mysql.port().to_string());
    env.insert("API_PORT".into(), api.port().to_string());
    env.insert("UI_PORT".into(), ui.port().to_string());
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_shared-db"));
    cmd.arg("serve")
        .args(["--engine-buffer-pool", "64M", "--auth-master-only", "true"])
        .env_clear()
        .envs(&env);
    drop((mysql, api, ui));
    c.extra
        .push(ManagedChild::spawn("node4", cmd, &log4).unwrap());
    poll("node 4 ready", START, || {
        std::fs::read_to_string(&log4)
            .unwrap_or_default()
            .contains("shared-db is ready")
            .then_some(())
    });
    let out = Command::new(env!("CARGO_BIN_EXE_shared-db"))
        .args(["cluster", "add-node", "--node"])
        .arg(format!("127.0.0.1:{}", c.node(followers[0]).api_port))
        .args(["--id", "4", "--internal"])
        .arg(format!("127.0.0.1:{}", env["API_PORT"]))
        .arg("--mysql")
        .arg(format!("127.0.0.1:{}", env["EXT_DB_PORT"]))
        .env("CLUSTER_SECRET", &c.secret)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "add-node failed: {text}");
    assert!(text.contains("4 voter"), "{text}");
    let ui4: u16 = env["UI_PORT"].parse().unwrap();
    let deadline = Instant::now() + WAIT;
    let s4 = loop {
        let caught_up = status(ui4).and_then(|s| {
            (s["cluster"]["applied_index"].as_u64()?
                >= status(c.node(leader).ui_port)?["cluster"]["commit_index"].as_u64()?)
            .then_some(s)
        });
        if let Some(s) = caught_up {
            break s;
        }
        if Instant::now() > deadline {
            panic!(
                "node 4 did not catch up.\nnode 4: {:?}\nleader: {:?}\nnode 4 log:\n{}\nleader log:\n{}",
                status(ui4),
                status(c.node(leader).ui_port),
                tail(&log4, 80),
                tail(&c.node(leader).log, 80)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(s4["node"]["role"], "follower", "{s4}");
    // Node 4's engine has every entry.
    let n4 = DevNode {
        id: 4,
        pid: 0,
        mysql_port: env["EXT_DB_PORT"].parse().unwrap(),
        api_port: env["API_PORT"].parse().unwrap(),
        ui_port: ui4,
        data_dir: data.clone(),
        log: log4.clone(),
        argv: Vec::new(),
        env: Default::default(),
    };
    c.file.nodes.push(n4);
    wait_recorded(&c, 4, &expected).await;

    // `cluster status` lists four members, one leader.
    let out = Command::new(env!("CARGO_BIN_EXE_shared-db"))
        .args(["cluster", "status", "--node"])
        .arg(format!("127.0.0.1:{}", c.node(leader).api_port))
        .env("CLUSTER_SECRET_FILE", &c.file.cluster_secret_file)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{text}");
    assert_eq!(text.matches(" leader ").count(), 1, "{text}");
    assert_eq!(text.matches("follower").count(), 3, "{text}");

    // Removing node 4 (stopped first): three members again, writes go on.
    let mut node4 = c.extra.pop().unwrap();
    assert!(node4.stop().is_some());
    let out = Command::new(env!("CARGO_BIN_EXE_shared-db"))
        .args(["cluster", "remove-node", "--id", "4", "--node"])
        .arg(format!("127.0.0.1:{}", c.node(followers[0]).api_port))
        .env("CLUSTER_SECRET_FILE", &c.file.cluster_secret_file)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "remove-node failed: {text}");
    let s = status(c.node(leader).ui_port).unwrap();
    let ids: Vec<u64> = s["cluster"]["peers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids.len(), 3, "{s}");
    assert!(!ids.contains(&4));
    if let Err(e) = propose(&c, leader, "after-removal").await {
        let logs: String = c
            .file
            .nodes
            .iter()
            .map(|n| format!("=== node {}\n{}\n", n.id, tail(&n.log, 40)))
            .collect();
        panic!("write after removing node 4: {e}\n{logs}");
    }

    // The secret never appears in any log.
    let logs = c.all_logs() + &std::fs::read_to_string(&log4).unwrap();
    assert!(!logs.contains(&c.secret), "the cluster secret was logged");
    println!("scenario done in {:?}", t0.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_cluster_of_one_works_and_stops_its_nodes() {
    let c = DevCluster::start(1, &[]);
    let n = c.node(1).clone();
    poll("a leader", WAIT, || agreed_leader(&c, &[1]));
    create_table(&c, 1).await;
    propose(&c, 1, "solo").await.unwrap();
    // The write went through the log: the applied index is recorded in the engine.
    let mut conn = login(n.mysql_port, &c.password()).await.unwrap();
    let rows: Vec<String> = conn
        .query("SELECT payload FROM flux_test.entries")
        .await
        .unwrap();
    assert_eq!(rows, vec!["solo".to_string()]);
    drop(conn);
    let s = status(n.ui_port).unwrap();
    assert!(s["cluster"]["applied_index"].as_u64().unwrap() >= 2, "{s}");
    assert!(raw_get_root(n.ui_port).unwrap().contains(" 200 "));
    snapshot_transfer_resumes_and_refuses_corrupt_data(&c).await;
    // SIGTERM to dev-cluster stops its node (and the node its engine) before it exits.
    let mut c = c;
    assert!(c.child.stop().is_some_and(|s| s.success()));
    assert!(
        !Path::new(&format!("/proc/{}", n.pid)).exists(),
        "node 1 still runs after dev-cluster stopped"
    );
}

/// Discovery through a (local, fake) Flux API: two nodes on 127.0.0.2 and 127.0.0.3 share
/// API_PORT like Flux instances do, have no NODE_ID and no PEERS, find each other from the
/// app's locations and form one cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flux_discovery_forms_a_cluster() {
    use axum::routing::get;
    let app = axum::Router::new().route(
        "/apps/location/{app}",
        get(
            |axum::extract::Path(app): axum::extract::Path<String>| async move {
                if app != "mydb" {
                    return axum::Json(serde_json::json!({"status": "error", "data": []}));
                }
                // One location with a UPnP port (dropped), one bare IP.
                axum::Json(serde_json::json!({
                    "status": "success",
                    "data": [{"ip": "127.0.0.2:16127"}, {"ip": "127.0.0.3"}]
                }))
            },
        ),
    );
    let api = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api_url = format!("http://{}", api.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(api, app).await;
    });

    let ports: Vec<_> = (0..3).map(|_| reserve_port().unwrap()).collect();
    let (mysql, api_port, ui) = (ports[0].port(), ports[1].port(), ports[2].port());
    let dir = tempfile::Builder::new()
        .prefix("sdb-disc-")
        .tempdir()
        .unwrap();
    let mut nodes = Vec::new();
    for ip in ["127.0.0.2", "127.0.0.3"] {
        let data = dir.path().join(ip);
        std::fs::create_dir_all(&data).unwrap();
        let log = data.join("shared-db.log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_shared-db"));
        cmd.arg("serve")
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("RUST_LOG", "info,shared_db=debug,openraft=warn")
            .env("DATA_DIR", &data)
            .env("BIND_ADDRESS", ip)
            .env("ADVERTISE_HOST", ip)
            .env("EXT_DB_PORT", mysql.to_string())
            .env("API_PORT", api_port.to_string())
            .env("UI_PORT", ui.to_string())
            .env("DB_APPNAME", "mydb")
            .env("FLUX_API_URL", &api_url)
            .env("CLUSTER_SECRET", "discovery-test-secret-0123")
            .env("DB_INIT_PASS", "pw")
            .env("ENGINE_BUFFER_POOL", "64M");
        nodes.push((ManagedChild::spawn(ip, cmd, &log).unwrap(), log, ip));
    }
    let client = PeerClient::new(
        Some(ClusterSecret::new("discovery-test-secret-0123").unwrap()),
        0,
    );
    let deadline = Instant::now() + START;
    let infos = loop {
        let mut infos = Vec::new();
        for (_, _, ip) in &nodes {
            let r: Result<shared_db::cluster::ClusterInfo, _> = client
                .get_json(
                    &format!("{ip}:{api_port}"),
                    "/cluster/info",
                    Duration::from_secs(2),
                )
                .await;
            if let Ok(i) = r {
                infos.push(i);
            }
        }
        let formed = infos.len() == 2
            && infos
                .iter()
                .all(|i| i.members.len() == 2 && i.leader.is_some())
            && infos[0].leader == infos[1].leader;
        if formed {
            break infos;
        }
        if Instant::now() > deadline {
            let logs: String = nodes
                .iter()
                .map(|(_, l, _)| std::fs::read_to_string(l).unwrap_or_default())
                .collect();
            panic!("no cluster formed through discovery: {infos:?}\n{logs}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // Generated ids; the lowest bootstrapped; addresses are the advertised IPs.
    let leader = infos[0].leader.clone().unwrap();
    assert!(leader.internal_addr.starts_with("127.0.0."), "{leader:?}");
    let ids: Vec<u64> = infos.iter().map(|i| i.id).collect();
    assert_ne!(ids[0], ids[1]);
    drop(ports);
}

/// Drives the snapshot-receiving endpoints of a real node by hand: an interrupted transfer
/// resumes at the bytes already received, chunks must arrive at the right offset, paths cannot
/// escape, and data that does not match its checksums is discarded instead of installed.
async fn snapshot_transfer_resumes_and_refuses_corrupt_data(c: &DevCluster) {
    use sha2::{Digest, Sha256};
    use shared_db::cluster::snapshot::{BeginRequest, BeginResponse, FileEntry, StoredSnapshot};
    let addr = format!("127.0.0.1:{}", c.node(1).api_port);
    let content = b"0123456789";
    let sha = hex::encode(Sha256::digest(content));
    let raft = shared_db::cluster::types::RaftSnapshotMeta {
        snapshot_id: "9-99-test".into(),
        ..Default::default()
    };
    let begin = |files: Vec<FileEntry>| BeginRequest {
        vote: Default::default(),
        snapshot: StoredSnapshot {
            raft: raft.clone(),
            sm: shared_db::cluster::contract::SnapshotMeta {
                last_applied: shared_db::cluster::contract::LogPosition { term: 9, index: 99 },
                size_bytes: 10,
                checksum: sha.clone(),
            },
        },
        files,
    };
    let files = vec![FileEntry {
        path: "db/a.sql".into(),
        size: 10,
        sha256: sha.clone(),
    }];
    let post = |path: String, body: Vec<u8>| {
        let client = c.client.clone();
        let addr = addr.clone();
        async move {
            client
                .call_raw(&addr, Method::POST, &path, body, Duration::from_secs(10))
                .await
                .unwrap()
        }
    };
    let body = postcard::to_allocvec(&begin(files.clone())).unwrap();
    let (st, b) = post("/raft/snapshot/begin".into(), body.clone()).await;
    assert_eq!(st, 200);
    let r: BeginResponse = postcard::from_bytes(&b).unwrap();
    assert!(r.have.is_empty());
    let chunk = |off: u64| format!("/raft/snapshot/chunk?id=9-99-test&offset={off}&path=db/a.sql");
    assert_eq!(post(chunk(0), content[..4].to_vec()).await.0, 200);
    // Interrupted; the sender starts again and learns where to resume.
    let (_, b) = post("/raft/snapshot/begin".into(), body).await;
    let r: BeginResponse = postcard::from_bytes(&b).unwrap();
    assert_eq!(r.have.get("db/a.sql"), Some(&4));
    assert_eq!(post(chunk(0), content[..4].to_vec()).await.0, 409);
    // The rest, corrupted in transit: finish refuses it and discards the transfer.
    assert_eq!(post(chunk(4), b"XXXXXX".to_vec()).await.0, 200);
    let fin = shared_db::cluster::snapshot::FinishRequest {
        vote: Default::default(),
        snapshot_id: "9-99-test".into(),
    };
    let (st, b) = post(
        "/raft/snapshot/finish".into(),
        postcard::to_allocvec(&fin).unwrap(),
    )
    .await;
    assert_eq!(st, 422, "{}", String::from_utf8_lossy(&b));
    assert!(!c.node(1).data_dir.join("raft/incoming/9-99-test").exists());
    // Paths that would leave the transfer directory are refused.
    let evil = vec![FileEntry {
        path: "../../escape".into(),
        size: 1,
        sha256: sha.clone(),
    }];
    let (st, _) = post(
        "/raft/snapshot/begin".into(),
        postcard::to_allocvec(&begin(evil)).unwrap(),
    )
    .await;
    assert_eq!(st, 400);
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
