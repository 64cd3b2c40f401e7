#!/usr/bin/env python3
"""Read-path benchmark for shared-db (not a test).

Runs sysbench oltp_point_select and oltp_read_only at 1, 4 and 16 threads against one MariaDB
directly and through one shared-db operator in front of that same MariaDB, in the same run, and
prints QPS, p95 latency and the operator/direct ratio. A `socat` TCP relay (no protocol work at
all, one process per connection) runs in the same rounds as the floor any extra loopback hop
costs on this machine. Direct and operator runs alternate for
`--rounds` rounds and the medians are reported, because a small VM's throughput drifts by 10-20 %
between back-to-back runs.

    .venv/bin/python bench/shared_db_read.py [--time 10] [--rounds 3] [--tables 4] [--table-size 100000]

Builds the release binaries first. Uses the testkit CLI to start the MariaDB (buffer pool 1G,
binary log off) and stops everything at the end.
"""

import argparse
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "python"))
os.environ.setdefault("SHARED_DB_TEST_PROFILE", "release")
from sdb_procs import MariaDbServers, Operator  # noqa: E402  (shared process helpers)


def sysbench(test, port, pw, threads, seconds, tables, size, action="run"):
    args = [
        "sysbench", test, "--db-driver=mysql", "--mysql-host=127.0.0.1", f"--mysql-port={port}",
        "--mysql-user=root", f"--mysql-password={pw}", "--mysql-db=test_db",
        f"--tables={tables}", f"--table-size={size}", f"--threads={threads}",
        f"--time={seconds}", "--report-interval=0", "--histogram=off", action,
    ]
    out = subprocess.run(args, capture_output=True, text=True, timeout=seconds + 600)
    if out.returncode != 0:
        raise SystemExit(f"sysbench failed: {out.stdout}\n{out.stderr}")
    return out.stdout


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def parse(report):
    qps = float(re.search(r"queries:\s+\d+\s+\(([\d.]+) per sec", report).group(1))
    p95 = float(re.search(r"95th percentile:\s+([\d.]+)", report).group(1))
    return qps, p95


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--time", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--tables", type=int, default=4)
    ap.add_argument("--table-size", type=int, default=100_000)
    ap.add_argument("--threads", default="1,4,16")
    a = ap.parse_args()

    subprocess.run(["cargo", "build", "--release", "--locked", "-p", "shared-db", "-p", "testkit"],
                   cwd=ROOT, check=True)
    engines = MariaDbServers(1, ["--innodb-buffer-pool-size=1G", "--max-connections=1000"])
    engine = engines.info[0]
    # The operator reaches the engine through its Unix socket, as a managed engine is reached;
    # sysbench's baseline connects to the same engine over TCP, like any client.
    op = Operator(engine, {"RUST_LOG": "warn", "DB_COMPONENT_NAME": engine["socket"]})
    relay_port = free_port()
    relay = subprocess.Popen(
        ["socat", f"TCP-LISTEN:{relay_port},bind=127.0.0.1,fork,reuseaddr,nodelay",
         f"TCP:127.0.0.1:{engine['port']},nodelay"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        print(f"preparing {a.tables} x {a.table_size} rows ...", flush=True)
        sysbench("oltp_read_only", engine["port"], engine["password"], 4, 0, a.tables,
                 a.table_size, action="prepare")
        rows = []
        for test in ("oltp_point_select", "oltp_read_only"):
            for threads in [int(t) for t in a.threads.split(",")]:
                targets = (("direct", engine["port"]), ("operator", op.port), ("socat", relay_port))
                runs = {name: [] for name, _ in targets}
                for _ in range(a.rounds):
                    for name, port in targets:
                        runs[name].append(parse(sysbench(test, port, engine["password"], threads,
                                                         a.time, a.tables, a.table_size)))
                direct, through, socat = (
                    (statistics.median(q for q, _ in runs[n]), statistics.median(p for _, p in runs[n]))
                    for n, _ in targets
                )
                rows.append((test, threads, direct, through, socat))
                print(f"{test:18} {threads:>3} thr  direct {direct[0]:>8.0f} qps p95 {direct[1]:>6.2f} ms"
                      f"  operator {through[0]:>8.0f} qps p95 {through[1]:>6.2f} ms"
                      f"  ratio {through[0] / direct[0]:.2f}   socat ratio {socat[0] / direct[0]:.2f}",
                      flush=True)
        print()
        print("| workload | threads | direct QPS | direct p95 ms | operator QPS | operator p95 ms "
              "| **ratio** | socat relay QPS | socat ratio |")
        print("|---|---|---|---|---|---|---|---|---|")
        for test, threads, d, o, r in rows:
            print(f"| {test} | {threads} | {d[0]:.0f} | {d[1]:.2f} | {o[0]:.0f} | {o[1]:.2f} "
                  f"| **{o[0] / d[0]:.2f}** | {r[0]:.0f} | {r[0] / d[0]:.2f} |")
    finally:
        relay.terminate()
        relay.wait()
        op.stop()
        engines.stop()


if __name__ == "__main__":
    main()
