//! An engine child process, forked and reaped by a dedicated waiter thread.
//!
//! Orphan prevention: Linux delivers `PR_SET_PDEATHSIG` when the *thread* that forked the child
//! exits, not the process. Forking from a tokio worker would therefore kill a healthy engine
//! whenever the runtime retires that worker. Instead each child gets its own OS thread that forks
//! it (with `PR_SET_PDEATHSIG = SIGKILL`) and then blocks until the child exits. That thread lives
//! exactly as long as the child, so the signal fires only when the whole operator process dies
//! (crash, SIGKILL, OOM), which is precisely when the engine must not outlive it. Engines left by
//! anything the signal cannot cover are cleaned up at the next start (see `stale`).
//!
//! The waiter first waits with `WNOWAIT` (the child stays a zombie), then reaps it while holding
//! the same lock `signal` takes, so a signal can never reach a recycled pid.
//!
//! The child also gets its own process group, so a Ctrl-C in the operator's terminal reaches the
//! operator (which shuts the engine down cleanly) and not the engine directly.

use std::ops::Deref;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::{oneshot, watch};

/// How long a stop waits after SIGKILL for the kernel to take the process down.
const KILL_WAIT: Duration = Duration::from_secs(10);

/// How a child ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Exit {
    /// Exited by itself with status 0.
    pub(crate) success: bool,
    /// E.g. "exit status: 1" or "signal: 9 (SIGKILL)".
    pub(crate) description: String,
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.description)
    }
}

/// A running (or exited, not yet dropped) child process.
#[derive(Debug)]
pub(crate) struct ChildProc {
    pid: u32,
    /// `Some` once the child has been reaped.
    exit: Mutex<Option<Exit>>,
    exited: Condvar,
    exit_tx: watch::Sender<Option<Exit>>,
}

impl ChildProc {
    /// Spawns `cmd` from a new dedicated waiter thread named `name`.
    pub(crate) async fn spawn(name: &str, mut cmd: Command) -> std::io::Result<Arc<ChildProc>> {
        install_pre_exec(&mut cmd);
        let (reply_tx, reply_rx) = oneshot::channel();
        std::thread::Builder::new()
            .name(format!("{name}-waiter"))
            .spawn(move || run_waiter(cmd, reply_tx))?;
        reply_rx
            .await
            .unwrap_or_else(|_| Err(std::io::Error::other("the waiter thread ended early")))
    }

    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    /// How the child ended, if it has been reaped.
    pub(crate) fn exit_status(&self) -> Option<Exit> {
        lock(&self.exit).clone()
    }

    /// Sends `signal` unless the child has already been reaped.
    pub(crate) fn signal(&self, signal: libc::c_int) {
        let exit = lock(&self.exit);
        if exit.is_none() {
            // SAFETY: kill(2) on our own child; it is not reaped while we hold `exit`.
            unsafe {
                libc::kill(self.pid as libc::pid_t, signal);
            }
        }
    }

    /// Waits until the child has exited and been reaped; returns how it ended.
    pub(crate) async fn wait_exit(&self) -> Exit {
        let mut rx = self.exit_tx.subscribe();
        let exit = rx.wait_for(Option::is_some).await;
        exit.ok().and_then(|e| e.clone()).unwrap_or_else(|| Exit {
            success: false,
            description: "unknown exit".into(),
        })
    }

    /// SIGTERM, wait up to `grace`, then SIGKILL. Returns the exit, or `None` if it never came.
    pub(crate) async fn stop(&self, grace: Duration) -> Option<Exit> {
        self.signal(libc::SIGTERM);
        if let Ok(exit) = tokio::time::timeout(grace, self.wait_exit()).await {
            return Some(exit);
        }
        tracing::warn!(
            pid = self.pid,
            "engine did not stop within {} s of SIGTERM; sending SIGKILL",
            grace.as_secs()
        );
        self.signal(libc::SIGKILL);
        tokio::time::timeout(KILL_WAIT, self.wait_exit()).await.ok()
    }

    /// Like [`ChildProc::stop`], for threads outside the async runtime.
    fn stop_blocking(&self, grace: Duration) {
        self.signal(libc::SIGTERM);
        if self.wait_exit_blocking(grace) {
            return;
        }
        tracing::warn!(
            pid = self.pid,
            "engine did not stop within {} s of SIGTERM; sending SIGKILL",
            grace.as_secs()
        );
        self.signal(libc::SIGKILL);
        self.wait_exit_blocking(KILL_WAIT);
    }

    fn wait_exit_blocking(&self, timeout: Duration) -> bool {
        let exit = lock(&self.exit);
        let (exit, _) = self
            .exited
            .wait_timeout_while(exit, timeout, |e| e.is_none())
            .unwrap_or_else(PoisonError::into_inner);
        exit.is_some()
    }

    fn record_exit(&self, child: &mut std::process::Child) {
        let mut exit = lock(&self.exit);
        let ended = match child.wait() {
            Ok(status) => Exit {
                success: status.success(),
                description: status.to_string(),
            },
            Err(e) => Exit {
                success: false,
                description: format!("unknown exit ({e})"),
            },
        };
        *exit = Some(ended.clone());
        self.exited.notify_all();
        drop(exit);
        self.exit_tx.send_replace(Some(ended));
    }
}

/// Owns a child: dropping it without a stop stops the child in the background.
///
/// This covers the supervisor task being aborted or dropped with its runtime.
#[derive(Debug)]
pub(crate) struct OwnedChild(Arc<ChildProc>);

impl OwnedChild {
    pub(crate) fn new(child: Arc<ChildProc>) -> Self {
        OwnedChild(child)
    }

    pub(crate) fn shared(&self) -> Arc<ChildProc> {
        Arc::clone(&self.0)
    }
}

impl Deref for OwnedChild {
    type Target = ChildProc;
    fn deref(&self) -> &ChildProc {
        &self.0
    }
}

impl Drop for OwnedChild {
    fn drop(&mut self) {
        if self.0.exit_status().is_some() {
            return;
        }
        let child = Arc::clone(&self.0);
        let grace = crate::engine::managed::STOP_GRACE;
        let stopper = std::thread::Builder::new()
            .name("engine-stop".into())
            .spawn(move || child.stop_blocking(grace));
        if stopper.is_err() {
            self.0.signal(libc::SIGKILL);
        }
    }
}

fn install_pre_exec(cmd: &mut Command) {
    // SAFETY: the closure runs between fork and exec and only makes async-signal-safe syscalls
    // that touch no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setpgid(0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Body of the waiter thread: fork the child, hand it out, wait for its exit, reap it.
fn run_waiter(mut cmd: Command, reply: oneshot::Sender<std::io::Result<Arc<ChildProc>>>) {
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) => {
            let _ = reply.send(Err(e));
            return;
        }
    };
    let proc = Arc::new(ChildProc {
        pid: child.id(),
        exit: Mutex::new(None),
        exited: Condvar::new(),
        exit_tx: watch::Sender::new(None),
    });
    if reply.send(Ok(Arc::clone(&proc))).is_err() {
        // Nobody owns the child any more (the start was cancelled): do not leave it running.
        proc.signal(libc::SIGKILL);
    }
    wait_without_reaping(proc.pid);
    proc.record_exit(&mut child);
}

/// Blocks until `pid` has exited, leaving it a zombie so its pid stays reserved.
fn wait_without_reaping(pid: u32) {
    loop {
        // SAFETY: siginfo_t is plain data; waitid only writes into it.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: waitid on our own child with a valid out-pointer.
        let rc = unsafe {
            libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOWAIT,
            )
        };
        if rc == 0 || std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            return;
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
