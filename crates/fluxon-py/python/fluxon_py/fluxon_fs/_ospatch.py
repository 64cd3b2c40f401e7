"""The patch layer: wrappers for the file APIs and their installation.

Each wrapper asks :func:`._routing.resolve` whether the path is inside an active mount. If not
(bytes paths, fds, ``None``, local paths, relative paths with ``dir_fd`` ...) it calls the
original function with the caller's arguments unchanged. If it is, the operation goes to the
mount's native session with the export-relative path, and errors carry the caller's path.

Patched: ``builtins.open``, ``io.open``, ``os.{stat, lstat, listdir, scandir, mkdir, rmdir,
unlink, remove, rename, replace, chmod, utime, access, truncate, readlink, open, chown, lchown,
symlink, link, listxattr, getxattr, setxattr, removexattr}``, ``pathlib.Path.touch`` and
``shutil.rmtree``. ``os.path``, ``os.makedirs``, ``os.walk``, ``glob``, the rest of
``shutil`` and ``pathlib`` reach these at call time, so they work on mounts without their own
wrappers.
"""

from __future__ import annotations

import builtins
import errno
import io
import math
import os
import pathlib
import shutil
import stat as _stat_mod
import sys
import threading
import time
from typing import Any, Callable, Optional

from . import _fileio
from ._errors import ENOTSUP, oserror, reraise_with
from ._routing import Target, resolve
from ._stat import MountDirEntry, MountScandirIterator, make_stat_result

__all__ = ["install_layer", "uninstall_layer", "layer_installed", "ORIG"]

_MISSING = object()
# Originals captured at install time; wrappers call these. Kept after uninstall so that a
# wrapper someone captured (``from os import stat`` while installed) still works locally.
ORIG: dict[str, Callable] = {
    "open": io.open,
    **{name: getattr(os, name) for name in (
        "stat", "lstat", "listdir", "scandir", "mkdir", "rmdir", "unlink", "remove", "rename",
        "replace", "chmod", "utime", "access", "truncate", "readlink", "chown",
        "lchown", "symlink", "link", "listxattr", "getxattr", "setxattr", "removexattr")
       if hasattr(os, name)},
    "os.open": os.open,
    "Path.touch": pathlib.Path.touch,
    "shutil.rmtree": shutil.rmtree,
}


def _native_call(target: Target, fn: Callable, *args: Any, names: tuple = ()) -> Any:
    try:
        return fn(*args)
    except OSError as e:
        reraise_with(e, *(names or (target.given,)))


# -- os.stat family -----------------------------------------------------------------------------

def _stat_target(t: Target, follow_symlinks: bool) -> os.stat_result:
    tup = _native_call(t, t.session.stat, t.export, t.rel, follow_symlinks)
    if t.trailing_slash and not _stat_mod.S_ISDIR(tup[0]):
        if follow_symlinks or not _stat_mod.S_ISLNK(tup[0]):
            raise oserror(errno.ENOTDIR, t.given)
    return make_stat_result(tup)


def stat(path, *, dir_fd=None, follow_symlinks=True):
    t = resolve(path, dir_fd)
    if t is None:
        return ORIG["stat"](path, dir_fd=dir_fd, follow_symlinks=follow_symlinks)
    return _stat_target(t, follow_symlinks)


def lstat(path, *, dir_fd=None):
    t = resolve(path, dir_fd)
    if t is None:
        return ORIG["lstat"](path, dir_fd=dir_fd)
    return _stat_target(t, False)


# -- directories --------------------------------------------------------------------------------

def listdir(path=_MISSING):
    t = resolve("." if path is _MISSING or path is None else path)
    if t is None:
        return ORIG["listdir"]() if path is _MISSING else ORIG["listdir"](path)
    entries = _native_call(t, t.session.listdir, t.export, t.rel)
    return [name for name, _ in entries]


def scandir(path=_MISSING):
    given = "." if path is _MISSING or path is None else path
    t = resolve(given)
    if t is None:
        return ORIG["scandir"]() if path is _MISSING else ORIG["scandir"](path)
    entries = _native_call(t, t.session.listdir, t.export, t.rel)
    base = os.fspath(given)
    session, export = t.session, t.export

    def make(name: str, lst: tuple) -> MountDirEntry:
        rel = f"{t.rel}/{name}" if t.rel else name
        entry_path = base + name if base.endswith("/") else f"{base}/{name}"

        def follow() -> tuple:
            return _native_call(t, session.stat, export, rel, True, names=(entry_path,))

        return MountDirEntry(name, entry_path, lst, follow)

    return MountScandirIterator(make(n, s) for n, s in entries)


