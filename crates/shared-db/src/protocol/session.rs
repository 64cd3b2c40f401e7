//! One client connection from accept to close: admission, login, then the command loop that
//! forwards each command to the session's engine connection and relays the answer.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use mysql_common::constants::{CapabilityFlags, StatusFlags};
use tokio::net::TcpStream;

use super::errors::SqlError;
use super::frontend::Frontend;
use super::handshake::{login, LoggedIn, LoginError};
use super::packet::{PacketError, PacketIo};
use super::pool::{AcquireError, Lease};
use super::relay::{Expect, Relay, RelayError};
use super::stream::BoxStream;
use super::wire;
use crate::protocol::backend::BackendError;
use crate::replication::context::quote_ident;
use crate::replication::cursor::{self, LeaderCursor};
use crate::replication::prepared::PreparedText;
use crate::replication::router::{first_words, ClientState, Route};
use crate::replication::{ExecOp, ExecRequest, Replication, Role};
use crate::sql::classify::{Classification, StatementKind};

/// Command bytes (the first byte of a command packet).
mod cmd {
    pub const QUIT: u8 = 0x01;
    pub const INIT_DB: u8 = 0x02;
    pub const QUERY: u8 = 0x03;
    pub const FIELD_LIST: u8 = 0x04;
    pub const STATISTICS: u8 = 0x09;
    pub const PROCESS_KILL: u8 = 0x0C;
    pub const PING: u8 = 0x0E;
    pub const CHANGE_USER: u8 = 0x11;
    pub const STMT_PREPARE: u8 = 0x16;
    pub const STMT_EXECUTE: u8 = 0x17;
    pub const STMT_SEND_LONG_DATA: u8 = 0x18;
    pub const STMT_CLOSE: u8 = 0x19;
    pub const STMT_RESET: u8 = 0x1A;
    pub const SET_OPTION: u8 = 0x1B;
    pub const STMT_FETCH: u8 = 0x1C;
    pub const RESET_CONNECTION: u8 = 0x1F;
}

/// Serves one accepted TCP connection to the end. Never panics on client input.
pub async fn handle_connection(frontend: Arc<Frontend>, tcp: TcpStream, peer: SocketAddr) {
    let _ = tcp.set_nodelay(true);
    frontend.counters.accepted.fetch_add(1, Ordering::Relaxed);
    let mut io = PacketIo::new(Box::new(tcp) as BoxStream);
    let ip = peer.ip().to_canonical();

    if !frontend.whitelist.allows(ip) {
        frontend
            .counters
            .rejected_whitelist
            .fetch_add(1, Ordering::Relaxed);
        tracing::info!(%ip, "connection refused: not in WHITELIST");
        send_error(&mut io, &SqlError::host_not_allowed(&ip.to_string())).await;
        return;
    }
    let open = frontend.connections.fetch_add(1, Ordering::AcqRel) + 1;
    let _guard = ConnGuard(&frontend);
    if open as usize > frontend.limits.max_connections {
        frontend
            .counters
            .rejected_limit
            .fetch_add(1, Ordering::Relaxed);
        send_error(&mut io, &SqlError::too_many_connections()).await;
        return;
    }

    let id = frontend.registry.next_id();
    let logged_in = match login(&mut io, &frontend.policy, id, ip).await {
        Ok(l) => l,
        Err(LoginError::Refused(err)) => {
            if err.code == 1045 {
                frontend
                    .counters
                    .auth_failures
                    .fetch_add(1, Ordering::Relaxed);
                tracing::info!(%ip, "login refused: wrong user or password");
            }
            send_error(&mut io, &err).await;
            return;
        }
        Err(LoginError::Lost(reason)) => {
            tracing::debug!(%ip, %reason, "client left during login");
            return;
        }
    };

    if let Some(gate) = frontend.login_gate.get() {
        if let Err(err) = gate() {
            tracing::info!(%ip, code = err.code, "login refused by the cluster gate");
            send_error(&mut io, &err).await;
            return;
        }
    }

    let lease = match frontend
        .pool
        .acquire(
            logged_in.capabilities,
            logged_in.collation,
            logged_in.db.as_deref(),
        )
        .await
    {
        Ok(lease) => lease,
        Err(e) => {
            send_error(&mut io, &acquire_error(e)).await;
            return;
        }
    };
    io.max_packet = frontend.limits.max_packet;
    let ok = wire::ok_packet(0, 0, StatusFlags::SERVER_STATUS_AUTOCOMMIT, 0);
    if io.write_packet(&ok).await.is_err() || io.flush().await.is_err() {
        frontend.pool.release(lease);
        return;
    }
    frontend.registry.insert(id, lease.backend.thread_id);
    let repl = frontend.replication.get().map(|r| {
        let mut st = ClientState::new(r.origin(id), format!("{}@{ip}", logged_in.user));
        if let Some(db) = logged_in.db.as_deref().filter(|d| !d.is_empty()) {
            st.remember(&format!(
                "USE {}",
                quote_ident(&String::from_utf8_lossy(db))
            ));
        }
        st
    });
    let mut session = Session {
        frontend: Arc::clone(&frontend),
        id,
        ip,
        client: io,
        lease: Some(lease),
        login: logged_in,
        repl,
        last_failed: false,
        last_prepared: None,
        prepared_text: HashMap::new(),
        multi_statements: None,
        cursors: HashMap::new(),
    };
    session.run().await;
    session.end_replicated().await;
    frontend.registry.remove(id);
    if let Some(lease) = session.lease.take() {
        frontend.pool.release(lease);
    }
}

