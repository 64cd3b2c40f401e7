"""Client configuration: :class:`FluxonKvClientConfig`.

It says where the fluxon-fs master is (``master_addr="host:port"``) and how long to wait for it
and for agents. The seed's KV-era fields (``cluster_name``, ``share_mem_path``, ``instance_key``,
``contribute_to_cluster_pool_size``) are accepted so that existing scripts keep working; this
product has no separate KV service, so they are informational, except that a non-zero pool
contribution is rejected as upstream did (fluxon-fs clients are always external clients).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional

__all__ = ["FluxonKvClientConfig"]

DEFAULT_TIMEOUT_SECS = 10.0


def _check_host_port(value: str) -> None:
    if not isinstance(value, str) or not value:
        raise ValueError("master_addr must be a non-empty 'host:port' string")
    host, sep, port = value.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    ok_port = port.isdigit() and 0 < int(port) < 65536
    ok_host = bool(host) and not any(c in host for c in "/ \t")
    if not (sep and ok_port and ok_host):
        raise ValueError(f"master_addr must be 'host:port', got {value!r}")


def _check_timeout(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number of seconds, got {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive finite number of seconds, got {value!r}")


@dataclasses.dataclass
class FluxonKvClientConfig:
    """Where the master is and how long to wait.

    ``master_addr``: ``host:port`` of the fluxon-fs master's client endpoint.
    ``connect_timeout_secs``: bound for reaching the master (``new_store``, login).
    ``request_timeout_secs``: bound for every request to the master or an agent; a peer that
    does not answer in time gives ``TimeoutError`` (never an endless retry).
    """

    master_addr: str = "127.0.0.1:34181"
    connect_timeout_secs: float = DEFAULT_TIMEOUT_SECS
    request_timeout_secs: float = DEFAULT_TIMEOUT_SECS
    # Seed (KV-era) fields, accepted for compatibility; see the module doc.
    cluster_name: Optional[str] = None
    share_mem_path: Optional[str] = None
    instance_key: Optional[str] = None
    contribute_to_cluster_pool_size: int = 0

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raises ``ValueError`` naming the field when a value is unusable."""
        _check_host_port(self.master_addr)
        _check_timeout("connect_timeout_secs", self.connect_timeout_secs)
        _check_timeout("request_timeout_secs", self.request_timeout_secs)
        for name in ("cluster_name", "share_mem_path", "instance_key"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise ValueError(f"{name} must be a string or None, got {value!r}")
        if self.contribute_to_cluster_pool_size != 0:
            raise ValueError(
                "fluxon_fs requires an external client (zero-contribution mode): "
                "contribute_to_cluster_pool_size must be 0"
            )

    @classmethod
    def from_dict(cls, data: dict, *, where: str = "kvclient") -> "FluxonKvClientConfig":
        """Builds a config from a mapping (e.g. the ``kvclient`` section of a YAML file);
        unknown keys are errors that name the key."""
        if not isinstance(data, dict):
            raise ValueError(f"{where} must be a mapping")
        names = {f.name for f in dataclasses.fields(cls)}
        for key in data:
            if key not in names:
                raise ValueError(f"unknown key `{where}.{key}`")
        return cls(**data)
