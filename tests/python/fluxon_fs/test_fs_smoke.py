"""Smoke: the mount round trip through open/os/pathlib."""

import os
import pathlib


def test_round_trip(installed, export_root):
    base, on_export = installed
    p = os.path.join(base, "hello.txt")
    with open(p, "w") as f:
        f.write("hello\n")
    assert (on_export / "hello.txt").read_text() == "hello\n"
    assert open(p).read() == "hello\n"
    assert os.listdir(base) == ["hello.txt"]
    assert pathlib.Path(p).read_text() == "hello\n"
    assert os.path.getsize(p) == 6