struct ConnGuard<'a>(&'a Frontend);
impl Drop for ConnGuard<'_> {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Writes an ERR packet at the current sequence id, best effort, bounded.
async fn send_error(io: &mut PacketIo<BoxStream>, err: &SqlError) {
    let write = async {
        io.write_packet(&err.to_payload()).await?;
        io.flush().await
    };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), write).await;
}

fn acquire_error(e: AcquireError) -> SqlError {
    match e {
        AcquireError::Exhausted(_) => SqlError::too_many_connections(),
        AcquireError::Backend(BackendError::Server { code, message, .. }) => {
            SqlError::new(code, if code == 1049 { "42000" } else { "HY000" }, message)
        }
        AcquireError::Backend(BackendError::AuthFailed(m)) if m.starts_with("1049") => {
            SqlError::new(1049, "42000", m.trim_start_matches("1049: ").to_string())
        }
        AcquireError::Backend(other) => SqlError::engine_unavailable(&other.to_string()),
    }
}

/// What to do after a command.
enum Next {
    Continue,
    Close,
}

struct Session {
    frontend: Arc<Frontend>,
    id: u32,
    ip: IpAddr,
    client: PacketIo<BoxStream>,
    lease: Option<Lease>,
    login: LoggedIn,
    /// Routing state when the node is part of a replicated cluster.
    repl: Option<ClientState>,
    /// The last forwarded command ended with an ERR packet.
    last_failed: bool,
    /// The statement id of the last COM_STMT_PREPARE the engine answered.
    last_prepared: Option<(u32, u16)>,
    /// Prepared writes, reads and transaction control (cluster mode), by statement id: run as
    /// text where the leader must run them.
    prepared_text: HashMap<u32, PreparedText>,
    /// Multi-statement packets turned on or off by `COM_SET_OPTION` (otherwise as the client
    /// asked at login).
    multi_statements: Option<bool>,
    /// Open cursors of prepared reads that ran on the leader, by statement id.
    cursors: HashMap<u32, LeaderCursor>,
}

impl Session {
    async fn run(&mut self) {
        let mut payload = Vec::with_capacity(1024);
        let mut raw = Vec::with_capacity(1024);
        loop {
            self.client.seq = 0;
            raw.clear();
            let read = tokio::time::timeout(
                self.frontend.limits.idle_timeout,
                self.client.read_packet(&mut payload, Some(&mut raw)),
            )
            .await;
            match read {
                Err(_) => {
                    tracing::debug!(id = self.id, "closing idle connection");
                    return;
                }
                Ok(Err(PacketError::TooLarge { limit, .. })) => {
                    self.reply_error(&SqlError::packet_too_large(limit)).await;
                    return;
                }
                Ok(Err(PacketError::OutOfOrder { .. })) => {
                    self.reply_error(&SqlError::malformed("packet out of order"))
                        .await;
                    return;
                }
                Ok(Err(_)) => return,
                Ok(Ok(())) => {}
            }
            self.frontend
                .counters
                .commands
                .fetch_add(1, Ordering::Relaxed);
            let Some(&command) = payload.first() else {
                self.reply_error(&SqlError::malformed("empty command"))
                    .await;
                return;
            };
            if let Some(sql) = (command == cmd::QUERY)
                .then(|| without_socket(&payload[1..]))
                .flatten()
            {
                // Drivers that prefer a local socket (mysql_async) ask for `@@socket` and would
                // reconnect to the engine's own socket, bypassing this operator: answer NULL.
                payload.truncate(1);
                payload.extend_from_slice(sql.as_bytes());
                let len = (payload.len() as u32).to_le_bytes();
                let seq = raw.get(3).copied().unwrap_or(0);
                raw.clear();
                raw.extend_from_slice(&len[..3]);
                raw.push(seq);
                raw.extend_from_slice(&payload);
            }
            let next = self.dispatch(command, &payload, &raw).await;
            if matches!(next, Next::Close) {
                return;
            }
        }
    }

