//! shared-db: a MySQL-protocol operator in front of a MariaDB/MySQL engine.
//!
//! - [`protocol`]: the MySQL server side (handshake, auth, commands) and the raw relay to the
//!   engine.
//! - [`sql`]: statement classification (read / write / session / transaction control).
//! - [`engine`]: the engine behind a node, external or managed (a `mariadbd` child process).
//! - [`api`]: the HTTP status / management endpoint.
//! - [`cluster`]: consensus, membership and the internal API of a cluster of nodes.
//! - [`config`]: flags, config file and upstream environment variables.
//! - [`cluster_cli`], [`dev_cluster`]: the `cluster` and `dev-cluster` commands.

pub mod api;
pub mod cluster;
pub mod cluster_cli;
pub mod config;
pub mod dev_cluster;
pub mod engine;
pub mod node;
pub mod private_file;
pub mod protocol;
pub mod raft_replication;
pub mod replication;
pub mod sql;
pub mod tls;
