"""Contract of the native extension `fluxon_py._native` (Rust, PyO3, crate `crates/fluxon-py`).

The pure-Python layer (`fluxon_py.config`, `fluxon_py.kvclient`, `fluxon_py.fluxon_fs`: the
patcher, file objects, path routing) is written against this stub and nothing else. The native
side is a thin binding over the Rust client core (`crates/fluxon-fs-client`).

Errors: every call that fails raises the standard Python exception for the errno
(``OSError(errno, message, filename)`` so that ``FileNotFoundError``, ``PermissionError``,
``IsADirectoryError``, ``NotADirectoryError``, ``FileExistsError``, ``OSError(EXDEV)`` …
come out naturally), ``TimeoutError`` when a master or agent did not answer within the
configured bound, ``ValueError`` for bad arguments. Paths given to a ``Session`` are always
export-relative, '/'-separated, without a leading '/', already normalised by the Python layer
('' is the export root). The native side still rejects '..' components and anything that would
leave the export root (PermissionError), since it must not trust the caller.

All calls release the GIL while they wait on the network. Objects are safe to use from many
threads. After ``os.fork()`` the child calls ``after_fork_in_child()`` (registered by the
Python layer with ``os.register_at_fork``) and then has a working client: the native side
drops inherited connections and runtime threads and reconnects lazily.
"""

from typing import Optional

# (st_mode, st_ino, st_dev, st_nlink, st_uid, st_gid, st_size,
#  st_atime_ns, st_mtime_ns, st_ctime_ns, st_blksize, st_blocks)
StatTuple = tuple[int, int, int, int, int, int, int, int, int, int, int, int]

def after_fork_in_child() -> None: ...

class Session:
    """One authenticated client identity talking to one master and its agents.

    ``master_addr`` is ``host:port`` of the master's client endpoint. The constructor logs in
    (username/password are exchanged once for a short-lived signed token; the password is not
    kept in memory afterwards except to renew the token) and raises ``PermissionError`` on bad
    credentials, ``TimeoutError`` if the master does not answer within ``timeout_secs``.
    """

    def __init__(self, master_addr: str, username: str, password: str,
                 timeout_secs: float = 10.0) -> None: ...
    def master_instance_key(self) -> str: ...
    def exports(self) -> list[str]:
        """Names of the exports that are online and that this identity may see."""
    def cache_config_yaml(self) -> str:
        """The master's current `fluxon_fs.cache` YAML snapshot (what set_cache_config_yaml takes)."""

    def stat(self, export: str, path: str, follow_symlinks: bool = True) -> StatTuple: ...
    def listdir(self, export: str, path: str) -> list[tuple[str, StatTuple]]:
        """Entries (name, lstat tuple) the identity may see, excluding '.' and '..'."""
    def access(self, export: str, path: str, mode: int) -> bool: ...
    def mkdir(self, export: str, path: str, mode: int = 0o777) -> None: ...
    def rmdir(self, export: str, path: str) -> None: ...
    def unlink(self, export: str, path: str) -> None: ...
    def rename(self, export: str, src: str, dst: str, replace: bool = True) -> None:
        """Atomic within one export. ``replace=False`` is os.rename semantics on Linux (it also
        replaces); kept for Windows-like callers. Cross-export renames never reach here."""
    def chmod(self, export: str, path: str, mode: int) -> None: ...
    def utime(self, export: str, path: str, atime_ns: int, mtime_ns: int) -> None: ...
    def truncate(self, export: str, path: str, length: int) -> None: ...
    def readlink(self, export: str, path: str) -> str: ...

    def open(self, export: str, path: str, flags: int, mode: int = 0o666) -> "File":
        """``flags`` are ``os.O_*`` bits (O_RDONLY/O_WRONLY/O_RDWR, O_CREAT, O_EXCL, O_TRUNC,
        O_APPEND). Close-to-open: the open sees the last closed version on the agent.
        Writes opened with O_TRUNC or O_CREAT|O_EXCL are staged and published atomically on
        close (temp file + rename on the agent). O_APPEND writes land at the true end of file
        even with concurrent writers."""

class File:
    """An open remote file. Offsets are explicit; the Python layer keeps the position."""

    def inline_fd(self) -> Optional[int]:
        """For a small file opened read-only: a memfd holding the whole content (the caller owns
        it and closes it), so the Python layer can hand out a real fd (numpy.fromfile, mmap).
        None for large files and for files opened for writing."""
    def size(self) -> int: ...
    def fstat(self) -> StatTuple: ...
    def pread(self, offset: int, length: int) -> bytes:
        """Fewer bytes than asked only at end of file. Large reads stream in large chunks with
        readahead for sequential access."""
    def readinto(self, offset: int, buffer: memoryview) -> int: ...
    def pwrite(self, offset: int, data: bytes) -> int: ...
    def append(self, data: bytes) -> int:
        """Appends at the true end of file; returns the offset after the write."""
    def truncate(self, length: int) -> None: ...
    def flush(self) -> None:
        """Sends buffered writes; errors surface here or at close, never silently."""
    def close(self) -> None:
        """Idempotent. Publishes staged writes (atomic rename) and raises if that fails."""
    @property
    def closed(self) -> bool: ...
