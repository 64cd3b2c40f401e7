//! Statement classifier: labels each statement a client sends so the router knows where it
//! may run.
//!
//! The rules follow MaxScale's readwritesplit: plain reads may run on the local engine;
//! writes, locking reads, reads that depend on the leader's state (`LAST_INSERT_ID()`,
//! sequences, `GET_LOCK()`...) and stored function calls go to the Raft leader; session
//! commands (`SET`, `USE`, text `PREPARE`) must be applied on every backend the session uses;
//! transaction control is reported separately so the router can track transactions.
//!
//! # How it works
//!
//! 1. A small MySQL lexer ([`super::lexer`]) turns the text into tokens, skipping comments,
//!    lexing `/*! ... */` executable comments as code, and noticing leader hints.
//! 2. The text is split on top-level `;` ([`super::split`]), keeping stored program bodies
//!    whole.
//! 3. Each statement is classified from its first keywords and one pass over its tokens.
//!    Only a read candidate (`SELECT`, `WITH`, `VALUES`, `TABLE`) that calls a function the
//!    classifier does not know is parsed with `sqlparser` (`MySqlDialect`) to check the call
//!    really is a function call; a plain `SELECT ... FROM ... WHERE ...` never pays for a
//!    parse. If the parse fails, the statement is a [`StatementKind::Write`].
//!
//! # Safety rule
//!
//! Anything not understood is a write (sent to the leader), never a read: unknown statements,
//! unknown function names (possibly stored functions that write), unterminated strings or
//! comments. Where the lexing is ambiguous (a backslash inside a string, whose meaning depends
//! on `NO_BACKSLASH_ESCAPES`; versioned executable comments, whose content the server may
//! skip) both readings are classified and, if they disagree, the result is a write.
//!
//! # Known limits
//!
//! - A view or trigger hiding a writing stored function cannot be seen from the text.
//! - `EXECUTE stmt` is a write: the classifier does not track prepared statement texts.
//! - In a multi-statement packet classified as a write, session changes only reach the
//!   leader ([`Classification::modifies_session`] tells the router).
//! - `SET @v = UUID()` (or `NOW()`, `RAND()`) is a session command, so each backend gets its
//!   own value; see [`Classification::nondeterministic`].

use std::ops::ControlFlow;

use sqlparser::ast::{Expr, Function, ObjectNamePart, Query, Select, Statement, Visit, Visitor};
use sqlparser::dialect::MySqlDialect;
use sqlparser::parser::Parser;

use super::functions::{lookup_call, lookup_parenless, lowercase, Callee, FnClass};
use super::lexer::{ident_name, lex, Escapes, Lexed, TokKind, Token};
use super::split::split_ranges;

/// Where a statement may run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StatementKind {
    /// May run on the local engine (outside an explicit transaction).
    Read,
    /// Must run on the leader. Also the answer for anything not understood.
    #[default]
    Write,
    /// Changes session state: apply on every backend the session uses (`SET`, `USE`,
    /// `PREPARE`, `DEALLOCATE PREPARE`, `SELECT @v := 1`).
    Session,
    /// Transaction control; `SetAutocommit` and `SetTransactionCharacteristics` are also
    /// session commands (apply everywhere).
    Transaction(TxControl),
}

/// A transaction control statement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxControl {
    /// `BEGIN [WORK]`, `START TRANSACTION [READ ONLY | READ WRITE | WITH CONSISTENT SNAPSHOT]`.
    Begin { read_only: bool },
    /// `COMMIT [WORK] [AND [NO] CHAIN] [[NO] RELEASE]`; `chain` starts a new transaction,
    /// `release` closes the connection.
    Commit { chain: bool, release: bool },
    /// `ROLLBACK [WORK] [AND [NO] CHAIN] [[NO] RELEASE]`.
    Rollback { chain: bool, release: bool },
    /// `SAVEPOINT x`.
    Savepoint,
    /// `ROLLBACK [WORK] TO [SAVEPOINT] x`.
    RollbackToSavepoint,
    /// `RELEASE SAVEPOINT x`.
    ReleaseSavepoint,
    /// `SET [SESSION] autocommit = 0|1|ON|OFF|TRUE|FALSE` (also `@@autocommit`, and within a
    /// list of assignments).
    SetAutocommit(bool),
    /// `SET [SESSION] TRANSACTION ISOLATION LEVEL ... | READ ONLY | READ WRITE`.
    SetTransactionCharacteristics,
}

/// How the classification was reached.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum Method {
    /// From the tokens alone (keywords, known functions): the fast path.
    #[default]
    Tokens,
    /// `sqlparser` parsed the statement and its AST decided.
    Parsed,
    /// `sqlparser` could not parse a statement the tokens could not decide: classified as a
    /// write.
    ParseFailed,
}

/// The classification of a statement (or of a whole multi-statement packet).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Classification {
    /// Where it may run.
    pub kind: StatementKind,
    /// How `kind` was decided (for a packet: the least certain of its statements).
    pub method: Method,
    /// The text held more than one statement.
    pub is_multi: bool,
    /// A comment asked for the leader (`/* shared-db: leader */`,
    /// `-- maxscale route to master`). `kind` is left as classified; the router must honour
    /// the flag.
    pub force_leader: bool,
    /// Uses `LAST_INSERT_ID()`, `@@last_insert_id`, `@@identity` or `@@insert_id`.
    pub uses_last_insert_id: bool,
    /// `CREATE [OR REPLACE] TEMPORARY TABLE`: later reads of the session may need the leader.
    pub creates_temp_table: bool,
    /// The result depends on the previous statement on the same connection (`FOUND_ROWS()`,
    /// `ROW_COUNT()`, `SHOW WARNINGS`, `SHOW ERRORS`, `SHOW PROFILE`, `GET DIAGNOSTICS`): send
    /// it where the previous statement went.
    pub depends_on_previous: bool,
    /// Changes session state (variables, character set, default database...), even when
    /// `kind` is not [`StatementKind::Session`] (e.g. `SELECT ... INTO @v`).
    pub modifies_session: bool,
    /// `USE db`: the new default database.
    pub changes_default_db: Option<String>,
    /// Transaction control effects, in text order: one for a transaction statement, possibly
    /// several for a multi-statement packet, or an autocommit change hidden in a `SET` that
    /// is otherwise a write.
    pub tx_controls: Vec<TxControl>,
    /// Non-deterministic built-ins used (lowercase, deduplicated): `uuid`, `now`, `rand`,
    /// `sysdate`, `current_user`, `get_lock`, `sleep`, `found_rows`, ...
    pub nondeterministic: Vec<&'static str>,
}

impl Classification {
    fn new(kind: StatementKind, method: Method) -> Self {
        let mut c = Classification {
            kind,
            method,
            ..Classification::default()
        };
        if let StatementKind::Transaction(tx) = kind {
            c.tx_controls.push(tx);
        }
        c
    }

    fn read() -> Self {
        Self::new(StatementKind::Read, Method::Tokens)
    }

    fn write() -> Self {
        Self::new(StatementKind::Write, Method::Tokens)
    }

    fn session() -> Self {
        let mut c = Self::new(StatementKind::Session, Method::Tokens);
        c.modifies_session = true;
        c
    }

    fn tx(tx: TxControl) -> Self {
        Self::new(StatementKind::Transaction(tx), Method::Tokens)
    }

    /// Whether `sqlparser` was used (`false`: decided from tokens alone).
    pub fn parsed(&self) -> bool {
        self.method != Method::Tokens
    }
}

/// Classifies the statement in `sql` (leading comments, hints and a trailing `;` allowed).
///
/// If `sql` holds several statements, the result is the combination described at
/// [`classify_multi`]; so this is safe to call on any `COM_QUERY` text. Empty text (or only
/// comments) is a [`StatementKind::Read`]: every server answers it with the same error.
pub fn classify(sql: &str) -> Classification {
    let lexed = lex(sql, Escapes::Backslash);
    let c = classify_lexed(sql, &lexed, false);
    if !lexed.backslash_in_string {
        return c;
    }
    // Under `NO_BACKSLASH_ESCAPES` the text may split differently. If that reading leaves a
    // string open, the server rejects its last statement, but runs the ones before it.
    let alt = lex(sql, Escapes::QuoteOnly);
    either(c, classify_lexed(sql, &alt, true))
}

