"""Smoke test of the native extension `fluxon_py._native` against the real `fluxon-fs up`
binary (master + agent): Session and File exactly as `_native.pyi` describes them, error
types, inline memfds, atomic staged writes, appends, fork, and the generated example_mount.py
(run when the pure-Python layer is installed)."""

import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

import fluxon_py._native as _native  # the real extension: built by `maturin develop`

ROOT = Path(__file__).resolve().parents[2]
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
FLUXON_FS = os.environ.get("FLUXON_FS_BIN", str(TARGET / "debug" / "fluxon-fs"))
EXPORT = "demo-export"


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Up:
    """`fluxon-fs up --workdir W` in a child process, stopped at the end."""

    def __init__(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.workdir = Path(self.tmp.name) / "w"
        self.master_port, self.agent_port = _free_port(), _free_port()
        self.log = open(Path(self.tmp.name) / "up.log", "wb")
        self.proc = subprocess.Popen(
            [FLUXON_FS, "up", "--workdir", str(self.workdir),
             "--master-port", str(self.master_port), "--agent-port", str(self.agent_port)],
            stdout=subprocess.PIPE, stderr=self.log)
        self._wait_ready(60)
        self.master_addr = f"127.0.0.1:{self.master_port}"
        self.password = (self.workdir / "fs_master" / "admin_password").read_text().strip()
        self.root = self.workdir / "remote_root"

    def _wait_ready(self, timeout):
        deadline = time.monotonic() + timeout
        out = b""
        while b"fluxon-fs up: ready" not in out:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"fluxon-fs up did not get ready: {out.decode()}")
            ready, _, _ = select.select([self.proc.stdout], [], [], left)
            if not ready:
                continue
            chunk = os.read(self.proc.stdout.fileno(), 65536)
            if not chunk:
                raise RuntimeError(f"fluxon-fs up exited ({self.proc.poll()}): {out.decode()}")
            out += chunk

    def session(self):
        deadline = time.monotonic() + 20
        while True:
            s = _native.Session(self.master_addr, "admin", self.password, 5.0)
            if EXPORT in s.exports():
                return s
            if time.monotonic() > deadline:
                raise TimeoutError("export never came online")
            time.sleep(0.05)

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()
        self.log.close()
        self.tmp.cleanup()


@pytest.fixture(scope="module")
def up():
    u = Up()
    yield u
    u.stop()


W = os.O_WRONLY | os.O_CREAT | os.O_TRUNC


