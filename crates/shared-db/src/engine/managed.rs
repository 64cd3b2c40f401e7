//! The managed engine: a `mariadbd` child the operator installs, starts, supervises and stops
//! when no external engine host is configured.
//!
//! [`ManagedEngine::start`] finds the binaries, takes the data directory's lock, stops engines
//! a dead previous operator left behind, creates the datadir on first start (see `install`),
//! starts `mariadbd` (socket only unless a TCP port is configured) and waits for its handshake.
//! A supervisor task then restarts the engine with backoff whenever it dies unexpectedly, and
//! publishes an [`EngineState`] through a `watch` channel for the status endpoint and sessions.
//!
//! Orphan prevention, in layers:
//! - clean path: [`ManagedEngine::shutdown`] sends SIGTERM, waits up to 30 s, then SIGKILL;
//!   dropping the handle without a shutdown starts the same stop in the background;
//! - operator killed outright: each engine is forked from its own long-lived waiter thread with
//!   `PR_SET_PDEATHSIG = SIGKILL` (see `child` for why not from a runtime thread);
//! - anything else: the next start stops every process running on our datadir (see `stale`).
//!
//! The operator authenticates as `root@localhost` over the socket with an internal password
//! kept in `<data_dir>/engine/operator.secret` (mode 0600). It is never logged.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use mysql_async::OptsBuilder;
use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::admin::{self, ROOT};
use super::child::{ChildProc, OwnedChild};
use super::error::EngineError;
use super::install::install;
use super::launch::{Instance, Launcher};
use super::layout::{self, EnginePaths};
use super::secret::{self, Secret};
use super::stale::stop_stale_engines;

/// How long a stopping engine gets between SIGTERM and SIGKILL.
pub(crate) const STOP_GRACE: Duration = Duration::from_secs(30);
/// First restart delay; doubles up to [`BACKOFF_MAX`].
const BACKOFF_INITIAL: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// An engine that stayed up this long resets the backoff.
const STABLE_AFTER: Duration = Duration::from_secs(30);

/// How the managed engine is set up.
#[derive(Debug, Clone)]
pub struct ManagedEngineConfig {
    /// The operator's data directory; the engine lives in `<data_dir>/engine/`.
    pub data_dir: PathBuf,
    /// Also listen on `127.0.0.1:<port>` (default: socket only).
    pub tcp_port: Option<u16>,
    /// `--innodb-buffer-pool-size` (default `256M`).
    pub buffer_pool: String,
    /// `--max-connections` (default 1000).
    pub max_connections: u32,
    /// Further `mariadbd` arguments, appended last (not passed to `mariadb-install-db`).
    pub extra_args: Vec<String>,
    /// Bound for the engine to answer after each (re)start (default 60 s).
    pub ready_timeout: Duration,
    /// Use this `mariadbd` instead of searching PATH, /usr/sbin and /usr/local/sbin.
    pub mariadbd_path: Option<PathBuf>,
    /// Use this `mariadb-install-db` instead of searching for it.
    pub install_db_path: Option<PathBuf>,
}

impl ManagedEngineConfig {
    /// Defaults: socket only, 256M buffer pool, 1000 connections, 60 s ready timeout.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        ManagedEngineConfig {
            data_dir: data_dir.into(),
            tcp_port: None,
            buffer_pool: "256M".to_string(),
            max_connections: 1000,
            extra_args: Vec::new(),
            ready_timeout: Duration::from_secs(60),
            mariadbd_path: None,
            install_db_path: None,
        }
    }
}

/// What the managed engine is doing, as published to observers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum EngineState {
    /// First start in progress.
    Starting,
    /// Accepting connections.
    Running,
    /// Died unexpectedly; restart attempt `attempt` (from 1) is pending or in progress.
    Restarting { attempt: u32 },
    /// Shut down on request.
    Stopped,
    /// Cannot be restarted (e.g. the binary disappeared); needs an operator restart.
    Failed { reason: String },
}

impl std::fmt::Display for EngineState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EngineState::Starting => f.write_str("starting"),
            EngineState::Running => f.write_str("running"),
            EngineState::Restarting { attempt } => write!(f, "restarting (attempt {attempt})"),
            EngineState::Stopped => f.write_str("stopped"),
            EngineState::Failed { reason } => write!(f, "failed: {reason}"),
        }
    }
}

/// A supervised `mariadbd` owned by this operator. Dropping it stops the engine in the
/// background; call [`ManagedEngine::shutdown`] to stop it and wait.
pub struct ManagedEngine {
    shared: Arc<Shared>,
    supervisor: Mutex<Option<JoinHandle<()>>>,
}