/// Classifies a whole `COM_QUERY` packet that may hold several statements.
///
/// With one statement this is [`classify`] of it. With several (`is_multi`):
/// - `kind`: [`Read`](StatementKind::Read) if every statement is a read;
///   [`Session`](StatementKind::Session) if every statement is a read or a session command
///   (the packet must run on every backend); otherwise [`Write`](StatementKind::Write) —
///   any write or transaction control sends the whole packet to the leader.
/// - `tx_controls`: all transaction effects in order, so the router can replay them.
/// - flags are OR-ed, `changes_default_db` is the last `USE`, `nondeterministic` is the
///   union, `method` is the least certain one.
pub fn classify_multi(sql: &str) -> Classification {
    classify(sql)
}

/// Splits a `COM_QUERY` text into its statements on top-level `;`.
///
/// `;` inside strings, quoted identifiers, comments and stored program bodies
/// (`CREATE PROCEDURE ... BEGIN ...; ...; END`) does not split. Each statement keeps the
/// comments before it; the `;`, surrounding whitespace and empty statements are dropped.
pub fn split_statements(sql: &str) -> Vec<&str> {
    let lexed = lex(sql, Escapes::Backslash);
    let toks = &lexed.tokens;
    let mut out = Vec::new();
    for range in split_ranges(sql, toks) {
        // The statement runs from just after the previous `;` (keeping leading comments) to
        // just before its own `;` (keeping trailing comments).
        let from = range.start.checked_sub(1).map_or(0, |p| toks[p].end);
        let until = toks.get(range.end).map_or(sql.len(), |t| t.start);
        out.push(sql.get(from..until).unwrap_or("").trim());
    }
    out
}

/// Combines two readings of the same text: where they disagree, the result must be right for
/// both (a session command also runs the read everywhere; anything else is a write).
fn either(a: Classification, b: Classification) -> Classification {
    use StatementKind::{Read, Session};
    let kind = match (a.kind, b.kind) {
        (x, y) if x == y => x,
        (Read | Session, Read | Session) => Session,
        _ => StatementKind::Write,
    };
    let mut c = a;
    if kind != c.kind {
        c.kind = kind;
        c.modifies_session |= b.modifies_session;
        c.force_leader |= b.force_leader;
    }
    c
}

/// Classifies lexed text. With `drop_unterminated`, an unterminated last statement is
/// ignored (the server would reject it) instead of making the whole text a write.
fn classify_lexed(sql: &str, lexed: &Lexed, drop_unterminated: bool) -> Classification {
    let drop_last = drop_unterminated && lexed.unterminated;
    let mut c = classify_tokens(sql, &lexed.tokens, drop_last);
    if lexed.tokens.iter().any(|t| t.in_exec_comment) {
        // A versioned `/*!50100 ... */` may be skipped by the server: classify without it too.
        let plain: Vec<Token> = lexed
            .tokens
            .iter()
            .filter(|t| !t.in_exec_comment)
            .copied()
            .collect();
        c = either(c, classify_tokens(sql, &plain, drop_last));
    }
    if lexed.unterminated && !drop_last {
        c.kind = StatementKind::Write;
    }
    c.force_leader |= lexed.force_leader;
    c
}

fn classify_tokens(sql: &str, toks: &[Token], drop_last: bool) -> Classification {
    if !drop_last && !toks.iter().any(|t| t.is_punct(sql, ";")) {
        // The common case: one statement, no splitting needed.
        return match toks {
            [] => Classification::read(),
            _ => classify_statement(sql, toks),
        };
    }
    let mut ranges = split_ranges(sql, toks);
    if drop_last {
        ranges.pop();
    }
    match ranges.as_slice() {
        [] => Classification::read(),
        [one] => classify_statement(sql, &toks[one.clone()]),
        many => combine(
            many.iter()
                .map(|r| classify_statement(sql, &toks[r.clone()])),
        ),
    }
}

/// The multi-statement combination rules (see [`classify_multi`]).
fn combine(parts: impl Iterator<Item = Classification>) -> Classification {
    let mut out = Classification::read();
    out.is_multi = true;
    for p in parts {
        out.kind = match (out.kind, p.kind) {
            (StatementKind::Read, StatementKind::Read) => StatementKind::Read,
            (
                StatementKind::Read | StatementKind::Session,
                StatementKind::Read | StatementKind::Session,
            ) => StatementKind::Session,
            _ => StatementKind::Write,
        };
        out.method = out.method.max(p.method);
        out.force_leader |= p.force_leader;
        out.uses_last_insert_id |= p.uses_last_insert_id;
        out.creates_temp_table |= p.creates_temp_table;
        out.depends_on_previous |= p.depends_on_previous;
        out.modifies_session |= p.modifies_session;
        if p.changes_default_db.is_some() {
            out.changes_default_db = p.changes_default_db;
        }
        out.tx_controls.extend(p.tx_controls);
        for f in p.nondeterministic {
            if !out.nondeterministic.contains(&f) {
                out.nondeterministic.push(f);
            }
        }
    }
    out
}

/// What one pass over a statement's tokens found.
#[derive(Default)]
struct Scan {
    /// A call to a function that is not a known built-in (stored function / UDF).
    unknown_call: bool,
    /// A built-in that must run on the leader (`GET_LOCK`, `NEXTVAL`, `LOAD_FILE`...).
    leader_call: bool,
    last_insert_id: bool,
    previous: bool,
    /// `INTO` (`SELECT ... INTO @v | OUTFILE | DUMPFILE`).
    into: bool,
    into_var: bool,
    /// `FOR UPDATE`, `FOR SHARE`, `LOCK IN SHARE MODE`.
    locking_read: bool,
    /// `NEXT VALUE FOR s`, `PREVIOUS VALUE FOR s`.
    sequence: bool,
    /// `INSERT`, `UPDATE`, `DELETE`, `REPLACE` as keywords (not the string functions).
    dml_keyword: bool,
    /// `:=`
    assigns_var: bool,
    has_from: bool,
    /// `SELECT` anywhere after the first token.
    subquery: bool,
    /// A `;` inside the statement (in an executable comment or a compound body).
    inner_semicolon: bool,
    nondet: Vec<&'static str>,
}

impl Scan {
    fn new(sql: &str, toks: &[Token]) -> Scan {
        let mut s = Scan::default();
        for (i, t) in toks.iter().enumerate() {
            let next_is_paren = toks.get(i + 1).is_some_and(|n| n.is_punct(sql, "("));
            match t.kind {
                TokKind::Word => {
                    let prev = i.checked_sub(1).and_then(|p| toks.get(p));
                    // `t.update` is a column and `db.f(` a stored function; `INTO t (` is a
                    // table. (`1. INTO @v` is a number and the keyword `INTO`.)
                    if prev.is_some_and(|p| p.is_punct(sql, "."))
                        && i.checked_sub(2)
                            .and_then(|p| toks.get(p))
                            .is_some_and(|q| matches!(q.kind, TokKind::Word | TokKind::QuotedIdent))
                    {
                        s.unknown_call |= next_is_paren;
                        continue;
                    }
                    let after_into = prev.is_some_and(|p| {
                        ["into", "insert", "replace"]
                            .iter()
                            .any(|k| p.is_word(sql, k))
                    });
                    if next_is_paren && !after_into {
                        s.call(lookup_call(t.text(sql)));
                    } else if let Some(f) = lookup_parenless(t.text(sql)) {
                        s.nondet(f);
                    }
                    s.keyword(sql, toks, i, next_is_paren);
                }
                TokKind::QuotedIdent if next_is_paren => s.unknown_call = true,
                TokKind::SysVar if is_identity_var(t.text(sql)) => s.last_insert_id = true,
                TokKind::Punct => match t.text(sql) {
                    ":=" => s.assigns_var = true,
                    ";" => s.inner_semicolon = true,
                    _ => {}
                },
                _ => {}
            }
        }
        s
    }

    fn call(&mut self, callee: Option<Callee>) {
        let Some(c) = callee else {
            self.unknown_call = true;
            return;
        };
        match c.class {
            FnClass::Pure | FnClass::Nondet => {}
            FnClass::Previous => self.previous = true,
            FnClass::LastInsertId => self.last_insert_id = true,
            FnClass::Leader => self.leader_call = true,
        }
        if let Some(name) = c.nondet {
            self.nondet(name);
        }
    }