def mkdir(path, mode=0o777, *, dir_fd=None):
    t = resolve(path, dir_fd)
    if t is None:
        return ORIG["mkdir"](path, mode, dir_fd=dir_fd)
    if t.is_root:
        raise oserror(errno.EEXIST, t.given)
    _native_call(t, t.session.mkdir, t.export, t.rel, mode)


def rmdir(path, *, dir_fd=None):
    t = resolve(path, dir_fd)
    if t is None:
        return ORIG["rmdir"](path, dir_fd=dir_fd)
    if t.is_root:
        raise oserror(errno.EBUSY, t.given)
    _native_call(t, t.session.rmdir, t.export, t.rel)


def unlink(path, *, dir_fd=None):
    t = resolve(path, dir_fd)
    if t is None:
        return ORIG["unlink"](path, dir_fd=dir_fd)
    if t.is_root:
        raise oserror(errno.EISDIR, t.given)
    if t.trailing_slash:
        _stat_target(t, False)  # ENOENT / ENOTDIR as a local unlink('x/') gives
        raise oserror(errno.EISDIR, t.given)
    _native_call(t, t.session.unlink, t.export, t.rel)


def remove(path, *, dir_fd=None):
    t = resolve(path, dir_fd)
    if t is None:
        return ORIG["remove"](path, dir_fd=dir_fd)
    return unlink(path, dir_fd=dir_fd)


def _rename(kind: str, src, dst, src_dir_fd, dst_dir_fd):
    ts = resolve(src, src_dir_fd)
    td = resolve(dst, dst_dir_fd)
    if ts is None and td is None:
        return ORIG[kind](src, dst, src_dir_fd=src_dir_fd, dst_dir_fd=dst_dir_fd)
    if ts is None or td is None or ts.mount is not td.mount:
        raise oserror(errno.EXDEV, src, dst)
    if ts.is_root or td.is_root:
        raise oserror(errno.EBUSY, src, dst)
    try:
        ts.session.rename(ts.export, ts.rel, td.rel, True)
    except OSError as e:
        reraise_with(e, src, dst)


def rename(src, dst, *, src_dir_fd=None, dst_dir_fd=None):
    return _rename("rename", src, dst, src_dir_fd, dst_dir_fd)


def replace(src, dst, *, src_dir_fd=None, dst_dir_fd=None):
    return _rename("replace", src, dst, src_dir_fd, dst_dir_fd)


# -- attributes ---------------------------------------------------------------------------------

def chmod(path, mode, *, dir_fd=None, follow_symlinks=True):
    t = resolve(path, dir_fd)
    if t is None:
        return ORIG["chmod"](path, mode, dir_fd=dir_fd, follow_symlinks=follow_symlinks)
    if not follow_symlinks and _stat_mod.S_ISLNK(_stat_target(t, False).st_mode):
        raise oserror(ENOTSUP, t.given)
    _native_call(t, t.session.chmod, t.export, t.rel, mode)


def _to_ns(value: Any) -> int:
    if isinstance(value, float):
        frac, whole = math.modf(value)
        ns = math.floor(frac * 1e9)
        if ns < 0:
            ns += 1_000_000_000
            whole -= 1
        return int(whole) * 1_000_000_000 + ns
    return value.__index__() * 1_000_000_000


def _utime_ns(times: Any, ns: Any) -> tuple[int, int]:
    if times is not None and ns is not _MISSING:
        raise ValueError("utime: you may specify either 'times' or 'ns' but not both")
    if times is not None:
        if not isinstance(times, tuple) or len(times) != 2:
            raise TypeError("utime: 'times' must be either a tuple of two ints or None")
        try:
            return _to_ns(times[0]), _to_ns(times[1])
        except (AttributeError, TypeError):
            raise TypeError("utime: 'times' must be either a tuple of two ints or None") from None
    if ns is not _MISSING:
        if not isinstance(ns, tuple) or len(ns) != 2:
            raise TypeError("utime: 'ns' must be a tuple of two ints")
        try:
            return ns[0].__index__(), ns[1].__index__()
        except AttributeError:
            raise TypeError("utime: 'ns' must be a tuple of two ints") from None
    now = time.time_ns()
    return now, now


