//! The server side of connection setup: greeting, optional TLS upgrade, client login.
//!
//! Sends a protocol-10 greeting with a fresh scramble, upgrades to TLS when the client asks,
//! parses the handshake response (via `mysql_common`), switches clients that start with another
//! auth method to `mysql_native_password`, and verifies the token against the stored verifier.

use std::net::IpAddr;
use std::time::Duration;

use mysql_common::constants::{CapabilityFlags, StatusFlags};
use mysql_common::io::ParseBuf;
use mysql_common::packets::{AuthPlugin, AuthSwitchRequest, HandshakePacket, HandshakeResponse};
use mysql_common::proto::{MyDeserialize, MySerialize};

use super::auth::{new_scramble, Verifier, SCRAMBLE_LEN};
use super::errors::SqlError;
use super::packet::{PacketError, PacketIo};
use super::stream::{BoxStream, Prefixed};

const NATIVE: &[u8] = b"mysql_native_password";

/// Largest packet accepted before authentication (handshake responses are a few hundred bytes;
/// connection attributes can add a few KiB).
const LOGIN_PACKET_LIMIT: usize = 64 * 1024;

/// What the front end needs to accept logins.
pub struct LoginPolicy {
    pub user: String,
    pub verifier: Verifier,
    pub server_version: String,
    pub capabilities: CapabilityFlags,
    pub collation: u8,
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    pub require_tls: bool,
    pub timeout: Duration,
}

/// A client that has proven who it is.
#[derive(Debug)]
pub struct LoggedIn {
    pub user: String,
    pub db: Option<Vec<u8>>,
    pub capabilities: CapabilityFlags,
    pub collation: u8,
    pub tls: bool,
    pub scramble: [u8; SCRAMBLE_LEN],
}

/// Why a login did not complete.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    /// Report this to the client, then close.
    #[error("{0}")]
    Refused(SqlError),
    /// The connection broke or timed out; nothing can be reported.
    #[error("connection lost during login: {0}")]
    Lost(String),
}

impl From<PacketError> for LoginError {
    fn from(e: PacketError) -> Self {
        match e {
            PacketError::TooLarge { .. } | PacketError::OutOfOrder { .. } => {
                LoginError::Refused(SqlError::bad_handshake())
            }
            other => LoginError::Lost(other.to_string()),
        }
    }
}

impl From<std::io::Error> for LoginError {
    fn from(e: std::io::Error) -> Self {
        LoginError::Lost(e.to_string())
    }
}

/// Runs the whole login exchange on `io`, within the policy's timeout. On success the packet
/// sequence is positioned for the final OK, which the caller sends once the engine is ready.
pub async fn login(
    io: &mut PacketIo<BoxStream>,
    policy: &LoginPolicy,
    connection_id: u32,
    peer: IpAddr,
) -> Result<LoggedIn, LoginError> {
    match tokio::time::timeout(policy.timeout, login_inner(io, policy, connection_id, peer)).await {
        Ok(r) => r,
        Err(_) => Err(LoginError::Lost(format!(
            "no complete login within {:?}",
            policy.timeout
        ))),
    }
}

async fn login_inner(
    io: &mut PacketIo<BoxStream>,
    policy: &LoginPolicy,
    connection_id: u32,
    peer: IpAddr,
) -> Result<LoggedIn, LoginError> {
    let scramble = new_scramble().map_err(|e| LoginError::Lost(format!("no randomness: {e}")))?;
    let mut caps = policy.capabilities;
    if policy.tls.is_some() {
        caps |= CapabilityFlags::CLIENT_SSL;
    }
    let mut scramble_1 = [0u8; 8];
    scramble_1.copy_from_slice(&scramble[..8]);
    let greeting = HandshakePacket::new(
        10,
        policy.server_version.as_bytes(),
        connection_id,
        scramble_1,
        // Part 2 of the scramble is sent NUL-terminated (auth data length 21).
        Some([&scramble[8..], &[0u8][..]].concat()),
        caps,
        policy.collation,
        StatusFlags::SERVER_STATUS_AUTOCOMMIT,
        Some(NATIVE),
    );
    let mut buf = Vec::with_capacity(128);
    greeting.serialize(&mut buf);
    io.seq = 0;
    io.write_packet(&buf).await?;
    io.flush().await?;

    // Until the client is authenticated only small packets are accepted.
    let full_limit = io.max_packet;
    io.max_packet = LOGIN_PACKET_LIMIT;
    let mut payload = Vec::new();
    io.read_packet(&mut payload, None).await?;
    let mut tls = false;
    if payload.len() == 32 && client_caps(&payload).contains(CapabilityFlags::CLIENT_SSL) {
        let Some(acceptor) = policy.tls.clone() else {
            return Err(LoginError::Refused(SqlError::bad_handshake()));
        };
        let seq = io.seq;
        let plain = std::mem::replace(io, PacketIo::new(Box::new(tokio::io::duplex(1).0)));
        let (read_ahead, stream) = plain.into_parts();
        let stream = acceptor
            .accept(Prefixed::new(read_ahead, stream))
            .await
            .map_err(|e| LoginError::Lost(format!("TLS handshake failed: {e}")))?;
        *io = PacketIo::new(Box::new(stream));
        io.seq = seq;
        io.max_packet = LOGIN_PACKET_LIMIT;
        io.read_packet(&mut payload, None).await?;
        tls = true;
    }
    if policy.require_tls && !tls {
        return Err(LoginError::Refused(SqlError::secure_transport_required()));
    }

    let resp = HandshakeResponse::deserialize((), &mut ParseBuf(&payload))
        .map_err(|_| LoginError::Refused(SqlError::bad_handshake()))?;
    let client = resp.capabilities();
    if !client.contains(CapabilityFlags::CLIENT_PROTOCOL_41) {
        return Err(LoginError::Refused(SqlError::auth_method_unsupported()));
    }
    let negotiated = client & caps;
    let user = String::from_utf8_lossy(resp.user()).into_owned();
    let db = resp.db_name().filter(|d| !d.is_empty()).map(<[u8]>::to_vec);
    let collation = resp.collation();
    let mut token = resp.scramble_buf().to_vec();
    let native = match resp.auth_plugin() {
        None => true,
        Some(AuthPlugin::MysqlNativePassword) => true,
        Some(_) => false,
    };
    if !native {
        if !client.contains(CapabilityFlags::CLIENT_PLUGIN_AUTH) {
            return Err(LoginError::Refused(SqlError::auth_method_unsupported()));
        }
        // Switch to mysql_native_password with the same scramble.
        let mut data = scramble.to_vec();
        data.push(0);
        let switch = AuthSwitchRequest::new(NATIVE, data);
        buf.clear();
        switch.serialize(&mut buf);
        io.write_packet(&buf).await?;
        io.flush().await?;
        io.read_packet(&mut token, None).await?;
    }
    let peer_text = peer.to_string();
    if user != policy.user || !policy.verifier.verify(&scramble, &token) {
        return Err(LoginError::Refused(SqlError::access_denied(
            &user,
            &peer_text,
            !token.is_empty(),
        )));
    }
    io.max_packet = full_limit;
    Ok(LoggedIn {
        user,
        db,
        capabilities: negotiated,
        collation,
        tls,
        scramble,
    })
}

fn client_caps(payload: &[u8]) -> CapabilityFlags {
    let bits = payload
        .get(..4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .unwrap_or(0);
    CapabilityFlags::from_bits_truncate(bits)
}