    fn nondet(&mut self, name: &'static str) {
        if !self.nondet.contains(&name) {
            self.nondet.push(name);
        }
    }

    fn keyword(&mut self, sql: &str, toks: &[Token], i: usize, next_is_paren: bool) {
        let mut buf = [0u8; 32];
        let Some(word) = lowercase(toks[i].text(sql), &mut buf) else {
            return;
        };
        let next_is = |off: usize, kw: &str| toks.get(i + off).is_some_and(|t| t.is_word(sql, kw));
        match word {
            b"into" => {
                self.into = true;
                self.into_var |= toks.get(i + 1).is_some_and(|t| t.kind == TokKind::UserVar);
            }
            b"for" if next_is(1, "update") || next_is(1, "share") => self.locking_read = true,
            b"lock" if next_is(1, "in") => self.locking_read = true,
            b"next" | b"previous" if next_is(1, "value") && next_is(2, "for") => {
                self.sequence = true
            }
            b"insert" | b"update" | b"delete" | b"replace" if !next_is_paren => {
                self.dml_keyword = true
            }
            b"from" => self.has_from = true,
            b"select" if i > 0 => self.subquery = true,
            _ => {}
        }
    }

    /// Something that makes a `SELECT`-like statement a write, whatever else it contains.
    fn forces_leader(&self) -> bool {
        self.dml_keyword
            || self.into
            || self.locking_read
            || self.sequence
            || self.leader_call
            || self.last_insert_id
            || self.inner_semicolon
    }

    /// Some call that may write or must see the leader's state.
    fn risky_call(&self) -> bool {
        self.unknown_call || self.leader_call || self.last_insert_id || self.sequence
    }
}

/// `@@identity`, `@@last_insert_id`, `@@insert_id` (any scope prefix).
fn is_identity_var(text: &str) -> bool {
    let name = text.rsplit('.').next().unwrap_or(text);
    let name = name.trim_start_matches('@');
    ["identity", "last_insert_id", "insert_id"]
        .iter()
        .any(|v| name.eq_ignore_ascii_case(v))
}

/// Classifies one statement (no top-level `;`).
fn classify_statement(sql: &str, toks: &[Token]) -> Classification {
    let scan = Scan::new(sql, toks);
    let mut c = by_first_keyword(sql, toks, &scan);
    if scan.inner_semicolon {
        // A `;` hidden in an executable comment may end the statement early on the server.
        c.kind = StatementKind::Write;
    }
    c.uses_last_insert_id |= scan.last_insert_id;
    c.depends_on_previous |= scan.previous;
    c.nondeterministic = scan.nondet;
    c
}

fn by_first_keyword(sql: &str, toks: &[Token], scan: &Scan) -> Classification {
    let lead = toks.iter().take_while(|t| t.is_punct(sql, "(")).count();
    let Some(first) = toks.get(lead).filter(|t| t.kind == TokKind::Word) else {
        return Classification::write();
    };
    let word = |i: usize, kw: &str| toks.get(i).is_some_and(|t| t.is_word(sql, kw));
    let mut buf = [0u8; 32];
    match lowercase(first.text(sql), &mut buf).unwrap_or(b"") {
        b"select" | b"with" | b"values" | b"table" => read_candidate(sql, toks, scan),
        b"show" => show(sql, toks, scan),
        b"explain" | b"describe" | b"desc" => explain(sql, toks, scan),
        b"analyze" => analyze(sql, toks),
        b"help" | b"checksum" => read_unless_risky(scan),
        b"check" if word(1, "table") || word(1, "tables") || word(1, "view") => {
            read_unless_risky(scan)
        }
        b"use" => use_db(sql, toks),
        b"set" => set(sql, toks, scan),
        b"begin" | b"start" | b"commit" | b"rollback" | b"savepoint" | b"release" => {
            transaction(sql, toks)
        }
        b"prepare" | b"deallocate" => Classification::session(),
        b"drop" if word(1, "prepare") => Classification::session(),
        b"create" => {
            let mut c = Classification::write();
            let skip = if word(1, "or") && word(2, "replace") {
                3
            } else {
                1
            };
            c.creates_temp_table = word(skip, "temporary");
            c
        }
        b"get" if word(1, "diagnostics") || word(2, "diagnostics") => {
            let mut c = Classification::write();
            c.depends_on_previous = true;
            c
        }
        // DML, DDL, account management, CALL, DO, HANDLER, LOCK, FLUSH, XA, EXECUTE,
        // replication and server administration, and anything unknown.
        _ => Classification::write(),
    }
}

fn read_unless_risky(scan: &Scan) -> Classification {
    if scan.risky_call() {
        Classification::write()
    } else {
        Classification::read()
    }
}

/// `SELECT`, `WITH`, `VALUES`, `TABLE` (possibly parenthesized).
fn read_candidate(sql: &str, toks: &[Token], scan: &Scan) -> Classification {
    if scan.forces_leader() {
        let mut c = Classification::write();
        c.modifies_session = scan.into_var || scan.assigns_var;
        return c;
    }
    if scan.assigns_var {
        // `SELECT @v := 1` sets a variable everywhere; from a table it needs the leader's data.
        let mut c = if scan.has_from || scan.unknown_call {
            Classification::write()
        } else {
            Classification::session()
        };
        c.modifies_session = true;
        return c;
    }
    if !scan.unknown_call {
        return Classification::read();
    }
    // A name followed by `(` that is not a known built-in: parse to see whether it is a
    // function call (a stored function may write) or some other syntax.
    let text = parse_text(sql, toks);
    match Parser::parse_sql(&MySqlDialect {}, &text) {
        Ok(stmts) => {
            let mut check = ReadOnlyCheck;
            let write = stmts.iter().any(|s| s.visit(&mut check).is_break());
            let kind = if write {
                StatementKind::Write
            } else {
                StatementKind::Read
            };
            Classification::new(kind, Method::Parsed)
        }
        Err(_) => Classification::new(StatementKind::Write, Method::ParseFailed),
    }
}

/// The statement text for `sqlparser`: the original text, or the tokens joined by spaces
/// when executable comments are involved (the parser does not know them).
fn parse_text(sql: &str, toks: &[Token]) -> String {
    match (toks.first(), toks.last()) {
        (Some(first), Some(last)) if !toks.iter().any(|t| t.in_exec_comment) => {
            sql.get(first.start..last.end).unwrap_or("").to_string()
        }
        _ => {
            let parts: Vec<&str> = toks.iter().map(|t| t.text(sql)).collect();
            parts.join(" ")
        }
    }
}

/// AST visitor that breaks on anything a read-only query must not contain.
struct ReadOnlyCheck;

impl Visitor for ReadOnlyCheck {
    type Break = ();

    fn pre_visit_statement(&mut self, stmt: &Statement) -> ControlFlow<()> {
        match stmt {
            Statement::Query(_) => ControlFlow::Continue(()),
            _ => ControlFlow::Break(()),
        }
    }

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
        if query.locks.is_empty() {
            ControlFlow::Continue(())
        } else {
            ControlFlow::Break(())
        }
    }

    fn pre_visit_select(&mut self, select: &Select) -> ControlFlow<()> {
        if select.into.is_none() {
            ControlFlow::Continue(())
        } else {
            ControlFlow::Break(())
        }
    }

    fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
        match expr {
            Expr::Function(f) if !is_read_only_function(f) => ControlFlow::Break(()),
            _ => ControlFlow::Continue(()),
        }
    }
}

/// A known, unqualified, unquoted built-in that may run on a replica.
fn is_read_only_function(f: &Function) -> bool {
    let [ObjectNamePart::Identifier(ident)] = f.name.0.as_slice() else {
        return false;
    };
    ident.quote_style.is_none()
        && lookup_call(&ident.value)
            .is_some_and(|c| matches!(c.class, FnClass::Pure | FnClass::Nondet | FnClass::Previous))
}

/// `SHOW ...`: a read, except binary log / primary status (only meaningful on the leader).
fn show(sql: &str, toks: &[Token], scan: &Scan) -> Classification {
    let word = |i: usize, kw: &str| toks.get(i).is_some_and(|t| t.is_word(sql, kw));
    let leader_only = ["master", "binary", "binlog", "replicas"]
        .iter()
        .any(|k| word(1, k))
        || (word(1, "slave") && word(2, "hosts"));
    if leader_only || scan.risky_call() {
        return Classification::write();
    }
    let mut c = Classification::read();
    c.depends_on_previous = ["warnings", "errors", "profile", "profiles"]
        .iter()
        .any(|k| word(1, k))
        || (word(1, "count") && ["warnings", "errors"].iter().any(|k| word(5, k)));
    c
}

