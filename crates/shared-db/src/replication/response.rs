//! Engine responses as whole packets: runs a command on an engine connection and keeps the
//! response (to hand to a client on this or another node), and reads the final OK/ERR into an
//! [`Outcome`].

use mysql_common::constants::StatusFlags;

use super::entry::Outcome;
use crate::protocol::backend::{Backend, BackendError};
use crate::protocol::packet::PacketIo;
use crate::protocol::stream::BoxStream;
use crate::protocol::wire;

/// One column of a text row: type, character set, value (`None` for NULL).
pub type Cell = (u8, u16, Option<Vec<u8>>);

/// A complete response to one command.
#[derive(Debug, Clone, Default)]
pub struct Collected {
    /// Logical packet payloads, in order.
    pub packets: Vec<Vec<u8>>,
    /// The final OK/ERR (a result set counts as success with 0 affected rows).
    pub outcome: Outcome,
    /// Status flags of the last OK/EOF.
    pub status: Option<StatusFlags>,
    /// Column types and character sets of the first result set, and its first row.
    pub first_row: Option<Vec<Cell>>,
    /// Results received (OK, ERR or result set): one per statement of a multi-statement
    /// query that ran, the failing one included.
    pub results: usize,
    /// Index in `packets` where each result starts.
    pub result_starts: Vec<usize>,
}

impl Collected {
    /// The outcome of result `k` of a multi-statement query (a result set counts as success
    /// with 0 affected rows unless it ended in an error).
    pub fn result_outcome(&self, k: usize) -> Option<Outcome> {
        let from = *self.result_starts.get(k)?;
        let until = self
            .result_starts
            .get(k + 1)
            .copied()
            .unwrap_or(self.packets.len());
        let first = self.packets.get(from)?;
        Some(match first.first() {
            Some(&wire::OK) => parse_ok(first),
            Some(&wire::ERR) | None => parse_err(first),
            Some(_) => match self.packets.get(until.saturating_sub(1)) {
                Some(last) if last.first() == Some(&wire::ERR) => parse_err(last),
                _ => Outcome::default(),
            },
        })
    }

    /// Column `n` of every text-protocol row (NULL cells left out). `first_row` holds only
    /// the first row; this reads them all from the packets.
    pub fn column(&self, n: usize) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut eofs = 0;
        for p in self.packets.iter().skip(1) {
            if wire::is_eof(p) {
                eofs += 1;
                continue;
            }
            if eofs == 1 {
                if let Some(cell) = nth_text(p, n) {
                    out.push(cell);
                }
            }
        }
        out
    }
}

/// Cell `n` of a text-protocol row; `None` for NULL or a malformed row.
fn nth_text(row: &[u8], n: usize) -> Option<Vec<u8>> {
    let mut pos = 0;
    for i in 0..=n {
        if row.get(pos) == Some(&0xFB) {
            if i == n {
                return None;
            }
            pos += 1;
            continue;
        }
        let (len, used) = wire::get_lenenc_int(row, pos)?;
        let len = usize::try_from(len).ok()?;
        if i == n {
            return row.get(pos + used..pos + used + len).map(<[u8]>::to_vec);
        }
        pos += used + len;
    }
    None
}

/// Parses an OK packet payload.
pub fn parse_ok(p: &[u8]) -> Outcome {
    let mut o = Outcome::default();
    if let Some((affected, a)) = wire::get_lenenc_int(p, 1) {
        o.affected = affected;
        if let Some((id, b)) = wire::get_lenenc_int(p, 1 + a) {
            o.last_insert_id = id;
            let at = 1 + a + b + 2;
            if let Some(w) = p.get(at..at + 2) {
                o.warnings = u16::from_le_bytes([w[0], w[1]]);
            }
        }
    }
    o
}

/// Parses an ERR packet payload.
pub fn parse_err(p: &[u8]) -> Outcome {
    let code = p
        .get(1..3)
        .map(|b| u16::from_le_bytes([b[0], b[1]]))
        .unwrap_or(1105);
    let (state, msg_at) = if p.get(3) == Some(&b'#') {
        (
            String::from_utf8_lossy(p.get(4..9).unwrap_or_default()).into_owned(),
            9,
        )
    } else {
        ("HY000".to_string(), 3)
    };
    Outcome {
        error: code,
        sqlstate: state,
        message: String::from_utf8_lossy(p.get(msg_at..).unwrap_or_default()).into_owned(),
        ..Default::default()
    }
}

