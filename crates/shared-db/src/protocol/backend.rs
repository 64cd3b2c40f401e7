//! Connections from the operator to its engine, speaking the client side of the protocol.
//!
//! A backend connection is opened with the capability flags and collation the client
//! negotiated, so the engine's response packets can be relayed to the client without decoding.
//! It authenticates as the operator's engine account (`mysql_native_password`, or
//! `caching_sha2_password` fast auth / clear text over a Unix socket).

use std::path::PathBuf;
use std::time::Duration;

use mysql_common::constants::CapabilityFlags;
use mysql_common::io::ParseBuf;
use mysql_common::packets::{AuthSwitchRequest, HandshakePacket};
use mysql_common::proto::MyDeserialize;
use tokio::net::{TcpStream, UnixStream};

use super::packet::{PacketError, PacketIo};
use super::stream::BoxStream;
use super::wire;

/// Where and as whom the operator reaches its engine.
#[derive(Clone)]
pub struct EngineTarget {
    pub addr: EngineAddr,
    pub user: String,
    pub password: String,
    pub connect_timeout: Duration,
}

impl std::fmt::Debug for EngineTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineTarget")
            .field("addr", &self.addr)
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

#[derive(Debug, Clone)]
pub enum EngineAddr {
    Unix(PathBuf),
    Tcp { host: String, port: u16 },
}

impl std::fmt::Display for EngineAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EngineAddr::Unix(p) => write!(f, "unix:{}", p.display()),
            EngineAddr::Tcp { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("cannot reach the engine at {addr}: {reason}")]
    Unreachable { addr: String, reason: String },
    #[error("the engine did not answer within {0:?}")]
    Timeout(Duration),
    #[error("engine protocol error: {0}")]
    Protocol(String),
    #[error("the engine refused the operator's login: {0}")]
    AuthFailed(String),
    /// The engine answered a command with an ERR packet (payload kept for relaying).
    #[error("engine error {code}: {message}")]
    Server {
        code: u16,
        message: String,
        payload: Vec<u8>,
    },
    #[error(transparent)]
    Packet(#[from] PacketError),
}

impl From<std::io::Error> for BackendError {
    fn from(e: std::io::Error) -> Self {
        BackendError::Packet(PacketError::Io(e))
    }
}

impl BackendError {
    fn from_err_payload(payload: &[u8]) -> Self {
        let code = payload
            .get(1..3)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
            .unwrap_or(0);
        let msg_at = if payload.get(3) == Some(&b'#') { 9 } else { 3 };
        BackendError::Server {
            code,
            message: String::from_utf8_lossy(payload.get(msg_at..).unwrap_or_default()).into(),
            payload: payload.to_vec(),
        }
    }
}

/// What the engine said about itself in its handshake.
#[derive(Debug, Clone)]
pub struct EngineInfo {
    pub version: String,
    pub capabilities: CapabilityFlags,
    pub collation: u8,
}

/// An authenticated connection to the engine.
pub struct Backend {
    pub io: PacketIo<BoxStream>,
    pub thread_id: u32,
    pub capabilities: CapabilityFlags,
    pub info: EngineInfo,
    /// The scramble of the engine's handshake; COM_CHANGE_USER authenticates against it.
    nonce: Vec<u8>,
    /// [`pool_key`] of the client capabilities this connection was opened for.
    pub key: u32,
    /// Collation the connection was opened with (kept across resets).
    pub collation: u8,
}

/// Connections opened for clients whose capabilities have the same key are interchangeable.
pub fn pool_key(client_caps: CapabilityFlags) -> u32 {
    (client_caps & (relayable_capabilities() - CapabilityFlags::CLIENT_CONNECT_WITH_DB)).bits()
}