/// State shared between the handle and the supervisor task.
struct Shared {
    launcher: Launcher,
    paths: EnginePaths,
    tcp_port: Option<u16>,
    secret: Secret,
    state_tx: watch::Sender<EngineState>,
    shutdown_tx: watch::Sender<bool>,
    current: Mutex<Option<Arc<ChildProc>>>,
    /// The engine directory's flock, held while this handle manages the engine.
    dir_lock: Mutex<Option<File>>,
}

impl std::fmt::Debug for ManagedEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ManagedEngine")
            .field("socket", &self.shared.paths.socket)
            .field("pid", &self.pid())
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

impl ManagedEngine {
    /// Installs (first time), starts and waits for the engine, then supervises it.
    pub async fn start(cfg: ManagedEngineConfig) -> Result<ManagedEngine, EngineError> {
        let mariadbd = layout::find_program("mariadbd", cfg.mariadbd_path.as_deref())?;
        let install_db =
            layout::find_program("mariadb-install-db", cfg.install_db_path.as_deref())?;
        let paths = prepare_layout(&cfg.data_dir)?;
        let lock = layout::lock_engine_dir(&paths)?;
        stop_stale_engines(&paths).await?;
        layout::remove_unfinished_installs(&paths)?;
        let secret = load_or_create_secret(&paths)?;
        let launcher = launcher(mariadbd, &cfg, &paths);
        if !paths.datadir.exists() {
            install(&install_db, &launcher, &paths, &secret).await?;
        }
        let shared = Arc::new(Shared {
            launcher,
            paths,
            tcp_port: cfg.tcp_port,
            secret,
            state_tx: watch::Sender::new(EngineState::Starting),
            shutdown_tx: watch::Sender::new(false),
            current: Mutex::new(None),
            dir_lock: Mutex::new(Some(lock)),
        });
        let child = shared.launch().await?;
        shared.mark_running(&child);
        tracing::info!(pid = child.pid(), socket = %shared.paths.socket.display(), "engine running");
        let supervisor = tokio::spawn(supervise(Arc::clone(&shared), child));
        Ok(ManagedEngine {
            shared,
            supervisor: Mutex::new(Some(supervisor)),
        })
    }

    /// The engine's unix socket.
    pub fn socket_path(&self) -> &Path {
        &self.shared.paths.socket
    }

    /// The engine's TCP port on 127.0.0.1, if configured.
    pub fn tcp_port(&self) -> Option<u16> {
        self.shared.tcp_port
    }

    /// The account the operator uses on the engine (`root`, host `localhost`).
    pub fn user(&self) -> &str {
        ROOT
    }

    /// The internal password of [`ManagedEngine::user`]. Do not log it.
    pub fn password(&self) -> &str {
        self.shared.secret.as_str()
    }

    /// Connection options for the operator's backend connections (socket, root, password).
    pub fn opts(&self) -> OptsBuilder {
        admin::socket_opts(self.socket_path(), ROOT, Some(self.password()))
    }

    /// The engine's file layout.
    pub fn paths(&self) -> &EnginePaths {
        &self.shared.paths
    }

    /// The pid of the running `mariadbd`, or `None` while it is down.
    pub fn pid(&self) -> Option<u32> {
        lock(&self.shared.current).as_ref().map(|c| c.pid())
    }

    /// The current state.
    pub fn state(&self) -> EngineState {
        self.shared.state_tx.borrow().clone()
    }

    /// A receiver that sees every state change from now on.
    pub fn subscribe(&self) -> watch::Receiver<EngineState> {
        self.shared.state_tx.subscribe()
    }

    /// Waits until the engine is running; fails at once if it is stopped or failed.
    pub async fn wait_running(&self, timeout: Duration) -> Result<(), EngineError> {
        let mut rx = self.subscribe();
        let settled = rx.wait_for(|s| {
            matches!(
                s,
                EngineState::Running | EngineState::Stopped | EngineState::Failed { .. }
            )
        });
        let state = match tokio::time::timeout(timeout, settled).await {
            Ok(Ok(state)) => state.clone(),
            Ok(Err(_)) => EngineState::Stopped,
            Err(_) => {
                return Err(EngineError::WaitTimeout {
                    seconds: timeout.as_secs(),
                    state: self.state().to_string(),
                })
            }
        };
        match state {
            EngineState::Running => Ok(()),
            other => Err(EngineError::NotRunning {
                state: other.to_string(),
            }),
        }
    }

    /// `CREATE DATABASE IF NOT EXISTS <name>` on the engine, as the operator's account.
    pub async fn ensure_database(&self, name: &str) -> Result<(), EngineError> {
        admin::ensure_database(self.opts(), name).await
    }

