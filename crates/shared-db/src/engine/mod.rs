//! The database engine behind a node: external (host/port) or managed (`mariadbd` child).

pub mod managed;
