"""While installed: everything that is not a path inside a mount goes to the original
functions unchanged; cross-mount renames raise EXDEV; real fds for small read-only files."""

import errno
import io
import mmap
import os
import pathlib
import shutil

import pytest


def test_local_paths_bytes_fds_and_pathlikes_pass_through(installed, tmp_path):
    local = tmp_path / "loc"
    local.mkdir()
    (local / "f.txt").write_text("local")
    bpath = os.fsencode(local / "f.txt")
    assert os.stat(bpath).st_size == 5
    assert os.listdir(os.fsencode(local)) == [b"f.txt"]
    assert [e.name for e in os.scandir(os.fsencode(local))] == [b"f.txt"]
    assert os.path.exists(bpath) and os.path.isfile(bpath)
    with open(bpath, "rb") as f:
        assert f.read() == b"local"
        fd = f.fileno()
        assert os.stat(fd).st_size == 5
        assert os.path.exists(fd)
        assert os.path.getsize(fd) == 5
    with open(os.open(local / "f.txt", os.O_RDONLY), "rb") as f:
        assert f.read() == b"local"
    dfd = os.open(local, os.O_RDONLY)
    try:
        assert os.stat("f.txt", dir_fd=dfd).st_size == 5
        assert sorted(e.name for e in os.scandir(dfd)) == ["f.txt"]
    finally:
        os.close(dfd)
    # pathlib / DirEntry path-likes, local
    entry = next(os.scandir(local))
    assert os.stat(entry).st_size == 5
    assert pathlib.PurePosixPath(local / "f.txt") and open(pathlib.PurePosixPath(
        local / "f.txt")).read() == "local"
    # errors for local paths are the original ones
    with pytest.raises(FileNotFoundError):
        os.stat(tmp_path / "missing")
    with pytest.raises(TypeError):
        os.stat(None)
    with pytest.raises(ValueError, match="embedded null"):
        os.stat("a\0b")
    # local rmtree keeps the fd-based implementation
    assert shutil.rmtree.avoids_symlink_attacks
    shutil.rmtree(local)
    assert not local.exists()


def test_cross_mount_rename_is_exdev_and_move_copies(installed, tmp_path):
    base, on_export = installed
    remote = os.path.join(base, "r.txt")
    local = tmp_path / "l.txt"
    with open(remote, "w") as f:
        f.write("remote")
    local.write_text("local")
    for src, dst in ((remote, str(tmp_path / "x")), (str(local), os.path.join(base, "x"))):
        with pytest.raises(OSError) as ei:
            os.rename(src, dst)
        assert ei.value.errno == errno.EXDEV
        with pytest.raises(OSError) as ei:
            os.replace(src, dst)
        assert ei.value.errno == errno.EXDEV
    # shutil.move falls back to copy + delete in both directions
    shutil.move(remote, tmp_path / "moved_out.txt")
    assert (tmp_path / "moved_out.txt").read_text() == "remote"
    assert not os.path.exists(remote)
    shutil.move(str(local), os.path.join(base, "moved_in.txt"))
    assert (on_export / "moved_in.txt").read_text() == "local"
    assert not local.exists()
    # whole trees too
    os.makedirs(os.path.join(base, "tree", "sub"))
    with open(os.path.join(base, "tree", "sub", "x"), "wb") as f:
        f.write(b"x" * 3_000_000)
    shutil.move(os.path.join(base, "tree"), tmp_path / "tree")
    assert (tmp_path / "tree" / "sub" / "x").stat().st_size == 3_000_000
    assert not os.path.exists(os.path.join(base, "tree"))
    shutil.copytree(tmp_path / "tree", os.path.join(base, "tree2"))
    assert (on_export / "tree2" / "sub" / "x").read_bytes() == b"x" * 3_000_000


def test_small_read_only_file_is_a_real_fd(installed):
    base, _ = installed
    p = os.path.join(base, "small.bin")
    with open(p, "wb") as f:
        f.write(b"0123456789" * 100)
    with open(p, "rb") as f:
        assert f.name == p
        fd = f.fileno()
        assert os.fstat(fd).st_size == 1000
        with mmap.mmap(fd, 0, access=mmap.ACCESS_READ) as m:
            assert m[:10] == b"0123456789"
        assert f.read(5) == b"01234"
    with open(p) as f:
        assert f.name == p and f.mode == "r"
        assert f.read(3) == "012"
    fd = os.open(p, os.O_RDONLY)
    try:
        assert os.read(fd, 4) == b"0123"
    finally:
        os.close(fd)
    with pytest.raises(OSError) as ei:
        os.open(p, os.O_WRONLY)
    assert ei.value.errno in (errno.EOPNOTSUPP, errno.ENOTSUP)


def test_remote_file_without_fd_and_large_reads(installed):
    base, _ = installed
    p = os.path.join(base, "large.bin")
    data = os.urandom(3 << 20)
    with open(p, "wb") as f:
        with pytest.raises(io.UnsupportedOperation):
            f.fileno()
        f.write(data)
    with open(p, "rb") as f:
        with pytest.raises(io.UnsupportedOperation):
            f.fileno()
        assert f.read() == data


    raw = open(p, "rb", buffering=0)
    calls = []
    native = raw._f

    class Spy:
        def __getattr__(self, name):
            attr = getattr(native, name)
            if name in ("pread", "readinto"):
                def wrapped(*a):
                    calls.append(name)
                    return attr(*a)
                return wrapped
            return attr
    raw._f = Spy()
    assert raw.readall() == data
    raw._f = native
    raw.close()
    assert len(calls) <= 2, calls  # one large read (+ the EOF probe), never 8 KiB steps


def test_unsupported_ops_on_mount_are_enotsup(installed):
    base, _ = installed
    p = os.path.join(base, "f")
    open(p, "w").close()
    for call in (lambda: os.listxattr(p), lambda: os.getxattr(p, "user.x"),
                 lambda: os.symlink("f", os.path.join(base, "l")),
                 lambda: os.link(p, os.path.join(base, "h")), lambda: os.chown(p, 0, 0)):
        with pytest.raises(OSError) as ei:
            call()
        assert ei.value.errno in (errno.EOPNOTSUPP, errno.ENOTSUP)


def test_cwd_at_mount_root(installed, mount_dir):
    base, _ = installed
    old = os.getcwd()
    os.chdir(mount_dir)
    try:
        assert os.path.basename(base) in os.listdir()
        assert os.path.basename(base) in [e.name for e in os.scandir()]
    finally:
        os.chdir(old)


def test_mount_root_itself(installed, mount_dir):
    with pytest.raises(OSError) as ei:
        os.rmdir(mount_dir)
    assert ei.value.errno == errno.EBUSY
    with pytest.raises(FileExistsError):
        os.mkdir(mount_dir)
    with pytest.raises(IsADirectoryError):
        open(mount_dir)
    assert os.path.isdir(mount_dir)


def test_many_threads_on_one_mount(installed, tmp_path):
    import threading
    base, on_export = installed
    errors = []

    def work(i):
        try:
            p = os.path.join(base, f"th-{i}.bin")
            data = os.urandom(50_000 + i)
            for _ in range(5):
                with open(p, "wb") as f:
                    f.write(data)
                with open(p, "rb") as f:
                    assert f.read() == data
                assert os.path.getsize(p) == len(data)
                local = tmp_path / f"l-{i}"
                local.write_bytes(data[:10])
                assert local.read_bytes() == data[:10]
        except BaseException as e:  # collected and asserted below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert sorted(os.listdir(base)) == sorted(f"th-{i}.bin" for i in range(8))
