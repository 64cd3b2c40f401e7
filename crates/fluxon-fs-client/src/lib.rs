//! fluxon-fs client core: what the Python extension (`fluxon_py._native`) binds.
//!
//! - [`Client`]: one identity talking to one master and its agents: login and token renewal,
//!   the export snapshot, persistent multiplexed agent connections, path operations.
//! - [`File`]: an open remote file with explicit offsets: inline small files, chunked reads with
//!   readahead, pipelined writes whose errors surface at `flush`/`close`.
//! - [`runtime`]: the process-wide tokio runtime, replaced after `fork()`.
//!
//! The API is synchronous (callers are Python threads); every network wait is bounded by the
//! client's timeout and ends in [`ClientError::Timeout`] or an errno-carrying error.

mod conn;
mod error;
mod file;
pub mod runtime;
mod session;

pub use error::ClientError;
pub use file::File;
pub use fluxon_fs_proto::{DirEntry, OpenFlags, StatInfo};
pub use session::{Client, ClientOptions};
