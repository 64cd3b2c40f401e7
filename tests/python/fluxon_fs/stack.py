"""Test stacks for the fluxon_fs Python tests: one master + one agent serving exports.

``LocalStack``: the development stand-in (``local_native.py``) while the native extension is
not built: the "master" is a state file plus a TCP listener (so ``new_store``'s reachability
check has something to connect to).

``RealStack``: real ``fluxon-fs master`` and ``fluxon-fs agent`` processes. Configs use the
keys of ``crates/fluxon-fs/src/config``; the one address clients need is the master's client
endpoint (``master_addr``).
"""

from __future__ import annotations

import json
import os
import select
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
PY_SRC = ROOT / "crates" / "fluxon-py" / "python"
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
FLUXON_FS_BIN = Path(os.environ.get("FLUXON_FS_BIN", TARGET / "debug" / "fluxon-fs"))


def cache_yaml(exports: dict) -> str:
    lines = ["fluxon_fs:", "  cache:", "    exports:"]
    for name, root in exports.items():
        lines += [f"      {name}:", f"        remote_root_dir_abs: {json.dumps(str(root))}"]
    if not exports:
        lines[-1] = "    exports: {}"
    return "\n".join(lines) + "\n"


def master_yaml(instance_key: str) -> str:
    return f"fluxon_fs:\n  master:\n    instance_key: {instance_key}\n"


