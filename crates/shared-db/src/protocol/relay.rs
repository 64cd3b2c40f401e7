//! Relays the engine's response to one command back to the client as raw packets.
//!
//! The relay only looks at the first bytes of each logical packet to find where the response
//! ends (OK / ERR / EOF, result-set boundaries, `SERVER_MORE_RESULTS_EXISTS`, open cursors); rows
//! and column definitions are copied byte for byte. Physical packets are forwarded as they
//! arrive, so a result larger than memory streams through.

use std::time::Duration;

use mysql_common::constants::StatusFlags;

use super::packet::{PacketError, PacketIo, MAX_PAYLOAD};
use super::stream::BoxStream;
use super::wire;

/// The shape of response a command produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// One packet: OK, ERR, EOF, or the COM_STATISTICS string.
    Single,
    /// COM_QUERY / COM_STMT_EXECUTE: one or more results (OK, ERR, result sets, LOCAL INFILE).
    Results,
    /// COM_STMT_PREPARE: statement OK with parameter and column definitions, or ERR.
    Prepare,
    /// COM_STMT_FETCH: rows up to EOF, or ERR.
    Fetch,
    /// COM_FIELD_LIST: column definitions up to EOF, or ERR.
    FieldList,
}

/// Who failed while relaying.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("engine connection failed: {0}")]
    Backend(PacketError),
    #[error("client connection failed: {0}")]
    Client(PacketError),
}

/// How the response ended.
#[derive(Debug, Clone, Copy, Default)]
pub struct Outcome {
    /// The final status flags the engine reported (if any).
    pub status: Option<StatusFlags>,
    /// The last result was an ERR packet.
    pub error: bool,
    /// Something was sent to the client (so a failure can no longer be reported cleanly).
    pub sent_any: bool,
    /// COM_STMT_PREPARE: the statement id and parameter count the engine gave.
    pub prepared: Option<(u32, u16)>,
}

/// Header bytes kept from each logical packet for inspection.
const HEAD: usize = 32;

/// One logical packet as seen by the relay: its length and first bytes.
struct Seen {
    len: usize,
    head: [u8; HEAD],
}

impl Seen {
    fn first(&self) -> Option<u8> {
        (self.len > 0).then_some(self.head[0])
    }
    fn head(&self) -> &[u8] {
        &self.head[..self.len.min(HEAD)]
    }
    fn is_eof(&self) -> bool {
        self.first() == Some(wire::EOF) && self.len < 9
    }
    fn is_err(&self) -> bool {
        self.first() == Some(wire::ERR)
    }
}

pub struct Relay<'a> {
    pub backend: &'a mut PacketIo<BoxStream>,
    pub client: &'a mut PacketIo<BoxStream>,
    buf: Vec<u8>,
    outcome: Outcome,
    /// Longest a write to the client may stall (a client that stops reading).
    write_timeout: Duration,
}

impl<'a> Relay<'a> {
    pub fn new(
        backend: &'a mut PacketIo<BoxStream>,
        client: &'a mut PacketIo<BoxStream>,
        write_timeout: Duration,
    ) -> Self {
        Relay {
            backend,
            client,
            buf: Vec::with_capacity(16 * 1024),
            outcome: Outcome::default(),
            write_timeout,
        }
    }