    async fn dispatch(&mut self, command: u8, payload: &[u8], raw: &[u8]) -> Next {
        if command != cmd::QUIT {
            if let Some(err) = self
                .frontend
                .replication
                .get()
                .and_then(|r| r.diverged_error())
            {
                self.reply_error(&err).await;
                return Next::Continue;
            }
        }
        if !matches!(command, cmd::QUIT | cmd::PING) {
            if let Some(Err(err)) = self.frontend.serve_gate.get().map(|gate| gate()) {
                self.reply_error(&err).await;
                return Next::Continue;
            }
        }
        match command {
            cmd::QUIT => Next::Close,
            cmd::QUERY => {
                if let Some(kill) = parse_kill(&payload[1..]) {
                    return self.kill(kill.id, kill.query_only).await;
                }
                let class = self.classify(&payload[1..]);
                if self.repl.is_some() {
                    return self.replicated_query(&payload[1..], raw, &class).await;
                }
                self.forward(raw, Some(Expect::Results)).await
            }
            cmd::INIT_DB if self.repl.is_some() => {
                let next = self.forward(raw, Some(Expect::Single)).await;
                if !self.last_failed {
                    let db = String::from_utf8_lossy(&payload[1..]).into_owned();
                    if let Some(st) = self.repl.as_mut() {
                        st.remember(&format!("USE {}", quote_ident(&db)));
                    }
                }
                next
            }
            cmd::STMT_PREPARE if self.repl.is_some() => {
                let class = self.classify(&payload[1..]);
                let in_txn = self
                    .repl
                    .as_ref()
                    .is_some_and(|s| s.in_txn || s.begin_pending);
                let text = std::str::from_utf8(&payload[1..]).ok();
                // Writes that answer an OK packet (or, with `RETURNING`, rows) run as text:
                // DML, and DDL (some drivers prepare every statement).
                let dml = text.is_some_and(|t| {
                    let w = first_words(t, 3);
                    matches!(
                        w.first().map(String::as_str),
                        Some("INSERT" | "UPDATE" | "DELETE" | "REPLACE")
                    ) || crate::replication::router::is_ddl(&w, &class)
                });
                // Transaction control (sysbench and some drivers prepare BEGIN/COMMIT) answers
                // an OK packet in either protocol, so it takes the same text path.
                let txn_control = matches!(class.kind, StatementKind::Transaction(_));
                let read = class.kind == StatementKind::Read;
                if (class.kind == StatementKind::Write && dml || txn_control || read)
                    && !class.is_multi
                {
                    // Prepared on the local engine for its metadata; executed as text on
                    // the leader (writes), through the session's routing (transaction
                    // control), or where the session's reads go (reads).
                    let next = self.forward(raw, Some(Expect::Prepare)).await;
                    if let (Some((id, params)), Some(sql)) = (self.last_prepared.take(), text) {
                        self.prepared_text.insert(
                            id,
                            PreparedText {
                                sql: sql.to_string(),
                                params,
                                read,
                                ..Default::default()
                            },
                        );
                    }
                    return next;
                }
                if class.kind != StatementKind::Read || in_txn {
                    self.reply_error(&SqlError::new(
                        1235,
                        "42000",
                        "shared-db cannot replicate this statement: prepared statements other \
                         than INSERT/UPDATE/DELETE/REPLACE, DDL, reads and transaction control \
                         are not replicated yet; use the text protocol",
                    ))
                    .await;
                    return Next::Continue;
                }
                self.forward(raw, Some(Expect::Prepare)).await
            }
            cmd::STMT_EXECUTE => {
                let id = payload
                    .get(1..5)
                    .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
                if let Some(id) = id {
                    // A new execute closes the statement's open cursor.
                    self.cursors.remove(&id);
                }
                if let Some((id, stmt)) =
                    id.and_then(|id| self.prepared_text.get_mut(&id).map(|s| (id, s)))
                {
                    if stmt.read {
                        let text = crate::replication::prepared::translate(&payload[1..], stmt);
                        let sql = stmt.sql.clone();
                        let cursor = payload
                            .get(5)
                            .is_some_and(|flags| *flags != 0)
                            .then_some(id);
                        return self.prepared_read(raw, &sql, text, cursor).await;
                    }
                    return match crate::replication::prepared::translate(&payload[1..], stmt) {
                        Ok(text) => {
                            let class = crate::sql::classify::classify(&text);
                            self.replicated_text(&text, &class).await
                        }
                        Err(why) => {
                            self.reply_error(&SqlError::new(
                                1235,
                                "42000",
                                format!(
                                    "shared-db cannot replicate this prepared statement: {why}"
                                ),
                            ))
                            .await;
                            Next::Continue
                        }
                    };
                }
                self.forward(raw, Some(Expect::Results)).await
            }
            cmd::STMT_SEND_LONG_DATA | cmd::STMT_CLOSE if self.repl.is_some() => {
                let id = payload
                    .get(1..5)
                    .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
                if let Some(id) = id {
                    if command == cmd::STMT_CLOSE {
                        self.cursors.remove(&id);
                        self.prepared_text.remove(&id);
                    } else if let Some(p) = self.prepared_text.get_mut(&id) {
                        p.add_long_data(&payload[1..]);
                    }
                }
                self.forward(raw, None).await
            }
            cmd::RESET_CONNECTION if self.repl.is_some() => {
                let next = self.forward(raw, Some(Expect::Single)).await;
                self.end_replicated().await;
                self.prepared_text.clear();
                self.cursors.clear();
                if let Some(st) = self.repl.as_mut() {
                    *st = ClientState::new(st.origin, st.user.clone());
                }
                next
            }
            cmd::SET_OPTION => {
                let next = self.forward(raw, Some(Expect::Single)).await;
                if !self.last_failed {
                    // MYSQL_OPTION_MULTI_STATEMENTS_ON = 0, _OFF = 1.
                    match payload.get(1..3) {
                        Some([0, 0]) => self.multi_statements = Some(true),
                        Some([1, 0]) => self.multi_statements = Some(false),
                        _ => {}
                    }
                }
                next
            }
            cmd::STMT_RESET => {
                // Closes the statement's cursor and drops its long data, as on the engine.
                if let Some(b) = payload.get(1..5) {
                    let id = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                    self.cursors.remove(&id);
                    if let Some(p) = self.prepared_text.get_mut(&id) {
                        p.long_data.clear();
                        p.long_data_overflow = false;
                    }
                }
                self.forward(raw, Some(Expect::Single)).await
            }
            cmd::INIT_DB | cmd::PING | cmd::STATISTICS | cmd::RESET_CONNECTION => {
                self.forward(raw, Some(Expect::Single)).await
            }
            cmd::FIELD_LIST => self.forward(raw, Some(Expect::FieldList)).await,
            cmd::STMT_PREPARE => {
                self.classify(&payload[1..]);
                self.forward(raw, Some(Expect::Prepare)).await
            }
            cmd::STMT_FETCH => {
                let id = payload
                    .get(1..5)
                    .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
                let n = payload
                    .get(5..9)
                    .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
                let status = self
                    .repl
                    .as_ref()
                    .map_or(StatusFlags::SERVER_STATUS_AUTOCOMMIT, |st| st.status());
                match (id, n) {
                    (Some(id), Some(n)) => match self.cursors.get_mut(&id) {
                        // A cursor opened on the leader: its rows are here.
                        Some(c) => {
                            let (packets, more) = c.fetch(n, status);
                            if !more {
                                self.cursors.remove(&id);
                            }
                            self.write_packets(&packets).await
                        }
                        None => self.forward(raw, Some(Expect::Fetch)).await,
                    },
                    _ => self.forward(raw, Some(Expect::Fetch)).await,
                }
            }
            cmd::STMT_SEND_LONG_DATA | cmd::STMT_CLOSE => self.forward(raw, None).await,
            cmd::PROCESS_KILL => match payload.get(1..5) {
                Some(b) => {
                    let id = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                    self.kill(u64::from(id), false).await
                }
                None => {
                    self.reply_error(&SqlError::malformed("COM_PROCESS_KILL without an id"))
                        .await;
                    Next::Continue
                }
            },
            cmd::CHANGE_USER => self.change_user(payload).await,
            other => {
                self.reply_error(&SqlError::unknown_command(other)).await;
                Next::Continue
            }
        }
    }

