//! Exact-byte protocol checks a client library would hide: the auth switch for clients that
//! start with `caching_sha2_password`, server-side cursors (COM_STMT_EXECUTE with a cursor,
//! COM_STMT_FETCH), COM_SET_OPTION, COM_PROCESS_KILL, and the bounded login and idle waits.

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::raw::{framed, greet, handshake_response, raw_login, read_packet};
use common::Operator;
use mysql_common::io::ParseBuf;
use mysql_common::packets::{AuthPlugin, AuthSwitchRequest};
use mysql_common::proto::MyDeserialize;
use testkit::MariaDb;

#[test]
fn caching_sha2_clients_are_switched_to_native_password() {
    let db = MariaDb::start().unwrap();
    let op = Operator::external(&db, &[]);
    let (mut s, nonce) = greet(op.port());
    let sha2 = mysql_common::scramble::scramble_sha256(&nonce, db.password().as_bytes()).unwrap();
    let resp = handshake_response("root", &sha2, AuthPlugin::CachingSha2Password);
    s.write_all(&framed(1, &resp)).unwrap();
    let (seq, switch) = read_packet(&mut s).expect("auth switch");
    assert_eq!(
        switch[0], 0xFE,
        "expected an auth switch request: {switch:?}"
    );
    let req = AuthSwitchRequest::deserialize((), &mut ParseBuf(&switch)).unwrap();
    assert_eq!(req.auth_plugin().as_bytes(), b"mysql_native_password");
    let mut data = req.plugin_data().to_vec();
    if data.last() == Some(&0) {
        data.pop();
    }
    let token = mysql_common::scramble::scramble_native(&data, db.password().as_bytes()).unwrap();
    s.write_all(&framed(seq + 1, &token)).unwrap();
    let (_, ok) = read_packet(&mut s).expect("login answer");
    assert_eq!(ok[0], 0x00, "login after the switch failed: {ok:?}");
}

fn command(s: &mut std::net::TcpStream, payload: &[u8]) {
    s.write_all(&framed(0, payload)).unwrap();
}

fn is_eof(p: &[u8]) -> bool {
    p.first() == Some(&0xFE) && p.len() < 9
}

fn eof_status(p: &[u8]) -> u16 {
    u16::from_le_bytes([p[3], p[4]])
}

const CURSOR_EXISTS: u16 = 0x0040;
const LAST_ROW_SENT: u16 = 0x0080;

/// COM_STMT_PREPARE of `sql`; reads the parameter and column definitions and returns the
/// statement id, the parameter count and the column count.
fn prepare(s: &mut std::net::TcpStream, sql: &str) -> (u32, u16, u16) {
    let mut prepare = vec![0x16];
    prepare.extend_from_slice(sql.as_bytes());
    command(s, &prepare);
    let (_, ok) = read_packet(s).unwrap();
    assert_eq!(ok[0], 0x00, "{ok:?}");
    let stmt = u32::from_le_bytes([ok[1], ok[2], ok[3], ok[4]]);
    let columns = u16::from_le_bytes([ok[5], ok[6]]);
    let params = u16::from_le_bytes([ok[7], ok[8]]);
    for defs in [params, columns] {
        if defs > 0 {
            for _ in 0..defs {
                read_packet(s).unwrap();
            }
            assert!(is_eof(&read_packet(s).unwrap().1));
        }
    }
    (stmt, params, columns)
}

/// COM_PING answers OK: the session is in a normal state.
fn ping_ok(s: &mut std::net::TcpStream) {
    command(s, b"\x0E");
    assert_eq!(read_packet(s).unwrap().1[0], 0x00);
}

/// Prepares `select` (one BIGINT column), executes it with a cursor and fetches 4 rows at a
/// time; returns the values.
fn cursor_rows(s: &mut std::net::TcpStream, select: &str) -> Vec<i64> {
    let (stmt, _, columns) = prepare(s, select);
    assert_eq!(columns, 1);

    // COM_STMT_EXECUTE with CURSOR_TYPE_READ_ONLY: metadata only, cursor open.
    let mut exec = vec![0x17];
    exec.extend_from_slice(&stmt.to_le_bytes());
    exec.push(0x01);
    exec.extend_from_slice(&1u32.to_le_bytes());
    command(s, &exec);
    let count = read_packet(s).unwrap().1;
    assert_eq!(count, vec![1], "one column expected: {count:?}");
    read_packet(s).unwrap();
    let eof = read_packet(s).unwrap().1;
    assert!(is_eof(&eof));
    assert_ne!(eof_status(&eof) & CURSOR_EXISTS, 0, "no cursor was opened");

    // COM_STMT_FETCH 4 rows at a time, the last batch flagged.
    let mut seen = Vec::new();
    loop {
        let mut fetch = vec![0x1C];
        fetch.extend_from_slice(&stmt.to_le_bytes());
        fetch.extend_from_slice(&4u32.to_le_bytes());
        command(s, &fetch);
        let mut rows = 0;
        let status = loop {
            let (_, p) = read_packet(s).unwrap();
            assert_ne!(p[0], 0xFF, "fetch failed: {p:?}");
            if is_eof(&p) {
                break eof_status(&p);
            }
            // Binary row: 0x00 header, NULL bitmap (1 byte), then an 8-byte BIGINT.
            seen.push(i64::from_le_bytes(p[2..10].try_into().unwrap()));
            rows += 1;
        };
        assert!(rows <= 4);
        if status & LAST_ROW_SENT != 0 {
            break;
        }
    }
    seen
}

