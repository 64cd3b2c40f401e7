//! Scratch directories for test servers, and clean-up of those left by killed test processes.
//!
//! Each directory records the pid of the process that made it. Drop removes it normally; when a
//! test binary is killed outright (its servers die with it through the parent-death signal), the
//! next harness start removes directories whose owner no longer runs.

use std::path::Path;

use crate::error::{Error, Result};

const PREFIX: &str = "testkit-";
const OWNER_FILE: &str = "owner.pid";

/// Creates `$TMPDIR/testkit-<kind>-XXXXXX`, owned by this process.
pub(crate) fn scratch_dir(kind: &str) -> Result<tempfile::TempDir> {
    sweep_stale(&std::env::temp_dir());
    let dir = tempfile::Builder::new()
        .prefix(&format!("{PREFIX}{kind}-"))
        .tempdir()
        .map_err(|e| Error::io(std::env::temp_dir(), e))?;
    let owner = dir.path().join(OWNER_FILE);
    std::fs::write(&owner, std::process::id().to_string()).map_err(|e| Error::io(&owner, e))?;
    Ok(dir)
}

fn pid_alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks whether the pid exists.
    pid > 0 && unsafe { libc::kill(pid, 0) == 0 || *libc::__errno_location() == libc::EPERM }
}

/// Removes scratch directories whose owning process has exited.
fn sweep_stale(tmp: &Path) {
    let Ok(entries) = std::fs::read_dir(tmp) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if !name.starts_with(PREFIX) || name == "testkit-ports" {
            continue;
        }
        let owner = std::fs::read_to_string(entry.path().join(OWNER_FILE))
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok());
        if let Some(pid) = owner {
            if !pid_alive(pid) {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn directories_of_dead_owners_are_swept_and_live_ones_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let dead = tmp.path().join("testkit-mariadb-dead");
        let live = tmp.path().join("testkit-mariadb-live");
        let foreign = tmp.path().join("something-else");
        for d in [&dead, &live, &foreign] {
            std::fs::create_dir(d).unwrap();
        }
        // pid_max is at most 2^22 on Linux, so pid 2^22 + 1 cannot run.
        std::fs::write(dead.join(super::OWNER_FILE), "4194305").unwrap();
        std::fs::write(live.join(super::OWNER_FILE), std::process::id().to_string()).unwrap();
        std::fs::write(foreign.join(super::OWNER_FILE), "4194305").unwrap();
        super::sweep_stale(tmp.path());
        assert!(!dead.exists());
        assert!(live.exists());
        assert!(foreign.exists());
    }
}
