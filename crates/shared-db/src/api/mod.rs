//! HTTP endpoints on the UI/management port.

pub mod status;
