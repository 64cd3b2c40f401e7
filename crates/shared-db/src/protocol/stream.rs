//! A boxed byte stream type so plain TCP, TLS and Unix-socket connections share one code path.

use tokio::io::{AsyncRead, AsyncWrite};

/// Any bidirectional async byte stream.
pub trait ByteStream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> ByteStream for T {}

pub type BoxStream = Box<dyn ByteStream>;