    /// Labels a statement (read / write / session / transaction control). On a single node
    /// every statement runs on the local engine; the labels are counted for `/status` and are
    /// what the replicated router acts on.
    fn classify(&self, sql: &[u8]) -> Classification {
        let text = String::from_utf8_lossy(sql);
        let class = crate::sql::classify::classify(&text);
        self.frontend.counters.count_statement(class.kind);
        class
    }

    /// Ends the session's shadow session on the leader, if it has one.
    async fn end_replicated(&mut self) {
        let (Some(r), Some(st)) = (self.frontend.replication.get().cloned(), self.repl.as_ref())
        else {
            return;
        };
        if st.uses_leader {
            r.abort(st.origin).await;
        }
    }

    /// A text statement in a replicated cluster: local, on the leader, answered or refused.
    async fn replicated_query(&mut self, sql: &[u8], raw: &[u8], class: &Classification) -> Next {
        let Some(r) = self.frontend.replication.get().cloned() else {
            return self.forward(raw, Some(Expect::Results)).await;
        };
        let Ok(text) = std::str::from_utf8(sql) else {
            let in_txn = self
                .repl
                .as_ref()
                .is_some_and(|s| s.in_txn || s.begin_pending);
            if class.kind == StatementKind::Read && !in_txn {
                return self.forward(raw, Some(Expect::Results)).await;
            }
            self.reply_error(&SqlError::new(
                1235,
                "42000",
                "shared-db cannot replicate this statement: its text is not valid UTF-8 \
                 (send binary values as hex literals or prepared parameters)",
            ))
            .await;
            return Next::Continue;
        };
        let Some(st) = self.repl.as_mut() else {
            return Next::Close;
        };
        if class.is_multi && class.kind != StatementKind::Read {
            let on = self.multi_statements.unwrap_or_else(|| {
                self.login
                    .capabilities
                    .contains(CapabilityFlags::CLIENT_MULTI_STATEMENTS)
            });
            if !on {
                // Not allowed for this session: the engine answers its syntax error.
                return self.forward(raw, Some(Expect::Results)).await;
            }
            return self.replicated_multi(&r, text).await;
        }
        let route = st.route(text, class);
        tracing::debug!(id = self.id, ?route, "routed");
        match route {
            Route::Local => self.local_read(&r, raw).await,
            Route::LocalSession => {
                st.last_on_leader = false;
                let next = self.forward(raw, Some(Expect::Results)).await;
                if !self.last_failed {
                    if let Some(st) = self.repl.as_mut() {
                        st.remember(text);
                    }
                }
                next
            }
            Route::Ok(flags) => {
                let ok = wire::ok_packet(0, 0, flags, 0);
                self.write_packets(&[ok]).await
            }
            Route::Refuse(e) => {
                self.reply_error(&e).await;
                Next::Continue
            }
            Route::Leader(ops) => self.on_leader(&r, ops, text, false).await,
        }
    }

    /// A read on the local engine, once this node has applied the session's last write
    /// (bounded by the read wait).
    async fn local_read(&mut self, r: &Replication, raw: &[u8]) -> Next {
        let Some(st) = self.repl.as_mut() else {
            return Next::Close;
        };
        if let Some(e) = read_fence(st, r).await {
            self.reply_error(&e).await;
            return Next::Continue;
        }
        self.forward(raw, Some(Expect::Results)).await
    }

    /// A multi-statement packet that writes. Its statements run one after another, each where
    /// it would go alone — as the engine runs them, each its own statement (with autocommit,
    /// its own transaction) and stopping at the first error — and the client gets one result
    /// per statement.
    async fn replicated_multi(&mut self, r: &Replication, text: &str) -> Next {
        let statements: Vec<String> = crate::sql::classify::split_statements(text)
            .into_iter()
            .map(str::to_string)
            .collect();
        if statements.is_empty() {
            self.reply_error(&SqlError::new(1065, "42000", "Query was empty"))
                .await;
            return Next::Continue;
        }
        let n = statements.len();
        for (i, sql) in statements.iter().enumerate() {
            let class = crate::sql::classify::classify(sql);
            let Some(mut packets) = self.statement_packets(r, sql, &class).await else {
                return Next::Close;
            };
            let failed = packets
                .last()
                .is_some_and(|p| p.first() == Some(&wire::ERR));
            if i + 1 < n && !failed {
                if let Some(last) = packets.last_mut() {
                    crate::replication::response::patch_status(last, |f| {
                        f | StatusFlags::SERVER_MORE_RESULTS_EXISTS
                    });
                }
            }
            let next = self.write_packets(&packets).await;
            if failed || !matches!(next, Next::Continue) {
                return next;
            }
        }
        Next::Continue
    }

