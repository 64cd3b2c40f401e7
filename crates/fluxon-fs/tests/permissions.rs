//! The permission matrix through a real master and agent: read-only, read-write,
//! prefix-scoped, scope-less and manager users; filtered listings; login failures; the forced
//! change of a default admin password; the manager user API.

mod support;

use std::time::Duration;

use fluxon_fs::config::{ConfigFile, MasterConfig};
use fluxon_fs_client::{Client, OpenFlags};
use fluxon_fs_proto::http::call_json;
use support::{errno, options, Stack, EXPORT};

const WR: i32 = libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC;

fn names(c: &Client, path: &str) -> Vec<String> {
    c.listdir(EXPORT, path)
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect()
}

fn populate(stack: &Stack) {
    for dir in ["docs", "pub", "private", "docsx"] {
        std::fs::create_dir_all(stack.path(dir)).unwrap();
        std::fs::write(stack.path(&format!("{dir}/f.txt")), dir).unwrap();
    }
    std::fs::write(stack.path("top.txt"), b"top").unwrap();
}

fn can_write(c: &Client, path: &str) -> Result<(), i32> {
    let f = c
        .open(EXPORT, path, OpenFlags::from_linux(WR), 0o644)
        .map_err(|e| e.errno().unwrap_or(0))?;
    f.pwrite(0, b"w").unwrap();
    f.close().map_err(|e| e.errno().unwrap_or(0))
}

#[test]
fn read_only_user_reads_but_cannot_change_anything() {
    let stack = Stack::start();
    populate(&stack);
    let ro = stack.client("ro", "ro-pw");
    assert_eq!(ro.exports().unwrap(), vec![EXPORT]);
    assert_eq!(
        names(&ro, ""),
        vec!["docs", "docsx", "private", "pub", "top.txt"]
    );
    let f = ro
        .open(
            EXPORT,
            "private/f.txt",
            OpenFlags::from_linux(libc::O_RDONLY),
            0,
        )
        .unwrap();
    assert_eq!(f.pread(0, 100).unwrap(), b"private");
    assert_eq!(can_write(&ro, "new.txt"), Err(libc::EACCES));
    assert_eq!(errno(ro.mkdir(EXPORT, "d", 0o755)), libc::EACCES);
    assert_eq!(errno(ro.unlink(EXPORT, "top.txt")), libc::EACCES);
    assert_eq!(
        errno(ro.rename(EXPORT, "top.txt", "t2", false)),
        libc::EACCES
    );
    assert_eq!(errno(ro.chmod(EXPORT, "top.txt", 0o777)), libc::EACCES);
    assert_eq!(errno(ro.truncate(EXPORT, "top.txt", 0)), libc::EACCES);
    assert_eq!(
        errno(ro.open(EXPORT, "top.txt", OpenFlags::from_linux(libc::O_RDWR), 0)),
        libc::EACCES
    );
    assert!(!ro.access(EXPORT, "top.txt", libc::W_OK as u32).unwrap());
    assert!(ro.access(EXPORT, "top.txt", libc::R_OK as u32).unwrap());
    assert_eq!(std::fs::read(stack.path("top.txt")).unwrap(), b"top");
}

#[test]
fn read_write_user_changes_the_whole_export() {
    let stack = Stack::start();
    populate(&stack);
    let rw = stack.client("rw", "rw-pw");
    can_write(&rw, "private/new.txt").unwrap();
    rw.rename(EXPORT, "private/new.txt", "docs/moved.txt", false)
        .unwrap();
    rw.mkdir(EXPORT, "made", 0o755).unwrap();
    assert!(stack.path("docs/moved.txt").exists() && stack.path("made").is_dir());
}

