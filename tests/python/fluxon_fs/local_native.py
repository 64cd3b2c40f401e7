"""Development stand-in for ``fluxon_py._native``: the same interface, over local directories.

Used ONLY by the tests while the real extension is not built (see ``conftest.py``). It behaves
like the contract in ``_native.pyi`` with real syscalls underneath, so errno behaviour is the
kernel's: ``FileNotFoundError``, ``IsADirectoryError``, ``ENOTDIR``, ``EEXIST`` ... Staged
writes (``O_TRUNC`` or ``O_CREAT|O_EXCL``) go to a temp file published by rename (or link, for
exclusive create) on close, as the agent does. Scopes follow the access model (managers see
everything; ``read`` / ``read_write`` per export prefix; listings are filtered).

The "master" is a JSON state file ``<FLUXON_LOCAL_NATIVE_STATE_DIR>/<host>_<port>.json`` for
the ``master_addr`` given to ``Session``::

    {"master_addr": "127.0.0.1:P", "instance_key": "k", "stage_dir": "/tmp/..",
     "exports": {"name": "/abs/root"}, "offline": [],
     "users": {"admin": {"password": "pw", "can_manage_users": true}},
     "scopes": [{"export_name": "e", "prefix": "docs/", "mode": "read", "usernames": ["u"]}]}
"""

from __future__ import annotations

import errno
import json
import os
import stat as _stat
import tempfile
import threading
from typing import Optional

INLINE_MAX = 1 << 20

_UMASK = os.umask(0)
os.umask(_UMASK)


def _state(master_addr: str, timeout_secs: float = 10.0) -> dict:
    base = os.environ.get("FLUXON_LOCAL_NATIVE_STATE_DIR")
    if not base:
        raise RuntimeError("FLUXON_LOCAL_NATIVE_STATE_DIR is not set")
    path = os.path.join(base, master_addr.replace(":", "_") + ".json")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise TimeoutError(
            f"master {master_addr} did not answer within {timeout_secs} s") from None


def after_fork_in_child() -> None:
    return None


def _tuple(st: os.stat_result) -> tuple:
    return (st.st_mode, st.st_ino, st.st_dev, st.st_nlink, st.st_uid, st.st_gid, st.st_size,
            st.st_atime_ns, st.st_mtime_ns, st.st_ctime_ns, st.st_blksize, st.st_blocks)


def _err(e: OSError, rel: str) -> OSError:
    return OSError(e.errno, e.strerror, rel)


class _Access:
    def __init__(self, state: dict, username: str) -> None:
        user = state["users"][username]
        self.username = username
        self.manager = bool(user.get("can_manage_users"))
        self.scopes: dict[str, list[tuple[str, str]]] = {}
        for s in state.get("scopes", []):
            if username in s["usernames"]:
                prefix = s.get("prefix", "").strip("/")
                self.scopes.setdefault(s["export_name"], []).append((prefix, s["mode"]))

    def _covers(self, export: str, rel: str, write: bool) -> bool:
        if self.manager:
            return True
        for prefix, mode in self.scopes.get(export, []):
            if write and mode != "read_write":
                continue
            if prefix == "" or rel == prefix or rel.startswith(prefix + "/"):
                return True
        return False

    def _browse(self, export: str, rel: str) -> bool:
        if self.manager:
            return True
        return any(rel == "" or p.startswith(rel + "/") or p == rel
                   for p, _ in self.scopes.get(export, []))

    def visible_export(self, export: str) -> bool:
        return self.manager or export in self.scopes

    def check(self, export: str, rel: str, write: bool, op: str) -> None:
        if self._covers(export, rel, write) or (not write and op in ("stat", "list_dir")
                                                and self._browse(export, rel)):
            return
        mode = "read_write" if write else "read"
        raise PermissionError(errno.EACCES,
                              f"fs {op} denied: username={self.username} export_name={export} "
                              f"relpath={rel} mode={mode}", rel)

    def child_visible(self, export: str, rel: str, is_dir: bool) -> bool:
        if self._covers(export, rel, False):
            return True
        return is_dir and self._browse(export, rel)


