#!/usr/bin/env python3
"""fluxon-fs example writer: keeps rewriting one file through the mount and one local file.

    python3 examples/start_fluxon_fs_writer.py -c <writer-config.yaml> -w <writer-workdir>

The remote file (``<mount>/<remote_relpath>``) alternates between ``small_bytes`` and
``large_bytes``; each version appears atomically when the file is closed. The local file
(``<local_root_dir_abs>/<local_relpath>``) is written with temp file + ``os.replace``, with the
patcher installed (local paths pass through unchanged). Prints
``[writer] op=write_remote|write_local path=... bytes=... elapsed_ms=...``.
Config: see ``_fluxon_fs_demo_common.py``.
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _fluxon_fs_demo_common import (  # noqa: E402
    Stop, install_signal_handlers, load, mount, parse_args, sleep_or_stop, teardown)


def payload(tag: str, seq: int, size: int) -> bytes:
    head = f"tag={tag} seq={seq} now_ns={time.time_ns()} size={size}\n".encode()
    return (head + b"A" * max(size - len(head), 0))[:max(size, len(head))]


def main() -> int:
    cfg = load(parse_args("writer"))
    demo = cfg["demo"]
    install_signal_handlers()
    store, patcher = mount(cfg)
    remote = os.path.join(demo["mount_dir_abs"], demo["remote_relpath"])
    local = os.path.join(demo["local_root_dir_abs"], demo["local_relpath"])
    os.makedirs(os.path.dirname(remote), exist_ok=True)
    os.makedirs(os.path.dirname(local), exist_ok=True)
    print(f"[writer] mounted export={demo['export_name']} at {demo['mount_dir_abs']}", flush=True)
    seq = 0
    try:
        while True:
            seq += 1
            size = demo["large_bytes"] if seq % 2 == 0 else demo["small_bytes"]
            t0 = time.perf_counter()
            with open(remote, "wb") as f:
                f.write(payload("remote", seq, size))
            ms = (time.perf_counter() - t0) * 1000
            print(f"[writer] op=write_remote path={remote} bytes={size} elapsed_ms={ms:.3f}",
                  flush=True)
            t0 = time.perf_counter()
            data = payload("local", seq, demo["small_bytes"])
            tmp = f"{local}.tmp.{os.getpid()}"
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, local)
            ms = (time.perf_counter() - t0) * 1000
            print(f"[writer] op=write_local path={local} bytes={len(data)} elapsed_ms={ms:.3f}",
                  flush=True)
            sleep_or_stop(cfg, demo["interval_ms"] / 1000)
    except Stop:
        pass
    finally:
        teardown(store, patcher, cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
