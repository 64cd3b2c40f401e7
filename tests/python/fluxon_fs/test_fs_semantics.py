"""File semantics: every scenario runs on a plain local directory (nothing installed) and then
inside a mount (patcher installed); the traces (results, exception types and errno) must be
identical. A few assertions on the local trace make sure each scenario tests something."""

import errno
import glob
import os
import pathlib
import shutil
import stat


BIG = bytes(range(256)) * 9000  # > 2 MiB: not inline, several buffer refills


def _fopen(t, label, *args, **kw):
    """open() whose result is recorded; returns the file or None."""
    f = t.do(label, lambda: open(*args, **kw))
    return None if isinstance(f, Exception) else f


def test_text_and_binary_modes(compare):
    def scenario(b, t):
        p = os.path.join(b, "f.txt")
        with open(p, "w", encoding="utf-8") as f:
            t.note("w.mode", f.mode)
            t.note("w.name", f.name)
            t.do("w.write", lambda: f.write("héllo\nwörld\n"))
            t.do("w.read", lambda: f.read())
        t.do("r", lambda: open(p, encoding="utf-8").read())
        t.do("rb", lambda: open(p, "rb").read())
        t.do("rt-lines", lambda: open(p, "rt", encoding="utf-8").readlines())
        t.do("r-latin1", lambda: open(p, encoding="latin-1").read())
        t.do("r-strict-ascii", lambda: open(p, encoding="ascii").read())
        t.do("r-replace", lambda: open(p, encoding="ascii", errors="replace").read())
        with open(p, "w", newline="\r\n") as f:
            f.write("a\nb\n")
        t.do("crlf-raw", lambda: open(p, "rb").read())
        t.do("crlf-universal", lambda: open(p).read())
        t.do("crlf-newline-none", lambda: open(p, newline="").read())
        with open(p, "wb") as f:
            t.note("wb.mode", f.mode)
            t.do("wb.write", lambda: f.write(b"\x00\x01\xff"))
        with open(p, "rb") as f:
            t.note("rb.mode", f.mode)
            t.do("rb.read", lambda: f.read())
            t.do("rb.write", lambda: f.write(b"x"))
        t.do("bad-mode", lambda: open(p, "rw"))
        t.do("bad-mode2", lambda: open(p, "rbt"))
        t.do("binary-encoding", lambda: open(p, "rb", encoding="utf-8"))
        t.do("unbuffered-text", lambda: open(p, "w", buffering=0))
        t.do("closefd", lambda: open(p, "r", closefd=False))
        t.do("bad-encoding", lambda: open(p, "r", encoding="no-such-codec"))
        t.do("after-bad", lambda: open(p, "rb").read())
    tr = compare(scenario)
    assert tr.result("r-strict-ascii")[2] == "UnicodeDecodeError"
    assert tr.result("bad-mode")[2] == "ValueError"
    assert tr.result("crlf-raw")[2] == b"a\r\nb\r\n"


