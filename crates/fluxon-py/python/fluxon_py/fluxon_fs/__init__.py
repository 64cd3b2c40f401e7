"""fluxon_fs: mount remote exports into this Python process.

See :class:`FluxonFsPatcher` for the call order and ``docs/fluxon-fs-python.md`` for what is
patched and the semantics.
"""

from .patcher import CACHE_NOT_LOADED, FluxonFsPatcher, install_patcher_from_master

__all__ = ["FluxonFsPatcher", "install_patcher_from_master", "CACHE_NOT_LOADED"]
