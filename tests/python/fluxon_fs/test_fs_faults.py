"""Faults with the real processes: an agent killed during reads (bounded error, then the
restarted agent is used again without remounting), a hung agent (TimeoutError within the
configured bound), an unreachable master (bounded error) and symlink escape attempts."""

from __future__ import annotations

import os
import threading
import time

import pytest

from fs_users import USERS
from stack import RealStack, free_port
from fluxon_py.config import FluxonKvClientConfig
from fluxon_py.fluxon_fs import FluxonFsPatcher
from fluxon_py.kvclient import new_store

BOUND = 2.0  # request_timeout_secs of these clients
EXPORT = "faults"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    work = tmp_path_factory.mktemp("fluxon-faults")
    s = RealStack(work, {EXPORT: work / "root"}, {"admin": USERS["admin"]}, [],
                  instance_key="faults_fs_master", pull_interval_ms=200)
    yield s
    s.stop()


@pytest.fixture
def mounted(stack, tmp_path):
    store = new_store(FluxonKvClientConfig(master_addr=stack.master_addr,
                                           request_timeout_secs=BOUND))
    p = FluxonFsPatcher(store)
    p.set_master_config_yaml(stack.master_yaml())
    p.set_cache_config_yaml(stack.cache_yaml())
    p.set_request_identity("admin", USERS["admin"]["password"])
    mnt = tmp_path / "mnt"
    with p:
        p.mount_remote_dir(local_mount_dir_abs=str(mnt), export_name=EXPORT)
        yield str(mnt), stack.exports[EXPORT]
    store.close()


def _ensure_agent(stack):
    if "agent" not in stack.procs:
        stack.start("agent")


def test_agent_killed_during_reads_then_used_again(stack, mounted):
    mnt, root = mounted
    data = os.urandom(24 << 20)
    (root / "big.bin").write_bytes(data)
    path = os.path.join(mnt, "big.bin")
    started = threading.Event()
    outcome: dict = {}

    def reader():
        try:
            with open(path, "rb", buffering=0) as f:
                while True:
                    chunk = f.read(1 << 20)
                    started.set()
                    if not chunk:
                        outcome["result"] = "eof"
                        return
                    time.sleep(0.02)  # a slow consumer, so the kill lands mid-file
        except (OSError, TimeoutError) as e:
            outcome["error"] = e
            outcome["at"] = time.monotonic()

    t = threading.Thread(target=reader)
    t.start()
    try:
        assert started.wait(10), "reader never got its first chunk"
        killed_at = time.monotonic()
        stack.kill("agent")
        t.join(BOUND + 10)
        assert not t.is_alive(), "read still blocked after the agent was killed"
        err = outcome.get("error")
        assert err is not None, f"read finished without an error: {outcome}"
        assert outcome["at"] - killed_at <= BOUND + 1.0
        assert "agent" in str(err), str(err)
        # While the agent is down, new operations fail within the bound too.
        t0 = time.monotonic()
        with pytest.raises((OSError, TimeoutError)):
            os.stat(path)
        assert time.monotonic() - t0 <= BOUND + 1.0
    finally:
        _ensure_agent(stack)
    # The restarted agent is used again through the same mount.
    with open(path, "rb") as f:
        assert f.read() == data
    with open(os.path.join(mnt, "after.txt"), "w") as f:
        f.write("after restart")
    assert (root / "after.txt").read_text() == "after restart"


def test_hung_agent_gives_timeout_within_the_bound(stack, mounted):
    mnt, root = mounted
    (root / "small.txt").write_text("x")
    path = os.path.join(mnt, "small.txt")
    assert os.path.getsize(path) == 1
    stack.pause("agent")
    try:
        t0 = time.monotonic()
        with pytest.raises(TimeoutError) as info:
            os.stat(path)
        took = time.monotonic() - t0
        assert BOUND - 0.5 <= took <= BOUND + 1.5, took
        assert "did not answer within" in str(info.value), str(info.value)
    finally:
        stack.resume("agent")
    assert open(path).read() == "x"


def test_default_bound_is_at_most_ten_seconds():
    assert FluxonKvClientConfig(master_addr="127.0.0.1:1").request_timeout_secs <= 10
    assert FluxonKvClientConfig(master_addr="127.0.0.1:1").connect_timeout_secs <= 10


def test_unreachable_master_is_a_bounded_error(stack, tmp_path):
    nobody = f"127.0.0.1:{free_port()}"
    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match="new_store failed"):
        new_store(FluxonKvClientConfig(master_addr=nobody, connect_timeout_secs=BOUND))
    assert time.monotonic() - t0 <= BOUND + 1.0
    # A master that stops answering (SIGSTOP): logging in gives TimeoutError within the bound.
    store = new_store(FluxonKvClientConfig(master_addr=stack.master_addr,
                                           request_timeout_secs=BOUND))
    p = FluxonFsPatcher(store)
    p.set_master_config_yaml(stack.master_yaml())
    p.set_cache_config_yaml(stack.cache_yaml())
    stack.pause("master")
    try:
        t0 = time.monotonic()
        with pytest.raises(TimeoutError):
            p.set_request_identity("admin", USERS["admin"]["password"])
        assert time.monotonic() - t0 <= BOUND + 1.5
    finally:
        stack.resume("master")
    store.close()


def test_mounted_export_keeps_working_while_the_master_is_down(stack, mounted):
    mnt, root = mounted
    stack.kill("master")
    try:
        with open(os.path.join(mnt, "no-master.txt"), "w") as f:
            f.write("agents serve without the master")
        assert open(os.path.join(mnt, "no-master.txt")).read() == \
            "agents serve without the master"
    finally:
        stack.start("master")
        stack.wait_exports(30)
    assert (root / "no-master.txt").exists()


def test_symlink_escape_attempts_fail(stack, mounted, tmp_path):
    mnt, root = mounted
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("outside")
    os.symlink(str(outside / "secret.txt"), root / "abs_link")
    os.symlink("../outside/secret.txt", root / "rel_link")
    os.symlink(str(outside), root / "dir_link")
    (root / "sub").mkdir(exist_ok=True)
    os.symlink("../../outside", root / "sub" / "up_link")
    for name in ("abs_link", "rel_link", "dir_link/secret.txt", "sub/up_link/secret.txt"):
        p = os.path.join(mnt, name)
        with pytest.raises(PermissionError):
            open(p).read()
        with pytest.raises(PermissionError):
            open(p, "w")
        with pytest.raises(PermissionError):
            os.stat(p)
    with pytest.raises(PermissionError):
        os.listdir(os.path.join(mnt, "dir_link"))
    with pytest.raises(PermissionError):
        os.rename(os.path.join(mnt, "dir_link", "secret.txt"), os.path.join(mnt, "x"))
    # The links themselves are visible (lstat) and readable (readlink), nothing more.
    assert os.path.islink(os.path.join(mnt, "abs_link"))
    assert os.readlink(os.path.join(mnt, "rel_link")) == "../outside/secret.txt"
    assert (outside / "secret.txt").read_text() == "outside"
    assert sorted(os.listdir(outside)) == ["secret.txt"]
