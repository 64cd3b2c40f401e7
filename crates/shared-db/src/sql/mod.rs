//! SQL handling: statement classification for routing.

pub mod classify;