def test_write_modes_and_errors(compare):
    def scenario(b, t):
        p = os.path.join(b, "m.bin")
        t.do("r-missing", lambda: open(p, "rb"))
        t.do("r+-missing", lambda: open(p, "r+b"))
        t.do("x-create", lambda: open(p, "xb").close())
        t.do("x-existing", lambda: open(p, "xb"))
        t.do("x+-existing", lambda: open(p, "x+b"))
        with open(p, "wb") as f:
            f.write(b"0123456789")
        with open(p, "ab") as f:
            t.note("ab.mode", f.mode)
            t.do("ab.tell0", f.tell)
            f.write(b"AB")
            t.do("ab.seek0-write", lambda: (f.seek(0), f.write(b"CD"))[1])
        t.do("after-append", lambda: open(p, "rb").read())
        with open(p, "a+b") as f:
            t.do("a+.tell", f.tell)
            t.do("a+.read-at-end", f.read)
            f.seek(0)
            t.do("a+.read", f.read)
            f.write(b"Z")
            t.do("a+.tell-after", f.tell)
        with open(p, "r+b") as f:
            t.note("r+.mode", f.mode)
            f.seek(2)
            f.write(b"xx")
            f.seek(0)
            t.do("r+.read", f.read)
        with open(p, "w+b") as f:
            t.note("w+.mode", f.mode)
            t.do("w+.read-empty", f.read)
            f.write(b"new")
            f.seek(0)
            t.do("w+.read", f.read)
        t.do("final", lambda: open(p, "rb").read())
        t.do("dir-r", lambda: open(b, "rb"))
        t.do("dir-w", lambda: open(b, "wb"))
        t.do("dir-x", lambda: open(b, "xb"))
        t.do("dir-slash", lambda: open(b + "/", "rb"))
        t.do("file-as-dir", lambda: open(os.path.join(p, "child"), "rb"))
        t.do("file-as-dir-w", lambda: open(os.path.join(p, "child"), "wb"))
        t.do("missing-parent", lambda: open(os.path.join(b, "nope", "child"), "wb"))
        t.do("file-slash", lambda: open(p + "/", "rb"))
        t.do("new-slash", lambda: open(os.path.join(b, "new") + "/", "wb"))
        t.do("listing", lambda: sorted(os.listdir(b)))
    tr = compare(scenario)
    assert tr.result("x-existing")[2:] == ("FileExistsError", errno.EEXIST)
    assert tr.result("dir-r")[2] == "IsADirectoryError"
    assert tr.result("after-append")[2] == b"0123456789ABCD"


def test_seek_tell_truncate(compare):
    def scenario(b, t):
        p = os.path.join(b, "s.bin")
        with open(p, "wb") as f:
            f.write(b"abcdefghij")
        for buffering in (0, -1):
            with open(p, "r+b", buffering=buffering) as f:
                t.do(f"seek-end{buffering}", lambda: f.seek(-3, os.SEEK_END))
                t.do(f"read-end{buffering}", lambda: f.read())
                t.do(f"seek-cur{buffering}", lambda: f.seek(-5, os.SEEK_CUR))
                t.do(f"tell{buffering}", f.tell)
                t.do(f"read2{buffering}", lambda: f.read(2))
                t.do(f"seek-neg{buffering}", lambda: f.seek(-1))
                t.do(f"seek-past{buffering}", lambda: f.seek(20))
                t.do(f"read-past{buffering}", lambda: f.read())
                t.do(f"seekable{buffering}", f.seekable)
                t.do(f"readinto{buffering}", lambda: (f.seek(1), f.readinto(bytearray(4)))[1])
        with open(p, "r+b") as f:
            t.do("truncate-none", lambda: (f.seek(4), f.truncate())[1])
            t.do("tell-after-trunc", f.tell)
            t.do("truncate-grow", lambda: f.truncate(8))
            t.do("truncate-neg", lambda: f.truncate(-1))
        t.do("after-trunc", lambda: open(p, "rb").read())
        with open(p, "rb") as f:
            t.do("truncate-readonly", lambda: f.truncate(0))
        t.do("os.truncate", lambda: os.truncate(p, 2))
        t.do("os.truncate-missing", lambda: os.truncate(os.path.join(b, "nope"), 2))
        t.do("after-os-trunc", lambda: open(p, "rb").read())
        with open(p, "w") as f:
            f.write("line1\nline2\n")
        with open(p) as f:
            t.do("text-readline", f.readline)
            pos = f.tell()
            t.do("text-rest", f.read)
            f.seek(pos)
            t.do("text-seek-cookie", f.read)
            t.do("text-seek-cur-nonzero", lambda: f.seek(1, os.SEEK_CUR))
    tr = compare(scenario)
    assert tr.result("seek-neg0")[2] == "OSError"