/// Rewrites the status flags of an OK or EOF packet in place.
pub fn patch_status(p: &mut [u8], f: impl Fn(StatusFlags) -> StatusFlags) {
    let at = match p.first() {
        Some(&wire::OK) => {
            let Some((_, a)) = wire::get_lenenc_int(p, 1) else {
                return;
            };
            let Some((_, b)) = wire::get_lenenc_int(p, 1 + a) else {
                return;
            };
            1 + a + b
        }
        Some(&wire::EOF) if wire::is_eof(p) => 3,
        _ => return,
    };
    if let Some(bytes) = p.get_mut(at..at + 2) {
        let old = StatusFlags::from_bits_retain(u16::from_le_bytes([bytes[0], bytes[1]]));
        bytes.copy_from_slice(&f(old).bits().to_le_bytes());
    }
}

/// Runs a text query and collects its whole response.
pub async fn run_query(b: &mut Backend, sql: &str) -> Result<Collected, BackendError> {
    run_command(b, &wire::com_query(sql)).await
}

/// Sends two queries back to back and collects both answers: one round trip for both. The
/// engine runs `second` whatever the outcome of `first`. Not for statements that can ask for a
/// local file (the engine would read `second` as the file).
pub async fn run_query_pair(
    b: &mut Backend,
    first: &str,
    second: &str,
) -> Result<(Collected, Collected), BackendError> {
    for sql in [first, second] {
        b.io.seq = 0;
        b.io.write_packet(&wire::com_query(sql)).await?;
    }
    b.io.flush().await?;
    b.io.seq = 1;
    let a = collect_results(&mut b.io).await?;
    b.io.seq = 1;
    let z = collect_results(&mut b.io).await?;
    Ok((a, z))
}

/// Sends one command packet and collects the response (COM_QUERY-shaped: results).
pub async fn run_command(b: &mut Backend, packet: &[u8]) -> Result<Collected, BackendError> {
    b.io.seq = 0;
    b.io.write_packet(packet).await?;
    b.io.flush().await?;
    collect_results(&mut b.io).await
}

async fn collect_results(io: &mut PacketIo<BoxStream>) -> Result<Collected, BackendError> {
    let mut out = Collected::default();
    loop {
        let mut first = Vec::new();
        io.read_packet(&mut first, None).await?;
        if first.first() != Some(&wire::LOCAL_INFILE) {
            out.results += 1;
            out.result_starts.push(out.packets.len());
        }
        let more = match first.first() {
            Some(&wire::OK) => {
                out.outcome = parse_ok(&first);
                out.status = wire::ok_status(&first);
                out.packets.push(first);
                more_results(out.status)
            }
            Some(&wire::ERR) | None => {
                out.outcome = parse_err(&first);
                out.packets.push(first);
                false
            }
            Some(&wire::LOCAL_INFILE) => {
                // No file to send from here: an empty one, then the engine's answer.
                io.write_packet(&[]).await?;
                io.flush().await?;
                continue;
            }
            Some(_) => {
                let want_row = out.first_row.is_none();
                out.packets.push(first);
                let mut types = Vec::new();
                // Column definitions up to EOF.
                loop {
                    let mut p = Vec::new();
                    io.read_packet(&mut p, None).await?;
                    if p.first() == Some(&wire::ERR) {
                        out.outcome = parse_err(&p);
                        out.packets.push(p);
                        return Ok(out);
                    }
                    let eof = wire::is_eof(&p);
                    if !eof && want_row {
                        types.push(column_type(&p));
                    }
                    out.packets.push(p);
                    if eof {
                        break;
                    }
                }
                // Rows up to EOF/ERR.
                let mut row_seen = false;
                loop {
                    let mut p = Vec::new();
                    io.read_packet(&mut p, None).await?;
                    if p.first() == Some(&wire::ERR) {
                        out.outcome = parse_err(&p);
                        out.packets.push(p);
                        return Ok(out);
                    }
                    if wire::is_eof(&p) {
                        out.status = wire::eof_status(&p);
                        out.outcome = Outcome::default();
                        out.packets.push(p);
                        break;
                    }
                    if want_row && !row_seen {
                        row_seen = true;
                        out.first_row = Some(text_row(&p, &types));
                    }
                    out.packets.push(p);
                }
                more_results(out.status)
            }
        };
        if !more {
            return Ok(out);
        }
    }
}

