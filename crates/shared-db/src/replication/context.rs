//! Statement context: the session values a statement's result depends on, captured on the
//! leader and replayed with `SET` before the statement on every node (as MariaDB's
//! statement-based binlog does with its Query, Rand, Intvar and User_var events).

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

/// A user variable's value as the leader saw it before the statement ran.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "t", content = "v", rename_all = "snake_case")]
pub enum UserValue {
    Null,
    /// An integer or decimal, as digits (keeps its type when replayed as a literal).
    Number(String),
    /// A floating-point value, as text (replayed as a double literal).
    Real(String),
    /// A string: hex of its bytes and its character set.
    Str {
        hex: String,
        charset: String,
    },
}

impl UserValue {
    /// The value as an SQL literal of the same type.
    pub fn to_sql(&self) -> String {
        match self {
            UserValue::Null => "NULL".into(),
            UserValue::Number(n) => n.clone(),
            UserValue::Real(r) => {
                if r.contains(['e', 'E']) {
                    r.clone()
                } else {
                    format!("{r}e0")
                }
            }
            UserValue::Str { hex, charset } => {
                let lit = if hex.is_empty() {
                    "''".to_string()
                } else {
                    format!("X'{hex}'")
                };
                if charset == "binary" {
                    format!("_binary {lit}")
                } else {
                    format!("CONVERT({lit} USING {charset})")
                }
            }
        }
    }
}

/// The context of one statement.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatementContext {
    /// `SET TIMESTAMP`: seconds and microseconds since the epoch, the leader's clock.
    pub ts_secs: i64,
    pub ts_micros: u32,
    pub rand_seed1: u32,
    pub rand_seed2: u32,
    /// `SET INSERT_ID`: the first auto-increment value the statement generated on the leader.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insert_id: Option<u64>,
    /// `SET LAST_INSERT_ID`: what `LAST_INSERT_ID()` returned before the statement.
    pub last_insert_id: u64,
    /// User variables the statement refers to, with their values before it ran.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub user_vars: Vec<(String, UserValue)>,
    /// Default database (`None`: none selected).
    pub db: Option<String>,
    pub sql_mode: String,
    pub time_zone: String,
    pub character_set_client: String,
    pub collation_connection: String,
    pub foreign_key_checks: bool,
    pub unique_checks: bool,
    /// `CONNECTION_ID()` on the leader (replayed as `pseudo_thread_id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread_id: Option<u32>,
}

