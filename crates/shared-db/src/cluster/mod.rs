//! Clustering: consensus over the replicated write log, membership and the internal API.
//!
//! - [`contract`]: the traits between consensus and the engine side (`replication`).

pub mod contract;
