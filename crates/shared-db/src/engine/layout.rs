//! Where the managed engine's files live, where its binaries are, and who it runs as.
//!
//! Everything is under `<data_dir>/engine/`: `data/` (the datadir), `tmp/` (the engine's
//! private tmpdir), `mysqld.sock`, `mariadbd.pid`, `mariadbd.log`, `operator.secret` and
//! `operator.lock`. The tmpdir must be private: a starting `mariadbd` deletes every `#sql*` file
//! in its tmpdir, which in a shared `/tmp` would include another engine's live temporary tables. A unix socket path
//! must fit in 107 bytes; when `<data_dir>/engine/mysqld.sock` does not, the socket goes into
//! `/tmp/shared-db-<hash of the engine dir>/` (mode 0700, checked to be ours), which is stable
//! across restarts of the same data directory.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use sha1::{Digest, Sha1};

use super::error::EngineError;

/// Longest unix socket path (`sun_path` is 108 bytes including the terminating NUL).
const MAX_SOCKET_PATH: usize = 107;
/// Prefix of the temporary datadir an install is built in before it is renamed into place.
pub(crate) const INSTALL_PREFIX: &str = "data.installing-";
/// Where binaries are looked for besides PATH (Debian puts `mariadbd` in sbin).
const EXTRA_BIN_DIRS: [&str; 3] = ["/usr/sbin", "/usr/local/sbin", "/sbin"];

/// The managed engine's file layout under an operator data directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnginePaths {
    /// `<data_dir>/engine`.
    pub engine_dir: PathBuf,
    /// `<data_dir>/engine/data`.
    pub datadir: PathBuf,
    /// `<data_dir>/engine/tmp` (the engine's `--tmpdir`).
    pub tmp_dir: PathBuf,
    /// `<data_dir>/engine/mysqld.sock`, or a short private path if that is too long.
    pub socket: PathBuf,
    /// `<data_dir>/engine/mariadbd.pid`.
    pub pid_file: PathBuf,
    /// `<data_dir>/engine/mariadbd.log` (the engine's error log).
    pub log_file: PathBuf,
    /// `<data_dir>/engine/operator.secret` (the internal root password, mode 0600).
    pub secret_file: PathBuf,
    /// `<data_dir>/engine/operator.lock` (held while an operator manages this engine).
    pub lock_file: PathBuf,
}

impl EnginePaths {
    /// The layout for `data_dir` (pass an absolute, canonical path; nothing is created).
    pub fn new(data_dir: &Path) -> EnginePaths {
        let engine_dir = data_dir.join("engine");
        EnginePaths {
            datadir: engine_dir.join("data"),
            tmp_dir: engine_dir.join("tmp"),
            socket: socket_path(&engine_dir),
            pid_file: engine_dir.join("mariadbd.pid"),
            log_file: engine_dir.join("mariadbd.log"),
            secret_file: engine_dir.join("operator.secret"),
            lock_file: engine_dir.join("operator.lock"),
            engine_dir,
        }
    }

    /// True if the socket could not go into the engine directory (path too long).
    pub fn socket_relocated(&self) -> bool {
        self.socket.parent() != Some(self.engine_dir.as_path())
    }

    /// Socket of the short-lived server that secures a fresh install.
    pub(crate) fn install_socket(&self) -> PathBuf {
        self.socket.with_file_name("install.sock")
    }

    /// A fresh temporary datadir path for an install by this process.
    pub(crate) fn install_dir(&self) -> PathBuf {
        self.engine_dir
            .join(format!("{INSTALL_PREFIX}{}", std::process::id()))
    }
}

fn socket_path(engine_dir: &Path) -> PathBuf {
    let preferred = engine_dir.join("mysqld.sock");
    if preferred.as_os_str().len() <= MAX_SOCKET_PATH {
        return preferred;
    }
    let digest = Sha1::digest(engine_dir.as_os_str().as_bytes());
    let hash: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    PathBuf::from(format!("/tmp/shared-db-{hash}")).join("mysqld.sock")
}

/// Creates the engine directory (mode 0700) and, if relocated, the private socket directory.
pub(crate) fn create_dirs(paths: &EnginePaths) -> Result<(), EngineError> {
    create_private_dir(&paths.engine_dir, true)?;
    create_private_dir(&paths.tmp_dir, false)?;
    if paths.socket_relocated() {
        if let Some(dir) = paths.socket.parent() {
            create_private_dir(dir, false)?;
            check_private_dir(dir)?;
        }
    }
    Ok(())
}

fn create_private_dir(dir: &Path, recursive: bool) -> Result<(), EngineError> {
    match std::fs::DirBuilder::new()
        .recursive(recursive)
        .mode(0o700)
        .create(dir)
    {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(EngineError::io("create the directory", dir, e)),
    }
}

/// A shared directory like /tmp could hold a planted socket dir: insist it is ours and private.
fn check_private_dir(dir: &Path) -> Result<(), EngineError> {
    let meta = std::fs::symlink_metadata(dir).map_err(|e| EngineError::io("inspect", dir, e))?;
    // SAFETY: geteuid has no failure mode and no memory effects.
    let uid = unsafe { libc::geteuid() };
    let reason = if !meta.is_dir() {
        Some("not a directory".to_string())
    } else if meta.uid() != uid {
        Some(format!("owned by uid {}, not {uid}", meta.uid()))
    } else if meta.permissions().mode() & 0o077 != 0 {
        Some(format!("mode {:o}", meta.permissions().mode() & 0o777))
    } else {
        None
    };
    match reason {
        None => Ok(()),
        Some(reason) => Err(EngineError::SocketDir {
            path: dir.to_path_buf(),
            reason,
        }),
    }
}