#[test]
fn prefix_scoped_user_sees_and_changes_only_its_scopes() {
    let stack = Stack::start();
    populate(&stack);
    let pre = stack.client("pre", "pre-pw");
    // Only the directories leading to its scopes; no files outside them.
    assert_eq!(names(&pre, ""), vec!["docs", "pub"]);
    assert_eq!(names(&pre, "docs"), vec!["f.txt"]);
    assert!(pre.stat(EXPORT, "", true).unwrap().is_dir());
    assert_eq!(errno(pre.stat(EXPORT, "top.txt", true)), libc::EACCES);
    assert_eq!(errno(pre.stat(EXPORT, "private/f.txt", true)), libc::EACCES);
    assert_eq!(errno(pre.stat(EXPORT, "docsx/f.txt", true)), libc::EACCES);
    assert_eq!(errno(pre.listdir(EXPORT, "private")), libc::EACCES);
    assert_eq!(
        errno(pre.open(EXPORT, "top.txt", OpenFlags::from_linux(libc::O_RDONLY), 0)),
        libc::EACCES
    );
    // Read-write under docs/, read-only under pub/, nothing elsewhere.
    can_write(&pre, "docs/new.txt").unwrap();
    pre.mkdir(EXPORT, "docs/sub", 0o755).unwrap();
    assert_eq!(can_write(&pre, "pub/new.txt"), Err(libc::EACCES));
    assert_eq!(can_write(&pre, "top2.txt"), Err(libc::EACCES));
    assert_eq!(can_write(&pre, "docsx/new.txt"), Err(libc::EACCES));
    let f = pre
        .open(
            EXPORT,
            "pub/f.txt",
            OpenFlags::from_linux(libc::O_RDONLY),
            0,
        )
        .unwrap();
    assert_eq!(f.pread(0, 10).unwrap(), b"pub");
    // A rename needs read_write on both ends.
    assert_eq!(
        errno(pre.rename(EXPORT, "docs/new.txt", "pub/new.txt", false)),
        libc::EACCES
    );
    assert_eq!(
        errno(pre.rename(EXPORT, "pub/f.txt", "docs/stolen.txt", false)),
        libc::EACCES
    );
    pre.rename(EXPORT, "docs/new.txt", "docs/sub/new.txt", false)
        .unwrap();
}

#[test]
fn scopeless_user_sees_nothing_and_manager_sees_everything() {
    let stack = Stack::start();
    populate(&stack);
    let nobody = stack.client("nobody", "nobody-pw");
    assert!(nobody.exports().unwrap().is_empty());
    assert_eq!(errno(nobody.stat(EXPORT, "", true)), libc::EACCES);
    assert_eq!(errno(nobody.listdir(EXPORT, "")), libc::EACCES);
    // The snapshot still names the export, so a mount of it fails with PermissionError.
    assert!(nobody.cache_config_yaml().unwrap().contains(EXPORT));

    let admin = stack.client("admin", "admin-pw");
    assert_eq!(admin.exports().unwrap(), vec![EXPORT]);
    assert_eq!(names(&admin, "").len(), 5);
    can_write(&admin, "private/admin.txt").unwrap();
}

#[test]
fn bad_credentials_are_refused_with_permission_denied() {
    let stack = Stack::start();
    for (user, password) in [("ro", "wrong"), ("ghost", "ro-pw")] {
        match Client::connect(&stack.master_addr(), user, password, options()) {
            Ok(_) => panic!("{user} logged in with a wrong password"),
            Err(e) => assert_eq!(e.errno(), Some(libc::EACCES), "{e}"),
        }
    }
}

#[test]
fn unreachable_master_fails_within_the_bound() {
    let port = testkit::reserve_port().unwrap();
    let started = std::time::Instant::now();
    let err =
        Client::connect(&format!("127.0.0.1:{}", port.port()), "u", "p", options()).unwrap_err();
    assert_eq!(err.errno(), Some(libc::ECONNREFUSED), "{err}");
    assert!(started.elapsed() < Duration::from_secs(6));
    // A black hole (no SYN answer) ends in a timeout, not a hang.
    let opts = fluxon_fs_client::ClientOptions {
        timeout: Duration::from_millis(300),
        ..options()
    };
    let started = std::time::Instant::now();
    let err = Client::connect("10.255.255.1:9", "u", "p", opts).unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
    assert!(
        matches!(
            err,
            fluxon_fs_client::ClientError::Timeout { .. }
                | fluxon_fs_client::ClientError::Os { .. }
        ),
        "{err}"
    );
}