class Session:
    def __init__(self, master_addr: str, username: str, password: str,
                 timeout_secs: float = 10.0) -> None:
        state = _state(master_addr, timeout_secs)
        self._addr = master_addr
        user = state["users"].get(username)
        if user is None or user.get("password") != password:
            raise PermissionError(errno.EACCES, "login failed: bad username or password")
        self._state = state
        self._access = _Access(state, username)
        self._roots = {n: os.path.realpath(r) for n, r in state["exports"].items()}
        self._stage = state["stage_dir"]

    # -- master ------------------------------------------------------------------------------
    def master_instance_key(self) -> str:
        return self._state["instance_key"]

    def exports(self) -> list[str]:
        offline = set(_state(self._addr).get("offline", []))
        return [n for n in self._roots if n not in offline and self._access.visible_export(n)]

    def cache_config_yaml(self) -> str:
        lines = ["fluxon_fs:", "  cache:", "    exports:"]
        for n, r in self._state["exports"].items():
            lines += [f"      {n}:", f"        remote_root_dir_abs: {json.dumps(r)}"]
        if not self._state["exports"]:
            lines[-1] = "    exports: {}"
        return "\n".join(lines) + "\n"

    # -- paths -------------------------------------------------------------------------------
    def _path(self, export: str, rel: str, follow: bool = True) -> str:
        root = self._roots.get(export)
        if root is None:
            raise OSError(errno.ENOENT, f"unknown export_name: {export}", rel)
        if rel.startswith("/") or ".." in rel.split("/") or "\0" in rel:
            raise PermissionError(errno.EACCES, "path leaves the export root", rel)
        full = os.path.join(root, rel) if rel else root
        parent = os.path.dirname(full) if rel else root
        for candidate in ((parent, full) if follow else (parent,)):
            try:
                real = os.path.realpath(candidate)
            except OSError:
                continue
            if real != root and not real.startswith(root + "/"):
                raise PermissionError(errno.EACCES, "path leaves the export root", rel)
        return full

    def stat(self, export: str, path: str, follow_symlinks: bool = True) -> tuple:
        self._access.check(export, path, False, "stat")
        full = self._path(export, path, follow_symlinks)
        try:
            return _tuple(os.stat(full, follow_symlinks=follow_symlinks))
        except OSError as e:
            raise _err(e, path) from None

    def listdir(self, export: str, path: str) -> list:
        self._access.check(export, path, False, "list_dir")
        full = self._path(export, path)
        try:
            with os.scandir(full) as it:
                out = []
                for entry in it:
                    st = entry.stat(follow_symlinks=False)
                    rel = f"{path}/{entry.name}" if path else entry.name
                    if self._access.child_visible(export, rel, _stat.S_ISDIR(st.st_mode)):
                        out.append((entry.name, _tuple(st)))
                return out
        except OSError as e:
            raise _err(e, path) from None

    def access(self, export: str, path: str, mode: int) -> bool:
        write = bool(mode & os.W_OK)
        try:
            self._access.check(export, path, write, "access")
        except PermissionError:
            return False
        return os.access(self._path(export, path), mode)

    def _simple(self, write_op: str, fn, export: str, path: str, *args) -> None:
        self._access.check(export, path, True, write_op)
        full = self._path(export, path, follow=False)
        try:
            fn(full, *args)
        except OSError as e:
            raise _err(e, path) from None

    def mkdir(self, export: str, path: str, mode: int = 0o777) -> None:
        self._simple("mkdir", os.mkdir, export, path, mode)

    def rmdir(self, export: str, path: str) -> None:
        self._simple("rmdir", os.rmdir, export, path)

    def unlink(self, export: str, path: str) -> None:
        self._simple("unlink", os.unlink, export, path)

    def rename(self, export: str, src: str, dst: str, replace: bool = True) -> None:
        self._access.check(export, src, True, "rename")
        self._access.check(export, dst, True, "rename")
        a, b = self._path(export, src, False), self._path(export, dst, False)
        try:
            os.rename(a, b)
        except OSError as e:
            raise OSError(e.errno, e.strerror, src, dst) from None

    def chmod(self, export: str, path: str, mode: int) -> None:
        self._access.check(export, path, True, "chmod")
        try:
            os.chmod(self._path(export, path), mode)
        except OSError as e:
            raise _err(e, path) from None

    def utime(self, export: str, path: str, atime_ns: int, mtime_ns: int) -> None:
        self._access.check(export, path, True, "utime")
        try:
            os.utime(self._path(export, path), ns=(atime_ns, mtime_ns))
        except OSError as e:
            raise _err(e, path) from None

    def truncate(self, export: str, path: str, length: int) -> None:
        self._access.check(export, path, True, "truncate")
        try:
            os.truncate(self._path(export, path), length)
        except OSError as e:
            raise _err(e, path) from None

    def readlink(self, export: str, path: str) -> str:
        self._access.check(export, path, False, "readlink")
        try:
            return os.readlink(self._path(export, path, follow=False))
        except OSError as e:
            raise _err(e, path) from None

    def open(self, export: str, path: str, flags: int, mode: int = 0o666) -> "File":
        acc = flags & os.O_ACCMODE
        write = acc != os.O_RDONLY or bool(flags & (os.O_CREAT | os.O_TRUNC))
        self._access.check(export, path, write, "open")
        full = self._path(export, path)
        try:
            return File(full, path, flags, mode, self._stage)
        except OSError as e:
            raise _err(e, path) from None


