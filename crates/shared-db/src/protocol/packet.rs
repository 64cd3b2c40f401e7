//! MySQL packet framing: 4-byte headers, sequence ids, and logical packets over 16 MiB.
//!
//! A physical packet is `len: u24 LE, seq: u8, payload`. A logical packet longer than
//! `0xFFFFFF` bytes is split into full-size physical packets followed by a shorter one (possibly
//! empty). [`PacketIo`] reads and writes both forms over any async byte stream and keeps the
//! sequence id; raw physical packets can be relayed byte for byte with [`PacketIo::read_raw`].

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, BufWriter};

/// Largest payload of one physical packet.
pub const MAX_PAYLOAD: usize = 0xFF_FFFF;

/// Errors while reading packets.
#[derive(Debug, thiserror::Error)]
pub enum PacketError {
    #[error("connection closed")]
    Closed,
    #[error("packet of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    #[error("packets out of order: expected sequence id {expected}, got {got}")]
    OutOfOrder { expected: u8, got: u8 },
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Buffered packet reader/writer with sequence tracking.
pub struct PacketIo<S> {
    reader: BufReader<tokio::io::ReadHalf<S>>,
    writer: BufWriter<tokio::io::WriteHalf<S>>,
    /// Sequence id of the next packet to read or write.
    pub seq: u8,
    /// Upper bound for a logical packet read with [`PacketIo::read_packet`].
    pub max_packet: usize,
}

impl<S: AsyncRead + AsyncWrite + Unpin> PacketIo<S> {
    pub fn new(stream: S) -> Self {
        let (r, w) = tokio::io::split(stream);
        PacketIo {
            reader: BufReader::with_capacity(64 * 1024, r),
            writer: BufWriter::with_capacity(64 * 1024, w),
            seq: 0,
            max_packet: 1 << 30,
        }
    }

    /// Gives back the stream and any bytes already read from it but not yet consumed (a
    /// client may send its TLS ClientHello right behind the SSL request).
    pub fn into_parts(self) -> (Vec<u8>, S) {
        let buffered = self.reader.buffer().to_vec();
        let stream = self.reader.into_inner().unsplit(self.writer.into_inner());
        (buffered, stream)
    }

    /// True if bytes are already buffered (a pipelined packet is waiting).
    pub fn has_buffered_input(&self) -> bool {
        !self.reader.buffer().is_empty()
    }

    /// Reads one physical packet: returns its payload length and appends header+payload to `out`.
    /// Checks and advances the sequence id.
    pub async fn read_raw(&mut self, out: &mut Vec<u8>) -> Result<usize, PacketError> {
        self.read_raw_limited(out, usize::MAX).await
    }

    /// Like [`PacketIo::read_raw`], refusing (before allocating) a packet longer than `limit`.
    async fn read_raw_limited(
        &mut self,
        out: &mut Vec<u8>,
        limit: usize,
    ) -> Result<usize, PacketError> {
        let mut header = [0u8; 4];
        match self.reader.read_exact(&mut header).await {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Err(PacketError::Closed),
            Err(e) => return Err(e.into()),
        }
        let len =
            usize::from(header[0]) | usize::from(header[1]) << 8 | usize::from(header[2]) << 16;
        if header[3] != self.seq {
            return Err(PacketError::OutOfOrder {
                expected: self.seq,
                got: header[3],
            });
        }
        self.seq = self.seq.wrapping_add(1);
        if len > limit {
            return Err(PacketError::TooLarge { size: len, limit });
        }
        let start = out.len();
        out.extend_from_slice(&header);
        out.resize(start + 4 + len, 0);
        self.reader
            .read_exact(&mut out[start + 4..])
            .await
            .map_err(|e| {
                if e.kind() == io::ErrorKind::UnexpectedEof {
                    PacketError::Closed
                } else {
                    e.into()
                }
            })?;
        Ok(len)
    }

