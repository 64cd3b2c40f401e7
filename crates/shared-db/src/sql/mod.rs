//! SQL handling: statement classification for routing.

pub mod classify;
mod functions;
mod lexer;
mod split;
