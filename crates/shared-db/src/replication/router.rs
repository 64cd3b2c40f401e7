//! Client-side routing in a cluster: decides, per statement of a client session, whether it
//! runs on the local engine, on the leader's shadow session (writes, everything inside an
//! explicit transaction, leader reads), or is answered or refused by the operator itself.

use mysql_common::constants::StatusFlags;

use super::entry::Origin;
use super::executor::{ExecOp, Role};
use crate::protocol::errors::SqlError;
use crate::sql::classify::{Classification, StatementKind, TxControl};

/// Most session commands a session keeps for replay on the leader.
pub const MAX_HISTORY: usize = 256;

/// Where a statement goes.
#[derive(Debug, Clone, PartialEq)]
pub enum Route {
    /// The local engine; relay its answer.
    Local,
    /// The local engine; on success remember it for the leader's shadow session.
    LocalSession,
    /// The leader: run these operations in order; the last one's packets go to the client
    /// (earlier ones must succeed).
    Leader(Vec<ExecOp>),
    /// Answer OK with these status flags without running anything.
    Ok(StatusFlags),
    Refuse(SqlError),
}

/// Routing state of one client session.
#[derive(Debug, Clone)]
pub struct ClientState {
    pub origin: Origin,
    /// `user@host` of the client.
    pub user: String,
    /// Inside a transaction on the leader.
    pub in_txn: bool,
    /// `BEGIN` was answered here and goes to the leader with the session's next statement
    /// that needs it (one forward less per transaction); cleared once the leader ran it, or
    /// when the transaction ends before that.
    pub begin_pending: bool,
    pub autocommit: bool,
    /// Session commands run so far (replayed on the leader's shadow session).
    pub history: Vec<String>,
    /// Log index of this session's last committed write.
    pub fence: u64,
    /// The session has a shadow session on the leader.
    pub uses_leader: bool,
    /// The previous statement went to the leader (for `SHOW WARNINGS`, `FOUND_ROWS()`).
    pub last_on_leader: bool,
    /// `SET @shared_db_read = 'leader'`: every read of the session runs on the leader.
    pub leader_reads: bool,
}

impl ClientState {
    pub fn new(origin: Origin, user: String) -> Self {
        ClientState {
            origin,
            user,
            in_txn: false,
            begin_pending: false,
            autocommit: true,
            history: Vec::new(),
            fence: 0,
            uses_leader: false,
            last_on_leader: false,
            leader_reads: false,
        }
    }

    /// Remembers a session command that succeeded locally.
    pub fn remember(&mut self, sql: &str) {
        if self.history.len() < MAX_HISTORY {
            self.history.push(sql.to_string());
        }
    }

    /// The status flags the client sees for its transaction state.
    pub fn status(&self) -> StatusFlags {
        let mut s = StatusFlags::empty();
        if self.autocommit {
            s |= StatusFlags::SERVER_STATUS_AUTOCOMMIT;
        }
        if self.in_txn || self.begin_pending {
            s |= StatusFlags::SERVER_STATUS_IN_TRANS;
        }
        s
    }

    fn on_leader(&mut self, sql: &str, role: Role) -> Route {
        let q = ExecOp::Query {
            sql: sql.to_string(),
            role,
        };
        if role == Role::Ddl {
            // DDL ends a transaction that ran nothing yet, as in MariaDB.
            self.begin_pending = false;
            return Route::Leader(vec![q]);
        }
        if !self.in_txn && (!self.autocommit || self.begin_pending) {
            // autocommit=0, or a `BEGIN` answered here: this statement opens the transaction.
            Route::Leader(vec![ExecOp::Begin, q])
        } else {
            Route::Leader(vec![q])
        }
    }

    /// Routes one text statement (a multi-statement packet that writes is split by the session
    /// and each statement routed on its own).
    pub fn route(&mut self, sql: &str, class: &Classification) -> Route {
        let words = first_words(sql, 3);
        let w = |i: usize| words.get(i).map(String::as_str).unwrap_or("");
        if w(0) == "XA" {
            return Route::Refuse(refuse("XA transactions are used by shared-db itself"));
        }
        if w(0) == "LOCK" && matches!(w(1), "TABLE" | "TABLES") {
            return Route::Refuse(refuse(
                "LOCK TABLES does not work across a cluster; use transactions",
            ));
        }
        if w(0) == "LOAD" && w(2) == "LOCAL" || w(0) == "LOAD" && w(1) == "LOCAL" {
            return Route::Refuse(refuse(
                "LOAD DATA LOCAL INFILE is not replicated yet; use INSERT",
            ));
        }
        if class.is_multi && class.kind != StatementKind::Read {
            // The session splits these and routes each statement.
            return Route::Refuse(refuse(
                "a multi-statement packet that writes must be split first",
            ));
        }
        match class.kind {
            StatementKind::Transaction(tx) => self.route_tx(sql, tx),
            StatementKind::Session => {
                if w(0) == "SET" && w(1) == "SHARED_DB_READ" {
                    self.leader_reads = w(2) == "LEADER";
                }
                if self.in_txn || self.begin_pending {
                    self.on_leader(sql, Role::Session)
                } else {
                    Route::LocalSession
                }
            }
            StatementKind::Read => {
                let previous = class.depends_on_previous && self.last_on_leader;
                let leader = class.force_leader || self.leader_reads;
                if self.in_txn || self.begin_pending || leader || previous || !self.autocommit {
                    self.on_leader(sql, Role::Read)
                } else {
                    Route::Local
                }
            }
            StatementKind::Write => {
                if is_ddl(&words, class) {
                    self.on_leader(sql, Role::Ddl)
                } else if w(0) == "SELECT"
                    && (class.uses_last_insert_id || class.depends_on_previous)
                {
                    // Reads the leader session's state; nothing to log.
                    self.on_leader(sql, Role::Read)
                } else {
                    self.on_leader(sql, Role::Write)
                }
            }
        }
    }