    /// One statement of a multi-statement packet, routed as if it came alone; its answer is
    /// returned rather than relayed (`None`: the session is gone).
    async fn statement_packets(
        &mut self,
        r: &Replication,
        sql: &str,
        class: &Classification,
    ) -> Option<Vec<Vec<u8>>> {
        let st = self.repl.as_mut()?;
        let local = match st.route(sql, class) {
            Route::Leader(ops) => return self.leader_packets(r, ops, sql, false).await,
            Route::Ok(flags) => return Some(vec![wire::ok_packet(0, 0, flags, 0)]),
            Route::Refuse(e) => return Some(vec![e.to_payload()]),
            Route::Local => {
                if let Some(e) = read_fence(st, r).await {
                    return Some(vec![e.to_payload()]);
                }
                false
            }
            Route::LocalSession => {
                st.last_on_leader = false;
                true
            }
        };
        let lease = self.lease.as_mut()?;
        let got = match crate::replication::response::run_query(&mut lease.backend, sql).await {
            Ok(c) => c,
            Err(e) => {
                return Some(vec![
                    SqlError::engine_unavailable(&e.to_string()).to_payload()
                ])
            }
        };
        if local && got.outcome.error == 0 {
            if let Some(st) = self.repl.as_mut() {
                st.remember(sql);
            }
        }
        Some(got.packets)
    }

    /// A statement translated from a prepared statement: only leader routes apply (it has no
    /// raw packet to relay locally).
    async fn replicated_text(&mut self, text: &str, class: &Classification) -> Next {
        let Some(r) = self.frontend.replication.get().cloned() else {
            return Next::Close;
        };
        let Some(st) = self.repl.as_mut() else {
            return Next::Close;
        };
        match st.route(text, class) {
            // A result set (`INSERT … RETURNING`) goes back in the binary protocol.
            Route::Leader(ops) => self.on_leader(&r, ops, text, true).await,
            // Transaction control answered here (an OK packet is the same in both protocols).
            Route::Ok(flags) => {
                let ok = wire::ok_packet(0, 0, flags, 0);
                self.write_packets(&[ok]).await
            }
            Route::Refuse(e) => {
                self.reply_error(&e).await;
                Next::Continue
            }
            _ => {
                self.reply_error(&SqlError::new(
                    1235,
                    "42000",
                    "shared-db cannot replicate this prepared statement",
                ))
                .await;
                Next::Continue
            }
        }
    }

    /// A prepared read's `COM_STMT_EXECUTE`: where the session's text reads would go. On the
    /// local engine it runs as sent; on the leader (inside a transaction, leader reads) it runs
    /// as `text` on the shadow session and its rows are re-encoded for the binary protocol.
    async fn prepared_read(
        &mut self,
        raw: &[u8],
        sql: &str,
        text: Result<String, String>,
        cursor: Option<u32>,
    ) -> Next {
        let Some(r) = self.frontend.replication.get().cloned() else {
            return Next::Close;
        };
        let Some(st) = self.repl.as_mut() else {
            return Next::Close;
        };
        let refuse = |why: String| {
            SqlError::new(
                1235,
                "42000",
                format!("shared-db cannot run this prepared read on the leader: {why}"),
            )
        };
        // Routed as its text would be (the statement with `?` when the parameters could not
        // be read: only the leader path needs them, the local engine takes the packet as is).
        let routed = text.as_deref().unwrap_or(sql).to_string();
        let class = crate::sql::classify::classify(&routed);
        match st.route(&routed, &class) {
            Route::Leader(ops) => match text {
                Ok(text) => match cursor {
                    Some(id) => self.open_leader_cursor(&r, ops, &text, id).await,
                    None => self.on_leader(&r, ops, &text, true).await,
                },
                Err(why) => {
                    self.reply_error(&refuse(why)).await;
                    Next::Continue
                }
            },
            Route::Refuse(e) => {
                self.reply_error(&e).await;
                Next::Continue
            }
            _ => self.local_read(&r, raw).await,
        }
    }

    /// A cursor-flagged execute of a prepared read that runs on the leader: the metadata goes
    /// to the client now, the rows with each `COM_STMT_FETCH`.
    async fn open_leader_cursor(
        &mut self,
        r: &Replication,
        ops: Vec<ExecOp>,
        text: &str,
        id: u32,
    ) -> Next {
        let Some(packets) = self.leader_packets(r, ops, text, true).await else {
            return Next::Close;
        };
        let held = self.cursors.values().map(LeaderCursor::bytes).sum();
        match cursor::open(packets, held) {
            cursor::Opened::Cursor(head, c) => {
                self.cursors.insert(id, c);
                self.write_packets(&head).await
            }
            cursor::Opened::Plain(packets) => self.write_packets(&packets).await,
            cursor::Opened::TooLarge(bytes) => {
                self.reply_error(&SqlError::new(
                    1235,
                    "42000",
                    format!(
                        "shared-db cannot keep {bytes} bytes of cursor rows for this session \
                         (at most {}); fetch without a cursor or close other cursors",
                        cursor::CURSOR_BYTES
                    ),
                ))
                .await;
                Next::Continue
            }
        }
    }

