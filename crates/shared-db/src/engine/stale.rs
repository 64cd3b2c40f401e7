//! Engines left running by a previous operator that died without shutting them down.
//!
//! The parent-death signal (see `child`) normally takes the engine down with the operator, but
//! an engine can still survive, e.g. one started by an older build or by hand on our datadir, or
//! one still finishing a stop that a dropped handle began. Before starting, every process whose
//! command line has `--datadir=` inside our engine directory (the pid file's process and a scan
//! of `/proc`) gets SIGTERM, a bounded wait, then SIGKILL. Only processes that name our datadir
//! are touched, so a recycled pid in a stale pid file is left alone. The caller holds the engine
//! directory lock, so no live operator owns these processes.

use std::path::Path;
use std::time::{Duration, Instant};

use super::error::EngineError;
use super::layout::EnginePaths;

/// How long a stale engine gets to stop after SIGTERM.
const STALE_GRACE: Duration = Duration::from_secs(30);
/// How long to wait for a stale engine to vanish after SIGKILL.
const STALE_KILL_WAIT: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(50);

/// Stops every engine process left on `paths.engine_dir` by a previous run.
pub(crate) async fn stop_stale_engines(paths: &EnginePaths) -> Result<(), EngineError> {
    for pid in stale_pids(paths) {
        tracing::warn!(
            pid,
            dir = %paths.engine_dir.display(),
            "found a mariadbd left running by a previous operator on this data directory; stopping it"
        );
        stop_stale(pid, &paths.engine_dir).await?;
    }
    Ok(())
}

/// Pids of live processes using our engine directory, the pid file's process first.
fn stale_pids(paths: &EnginePaths) -> Vec<u32> {
    let me = std::process::id();
    let mut pids: Vec<u32> = pid_from_file(&paths.pid_file).into_iter().collect();
    pids.extend(scan_proc(&paths.engine_dir));
    let mut seen = std::collections::HashSet::new();
    pids.retain(|&pid| pid != me && seen.insert(pid) && uses_dir(pid, &paths.engine_dir));
    pids
}

fn pid_from_file(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn scan_proc(dir: &Path) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| uses_dir(pid, dir))
        .collect()
}

/// True if `pid` is alive and was started with a `--datadir` inside `dir`.
fn uses_dir(pid: u32, dir: &Path) -> bool {
    alive(pid)
        && std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|cmdline| cmdline_uses_dir(&cmdline, dir))
            .unwrap_or(false)
}

/// True if a NUL-separated command line has `--datadir=<path>` with `<path>` inside `dir`.
pub(crate) fn cmdline_uses_dir(cmdline: &[u8], dir: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    cmdline
        .split(|&b| b == 0)
        .filter_map(|arg| arg.strip_prefix(b"--datadir="))
        .any(|path| Path::new(std::ffi::OsStr::from_bytes(path)).starts_with(dir))
}

/// True if `pid` exists and is not a zombie.
pub(crate) fn alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state follows the command name, which is in parentheses and may contain anything.
    let state = stat
        .rfind(')')
        .and_then(|i| stat[i + 1..].split_whitespace().next());
    !matches!(state, Some("Z") | Some("X") | None)
}

async fn stop_stale(pid: u32, dir: &Path) -> Result<(), EngineError> {
    send(pid, libc::SIGTERM);
    if wait_gone(pid, STALE_GRACE).await {
        tracing::info!(pid, "stale engine stopped");
        return Ok(());
    }
    tracing::warn!(
        pid,
        "stale engine did not stop within {} s of SIGTERM; sending SIGKILL",
        STALE_GRACE.as_secs()
    );
    if uses_dir(pid, dir) {
        send(pid, libc::SIGKILL);
    }
    if wait_gone(pid, STALE_KILL_WAIT).await {
        return Ok(());
    }
    Err(EngineError::StaleEngine {
        pid,
        dir: dir.to_path_buf(),
    })
}

fn send(pid: u32, signal: libc::c_int) {
    // SAFETY: kill(2) has no memory effects; the pid was just checked to run on our datadir.
    unsafe {
        libc::kill(pid as libc::pid_t, signal);
    }
}

/// Polls (the process is not our child, so there is nothing to wait on) until it is gone.
async fn wait_gone(pid: u32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while alive(pid) {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(POLL).await;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datadir_inside_the_engine_dir_matches() {
        let dir = Path::new("/srv/op/engine");
        let cmd = b"/usr/sbin/mariadbd\0--no-defaults\0--datadir=/srv/op/engine/data\0";
        assert!(cmdline_uses_dir(cmd, dir));
        let installing = b"mariadbd\0--bootstrap\0--datadir=/srv/op/engine/data.installing-7\0";
        assert!(cmdline_uses_dir(installing, dir));
    }

    #[test]
    fn other_datadirs_and_prefix_lookalikes_do_not_match() {
        let dir = Path::new("/srv/op/engine");
        assert!(!cmdline_uses_dir(
            b"mariadbd\0--datadir=/srv/op/engine2/data\0",
            dir
        ));
        assert!(!cmdline_uses_dir(
            b"mariadbd\0--datadir=/var/lib/mysql\0",
            dir
        ));
        assert!(!cmdline_uses_dir(b"vim\0/srv/op/engine/data/x\0", dir));
        assert!(!cmdline_uses_dir(b"", dir));
    }

    #[test]
    fn this_process_is_alive_and_an_impossible_pid_is_not() {
        assert!(alive(std::process::id()));
        // pid_max is at most 2^22 on Linux.
        assert!(!alive(4_194_305));
    }
}
