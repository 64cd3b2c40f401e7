//! A small MySQL lexer used by the statement classifier.
//!
//! It is not a full tokenizer: it only needs to find words, quoted things, variables and
//! punctuation reliably, skip comments, treat the body of MySQL executable comments
//! (`/*!40101 ... */`, `/*M!100101 ... */`) as code, drop optimizer hints (`/*+ ... */`) and
//! notice routing hints written in comments. It never allocates per token beyond the token
//! vector and never panics on arbitrary input.

/// What a token is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TokKind {
    /// An unquoted word: keyword, identifier or function name (also `1abc`-style names).
    Word,
    /// A number literal.
    Num,
    /// A `` `backtick` `` quoted identifier.
    QuotedIdent,
    /// A `'single'` or `"double"` quoted string.
    Str,
    /// A user variable: `@name`, `@'name'`, `` @`name` ``.
    UserVar,
    /// A system variable: `@@name`, `@@session.name`, ...
    SysVar,
    /// Punctuation or an operator (`;`, `(`, `)`, `,`, `.`, `:=`, `=`, ...).
    Punct,
}

/// One token: its kind and its byte range in the lexed text.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Token {
    pub kind: TokKind,
    pub start: usize,
    pub end: usize,
    /// The token sits inside a `/*! ... */` executable comment.
    pub in_exec_comment: bool,
}

/// How backslashes inside string literals behave (the server's `NO_BACKSLASH_ESCAPES` mode is
/// not known to the classifier, so ambiguous input is lexed both ways).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Escapes {
    /// Default MySQL behaviour: `\` escapes the next character.
    Backslash,
    /// `NO_BACKSLASH_ESCAPES`: only a doubled quote escapes a quote.
    QuoteOnly,
}

/// The result of lexing a text.
#[derive(Debug, Default)]
pub(crate) struct Lexed {
    pub tokens: Vec<Token>,
    /// A comment carried a "route to the leader" hint.
    pub force_leader: bool,
    /// A string, quoted identifier or comment was not closed.
    pub unterminated: bool,
    /// A string literal contained a backslash (so the other [`Escapes`] mode may lex
    /// differently).
    pub backslash_in_string: bool,
}

impl Token {
    /// The token's text in `sql` (the text it was lexed from).
    pub fn text<'a>(&self, sql: &'a str) -> &'a str {
        sql.get(self.start..self.end).unwrap_or("")
    }

    /// Whether this is the word `kw` (ASCII case-insensitive).
    pub fn is_word(&self, sql: &str, kw: &str) -> bool {
        self.kind == TokKind::Word && self.text(sql).eq_ignore_ascii_case(kw)
    }

    /// Whether this is the punctuation `p`.
    pub fn is_punct(&self, sql: &str, p: &str) -> bool {
        self.kind == TokKind::Punct && self.text(sql) == p
    }
}

fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80
}

/// Lexes `sql`.
pub(crate) fn lex(sql: &str, escapes: Escapes) -> Lexed {
    let mut lx = Lexer {
        sql,
        b: sql.as_bytes(),
        pos: 0,
        exec_depth: 0,
        escapes,
        out: Lexed {
            tokens: Vec::with_capacity(sql.len() / 4 + 4),
            ..Lexed::default()
        },
    };
    lx.run();
    lx.out
}

struct Lexer<'a> {
    sql: &'a str,
    b: &'a [u8],
    pos: usize,
    /// How many `/*!` executable comments are open.
    exec_depth: u32,
    escapes: Escapes,
    out: Lexed,
}

