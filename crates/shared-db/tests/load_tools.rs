//! Real load generators through the operator: sysbench OLTP (binary prepared statements and the
//! text protocol) and mariadb-slap with concurrency 16, all with zero errors.

mod common;

use std::process::Command;
use std::time::Duration;

use common::Operator;
use testkit::MariaDb;

fn sysbench(port: u16, pw: &str, test: &str, args: &[&str]) -> String {
    let out = Command::new("sysbench")
        .arg(test)
        // Any error, deadlocks included, fails the run.
        .arg("--mysql-ignore-errors=none")
        .arg("--db-driver=mysql")
        .arg("--mysql-host=127.0.0.1")
        .arg(format!("--mysql-port={port}"))
        .arg("--mysql-user=root")
        .arg(format!("--mysql-password={pw}"))
        .arg("--mysql-db=test_db")
        .arg("--tables=2")
        .arg("--table-size=2000")
        .args(args)
        .output()
        .expect("run sysbench");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "sysbench {args:?} failed:\n{text}");
    text
}

/// The number after `label` on its line of sysbench's report.
fn stat(report: &str, label: &str) -> u64 {
    report
        .lines()
        .find(|l| l.trim_start().starts_with(label))
        .and_then(|l| l.split_whitespace().nth(label.split_whitespace().count()))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no `{label}` in sysbench output:\n{report}"))
}

#[test]
fn sysbench_oltp_with_prepared_and_text_protocol() {
    let db = MariaDb::start().unwrap();
    let op = Operator::external(&db, &[]);
    let pw = db.password();
    sysbench(op.port(), pw, "oltp_read_write", &["prepare"]);
    // Read-write at one thread (several writers would hit genuine InnoDB deadlocks, which are
    // errors here), then read-only at eight; both protocols.
    for mode in ["auto", "disable"] {
        let ps = format!("--db-ps-mode={mode}");
        for (test, threads) in [
            ("oltp_read_write", "--threads=1"),
            ("oltp_read_only", "--threads=8"),
        ] {
            let report = sysbench(op.port(), pw, test, &["run", threads, "--time=3", &ps]);
            assert!(stat(&report, "transactions:") > 20, "{report}");
            assert_eq!(stat(&report, "ignored errors:"), 0, "{report}");
            assert_eq!(stat(&report, "reconnects:"), 0, "{report}");
        }
    }
    // The operator carried the load, and the rows are all there (oltp_read_write deletes and
    // re-inserts the same ids).
    assert!(op.status()["commands"].as_u64().unwrap() > 1000);
    let rows = db
        .cli("SELECT (SELECT COUNT(*) FROM test_db.sbtest1) + (SELECT COUNT(*) FROM test_db.sbtest2)")
        .unwrap();
    assert_eq!(rows.trim(), "4000");
}

#[test]
fn mariadb_slap_mixed_load_with_16_clients() {
    let db = MariaDb::start().unwrap();
    let op = Operator::external(&db, &[]);
    let out = Command::new("mariadb-slap")
        .arg("--no-defaults")
        .arg("-h127.0.0.1")
        .arg(format!("-P{}", op.port()))
        .arg("-uroot")
        .arg(format!("-p{}", db.password()))
        .args([
            "--concurrency=16",
            "--iterations=2",
            "--number-of-queries=3200",
            "--auto-generate-sql",
            "--auto-generate-sql-load-type=mixed",
            "--auto-generate-sql-add-autoincrement",
            "--create-schema=slap",
        ])
        .output()
        .expect("run mariadb-slap");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "mariadb-slap failed:\n{text}");
    assert!(
        text.contains("Number of clients running queries: 16"),
        "{text}"
    );
    assert!(!text.to_lowercase().contains("error"), "{text}");
    op.wait_for_status(
        "every client session closed",
        Duration::from_secs(10),
        |st| st["connections"]["active"] == 0,
    );
}
