//! A text-protocol result set re-encoded as the binary protocol's, for a prepared read that
//! ran as text on the leader's shadow session (`COM_STMT_EXECUTE` answers with binary rows).
//!
//! The column count, column definitions and terminators are the same in both protocols; only
//! the rows differ. A binary row is `0x00`, a NULL bitmap (offset 2), then each non-NULL value
//! in its column type's encoding: fixed-width little-endian integers and floats, temporal values
//! as a length byte and their fields, everything else (decimals, strings, blobs, bits, JSON) as
//! the same length-encoded bytes the text row had.

use super::response::column_def;
use crate::protocol::wire;

/// Why a text result set could not be re-encoded.
#[derive(Debug, thiserror::Error)]
#[error("cannot re-encode column {column} ({value:?}) of type {ty:#04x} as a binary value")]
pub struct EncodeError {
    column: usize,
    ty: u8,
    value: String,
}

const UNSIGNED_FLAG: u16 = 0x20;

mod ty {
    pub const TINY: u8 = 0x01;
    pub const SHORT: u8 = 0x02;
    pub const LONG: u8 = 0x03;
    pub const FLOAT: u8 = 0x04;
    pub const DOUBLE: u8 = 0x05;
    pub const NULL: u8 = 0x06;
    pub const TIMESTAMP: u8 = 0x07;
    pub const LONGLONG: u8 = 0x08;
    pub const INT24: u8 = 0x09;
    pub const DATE: u8 = 0x0A;
    pub const TIME: u8 = 0x0B;
    pub const DATETIME: u8 = 0x0C;
    pub const YEAR: u8 = 0x0D;
}

/// Re-encodes the rows of a text result set (packet payloads, as collected from the engine);
/// anything that is not a result set (OK, ERR) is returned unchanged.
pub fn text_to_binary(packets: Vec<Vec<u8>>) -> Result<Vec<Vec<u8>>, EncodeError> {
    let Some(first) = packets.first() else {
        return Ok(packets);
    };
    if matches!(first.first(), Some(&wire::OK) | Some(&wire::ERR) | None) {
        return Ok(packets);
    }
    let columns = match wire::get_lenenc_int(first, 0) {
        Some((n, _)) => usize::try_from(n).unwrap_or(0),
        None => return Ok(packets),
    };
    let types: Vec<(u8, u16)> = packets
        .iter()
        .skip(1)
        .take(columns)
        .map(|p| {
            let c = column_def(p);
            (c.ty, c.flags)
        })
        .collect();
    let mut out = Vec::with_capacity(packets.len());
    for (i, p) in packets.into_iter().enumerate() {
        // The EOF after the definitions (without CLIENT_DEPRECATE_EOF), the terminating EOF or
        // OK, an ERR in the middle of the rows: kept as they are. (A text row starts with 0xFE
        // only for a value of 16 MiB or more, in a packet at least that long.)
        let kept = i <= columns
            || (p.first() == Some(&wire::EOF) && p.len() < 0xFF_FFFF)
            || p.first() == Some(&wire::ERR);
        if kept {
            out.push(p);
        } else {
            out.push(binary_row(&p, &types)?);
        }
    }
    Ok(out)
}

fn binary_row(text: &[u8], types: &[(u8, u16)]) -> Result<Vec<u8>, EncodeError> {
    let mut bitmap = vec![0u8; (types.len() + 7 + 2) / 8];
    let mut values = Vec::with_capacity(text.len() + 8);
    let mut pos = 0;
    for (i, &(ty, flags)) in types.iter().enumerate() {
        let bad = |value: &[u8]| EncodeError {
            column: i + 1,
            ty,
            value: String::from_utf8_lossy(value).into_owned(),
        };
        if text.get(pos) == Some(&0xFB) || ty == ty::NULL {
            bitmap[(i + 2) / 8] |= 1 << ((i + 2) % 8);
            pos += 1;
            continue;
        }
        let (len, used) = wire::get_lenenc_int(text, pos).ok_or_else(|| bad(b"<truncated>"))?;
        let start = pos + used;
        let end = usize::try_from(len)
            .ok()
            .and_then(|l| start.checked_add(l))
            .ok_or_else(|| bad(b"<truncated>"))?;
        let value = text.get(start..end).ok_or_else(|| bad(b"<truncated>"))?;
        pos = end;
        encode_value(ty, flags & UNSIGNED_FLAG != 0, value, &mut values)
            .ok_or_else(|| bad(value))?;
    }
    let mut row = Vec::with_capacity(1 + bitmap.len() + values.len());
    row.push(0x00);
    row.extend_from_slice(&bitmap);
    row.extend_from_slice(&values);
    Ok(row)
}

