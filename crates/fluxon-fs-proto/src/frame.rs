//! Frames: `u32 body_len (LE) | u64 request_id | u32 message_len | message | data`.
//!
//! `message` is a postcard-encoded [`crate::Request`] or [`crate::Response`]; `data` is the bulk
//! payload of a read reply, a write request or an inline open reply. Keeping bulk bytes out of
//! the encoded message means they are never serialised element by element.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt};

/// Largest accepted frame body: a read chunk (at most 8 MiB) plus headroom for the message.
pub const MAX_FRAME_BYTES: usize = 16 * 1024 * 1024;

const HEADER: usize = 8 + 4;

/// One frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub request_id: u64,
    /// The encoded message.
    pub message: Bytes,
    /// Bulk bytes (may be empty).
    pub data: Bytes,
}

/// Frame and message codec errors.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("connection closed")]
    Closed,
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    #[error("frame of {len} bytes exceeds the limit of {MAX_FRAME_BYTES} bytes")]
    TooLarge { len: usize },
    #[error("malformed frame: {0}")]
    Malformed(String),
}

impl Frame {
    /// A frame carrying `message` (encoded here) and `data`.
    pub fn encode<T: Serialize>(
        request_id: u64,
        message: &T,
        data: Bytes,
    ) -> Result<Frame, FrameError> {
        let message = postcard::to_allocvec(message)
            .map_err(|e| FrameError::Malformed(format!("cannot encode message: {e}")))?;
        Ok(Frame {
            request_id,
            message: Bytes::from(message),
            data,
        })
    }

    /// Decodes the message part.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, FrameError> {
        postcard::from_bytes(&self.message)
            .map_err(|e| FrameError::Malformed(format!("cannot decode message: {e}")))
    }

    /// The length prefix and headers; send it followed by `message` and `data`.
    pub fn header(&self) -> Result<[u8; 4 + HEADER], FrameError> {
        let body = HEADER + self.message.len() + self.data.len();
        if body > MAX_FRAME_BYTES {
            return Err(FrameError::TooLarge { len: body });
        }
        let mut out = [0u8; 4 + HEADER];
        let mut w = &mut out[..];
        w.put_u32_le(body as u32);
        w.put_u64_le(self.request_id);
        w.put_u32_le(self.message.len() as u32);
        Ok(out)
    }

    /// Serialises the whole frame into one buffer (small frames).
    pub fn to_bytes(&self) -> Result<BytesMut, FrameError> {
        let header = self.header()?;
        let mut buf = BytesMut::with_capacity(header.len() + self.message.len() + self.data.len());
        buf.put_slice(&header);
        buf.put_slice(&self.message);
        buf.put_slice(&self.data);
        Ok(buf)
    }

    /// Reads one frame. [`FrameError::Closed`] on a clean end of stream between frames.
    pub async fn read<R: AsyncRead + Unpin>(reader: &mut R) -> Result<Frame, FrameError> {
        let mut len = [0u8; 4];
        match reader.read_exact(&mut len).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return Err(FrameError::Closed)
            }
            Err(e) => return Err(e.into()),
        }
        let body_len = u32::from_le_bytes(len) as usize;
        if body_len > MAX_FRAME_BYTES {
            return Err(FrameError::TooLarge { len: body_len });
        }
        if body_len < HEADER {
            return Err(FrameError::Malformed(format!(
                "body of {body_len} bytes is shorter than the header"
            )));
        }
        // Filled straight from the socket (no zeroing pass over a body of up to 8 MiB).
        let mut body = BytesMut::with_capacity(body_len);
        let mut limited = (&mut *reader).take(body_len as u64);
        while body.len() < body_len {
            if limited.read_buf(&mut body).await? == 0 {
                return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
            }
        }
        let mut body = body.freeze();
        let request_id = body.get_u64_le();
        let message_len = body.get_u32_le() as usize;
        if message_len > body.len() {
            return Err(FrameError::Malformed(format!(
                "message length {message_len} exceeds the frame body"
            )));
        }
        let message = body.split_to(message_len);
        Ok(Frame {
            request_id,
            message,
            data: body,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn round_trip() {
        let frame = Frame::encode(7, &"hello".to_string(), Bytes::from_static(b"data")).unwrap();
        let bytes = frame.to_bytes().unwrap();
        let mut slice = &bytes[..];
        let back = Frame::read(&mut slice).await.unwrap();
        assert_eq!(back, frame);
        assert_eq!(back.decode::<String>().unwrap(), "hello");
        assert!(matches!(
            Frame::read(&mut slice).await,
            Err(FrameError::Closed)
        ));
    }

    #[tokio::test]
    async fn rejects_oversized_and_short_frames() {
        let mut big = &((MAX_FRAME_BYTES as u32) + 1).to_le_bytes()[..];
        assert!(matches!(
            Frame::read(&mut big).await,
            Err(FrameError::TooLarge { .. })
        ));
        let mut short = &3u32.to_le_bytes()[..];
        assert!(matches!(
            Frame::read(&mut short).await,
            Err(FrameError::Malformed(_))
        ));
    }
}