def test_large_file_and_readall(compare):
    def scenario(b, t):
        p = os.path.join(b, "big.bin")
        with open(p, "wb") as f:
            for i in range(0, len(BIG), 100_000):
                f.write(BIG[i:i + 100_000])
        with open(p, "rb") as f:
            t.do("readall-ok", lambda: f.read() == BIG)
        with open(p, "rb", buffering=0) as f:
            t.do("raw-readall-ok", lambda: f.readall() == BIG)
            f.seek(1_000_000)
            t.do("raw-read-n", lambda: f.read(10) == BIG[1_000_000:1_000_010])
        with open(p, "rb") as f:
            f.seek(len(BIG) - 5)
            t.do("tail", f.read)
            t.do("iter-count", lambda: (f.seek(0), sum(1 for _ in f))[1])
        t.do("size", lambda: os.path.getsize(p))
    tr = compare(scenario)
    assert tr.result("readall-ok")[2] is True


def test_stat_and_os_path(compare):
    def scenario(b, t):
        p = os.path.join(b, "st.txt")
        d = os.path.join(b, "sub")
        with open(p, "w") as f:
            f.write("12345")
        os.mkdir(d)
        for fn in ("exists", "isfile", "isdir", "islink", "lexists", "getsize"):
            for target in (p, d, os.path.join(b, "missing"), p + "/"):
                t.do(f"{fn}:{target}", lambda: getattr(os.path, fn)(target))
        t.do("stat-file", lambda: os.stat(p))
        t.do("stat-dir", lambda: os.stat(d))
        t.do("stat-missing", lambda: os.stat(os.path.join(b, "missing")))
        t.do("stat-under-file", lambda: os.stat(os.path.join(p, "x")))
        t.do("stat-file-slash", lambda: os.stat(p + "/"))
        t.do("lstat-file", lambda: os.lstat(p))
        os.utime(p, ns=(1_500_000_000_123_456_789, 1_600_000_000_987_654_321))
        st = os.stat(p)
        t.note("mtime_ns", st.st_mtime_ns)
        t.note("atime_ns", st.st_atime_ns)
        t.note("mtime", st.st_mtime)
        t.note("mtime-int", st[stat.ST_MTIME])
        t.do("getmtime", lambda: os.path.getmtime(p))
        t.do("getatime", lambda: os.path.getatime(p))
        os.utime(p, (1_000_000_000.5, 1_100_000_000.25))
        t.do("utime-float", lambda: os.stat(p).st_mtime_ns)
        t.do("utime-both", lambda: os.utime(p, (1, 2), ns=(1, 2)))
        t.do("utime-bad", lambda: os.utime(p, 5))
        t.do("utime-missing", lambda: os.utime(os.path.join(b, "missing")))
        t.do("utime-now", lambda: os.utime(p) or abs(os.stat(p).st_mtime - __import__("time").time()) < 60)
        os.chmod(p, 0o640)
        t.do("chmod", lambda: stat.S_IMODE(os.stat(p).st_mode))
        t.do("chmod-missing", lambda: os.chmod(os.path.join(b, "missing"), 0o600))
        t.do("access-r", lambda: os.access(p, os.R_OK))
        t.do("access-missing", lambda: os.access(os.path.join(b, "missing"), os.F_OK))
        t.do("samefile", lambda: os.path.samefile(p, os.path.join(d, "..", "st.txt")))
        t.do("samefile-other", lambda: os.path.samefile(p, d))
        st = os.stat(p)
        t.note("fields", (st.st_size, type(st.st_ino).__name__, st.st_blksize > 0,
                          st.st_nlink, st.st_blocks >= 0, st.st_mtime_ns is not None,
                          st.st_ctime_ns is not None, len(tuple(st))))
    tr = compare(scenario)
    assert tr.result("mtime_ns")[2] == 1_600_000_000_987_654_321
    assert tr.result("isfile:<base>/st.txt")[2] is True


