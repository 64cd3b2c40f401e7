//! Test harness for integration tests that need real infrastructure.
//!
//! Starts throwaway MariaDB servers (fresh datadir from `mariadb-install-db`, private socket,
//! reserved TCP port, root password set) and etcd servers (reserved ports, temp data dir), and
//! reserves free TCP ports. Every handle tears its process and directory down when dropped, also
//! while a failing test unwinds; children additionally receive SIGKILL if the thread that started
//! them dies, so a crashed test binary leaves no servers behind.
//!
//! Handles are meant to be created and dropped on the same thread (a plain `#[test]` or a
//! `#[tokio::test]` body): the parent-death signal is tied to the spawning thread.

mod error;
mod etcd;
mod mariadb;
mod ports;
mod process;
mod scratch;

pub use error::{Error, Result};
pub use etcd::{Etcd, EtcdOptions};
pub use mariadb::{MariaDb, MariaDbOptions};
pub use ports::{reserve_port, PortReservation};
pub use process::ManagedChild;
