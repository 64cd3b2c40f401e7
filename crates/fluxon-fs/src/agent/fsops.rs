//! Filesystem operations on one export root, contained beneath it.
//!
//! Every path is resolved from the root's directory fd with `openat2(RESOLVE_BENEATH |
//! RESOLVE_NO_MAGICLINKS)`: `..`, absolute symlinks and symlinks that lead outside the root fail
//! (as `EACCES`), whatever the directory layout. Operations on a final component that must not
//! follow it (lstat, unlink, rename, mkdir, readlink) open the parent that way and then act on
//! the name with the `*at` calls.

use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;

use fluxon_fs_proto::relpath;
use fluxon_fs_proto::{DirEntry, StatInfo};
use rustix::fs::{AtFlags, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

/// Name prefix of staged files; never shown in listings.
pub const TEMP_PREFIX: &str = ".fluxon-tmp-";

/// An error for the client: errno and message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} (errno {errno})")]
pub struct FsError {
    pub errno: i32,
    pub message: String,
}

impl FsError {
    pub fn new(errno: i32, message: impl Into<String>) -> FsError {
        FsError {
            errno,
            message: message.into(),
        }
    }
    /// The OS's description of `errno`, like `strerror`.
    pub fn from_errno(errno: Errno) -> FsError {
        let raw = errno.raw_os_error();
        FsError::new(raw, strerror(raw))
    }
    pub fn denied(message: impl Into<String>) -> FsError {
        FsError::new(libc::EACCES, message)
    }
}

impl From<Errno> for FsError {
    fn from(e: Errno) -> FsError {
        FsError::from_errno(e)
    }
}

impl From<std::io::Error> for FsError {
    fn from(e: std::io::Error) -> FsError {
        let errno = e.raw_os_error().unwrap_or(libc::EIO);
        FsError::new(errno, strerror(errno))
    }
}

/// `strerror(errno)` without the " (os error N)" suffix std adds.
pub fn strerror(errno: i32) -> String {
    let text = std::io::Error::from_raw_os_error(errno).to_string();
    match text.rfind(" (os error") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}

pub type FsResult<T> = Result<T, FsError>;

/// One export's root directory.
#[derive(Debug)]
pub struct ExportRoot {
    pub name: String,
    pub root: OwnedFd,
    pub root_path: std::path::PathBuf,
}

impl ExportRoot {
    /// Opens the export's root directory (it must exist).
    pub fn open(name: &str, path: &Path) -> std::io::Result<ExportRoot> {
        let root = rustix::fs::open(
            path,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(std::io::Error::from)?;
        Ok(ExportRoot {
            name: name.to_string(),
            root,
            root_path: path.to_path_buf(),
        })
    }

    /// Opens `path` beneath the root, following symlinks only while they stay inside.
    pub fn open_beneath(&self, path: &str, flags: OFlags, mode: u32) -> FsResult<OwnedFd> {
        check_path(path)?;
        let target = if path.is_empty() { "." } else { path };
        let resolve = ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS;
        let flags = flags | OFlags::CLOEXEC;
        // openat2 refuses a mode without O_CREAT (open(2) ignores it).
        let mode = if flags.contains(OFlags::CREATE) {
            Mode::from_raw_mode(mode)
        } else {
            Mode::empty()
        };
        let mut attempts = 0;
        loop {
            match rustix::fs::openat2(&self.root, target, flags, mode, resolve) {
                Ok(fd) => return Ok(fd),
                // A concurrent rename somewhere in the tree; the kernel asks us to retry.
                Err(Errno::AGAIN) if attempts < 16 => attempts += 1,
                Err(Errno::XDEV) => {
                    return Err(FsError::denied(format!(
                        "{path}: path resolves outside the export root"
                    )))
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// The parent directory (opened beneath the root) and the final component of `path`.
    pub fn open_parent<'p>(&self, path: &'p str) -> FsResult<(OwnedFd, &'p str)> {
        let parts = checked_components(path)?;
        let Some(name) = parts.last().copied() else {
            return Err(FsError::new(
                libc::EBUSY,
                "the export root itself cannot be changed",
            ));
        };
        let parent = &path[..path.len() - name.len()];
        let parent = parent.strip_suffix('/').unwrap_or(parent);
        let fd = self.open_beneath(parent, OFlags::PATH | OFlags::DIRECTORY, 0)?;
        Ok((fd, name))
    }

    /// The export-relative path of an fd opened beneath the root (what the kernel resolved).
    fn relpath_of(&self, fd: &impl AsRawFd) -> FsResult<String> {
        let real = |fd: &dyn AsRawFd| -> FsResult<std::path::PathBuf> {
            let target = rustix::fs::readlink(proc_fd_path(&fd.as_raw_fd()).as_str(), Vec::new())?;
            let target: std::ffi::OsString =
                std::os::unix::ffi::OsStringExt::from_vec(target.into_bytes());
            Ok(std::path::PathBuf::from(target))
        };
        let root = real(&self.root)?;
        let here = real(fd)?;
        let rel = here
            .strip_prefix(&root)
            .map_err(|_| FsError::denied("path resolves outside the export root"))?;
        rel.to_str()
            .map(str::to_string)
            .ok_or_else(|| FsError::new(libc::EINVAL, "path is not valid UTF-8"))
    }

    /// Follows a chain of symlinks at the final component of `path` and returns the
    /// export-relative path of the first non-symlink (which may not exist yet). Links that
    /// are absolute or lead above the root are refused (`EACCES`), as when opening through them.
    pub fn resolve_final_symlinks(&self, path: &str) -> FsResult<String> {
        let mut current = path.to_string();
        for _ in 0..40 {
            let (parent, name) = self.open_parent(&current)?;
            let target = match rustix::fs::readlinkat(&parent, name, Vec::new()) {
                Ok(target) => target,
                Err(Errno::INVAL | Errno::NOENT) => return Ok(current),
                Err(e) => return Err(e.into()),
            };
            let target = target
                .into_string()
                .map_err(|_| FsError::new(libc::EINVAL, "symlink target is not valid UTF-8"))?;
            if target.starts_with('/') {
                return Err(FsError::denied(format!(
                    "{path}: path resolves outside the export root"
                )));
            }
            let base = self.relpath_of(&parent)?;
            let mut parts: Vec<&str> = base.split('/').filter(|p| !p.is_empty()).collect();
            for part in target.split('/') {
                match part {
                    "" | "." => {}
                    ".." => {
                        if parts.pop().is_none() {
                            return Err(FsError::denied(format!(
                                "{path}: path resolves outside the export root"
                            )));
                        }
                    }
                    other => parts.push(other),
                }
            }
            current = parts.join("/");
            if current.is_empty() {
                return Err(FsError::new(libc::EISDIR, strerror(libc::EISDIR)));
            }
        }
        Err(FsError::new(libc::ELOOP, strerror(libc::ELOOP)))
    }

    pub fn stat(&self, path: &str, follow: bool) -> FsResult<StatInfo> {
        if follow || path.is_empty() {
            let fd = self.open_beneath(path, OFlags::PATH, 0)?;
            Ok(to_stat(&rustix::fs::fstat(&fd)?))
        } else {
            let (parent, name) = self.open_parent(path)?;
            Ok(to_stat(&rustix::fs::statat(
                &parent,
                name,
                AtFlags::SYMLINK_NOFOLLOW,
            )?))
        }
    }

    /// Entries of a directory with their lstat results, staged temp files left out.
    /// `keep(name, stat)` decides visibility.
    pub fn list_dir(
        &self,
        path: &str,
        mut keep: impl FnMut(&str, &StatInfo) -> bool,
    ) -> FsResult<Vec<DirEntry>> {
        let fd = self.open_beneath(path, OFlags::RDONLY | OFlags::DIRECTORY, 0)?;
        let mut dir = rustix::fs::Dir::read_from(&fd)?;
        let mut out = Vec::new();
        while let Some(entry) = dir.read() {
            let entry = entry?;
            let Ok(name) = entry.file_name().to_str() else {
                continue; // Not representable in the protocol's UTF-8 names.
            };
            if name == "." || name == ".." || name.starts_with(TEMP_PREFIX) {
                continue;
            }
            let stat = match rustix::fs::statat(&fd, name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => to_stat(&st),
                Err(Errno::NOENT) => continue, // Removed meanwhile.
                Err(e) => return Err(e.into()),
            };
            if keep(name, &stat) {
                out.push(DirEntry {
                    name: name.to_string(),
                    stat,
                });
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// `os.access`: false for a missing path or missing permission.
    pub fn access(&self, path: &str, mode: u32) -> FsResult<bool> {
        let fd = match self.open_beneath(path, OFlags::PATH, 0) {
            Ok(fd) => fd,
            Err(e)
                if e.errno == libc::ENOENT
                    || e.errno == libc::ENOTDIR
                    || e.errno == libc::EACCES =>
            {
                return Ok(false)
            }
            Err(e) => return Err(e),
        };
        let access = rustix::fs::Access::from_bits_truncate(mode);
        let result = rustix::fs::accessat(
            rustix::fs::CWD,
            proc_fd_path(&fd).as_str(),
            access,
            AtFlags::empty(),
        );
        Ok(result.is_ok())
    }

    pub fn mkdir(&self, path: &str, mode: u32) -> FsResult<()> {
        let (parent, name) = self.open_parent(path)?;
        rustix::fs::mkdirat(&parent, name, Mode::from_raw_mode(mode))?;
        Ok(())
    }

    pub fn rmdir(&self, path: &str) -> FsResult<()> {
        let (parent, name) = self.open_parent(path)?;
        rustix::fs::unlinkat(&parent, name, AtFlags::REMOVEDIR)?;
        Ok(())
    }

    pub fn unlink(&self, path: &str) -> FsResult<()> {
        let (parent, name) = self.open_parent(path)?;
        rustix::fs::unlinkat(&parent, name, AtFlags::empty())?;
        Ok(())
    }

    pub fn rename(&self, src: &str, dst: &str, noreplace: bool) -> FsResult<()> {
        let (src_parent, src_name) = self.open_parent(src)?;
        let (dst_parent, dst_name) = self.open_parent(dst)?;
        if noreplace {
            rustix::fs::renameat_with(
                &src_parent,
                src_name,
                &dst_parent,
                dst_name,
                rustix::fs::RenameFlags::NOREPLACE,
            )?;
        } else {
            rustix::fs::renameat(&src_parent, src_name, &dst_parent, dst_name)?;
        }
        Ok(())
    }

    pub fn chmod(&self, path: &str, mode: u32) -> FsResult<()> {
        let fd = self.open_beneath(path, OFlags::PATH, 0)?;
        rustix::fs::chmod(
            proc_fd_path(&fd).as_str(),
            Mode::from_raw_mode(mode & 0o7777),
        )?;
        Ok(())
    }

    pub fn utime(&self, path: &str, atime_ns: i64, mtime_ns: i64) -> FsResult<()> {
        let fd = self.open_beneath(path, OFlags::PATH, 0)?;
        let times = rustix::fs::Timestamps {
            last_access: timespec(atime_ns),
            last_modification: timespec(mtime_ns),
        };
        rustix::fs::utimensat(
            rustix::fs::CWD,
            proc_fd_path(&fd).as_str(),
            &times,
            AtFlags::empty(),
        )?;
        Ok(())
    }

    pub fn truncate(&self, path: &str, len: u64) -> FsResult<()> {
        let fd = self.open_beneath(path, OFlags::WRONLY | OFlags::NONBLOCK, 0)?;
        rustix::fs::ftruncate(&fd, len)?;
        Ok(())
    }

    pub fn readlink(&self, path: &str) -> FsResult<String> {
        let (parent, name) = self.open_parent(path)?;
        let target = rustix::fs::readlinkat(&parent, name, Vec::new())?;
        target
            .into_string()
            .map_err(|_| FsError::new(libc::EINVAL, "symlink target is not valid UTF-8"))
    }
}

fn check_path(path: &str) -> FsResult<()> {
    checked_components(path).map(|_| ())
}

fn checked_components(path: &str) -> FsResult<Vec<&str>> {
    relpath::components(path).map_err(|e| FsError::denied(e.to_string()))
}

/// `/proc/self/fd/N`: names an already-resolved fd without another path walk.
pub fn proc_fd_path(fd: &impl AsRawFd) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

fn timespec(ns: i64) -> rustix::fs::Timespec {
    rustix::fs::Timespec {
        tv_sec: ns.div_euclid(1_000_000_000),
        tv_nsec: ns.rem_euclid(1_000_000_000) as _,
    }
}

/// Converts the OS stat record.
#[allow(clippy::unnecessary_cast)]
pub fn to_stat(st: &rustix::fs::Stat) -> StatInfo {
    let ns = |sec: i64, nsec: i64| sec.saturating_mul(1_000_000_000).saturating_add(nsec);
    StatInfo {
        mode: st.st_mode as u32,
        ino: st.st_ino as u64,
        dev: st.st_dev as u64,
        nlink: st.st_nlink as u64,
        uid: st.st_uid as u32,
        gid: st.st_gid as u32,
        size: st.st_size as u64,
        atime_ns: ns(st.st_atime as i64, st.st_atime_nsec as i64),
        mtime_ns: ns(st.st_mtime as i64, st.st_mtime_nsec as i64),
        ctime_ns: ns(st.st_ctime as i64, st.st_ctime_nsec as i64),
        blksize: st.st_blksize as u64,
        blocks: st.st_blocks as u64,
    }
}

/// Reads up to `len` bytes at `offset`, short only at end of file. The buffer is filled by the
/// kernel straight into uninitialised capacity (no zeroing pass over up to 8 MiB).
pub fn read_full_at(file: &File, offset: u64, len: usize) -> FsResult<Vec<u8>> {
    let mut buf: Vec<u8> = Vec::with_capacity(len.max(1));
    while buf.len() < len {
        let at = offset + buf.len() as u64;
        match rustix::io::pread(file, rustix::buffer::spare_capacity(&mut buf), at) {
            Ok(0) => break,
            Ok(_) => {}
            Err(Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    // The capacity may exceed `len`; never return more than was asked for.
    buf.truncate(len);
    Ok(buf)
}

/// A C string for an `*at` name (names come from validated relpaths: no NUL).
pub fn c_name(name: &str) -> FsResult<CString> {
    CString::new(name).map_err(|_| FsError::new(libc::EINVAL, "name contains a NUL byte"))
}

/// Re-exported for handle code: stat of an open fd.
pub fn fstat(fd: impl AsFd) -> FsResult<StatInfo> {
    Ok(to_stat(&rustix::fs::fstat(fd)?))
}