def test_directories(compare):
    def scenario(b, t):
        d = os.path.join(b, "a")
        t.do("mkdir", lambda: os.mkdir(d))
        t.do("mkdir-again", lambda: os.mkdir(d))
        t.do("mkdir-noparent", lambda: os.mkdir(os.path.join(b, "x", "y")))
        t.do("makedirs", lambda: os.makedirs(os.path.join(d, "b", "c")))
        t.do("makedirs-exist", lambda: os.makedirs(os.path.join(d, "b", "c")))
        t.do("makedirs-exist-ok", lambda: os.makedirs(os.path.join(d, "b", "c"), exist_ok=True))
        with open(os.path.join(d, "f"), "w") as f:
            f.write("x")
        t.do("makedirs-over-file", lambda: os.makedirs(os.path.join(d, "f"), exist_ok=True))
        t.do("mkdir-under-file", lambda: os.mkdir(os.path.join(d, "f", "g")))
        t.do("listdir", lambda: sorted(os.listdir(d)))
        t.do("listdir-file", lambda: os.listdir(os.path.join(d, "f")))
        t.do("listdir-missing", lambda: os.listdir(os.path.join(b, "missing")))
        with os.scandir(d) as it:
            entries = sorted(it, key=lambda e: e.name)
        t.note("scandir", [(e.name, e.path, e.is_dir(), e.is_file(), e.is_symlink(),
                            e.stat().st_size if e.is_file() else None,
                            e.inode() == os.stat(e.path).st_ino, os.fspath(e))
                           for e in entries])
        t.do("scandir-missing", lambda: list(os.scandir(os.path.join(b, "missing"))))
        t.do("rmdir-nonempty", lambda: os.rmdir(d))
        t.do("rmdir-file", lambda: os.rmdir(os.path.join(d, "f")))
        t.do("unlink-dir", lambda: os.unlink(os.path.join(d, "b")))
        t.do("remove-file", lambda: os.remove(os.path.join(d, "f")))
        t.do("remove-missing", lambda: os.remove(os.path.join(d, "f")))
        t.do("rmdir-missing", lambda: os.rmdir(os.path.join(d, "zz")))
        open(os.path.join(b, "keep"), "w").close()  # removedirs stops here
        t.do("removedirs", lambda: os.removedirs(os.path.join(d, "b", "c")))
        t.do("gone", lambda: os.path.exists(d))
        t.do("listdir-root", lambda: os.listdir(b))
        # Relative paths resolve against the cwd. (A process can only chdir into directories
        # that exist locally: the mount root, not its subdirectories.)
        old = os.getcwd()
        os.chdir(os.path.dirname(b))
        n = os.path.basename(b)
        try:
            t.do("rel-write", lambda: open(f"{n}/rel.txt", "w").write("rel"))
            t.do("rel-read", lambda: open(os.path.join(".", n, "rel.txt")).read())
            t.do("rel-listdir", lambda: sorted(os.listdir(n)))
            t.do("rel-listdir-dotdot", lambda: sorted(os.listdir(f"{n}/../{n}")))
            t.do("rel-scandir", lambda: sorted(e.path.replace(n, "<n>") for e in os.scandir(n)))
            t.do("rel-exists", lambda: os.path.exists(f"{n}/rel.txt"))
            t.do("rel-unlink", lambda: os.unlink(f"{n}/rel.txt"))
        finally:
            os.chdir(old)
    tr = compare(scenario)
    assert tr.result("mkdir-again")[2:] == ("FileExistsError", errno.EEXIST)
    assert tr.result("rmdir-nonempty")[2:] == ("OSError", errno.ENOTEMPTY)