/// `EXPLAIN` / `DESCRIBE` / `DESC`: a read (nothing executes), except `EXPLAIN ANALYZE`,
/// which executes the statement.
fn explain(sql: &str, toks: &[Token], scan: &Scan) -> Classification {
    let mut i = 1;
    let mut executes = false;
    while let Some(t) = toks.get(i) {
        if t.is_word(sql, "analyze") {
            executes = true;
            i += 1;
        } else if ["extended", "partitions"].iter().any(|k| t.is_word(sql, k)) {
            i += 1;
        } else if t.is_word(sql, "format") && toks.get(i + 1).is_some_and(|n| n.is_punct(sql, "="))
        {
            i += 3;
        } else {
            break;
        }
    }
    let inner = toks.get(i..).unwrap_or(&[]);
    if inner.is_empty() {
        return Classification::write();
    }
    if executes {
        return executed_inner(sql, inner);
    }
    // The optimizer may evaluate constant stored-function calls while explaining.
    read_unless_risky(scan)
}

/// MariaDB `ANALYZE [FORMAT=...] <statement>` executes the statement; `ANALYZE TABLE` writes.
fn analyze(sql: &str, toks: &[Token]) -> Classification {
    let mut i = 1;
    if toks.get(i).is_some_and(|t| t.is_word(sql, "format")) {
        i += 3;
    }
    let inner = toks.get(i..).unwrap_or(&[]);
    let starts_stmt = inner.first().is_some_and(|t| {
        t.is_punct(sql, "(")
            || [
                "select", "with", "values", "insert", "update", "delete", "replace",
            ]
            .iter()
            .any(|k| t.is_word(sql, k))
    });
    if !starts_stmt {
        return Classification::write();
    }
    executed_inner(sql, inner)
}

/// A statement that is executed by a wrapper (`EXPLAIN ANALYZE`, `ANALYZE`): a read only if
/// the statement itself is a read.
fn executed_inner(sql: &str, inner: &[Token]) -> Classification {
    let mut c = classify_statement(sql, inner);
    if c.kind != StatementKind::Read {
        c.kind = StatementKind::Write;
        c.tx_controls.clear();
    }
    c
}

/// `USE db`.
fn use_db(sql: &str, toks: &[Token]) -> Classification {
    match toks {
        [_, db] if matches!(db.kind, TokKind::Word | TokKind::QuotedIdent) => {
            let mut c = Classification::session();
            c.changes_default_db = Some(ident_name(db, sql));
            c
        }
        _ => Classification::write(),
    }
}

/// Transaction control statements; anything else starting with these words is a write
/// (`BEGIN NOT ATOMIC`, `START SLAVE`, `RELEASE_LOCK`-less `RELEASE` garbage...).
fn transaction(sql: &str, toks: &[Token]) -> Classification {
    let word = |i: usize, kw: &str| toks.get(i).is_some_and(|t| t.is_word(sql, kw));
    let only_words = |from: usize, allowed: &[&str]| {
        toks.iter()
            .skip(from)
            .all(|t| t.is_punct(sql, ",") || allowed.iter().any(|k| t.is_word(sql, k)))
    };
    let tx = if word(0, "begin") {
        match toks.len() {
            1 => Some(TxControl::Begin { read_only: false }),
            2 if word(1, "work") => Some(TxControl::Begin { read_only: false }),
            _ => None,
        }
    } else if word(0, "start") && word(1, "transaction") {
        const CHARACTERISTICS: &[&str] =
            &["read", "only", "write", "with", "consistent", "snapshot"];
        only_words(2, CHARACTERISTICS).then(|| TxControl::Begin {
            read_only: (2..toks.len()).any(|i| word(i, "read") && word(i + 1, "only")),
        })
    } else if word(0, "commit") || word(0, "rollback") {
        end_transaction(sql, toks)
    } else if word(0, "savepoint") && toks.len() == 2 {
        Some(TxControl::Savepoint)
    } else if word(0, "release") && word(1, "savepoint") && toks.len() == 3 {
        Some(TxControl::ReleaseSavepoint)
    } else {
        None
    };
    tx.map_or_else(Classification::write, Classification::tx)
}

/// `COMMIT` / `ROLLBACK` with their options, and `ROLLBACK [WORK] TO [SAVEPOINT] x`.
fn end_transaction(sql: &str, toks: &[Token]) -> Option<TxControl> {
    let word = |i: usize, kw: &str| toks.get(i).is_some_and(|t| t.is_word(sql, kw));
    let rollback = word(0, "rollback");
    let to = if word(1, "work") { 2 } else { 1 };
    if rollback && word(to, "to") {
        let name_at = if word(to + 1, "savepoint") {
            to + 2
        } else {
            to + 1
        };
        return (toks.len() == name_at + 1).then_some(TxControl::RollbackToSavepoint);
    }
    const OPTIONS: &[&str] = &["work", "and", "no", "chain", "release"];
    if !toks[1..]
        .iter()
        .all(|t| OPTIONS.iter().any(|k| t.is_word(sql, k)))
    {
        return None;
    }
    let has = |kw: &str| (1..toks.len()).any(|i| word(i, kw) && !word(i - 1, "no"));
    let (chain, release) = (has("chain"), has("release"));
    Some(if rollback {
        TxControl::Rollback { chain, release }
    } else {
        TxControl::Commit { chain, release }
    })
}

/// `SET ...`: session variables, names, transaction characteristics, autocommit.
fn set(sql: &str, toks: &[Token], scan: &Scan) -> Classification {
    let word = |i: usize, kw: &str| toks.get(i).is_some_and(|t| t.is_word(sql, kw));
    if word(1, "statement") {
        return set_statement(sql, toks);
    }
    let scoped = (word(1, "session") || word(1, "local")) as usize;
    if word(1 + scoped, "transaction") {
        return Classification::tx(TxControl::SetTransactionCharacteristics);
    }
    if word(1, "names") || word(1, "charset") || (word(1, "character") && word(2, "set")) {
        return Classification::session();
    }
    if word(1, "role") || (word(1, "resource") && word(2, "group")) {
        return Classification::session();
    }
    let server_wide = ["password", "default", "global", "persist", "persist_only"];
    if server_wide.iter().any(|k| word(1, k)) {
        return Classification::write();
    }
    set_assignments(sql, toks, scan)
}

/// MariaDB `SET STATEMENT var = value [, ...] FOR <statement>`: classified as the statement.
fn set_statement(sql: &str, toks: &[Token]) -> Classification {
    let mut depth = 0i32;
    for (i, t) in toks.iter().enumerate() {
        if t.is_punct(sql, "(") {
            depth += 1;
        } else if t.is_punct(sql, ")") {
            depth -= 1;
        } else if depth == 0 && t.is_word(sql, "for") {
            return classify_statement(sql, &toks[i + 1..]);
        }
    }
    Classification::write()
}

/// `SET a = 1, @b := 2, @@session.c = 3, autocommit = 0`.
fn set_assignments(sql: &str, toks: &[Token], scan: &Scan) -> Classification {
    let mut autocommit = None;
    let mut others = false;
    let mut write = scan.subquery || scan.risky_call() || scan.dml_keyword || toks.len() < 2;
    for assignment in split_top_level(sql, &toks[1..], ",") {
        match assignment_target(sql, assignment) {
            Target::Global | Target::Invalid => write = true,
            Target::Autocommit(Some(on)) => autocommit = Some(on),
            // `SET autocommit = @saved`: the router cannot know the new state.
            Target::Autocommit(None) => write = true,
            Target::Other => others = true,
        }
    }
    let mut c = match (write, autocommit) {
        (true, _) => Classification::write(),
        (false, Some(on)) => Classification::tx(TxControl::SetAutocommit(on)),
        (false, None) => Classification::session(),
    };
    c.modifies_session = others;
    if write {
        c.tx_controls
            .extend(autocommit.map(TxControl::SetAutocommit));
    }
    c
}

