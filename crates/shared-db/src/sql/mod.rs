//! SQL handling: statement classification for routing.

pub mod classify;
pub mod determinism;
mod functions;
mod lexer;
mod split;
