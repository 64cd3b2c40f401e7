"""Fixtures for the fluxon_fs Python tests.

Always the real stack: ``fluxon-fs master`` + ``agent`` processes and the native extension
``fluxon_py._native`` built with maturin. Without them the run fails (nothing is skipped).

- ``fs_stack``: one master + agent for the session, exports ``demo-export`` and ``second``,
  users ``admin`` (manager), ``reader`` (read on demo-export), ``writer`` (read_write on
  demo-export) and ``docs`` (read_write on demo-export prefix ``docs/``).
- ``store`` / ``admin_patcher``: a store and a configured patcher (admin identity, not
  installed) with ``demo-export`` mounted at ``mount_dir``.
- ``compare``: runs a scenario on a plain local directory (nothing installed) and then inside
  the mount (patcher installed) and requires identical traces.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from stack import RealStack, require_real_stack

require_real_stack()

from fluxon_py.config import FluxonKvClientConfig  # noqa: E402
from fluxon_py.kvclient import new_store  # noqa: E402

from trace_util import Trace  # noqa: E402

from fs_users import SCOPES, USERS, configured_patcher  # noqa: E402,F401

def pytest_report_header(config):
    import fluxon_py._native as native
    from stack import FLUXON_FS_BIN
    return f"fluxon_fs: {FLUXON_FS_BIN}, native extension {native.__file__}"


@pytest.fixture(scope="session")
def fs_stack(tmp_path_factory):
    work = tmp_path_factory.mktemp("fluxon-stack")
    stack = RealStack(work, {"demo-export": work / "export_root", "second": work / "export2"},
                      USERS, SCOPES)
    yield stack
    stack.stop()


@pytest.fixture(scope="session")
def store(fs_stack):
    s = new_store(FluxonKvClientConfig(master_addr=fs_stack.master_addr))
    yield s


@pytest.fixture(scope="session")
def mount_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("fluxon-mnt") / "demo"


@pytest.fixture(scope="session")
def admin_patcher(fs_stack, store, mount_dir):
    p = configured_patcher(fs_stack, store)
    with p:
        p.mount_remote_dir(local_mount_dir_abs=str(mount_dir), export_name="demo-export")
    yield p
    while p.installed:
        p.uninstall()


@pytest.fixture
def installed(admin_patcher, mount_dir, fs_stack):
    """The admin patcher installed for one test; yields a fresh directory inside the mount
    (and its path on the export root, for checks behind the mount's back)."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    admin_patcher.install()
    try:
        base = os.path.join(str(mount_dir), name)
        os.mkdir(base)
        yield base, fs_stack.exports["demo-export"] / name
        import shutil
        shutil.rmtree(base, ignore_errors=True)
    finally:
        admin_patcher.uninstall()


@pytest.fixture
def compare(admin_patcher, mount_dir, tmp_path):
    def run(scenario):
        local_base = tmp_path / "local"
        local_base.mkdir()
        assert not admin_patcher.installed
        t_local = Trace(str(local_base))
        scenario(str(local_base), t_local)
        name = f"c-{uuid.uuid4().hex[:10]}"
        admin_patcher.install()
        try:
            mount_base = os.path.join(str(mount_dir), name)
            os.mkdir(mount_base)
            t_mount = Trace(mount_base)
            try:
                scenario(mount_base, t_mount)
            finally:
                import shutil
                shutil.rmtree(mount_base, ignore_errors=True)
        finally:
            admin_patcher.uninstall()
        assert t_mount.events == t_local.events, t_mount.diff(t_local)
        return t_local
    return run


@pytest.fixture
def export_root(fs_stack) -> Path:
    return fs_stack.exports["demo-export"]
