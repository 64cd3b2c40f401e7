//! Which tables a statement writes, and which tables a trigger body inserts into: the text
//! side of the check that refuses writes firing triggers that insert into `AUTO_INCREMENT`
//! tables (see `replication::triggers`).
//!
//! Both answers err on the side of naming too many tables: for multi-table `UPDATE` and
//! `DELETE` every name in the table references counts (aliases and join columns included),
//! which can only make the check look at a table that has no such trigger.

use super::lexer::{lex, Escapes, TokKind, Token};

/// A table as written: `db.table` or `table` (the session's default database).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TableName {
    pub db: Option<String>,
    pub table: String,
}

/// What a write statement may fire triggers on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Writes {
    pub tables: Vec<TableName>,
    /// Trigger events it can fire (`INSERT`, `UPDATE`, `DELETE`).
    pub events: Vec<&'static str>,
}

struct Text<'a> {
    sql: &'a str,
    toks: Vec<Token>,
    depth: Vec<u32>,
}

impl<'a> Text<'a> {
    fn new(sql: &'a str) -> Self {
        let toks = lex(sql, Escapes::Backslash).tokens;
        let mut depth = Vec::with_capacity(toks.len());
        let mut d = 0u32;
        for t in &toks {
            if t.is_punct(sql, ")") {
                d = d.saturating_sub(1);
            }
            depth.push(d);
            if t.is_punct(sql, "(") {
                d += 1;
            }
        }
        Text { sql, toks, depth }
    }

    fn word(&self, i: usize, kw: &str) -> bool {
        self.toks.get(i).is_some_and(|t| t.is_word(self.sql, kw))
    }

    fn punct(&self, i: usize, p: &str) -> bool {
        self.toks.get(i).is_some_and(|t| t.is_punct(self.sql, p))
    }

    fn ident(&self, i: usize) -> Option<String> {
        let t = self.toks.get(i)?;
        match t.kind {
            TokKind::Word => Some(t.text(self.sql).to_string()),
            TokKind::QuotedIdent => {
                let s = t.text(self.sql);
                let inner = s.strip_prefix('`')?.strip_suffix('`')?;
                Some(inner.replace("``", "`"))
            }
            _ => None,
        }
    }

    /// A `name` or `db.name` at `i`, and the index after it.
    fn table_at(&self, i: usize) -> Option<(TableName, usize)> {
        let first = self.ident(i)?;
        if self.punct(i + 1, ".") {
            if let Some(second) = self.ident(i + 2) {
                return Some((
                    TableName {
                        db: Some(first),
                        table: second,
                    },
                    i + 3,
                ));
            }
        }
        Some((
            TableName {
                db: None,
                table: first,
            },
            i + 1,
        ))
    }

    /// The target of the `INSERT`/`REPLACE` at `i` (not the string functions of those names).
    fn insert_target(&self, i: usize) -> Option<TableName> {
        if self.punct(i + 1, "(") {
            return None;
        }
        let mut j = i + 1;
        while ["low_priority", "delayed", "high_priority", "ignore", "into"]
            .iter()
            .any(|kw| self.word(j, kw))
        {
            j += 1;
        }
        self.table_at(j).map(|(t, _)| t)
    }

    /// Every name (or `db.name`) in `from..to` at paren depth 0, keywords of table
    /// references aside.
    fn names(&self, from: usize, to: usize) -> Vec<TableName> {
        const KEYWORDS: &[&str] = &[
            "from",
            "using",
            "join",
            "inner",
            "left",
            "right",
            "outer",
            "cross",
            "natural",
            "straight_join",
            "on",
            "as",
            "and",
            "or",
            "not",
            "low_priority",
            "quick",
            "ignore",
            "partition",
            "use",
            "force",
            "index",
            "key",
            "for",
        ];
        let mut out = Vec::new();
        let mut i = from;
        while i < to {
            let keyword =
                self.toks[i].kind == TokKind::Word && KEYWORDS.iter().any(|k| self.word(i, k));
            if self.depth[i] == 0 && !keyword {
                if let Some((t, next)) = self.table_at(i) {
                    out.push(t);
                    i = next;
                    continue;
                }
            }
            i += 1;
        }
        out
    }

    /// The first depth-0 token at or after `from` that is one of `kws`, or the end.
    fn until(&self, from: usize, kws: &[&str]) -> usize {
        (from..self.toks.len())
            .find(|&i| self.depth[i] == 0 && kws.iter().any(|k| self.word(i, k)))
            .unwrap_or(self.toks.len())
    }
}