/// A text statement whose answer is a single OK packet.
fn query_ok(s: &mut std::net::TcpStream, sql: &str) {
    let mut q = vec![0x03];
    q.extend_from_slice(sql.as_bytes());
    command(s, &q);
    let p = read_packet(s).unwrap().1;
    assert_eq!(p[0], 0x00, "{sql}: {p:?}");
}

#[test]
fn server_side_cursor_rows_come_with_fetch() {
    let db = MariaDb::start().unwrap();
    let op = Operator::external(&db, &[]);
    let mut s = raw_login(op.port(), db.password());
    let seen = cursor_rows(&mut s, "SELECT seq FROM test_db.seq_1_to_10");
    assert_eq!(seen, (1..=10).collect::<Vec<i64>>());

    // The session is in a normal state afterwards.
    ping_ok(&mut s);
}

/// Inside a transaction a prepared read runs on the leader's shadow session; its cursor is
/// kept by the operator and sees the transaction's own uncommitted writes.
#[test]
fn a_cursor_inside_a_replicated_transaction_sees_its_writes() {
    let db = MariaDb::start().unwrap();
    let op = Operator::external(&db, &[("REPLICATION", "single")]);
    let mut s = raw_login(op.port(), db.password());
    query_ok(&mut s, "CREATE TABLE test_db.c (a BIGINT PRIMARY KEY)");
    query_ok(&mut s, "BEGIN");
    query_ok(
        &mut s,
        "INSERT INTO test_db.c SELECT seq FROM test_db.seq_1_to_10 ORDER BY seq",
    );
    let seen = cursor_rows(&mut s, "SELECT a FROM test_db.c ORDER BY a");
    assert_eq!(seen, (1..=10).collect::<Vec<i64>>());
    query_ok(&mut s, "COMMIT");
    ping_ok(&mut s);
}

/// A prepared write whose BLOB parameter arrives in `COM_STMT_SEND_LONG_DATA` chunks is
/// translated with that value and replicated.
#[test]
fn long_data_parameters_of_a_replicated_prepared_write() {
    let db = MariaDb::start().unwrap();
    let op = Operator::external(&db, &[("REPLICATION", "single")]);
    let mut s = raw_login(op.port(), db.password());
    query_ok(
        &mut s,
        "CREATE TABLE test_db.ld (id BIGINT PRIMARY KEY, b LONGBLOB)",
    );
    let (stmt, params, _) = prepare(&mut s, "INSERT INTO test_db.ld VALUES (?, ?)");
    assert_eq!(params, 2);
    // Parameter 1 in two chunks (no answer to COM_STMT_SEND_LONG_DATA), with a quote, a
    // backslash and a byte that is not UTF-8 in it.
    let chunks: [&[u8]; 2] = [b"it's \\ ", &[0xFF, b'!']];
    for chunk in chunks {
        let mut long = vec![0x18];
        long.extend_from_slice(&stmt.to_le_bytes());
        long.extend_from_slice(&1u16.to_le_bytes());
        long.extend_from_slice(chunk);
        command(&mut s, &long);
    }
    let mut exec = vec![0x17];
    exec.extend_from_slice(&stmt.to_le_bytes());
    exec.push(0x00);
    exec.extend_from_slice(&1u32.to_le_bytes());
    exec.push(0x00); // NULL bitmap
    exec.push(0x01); // types follow
    exec.extend_from_slice(&[0x08, 0x00, 0xFC, 0x00]);
    exec.extend_from_slice(&42i64.to_le_bytes());
    command(&mut s, &exec);
    let answer = read_packet(&mut s).unwrap().1;
    assert_eq!(answer[0], 0x00, "execute failed: {answer:?}");
    // The row holds the chunks, and the write went through the replicated path (the log).
    command(&mut s, b"\x03SELECT HEX(b) FROM test_db.ld WHERE id = 42");
    let mut eofs = 0;
    let mut value = None;
    while eofs < 2 {
        let p = read_packet(&mut s).unwrap().1;
        assert_ne!(p[0], 0xFF, "{p:?}");
        if is_eof(&p) {
            eofs += 1;
        } else if eofs == 1 {
            value = Some(String::from_utf8(p[1..].to_vec()).unwrap());
        }
    }
    assert_eq!(value.as_deref(), Some("69742773205C20FF21"));
    // Barrier, CREATE TABLE and its outcome report, the insert.
    let status = op.status();
    assert_eq!(status["replication"]["applied_index"], 4, "{status}");
}

