"""Child process for the multi-process tests: mounts the export and plays one role.

Usage: python mp_worker.py '<json config>'; prints one JSON line with its result.
Roles: ``replace_writer`` (rewrites one file whole, many times, announcing each closed
version), ``replace_reader`` (re-opens the file and checks each version is complete),
``appender`` (appends fixed-size records).
"""

import hashlib
import json
import os
import sys
import time

from fluxon_py.config import FluxonKvClientConfig
from fluxon_py.fluxon_fs import FluxonFsPatcher
from fluxon_py.kvclient import new_store


def payload(version: int, size: int) -> bytes:
    body = (f"v{version:08d}".encode() * (size // 9 + 1))[:size]
    return hashlib.sha256(body).hexdigest().encode() + b"\n" + body


def check(data: bytes) -> int:
    digest, _, body = data.partition(b"\n")
    if hashlib.sha256(body).hexdigest().encode() != digest:
        raise AssertionError(f"torn read: {len(data)} bytes, head={data[:80]!r}")
    return int(body[1:9])


def main() -> None:
    cfg = json.loads(sys.argv[1])
    store = new_store(FluxonKvClientConfig(master_addr=cfg["master_addr"]))
    p = FluxonFsPatcher(store)
    p.set_master_config_yaml(cfg["master_yaml"])
    p.set_cache_config_yaml(cfg["cache_yaml"])
    p.set_request_identity(cfg["user"], cfg["password"])
    with p:
        p.mount_remote_dir(local_mount_dir_abs=cfg["mount"], export_name=cfg["export"])
        path = os.path.join(cfg["mount"], cfg["relpath"])
        role = cfg["role"]
        result = {}
        if role == "replace_writer":
            for v in range(1, cfg["versions"] + 1):
                size = cfg["sizes"][v % len(cfg["sizes"])]
                with open(path, "wb") as f:
                    data = payload(v, size)
                    half = len(data) // 2
                    f.write(data[:half])
                    f.flush()
                    f.write(data[half:])
                print(json.dumps({"closed": v}), flush=True)
            result = {"written": cfg["versions"]}
        elif role == "replace_reader":
            seen, reads = 0, 0
            deadline = time.monotonic() + cfg["secs"]
            while time.monotonic() < deadline:
                try:
                    with open(path, "rb") as f:
                        v = check(f.read())
                except FileNotFoundError:
                    continue
                if v < seen:
                    raise AssertionError(f"went back in time: {v} after {seen}")
                seen, reads = v, reads + 1
                if v >= cfg["versions"]:
                    break
            result = {"reads": reads, "last": seen}
        elif role == "appender":
            tag = cfg["tag"]
            with open(path, "ab") as f:
                for i in range(cfg["records"]):
                    f.write(f"{tag}:{i:06d}\n".encode())
                    f.flush()
            result = {"appended": cfg["records"]}
        elif role == "read_after_signal":
            # Close-to-open: wait for the parent's line, then the new version must be visible.
            for line in sys.stdin:
                want = int(line)
                with open(path, "rb") as f:
                    got = check(f.read())
                print(json.dumps({"want": want, "got": got}), flush=True)
            result = {"done": True}
        p.unmount_remote_dir(cfg["mount"])
    store.close()
    print(json.dumps({"result": result}), flush=True)


if __name__ == "__main__":
    main()
