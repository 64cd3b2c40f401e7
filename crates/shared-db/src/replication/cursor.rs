//! Server-side cursors for prepared reads that run on the leader (`COM_STMT_EXECUTE` with a
//! cursor flag, then `COM_STMT_FETCH`). The read runs on the shadow session as text like any
//! other leader read; its re-encoded binary rows are kept here and handed out per fetch, as the
//! engine hands out a materialized cursor.

use std::collections::VecDeque;

use mysql_common::constants::StatusFlags;

use super::response::patch_status;
use crate::protocol::wire;

/// Most bytes of rows the open cursors of one session may hold together.
pub const CURSOR_BYTES: usize = 64 << 20;

/// Rows of an open cursor not fetched yet.
#[derive(Debug, Default)]
pub struct LeaderCursor {
    rows: VecDeque<Vec<u8>>,
    /// Bytes of the rows not fetched yet.
    bytes: usize,
}

/// What to answer a cursor-flagged execute.
#[derive(Debug)]
pub enum Opened {
    /// The metadata to send (column count, definitions, EOF flagged `CURSOR_EXISTS`) and the
    /// cursor to keep.
    Cursor(Vec<Vec<u8>>, LeaderCursor),
    /// Not a result set (OK or ERR): sent as it is, no cursor.
    Plain(Vec<Vec<u8>>),
    /// More rows than a cursor may hold.
    TooLarge(usize),
}

/// Splits a binary-protocol result (column count, definitions, EOF, rows, EOF) into the
/// execute's answer and the cursor's rows; `held`: bytes the session's other cursors hold.
pub fn open(mut packets: Vec<Vec<u8>>, held: usize) -> Opened {
    let is_result_set = packets
        .first()
        .is_some_and(|p| !matches!(p.first(), Some(&wire::OK) | Some(&wire::ERR)));
    let ends_ok = packets.last().is_some_and(|p| wire::is_eof(p));
    let Some(defs_end) = packets.iter().position(|p| wire::is_eof(p)) else {
        return Opened::Plain(packets);
    };
    if !is_result_set || !ends_ok || defs_end + 1 == packets.len() {
        return Opened::Plain(packets);
    }
    let Some(last) = packets.pop() else {
        return Opened::Plain(packets);
    };
    let rows: VecDeque<Vec<u8>> = packets.split_off(defs_end + 1).into();
    let bytes: usize = rows.iter().map(Vec::len).sum();
    if held + bytes > CURSOR_BYTES {
        return Opened::TooLarge(held + bytes);
    }
    // The definitions' EOF carries the final status (the client's transaction state), plus
    // the open cursor.
    let status = wire::eof_status(&last).unwrap_or(StatusFlags::empty());
    if let Some(eof) = packets.last_mut() {
        patch_status(eof, |_| status | StatusFlags::SERVER_STATUS_CURSOR_EXISTS);
    }
    Opened::Cursor(packets, LeaderCursor { rows, bytes })
}

impl LeaderCursor {
    /// Bytes of rows still held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Up to `n` rows and the EOF that ends the fetch (`LAST_ROW_SENT` once the cursor is
    /// exhausted); `status` is the session's transaction state. Returns whether rows remain.
    pub fn fetch(&mut self, n: u32, status: StatusFlags) -> (Vec<Vec<u8>>, bool) {
        let take = usize::try_from(n)
            .unwrap_or(usize::MAX)
            .min(self.rows.len());
        let mut out: Vec<Vec<u8>> = self.rows.drain(..take).collect();
        self.bytes -= out.iter().map(Vec::len).sum::<usize>();
        let mut flags = status | StatusFlags::SERVER_STATUS_CURSOR_EXISTS;
        let more = !self.rows.is_empty();
        if !more {
            flags |= StatusFlags::SERVER_STATUS_LAST_ROW_SENT;
        }
        out.push(wire::eof_packet(flags, 0));
        (out, more)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eof(status: StatusFlags) -> Vec<u8> {
        wire::eof_packet(status, 0)
    }

    #[test]
    fn a_result_set_becomes_metadata_and_fetched_rows() {
        let st = StatusFlags::SERVER_STATUS_IN_TRANS;
        let packets = vec![
            vec![1],
            b"coldef".to_vec(),
            eof(StatusFlags::empty()),
            vec![0, 0, 1],
            vec![0, 0, 2],
            vec![0, 0, 3],
            eof(st),
        ];
        let Opened::Cursor(head, mut c) = open(packets, 0) else {
            panic!("no cursor")
        };
        assert_eq!(head.len(), 3);
        assert_eq!(
            wire::eof_status(&head[2]),
            Some(st | StatusFlags::SERVER_STATUS_CURSOR_EXISTS)
        );
        let (first, more) = c.fetch(2, st);
        assert_eq!(first[..2], [vec![0, 0, 1], vec![0, 0, 2]]);
        assert!(more);
        let (rest, more) = c.fetch(2, st);
        assert_eq!(rest.len(), 2);
        assert!(!more);
        let flags = wire::eof_status(&rest[1]).unwrap();
        assert!(flags.contains(StatusFlags::SERVER_STATUS_LAST_ROW_SENT));
    }

    #[test]
    fn the_session_bound_counts_every_open_cursor() {
        let packets = vec![
            vec![1],
            b"def".to_vec(),
            eof(StatusFlags::empty()),
            vec![0; 100],
            eof(StatusFlags::empty()),
        ];
        assert!(matches!(
            open(packets.clone(), CURSOR_BYTES - 100),
            Opened::Cursor(..)
        ));
        assert!(matches!(
            open(packets, CURSOR_BYTES - 99),
            Opened::TooLarge(_)
        ));
    }

    #[test]
    fn ok_and_err_answers_open_no_cursor() {
        let ok = wire::ok_packet(1, 0, StatusFlags::empty(), 0);
        assert!(matches!(open(vec![ok], 0), Opened::Plain(_)));
        let err = vec![0xFF, 0x10, 0x04, b'x'];
        assert!(matches!(open(vec![err], 0), Opened::Plain(_)));
    }
}
