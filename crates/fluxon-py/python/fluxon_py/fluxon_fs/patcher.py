"""``FluxonFsPatcher``: configuration, identity, install/uninstall and the mount table.

Call order (the seed's; each step checks the one before and says what to call first)::

    store = new_store(FluxonKvClientConfig(master_addr="host:port"))
    patcher = FluxonFsPatcher(store)
    patcher.set_master_config_yaml(master_yaml)   # fluxon_fs.master.instance_key
    patcher.set_cache_config_yaml(cache_yaml)     # fluxon_fs.cache: the export snapshot
    patcher.set_request_identity(username, password)   # logs in
    patcher.install()
    patcher.mount_remote_dir(local_mount_dir_abs="/abs/dir", export_name="demo-export")
    ...  open() / os / pathlib / shutil on /abs/dir/...
    patcher.unmount_remote_dir("/abs/dir")        # optional
    patcher.uninstall()
    store.close()

``with FluxonFsPatcher(store) as p:`` installs on enter and uninstalls on exit (the
configuration and identity calls must come before ``with``). ``install()`` is reference
counted per patcher. All state changes are serialised by one lock per patcher; routing reads an
immutable snapshot, so file operations from many threads never wait on it.
"""

from __future__ import annotations

import importlib
import os
import stat as _stat_mod
import sys
import threading
import weakref
from typing import Any, Optional

from ..config import FluxonKvClientConfig
from ..kvclient import KvStore
from . import _ospatch, _routing
from ._yamlcfg import CacheConfig, MasterConfig, parse_cache_yaml, parse_master_yaml

__all__ = ["FluxonFsPatcher", "install_patcher_from_master"]

CACHE_NOT_LOADED = "fluxon_fs cache config is not loaded yet"

_installed_lock = threading.Lock()
_installed: "set[FluxonFsPatcher]" = set()


def _native():
    """The native extension (imported on first use, so the pure-Python layer imports without
    it)."""
    return importlib.import_module("fluxon_py._native")


def _after_fork_in_child() -> None:
    """Runs in the child after ``os.fork()``: fresh locks (another thread may have held one at
    fork time) and a native client that reconnects lazily."""
    global _installed_lock
    _installed_lock = threading.Lock()
    _ospatch.after_fork_in_child()
    _routing.after_fork_in_child()
    for p in list(_patchers):
        p._lock = threading.RLock()
    native = sys.modules.get("fluxon_py._native")
    if native is not None:
        native.after_fork_in_child()


