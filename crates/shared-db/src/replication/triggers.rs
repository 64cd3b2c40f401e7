//! Refuses writes that fire a trigger inserting into an `AUTO_INCREMENT` table.
//!
//! MariaDB lists these as unsafe for statement replication: `INSERT_ID` pins only the
//! statement's own first generated value, so the ids a trigger generates follow the order in
//! which transactions ran on the leader, and followers, applying in log order, can hand out
//! others. Which triggers insert where is read from the leader's engine
//! (`information_schema.TRIGGERS`, then the `AUTO_INCREMENT` columns of the tables their
//! bodies insert into) and cached until the next DDL is applied.

use std::collections::HashMap;
use std::sync::Arc;

use super::context::quote;
use super::meta::server_error;
use super::response::run_query;
use crate::protocol::backend::{Backend, BackendError};
use crate::sql::targets::{inserted_tables, writes, TableName};

/// A trigger that inserts into an `AUTO_INCREMENT` table.
#[derive(Debug, Clone)]
struct UnsafeTrigger {
    event: String,
    name: String,
    /// `db.table` it inserts into.
    target: String,
}

/// By the table the triggers are on: (database, table).
type UnsafeTriggers = HashMap<(String, String), Vec<UnsafeTrigger>>;

/// The leader's cached view of such triggers.
#[derive(Default)]
pub struct TriggerCheck {
    /// The DDL count the cache was read at, and the triggers.
    cache: tokio::sync::Mutex<Option<(u64, Arc<UnsafeTriggers>)>>,
}

const SYSTEM_SCHEMAS: &str =
    "('mysql', 'sys', 'information_schema', 'performance_schema', 'flux_meta')";

impl TriggerCheck {
    /// The reason to refuse `sql`, if it writes a table with a trigger (for one of the events
    /// it fires) that inserts into an `AUTO_INCREMENT` table. `conn` is the session's engine
    /// connection (its default database names unqualified tables); `ddl_epoch` counts the DDL
    /// applied so far.
    pub async fn refusal(
        &self,
        conn: &mut Backend,
        ddl_epoch: u64,
        sql: &str,
    ) -> Result<Option<String>, BackendError> {
        let triggers = self.triggers(conn, ddl_epoch).await?;
        if triggers.is_empty() {
            return Ok(None);
        }
        let w = writes(sql);
        let mut default_db: Option<Option<String>> = None;
        for TableName { db, table } in &w.tables {
            let db = match db {
                Some(d) => d.clone(),
                None => {
                    if !triggers.keys().any(|(_, t)| t == table) {
                        continue;
                    }
                    if default_db.is_none() {
                        default_db = Some(current_db(conn).await?);
                    }
                    match default_db.clone().flatten() {
                        Some(d) => d,
                        None => continue,
                    }
                }
            };
            let Some(found) = triggers.get(&(db.clone(), table.clone())) else {
                continue;
            };
            if let Some(t) = found.iter().find(|t| w.events.contains(&t.event.as_str())) {
                return Ok(Some(format!(
                    "trigger {db}.{} (on {} of {db}.{table}) inserts into {}, which has an \
                     AUTO_INCREMENT column: the ids it generates follow the order transactions \
                     ran on the leader, not the log order, so nodes could differ. Give that \
                     table a key taken from the row instead (e.g. NEW.id)",
                    t.name, t.event, t.target
                )));
            }
        }
        Ok(None)
    }

    async fn triggers(
        &self,
        conn: &mut Backend,
        ddl_epoch: u64,
    ) -> Result<Arc<UnsafeTriggers>, BackendError> {
        let mut cache = self.cache.lock().await;
        if let Some((epoch, t)) = cache.as_ref() {
            if *epoch == ddl_epoch {
                return Ok(Arc::clone(t));
            }
        }
        let t = Arc::new(load(conn).await?);
        *cache = Some((ddl_epoch, Arc::clone(&t)));
        Ok(t)
    }
}

async fn current_db(conn: &mut Backend) -> Result<Option<String>, BackendError> {
    let c = run_query(conn, "SELECT DATABASE()").await?;
    if c.outcome.error != 0 {
        return Err(server_error(&c.outcome));
    }
    Ok(c.column(0)
        .into_iter()
        .next()
        .map(|v| String::from_utf8_lossy(&v).into_owned()))
}

async fn load(conn: &mut Backend) -> Result<UnsafeTriggers, BackendError> {
    let c = run_query(
        conn,
        &format!(
            "SELECT EVENT_OBJECT_SCHEMA, EVENT_OBJECT_TABLE, TRIGGER_SCHEMA, TRIGGER_NAME, \
             EVENT_MANIPULATION, ACTION_STATEMENT FROM information_schema.TRIGGERS \
             WHERE EVENT_OBJECT_SCHEMA NOT IN {SYSTEM_SCHEMAS}"
        ),
    )
    .await?;
    if c.outcome.error != 0 {
        return Err(server_error(&c.outcome));
    }
    let text = |n: usize| -> Vec<String> {
        c.column(n)
            .into_iter()
            .map(|v| String::from_utf8_lossy(&v).into_owned())
            .collect()
    };
    let (on_db, on_table, schema, name, event, body) =
        (text(0), text(1), text(2), text(3), text(4), text(5));
    // (trigger's table, name, event, tables its body inserts into)
    let mut found = Vec::new();
    for k in 0..body.len().min(on_db.len()).min(on_table.len()) {
        let (Some(schema), Some(name), Some(event)) = (schema.get(k), name.get(k), event.get(k))
        else {
            continue;
        };
        let targets: Vec<(String, String)> = inserted_tables(&body[k])
            .into_iter()
            .map(|t| (t.db.unwrap_or_else(|| schema.clone()), t.table))
            .collect();
        if !targets.is_empty() {
            found.push((
                (on_db[k].clone(), on_table[k].clone()),
                name.clone(),
                event.clone(),
                targets,
            ));
        }
    }
    let mut out = UnsafeTriggers::new();
    if found.is_empty() {
        return Ok(out);
    }
    let mut schemas: Vec<String> = found
        .iter()
        .flat_map(|(_, _, _, targets)| targets.iter().map(|(d, _)| quote(d)))
        .collect();
    schemas.sort();
    schemas.dedup();
    let c = run_query(
        conn,
        &format!(
            "SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.COLUMNS \
             WHERE EXTRA LIKE '%auto_increment%' AND TABLE_SCHEMA IN ({})",
            schemas.join(", ")
        ),
    )
    .await?;
    if c.outcome.error != 0 {
        return Err(server_error(&c.outcome));
    }
    let auto: Vec<(String, String)> = c
        .column(0)
        .into_iter()
        .zip(c.column(1))
        .map(|(d, t)| {
            (
                String::from_utf8_lossy(&d).into_owned(),
                String::from_utf8_lossy(&t).into_owned(),
            )
        })
        .collect();
    for (on, name, event, targets) in found {
        if let Some((d, t)) = targets.iter().find(|dt| auto.contains(dt)) {
            out.entry(on).or_default().push(UnsafeTrigger {
                event,
                name,
                target: format!("{d}.{t}"),
            });
        }
    }
    Ok(out)
}
