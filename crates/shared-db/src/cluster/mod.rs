//! Clustering: consensus over the replicated write log, membership and the internal API.
//!
//! - [`contract`]: the traits between consensus and the engine side (`replication`).
//! - [`handle`]: [`Cluster`], one node's raft as the rest of shared-db uses it.
//! - [`types`]: openraft's type configuration.
//! - [`log_store`]: the durable log and vote (redb, group commit).
//! - [`early`]: the leader sends new entries to followers while its own sync runs.
//! - [`sm`]: openraft's state machine side, driving a [`contract::StateMachine`].
//! - [`network`], [`server`], [`client`], [`auth`]: the internal HTTP API and its HMAC
//!   authentication.
//! - [`snapshot`]: snapshot files and their chunked, checksummed, resumable transfer.
//! - [`bootstrap`], [`discovery`], [`settings`]: forming and joining a cluster.

pub mod auth;
pub mod bootstrap;
pub mod client;
pub mod contract;
pub mod discovery;
pub mod early;
pub mod election;
pub mod flow;
pub mod handle;
pub mod http_get;
pub mod log_store;
pub mod network;
pub mod prevote;
pub mod server;
pub mod settings;
pub mod sm;
pub mod snapshot;
pub mod types;
pub mod wal;

pub use handle::{
    AddNode, Cluster, ClusterError, ClusterInfo, ClusterStatus, MemberInfo, RemoveNode,
};
pub use settings::ClusterSettings;
