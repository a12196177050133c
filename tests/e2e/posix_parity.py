#!/usr/bin/python3
"""POSIX parity: the same syscall sequences on a lineagefs mount and on the
local disk file system (ext4 here), comparing return values and errno.

In the spirit of mergerfs' POSIX-parity tests (pjdfstest is not packaged in
Debian). Each case runs twice: with ROOT = a model folder of the mount and
with ROOT = a fresh directory on the local disk; a case makes its own folder
ROOT/<case> (on the mount: a draft version) and records observations (label,
value or errno name). Every observation must be equal on both sides, unless
the pair is listed in EXPECTED with the value the mount must give and why.
Committed trees are compared with an exported copy of the same version:
reads must match, every change must be EROFS on the mount.

Usage: posix_parity.py --lineagefs PATH [--keep] [--ref-dir DIR] [-v]
Prints one line per mismatch, pass / expected-difference / fail counts, and
'N passed, M failed' last; exits 1 on any unexpected difference.
"""
import argparse
import errno
import hashlib
import os
import random
import shutil
import stat
import subprocess
import sys
import tempfile
import time
import traceback

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                                "scripts", "reliability"))
import lfs_testlib as T  # noqa: E402

MODEL = "pp"
DEADLINE_S = 300

# (case, label) -> (what the mount gives, why it differs from ext4).
EXPECTED = {
    ("mkdir_in_draft", "mkdir sub"): ("EPERM", "a version holds a flat set of files (LAYOUT.md)"),
    ("mkdir_in_draft", "rmdir sub"): ("ENOENT", "follows from the refused mkdir"),
    ("mkdir_in_draft", "create sub/f"): ("ENOENT", "follows from the refused mkdir"),
    ("rename_across_dirs", "rename d1/a d2/a"): ("EXDEV", "files move only within one draft"),
    ("rename_across_dirs", "listdir d1"): (["a"], "follows from EXDEV"),
    ("rename_across_dirs", "listdir d2"): ([], "follows from EXDEV"),
    ("rename_dir_over_dir", "rename d1 d2"): (
        "EROFS", "renaming a draft folder is not supported (versions keep their names)"),
    ("symlink_link_mknod", "symlink x"): ("EINVAL", "only parent, parent.N links (lineage) can be made"),
    ("symlink_link_mknod", "readlink x"): ("ENOENT", "follows from the refused symlink"),
    ("symlink_link_mknod", "link f g"): ("EPERM", "no hard links: a file lives in one version"),
    ("symlink_link_mknod", "stat g"): ("ENOENT", "follows from the refused link"),
    ("symlink_link_mknod", "nlink f after link"): (1, "follows from the refused link"),
    ("symlink_link_mknod", "mkfifo p"): ("EPERM", "only regular files are stored"),
    ("chmod_utimens", "mode after chmod 600"): (
        0o644, "modes of draft files are accepted and not kept (cp -a must not fail)"),
    ("chmod_utimens", "mtime after utime"): (
        "version time", "a version's files take their times from the version"),
    ("dir_stat", "nlink dir"): (1, "st_nlink is 1 for every folder (LAYOUT.md: rsync stability)"),
    ("dir_stat", "nlink dir with 2 files"): (1, "st_nlink is 1 for every folder"),
    ("dir_stat", "mode dir 0700"): (0o755, "draft folders are always 0755 (LAYOUT.md: ownership)"),
    ("dir_stat", "mode file 0600"): (0o644, "draft files are always 0644; create modes are not kept"),
}


def eno(e):
    return errno.errorcode.get(e.errno, str(e.errno))


class Rec:
    """Observations of one case on one side."""

    def __init__(self, root):
        self.root = root
        self.obs = []

    def p(self, *parts):
        return os.path.join(self.root, *parts)

    def do(self, label, fn, *a):
        try:
            r = fn(*a)
        except OSError as e:
            r = eno(e)
        self.obs.append((label, r))
        return r

    def note(self, label, value):
        self.obs.append((label, value))