def test_rename_and_replace(compare):
    def scenario(b, t):
        a, c = os.path.join(b, "a.txt"), os.path.join(b, "c.txt")
        with open(a, "w") as f:
            f.write("A")
        with open(c, "w") as f:
            f.write("C")
        t.do("rename-over", lambda: os.rename(a, c))
        t.do("content", lambda: open(c).read())
        t.do("old-gone", lambda: os.path.exists(a))
        t.do("rename-missing", lambda: os.rename(a, c))
        os.mkdir(os.path.join(b, "d"))
        os.mkdir(os.path.join(b, "e"))
        open(os.path.join(b, "e", "x"), "w").close()
        t.do("replace-file-over-dir", lambda: os.replace(c, os.path.join(b, "d")))
        t.do("replace-dir-over-nonempty", lambda: os.replace(os.path.join(b, "d"),
                                                             os.path.join(b, "e")))
        t.do("replace-dir-over-file", lambda: os.replace(os.path.join(b, "d"), c))
        t.do("rename-dir", lambda: os.rename(os.path.join(b, "e"), os.path.join(b, "e2")))
        t.do("rename-into-missing", lambda: os.rename(c, os.path.join(b, "no", "c")))
        t.do("renames", lambda: os.renames(c, os.path.join(b, "n1", "n2", "c")))
        t.do("listing", lambda: sorted(os.listdir(b)))
    tr = compare(scenario)
    assert tr.result("content")[2] == "A"


def test_walk_glob_shutil(compare):
    def scenario(b, t):
        for rel in ("src/a.txt", "src/sub/b.txt", "src/sub/deep/c.py", "src/.hidden"):
            os.makedirs(os.path.dirname(os.path.join(b, rel)), exist_ok=True)
            with open(os.path.join(b, rel), "w") as f:
                f.write(rel * 50)
        src = os.path.join(b, "src")
        t.do("walk", lambda: sorted((p, sorted(ds), sorted(fs)) for p, ds, fs in os.walk(src)))
        t.do("walk-bottomup", lambda: [p for p, _, _ in os.walk(src, topdown=False)])
        t.do("glob", lambda: sorted(glob.glob(os.path.join(src, "*"))))
        t.do("glob-rec", lambda: sorted(glob.glob(os.path.join(src, "**", "*.txt"),
                                                  recursive=True)))
        t.do("glob-hidden", lambda: sorted(glob.glob(os.path.join(src, ".*"))))
        t.do("glob-rootdir", lambda: sorted(glob.glob("**/*.py", root_dir=src, recursive=True)))
        t.do("iglob", lambda: sorted(glob.iglob(os.path.join(b, "src", "sub", "*"))))
        t.do("copy", lambda: shutil.copy(os.path.join(src, "a.txt"), os.path.join(b, "a2.txt")))
        t.do("copy2", lambda: shutil.copy2(os.path.join(src, "a.txt"), os.path.join(b, "a3.txt")))
        t.do("copy2-mtime", lambda: os.stat(os.path.join(b, "a3.txt")).st_mtime_ns ==
             os.stat(os.path.join(src, "a.txt")).st_mtime_ns)
        t.do("copyfile", lambda: shutil.copyfile(os.path.join(src, "a.txt"),
                                                 os.path.join(b, "a4.txt")))
        t.do("copyfile-same", lambda: shutil.copyfile(os.path.join(src, "a.txt"),
                                                      os.path.join(src, "a.txt")))
        t.do("copyfile-missing", lambda: shutil.copyfile(os.path.join(b, "nope"),
                                                         os.path.join(b, "x")))
        t.do("copy-into-dir", lambda: shutil.copy(os.path.join(src, "a.txt"),
                                                  os.path.join(b, "src", "sub")))
        t.do("copytree", lambda: shutil.copytree(src, os.path.join(b, "dst")))
        t.do("copytree-exists", lambda: shutil.copytree(src, os.path.join(b, "dst")))
        t.do("copytree-dirs-exist-ok", lambda: shutil.copytree(src, os.path.join(b, "dst"),
                                                               dirs_exist_ok=True))
        t.do("copytree-ignore", lambda: shutil.copytree(
            src, os.path.join(b, "dst2"), ignore=shutil.ignore_patterns("*.py")))
        t.do("dst-walk", lambda: sorted((p, sorted(fs)) for p, _, fs in
                                        os.walk(os.path.join(b, "dst2"))))
        t.do("copied", lambda: open(os.path.join(b, "dst", "sub", "deep", "c.py")).read())
        t.do("move-file", lambda: shutil.move(os.path.join(b, "a2.txt"),
                                              os.path.join(b, "moved.txt")))
        t.do("move-dir", lambda: shutil.move(os.path.join(b, "dst2"), os.path.join(b, "dst3")))
        t.do("rmtree", lambda: shutil.rmtree(os.path.join(b, "dst")))
        t.do("rmtree-missing", lambda: shutil.rmtree(os.path.join(b, "dst")))
        t.do("rmtree-ignore", lambda: shutil.rmtree(os.path.join(b, "dst"), ignore_errors=True))
        t.do("rmtree-file", lambda: shutil.rmtree(os.path.join(b, "moved.txt")))
        errs = []
        shutil.rmtree(os.path.join(b, "zzz"), onerror=lambda f, p, e: errs.append(
            (f.__name__, p.replace(b, "<b>"), e[0].__name__)))
        t.note("rmtree-onerror", errs)
        t.do("disk_usage-listing", lambda: sorted(os.listdir(b)))
    tr = compare(scenario)
    assert tr.result("copied")[2].startswith("src/sub/deep/c.py")
    assert tr.result("copyfile-same")[2] == "SameFileError"


