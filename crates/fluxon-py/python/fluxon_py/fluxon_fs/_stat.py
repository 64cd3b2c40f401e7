"""Stat results and directory entries for mounted paths.

``make_stat_result`` turns the native 12-tuple into a complete ``os.stat_result`` (integer
seconds in the first ten fields, float ``st_*time``, ``st_*time_ns``, ``st_blksize``,
``st_blocks``, ``st_rdev``), computed exactly as CPython does for a local file.
``MountDirEntry`` behaves like ``os.DirEntry`` and ``MountScandirIterator`` like the iterator
``os.scandir`` returns (iteration, ``with``, ``close()``).
"""

from __future__ import annotations

import os
import stat as _stat_mod
from typing import Any, Callable, Iterable, Optional

__all__ = ["make_stat_result", "MountDirEntry", "MountScandirIterator"]

_NS = 1_000_000_000


def make_stat_result(t: tuple) -> os.stat_result:
    (mode, ino, dev, nlink, uid, gid, size, atime_ns, mtime_ns, ctime_ns, blksize, blocks) = t
    extra = {"st_blksize": blksize, "st_blocks": blocks, "st_rdev": 0}
    ints = []
    for name, ns in (("atime", atime_ns), ("mtime", mtime_ns), ("ctime", ctime_ns)):
        sec, nsec = divmod(ns, _NS)
        ints.append(sec)
        extra[f"st_{name}"] = sec + nsec * 1e-9
        extra[f"st_{name}_ns"] = ns
    return os.stat_result((mode, ino, dev, nlink, uid, gid, size, *ints), extra)


class MountDirEntry:
    """An ``os.DirEntry`` look-alike for an entry of a mounted directory.

    ``lstat_tuple`` comes with the listing, so ``is_dir``/``is_file``/``is_symlink`` and
    ``stat(follow_symlinks=False)`` need no request; following a symlink costs one ``stat``.
    """

    __slots__ = ("name", "path", "_lstat", "_stat", "_stat_fn")

    def __init__(self, name: str, path: str, lstat_tuple: tuple,
                 stat_fn: Callable[[], tuple]) -> None:
        self.name = name
        self.path = path
        self._lstat = make_stat_result(lstat_tuple)
        self._stat: Optional[os.stat_result] = None
        self._stat_fn = stat_fn

    def __fspath__(self) -> str:
        return self.path

    def __repr__(self) -> str:
        return f"<DirEntry {self.name!r}>"

    def inode(self) -> int:
        return self._lstat.st_ino

    def is_symlink(self) -> bool:
        return _stat_mod.S_ISLNK(self._lstat.st_mode)

    def stat(self, *, follow_symlinks: bool = True) -> os.stat_result:
        if not follow_symlinks or not self.is_symlink():
            return self._lstat
        if self._stat is None:
            self._stat = make_stat_result(self._stat_fn())
        return self._stat

    def _mode(self, follow_symlinks: bool) -> Optional[int]:
        if follow_symlinks and self.is_symlink():
            try:
                return self.stat().st_mode
            except FileNotFoundError:
                return None
        return self._lstat.st_mode

    def is_dir(self, *, follow_symlinks: bool = True) -> bool:
        mode = self._mode(follow_symlinks)
        return mode is not None and _stat_mod.S_ISDIR(mode)

    def is_file(self, *, follow_symlinks: bool = True) -> bool:
        mode = self._mode(follow_symlinks)
        return mode is not None and _stat_mod.S_ISREG(mode)

    def __class_getitem__(cls, item: Any):  # os.DirEntry[str] works too
        return cls


class MountScandirIterator:
    """What ``os.scandir`` returns for a mounted directory."""

    def __init__(self, entries: Iterable[MountDirEntry]) -> None:
        self._it = iter(entries)
        self._closed = False

    def __iter__(self) -> "MountScandirIterator":
        return self

    def __next__(self) -> MountDirEntry:
        if self._closed:
            raise StopIteration
        return next(self._it)

    def close(self) -> None:
        self._closed = True
        self._it = iter(())

    def __enter__(self) -> "MountScandirIterator":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