/// Takes an exclusive `flock` on the engine's lock file; held until the returned file closes.
pub(crate) fn lock_engine_dir(paths: &EnginePaths) -> Result<File, EngineError> {
    let path = &paths.lock_file;
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| EngineError::io("open the lock file", path, e))?;
    // SAFETY: flock on a descriptor we own; the file is opened close-on-exec, so the engine
    // child does not inherit the lock.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(file);
    }
    let err = std::io::Error::last_os_error();
    if err.kind() == std::io::ErrorKind::WouldBlock {
        return Err(EngineError::InUse {
            path: paths.engine_dir.clone(),
        });
    }
    Err(EngineError::io("lock", path, err))
}

/// Removes temporary install directories left by an install that did not finish.
pub(crate) fn remove_unfinished_installs(paths: &EnginePaths) -> Result<(), EngineError> {
    let dir = &paths.engine_dir;
    let entries = std::fs::read_dir(dir).map_err(|e| EngineError::io("list", dir, e))?;
    for entry in entries.flatten() {
        if !entry
            .file_name()
            .as_bytes()
            .starts_with(INSTALL_PREFIX.as_bytes())
        {
            continue;
        }
        let path = entry.path();
        tracing::warn!(path = %path.display(), "removing an unfinished engine install");
        std::fs::remove_dir_all(&path).map_err(|e| EngineError::io("remove", &path, e))?;
    }
    Ok(())
}

/// Finds `program`: the override if given, else PATH and the sbin directories.
pub(crate) fn find_program(program: &str, over: Option<&Path>) -> Result<PathBuf, EngineError> {
    let candidates: Vec<PathBuf> = match over {
        Some(path) => vec![path.to_path_buf()],
        None => {
            let path = std::env::var_os("PATH").unwrap_or_default();
            std::env::split_paths(&path)
                .chain(EXTRA_BIN_DIRS.iter().map(PathBuf::from))
                .map(|dir| dir.join(program))
                .collect()
        }
    };
    if let Some(found) = candidates.iter().find(|p| is_executable(p)) {
        return Ok(found.clone());
    }
    let searched = candidates
        .iter()
        .filter_map(|p| p.parent())
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    Err(EngineError::NotInstalled {
        program: program.to_string(),
        searched,
    })
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// The effective user's name (for `--user`), or its numeric id if it has no passwd entry.
pub(crate) fn current_user() -> String {
    // SAFETY: geteuid has no failure mode and no memory effects.
    let uid = unsafe { libc::geteuid() };
    user_name(uid).unwrap_or_else(|| uid.to_string())
}

fn user_name(uid: libc::uid_t) -> Option<String> {
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    // SAFETY: passwd is plain data; getpwuid_r fills it with pointers into `buf`.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: all pointers are valid for the stated lengths for the duration of the call.
    let rc = unsafe { libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr(), buf.len(), &mut result) };
    if rc != 0 || result.is_null() || pwd.pw_name.is_null() {
        return None;
    }
    // SAFETY: pw_name points to a NUL-terminated string inside `buf`, which is still alive.
    let name = unsafe { std::ffi::CStr::from_ptr(pwd.pw_name) };
    Some(name.to_string_lossy().into_owned())
}

/// `--flag=<path>` as an OS string, so non-UTF-8 paths pass through unchanged.
pub(crate) fn path_arg(flag: &str, path: &Path) -> OsString {
    let mut arg = OsString::from(flag);
    arg.push(OsStr::new("="));
    arg.push(path.as_os_str());
    arg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_data_dirs_keep_the_socket_in_the_engine_dir() {
        let paths = EnginePaths::new(Path::new("/var/lib/shared-db"));
        assert_eq!(
            paths.socket,
            PathBuf::from("/var/lib/shared-db/engine/mysqld.sock")
        );
        assert!(!paths.socket_relocated());
        assert_eq!(
            paths.install_socket(),
            PathBuf::from("/var/lib/shared-db/engine/install.sock")
        );
    }

    #[test]
    fn long_data_dirs_get_a_short_stable_socket_path() {
        let long = PathBuf::from(format!("/srv/{}", "x".repeat(120)));
        let a = EnginePaths::new(&long);
        assert!(a.socket_relocated());
        assert!(a.socket.as_os_str().len() <= MAX_SOCKET_PATH);
        assert!(a.socket.starts_with("/tmp"));
        assert_eq!(a.socket, EnginePaths::new(&long).socket);
        let other = EnginePaths::new(&PathBuf::from(format!("/srv/{}", "y".repeat(120))));
        assert_ne!(a.socket, other.socket);
    }

    #[test]
    fn a_missing_override_reports_not_installed_with_the_package() {
        let err = find_program("mariadbd", Some(Path::new("/nonexistent/mariadbd")))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("mariadb-server"), "{err}");
        assert!(err.contains("/nonexistent"), "{err}");
    }

    #[test]
    fn path_args_join_flag_and_path() {
        assert_eq!(
            path_arg("--datadir", Path::new("/a b/c")),
            OsString::from("--datadir=/a b/c")
        );
    }
}
