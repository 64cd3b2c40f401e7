"""The process-wide mount table and path routing.

A mount maps an absolute local directory to an export of one patcher's session. ``resolve``
turns whatever a caller passed to a file API into either ``None`` (not ours: the original
function must handle it, unchanged) or a :class:`Target` (mount + export-relative path).

Only ``str`` paths and ``os.PathLike`` objects whose ``__fspath__`` is a ``str`` can be ours.
Bytes paths, integer fds, ``None`` and anything else go to the original function. Relative
paths are resolved against ``os.getcwd()``; a relative path combined with ``dir_fd`` is
relative to that fd, so it is never ours. The path is normalised lexically (``..`` and ``.``
collapse, as ``os.path.abspath`` does); symlinks on the local side are not followed.

Reads of the table are lock-free (an immutable tuple replaced under the lock on change), so
routing costs nothing measurable when no mount matches.
"""

from __future__ import annotations

import os
import posixpath
import threading
from typing import Any, Optional

__all__ = ["Mount", "Target", "resolve", "add_mount", "remove_mount", "mounts", "find_overlap"]


class Mount:
    """One mounted export: ``path`` (normalised, absolute) → ``export`` of ``patcher``."""

    __slots__ = ("path", "export", "patcher", "prefix")

    def __init__(self, path: str, export: str, patcher: Any) -> None:
        self.path = path
        self.export = export
        self.patcher = patcher
        self.prefix = path + "/"

    @property
    def session(self):
        return self.patcher._session_for_io()

    def __repr__(self) -> str:
        return f"<Mount {self.path} -> {self.export}>"


class Target:
    """A routed path: ``rel`` is export-relative ('' is the export root)."""

    __slots__ = ("mount", "rel", "given", "abspath", "trailing_slash")

    def __init__(self, mount: Mount, rel: str, given: Any, abspath: str, trailing_slash: bool):
        self.mount = mount
        self.rel = rel
        self.given = given
        self.abspath = abspath
        self.trailing_slash = trailing_slash

    @property
    def session(self):
        return self.mount.session

    @property
    def export(self) -> str:
        return self.mount.export

    @property
    def is_root(self) -> bool:
        return self.rel == ""

    def __repr__(self) -> str:
        return f"<Target {self.mount.export}:{self.rel!r}>"


_lock = threading.Lock()
# Longest mount path first, so nested checks are unnecessary (overlaps are refused anyway).
_mounts: tuple[Mount, ...] = ()


def mounts() -> tuple[Mount, ...]:
    return _mounts


def normalize(path: str) -> str:
    """Absolute, lexically normalised form of a local path string."""
    if not path.startswith("/"):
        path = posixpath.join(os.getcwd(), path)
    norm = posixpath.normpath(path)
    if norm.startswith("//"):
        norm = "/" + norm.lstrip("/")
    return norm


def find_overlap(path: str) -> Optional[Mount]:
    for m in _mounts:
        if path == m.path or path.startswith(m.prefix) or m.path.startswith(path + "/"):
            return m
    return None


def add_mount(mount: Mount) -> None:
    global _mounts
    with _lock:
        clash = find_overlap(mount.path)
        if clash is not None:
            raise ValueError(f"mount overlap: new={mount.path} existing={clash.path}")
        _mounts = tuple(sorted(_mounts + (mount,), key=lambda m: len(m.path), reverse=True))


def remove_mount(path: str, patcher: Any) -> Mount:
    global _mounts
    with _lock:
        for m in _mounts:
            if m.path == path and m.patcher is patcher:
                _mounts = tuple(x for x in _mounts if x is not m)
                return m
    raise ValueError(f"not mounted by this patcher: {path}")


def remove_all(patcher: Any) -> None:
    global _mounts
    with _lock:
        _mounts = tuple(m for m in _mounts if m.patcher is not patcher)


def _as_str(path: Any) -> Optional[str]:
    if type(path) is str:
        return path
    if isinstance(path, (bytes, bytearray, int)) or path is None:
        return None
    if isinstance(path, os.PathLike):
        try:
            value = path.__fspath__()
        except Exception:
            return None
        return value if type(value) is str else None
    return None


def resolve(path: Any, dir_fd: Optional[int] = None) -> Optional[Target]:
    """The mount target for ``path``, or None if the original function must handle it."""
    candidates = _mounts
    if not candidates:
        return None
    s = _as_str(path)
    if s is None or not s or "\0" in s:
        return None
    if not s.startswith("/"):
        if dir_fd is not None:
            return None
        try:
            s_abs = posixpath.join(os.getcwd(), s)
        except OSError:
            return None
    else:
        s_abs = s
    norm = posixpath.normpath(s_abs)
    if norm.startswith("//"):
        norm = "/" + norm.lstrip("/")
    for m in candidates:
        if not m.patcher._routing_active:
            continue
        if norm == m.path:
            rel = ""
        elif norm.startswith(m.prefix):
            rel = norm[len(m.prefix):]
        else:
            continue
        trailing = s.endswith("/") or s.endswith("/.") or s == "."
        return Target(m, rel, path, norm, trailing)
    return None


def after_fork_in_child() -> None:
    global _lock
    _lock = threading.Lock()
