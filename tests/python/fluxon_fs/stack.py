"""The real fluxon-fs stack for the Python tests: ``fluxon-fs master`` and ``fluxon-fs agent``
as child processes, configured with the keys of ``crates/fluxon-fs/src/config``.

There is no stand-in: the tests need the ``fluxon-fs`` binary (``cargo build -p fluxon-fs``)
and the native extension ``fluxon_py._native`` (``maturin develop`` in ``crates/fluxon-py``);
``require_real_stack()`` fails the run with the command to type when either is missing.

The agent listens on a fixed port of its own, so a test can kill it (or stop it with
SIGSTOP) and start it again at the same address: clients find it again without remounting.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
FLUXON_FS_BIN = Path(os.environ.get("FLUXON_FS_BIN", TARGET / "debug" / "fluxon-fs"))


def require_real_stack() -> None:
    """Raises with what to run when the binary or the native extension is missing."""
    try:
        import fluxon_py._native  # noqa: F401
    except ImportError as e:
        raise RuntimeError(
            "the fluxon_fs tests need the native extension: run "
            "`(cd crates/fluxon-py && maturin develop)` in the project's .venv "
            f"(import failed: {e})") from e
    if not FLUXON_FS_BIN.exists():
        raise RuntimeError(
            f"the fluxon_fs tests need {FLUXON_FS_BIN}: run `cargo build -p fluxon-fs` "
            "(or set FLUXON_FS_BIN)")


def cache_yaml(exports: dict) -> str:
    lines = ["fluxon_fs:", "  cache:", "    exports:"]
    for name, root in exports.items():
        lines += [f"      {name}:", f"        remote_root_dir_abs: \"{root}\""]
    if not exports:
        lines[-1] = "    exports: {}"
    return "\n".join(lines) + "\n"


def master_yaml(instance_key: str) -> str:
    return f"fluxon_fs:\n  master:\n    instance_key: {instance_key}\n"


def free_port() -> int:
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
    """A master and one agent serving ``exports`` (name -> root directory)."""

    def __init__(self, workdir: Path, exports: dict, users: dict, scopes: list,
                 instance_key: str = "test_fs_master", pull_interval_ms: int = 300) -> None:
        import yaml

        require_real_stack()
        self.workdir = workdir
        self.exports = {n: Path(r) for n, r in exports.items()}
        for r in self.exports.values():
            r.mkdir(parents=True, exist_ok=True)
        self.instance_key = instance_key
        self.users = users
        self.master_addr = f"127.0.0.1:{free_port()}"
        self.agent_addr = f"127.0.0.1:{free_port()}"
        secret_file = workdir / "agent_join_secret"
        secret_file.write_text(secrets.token_hex(32) + "\n")
        secret_file.chmod(0o600)
        master_cfg = {"fluxon_fs": {
            "master": {"instance_key": instance_key, "pull_interval_ms": pull_interval_ms,
                       "agent_join_secret_file": str(secret_file)},
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
            "master": {"instance_key": instance_key},
            "agent": {"instance_key": "test_fs_agent", "listen_addr": self.agent_addr,
                      "master_addr": self.master_addr, "join_secret_file": str(secret_file)},
            "cache": {"exports": {n: {"remote_root_dir_abs": str(r)}
                                  for n, r in self.exports.items()}},
        }}
        (workdir / "master.yaml").write_text(yaml.safe_dump(master_cfg))
        (workdir / "agent.yaml").write_text(yaml.safe_dump(agent_cfg))
        self.procs: dict[str, subprocess.Popen] = {}
        self._logs = []
        self.start("master")
        self.start("agent")

    def start(self, role: str) -> None:
        """Starts the master or the agent and waits (bounded) until it serves."""
        log_path = self.workdir / f"{role}.log"
        log = open(log_path, "ab")
        self._logs.append(log)
        env = dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", "warn"))
        proc = subprocess.Popen(
            [str(FLUXON_FS_BIN), role, "-c", str(self.workdir / f"{role}.yaml")],
            stdout=log, stderr=subprocess.STDOUT, env=env)
        self.procs[role] = proc
        addr = self.master_addr if role == "master" else self.agent_addr
        _wait_port(addr, proc, 30, f"fluxon-fs {role}", log_path)
        if role == "agent":
            self.wait_exports(30)

    def kill(self, role: str) -> None:
        proc = self.procs.pop(role)
        proc.kill()
        proc.wait(timeout=30)

    def pause(self, role: str) -> None:
        """SIGSTOP, then waits (bounded) until the kernel reports the process stopped."""
        pid = self.procs[role].pid
        os.kill(pid, signal.SIGSTOP)
        deadline = time.monotonic() + 10
        while Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "T":
            if time.monotonic() > deadline:
                raise TimeoutError(f"{role} (pid {pid}) did not stop within 10 s")
            time.sleep(0.005)  # poll interval of a bounded wait

    def resume(self, role: str) -> None:
        os.kill(self.procs[role].pid, signal.SIGCONT)

    def log(self, role: str) -> str:
        return (self.workdir / f"{role}.log").read_text(errors="replace")

    def wait_exports(self, timeout: float) -> None:
        """Polls the master until every export is online (bounded)."""
        import fluxon_py._native as native

        admin = next(u for u, v in self.users.items() if v.get("can_manage_users"))
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            s = native.Session(self.master_addr, admin, self.users[admin]["password"], 5.0)
            last = s.exports()
            if set(self.exports) <= set(last):
                return
            time.sleep(0.05)  # poll interval of a bounded wait
        raise TimeoutError(f"exports {sorted(self.exports)} not online within {timeout} s "
                           f"(online: {last}); agent log:\n{self.log('agent')[-3000:]}")

    def cache_yaml(self) -> str:
        return cache_yaml(self.exports)

    def master_yaml(self) -> str:
        return master_yaml(self.instance_key)

    def env(self) -> dict:
        return dict(os.environ)

    def stop(self) -> None:
        for proc in self.procs.values():
            try:
                os.kill(proc.pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
            proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs.clear()
        for log in self._logs:
            log.close()