/// Appends the binary encoding of one text value; `None` if the text does not parse.
fn encode_value(ty: u8, unsigned: bool, value: &[u8], out: &mut Vec<u8>) -> Option<()> {
    let text = || std::str::from_utf8(value).ok();
    let width = match ty {
        ty::TINY => Some(1),
        ty::SHORT | ty::YEAR => Some(2),
        ty::LONG | ty::INT24 => Some(4),
        ty::LONGLONG => Some(8),
        _ => None,
    };
    if let Some(width) = width {
        // Two's complement little-endian: the low `width` bytes are the value.
        let bits: u64 = if unsigned {
            text()?.parse::<u64>().ok()?
        } else {
            text()?.parse::<i64>().ok()? as u64
        };
        out.extend_from_slice(&bits.to_le_bytes()[..width]);
        return Some(());
    }
    match ty {
        ty::FLOAT => out.extend_from_slice(&text()?.parse::<f32>().ok()?.to_le_bytes()),
        ty::DOUBLE => out.extend_from_slice(&text()?.parse::<f64>().ok()?.to_le_bytes()),
        ty::DATE | ty::DATETIME | ty::TIMESTAMP => encode_datetime(text()?, out)?,
        ty::TIME => encode_time(text()?, out)?,
        _ => {
            wire::put_lenenc_int(out, value.len() as u64);
            out.extend_from_slice(value);
        }
    }
    Some(())
}

/// `YYYY-MM-DD[ HH:MM:SS[.ffffff]]` as a length byte (0, 4, 7 or 11) and its fields.
fn encode_datetime(s: &str, out: &mut Vec<u8>) -> Option<()> {
    let (date, time) = match s.split_once(' ') {
        Some((d, t)) => (d, Some(t)),
        None => (s, None),
    };
    let mut d = date.splitn(3, '-');
    let year: u16 = d.next()?.parse().ok()?;
    let month: u8 = d.next()?.parse().ok()?;
    let day: u8 = d.next()?.parse().ok()?;
    let (hour, minute, second, micros) = match time {
        Some(t) => {
            let (h, m, s, us) = clock(t)?;
            (u8::try_from(h).ok()?, m, s, us)
        }
        None => (0, 0, 0, 0),
    };
    let len = if micros != 0 {
        11
    } else if (hour, minute, second) != (0, 0, 0) {
        7
    } else if (year, month, day) != (0, 0, 0) {
        4
    } else {
        0
    };
    out.push(len);
    if len >= 4 {
        out.extend_from_slice(&year.to_le_bytes());
        out.extend_from_slice(&[month, day]);
    }
    if len >= 7 {
        out.extend_from_slice(&[hour, minute, second]);
    }
    if len == 11 {
        out.extend_from_slice(&micros.to_le_bytes());
    }
    Some(())
}

/// `[-]H+:MM:SS[.ffffff]` as a length byte (0, 8 or 12), sign, days and the clock fields.
fn encode_time(s: &str, out: &mut Vec<u8>) -> Option<()> {
    let (negative, rest) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s),
    };
    let (hours, minute, second, micros) = clock(rest)?;
    if (hours, minute, second, micros) == (0, 0, 0, 0) {
        out.push(0);
        return Some(());
    }
    out.push(if micros != 0 { 12 } else { 8 });
    out.push(u8::from(negative));
    out.extend_from_slice(&(hours / 24).to_le_bytes());
    out.extend_from_slice(&[u8::try_from(hours % 24).ok()?, minute, second]);
    if micros != 0 {
        out.extend_from_slice(&micros.to_le_bytes());
    }
    Some(())
}

