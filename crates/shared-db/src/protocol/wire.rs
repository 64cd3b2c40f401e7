//! Small encoders/decoders for protocol fields that `mysql_common` does not serialise for a
//! server: OK/EOF packets, length-encoded integers, and the status flags of responses.

use mysql_common::constants::StatusFlags;

pub const OK: u8 = 0x00;
pub const ERR: u8 = 0xFF;
pub const EOF: u8 = 0xFE;
pub const LOCAL_INFILE: u8 = 0xFB;

pub fn put_lenenc_int(buf: &mut Vec<u8>, v: u64) {
    match v {
        0..=250 => buf.push(v as u8),
        251..=0xFFFF => {
            buf.push(0xFC);
            buf.extend_from_slice(&(v as u16).to_le_bytes());
        }
        0x1_0000..=0xFF_FFFF => {
            buf.push(0xFD);
            buf.extend_from_slice(&(v as u32).to_le_bytes()[..3]);
        }
        _ => {
            buf.push(0xFE);
            buf.extend_from_slice(&v.to_le_bytes());
        }
    }
}

/// Reads a length-encoded integer at `pos`, returning `(value, bytes used)`.
pub fn get_lenenc_int(buf: &[u8], pos: usize) -> Option<(u64, usize)> {
    let first = *buf.get(pos)?;
    let le = |n: usize| -> Option<u64> {
        let bytes = buf.get(pos + 1..pos + 1 + n)?;
        Some(
            bytes
                .iter()
                .rev()
                .fold(0u64, |acc, &b| (acc << 8) | u64::from(b)),
        )
    };
    match first {
        0..=250 => Some((u64::from(first), 1)),
        0xFC => Some((le(2)?, 3)),
        0xFD => Some((le(3)?, 4)),
        0xFE => Some((le(8)?, 9)),
        _ => None,
    }
}

/// A `COM_QUERY` command packet for `sql`.
pub fn com_query(sql: &str) -> Vec<u8> {
    let mut p = Vec::with_capacity(1 + sql.len());
    p.push(0x03);
    p.extend_from_slice(sql.as_bytes());
    p
}

/// Payload of an OK packet (protocol 4.1, no session-state info).
pub fn ok_packet(
    affected: u64,
    last_insert_id: u64,
    status: StatusFlags,
    warnings: u16,
) -> Vec<u8> {
    let mut buf = vec![OK];
    put_lenenc_int(&mut buf, affected);
    put_lenenc_int(&mut buf, last_insert_id);
    buf.extend_from_slice(&status.bits().to_le_bytes());
    buf.extend_from_slice(&warnings.to_le_bytes());
    buf
}

/// Payload of a 4.1 EOF packet.
pub fn eof_packet(status: StatusFlags, warnings: u16) -> Vec<u8> {
    let mut buf = vec![EOF];
    buf.extend_from_slice(&warnings.to_le_bytes());
    buf.extend_from_slice(&status.bits().to_le_bytes());
    buf
}

/// True for an EOF packet (as opposed to a row starting with 0xFE).
pub fn is_eof(payload: &[u8]) -> bool {
    payload.first() == Some(&EOF) && payload.len() < 9
}

/// Status flags of an OK packet payload (protocol 4.1).
pub fn ok_status(payload: &[u8]) -> Option<StatusFlags> {
    let (_, a) = get_lenenc_int(payload, 1)?;
    let (_, b) = get_lenenc_int(payload, 1 + a)?;
    let at = 1 + a + b;
    let bytes = payload.get(at..at + 2)?;
    Some(StatusFlags::from_bits_retain(u16::from_le_bytes([
        bytes[0], bytes[1],
    ])))
}

/// Status flags of an EOF packet payload.
pub fn eof_status(payload: &[u8]) -> Option<StatusFlags> {
    let bytes = payload.get(3..5)?;
    Some(StatusFlags::from_bits_retain(u16::from_le_bytes([
        bytes[0], bytes[1],
    ])))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lenenc_round_trip() {
        for v in [
            0,
            250,
            251,
            0xFFFF,
            0x1_0000,
            0xFF_FFFF,
            0x100_0000,
            u64::MAX,
        ] {
            let mut b = Vec::new();
            put_lenenc_int(&mut b, v);
            assert_eq!(get_lenenc_int(&b, 0), Some((v, b.len())));
        }
        assert_eq!(get_lenenc_int(&[0xFC, 1], 0), None);
        assert_eq!(get_lenenc_int(&[0xFF], 0), None);
    }

    #[test]
    fn ok_and_eof_status_are_read_back() {
        let s = StatusFlags::SERVER_MORE_RESULTS_EXISTS | StatusFlags::SERVER_STATUS_AUTOCOMMIT;
        assert_eq!(ok_status(&ok_packet(300, 70000, s, 2)), Some(s));
        let eof = eof_packet(s, 1);
        assert!(is_eof(&eof));
        assert_eq!(eof_status(&eof), Some(s));
        assert_eq!(ok_status(&[0]), None);
    }
}
