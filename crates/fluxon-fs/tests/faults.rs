//! Faults with the real `fluxon-fs` binaries: an agent killed during reads gives a bounded
//! error and is used again after it restarts (no remount); the master forgets a dead agent;
//! agents keep serving while the master is down and re-register when it is back.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use fluxon_fs_client::{Client, ClientOptions, OpenFlags};
use support::{agent_yaml, master_yaml, wait_until, EXPORT};
use testkit::ManagedChild;

fn spawn(name: &str, role: &str, config: &Path, log: &Path) -> ManagedChild {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fluxon-fs"));
    cmd.arg(role).arg("-c").arg(config);
    ManagedChild::spawn(name, cmd, log).unwrap()
}

fn options() -> ClientOptions {
    ClientOptions {
        timeout: Duration::from_secs(2),
        read_chunk: 1 << 20,
        readahead_chunks: 2,
        ..ClientOptions::default()
    }
}

fn connect_when_up(master: &str) -> Client {
    let mut client = None;
    wait_until(Duration::from_secs(20), "master login", || {
        client = Client::connect(master, "admin", "admin-pw", options()).ok();
        client.is_some()
    });
    let client = client.unwrap();
    wait_until(Duration::from_secs(20), "export online", || {
        client
            .routes()
            .map(|r| r.contains_key(EXPORT))
            .unwrap_or(false)
    });
    client
}

#[test]
fn killed_agent_gives_bounded_errors_and_is_used_again_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    let data: Vec<u8> = (0..(48u32 << 20)).map(|i| (i % 251) as u8).collect();
    std::fs::write(root.join("big.bin"), &data).unwrap();
    let master_port = testkit::reserve_port().unwrap();
    let agent_port = testkit::reserve_port().unwrap();
    let master_addr = format!("127.0.0.1:{}", master_port.port());
    let master_cfg = dir.path().join("master.yaml");
    std::fs::write(
        &master_cfg,
        master_yaml(&master_addr, &dir.path().join("access.db")),
    )
    .unwrap();
    let agent_cfg = dir.path().join("agent.yaml");
    let agent_addr = format!("127.0.0.1:{}", agent_port.port());
    std::fs::write(&agent_cfg, agent_yaml(&agent_addr, &master_addr, &root)).unwrap();
    let log = dir.path().join("services.log");
    let mut master = spawn("master", "master", &master_cfg, &log);
    let mut agent = spawn("agent", "agent", &agent_cfg, &log);

    let client = connect_when_up(&master_addr);
    let file = client
        .open(EXPORT, "big.bin", OpenFlags::from_linux(libc::O_RDONLY), 0)
        .unwrap();
    assert_eq!(file.pread(0, 1 << 20).unwrap(), data[..1 << 20]);

    agent.kill();
    let started = Instant::now();
    let mut offset = 1 << 20;
    let err = loop {
        // Whatever was prefetched may still be served; then the error comes, quickly.
        match file.pread(offset as u64, 1 << 20) {
            Ok(chunk) => {
                assert_eq!(chunk, data[offset..offset + chunk.len()]);
                offset += chunk.len();
                assert!(offset < data.len(), "read the whole file from a dead agent");
            }
            Err(e) => break e,
        }
    };
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "error took {:?}",
        started.elapsed()
    );
    assert!(
        matches!(
            err.errno(),
            Some(libc::ECONNREFUSED | libc::ECONNRESET | libc::ETIMEDOUT)
        ),
        "{err}"
    );
    assert!(client.stat(EXPORT, "big.bin", true).is_err());

    // The master forgets the dead agent after missed heartbeats.
    wait_until(Duration::from_secs(10), "export offline", || {
        client
            .routes()
            .map(|r| !r.contains_key(EXPORT))
            .unwrap_or(false)
    });

    // Restart: the same client and the same open file work again.
    let _agent = spawn("agent-restarted", "agent", &agent_cfg, &log);
    let mut chunk = Vec::new();
    wait_until(
        Duration::from_secs(20),
        "read after agent restart",
        || match file.pread(offset as u64, 1 << 20) {
            Ok(c) => {
                chunk = c;
                true
            }
            Err(_) => false,
        },
    );
    assert_eq!(chunk, data[offset..offset + (1 << 20)]);
    let rest = file.pread(0, data.len()).unwrap();
    assert!(rest == data);

    // Master down: the agent keeps serving this client (token and connection still valid).
    master.kill();
    assert_eq!(
        client.stat(EXPORT, "big.bin", true).unwrap().size,
        data.len() as u64
    );
    let again = client
        .open(EXPORT, "big.bin", OpenFlags::from_linux(libc::O_RDONLY), 0)
        .unwrap();
    assert_eq!(again.pread(5, 3).unwrap(), data[5..8]);
    // Master back: the agent re-registers and new clients find the export.
    let _master = spawn("master-restarted", "master", &master_cfg, &log);
    let fresh = connect_when_up(&master_addr);
    assert!(fresh.stat(EXPORT, "big.bin", true).is_ok());
}

#[test]
fn bad_config_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("agent.yaml");
    let yaml =
        agent_yaml("127.0.0.1:1", "127.0.0.1:2", dir.path()).replace("listen_addr", "listen_adr");
    std::fs::write(&cfg, yaml).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_fluxon-fs"))
        .arg("agent")
        .arg("-c")
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unknown field `listen_adr`"), "{stderr}");
    let missing = agent_yaml("127.0.0.1:0", "127.0.0.1:2", &dir.path().join("nope"));
    std::fs::write(&cfg, missing).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_fluxon-fs"))
        .arg("agent")
        .arg("-c")
        .arg(&cfg)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("cannot open remote_root_dir_abs"),
        "{stderr}"
    );
}
