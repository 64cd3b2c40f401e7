"""An engine that comes back behind its node's Raft log, as after an OS crash with
`ENGINE_FSYNC=off` (the Raft-mode default: the engine does not fsync each commit, the log
does): the node must apply the lost entries again from the log, or install its local snapshot
first when the log was purged past them, and must never skip them.

The crash is made deterministic by stopping a follower, copying its engine's data directory,
letting it apply more, then killing it and putting the old copy back: its engine has lost
everything after the copy, exactly what a lost page cache does."""

import os
import shutil
import tempfile
import signal
from pathlib import Path

import pytest

from shared_db_cluster import DevCluster, wait_for


def rows(conn, sql, args=None):
    with conn.cursor() as cur:
        cur.execute(sql, args)
        return cur.fetchall()


def engine_running(datadir):
    """Some process (the node's mariadbd) has `datadir` on its command line."""
    needle = str(datadir).encode()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if needle in f.read():
                    return True
        except OSError:
            pass
    return False


class EngineRewind:
    """Keeps a copy of node i's engine data taken while the node was stopped, and puts it back
    after the node is killed."""

    def __init__(self, cluster, i):
        self.cluster, self.i = cluster, i
        self.datadir = Path(cluster.node(i)["data_dir"]) / "engine" / "data"
        self.copy = Path(tempfile.mkdtemp(prefix=f"engine-copy-{i}-", dir=cluster.dir)) / "data"

    def _down(self, sig):
        self.cluster.kill(self.i, sig)
        wait_for(f"node {self.i + 1} gone", lambda: not self.cluster._alive(self.cluster.pid(self.i)), 60)
        wait_for("its engine gone", lambda: not engine_running(self.datadir), 60)

    def _up(self):
        self.cluster.restart(self.i)
        wait_for("restarted node answers", lambda: self.cluster._can_connect(self.i), 120)

    def take(self):
        self._down(signal.SIGTERM)
        shutil.copytree(self.datadir, self.copy, symlinks=True)
        self._up()

    def crash_and_rewind(self):
        self._down(signal.SIGKILL)
        shutil.rmtree(self.datadir)
        shutil.copytree(self.copy, self.datadir, symlinks=True)
        self._up()


def restart_log(cluster, i):
    """What node i logged since the test harness restarted it."""
    return (cluster.dir / f"node{i + 1}-restart.log").read_text(errors="replace")


def contents(cluster, db, table):
    out = []
    for i in range(cluster.count):
        conn = cluster.connect(i, database=db)
        try:
            out.append((rows(conn, f"CHECKSUM TABLE {table}"),
                        rows(conn, f"SELECT * FROM {table} ORDER BY 1")))
        finally:
            conn.close()
    return out


def insert(cluster, node, db, keys):
    conn = cluster.connect(node, database=db)
    try:
        for k in keys:
            rows(conn, "INSERT INTO t VALUES (%s, %s)", (k, f"v{k}"))
    finally:
        conn.close()


def five_rows_everywhere(cluster, leader, db):
    """Creates `db`.t through the leader with rows 0-4 and waits until every node has them."""
    conn = cluster.connect(leader)
    rows(conn, f"CREATE DATABASE {db}")
    rows(conn, f"CREATE TABLE {db}.t (id INT PRIMARY KEY, v VARCHAR(20))")
    conn.close()
    insert(cluster, leader, db, range(5))
    cluster.wait_converged()


def same_rows_everywhere(cluster, db, n):
    """Waits for every node to apply the leader's log, then checks each holds the same `n`
    rows of `db`.t."""
    cluster.wait_converged(timeout=120)
    result = contents(cluster, db, "t")
    assert [len(r[1]) for r in result] == [n, n, n], cluster.logs()
    assert result[0] == result[1] == result[2]


@pytest.fixture(scope="module")
def cluster():
    # A snapshot every 60 entries, keeping 5 behind it: the first test stays below the first
    # snapshot, the second writes enough to purge the log past its copy.
    c = DevCluster(3, serve_args=["--snapshot-logs", "60", "--raft-keep-logs", "5"])
    yield c
    c.stop()


def test_lost_entries_still_in_the_log_are_applied_again(cluster):
    """Also a leader change after the lost writes: the blank entry the new leader appends is
    the last thing the node applied before its crash, and must not hide the writes before it."""
    leader = cluster.wait_leader()
    follower = (leader + 1) % 3
    five_rows_everywhere(cluster, leader, "rewind")
    rewind = EngineRewind(cluster, follower)
    rewind.take()
    # Few enough entries that the follower's log still holds them all after the copy point.
    insert(cluster, follower, "rewind", range(5, 12))
    cluster.wait_converged()
    cluster.kill(leader)
    cluster.wait_leader(exclude=leader)
    cluster.restart(leader)
    wait_for("old leader answers", lambda: cluster._can_connect(leader), 120)
    cluster.wait_converged(timeout=120)

    rewind.crash_and_rewind()
    same_rows_everywhere(cluster, "rewind", 12)
    assert "applying the missing entries again from the log" in restart_log(cluster, follower)


def test_lost_entries_the_log_no_longer_holds_come_from_the_local_snapshot(cluster):
    leader = cluster.wait_leader()
    follower = (leader + 2) % 3
    five_rows_everywhere(cluster, leader, "rewind2")
    rewind = EngineRewind(cluster, follower)
    rewind.take()
    # Enough entries for two snapshots or more, each purging the log behind it.
    insert(cluster, leader, "rewind2", range(5, 150))
    cluster.wait_converged()

    rewind.crash_and_rewind()
    same_rows_everywhere(cluster, "rewind2", 150)
    assert "installing the local snapshot" in restart_log(cluster, follower)
