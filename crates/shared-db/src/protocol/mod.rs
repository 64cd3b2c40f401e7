//! The MySQL protocol front end: framing, login, engine connections and the raw relay.

pub mod auth;
pub mod backend;
pub mod errors;
pub mod frontend;
pub mod handshake;
pub mod packet;
pub mod pool;
pub mod relay;
pub mod session;
pub mod stream;
pub mod wire;
