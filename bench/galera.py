"""A 3-node MariaDB Galera cluster on loopback, as a baseline for the write benchmark.

Not a test helper: it exists so `bench/shared_db_write.py` can compare the shared-db cluster
with the synchronous-replication cluster people would otherwise deploy, in the same run, on
the same machine.

Each node is a `mariadbd` with its own datadir, socket, MySQL port and Galera group port, all
on 127.0.0.1. To avoid a state transfer at start, node 1 is initialised and bootstrapped once,
stopped cleanly (so its `grastate.dat` records the cluster UUID and seqno), and its datadir is
copied to the other nodes; the copies then join with nothing to transfer.
"""

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

PROVIDER = "/usr/lib/galera/libgalera_smm.so"
ROOT_PASSWORD = "bench-root-pw"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise TimeoutError(f"{what} not ready within {timeout} s")


class GaleraNode:
    def __init__(self, base, index, buffer_pool):
        self.index = index
        self.dir = base / f"node{index}"
        self.datadir = self.dir / "data"
        self.socket = self.dir / "mysqld.sock"
        self.port = free_port()
        self.gcomm_port = free_port()
        self.buffer_pool = buffer_pool
        self.proc = None
        self.log = None

    def args(self, cluster_address, bootstrap):
        a = [
            "mariadbd", "--no-defaults", f"--datadir={self.datadir}", f"--socket={self.socket}",
            f"--port={self.port}", "--bind-address=127.0.0.1", f"--tmpdir={self.dir}",
            f"--pid-file={self.dir / 'mysqld.pid'}", f"--log-error={self.dir / 'error.log'}",
            f"--innodb-buffer-pool-size={self.buffer_pool}", "--max-connections=1000",
            "--skip-log-bin", "--binlog-format=ROW", "--default-storage-engine=InnoDB",
            "--innodb-autoinc-lock-mode=2", "--wsrep-on=ON", f"--wsrep-provider={PROVIDER}",
            "--wsrep-cluster-name=bench", f"--wsrep-cluster-address={cluster_address}",
            f"--wsrep-node-address=127.0.0.1:{self.gcomm_port}",
            f"--wsrep-node-name=node{self.index}", "--wsrep-sst-method=rsync",
            f"--wsrep-provider-options=gmcast.listen_addr=tcp://127.0.0.1:{self.gcomm_port};"
            f"ist.recv_addr=127.0.0.1:{free_port()};gcache.size=256M",
        ]
        if bootstrap:
            a.append("--wsrep-new-cluster")
        if os.geteuid() == 0:
            # As root, mariadbd runs as nobody so the rsync daemon it spawns for IST (which
            # would otherwise drop to nobody itself) can write into the datadir.
            a.append("--user=nobody")
        return a

    def start(self, cluster_address, bootstrap):
        self.log = open(self.dir / "stdout.log", "ab")
        self.proc = subprocess.Popen(self.args(cluster_address, bootstrap), stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)

    def cli(self, sql):
        return subprocess.run(
            ["mariadb", f"--socket={self.socket}", "-uroot", f"-p{ROOT_PASSWORD}", "-N", "-B",
             "-e", sql],
            capture_output=True, text=True, timeout=30)

    def synced(self):
        if self.proc.poll() is not None:
            raise RuntimeError(f"galera node{self.index} exited; see {self.dir / 'error.log'}")
        out = self.cli("SHOW STATUS LIKE 'wsrep_local_state_comment'")
        return out.returncode == 0 and "Synced" in out.stdout

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.log:
            self.log.close()


