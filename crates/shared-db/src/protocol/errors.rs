//! The MySQL errors the operator itself reports, as ERR packets with code and SQLSTATE.
//!
//! Engine errors are relayed untouched; these are the ones raised before or instead of the
//! engine (authentication, whitelist, limits, protocol violations, engine unavailable).

use mysql_common::packets::{ErrPacket, ServerError, SqlState};
use mysql_common::proto::MySerialize;

/// An error to send to a client as an ERR packet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("ERROR {code} ({state}): {message}")]
pub struct SqlError {
    pub code: u16,
    pub state: &'static str,
    pub message: String,
}

impl SqlError {
    pub fn new(code: u16, state: &'static str, message: impl Into<String>) -> Self {
        SqlError {
            code,
            state,
            message: message.into(),
        }
    }

    /// ERR packet payload (protocol 4.1 with SQLSTATE marker).
    pub fn to_payload(&self) -> Vec<u8> {
        let mut state = [b'H', b'Y', b'0', b'0', b'0'];
        if self.state.len() == 5 {
            state.copy_from_slice(self.state.as_bytes());
        }
        let err = ErrPacket::Error(ServerError::new(
            self.code,
            Some(SqlState::new(state)),
            self.message.as_bytes(),
        ));
        let mut buf = Vec::with_capacity(9 + self.message.len());
        err.serialize(&mut buf);
        buf
    }

    /// 1045: wrong user or password.
    pub fn access_denied(user: &str, host: &str, using_password: bool) -> Self {
        let yes = if using_password { "YES" } else { "NO" };
        Self::new(
            1045,
            "28000",
            format!("Access denied for user '{user}'@'{host}' (using password: {yes})"),
        )
    }
    /// 1130: source address not in WHITELIST.
    pub fn host_not_allowed(host: &str) -> Self {
        Self::new(
            1130,
            "HY000",
            format!("Host '{host}' is not allowed to connect to this server"),
        )
    }
    /// 1040: connection limit reached.
    pub fn too_many_connections() -> Self {
        Self::new(1040, "08004", "Too many connections")
    }
    /// 1047: command the server does not implement.
    pub fn unknown_command(cmd: u8) -> Self {
        Self::new(1047, "08S01", format!("Unknown command 0x{cmd:02x}"))
    }
    /// 1153: packet larger than the configured limit.
    pub fn packet_too_large(limit: usize) -> Self {
        Self::new(
            1153,
            "08S01",
            format!("Got a packet bigger than 'max_allowed_packet' bytes ({limit})"),
        )
    }
    /// 1043: malformed handshake or command.
    pub fn bad_handshake() -> Self {
        Self::new(1043, "08S01", "Bad handshake")
    }
    pub fn malformed(what: &str) -> Self {
        Self::new(
            1835,
            "HY000",
            format!("Malformed communication packet: {what}"),
        )
    }
    /// 2003: the engine behind this node cannot be reached.
    pub fn engine_unavailable(reason: &str) -> Self {
        Self::new(
            2003,
            "HY000",
            format!("Can't connect to the database engine behind this node: {reason}"),
        )
    }
    /// 2013: the engine connection was lost while a command ran.
    pub fn engine_lost() -> Self {
        Self::new(
            2013,
            "HY000",
            "Lost connection to the database engine during query; the command may not have completed",
        )
    }
    /// 1094: KILL of a connection id this server does not know.
    pub fn unknown_thread(id: u64) -> Self {
        Self::new(1094, "HY000", format!("Unknown thread id: {id}"))
    }
    /// 3159: TLS required but the client did not negotiate it.
    pub fn secure_transport_required() -> Self {
        Self::new(
            3159,
            "HY000",
            "Connections using insecure transport are prohibited while --require-secure-transport=ON.",
        )
    }
    /// 1251: the client cannot do any authentication method the server offers.
    pub fn auth_method_unsupported() -> Self {
        Self::new(
            1251,
            "08004",
            "Client does not support authentication protocol requested by server; consider upgrading MariaDB client",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn err_payload_layout() {
        let p = SqlError::access_denied("bob", "10.0.0.1", true).to_payload();
        assert_eq!(p[0], 0xFF);
        assert_eq!(u16::from_le_bytes([p[1], p[2]]), 1045);
        assert_eq!(&p[3..9], b"#28000");
        assert_eq!(
            &p[9..],
            b"Access denied for user 'bob'@'10.0.0.1' (using password: YES)"
        );
    }
}
