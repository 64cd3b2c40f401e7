//! Random bytes against the protocol: the handshake parser (in process, property-based) and the
//! command loop of a live operator. Nothing may panic or hang; bad input gets an ERR or a closed
//! connection, and the operator keeps serving everyone else.

mod common;

use common::raw::{framed, raw_login, read_packet};

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use mysql_common::constants::CapabilityFlags;
use mysql_common::packets::{AuthPlugin, HandshakeResponse};
use mysql_common::proto::MySerialize;
use proptest::prelude::*;
use shared_db::protocol::auth::Verifier;
use shared_db::protocol::handshake::{login, LoginError, LoginPolicy};
use shared_db::protocol::packet::PacketIo;
use shared_db::protocol::stream::BoxStream;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn policy() -> LoginPolicy {
    LoginPolicy {
        user: "root".into(),
        verifier: Verifier::from_password("pw"),
        server_version: "10.11.0-test".into(),
        capabilities: CapabilityFlags::CLIENT_PROTOCOL_41
            | CapabilityFlags::CLIENT_SECURE_CONNECTION
            | CapabilityFlags::CLIENT_PLUGIN_AUTH
            | CapabilityFlags::CLIENT_CONNECT_WITH_DB,
        collation: 45,
        tls: None,
        require_tls: false,
        timeout: Duration::from_secs(2),
    }
}

/// Runs a login where the client sends `bytes` after the greeting and then closes.
fn login_with(bytes: Vec<u8>) -> Result<(), LoginError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let (server, mut client) = tokio::io::duplex(1 << 16);
        let client_task = tokio::spawn(async move {
            let mut greeting = vec![0u8; 4096];
            let _ = client.read(&mut greeting).await;
            let _ = client.write_all(&bytes).await;
            let _ = client.shutdown().await;
            // Drain whatever the server answers.
            let mut sink = Vec::new();
            let _ = client.read_to_end(&mut sink).await;
        });
        let mut io = PacketIo::new(Box::new(server) as BoxStream);
        let r = login(&mut io, &policy(), 7, "127.0.0.1".parse().unwrap()).await;
        drop(io);
        let _ = client_task.await;
        r.map(|_| ())
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, .. ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_log_in(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        prop_assert!(login_with(bytes).is_err());
    }

    #[test]
    fn random_framed_handshake_responses_never_log_in(
        payload in proptest::collection::vec(any::<u8>(), 0..400),
        seq in prop_oneof![Just(1u8), any::<u8>()],
    ) {
        prop_assert!(login_with(framed(seq, &payload)).is_err());
    }

    #[test]
    fn mangled_valid_responses_never_log_in(
        flip in 0usize..120,
        byte in any::<u8>(),
        cut in 0usize..130,
    ) {
        // A well-formed response with a wrong token, then corrupted at one byte and truncated.
        let resp = HandshakeResponse::new(
            Some(vec![9u8; 20]),
            (10, 11, 0),
            Some(&b"root"[..]),
            None::<&[u8]>,
            Some(AuthPlugin::MysqlNativePassword),
            CapabilityFlags::CLIENT_PROTOCOL_41
                | CapabilityFlags::CLIENT_SECURE_CONNECTION
                | CapabilityFlags::CLIENT_PLUGIN_AUTH,
            None,
            1 << 24,
        );
        let mut buf = Vec::new();
        resp.serialize(&mut buf);
        if flip < buf.len() {
            buf[flip] = byte;
        }
        buf.truncate(cut.max(1));
        prop_assert!(login_with(framed(1, &buf)).is_err());
    }
}

/// Reads the rest of a response whose first packet was `first`; false if the connection closed.
fn drain_response(s: &mut TcpStream, cmd: u8, first: &[u8]) -> bool {
    let is_eof = |p: &[u8]| p.first() == Some(&0xFE) && p.len() < 9;
    let until_eof = |s: &mut TcpStream| loop {
        match read_packet(s) {
            Some((_, p)) if is_eof(&p) || p.first() == Some(&0xFF) => return true,
            Some(_) => {}
            None => return false,
        }
    };
    match (cmd, first.first()) {
        (_, Some(0xFF)) | (_, None) => true,
        (0x16, Some(0x00)) if first.len() >= 12 => {
            let cols = u16::from_le_bytes([first[5], first[6]]);
            let params = u16::from_le_bytes([first[7], first[8]]);
            (params == 0 || until_eof(s)) && (cols == 0 || until_eof(s))
        }
        (0x03 | 0x17, Some(b)) if *b != 0x00 && *b != 0xFE => until_eof(s) && until_eof(s),
        (0x04 | 0x1C, Some(_)) if !is_eof(first) => until_eof(s),
        _ => true,
    }
}

/// A small deterministic generator, so a failure can be replayed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

#[test]
fn random_commands_against_a_live_operator() {
    let db = testkit::MariaDb::start().unwrap();
    let op = common::Operator::external(&db, &[]);
    let mut rng = Rng(0x5EED_1234_ABCD_0001);
    // Commands with a response the relay must frame; no-response commands and QUIT are left
    // out of the "must answer" check.
    let commands: [u8; 16] = [
        0x02, 0x03, 0x04, 0x08, 0x09, 0x0A, 0x0C, 0x0E, 0x11, 0x12, 0x16, 0x17, 0x1A, 0x1B, 0x1C,
        0x1D,
    ];
    let mut answered = 0;
    for _conn in 0..40 {
        let mut s = raw_login(op.port(), db.password());
        for _ in 0..20 {
            let cmd = match rng.next() % 4 {
                0 => rng.next() as u8, // any byte at all
                _ => commands[(rng.next() % commands.len() as u64) as usize],
            };
            let len = (rng.next() % 64) as usize;
            let mut payload = vec![cmd];
            payload.extend(rng.bytes(len));
            if s.write_all(&framed(0, &payload)).is_err() {
                break;
            }
            if matches!(cmd, 0x01 | 0x18 | 0x19) {
                // QUIT closes; SEND_LONG_DATA and STMT_CLOSE have no answer: probe with a ping.
                let _ = s.write_all(&framed(0, &[0x0E]));
            }
            // Read one whole answer, framed by what the command returns.
            match read_packet(&mut s) {
                None => break, // closed: allowed for bad input
                Some((_, first)) => {
                    answered += 1;
                    if !drain_response(&mut s, cmd, &first) {
                        break;
                    }
                }
            }
        }
    }
    assert!(answered > 100, "too few commands were answered: {answered}");
    // The operator is still healthy and serves a normal client.
    let (ok, out) = common::mariadb_cli(op.port(), db.password(), &[], "SELECT 40 + 2");
    assert!(ok, "{out}");
    assert_eq!(out.trim(), "42");
    assert_eq!(op.status()["engine"]["state"], "running");
}