class _Listener:
    """Accepts and closes connections (the stand-in master's port)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self._stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self._stop:
            r, _, _ = select.select([self.sock], [], [], 0.2)
            if r:
                try:
                    conn, _ = self.sock.accept()
                    conn.close()
                except OSError:
                    return

    def close(self) -> None:
        self._stop = True
        self.thread.join(timeout=5)
        self.sock.close()


class LocalStack:
    kind = "local"

    def __init__(self, workdir: Path, exports: dict, users: dict, scopes: list,
                 instance_key: str = "test_fs_master") -> None:
        self.workdir = workdir
        self.exports = {n: Path(r) for n, r in exports.items()}
        for r in self.exports.values():
            r.mkdir(parents=True, exist_ok=True)
        self.instance_key = instance_key
        self.users = users
        self._listener = _Listener()
        self.master_addr = f"127.0.0.1:{self._listener.port}"
        self.state_dir = Path(os.environ.setdefault(
            "FLUXON_LOCAL_NATIVE_STATE_DIR", tempfile.mkdtemp(prefix="fluxon-standin-")))
        stage = workdir / "stage"
        stage.mkdir(parents=True, exist_ok=True)
        self._state = {
            "master_addr": self.master_addr, "instance_key": instance_key,
            "stage_dir": str(stage), "exports": {n: str(r) for n, r in self.exports.items()},
            "offline": [],
            "users": {u: {"password": v["password"],
                          "can_manage_users": v.get("can_manage_users", False)}
                      for u, v in users.items()},
            "scopes": scopes,
        }
        self._write()

    def _write(self) -> None:
        path = self.state_dir / (self.master_addr.replace(":", "_") + ".json")
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self._state))
        os.replace(tmp, path)

    def cache_yaml(self) -> str:
        return cache_yaml(self.exports)

    def master_yaml(self) -> str:
        return master_yaml(self.instance_key)

    def env(self) -> dict:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [str(HERE / "standin_site"), str(PY_SRC)] + [p for p in [env.get("PYTHONPATH")] if p])
        return env

    def stop(self) -> None:
        self._listener.close()
        (self.state_dir / (self.master_addr.replace(":", "_") + ".json")).unlink(missing_ok=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(addr: str, proc: subprocess.Popen, timeout: float, what: str, log: Path) -> None:
    host, port = addr.rsplit(":", 1)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
        try:
            with socket.create_connection((host, int(port)), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)  # poll interval of a bounded wait
    raise TimeoutError(f"{what} did not listen on {addr} within {timeout} s")


class RealStack:
    """``fluxon-fs master`` + ``fluxon-fs agent`` as child processes.

    ASSUMPTION for the lead to confirm when merging the Rust side: the master serves clients
    and agents on ``fluxon_fs.master_panel.listen_addr`` and agents find it through
    ``fluxon_fs.master.addr`` (adjust ``_master_cfg``/``_agent_cfg`` below if the keys
    differ). Everything else uses the keys of ``crates/fluxon-fs/src/config``.
    """

    kind = "real"

    def __init__(self, workdir: Path, exports: dict, users: dict, scopes: list,
                 instance_key: str = "test_fs_master") -> None:
        import yaml

        self.workdir = workdir
        self.exports = {n: Path(r) for n, r in exports.items()}
        for r in self.exports.values():
            r.mkdir(parents=True, exist_ok=True)
        self.instance_key = instance_key
        self.users = users
        self.master_addr = f"127.0.0.1:{_free_port()}"
        master_cfg = {"fluxon_fs": {
            "master": {"instance_key": instance_key},
            "master_panel": {
                "listen_addr": self.master_addr,
                "access_db_path": str(workdir / "access.redb"),
                "bootstrap_access_model": {
                    "users": [{"username": u, "password": v["password"],
                               "can_manage_users": v.get("can_manage_users", False)}
                              for u, v in users.items()],
                    "scope_access": scopes,
                },
            },
        }}
        agent_cfg = {"fluxon_fs": {
            "master": {"instance_key": instance_key, "addr": self.master_addr},
            "agent": {"instance_key": "test_fs_agent"},
            "cache": {"exports": {n: {"remote_root_dir_abs": str(r)}
                                  for n, r in self.exports.items()}},
        }}
        (workdir / "master.yaml").write_text(yaml.safe_dump(master_cfg))
        (workdir / "agent.yaml").write_text(yaml.safe_dump(agent_cfg))
        self.procs: list[subprocess.Popen] = []
        self._logs = []
        self._start("master")
        _wait_port(self.master_addr, self.procs[0], 30, "fluxon-fs master",
                   workdir / "master.log")
        self._start("agent")
        self._wait_exports(30)

    def _start(self, role: str) -> None:
        log = open(self.workdir / f"{role}.log", "wb")
        self._logs.append(log)
        env = dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", "warn"))
        self.procs.append(subprocess.Popen(
            [str(FLUXON_FS_BIN), role, "-c", str(self.workdir / f"{role}.yaml")],
            stdout=log, stderr=subprocess.STDOUT, env=env))

    def _wait_exports(self, timeout: float) -> None:
        import fluxon_py._native as native

        admin = next(u for u, v in self.users.items() if v.get("can_manage_users"))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            s = native.Session(self.master_addr, admin, self.users[admin]["password"], 5.0)
            if set(self.exports) <= set(s.exports()):
                return
            time.sleep(0.1)  # poll interval of a bounded wait
        raise TimeoutError(f"exports {sorted(self.exports)} not online within {timeout} s")

    def cache_yaml(self) -> str:
        return cache_yaml(self.exports)

    def master_yaml(self) -> str:
        return master_yaml(self.instance_key)

    def env(self) -> dict:
        return dict(os.environ)

    def stop(self) -> None:
        for p in reversed(self.procs):
            p.terminate()
        for p in reversed(self.procs):
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for log in self._logs:
            log.close()


def select_backend() -> str:
    """'real' when the native extension imports and the fluxon-fs binary is built (or
    FLUXON_FS_TEST_BACKEND=real), else 'local' (the development stand-in)."""
    forced = os.environ.get("FLUXON_FS_TEST_BACKEND")
    try:
        import fluxon_py._native as native  # noqa: F401
        have_native = not getattr(native, "__file__", "").endswith("local_native.py")
    except ImportError:
        have_native = False
    if forced == "local":
        return "local"
    if forced == "real":
        if not have_native or not FLUXON_FS_BIN.exists():
            raise RuntimeError(
                "FLUXON_FS_TEST_BACKEND=real needs fluxon_py._native (maturin develop) and "
                f"{FLUXON_FS_BIN}")
        return "real"
    return "real" if have_native and FLUXON_FS_BIN.exists() else "local"


def make_stack(kind: str, workdir: Path, exports: dict, users: dict, scopes: list):
    cls = RealStack if kind == "real" else LocalStack
    return cls(workdir, exports, users, scopes)
