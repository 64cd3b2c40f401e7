"""File objects for mounted paths: what the patched ``open()`` returns.

Arguments are validated by CPython's own ``io.open`` (called with an opener that stops before
any file is touched), so every argument error and warning is exactly the local one and the
``os.O_*`` flags are the ones a local open would use. Then:

- read-only opens of small files: the native side hands over a memfd holding the content, and
  the caller gets an ordinary file object over that fd (``fileno()``, ``mmap``,
  ``numpy.fromfile`` work); ``.name`` is still the mount path;
- everything else: :class:`RemoteRawIO` (a ``RawIOBase``), wrapped like ``io.open`` does in
  ``BufferedReader``/``BufferedWriter``/``BufferedRandom`` and ``TextIOWrapper``.

``RemoteRawIO`` keeps the position itself and uses positional native calls. ``readall()`` and
large reads fetch in large chunks (the native side adds readahead); ``fileno()`` raises
``io.UnsupportedOperation`` so ``shutil`` falls back from ``sendfile`` to a read/write loop.
Writes are published by the native side when the file is closed (close-to-open).
"""

from __future__ import annotations

import errno
import io
import os
import stat as _stat_mod
import threading
from typing import Any, Optional

from ._errors import oserror, reraise_with

__all__ = ["open_remote", "RemoteRawIO", "REMOTE_BUFFER_SIZE"]

REMOTE_BUFFER_SIZE = 1 << 20          # buffered layer size for remote files
READALL_CHUNK = 64 << 20               # largest single native read in readall()
_PASS_FLAGS = os.O_ACCMODE | os.O_CREAT | os.O_EXCL | os.O_TRUNC | os.O_APPEND


class _ArgsValid(Exception):
    """Raised by the validation opener: the arguments passed CPython's checks."""


def _validation_opener(_path: Any, flags: int) -> int:
    raise _ArgsValid(flags)


def _fileio_mode(flags: int) -> str:
    """``FileIO.mode`` for these open flags (CPython's spelling: 'rb', 'rb+', 'wb', 'xb' ...)."""
    acc = flags & os.O_ACCMODE
    readable = acc != os.O_WRONLY
    if flags & os.O_EXCL and flags & os.O_CREAT:
        return "xb+" if readable else "xb"
    if flags & os.O_APPEND:
        return "ab+" if readable else "ab"
    if readable:
        return "rb+" if acc == os.O_RDWR else "rb"
    return "wb"


class RemoteRawIO(io.RawIOBase):
    """Unbuffered binary file on a mount (what ``open(path, 'rb', buffering=0)`` returns)."""

    def __init__(self, native_file: Any, name: str, flags: int) -> None:
        super().__init__()
        self._f = native_file
        self.name = name
        self.mode = _fileio_mode(flags)
        acc = flags & os.O_ACCMODE
        self._readable = acc != os.O_WRONLY
        self._writable = acc != os.O_RDONLY
        self._append = bool(flags & os.O_APPEND)
        self._lock = threading.Lock()
        self._pos = self._f.size() if self._append else 0

    def __repr__(self) -> str:
        if self.closed:
            return "<fluxon_fs.RemoteRawIO [closed]>"
        return f"<fluxon_fs.RemoteRawIO name={self.name!r} mode={self.mode!r}>"

    # -- inquiries ---------------------------------------------------------------------------
    def readable(self) -> bool:
        self._checkClosed()
        return self._readable

    def writable(self) -> bool:
        self._checkClosed()
        return self._writable

    def seekable(self) -> bool:
        self._checkClosed()
        return True

    def isatty(self) -> bool:
        self._checkClosed()
        return False

    def fileno(self) -> int:
        raise io.UnsupportedOperation("fluxon_fs remote file does not provide fileno()")

    # -- reading -----------------------------------------------------------------------------
    def _check_readable(self) -> None:
        self._checkClosed()
        if not self._readable:
            raise io.UnsupportedOperation("File not open for reading")

    def _check_writable(self) -> None:
        self._checkClosed()
        if not self._writable:
            raise io.UnsupportedOperation("File not open for writing")

    def readinto(self, buffer: Any) -> int:
        self._check_readable()
        view = memoryview(buffer).cast("B")
        if not len(view):
            return 0
        with self._lock:
            n = self._f.readinto(self._pos, view)
            self._pos += n
            return n

    def read(self, size: Optional[int] = -1) -> bytes:
        self._check_readable()
        if size is None or size < 0:
            return self.readall()
        if size == 0:
            return b""
        with self._lock:
            data = self._f.pread(self._pos, size)
            self._pos += len(data)
            return data

    def readall(self) -> bytes:
        self._check_readable()
        with self._lock:
            parts = []
            remaining = max(self._f.size() - self._pos, 0)
            while True:
                want = min(max(remaining, 1 << 20), READALL_CHUNK)
                data = self._f.pread(self._pos, want)
                if not data:
                    break
                parts.append(data)
                self._pos += len(data)
                remaining -= len(data)
            if len(parts) == 1:
                return parts[0]
            return b"".join(parts)

    # -- writing -----------------------------------------------------------------------------
    def write(self, data: Any) -> int:
        self._check_writable()
        try:  # the native side copies once; no bytes() copy of a contiguous buffer here
            payload = data if type(data) is bytes else memoryview(data).cast("B")
        except TypeError:
            payload = bytes(data)
        if not len(payload):
            return 0
        with self._lock:
            if self._append:
                self._pos = self._f.append(payload)
                return len(payload)
            n = self._f.pwrite(self._pos, payload)
            self._pos += n
            return n

    def truncate(self, size: Optional[int] = None) -> int:
        self._check_writable()
        with self._lock:
            if size is None:
                size = self._pos
            size = size.__index__()
            if size < 0:
                raise oserror(errno.EINVAL)
            self._f.truncate(size)
            return size

    # -- positioning -------------------------------------------------------------------------
    def seek(self, pos: int, whence: int = os.SEEK_SET) -> int:
        self._checkClosed()
        pos = pos.__index__()
        with self._lock:
            if whence == os.SEEK_SET:
                new = pos
            elif whence == os.SEEK_CUR:
                new = self._pos + pos
            elif whence == os.SEEK_END:
                new = self._f.size() + pos
            else:
                raise oserror(errno.EINVAL)
            if new < 0:
                raise oserror(errno.EINVAL)
            self._pos = new
            return new

    def tell(self) -> int:
        self._checkClosed()
        return self._pos

    # -- flush / close -----------------------------------------------------------------------
    def flush(self) -> None:
        self._checkClosed()
        if self._writable:
            self._f.flush()

    def close(self) -> None:
        if self.closed:
            return
        try:
            super().close()
        finally:
            self._f.close()