    /// Stops the engine (SIGTERM, up to 30 s, then SIGKILL) and waits until it is gone. No
    /// restart happens afterwards. Idempotent.
    pub async fn shutdown(&self) {
        self.shared.shutdown_tx.send_replace(true);
        let supervisor = lock(&self.supervisor).take();
        match supervisor {
            Some(task) => {
                if let Err(e) = task.await {
                    tracing::error!(error = %e, "the engine supervisor ended abnormally");
                }
            }
            None => self.wait_stopped().await,
        }
        self.shared.set_state(EngineState::Stopped);
    }

    /// For a second, concurrent `shutdown`: waits (bounded) for the first one to finish.
    async fn wait_stopped(&self) {
        let mut rx = self.subscribe();
        let bound = STOP_GRACE + Duration::from_secs(15);
        let stopped = rx.wait_for(|s| matches!(s, EngineState::Stopped));
        let _ = tokio::time::timeout(bound, stopped).await;
    }
}

impl Drop for ManagedEngine {
    fn drop(&mut self) {
        // Released now rather than when the aborted supervisor lets go of `Shared`, so a new
        // start on this directory can begin at once (it waits for a still-stopping engine).
        lock(&self.shared.dir_lock).take();
        let Some(task) = lock(&self.supervisor).take() else {
            return;
        };
        self.shared.shutdown_tx.send_replace(true);
        // Aborting drops the supervisor's `OwnedChild`, which stops the engine in a background
        // thread (SIGTERM, then SIGKILL after the grace period).
        task.abort();
        tracing::info!(
            "engine handle dropped without shutdown; stopping the engine in the background"
        );
    }
}

impl Shared {
    /// Stops leftovers on our datadir, spawns the engine and waits until it answers.
    async fn launch(&self) -> Result<OwnedChild, EngineError> {
        stop_stale_engines(&self.paths).await?;
        let inst = Instance::main(&self.paths, self.tcp_port);
        let child = self.launcher.spawn(&inst).await?;
        match self.launcher.wait_ready(&child, &inst.socket).await {
            Ok(()) => Ok(child),
            Err(e) => {
                child.stop(STOP_GRACE).await;
                Err(e)
            }
        }
    }

    fn mark_running(&self, child: &OwnedChild) {
        *lock(&self.current) = Some(child.shared());
        self.set_state(EngineState::Running);
    }

    fn clear_current(&self) {
        *lock(&self.current) = None;
    }

    fn set_state(&self, state: EngineState) {
        self.state_tx.send_replace(state);
    }

    fn shutdown_requested(&self) -> bool {
        *self.shutdown_tx.borrow()
    }

    /// Resolves once shutdown has been requested.
    async fn shutdown_signal(&self) {
        let mut rx = self.shutdown_tx.subscribe();
        let _ = rx.wait_for(|requested| *requested).await;
    }

    /// Graceful stop on shutdown.
    async fn stop(&self, child: OwnedChild) {
        tracing::info!(pid = child.pid(), "stopping the engine");
        match child.stop(STOP_GRACE).await {
            Some(exit) => tracing::info!(%exit, "engine stopped"),
            None => tracing::error!(
                pid = child.pid(),
                "the engine did not exit even after SIGKILL"
            ),
        }
        self.clear_current();
        self.set_state(EngineState::Stopped);
    }
}

/// What ended a wait of the supervisor.
enum Event {
    Exited(super::child::Exit),
    Shutdown,
}

/// Watches the engine; restarts it with backoff when it dies, until shutdown is requested.
async fn supervise(shared: Arc<Shared>, mut child: OwnedChild) {
    let mut backoff = Backoff::default();
    loop {
        let up_since = Instant::now();
        let event = tokio::select! {
            exit = child.wait_exit() => Event::Exited(exit),
            () = shared.shutdown_signal() => Event::Shutdown,
        };
        let exit = match event {
            Event::Shutdown => return shared.stop(child).await,
            Event::Exited(exit) => exit,
        };
        shared.clear_current();
        if shared.shutdown_requested() {
            return shared.set_state(EngineState::Stopped);
        }
        tracing::warn!(pid = child.pid(), %exit, "the engine exited unexpectedly; restarting it");
        if up_since.elapsed() >= STABLE_AFTER {
            backoff.reset();
        }
        match restart(&shared, &mut backoff).await {
            Some(next) => child = next,
            None => return,
        }
    }
}

