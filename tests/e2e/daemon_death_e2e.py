#!/usr/bin/python3
"""Daemon death while mounted: kill -9 the daemon under busy readers and a
writer; every one of them must get an error within a deadline (no hang), the
mount must go away (auto_unmount, the default) or be removable with
`fusermount3 -u` (no_auto_unmount: "Transport endpoint is not connected"),
and a remount must serve the same bytes.

Usage: daemon_death_e2e.py --lineagefs PATH [--keep]
Prints 'N passed, M failed' last.
"""
import argparse
import errno
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                                "scripts", "reliability"))
import lfs_testlib as T  # noqa: E402

STUCK_S = 20  # a client still running this long after the kill is a hang
results = []

# Clients: loop until an OSError; print its errno name (or TIMEOUT) and exit.
CLIENT = r'''
import errno, os, sys, time
kind, path = sys.argv[1], sys.argv[2]
print("READY", flush=True)
t_end = time.monotonic() + float(sys.argv[3])
try:
    if kind == "reader":
        fd = os.open(path, os.O_RDONLY)
        size = os.fstat(fd).st_size
        while time.monotonic() < t_end:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            off = 0
            while off < size:
                b = os.pread(fd, 1 << 20, off)
                if not b:
                    raise SystemExit("short read")
                off += len(b)
    elif kind == "lister":
        while time.monotonic() < t_end:  # not os.walk: it swallows errors
            for f in os.listdir(path):
                os.lstat(os.path.join(path, f))
    elif kind == "writer":
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
        off = 0
        while time.monotonic() < t_end:
            off += os.pwrite(fd, b"w" * 65536, off)
            if off > (64 << 20):
                off = 0
    print("TIMEOUT", flush=True)
except OSError as e:
    print(errno.errorcode.get(e.errno, str(e.errno)), flush=True)
'''


def check(name, ok, detail=""):
    results.append((name, ok, detail))
    print(f"{'ok  ' if ok else 'FAIL'} {name}{'' if ok else ': ' + detail}", flush=True)


def sha(path):
    return T.sha256_file(path)[0]


def kill_under_load(lfs, store, mnt, work, opts, label, want_hash):
    m = T.Mount(lfs, store, mnt, f"{work}/daemon.log", extra_opts=opts)
    m.start(timeout=60)
    target = f"{mnt}/m/v1/big.bin"
    os.mkdir(f"{mnt}/m/{label}")
    clients = []
    for kind, path in (("reader", target), ("reader", target), ("lister", f"{mnt}/m/v1"),
                       ("writer", f"{mnt}/m/{label}/w.bin")):
        p = subprocess.Popen(["/usr/bin/python3", "-c", CLIENT, kind, path, "120"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = p.stdout.readline().strip()
        if line != "READY":
            raise RuntimeError(f"{kind} did not start: {line} {p.stderr.read()[-500:]}")
        clients.append((kind, p))
    time.sleep(1.0)  # every client is inside its loop, most inside a request
    pid = m.proc.pid
    m.kill9()
    t_kill = time.monotonic()
    outcomes = []
    for kind, p in clients:
        try:
            out, err = p.communicate(timeout=max(1, STUCK_S - (time.monotonic() - t_kill)))
            outcomes.append((kind, out.strip() or f"exit {p.returncode}: {err.strip()[-200:]}"))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            outcomes.append((kind, "HANG"))
    waited = time.monotonic() - t_kill
    print(f"  {label}: daemon {pid} killed; clients: {outcomes} after {waited:.1f}s")
    check(f"{label}: every client got an error, none hung",
          all(o not in ("HANG", "TIMEOUT") and not o.startswith("exit") for _, o in outcomes),
          str(outcomes))
    allowed = {"ENOTCONN", "ECONNABORTED", "EIO", "ENOENT"}
    check(f"{label}: the errors are ENOTCONN/ECONNABORTED/EIO/ENOENT",
          all(o in allowed for _, o in outcomes if o not in ("HANG", "TIMEOUT")), str(outcomes))
    return m


def run(lfs, work):
    store, mnt = f"{work}/store", f"{work}/mnt"
    cli = T.Lfs(lfs, store)
    cli.init()
    os.makedirs(f"{work}/src")
    with open(f"{work}/src/big.bin", "wb") as f:
        f.write(os.urandom(24 << 20))
    want = sha(f"{work}/src/big.bin")
    cli.run("import", store, f"{work}/src", "--model", "m", check=True, timeout=300)

    # 1. auto_unmount (the default): the mount goes away by itself.
    kill_under_load(lfs, store, mnt, work, "log_level=info", "auto_unmount", want)
    t_end = time.monotonic() + 15
    while T.is_mounted(mnt) and time.monotonic() < t_end:
        time.sleep(0.1)
    check("auto_unmount: the dead mount is gone within 15 s", not T.is_mounted(mnt))
    m = T.Mount(lfs, store, mnt, f"{work}/daemon.log", extra_opts="log_level=info")
    m.start(timeout=60)
    try:
        check("auto_unmount: remount serves the same bytes", sha(f"{mnt}/m/v1/big.bin") == want)
        check("auto_unmount: the killed writer's draft is still there (a draft)",
              os.getxattr(f"{mnt}/m/auto_unmount", "user.lineage.state") == b"draft")
    finally:
        m.stop()

    # 2. no_auto_unmount: ENOTCONN until `fusermount3 -u`, the documented way out.
    dead = kill_under_load(lfs, store, mnt, work, "no_auto_unmount,log_level=info", "no_auto_unmount", want)
    time.sleep(0.5)
    check("no_auto_unmount: the dead mount stays mounted", T.is_mounted(mnt))
    try:
        os.stat(mnt)
        check("no_auto_unmount: stat of the dead mount is ENOTCONN", False, "stat succeeded")
    except OSError as e:
        check("no_auto_unmount: stat of the dead mount is ENOTCONN", e.errno == errno.ENOTCONN,
              errno.errorcode.get(e.errno, str(e.errno)))
    p = subprocess.run(["fusermount3", "-u", mnt], capture_output=True, text=True, timeout=30)
    check("no_auto_unmount: fusermount3 -u removes the dead mount",
          p.returncode == 0 and not T.is_mounted(mnt), p.stderr.strip())
    dead.proc = None
    m = T.Mount(lfs, store, mnt, f"{work}/daemon.log", extra_opts="log_level=info")
    m.start(timeout=60)
    try:
        check("no_auto_unmount: remount serves the same bytes", sha(f"{mnt}/m/v1/big.bin") == want)
    finally:
        m.stop()
    ok, out = cli.fsck()
    check("fsck after two daemon deaths", ok, out[-500:])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lineagefs", default=T.DEFAULT_LINEAGEFS)
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="lfs-death-")
    try:
        lfs = T.snapshot_binary(os.path.abspath(args.lineagefs), f"{work}/bin")
        run(lfs, work)
    except Exception as e:  # noqa: BLE001
        traceback.print_exc()
        check("daemon death test ran to the end", False, repr(e))
    finally:
        T.force_unmount(f"{work}/mnt")
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    p = sum(1 for _, ok, _ in results if ok)
    f = len(results) - p
    print(f"{p} passed, {f} failed")
    return 1 if f else 0


if __name__ == "__main__":
    sys.exit(main())
