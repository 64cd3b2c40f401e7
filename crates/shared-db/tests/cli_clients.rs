//! The `mariadb` command-line client through the operator: plain, TLS, wrong password,
//! unknown database, WHITELIST and required TLS.

mod common;

use common::{mariadb_cli, Operator};
use testkit::MariaDb;

#[test]
fn plain_tls_and_refusals() {
    let db = MariaDb::start().unwrap();
    let op = Operator::external(&db, &[]);
    let pw = db.password();

    let (ok, out) = mariadb_cli(
        op.port(),
        pw,
        &[],
        "CREATE TABLE test_db.t (a INT PRIMARY KEY, b TEXT); \
         INSERT INTO test_db.t VALUES (1,'x'),(2,'y'); SELECT a, b FROM test_db.t ORDER BY a",
    );
    assert!(ok, "{out}");
    assert_eq!(out, "1\tx\n2\ty\n");
    // The write really reached the engine.
    assert_eq!(
        db.cli("SELECT COUNT(*) FROM test_db.t").unwrap().trim(),
        "2"
    );

    // TLS: the client reports the cipher of its connection to the operator.
    let (ok, out) = mariadb_cli(op.port(), pw, &["--ssl", "--skip-column-names"], "\\s");
    assert!(ok, "{out}");
    assert!(out.contains("Cipher in use is TLS"), "{out}");

    let (ok, out) = mariadb_cli(op.port(), "wrong", &[], "SELECT 1");
    assert!(!ok);
    assert!(
        out.contains(
            "ERROR 1045 (28000): Access denied for user 'root'@'127.0.0.1' (using password: YES)"
        ),
        "{out}"
    );
    let (ok, out) = mariadb_cli(op.port(), pw, &["nosuchdb"], "SELECT 1");
    assert!(!ok);
    assert!(
        out.contains("ERROR 1049 (42000): Unknown database 'nosuchdb'"),
        "{out}"
    );

    let (ok, out) = mariadb_cli(op.port(), pw, &["test_db"], "SELECT DATABASE()");
    assert!(ok, "{out}");
    assert_eq!(out.trim(), "test_db");

    let status = op.status();
    assert_eq!(status["engine"]["state"], "running");
    assert!(status["connections"]["auth_failures"].as_u64().unwrap() >= 1);
    assert!(status["version"].is_string());
    // Statements were classified: CREATE and INSERT as writes, SELECT as a read.
    assert!(
        status["statements"]["write"].as_u64().unwrap() >= 2,
        "{status}"
    );
    assert!(
        status["statements"]["read"].as_u64().unwrap() >= 1,
        "{status}"
    );
}

#[test]
fn whitelist_refuses_other_addresses_with_1130() {
    let db = MariaDb::start().unwrap();
    let op = Operator::external(&db, &[("WHITELIST", "10.0.0.0/8, 127.0.0.2, ::1")]);
    // Loopback clients connect from 127.0.0.1, which is not listed.
    let (ok, out) = mariadb_cli(op.port(), db.password(), &["--skip-ssl"], "SELECT 1");
    assert!(!ok);
    assert!(
        out.contains(
            "ERROR 1130 (HY000): Host '127.0.0.1' is not allowed to connect to this server"
        ),
        "{out}"
    );
    // A client bound to 127.0.0.2 is let in: it gets the protocol-10 greeting.
    let first = first_packet_from(op.port(), "127.0.0.2");
    assert_eq!(first[4], 10, "expected a greeting, got {first:?}");
    // With TLS preferred the client still shows the server's reason.
    let (ok, out) = mariadb_cli(op.port(), db.password(), &[], "SELECT 1");
    assert!(!ok);
    assert!(
        out.contains("1130 - Host '127.0.0.1' is not allowed"),
        "{out}"
    );
    assert_eq!(op.status()["connections"]["rejected_whitelist"], 2);
}

fn first_packet_from(port: u16, source: &str) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.bind(format!("{source}:0").parse().unwrap()).unwrap();
        let mut s = sock
            .connect(format!("127.0.0.1:{port}").parse().unwrap())
            .await
            .unwrap();
        let mut buf = vec![0u8; 5];
        tokio::time::timeout(std::time::Duration::from_secs(5), s.read_exact(&mut buf))
            .await
            .unwrap()
            .unwrap();
        buf
    })
}

#[test]
fn require_tls_refuses_plain_clients() {
    let db = MariaDb::start().unwrap();
    let op = Operator::external(&db, &[("REQUIRE_TLS", "true")]);
    let pw = db.password();
    let (ok, out) = mariadb_cli(op.port(), pw, &["--skip-ssl"], "SELECT 1");
    assert!(!ok);
    assert!(out.contains("3159"), "{out}");
    let (ok, out) = mariadb_cli(op.port(), pw, &["--ssl"], "SELECT 1");
    assert!(ok, "{out}");
}
