"""Shared parts of the fluxon-fs example writer and reader: config file, mount, shutdown.

Config file (YAML)::

    kvclient:                      # fluxon_py.config.FluxonKvClientConfig fields
      master_addr: 127.0.0.1:34181
    fluxon_fs:
      master:
        instance_key: demo_fs_master
    fluxon_fs_demo:
      username: admin              # password: here, or in the env var FLUXON_FS_PASSWORD
      password: change-me
      export_name: demo-export
      mount_dir_abs: /tmp/fluxon_fs_demo/reader_mount   # default <workdir>/mount
      remote_relpath: demo/remote.bin
      local_root_dir_abs: /tmp/fluxon_fs_demo/local_root  # default <workdir>/local_root
      local_relpath: demo/local.bin
      interval_ms: 500
      small_bytes: 4096            # writer
      large_bytes: 4194304         # writer
      wait_file_poll_ms: 200       # reader
      print_limit_bytes: 64        # reader

Relative paths are taken relative to the workdir (``-w``).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time

import yaml

from fluxon_py.config import FluxonKvClientConfig
from fluxon_py.fluxon_fs import install_patcher_from_master
from fluxon_py.kvclient import new_store

DEMO_KEYS = {
    "username", "password", "export_name", "mount_dir_abs", "remote_relpath",
    "local_root_dir_abs", "local_relpath", "interval_ms", "small_bytes", "large_bytes",
    "wait_file_poll_ms", "print_limit_bytes",
}
DEFAULTS = {
    "export_name": "demo-export", "remote_relpath": "demo/remote.bin",
    "local_relpath": "demo/local.bin", "interval_ms": 500, "small_bytes": 4096,
    "large_bytes": 4 << 20, "wait_file_poll_ms": 200, "print_limit_bytes": 64,
}


class Stop(Exception):
    pass


def parse_args(role: str) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=f"fluxon-fs example {role}")
    ap.add_argument("-c", "--config", required=True, help="config YAML (see the module doc)")
    ap.add_argument("-w", "--workdir", required=True, help="working directory")
    ap.add_argument("--duration-secs", type=float, default=0,
                    help="stop after this many seconds (0 = until Ctrl-C)")
    return ap.parse_args()


def load(args: argparse.Namespace) -> dict:
    workdir = os.path.abspath(args.workdir)
    os.makedirs(workdir, exist_ok=True)
    with open(args.config, encoding="utf-8") as f:
        doc = yaml.safe_load(f) or {}
    for key in doc:
        if key not in ("kvclient", "fluxon_fs", "fluxon_fs_demo"):
            sys.exit(f"{args.config}: unknown key `{key}`")
    demo = dict(DEFAULTS)
    for key, value in (doc.get("fluxon_fs_demo") or {}).items():
        if key not in DEMO_KEYS:
            sys.exit(f"{args.config}: unknown key `fluxon_fs_demo.{key}`")
        demo[key] = value
    demo.setdefault("mount_dir_abs", "mount")
    demo.setdefault("local_root_dir_abs", "local_root")
    for key in ("mount_dir_abs", "local_root_dir_abs"):
        demo[key] = os.path.join(workdir, demo[key])
    demo["password"] = demo.get("password") or os.environ.get("FLUXON_FS_PASSWORD")
    if not demo.get("username") or not demo["password"]:
        sys.exit("fluxon_fs_demo.username and a password (fluxon_fs_demo.password or "
                 "FLUXON_FS_PASSWORD) are required")
    try:
        kv = FluxonKvClientConfig.from_dict(doc.get("kvclient") or {})
    except ValueError as e:
        sys.exit(f"{args.config}: {e}")
    return {"kv": kv, "demo": demo, "config_path": args.config, "workdir": workdir,
            "deadline": time.monotonic() + args.duration_secs if args.duration_secs else None}


def mount(cfg: dict):
    """new_store → patcher (export snapshot from the master) → install → mount."""
    store = new_store(cfg["kv"])
    demo = cfg["demo"]
    patcher = install_patcher_from_master(store, config_path=cfg["config_path"],
                                          username=demo["username"], password=demo["password"])
    patcher.mount_remote_dir(local_mount_dir_abs=demo["mount_dir_abs"],
                             export_name=demo["export_name"])
    return store, patcher


def install_signal_handlers() -> None:
    def stop(signum, frame):
        raise Stop()
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)


def sleep_or_stop(cfg: dict, seconds: float) -> None:
    if cfg["deadline"] is not None and time.monotonic() + seconds > cfg["deadline"]:
        raise Stop()
    time.sleep(seconds)


def teardown(store, patcher, cfg: dict) -> None:
    """The seed's order: unmount, uninstall, then close the store."""
    try:
        patcher.unmount_remote_dir(cfg["demo"]["mount_dir_abs"])
    finally:
        patcher.uninstall()
        store.close()