impl Lexer<'_> {
    fn peek(&self, off: usize) -> u8 {
        self.b.get(self.pos + off).copied().unwrap_or(0)
    }

    fn run(&mut self) {
        while self.pos < self.b.len() {
            let c = self.peek(0);
            let start = self.pos;
            match c {
                b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c => self.pos += 1,
                b'#' => self.line_comment(start),
                b'-' if self.peek(1) == b'-' && is_dash_comment_end(self.peek(2)) => {
                    self.line_comment(start)
                }
                b'/' if self.peek(1) == b'*' => self.block_comment(),
                b'*' if self.peek(1) == b'/' && self.exec_depth > 0 => {
                    self.exec_depth -= 1;
                    self.pos += 2;
                }
                b'\'' | b'"' => {
                    self.quoted(c);
                    self.push(TokKind::Str, start);
                }
                b'`' => {
                    self.quoted(c);
                    self.push(TokKind::QuotedIdent, start);
                }
                b'@' => self.variable(start),
                b'0'..=b'9' => {
                    self.number();
                    self.push(TokKind::Num, start);
                }
                b'.' if self.peek(1).is_ascii_digit() && !self.after_word() => {
                    self.number();
                    self.push(TokKind::Num, start);
                }
                _ if is_word_byte(c) => {
                    self.word();
                    self.push(TokKind::Word, start);
                }
                _ => {
                    self.punct();
                    self.push(TokKind::Punct, start);
                }
            }
        }
        if self.exec_depth > 0 {
            self.out.unterminated = true;
        }
    }

    fn push(&mut self, kind: TokKind, start: usize) {
        self.out.tokens.push(Token {
            kind,
            start,
            end: self.pos,
            in_exec_comment: self.exec_depth > 0,
        });
    }

    /// Whether the previous token ends right here and is a word (`t.5` is not a number).
    fn after_word(&self) -> bool {
        self.out.tokens.last().is_some_and(|t| {
            t.end == self.pos && matches!(t.kind, TokKind::Word | TokKind::QuotedIdent)
        })
    }

    fn line_comment(&mut self, start: usize) {
        let rest = &self.b[self.pos..];
        let len = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
        self.pos += len;
        self.note_hint(start, self.pos);
    }

    fn block_comment(&mut self) {
        let start = self.pos;
        let third = self.peek(2);
        if third == b'!' || (third == b'M' && self.peek(3) == b'!') {
            // Executable comment: skip the marker and optional version number, then lex the
            // contents as code until the matching `*/`.
            self.pos += if third == b'!' { 3 } else { 4 };
            while self.peek(0).is_ascii_digit() {
                self.pos += 1;
            }
            self.exec_depth += 1;
            return;
        }
        match find(self.b, self.pos + 2, b"*/") {
            Some(end) => {
                self.pos = end + 2;
                // Optimizer hints (`/*+ ... */`) are not routing hints.
                if third != b'+' {
                    self.note_hint(start, self.pos);
                }
            }
            None => {
                self.pos = self.b.len();
                self.out.unterminated = true;
            }
        }
    }

    fn note_hint(&mut self, start: usize, end: usize) {
        if let Some(text) = self.sql.get(start..end) {
            if is_leader_hint(text) {
                self.out.force_leader = true;
            }
        }
    }

    /// Skips a quoted string / identifier starting at `self.pos` with quote `q`.
    fn quoted(&mut self, q: u8) {
        self.pos += 1;
        while self.pos < self.b.len() {
            let c = self.b[self.pos];
            if c == b'\\' && q != b'`' {
                self.out.backslash_in_string = true;
                if self.escapes == Escapes::Backslash {
                    self.pos += 2;
                    continue;
                }
            }
            if c == q {
                if self.peek(1) == q {
                    self.pos += 2;
                    continue;
                }
                self.pos += 1;
                return;
            }
            self.pos += 1;
        }
        self.pos = self.b.len();
        self.out.unterminated = true;
    }

    fn variable(&mut self, start: usize) {
        if self.peek(1) == b'@' {
            self.pos += 2;
            // `@@session.name`, `@@name`; a quoted name is rare but allowed.
            loop {
                match self.peek(0) {
                    b'`' => self.quoted(b'`'),
                    c if is_word_byte(c) => self.word(),
                    _ => {}
                }
                if self.peek(0) == b'.' {
                    self.pos += 1;
                } else {
                    break;
                }
            }
            self.push(TokKind::SysVar, start);
            return;
        }
        self.pos += 1;
        match self.peek(0) {
            q @ (b'\'' | b'"' | b'`') => self.quoted(q),
            _ => {
                while is_word_byte(self.peek(0)) || self.peek(0) == b'.' {
                    self.pos += 1;
                }
            }
        }
        self.push(TokKind::UserVar, start);
    }

    fn number(&mut self) {
        while self.pos < self.b.len() {
            let c = self.b[self.pos];
            if is_word_byte(c) || (c == b'.' && self.peek(1).is_ascii_digit()) {
                self.pos += 1;
            } else {
                break;
            }
        }
    }

    fn word(&mut self) {
        while is_word_byte(self.peek(0)) {
            self.pos += 1;
        }
    }

    fn punct(&mut self) {
        const TWO: [&[u8]; 8] = [b":=", b"<=", b">=", b"<>", b"!=", b"||", b"&&", b"->"];
        let pair = [self.peek(0), self.peek(1)];
        if TWO.iter().any(|t| *t == pair) {
            // `->>` (JSON unquote) is one operator.
            self.pos += if pair == *b"->" && self.peek(2) == b'>' {
                3
            } else {
                2
            };
        } else {
            // Bytes >= 0x80 are word bytes, so this is always a one-byte ASCII character.
            self.pos += 1;
        }
    }
}

