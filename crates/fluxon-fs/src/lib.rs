//! fluxon-fs: remote directory exports mounted into Python processes.
//!
//! - [`agent`]: serves export directories over the binary protocol (`fluxon-fs agent`).
//! - [`master`]: control plane: access DB, logins and tokens, export registry (`fluxon-fs master`).
//! - [`config`]: the YAML config files; [`store`]: the `StateStore` trait and backends.
//! - [`join`]: agent ↔ master authentication with the join secret.

pub mod agent;
pub mod config;
pub mod join;
pub mod master;
pub mod store;
pub mod up;
