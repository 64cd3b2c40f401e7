//! [`Client`]: one identity on one master and its agents.
//!
//! Logging in trades the password for a short-lived signed token; the token is renewed with
//! itself before it expires (falling back to the password if it did expire) and presented to
//! each agent connection once per renewal. The export snapshot (which agents serve which
//! export) comes from the master and is refreshed when it is older than the master's pull
//! interval or an export is unknown. Every call is bounded by the client's timeout.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use fluxon_fs_proto::http::{call_json, HttpError};
use fluxon_fs_proto::master_api::{AgentRoute, LoginRequest, Snapshot, TokenReply};
use fluxon_fs_proto::token::now_unix_ms;
use fluxon_fs_proto::{relpath, DirEntry, OpenFlags, Request, Response, StatInfo};
use hyper::Method;

use crate::conn::Conn;
use crate::error::{ClientError, Result};
use crate::file::File;
use crate::runtime;

/// Client settings.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Bound of every network wait.
    pub timeout: Duration,
    /// Files up to this size come back whole on a read-only open.
    pub inline_max: u64,
    /// Size of one read request.
    pub read_chunk: u32,
    /// Chunks fetched ahead of a sequential reader.
    pub readahead_chunks: usize,
    /// Unacknowledged write bytes per file before `pwrite` waits.
    pub write_window: usize,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            timeout: Duration::from_secs(10),
            inline_max: 256 * 1024,
            read_chunk: 4 * 1024 * 1024,
            readahead_chunks: 4,
            write_window: 64 * 1024 * 1024,
        }
    }
}

struct TokenState {
    token: String,
    expires_unix_ms: u64,
    issued_at: Instant,
    lifetime: Duration,
    generation: u64,
}

struct SnapshotState {
    snapshot: Snapshot,
    fetched_at: Instant,
}

struct Conns {
    epoch: u64,
    by_addr: HashMap<String, Arc<Conn>>,
}

pub(crate) struct Inner {
    pub(crate) master_addr: String,
    username: String,
    password: String,
    pub(crate) options: ClientOptions,
    token: Mutex<TokenState>,
    token_gen: AtomicU64,
    snapshot: Mutex<SnapshotState>,
    conns: Mutex<Conns>,
    round_robin: AtomicU64,
    /// Last agents seen serving each export (see `routes_for`).
    known_routes: Mutex<HashMap<String, Vec<AgentRoute>>>,
}

/// A logged-in client. Cheap to clone; safe to share between threads.
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("master_addr", &self.inner.master_addr)
            .field("username", &self.inner.username)
            .finish_non_exhaustive()
    }
}

fn master_error(e: HttpError, timeout: Duration) -> ClientError {
    match e {
        HttpError::Timeout { addr, path, .. } => ClientError::Timeout {
            what: format!("master at {addr} ({path})"),
            after: timeout,
        },
        HttpError::Status {
            status: 401 | 403,
            message,
            ..
        } => ClientError::os(libc::EACCES, message),
        HttpError::Unreachable { addr, reason } => ClientError::os(
            libc::ECONNREFUSED,
            format!("master at {addr} is unreachable: {reason}"),
        ),
        other => ClientError::os(libc::EIO, other.to_string()),
    }
}

impl Client {
    /// Logs in at the master `master_addr` (`host:port`) and fetches the export snapshot.
    pub fn connect(
        master_addr: &str,
        username: &str,
        password: &str,
        options: ClientOptions,
    ) -> Result<Client> {
        if username.is_empty() || password.is_empty() {
            return Err(ClientError::InvalidArgument(
                "username and password must be non-empty".into(),
            ));
        }
        if options.timeout.is_zero() {
            return Err(ClientError::InvalidArgument(
                "timeout must be positive".into(),
            ));
        }
        let timeout = options.timeout;
        runtime::block_on(async {
            let reply = login(master_addr, username, password, timeout).await?;
            let snapshot = fetch_snapshot(master_addr, &reply.token, timeout).await?;
            Ok(Client {
                inner: Arc::new(Inner {
                    master_addr: master_addr.to_string(),
                    username: username.to_string(),
                    password: password.to_string(),
                    options,
                    token: Mutex::new(token_state(reply, 1)),
                    token_gen: AtomicU64::new(1),
                    snapshot: Mutex::new(SnapshotState {
                        snapshot,
                        fetched_at: Instant::now(),
                    }),
                    conns: Mutex::new(Conns {
                        epoch: runtime::epoch(),
                        by_addr: HashMap::new(),
                    }),
                    round_robin: AtomicU64::new(0),
                    known_routes: Mutex::new(HashMap::new()),
                }),
            })
        })
    }

