#!/usr/bin/env python3
"""Write-path benchmark for a 3-node shared-db cluster (not a test).

In one run, on this machine:
- autocommit single-row INSERT latency (sysbench `oltp_insert`, 1 thread; p50 from the
  histogram, p99), autocommit INSERT throughput at 1 and 8 threads, and `oltp_write_only`
  TPS at 1 and 8 threads,
  against (a) one MariaDB directly, (b) a 3-node Galera cluster (Debian's galera-4) on
  loopback, (c) a 3-node shared-db cluster started with `shared-db dev-cluster`, through a
  follower (statements are forwarded to the leader) and through the leader; after each run the
  script waits until every node has applied everything and prints how long that took (the
  followers' apply lag the run left behind);
- failover: a writer inserts continuously through a follower while the leader is SIGKILLed,
  `--kills` times; reported is the time from the kill to the first acknowledged write after it,
  and the check that every acknowledged write is on every node afterwards.

    .venv/bin/python bench/shared_db_write.py [--time 10] [--kills 5] [--no-galera]

Builds the release binaries first.
"""

import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import pymysql

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "python"))
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("SHARED_DB_TEST_PROFILE", "release")
from sdb_procs import SHARED_DB, MariaDbServers  # noqa: E402
from galera import GaleraCluster  # noqa: E402
from shared_db_cluster import DevCluster, wait_for  # noqa: E402


def sysbench(test, port, pw, threads, seconds, action="run", extra=()):
    args = [
        "sysbench", test, "--db-driver=mysql", "--mysql-host=127.0.0.1", f"--mysql-port={port}",
        "--mysql-user=root", f"--mysql-password={pw}", "--mysql-db=test_db", "--tables=4",
        "--table-size=10000", f"--threads={threads}", f"--time={seconds}",
        "--report-interval=0", "--mysql-ignore-errors=1213,1205,1020",
        *extra, action,
    ]
    out = subprocess.run(args, capture_output=True, text=True, timeout=seconds + 600)
    if out.returncode != 0:
        raise SystemExit(f"sysbench failed: {out.stdout}\n{out.stderr}")
    return out.stdout


def histogram_percentile(report, pct):
    """Percentile (ms) from sysbench's `--histogram=on` table."""
    rows = []
    for line in report.splitlines():
        m = re.match(r"\s*([\d.]+)\s+\|\**\s+(\d+)\s*$", line)
        if m:
            rows.append((float(m.group(1)), int(m.group(2))))
    total = sum(c for _, c in rows)
    if total == 0:
        raise SystemExit("sysbench printed no histogram")
    seen = 0
    for value, count in rows:
        seen += count
        if seen >= total * pct / 100:
            return value
    return rows[-1][0]


def measure(name, port, pw, seconds, settle=None):
    """Write figures against one endpoint: INSERT p50/p99 ms and rate @1, INSERT rate @8,
    write_only TPS @1 and @8. `settle()` (a cluster) is called after each run: it waits until
    every node has applied everything and returns how long that took."""
    lag = []
    after = (lambda: lag.append(settle())) if settle else (lambda: None)
    conn = pymysql.connect(host="127.0.0.1", port=port, user="root", password=pw,
                           autocommit=True, connect_timeout=10)
    conn.cursor().execute("CREATE DATABASE IF NOT EXISTS test_db")
    conn.close()
    sysbench("oltp_write_only", port, pw, 4, 0, action="prepare")
    ins = sysbench("oltp_insert", port, pw, 1, seconds, extra=("--histogram=on",))
    after()
    r = {"p50": histogram_percentile(ins, 50), "p99": histogram_percentile(ins, 99)}
    rate = lambda out: float(re.search(r"queries:\s+\d+\s+\(([\d.]+) per sec", out).group(1))
    r["ins1"] = rate(ins)
    r["ins8"] = rate(sysbench("oltp_insert", port, pw, 8, seconds))
    after()
    for threads in (1, 8):
        out = sysbench("oltp_write_only", port, pw, threads, seconds)
        after()
        r[f"wo{threads}"] = float(
            re.search(r"transactions:\s+\d+\s+\(([\d.]+) per sec", out).group(1))
    sysbench("oltp_write_only", port, pw, 4, 0, action="cleanup")
    print(f"{name:18} insert p50 {r['p50']:6.2f} ms  p99 {r['p99']:6.2f} ms  "
          f"{r['ins1']:6.0f}/s @1 {r['ins8']:6.0f}/s @8   "
          f"write_only TPS @1 {r['wo1']:6.0f}  @8 {r['wo8']:6.0f}", flush=True)
    if lag:
        r["catch_up"] = lag
        print(f"{'':18} followers caught up {', '.join(f'{t:.1f}' for t in lag)} s after "
              "the INSERT @1, INSERT @8, write_only @1 and @8 runs", flush=True)
    return r


