//! Requests a client sends to an agent and the agent's replies.
//!
//! Every connection starts with [`Request::Hello`] and [`Request::Auth`]; the agent checks the
//! token's signature when it is presented and its expiry and scopes on every later request.
//! Bulk bytes (write payloads, read results, inline file contents) travel in the frame's data
//! part, not inside these messages.

use serde::{Deserialize, Serialize};

/// Bumped on incompatible changes; an agent refuses a client that speaks another version.
pub const PROTOCOL_VERSION: u32 = 1;

/// Open flags, independent of the platform's `O_*` numbering.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenFlags {
    pub read: bool,
    pub write: bool,
    pub create: bool,
    pub exclusive: bool,
    pub truncate: bool,
    pub append: bool,
}

impl OpenFlags {
    /// Converts Linux `O_*` bits (what Python's `os.O_*` are on Linux).
    pub fn from_linux(flags: i32) -> OpenFlags {
        const O_ACCMODE: i32 = 0o3;
        const O_WRONLY: i32 = 0o1;
        const O_RDWR: i32 = 0o2;
        const O_CREAT: i32 = 0o100;
        const O_EXCL: i32 = 0o200;
        const O_TRUNC: i32 = 0o1000;
        const O_APPEND: i32 = 0o2000;
        let access = flags & O_ACCMODE;
        OpenFlags {
            read: access != O_WRONLY,
            write: access == O_WRONLY || access == O_RDWR,
            create: flags & O_CREAT != 0,
            exclusive: flags & O_EXCL != 0,
            truncate: flags & O_TRUNC != 0,
            append: flags & O_APPEND != 0,
        }
    }

    /// True when the open writes through a staged temp file published on close.
    pub fn is_staged(&self) -> bool {
        self.write && !self.append && (self.truncate || (self.create && self.exclusive))
    }
}

/// `stat` fields, as `os.stat_result` wants them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatInfo {
    pub mode: u32,
    pub ino: u64,
    pub dev: u64,
    pub nlink: u64,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub atime_ns: i64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    pub blksize: u64,
    pub blocks: u64,
}

impl StatInfo {
    const S_IFMT: u32 = 0o170000;

    pub fn is_dir(&self) -> bool {
        self.mode & Self::S_IFMT == 0o040000
    }
    pub fn is_file(&self) -> bool {
        self.mode & Self::S_IFMT == 0o100000
    }
    pub fn is_symlink(&self) -> bool {
        self.mode & Self::S_IFMT == 0o120000
    }
    /// Same content version as `other` (close-to-open validation key).
    pub fn same_version(&self, other: &StatInfo) -> bool {
        self.ino == other.ino
            && self.dev == other.dev
            && self.size == other.size
            && self.mtime_ns == other.mtime_ns
            && self.ctime_ns == other.ctime_ns
    }
}

/// One directory entry with its `lstat` result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirEntry {
    pub name: String,
    pub stat: StatInfo,
}

/// Reply to [`Request::Open`]. When `inline` is true the whole content is in the frame's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Opened {
    pub handle: u64,
    pub stat: StatInfo,
    pub inline: bool,
}

/// An error reply: an errno (Linux numbering) and a message for the user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireError {
    pub errno: i32,
    pub message: String,
}

