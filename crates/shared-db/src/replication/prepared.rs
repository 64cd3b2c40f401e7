//! Prepared statements translated to text: the parameters of a `COM_STMT_EXECUTE` are
//! rendered as SQL literals and spliced into the statement's `?` placeholders. Writes then take
//! the ordinary replicated write path (the text is what the log holds); reads that must run on
//! the leader's shadow session take the text read path.

/// Most bytes of long data one statement may collect before an execute.
pub const MAX_LONG_DATA: usize = 64 << 20;

/// A prepared statement of a client session that runs as text when it must.
#[derive(Debug, Clone, Default)]
pub struct PreparedText {
    pub sql: String,
    pub params: u16,
    /// Parameter types bound by the last execute (type byte, unsigned).
    pub types: Vec<(u8, bool)>,
    /// Parameter values sent with `COM_STMT_SEND_LONG_DATA` since the last execute, by
    /// parameter; the execute packet carries no value for them.
    pub long_data: std::collections::BTreeMap<u16, Vec<u8>>,
    /// Long data beyond [`MAX_LONG_DATA`] arrived: the next execute is refused.
    pub long_data_overflow: bool,
    /// A read: executed on the local engine, or (inside a transaction) as text on the
    /// leader's shadow session with its rows re-encoded for the binary protocol.
    pub read: bool,
}

/// Parses a `COM_STMT_EXECUTE` body (after the command byte) for `stmt` and returns the text
/// statement with its parameters as literals.
pub fn translate(body: &[u8], stmt: &mut PreparedText) -> Result<String, String> {
    // Long data is used by one execute, as the engine does.
    let long_data = std::mem::take(&mut stmt.long_data);
    if std::mem::take(&mut stmt.long_data_overflow) {
        return Err(format!(
            "more than {MAX_LONG_DATA} bytes of parameters sent with COM_STMT_SEND_LONG_DATA"
        ));
    }
    let n = usize::from(stmt.params);
    let mut pos = 9; // stmt id (4), flags (1), iteration count (4)
    let mut values = Vec::with_capacity(n);
    if n > 0 {
        let bitmap_len = n.div_ceil(8);
        let bitmap = body
            .get(pos..pos + bitmap_len)
            .ok_or("truncated null bitmap")?;
        let bitmap = bitmap.to_vec();
        pos += bitmap_len;
        let bound = *body.get(pos).ok_or("truncated execute packet")?;
        pos += 1;
        if bound == 1 {
            let mut types = Vec::with_capacity(n);
            for i in 0..n {
                let t = body
                    .get(pos + 2 * i..pos + 2 * i + 2)
                    .ok_or("truncated types")?;
                types.push((t[0], t[1] & 0x80 != 0));
            }
            pos += 2 * n;
            stmt.types = types;
        }
        if stmt.types.len() != n {
            return Err("parameter types were never bound".into());
        }
        for i in 0..n {
            if bitmap[i / 8] & (1 << (i % 8)) != 0 {
                values.push("NULL".to_string());
                continue;
            }
            if let Some(data) = u16::try_from(i).ok().and_then(|p| long_data.get(&p)) {
                values.push(string_literal(data));
                continue;
            }
            let (ty, unsigned) = stmt.types[i];
            let (v, used) = render(ty, unsigned, body.get(pos..).unwrap_or_default())
                .ok_or("malformed parameter value")?;
            values.push(v);
            pos += used;
        }
    }
    substitute(&stmt.sql, &values).ok_or_else(|| "parameter count does not match".into())
}

impl PreparedText {
    /// Adds a `COM_STMT_SEND_LONG_DATA` chunk (its body after the command byte: statement id,
    /// parameter id, data).
    pub fn add_long_data(&mut self, body: &[u8]) {
        let Some(param) = body.get(4..6).map(|b| u16::from_le_bytes([b[0], b[1]])) else {
            return;
        };
        let data = body.get(6..).unwrap_or_default();
        let held: usize = self.long_data.values().map(Vec::len).sum();
        if held + data.len() > MAX_LONG_DATA {
            self.long_data_overflow = true;
            self.long_data.clear();
            return;
        }
        self.long_data
            .entry(param)
            .or_default()
            .extend_from_slice(data);
    }
}