    /// Runs operations on the leader and relays the last one's answer (its rows re-encoded
    /// for the binary protocol when `binary`).
    async fn on_leader(
        &mut self,
        r: &Replication,
        ops: Vec<ExecOp>,
        text: &str,
        binary: bool,
    ) -> Next {
        match self.leader_packets(r, ops, text, binary).await {
            Some(packets) => self.write_packets(&packets).await,
            None => Next::Close,
        }
    }

    /// Runs operations on the leader and returns the last one's answer for the client (`None`:
    /// the session is gone).
    async fn leader_packets(
        &mut self,
        r: &Replication,
        ops: Vec<ExecOp>,
        text: &str,
        binary: bool,
    ) -> Option<Vec<Vec<u8>>> {
        let mut ops = ops;
        // A `BEGIN` answered here travels with the statement after it: one forward.
        let begin_first = ops.len() > 1 && matches!(ops[0], ExecOp::Begin);
        if begin_first {
            ops.remove(0);
        }
        let n = ops.len();
        for (i, op) in ops.into_iter().enumerate() {
            let st = self.repl.as_mut()?;
            let session_cmd = matches!(
                &op,
                ExecOp::Query {
                    role: Role::Session,
                    ..
                }
            );
            let begin = begin_first && i == 0;
            let opens = begin || matches!(&op, ExecOp::Begin);
            let req = ExecRequest {
                origin: st.origin,
                user: st.user.clone(),
                caps: self.login.capabilities.bits(),
                collation: self.login.collation,
                history: st.history.clone(),
                in_txn: st.in_txn,
                begin,
                op,
            };
            st.uses_leader = true;
            st.last_on_leader = true;
            let resp = match r.exec(req).await {
                Ok(resp) => resp,
                Err(e) => {
                    if st.in_txn {
                        // The transaction on the leader is lost with it.
                        st.in_txn = false;
                        r.abort(st.origin).await;
                    }
                    return Some(vec![e.to_payload()]);
                }
            };
            st.in_txn = resp.in_txn;
            if let Some(ci) = resp.commit_index {
                st.fence = st.fence.max(ci);
            }
            let failed = resp
                .packets
                .last()
                .is_some_and(|p| p.first() == Some(&wire::ERR));
            // The transaction is open on the leader (or the statement that opened it ended
            // it, as a deadlock does); only a failure with nothing open leaves it pending.
            if opens && (resp.in_txn || !failed) {
                st.begin_pending = false;
            }
            if i + 1 < n && failed {
                return Some(resp.packets);
            }
            if i + 1 == n {
                // The shadow session runs with autocommit on, inside XA: report the client's
                // own autocommit and transaction state.
                let (autocommit, in_txn) = (st.autocommit, st.in_txn);
                let mut packets = resp.packets;
                if let Some(last) = packets.last_mut() {
                    crate::replication::response::patch_status(last, |f| {
                        let mut f = f
                            - StatusFlags::SERVER_STATUS_AUTOCOMMIT
                            - StatusFlags::SERVER_STATUS_IN_TRANS;
                        if autocommit {
                            f |= StatusFlags::SERVER_STATUS_AUTOCOMMIT;
                        }
                        if in_txn {
                            f |= StatusFlags::SERVER_STATUS_IN_TRANS;
                        }
                        f
                    });
                }
                if binary {
                    packets = match crate::replication::binary_rows::text_to_binary(packets) {
                        Ok(p) => p,
                        Err(e) => {
                            return Some(vec![
                                SqlError::new(1105, "HY000", e.to_string()).to_payload()
                            ]);
                        }
                    };
                }
                if session_cmd && !failed {
                    st.remember(text);
                    // Keep the local session in step for reads after the transaction.
                    if let Some(lease) = self.lease.as_mut() {
                        let _ = lease.backend.query_drop(text).await;
                    }
                }
                return Some(packets);
            }
        }
        Some(Vec::new())
    }

    /// Writes whole packets to the client (bounded).
    async fn write_packets(&mut self, packets: &[Vec<u8>]) -> Next {
        let sent = crate::replication::response::write_packets(&mut self.client, packets);
        match tokio::time::timeout(self.frontend.limits.write_timeout, sent).await {
            Ok(Ok(())) => Next::Continue,
            _ => Next::Close,
        }
    }

    /// Sends the client's command to the engine as it came and relays the answer.
    async fn forward(&mut self, raw: &[u8], expect: Option<Expect>) -> Next {
        let Some(lease) = self.lease.as_mut() else {
            return Next::Close;
        };
        let backend = &mut lease.backend.io;
        backend.seq = self.client.seq;
        let sent = async {
            backend.write_raw(raw).await?;
            backend.flush().await
        }
        .await;
        if sent.is_err() {
            return self.engine_lost().await;
        }
        let Some(expect) = expect else {
            return Next::Continue;
        };
        let relay = Relay::new(
            backend,
            &mut self.client,
            self.frontend.limits.write_timeout,
        );
        match relay.run(expect).await {
            Ok(outcome) => {
                self.last_failed = outcome.error;
                self.last_prepared = outcome.prepared;
                Next::Continue
            }
            Err(RelayError::Backend(e)) => {
                tracing::warn!(id = self.id, error = %e, "engine connection lost during a command");
                self.engine_lost().await
            }
            Err(RelayError::Client(e)) => {
                tracing::debug!(id = self.id, error = %e, "client went away mid-response");
                // The engine connection may still be sending: it cannot be reused.
                self.lease = None;
                Next::Close
            }
        }
    }