fn more_results(status: Option<StatusFlags>) -> bool {
    status.is_some_and(|s| s.contains(StatusFlags::SERVER_MORE_RESULTS_EXISTS))
}

/// The fixed fields of a column definition packet (protocol 4.1).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ColumnDef {
    pub ty: u8,
    pub charset: u16,
    pub flags: u16,
}

/// Reads a column definition packet's type, character set and flags (zeros if malformed).
pub fn column_def(p: &[u8]) -> ColumnDef {
    // catalog, schema, table, org_table, name, org_name: six length-encoded strings.
    let mut pos = 0;
    for _ in 0..6 {
        let Some((len, used)) = wire::get_lenenc_int(p, pos) else {
            return ColumnDef::default();
        };
        pos += used + usize::try_from(len).unwrap_or(usize::MAX / 2);
    }
    // 0x0c, charset u16, length u32, type u8, flags u16.
    let u16_at = |at: usize| {
        p.get(at..at + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
            .unwrap_or(0)
    };
    ColumnDef {
        ty: p.get(pos + 7).copied().unwrap_or(0),
        charset: u16_at(pos + 1),
        flags: u16_at(pos + 8),
    }
}

/// Type and character set of a column definition packet.
fn column_type(p: &[u8]) -> (u8, u16) {
    let c = column_def(p);
    (c.ty, c.charset)
}

fn text_row(p: &[u8], types: &[(u8, u16)]) -> Vec<Cell> {
    let mut out = Vec::with_capacity(types.len());
    let mut pos = 0;
    for &(ty, cs) in types {
        if p.get(pos) == Some(&0xFB) {
            out.push((ty, cs, None));
            pos += 1;
            continue;
        }
        let Some((len, used)) = wire::get_lenenc_int(p, pos) else {
            break;
        };
        let len = usize::try_from(len).unwrap_or(0);
        let v = p.get(pos + used..pos + used + len).map(<[u8]>::to_vec);
        out.push((ty, cs, v));
        pos += used + len;
    }
    out
}

/// Writes collected packets to a client, continuing its sequence ids, and flushes.
pub async fn write_packets(
    client: &mut PacketIo<BoxStream>,
    packets: &[Vec<u8>],
) -> std::io::Result<()> {
    for p in packets {
        client.write_packet(p).await?;
    }
    client.flush().await
}

/// A synthesized OK packet for an [`Outcome`], or an ERR packet if it failed.
pub fn outcome_packet(o: &Outcome, status: StatusFlags) -> Vec<u8> {
    if o.error != 0 {
        let state: &'static str = match o.sqlstate.as_str() {
            "42000" => "42000",
            "42S01" => "42S01",
            "42S02" => "42S02",
            "23000" => "23000",
            _ => "HY000",
        };
        crate::protocol::errors::SqlError::new(o.error, state, o.message.clone()).to_payload()
    } else {
        wire::ok_packet(o.affected, o.last_insert_id, status, o.warnings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ok_and_err_packets_parse_and_patch() {
        let mut ok = wire::ok_packet(
            3,
            300,
            StatusFlags::SERVER_STATUS_IN_TRANS | StatusFlags::SERVER_STATUS_AUTOCOMMIT,
            2,
        );
        let o = parse_ok(&ok);
        assert_eq!((o.affected, o.last_insert_id, o.warnings), (3, 300, 2));
        patch_status(&mut ok, |s| s - StatusFlags::SERVER_STATUS_IN_TRANS);
        assert_eq!(
            wire::ok_status(&ok),
            Some(StatusFlags::SERVER_STATUS_AUTOCOMMIT)
        );
        let err = crate::protocol::errors::SqlError::new(1062, "23000", "Duplicate").to_payload();
        let e = parse_err(&err);
        assert_eq!(
            (e.error, e.sqlstate.as_str(), e.message.as_str()),
            (1062, "23000", "Duplicate")
        );
    }
}