/// Capabilities the operator may ask of the engine on a client's behalf. Compression and TLS
/// are terminated at the operator; EOF deprecation is never negotiated so result-set framing
/// stays one shape.
pub fn relayable_capabilities() -> CapabilityFlags {
    use CapabilityFlags as C;
    C::CLIENT_LONG_PASSWORD
        | C::CLIENT_FOUND_ROWS
        | C::CLIENT_LONG_FLAG
        | C::CLIENT_CONNECT_WITH_DB
        | C::CLIENT_NO_SCHEMA
        | C::CLIENT_ODBC
        | C::CLIENT_LOCAL_FILES
        | C::CLIENT_IGNORE_SPACE
        | C::CLIENT_PROTOCOL_41
        | C::CLIENT_INTERACTIVE
        | C::CLIENT_IGNORE_SIGPIPE
        | C::CLIENT_TRANSACTIONS
        | C::CLIENT_RESERVED
        | C::CLIENT_SECURE_CONNECTION
        | C::CLIENT_MULTI_STATEMENTS
        | C::CLIENT_MULTI_RESULTS
        | C::CLIENT_PS_MULTI_RESULTS
        | C::CLIENT_PLUGIN_AUTH
        | C::CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA
        | C::CLIENT_SESSION_TRACK
}

async fn open_stream(target: &EngineTarget) -> Result<BoxStream, BackendError> {
    let unreachable = |e: std::io::Error| BackendError::Unreachable {
        addr: target.addr.to_string(),
        reason: e.to_string(),
    };
    let fut = async {
        Ok::<BoxStream, BackendError>(match &target.addr {
            EngineAddr::Unix(path) => {
                Box::new(UnixStream::connect(path).await.map_err(unreachable)?)
            }
            EngineAddr::Tcp { host, port } => {
                let s = TcpStream::connect((host.as_str(), *port))
                    .await
                    .map_err(unreachable)?;
                let _ = s.set_nodelay(true);
                Box::new(s)
            }
        })
    };
    tokio::time::timeout(target.connect_timeout, fut)
        .await
        .map_err(|_| BackendError::Timeout(target.connect_timeout))?
}

impl Backend {
    /// Opens and authenticates a connection with the given client capabilities and collation.
    pub async fn connect(
        target: &EngineTarget,
        client_caps: CapabilityFlags,
        collation: u8,
        db: Option<&[u8]>,
    ) -> Result<Backend, BackendError> {
        let stream = open_stream(target).await?;
        let mut io = PacketIo::new(stream);
        let limit = target.connect_timeout;
        tokio::time::timeout(
            limit,
            Self::login(&mut io, target, client_caps, collation, db),
        )
        .await
        .map_err(|_| BackendError::Timeout(limit))?
        .map(|(thread_id, capabilities, info, nonce)| Backend {
            io,
            thread_id,
            capabilities,
            info,
            nonce,
            key: pool_key(client_caps),
            collation,
        })
    }

    async fn login(
        io: &mut PacketIo<BoxStream>,
        target: &EngineTarget,
        client_caps: CapabilityFlags,
        collation: u8,
        db: Option<&[u8]>,
    ) -> Result<(u32, CapabilityFlags, EngineInfo, Vec<u8>), BackendError> {
        let mut payload = Vec::new();
        io.read_packet(&mut payload, None).await?;
        if payload.first() == Some(&wire::ERR) {
            return Err(BackendError::from_err_payload(&payload));
        }
        let hs = HandshakePacket::deserialize((), &mut ParseBuf(&payload))
            .map_err(|e| BackendError::Protocol(format!("bad handshake from engine: {e}")))?;
        let server_caps = hs.capabilities();
        let mut caps = (client_caps & relayable_capabilities() & server_caps)
            | CapabilityFlags::CLIENT_PROTOCOL_41
            | CapabilityFlags::CLIENT_SECURE_CONNECTION
            | CapabilityFlags::CLIENT_PLUGIN_AUTH;
        caps.remove(CapabilityFlags::CLIENT_CONNECT_WITH_DB);
        if db.is_some() {
            caps.insert(CapabilityFlags::CLIENT_CONNECT_WITH_DB);
        }
        let info = EngineInfo {
            version: hs.server_version_str().into_owned(),
            capabilities: server_caps,
            collation: hs.default_collation(),
        };
        let nonce = hs.nonce();
        let plugin = hs
            .auth_plugin_name_str()
            .map(|s| s.into_owned())
            .unwrap_or_else(|| "mysql_native_password".into());
        let token = auth_token(&plugin, &nonce, &target.password)?;
        let resp = handshake_response(caps, collation, &target.user, &token, db, &plugin);
        io.write_packet(&resp).await?;
        io.flush().await?;
        authenticate(io, target, &plugin).await?;
        Ok((hs.connection_id(), caps, info, nonce))
    }