/// The tables a write statement may fire triggers on, and the events.
pub fn writes(sql: &str) -> Writes {
    let t = Text::new(sql);
    // `WITH ... INSERT/UPDATE/DELETE`: the statement starts at the first DML verb at depth 0.
    let Some(start) = (0..t.toks.len()).find(|&i| {
        t.depth[i] == 0
            && ["insert", "replace", "update", "delete", "load"]
                .iter()
                .any(|k| t.word(i, k))
    }) else {
        return Writes::default();
    };
    let verb = t.toks[start].text(sql).to_ascii_lowercase();
    match verb.as_str() {
        "insert" | "replace" => {
            let mut events = vec!["INSERT"];
            if verb == "replace" {
                events.push("DELETE");
            }
            let upsert = (start..t.toks.len()).any(|i| {
                t.depth[i] == 0
                    && t.word(i, "duplicate")
                    && t.word(i + 1, "key")
                    && t.word(i + 2, "update")
            });
            if upsert {
                events.push("UPDATE");
            }
            Writes {
                tables: t.insert_target(start).into_iter().collect(),
                events,
            }
        }
        "update" => Writes {
            tables: t.names(start + 1, t.until(start + 1, &["set"])),
            events: vec!["UPDATE"],
        },
        "delete" => Writes {
            tables: t.names(
                start + 1,
                t.until(start + 1, &["where", "order", "limit", "returning"]),
            ),
            events: vec!["DELETE"],
        },
        _ => {
            // LOAD DATA ... INTO TABLE name (REPLACE deletes the rows it replaces).
            let into = (start..t.toks.len()).find(|&i| t.word(i, "into") && t.word(i + 1, "table"));
            Writes {
                tables: into
                    .and_then(|i| t.table_at(i + 2))
                    .map(|(n, _)| n)
                    .into_iter()
                    .collect(),
                events: vec!["INSERT", "DELETE"],
            }
        }
    }
}

/// `CREATE TEMPORARY TABLE` / `DROP TEMPORARY TABLE`: DDL that changes no shared schema.
pub fn is_temporary_table_ddl(sql: &str) -> bool {
    let t = Text::new(sql);
    (t.word(0, "create") || t.word(0, "drop")) && t.word(1, "temporary")
}

/// Every table the text inserts into (`INSERT`/`REPLACE` targets anywhere in it, e.g. in a
/// trigger's `BEGIN … END` body).
pub fn inserted_tables(body: &str) -> Vec<TableName> {
    let t = Text::new(body);
    (0..t.toks.len())
        .filter(|&i| t.word(i, "insert") || t.word(i, "replace"))
        .filter_map(|i| t.insert_target(i))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(db: Option<&str>, table: &str) -> TableName {
        TableName {
            db: db.map(str::to_string),
            table: table.to_string(),
        }
    }

    #[test]
    fn insert_targets_and_events() {
        let w = writes("INSERT LOW_PRIORITY IGNORE INTO `app`.`t``x` (a) VALUES (1)");
        assert_eq!(w.tables, [n(Some("app"), "t`x")]);
        assert_eq!(w.events, ["INSERT"]);
        let w = writes("insert t values (1) on duplicate key update a = a + 1");
        assert_eq!(w.tables, [n(None, "t")]);
        assert_eq!(w.events, ["INSERT", "UPDATE"]);
        let w = writes("REPLACE INTO t SELECT * FROM s ORDER BY id");
        assert_eq!(w.tables, [n(None, "t")]);
        assert_eq!(w.events, ["INSERT", "DELETE"]);
        let w = writes("WITH c AS (SELECT 1) INSERT INTO d.t SELECT * FROM c");
        assert_eq!(w.tables, [n(Some("d"), "t")]);
    }

    #[test]
    fn update_and_delete_name_every_table_reference() {
        let w = writes("UPDATE a JOIN b.c ON a.id = c.id SET a.x = REPLACE(a.x, 'p', 'q')");
        assert!(w.tables.contains(&n(None, "a")), "{:?}", w.tables);
        assert!(w.tables.contains(&n(Some("b"), "c")), "{:?}", w.tables);
        assert_eq!(w.events, ["UPDATE"]);
        let w = writes("DELETE t1, t2 FROM t1 JOIN t2 USING (id) WHERE t1.x IN (SELECT y FROM t3)");
        assert!(w.tables.contains(&n(None, "t1")) && w.tables.contains(&n(None, "t2")));
        assert!(
            !w.tables.contains(&n(None, "t3")),
            "subqueries after WHERE do not fire"
        );
        assert_eq!(
            writes("DELETE FROM app.t WHERE id = 1").tables,
            [n(Some("app"), "t")]
        );
        let w = writes("LOAD DATA LOCAL INFILE 'f' REPLACE INTO TABLE app.t");
        assert_eq!(w.tables, [n(Some("app"), "t")]);
        assert_eq!(writes("SELECT 1").tables, []);
    }

    #[test]
    fn trigger_bodies_name_their_insert_targets_not_string_functions() {
        let body = "BEGIN SET NEW.s = REPLACE(NEW.s, 'a', 'b'); \
                    SET NEW.t = INSERT(NEW.t, 1, 2, 'x'); \
                    INSERT INTO audit (item) VALUES (NEW.id); \
                    REPLACE other.log SET v = 1; END";
        assert_eq!(
            inserted_tables(body),
            [n(None, "audit"), n(Some("other"), "log")]
        );
        assert_eq!(inserted_tables("SET NEW.x = NOW()"), []);
    }
}
