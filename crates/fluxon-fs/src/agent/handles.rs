//! Open files of one client connection: plain reads, in-place writes, appends under a per-file
//! lock, and staged writes (`O_TRUNC` / `O_CREAT|O_EXCL`) that go to an unnamed temp file in the
//! target directory and are published atomically on close (through a symlink inside the export,
//! the link's target is replaced and the link stays).
//!
//! Durability: closing a file that was opened for writing fsyncs its data before the close is
//! acknowledged; a published staged file is renamed after its data is on disk, and the
//! directory is fsynced after the rename.

use std::collections::HashSet;
use std::fs::File;
use std::hash::{Hash, Hasher};
use std::io::{Seek, SeekFrom, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex};

use fluxon_fs_proto::{OpenFlags, StatInfo};
use rustix::fs::{AtFlags, Mode, OFlags};
use rustix::io::Errno;

use super::fsops::{fstat, proc_fd_path, ExportRoot, FsError, FsResult, TEMP_PREFIX};

/// Agent-wide coordination between connections: pending exclusive creates and append locks.
#[derive(Debug)]
pub struct Coordination {
    exclusive: Mutex<HashSet<(String, String)>>,
    append_locks: [Mutex<()>; 64],
}

impl Default for Coordination {
    fn default() -> Self {
        Coordination {
            exclusive: Mutex::new(HashSet::new()),
            append_locks: std::array::from_fn(|_| Mutex::new(())),
        }
    }
}

impl Coordination {
    fn reserve_exclusive(self: &Arc<Self>, export: &str, path: &str) -> FsResult<Reservation> {
        let key = (export.to_string(), path.to_string());
        let mut pending = self.exclusive.lock().unwrap_or_else(|e| e.into_inner());
        if !pending.insert(key.clone()) {
            return Err(FsError::new(
                libc::EEXIST,
                super::fsops::strerror(libc::EEXIST),
            ));
        }
        Ok(Reservation {
            coord: self.clone(),
            key,
        })
    }

    fn append_lock(&self, stat: &StatInfo) -> &Mutex<()> {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (stat.dev, stat.ino).hash(&mut h);
        &self.append_locks[(h.finish() % 64) as usize]
    }
}

/// A pending `O_EXCL` create; released on drop.
#[derive(Debug)]
struct Reservation {
    coord: Arc<Coordination>,
    key: (String, String),
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut pending = self
            .coord
            .exclusive
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        pending.remove(&self.key);
    }
}

/// Where a staged file is published on close.
#[derive(Debug)]
struct Staged {
    parent: OwnedFd,
    name: String,
    /// Temp name in the parent when `O_TMPFILE` is not available; `None` = unnamed temp file.
    named_temp: Option<String>,
    exclusive: Option<Reservation>,
}

/// One open file.
#[derive(Debug)]
pub struct OpenFile {
    pub export: String,
    pub path: String,
    pub flags: OpenFlags,
    file: File,
    staged: Mutex<Option<Staged>>,
    coord: Arc<Coordination>,
}

impl OpenFile {
    /// Opens `path` in `root` with `flags`; `mode` applies to newly created files.
    pub fn open(
        root: &ExportRoot,
        coord: &Arc<Coordination>,
        path: &str,
        flags: OpenFlags,
        mode: u32,
    ) -> FsResult<OpenFile> {
        if flags.is_staged() {
            if let Some(file) = Self::open_staged(root, coord, path, flags, mode)? {
                return Ok(file);
            }
        }
        let mut oflags = OFlags::NONBLOCK;
        oflags |= match (flags.read, flags.write) {
            (_, false) => OFlags::RDONLY,
            (false, true) => OFlags::WRONLY,
            (true, true) => OFlags::RDWR,
        };
        if flags.create {
            oflags |= OFlags::CREATE;
        }
        if flags.exclusive && flags.create {
            oflags |= OFlags::EXCL;
        }
        if flags.truncate && flags.write {
            oflags |= OFlags::TRUNC;
        }
        if flags.append {
            oflags |= OFlags::APPEND;
        }
        let fd = root.open_beneath(path, oflags, mode & 0o7777)?;
        let stat = fstat(&fd)?;
        if stat.is_dir() {
            return Err(FsError::new(
                libc::EISDIR,
                super::fsops::strerror(libc::EISDIR),
            ));
        }
        if !stat.is_file() {
            return Err(FsError::new(
                libc::EINVAL,
                format!("{path}: not a regular file"),
            ));
        }
        Ok(OpenFile {
            export: root.name.clone(),
            path: path.to_string(),
            flags,
            file: File::from(fd),
            staged: Mutex::new(None),
            coord: coord.clone(),
        })
    }

