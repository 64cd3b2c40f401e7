"""Several processes on one export: close-to-open visibility, atomic replace (no torn reads),
appends from two writers, a forked child, and the permission model seen from Python."""

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fs_users import USERS, configured_patcher
from mp_worker import check, payload

WORKER = str(Path(__file__).with_name("mp_worker.py"))


def _thread_stacks(pid: int) -> str:
    """Every thread's stack of a hung process (for the failure message), if gdb is here."""
    gdb = shutil.which("gdb")
    if gdb is None:
        return "(no gdb to show where it hangs)"
    try:
        out = subprocess.run([gdb, "-p", str(pid), "-batch", "-ex", "thread apply all bt"],
                             capture_output=True, text=True, timeout=60)
        return out.stdout[-20000:]
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"(gdb failed: {e})"


def wait_child(pid: int, timeout: float = 30.0) -> int:
    """Exit code of child ``pid``; kills it and fails if it does not exit within ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            stacks = _thread_stacks(pid)
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise AssertionError(f"forked child did not exit within {timeout} s\n{stacks}")
        time.sleep(0.01)  # poll interval of a bounded wait


def _cfg(stack, tmp_path, name, **kw):
    cfg = {"master_addr": stack.master_addr, "master_yaml": stack.master_yaml(),
           "cache_yaml": stack.cache_yaml(), "user": "writer",
           "password": USERS["writer"]["password"], "export": "demo-export",
           "mount": str(tmp_path / f"mnt-{name}")}
    cfg.update(kw)
    return cfg


def _spawn(stack, cfg, stdin=False):
    return subprocess.Popen([sys.executable, WORKER, json.dumps(cfg)], env=stack.env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.PIPE if stdin else None)


def _finish(proc, timeout=120):
    if proc.stdin is not None and proc.stdin.closed:
        proc.stdin = None
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-3000:]
    lines = [json.loads(x) for x in out.splitlines() if x.strip()]
    return lines[-1]["result"], lines


def test_atomic_replace_no_torn_reads(fs_stack, tmp_path, export_root):
    rel = f"mp-{tmp_path.name}.bin"
    versions = 40
    common = dict(relpath=rel, versions=versions, sizes=[1000, 3 << 20, 200_000], secs=90)
    readers = [_spawn(fs_stack, _cfg(fs_stack, tmp_path, f"r{i}", role="replace_reader",
                                     **common)) for i in range(2)]
    writer = _spawn(fs_stack, _cfg(fs_stack, tmp_path, "w", role="replace_writer", **common))
    wres, _ = _finish(writer)
    assert wres == {"written": versions}
    for r in readers:
        res, _ = _finish(r)
        assert res["last"] == versions and res["reads"] >= 1
    assert check((export_root / rel).read_bytes()) == versions


def test_close_to_open_visibility(fs_stack, tmp_path, admin_patcher, mount_dir, export_root):
    rel = f"c2o-{tmp_path.name}.bin"
    (export_root / rel).write_bytes(payload(0, 100))
    reader = _spawn(fs_stack, _cfg(fs_stack, tmp_path, "r", role="read_after_signal",
                                   relpath=rel), stdin=True)
    with admin_patcher:
        path = os.path.join(mount_dir, rel)
        for v in range(1, 6):
            with open(path, "wb") as f:
                f.write(payload(v, 5000 * v))
            reader.stdin.write(f"{v}\n")
            reader.stdin.flush()
            line = json.loads(reader.stdout.readline())
            assert line == {"want": v, "got": v}
        # and a client's own mutations are visible to itself at once
        with open(path, "wb") as f:
            f.write(payload(99, 10))
        assert check(open(path, "rb").read()) == 99
    reader.stdin.close()
    _finish(reader)


def test_two_appenders_never_clobber(fs_stack, tmp_path, export_root):
    rel = f"app-{tmp_path.name}.log"
    procs = [_spawn(fs_stack, _cfg(fs_stack, tmp_path, tag, role="appender", relpath=rel,
                                   tag=tag, records=300)) for tag in ("A", "B")]
    for p in procs:
        _finish(p)
    lines = (export_root / rel).read_text().splitlines()
    assert sorted(lines) == sorted([f"{t}:{i:06d}" for t in "AB" for i in range(300)])


def test_fork_child_has_a_working_client(installed, export_root):
    base, on_export = installed
    p = os.path.join(base, "before-fork.txt")
    with open(p, "w") as f:
        f.write("parent")
    # Several forks, each while the parent's runtime threads are live: a fork taken while one
    # of them held process-wide state (parking_lot's table of parked threads did) breaks only
    # some children.
    for round_ in range(8):
        name = f"from-child-{round_}.txt"
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # child
            code = 1
            try:
                os.close(r)
                with open(p) as f:
                    assert f.read() == "parent"
                with open(os.path.join(base, name), "w") as f:
                    f.write("child")
                assert name in os.listdir(base)
                os.write(w, b"ok")
                code = 0
            except BaseException as e:  # report, never return into pytest in the child
                os.write(w, repr(e).encode()[:500])
            finally:
                os._exit(code)
        os.close(w)
        ready, _, _ = select.select([r], [], [], 30)
        msg = os.read(r, 1000) if ready else b"no answer from the child within 30 s"
        os.close(r)
        code = wait_child(pid)
        assert msg == b"ok" and code == 0, (round_, msg, code)
        assert (on_export / name).read_text() == "child"
        # The parent keeps using its own client between forks.
        with open(os.path.join(base, name)) as f:
            assert f.read() == "child"


@pytest.fixture
def perm_tree(export_root, tmp_path):
    top = export_root / f"perm-{tmp_path.name}"
    (export_root / "docs").mkdir(exist_ok=True)
    (export_root / "docs" / f"d-{tmp_path.name}.txt").write_text("doc")
    top.mkdir()
    (top / "secret.txt").write_text("secret")
    return top


def _as(user, fs_stack, store, tmp_path):
    p = configured_patcher(fs_stack, store, user)
    p.install()
    m = tmp_path / f"as-{user}"
    p.mount_remote_dir(local_mount_dir_abs=str(m), export_name="demo-export")
    return p, str(m)


def _release(p, m):
    p.unmount_remote_dir(m)
    p.uninstall()


def test_permissions_read_only_user(fs_stack, store, tmp_path, perm_tree):
    p, m = _as("reader", fs_stack, store, tmp_path)
    try:
        top = os.path.join(m, perm_tree.name)
        assert open(os.path.join(top, "secret.txt")).read() == "secret"
        assert os.listdir(top) == ["secret.txt"]
        for op in (lambda: open(os.path.join(top, "new.txt"), "w"),
                   lambda: open(os.path.join(top, "secret.txt"), "a"),
                   lambda: os.mkdir(os.path.join(top, "d")),
                   lambda: os.unlink(os.path.join(top, "secret.txt")),
                   lambda: os.rename(os.path.join(top, "secret.txt"), os.path.join(top, "x")),
                   lambda: os.chmod(os.path.join(top, "secret.txt"), 0o600),
                   lambda: os.truncate(os.path.join(top, "secret.txt"), 0)):
            with pytest.raises(PermissionError):
                op()
        assert not os.access(os.path.join(top, "secret.txt"), os.W_OK)
        assert os.access(os.path.join(top, "secret.txt"), os.R_OK)
        assert (perm_tree / "secret.txt").read_text() == "secret"
    finally:
        _release(p, m)


def test_permissions_prefix_scoped_user(fs_stack, store, tmp_path, perm_tree):
    p, m = _as("docs", fs_stack, store, tmp_path)
    try:
        assert os.listdir(m) == ["docs"]  # filtered: only the way to the scope
        name = f"d-{tmp_path.name}.txt"
        assert open(os.path.join(m, "docs", name)).read() == "doc"
        with open(os.path.join(m, "docs", f"w-{tmp_path.name}"), "w") as f:
            f.write("mine")
        with pytest.raises(PermissionError):
            open(os.path.join(m, perm_tree.name, "secret.txt"))
        with pytest.raises(PermissionError):
            open(os.path.join(m, f"top-{tmp_path.name}"), "w")
        assert not os.path.exists(os.path.join(m, perm_tree.name, "secret.txt"))
        with pytest.raises(PermissionError):
            os.rename(os.path.join(m, "docs", name), os.path.join(m, f"out-{tmp_path.name}"))
    finally:
        _release(p, m)


def test_permissions_read_write_and_manager(fs_stack, store, tmp_path, perm_tree):
    for user in ("writer", "admin"):
        p, m = _as(user, fs_stack, store, tmp_path)
        try:
            f = os.path.join(m, perm_tree.name, f"{user}.txt")
            with open(f, "w") as fh:
                fh.write(user)
            os.rename(f, f + ".2")
            assert open(f + ".2").read() == user
            os.unlink(f + ".2")
        finally:
            _release(p, m)


def test_paths_cannot_leave_the_export(installed, export_root, tmp_path):
    base, on_export = installed
    outside = tmp_path / "outside.txt"
    outside.write_text("outside")
    os.symlink(outside, on_export / "escape")
    with pytest.raises(PermissionError):
        open(os.path.join(base, "escape")).read()
    with pytest.raises(PermissionError):
        open(os.path.join(base, "escape"), "w")
    assert outside.read_text() == "outside"
