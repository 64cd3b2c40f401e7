"""fluxon_py: the Python client of fluxon-fs.

- :mod:`fluxon_py.config`: :class:`~fluxon_py.config.FluxonKvClientConfig`, where the master is
  and the timeouts.
- :mod:`fluxon_py.kvclient`: :func:`~fluxon_py.kvclient.new_store`, the store a patcher sits on.
- :mod:`fluxon_py.fluxon_fs`: :class:`~fluxon_py.fluxon_fs.FluxonFsPatcher`, which mounts remote
  exports into this process by patching ``open``, ``os``, ``os.path``, ``pathlib`` and
  ``shutil``.

The network client is the native extension ``fluxon_py._native`` (Rust); this package is the
pure-Python layer over it.
"""

__all__ = ["config", "kvclient", "fluxon_fs"]
