//! The database engine behind a node: external (host/port) or managed (`mariadbd` child).
//!
//! [`managed::ManagedEngine`] is the managed one; [`error::EngineError`] its errors.

mod admin;
mod child;
pub mod error;
mod install;
mod launch;
mod layout;
pub mod managed;
mod secret;
mod stale;

pub use admin::{ensure_database, quote_identifier};
pub use error::EngineError;
pub(crate) use launch::log_tail;
pub use layout::EnginePaths;
pub use managed::{EngineState, ManagedEngine, ManagedEngineConfig};