    pub fn username(&self) -> &str {
        &self.inner.username
    }

    pub fn options(&self) -> &ClientOptions {
        &self.inner.options
    }

    pub fn master_instance_key(&self) -> Result<String> {
        Ok(self.inner.fresh_snapshot()?.master_instance_key)
    }

    /// Online exports this identity may see.
    pub fn exports(&self) -> Result<Vec<String>> {
        Ok(self.inner.fresh_snapshot()?.visible_exports)
    }

    /// The master's `fluxon_fs.cache` YAML snapshot.
    pub fn cache_config_yaml(&self) -> Result<String> {
        Ok(self.inner.fresh_snapshot()?.cache_config_yaml)
    }

    /// Export name → agents, from the current snapshot.
    pub fn routes(&self) -> Result<BTreeMap<String, Vec<AgentRoute>>> {
        Ok(self.inner.fresh_snapshot()?.exports)
    }

    pub fn stat(&self, export: &str, path: &str, follow: bool) -> Result<StatInfo> {
        let req = Request::Stat {
            export: export.into(),
            path: path.into(),
            follow,
        };
        match self.inner.request_blocking(export, path, req)? {
            Response::Stat(st) => Ok(st),
            other => Err(unexpected(&other)),
        }
    }

    pub fn listdir(&self, export: &str, path: &str) -> Result<Vec<DirEntry>> {
        let req = Request::ListDir {
            export: export.into(),
            path: path.into(),
        };
        match self.inner.request_blocking(export, path, req)? {
            Response::Entries(entries) => Ok(entries),
            other => Err(unexpected(&other)),
        }
    }

    pub fn access(&self, export: &str, path: &str, mode: u32) -> Result<bool> {
        let req = Request::Access {
            export: export.into(),
            path: path.into(),
            mode,
        };
        match self.inner.request_blocking(export, path, req)? {
            Response::Bool(b) => Ok(b),
            other => Err(unexpected(&other)),
        }
    }

    pub fn mkdir(&self, export: &str, path: &str, mode: u32) -> Result<()> {
        self.unit(
            export,
            path,
            Request::Mkdir {
                export: export.into(),
                path: path.into(),
                mode,
            },
        )
    }

    pub fn rmdir(&self, export: &str, path: &str) -> Result<()> {
        self.unit(
            export,
            path,
            Request::Rmdir {
                export: export.into(),
                path: path.into(),
            },
        )
    }

    pub fn unlink(&self, export: &str, path: &str) -> Result<()> {
        self.unit(
            export,
            path,
            Request::Unlink {
                export: export.into(),
                path: path.into(),
            },
        )
    }

    pub fn rename(&self, export: &str, src: &str, dst: &str, noreplace: bool) -> Result<()> {
        check_path(dst)?;
        let req = Request::Rename {
            export: export.into(),
            src: src.into(),
            dst: dst.into(),
            noreplace,
        };
        self.unit(export, src, req)
    }

    pub fn chmod(&self, export: &str, path: &str, mode: u32) -> Result<()> {
        self.unit(
            export,
            path,
            Request::Chmod {
                export: export.into(),
                path: path.into(),
                mode,
            },
        )
    }

    pub fn utime(&self, export: &str, path: &str, atime_ns: i64, mtime_ns: i64) -> Result<()> {
        let req = Request::Utime {
            export: export.into(),
            path: path.into(),
            atime_ns,
            mtime_ns,
        };
        self.unit(export, path, req)
    }

    pub fn truncate(&self, export: &str, path: &str, len: u64) -> Result<()> {
        self.unit(
            export,
            path,
            Request::Truncate {
                export: export.into(),
                path: path.into(),
                len,
            },
        )
    }

    pub fn readlink(&self, export: &str, path: &str) -> Result<String> {
        let req = Request::Readlink {
            export: export.into(),
            path: path.into(),
        };
        match self.inner.request_blocking(export, path, req)? {
            Response::Link(target) => Ok(target),
            other => Err(unexpected(&other)),
        }
    }

    /// Opens a file; see [`File`].
    pub fn open(&self, export: &str, path: &str, flags: OpenFlags, mode: u32) -> Result<File> {
        check_path(path)?;
        if path.is_empty() {
            return Err(ClientError::os(libc::EISDIR, "Is a directory").with_path(path));
        }
        File::open(self.inner.clone(), export, path, flags, mode)
    }