    fn route_tx(&mut self, sql: &str, tx: TxControl) -> Route {
        match tx {
            // Inside a transaction `BEGIN` commits it first: the leader does both.
            TxControl::Begin { .. } if self.in_txn => Route::Leader(vec![ExecOp::Begin]),
            TxControl::Begin { .. } => {
                self.begin_pending = true;
                Route::Ok(self.status())
            }
            TxControl::Commit { chain, release } | TxControl::Rollback { chain, release } => {
                if chain || release {
                    return Route::Refuse(refuse("COMMIT/ROLLBACK AND CHAIN or RELEASE"));
                }
                let op = if matches!(tx, TxControl::Commit { .. }) {
                    ExecOp::Commit
                } else {
                    ExecOp::Rollback
                };
                if self.in_txn {
                    Route::Leader(vec![op])
                } else {
                    self.begin_pending = false;
                    Route::Ok(self.status())
                }
            }
            TxControl::SetAutocommit(on) => {
                self.autocommit = on;
                if on && self.in_txn {
                    Route::Leader(vec![ExecOp::Commit])
                } else {
                    // Turning autocommit on ends a transaction that ran nothing yet.
                    self.begin_pending &= !on;
                    Route::Ok(self.status())
                }
            }
            TxControl::Savepoint | TxControl::RollbackToSavepoint | TxControl::ReleaseSavepoint => {
                if self.in_txn {
                    Route::Leader(vec![ExecOp::Query {
                        sql: sql.to_string(),
                        role: Role::Write,
                    }])
                } else if !self.autocommit || self.begin_pending {
                    self.on_leader(sql, Role::Write)
                } else {
                    Route::Local
                }
            }
            TxControl::SetTransactionCharacteristics => {
                if self.in_txn || self.begin_pending {
                    self.on_leader(sql, Role::Session)
                } else {
                    Route::LocalSession
                }
            }
        }
    }
}

fn refuse(what: &str) -> SqlError {
    SqlError::new(
        1235,
        "42000",
        format!("shared-db cannot replicate this statement: {what}"),
    )
}

/// Statements that end a transaction implicitly and cannot run inside XA (`words`: the
/// statement's first three words, upper-cased).
pub fn is_ddl(words: &[String], class: &Classification) -> bool {
    let w = |i: usize| words.get(i).map(String::as_str).unwrap_or("");
    match w(0) {
        "CREATE" => !class.creates_temp_table && w(1) != "TEMPORARY",
        "DROP" => w(1) != "TEMPORARY",
        "ALTER" | "RENAME" | "TRUNCATE" | "GRANT" | "REVOKE" | "ANALYZE" | "OPTIMIZE"
        | "REPAIR" | "INSTALL" | "UNINSTALL" | "FLUSH" => true,
        _ => false,
    }
}