    /// Writes to the client, bounded: a client that stops reading loses its connection.
    async fn send_to_client(&mut self, flush: bool) -> Result<(), RelayError> {
        let write = async {
            if !flush {
                self.client.write_raw(&self.buf).await
            } else {
                self.client.flush().await
            }
        };
        match tokio::time::timeout(self.write_timeout, write).await {
            Ok(r) => r.map_err(|e| RelayError::Client(e.into())),
            Err(_) => Err(RelayError::Client(PacketError::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the client did not read its results in time",
            )))),
        }
    }

    /// Forwards one logical packet from the engine to the client.
    async fn pass(&mut self) -> Result<Seen, RelayError> {
        let mut seen = Seen {
            len: 0,
            head: [0; HEAD],
        };
        loop {
            self.buf.clear();
            let len = self
                .backend
                .read_raw(&mut self.buf)
                .await
                .map_err(RelayError::Backend)?;
            if seen.len < HEAD {
                let take = (HEAD - seen.len).min(len);
                seen.head[seen.len..seen.len + take].copy_from_slice(&self.buf[4..4 + take]);
            }
            seen.len += len;
            self.send_to_client(false).await?;
            self.outcome.sent_any = true;
            if len < MAX_PAYLOAD {
                break;
            }
        }
        self.client.seq = self.backend.seq;
        Ok(seen)
    }

    /// Relays the whole response of one command and flushes it to the client.
    pub async fn run(mut self, expect: Expect) -> Result<Outcome, RelayError> {
        match expect {
            Expect::Single => {
                let p = self.pass().await?;
                self.finish_single(&p);
            }
            Expect::Results => self.results().await?,
            Expect::Prepare => self.prepare().await?,
            Expect::Fetch => {
                self.rows_until_eof().await?;
            }
            Expect::FieldList => {
                self.rows_until_eof().await?;
            }
        }
        self.send_to_client(true).await?;
        Ok(self.outcome)
    }

    fn finish_single(&mut self, p: &Seen) {
        self.outcome.error = p.is_err();
        self.outcome.status = match p.first() {
            Some(wire::OK) => wire::ok_status(p.head()),
            Some(wire::EOF) if p.is_eof() => wire::eof_status(p.head()),
            _ => None,
        };
    }

    /// Packets up to and including an EOF or ERR; returns the last one.
    async fn rows_until_eof(&mut self) -> Result<Seen, RelayError> {
        loop {
            let p = self.pass().await?;
            if p.is_eof() {
                self.outcome.error = false;
                self.outcome.status = wire::eof_status(p.head());
                return Ok(p);
            }
            if p.is_err() {
                self.outcome.error = true;
                return Ok(p);
            }
        }
    }

    async fn results(&mut self) -> Result<(), RelayError> {
        loop {
            let first = self.pass().await?;
            let more = match first.first() {
                Some(wire::OK) => {
                    self.outcome.error = false;
                    self.outcome.status = wire::ok_status(first.head());
                    more_results(self.outcome.status)
                }
                Some(wire::ERR) | None => {
                    self.outcome.error = true;
                    false
                }
                Some(wire::LOCAL_INFILE) => {
                    self.local_infile().await?;
                    // The engine answers the file with OK or ERR (which may announce more).
                    continue;
                }
                Some(_) => {
                    // A result set: column count, definitions, EOF, rows, EOF.
                    let defs_end = self.rows_until_eof().await?;
                    if defs_end.is_err() {
                        return Ok(());
                    }
                    let status = wire::eof_status(defs_end.head());
                    if status.is_some_and(|s| s.contains(StatusFlags::SERVER_STATUS_CURSOR_EXISTS))
                    {
                        // COM_STMT_EXECUTE opened a cursor: rows come with COM_STMT_FETCH.
                        return Ok(());
                    }
                    let end = self.rows_until_eof().await?;
                    !end.is_err() && more_results(self.outcome.status)
                }
            };
            if !more {
                return Ok(());
            }
        }
    }

    async fn prepare(&mut self) -> Result<(), RelayError> {
        let first = self.pass().await?;
        if first.first() != Some(wire::OK) || first.len < 12 {
            self.outcome.error = true;
            return Ok(());
        }
        let h = first.head();
        let columns = u16::from_le_bytes([h[5], h[6]]);
        let params = u16::from_le_bytes([h[7], h[8]]);
        self.outcome.prepared = Some((u32::from_le_bytes([h[1], h[2], h[3], h[4]]), params));
        for count in [params, columns] {
            if count > 0 {
                self.rows_until_eof().await?;
            }
        }
        self.outcome.error = false;
        Ok(())
    }

    /// LOAD DATA LOCAL INFILE: the client streams the file; forward it until the empty packet.
    async fn local_infile(&mut self) -> Result<(), RelayError> {
        self.send_to_client(true).await?;
        loop {
            self.buf.clear();
            let len = self
                .client
                .read_raw(&mut self.buf)
                .await
                .map_err(RelayError::Client)?;
            self.backend
                .write_raw(&self.buf)
                .await
                .map_err(|e| RelayError::Backend(e.into()))?;
            self.backend.seq = self.client.seq;
            if len == 0 {
                break;
            }
        }
        self.backend
            .flush()
            .await
            .map_err(|e| RelayError::Backend(e.into()))
    }
}

fn more_results(status: Option<StatusFlags>) -> bool {
    status.is_some_and(|s| s.contains(StatusFlags::SERVER_MORE_RESULTS_EXISTS))
}