    fn unit(&self, export: &str, path: &str, req: Request) -> Result<()> {
        match self.inner.request_blocking(export, path, req)? {
            Response::Ok => Ok(()),
            other => Err(unexpected(&other)),
        }
    }
}

pub(crate) fn unexpected(response: &Response) -> ClientError {
    match response {
        Response::Err(e) => ClientError::os(e.errno, e.message.clone()),
        other => ClientError::os(
            libc::EPROTO,
            format!("unexpected reply from the agent: {other:?}"),
        ),
    }
}

fn check_path(path: &str) -> Result<()> {
    relpath::components(path)
        .map(|_| ())
        .map_err(|e| ClientError::os(libc::EACCES, e.to_string()).with_path(path))
}

async fn login(
    addr: &str,
    username: &str,
    password: &str,
    timeout: Duration,
) -> Result<TokenReply> {
    let body = LoginRequest {
        username: username.to_string(),
        password: password.to_string(),
    };
    call_json(
        addr,
        Method::POST,
        "/api/v1/login",
        None,
        Some(&body),
        timeout,
    )
    .await
    .map_err(|e| master_error(e, timeout))
}

async fn fetch_snapshot(addr: &str, token: &str, timeout: Duration) -> Result<Snapshot> {
    call_json::<(), Snapshot>(
        addr,
        Method::GET,
        "/api/v1/snapshot",
        Some(token),
        None,
        timeout,
    )
    .await
    .map_err(|e| master_error(e, timeout))
}

fn token_state(reply: TokenReply, generation: u64) -> TokenState {
    let lifetime = Duration::from_millis(reply.expires_unix_ms.saturating_sub(now_unix_ms()));
    TokenState {
        token: reply.token,
        expires_unix_ms: reply.expires_unix_ms,
        issued_at: Instant::now(),
        lifetime,
        generation,
    }
}

impl Inner {
    fn timeout(&self) -> Duration {
        self.options.timeout
    }

    /// The current token, renewed first when two thirds of its lifetime have passed.
    pub(crate) async fn token(&self) -> Result<(String, u64)> {
        let (token, generation, stale, expired) = {
            let t = self.token.lock().unwrap_or_else(|e| e.into_inner());
            let stale = t.issued_at.elapsed() >= t.lifetime * 2 / 3;
            let expired = now_unix_ms() >= t.expires_unix_ms;
            (t.token.clone(), t.generation, stale, expired)
        };
        if !stale {
            return Ok((token, generation));
        }
        let timeout = self.timeout();
        let renewed = if expired {
            login(&self.master_addr, &self.username, &self.password, timeout).await
        } else {
            match call_json::<(), TokenReply>(
                &self.master_addr,
                Method::POST,
                "/api/v1/token/refresh",
                Some(&token),
                None,
                timeout,
            )
            .await
            {
                Ok(reply) => Ok(reply),
                Err(HttpError::Status { status: 401, .. }) => {
                    login(&self.master_addr, &self.username, &self.password, timeout).await
                }
                Err(e) => Err(master_error(e, timeout)),
            }
        };
        match renewed {
            Ok(reply) => {
                let generation = self.token_gen.fetch_add(1, Ordering::AcqRel) + 1;
                let state = token_state(reply, generation);
                let token = state.token.clone();
                *self.token.lock().unwrap_or_else(|e| e.into_inner()) = state;
                Ok((token, generation))
            }
            // The master is down but the token still works: keep using it.
            Err(e) if !expired => {
                tracing::warn!("token renewal failed, using the current token: {e}");
                Ok((token, generation))
            }
            Err(e) => Err(e),
        }
    }

    /// The snapshot, refetched when older than the master's pull interval (best effort: a
    /// stale snapshot is returned if the master is unreachable).
    pub(crate) fn fresh_snapshot(&self) -> Result<Snapshot> {
        runtime::block_on(self.snapshot_async(false))
    }

