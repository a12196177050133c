#!/usr/bin/python3
"""lineagefs read-path benchmark: one large checkpoint, a big tree, many versions.

    scripts/bench/readpath.py [--quick] [--regen] [--keep]     (normally via scripts/bench/run.sh)

Measures, in one run, lineagefs against the same bytes on ext4 and through the FUSE peers
(squashfuse of a zstd squashfs, borg mount of a zstd,3 archive, restic mount):
  seq      sequential read (cat) of a 1 GB fp32 checkpoint (--quick: 64 MiB)
  rand4k   N random 4 KiB preads (fixed seed) in it, cold then warm (the same offsets again)
  rand1m   N random 1 MiB preads, cold then warm
  delta    the same reads of a fine-tune of that checkpoint that lineagefs stores as XOR
           deltas against it (vs ext4 only: the peers store it whole)
  metadata find MNT | wc -l and ls -lR MNT on a store of 100 versions x 1000 tensors
           (>= 100k entries; --quick: 10 x 200) vs `cp -a` of the mount on ext4
  memory   lineagefs daemon peak RSS after the 1 GB reads (default 256 MiB cache), and
           after a full walk of a 10k-version store vs a 100-version one
           (scripts/bench/many_versions.sh; --quick: 300 versions)
  cache    daemon memory vs its cache size: peak RssAnon (polled every 10 ms) during a
           cold full read of the checkpoint and its delta child, for cache_mb = 16, 64,
           256; "overshoot" = peak RssAnon - cache. RssFile (mapped LMDB index: page
           cache, shared and reclaimable) is reported apart.

Cold: sync; echo 3 > /proc/sys/vm/drop_caches and a fresh mount (empty daemon caches)
before the timed step (warm instead, and said so, when caches cannot be dropped).
Prints one table of ratios; writes $BENCH_DIR/readpath.json. Exit 1 only if a lineagefs
step fails or a byte read through the mount differs from its source; a missing or failing
peer is n/a. No timing is ever asserted.
"""

import argparse
import hashlib
import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
LFS = os.environ.get("LINEAGEFS", os.path.join(ROOT, "build", "cli", "lineagefs"))
BENCH_DIR = os.path.abspath(os.environ.get("BENCH_DIR", "/tmp/lfs-bench"))
MiB = 1 << 20
GEN = os.path.join(HERE, "make_readpath_fixture.py")


def log(*a):
    print("[readpath %s]" % time.strftime("%H:%M:%S"), *a, file=sys.stderr, flush=True)


class LfsFailure(Exception):
    pass


class PeerFailure(Exception):
    pass


COLD = {"ok": True, "why": None}


def drop_caches():
    subprocess.run(["sync"])
    if not COLD["ok"]:
        return
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
    except OSError as e:
        COLD["ok"] = False
        COLD["why"] = "cannot drop caches (%s): 'cold' figures are warm" % e
        log(COLD["why"])


_mounts = []


def cleanup_mounts():
    for mnt, proc in reversed(_mounts):
        if os.path.ismount(mnt):
            subprocess.run(["fusermount3", "-u", mnt], stderr=subprocess.DEVNULL)
            if os.path.ismount(mnt):
                subprocess.run(["fusermount3", "-uz", mnt], stderr=subprocess.DEVNULL)
        if proc.poll() is None:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()  # only processes this script started, by pid
                proc.wait()
    _mounts.clear()


def run(cmd, logname, fail=PeerFailure, timeout=None, **kw):
    with open(os.path.join(W["logs"], logname + ".log"), "ab") as lf:
        lf.write(("$ %s\n" % " ".join(cmd)).encode())
        lf.flush()
        try:
            p = subprocess.run(cmd, stdout=kw.pop("stdout", lf), stderr=lf, timeout=timeout, **kw)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise fail("%s: %s" % (os.path.basename(cmd[0]), e))
    if p.returncode != 0:
        raise fail("%s exited %d (see %s.log)" % (" ".join(cmd[:2]), p.returncode, logname))