def wfile(path, data, flags=os.O_WRONLY | os.O_CREAT | os.O_TRUNC):
    fd = os.open(path, flags, 0o644)
    try:
        return os.write(fd, data)
    finally:
        os.close(fd)


def rfile(path):
    with open(path, "rb") as f:
        return f.read()


def size_of(path):
    return os.stat(path).st_size


def close_ok(fd):
    os.close(fd)
    return 0


# --- cases on drafts -----------------------------------------------------------

def c_open_flags(r):
    d = r.p("c")
    r.do("mkdir", os.mkdir, d)
    a = os.path.join(d, "a")
    r.do("create write", wfile, a, b"hello")
    r.do("O_CREAT|O_EXCL existing", lambda: close_ok(os.open(a, os.O_WRONLY | os.O_CREAT | os.O_EXCL)))
    r.do("O_CREAT|O_EXCL new", lambda: close_ok(os.open(os.path.join(d, "x"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)))
    r.do("size x", size_of, os.path.join(d, "x"))
    r.do("O_RDONLY missing", lambda: close_ok(os.open(os.path.join(d, "missing"), os.O_RDONLY)))
    r.do("O_WRONLY missing", lambda: close_ok(os.open(os.path.join(d, "missing"), os.O_WRONLY)))
    r.do("O_RDONLY|O_TRUNC", lambda: close_ok(os.open(a, os.O_RDONLY)))
    r.do("read a", rfile, a)
    r.do("O_WRONLY|O_TRUNC", lambda: close_ok(os.open(a, os.O_WRONLY | os.O_TRUNC)))
    r.do("size after O_TRUNC", size_of, a)
    r.do("write abc", wfile, a, b"abc")
    r.do("O_APPEND def", wfile, a, b"def", os.O_WRONLY | os.O_APPEND)
    r.do("read after append", rfile, a)

    def append_pwrite():
        fd = os.open(a, os.O_WRONLY | os.O_APPEND)
        try:
            os.pwrite(fd, b"XY", 0)  # Linux: O_APPEND wins over the offset
        finally:
            os.close(fd)
        return rfile(a)
    r.do("pwrite at 0 with O_APPEND", append_pwrite)

    def rdwr_same_fd():
        fd = os.open(a, os.O_RDWR)
        try:
            os.write(fd, b"12")
            os.lseek(fd, 0, os.SEEK_SET)
            got = os.read(fd, 100)
            end = os.lseek(fd, 0, os.SEEK_END)
            return [got, end, os.fstat(fd).st_size]
        finally:
            os.close(fd)
    r.do("O_RDWR write then read same fd", rdwr_same_fd)

    def bad_fd_modes():
        out = []
        fd = os.open(a, os.O_RDONLY)
        try:
            try:
                os.write(fd, b"z")
                out.append(0)
            except OSError as e:
                out.append(eno(e))
        finally:
            os.close(fd)
        fd = os.open(a, os.O_WRONLY)
        try:
            try:
                os.read(fd, 1)
                out.append(0)
            except OSError as e:
                out.append(eno(e))
        finally:
            os.close(fd)
        return out
    r.do("write on O_RDONLY, read on O_WRONLY", bad_fd_modes)
    r.do("O_CREAT on a directory", lambda: close_ok(os.open(d, os.O_WRONLY | os.O_CREAT, 0o644)))
    r.do("O_WRONLY on a directory", lambda: close_ok(os.open(d, os.O_WRONLY)))
    r.do("O_DIRECTORY on a file", lambda: close_ok(os.open(a, os.O_RDONLY | os.O_DIRECTORY)))
    r.do("open through a file", lambda: close_ok(os.open(os.path.join(a, "x"), os.O_RDONLY)))
    r.do("create through a file", lambda: close_ok(os.open(os.path.join(a, "x"), os.O_WRONLY | os.O_CREAT, 0o644)))
    r.do("name of 255 bytes", wfile, os.path.join(d, "n" * 255), b"1")
    r.do("name of 256 bytes create", wfile, os.path.join(d, "n" * 256), b"1")
    r.do("name of 256 bytes stat", os.stat, os.path.join(d, "n" * 256))
    r.do("listdir", lambda: sorted(os.listdir(d)))


def c_offsets_holes(r):
    d = r.p("c")
    r.do("mkdir", os.mkdir, d)
    f = os.path.join(d, "h")
    rng = random.Random(7)
    big = bytes(rng.getrandbits(8) for _ in range(3 << 20))

    def seq():
        out = []
        fd = os.open(f, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            out.append(os.pwrite(fd, b"tail", 10000))           # a hole before it
            out.append(os.fstat(fd).st_size)
            out.append(os.pread(fd, 20, 9990))
            out.append(os.pread(fd, 10, 20000))                  # past EOF
            out.append(os.pwrite(fd, big, 4096))                 # over the hole and past
            out.append(os.fstat(fd).st_size)
            for _ in range(50):
                off = rng.randrange(0, (3 << 20) + 8192)
                n = rng.randrange(1, 300000)
                out.append(hashlib.sha256(os.pread(fd, n, off)).hexdigest()[:16])
            out.append(os.lseek(fd, 100, os.SEEK_SET))
            out.append(os.write(fd, b"at100"))
            out.append(os.lseek(fd, 0, os.SEEK_CUR))
            os.fsync(fd)
            os.fdatasync(fd)
        finally:
            os.close(fd)
        return out
    r.do("pwrite/pread with holes, random offsets", seq)
    r.do("sha256 after close", lambda: hashlib.sha256(rfile(f)).hexdigest())
    r.do("size after close", size_of, f)

    def reopen_partial():
        fd = os.open(f, os.O_WRONLY)
        try:
            os.pwrite(fd, b"Q" * 70000, 1 << 20)
        finally:
            os.close(fd)
        return hashlib.sha256(rfile(f)).hexdigest()
    r.do("rewrite the middle of a closed file", reopen_partial)


def c_truncate(r):
    d = r.p("c")
    r.do("mkdir", os.mkdir, d)
    f = os.path.join(d, "t")
    r.do("write", wfile, f, b"0123456789")

    def ftr(n):
        fd = os.open(f, os.O_RDWR)
        try:
            os.ftruncate(fd, n)
            return [os.fstat(fd).st_size, os.pread(fd, 200, 0)]
        finally:
            os.close(fd)
    r.do("ftruncate grow 100", ftr, 100)
    r.do("ftruncate shrink 3", ftr, 3)
    r.do("read after shrink", rfile, f)
    r.do("truncate path 5000", os.truncate, f, 5000)
    r.do("size 5000", size_of, f)
    r.do("truncate path 0", os.truncate, f, 0)
    r.do("read after 0", rfile, f)
    r.do("truncate missing", os.truncate, os.path.join(d, "missing"), 0)
    r.do("truncate directory", os.truncate, d, 0)
    r.do("truncate negative", os.truncate, f, -1)

    def write_after_shrink():
        fd = os.open(f, os.O_RDWR)
        try:
            os.write(fd, b"abcdefgh")
            os.ftruncate(fd, 2)
            os.write(fd, b"ZZ")  # the offset is still 8: a hole from 2 to 8
            return [os.fstat(fd).st_size, os.pread(fd, 20, 0)]
        finally:
            os.close(fd)
    r.do("write past a shrink on the same fd", write_after_shrink)


def c_rename(r):
    d = r.p("c")
    r.do("mkdir", os.mkdir, d)
    a, b, c = (os.path.join(d, n) for n in "abc")
    r.do("write a", wfile, a, b"A")
    r.do("write c", wfile, c, b"CC")
    r.do("rename a b", os.rename, a, b)
    r.do("stat a", os.stat, a)
    r.do("read b", rfile, b)
    r.do("rename b over c", os.rename, b, c)
    r.do("read c", rfile, c)
    r.do("listdir", lambda: sorted(os.listdir(d)))
    r.do("rename c c", os.rename, c, c)
    r.do("read c again", rfile, c)
    r.do("rename missing", os.rename, os.path.join(d, "missing"), a)
    r.do("rename into a file path", os.rename, c, os.path.join(c, "x"))
    r.do("rename file over dir", os.rename, c, d)
    r.do("rename dir into itself", os.rename, d, os.path.join(d, "sub"))
    r.do("rename to a 256-byte name", os.rename, c, os.path.join(d, "n" * 256))

    def rename_open():
        fd = os.open(c, os.O_RDWR)
        try:
            os.rename(c, a)
            os.write(fd, b"W")
        finally:
            os.close(fd)
        return [sorted(os.listdir(d)), rfile(a)]
    r.do("rename an open file, write, close", rename_open)

    def rename_over_open():
        wfile(b, b"new")
        fd = os.open(a, os.O_RDWR)
        try:
            os.rename(b, a)  # replaces the open file
            os.write(fd, b"lost")
        finally:
            os.close(fd)
        return [sorted(os.listdir(d)), rfile(a)]
    r.do("rename over an open file", rename_over_open)


def c_rename_across_dirs(r):
    d1, d2 = r.p("d1"), r.p("d2")
    r.do("mkdir d1", os.mkdir, d1)
    r.do("mkdir d2", os.mkdir, d2)
    r.do("write", wfile, os.path.join(d1, "a"), b"x")
    r.do("rename d1/a d2/a", os.rename, os.path.join(d1, "a"), os.path.join(d2, "a"))
    r.do("listdir d1", lambda: sorted(os.listdir(d1)))
    r.do("listdir d2", lambda: sorted(os.listdir(d2)))


def c_rename_dir_over_dir(r):
    d1, d2 = r.p("d1"), r.p("d2")
    r.do("mkdir d1", os.mkdir, d1)
    r.do("mkdir d2", os.mkdir, d2)
    r.do("write", wfile, os.path.join(d2, "a"), b"x")
    r.do("rename d1 d2", os.rename, d1, d2)  # ext4: ENOTEMPTY


def c_unlink_rmdir(r):
    d = r.p("c")
    r.do("mkdir", os.mkdir, d)
    r.do("mkdir again", os.mkdir, d)
    f = os.path.join(d, "f")
    r.do("write", wfile, f, b"data")
    r.do("rmdir non-empty", os.rmdir, d)
    r.do("rmdir a file", os.rmdir, f)
    r.do("unlink a dir", os.unlink, d)
    r.do("unlink", os.unlink, f)
    r.do("unlink again", os.unlink, f)
    r.do("stat unlinked", os.stat, f)

    def unlink_open():
        fd = os.open(f, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            os.write(fd, b"0123")
            os.unlink(f)
            os.write(fd, b"45")
            got = os.pread(fd, 10, 0)
            st = os.fstat(fd)
            os.ftruncate(fd, 3)
            return [got, sorted(os.listdir(d)), st.st_size, st.st_nlink, os.fstat(fd).st_size]
        finally:
            os.close(fd)
    r.do("unlink an open file, keep using the fd", unlink_open)
    r.do("listdir after close", lambda: sorted(os.listdir(d)))
    r.do("rmdir empty", os.rmdir, d)
    r.do("rmdir again", os.rmdir, d)
    r.do("stat removed", os.stat, d)
    r.do("rmdir missing", os.rmdir, r.p("never"))
    r.do("mkdir 256-byte name", os.mkdir, r.p("n" * 256))


def c_mkdir_in_draft(r):
    d = r.p("c")
    r.do("mkdir", os.mkdir, d)
    r.do("mkdir sub", os.mkdir, os.path.join(d, "sub"))
    r.do("create sub/f", wfile, os.path.join(d, "sub", "f"), b"x")
    r.do("rmdir sub", os.rmdir, os.path.join(d, "sub"))


def c_symlink_link_mknod(r):
    d = r.p("c")
    r.do("mkdir", os.mkdir, d)
    f, g = os.path.join(d, "f"), os.path.join(d, "g")
    r.do("write", wfile, f, b"x")
    r.do("symlink x", os.symlink, "f", os.path.join(d, "x"))
    r.do("readlink x", os.readlink, os.path.join(d, "x"))
    r.do("link f g", os.link, f, g)
    r.do("stat g", lambda: os.stat(g).st_size)
    r.do("nlink f after link", lambda: os.stat(f).st_nlink)
    r.do("mkfifo p", os.mkfifo, os.path.join(d, "p"))
    r.do("link over existing", os.link, f, f)
    r.do("symlink over existing", os.symlink, "g", f)


def c_chmod_utimens(r):
    d = r.p("c")
    r.do("mkdir", os.mkdir, d)
    f = os.path.join(d, "f")
    r.do("write", wfile, f, b"x")
    r.do("chmod 600", os.chmod, f, 0o600)
    r.note("mode after chmod 600", stat.S_IMODE(os.stat(f).st_mode))
    r.do("utime", os.utime, f, (1000000000, 1000000000))
    mt = os.stat(f).st_mtime_ns
    r.note("mtime after utime", mt if mt == 1000000000 * 10**9 else "version time")
    r.do("chmod missing", os.chmod, os.path.join(d, "missing"), 0o600)
    r.do("utime missing", os.utime, os.path.join(d, "missing"), None)


def c_dir_stat(r):
    d = r.p("c")
    r.do("mkdir", os.mkdir, d, 0o700)
    r.do("type dir", lambda: stat.S_ISDIR(os.stat(d).st_mode))
    r.note("nlink dir", os.stat(d).st_nlink)
    r.note("mode dir 0700", stat.S_IMODE(os.stat(d).st_mode))
    os.chmod(d, 0o755)  # the reference's folder back to what the mount shows
    f = os.path.join(d, "f")
    r.do("write", lambda: os.close(os.open(f, os.O_WRONLY | os.O_CREAT, 0o600)) or wfile(f, b"x" * 12345))
    wfile(os.path.join(d, "g"), b"")
    st = os.stat(f)
    r.note("file: type, size, nlink", [stat.S_ISREG(st.st_mode), st.st_size, st.st_nlink])
    r.note("mode file 0600", stat.S_IMODE(st.st_mode))
    r.note("nlink dir with 2 files", os.stat(d).st_nlink)
    st = os.stat(os.path.join(d, "g"))
    r.note("empty file: size, blocks", [st.st_size, st.st_blocks])
    r.do("listdir", lambda: sorted(os.listdir(d)))
    r.do("scandir types", lambda: sorted((e.name, e.is_file(), e.is_dir()) for e in os.scandir(d)))
    r.do("stat missing", os.stat, os.path.join(d, "missing"))
    r.do("stat through a file", os.stat, os.path.join(f, "x"))
    r.do("listdir a file", os.listdir, f)
    r.do("access W_OK", os.access, f, os.W_OK)


CASES = [("open_flags", c_open_flags), ("offsets_holes", c_offsets_holes),
         ("truncate", c_truncate), ("rename", c_rename), ("rename_across_dirs", c_rename_across_dirs),
         ("rename_dir_over_dir", c_rename_dir_over_dir), ("unlink_rmdir", c_unlink_rmdir),
         ("mkdir_in_draft", c_mkdir_in_draft), ("symlink_link_mknod", c_symlink_link_mknod),
         ("chmod_utimens", c_chmod_utimens), ("dir_stat", c_dir_stat)]


# --- committed trees -----------------------------------------------------------

def committed_reads(root, names, rng_seed):
    """Read-side observations on a version folder (mount) or its export (ext4)."""
    r = Rec(root)
    rng = random.Random(rng_seed)
    for n in names:
        p = r.p(n)
        st = os.stat(p)
        r.note(f"{n}: type, size, nlink", [stat.S_ISREG(st.st_mode), st.st_size, st.st_nlink])
        r.do(f"{n}: sha256", lambda: hashlib.sha256(rfile(p)).hexdigest())

        def preads():
            out = []
            fd = os.open(p, os.O_RDONLY)
            try:
                for _ in range(30):
                    off = rng.randrange(0, st.st_size + 100)
                    out.append(hashlib.sha256(os.pread(fd, rng.randrange(1, 1 << 18), off)).hexdigest()[:16])
                out.append(os.lseek(fd, 0, os.SEEK_END))
            finally:
                os.close(fd)
            return out
        r.do(f"{n}: random preads", preads)
    return r


def committed_writes(root, name):
    """Every change: the mount must answer EROFS (ext4 lets them all through)."""
    r = Rec(root)
    p = r.p(name)
    r.do("open O_WRONLY", lambda: close_ok(os.open(p, os.O_WRONLY)))
    r.do("open O_RDWR", lambda: close_ok(os.open(p, os.O_RDWR)))
    r.do("open O_RDONLY|O_TRUNC", lambda: close_ok(os.open(p, os.O_RDONLY | os.O_TRUNC)))
    r.do("create", wfile, r.p("new.bin"), b"x")
    r.do("truncate", os.truncate, p, 0)
    r.do("rename", lambda: os.rename(p, r.p("moved")) or os.rename(r.p("moved"), p))
    r.do("mkdir", os.mkdir, r.p("sub"))
    r.do("symlink", os.symlink, "x", r.p("lnk"))
    r.do("chmod", os.chmod, p, 0o600)
    r.do("utime", os.utime, p, (1, 1))
    r.do("setxattr", os.setxattr, p, "user.test", b"1")
    r.do("unlink", os.unlink, p)  # last: the reference loses the file
    return r


def compare(case, ref, mnt, counts, verbose, expected=None):
    expected = EXPECTED if expected is None else expected
    if [l for l, _ in ref.obs] != [l for l, _ in mnt.obs]:
        print(f"FAIL {case}: different step sequences {[l for l, _ in ref.obs]} vs {[l for l, _ in mnt.obs]}")
        counts["fail"] += 1
        return
    for (label, rv), (_, mv) in zip(ref.obs, mnt.obs):
        key = (case, label)
        short = lambda v: (repr(v)[:120])  # noqa: E731
        if key in expected:
            want, why = expected[key]
            if mv == want and rv != mv:
                counts["expected"] += 1
                if verbose:
                    print(f"diff {case}: {label}: ext4 {short(rv)}, mount {short(mv)} (expected: {why})")
            elif mv == rv:
                counts["fail"] += 1
                print(f"FAIL {case}: {label}: listed as a difference but both gave {short(mv)} "
                      f"(update EXPECTED)")
            else:
                counts["fail"] += 1
                print(f"FAIL {case}: {label}: mount {short(mv)}, expected {short(want)} ({why}); ext4 {short(rv)}")
        elif rv == mv:
            counts["pass"] += 1
            if verbose:
                print(f"ok   {case}: {label}: {short(rv)}")
        else:
            counts["fail"] += 1
            print(f"FAIL {case}: {label}: ext4 {short(rv)}, mount {short(mv)}")


def run(lfs, work, ref_dir, verbose):
    store, mnt = f"{work}/store", f"{work}/mnt"
    cli = T.Lfs(lfs, store)
    cli.init()
    src = f"{work}/src"
    os.makedirs(src)
    rng = random.Random(1)
    with open(f"{src}/weights.bin", "wb") as f:
        f.write(bytes(rng.getrandbits(8) for _ in range(3 << 20)))
    with open(f"{src}/config.json", "w") as f:
        f.write('{"hidden": 8}\n')
    with open(f"{src}/empty.txt", "w"):
        pass
    cli.run("import", store, src, "--model", "base", check=True)
    export = os.path.join(ref_dir, "export")
    cli.run("export", store, "base/v1", export, check=True)
    counts = {"pass": 0, "expected": 0, "fail": 0}
    m = T.Mount(lfs, store, mnt, f"{work}/daemon.log", extra_opts="log_level=info")
    m.start(timeout=60)
    try:
        os.mkdir(os.path.join(mnt, MODEL))
        for name, fn in CASES:
            ref_root = os.path.join(ref_dir, name)
            os.makedirs(ref_root)
            ref, mo = Rec(ref_root), Rec(os.path.join(mnt, MODEL))
            fn(ref)
            fn(_Prefixed(mo, name))  # the case's drafts carry its name: none is shared
            compare(name, ref, mo, counts, verbose)
        names = sorted(os.listdir(export))
        compare("committed reads", committed_reads(export, names, 5),
                committed_reads(os.path.join(mnt, "base", "v1"), names, 5), counts, verbose)
        ro = {}
        for label in ("open O_WRONLY", "open O_RDWR", "open O_RDONLY|O_TRUNC", "create", "truncate",
                      "unlink", "rename", "mkdir", "symlink", "chmod", "utime", "setxattr"):
            ro[("committed writes", label)] = ("EROFS", "committed versions are immutable")
        compare("committed writes", committed_writes(export, "weights.bin"),
                committed_writes(os.path.join(mnt, "base", "v1"), "weights.bin"), counts, verbose,
                expected=ro)
        extra = sorted(set(os.listdir(os.path.join(mnt, "base", "v1"))) - set(names))
        ok = "children" in extra and set(extra) <= {"children", "tensors", "views"}
        counts["expected" if ok else "fail"] += 1
        print(f"{'diff' if ok else 'FAIL'} committed listing: the mount adds {extra} "
              f"(derived folders, LAYOUT.md){'' if ok else ', expected children [tensors] [views]'}")
        if not m.alive():
            counts["fail"] += 1
            print("FAIL the daemon died during the suite")
    finally:
        m.stop()
    ok, out = cli.fsck()
    counts["pass" if ok else "fail"] += 1
    if not ok:
        print(f"FAIL fsck after the suite: {out[-500:]}")
    return counts


class _Prefixed:
    """A Rec whose p() puts the case's folders under a per-case name, so that
    every case gets fresh drafts on the mount (a model holds all of them)."""

    def __init__(self, rec, case):
        self._rec, self._case = rec, case

    def p(self, *parts):
        if parts:
            parts = (f"{self._case}-{parts[0]}",) + parts[1:]
        return self._rec.p(*parts)

    def __getattr__(self, k):
        return getattr(self._rec, k)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lineagefs", default=T.DEFAULT_LINEAGEFS)
    ap.add_argument("--ref-dir", help="directory on the reference file system (default: under /tmp)")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="lfs-posix-")
    ref_dir = tempfile.mkdtemp(prefix="lfs-posix-ref-", dir=args.ref_dir)
    t0 = time.monotonic()
    counts = {"pass": 0, "expected": 0, "fail": 0}
    try:
        import signal
        signal.signal(signal.SIGALRM, lambda *_: (_ for _ in ()).throw(TimeoutError("deadline")))
        signal.alarm(DEADLINE_S)
        lfs = T.snapshot_binary(os.path.abspath(args.lineagefs), f"{work}/bin")
        fstype = subprocess.run(["stat", "-f", "-c", "%T", ref_dir], capture_output=True,
                                text=True).stdout.strip()
        print(f"reference file system: {fstype} ({ref_dir})")
        counts = run(lfs, work, ref_dir, args.verbose)
    except Exception as e:  # noqa: BLE001
        traceback.print_exc()
        print(f"FAIL the suite did not run to the end: {e!r}")
        counts["fail"] += 1
    finally:
        T.force_unmount(f"{work}/mnt")
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
            shutil.rmtree(ref_dir, ignore_errors=True)
    print(f"POSIX pass={counts['pass']} expected_differences={counts['expected']} "
          f"fail={counts['fail']} seconds={time.monotonic() - t0:.0f}")
    print(f"{counts['pass'] + counts['expected']} passed, {counts['fail']} failed")
    return 1 if counts["fail"] else 0


if __name__ == "__main__":
    sys.exit(main())