_patchers: "weakref.WeakSet[FluxonFsPatcher]" = weakref.WeakSet()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class FluxonFsPatcher:
    """Mounts remote exports into this process (see the module doc for the call order)."""

    def __init__(self, store: KvStore) -> None:
        if not isinstance(store, KvStore):
            raise TypeError(
                "FluxonFsPatcher(store) needs the store returned by "
                "fluxon_py.kvclient.new_store(cfg)")
        self._store = store
        self._cfg: FluxonKvClientConfig = store.config
        self._lock = threading.RLock()
        self._master: Optional[MasterConfig] = None
        self._cache: Optional[CacheConfig] = None
        self._session: Any = None
        self._username: Optional[str] = None
        self._install_count = 0
        self._routing_active = False
        store._attach(lambda: self._install_count > 0)
        _patchers.add(self)

    # -- configuration -----------------------------------------------------------------------
    def _check_store(self) -> None:
        if self._store.closed:
            raise RuntimeError("the store is closed; create a new one with new_store(cfg)")

    def set_master_config_yaml(self, yaml_text: str) -> None:
        """Sets ``fluxon_fs.master`` (``instance_key``, optional ``pull_interval_ms``).
        Unknown keys are errors naming the key."""
        master = parse_master_yaml(yaml_text)
        with self._lock:
            self._check_store()
            if self._session is not None and \
                    self._session.master_instance_key() != master.instance_key:
                raise ValueError(
                    f"fluxon_fs.master.instance_key mismatch: configured={master.instance_key} "
                    f"but the master at {self._cfg.master_addr} is "
                    f"{self._session.master_instance_key()}")
            self._master = master

    def set_cache_config_yaml(self, yaml_text: str) -> None:
        """Sets ``fluxon_fs.cache`` (the export snapshot). Unknown keys are errors naming the
        key; on any error the previous snapshot (if any) stays."""
        with self._lock:
            self._check_store()
            if self._master is None:
                raise RuntimeError(
                    "call set_master_config_yaml(...) before set_cache_config_yaml(...)")
        cache = parse_cache_yaml(yaml_text)
        with self._lock:
            self._cache = cache

    def set_request_identity(self, username: str, password: str) -> None:
        """Logs in as ``username`` at the master; later file operations use this identity.

        Raises ``PermissionError`` for bad credentials and ``TimeoutError`` if the master does
        not answer within ``request_timeout_secs``.
        """
        with self._lock:
            self._check_store()
            if self._master is None:
                raise RuntimeError(
                    "call set_master_config_yaml(...) before set_request_identity(...)")
            if self._cache is None:
                raise RuntimeError(
                    f"{CACHE_NOT_LOADED}: call set_cache_config_yaml(...) before "
                    "set_request_identity(...)")
            if not isinstance(username, str) or not username:
                raise ValueError("request_identity.username must be non-empty")
            if not isinstance(password, str) or not password:
                raise ValueError("request_identity.password must be non-empty")
            session = _native().Session(self._cfg.master_addr, username, password,
                                     float(self._cfg.request_timeout_secs))
            actual = session.master_instance_key()
            if actual != self._master.instance_key:
                raise ValueError(
                    f"fluxon_fs.master.instance_key mismatch: configured="
                    f"{self._master.instance_key} but the master at {self._cfg.master_addr} "
                    f"is {actual}")
            self._session = session
            self._username = username

    def clear_request_identity(self) -> None:
        """Forgets the identity. Refused while installed (mounted paths would have none)."""
        with self._lock:
            if self._install_count:
                raise RuntimeError("call uninstall() before clear_request_identity()")
            self._session = None
            self._username = None

    # -- install / uninstall -----------------------------------------------------------------
    def install(self) -> "FluxonFsPatcher":
        """Patches the file APIs (reference counted). Needs an identity."""
        with self._lock:
            self._check_store()
            if self._session is None:
                raise RuntimeError(
                    "call set_request_identity(username, password) before install()")
            self._install_count += 1
            if self._install_count == 1:
                with _installed_lock:
                    _installed.add(self)
                    _ospatch.install_layer()
                self._routing_active = True
        return self

    def uninstall(self) -> None:
        """Undoes one ``install()``; at zero this patcher's mounts stop routing and, when no
        patcher is installed any more, every patched attribute is restored."""
        with self._lock:
            if self._install_count == 0:
                raise RuntimeError("uninstall() without a matching install()")
            self._install_count -= 1
            if self._install_count == 0:
                self._routing_active = False
                with _installed_lock:
                    _installed.discard(self)
                    if not _installed:
                        _ospatch.uninstall_layer()

    @property
    def installed(self) -> bool:
        return self._install_count > 0

    def __enter__(self) -> "FluxonFsPatcher":
        return self.install()

    def __exit__(self, *exc: Any) -> None:
        self.uninstall()

    # -- mounts ------------------------------------------------------------------------------
    def mount_remote_dir(self, local_mount_dir_abs: Any = None, export_name: Any = None) -> str:
        """Mounts ``export_name`` at ``local_mount_dir_abs``; returns the normalised mount path.

        Rules, checked in this order: both arguments non-empty; the path is absolute; the
        cache config is loaded; the export is in it; the path is not ``/``; the patcher is
        installed; the master has the export online; if the directory exists it is a
        directory and empty; it does not overlap another mount of this process. A missing
        directory is created.
        """
        raw = os.fspath(local_mount_dir_abs) if isinstance(local_mount_dir_abs, os.PathLike) \
            else local_mount_dir_abs
        if not raw:
            raise ValueError("local_mount_dir_abs must be non-empty")
        if not export_name:
            raise ValueError("export_name must be non-empty")
        if not isinstance(raw, str):
            raise TypeError("local_mount_dir_abs must be a str or os.PathLike[str]")
        if not isinstance(export_name, str):
            raise TypeError("export_name must be a str")
        if not raw.startswith("/"):
            raise ValueError(f"local_mount_dir_abs must be absolute: {raw}")
        with self._lock:
            self._check_store()
            if self._cache is None:
                raise ValueError(
                    f"{CACHE_NOT_LOADED}: call set_cache_config_yaml(...) before "
                    "mount_remote_dir(...)")
            if export_name not in self._cache.exports:
                raise ValueError(f"unknown export_name: {export_name}")
            path = _routing.normalize(raw)
            if path == "/":
                raise ValueError("local_mount_dir_abs cannot be '/'")
            if not self._install_count:
                raise RuntimeError("call install() before mount_remote_dir(...)")
            online = self._session.exports()
            if export_name not in online:
                raise ValueError(
                    f"unknown export_name: {export_name} (the master at "
                    f"{self._cfg.master_addr} has no online agent serving it for user "
                    f"{self._username})")
            orig = _ospatch.ORIG
            exists = True
            try:
                st = orig["stat"](path)
            except FileNotFoundError:
                exists = False
            if exists:
                if not _stat_mod.S_ISDIR(st.st_mode):
                    raise ValueError(f"local_mount_dir_abs is not a directory: {path}")
                if orig["listdir"](path):
                    raise ValueError(
                        f"local_mount_dir_abs must be an empty directory: {path} "
                        "(refuse to shadow existing files)")
            clash = _routing.find_overlap(path)
            if clash is not None:
                raise ValueError(f"mount overlap: new={path} existing={clash.path}")
            if not exists:
                _makedirs_local(path)
            _routing.add_mount(_routing.Mount(path, export_name, self))
            return path

    def unmount_remote_dir(self, local_mount_dir_abs: Any) -> None:
        """Removes a mount made by this patcher. Files already open keep working; the
        (empty) local directory stays."""
        raw = os.fspath(local_mount_dir_abs)
        if not isinstance(raw, str) or not raw.startswith("/"):
            raise ValueError(f"local_mount_dir_abs must be absolute: {raw!r}")
        with self._lock:
            _routing.remove_mount(_routing.normalize(raw), self)

    def mounts(self) -> dict[str, str]:
        """``{local_mount_dir_abs: export_name}`` for this patcher."""
        return {m.path: m.export for m in _routing.mounts() if m.patcher is self}

    # -- used by the patch layer -------------------------------------------------------------
    def _session_for_io(self) -> Any:
        session = self._session
        if session is None:  # pragma: no cover - install() requires a session
            raise RuntimeError("call set_request_identity(username, password) first")
        return session

    def __repr__(self) -> str:
        return (f"<FluxonFsPatcher master_addr={self._cfg.master_addr!r} "
                f"user={self._username!r} installed={self._install_count} "
                f"mounts={self.mounts()}>")


