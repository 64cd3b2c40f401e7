#!/usr/bin/env python3
"""fluxon-fs example reader: mounts the export and alternates remote and local reads.

    python3 examples/start_fluxon_fs_reader.py -c <reader-config.yaml> -w <reader-workdir>

Installs the patcher with the master's export snapshot (``install_patcher_from_master``),
mounts ``export_name``, waits for both files (``op=wait_remote_exists`` /
``op=wait_local_exists``), then keeps printing
``[reader] op=read_remote|read_local path=... bytes=... elapsed_ms=... prefix=`` followed by
the first ``print_limit_bytes`` of the content. When these lines keep coming, the remote
mount and the local pass-through both work. Config: see ``_fluxon_fs_demo_common.py``.
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _fluxon_fs_demo_common import (  # noqa: E402
    Stop, install_signal_handlers, load, mount, parse_args, sleep_or_stop, teardown)


def main() -> int:
    cfg = load(parse_args("reader"))
    demo = cfg["demo"]
    install_signal_handlers()
    store, patcher = mount(cfg)
    paths = {
        "remote": os.path.join(demo["mount_dir_abs"], demo["remote_relpath"]),
        "local": os.path.join(demo["local_root_dir_abs"], demo["local_relpath"]),
    }
    poll = demo["wait_file_poll_ms"] / 1000
    try:
        for kind, path in paths.items():
            while not os.path.exists(path):
                print(f"[reader] op=wait_{kind}_exists path={path}", flush=True)
                sleep_or_stop(cfg, poll)
        while True:
            for kind, path in paths.items():
                t0 = time.perf_counter()
                with open(path, "rb") as f:
                    data = f.read()
                ms = (time.perf_counter() - t0) * 1000
                prefix = data[:demo["print_limit_bytes"]].decode("utf-8", "replace")
                print(f"[reader] op=read_{kind} path={path} bytes={len(data)} "
                      f"elapsed_ms={ms:.3f} prefix=\n{prefix}", flush=True)
            sleep_or_stop(cfg, demo["interval_ms"] / 1000)
    except Stop:
        pass
    finally:
        teardown(store, patcher, cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