/// What a `SET` assignment assigns to.
enum Target {
    Autocommit(Option<bool>),
    /// `GLOBAL` / `PERSIST` scope: server-wide, done on the leader.
    Global,
    Other,
    Invalid,
}

fn assignment_target(sql: &str, toks: &[Token]) -> Target {
    let Some(eq) = toks
        .iter()
        .position(|t| t.is_punct(sql, "=") || t.is_punct(sql, ":="))
    else {
        return Target::Invalid;
    };
    let (target, value) = (&toks[..eq], &toks[eq + 1..]);
    let name = match target {
        [t] if t.kind == TokKind::UserVar => return Target::Other,
        [t] if t.kind == TokKind::SysVar => {
            let text = t.text(sql).trim_start_matches('@');
            let mut parts = text.splitn(2, '.');
            let (scope, name) = match (parts.next(), parts.next()) {
                (Some(scope), Some(name)) => (scope, name),
                _ => ("session", text),
            };
            if ["global", "persist", "persist_only"]
                .iter()
                .any(|g| scope.eq_ignore_ascii_case(g))
            {
                return Target::Global;
            }
            name
        }
        [scope, t] if scope.kind == TokKind::Word => {
            let s = scope.text(sql);
            if ["global", "persist", "persist_only"]
                .iter()
                .any(|g| s.eq_ignore_ascii_case(g))
            {
                return Target::Global;
            }
            if !["session", "local"]
                .iter()
                .any(|g| s.eq_ignore_ascii_case(g))
            {
                return Target::Invalid;
            }
            t.text(sql)
        }
        [t] if t.kind == TokKind::Word => t.text(sql),
        _ => return Target::Invalid,
    };
    if name.eq_ignore_ascii_case("autocommit") {
        Target::Autocommit(autocommit_value(sql, value))
    } else {
        Target::Other
    }
}

fn autocommit_value(sql: &str, value: &[Token]) -> Option<bool> {
    let [t] = value else { return None };
    let text = t.text(sql);
    let text = match t.kind {
        TokKind::Str => text.get(1..text.len().saturating_sub(1)).unwrap_or(""),
        TokKind::Num | TokKind::Word => text,
        _ => return None,
    };
    let is = |v: &str| text.eq_ignore_ascii_case(v);
    if is("1") || is("on") || is("true") {
        Some(true)
    } else if is("0") || is("off") || is("false") {
        Some(false)
    } else {
        None
    }
}

/// Splits `toks` on `sep` outside parentheses.
fn split_top_level<'t>(sql: &str, toks: &'t [Token], sep: &str) -> Vec<&'t [Token]> {
    let mut out = Vec::new();
    let (mut depth, mut from) = (0i32, 0);
    for (i, t) in toks.iter().enumerate() {
        if t.is_punct(sql, "(") {
            depth += 1;
        } else if t.is_punct(sql, ")") {
            depth -= 1;
        } else if depth == 0 && t.is_punct(sql, sep) {
            out.push(&toks[from..i]);
            from = i + 1;
        }
    }
    out.push(&toks[from..]);
    out
}

#[cfg(test)]
mod tests {
    use super::StatementKind::{Read, Session, Transaction as Tx, Write};
    use super::TxControl::*;
    use super::*;