    /// Resets the session and sets the default database and collation in one round trip
    /// (COM_CHANGE_USER as the operator's own account). Used before a pooled connection is
    /// handed to a new client session.
    pub async fn change_user(
        &mut self,
        target: &EngineTarget,
        db: Option<&[u8]>,
        collation: u8,
    ) -> Result<(), BackendError> {
        // The token is computed from the connection's original scramble; if the engine wants
        // another method it answers with an auth switch, which `authenticate` follows.
        let token = auth_token("mysql_native_password", &self.nonce, &target.password)?;
        let mut p = vec![0x11];
        p.extend_from_slice(target.user.as_bytes());
        p.push(0);
        p.push(token.len() as u8);
        p.extend_from_slice(&token);
        p.extend_from_slice(db.unwrap_or_default());
        p.push(0);
        p.extend_from_slice(&u16::from(collation).to_le_bytes());
        p.extend_from_slice(b"mysql_native_password\0");
        self.io.seq = 0;
        self.io.write_packet(&p).await?;
        self.io.flush().await?;
        authenticate(&mut self.io, target, "mysql_native_password").await
    }

    /// Sends a simple command and reads its single OK/ERR/EOF answer.
    pub async fn simple_command(&mut self, cmd: u8, arg: &[u8]) -> Result<Vec<u8>, BackendError> {
        let mut p = Vec::with_capacity(1 + arg.len());
        p.push(cmd);
        p.extend_from_slice(arg);
        self.io.seq = 0;
        self.io.write_packet(&p).await?;
        self.io.flush().await?;
        let mut resp = Vec::new();
        self.io.read_packet(&mut resp, None).await?;
        if resp.first() == Some(&wire::ERR) {
            return Err(BackendError::from_err_payload(&resp));
        }
        Ok(resp)
    }

    /// Runs a text query and returns the first column of its first row (as text), reading and
    /// discarding the rest of the response. Used for admin statements and `CONNECTION_ID()`.
    pub async fn query_first(&mut self, sql: &str) -> Result<Option<Vec<u8>>, BackendError> {
        use mysql_common::constants::StatusFlags;
        self.io.seq = 0;
        self.io.write_packet(&super::wire::com_query(sql)).await?;
        self.io.flush().await?;
        let mut resp = Vec::new();
        let mut first = None;
        loop {
            self.io.read_packet(&mut resp, None).await?;
            let status = match resp.first() {
                Some(&wire::ERR) => return Err(BackendError::from_err_payload(&resp)),
                Some(&wire::OK) => wire::ok_status(&resp),
                _ => {
                    // Result set: column definitions up to EOF, then rows up to EOF.
                    let mut eofs = 0;
                    while eofs < 2 {
                        self.io.read_packet(&mut resp, None).await?;
                        if resp.first() == Some(&wire::ERR) {
                            return Err(BackendError::from_err_payload(&resp));
                        }
                        if wire::is_eof(&resp) {
                            eofs += 1;
                        } else if eofs == 1 && first.is_none() {
                            first = Some(first_text_value(&resp));
                        }
                    }
                    wire::eof_status(&resp)
                }
            };
            if !status.is_some_and(|s| s.contains(StatusFlags::SERVER_MORE_RESULTS_EXISTS)) {
                return Ok(first.flatten());
            }
        }
    }

    /// Runs statements whose results are not needed.
    pub async fn query_drop(&mut self, sql: &str) -> Result<(), BackendError> {
        self.query_first(sql).await.map(|_| ())
    }

    /// Re-reads the engine's id for this connection (it changes on COM_CHANGE_USER).
    pub async fn refresh_thread_id(&mut self) -> Result<(), BackendError> {
        let id = self.query_first("SELECT CONNECTION_ID()").await?;
        if let Some(id) = id
            .as_deref()
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|v| v.parse().ok())
        {
            self.thread_id = id;
        }
        Ok(())
    }
}

/// The first value of a text-protocol row (`None` for SQL NULL).
fn first_text_value(row: &[u8]) -> Option<Vec<u8>> {
    if row.first() == Some(&0xFB) {
        return None;
    }
    let (len, used) = wire::get_lenenc_int(row, 0)?;
    let len = usize::try_from(len).ok()?;
    row.get(used..used + len).map(<[u8]>::to_vec)
}