def wait_child(pid: int, timeout: float = 30.0) -> int:
    """Exit code of child ``pid``; kills it and fails if it does not exit within ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise AssertionError(f"forked child did not exit within {timeout} s")
        time.sleep(0.01)  # poll interval of a bounded wait


def test_session_metadata_and_errors(up):
    s = up.session()
    assert s.master_instance_key() == "up_fs_master"
    assert EXPORT in s.cache_config_yaml()
    s.mkdir(EXPORT, "d", 0o755)
    with pytest.raises(FileExistsError):
        s.mkdir(EXPORT, "d")
    st = s.stat(EXPORT, "d")
    assert len(st) == 12 and (st[0] & 0o170000) == 0o040000
    with pytest.raises(FileNotFoundError) as info:
        s.stat(EXPORT, "d/missing")
    assert info.value.filename == "d/missing"
    with pytest.raises(PermissionError):
        s.stat(EXPORT, "../escape")
    with pytest.raises(PermissionError):
        _native.Session(up.master_addr, "admin", "wrong", 5.0)
    with pytest.raises(ValueError):
        _native.Session(up.master_addr, "admin", up.password, -1.0)
    assert s.listdir(EXPORT, "") == [("d", s.stat(EXPORT, "d", follow_symlinks=False))]
    s.rmdir(EXPORT, "d")


def test_files_inline_staged_append(up):
    s = up.session()
    f = s.open(EXPORT, "a.txt", W, 0o644)
    assert f.inline_fd() is None
    assert f.pwrite(0, b"hello ") == 6
    assert f.pwrite(6, memoryview(b"world")) == 5
    f.flush()
    assert not (up.root / "a.txt").exists()  # published atomically on close
    f.close()
    f.close()  # idempotent
    assert f.closed
    assert (up.root / "a.txt").read_bytes() == b"hello world"

    r = s.open(EXPORT, "a.txt", os.O_RDONLY)
    fd = r.inline_fd()
    assert fd is not None
    with os.fdopen(fd, "rb") as memfd:
        assert memfd.read() == b"hello world"
    assert r.pread(6, 100) == b"world"
    buf = bytearray(5)
    assert r.readinto(0, memoryview(buf)) == 5 and bytes(buf) == b"hello"
    assert r.size() == 11 and r.fstat()[6] == 11
    r.close()

    a = s.open(EXPORT, "a.txt", os.O_WRONLY | os.O_APPEND)
    assert a.append(b"!") == 12
    a.close()
    assert (up.root / "a.txt").read_bytes() == b"hello world!"
    with pytest.raises(FileExistsError):
        s.open(EXPORT, "a.txt", os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    with pytest.raises(IsADirectoryError):
        s.open(EXPORT, "", os.O_RDONLY)
    s.rename(EXPORT, "a.txt", "b.txt")
    s.truncate(EXPORT, "b.txt", 5)
    assert (up.root / "b.txt").read_bytes() == b"hello"
    s.unlink(EXPORT, "b.txt")


def test_large_read_streams(up):
    s = up.session()
    data = os.urandom(9 * 1024 * 1024 + 7)
    (up.root / "big.bin").write_bytes(data)
    f = s.open(EXPORT, "big.bin", os.O_RDONLY)
    assert f.inline_fd() is None
    assert f.pread(0, len(data) + 100) == data
    f.close()


def test_symlink_escape_is_refused(up):
    s = up.session()
    os.symlink("/etc", up.root / "etc_link")
    try:
        with pytest.raises(PermissionError):
            s.open(EXPORT, "etc_link/passwd", os.O_RDONLY)
        assert s.readlink(EXPORT, "etc_link") == "/etc"
    finally:
        os.unlink(up.root / "etc_link")


def test_fork_child_has_a_working_client(up):
    s = up.session()
    f = s.open(EXPORT, "forked.txt", W)
    f.pwrite(0, b"parent")
    f.close()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            _native.after_fork_in_child()
            g = s.open(EXPORT, "forked.txt", os.O_RDONLY)
            ok = g.pread(0, 100) == b"parent"
            g.close()
            h = s.open(EXPORT, "child.txt", W)
            h.pwrite(0, b"child")
            h.close()
            code = 0 if ok else 2
        finally:
            os._exit(code)
    assert wait_child(pid) == 0
    assert (up.root / "child.txt").read_bytes() == b"child"
    # The parent's client still works.
    assert s.stat(EXPORT, "child.txt")[6] == 5


def test_staged_write_through_a_symlink_replaces_the_target_atomically(up):
    s = up.session()
    (up.root / "sub").mkdir()
    (up.root / "sub" / "target.txt").write_bytes(b"old")
    os.symlink("sub/target.txt", up.root / "link.txt")
    f = s.open(EXPORT, "link.txt", W)
    f.pwrite(0, b"new content")
    f.flush()
    assert (up.root / "sub" / "target.txt").read_bytes() == b"old"  # not yet visible
    f.close()
    assert (up.root / "sub" / "target.txt").read_bytes() == b"new content"
    assert os.readlink(up.root / "link.txt") == "sub/target.txt"  # the link stays
    os.symlink("../../outside.txt", up.root / "sub" / "out_link")
    with pytest.raises(PermissionError):
        s.open(EXPORT, "sub/out_link", W)
    assert not (up.root.parent.parent / "outside.txt").exists()


def test_close_reports_a_failed_publish(up):
    s = up.session()
    (up.root / "gone").mkdir()
    f = s.open(EXPORT, "gone/x.txt", W)
    f.pwrite(0, b"data")
    f.flush()
    shutil.rmtree(up.root / "gone")  # takes a named staging file along, if there is one
    with pytest.raises(FileNotFoundError):
        f.close()
    assert not (up.root / "gone").exists()


def test_agent_join_secret_was_generated_and_is_private(up):
    secret = up.workdir / "fs_master" / "agent_join_secret"
    assert len(secret.read_text().strip()) >= 32
    assert secret.stat().st_mode & 0o077 == 0
    assert str(secret) in (up.workdir / "agent.yaml").read_text()


def test_example_mount_script(up):
    mount_dir = Path(up.tmp.name) / "mnt"
    out = subprocess.run([sys.executable, str(up.workdir / "example_mount.py"), str(mount_dir)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert (up.root / "hello_from_example_mount.txt").read_text() == "hello through fluxon-fs\n"