/// `--` starts a comment only when followed by whitespace, a control character or the end.
fn is_dash_comment_end(b: u8) -> bool {
    b == 0 || b <= b' '
}

fn find(hay: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    hay.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

/// Whether a comment asks to route the statement to the leader: `/* shared-db: leader */`,
/// `-- shared-db:leader`, or MaxScale's `-- maxscale route to master`.
pub(crate) fn is_leader_hint(comment: &str) -> bool {
    let body = comment
        .trim_start_matches(['-', '#', '/', '*'])
        .trim_end_matches(['*', '/']);
    let mut w = [""; 4];
    let words = body
        .split(|c: char| c.is_ascii_whitespace() || c == ':')
        .filter(|w| !w.is_empty());
    for (slot, word) in w.iter_mut().zip(words) {
        *slot = word;
    }
    let is = |i: usize, kw: &str| w[i].eq_ignore_ascii_case(kw);
    (is(0, "shared-db") && is(1, "leader"))
        || (is(0, "maxscale") && is(1, "route") && is(2, "to") && is(3, "master"))
}

/// Returns the unquoted name of an identifier token (`` `a``b` `` → ``a`b``).
pub(crate) fn ident_name(tok: &Token, sql: &str) -> String {
    let text = tok.text(sql);
    match tok.kind {
        TokKind::QuotedIdent => text
            .strip_prefix('`')
            .and_then(|t| t.strip_suffix('`'))
            .unwrap_or(text)
            .replace("``", "`"),
        _ => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(sql: &str) -> Vec<(TokKind, String)> {
        lex(sql, Escapes::Backslash)
            .tokens
            .iter()
            .map(|t| (t.kind, t.text(sql).to_string()))
            .collect()
    }

    #[test]
    fn basic_tokens() {
        use TokKind::*;
        let toks = kinds("SELECT a.b, 'x''y', `q``r`, @v, @@session.autocommit, 1.5e3 := ->> x");
        let expected = [
            (Word, "SELECT"),
            (Word, "a"),
            (Punct, "."),
            (Word, "b"),
            (Punct, ","),
            (Str, "'x''y'"),
            (Punct, ","),
            (QuotedIdent, "`q``r`"),
            (Punct, ","),
            (UserVar, "@v"),
            (Punct, ","),
            (SysVar, "@@session.autocommit"),
            (Punct, ","),
            (Num, "1.5e3"),
            (Punct, ":="),
            (Punct, "->>"),
            (Word, "x"),
        ];
        let expected: Vec<_> = expected.iter().map(|(k, s)| (*k, s.to_string())).collect();
        assert_eq!(toks, expected);
    }

    #[test]
    fn comments_are_skipped_and_exec_comments_are_code() {
        let toks = kinds("/* c */ SELECT -- x\n 1 # y\n /*!40101 SQL_NO_CACHE */ /*+ hint */ 2");
        let texts: Vec<_> = toks.iter().map(|(_, s)| s.as_str()).collect();
        assert_eq!(texts, ["SELECT", "1", "SQL_NO_CACHE", "2"]);
        assert_eq!(kinds("SELECT 1--2").len(), 5, "`--2` is minus minus two");
    }

    #[test]
    fn unterminated_and_escapes() {
        assert!(lex("SELECT 'abc", Escapes::Backslash).unterminated);
        assert!(lex("SELECT /* abc", Escapes::Backslash).unterminated);
        assert!(lex("SELECT /*!40101 abc", Escapes::Backslash).unterminated);
        let l = lex(r"SELECT 'a\'b'", Escapes::Backslash);
        assert!(!l.unterminated && l.backslash_in_string);
        assert!(lex(r"SELECT 'a\'b'", Escapes::QuoteOnly).unterminated);
    }

    #[test]
    fn leader_hints() {
        assert!(is_leader_hint("/* shared-db: leader */"));
        assert!(is_leader_hint("-- shared-db:leader"));
        assert!(is_leader_hint("-- MaxScale route to MASTER"));
        assert!(is_leader_hint("/*shared-db:leader*/"));
        assert!(!is_leader_hint("/* leader */"));
        assert!(lex("SELECT 1 -- maxscale route to master", Escapes::Backslash).force_leader);
        assert!(!lex("SELECT '/* shared-db: leader */'", Escapes::Backslash).force_leader);
    }
}
