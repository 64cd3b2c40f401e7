//! Statement classifier (being written).