    /// A staged open (`None` is never returned today; kept for targets that cannot be staged).
    fn open_staged(
        root: &ExportRoot,
        coord: &Arc<Coordination>,
        path: &str,
        flags: OpenFlags,
        mode: u32,
    ) -> FsResult<Option<OpenFile>> {
        let (parent, name) = root.open_parent(path)?;
        let existing = match rustix::fs::statat(&parent, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Some(super::fsops::to_stat(&st)),
            Err(Errno::NOENT) => None,
            Err(e) => return Err(e.into()),
        };
        let exists_err = || FsError::new(libc::EEXIST, super::fsops::strerror(libc::EEXIST));
        if flags.exclusive && flags.create && existing.is_some() {
            return Err(exists_err());
        }
        match &existing {
            Some(st) if st.is_symlink() => {
                // Stage next to the link's final target (contained in the export).
                let target = root.resolve_final_symlinks(path)?;
                return Self::open_staged(root, coord, &target, flags, mode).map(|file| {
                    file.map(|mut f| {
                        f.path = path.to_string();
                        f
                    })
                });
            }
            Some(st) if st.is_dir() => {
                return Err(FsError::new(
                    libc::EISDIR,
                    super::fsops::strerror(libc::EISDIR),
                ))
            }
            None if !flags.create => {
                return Err(FsError::new(
                    libc::ENOENT,
                    super::fsops::strerror(libc::ENOENT),
                ))
            }
            _ => {}
        }
        let exclusive = if flags.exclusive && flags.create {
            Some(coord.reserve_exclusive(&root.name, path)?)
        } else {
            None
        };
        let perm = existing.map(|st| st.mode & 0o7777).unwrap_or(mode & 0o7777);
        let (fd, named_temp) = match rustix::fs::openat(
            &parent,
            ".",
            OFlags::TMPFILE | OFlags::RDWR | OFlags::CLOEXEC,
            Mode::from_raw_mode(perm),
        ) {
            Ok(fd) => (fd, None),
            Err(Errno::OPNOTSUPP | Errno::ISDIR | Errno::INVAL) => {
                let temp = temp_name(name);
                let fd = rustix::fs::openat(
                    &parent,
                    temp.as_str(),
                    OFlags::RDWR | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC,
                    Mode::from_raw_mode(perm),
                )?;
                (fd, Some(temp))
            }
            Err(e) => return Err(e.into()),
        };
        if existing.is_some() {
            // Keep the replaced file's permission bits (the umask applied to the new one).
            rustix::fs::fchmod(&fd, Mode::from_raw_mode(perm))?;
        }
        Ok(Some(OpenFile {
            export: root.name.clone(),
            path: path.to_string(),
            flags,
            file: File::from(fd),
            staged: Mutex::new(Some(Staged {
                parent,
                name: name.to_string(),
                named_temp,
                exclusive,
            })),
            coord: coord.clone(),
        }))
    }

    pub fn stat(&self) -> FsResult<StatInfo> {
        fstat(&self.file)
    }

    pub fn read(&self, offset: u64, len: usize) -> FsResult<Vec<u8>> {
        if !self.flags.read {
            return Err(FsError::new(libc::EBADF, "file not open for reading"));
        }
        super::fsops::read_full_at(&self.file, offset, len)
    }

    pub fn write(&self, offset: u64, data: &[u8]) -> FsResult<u64> {
        if !self.flags.write {
            return Err(FsError::new(libc::EBADF, "file not open for writing"));
        }
        self.file.write_all_at(data, offset)?;
        Ok(data.len() as u64)
    }