/// Restart attempts until one succeeds (`Some`), shutdown is requested or an error is
/// permanent (`None`; the state is then Stopped or Failed).
async fn restart(shared: &Shared, backoff: &mut Backoff) -> Option<OwnedChild> {
    for attempt in 1u32.. {
        shared.set_state(EngineState::Restarting { attempt });
        let delay = backoff.next_delay();
        tracing::info!(
            attempt,
            delay_ms = delay.as_millis() as u64,
            "restarting the engine"
        );
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = shared.shutdown_signal() => {
                shared.set_state(EngineState::Stopped);
                return None;
            }
        }
        match restart_once(shared).await {
            Ok(Some(child)) => {
                shared.mark_running(&child);
                tracing::info!(pid = child.pid(), attempt, "engine restarted and running");
                return Some(child);
            }
            Ok(None) => return None,
            Err(e) if e.is_permanent() => {
                tracing::error!(error = %e, "the engine cannot be restarted");
                shared.set_state(EngineState::Failed {
                    reason: e.to_string(),
                });
                return None;
            }
            Err(e) => tracing::error!(attempt, error = %e, "engine restart failed; will retry"),
        }
    }
    None
}

/// One restart; `Ok(None)` if shutdown was requested meanwhile (the new child is then stopped).
async fn restart_once(shared: &Shared) -> Result<Option<OwnedChild>, EngineError> {
    stop_stale_engines(&shared.paths).await?;
    let inst = Instance::main(&shared.paths, shared.tcp_port);
    let child = shared.launcher.spawn(&inst).await?;
    let ready = tokio::select! {
        ready = shared.launcher.wait_ready(&child, &inst.socket) => Some(ready),
        () = shared.shutdown_signal() => None,
    };
    match ready {
        Some(Ok(())) => Ok(Some(child)),
        Some(Err(e)) => {
            child.stop(STOP_GRACE).await;
            Err(e)
        }
        None => {
            shared.stop(child).await;
            Ok(None)
        }
    }
}

/// Restart delays: 100 ms doubling to 5 s.
#[derive(Debug)]
struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            next: BACKOFF_INITIAL,
        }
    }
}

impl Backoff {
    fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (delay * 2).min(BACKOFF_MAX);
        delay
    }

    fn reset(&mut self) {
        self.next = BACKOFF_INITIAL;
    }
}

/// Creates `<data_dir>/engine` and returns the layout under the canonical data directory.
fn prepare_layout(data_dir: &Path) -> Result<EnginePaths, EngineError> {
    std::fs::create_dir_all(data_dir)
        .map_err(|e| EngineError::io("create the data directory", data_dir, e))?;
    let data_dir = data_dir
        .canonicalize()
        .map_err(|e| EngineError::io("resolve the data directory", data_dir, e))?;
    let paths = EnginePaths::new(&data_dir);
    layout::create_dirs(&paths)?;
    if paths.socket_relocated() {
        tracing::info!(
            socket = %paths.socket.display(),
            "the engine socket path under the data directory would exceed the 107-byte unix \
             socket limit; using a private directory under /tmp instead"
        );
    }
    Ok(paths)
}

/// The existing secret, or a new one if the engine has not been installed yet.
fn load_or_create_secret(paths: &EnginePaths) -> Result<Secret, EngineError> {
    if let Some(secret) = secret::load(&paths.secret_file)? {
        return Ok(secret);
    }
    if paths.datadir.exists() {
        return Err(EngineError::SecretMissing {
            datadir: paths.datadir.clone(),
            secret: paths.secret_file.clone(),
        });
    }
    tracing::info!(path = %paths.secret_file.display(), "generated a new internal engine password");
    secret::create(&paths.secret_file)
}

fn launcher(mariadbd: PathBuf, cfg: &ManagedEngineConfig, paths: &EnginePaths) -> Launcher {
    Launcher {
        mariadbd,
        user: layout::current_user(),
        log_file: paths.log_file.clone(),
        tmp_dir: paths.tmp_dir.clone(),
        buffer_pool: cfg.buffer_pool.clone(),
        max_connections: cfg.max_connections,
        extra_args: cfg.extra_args.clone(),
        ready_timeout: cfg.ready_timeout,
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap_and_resets() {
        let mut b = Backoff::default();
        let delays: Vec<u128> = (0..8).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        b.reset();
        assert_eq!(b.next_delay(), BACKOFF_INITIAL);
    }

    #[test]
    fn states_serialise_for_the_status_endpoint() {
        let json = serde_json::to_string(&EngineState::Restarting { attempt: 2 }).unwrap();
        assert_eq!(json, r#"{"state":"restarting","attempt":2}"#);
        assert_eq!(EngineState::Running.to_string(), "running");
    }

    #[test]
    fn config_defaults() {
        let cfg = ManagedEngineConfig::new("/d");
        assert_eq!(cfg.buffer_pool, "256M");
        assert_eq!(cfg.max_connections, 1000);
        assert_eq!(cfg.ready_timeout, Duration::from_secs(60));
        assert!(cfg.tcp_port.is_none());
    }
}