def failover(cluster, kills):
    """Kills the leader `kills` times under a steady writer; returns the recovery times."""
    conn_args = dict(host="127.0.0.1", user="root", password=cluster.password,
                     database="test_db", connect_timeout=5, read_timeout=10, write_timeout=10,
                     autocommit=True)
    setup = pymysql.connect(port=cluster.mysql_ports[0], **conn_args)
    setup.cursor().execute("CREATE TABLE IF NOT EXISTS failover (id BIGINT PRIMARY KEY, "
                           "at DOUBLE NOT NULL)")
    setup.close()
    # last_ok: when the last acknowledged write was sent and when it was acknowledged. A write
    # sent before a kill can still be acknowledged just after it (its answer was on the way):
    # recovery is measured to the first write sent after the kill.
    acked, stop, last_ok, errors = [], threading.Event(), [(0.0, 0.0)], []
    recoveries = []

    def writer():
        seq, conn = 0, None
        while not stop.is_set():
            try:
                if conn is None:
                    # Always through a live follower.
                    leader = cluster.leader_index()
                    live = [i for i in range(cluster.count)
                            if i != leader and cluster.try_status(i) is not None]
                    if leader is None or not live:
                        time.sleep(0.02)
                        continue
                    target = live[0]
                    conn = pymysql.connect(port=cluster.mysql_ports[target], **conn_args)
                seq += 1
                sent = time.monotonic()
                conn.cursor().execute("INSERT INTO failover VALUES (%s, %s)", (seq, time.time()))
                acked.append(seq)
                last_ok[0] = (sent, time.monotonic())
            except pymysql.MySQLError as e:
                errors.append((time.monotonic(), repr(e)[:160]))
                conn = None
                time.sleep(0.05)

    t = threading.Thread(target=writer)
    t.start()
    try:
        for _ in range(kills):
            time.sleep(2)
            leader = cluster.wait_leader(30)
            pid = cluster.pid(leader)
            killed_at = time.monotonic()
            os.kill(pid, signal.SIGKILL)
            deadline = killed_at + 30
            while last_ok[0][0] <= killed_at and time.monotonic() < deadline:
                time.sleep(0.01)
            sent, done = last_ok[0]
            recoveries.append(done - killed_at if sent > killed_at else float("inf"))
            if recoveries[-1] == float("inf"):
                seen = [f"{t - killed_at:+.1f}s {e}" for t, e in errors if t > killed_at - 1]
                print("  errors after the kill:", *seen[:3], "...", *seen[-3:], sep="\n    ")
            print(f"leader {leader + 1} killed: writes resumed after {recoveries[-1]:.2f} s",
                  flush=True)
            cluster.restart(leader)
    finally:
        stop.set()
        t.join()
    # Every acknowledged write must be on every node once they have caught up.
    for i in range(cluster.count):
        wait_for(f"node {i + 1} up", lambda i=i: cluster._can_connect(i), 180)
    missing = {}
    for i in range(cluster.count):
        deadline = time.monotonic() + 60
        while True:
            conn = pymysql.connect(port=cluster.mysql_ports[i], **conn_args)
            cur = conn.cursor()
            cur.execute("SELECT id FROM failover")
            present = {r[0] for r in cur.fetchall()}
            conn.close()
            lost = [s for s in acked if s not in present]
            if not lost or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        missing[i + 1] = len(lost)
    return recoveries, len(acked), missing


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--time", type=int, default=10)
    ap.add_argument("--kills", type=int, default=5)
    ap.add_argument("--no-galera", action="store_true")
    a = ap.parse_args()
    subprocess.run(["cargo", "build", "--release", "--locked", "-p", "shared-db", "-p", "testkit"],
                   cwd=ROOT, check=True)
    results = {}
    engines = MariaDbServers(1, ["--innodb-buffer-pool-size=512M", "--max-connections=1000"])
    try:
        e = engines.info[0]
        results["direct"] = measure("direct", e["port"], e["password"], a.time)
    finally:
        engines.stop()
    if not a.no_galera:
        galera = GaleraCluster(3)
        try:
            from galera import ROOT_PASSWORD
            results["galera"] = measure("galera", galera.ports[0], ROOT_PASSWORD, a.time)
        finally:
            galera.stop()
    cluster = DevCluster(3, serve_args=["--engine-buffer-pool", "512M"])
    try:
        leader = cluster.wait_leader(60)
        follower = (leader + 1) % cluster.count

        def settle():
            """Seconds until every node has applied as far as the leader."""
            start = time.monotonic()
            wait_for("every node applied everything", lambda: len(
                {cluster.status(i)["cluster"]["applied_index"] for i in range(cluster.count)})
                == 1, 300)
            return time.monotonic() - start

        results["shared-db (follower)"] = measure("shared-db (follower)",
                                                  cluster.mysql_ports[follower],
                                                  cluster.password, a.time, settle)
        results["shared-db (leader)"] = measure("shared-db (leader)",
                                                cluster.mysql_ports[leader],
                                                cluster.password, a.time, settle)
        recoveries, acked, missing = failover(cluster, a.kills)
    finally:
        cluster.stop()

    print()
    print("| system | INSERT p50 ms | INSERT p99 ms | inserts/s @1 | inserts/s @8 "
          "| write_only TPS @1 | write_only TPS @8 |")
    print("|---|---|---|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['p50']:.2f} | {r['p99']:.2f} | {r['ins1']:.0f} | {r['ins8']:.0f} "
              f"| {r['wo1']:.0f} | {r['wo8']:.0f} |")
    print()
    for base in ("direct", "galera"):
        if base not in results:
            continue
        b = results[base]
        for name in ("shared-db (follower)", "shared-db (leader)"):
            s = results[name]
            print(f"{name}/{base}: inserts/s @8 {s['ins8'] / b['ins8']:.2f}, "
                  f"write_only TPS @1 {s['wo1'] / b['wo1']:.2f}, @8 {s['wo8'] / b['wo8']:.2f}")
    print(f"failover over {len(recoveries)} leader kills: "
          f"median {statistics.median(recoveries):.2f} s, max {max(recoveries):.2f} s; "
          f"{acked} writes acknowledged, missing per node: {missing}")

if __name__ == "__main__":
    main()