/// A client request. Paths are export-relative ('' is the root).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// First request on a connection.
    Hello {
        protocol_version: u32,
    },
    /// Presents (or replaces) the connection's access token.
    Auth {
        token: String,
    },
    Ping,
    Stat {
        export: String,
        path: String,
        follow: bool,
    },
    ListDir {
        export: String,
        path: String,
    },
    /// `os.access` with `R_OK`/`W_OK`/`X_OK` bits (0 = existence).
    Access {
        export: String,
        path: String,
        mode: u32,
    },
    Mkdir {
        export: String,
        path: String,
        mode: u32,
    },
    Rmdir {
        export: String,
        path: String,
    },
    Unlink {
        export: String,
        path: String,
    },
    Rename {
        export: String,
        src: String,
        dst: String,
        noreplace: bool,
    },
    Chmod {
        export: String,
        path: String,
        mode: u32,
    },
    Utime {
        export: String,
        path: String,
        atime_ns: i64,
        mtime_ns: i64,
    },
    Truncate {
        export: String,
        path: String,
        len: u64,
    },
    Readlink {
        export: String,
        path: String,
    },
    /// Opens a file; contents up to `inline_max` bytes come back inline for read-only opens.
    Open {
        export: String,
        path: String,
        flags: OpenFlags,
        mode: u32,
        inline_max: u64,
    },
    Read {
        handle: u64,
        offset: u64,
        len: u32,
    },
    /// Data in the frame.
    Write {
        handle: u64,
        offset: u64,
    },
    /// Data in the frame; lands at the true end of file.
    Append {
        handle: u64,
    },
    FTruncate {
        handle: u64,
        len: u64,
    },
    Fstat {
        handle: u64,
    },
    /// Releases the handle; publishes a staged write (atomic rename) unless `abort`.
    Close {
        handle: u64,
        abort: bool,
    },
}

impl Request {
    /// Short name for logs and error messages.
    pub fn op_name(&self) -> &'static str {
        match self {
            Request::Hello { .. } => "hello",
            Request::Auth { .. } => "auth",
            Request::Ping => "ping",
            Request::Stat { .. } => "stat",
            Request::ListDir { .. } => "listdir",
            Request::Access { .. } => "access",
            Request::Mkdir { .. } => "mkdir",
            Request::Rmdir { .. } => "rmdir",
            Request::Unlink { .. } => "unlink",
            Request::Rename { .. } => "rename",
            Request::Chmod { .. } => "chmod",
            Request::Utime { .. } => "utime",
            Request::Truncate { .. } => "truncate",
            Request::Readlink { .. } => "readlink",
            Request::Open { .. } => "open",
            Request::Read { .. } => "read",
            Request::Write { .. } => "write",
            Request::Append { .. } => "append",
            Request::FTruncate { .. } => "ftruncate",
            Request::Fstat { .. } => "fstat",
            Request::Close { .. } => "close",
        }
    }
}

/// An agent reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    Ok,
    Stat(StatInfo),
    Entries(Vec<DirEntry>),
    Bool(bool),
    Link(String),
    Opened(Opened),
    /// Read result in the frame's data (shorter than asked only at end of file).
    Data,
    Written {
        len: u64,
    },
    /// Offset just after the appended bytes.
    Appended {
        end: u64,
    },
    Err(WireError),
}

impl Response {
    pub fn error(errno: i32, message: impl Into<String>) -> Response {
        Response::Err(WireError {
            errno,
            message: message.into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linux_flags() {
        let w = OpenFlags::from_linux(0o1 | 0o100 | 0o1000);
        assert!(w.write && !w.read && w.create && w.truncate && w.is_staged());
        let r = OpenFlags::from_linux(0);
        assert!(r.read && !r.write && !r.is_staged());
        let a = OpenFlags::from_linux(0o1 | 0o100 | 0o2000);
        assert!(a.append && !a.is_staged());
        let x = OpenFlags::from_linux(0o2 | 0o100 | 0o200);
        assert!(x.read && x.write && x.is_staged());
        let rw = OpenFlags::from_linux(0o2);
        assert!(rw.read && rw.write && !rw.is_staged());
    }

    #[test]
    fn postcard_round_trip() {
        let req = Request::Open {
            export: "e".into(),
            path: "a/b".into(),
            flags: OpenFlags::from_linux(0),
            mode: 0o644,
            inline_max: 1 << 18,
        };
        let bytes = postcard::to_allocvec(&req).unwrap();
        assert_eq!(postcard::from_bytes::<Request>(&bytes).unwrap(), req);
    }
}
