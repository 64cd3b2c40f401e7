"""The shared-db processes the Python tests and benchmarks start: MariaDB through the `testkit`
CLI and the `shared-db` operator binary in front of it. Every wait is bounded. (A module of its
own, not `conftest`, so that any test file or benchmark can import it.)"""

import json
import os
import re
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
PROFILE = os.environ.get("SHARED_DB_TEST_PROFILE", "debug")
TESTKIT = os.environ.get("TESTKIT_BIN", str(TARGET / PROFILE / "testkit"))
SHARED_DB = os.environ.get("SHARED_DB_BIN", str(TARGET / PROFILE / "shared-db"))


def _read_line(proc, timeout, what):
    """One line of `proc`'s stdout within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    buf = b""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            break
        chunk = os.read(proc.stdout.fileno(), 1)
        if not chunk:
            raise RuntimeError(f"{what} exited (status {proc.poll()}) before printing")
        buf += chunk
        if chunk == b"\n":
            return buf.decode()
    raise TimeoutError(f"{what} printed nothing within {timeout} s")


class MariaDbServers:
    def __init__(self, count, extra_args=()):
        args = [TESTKIT, "--mariadb", str(count)]
        for a in extra_args:
            args += ["--mariadb-arg", a]
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.info = json.loads(_read_line(self.proc, 120, "testkit"))["mariadb"]

    def stop(self):
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class Operator:
    """A `shared-db serve` process in front of an external engine."""

    def __init__(self, engine, env=None):
        self.data_dir = tempfile.mkdtemp(prefix="sdb-py-")
        self.password = engine["password"]
        full_env = {
            "PATH": os.environ.get("PATH", ""),
            "RUST_LOG": "warn",
            "DATA_DIR": self.data_dir,
            "DB_COMPONENT_NAME": f"127.0.0.1:{engine['port']}",
            "DB_USER": "root",
            "DB_INIT_PASS": engine["password"],
            "EXT_DB_PORT": "0",
            "UI_PORT": "0",
            "BIND_ADDRESS": "127.0.0.1",
        }
        full_env.update(env or {})
        self.log = open(Path(self.data_dir) / "operator.log", "wb")
        self.proc = subprocess.Popen(
            [SHARED_DB, "serve"], stdout=subprocess.PIPE, stderr=self.log, env=full_env
        )
        text = ""
        while "Status:" not in text:
            text += _read_line(self.proc, 60, "shared-db")
        self.port = int(re.search(r"-P (\d+)", text).group(1))
        self.http_port = int(re.search(r"127\.0\.0\.1:(\d+)/status", text).group(1))

    def connect(self, **kw):
        import pymysql

        args = dict(host="127.0.0.1", port=self.port, user="root", password=self.password,
                    connect_timeout=10, read_timeout=60, write_timeout=60)
        args.update(kw)
        return pymysql.connect(**args)

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
        if not os.environ.get("SDB_KEEP_TEST_DIRS"):
            shutil.rmtree(self.data_dir, ignore_errors=True)