def utime(path, times=None, *, ns=_MISSING, dir_fd=None, follow_symlinks=True):
    t = resolve(path, dir_fd)
    if t is None:
        if ns is _MISSING:
            return ORIG["utime"](path, times, dir_fd=dir_fd, follow_symlinks=follow_symlinks)
        return ORIG["utime"](path, times, ns=ns, dir_fd=dir_fd, follow_symlinks=follow_symlinks)
    atime_ns, mtime_ns = _utime_ns(times, ns)
    _native_call(t, t.session.utime, t.export, t.rel, atime_ns, mtime_ns)


def access(path, mode, *, dir_fd=None, effective_ids=False, follow_symlinks=True):
    t = resolve(path, dir_fd)
    if t is None:
        return ORIG["access"](path, mode, dir_fd=dir_fd, effective_ids=effective_ids,
                              follow_symlinks=follow_symlinks)
    try:
        return bool(t.session.access(t.export, t.rel, mode))
    except OSError:
        # A local os.access() reports every failure as False.
        return False


def truncate(path, length):
    t = resolve(path)
    if t is None:
        return ORIG["truncate"](path, length)
    length = length.__index__()
    if length < 0:
        raise oserror(errno.EINVAL, t.given)
    _native_call(t, t.session.truncate, t.export, t.rel, length)


def readlink(path, *, dir_fd=None):
    t = resolve(path, dir_fd)
    if t is None:
        return ORIG["readlink"](path, dir_fd=dir_fd)
    return _native_call(t, t.session.readlink, t.export, t.rel)


# -- low-level open -----------------------------------------------------------------------------

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


def os_open(path, flags, mode=0o777, *, dir_fd=None):
    """``os.open`` on a mount: read-only opens of small files get a real fd (memfd)."""
    t = resolve(path, dir_fd)
    if t is None:
        return ORIG["os.open"](path, flags, mode, dir_fd=dir_fd)
    if flags & _WRITE_FLAGS or flags & getattr(os, "O_DIRECTORY", 0):
        raise oserror(ENOTSUP, t.given, message=(
            "fluxon_fs: os.open() on a mounted path supports only read-only opens of small "
            "files; use open()"))
    f = _native_call(t, t.session.open, t.export, t.rel, os.O_RDONLY, 0o666)
    try:
        fd = f.inline_fd()
    finally:
        f.close()
    if fd is None:
        raise oserror(ENOTSUP, t.given, message=(
            "fluxon_fs: os.open() on a mounted path needs a small file; use open()"))
    return fd


# -- not supported on mounts --------------------------------------------------------------------

def _unsupported(name: str, path_index: int = 0):
    orig = ORIG[name]

    def wrapper(*args, **kwargs):
        path = args[path_index] if len(args) > path_index else kwargs.get(
            "dst" if path_index == 1 else "path", _MISSING)
        dir_fd = kwargs.get("dst_dir_fd", kwargs.get("dir_fd")) if path_index == 1 \
            else kwargs.get("dir_fd")
        t = None if path is _MISSING else resolve(path, dir_fd)
        if t is None:
            return orig(*args, **kwargs)
        raise oserror(ENOTSUP, path, message=f"fluxon_fs: os.{name}() is not supported on a "
                                             "mounted path")

    wrapper.__name__ = name
    wrapper.__qualname__ = name
    wrapper.__doc__ = orig.__doc__
    return wrapper


# -- pathlib and shutil -------------------------------------------------------------------------

def path_touch(self, mode=0o666, exist_ok=True):
    t = resolve(self)
    if t is None:
        return ORIG["Path.touch"](self, mode, exist_ok)
    if exist_ok:
        try:
            utime(self, None)
        except OSError:
            pass
        else:
            return
    flags = os.O_CREAT | os.O_WRONLY | (0 if exist_ok else os.O_EXCL)
    f = _native_call(t, t.session.open, t.export, t.rel, flags, mode)
    f.close()


def rmtree(path, ignore_errors=False, onerror=None, *, dir_fd=None):
    """``shutil.rmtree`` that removes mounted trees with path-based calls (the fd-based
    variant needs directory fds, which a mount does not have)."""
    t = resolve(path, dir_fd)
    if t is None:
        return ORIG["shutil.rmtree"](path, ignore_errors, onerror, dir_fd=dir_fd)
    sys.audit("shutil.rmtree", path, dir_fd)
    if ignore_errors:
        def onerror(*args):
            pass
    elif onerror is None:
        def onerror(*args):
            raise
    try:
        st = lstat(path)
    except OSError:
        onerror(os.lstat, path, sys.exc_info())
        return
    try:
        if _stat_mod.S_ISLNK(st.st_mode):
            raise OSError("Cannot call rmtree on a symbolic link")
    except OSError:
        onerror(os.path.islink, path, sys.exc_info())
        return
    _rmtree_paths(os.fspath(path), onerror)