    /// Statement → expected kind. Comments say why when it is not obvious.
    const CORPUS: &[(&str, StatementKind)] = &[
        // Plain reads.
        ("SELECT 1", Read),
        ("select * from t where id = 5", Read),
        ("SELECT a, b FROM t WHERE id = ? LIMIT 1", Read),
        ("  \n\tSELECT 1;", Read),
        ("SeLeCt * FrOm t", Read),
        ("(SELECT 1) UNION (SELECT 2)", Read),
        ("((SELECT a FROM t))", Read),
        ("SELECT COUNT(*), MAX(a), GROUP_CONCAT(b SEPARATOR ',') FROM t GROUP BY c", Read),
        ("SELECT a FROM t WHERE b IN (SELECT b FROM u WHERE EXISTS (SELECT 1))", Read),
        ("SELECT CAST(a AS DECIMAL(10,2)), CONVERT(b, CHAR(3)) FROM t", Read),
        ("SELECT * FROM t USE INDEX (i1) JOIN u USING (id)", Read),
        ("SELECT ROW_NUMBER() OVER (PARTITION BY a ORDER BY b) FROM t", Read),
        ("SELECT NOW(), UUID(), RAND(), SLEEP(0), CURRENT_USER", Read),
        ("SELECT FOUND_ROWS()", Read),
        ("SELECT @@version, @@session.sql_mode, @uservar", Read),
        ("SELECT * FROM information_schema.tables WHERE table_schema = 'x'", Read),
        ("SELECT 'DELETE FROM x'", Read),
        ("SELECT \"INSERT INTO t VALUES (1)\"", Read),
        ("SELECT `update`, `delete` FROM `insert`", Read),
        ("SELECT t.update FROM t", Read),
        ("SELECT 1 -- ; DROP TABLE t", Read),
        ("SELECT 1 # ; DROP TABLE t", Read),
        ("SELECT /* ; DELETE FROM t */ 1", Read),
        ("/* leading comment */ SELECT 1", Read),
        ("SELECT /*!40001 SQL_NO_CACHE */ * FROM t", Read),
        ("SELECT /*+ MAX_EXECUTION_TIME(1000) */ * FROM t", Read),
        ("SELECT REPLACE(a, 'x', 'y'), INSERT(a, 1, 2, 'z') FROM t", Read),
        ("SELECT IF(a > 1, 'y', 'n'), IFNULL(b, 0), COALESCE(c, d) FROM t", Read),
        ("SELECT JSON_EXTRACT(doc, '$.a'), doc->>'$.b' FROM t", Read),
        ("SELECT DATE_FORMAT(NOW(), '%Y'), TIMESTAMPDIFF(SECOND, a, b) FROM t", Read),
        ("SELECT SQL_CALC_FOUND_ROWS * FROM t LIMIT 10", Read),
        ("SELECT * FROM t WHERE a = 'it''s'", Read),
        (r"SELECT * FROM t WHERE a = 'O\'Brien'", Read),
        ("SELECT * FROM t FOR SYSTEM_TIME AS OF TIMESTAMP '2020-01-01'", Read),
        ("SELECT 1 FROM DUAL", Read),
        ("SELECT * FROM t PARTITION (p0)", Read),
        ("WITH x AS (SELECT 1 AS a) SELECT * FROM x", Read),
        ("WITH RECURSIVE r (n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 5) SELECT * FROM r", Read),
        ("VALUES (1, 2), (3, 4)", Read),
        ("VALUES ROW(1, 2), ROW(3, 4)", Read),
        ("SELECT * FROM t WHERE (a, b) = ROW(1, 2)", Read),
        ("TABLE t", Read),
        ("SELECT a FROM t WHERE b = ANY (SELECT b FROM u)", Read),
        ("SELECT CURRENT_TIMESTAMP, LOCALTIME FROM t", Read),
        // Reads that need the leader.
        ("SELECT * FROM t FOR UPDATE", Write),
        ("SELECT * FROM t WHERE id = 1 FOR UPDATE NOWAIT", Write),
        ("SELECT * FROM t FOR SHARE", Write),
        ("SELECT * FROM t LOCK IN SHARE MODE", Write),
        ("SELECT * FROM t WHERE a IN (SELECT a FROM u FOR UPDATE)", Write),
        ("SELECT LAST_INSERT_ID()", Write),
        ("select last_insert_id ( )", Write),
        ("SELECT @@identity", Write),
        ("SELECT @@last_insert_id", Write),
        ("SELECT @@session.identity", Write),
        ("SELECT GET_LOCK('a', 1)", Write),
        ("SELECT RELEASE_LOCK('a')", Write),
        ("SELECT RELEASE_ALL_LOCKS()", Write),
        ("SELECT IS_FREE_LOCK('a')", Write),
        ("SELECT IS_USED_LOCK('a')", Write),
        ("SELECT nextval(s)", Write),
        ("SELECT NEXT VALUE FOR s", Write),
        ("SELECT PREVIOUS VALUE FOR s", Write),
        ("SELECT lastval(s)", Write),
        ("SELECT LOAD_FILE('/etc/passwd')", Write),
        ("SELECT MASTER_POS_WAIT('log', 4)", Write),
        ("SELECT * FROM t INTO OUTFILE '/tmp/x'", Write),
        ("SELECT a INTO @v FROM t", Write),
        ("SELECT a FROM t INTO DUMPFILE '/tmp/x'", Write),
        ("SELECT my_udf(a) FROM t", Write),
        ("SELECT mydb.my_func(1)", Write),
        ("SELECT `weird name`(1)", Write),
        ("SELECT mydb.now()", Write),
        ("SELECT a FROM t PROCEDURE ANALYSE()", Write),
        ("SELECT @a := a FROM t", Write),
        ("WITH x AS (SELECT 1 AS id) UPDATE t JOIN x USING (id) SET t.a = 1", Write),
        ("WITH x AS (SELECT 1) DELETE FROM t", Write),
        ("SELECT 1; DELETE FROM t", Write),
        ("SELECT 1. INTO @x", Write),
        ("SELECT 1.into @x", Write),
        ("SHOW TABLES /*!; DELETE FROM t */", Write),
        ("SELECT 1 /*!; DELETE FROM t */", Write),
        // Writes.
        ("INSERT INTO t VALUES (1)", Write),
        ("insert into t (a, b) select a, b from u", Write),
        ("INSERT INTO t SET a = 1", Write),
        ("INSERT INTO t VALUES (1) ON DUPLICATE KEY UPDATE a = VALUES(a)", Write),
        ("UPDATE t SET a = 1 WHERE id = 2", Write),
        ("DELETE FROM t WHERE id = 1", Write),
        ("REPLACE INTO t VALUES (1)", Write),
        ("LOAD DATA INFILE '/tmp/x' INTO TABLE t", Write),
        ("LOAD DATA LOCAL INFILE 'x.csv' INTO TABLE t FIELDS TERMINATED BY ','", Write),
        ("LOAD XML INFILE 'x.xml' INTO TABLE t", Write),
        ("CREATE TABLE t (a INT PRIMARY KEY)", Write),
        ("CREATE TEMPORARY TABLE tmp (a INT)", Write),
        ("CREATE OR REPLACE TEMPORARY TABLE tmp AS SELECT 1", Write),
        ("CREATE INDEX i ON t (a)", Write),
        ("CREATE VIEW v AS SELECT 1", Write),
        ("CREATE DATABASE d", Write),
        ("CREATE USER 'u'@'%' IDENTIFIED BY 'p'", Write),
        ("CREATE SEQUENCE s START WITH 1", Write),
        ("ALTER TABLE t ADD COLUMN b INT", Write),
        ("ALTER USER 'u'@'%' IDENTIFIED BY 'x'", Write),
        ("DROP TABLE t", Write),
        ("DROP TEMPORARY TABLE IF EXISTS tmp", Write),
        ("DROP USER 'u'@'%'", Write),
        ("RENAME TABLE a TO b", Write),
        ("RENAME USER 'a'@'%' TO 'b'@'%'", Write),
        ("TRUNCATE TABLE t", Write),
        ("TRUNCATE t", Write),
        ("GRANT SELECT ON db.* TO 'u'@'%'", Write),
        ("REVOKE ALL PRIVILEGES ON *.* FROM 'u'@'%'", Write),
        ("CALL p(1, 2)", Write),
        ("CALL p", Write),
        ("DO SLEEP(1)", Write),
        ("DO 1", Write),
        ("HANDLER t OPEN", Write),
        ("HANDLER t READ FIRST", Write),
        ("LOCK TABLES t READ", Write),
        ("LOCK TABLE t WRITE", Write),
        ("UNLOCK TABLES", Write),
        ("FLUSH TABLES", Write),
        ("FLUSH PRIVILEGES", Write),
        ("OPTIMIZE TABLE t", Write),
        ("ANALYZE TABLE t", Write),
        ("ANALYZE NO_WRITE_TO_BINLOG TABLE t", Write),
        ("REPAIR TABLE t", Write),
        ("XA START 'x'", Write),
        ("XA END 'x'", Write),
        ("XA COMMIT 'x'", Write),
        ("EXECUTE stmt USING @a", Write),
        ("KILL 5", Write),
        ("PURGE BINARY LOGS TO 'x'", Write),
        ("RESET MASTER", Write),
        ("START SLAVE", Write),
        ("STOP REPLICA", Write),
        ("CHANGE MASTER TO MASTER_HOST='x'", Write),
        ("INSTALL PLUGIN x SONAME 'x.so'", Write),
        ("SET PASSWORD FOR 'u'@'%' = 'x'", Write),
        ("SET GLOBAL max_connections = 10", Write),
        ("SET @@global.sql_mode = ''", Write),
        ("SET PERSIST max_connections = 10", Write),
        ("SET DEFAULT ROLE r TO 'u'@'%'", Write),
        ("SET @x = (SELECT MAX(id) FROM t)", Write),
        ("SET @id = LAST_INSERT_ID()", Write),
        ("SET @x = my_udf(1)", Write),
        ("SET autocommit = @saved", Write),
        ("CREATE TRIGGER trg BEFORE INSERT ON t FOR EACH ROW SET NEW.a = 1", Write),
        ("CREATE PROCEDURE p() BEGIN SELECT 1; SELECT 2; END", Write),
        ("CREATE FUNCTION f() RETURNS INT DETERMINISTIC RETURN 1", Write),
        ("CREATE EVENT e ON SCHEDULE EVERY 1 DAY DO DELETE FROM t", Write),
        ("BEGIN NOT ATOMIC SELECT 1; END", Write),
        ("GET DIAGNOSTICS @n = NUMBER", Write),
        ("EXPLAIN ANALYZE DELETE FROM t", Write),
        ("ANALYZE DELETE FROM t", Write),
        ("ANALYZE FORMAT=JSON UPDATE t SET a = 1", Write),
        ("EXPLAIN SELECT my_udf(1)", Write),
        ("SHOW MASTER STATUS", Write),
        ("SHOW BINARY LOGS", Write),
        ("SHOW BINLOG EVENTS", Write),
        ("SHOW BINLOG STATUS", Write),
        // Admin reads.
        ("SHOW TABLES", Read),
        ("show full tables from db like 'x%'", Read),
        ("SHOW DATABASES", Read),
        ("SHOW CREATE TABLE t", Read),
        ("SHOW VARIABLES LIKE 'max%'", Read),
        ("SHOW GLOBAL STATUS", Read),
        ("SHOW PROCESSLIST", Read),
        ("SHOW WARNINGS", Read),
        ("SHOW COUNT(*) WARNINGS", Read),
        ("SHOW SLAVE STATUS", Read),
        ("SHOW INDEX FROM t", Read),
        ("DESCRIBE t", Read),
        ("DESC t", Read),
        ("DESCRIBE t col", Read),
        ("EXPLAIN t", Read),
        ("EXPLAIN SELECT * FROM t", Read),
        ("EXPLAIN FORMAT=JSON SELECT * FROM t", Read),
        ("EXPLAIN EXTENDED SELECT 1", Read),
        ("EXPLAIN DELETE FROM t WHERE id = 1", Read),
        ("EXPLAIN UPDATE t SET a = 1", Read),
        ("EXPLAIN INSERT INTO t (a) VALUES (1)", Read),
        ("EXPLAIN ANALYZE SELECT * FROM t", Read),
        ("ANALYZE SELECT * FROM t", Read),
        ("EXPLAIN FOR CONNECTION 5", Read),
        ("HELP 'contents'", Read),
        ("CHECKSUM TABLE t", Read),
        ("CHECK TABLE t", Read),
        // Session commands.
        ("SET NAMES utf8mb4", Session),
        ("SET NAMES 'utf8mb4' COLLATE 'utf8mb4_bin'", Session),
        ("SET CHARACTER SET utf8", Session),
        ("SET sql_mode = 'STRICT_ALL_TABLES'", Session),
        ("SET SESSION sql_mode = ''", Session),
        ("SET @@session.time_zone = '+00:00'", Session),
        ("SET @x = 5", Session),
        ("SET @x := 5", Session),
        ("SET @a = 1, @b = 'two', @c = @a + 1", Session),
        ("SET sql_mode = CONCAT(@@sql_mode, ',NO_ZERO_DATE')", Session),
        ("SET @t = NOW()", Session),
        ("SET ROLE ALL", Session),
        ("USE db", Session),
        ("use `my db`", Session),
        ("PREPARE s FROM 'SELECT ?'", Session),
        ("DEALLOCATE PREPARE s", Session),
        ("DROP PREPARE s", Session),
        ("SELECT @a := 1", Session),
        ("/*!40101 SET NAMES utf8 */", Session),
        ("/*!40101 SET @OLD_SQL_MODE=@@SQL_MODE, SQL_MODE='NO_AUTO_VALUE_ON_ZERO' */", Session),
        ("/*!40101 SET NAMES utf8 */; SELECT 1", Session),
        ("SET STATEMENT max_statement_time = 1 FOR SELECT * FROM t", Read),
        ("SET STATEMENT max_statement_time = 1 FOR UPDATE t SET a = 1", Write),
        // Transaction control.
        ("BEGIN", Tx(Begin { read_only: false })),
        ("begin work", Tx(Begin { read_only: false })),
        ("START TRANSACTION", Tx(Begin { read_only: false })),
        ("START TRANSACTION READ ONLY", Tx(Begin { read_only: true })),
        ("START TRANSACTION READ WRITE", Tx(Begin { read_only: false })),
        ("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY", Tx(Begin { read_only: true })),
        ("COMMIT", Tx(Commit { chain: false, release: false })),
        ("COMMIT WORK", Tx(Commit { chain: false, release: false })),
        ("COMMIT AND CHAIN", Tx(Commit { chain: true, release: false })),
        ("COMMIT AND NO CHAIN NO RELEASE", Tx(Commit { chain: false, release: false })),
        ("COMMIT RELEASE", Tx(Commit { chain: false, release: true })),
        ("ROLLBACK", Tx(Rollback { chain: false, release: false })),
        ("ROLLBACK WORK AND CHAIN", Tx(Rollback { chain: true, release: false })),
        ("ROLLBACK TO SAVEPOINT sp1", Tx(RollbackToSavepoint)),
        ("ROLLBACK WORK TO sp1", Tx(RollbackToSavepoint)),
        ("SAVEPOINT sp1", Tx(Savepoint)),
        ("RELEASE SAVEPOINT sp1", Tx(ReleaseSavepoint)),
        ("SET autocommit = 0", Tx(SetAutocommit(false))),
        ("SET autocommit=1", Tx(SetAutocommit(true))),
        ("set AUTOCOMMIT = ON", Tx(SetAutocommit(true))),
        ("SET autocommit = OFF", Tx(SetAutocommit(false))),
        ("SET @@autocommit = 0", Tx(SetAutocommit(false))),
        ("SET @@session.autocommit = 1", Tx(SetAutocommit(true))),
        ("SET SESSION autocommit = 'OFF'", Tx(SetAutocommit(false))),
        ("SET autocommit = 0, sql_mode = 'ANSI'", Tx(SetAutocommit(false))),
        ("SET TRANSACTION ISOLATION LEVEL READ COMMITTED", Tx(SetTransactionCharacteristics)),
        ("SET SESSION TRANSACTION READ ONLY", Tx(SetTransactionCharacteristics)),
        ("SET GLOBAL TRANSACTION ISOLATION LEVEL SERIALIZABLE", Write),
        // Garbage and the unknown: always the leader.
        ("", Read),
        ("   ", Read),
        ("-- only a comment", Read),
        ("SELEC 1", Write),
        ("GIBBERISH", Write),
        ("'just a string'", Write),
        ("SELECT 'unterminated", Write),
        ("SELECT 1 /* unterminated", Write),
        ("BEGIN WHATEVER", Write),
        ("RELEASE", Write),
        ("START", Write),
        ("USE", Write),
        ("SET", Write),
        ("SET x", Write),
        ("EXPLAIN", Write),
        (")(", Write),
        (";", Read),
    ];

