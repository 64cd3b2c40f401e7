//! `flux_meta`: the operator's own schema in each engine. It records the last applied log
//! position (updated in the same engine transaction as the entry's effects), markers of the
//! leader's committed XA transactions, and the diverged flag.

use super::context::quote;
use super::response::run_query;
use crate::cluster::contract::LogPosition;
use crate::protocol::backend::{Backend, BackendError};

/// The database holding the operator's state; never part of a snapshot's user databases.
pub const META_DB: &str = "flux_meta";

/// Creates the schema if missing.
pub async fn ensure_schema(b: &mut Backend) -> Result<(), BackendError> {
    for sql in [
        "CREATE DATABASE IF NOT EXISTS flux_meta",
        "CREATE TABLE IF NOT EXISTS flux_meta.position (id TINYINT UNSIGNED PRIMARY KEY, \
         log_index BIGINT UNSIGNED NOT NULL, log_term BIGINT UNSIGNED NOT NULL) ENGINE=InnoDB",
        "CREATE TABLE IF NOT EXISTS flux_meta.xa_done (xid VARCHAR(64) PRIMARY KEY) ENGINE=InnoDB",
        "CREATE TABLE IF NOT EXISTS flux_meta.state (k VARCHAR(64) PRIMARY KEY, v TEXT NOT NULL) \
         ENGINE=InnoDB",
    ] {
        b.query_drop(sql).await?;
    }
    Ok(())
}

/// The statement that records `pos` as applied (run inside the entry's transaction).
pub fn position_sql(pos: LogPosition) -> String {
    format!(
        "INSERT INTO flux_meta.position (id, log_index, log_term) VALUES (1, {i}, {t}) \
         ON DUPLICATE KEY UPDATE log_index = {i}, log_term = {t}",
        i = pos.index,
        t = pos.term
    )
}

/// The statement the leader runs inside its XA transaction, so a committed transaction can be
/// recognised after a crash before the position was recorded.
pub fn xa_done_sql(xid: &str) -> String {
    format!(
        "INSERT INTO flux_meta.xa_done (xid) VALUES ({})",
        quote(xid)
    )
}

/// `flux_meta.state` key of the progress inside a group entry (`EntryBody::Txns`):
/// `"<index>:<n>"` says the first `n` transactions of the entry at `index` are applied. Only
/// the entry at that index reads it, so it needs no clearing once the entry is done.
pub const GROUP_PROGRESS: &str = "group_progress";

/// The statement that records the progress inside a group entry (run inside the engine
/// transaction of the last transaction it counts).
pub fn group_progress_sql(index: u64, done: usize) -> String {
    write_state_sql(GROUP_PROGRESS, &format!("{index}:{done}"))
}

/// The recorded progress inside a group entry: (entry index, transactions applied).
pub async fn read_group_progress(b: &mut Backend) -> Result<Option<(u64, usize)>, BackendError> {
    Ok(read_state(b, GROUP_PROGRESS).await?.and_then(|v| {
        let (i, n) = v.split_once(':')?;
        Some((i.parse().ok()?, n.parse().ok()?))
    }))
}

/// Reads the recorded position.
pub async fn read_position(b: &mut Backend) -> Result<Option<LogPosition>, BackendError> {
    let c = run_query(
        b,
        "SELECT log_index, log_term FROM flux_meta.position WHERE id = 1",
    )
    .await?;
    if c.outcome.error != 0 {
        return Err(server_error(&c.outcome));
    }
    let Some(row) = c.first_row else {
        return Ok(None);
    };
    let num = |i: usize| -> u64 {
        row.get(i)
            .and_then(|(_, _, v)| v.as_deref())
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Ok(Some(LogPosition {
        index: num(0),
        term: num(1),
    }))
}

/// Whether the leader's XA transaction `xid` committed.
pub async fn xa_done(b: &mut Backend, xid: &str) -> Result<bool, BackendError> {
    let c = run_query(
        b,
        &format!("SELECT 1 FROM flux_meta.xa_done WHERE xid = {}", quote(xid)),
    )
    .await?;
    if c.outcome.error != 0 {
        return Err(server_error(&c.outcome));
    }
    Ok(c.first_row.is_some())
}

/// Prepared XA transactions on the engine (`XA RECOVER`), by xid.
pub async fn xa_recover(b: &mut Backend) -> Result<Vec<String>, BackendError> {
    let c = run_query(b, "XA RECOVER").await?;
    if c.outcome.error != 0 {
        return Err(server_error(&c.outcome));
    }
    // Rows: formatID, gtrid_length, bqual_length, data.
    Ok(c.column(3)
        .into_iter()
        .map(|data| String::from_utf8_lossy(&data).into_owned())
        .collect())
}

/// The statement that sets a key of `flux_meta.state`.
pub fn write_state_sql(key: &str, value: &str) -> String {
    format!(
        "REPLACE INTO flux_meta.state (k, v) VALUES ({}, {})",
        quote(key),
        quote(value)
    )
}

/// A key of `flux_meta.state`.
pub async fn read_state(b: &mut Backend, key: &str) -> Result<Option<String>, BackendError> {
    let c = run_query(
        b,
        &format!("SELECT v FROM flux_meta.state WHERE k = {}", quote(key)),
    )
    .await?;
    if c.outcome.error != 0 {
        return Err(server_error(&c.outcome));
    }
    Ok(c.first_row.and_then(|r| {
        r.into_iter()
            .next()
            .and_then(|(_, _, v)| v)
            .map(|v| String::from_utf8_lossy(&v).into_owned())
    }))
}

/// Records (or clears) the diverged flag.
pub async fn write_diverged(b: &mut Backend, reason: Option<&str>) -> Result<(), BackendError> {
    match reason {
        Some(r) => {
            b.query_drop(&format!(
                "REPLACE INTO flux_meta.state (k, v) VALUES ('diverged', {})",
                quote(r)
            ))
            .await
        }
        None => {
            b.query_drop("DELETE FROM flux_meta.state WHERE k = 'diverged'")
                .await
        }
    }
}

/// The recorded diverged reason, if any.
pub async fn read_diverged(b: &mut Backend) -> Result<Option<String>, BackendError> {
    read_state(b, "diverged").await
}

pub(crate) fn server_error(o: &super::entry::Outcome) -> BackendError {
    BackendError::Server {
        code: o.error,
        message: o.message.clone(),
        payload: Vec::new(),
    }
}