def which(t):
    return shutil.which(t) is not None


def peak_rss(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return None


class RssPoller:
    """Highest RssAnon / RssFile of a process, polled every 10 ms (there is no HWM for them)."""

    def __init__(self, pid):
        import threading
        self.pid, self.peak, self.stop = pid, {"RssAnon": 0, "RssFile": 0}, False
        self.t = threading.Thread(target=self.loop, daemon=True)
        self.t.start()

    def sample(self):
        try:
            with open("/proc/%d/status" % self.pid) as f:
                for line in f:
                    k, _, v = line.partition(":")
                    if k in self.peak:
                        self.peak[k] = max(self.peak[k], int(v.split()[0]) * 1024)
        except OSError:
            pass

    def loop(self):
        while not self.stop:
            self.sample()
            time.sleep(0.01)

    def done(self):
        self.stop = True
        self.t.join()
        self.sample()
        return self.peak


def file_sha(path):
    h = hashlib.sha256()
    with open(path, "rb", buffering=0) as f:
        while True:
            b = f.read(MiB)
            if not b:
                return h.hexdigest()
            h.update(b)


W = {}


# ----------------------------------------------------------------------------- mounts
class Mounts:
    def __init__(self, quick):
        self.quick = quick
        self.borg_env = dict(os.environ, BORG_BASE_DIR=os.path.join(W["peers"], "borg-home"),
                             BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK="yes",
                             BORG_RELOCATED_REPO_ACCESS_IS_OK="yes")
        self.restic_env = dict(os.environ, RESTIC_PASSWORD="lineagefs-bench",
                               RESTIC_REPOSITORY=os.path.join(W["peers"], "restic"),
                               RESTIC_CACHE_DIR=os.path.join(W["peers"], "restic-cache"))

    def wait(self, mnt, proc, fail, what, timeout=60):
        t0 = time.time()
        while not os.path.ismount(mnt):
            if proc.poll() is not None:
                raise fail("%s exited %d before mounting" % (what, proc.returncode))
            if time.time() - t0 > timeout:
                raise fail("%s did not mount within %d s" % (what, timeout))
            time.sleep(0.05)

    def start(self, name, cmd, fail, env=None):
        mnt = os.path.join(W["work"], "mnt-" + name)
        os.makedirs(mnt, exist_ok=True)
        lf = open(os.path.join(W["logs"], name + "-mount.log"), "ab")
        proc = subprocess.Popen(cmd + [mnt] if name != "borg" else cmd[:-1] + [cmd[-1], mnt],
                                stdout=lf, stderr=lf, env=env)
        _mounts.append((mnt, proc))
        self.wait(mnt, proc, fail, name)
        return mnt, proc

    def stop(self, mnt, proc):
        subprocess.run(["fusermount3", "-u", mnt], stderr=subprocess.DEVNULL)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if os.path.ismount(mnt):
            subprocess.run(["fusermount3", "-uz", mnt], stderr=subprocess.DEVNULL)
        _mounts[:] = [m for m in _mounts if m[0] != mnt]

    # Each returns (root holding parent/ and child/ or just parent/, proc, mnt).
    def lineagefs(self, store, opts=None):
        cmd = [LFS, "mount", store, "-f"] + (["-o", opts] if opts else [])
        mnt = os.path.join(W["work"], "mnt-lineagefs")
        os.makedirs(mnt, exist_ok=True)
        lf = open(os.path.join(W["logs"], "lineagefs-mount.log"), "ab")
        proc = subprocess.Popen(cmd[:3] + [mnt] + cmd[3:], stdout=lf, stderr=lf)
        _mounts.append((mnt, proc))
        self.wait(mnt, proc, LfsFailure, "lineagefs mount")
        return os.path.join(mnt, "ckpt"), proc, mnt

    def squashfuse(self):
        img = os.path.join(W["peers"], "parent.sqfs")
        if not os.path.exists(img):
            raise PeerFailure("no squashfs image")
        mnt, proc = self.start("squashfuse", ["squashfuse", "-f", img], PeerFailure)
        return mnt, proc, mnt

    def borg(self):
        repo = os.path.join(W["peers"], "borg")
        if not os.path.exists(os.path.join(repo, "config")):
            raise PeerFailure("no borg repository")
        mnt, proc = self.start("borg", ["borg", "mount", "-f", repo + "::ckpt"], PeerFailure,
                               env=self.borg_env)
        return mnt, proc, mnt

    def restic(self):
        if not os.path.isdir(self.restic_env["RESTIC_REPOSITORY"]):
            raise PeerFailure("no restic repository")
        mnt, proc = self.start("restic", ["restic", "mount", "--no-default-permissions"],
                               PeerFailure, env=self.restic_env)
        root = os.path.join(mnt, "snapshots", "latest")
        t0 = time.time()
        while not os.path.isdir(root):
            if proc.poll() is not None or time.time() - t0 > 60:
                raise PeerFailure("restic mount: no snapshots/latest")
            time.sleep(0.1)
        return root, proc, mnt


# ----------------------------------------------------------------------------- fixtures
def fixture_paths(quick):
    fx = os.path.join(BENCH_DIR, "readpath-fixture" + ("-quick" if quick else ""))
    W["fixture"] = fx
    W["peers"] = fx + "-peers"
    W["parent"] = os.path.join(fx, "parent", "model.safetensors")
    W["child"] = os.path.join(fx, "child", "model.safetensors")


def ensure_fixture(quick, regen):
    fx = W["fixture"]
    mib = 64 if quick else 1024
    stamp = os.path.join(fx, "done")
    want = "%s mib=%d" % (file_sha(GEN), mib)
    if regen or not os.path.exists(stamp) or open(stamp).read() != want:
        shutil.rmtree(fx, ignore_errors=True)
        shutil.rmtree(W["peers"], ignore_errors=True)
        log("generating the %d MiB checkpoint and its fine-tune in %s ..." % (mib, fx))
        subprocess.run(["/usr/bin/python3", GEN, "ckpt", fx, "--mib", str(mib)], check=True)
        with open(stamp, "w") as f:
            f.write(want)
    os.makedirs(W["peers"], exist_ok=True)


PEERS = ["squashfuse", "borg", "restic"]


def ensure_peers(m, timeout):
    """Peer archives of parent/ (built once per fixture, cached next to it)."""
    notes = {}
    pdir = os.path.join(W["fixture"], "parent")
    img = os.path.join(W["peers"], "parent.sqfs")
    if "squashfuse" in PEERS and which("mksquashfs") and not os.path.exists(img):
        log("mksquashfs ...")
        try:
            run(["mksquashfs", pdir, img + ".tmp", "-comp", "zstd", "-noappend", "-no-progress"],
                "squashfs", timeout=timeout)
            os.rename(img + ".tmp", img)
        except PeerFailure as e:
            notes["squashfuse"] = str(e)
    repo = os.path.join(W["peers"], "borg")
    if "borg" in PEERS and which("borg") and not os.path.exists(os.path.join(repo, "done")):
        log("borg create ...")
        shutil.rmtree(repo, ignore_errors=True)
        try:
            run(["borg", "init", "-e", "none", repo], "borg", env=m.borg_env)
            run(["borg", "create", "--compression", "zstd,3", repo + "::ckpt", "."], "borg",
                env=m.borg_env, cwd=pdir, timeout=timeout)
            open(os.path.join(repo, "done"), "w").close()
        except PeerFailure as e:
            notes["borg"] = str(e)
    rrepo = m.restic_env["RESTIC_REPOSITORY"]
    if "restic" in PEERS and which("restic") and not os.path.exists(rrepo + ".done"):
        log("restic backup ...")
        shutil.rmtree(rrepo, ignore_errors=True)
        try:
            run(["restic", "init", "--repository-version", "2"], "restic", env=m.restic_env)
            run(["restic", "backup", "--compression", "max", "--host", "bench", "."], "restic",
                env=m.restic_env, cwd=pdir, timeout=timeout)
            open(rrepo + ".done", "w").close()
        except PeerFailure as e:
            notes["restic"] = str(e)
    return notes


# ----------------------------------------------------------------------------- reads
def cat(path):
    t0 = time.perf_counter()
    with open(path, "rb", buffering=0) as f:
        buf = bytearray(MiB)
        n = 0
        while True:
            k = f.readinto(buf)
            if not k:
                break
            n += k
    return time.perf_counter() - t0, n


def offsets(size, block, n, seed):
    rng = random.Random(seed)
    top = (size - block) // 4096
    return [rng.randrange(0, top + 1) * 4096 for _ in range(n)]


def preads(path, offs, block):
    """Seconds for the preads; returns (seconds, sha256 of everything read)."""
    h = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY)
    try:
        t0 = time.perf_counter()
        got = [os.pread(fd, block, o) for o in offs]
        dt = time.perf_counter() - t0
    finally:
        os.close(fd)
    for g in got:
        h.update(g)
    return dt, h.hexdigest()


