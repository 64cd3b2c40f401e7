//! A bounded pool of engine connections, keyed by the capability flags they were opened with.
//!
//! At most `max` connections exist at once (idle or in use). A connection a session gives back
//! is reset with COM_CHANGE_USER (no database), so no transaction, lock, temporary table, user
//! variable, prepared statement or `USE` of the previous client survives, and goes back to the
//! pool only if that reset succeeds. Idle connections are keyed by capabilities and collation;
//! handing one out costs at most a COM_INIT_DB for the client's database.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use mysql_common::constants::CapabilityFlags;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::backend::{pool_key, Backend, BackendError, EngineTarget};

/// Why no connection could be handed out.
#[derive(Debug, thiserror::Error)]
pub enum AcquireError {
    #[error("all {0} engine connections are in use")]
    Exhausted(usize),
    #[error(transparent)]
    Backend(#[from] BackendError),
}

pub struct BackendPool {
    target: EngineTarget,
    idle: std::sync::Mutex<HashMap<(u32, u8), Vec<Backend>>>,
    permits: Arc<Semaphore>,
    max: usize,
    max_idle: usize,
    acquire_timeout: Duration,
    opened: std::sync::atomic::AtomicU64,
}

/// A connection lent to one session; give it back with [`BackendPool::release`] or drop it to
/// discard it (e.g. after an I/O error).
pub struct Lease {
    pub backend: Backend,
    _permit: OwnedSemaphorePermit,
}

impl BackendPool {
    pub fn new(target: EngineTarget, max: usize, acquire_timeout: Duration) -> Arc<Self> {
        Arc::new(BackendPool {
            target,
            idle: std::sync::Mutex::new(HashMap::new()),
            permits: Arc::new(Semaphore::new(max)),
            max,
            max_idle: max.min(64),
            acquire_timeout,
            opened: Default::default(),
        })
    }

    pub fn target(&self) -> &EngineTarget {
        &self.target
    }

    /// Connections currently lent out or being reset.
    pub fn in_use(&self) -> usize {
        self.max - self.permits.available_permits()
    }

    /// Engine connections opened so far (reuse keeps this still).
    pub fn opened(&self) -> u64 {
        self.opened.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn idle_count(&self) -> usize {
        self.idle
            .lock()
            .map(|m| m.values().map(Vec::len).sum())
            .unwrap_or(0)
    }

    /// Hands out a clean connection for a client with these capabilities, collation and db.
    pub async fn acquire(
        self: &Arc<Self>,
        caps: CapabilityFlags,
        collation: u8,
        db: Option<&[u8]>,
    ) -> Result<Lease, AcquireError> {
        let permit =
            tokio::time::timeout(self.acquire_timeout, self.permits.clone().acquire_owned())
                .await
                .map_err(|_| AcquireError::Exhausted(self.max))?
                .map_err(|_| AcquireError::Exhausted(self.max))?;
        while let Some(mut backend) = self.pop_idle(caps, collation) {
            let Some(db) = db else {
                return Ok(Lease {
                    backend,
                    _permit: permit,
                });
            };
            let init = tokio::time::timeout(
                self.target.connect_timeout,
                backend.simple_command(0x02, db), // COM_INIT_DB
            )
            .await;
            match init {
                Ok(Ok(_)) => {
                    return Ok(Lease {
                        backend,
                        _permit: permit,
                    })
                }
                // The engine rejected the database (e.g. 1049): the connection is still clean.
                Ok(Err(e @ BackendError::Server { .. })) => {
                    self.put_idle(backend);
                    return Err(e.into());
                }
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "discarding a pooled engine connection");
                }
                Err(_) => tracing::debug!("discarding an unresponsive pooled engine connection"),
            }
        }
        let backend = Backend::connect(&self.target, caps, collation, db).await?;
        self.opened
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(Lease {
            backend,
            _permit: permit,
        })
    }

    fn pop_idle(&self, caps: CapabilityFlags, collation: u8) -> Option<Backend> {
        self.idle
            .lock()
            .ok()?
            .get_mut(&(pool_key(caps), collation))?
            .pop()
    }

    fn put_idle(&self, backend: Backend) {
        if let Ok(mut idle) = self.idle.lock() {
            let total: usize = idle.values().map(Vec::len).sum();
            if total < self.max_idle {
                idle.entry((backend.key, backend.collation))
                    .or_default()
                    .push(backend);
            }
        }
    }

    /// Takes a connection back and resets it at once (so locks and transactions of the last
    /// client are released now, not when it is next used): COM_CHANGE_USER as the operator's
    /// account without a database. It is kept only if the reset worked.
    pub fn release(self: &Arc<Self>, lease: Lease) {
        let pool = Arc::clone(self);
        tokio::spawn(async move {
            let Lease {
                mut backend,
                _permit,
            } = lease;
            let collation = backend.collation;
            let reset = async {
                backend.change_user(&pool.target, None, collation).await?;
                // The engine may give the connection a new id on a user change.
                backend.refresh_thread_id().await
            };
            match tokio::time::timeout(pool.target.connect_timeout, reset).await {
                Ok(Ok(())) => pool.put_idle(backend),
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "engine connection failed its reset; dropped")
                }
                Err(_) => tracing::debug!("engine connection reset timed out; dropped"),
            }
            drop(_permit);
        });
    }

    /// Drops every idle connection (after the engine restarted, say).
    pub fn clear_idle(&self) {
        if let Ok(mut idle) = self.idle.lock() {
            idle.clear();
        }
    }
}