def _makedirs_local(path: str) -> None:
    """``os.makedirs`` with the unpatched functions (the mount dir is a local directory)."""
    orig = _ospatch.ORIG
    parent = os.path.dirname(path)
    if parent and parent != path:
        try:
            orig["stat"](parent)
        except FileNotFoundError:
            _makedirs_local(parent)
    try:
        orig["mkdir"](path, 0o777)
    except FileExistsError:
        pass


def install_patcher_from_master(kv_store: KvStore, *, config_path: Optional[str] = None,
                                master_config_yaml: Optional[str] = None,
                                username: str, password: str) -> FluxonFsPatcher:
    """Builds, configures and installs a patcher whose export snapshot comes from the master.

    ``config_path`` is a YAML file containing ``fluxon_fs.master`` (other top-level keys, such
    as an example's own settings, are ignored); or pass ``master_config_yaml``. Logs in once to
    fetch the master's ``fluxon_fs.cache`` snapshot, then runs the normal call order.
    """
    if (config_path is None) == (master_config_yaml is None):
        raise ValueError("give exactly one of config_path= or master_config_yaml=")
    if config_path is not None:
        import yaml
        with open(config_path, encoding="utf-8") as f:
            doc = yaml.safe_load(f) or {}
        master = (doc.get("fluxon_fs") or {}).get("master") if isinstance(doc, dict) else None
        if master is None:
            raise ValueError(f"{config_path}: missing key `fluxon_fs.master`")
        master_config_yaml = yaml.safe_dump({"fluxon_fs": {"master": master}})
    patcher = FluxonFsPatcher(kv_store)
    patcher.set_master_config_yaml(master_config_yaml)
    cfg = kv_store.config
    probe = _native().Session(cfg.master_addr, username, password,
                              float(cfg.request_timeout_secs))
    patcher.set_cache_config_yaml(probe.cache_config_yaml())
    del probe
    patcher.set_request_identity(username, password)
    patcher.install()
    return patcher