    #[test]
    fn corpus() {
        let failures: Vec<String> = CORPUS
            .iter()
            .filter_map(|(sql, want)| {
                let got = classify(sql);
                (got.kind != *want).then(|| format!("{sql:?}: want {want:?}, got {got:?}"))
            })
            .collect();
        assert!(failures.is_empty(), "{}", failures.join("\n"));
        assert!(
            CORPUS.len() >= 150,
            "corpus has {} statements",
            CORPUS.len()
        );
    }

    #[test]
    fn fast_path_avoids_the_parser() {
        for sql in [
            "SELECT * FROM t WHERE id = 5",
            "SELECT a, COUNT(*) FROM t JOIN u ON t.id = u.id GROUP BY a",
            "SHOW TABLES",
            "INSERT INTO t VALUES (1)",
        ] {
            assert_eq!(classify(sql).method, Method::Tokens, "{sql}");
        }
        let c = classify("SELECT * FROM t WHERE a = ANY (SELECT a FROM u)");
        assert_eq!((c.kind, c.method), (Read, Method::Parsed));
        let c = classify("SELECT my_udf(1)");
        assert_eq!((c.kind, c.method), (Write, Method::Parsed));
        let c = classify("SELECT my_udf(1) LOCK IN SHARE MODE");
        assert_eq!(c.kind, Write);
        let c =
            classify("SELECT some_func(1) FROM t WHERE MATCH (a) AGAINST ('x' WITH SYNTAX ERROR)");
        assert_eq!((c.kind, c.method), (Write, Method::ParseFailed));
        assert!(c.parsed());
    }

    #[test]
    fn flags() {
        assert!(classify("SELECT LAST_INSERT_ID()").uses_last_insert_id);
        assert!(classify("SELECT @@IDENTITY").uses_last_insert_id);
        assert!(classify("INSERT INTO t2 VALUES (LAST_INSERT_ID())").uses_last_insert_id);
        assert!(!classify("SELECT 1").uses_last_insert_id);

        assert!(classify("CREATE TEMPORARY TABLE x (a INT)").creates_temp_table);
        assert!(!classify("CREATE TABLE x (a INT)").creates_temp_table);

        let c = classify("USE `shop``db`");
        assert_eq!(c.changes_default_db.as_deref(), Some("shop`db"));
        assert_eq!(
            classify("USE shop").changes_default_db.as_deref(),
            Some("shop")
        );

        assert!(classify("SELECT FOUND_ROWS()").depends_on_previous);
        assert!(classify("SELECT ROW_COUNT()").depends_on_previous);
        assert!(classify("SHOW WARNINGS").depends_on_previous);
        assert!(classify("SHOW COUNT(*) ERRORS").depends_on_previous);
        assert!(!classify("SHOW TABLES").depends_on_previous);

        let c = classify("SELECT a INTO @v FROM t");
        assert!(c.kind == Write && c.modifies_session);
        let c = classify("SET autocommit = 0, sql_mode = ''");
        assert!(c.modifies_session);
        assert_eq!(c.tx_controls, [SetAutocommit(false)]);
        let c = classify("SET autocommit = 0, @x = (SELECT 1)");
        assert_eq!((c.kind, c.tx_controls), (Write, vec![SetAutocommit(false)]));
        assert!(!classify("SET autocommit = 1").modifies_session);
    }

    #[test]
    fn nondeterministic_functions() {
        let c = classify("INSERT INTO t VALUES (UUID(), NOW(), now(), RAND(), CURRENT_USER)");
        assert_eq!(c.nondeterministic, ["uuid", "now", "rand", "current_user"]);
        let c = classify("SELECT SYSDATE(), UUID_SHORT(), RANDOM_BYTES(4), USER(), SESSION_USER()");
        assert_eq!(
            c.nondeterministic,
            [
                "sysdate",
                "uuid_short",
                "random_bytes",
                "user",
                "session_user"
            ]
        );
        assert_eq!(
            classify("SELECT GET_LOCK('a', 1)").nondeterministic,
            ["get_lock"]
        );
        assert!(classify("SELECT a FROM t").nondeterministic.is_empty());
        assert!(classify("SELECT 'now()'").nondeterministic.is_empty());
    }

    #[test]
    fn leader_hints() {
        for sql in [
            "SELECT 1 /* shared-db: leader */",
            "/* shared-db:leader */ SELECT 1",
            "SELECT * FROM t -- maxscale route to master",
            "SELECT 1; SELECT 2 # maxscale route to master",
        ] {
            let c = classify(sql);
            assert!(c.force_leader, "{sql}");
            assert_eq!(c.kind, Read, "hints do not change the kind: {sql}");
        }
        assert!(!classify("SELECT '-- maxscale route to master'").force_leader);
        assert!(!classify("SELECT 1 /* leader */").force_leader);
    }