/// `H+:MM:SS[.f…]` → (hours, minutes, seconds, microseconds).
fn clock(s: &str) -> Option<(u32, u8, u8, u32)> {
    let (hms, frac) = match s.split_once('.') {
        Some((a, f)) => (a, Some(f)),
        None => (s, None),
    };
    let mut p = hms.splitn(3, ':');
    let hours: u32 = p.next()?.parse().ok()?;
    let minute: u8 = p.next()?.parse().ok()?;
    let second: u8 = p.next()?.parse().ok()?;
    let micros = match frac {
        None => 0,
        Some(f) if f.len() <= 6 && f.bytes().all(|b| b.is_ascii_digit()) => {
            let mut digits = f.to_string();
            while digits.len() < 6 {
                digits.push('0');
            }
            digits.parse().ok()?
        }
        Some(_) => return None,
    };
    Some((hours, minute, second, micros))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(ty: u8, unsigned: bool, v: &str) -> Vec<u8> {
        let mut out = Vec::new();
        encode_value(ty, unsigned, v.as_bytes(), &mut out).unwrap();
        out
    }

    #[test]
    fn integers_take_their_column_width() {
        assert_eq!(enc(ty::TINY, false, "-1"), [0xFF]);
        assert_eq!(enc(ty::TINY, true, "255"), [0xFF]);
        assert_eq!(enc(ty::SHORT, false, "-2"), [0xFE, 0xFF]);
        assert_eq!(enc(ty::YEAR, true, "2026"), 2026u16.to_le_bytes());
        assert_eq!(enc(ty::INT24, false, "70000"), 70000i32.to_le_bytes());
        assert_eq!(
            enc(ty::LONGLONG, true, "18446744073709551615"),
            u64::MAX.to_le_bytes()
        );
        assert_eq!(enc(ty::DOUBLE, false, "1.5"), 1.5f64.to_le_bytes());
        let mut out = Vec::new();
        assert!(encode_value(ty::LONG, false, b"x", &mut out).is_none());
    }

    #[test]
    fn temporal_values_use_the_shortest_form() {
        assert_eq!(enc(ty::DATE, false, "2026-12-03"), [4, 0xEA, 0x07, 12, 3]);
        assert_eq!(enc(ty::DATETIME, false, "0000-00-00 00:00:00"), [0]);
        assert_eq!(
            enc(ty::DATETIME, false, "2026-12-03 07:08:09"),
            [7, 0xEA, 0x07, 12, 3, 7, 8, 9]
        );
        assert_eq!(
            enc(ty::TIMESTAMP, false, "2026-12-03 00:00:00.5"),
            [11, 0xEA, 0x07, 12, 3, 0, 0, 0, 0x20, 0xA1, 0x07, 0x00]
        );
        assert_eq!(
            enc(ty::TIME, false, "-838:59:59.000001"),
            [12, 1, 34, 0, 0, 0, 22, 59, 59, 1, 0, 0, 0]
        );
        assert_eq!(enc(ty::TIME, false, "00:00:00"), [0]);
    }

    #[test]
    fn rows_get_a_null_bitmap_and_other_packets_stay() {
        // A result set of (INT, VARCHAR) with one row (7, NULL), then EOF.
        let coldef = |ty: u8| {
            let mut p = Vec::new();
            for s in ["def", "d", "t", "t", "c", "c"] {
                wire::put_lenenc_int(&mut p, s.len() as u64);
                p.extend_from_slice(s.as_bytes());
            }
            p.extend_from_slice(&[0x0c, 45, 0, 11, 0, 0, 0, ty, 0, 0, 0, 0, 0]);
            p
        };
        let eof = vec![0xFE, 0, 0, 2, 0];
        let packets = vec![
            vec![2],
            coldef(ty::LONG),
            coldef(0xFD),
            eof.clone(),
            vec![1, b'7', 0xFB],
            eof.clone(),
        ];
        let out = text_to_binary(packets.clone()).unwrap();
        assert_eq!(out[..4], packets[..4]);
        assert_eq!(out[4], [0x00, 0b0000_1000, 7, 0, 0, 0]);
        assert_eq!(out[5], eof);
        let ok = vec![vec![0x00, 1, 0, 2, 0, 0, 0]];
        assert_eq!(text_to_binary(ok.clone()).unwrap(), ok);
    }
}
