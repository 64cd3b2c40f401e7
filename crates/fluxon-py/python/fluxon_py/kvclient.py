"""``new_store(cfg)``: the store object a :class:`~fluxon_py.fluxon_fs.FluxonFsPatcher` sits on.

The store holds the client configuration and checks, within ``connect_timeout_secs``, that the
master answers on ``master_addr`` (a plain TCP connect: no credentials are needed yet; logging
in happens in ``FluxonFsPatcher.set_request_identity``). Failures raise
``RuntimeError("new_store failed: ...")`` with the cause.

Order of teardown, as in the seed: ``patcher.uninstall()`` first, then ``store.close()``;
closing a store whose patcher is still installed is refused.
"""

from __future__ import annotations

import socket
import threading
from typing import Callable

from .config import FluxonKvClientConfig

__all__ = ["KvStore", "new_store"]


class KvStore:
    """What ``new_store`` returns. Use ``close()`` (or ``with``) when done."""

    def __init__(self, cfg: FluxonKvClientConfig) -> None:
        self._cfg = cfg
        self._closed = False
        self._lock = threading.Lock()
        # Callables returning True while something built on this store is still installed.
        self._users: list[Callable[[], bool]] = []

    @property
    def config(self) -> FluxonKvClientConfig:
        return self._cfg

    @property
    def closed(self) -> bool:
        return self._closed

    def _attach(self, in_use: Callable[[], bool]) -> None:
        with self._lock:
            if self._closed:
                raise ValueError("the store is closed; create a new one with new_store(cfg)")
            self._users.append(in_use)

    def close(self) -> None:
        """Idempotent. Refused while a patcher on this store is installed."""
        with self._lock:
            if self._closed:
                return
            if any(in_use() for in_use in self._users):
                raise RuntimeError("call patcher.uninstall() before store.close()")
            self._closed = True

    def __enter__(self) -> "KvStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<KvStore master_addr={self._cfg.master_addr!r} {state}>"


def _probe(addr: str, timeout: float) -> None:
    host, _, port = addr.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    with socket.create_connection((host, int(port)), timeout=timeout):
        pass


def new_store(cfg: FluxonKvClientConfig) -> KvStore:
    """Checks ``cfg`` and that the master is reachable; returns a :class:`KvStore`.

    Raises ``RuntimeError("new_store failed: ...")`` (with the cause chained) if the config is
    invalid or the master does not accept a connection within ``cfg.connect_timeout_secs``.
    """
    if not isinstance(cfg, FluxonKvClientConfig):
        raise TypeError("new_store(cfg) needs a fluxon_py.config.FluxonKvClientConfig")
    try:
        cfg.validate()
    except ValueError as e:
        raise RuntimeError(f"new_store failed: {e}") from e
    try:
        _probe(cfg.master_addr, cfg.connect_timeout_secs)
    except OSError as e:
        raise RuntimeError(
            f"new_store failed: cannot reach the fluxon-fs master at {cfg.master_addr} "
            f"within {cfg.connect_timeout_secs:g} s: {e}"
        ) from e
    return KvStore(cfg)