/// Quotes a string literal (single quotes, backslashes and quotes escaped both ways).
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        match c {
            '\'' => out.push_str("''"),
            '\\' => out.push_str("\\\\"),
            '\0' => out.push_str("\\0"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// Quotes an identifier with backticks.
pub fn quote_ident(s: &str) -> String {
    format!("`{}`", s.replace('`', "``"))
}

/// Character set and collation names are plain identifiers; anything else is replaced by a
/// safe default rather than spliced into SQL.
fn plain_name(s: &str, default: &str) -> String {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        s.to_string()
    } else {
        default.to_string()
    }
}

impl StatementContext {
    /// The `SET` statement that reproduces this context on an applier connection (the default
    /// database is switched separately).
    pub fn to_set_sql(&self) -> String {
        self.to_set_sql_after(None)
    }

    /// The `SET` statement that reproduces this context on a connection where `prev`'s was
    /// the last one set: the per-statement values always, the session settings only where
    /// they differ from `prev`'s (all of them without `prev`).
    pub fn to_set_sql_after(&self, prev: Option<&StatementContext>) -> String {
        let mut s = String::with_capacity(256);
        let _ = write!(
            s,
            "SET TIMESTAMP={}.{:06}, @@rand_seed1={}, @@rand_seed2={}, LAST_INSERT_ID={}",
            self.ts_secs, self.ts_micros, self.rand_seed1, self.rand_seed2, self.last_insert_id
        );
        if let Some(id) = self.insert_id {
            let _ = write!(s, ", INSERT_ID={id}");
        }
        if prev.is_none_or(|p| p.sql_mode != self.sql_mode) {
            let _ = write!(s, ", @@session.sql_mode={}", quote(&self.sql_mode));
        }
        if prev.is_none_or(|p| p.time_zone != self.time_zone) {
            let _ = write!(s, ", @@session.time_zone={}", quote(&self.time_zone));
        }
        if prev.is_none_or(|p| p.character_set_client != self.character_set_client) {
            let _ = write!(
                s,
                ", @@session.character_set_client={}",
                plain_name(&self.character_set_client, "utf8mb4")
            );
        }
        if prev.is_none_or(|p| p.collation_connection != self.collation_connection) {
            let _ = write!(
                s,
                ", @@session.collation_connection={}",
                plain_name(&self.collation_connection, "utf8mb4_general_ci")
            );
        }
        if prev.is_none_or(|p| p.foreign_key_checks != self.foreign_key_checks) {
            let _ = write!(
                s,
                ", @@session.foreign_key_checks={}",
                u8::from(self.foreign_key_checks)
            );
        }
        if prev.is_none_or(|p| p.unique_checks != self.unique_checks) {
            let _ = write!(
                s,
                ", @@session.unique_checks={}",
                u8::from(self.unique_checks)
            );
        }
        if let Some(id) = self
            .thread_id
            .filter(|_| prev.is_none_or(|p| p.thread_id != self.thread_id))
        {
            let _ = write!(s, ", @@session.pseudo_thread_id={id}");
        }
        for (name, value) in &self.user_vars {
            let _ = write!(s, ", @{}={}", quote_ident(name), value.to_sql());
        }
        s
    }

    /// The part of the context the leader pins on its own session before running the
    /// statement (the rest is read from the session).
    pub fn pin_sql(&self) -> String {
        format!(
            "SET TIMESTAMP={}.{:06}, @@rand_seed1={}, @@rand_seed2={}",
            self.ts_secs, self.ts_micros, self.rand_seed1, self.rand_seed2
        )
    }

    /// A fresh timestamp and random seeds, from the leader's clock and the OS.
    pub fn fresh() -> Self {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let mut seeds = [0u8; 8];
        let _ = getrandom::fill(&mut seeds);
        StatementContext {
            ts_secs: i64::try_from(now.as_secs()).unwrap_or(0),
            ts_micros: now.subsec_micros(),
            // MariaDB keeps the seeds modulo 0x3FFFFFFF.
            rand_seed1: u32::from_le_bytes([seeds[0], seeds[1], seeds[2], seeds[3]]) % 0x3FFF_FFFF,
            rand_seed2: u32::from_le_bytes([seeds[4], seeds[5], seeds[6], seeds[7]]) % 0x3FFF_FFFF,
            foreign_key_checks: true,
            unique_checks: true,
            sql_mode: "STRICT_TRANS_TABLES,ERROR_FOR_DIVISION_BY_ZERO,NO_AUTO_CREATE_USER,\
                       NO_ENGINE_SUBSTITUTION"
                .into(),
            time_zone: "SYSTEM".into(),
            character_set_client: "utf8mb4".into(),
            collation_connection: "utf8mb4_general_ci".into(),
            ..Default::default()
        }
    }
}

/// Names of the user variables (`@name`) a statement mentions, outside strings, quoted
/// identifiers and comments. `@@system` variables and `user@host` account names are skipped.
pub fn user_variables(sql: &str) -> Vec<String> {
    use crate::sql::lexer::{lex, Escapes, TokKind};
    let lexed = lex(sql, Escapes::Backslash);
    let mut out: Vec<String> = Vec::new();
    for (k, t) in lexed.tokens.iter().enumerate() {
        if t.kind != TokKind::UserVar {
            continue;
        }
        // `app@localhost`, `'x'@'%'`: the `@` of an account name follows its user part.
        let account = k > 0 && {
            let p = &lexed.tokens[k - 1];
            p.end == t.start
                && matches!(p.kind, TokKind::Word | TokKind::Str | TokKind::QuotedIdent)
        };
        let name = &sql[t.start + 1..t.end];
        let plain = !name.is_empty()
            && name
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'$' | b'.') || c >= 0x80);
        if !account && plain {
            let name = name.to_ascii_lowercase();
            if !out.contains(&name) {
                out.push(name);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_variables_are_found_outside_strings_and_accounts() {
        assert_eq!(
            user_variables("INSERT INTO t VALUES (@a, @B, '@c', @@sql_mode, `@d`) -- @e"),
            vec!["a", "b"]
        );
        assert_eq!(
            user_variables("GRANT ALL ON *.* TO app@localhost, 'x'@'%'"),
            Vec::<String>::new()
        );
        assert_eq!(user_variables("SET @x := @x + 1 /* @y */"), vec!["x"]);
        assert_eq!(
            user_variables("SELECT 1 /*!50001 + @z */, \"@q\""),
            vec!["z"]
        );
    }

    #[test]
    fn context_renders_a_single_set() {
        let mut c = StatementContext::fresh();
        c.ts_secs = 100;
        c.ts_micros = 5;
        c.sql_mode = "STRICT_TRANS_TABLES".into();
        c.time_zone = "+00:00".into();
        c.character_set_client = "utf8mb4".into();
        c.collation_connection = "utf8mb4_general_ci; DROP".into();
        c.insert_id = Some(7);
        c.user_vars = vec![
            ("v".into(), UserValue::Real("1.5".into())),
            (
                "s".into(),
                UserValue::Str {
                    hex: "6869".into(),
                    charset: "utf8mb4".into(),
                },
            ),
        ];
        let sql = c.to_set_sql();
        assert!(
            sql.starts_with("SET TIMESTAMP=100.000005, @@rand_seed1="),
            "{sql}"
        );
        assert!(sql.contains("INSERT_ID=7"), "{sql}");
        assert!(
            sql.contains("collation_connection=utf8mb4_general_ci,"),
            "{sql}"
        );
        assert!(sql.contains("@`v`=1.5e0"), "{sql}");
        assert!(sql.contains("@`s`=CONVERT(X'6869' USING utf8mb4)"), "{sql}");
    }
}