class Bench:
    def __init__(self, args):
        self.quick = args.quick
        self.reps = 1 if args.quick else 3
        self.n4k = 200 if args.quick else 2000
        self.n1m = 30 if args.quick else 200
        self.m = Mounts(args.quick)
        self.R = {"mode": "quick" if args.quick else "default", "seq": {}, "rand4k": {},
                  "rand1m": {}, "delta": {}, "metadata": {}, "memory": {}, "cache": {}, "notes": [],
                  "lineagefs_failures": [], "reference": {}}

    def lfs_fail(self, what, e):
        msg = "%s: %s" % (what, e)
        log("LINEAGEFS FAILURE " + msg)
        self.R["lineagefs_failures"].append(msg)

    def import_store(self):
        store = os.path.join(W["work"], "lfs-store")
        run([LFS, "init", store], "lineagefs", fail=LfsFailure)
        t0 = time.perf_counter()
        run([LFS, "import", store, "--manifest", os.path.join(W["fixture"], "manifest.json")],
            "lineagefs", fail=LfsFailure)
        self.R["import_seconds"] = time.perf_counter() - t0
        p = subprocess.run([LFS, "du", store, "--json"], capture_output=True, text=True)
        if p.returncode == 0:
            self.R["store_du"] = json.loads(p.stdout)
        return store

    def session(self, tool, mount_fn, files):
        """One tool: per repetition a fresh mount for each cold measurement."""
        size = os.path.getsize(W["parent"])
        o4 = offsets(size, 4096, self.n4k, 42)
        o1 = offsets(size, MiB, self.n1m, 43)
        for fname, sect in files:
            src = W[fname]
            for rep in range(self.reps):
                for what, offs, block in (("seq", None, None), ("rand4k", o4, 4096),
                                          ("rand1m", o1, MiB)):
                    root, proc, mnt = mount_fn() if mount_fn else (W["fixture"], None, None)
                    try:
                        path = os.path.join(root, fname, "model.safetensors")
                        if tool != "lineagefs" and tool != "ext4":
                            path = os.path.join(root, "model.safetensors")
                        drop_caches()
                        key = what if sect == "parent" else "delta"
                        rec = self.R[key].setdefault(tool, {})
                        if what == "seq":
                            dt, n = cat(path)
                            if n != size:
                                raise (LfsFailure if tool == "lineagefs" else PeerFailure)(
                                    "read %d of %d bytes" % (n, size))
                            rec.setdefault("seq" if key == "delta" else "cold", []).append(dt)
                            dt2, _ = cat(path)
                            rec.setdefault("seq_warm" if key == "delta" else "warm", []).append(dt2)
                        else:
                            dt, sha = preads(path, offs, block)
                            dt2, sha2 = preads(path, offs, block)
                            ref = self.R["reference"].setdefault("%s-%s" % (fname, what),
                                                                 self.ref_sha(src, offs, block))
                            if sha != ref or sha2 != ref:
                                raise (LfsFailure if tool == "lineagefs" else PeerFailure)(
                                    "%s reads of %s differ from the source" % (what, fname))
                            pre = "" if key != "delta" else what + "_"
                            rec.setdefault(pre + "cold", []).append(dt)
                            rec.setdefault(pre + "warm", []).append(dt2)
                        if proc is not None:
                            self.R["memory"].setdefault(tool, []).append(peak_rss(proc.pid))
                    finally:
                        if mnt:
                            self.m.stop(mnt, proc)

    def ref_sha(self, src, offs, block):
        return preads(src, offs, block)[1]

    def run_reads(self, store):
        tools = [("ext4", None), ("lineagefs", lambda: self.m.lineagefs(store)),
                 ("squashfuse", self.m.squashfuse), ("borg", self.m.borg),
                 ("restic", self.m.restic)]
        tools = [t for t in tools if t[0] in ("ext4", "lineagefs") or t[0] in PEERS]
        for tool, fn in tools:
            log("reads: %s" % tool)
            files = [("parent", "parent")]
            if tool in ("ext4", "lineagefs"):
                files.append(("child", "child"))
            try:
                self.session(tool, fn, files)
            except LfsFailure as e:
                self.lfs_fail("reads", e)
            except (PeerFailure, OSError, subprocess.SubprocessError) as e:
                if tool in ("ext4", "lineagefs"):
                    self.lfs_fail("reads (%s)" % tool, e)
                    continue
                log("%s: n/a (%s)" % (tool, e))
                for k in ("seq", "rand4k", "rand1m"):
                    self.R[k][tool] = {"na": str(e)[:200]}

    # -- daemon memory against the cache size
    def run_cache_sizes(self, store):
        size = os.path.getsize(W["parent"])
        for mb in (16, 64) if self.quick else (16, 64, 256):
            log("memory with cache_mb=%d ..." % mb)
            root, proc, mnt = self.m.lineagefs(store, "cache_mb=%d" % mb)
            try:
                drop_caches()
                poll = RssPoller(proc.pid)
                for f in ("parent", "child"):
                    dt, n = cat(os.path.join(root, f, "model.safetensors"))
                    if n != size:
                        raise LfsFailure("cache_mb=%d: read %d of %d bytes" % (mb, n, size))
                peak = poll.done()
                self.R["cache"][str(mb)] = {"cache_bytes": mb * MiB, "peak_anon": peak["RssAnon"],
                                            "peak_file": peak["RssFile"],
                                            "hwm": peak_rss(proc.pid)}
            finally:
                self.m.stop(mnt, proc)

    # -- metadata on a big tree
    def run_metadata(self):
        versions, tensors = (10, 200) if self.quick else (100, 1000)
        src = os.path.join(BENCH_DIR, "readpath-tree-%dx%d" % (versions, tensors))
        if not os.path.exists(os.path.join(src, "manifest.json")):
            log("generating the %d x %d tree fixture ..." % (versions, tensors))
            shutil.rmtree(src, ignore_errors=True)
            subprocess.run(["/usr/bin/python3", GEN, "tree", src + ".tmp", "--versions",
                            str(versions), "--tensors", str(tensors)], check=True)
            os.rename(src + ".tmp", src)
        store = os.path.join(W["work"], "tree-store")
        run([LFS, "init", store], "tree", fail=LfsFailure)
        log("importing the tree ...")
        run([LFS, "import", store, "--manifest", os.path.join(src, "manifest.json")], "tree",
            fail=LfsFailure)
        mnt = os.path.join(W["work"], "mnt-tree")
        os.makedirs(mnt, exist_ok=True)
        lf = open(os.path.join(W["logs"], "tree-mount.log"), "ab")
        ext4 = os.path.join(W["work"], "tree-ext4")
        res = self.R["metadata"]
        reps = 1 if self.quick else 3
        for rep in range(reps):
            # a fresh daemon per repetition: its caches are cold too
            proc = subprocess.Popen([LFS, "mount", store, mnt, "-f"], stdout=lf, stderr=lf)
            _mounts.append((mnt, proc))
            try:
                self.m.wait(mnt, proc, LfsFailure, "lineagefs mount (tree)")
                r = res.setdefault("lineagefs", {})
                self.meta_once(mnt, r)
                r.setdefault("peak_rss", []).append(peak_rss(proc.pid))
                if rep == 0:
                    log("cp -a of the mount to ext4 ...")
                    shutil.rmtree(ext4, ignore_errors=True)
                    run(["cp", "-a", mnt, ext4], "tree", fail=LfsFailure)
            finally:
                self.m.stop(mnt, proc)
            self.meta_once(ext4, res.setdefault("ext4", {}))
        if not self.args_keep:
            shutil.rmtree(ext4, ignore_errors=True)

    def meta_once(self, root, r):
        drop_caches()
        t0 = time.perf_counter()
        p = subprocess.run("find '%s' | wc -l" % root, shell=True, capture_output=True,
                           check=True, text=True)
        r.setdefault("find", []).append(time.perf_counter() - t0)
        r["entries"] = int(p.stdout)
        drop_caches()
        t0 = time.perf_counter()
        subprocess.run(["ls", "-lR", root], stdout=subprocess.DEVNULL, check=True)
        r.setdefault("lsR", []).append(time.perf_counter() - t0)

    # -- daemon memory with many versions
    def run_many(self):
        n = 300 if self.quick else 10000
        log("many_versions.sh %d ..." % n)
        env = dict(os.environ, MANY_DIR=os.path.join(W["work"], "many"))
        p = subprocess.run(["bash", os.path.join(HERE, "many_versions.sh"), str(n), LFS],
                           capture_output=True, text=True, env=env)
        if p.returncode != 0:
            raise LfsFailure("many_versions.sh exited %d: %s" % (p.returncode, p.stderr[-300:]))
        for line in p.stdout.splitlines():
            m = re.search(r"^(\S+)\s+versions=(\d+)\s+entries=(\d+)\s+walk=\s*([\d.]+)s\s+"
                          r"peak_rss=(\d+) KiB", line)
            if m:
                self.R["many"][m.group(1)] = {"versions": int(m.group(2)),
                                              "entries": int(m.group(3)),
                                              "walk_seconds": float(m.group(4)),
                                              "peak_rss": int(m.group(5)) * 1024}
            a = re.search(r"peak_anon=(\d+) KiB cache_mb=(\d+)", line)
            if a:
                self.R["many"][m.group(1)].update(peak_anon=int(a.group(1)) * 1024,
                                                  cache_bytes=int(a.group(2)) * MiB)