fn int_le(b: &[u8]) -> u64 {
    b.iter().rev().fold(0u64, |acc, &x| acc << 8 | u64::from(x))
}

/// One binary-protocol value as an SQL literal, and the bytes it used.
fn render(ty: u8, unsigned: bool, b: &[u8]) -> Option<(String, usize)> {
    let fixed = |len: usize| -> Option<(String, usize)> {
        let raw = int_le(b.get(..len)?);
        let v = if unsigned {
            raw.to_string()
        } else {
            let shift = 64 - 8 * len as u32;
            (((raw << shift) as i64) >> shift).to_string()
        };
        Some((v, len))
    };
    match ty {
        0x01 => fixed(1),
        0x02 | 0x0D => fixed(2),
        0x03 | 0x09 => fixed(4),
        0x08 => fixed(8),
        0x04 => {
            let v = f32::from_le_bytes(b.get(..4)?.try_into().ok()?);
            Some((float_literal(f64::from(v))?, 4))
        }
        0x05 => {
            let v = f64::from_le_bytes(b.get(..8)?.try_into().ok()?);
            Some((float_literal(v)?, 8))
        }
        0x06 => Some(("NULL".into(), 0)),
        0x07 | 0x0A | 0x0C => {
            let len = usize::from(*b.first()?);
            let d = b.get(1..1 + len)?;
            let get = |i: usize| d.get(i).copied().unwrap_or(0);
            let year = if len >= 2 { int_le(&d[..2]) } else { 0 };
            let micros = if len >= 11 { int_le(&d[7..11]) } else { 0 };
            let s = if ty == 0x0A {
                format!("'{year:04}-{:02}-{:02}'", get(2), get(3))
            } else {
                format!(
                    "'{year:04}-{:02}-{:02} {:02}:{:02}:{:02}.{micros:06}'",
                    get(2),
                    get(3),
                    get(4),
                    get(5),
                    get(6)
                )
            };
            Some((s, 1 + len))
        }
        0x0B => {
            let len = usize::from(*b.first()?);
            let d = b.get(1..1 + len)?;
            let get = |i: usize| d.get(i).copied().unwrap_or(0);
            let neg = get(0) == 1;
            let days = if len >= 5 { int_le(&d[1..5]) } else { 0 };
            let micros = if len >= 12 { int_le(&d[8..12]) } else { 0 };
            let hours = days * 24 + u64::from(get(5));
            let sign = if neg { "-" } else { "" };
            Some((
                format!("'{sign}{hours}:{:02}:{:02}.{micros:06}'", get(6), get(7)),
                1 + len,
            ))
        }
        _ => {
            let (len, used) = crate::protocol::wire::get_lenenc_int(b, 0)?;
            let len = usize::try_from(len).ok()?;
            let v = b.get(used..used + len)?;
            let lit = if ty == 0xF6
                && v.iter().all(|c| c.is_ascii_digit() || b"+-.eE".contains(c))
                && !v.is_empty()
            {
                String::from_utf8_lossy(v).into_owned()
            } else {
                string_literal(v)
            };
            Some((lit, used + len))
        }
    }
}

fn float_literal(v: f64) -> Option<String> {
    if !v.is_finite() {
        return None;
    }
    Some(format!("{v:e}"))
}

/// A string literal that reads the same with and without `NO_BACKSLASH_ESCAPES`.
fn string_literal(v: &[u8]) -> String {
    match std::str::from_utf8(v) {
        Ok(s) if !s.contains(['\\', '\0']) => format!("'{}'", s.replace('\'', "''")),
        _ if v.is_empty() => "''".into(),
        _ => {
            let hex: String = v.iter().map(|b| format!("{b:02X}")).collect();
            format!("X'{hex}'")
        }
    }
}