def _rmtree_paths(path: str, onerror: Callable) -> None:
    try:
        with scandir(path) as it:
            entries = list(it)
    except OSError:
        onerror(os.scandir, path, sys.exc_info())
        entries = []
    for entry in entries:
        full = entry.path
        try:
            is_dir = entry.is_dir(follow_symlinks=False)
        except OSError:
            is_dir = False
        if is_dir:
            _rmtree_paths(full, onerror)
        else:
            try:
                unlink(full)
            except OSError:
                onerror(os.unlink, full, sys.exc_info())
    try:
        rmdir(path)
    except OSError:
        onerror(os.rmdir, path, sys.exc_info())


rmtree.avoids_symlink_attacks = getattr(shutil.rmtree, "avoids_symlink_attacks", False)


def open_(file, mode="r", buffering=-1, encoding=None, errors=None, newline=None,
          closefd=True, opener=None):
    t = resolve(file)
    if t is None:
        return ORIG["open"](file, mode, buffering, encoding, errors, newline, closefd, opener)
    return _fileio.open_remote(ORIG["open"], t, file, mode, buffering, encoding, errors,
                               newline, closefd, opener)


# -- installation -------------------------------------------------------------------------------

def _wrappers() -> list[tuple[Any, str, str, Callable]]:
    """(owner, attribute, ORIG key, wrapper)."""
    table: list[tuple[Any, str, str, Callable]] = [
        (builtins, "open", "open", open_),
        (io, "open", "open", open_),
        (pathlib.Path, "touch", "Path.touch", path_touch),
        (shutil, "rmtree", "shutil.rmtree", rmtree),
    ]
    plain = {"stat": stat, "lstat": lstat, "listdir": listdir, "scandir": scandir,
             "mkdir": mkdir, "rmdir": rmdir, "unlink": unlink, "remove": remove,
             "rename": rename, "replace": replace, "chmod": chmod, "utime": utime,
             "access": access, "truncate": truncate, "readlink": readlink}
    for name, fn in plain.items():
        table.append((os, name, name, fn))
    table.append((os, "open", "os.open", os_open))
    for name, idx in (("chown", 0), ("lchown", 0), ("symlink", 1), ("link", 1),
                      ("listxattr", 0), ("getxattr", 0), ("setxattr", 0), ("removexattr", 0)):
        if hasattr(os, name):
            table.append((os, name, name, _UNSUPPORTED[name]))
    return table


_UNSUPPORTED = {name: _unsupported(name, idx) for name, idx in (
    ("chown", 0), ("lchown", 0), ("symlink", 1), ("link", 1), ("listxattr", 0),
    ("getxattr", 0), ("setxattr", 0), ("removexattr", 0)) if name in ORIG}

for _name, _fn in list(globals().items()):
    if _name in ORIG and callable(_fn) and _fn is not ORIG.get(_name):
        _fn.__doc__ = ORIG[_name].__doc__
os_open.__name__ = "open"
open_.__name__ = "open"
open_.__doc__ = io.open.__doc__

_layer_lock = threading.RLock()
_saved: Optional[list[tuple[Any, str, Any]]] = None


def layer_installed() -> bool:
    return _saved is not None


def install_layer() -> None:
    """Replaces the attributes (idempotent). Originals are captured now, so a tool that
    patched them before us keeps working for local paths."""
    global _saved
    with _layer_lock:
        if _saved is not None:
            return
        saved = []
        for owner, attr, key, fn in _wrappers():
            current = getattr(owner, attr)
            saved.append((owner, attr, current))
            if current is not fn:
                ORIG[key] = current
        for owner, attr, key, fn in _wrappers():
            setattr(owner, attr, fn)
        _saved = saved


def uninstall_layer() -> None:
    global _saved
    with _layer_lock:
        if _saved is None:
            return
        for owner, attr, original in reversed(_saved):
            setattr(owner, attr, original)
        _saved = None


def after_fork_in_child() -> None:
    global _layer_lock
    _layer_lock = threading.RLock()