# ----------------------------------------------------------------------------- report
def med(xs):
    return statistics.median(xs) if xs else None


def fmt_s(s):
    if s is None:
        return "-"
    return "%.1f ms" % (s * 1e3) if s < 1 else "%.2f s" % s


def ratio(a, b):
    return "%.2fx" % (a / b) if a and b else "-"


def report(R):
    out = []
    line = "-" * 96
    out.append("lineagefs read-path benchmark — %s mode; checkpoint %s; caches %s" % (
        R["mode"], fmt_b(R.get("ckpt_bytes", 0)), "cold" if COLD["ok"] else "WARM"))
    out.append("lineagefs %s; %d CPUs, load average %.1f at start, %.1f at end; medians of %d"
               % (R.get("git"), os.cpu_count(), R["load"][0], R["load_end"][0], R["reps"]))
    out.append("speed = ext4 time / tool time (1.00x = as fast as ext4); "
               "lfs adv. = tool time / lineagefs time (>1: lineagefs faster)")
    tools = ["ext4", "lineagefs", "squashfuse", "borg", "restic"]
    for key, title in (("seq", "SEQUENTIAL READ (cat) of the checkpoint"),
                       ("rand4k", "RANDOM 4 KiB preads x %d" % R["n4k"]),
                       ("rand1m", "RANDOM 1 MiB preads x %d" % R["n1m"])):
        out.append(line)
        out.append(title)
        out.append("  %-12s | %10s %8s %10s | %10s %8s %10s" % (
            "tool", "cold", "speed", "lfs adv.", "warm", "speed", "lfs adv."))
        sec = R[key]
        e = sec.get("ext4", {})
        lf = sec.get("lineagefs", {})
        for t in tools:
            v = sec.get(t)
            if v is None:
                continue
            if "na" in v:
                out.append("  %-12s | n/a (%s)" % (t, v["na"][:70]))
                continue
            row = []
            for mode in ("cold", "warm"):
                x = med(v.get(mode))
                row += [fmt_s(x), ratio(med(e.get(mode)), x),
                        "-" if t == "lineagefs" else ratio(x, med(lf.get(mode)))]
            out.append("  %-12s | %10s %8s %10s | %10s %8s %10s" % tuple([t] + row))
    out.append(line)
    out.append("DELTA-ENCODED CHILD (fine-tune stored as XOR deltas vs the parent) vs ext4")
    d = R["delta"]
    for what, label in (("seq", "sequential, cold"), ("seq_warm", "sequential, warm"),
                        ("rand4k_cold", "4 KiB x %d, cold" % R["n4k"]),
                        ("rand4k_warm", "4 KiB x %d, warm" % R["n4k"]),
                        ("rand1m_cold", "1 MiB x %d, cold" % R["n1m"]),
                        ("rand1m_warm", "1 MiB x %d, warm" % R["n1m"])):
        l, e = med(d.get("lineagefs", {}).get(what)), med(d.get("ext4", {}).get(what))
        out.append("  %-22s lineagefs %10s  ext4 %10s  speed %s" % (label, fmt_s(l), fmt_s(e),
                                                                    ratio(e, l)))
    md = R["metadata"]
    if md.get("lineagefs") and md.get("ext4"):
        out.append(line)
        l, e = md["lineagefs"], md["ext4"]
        out.append("METADATA: %d entries through the mount, %d in its cp -a copy on ext4 (cold)"
                   % (l["entries"], e["entries"]))
        for k, name in (("find", "find | wc -l"), ("lsR", "ls -lR")):
            out.append("  %-14s lineagefs %10s  ext4 %10s  speed %s" % (
                name, fmt_s(med(l[k])), fmt_s(med(e[k])), ratio(med(e[k]), med(l[k]))))
        out.append("  daemon peak RSS after the walk: %s" % fmt_b(max(l.get("peak_rss") or [0])))
    out.append(line)
    mem = R["memory"]
    out.append("DAEMON PEAK RSS")
    if mem.get("lineagefs"):
        out.append("  lineagefs, one read of the checkpoint (cache_mb=256 default): %s; peers: %s"
                   % (fmt_b(max(mem["lineagefs"])),
                      ", ".join("%s %s" % (t, fmt_b(max(mem[t]))) for t in tools[2:]
                                if mem.get(t))))
    many = R.get("many", {})
    if "small" in many and "large" in many:
        s, g = many["small"], many["large"]
        out.append("  many versions (cache_mb=64; find, ls -lR, getfattr, 2000 cats): %d versions"
                   " %s, %d versions %s (ratio %.2fx)" % (
                       s["versions"], fmt_b(s["peak_rss"]), g["versions"], fmt_b(g["peak_rss"]),
                       g["peak_rss"] / s["peak_rss"]))
        if "peak_anon" in s and "peak_anon" in g:
            over = g["peak_anon"] - g["cache_bytes"]
            out.append("  many versions, peak RssAnon (cache_mb=%d): %d versions %s, %d versions %s"
                       " (%s)" % (
                           g["cache_bytes"] // MiB, s["versions"], fmt_b(s["peak_anon"]),
                           g["versions"], fmt_b(g["peak_anon"]),
                           "cache + " + fmt_b(over) if over > 0 else "below the cache size"))
    cache = R.get("cache", {})
    if cache:
        out.append(line)
        out.append("DAEMON MEMORY vs CACHE SIZE (cold full read of the checkpoint + its delta child)")
        out.append("  %10s | %14s %14s | %14s %12s" % ("cache_mb", "peak RssAnon", "overshoot",
                                                     "peak RssFile", "VmHWM"))
        for mb in sorted(cache, key=int):
            c = cache[mb]
            out.append("  %10s | %14s %14s | %14s %12s" % (
                mb, fmt_b(c["peak_anon"]), "+" + fmt_b(max(0, c["peak_anon"] - c["cache_bytes"])),
                fmt_b(c["peak_file"]), fmt_b(c["hwm"] or 0)))
        out.append("  overshoot = peak RssAnon - cache size; RssFile = mapped LMDB index pages "
                   "(page cache, shared, reclaimable)")
    out.append(line)
    return "\n".join(out)