    /// Reads one logical packet (joining split packets) into `payload` (cleared first).
    /// `raw`, if given, receives the physical packets byte for byte for relaying.
    pub async fn read_packet(
        &mut self,
        payload: &mut Vec<u8>,
        mut raw: Option<&mut Vec<u8>>,
    ) -> Result<(), PacketError> {
        payload.clear();
        let mut buf = Vec::new();
        loop {
            buf.clear();
            let remaining = self.max_packet.saturating_sub(payload.len());
            let len = self
                .read_raw_limited(&mut buf, remaining)
                .await
                .map_err(|e| match e {
                    PacketError::TooLarge { size, .. } => PacketError::TooLarge {
                        size: payload.len() + size,
                        limit: self.max_packet,
                    },
                    other => other,
                })?;
            payload.extend_from_slice(&buf[4..]);
            if let Some(r) = raw.as_deref_mut() {
                r.extend_from_slice(&buf);
            }
            if len < MAX_PAYLOAD {
                return Ok(());
            }
        }
    }

    /// Writes one logical packet, splitting it as the protocol requires. Does not flush.
    pub async fn write_packet(&mut self, payload: &[u8]) -> io::Result<()> {
        let mut chunks = payload.chunks(MAX_PAYLOAD);
        let mut last_len = 0;
        for chunk in chunks.by_ref() {
            self.write_physical(chunk).await?;
            last_len = chunk.len();
        }
        if payload.is_empty() || last_len == MAX_PAYLOAD {
            self.write_physical(&[]).await?;
        }
        Ok(())
    }

    async fn write_physical(&mut self, chunk: &[u8]) -> io::Result<()> {
        let len = chunk.len();
        let header = [len as u8, (len >> 8) as u8, (len >> 16) as u8, self.seq];
        self.seq = self.seq.wrapping_add(1);
        self.writer.write_all(&header).await?;
        self.writer.write_all(chunk).await
    }

    /// Writes already framed bytes (relayed packets) as they are. Does not flush.
    pub async fn write_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.writer.write_all(bytes).await
    }

    pub async fn flush(&mut self) -> io::Result<()> {
        self.writer.flush().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn round_trips_small_empty_and_split_packets() {
        let (a, b) = tokio::io::duplex(1 << 20);
        let mut w = PacketIo::new(a);
        let mut r = PacketIo::new(b);
        let big = vec![7u8; MAX_PAYLOAD * 2 + 10];
        let exact = vec![1u8; MAX_PAYLOAD];
        let writer = tokio::spawn(async move {
            for p in [&b"hello"[..], &[][..], &big[..], &exact[..]] {
                w.write_packet(p).await.unwrap();
            }
            w.flush().await.unwrap();
            w
        });
        let mut payload = Vec::new();
        r.read_packet(&mut payload, None).await.unwrap();
        assert_eq!(payload, b"hello");
        r.read_packet(&mut payload, None).await.unwrap();
        assert!(payload.is_empty());
        let mut raw = Vec::new();
        r.read_packet(&mut payload, Some(&mut raw)).await.unwrap();
        assert_eq!(payload.len(), MAX_PAYLOAD * 2 + 10);
        assert_eq!(raw.len(), payload.len() + 3 * 4);
        r.read_packet(&mut payload, None).await.unwrap();
        assert_eq!(payload.len(), MAX_PAYLOAD);
        // 1 + 1 + 3 + 2 packets: a payload of exactly MAX_PAYLOAD is followed by an empty one.
        assert_eq!(r.seq, 7);
        writer.await.unwrap();
    }

    #[tokio::test]
    async fn rejects_oversized_and_out_of_order_packets() {
        let (a, b) = tokio::io::duplex(1 << 16);
        let mut w = PacketIo::new(a);
        let mut r = PacketIo::new(b);
        r.max_packet = 10;
        w.write_packet(&[0u8; 11]).await.unwrap();
        w.flush().await.unwrap();
        let mut p = Vec::new();
        assert!(matches!(
            r.read_packet(&mut p, None).await,
            Err(PacketError::TooLarge { .. })
        ));
        let (a, b) = tokio::io::duplex(1 << 16);
        let mut w = PacketIo::new(a);
        let mut r = PacketIo::new(b);
        w.seq = 5;
        w.write_packet(b"x").await.unwrap();
        w.flush().await.unwrap();
        assert!(matches!(
            r.read_packet(&mut p, None).await,
            Err(PacketError::OutOfOrder {
                expected: 0,
                got: 5
            })
        ));
    }
}