class GaleraCluster:
    """`GaleraCluster(3)` starts three synced nodes; `.ports` are their MySQL ports."""

    def __init__(self, nodes=3, buffer_pool="512M"):
        self.base = Path(tempfile.mkdtemp(prefix="galera-bench-"))
        # The rsync daemon that receives IST/SST drops privileges; it must reach the datadirs.
        self.base.chmod(0o755)
        self.nodes = [GaleraNode(self.base, i + 1, buffer_pool) for i in range(nodes)]
        try:
            self._start()
        except BaseException:
            for node in self.nodes:
                log = node.dir / "error.log"
                if log.exists():
                    tail = log.read_text(errors="replace").splitlines()[-60:]
                    print(f"--- galera node{node.index} error.log (tail)", *tail, sep="\n")
            self.stop()
            raise

    def _start(self):
        first = self.nodes[0]
        first.dir.mkdir(parents=True)
        if os.geteuid() == 0:
            subprocess.run(["chown", "-R", "nobody:nogroup", str(self.base)], check=True)
        subprocess.run(
            ["mariadb-install-db", "--no-defaults", f"--datadir={first.datadir}",
             "--auth-root-authentication-method=normal", "--skip-test-db"]
            + (["--user=nobody"] if os.geteuid() == 0 else []),
            check=True, capture_output=True, timeout=120)
        # One bootstrap to create the cluster state, then a clean stop records it.
        first.start("gcomm://", bootstrap=True)
        wait_for(lambda: self._root_setup(first), 120, "galera bootstrap node")
        first.stop()
        for node in self.nodes[1:]:
            shutil.copytree(first.dir, node.dir, ignore=shutil.ignore_patterns("*.sock", "*.pid"))
        if os.geteuid() == 0:
            subprocess.run(["chown", "-R", "nobody:nogroup", str(self.base)], check=True)
        members = ",".join(f"127.0.0.1:{n.gcomm_port}" for n in self.nodes)
        first.start(f"gcomm://{members}", bootstrap=True)
        join_timeout = int(os.environ.get("GALERA_JOIN_TIMEOUT", "180"))
        wait_for(first.synced, join_timeout, "galera node1")
        # The joiners catch up on the few configuration events since the copy by IST.
        for node in self.nodes[1:]:
            node.start(f"gcomm://{members}", bootstrap=False)
            wait_for(node.synced, join_timeout, f"galera node{node.index}")
        size = first.cli("SHOW STATUS LIKE 'wsrep_cluster_size'").stdout.split()
        if size[-1] != str(len(self.nodes)):
            raise RuntimeError(f"galera cluster size is {size}, expected {len(self.nodes)}")

    @staticmethod
    def _status(node, name):
        if node.proc.poll() is not None:
            raise RuntimeError(f"galera node{node.index} exited; see {node.dir / 'error.log'}")
        out = node.cli(f"SHOW STATUS LIKE '{name}'").stdout.split()
        return out[-1] if out else None

    @staticmethod
    def _root_setup(node):
        """Waits until the fresh node answers, then sets the root password once."""
        if node.proc.poll() is not None:
            raise RuntimeError(f"galera bootstrap exited; see {node.dir / 'error.log'}")

        def run(sql):
            return subprocess.run(["mariadb", f"--socket={node.socket}", "-uroot", "-e", sql],
                                  capture_output=True, text=True, timeout=30)

        if run("SELECT 1").returncode != 0:
            return False
        out = run(f"CREATE DATABASE test_db;"
                  f"CREATE OR REPLACE USER root@'127.0.0.1' IDENTIFIED BY '{ROOT_PASSWORD}';"
                  "GRANT ALL ON *.* TO root@'127.0.0.1' WITH GRANT OPTION;"
                  f"ALTER USER root@localhost IDENTIFIED BY '{ROOT_PASSWORD}';")
        if out.returncode != 0:
            raise RuntimeError(f"galera root setup failed: {out.stderr}")
        return True

    @property
    def ports(self):
        return [n.port for n in self.nodes]

    def stop(self):
        for node in reversed(self.nodes):
            node.stop()
        shutil.rmtree(self.base, ignore_errors=True)


if __name__ == "__main__":
    c = GaleraCluster(3)
    try:
        print("galera up on ports", c.ports)
        print(c.nodes[2].cli("SHOW STATUS LIKE 'wsrep_cluster_size'").stdout)
    finally:
        c.stop()