class File:
    def __init__(self, full: str, rel: str, flags: int, mode: int, stage_dir: str) -> None:
        self._full = full
        self._rel = rel
        self._flags = flags
        self._lock = threading.Lock()
        self._closed = False
        self._tmp: Optional[str] = None
        acc = flags & os.O_ACCMODE
        staged = acc != os.O_RDONLY and (flags & os.O_TRUNC or
                                         (flags & os.O_CREAT and flags & os.O_EXCL))
        if staged:
            self._fd = self._open_staged(full, flags, mode, stage_dir)
        else:
            fd = os.open(full, (flags & (os.O_ACCMODE | os.O_CREAT | os.O_APPEND))
                         | os.O_CLOEXEC, mode)
            if _stat.S_ISDIR(os.fstat(fd).st_mode):
                os.close(fd)
                raise OSError(errno.EISDIR, os.strerror(errno.EISDIR), rel)
            self._fd = fd

    def _open_staged(self, full: str, flags: int, mode: int, stage_dir: str) -> int:
        parent = os.path.dirname(full)
        pst = os.stat(parent)  # ENOENT / ENOTDIR as the kernel reports them
        if not _stat.S_ISDIR(pst.st_mode):
            raise OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR))
        try:
            st = os.stat(full)
        except FileNotFoundError:
            st = None
        if st is not None:
            if flags & os.O_CREAT and flags & os.O_EXCL:
                raise OSError(errno.EEXIST, os.strerror(errno.EEXIST))
            if _stat.S_ISDIR(st.st_mode):
                raise OSError(errno.EISDIR, os.strerror(errno.EISDIR))
            perm = st.st_mode & 0o7777
        else:
            if not flags & os.O_CREAT:
                raise OSError(errno.ENOENT, os.strerror(errno.ENOENT))
            perm = mode & ~_UMASK & 0o7777
        fd, tmp = tempfile.mkstemp(dir=stage_dir, prefix="stage-")
        os.fchmod(fd, perm)
        self._tmp = tmp
        return fd

    @property
    def closed(self) -> bool:
        return self._closed

    def _check(self) -> None:
        if self._closed:
            raise ValueError("I/O operation on closed file")

    def inline_fd(self) -> Optional[int]:
        self._check()
        if self._flags & os.O_ACCMODE != os.O_RDONLY or self._tmp is not None:
            return None
        size = os.fstat(self._fd).st_size
        if size > INLINE_MAX:
            return None
        data = self.pread(0, size)
        fd = os.memfd_create("fluxon-inline", os.MFD_CLOEXEC)
        os.write(fd, data)
        os.lseek(fd, 0, os.SEEK_SET)
        return fd

    def size(self) -> int:
        self._check()
        return os.fstat(self._fd).st_size

    def fstat(self) -> tuple:
        self._check()
        return _tuple(os.fstat(self._fd))

    def pread(self, offset: int, length: int) -> bytes:
        self._check()
        parts = []
        while length > 0:
            chunk = os.pread(self._fd, min(length, 1 << 30), offset)
            if not chunk:
                break
            parts.append(chunk)
            offset += len(chunk)
            length -= len(chunk)
        return b"".join(parts)

    def readinto(self, offset: int, buffer) -> int:
        self._check()
        view = memoryview(buffer).cast("B")
        total = 0
        while total < len(view):
            n = os.preadv(self._fd, [view[total:]], offset + total)
            if n == 0:
                break
            total += n
        return total

    def pwrite(self, offset: int, data: bytes) -> int:
        self._check()
        view = memoryview(data)
        done = 0
        while done < len(view):
            done += os.pwrite(self._fd, view[done:], offset + done)
        return done

    def append(self, data: bytes) -> int:
        self._check()
        with self._lock:
            view = memoryview(data)
            done = 0
            while done < len(view):
                done += os.write(self._fd, view[done:])
            return os.lseek(self._fd, 0, os.SEEK_CUR)

    def truncate(self, length: int) -> None:
        self._check()
        os.ftruncate(self._fd, length)

    def flush(self) -> None:
        self._check()

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            os.close(self._fd)
            tmp, self._tmp = self._tmp, None
            if tmp is None:
                return
            try:
                if self._flags & os.O_EXCL:
                    os.link(tmp, self._full)
                    os.unlink(tmp)
                else:
                    os.rename(tmp, self._full)
            except OSError as e:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
                raise _err(e, self._rel) from None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass
