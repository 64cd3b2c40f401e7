//! Agents prove the join secret when they register: with the real `fluxon-fs` binaries, an agent
//! with a wrong secret is refused (and the refusal is logged on both sides without the secret),
//! a forged or replayed-late registration is refused over HTTP, and the right secret brings the
//! export online.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use fluxon_fs::config::JoinSecret;
use fluxon_fs_client::{Client, ClientOptions};
use fluxon_fs_proto::http::{call_json, HttpError};
use fluxon_fs_proto::master_api::{RegisterReply, RegisterRequest};
use fluxon_fs_proto::token::now_unix_ms;
use hyper::Method;
use support::{agent_yaml, master_yaml, wait_until, EXPORT, JOIN_SECRET};
use testkit::ManagedChild;

const WRONG_SECRET: &str = "wrong-join-secret-9876543210";

fn spawn(name: &str, role: &str, config: &Path, log: &Path) -> ManagedChild {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fluxon-fs"));
    cmd.arg(role).arg("-c").arg(config).env("RUST_LOG", "info");
    ManagedChild::spawn(name, cmd, log).unwrap()
}

fn online(client: &Client) -> bool {
    client
        .routes()
        .map(|r| r.contains_key(EXPORT))
        .unwrap_or(false)
}

fn register(master: &str, req: &RegisterRequest) -> Result<RegisterReply, HttpError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(call_json(
        master,
        Method::POST,
        "/api/v1/agents/register",
        None,
        Some(req),
        Duration::from_secs(5),
    ))
}

fn request(data_addr: &str) -> RegisterRequest {
    RegisterRequest {
        agent_instance_key: "intruder".into(),
        master_instance_key: "test_master".into(),
        data_addr: data_addr.into(),
        exports: Default::default(),
        sent_unix_ms: 0,
        nonce: String::new(),
        mac: String::new(),
    }
}

#[test]
fn wrong_join_secret_is_refused_and_logged_without_the_secret() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    let master_port = testkit::reserve_port().unwrap();
    let agent_port = testkit::reserve_port().unwrap();
    let master_addr = format!("127.0.0.1:{}", master_port.port());
    let agent_addr = format!("127.0.0.1:{}", agent_port.port());
    let master_cfg = dir.path().join("master.yaml");
    std::fs::write(
        &master_cfg,
        master_yaml(&master_addr, &dir.path().join("access.db")),
    )
    .unwrap();
    let agent_cfg = dir.path().join("agent.yaml");
    std::fs::write(
        &agent_cfg,
        agent_yaml(&agent_addr, &master_addr, &root).replace(JOIN_SECRET, WRONG_SECRET),
    )
    .unwrap();
    let master_log = dir.path().join("master.log");
    let agent_log = dir.path().join("agent.log");
    let _master = spawn("master", "master", &master_cfg, &master_log);
    let mut agent = spawn("agent", "agent", &agent_cfg, &agent_log);

    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    wait_until(Duration::from_secs(20), "the master's refusal", || {
        read(&master_log).contains("agent registration refused")
    });
    wait_until(Duration::from_secs(20), "the agent's report", || {
        read(&agent_log).contains("the master refused this agent")
    });
    let client = Client::connect(
        &master_addr,
        "admin",
        "admin-pw",
        ClientOptions {
            timeout: Duration::from_secs(5),
            ..ClientOptions::default()
        },
    )
    .unwrap();
    assert!(!online(&client), "an agent with a wrong secret was listed");
    for log in [read(&master_log), read(&agent_log)] {
        assert!(!log.contains(WRONG_SECRET), "{log}");
        assert!(!log.contains(JOIN_SECRET), "{log}");
    }
    assert!(read(&master_log).contains("intruder") || read(&master_log).contains("test_agent"));

    // Forged requests over HTTP: no MAC, a MAC made with another secret, a stale timestamp.
    let mut forged = request("127.0.0.1:9");
    assert_eq!(
        register(&master_addr, &forged).unwrap_err().status(),
        Some(401)
    );
    let other = JoinSecret::new(WRONG_SECRET.as_bytes().to_vec()).unwrap();
    fluxon_fs::join::sign_request(&other, &mut forged, now_unix_ms());
    assert_eq!(
        register(&master_addr, &forged).unwrap_err().status(),
        Some(401)
    );
    let right = JoinSecret::new(JOIN_SECRET.as_bytes().to_vec()).unwrap();
    let stale_at = now_unix_ms() - fluxon_fs::join::MAX_CLOCK_SKEW_MS - 60_000;
    fluxon_fs::join::sign_request(&right, &mut forged, stale_at);
    let err = register(&master_addr, &forged).unwrap_err();
    assert_eq!(err.status(), Some(401), "{err}");
    assert!(err.to_string().contains("timestamp"), "{err}");
    // The right secret: accepted, and the reply proves the master knows it too.
    fluxon_fs::join::sign_request(&right, &mut forged, now_unix_ms());
    let reply = register(&master_addr, &forged).unwrap();
    assert!(fluxon_fs::join::check_reply(&right, &forged.nonce, &reply));
    assert!(!fluxon_fs::join::check_reply(&other, &forged.nonce, &reply));

    // The agent restarted with the right secret comes online.
    agent.kill();
    std::fs::write(&agent_cfg, agent_yaml(&agent_addr, &master_addr, &root)).unwrap();
    let _agent = spawn("agent", "agent", &agent_cfg, &agent_log);
    wait_until(Duration::from_secs(20), "export online", || online(&client));
}
