"""Error helpers: native errors carry export-relative paths; users must see their own path.

``reraise_with(e, *filenames)`` rebuilds an ``OSError`` with the caller's path(s) so the
exception type (``FileNotFoundError``, ``PermissionError`` ...), ``errno`` and message stay and
``filename`` is what the caller passed, as for a local file.
"""

from __future__ import annotations

import errno as _errno
import os
from typing import Any, NoReturn

__all__ = ["reraise_with", "oserror"]


def oserror(code: int, *filenames: Any, message: str | None = None) -> OSError:
    return OSError(code, message or os.strerror(code), *filenames)


def reraise_with(e: BaseException, *filenames: Any) -> NoReturn:
    if isinstance(e, OSError) and e.errno is not None:
        raise OSError(e.errno, e.strerror or os.strerror(e.errno), *filenames) from None
    raise e


ENOTSUP = getattr(_errno, "EOPNOTSUPP", _errno.ENOTSUP)
