//! Raw protocol helpers for tests that must send exact bytes: framing, a native-password
//! login over a plain socket, and bounded packet reads.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use mysql_common::constants::CapabilityFlags;
use mysql_common::io::ParseBuf;
use mysql_common::packets::{AuthPlugin, HandshakePacket, HandshakeResponse};
use mysql_common::proto::{MyDeserialize, MySerialize};

pub fn framed(seq: u8, payload: &[u8]) -> Vec<u8> {
    let len = payload.len().min(0xFF_FFFF);
    let mut v = vec![len as u8, (len >> 8) as u8, (len >> 16) as u8, seq];
    v.extend_from_slice(&payload[..len]);
    v
}

/// A handshake response for `user` with `token`, announcing `plugin`.
pub fn handshake_response(user: &str, token: &[u8], plugin: AuthPlugin<'_>) -> Vec<u8> {
    let resp = HandshakeResponse::new(
        Some(token.to_vec()),
        (10, 11, 0),
        Some(user.as_bytes()),
        None::<&[u8]>,
        Some(plugin),
        CapabilityFlags::CLIENT_PROTOCOL_41
            | CapabilityFlags::CLIENT_SECURE_CONNECTION
            | CapabilityFlags::CLIENT_PLUGIN_AUTH
            | CapabilityFlags::CLIENT_MULTI_RESULTS,
        None,
        1 << 24,
    );
    let mut buf = Vec::new();
    resp.serialize(&mut buf);
    buf
}

/// Connects and reads the greeting; returns the stream and the scramble.
pub fn greet(port: u16) -> (TcpStream, Vec<u8>) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let greeting = read_packet(&mut s).expect("greeting");
    let hs = HandshakePacket::deserialize((), &mut ParseBuf(&greeting.1)).unwrap();
    (s, hs.nonce())
}

/// Logs in over a raw socket (native password) and returns the stream.
pub fn raw_login(port: u16, password: &str) -> TcpStream {
    let (mut s, nonce) = greet(port);
    let token = mysql_common::scramble::scramble_native(&nonce, password.as_bytes()).unwrap();
    let buf = handshake_response("root", &token, AuthPlugin::MysqlNativePassword);
    s.write_all(&framed(1, &buf)).unwrap();
    let ok = read_packet(&mut s).expect("login answer");
    assert_eq!(ok.1.first(), Some(&0), "login failed: {:?}", ok.1);
    s
}

/// (sequence id, payload) of one packet, or None if the connection closed. Panics if the
/// server neither answers nor closes within the read timeout: that is a hang.
pub fn read_packet(s: &mut TcpStream) -> Option<(u8, Vec<u8>)> {
    fn check(r: std::io::Result<()>) -> Option<()> {
        match r {
            Ok(()) => Some(()),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                panic!("the operator neither answered nor closed the connection: {e}")
            }
            Err(_) => None,
        }
    }
    let mut h = [0u8; 4];
    check(s.read_exact(&mut h))?;
    let len = usize::from(h[0]) | usize::from(h[1]) << 8 | usize::from(h[2]) << 16;
    let mut p = vec![0u8; len];
    check(s.read_exact(&mut p))?;
    Some((h[3], p))
}
