//! fluxon-fs library; modules land as the product grows.

pub mod config;
pub mod store;