/// The first `n` words of a statement, uppercased, skipping comments.
pub fn first_words(sql: &str, n: usize) -> Vec<String> {
    let b = sql.as_bytes();
    let mut i = 0;
    let mut out = Vec::new();
    while i < b.len() && out.len() < n {
        let c = b[i];
        if c.is_ascii_whitespace() || c == b'(' || c == b';' {
            i += 1;
        } else if c == b'#' || (c == b'-' && b.get(i + 1) == Some(&b'-')) {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if c == b'/' && b.get(i + 1) == Some(&b'*') {
            if b.get(i + 2) == Some(&b'!') {
                // Executable comment: its content is code; skip the marker and version.
                i += 3;
                while i < b.len() && b[i].is_ascii_digit() {
                    i += 1;
                }
            } else {
                i += 2;
                while i + 1 < b.len() && !(b[i] == b'*' && b[i + 1] == b'/') {
                    i += 1;
                }
                i += 2;
            }
        } else if c == b'*' && b.get(i + 1) == Some(&b'/') {
            i += 2;
        } else {
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                i += 1;
            }
            if i == start {
                i += 1;
                continue;
            }
            out.push(sql[start..i].to_ascii_uppercase());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::classify::classify;

    fn st() -> ClientState {
        ClientState::new(
            Origin {
                node: 1,
                session: 1,
            },
            "u@h".into(),
        )
    }

    fn route(s: &mut ClientState, sql: &str) -> Route {
        s.route(sql, &classify(sql))
    }

    #[test]
    fn statements_are_routed() {
        let mut s = st();
        assert_eq!(route(&mut s, "SELECT * FROM t"), Route::Local);
        assert_eq!(route(&mut s, "SET @a = 1"), Route::LocalSession);
        assert!(matches!(route(&mut s, "INSERT INTO t VALUES (1)"),
            Route::Leader(ops) if matches!(&ops[..], [ExecOp::Query { role: Role::Write, .. }])));
        assert!(matches!(route(&mut s, "/* c */ CREATE TABLE t (a int)"),
            Route::Leader(ops) if matches!(&ops[..], [ExecOp::Query { role: Role::Ddl, .. }])));
        assert!(matches!(route(&mut s, "CREATE TEMPORARY TABLE t (a int)"),
            Route::Leader(ops) if matches!(&ops[..], [ExecOp::Query { role: Role::Write, .. }])));
        assert!(matches!(route(&mut s, "/* shared-db: leader */ SELECT 1"),
            Route::Leader(ops) if matches!(&ops[..], [ExecOp::Query { role: Role::Read, .. }])));
        assert!(matches!(route(&mut s, "XA START 'a'"), Route::Refuse(_)));
        assert_eq!(
            route(&mut s, "SET @shared_db_read = 'leader'"),
            Route::LocalSession
        );
        assert!(matches!(route(&mut s, "SELECT * FROM t"),
            Route::Leader(ops) if matches!(&ops[..], [ExecOp::Query { role: Role::Read, .. }])));
        assert_eq!(
            route(&mut s, "SET @shared_db_read = 'local'"),
            Route::LocalSession
        );
        assert_eq!(route(&mut s, "SELECT * FROM t"), Route::Local);
        assert!(matches!(route(&mut s, "COMMIT"), Route::Ok(_)));
        assert!(matches!(route(&mut s, "SET autocommit = 0"), Route::Ok(_)));
        assert!(matches!(route(&mut s, "SELECT 1"),
            Route::Leader(ops) if matches!(&ops[..], [ExecOp::Begin, ExecOp::Query { role: Role::Read, .. }])));
        s.in_txn = true;
        assert!(
            matches!(route(&mut s, "SET autocommit = 1"), Route::Leader(ops) if matches!(&ops[..], [ExecOp::Commit]))
        );
    }

    #[test]
    fn begin_is_answered_here_and_opens_the_transaction_with_the_next_statement() {
        let in_trans =
            |r: Route| matches!(r, Route::Ok(f) if f.contains(StatusFlags::SERVER_STATUS_IN_TRANS));
        let mut s = st();
        assert!(in_trans(route(&mut s, "BEGIN")));
        // Reads inside it run on the leader, in the transaction.
        assert!(matches!(route(&mut s, "SELECT * FROM t"),
            Route::Leader(ops) if matches!(&ops[..], [ExecOp::Begin, ExecOp::Query { role: Role::Read, .. }])));
        // Until the leader confirms, every statement carries the BEGIN.
        assert!(matches!(route(&mut s, "UPDATE t SET a = 1"),
            Route::Leader(ops) if matches!(&ops[..], [ExecOp::Begin, ExecOp::Query { role: Role::Write, .. }])));
        s.begin_pending = false;
        s.in_txn = true;
        assert!(matches!(route(&mut s, "UPDATE t SET a = 2"),
            Route::Leader(ops) if matches!(&ops[..], [ExecOp::Query { role: Role::Write, .. }])));
        assert!(
            matches!(route(&mut s, "COMMIT"), Route::Leader(ops) if matches!(&ops[..], [ExecOp::Commit]))
        );
        s.in_txn = false;
        // A transaction that ran nothing ends here.
        assert!(in_trans(route(&mut s, "START TRANSACTION")));
        assert!(
            matches!(route(&mut s, "ROLLBACK"), Route::Ok(f) if !f.contains(StatusFlags::SERVER_STATUS_IN_TRANS))
        );
        assert_eq!(route(&mut s, "SELECT * FROM t"), Route::Local);
        // DDL ends it too, as in MariaDB.
        assert!(in_trans(route(&mut s, "BEGIN")));
        assert!(matches!(route(&mut s, "CREATE TABLE u (a int)"),
            Route::Leader(ops) if matches!(&ops[..], [ExecOp::Query { role: Role::Ddl, .. }])));
        assert_eq!(route(&mut s, "SELECT * FROM t"), Route::Local);
        assert!(in_trans(route(&mut s, "BEGIN")));
        assert!(
            matches!(route(&mut s, "SET autocommit = 1"), Route::Ok(f) if !f.contains(StatusFlags::SERVER_STATUS_IN_TRANS))
        );
    }
}
