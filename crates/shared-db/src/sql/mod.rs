//! SQL handling: statement classification for routing, and text-level determinism for
//! replicated writes.

pub mod classify;
pub mod determinism;
mod functions;
pub(crate) mod lexer;
mod split;
pub mod targets;
