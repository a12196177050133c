#!/usr/bin/python3
"""Permissions on a real mount, checked as two throwaway users.

Run as root (CI is root): creates two system users (removed at the end),
mounts a small store three times -- default options, -o allow_other, and
-o allow_other,shared -- and checks with `setpriv --reuid/--regid
--clear-groups` what another user can and cannot do:

  default        others get EACCES on the mount root (the kernel's check)
  allow_other    others read committed content; default_permissions keeps
                 them out of the mounting user's drafts and of committed
                 content (EACCES), and from making models or drafts
  shared         others make models and drafts that are theirs (uid/gid of
                 the mkdir caller, kept across remounts); a third user cannot
                 write, create in, remove or rename them; a commit gives
                 the version back to the mounting user, read-only

Usage: permissions_e2e.py --lineagefs PATH [--keep]
Prints 'N passed, M failed' last; exits 1 on a failure, 77 when not root.
"""
import argparse
import errno
import json
import os
import pwd
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

DEADLINE_S = 300
results = []

# Runs as the throwaway user: each op is [name, fn, args...]; prints one JSON
# list with 0 or the errno name per op (and what stat returned).
AGENT = r'''
import errno, json, os, sys
out = []
for op in json.loads(sys.argv[1]):
    name, fn, args = op[0], op[1], op[2:]
    try:
        r = 0
        if fn == "stat":
            st = os.lstat(args[0]); r = {"uid": st.st_uid, "gid": st.st_gid, "mode": st.st_mode}
        elif fn == "listdir": os.listdir(args[0])
        elif fn == "read": r = open(args[0], "rb").read().hex()
        elif fn == "write":
            fd = os.open(args[0], os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if args[2] else os.O_APPEND), 0o644)
            try:
                os.write(fd, bytes.fromhex(args[1]))
            finally:
                os.close(fd)
        elif fn == "open_w": os.close(os.open(args[0], os.O_WRONLY))
        elif fn == "truncate": os.truncate(args[0], args[1])
        elif fn == "mkdir": os.mkdir(args[0])
        elif fn == "rmdir": os.rmdir(args[0])
        elif fn == "unlink": os.unlink(args[0])
        elif fn == "rename": os.rename(args[0], args[1])
        elif fn == "symlink": os.symlink(args[0], args[1])
        elif fn == "setxattr": os.setxattr(args[0], args[1], args[2].encode())
        elif fn == "chmod": os.chmod(args[0], args[1])
        else: raise SystemExit("unknown op " + fn)
    except OSError as e:
        r = errno.errorcode.get(e.errno, str(e.errno))
    out.append([name, r])
print(json.dumps(out))
'''


def check(name, ok, detail=""):
    results.append((name, ok, detail))
    print(f"{'ok  ' if ok else 'FAIL'} {name}{'' if ok else ': ' + detail}", flush=True)


class User:
    def __init__(self, name):
        self.name = name
        subprocess.run(["userdel", name], capture_output=True)
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                        "--user-group", name], check=True, capture_output=True)
        pw = pwd.getpwnam(name)
        self.uid, self.gid = pw.pw_uid, pw.pw_gid

    def run(self, ops, timeout=60):
        p = subprocess.run(["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--clear-groups",
                            "--", "/usr/bin/python3", "-c", AGENT, json.dumps(ops)],
                           capture_output=True, text=True, timeout=timeout, cwd="/")
        if p.returncode != 0:
            raise RuntimeError(f"agent as {self.name} failed: {p.stderr[-2000:]}")
        return dict(json.loads(p.stdout))

    def remove(self):
        subprocess.run(["userdel", self.name], capture_output=True)
        subprocess.run(["groupdel", self.name], capture_output=True)


def expect(user, ops, want, label):
    """Runs ops as user; want: name -> 0 / errno name / callable(result) -> bool."""
    got = user.run(ops)
    for name, w in want.items():
        g = got.get(name)
        ok = w(g) if callable(w) else g == w
        check(f"{label}: {user.name} {name} -> {w if not callable(w) else 'as expected'}", ok,
              f"got {g!r}")
    return got


def mounted(lfs, store, mnt, opts, log):
    m = T.Mount(lfs, store, mnt, log, extra_opts=opts)
    m.start(timeout=60)
    return m