    /// Appends at the current end of file; returns the offset after the data.
    pub fn append(&self, data: &[u8]) -> FsResult<u64> {
        if !self.flags.write {
            return Err(FsError::new(libc::EBADF, "file not open for writing"));
        }
        let stat = self.stat()?;
        let _guard = self
            .coord
            .append_lock(&stat)
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let mut file = &self.file;
        if self.flags.append {
            // O_APPEND: every write lands at the end.
            file.write_all(data)?;
            Ok(file.stream_position()?)
        } else {
            let end = file.seek(SeekFrom::End(0))?;
            file.write_all_at(data, end)?;
            Ok(end + data.len() as u64)
        }
    }

    pub fn truncate(&self, len: u64) -> FsResult<()> {
        if !self.flags.write {
            return Err(FsError::new(libc::EINVAL, "file not open for writing"));
        }
        self.file.set_len(len)?;
        Ok(())
    }

    /// Makes written data durable (fsync), then publishes a staged file (atomic rename, or an
    /// atomic no-replace link for `O_EXCL`) and fsyncs its directory.
    pub fn close(&self) -> FsResult<()> {
        if self.flags.write {
            self.file.sync_all()?;
        }
        let staged = self.staged.lock().unwrap_or_else(|e| e.into_inner()).take();
        let Some(staged) = staged else {
            return Ok(());
        };
        self.publish(&staged)?;
        // The rename is durable once the directory is: open it for reading (the staged parent
        // is an O_PATH fd, which cannot be fsynced).
        let dir = rustix::fs::openat(
            &staged.parent,
            ".",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        rustix::fs::fsync(&dir)?;
        Ok(())
    }

    fn publish(&self, staged: &Staged) -> FsResult<()> {
        let exclusive = staged.exclusive.is_some();
        let parent = &staged.parent;
        let name = staged.name.as_str();
        let result = match &staged.named_temp {
            Some(temp) => {
                let r = if exclusive {
                    rustix::fs::renameat_with(
                        parent,
                        temp.as_str(),
                        parent,
                        name,
                        rustix::fs::RenameFlags::NOREPLACE,
                    )
                } else {
                    rustix::fs::renameat(parent, temp.as_str(), parent, name)
                };
                if r.is_err() {
                    let _ = rustix::fs::unlinkat(parent, temp.as_str(), AtFlags::empty());
                }
                r
            }
            None => {
                let source = proc_fd_path(&self.file);
                if exclusive {
                    rustix::fs::linkat(
                        rustix::fs::CWD,
                        source.as_str(),
                        parent,
                        name,
                        AtFlags::SYMLINK_FOLLOW,
                    )
                } else {
                    let temp = temp_name(name);
                    rustix::fs::linkat(
                        rustix::fs::CWD,
                        source.as_str(),
                        parent,
                        temp.as_str(),
                        AtFlags::SYMLINK_FOLLOW,
                    )
                    .and_then(|()| {
                        let r = rustix::fs::renameat(parent, temp.as_str(), parent, name);
                        if r.is_err() {
                            let _ = rustix::fs::unlinkat(parent, temp.as_str(), AtFlags::empty());
                        }
                        r
                    })
                }
            }
        };
        result.map_err(FsError::from)
    }
}

impl Drop for OpenFile {
    fn drop(&mut self) {
        // An unpublished named temp file is garbage; an unnamed one vanishes with the fd.
        let staged = self
            .staged
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(Staged {
            parent,
            named_temp: Some(temp),
            ..
        }) = staged
        {
            let _ = rustix::fs::unlinkat(&parent, temp.as_str(), AtFlags::empty());
        }
    }
}

fn temp_name(name: &str) -> String {
    let mut random = [0u8; 8];
    let _ = getrandom::fill(&mut random);
    let short: String = name.chars().take(64).collect();
    format!("{TEMP_PREFIX}{short}.{:016x}", u64::from_le_bytes(random))
}