    #[test]
    fn multi_statement_combination() {
        let c = classify_multi("SELECT 1; SELECT 2");
        assert_eq!((c.kind, c.is_multi), (Read, true));
        assert_eq!(classify_multi("SET NAMES utf8; SELECT 1").kind, Session);
        assert_eq!(classify_multi("SET @a = 1; SET @b = 2").kind, Session);
        assert_eq!(
            classify_multi("SELECT 1; INSERT INTO t VALUES (1)").kind,
            Write
        );
        let c = classify_multi("BEGIN; INSERT INTO t VALUES (1); COMMIT;");
        assert_eq!(c.kind, Write);
        assert_eq!(
            c.tx_controls,
            [
                Begin { read_only: false },
                Commit {
                    chain: false,
                    release: false
                }
            ]
        );
        let c = classify_multi("USE a; SELECT 1; USE b");
        assert_eq!(
            (c.kind, c.changes_default_db.as_deref()),
            (Session, Some("b"))
        );
        let c = classify_multi("SELECT 1;;  ; ");
        assert_eq!((c.kind, c.is_multi), (Read, false));
        let c = classify_multi("SELECT NOW(); SELECT UUID(), NOW()");
        assert_eq!(c.nondeterministic, ["now", "uuid"]);
        let c = classify_multi("SELECT 1; SELECT LAST_INSERT_ID()");
        assert!(c.kind == Write && c.uses_last_insert_id);
        assert_eq!(classify_multi("SET autocommit = 0; SELECT 1").kind, Write);
    }

    #[test]
    fn splitting() {
        assert_eq!(
            split_statements("SELECT 1; SELECT 2;"),
            ["SELECT 1", "SELECT 2"]
        );
        assert_eq!(
            split_statements("SELECT ';'; SELECT \";\"; SELECT `a;b` FROM t"),
            ["SELECT ';'", "SELECT \";\"", "SELECT `a;b` FROM t"]
        );
        assert_eq!(
            split_statements("SELECT 1 -- x; y\n; /* ; */ SELECT 2 # ;"),
            ["SELECT 1 -- x; y", "/* ; */ SELECT 2 # ;"]
        );
        assert_eq!(split_statements(r"SELECT 'a\';b'; SELECT 2").len(), 2);
        assert!(split_statements("").is_empty());
        assert!(split_statements(" ; ;\n;").is_empty());
        assert_eq!(
            split_statements("SELECT 1;;SELECT 2"),
            ["SELECT 1", "SELECT 2"]
        );
        assert_eq!(split_statements("SELECT 1; -- trailing"), ["SELECT 1"]);
    }

    #[test]
    fn splitting_keeps_stored_program_bodies() {
        let proc = "CREATE DEFINER=`root`@`%` PROCEDURE p(IN x INT)\nBEGIN\n  DECLARE i INT DEFAULT 0;\n  \
                    lbl: WHILE i < x DO\n    SET i = i + 1;\n    IF i = 3 THEN ITERATE lbl; END IF;\n    \
                    INSERT INTO t VALUES (IF(i > 1, i, 0));\n  END WHILE lbl;\n  \
                    REPEAT SET i = i - 1; UNTIL i = 0 END REPEAT;\n  \
                    CASE WHEN x = 1 THEN SELECT 1; ELSE BEGIN SELECT CASE x WHEN 2 THEN 'b' END; END; END CASE;\nEND";
        let sql = format!("{proc}; CALL p(3); SELECT 1");
        let parts = split_statements(&sql);
        assert_eq!(parts, [proc, "CALL p(3)", "SELECT 1"]);
        let trigger = "CREATE TRIGGER trg BEFORE UPDATE ON t FOR EACH ROW IF NEW.a < 0 THEN SET NEW.a = 0; END IF";
        assert_eq!(
            split_statements(&format!("{trigger};SELECT 1")),
            [trigger, "SELECT 1"]
        );
        let func = "CREATE FUNCTION f(x INT) RETURNS INT DETERMINISTIC BEGIN RETURN x + 1; END";
        assert_eq!(
            split_statements(&format!("{func}; SELECT f(1)")),
            [func, "SELECT f(1)"]
        );
        let event =
            "CREATE EVENT e ON SCHEDULE EVERY 1 HOUR DO BEGIN DELETE FROM t; DELETE FROM u; END";
        assert_eq!(split_statements(&format!("{event};")), [event]);
        // A body-less routine still ends at its `;`.
        let one = "CREATE PROCEDURE q() SELECT 1";
        assert_eq!(
            split_statements(&format!("{one}; SELECT 2")),
            [one, "SELECT 2"]
        );
        // A transaction `BEGIN` is not a block.
        assert_eq!(split_statements("BEGIN; SELECT 1; END").len(), 3);
        let c = classify_multi(&sql);
        assert_eq!((c.kind, c.is_multi), (Write, true));
    }

    #[test]
    fn ambiguous_backslash_escapes() {
        // With NO_BACKSLASH_ESCAPES the DELETE would run: both readings must agree on Read.
        let sql = r"SELECT 'a\'; DELETE FROM t; SELECT '";
        assert_eq!(classify(sql).kind, Write);
        // The other reading is an unterminated string: the server would reject it.
        assert_eq!(classify(r"SELECT 'it\'s'").kind, Read);
        // The other reading is garbage without any write in it: still a read.
        assert_eq!(classify(r"SELECT 'it\'s', 'a\'b'").kind, Read);
        assert_eq!(
            classify(r"SELECT 'it\'s', 'a\' INTO OUTFILE 'b'").kind,
            Write
        );
        let sql = r"SELECT 'a\\'; SELECT 'b';";
        assert_eq!((classify(sql).kind, classify(sql).is_multi), (Read, true));
        // Unterminated in the default reading.
        assert_eq!(classify(r"SELECT 'a\'; SELECT 'b';").kind, Write);
    }

    #[test]
    fn executable_comments_are_read_both_ways() {
        // A server older than the version skips the comment and sees a different statement.
        assert_eq!(classify("/*!99999 SELECT 1, */ FLUSH TABLES").kind, Write);
        assert_eq!(classify("SELECT 1 /*!50000 , my_udf() */").kind, Write);
        assert_eq!(
            classify("SELECT /*!50000 STRAIGHT_JOIN */ a FROM t").kind,
            Read
        );
        assert_eq!(
            classify("/*!40000 ALTER TABLE t DISABLE KEYS */").kind,
            Write
        );
    }

    /// A tiny deterministic PRNG (xorshift) so the fuzz test needs no dependency.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    #[test]
    fn random_input_never_panics_and_is_never_a_surprise_read() {
        const PIECES: &[&str] = &[
            "SELECT ",
            "INSERT ",
            "(",
            ")",
            "'",
            "\"",
            "`",
            "\\",
            ";",
            "--",
            " -- ",
            "#",
            "/*",
            "*/",
            "/*!",
            "/*!40101",
            "/*+",
            "@",
            "@@",
            ":=",
            "=",
            ",",
            ".",
            "BEGIN ",
            "END ",
            "IF ",
            "CASE ",
            "FOR UPDATE",
            " INTO ",
            "x",
            "1",
            " ",
            "\n",
            "é",
            "\0",
            "CREATE PROCEDURE ",
        ];
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        for _ in 0..4000 {
            let len = (rng.next() % 24) as usize;
            let mut s = String::new();
            for _ in 0..len {
                if rng.next().is_multiple_of(3) {
                    // Arbitrary (valid UTF-8) characters.
                    let c = char::from_u32((rng.next() % 0x300) as u32).unwrap_or('?');
                    s.push(c);
                } else {
                    s.push_str(PIECES[(rng.next() % PIECES.len() as u64) as usize]);
                }
            }
            let c = classify(&s);
            let _ = split_statements(&s);
            let _ = c.parsed();
        }
        let bytes: Vec<u8> = (0..20_000)
            .map(|_| (XorShift::next(&mut rng) % 256) as u8)
            .collect();
        let garbage = String::from_utf8_lossy(&bytes);
        assert_ne!(classify(&garbage).kind, Read);
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_strings_do_not_panic(s in ".{0,200}") {
            let _ = classify(&s);
            let _ = split_statements(&s);
        }
    }
}