def fmt_b(n):
    for unit, div in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= div:
            return "%.2f %s" % (n / div, unit)
    return "%d B" % n


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small fixtures, one repetition (CI)")
    ap.add_argument("--regen", action="store_true", help="regenerate the cached fixtures")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("--peers", default=",".join(PEERS),
                    help="FUSE peers to compare with (default: %(default)s)")
    ap.add_argument("--skip", action="append", default=[],
                    choices=["reads", "cache", "metadata", "many"], help="leave a section out")
    args = ap.parse_args()
    PEERS[:] = [p for p in args.peers.split(",") if p]
    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(s, lambda n, f: (cleanup_mounts(), sys.exit(128 + n)))
    t_start = time.perf_counter()
    W["work"] = os.path.join(BENCH_DIR, "readpath-work")
    W["logs"] = os.path.join(W["work"], "logs")
    with open("/proc/mounts") as f:
        for l in f:
            if l.split()[1].startswith(W["work"] + "/"):
                subprocess.run(["fusermount3", "-uz", l.split()[1]], stderr=subprocess.DEVNULL)
    shutil.rmtree(W["work"], ignore_errors=True)
    os.makedirs(W["logs"])
    fixture_paths(args.quick)
    b = Bench(args)
    b.args_keep = args.keep
    R = b.R
    R["load"] = os.getloadavg()
    R["reps"], R["n4k"], R["n1m"] = b.reps, b.n4k, b.n1m
    p = subprocess.run(["git", "-C", ROOT, "describe", "--always", "--dirty"],
                       capture_output=True, text=True)
    R["git"] = p.stdout.strip() or None
    R["many"] = {}
    rc = 0
    try:
        if "reads" not in args.skip or "cache" not in args.skip:
            ensure_fixture(args.quick, args.regen)
            R["ckpt_bytes"] = os.path.getsize(W["parent"])
            store = b.import_store()
        if "reads" not in args.skip:
            R["peer_notes"] = ensure_peers(b.m, 300 if args.quick else 1800)
            b.run_reads(store)
        if "cache" not in args.skip:
            b.run_cache_sizes(store)
        if "metadata" not in args.skip:
            b.run_metadata()
        if "many" not in args.skip:
            b.run_many()
    except LfsFailure as e:
        b.lfs_fail("run", e)
    finally:
        cleanup_mounts()
    R["load_end"] = os.getloadavg()
    R["wall_seconds"] = time.perf_counter() - t_start
    R["cold"] = COLD
    table = report(R)
    print(table)
    for n in R["notes"] + ([COLD["why"]] if COLD["why"] else []):
        print("note: " + n)
    for f in R["lineagefs_failures"]:
        print("LINEAGEFS FAILURE: " + f)
        rc = 1
    R["table"] = table
    with open(os.path.join(BENCH_DIR, "readpath.json"), "w") as f:
        json.dump(R, f, indent=1, default=str)
    print("results: %s/readpath.json; wall time %.0f s" % (BENCH_DIR, R["wall_seconds"]))
    if not args.keep:
        shutil.rmtree(W["work"], ignore_errors=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