fn auth_token(plugin: &str, nonce: &[u8], password: &str) -> Result<Vec<u8>, BackendError> {
    if password.is_empty() {
        return Ok(Vec::new());
    }
    match plugin {
        "mysql_native_password" => Ok(mysql_common::scramble::scramble_native(nonce, password.as_bytes())
            .map(|t| t.to_vec())
            .unwrap_or_default()),
        "caching_sha2_password" => Ok(mysql_common::scramble::scramble_sha256(nonce, password.as_bytes())
            .map(|t| t.to_vec())
            .unwrap_or_default()),
        "mysql_clear_password" => {
            let mut v = password.as_bytes().to_vec();
            v.push(0);
            Ok(v)
        }
        other => Err(BackendError::AuthFailed(format!(
            "the engine account uses the `{other}` plugin; use mysql_native_password or caching_sha2_password"
        ))),
    }
}

fn handshake_response(
    caps: CapabilityFlags,
    collation: u8,
    user: &str,
    token: &[u8],
    db: Option<&[u8]>,
    plugin: &str,
) -> Vec<u8> {
    let mut p = Vec::with_capacity(64 + user.len() + token.len());
    p.extend_from_slice(&caps.bits().to_le_bytes());
    p.extend_from_slice(&(1u32 << 30).to_le_bytes());
    p.push(collation);
    p.extend_from_slice(&[0u8; 23]);
    p.extend_from_slice(user.as_bytes());
    p.push(0);
    if caps.contains(CapabilityFlags::CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA) {
        wire::put_lenenc_int(&mut p, token.len() as u64);
    } else {
        p.push(token.len() as u8);
    }
    p.extend_from_slice(token);
    if let Some(db) = db {
        p.extend_from_slice(db);
        p.push(0);
    }
    p.extend_from_slice(plugin.as_bytes());
    p.push(0);
    p
}

/// Follows the engine's answers to a login or change-user until OK or ERR.
async fn authenticate(
    io: &mut PacketIo<BoxStream>,
    target: &EngineTarget,
    first_plugin: &str,
) -> Result<(), BackendError> {
    let mut plugin = first_plugin.to_string();
    let mut resp = Vec::new();
    for _ in 0..4 {
        io.read_packet(&mut resp, None).await?;
        match resp.first() {
            Some(&wire::OK) => return Ok(()),
            Some(&wire::ERR) => {
                return Err(match BackendError::from_err_payload(&resp) {
                    BackendError::Server { code, message, .. } => {
                        BackendError::AuthFailed(format!("{code}: {message}"))
                    }
                    other => other,
                })
            }
            Some(&wire::EOF) => {
                let sw = AuthSwitchRequest::deserialize((), &mut ParseBuf(&resp))
                    .map_err(|e| BackendError::Protocol(format!("bad auth switch: {e}")))?;
                plugin = String::from_utf8_lossy(sw.auth_plugin().as_bytes()).into_owned();
                let mut nonce = sw.plugin_data().to_vec();
                if nonce.last() == Some(&0) {
                    nonce.pop();
                }
                let token = auth_token(&plugin, &nonce, &target.password)?;
                io.write_packet(&token).await?;
                io.flush().await?;
            }
            Some(0x01) if plugin == "caching_sha2_password" => match resp.get(1) {
                Some(3) => continue, // fast auth succeeded; OK follows
                Some(4) if matches!(target.addr, EngineAddr::Unix(_)) => {
                    let mut pw = target.password.as_bytes().to_vec();
                    pw.push(0);
                    io.write_packet(&pw).await?;
                    io.flush().await?;
                }
                _ => {
                    return Err(BackendError::AuthFailed(
                        "caching_sha2_password full authentication over TCP needs TLS; \
                         use a Unix socket or a mysql_native_password account"
                            .into(),
                    ))
                }
            },
            _ => {
                return Err(BackendError::Protocol(
                    "unexpected packet during login".into(),
                ))
            }
        }
    }
    Err(BackendError::Protocol(
        "too many authentication round trips".into(),
    ))
}
