//! Splitting a multi-statement `COM_QUERY` text into statements.
//!
//! Works on the lexer's tokens, so `;` inside strings, quoted identifiers and comments never
//! split. Stored program definitions (`CREATE PROCEDURE/FUNCTION/TRIGGER/EVENT`, `ALTER EVENT`)
//! and MariaDB's top-level compound statements (`BEGIN NOT ATOMIC`, `IF`, `WHILE`, `LOOP`,
//! `REPEAT`, `CASE`, labels) are tracked block by block (`BEGIN ... END`, `IF ... END IF`,
//! `CASE ... END [CASE]`, ...) so the `;` inside their bodies do not split either: clients
//! send these without `DELIMITER` (a client-side command).
//!
//! Known limit: a column literally named `begin` or `end` inside a stored program body
//! confuses the block counting (the statement is then split wrongly and each piece is
//! classified as a write).

use std::ops::Range;

use super::lexer::{TokKind, Token};

/// Splits `tokens` (lexed from `sql`) into statements: token index ranges, without the
/// terminating `;` and without empty statements.
pub(crate) fn split_ranges(sql: &str, tokens: &[Token]) -> Vec<Range<usize>> {
    let mut parts = Vec::new();
    let mut start = 0;
    while start < tokens.len() {
        let end = statement_end(sql, tokens, start);
        if end > start {
            parts.push(start..end);
        }
        start = end + 1;
    }
    parts
}

/// Index of the `;` ending the statement that starts at `start` (or `tokens.len()`).
fn statement_end(sql: &str, tokens: &[Token], start: usize) -> usize {
    let is_end = |t: &Token| t.is_punct(sql, ";") && !t.in_exec_comment;
    if !is_compound(sql, &tokens[start..]) {
        return tokens[start..]
            .iter()
            .position(is_end)
            .map_or(tokens.len(), |p| p + start);
    }
    let mut depth = 0usize;
    let mut at_stmt_start = true;
    let mut i = start;
    while i < tokens.len() {
        let tok = &tokens[i];
        if is_end(tok) && depth == 0 {
            return i;
        }
        let mut next_starts_stmt = tok.is_punct(sql, ";") || tok.is_punct(sql, ":");
        if tok.kind == TokKind::Word {
            let word = tok.text(sql);
            let is = |kw: &str| word.eq_ignore_ascii_case(kw);
            if is("begin") || is("case") {
                depth += 1;
            } else if at_stmt_start && ["if", "loop", "while", "repeat"].iter().any(|k| is(k)) {
                if !is_function_call(sql, tokens, i) {
                    depth += 1;
                }
            } else if is("end") {
                depth = depth.saturating_sub(1);
                // `END IF`, `END CASE`, ... close the block opened by that word.
                let closes = ["if", "case", "loop", "while", "repeat"];
                if tokens
                    .get(i + 1)
                    .is_some_and(|n| closes.iter().any(|k| n.is_word(sql, k)))
                {
                    i += 1;
                }
            }
            next_starts_stmt = ["begin", "then", "else", "do", "loop", "repeat", "row"]
                .iter()
                .any(|k| is(k));
        }
        at_stmt_start = next_starts_stmt;
        i += 1;
    }
    tokens.len()
}

/// `IF(a, b, c)` / `REPEAT('x', 3)` are function calls (their parentheses hold a top-level
/// comma); `IF (a > b) THEN` is a statement.
fn is_function_call(sql: &str, tokens: &[Token], i: usize) -> bool {
    if !tokens.get(i + 1).is_some_and(|t| t.is_punct(sql, "(")) {
        return false;
    }
    let mut depth = 0usize;
    for t in &tokens[i + 1..] {
        if t.is_punct(sql, "(") {
            depth += 1;
        } else if t.is_punct(sql, ")") {
            depth -= 1;
            if depth == 0 {
                return false;
            }
        } else if depth == 1 && t.is_punct(sql, ",") {
            return true;
        }
    }
    false
}

/// Whether the statement may contain a compound body whose `;` must not split it.
fn is_compound(sql: &str, toks: &[Token]) -> bool {
    let Some(first) = toks.first() else {
        return false;
    };
    let word = |i: usize, kw: &str| toks.get(i).is_some_and(|t| t.is_word(sql, kw));
    if word(0, "create") || word(0, "alter") {
        // Look at the header, before any parenthesis or body.
        return toks
            .iter()
            .take(24)
            .take_while(|t| !t.is_punct(sql, "(") && !t.is_word(sql, "as"))
            .any(|t| {
                ["procedure", "function", "trigger", "event"]
                    .iter()
                    .any(|k| t.is_word(sql, k))
            });
    }
    if word(0, "begin") {
        return word(1, "not");
    }
    let label = first.kind == TokKind::Word && toks.get(1).is_some_and(|t| t.is_punct(sql, ":"));
    label
        || ["if", "case", "loop", "while", "repeat"]
            .iter()
            .any(|k| first.is_word(sql, k))
}

#[cfg(test)]
mod tests {
    use super::super::lexer::{lex, Escapes};
    use super::*;

    fn parts(sql: &str) -> Vec<String> {
        let lexed = lex(sql, Escapes::Backslash);
        split_ranges(sql, &lexed.tokens)
            .into_iter()
            .map(|r| {
                let t = &lexed.tokens;
                sql[t[r.start].start..t[r.end - 1].end].to_string()
            })
            .collect()
    }

    #[test]
    fn compound_bodies() {
        let p = parts(
            "CREATE PROCEDURE p() BEGIN IF (a > 1) THEN SELECT IF(a, 1, 2); END IF; \
             CASE x WHEN 1 THEN SELECT CASE WHEN y THEN 1 END; END CASE; END; SELECT 2",
        );
        assert_eq!(p.len(), 2, "{p:?}");
        assert_eq!(p[1], "SELECT 2");
        let p = parts("BEGIN NOT ATOMIC lbl: LOOP LEAVE lbl; END LOOP; END; COMMIT");
        assert_eq!(p.len(), 2, "{p:?}");
        let p = parts("BEGIN; SELECT 1; COMMIT");
        assert_eq!(p.len(), 3, "{p:?}");
    }
}