#[test]
fn default_admin_must_change_its_password_and_bootstrap_applies_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("access.db");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let yaml = |password: &str| {
        format!(
            "fluxon_fs:\n  master:\n    instance_key: m\n    agent_join_secret: perm-test-join-secret\n  master_panel:\n    listen_addr: 127.0.0.1:0\n    access_db_path: {}\n    bootstrap_access_model:\n      users:\n        - {{username: admin, password: {password}, can_manage_users: true}}\n",
            db.display()
        )
    };
    let config = MasterConfig::from_yaml_str(&yaml("admin"), "m.yaml").unwrap();
    let master = runtime.block_on(fluxon_fs::master::start(config)).unwrap();
    let addr = master.addr.to_string();
    let err = Client::connect(&addr, "admin", "admin", options()).unwrap_err();
    assert_eq!(err.errno(), Some(libc::EACCES));
    assert!(
        err.to_string().contains("must be changed before first use"),
        "{err}"
    );
    let change =
        serde_json::json!({"username": "admin", "old_password": "admin", "new_password": "s3cret"});
    let _: serde_json::Value = runtime
        .block_on(call_json(
            &addr,
            hyper::Method::POST,
            "/api/v1/account/password",
            None,
            Some(&change),
            Duration::from_secs(5),
        ))
        .unwrap();
    let admin = Client::connect(&addr, "admin", "s3cret", options()).unwrap();
    assert!(admin.exports().unwrap().is_empty());

    // Manager API: create a user; it can log in.
    let token = login_token(&runtime, &addr, "admin", "s3cret");
    let new_user = serde_json::json!({"username": "bob", "password": "bob-pw"});
    let _: serde_json::Value = runtime
        .block_on(call_json(
            &addr,
            hyper::Method::POST,
            "/api/v1/users",
            Some(&token),
            Some(&new_user),
            Duration::from_secs(5),
        ))
        .unwrap();
    Client::connect(&addr, "bob", "bob-pw", options()).unwrap();
    // Non-managers cannot use it.
    let bob = login_token(&runtime, &addr, "bob", "bob-pw");
    let denied = runtime.block_on(call_json::<_, serde_json::Value>(
        &addr,
        hyper::Method::POST,
        "/api/v1/users",
        Some(&bob),
        Some(&new_user),
        Duration::from_secs(5),
    ));
    assert_eq!(denied.unwrap_err().status(), Some(403));

    // Restart with a different bootstrap: the DB wins; the hash on disk is not the password.
    runtime.block_on(master.stop());
    let config = MasterConfig::from_yaml_str(&yaml("other-pw"), "m.yaml").unwrap();
    let master = runtime.block_on(fluxon_fs::master::start(config)).unwrap();
    let addr = master.addr.to_string();
    Client::connect(&addr, "admin", "s3cret", options()).unwrap();
    assert!(Client::connect(&addr, "admin", "other-pw", options()).is_err());
    runtime.block_on(master.stop());
    let raw = std::fs::read(&db).unwrap();
    assert!(
        !raw.windows(6).any(|w| w == b"s3cret"),
        "plaintext password in the access DB"
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&db).unwrap().permissions().mode() & 0o777,
        0o600
    );
}

fn login_token(
    runtime: &tokio::runtime::Runtime,
    addr: &str,
    user: &str,
    password: &str,
) -> String {
    let body = fluxon_fs_proto::master_api::LoginRequest {
        username: user.into(),
        password: password.into(),
    };
    let reply: fluxon_fs_proto::master_api::TokenReply = runtime
        .block_on(call_json(
            addr,
            hyper::Method::POST,
            "/api/v1/login",
            None,
            Some(&body),
            Duration::from_secs(5),
        ))
        .unwrap();
    reply.token
}
