#!/usr/bin/env python3
"""Data-path benchmark for fluxon-fs (not a test).

Starts `fluxon-fs up --workdir W` (a master and an agent exporting `W/remote_root` on this
machine), mounts the export in this process through `W/example_mount.py`, and runs the same
operations on a local directory and through the mount, in the same run:

- 4 KiB open+read+close: p50/p99 over distinct files never opened before ("fresh"), and over
  files this process already read and that did not change ("unchanged");
- 4 KiB create+write+close: p50/p99;
- 1 GiB sequential write and read (GB/s), 4 MiB application buffers; a raw loopback TCP
  stream in the same run is the transport's ceiling;
- `os.walk` over 10k files (seconds).

    .venv/bin/python bench/fluxon_fs_io.py [--small-files 2000] [--big-mib 1024] [--walk-files 10000]

Builds the release binary and installs the Python extension in release mode into the running
interpreter's environment (`maturin develop --release`) first; `--no-build` skips both.

The mount fsyncs every written file on close (durability); the local figures do not, so a
"local + fsync" write figure is printed as well for comparison.
"""

import argparse
import importlib.util
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))


def percentiles(samples):
    s = sorted(samples)
    return s[len(s) // 2] * 1e6, s[min(len(s) - 1, int(len(s) * 0.99))] * 1e6


def small_reads(base, count):
    """(fresh p50/p99 µs, unchanged p50/p99 µs) for 4 KiB open+read+close."""
    d = Path(base) / "small"
    fresh, again = [], []
    for i in range(count):
        t = time.perf_counter()
        with open(d / f"f{i}", "rb") as f:
            f.read()
        fresh.append(time.perf_counter() - t)
    for i in range(count):
        t = time.perf_counter()
        with open(d / f"f{i}", "rb") as f:
            f.read()
        again.append(time.perf_counter() - t)
    return percentiles(fresh), percentiles(again)


def make_small_files(on_disk, count):
    """The read set, written straight to disk (never through the mount, so reads are fresh)."""
    d = Path(on_disk) / "small"
    d.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        (d / f"f{i}").write_bytes(os.urandom(4096))


def small_writes(base, count, fsync=False, name="written"):
    d = Path(base) / name
    os.makedirs(d, exist_ok=True)
    payload = os.urandom(4096)
    samples = []
    for i in range(count):
        t = time.perf_counter()
        with open(d / f"f{i}", "wb") as f:
            f.write(payload)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        samples.append(time.perf_counter() - t)
    return percentiles(samples)


def big_write_read(base, mib, fsync=False):
    path = Path(base) / "big.bin"
    block = os.urandom(4 << 20)
    t = time.perf_counter()
    with open(path, "wb") as f:
        for _ in range(mib // 4):
            f.write(block)
        if fsync:
            f.flush()
            os.fsync(f.fileno())
    write_gbs = mib * (1 << 20) / (time.perf_counter() - t) / 1e9
    t = time.perf_counter()
    total = 0
    with open(path, "rb", buffering=0) as f:
        buf = bytearray(4 << 20)
        while True:
            n = f.readinto(buf)
            if not n:
                break
            total += n
    read_gbs = total / (time.perf_counter() - t) / 1e9
    os.unlink(path)
    return write_gbs, read_gbs


def walk(base, files):
    d = Path(base) / "tree"
    per_dir = 100
    for i in range(files):
        sub = d / f"d{i // per_dir}"
        if i % per_dir == 0:
            os.makedirs(sub, exist_ok=True)
        with open(sub / f"f{i}", "wb") as f:
            f.write(b"x")
    t = time.perf_counter()
    seen = sum(len(fs) for _, _, fs in os.walk(d))
    elapsed = time.perf_counter() - t
    if seen != files:
        raise SystemExit(f"os.walk saw {seen} files, expected {files}")
    return elapsed


def loopback_tcp_gbs(mib):
    """One TCP stream over loopback with 4 MiB sends: the transport ceiling."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    received = [0]

    def sink():
        conn, _ = srv.accept()
        buf = bytearray(4 << 20)
        while True:
            n = conn.recv_into(buf)
            if not n:
                break
            received[0] += n
        conn.close()

    t = threading.Thread(target=sink)
    t.start()
    c = socket.create_connection(srv.getsockname())
    block = os.urandom(4 << 20)
    start = time.perf_counter()
    for _ in range(mib // 4):
        c.sendall(block)
    c.close()
    t.join()
    srv.close()
    return received[0] / (time.perf_counter() - start) / 1e9


def run_suite(base, on_disk, a, local=False):
    make_small_files(on_disk, a.small_files)
    w = small_writes(base, a.small_files)
    fresh, again = small_reads(base, a.small_files)
    bw, br = big_write_read(base, a.big_mib)
    wk = walk(base, a.walk_files)
    out = {"read_fresh": fresh, "read_again": again, "write": w, "big_write": bw,
           "big_read": br, "walk": wk}
    if local:
        out["write_fsync"] = small_writes(base, a.small_files, fsync=True, name="synced")
        out["big_write_fsync"] = big_write_read(base, a.big_mib, fsync=True)[0]
    return out


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_stack(workdir):
    binary = TARGET / "release" / "fluxon-fs"
    log = open(workdir / "up.log", "wb")
    proc = subprocess.Popen([str(binary), "up", "--workdir", str(workdir),
                             "--master-port", str(free_port()),
                             "--agent-port", str(free_port())], stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    script = workdir / "example_mount.py"
    deadline = time.monotonic() + 60
    while not script.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"fluxon-fs up did not start; see {workdir / 'up.log'}")
        time.sleep(0.1)
    spec = importlib.util.spec_from_file_location("example_mount", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return proc, module


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--small-files", type=int, default=2000)
    ap.add_argument("--big-mib", type=int, default=1024)
    ap.add_argument("--walk-files", type=int, default=10000)
    ap.add_argument("--no-build", action="store_true",
                    help="use the release binary and installed extension as they are")
    a = ap.parse_args()
    if not a.no_build:
        subprocess.run(["cargo", "build", "--release", "--locked", "-p", "fluxon-fs"],
                       cwd=ROOT, check=True)
        subprocess.run([sys.executable, "-m", "maturin", "develop", "--release", "--locked",
                        "-q"], cwd=ROOT / "crates" / "fluxon-py", check=True,
                       env=dict(os.environ, VIRTUAL_ENV=sys.prefix))

    scratch = Path(tempfile.mkdtemp(prefix="fluxon-bench-"))
    local = scratch / "local"
    local.mkdir()
    workdir = scratch / "up"
    workdir.mkdir()
    results = {"local": run_suite(local, local, a, local=True)}
    proc, module = start_stack(workdir)
    patcher = None
    try:
        mount = scratch / "mnt"
        deadline = time.monotonic() + 60
        while True:
            try:
                patcher = module.mount(str(mount))
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        results["mount"] = run_suite(mount, workdir / "remote_root", a)
    finally:
        if patcher is not None:
            patcher.uninstall()
        proc.terminate()
        proc.wait(timeout=30)
    tcp = loopback_tcp_gbs(a.big_mib)
    shutil.rmtree(scratch, ignore_errors=True)

    lo, mo = results["local"], results["mount"]
    print("| operation | local | mount | mount/local |")
    print("|---|---|---|---|")
    for key, label in (("read_fresh", "4 KiB open+read+close, fresh"),
                       ("read_again", "4 KiB open+read+close, unchanged"),
                       ("write", "4 KiB create+write+close")):
        print(f"| {label} p50 / p99 µs | {lo[key][0]:.0f} / {lo[key][1]:.0f} "
              f"| {mo[key][0]:.0f} / {mo[key][1]:.0f} | {mo[key][0] / lo[key][0]:.1f}x |")
    print(f"| 4 KiB create+write+fsync+close (local) p50 / p99 µs | "
          f"{lo['write_fsync'][0]:.0f} / {lo['write_fsync'][1]:.0f} | | |")
    print(f"| 1 GiB sequential write GB/s | {lo['big_write']:.2f} | {mo['big_write']:.2f} "
          f"| {mo['big_write'] / lo['big_write']:.2f} |")
    print(f"| 1 GiB sequential write + fsync (local) GB/s | {lo['big_write_fsync']:.2f} | | |")
    print(f"| 1 GiB sequential read GB/s | {lo['big_read']:.2f} | {mo['big_read']:.2f} "
          f"| {mo['big_read'] / lo['big_read']:.2f} |")
    print(f"| os.walk {a.walk_files} files, s | {lo['walk']:.3f} | {mo['walk']:.3f} "
          f"| {mo['walk'] / lo['walk']:.1f}x |")
    print(f"\nloopback TCP, one stream: {tcp:.2f} GB/s")


if __name__ == "__main__":
    main()
