//! Talking to the engine: the readiness probe and the few administrative statements the
//! operator itself runs (securing a fresh install, creating databases).

use std::path::Path;
use std::time::Duration;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, OptsBuilder};
use tokio::io::AsyncReadExt;

use super::error::EngineError;
use super::secret::Secret;

/// Bound for one readiness probe (connect and read the greeting).
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Bound for one administrative connection plus its statements.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest database name MariaDB accepts.
const MAX_NAME_CHARS: usize = 64;

/// The account the operator uses on its managed engine.
pub(crate) const ROOT: &str = "root";

/// True if the server on `socket` greets with a protocol-10 handshake.
pub(crate) async fn handshake_ready(socket: &Path) -> bool {
    tokio::time::timeout(PROBE_TIMEOUT, read_greeting_version(socket))
        .await
        .ok()
        .flatten()
        == Some(10)
}

/// The first payload byte of the server's first packet: the protocol version in a greeting.
async fn read_greeting_version(socket: &Path) -> Option<u8> {
    let mut stream = tokio::net::UnixStream::connect(socket).await.ok()?;
    // 3-byte length, 1-byte sequence number, then the payload.
    let mut head = [0u8; 5];
    stream.read_exact(&mut head).await.ok()?;
    Some(head[4])
}

/// Connection options for `user` over the unix socket.
pub(crate) fn socket_opts(socket: &Path, user: &str, pass: Option<&str>) -> OptsBuilder {
    OptsBuilder::default()
        .socket(Some(socket.to_string_lossy().into_owned()))
        .user(Some(user))
        .pass(pass)
}

/// On a freshly installed engine: drops every root account except `root@localhost` (install-db
/// creates password-less ones for the hostname, 127.0.0.1 and ::1) and any anonymous account,
/// sets the internal password on `root@localhost`, then checks that it works.
pub(crate) async fn secure_fresh_install(
    socket: &Path,
    secret: &Secret,
) -> Result<(), EngineError> {
    let what = "secure the new engine's accounts";
    bounded(what, async {
        let mut conn = connect(socket_opts(socket, ROOT, None), what).await?;
        let extra: Vec<(String, String)> = conn
            .query(
                "SELECT user, host FROM mysql.user \
                 WHERE (user = 'root' AND host <> 'localhost') OR user = ''",
            )
            .await
            .map_err(|e| EngineError::sql("list the default accounts", e))?;
        for (user, host) in &extra {
            let sql = format!(
                "DROP USER {}@{}",
                string_literal(user),
                string_literal(host)
            );
            conn.query_drop(sql)
                .await
                .map_err(|e| EngineError::sql(format!("drop the account {user}@{host}"), e))?;
            tracing::info!(%user, %host, "dropped a password-less default engine account");
        }
        let sql = format!(
            "ALTER USER 'root'@'localhost' IDENTIFIED BY PASSWORD '{}'",
            secret.native_hash()
        );
        conn.query_drop(sql)
            .await
            .map_err(|e| EngineError::sql("set the root password", e))?;
        disconnect(conn).await;
        let check = connect(socket_opts(socket, ROOT, Some(secret.as_str())), what).await?;
        disconnect(check).await;
        Ok(())
    })
    .await
}

/// Runs `CREATE DATABASE IF NOT EXISTS` for `name` (quoted as an identifier) on the server
/// `opts` points to.
pub async fn ensure_database(opts: impl Into<Opts>, name: &str) -> Result<(), EngineError> {
    validate_database_name(name)?;
    let what = format!("create the database {name:?}");
    bounded(&what, async {
        let mut conn = connect(opts, &what).await?;
        let sql = format!("CREATE DATABASE IF NOT EXISTS {}", quote_identifier(name));
        conn.query_drop(sql)
            .await
            .map_err(|e| EngineError::sql(what.clone(), e))?;
        disconnect(conn).await;
        Ok(())
    })
    .await
}

/// Quotes an identifier with backticks, doubling any backtick inside it.
pub fn quote_identifier(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

fn validate_database_name(name: &str) -> Result<(), EngineError> {
    let reason = if name.is_empty() {
        Some("it is empty")
    } else if name.chars().count() > MAX_NAME_CHARS {
        Some("it is longer than 64 characters")
    } else if name.contains('\0') {
        Some("it contains a NUL character")
    } else {
        None
    };
    match reason {
        None => Ok(()),
        Some(reason) => Err(EngineError::InvalidName {
            name: name.to_string(),
            reason,
        }),
    }
}

/// A single-quoted SQL string literal (backslashes and quotes escaped).
fn string_literal(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

async fn connect(opts: impl Into<Opts>, what: &str) -> Result<Conn, EngineError> {
    Conn::new(opts)
        .await
        .map_err(|e| EngineError::sql(format!("connect to {what}"), e))
}

async fn disconnect(conn: Conn) {
    if let Err(e) = conn.disconnect().await {
        tracing::debug!(error = %e, "closing an admin connection to the engine failed");
    }
}

async fn bounded<T>(
    what: &str,
    fut: impl std::future::Future<Output = Result<T, EngineError>>,
) -> Result<T, EngineError> {
    tokio::time::timeout(ADMIN_TIMEOUT, fut)
        .await
        .unwrap_or_else(|_| {
            Err(EngineError::SqlTimeout {
                what: what.to_string(),
                seconds: ADMIN_TIMEOUT.as_secs(),
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_backtick_quoted_with_backticks_doubled() {
        assert_eq!(quote_identifier("app"), "`app`");
        assert_eq!(quote_identifier("a`b"), "`a``b`");
        assert_eq!(
            quote_identifier("`; DROP DATABASE x; `"),
            "```; DROP DATABASE x; ```"
        );
    }

    #[test]
    fn string_literals_escape_quotes_and_backslashes() {
        assert_eq!(string_literal("host"), "'host'");
        assert_eq!(string_literal("o'h\\"), "'o\\'h\\\\'");
    }

    #[test]
    fn database_names_are_validated() {
        assert!(validate_database_name("app_db").is_ok());
        assert!(validate_database_name("").is_err());
        assert!(validate_database_name(&"x".repeat(65)).is_err());
        assert!(validate_database_name(&"é".repeat(64)).is_ok());
        assert!(validate_database_name("a\0b").is_err());
    }
}