def test_pathlib(compare):
    def scenario(b, t):
        base = pathlib.Path(b)
        p = base / "dir" / "f.txt"
        t.do("mkdir-parents", lambda: p.parent.mkdir(parents=True))
        t.do("mkdir-exists", lambda: p.parent.mkdir())
        t.do("mkdir-exist-ok", lambda: p.parent.mkdir(exist_ok=True))
        t.do("write_text", lambda: p.write_text("hi"))
        t.do("read_text", p.read_text)
        t.do("write_bytes", lambda: p.write_bytes(b"\x00bin"))
        t.do("read_bytes", p.read_bytes)
        t.do("exists", p.exists)
        t.do("is_file", p.is_file)
        t.do("is_dir", p.parent.is_dir)
        t.do("is_symlink", p.is_symlink)
        t.do("stat-size", lambda: p.stat().st_size)
        t.do("iterdir", lambda: sorted(str(x) for x in base.iterdir()))
        t.do("glob", lambda: sorted(str(x) for x in base.glob("*/*.txt")))
        t.do("rglob", lambda: sorted(str(x) for x in base.rglob("*")))
        t.do("touch-new", lambda: (base / "t").touch())
        t.do("touch-exists", lambda: (base / "t").touch())
        t.do("touch-excl", lambda: (base / "t").touch(exist_ok=False))
        t.do("touch-size", lambda: (base / "t").stat().st_size)
        t.do("open-ctx", lambda: (p.open("a").write("!"), p.read_bytes())[1])
        t.do("rename", lambda: str(p.rename(base / "r.txt")))
        t.do("replace", lambda: str((base / "r.txt").replace(base / "t")))
        t.do("samefile", lambda: (base / "t").samefile(str(base / "t")))
        t.do("resolve", lambda: str((base / "dir" / ".." / "t").resolve()))
        t.do("unlink", lambda: (base / "t").unlink())
        t.do("unlink-missing", lambda: (base / "t").unlink())
        t.do("unlink-missing-ok", lambda: (base / "t").unlink(missing_ok=True))
        t.do("rmdir", lambda: (base / "dir").rmdir())
        t.do("exists-after", lambda: (base / "dir").exists())
    tr = compare(scenario)
    assert tr.result("touch-excl")[2] == "FileExistsError"