    async fn engine_lost(&mut self) -> Next {
        self.frontend
            .counters
            .engine_errors
            .fetch_add(1, Ordering::Relaxed);
        self.lease = None;
        self.frontend.pool.clear_idle();
        self.reply_error(&SqlError::engine_lost()).await;
        Next::Close
    }

    async fn reply_error(&mut self, err: &SqlError) {
        send_error(&mut self.client, err).await;
    }

    async fn reply_ok(&mut self) -> Next {
        let ok = wire::ok_packet(0, 0, StatusFlags::SERVER_STATUS_AUTOCOMMIT, 0);
        let sent = async {
            self.client.write_packet(&ok).await?;
            self.client.flush().await
        };
        match tokio::time::timeout(self.frontend.limits.write_timeout, sent).await {
            Ok(Ok(())) => Next::Continue,
            _ => Next::Close,
        }
    }

    async fn kill(&mut self, id: u64, query_only: bool) -> Next {
        match self.frontend.kill(id, query_only).await {
            Ok(()) => {
                let own = self.lease.as_ref().is_some_and(|l| {
                    Some(l.backend.thread_id) == self.frontend.registry.engine_thread(id)
                });
                if own && !query_only {
                    // KILL of one's own connection: the engine has closed it.
                    self.lease = None;
                    self.reply_error(&SqlError::new(1927, "70100", "Connection was killed"))
                        .await;
                    return Next::Close;
                }
                self.reply_ok().await
            }
            Err(e) => {
                self.reply_error(&e).await;
                Next::Continue
            }
        }
    }

    /// COM_CHANGE_USER: re-authenticate against the operator's account, then reset the engine
    /// session and apply the requested database and character set.
    async fn change_user(&mut self, payload: &[u8]) -> Next {
        let secure = self
            .login
            .capabilities
            .contains(CapabilityFlags::CLIENT_SECURE_CONNECTION);
        let Some(req) = ChangeUser::parse(&payload[1..], secure) else {
            self.reply_error(&SqlError::malformed("COM_CHANGE_USER"))
                .await;
            return Next::Close;
        };
        let policy = &self.frontend.policy;
        let native = req.plugin.is_none_or(|p| p == b"mysql_native_password");
        let ok = req.user == policy.user.as_bytes()
            && native
            && policy.verifier.verify(&self.login.scramble, &req.token);
        if !ok {
            self.frontend
                .counters
                .auth_failures
                .fetch_add(1, Ordering::Relaxed);
            let user = String::from_utf8_lossy(&req.user).into_owned();
            let err = SqlError::access_denied(&user, &self.ip.to_string(), !req.token.is_empty());
            self.reply_error(&err).await;
            return Next::Close;
        }
        let collation = req.collation.unwrap_or(self.login.collation);
        let Some(lease) = self.lease.as_mut() else {
            return Next::Close;
        };
        let target = self.frontend.pool.target().clone();
        let db = req.db.as_deref().filter(|d| !d.is_empty());
        let changed = async {
            lease.backend.change_user(&target, db, collation).await?;
            lease.backend.refresh_thread_id().await
        };
        match changed.await {
            Ok(()) => {
                self.frontend
                    .registry
                    .insert(self.id, lease.backend.thread_id);
                self.login.db = db.map(<[u8]>::to_vec);
                self.login.collation = collation;
                // A new session as far as the cluster is concerned.
                self.end_replicated().await;
                self.prepared_text.clear();
                if let Some(st) = self.repl.as_mut() {
                    *st = ClientState::new(st.origin, st.user.clone());
                    if let Some(db) = db {
                        st.remember(&format!(
                            "USE {}",
                            quote_ident(&String::from_utf8_lossy(db))
                        ));
                    }
                }
                self.reply_ok().await
            }
            Err(BackendError::AuthFailed(m)) | Err(BackendError::Protocol(m)) => {
                self.reply_error(&SqlError::engine_unavailable(&m)).await;
                Next::Close
            }
            Err(BackendError::Server { payload, .. }) => {
                let sent = async {
                    self.client.write_packet(&payload).await?;
                    self.client.flush().await
                };
                let _ = sent.await;
                Next::Continue
            }
            Err(_) => self.engine_lost().await,
        }
    }
}

/// A parsed COM_CHANGE_USER body.
struct ChangeUser {
    user: Vec<u8>,
    token: Vec<u8>,
    db: Option<Vec<u8>>,
    collation: Option<u8>,
    plugin: Option<Vec<u8>>,
}

impl ChangeUser {
    fn parse(body: &[u8], secure: bool) -> Option<Self> {
        let nul = |b: &[u8]| b.iter().position(|&c| c == 0);
        let end = nul(body)?;
        let user = body[..end].to_vec();
        let mut rest = &body[end + 1..];
        let token = if secure {
            let len = usize::from(*rest.first()?);
            let t = rest.get(1..1 + len)?.to_vec();
            rest = &rest[1 + len..];
            t
        } else {
            let e = nul(rest)?;
            let t = rest[..e].to_vec();
            rest = &rest[e + 1..];
            t
        };
        let (db, mut rest) = match nul(rest) {
            Some(e) => (Some(rest[..e].to_vec()), &rest[e + 1..]),
            None => (None, &[][..]),
        };
        let mut collation = None;
        if rest.len() >= 2 {
            collation = Some(rest[0]);
            rest = &rest[2..];
        }
        let plugin = nul(rest)
            .map(|e| rest[..e].to_vec())
            .filter(|p| !p.is_empty());
        Some(ChangeUser {
            user,
            token,
            db,
            collation,
            plugin,
        })
    }
}

