"""A local shared-db cluster for the Python tests and the write benchmark: `shared-db
dev-cluster` in a temp dir on free ports, with helpers to read each node's `/status`, kill and
restart nodes from `nodes.json`, and connect to a node's MySQL port or, bypassing the operator,
to its managed engine. Every wait is bounded."""

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pymysql

from sdb_procs import SHARED_DB


def wait_for(what, predicate, timeout, interval=0.05):
    """Polls `predicate` until it returns a truthy value (returned) or `timeout` s pass."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout} s")
        time.sleep(interval)


class DevCluster:
    """`shared-db dev-cluster --nodes N` on free ports; nodes are 0-based here (node i is
    dev-cluster's node i + 1). `serve_args` go to every node's `shared-db serve`."""

    def __init__(self, nodes=3, serve_args=(), ready_timeout=300):
        self.dir = Path(tempfile.mkdtemp(prefix="sdb-cluster-"))
        self.data = self.dir / "d"
        self.count = nodes
        env = dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", "warn"))
        self.log_path = self.dir / "dev-cluster.log"
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [SHARED_DB, "dev-cluster", "--nodes", str(nodes), "--data-dir", str(self.data),
             "--mysql-port", "0", "--api-port", "0", "--ui-port", "0",
             "--start-timeout", str(ready_timeout), "--", *serve_args],
            stdout=self.log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        self.restarted = []
        self.pids = {}
        try:
            wait_for("dev-cluster ready", self._ready, ready_timeout + 10, 0.1)
            info = json.loads((self.data / "nodes.json").read_text())
            self.password = Path(info["client_password_file"]).read_text().strip()
            self.mysql_ports = [n["mysql_port"] for n in info["nodes"]]
            self.ui_ports = [n["ui_port"] for n in info["nodes"]]
            self.wait_formed(120)
        except BaseException:
            self.stop()
            raise

    def _ready(self):
        if self.proc.poll() is not None:
            raise RuntimeError(f"dev-cluster exited: {self.log_path.read_text()[-3000:]}")
        return "dev-cluster is ready" in self.log_path.read_text()

    # -- nodes.json and /status ---------------------------------------------------------
    def nodes(self):
        return json.loads((self.data / "nodes.json").read_text())["nodes"]

    def node(self, i):
        return self.nodes()[i]

    def status(self, i, timeout=2):
        url = f"http://127.0.0.1:{self.ui_ports[i]}/status"
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return json.loads(r.read())

    def try_status(self, i):
        try:
            return self.status(i)
        except (OSError, ValueError):
            return None

    def leader_index(self):
        for i in range(self.count):
            s = self.try_status(i)
            if s and s["node"].get("role") == "leader":
                return i
        return None

    def wait_leader(self, timeout=30, exclude=None):
        def find():
            if self.proc.poll() is not None:
                raise RuntimeError(f"dev-cluster exited; see {self.dir / 'dev-cluster.log'}")
            i = self.leader_index()
            return (i,) if i is not None and i != exclude else None
        return wait_for("a leader", find, timeout)[0]

    def wait_formed(self, timeout=60):
        """Waits until one node leads and every other one is a voting follower."""
        roles = []

        def formed():
            roles[:] = [(self.try_status(i) or {}).get("node", {}).get("role")
                        for i in range(self.count)]
            return sorted(roles) == ["follower"] * (self.count - 1) + ["leader"]
        try:
            wait_for("the cluster formed", formed, timeout, 0.1)
        except TimeoutError as e:
            raise TimeoutError(f"{e}; roles: {roles}") from None

    def applied(self, i):
        s = self.try_status(i)
        return None if s is None else (s.get("cluster") or {}).get("applied_index")

    def wait_converged(self, timeout=60, nodes=None):
        """Waits until every node in `nodes` has applied what the leader has committed."""
        nodes = range(self.count) if nodes is None else nodes

        def done():
            leader = self.leader_index()
            if leader is None:
                return False
            target = self.status(leader)["cluster"]["commit_index"]
            return all((self.applied(i) or -1) >= target for i in nodes)
        wait_for("all nodes applied the leader's commit index", done, timeout, 0.1)

    # -- processes ------------------------------------------------------------------
    def pid(self, i):
        """Node i's current pid (nodes.json has the first one; restarts are ours)."""
        return self.pids.get(i) or self.node(i)["pid"]

    def kill(self, i, sig=signal.SIGKILL):
        os.kill(self.pid(i), sig)
        if sig == signal.SIGKILL:
            wait_for(f"node {i + 1} gone", lambda: not self._alive(self.pid(i)), 30)

    def restart(self, i):
        """Starts node i again with the exact argv and env dev-cluster recorded."""
        node = self.node(i)
        log = open(self.dir / f"node{i + 1}-restart.log", "ab")
        proc = subprocess.Popen(node["argv"], env=node["env"], stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        self.restarted.append(proc)
        self.pids[i] = proc.pid
        return proc

    @staticmethod
    def _alive(pid):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        try:  # a zombie child of ours counts as gone
            with open(f"/proc/{pid}/stat") as f:
                return f.read().split(") ")[1][0] != "Z"
        except OSError:
            return False

    def stop(self):
        try:
            pids = [self.pid(i) for i in range(len(self.nodes()))]
        except (OSError, ValueError, KeyError):
            pids = []
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=90)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for p in self.restarted:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        for pid in pids:
            if self._alive(pid):
                try:
                    os.kill(pid, signal.SIGCONT)
                    os.kill(pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for pid in pids:
            try:
                wait_for("node exit", lambda pid=pid: not self._alive(pid), 60)
            except TimeoutError:
                os.kill(pid, signal.SIGKILL)
        self.log.close()
        # Three engines' data: hundreds of MB per cluster. Failing tests carry the logs in
        # their assertion messages; SDB_KEEP_TEST_DIRS=1 keeps everything for a closer look.
        if not os.environ.get("SDB_KEEP_TEST_DIRS"):
            shutil.rmtree(self.dir, ignore_errors=True)

    def logs(self):
        """The tail of every node's log, and of its log since a restart (for assertion
        messages)."""
        out = []
        for n in self.nodes():
            for name, path in ((f"node {n['id']}", Path(n["log"])),
                               (f"node {n['id']} since its restart",
                                self.dir / f"node{n['id']}-restart.log")):
                try:
                    out.append(f"--- {name}\n" + path.read_text(errors="replace")[-4000:])
                except OSError:
                    pass
        return "\n".join(out)

    def cluster_cli(self, *args, node=0, timeout=600):
        """`shared-db cluster <args> --node <node i's internal API>`, signed with the secret."""
        info = json.loads((self.data / "nodes.json").read_text())
        env = dict(os.environ, CLUSTER_SECRET_FILE=info["cluster_secret_file"])
        env.pop("CLUSTER_SECRET", None)
        api = f"127.0.0.1:{info['nodes'][node]['api_port']}"
        return subprocess.run([SHARED_DB, "cluster", *args, "--node", api], env=env,
                              capture_output=True, text=True, timeout=timeout)

    # -- clients --------------------------------------------------------------------
    def connect(self, i, **kw):
        args = dict(host="127.0.0.1", port=self.mysql_ports[i], user="root",
                    password=self.password, connect_timeout=10, read_timeout=30,
                    write_timeout=30, autocommit=True)
        args.update(kw)
        return pymysql.connect(**args)

    def _can_connect(self, i):
        try:
            self.connect(i, connect_timeout=2).close()
            return True
        except pymysql.MySQLError:
            return False

    def engine_connect(self, i, **kw):
        """Straight to node i's managed engine (bypassing the operator and the log)."""
        data_dir = Path(self.node(i)["data_dir"])
        engine_dir = data_dir / "engine"
        sock = engine_dir / "mysqld.sock"
        if not sock.exists():
            import hashlib
            h = hashlib.sha1(str(engine_dir).encode()).hexdigest()[:16]
            sock = Path(f"/tmp/shared-db-{h}/mysqld.sock")
        password = (engine_dir / "operator.secret").read_text().strip()
        return pymysql.connect(unix_socket=str(sock), user="root", password=password,
                               autocommit=True, connect_timeout=10, read_timeout=30, **kw)