/// Replaces the `?` placeholders (outside strings, quoted identifiers and comments) in order.
pub fn substitute(sql: &str, values: &[String]) -> Option<String> {
    let b = sql.as_bytes();
    let mut out = String::with_capacity(sql.len() + values.iter().map(String::len).sum::<usize>());
    let mut next = values.iter();
    let mut i = 0;
    let mut copied = 0;
    while i < b.len() {
        match b[i] {
            q @ (b'\'' | b'"' | b'`') => {
                i += 1;
                while i < b.len() {
                    if b[i] == b'\\' && q != b'`' {
                        i += 2;
                        continue;
                    }
                    if b[i] == q {
                        if b.get(i + 1) == Some(&q) {
                            i += 2;
                            continue;
                        }
                        break;
                    }
                    i += 1;
                }
                i += 1;
            }
            b'#' => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'-' if b.get(i + 1) == Some(&b'-') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') && b.get(i + 2) != Some(&b'!') => {
                i += 2;
                while i + 1 < b.len() && !(b[i] == b'*' && b[i + 1] == b'/') {
                    i += 1;
                }
                i += 2;
            }
            b'?' => {
                out.push_str(&sql[copied..i]);
                out.push_str(next.next()?);
                i += 1;
                copied = i;
            }
            _ => i += 1,
        }
    }
    out.push_str(sql.get(copied..).unwrap_or_default());
    next.next().is_none().then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn execute_packets_become_text() {
        let mut st = PreparedText {
            sql: "INSERT INTO t VALUES (?, ?, '?', ?, ?) -- ?".into(),
            params: 4,
            ..Default::default()
        };
        let mut body = vec![1, 0, 0, 0, 0, 1, 0, 0, 0];
        body.push(0b0000_0100); // third parameter NULL
        body.push(1);
        body.extend_from_slice(&[0x08, 0, 0xFD, 0, 0x06, 0, 0x0C, 0]);
        body.extend_from_slice(&(-5i64).to_le_bytes());
        body.push(4);
        body.extend_from_slice(b"it's");
        body.extend_from_slice(&[7, 0xE8, 0x07, 2, 29, 13, 14, 15]);
        let text = translate(&body, &mut st).unwrap();
        assert_eq!(
            text,
            "INSERT INTO t VALUES (-5, 'it''s', '?', NULL, '2024-02-29 13:14:15.000000') -- ?"
        );
        assert_eq!(substitute("SELECT ?", &[]), None);
        assert_eq!(string_literal(b"a\\b"), "X'615C62'");
    }

    #[test]
    fn long_data_fills_its_parameter_for_one_execute() {
        let mut st = PreparedText {
            sql: "INSERT INTO t VALUES (?, ?)".into(),
            params: 2,
            ..Default::default()
        };
        // COM_STMT_SEND_LONG_DATA bodies: statement 1, parameter 1, two chunks.
        st.add_long_data(&[1, 0, 0, 0, 1, 0, b'a', b'b']);
        st.add_long_data(&[1, 0, 0, 0, 1, 0, 0xFF, b'c']);
        // Execute: no NULLs, types LONGLONG and BLOB, a value for the first only.
        let mut body = vec![1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0x08, 0, 0xFC, 0];
        body.extend_from_slice(&7i64.to_le_bytes());
        let text = translate(&body, &mut st).unwrap();
        assert_eq!(text, "INSERT INTO t VALUES (7, X'6162FF63')");
        // The next execute sends the value inline again.
        let mut again = vec![1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0];
        again.extend_from_slice(&8i64.to_le_bytes());
        again.extend_from_slice(&[1, b'z']);
        assert_eq!(
            translate(&again, &mut st).unwrap(),
            "INSERT INTO t VALUES (8, 'z')"
        );
    }

    #[test]
    fn too_much_long_data_refuses_the_execute() {
        let mut st = PreparedText {
            sql: "INSERT INTO t VALUES (?)".into(),
            params: 1,
            ..Default::default()
        };
        let mut chunk = vec![1, 0, 0, 0, 0, 0];
        chunk.resize(6 + MAX_LONG_DATA / 2 + 1, b'x');
        st.add_long_data(&chunk);
        st.add_long_data(&chunk);
        let body = vec![1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0xFC, 0];
        assert!(translate(&body, &mut st).is_err());
        assert!(st.long_data.is_empty() && !st.long_data_overflow);
    }
}
