//! Managed engine (being written).
