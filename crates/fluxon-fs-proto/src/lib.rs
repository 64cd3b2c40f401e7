//! The fluxon-fs data-plane contract shared by agents (server) and the client core.
//!
//! - [`frame`]: length-prefixed, request-id-tagged frames over one TCP connection, so many
//!   requests can be in flight at once; bulk bytes travel beside the encoded message, uncopied.
//! - [`message`]: the requests and replies (postcard-encoded).
//! - [`token`]: access tokens the master signs with Ed25519 and agents verify.
//! - [`scope`]: what a token's scopes allow on an export-relative path.
//! - [`relpath`]: validation of export-relative paths (no `..`, no absolute paths).

pub mod frame;
pub mod http;
pub mod master_api;
pub mod message;
pub mod relpath;
pub mod scope;
pub mod token;

pub use frame::{Frame, FrameError, MAX_FRAME_BYTES};
pub use message::{
    DirEntry, OpenFlags, Opened, Request, Response, StatInfo, WireError, PROTOCOL_VERSION,
};
pub use scope::{AccessMode, Scope};
pub use token::{Claims, TokenError, TokenSigner, TokenVerifier};
