"""The example writer and reader run against the stack and print the seed's lines."""

import os
import select
import subprocess
import sys
import time
from pathlib import Path

import yaml

from fs_users import USERS

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


def _config(stack, path: Path, workdir: Path, local_root: Path, mount: str) -> Path:
    doc = {
        "kvclient": {"master_addr": stack.master_addr, "request_timeout_secs": 10},
        "fluxon_fs": {"master": {"instance_key": stack.instance_key}},
        "fluxon_fs_demo": {
            "username": "admin", "password": USERS["admin"]["password"],
            "export_name": "demo-export", "mount_dir_abs": mount,
            "remote_relpath": f"example-{workdir.name}/remote.bin",
            "local_root_dir_abs": str(local_root), "local_relpath": "demo/local.bin",
            "interval_ms": 100, "small_bytes": 4096, "large_bytes": 2 << 20,
            "wait_file_poll_ms": 50, "print_limit_bytes": 40,
        },
    }
    path.write_text(yaml.safe_dump(doc))
    return path


def _lines_until(proc, wanted: set, timeout: float) -> list:
    """Reads stdout lines until every marker in ``wanted`` has been seen (bounded)."""
    seen, lines, buf = set(), [], b""
    deadline = time.monotonic() + timeout
    while seen != wanted:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"saw {sorted(seen)} of {sorted(wanted)}; last lines: {lines[-10:]}")
        ready, _, _ = select.select([proc.stdout], [], [], left)
        if not ready:
            continue
        chunk = os.read(proc.stdout.fileno(), 65536)
        if not chunk:
            raise RuntimeError(f"exited with {proc.wait()}: {lines[-20:]}\n"
                               f"{proc.stderr.read().decode()[-3000:]}")
        buf += chunk
        *complete, buf = buf.split(b"\n")
        for line in complete:
            text = line.decode(errors="replace")
            lines.append(text)
            seen |= {w for w in wanted if w in text}
    return lines


def _collect_for(proc, secs: float) -> list:
    """All stdout lines ``proc`` prints during ``secs`` seconds (it must keep running)."""
    lines, buf = [], b""
    deadline = time.monotonic() + secs
    while (left := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([proc.stdout], [], [], left)
        if not ready:
            continue
        chunk = os.read(proc.stdout.fileno(), 65536)
        if not chunk:
            raise RuntimeError(f"exited with {proc.wait()}: {lines[-20:]}\n"
                               f"{proc.stderr.read().decode()[-3000:]}")
        buf += chunk
        *complete, buf = buf.split(b"\n")
        lines += [line.decode(errors="replace") for line in complete]
    return lines


def _stop(proc) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    assert proc.returncode == 0, proc.stderr.read().decode()[-3000:]


def test_writer_and_reader_examples(fs_stack, tmp_path):
    local_root = tmp_path / "local_root"
    wcfg = _config(fs_stack, tmp_path / "writer.yaml", tmp_path / "w", local_root,
                   str(tmp_path / "w-mount"))
    rcfg = _config(fs_stack, tmp_path / "reader.yaml", tmp_path / "r", local_root,
                   str(tmp_path / "r-mount"))
    # Both must address the same remote file.
    rdoc = yaml.safe_load(rcfg.read_text())
    rdoc["fluxon_fs_demo"]["remote_relpath"] = yaml.safe_load(
        wcfg.read_text())["fluxon_fs_demo"]["remote_relpath"]
    rcfg.write_text(yaml.safe_dump(rdoc))
    env = fs_stack.env()
    reader = subprocess.Popen(
        [sys.executable, str(EXAMPLES / "start_fluxon_fs_reader.py"), "-c", str(rcfg),
         "-w", str(tmp_path / "r")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    writer = subprocess.Popen(
        [sys.executable, str(EXAMPLES / "start_fluxon_fs_writer.py"), "-c", str(wcfg),
         "-w", str(tmp_path / "w")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        wlines = _lines_until(writer, {"op=write_remote", "op=write_local"}, 60)
        lines = _lines_until(reader, {"op=read_remote", "op=read_local"}, 60)
        # keep both running for a few seconds: both kinds of reads keep coming
        more = _collect_for(reader, 3.0)
    finally:
        _stop(writer)
        _stop(reader)
    assert sum("op=read_remote" in x for x in more) >= 3, more
    assert sum("op=read_local" in x for x in more) >= 3, more
    remote_reads = [x for x in lines + more if "op=read_remote" in x]
    assert any("bytes=4096" in x or "bytes=2097152" in x for x in remote_reads), remote_reads
    assert any("[writer] op=write_remote" in x for x in wlines)
    # the reader and writer unmounted and left their (empty) mount dirs
    assert os.listdir(tmp_path / "r-mount") == []