    async fn snapshot_async(&self, force: bool) -> Result<Snapshot> {
        let (current, age) = {
            let s = self.snapshot.lock().unwrap_or_else(|e| e.into_inner());
            (s.snapshot.clone(), s.fetched_at.elapsed())
        };
        let max_age = Duration::from_millis(current.pull_interval_ms.max(100));
        if !force && age < max_age {
            return Ok(current);
        }
        let (token, _) = self.token().await?;
        match fetch_snapshot(&self.master_addr, &token, self.timeout()).await {
            Ok(fresh) => {
                *self.snapshot.lock().unwrap_or_else(|e| e.into_inner()) = SnapshotState {
                    snapshot: fresh.clone(),
                    fetched_at: Instant::now(),
                };
                Ok(fresh)
            }
            Err(e) => {
                tracing::debug!("snapshot refresh failed, using the previous one: {e}");
                Ok(current)
            }
        }
    }

    /// The agents serving `export`, refreshing the snapshot once if it is unknown.
    ///
    /// The master's registry lags behind agents (an agent that was stopped or restarted is
    /// listed again only after its next heartbeat), so an export this client has seen served
    /// keeps its last known agents: connecting to them either works or gives the agent's own
    /// error (refused, timeout), which says more than "no online agent".
    async fn routes_for(&self, export: &str) -> Result<Vec<AgentRoute>> {
        for force in [false, true] {
            let snapshot = self.snapshot_async(force).await?;
            if let Some(routes) = snapshot.exports.get(export) {
                if !routes.is_empty() {
                    self.known_routes
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(export.to_string(), routes.clone());
                    return Ok(routes.clone());
                }
            }
        }
        let known = self
            .known_routes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(export)
            .cloned();
        if let Some(routes) = known {
            return Ok(routes);
        }
        Err(ClientError::os(
            libc::ENOENT,
            format!("unknown export_name: {export} (no online agent serves it)"),
        ))
    }

    /// A live, authenticated connection to an agent of `export`.
    pub(crate) async fn conn_for(&self, export: &str) -> Result<Arc<Conn>> {
        let routes = self.routes_for(export).await?;
        let start = self.round_robin.fetch_add(1, Ordering::Relaxed) as usize;
        let mut last_err = None;
        for i in 0..routes.len() {
            let route = &routes[(start + i) % routes.len()];
            match self.conn_to(&route.addr).await {
                Ok(conn) => return Ok(conn),
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.unwrap_or_else(|| {
            ClientError::os(libc::ENOENT, format!("unknown export_name: {export}"))
        }))
    }

    async fn conn_to(&self, addr: &str) -> Result<Arc<Conn>> {
        let existing = {
            let mut conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
            let epoch = runtime::epoch();
            if conns.epoch != epoch {
                // Inherited across fork(): never touch (or drop) the parent's connections.
                let old = std::mem::take(&mut conns.by_addr);
                std::mem::forget(old);
                conns.epoch = epoch;
            }
            conns.by_addr.get(addr).filter(|c| c.is_alive()).cloned()
        };
        let conn = match existing {
            Some(conn) => conn,
            None => {
                let conn = Conn::connect(addr, self.timeout()).await?;
                self.conns
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .by_addr
                    .insert(addr.to_string(), conn.clone());
                conn
            }
        };
        let (token, generation) = self.token().await?;
        if conn.token_gen.load(Ordering::Acquire) < generation {
            match conn.call(&Request::Auth { token }, Bytes::new()).await? {
                (Response::Ok, _) => conn.token_gen.fetch_max(generation, Ordering::AcqRel),
                (other, _) => return Err(unexpected(&other)),
            };
        }
        Ok(conn)
    }

    /// Runs one request on an agent of `export` within the timeout.
    pub(crate) async fn request(
        &self,
        export: &str,
        req: Request,
        data: Bytes,
    ) -> Result<(Response, Bytes)> {
        let timeout = self.timeout();
        let what = format!("agent for export {export} ({})", req.op_name());
        let fut = async {
            let conn = self.conn_for(export).await?;
            conn.call(&req, data).await
        };
        match tokio::time::timeout(timeout, fut).await {
            Ok(result) => result,
            Err(_) => Err(ClientError::Timeout {
                what,
                after: timeout,
            }),
        }
    }

    /// Blocking form of [`Inner::request`] for path operations; errors carry `path`.
    fn request_blocking(&self, export: &str, path: &str, req: Request) -> Result<Response> {
        check_path(path)?;
        let result = runtime::block_on(self.request(export, req, Bytes::new()));
        match result {
            Ok((Response::Err(e), _)) => Err(ClientError::os(e.errno, e.message).with_path(path)),
            Ok((response, _)) => Ok(response),
            Err(e) => Err(e.with_path(path)),
        }
    }
}
