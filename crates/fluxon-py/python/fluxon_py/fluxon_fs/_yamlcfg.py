"""Parsing and validation of the YAML strings the patcher takes.

``set_master_config_yaml`` takes ``fluxon_fs.master`` (``instance_key``, optional
``pull_interval_ms``); ``set_cache_config_yaml`` takes ``fluxon_fs.cache`` (the export
snapshot). The keys and checks are the same as the Rust parser's
(``crates/fluxon-fs/src/config``): unknown keys are errors naming the dotted key path.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Optional

try:
    import yaml as _yaml
except ImportError:  # pragma: no cover - PyYAML is a declared dependency
    _yaml = None

__all__ = ["MasterConfig", "CacheConfig", "ExportConfig", "parse_master_yaml", "parse_cache_yaml"]


@dataclasses.dataclass(frozen=True)
class MasterConfig:
    instance_key: str
    pull_interval_ms: Optional[int] = None


@dataclasses.dataclass(frozen=True)
class ExportConfig:
    name: str
    remote_root_dir_abs: str
    nodes: Optional[tuple[str, ...]] = None
    cache_max_bytes: Optional[int] = None
    inline_bytes_max_bytes: Optional[int] = None
    metadata_cache_ttl_ms: Optional[int] = None


@dataclasses.dataclass(frozen=True)
class CacheConfig:
    exports: dict  # name -> ExportConfig
    stale_window_ms: Optional[int] = None
    write_session_target_inflight_bytes: Optional[int] = None


def _load(text: Any, what: str) -> Any:
    if not isinstance(text, str):
        raise TypeError(f"{what} must be a YAML string, got {type(text).__name__}")
    if _yaml is None:
        raise RuntimeError("fluxon_py needs PyYAML to parse config YAML (pip install PyYAML)")
    try:
        return _yaml.safe_load(text)
    except _yaml.YAMLError as e:
        raise ValueError(f"{what}: invalid YAML: {e}") from None


def _mapping(value: Any, path: str, allowed: set[str]) -> dict:
    if not isinstance(value, dict):
        raise ValueError(f"`{path}` must be a mapping")
    for key in value:
        if key not in allowed:
            raise ValueError(f"unknown key `{path}.{key}`" if path else f"unknown key `{key}`")
    return value


def _required(mapping: dict, key: str, path: str) -> Any:
    if key not in mapping or mapping[key] is None:
        raise ValueError(f"missing key `{path}.{key}`")
    return mapping[key]


def _identifier(value: Any, path: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"`{path}` must be a non-empty string")
    if value.strip() != value:
        raise ValueError(f"`{path}` must not have leading or trailing whitespace")
    return value


def _positive(value: Any, path: str, *, allow_zero: bool = False) -> Optional[int]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"`{path}` must be an integer, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"`{path}` must be greater than 0" if not allow_zero
                         else f"`{path}` must not be negative")
    return value


def _export_name(name: Any, path: str) -> str:
    if not isinstance(name, str) or not name:
        raise ValueError(f"`{path}` must be a non-empty export name")
    if name in (".", ".."):
        raise ValueError(f"`{path}` must not be `.` or `..`")
    if any(c in "/\\" or c.isspace() or not c.isprintable() for c in name):
        raise ValueError(
            f"`{path}` must not contain `/`, `\\`, whitespace or control characters")
    return name


def parse_master_yaml(text: str) -> MasterConfig:
    """``fluxon_fs: {master: {instance_key, pull_interval_ms?}}``."""
    doc = _load(text, "master config")
    top = _mapping(doc, "", {"fluxon_fs"})
    if "fluxon_fs" not in top:
        raise ValueError("missing key `fluxon_fs`")
    fs = _mapping(top["fluxon_fs"], "fluxon_fs", {"master"})
    master = _mapping(_required(fs, "master", "fluxon_fs"), "fluxon_fs.master",
                      {"instance_key", "pull_interval_ms"})
    key = _identifier(_required(master, "instance_key", "fluxon_fs.master"),
                      "fluxon_fs.master.instance_key")
    pull = _positive(master.get("pull_interval_ms"), "fluxon_fs.master.pull_interval_ms")
    return MasterConfig(instance_key=key, pull_interval_ms=pull)


_EXPORT_KEYS = {"remote_root_dir_abs", "nodes", "cache_max_bytes", "inline_bytes_max_bytes",
                "metadata_cache_ttl_ms"}


def _parse_export(name: str, value: Any, path: str) -> ExportConfig:
    exp = _mapping(value, path, _EXPORT_KEYS)
    root = _required(exp, "remote_root_dir_abs", path)
    if not isinstance(root, str) or not os.path.isabs(root):
        raise ValueError(f"`{path}.remote_root_dir_abs` must be an absolute path")
    if ".." in root.split("/"):
        raise ValueError(f"`{path}.remote_root_dir_abs` must not contain `..`")
    nodes = exp.get("nodes")
    if nodes is not None:
        if not isinstance(nodes, list) or not nodes:
            raise ValueError(
                f"`{path}.nodes` must list at least one agent instance key (or be omitted)")
        seen = set()
        for i, node in enumerate(nodes):
            _identifier(node, f"{path}.nodes[{i}]")
            if node in seen:
                raise ValueError(f"`{path}.nodes[{i}]` duplicates `{node}`")
            seen.add(node)
        nodes = tuple(nodes)
    return ExportConfig(
        name=name,
        remote_root_dir_abs=root,
        nodes=nodes,
        cache_max_bytes=_positive(exp.get("cache_max_bytes"), f"{path}.cache_max_bytes"),
        inline_bytes_max_bytes=_positive(exp.get("inline_bytes_max_bytes"),
                                         f"{path}.inline_bytes_max_bytes"),
        metadata_cache_ttl_ms=_positive(exp.get("metadata_cache_ttl_ms"),
                                        f"{path}.metadata_cache_ttl_ms", allow_zero=True),
    )


def parse_cache_yaml(text: str) -> CacheConfig:
    """``fluxon_fs: {cache: {exports: {...}, stale_window_ms?, ...}}``."""
    doc = _load(text, "cache config")
    top = _mapping(doc, "", {"fluxon_fs"})
    if "fluxon_fs" not in top:
        raise ValueError("missing key `fluxon_fs`")
    fs = _mapping(top["fluxon_fs"], "fluxon_fs", {"cache"})
    cache = _mapping(_required(fs, "cache", "fluxon_fs"), "fluxon_fs.cache",
                     {"exports", "stale_window_ms", "write_session_target_inflight_bytes"})
    raw_exports = cache.get("exports") or {}
    if not isinstance(raw_exports, dict):
        raise ValueError("`fluxon_fs.cache.exports` must be a mapping")
    exports = {}
    for name, value in raw_exports.items():
        path = f"fluxon_fs.cache.exports.{name}"
        _export_name(name, path)
        exports[name] = _parse_export(name, value, path)
    return CacheConfig(
        exports=exports,
        stale_window_ms=_positive(cache.get("stale_window_ms"), "fluxon_fs.cache.stale_window_ms"),
        write_session_target_inflight_bytes=_positive(
            cache.get("write_session_target_inflight_bytes"),
            "fluxon_fs.cache.write_session_target_inflight_bytes"),
    )
