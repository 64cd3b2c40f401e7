//! Bulk apply: consecutive committed transactions of other nodes' clients run on the engine as
//! one transaction, in one round trip.
//!
//! Applied one by one, each transaction costs the engine two round trips (its statements, then
//! the position and `COMMIT`), a full context `SET` per statement and a commit. Most
//! transactions need nothing from their origin session (no temporary table, only
//! `INSERT`/`UPDATE`/`DELETE`/`REPLACE` statements that succeeded on the leader), so a follower
//! can run a whole run of them on one shared connection:
//!
//! ```text
//! BEGIN; SET <context>; <statement>; <guard>; …; <position of the last entry>; COMMIT
//! ```
//!
//! The context `SET` carries the session settings only where they changed since the previous
//! statement on that connection. After each statement a guard compares `ROW_COUNT()` with the
//! leader's affected rows and fails (error 1231) when they differ, so the query stops before
//! `COMMIT`; any failure rolls the run back and the caller applies its entries one at a time,
//! where a real divergence is detected and reported as before. Running several transactions
//! as one is equivalent because the applier is the only writer on a follower's engine and
//! applies in log order: each statement sees exactly what it would have seen alone.

use std::collections::HashSet;

use super::applier::can_be_followed;
use super::context::{quote_ident, StatementContext};
use super::entry::{Origin, TxnEntry};
use super::response::run_query;
use crate::protocol::backend::{Backend, BackendError};

/// Most transactions in one run.
pub const MAX_RUN_TXNS: usize = 512;

/// Most statement bytes in one run.
pub const MAX_RUN_BYTES: usize = 1 << 20;

/// A connection shared by every origin whose transactions can run in bulk, and what it has
/// set so far.
pub struct SharedConn {
    conn: Backend,
    /// The default database selected on the connection (`None`: not known).
    db: Option<String>,
    /// The last context set on the connection (`None`: nothing known; the next `SET` is full).
    ctx: Option<StatementContext>,
}

impl SharedConn {
    pub fn new(conn: Backend) -> Self {
        SharedConn {
            conn,
            db: None,
            ctx: None,
        }
    }

    /// Forgets what the connection has set (after DDL, which may drop the default database):
    /// the next run selects the database and sets the whole context again.
    pub fn forget_settings(&mut self) {
        self.db = None;
        self.ctx = None;
    }
}

/// Whether `t` can run in a bulk run: not this node's own (those are committed from their
/// prepared XA branch or recovered), no temporary table in its origin session, and only
/// data-changing statements that succeeded on the leader.
pub fn can_run_in_bulk(t: &TxnEntry, own_xid_prefix: &str, temp_origins: &HashSet<Origin>) -> bool {
    !t.statements.is_empty()
        && !t.xid.starts_with(own_xid_prefix)
        && !temp_origins.contains(&t.origin)
        && t.statements
            .iter()
            .all(|s| can_be_followed(s) && is_plain_dml(&s.sql))
}

/// `INSERT`, `UPDATE`, `DELETE` or `REPLACE` (whose `ROW_COUNT()` is their affected rows and
/// which change no session setting).
fn is_plain_dml(sql: &str) -> bool {
    let word: String = sql
        .trim_start()
        .chars()
        .take_while(|c| c.is_ascii_alphabetic())
        .take(8)
        .collect();
    ["INSERT", "UPDATE", "DELETE", "REPLACE"]
        .iter()
        .any(|w| word.eq_ignore_ascii_case(w))
}

/// What a bulk run did.
#[derive(Debug, PartialEq, Eq)]
pub enum RunOutcome {
    /// Committed, every outcome as on the leader.
    Committed,
    /// Rolled back: a statement's outcome differed from the leader's or the engine refused
    /// something. The caller applies the entries one at a time.
    RolledBack,
    /// Committed although an outcome differs from the leader's (a guard that passed against a
    /// differing OK packet; not expected): the node has diverged, for this reason.
    CommittedDiffering(String),
}