/// A `KILL [HARD|SOFT] [CONNECTION|QUERY] [ID] <n>` statement.
#[derive(Debug, PartialEq, Eq)]
struct Kill {
    id: u64,
    query_only: bool,
}

fn parse_kill(sql: &[u8]) -> Option<Kill> {
    let text = std::str::from_utf8(sql).ok()?;
    let text = text.trim().trim_end_matches(';').trim();
    let mut words = text.split_whitespace().peekable();
    if !words.next()?.eq_ignore_ascii_case("kill") {
        return None;
    }
    let mut query_only = false;
    while let Some(w) = words.peek() {
        if ["hard", "soft", "connection"]
            .iter()
            .any(|k| w.eq_ignore_ascii_case(k))
        {
            words.next();
        } else if w.eq_ignore_ascii_case("query") {
            query_only = true;
            words.next();
            if words.peek().is_some_and(|w| w.eq_ignore_ascii_case("id")) {
                words.next();
            }
        } else {
            break;
        }
    }
    let id = words.next()?.parse().ok()?;
    words.next().is_none().then_some(Kill { id, query_only })
}

/// For a query that only selects system variables and includes `@@socket`
/// (`SELECT @@socket`, mysql_async's `SELECT @@max_allowed_packet, @@socket, …`), the same
/// query with `@@socket` answered as NULL; `None` for anything else.
fn without_socket(sql: &[u8]) -> Option<String> {
    // Runs on every query: give up at once on anything long or not starting with SELECT.
    let head = sql.trim_ascii_start();
    if sql.len() > 1024 || !head.get(..6)?.eq_ignore_ascii_case(b"select") {
        return None;
    }
    let text = std::str::from_utf8(sql).ok()?;
    let text = text.trim().trim_end_matches(';').trim_end();
    let (select, rest) = text.split_at_checked(6)?;
    if !select.eq_ignore_ascii_case("select") || !rest.starts_with(char::is_whitespace) {
        return None;
    }
    let items: Vec<&str> = rest.split(',').map(str::trim).collect();
    let is_var = |i: &str| {
        i.len() > 2
            && i.starts_with("@@")
            && i[2..]
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
    };
    if !items.iter().all(|i| is_var(i)) || !items.iter().any(|i| i.eq_ignore_ascii_case("@@socket"))
    {
        return None;
    }
    let items: Vec<String> = items
        .iter()
        .map(|i| {
            if i.eq_ignore_ascii_case("@@socket") {
                format!("NULL AS `{i}`")
            } else {
                i.to_string()
            }
        })
        .collect();
    Some(format!("SELECT {}", items.join(", ")))
}

/// Waits (bounded) until this node has applied the session's last write, and every write this
/// node acknowledged as leader; the error to answer when it has not.
async fn read_fence(st: &mut ClientState, r: &Replication) -> Option<SqlError> {
    let fence = st.fence.max(r.engine.acknowledged_index());
    st.last_on_leader = false;
    if fence > r.engine.applied_index() && !r.engine.wait_applied(fence, r.read_wait).await {
        return Some(SqlError::new(
            1105,
            "HY000",
            format!(
                "this node has not applied your last write (log index {fence}) within {:?}; try again",
                r.read_wait
            ),
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kill_statements_are_recognised() {
        let k = |s: &str| parse_kill(s.as_bytes());
        assert_eq!(
            k("KILL 5"),
            Some(Kill {
                id: 5,
                query_only: false
            })
        );
        assert_eq!(
            k(" kill query 7 ;"),
            Some(Kill {
                id: 7,
                query_only: true
            })
        );
        assert_eq!(
            k("KILL HARD CONNECTION 9"),
            Some(Kill {
                id: 9,
                query_only: false
            })
        );
        assert_eq!(
            k("KILL SOFT QUERY ID 11"),
            Some(Kill {
                id: 11,
                query_only: true
            })
        );
        assert_eq!(k("KILL USER root"), None);
        assert_eq!(k("KILL 5 6"), None);
        assert_eq!(k("SELECT 1"), None);
        assert_eq!(k("killer 5"), None);
    }

    #[test]
    fn change_user_bodies_parse() {
        let mut body = b"root\0".to_vec();
        body.push(20);
        body.extend_from_slice(&[7u8; 20]);
        body.extend_from_slice(b"db1\0");
        body.extend_from_slice(&[45, 0]);
        body.extend_from_slice(b"mysql_native_password\0");
        let c = ChangeUser::parse(&body, true).unwrap();
        assert_eq!(c.user, b"root");
        assert_eq!(c.token, vec![7u8; 20]);
        assert_eq!(c.db.as_deref(), Some(&b"db1"[..]));
        assert_eq!(c.collation, Some(45));
        assert_eq!(c.plugin.as_deref(), Some(&b"mysql_native_password"[..]));
        assert!(ChangeUser::parse(b"no-nul", true).is_none());
        assert!(ChangeUser::parse(b"u\0\x14abc", true).is_none());
    }

    #[test]
    fn socket_variable_queries_answer_null() {
        use super::without_socket as w;
        assert_eq!(
            w(b"SELECT @@socket").as_deref(),
            Some("SELECT NULL AS `@@socket`")
        );
        assert_eq!(
            w(b" select @@max_allowed_packet,@@SOCKET ; ").as_deref(),
            Some("SELECT @@max_allowed_packet, NULL AS `@@SOCKET`")
        );
        assert_eq!(w(b"SELECT @@socket, 1"), None);
        assert_eq!(w(b"SELECT @@port"), None);
        assert_eq!(w(b"SELECT @@socket FROM t"), None);
    }
}