def _set_name(obj: Any, name: str) -> None:
    raw = obj
    while True:
        nxt = getattr(raw, "buffer", None) or getattr(raw, "raw", None)
        if nxt is None:
            break
        raw = nxt
    try:
        raw.name = name
    except AttributeError:  # pragma: no cover - FileIO has a settable name
        pass


def open_remote(orig_open: Any, target: Any, file: Any, mode: str = "r", buffering: int = -1,
                encoding: Optional[str] = None, errors: Optional[str] = None,
                newline: Optional[str] = None, closefd: bool = True,
                opener: Any = None) -> Any:
    """``open()`` for a routed path. ``orig_open`` is the unpatched ``io.open``."""
    try:
        orig_open(target.abspath, mode, buffering, encoding, errors, newline, closefd,
                  _validation_opener)
    except _ArgsValid as ok:
        flags = ok.args[0]
    else:  # pragma: no cover - the opener always raises
        raise RuntimeError("io.open did not call the opener")
    if opener is not None:
        raise ValueError("fluxon_fs: open() with opener= is not supported on a mounted path")
    binary = "b" in mode
    name = os.fspath(file)
    session, export, rel = target.session, target.export, target.rel

    if target.trailing_slash or target.is_root:
        _check_trailing_slash(target, flags, name)

    native_flags = flags & _PASS_FLAGS
    try:
        f = session.open(export, rel, native_flags, 0o666)
    except OSError as e:
        reraise_with(e, name)

    acc = flags & os.O_ACCMODE
    if acc == os.O_RDONLY and not (flags & (os.O_CREAT | os.O_TRUNC)):
        try:
            fd = f.inline_fd()
        except BaseException:
            f.close()
            raise
        if fd is not None:
            try:
                f.close()
            except BaseException:
                os.close(fd)
                raise
            result = orig_open(fd, mode, buffering, encoding, errors, newline, True)
            _set_name(result, name)
            return result

    try:
        raw = RemoteRawIO(f, name, flags)
    except BaseException:
        f.close()
        raise
    result: Any = raw
    try:
        line_buffering = False
        if buffering == 1:
            buffering = -1
            line_buffering = True
        if buffering < 0:
            buffering = REMOTE_BUFFER_SIZE
        if buffering == 0:
            if binary:
                return raw
            # As io.open: the file was opened (and, for 'w', truncated) before this check.
            raise ValueError("can't have unbuffered text I/O")
        if acc == os.O_RDWR:
            buffer = io.BufferedRandom(raw, buffering)
        elif acc == os.O_WRONLY:
            buffer = io.BufferedWriter(raw, buffering)
        else:
            buffer = io.BufferedReader(raw, buffering)
        result = buffer
        if binary:
            return buffer
        text = io.TextIOWrapper(buffer, encoding, errors, newline, line_buffering)
        result = text
        text.mode = mode
        return text
    except BaseException:
        result.close()
        raise


def _check_trailing_slash(target: Any, flags: int, name: str) -> None:
    """Errors a local open gives for 'dir/' style paths and for the mount root."""
    try:
        st = target.session.stat(target.export, target.rel, True)
    except FileNotFoundError:
        if target.trailing_slash and flags & os.O_CREAT:
            raise oserror(errno.EISDIR, name) from None
        raise oserror(errno.ENOENT, name) from None
    except OSError as e:
        reraise_with(e, name)
    if _stat_mod.S_ISDIR(st[0]):
        if flags & os.O_CREAT and flags & os.O_EXCL:
            raise oserror(errno.EEXIST, name)
        raise oserror(errno.EISDIR, name)
    if target.trailing_slash:
        raise oserror(errno.ENOTDIR, name)