#[test]
fn set_option_and_process_kill() {
    let db = MariaDb::start().unwrap();
    let op = Operator::external(&db, &[]);
    let mut s = raw_login(op.port(), db.password());
    // COM_SET_OPTION: MYSQL_OPTION_MULTI_STATEMENTS_ON answers EOF (or OK).
    command(&mut s, &[0x1B, 0x00, 0x00]);
    let p = read_packet(&mut s).unwrap().1;
    assert!(p[0] == 0xFE || p[0] == 0x00, "{p:?}");
    // COM_PROCESS_KILL of an id that is not a client of this node.
    command(&mut s, &[0x0C, 0x01, 0x00, 0x00, 0x00]);
    let p = read_packet(&mut s).unwrap().1;
    assert_eq!(u16::from_le_bytes([p[1], p[2]]), 1094, "{p:?}");
    // COM_PROCESS_KILL of another client by its connection id closes that client.
    let (mut other, _) = {
        let mut o = raw_login(op.port(), db.password());
        command(&mut o, b"\x03SELECT CONNECTION_ID()");
        (o, ())
    };
    let mut engine_id = None;
    let mut eofs = 0;
    while eofs < 2 {
        let p = read_packet(&mut other).unwrap().1;
        if is_eof(&p) {
            eofs += 1;
        } else if eofs == 1 {
            engine_id = std::str::from_utf8(&p[1..])
                .ok()
                .and_then(|v| v.parse::<u32>().ok());
        }
    }
    let id = engine_id.expect("CONNECTION_ID() row");
    let mut kill = vec![0x0C];
    kill.extend_from_slice(&id.to_le_bytes());
    command(&mut s, &kill);
    assert_eq!(read_packet(&mut s).unwrap().1[0], 0x00);
    command(&mut other, b"\x03SELECT 1");
    match read_packet(&mut other) {
        None => {}
        Some((_, p)) => assert_eq!(
            p[0], 0xFF,
            "a killed connection must not answer a query: {p:?}"
        ),
    }
}

#[test]
fn silent_clients_are_disconnected_within_the_login_and_idle_timeouts() {
    let db = MariaDb::start().unwrap();
    let op = Operator::external(
        &db,
        &[("LOGIN_TIMEOUT_SECS", "1"), ("IDLE_TIMEOUT_SECS", "1")],
    );
    // Connects, reads the greeting, then says nothing.
    let started = Instant::now();
    let (mut s, _) = greet(op.port());
    assert!(
        read_packet(&mut s).is_none(),
        "expected the operator to close the connection"
    );
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    // Logs in, then idles.
    let mut s = raw_login(op.port(), db.password());
    let started = Instant::now();
    assert!(read_packet(&mut s).is_none());
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    // Meanwhile everyone else is served.
    let (ok, out) = common::mariadb_cli(op.port(), db.password(), &[], "SELECT 1");
    assert!(ok, "{out}");
}

#[test]
fn oversized_packets_get_1153_and_the_connection_is_closed() {
    let db = MariaDb::start().unwrap();
    let op = Operator::external(&db, &[("MAX_ALLOWED_PACKET", "4096")]);
    let mut s = raw_login(op.port(), db.password());
    let mut query = b"\x03SELECT '".to_vec();
    query.extend(std::iter::repeat_n(b'a', 5000));
    query.push(b'\'');
    command(&mut s, &query);
    let (_, err) = read_packet(&mut s).expect("an ERR before closing");
    assert_eq!(u16::from_le_bytes([err[1], err[2]]), 1153, "{err:?}");
    assert!(read_packet(&mut s).is_none(), "connection should be closed");
    // A query under the limit on another connection is fine.
    let mut s = raw_login(op.port(), db.password());
    ping_ok(&mut s);
}

#[test]
fn a_client_that_stops_reading_is_dropped_within_the_write_timeout() {
    let db = MariaDb::start().unwrap();
    let op = Operator::external(&db, &[("WRITE_TIMEOUT_SECS", "1")]);
    let mut s = raw_login(op.port(), db.password());
    // About 200 MB of results, never read.
    command(
        &mut s,
        b"\x03SELECT REPEAT('x', 1000000) FROM test_db.seq_1_to_200",
    );
    op.wait_for_status(
        "the stalled client's session and engine connection released",
        Duration::from_secs(30),
        |st| st["connections"]["active"] == 0 && st["connections"]["engine_pool_in_use"] == 0,
    );
    drop(s);
    let (ok, out) = common::mariadb_cli(op.port(), db.password(), &[], "SELECT 1");
    assert!(ok, "{out}");
}

#[test]
fn an_unauthenticated_client_cannot_announce_a_huge_packet() {
    let db = MariaDb::start().unwrap();
    let op = Operator::external(&db, &[]);
    let (mut s, _) = greet(op.port());
    // A handshake response header announcing 16 MiB - 1, with no body: refused at once, before
    // anything is allocated or waited for.
    let started = Instant::now();
    s.write_all(&[0xFF, 0xFF, 0xFF, 0x01]).unwrap();
    let (_, err) = read_packet(&mut s).expect("an ERR packet");
    assert_eq!(u16::from_le_bytes([err[1], err[2]]), 1043, "{err:?}");
    assert!(read_packet(&mut s).is_none());
    assert!(started.elapsed() < Duration::from_secs(5));
}