/// Runs `txns` as one engine transaction that also runs `mark` (the position write). An error
/// is a lost connection (the caller drops it).
pub async fn run(
    shared: &mut SharedConn,
    txns: &[&TxnEntry],
    mark: &str,
) -> Result<RunOutcome, BackendError> {
    let mut sql = String::with_capacity(512 * txns.len() + mark.len());
    // The leader's affected rows for each result that is a logged statement, in order;
    // `None` for our own statements.
    let mut plan: Vec<Option<u64>> = Vec::new();
    let mut push = |sql: &mut String, text: &str, want: Option<u64>| {
        if !sql.is_empty() {
            sql.push_str("; ");
        }
        sql.push_str(text);
        plan.push(want);
    };
    push(&mut sql, "BEGIN", None);
    let mut db = shared.db.clone();
    let mut prev = shared.ctx.clone();
    for t in txns {
        for stmt in &t.statements {
            let Some(want) = stmt.outcome.as_ref() else {
                return Ok(RunOutcome::RolledBack);
            };
            if let Some(d) = stmt.ctx.db.as_ref().filter(|d| db.as_ref() != Some(*d)) {
                push(&mut sql, &format!("USE {}", quote_ident(d)), None);
                db = Some(d.clone());
            }
            push(&mut sql, &stmt.ctx.to_set_sql_after(prev.as_ref()), None);
            push(&mut sql, &stmt.sql, Some(want.affected));
            push(&mut sql, &guard_sql(want.affected), None);
            prev = Some(stmt.ctx.clone());
        }
    }
    push(&mut sql, mark, None);
    push(&mut sql, "COMMIT", None);
    // Whatever happens next, what the connection has set is only known after a success.
    shared.db = None;
    shared.ctx = None;
    let c = run_query(&mut shared.conn, &sql).await?;
    let differing = plan.iter().enumerate().find_map(|(k, want)| {
        let got = c.result_outcome(k)?;
        let agrees = got.error == 0 && want.is_none_or(|affected| got.affected == affected);
        (!agrees).then_some((k, got))
    });
    // `COMMIT` is the last statement: it ran, and succeeded, only if every result came.
    if c.results < plan.len() || c.outcome.error != 0 {
        tracing::debug!(
            results = c.results,
            expected = plan.len(),
            error = c.outcome.error,
            message = %c.outcome.message,
            "bulk apply stopped; applying its entries one at a time"
        );
        shared.conn.query_drop("ROLLBACK").await?;
        return Ok(RunOutcome::RolledBack);
    }
    shared.db = db;
    shared.ctx = prev;
    Ok(match differing {
        None => RunOutcome::Committed,
        Some((k, got)) => RunOutcome::CommittedDiffering(format!(
            "bulk apply result {}: leader had {:?} rows, this node error {} / {} rows",
            k + 1,
            plan[k],
            got.error,
            got.affected
        )),
    })
}

/// Fails the query (error 1231) unless the statement just run affected `rows` rows; sets
/// `foreign_key_checks` to its own value otherwise.
fn guard_sql(rows: u64) -> String {
    format!(
        "SET @@session.foreign_key_checks = IF(ROW_COUNT() = {rows}, @@session.foreign_key_checks, 2)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replication::entry::{LoggedStatement, Outcome};

    fn txn(xid: &str, session: u64, sqls: &[(&str, u16)]) -> TxnEntry {
        TxnEntry {
            xid: xid.into(),
            origin: Origin { node: 2, session },
            client_caps: 0,
            statements: sqls
                .iter()
                .map(|(sql, error)| LoggedStatement {
                    sql: (*sql).into(),
                    ctx: StatementContext::default(),
                    outcome: Some(Outcome {
                        error: *error,
                        affected: 1,
                        ..Outcome::default()
                    }),
                })
                .collect(),
        }
    }

    #[test]
    fn only_other_nodes_plain_successful_dml_without_temp_tables_runs_in_bulk() {
        let none = HashSet::new();
        let own = "sdb-1-";
        assert!(can_run_in_bulk(
            &txn(
                "sdb-2-a-1",
                7,
                &[(" insert INTO t VALUES (1)", 0), ("UPDATE t SET a = 2", 0)]
            ),
            own,
            &none
        ));
        assert!(can_run_in_bulk(
            &txn(
                "sdb-2-a-1",
                7,
                &[("REPLACE t VALUES (1)", 0), ("delete from t", 0)]
            ),
            own,
            &none
        ));
        // This node's own transactions (from any process of it) are recovered, not re-run.
        assert!(!can_run_in_bulk(
            &txn("sdb-1-b-1", 7, &[("INSERT INTO t VALUES (1)", 0)]),
            own,
            &none
        ));
        // A statement that failed on the leader, a session statement, a comment, a SELECT.
        assert!(!can_run_in_bulk(
            &txn("sdb-2-a-1", 7, &[("INSERT INTO t VALUES (1)", 1062)]),
            own,
            &none
        ));
        assert!(!can_run_in_bulk(
            &txn("sdb-2-a-1", 7, &[("SET @a = 1", 0)]),
            own,
            &none
        ));
        assert!(!can_run_in_bulk(
            &txn("sdb-2-a-1", 7, &[("INSERT INTO t VALUES (1) -- x", 0)]),
            own,
            &none
        ));
        assert!(!can_run_in_bulk(
            &txn("sdb-2-a-1", 7, &[("SELECT 1", 0)]),
            own,
            &none
        ));
        assert!(!can_run_in_bulk(
            &txn("sdb-2-a-1", 7, &[("INSERTX INTO t VALUES (1)", 0)]),
            own,
            &none
        ));
        assert!(!can_run_in_bulk(&txn("sdb-2-a-1", 7, &[]), own, &none));
        // The origin session has a temporary table: its connection is needed.
        let temp: HashSet<Origin> = [Origin {
            node: 2,
            session: 7,
        }]
        .into();
        assert!(!can_run_in_bulk(
            &txn("sdb-2-a-1", 7, &[("INSERT INTO t VALUES (1)", 0)]),
            own,
            &temp
        ));
        assert!(can_run_in_bulk(
            &txn("sdb-2-a-1", 8, &[("INSERT INTO t VALUES (1)", 0)]),
            own,
            &temp
        ));
    }
}