def run(lfs, work, a, b):
    src, store, mnt = f"{work}/src", f"{work}/store", f"{work}/mnt"
    os.makedirs(f"{src}/base")
    payload = os.urandom(5000)
    with open(f"{src}/base/weights.bin", "wb") as f:
        f.write(payload)
    with open(f"{src}/base/config.json", "w") as f:
        json.dump({"hidden": 8}, f)
    cli = T.Lfs(lfs, store)
    cli.init()
    cli.run("import", store, f"{src}/base", "--model", "base", "-m", "v1", check=True)
    log = f"{work}/daemon.log"
    me = os.getuid(), os.getgid()
    committed = f"{mnt}/base/v1/weights.bin"

    # 1. Default options: nobody but the mounting user gets in.
    m = mounted(lfs, store, mnt, "log_level=info", log)
    try:
        st = os.stat(committed)
        check("default: committed file owned by the mounting user, 0444",
              (st.st_uid, st.st_gid) == me and stat.S_IMODE(st.st_mode) == 0o444,
              f"uid/gid {st.st_uid}/{st.st_gid} mode {oct(st.st_mode)}")
        st = os.stat(f"{mnt}/base/v1")
        check("default: committed folder 0555", stat.S_IMODE(st.st_mode) == 0o555, oct(st.st_mode))
        st = os.stat(mnt)
        check("default: root folder 0755, the mounting user's",
              stat.S_IMODE(st.st_mode) == 0o755 and st.st_uid == me[0], oct(st.st_mode))
        os.mkdir(f"{mnt}/base/mine")
        st = os.stat(f"{mnt}/base/mine")
        check("default: a draft made by the mounting user is theirs, 0755",
              st.st_uid == me[0] and stat.S_IMODE(st.st_mode) == 0o755, f"{st.st_uid} {oct(st.st_mode)}")
        expect(a, [["stat root", "stat", mnt], ["listdir root", "listdir", mnt],
                   ["read committed", "read", committed],
                   ["mkdir model", "mkdir", f"{mnt}/evil"]],
               {"stat root": "EACCES", "listdir root": "EACCES", "read committed": "EACCES",
                "mkdir model": "EACCES"}, "default")
        with open("/proc/self/mounts") as f:
            line = next((l for l in f if l.split()[1] == mnt), "")
        check("default: neither allow_other nor default_permissions in the mount options",
              "allow_other" not in line and "default_permissions" not in line, line.strip())
    finally:
        m.stop()

    # 2. allow_other: others read; default_permissions keeps them out of the rest.
    m = mounted(lfs, store, mnt, "allow_other,log_level=info", log)
    try:
        with open("/proc/self/mounts") as f:
            line = next((l for l in f if l.split()[1] == mnt), "")
        check("allow_other: the mount has allow_other and default_permissions",
              "allow_other" in line and "default_permissions" in line, line.strip())
        draft = f"{mnt}/base/mine"
        with open(f"{draft}/notes.txt", "wb") as f:
            f.write(b"root's notes")
        expect(a, [["read committed", "read", committed],
                   ["stat committed", "stat", committed],
                   ["write committed", "open_w", committed],
                   ["truncate committed", "truncate", committed, 0],
                   ["unlink committed", "unlink", committed],
                   ["mkdir model", "mkdir", f"{mnt}/evil"],
                   ["mkdir draft", "mkdir", f"{mnt}/base/evil"],
                   ["read other's draft file", "read", f"{draft}/notes.txt"],
                   ["write other's draft file", "open_w", f"{draft}/notes.txt"],
                   ["truncate other's draft file", "truncate", f"{draft}/notes.txt", 0],
                   ["create in other's draft", "write", f"{draft}/x.bin", "00", True],
                   ["unlink in other's draft", "unlink", f"{draft}/notes.txt"],
                   ["rename in other's draft", "rename", f"{draft}/notes.txt", f"{draft}/n2.txt"],
                   ["symlink in other's draft", "symlink", "../v1", f"{draft}/parent"],
                   ["commit other's draft", "setxattr", draft, "user.lineage.state", "committed"],
                   ["chmod other's draft", "chmod", draft, 0o777],
                   ["rmdir other's draft", "rmdir", draft]],
               {"read committed": lambda g: g == payload.hex(),
                "stat committed": lambda g: isinstance(g, dict) and g["uid"] == me[0] and g["mode"] & 0o7777 == 0o444,
                "write committed": "EACCES", "truncate committed": "EACCES",
                "unlink committed": "EACCES", "mkdir model": "EACCES", "mkdir draft": "EACCES",
                "read other's draft file": lambda g: g == b"root's notes".hex(),
                "write other's draft file": "EACCES", "truncate other's draft file": "EACCES",
                "create in other's draft": "EACCES", "unlink in other's draft": "EACCES",
                "rename in other's draft": "EACCES", "symlink in other's draft": "EACCES",
                "commit other's draft": lambda g: g in ("EACCES", "EPERM"),
                "chmod other's draft": "EPERM", "rmdir other's draft": "EACCES"},
               "allow_other")
        check("allow_other: the draft's file is untouched",
              open(f"{draft}/notes.txt", "rb").read() == b"root's notes")
        check("allow_other: the draft is still a draft",
              os.getxattr(draft, "user.lineage.state") == b"draft")
    finally:
        m.stop()

    # 3. allow_other,shared: others make drafts of their own.
    m = mounted(lfs, store, mnt, "allow_other,shared,log_level=info", log)
    try:
        st = os.stat(mnt)
        check("shared: root folder 01777", stat.S_IMODE(st.st_mode) == 0o1777, oct(st.st_mode))
        expect(a, [["mkdir model", "mkdir", f"{mnt}/team"],
                   ["mkdir draft", "mkdir", f"{mnt}/team/a1"],
                   ["mkdir empty draft", "mkdir", f"{mnt}/team/a2"],
                   ["mkdir draft in base", "mkdir", f"{mnt}/base/a3"],
                   ["write own file", "write", f"{mnt}/team/a1/w.bin", "0102030405", True],
                   ["append own file", "write", f"{mnt}/team/a1/w.bin", "06", False],
                   ["stat draft", "stat", f"{mnt}/team/a1"],
                   ["stat file", "stat", f"{mnt}/team/a1/w.bin"],
                   ["read own file", "read", f"{mnt}/team/a1/w.bin"],
                   ["parent link", "symlink", "../../base/v1", f"{mnt}/team/a1/parent"]],
               {"mkdir model": 0, "mkdir draft": 0, "mkdir empty draft": 0, "mkdir draft in base": 0,
                "write own file": 0, "append own file": 0,
                "stat draft": lambda g: isinstance(g, dict) and (g["uid"], g["gid"]) == (a.uid, a.gid)
                and g["mode"] & 0o7777 == 0o755,
                "stat file": lambda g: isinstance(g, dict) and (g["uid"], g["gid"]) == (a.uid, a.gid)
                and g["mode"] & 0o7777 == 0o644,
                "read own file": lambda g: g is not None and g.startswith("0102030405"),
                "parent link": 0}, "shared")
        st = os.stat(f"{mnt}/team")
        check("shared: a model folder is the mounting user's, 01777",
              st.st_uid == me[0] and stat.S_IMODE(st.st_mode) == 0o1777, f"{st.st_uid} {oct(st.st_mode)}")
        own = f"{mnt}/team/a1"
        expect(b, [["write other's file", "open_w", f"{own}/w.bin"],
                   ["truncate other's file", "truncate", f"{own}/w.bin", 0],
                   ["create in other's draft", "write", f"{own}/b.bin", "00", True],
                   ["unlink in other's draft", "unlink", f"{own}/w.bin"],
                   ["unlink other's parent link", "unlink", f"{own}/parent"],
                   ["rename other's file", "rename", f"{own}/w.bin", f"{own}/w2.bin"],
                   ["commit other's draft", "setxattr", own, "user.lineage.state", "committed"],
                   ["rmdir other's empty draft", "rmdir", f"{mnt}/team/a2"],
                   ["rename other's draft", "rename", f"{mnt}/team/a2", f"{mnt}/team/b2"],
                   ["own draft beside it", "mkdir", f"{mnt}/team/b1"],
                   ["stat own draft", "stat", f"{mnt}/team/b1"]],
               {"write other's file": "EACCES", "truncate other's file": "EACCES",
                "create in other's draft": "EACCES", "unlink in other's draft": "EACCES",
                "unlink other's parent link": "EACCES", "rename other's file": "EACCES",
                "commit other's draft": lambda g: g in ("EACCES", "EPERM"),
                "rmdir other's empty draft": "EPERM",  # the sticky bit
                "rename other's draft": "EPERM", "own draft beside it": 0,
                "stat own draft": lambda g: isinstance(g, dict) and g["uid"] == b.uid},
               "shared")
        check("shared: the other user's draft is intact",
              open(f"{own}/w.bin", "rb").read() == bytes([1, 2, 3, 4, 5, 6]) and
              os.readlink(f"{own}/parent") == "../../base/v1")
        expect(a, [["rmdir own empty draft", "rmdir", f"{mnt}/team/a2"]],
               {"rmdir own empty draft": 0}, "shared")
    finally:
        m.stop()

    # Owners are kept in the version records: a remount shows the same.
    m = mounted(lfs, store, mnt, "allow_other,shared,log_level=info", log)
    try:
        st = os.stat(f"{mnt}/team/a1/w.bin")
        check("remount: a draft file is still its maker's", (st.st_uid, st.st_gid) == (a.uid, a.gid),
              f"{st.st_uid}/{st.st_gid}")
        expect(a, [["commit own draft", "setxattr", f"{mnt}/team/a1", "user.lineage.state", "committed"]],
               {"commit own draft": 0}, "shared")
        st = os.stat(f"{mnt}/team/a1/w.bin")
        check("commit: the version is the mounting user's again, 0444",
              st.st_uid == me[0] and stat.S_IMODE(st.st_mode) == 0o444, f"{st.st_uid} {oct(st.st_mode)}")
        expect(a, [["write committed own", "open_w", f"{mnt}/team/a1/w.bin"],
                   ["read committed own", "read", f"{mnt}/team/a1/w.bin"]],
               {"write committed own": "EACCES",
                "read committed own": bytes([1, 2, 3, 4, 5, 6]).hex()}, "shared")
        try:
            os.open(f"{mnt}/team/a1/w.bin", os.O_WRONLY)
            check("commit: root gets EROFS writing committed content", False, "open succeeded")
        except OSError as e:
            check("commit: root gets EROFS writing committed content", e.errno == errno.EROFS,
                  errno.errorcode.get(e.errno, ""))
    finally:
        m.stop()
    ok, out = cli.fsck()
    check("fsck after the permission tests", ok, out[-500:])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lineagefs", default=T.DEFAULT_LINEAGEFS)
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    if os.geteuid() != 0 or not shutil.which("setpriv") or not shutil.which("useradd"):
        print("SKIP: needs root, setpriv and useradd (throwaway users)")
        return 77
    # The users must reach the mount point: a world-traversable work dir.
    work = tempfile.mkdtemp(prefix="lfs-perm-")
    os.chmod(work, 0o755)
    tag = f"{os.getpid() % 100000}"
    users = []
    t0 = time.monotonic()
    try:
        users = [User(f"lfsperma{tag}"), User(f"lfspermb{tag}")]
        import signal
        signal.signal(signal.SIGALRM, lambda *_: (_ for _ in ()).throw(TimeoutError("deadline")))
        signal.alarm(DEADLINE_S)
        lfs = T.snapshot_binary(os.path.abspath(args.lineagefs), f"{work}/bin")
        os.chmod(f"{work}/bin", 0o755)
        run(lfs, work, *users)
    except Exception as e:  # noqa: BLE001 - counted as a failure, cleanup below
        traceback.print_exc()
        check("permission test ran to the end", False, repr(e))
    finally:
        T.force_unmount(f"{work}/mnt")
        for u in users:
            u.remove()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    p = sum(1 for _, ok, _ in results if ok)
    f = len(results) - p
    print(f"PERMISSIONS checks={len(results)} failed={f} seconds={time.monotonic() - t0:.0f}")
    print(f"{p} passed, {f} failed")
    return 1 if f else 0


if __name__ == "__main__":
    sys.exit(main())
