#!/usr/bin/python3
"""lineagefs benchmark: one run, lineagefs side by side with its peers.

    scripts/bench/bench.py [--quick] [--regen] [--keep]      (normally via scripts/bench/run.sh)

Measures, on one generated model family (scripts/make_family.py):
  storage   raw bytes; lineagefs packs+index; zstd -19 -T2 per file; borg (zstd,3 and a
            stronger setting); restic --compression max; git-lfs (computed: whole-file dedup
            by sha256, no server); squashfs (mksquashfs -comp zstd)
  ingest    wall time of lineagefs import --manifest vs borg create, restic backup, ...
  read      cold sequential read of every checkpoint through each FUSE mount and from ext4;
            time to first 4 KiB of one tensor (deepest fine-tune chain) and of the largest
            checkpoint
  metadata  find | wc -l and ls -lR on the mount vs the same tree on ext4
  daemon    peak RSS (VmHWM) and CPU time (utime+stime) of each FUSE daemon
  exactness sha256 of every file read through the lineagefs mount == source

Prints one table; writes $BENCH_DIR/results.json and $BENCH_DIR/bench.png.
Exit status: 0, or 1 if a lineagefs step failed or a file did not read back bit-exactly.
A peer that fails or is missing is reported as n/a and never fails the run. No timing is
ever asserted.
"""

import argparse
import atexit
import hashlib
import json
import os
import resource
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
LFS = os.environ.get("LINEAGEFS", os.path.join(ROOT, "build", "cli", "lineagefs"))
BENCH_DIR = os.path.abspath(os.environ.get("BENCH_DIR", "/tmp/lfs-bench"))

MiB = 1 << 20
GB = 1e9
SAMPLE_MIN, SAMPLE_N, SAMPLE_LEN = 32 * MiB, 4, 4 * MiB  # zstd -19 sampling (default mode)


def log(*a):
    print("[bench %s]" % time.strftime("%H:%M:%S"), *a, file=sys.stderr, flush=True)


class LfsFailure(Exception):
    """A lineagefs step failed: the run exits non-zero."""


class PeerFailure(Exception):
    """A peer failed or is unavailable: reported as n/a."""


# ----------------------------------------------------------------------------- helpers
_mounts = []  # (mountpoint, Popen or None)


def cleanup_mounts():
    for mnt, proc in reversed(_mounts):
        if os.path.ismount(mnt):
            subprocess.run(["fusermount3", "-u", mnt], stderr=subprocess.DEVNULL)
            if os.path.ismount(mnt):
                subprocess.run(["fusermount3", "-uz", mnt], stderr=subprocess.DEVNULL)
        if proc is not None and proc.poll() is None:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()  # only processes this script started, by pid
                proc.wait()
    _mounts.clear()


def _on_signal(signum, frame):
    cleanup_mounts()
    sys.exit(128 + signum)


CACHE_MODE = {"mode": "cold"}


def drop_caches():
    """sync, then drop page cache, dentries and inodes (root); otherwise stays warm."""
    subprocess.run(["sync"])
    if CACHE_MODE["mode"] != "cold":
        return
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
    except OSError as e:
        CACHE_MODE["mode"] = "warm"
        CACHE_MODE["why"] = "cannot drop caches (%s): every measurement is warm" % e
        log(CACHE_MODE["why"])


def disk_bytes(path):
    """Bytes a file or tree occupies: per file min(apparent size, allocated blocks)."""
    if os.path.isfile(path):
        st = os.stat(path)
        return min(st.st_size, st.st_blocks * 512)
    total = 0
    for dp, dns, fns in os.walk(path):
        for fn in fns:
            st = os.lstat(os.path.join(dp, fn))
            total += min(st.st_size, st.st_blocks * 512)
    return total


def tail(path, n=600):
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - n))
            return f.read().decode("utf-8", "replace").strip()
    except OSError:
        return ""


def run(cmd, logname, env=None, cwd=None, timeout=None, stdout=None, fail=PeerFailure):
    """Runs cmd, stderr (and stdout unless given) to a log; returns wall seconds."""
    logpath = os.path.join(W.logs, logname + ".log")
    with open(logpath, "ab") as lf:
        lf.write(("$ %s\n" % " ".join(cmd)).encode())
        lf.flush()
        t0 = time.perf_counter()
        try:
            p = subprocess.run(cmd, env=env, cwd=cwd, timeout=timeout,
                               stdout=stdout if stdout is not None else lf, stderr=lf)
        except subprocess.TimeoutExpired:
            raise fail("%s timed out after %d s" % (os.path.basename(cmd[0]), timeout))
        except OSError as e:
            raise fail("%s: %s" % (cmd[0], e))
        dt = time.perf_counter() - t0
    if p.returncode != 0:
        last = (tail(logpath, 300).splitlines() or [""])[-1]
        raise fail("%s exited %d: %s" % (" ".join(cmd[:2]), p.returncode, last))
    return dt


def timed_ingest(cmd, logname, **kw):
    """Cold start (drop caches first); the time includes a final sync. The tool's CPU
    time (user+sys, its children's included) is left in timed_ingest.cpu: on a shared
    machine the wall time of a tool that uses both cores suffers more than that of a
    single-threaded one, and the CPU time says how much work each did."""
    drop_caches()
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    run(cmd, logname, **kw)
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(["sync"])
    timed_ingest.cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    return time.perf_counter() - t0


def which(tool):
    return shutil.which(tool) is not None


def proc_stats(pid):
    """(peak RSS bytes, CPU seconds user+system) of a live process."""
    hwm = None
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                hwm = int(line.split()[1]) * 1024
            elif line.startswith(("VmRSS:", "RssAnon:", "RssFile:")):
                proc_stats.detail[line.split(":")[0]] = int(line.split()[1]) * 1024
    try:  # bytes the daemon read() (rchar) and fetched from the block device (read_bytes)
        with open("/proc/%d/io" % pid) as f:
            for line in f:
                if line.startswith(("rchar:", "read_bytes:")):
                    proc_stats.detail[line.split(":")[0]] = int(line.split()[1])
    except OSError:
        pass
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    tck = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / tck  # utime, stime (fields 14, 15)
    return hwm, cpu


proc_stats.detail = {}


def sha256_file(path):
    h = hashlib.sha256()
    buf = bytearray(MiB)
    mv = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while True:
            n = f.readinto(buf)
            if not n:
                break
            h.update(mv[:n])
    return h.hexdigest()


def read_all(paths):
    """Sequential read of every file, 1 MiB at a time; returns bytes read."""
    buf = bytearray(MiB)
    total = 0
    for p in paths:
        with open(p, "rb", buffering=0) as f:
            while True:
                n = f.readinto(buf)
                if not n:
                    break
                total += n
    return total


def first_bytes(path, offset=0, n=4096):
    """Seconds from open() to holding the first n bytes at offset."""
    t0 = time.perf_counter()
    fd = os.open(path, os.O_RDONLY)
    try:
        got = os.pread(fd, n, offset)
    finally:
        os.close(fd)
    dt = time.perf_counter() - t0
    if len(got) != n:
        raise OSError("short read (%d of %d bytes) from %s" % (len(got), n, path))
    return dt


def safetensors_index(path):
    """{name: (dtype, shape, absolute byte offset, byte length)} from a safetensors header."""
    with open(path, "rb") as f:
        (hlen,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(hlen))
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        b, e = t["data_offsets"]
        out[name] = (t["dtype"], t["shape"], 8 + hlen + b, e - b)
    return out


NPY_DTYPES = {"F64", "F32", "F16", "I64", "I32", "I16", "I8", "U64", "U32", "U16", "U8", "BOOL"}


def tensor_file(name, dtype):
    """fs/LAYOUT.md: all dot components but the last two become folders."""
    parts = name.split(".")
    folders, leaf = parts[:-2], ".".join(parts[-2:])
    ext = ".npy" if dtype in NPY_DTYPES else ".safetensors"
    return os.path.join("tensors", *folders, leaf + ext)


def median(xs):
    return statistics.median(xs) if xs else None


# ----------------------------------------------------------------------------- work dirs
class W:
    pass


def setup_dirs(quick):
    W.family = os.path.join(BENCH_DIR, "family-quick" if quick else "family")
    W.work = os.path.join(BENCH_DIR, "work")
    W.logs = os.path.join(W.work, "logs")
    W.store = os.path.join(W.work, "lfs-store")
    W.mnt = os.path.join(W.work, "mnt")
    W.ext4 = os.path.join(W.work, "ext4-tree")
    # A previous run that died may have left mounts under the work dir.
    with open("/proc/mounts") as f:
        stale = [l.split()[1] for l in f if l.split()[1].startswith(W.work + "/")]
    for m in stale:
        subprocess.run(["fusermount3", "-uz", m.replace("\\040", " ")], stderr=subprocess.DEVNULL)
    shutil.rmtree(W.work, ignore_errors=True)
    os.makedirs(W.logs)
    os.makedirs(W.mnt)


def ensure_family(quick, regen):
    """Generates the family once and caches it in $BENCH_DIR/family[-quick]."""
    gen = os.path.join(ROOT, "scripts", "make_family.py")
    manifest = os.path.join(W.family, "manifest.json")
    if regen:
        shutil.rmtree(W.family, ignore_errors=True)
    shafile = W.family + ".gen.sha"
    gen_sha = sha256_file(gen)
    if os.path.exists(manifest):
        log("reusing cached family %s (--regen to regenerate)" % W.family)
        try:
            with open(shafile) as f:
                old = f.read().split()[0]
        except (OSError, IndexError):
            old = None
        if old != gen_sha:
            W.family_note = ("the cached family was generated by another version of "
                             "make_family.py (--regen to refresh)")
            log(W.family_note)
        return 0.0
    tmp = W.family + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    # --quick: the small model and one optimizer step per checkpoint, so that the whole
    # quick run (generation included) stays within CI's few minutes.
    args = ["--small", "--steps", "1"] if quick else []
    log("generating the family (%s) into %s ..." % ("small" if quick else "default", W.family))
    t0 = time.perf_counter()
    p = subprocess.run(["/usr/bin/python3", gen, tmp] + args,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if p.returncode != 0:
        sys.stderr.write(p.stderr.decode("utf-8", "replace")[-3000:])
        raise LfsFailure("make_family.py failed (exit %d)" % p.returncode)
    os.rename(tmp, W.family)
    with open(shafile, "w") as f:
        f.write(gen_sha + "  make_family.py " + " ".join(args) + "\n")
    dt = time.perf_counter() - t0
    log("family generated in %.0f s" % dt)
    return dt


def load_family():
    """Reads the manifest; lists every file of every version with size and sha256."""
    with open(os.path.join(W.family, "manifest.json")) as f:
        man = json.load(f)
    files = []  # dicts: rel (in the family tree), lfs (in the mount), size, sha256
    for v in man["versions"]:
        vdir = os.path.join(W.family, v["path"])
        for fn in sorted(os.listdir(vdir)):
            p = os.path.join(vdir, fn)
            if not os.path.isfile(p):
                continue
            rel = os.path.relpath(p, W.family)
            files.append({"rel": rel, "lfs": os.path.join(v["model"], v["version"], fn),
                          "version": "%s/%s" % (v["model"], v["version"]),
                          "size": os.path.getsize(p), "sha256": sha256_file(p)})
    return man, files


# ----------------------------------------------------------------------------- bench
class Bench:
    def __init__(self, args):
        self.args = args
        self.quick = args.quick
        self.R = {"mode": "quick" if args.quick else "default", "storage": {}, "ingest": {},
                  "read": {}, "ttfb": {}, "metadata": {}, "daemon": {}, "notes": [],
                  "lineagefs_failures": []}
        self.peer_timeout = 120 if args.quick else 900
        self.borg_env = dict(os.environ, BORG_BASE_DIR=os.path.join(W.work, "borg-home"),
                             BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK="yes",
                             BORG_RELOCATED_REPO_ACCESS_IS_OK="yes",
                             BORG_CHECK_I_KNOW_WHAT_I_AM_DOING="YES")
        self.restic_env = dict(os.environ, RESTIC_PASSWORD="lineagefs-bench",
                               RESTIC_REPOSITORY=os.path.join(W.work, "restic-repo"),
                               RESTIC_CACHE_DIR=os.path.join(W.work, "restic-cache"))
        # borg compresses on one thread: zstd,19 or lzma,6 run at ~1 MB/s on weights (35+ min
        # for the default family); on float weights every zstd level >= 3 gives the same
        # ratio within 0.1%, so zstd,9 is the strongest setting that fits the time box.
        self.borg_best = os.environ.get("BENCH_BORG_BEST", "zstd,9")

    # -- bookkeeping
    def lfs_fail(self, what, err):
        msg = "%s: %s" % (what, err)
        log("LINEAGEFS FAILURE " + msg)
        self.R["lineagefs_failures"].append(msg)

    def peer(self, section, tool, fn):
        """Runs a peer measurement; on failure records n/a with the reason."""
        try:
            val = fn()
            self.R[section][tool] = val
        except (PeerFailure, OSError, subprocess.SubprocessError, ValueError, KeyError) as e:
            reason = str(e).strip() or e.__class__.__name__
            log("%s %s: n/a (%s)" % (section, tool, reason))
            self.R[section][tool] = {"na": reason[:200]}

    # -- storage + ingest
    def run_storage(self, man, files):
        raw = sum(f["size"] for f in files)
        self.raw = raw
        self.R["raw"] = {"bytes": raw, "files": len(files), "versions": len(man["versions"])}
        self.R["storage"]["raw"] = {"bytes": raw}
        fam = W.family
        excl_manifest = os.path.join(fam, "manifest.json")

        # lineagefs
        try:
            run([LFS, "init", W.store], "lineagefs", fail=LfsFailure)
            mpath = os.path.join(W.family, "manifest.json")
            dt = timed_ingest([LFS, "import", W.store, "--manifest", mpath], "lineagefs",
                              fail=LfsFailure)
            packs = disk_bytes(os.path.join(W.store, "packs"))
            index = disk_bytes(os.path.join(W.store, "index"))
            p = subprocess.run([LFS, "du", W.store, "--json"], capture_output=True)
            if p.returncode != 0:
                raise LfsFailure("lineagefs du exited %d" % p.returncode)
            du = json.loads(p.stdout)
            self.R["storage"]["lineagefs"] = {"bytes": packs + index, "packs": packs,
                                              "index": index, "du": {k: du.get(k) for k in
                                              ("logical", "stored", "pack_bytes", "live_bytes")}}
            self.R["ingest"]["lineagefs"] = {"seconds": dt, "cpu": timed_ingest.cpu}
            if du.get("logical") not in (None, raw):
                self.R["notes"].append("lineagefs du logical %s != raw %d" % (du.get("logical"), raw))
            self.lfs_ok = True
        except (LfsFailure, OSError, ValueError) as e:
            self.lfs_fail("import", e)
            self.lfs_ok = False

        # git-lfs: computed
        uniq = {}
        for f in files:
            uniq[f["sha256"]] = f["size"]
        self.R["storage"]["git-lfs"] = {"bytes": sum(uniq.values()), "computed": True,
                                        "unique_files": len(uniq)}

        # borg zstd,3 (the ingest comparison) and a stronger setting
        def borg(comp, name):
            def fn():
                if not which("borg"):
                    raise PeerFailure("borg not installed")
                repo = os.path.join(W.work, name)
                run(["borg", "init", "-e", "none", repo], name, env=self.borg_env)
                dt = timed_ingest(["borg", "create", "--compression", comp,
                                   "--exclude", "./manifest.json", repo + "::family", "."],
                                  name, env=self.borg_env, cwd=fam, timeout=self.peer_timeout)
                self.R["ingest"][name] = {"seconds": dt, "cpu": timed_ingest.cpu}
                return {"bytes": disk_bytes(repo), "setting": comp}
            return fn
        self.peer("storage", "borg-zstd3", borg("zstd,3", "borg-zstd3"))
        self.peer("storage", "borg-best", borg(self.borg_best, "borg-best"))

        # restic --compression max
        def restic():
            if not which("restic"):
                raise PeerFailure("restic not installed")
            e = self.restic_env
            run(["restic", "init", "--repository-version", "2"], "restic", env=e)
            dt = timed_ingest(["restic", "backup", "--compression", "max", "--host", "bench",
                               "--exclude", excl_manifest, "."], "restic", env=e, cwd=fam,
                              timeout=self.peer_timeout)
            self.R["ingest"]["restic"] = {"seconds": dt, "cpu": timed_ingest.cpu}
            return {"bytes": disk_bytes(e["RESTIC_REPOSITORY"])}
        self.peer("storage", "restic", restic)

        # squashfs
        def squash():
            if not which("mksquashfs"):
                raise PeerFailure("mksquashfs not installed")
            img = os.path.join(W.work, "family.sqfs")
            dt = timed_ingest(["mksquashfs", fam, img, "-comp", "zstd", "-noappend",
                               "-no-progress", "-e", "manifest.json"], "squashfs",
                              timeout=self.peer_timeout)
            self.R["ingest"]["squashfs"] = {"seconds": dt, "cpu": timed_ingest.cpu}
            return {"bytes": disk_bytes(img)}
        self.peer("storage", "squashfs", squash)

        # zstd -19 -T2, file by file. Identical files compress identically: once each.
        # zstd -19 runs at ~1 MB/s per core on weights, so a file larger than SAMPLE_MIN
        # (--quick: 1 MiB) is estimated from SAMPLE_N evenly spaced SAMPLE_LEN (--quick:
        # 256 KiB) slices: the slices' ratio x the file's size; the time is scaled up the
        # same way. BENCH_ZSTD_FULL=1 compresses whole files.
        def zstd19():
            if not which("zstd"):
                raise PeerFailure("zstd not installed")
            from concurrent.futures import ThreadPoolExecutor
            sample = not os.environ.get("BENCH_ZSTD_FULL")
            smin, slen = (SAMPLE_MIN, SAMPLE_LEN) if not self.quick else (MiB, 256 << 10)
            jobs = []  # (sha, path, offset, length)
            seen = {}
            for f in files:
                if f["sha256"] in seen:
                    continue
                seen[f["sha256"]] = f["size"]
                p = os.path.join(fam, f["rel"])
                if sample and f["size"] > smin:
                    step = (f["size"] - slen) // (SAMPLE_N - 1)
                    for i in range(SAMPLE_N):
                        jobs.append((f["sha256"], p, i * step, slen))
                else:
                    jobs.append((f["sha256"], p, 0, f["size"]))
            drop_caches()
            t0 = time.perf_counter()

            def compress(job):
                sha, path, off, length = job
                with open(path, "rb") as fh:
                    fh.seek(off)
                    data = fh.read(length)
                # two single-threaded zstd processes side by side (= -T2's two workers;
                # -T2 on one small file would keep one core idle)
                p = subprocess.run(["zstd", "-19", "-T1", "-q", "-c"], input=data,
                                   stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                   timeout=self.peer_timeout)
                if p.returncode != 0:
                    raise PeerFailure("zstd exited %d on %s" % (p.returncode, path))
                return sha, len(data), len(p.stdout)
            got = {}
            with ThreadPoolExecutor(2) as ex:
                for sha, n_in, n_out in ex.map(compress, jobs):
                    a = got.setdefault(sha, [0, 0])
                    a[0] += n_in
                    a[1] += n_out
            dt = time.perf_counter() - t0
            comp = {sha: seen[sha] * o / i if i else 0 for sha, (i, o) in got.items()}
            total = sum(comp[f["sha256"]] for f in files)
            sampled = sum(i for i, _ in got.values())
            full = sum(seen.values())
            frac = sampled / full if full else 1.0
            res = {"bytes": int(round(total)), "sampled_fraction": frac}
            self.R["ingest"]["zstd-19"] = {"seconds": dt / frac, "estimated": frac < 1,
                                           "measured_seconds": dt}
            return res
        self.peer("storage", "zstd-19", zstd19)

    # -- read side
    def mount_lfs(self):
        mnt = os.path.join(W.mnt, "lineagefs")
        os.makedirs(mnt, exist_ok=True)
        lf = open(os.path.join(W.logs, "lineagefs-mount.log"), "ab")
        proc = subprocess.Popen([LFS, "mount", W.store, mnt, "-f"], stdout=lf, stderr=lf)
        _mounts.append((mnt, proc))
        self.wait_mounted(mnt, proc, LfsFailure, "lineagefs mount")
        return mnt, proc, mnt

    def mount_borg(self):
        if not which("borg"):
            raise PeerFailure("borg not installed")
        if "na" in self.R["storage"].get("borg-zstd3", {"na": "no repo"}):
            raise PeerFailure("no borg repository")
        p = subprocess.run(["/usr/bin/python3", "-c", "import llfuse"], capture_output=True)
        if p.returncode != 0:
            p3 = subprocess.run(["/usr/bin/python3", "-c", "import pyfuse3"], capture_output=True)
            if p3.returncode != 0:
                raise PeerFailure("borg mount needs python3-llfuse or pyfuse3 (not installed)")
        mnt = os.path.join(W.mnt, "borg")
        os.makedirs(mnt, exist_ok=True)
        lf = open(os.path.join(W.logs, "borg-mount.log"), "ab")
        proc = subprocess.Popen(["borg", "mount", "-f", os.path.join(W.work, "borg-zstd3") +
                                 "::family", mnt], stdout=lf, stderr=lf, env=self.borg_env)
        _mounts.append((mnt, proc))
        self.wait_mounted(mnt, proc, PeerFailure, "borg mount")
        return mnt, proc, mnt

    def mount_restic(self):
        if not which("restic"):
            raise PeerFailure("restic not installed")
        if "na" in self.R["storage"].get("restic", {"na": "no repo"}):
            raise PeerFailure("no restic repository")
        mnt = os.path.join(W.mnt, "restic")
        os.makedirs(mnt, exist_ok=True)
        lf = open(os.path.join(W.logs, "restic-mount.log"), "ab")
        proc = subprocess.Popen(["restic", "mount", "--no-default-permissions", mnt],
                                stdout=lf, stderr=lf, env=self.restic_env)
        _mounts.append((mnt, proc))
        self.wait_mounted(mnt, proc, PeerFailure, "restic mount")
        root = os.path.join(mnt, "snapshots", "latest")
        t0 = time.time()
        while not os.path.isdir(root):
            if proc.poll() is not None or time.time() - t0 > 60:
                raise PeerFailure("restic mount: no snapshots/latest (%s)" %
                                  tail(os.path.join(W.logs, "restic-mount.log"), 200))
            time.sleep(0.1)
        return mnt, proc, root

    def mount_squashfuse(self, img=None, name="squashfuse"):
        if not which("squashfuse"):
            raise PeerFailure("squashfuse not installed")
        img = img or os.path.join(W.work, "family.sqfs")
        if not os.path.exists(img):
            raise PeerFailure("no squashfs image")
        mnt = os.path.join(W.mnt, name)
        os.makedirs(mnt, exist_ok=True)
        lf = open(os.path.join(W.logs, name + ".log"), "ab")
        proc = subprocess.Popen(["squashfuse", "-f", img, mnt], stdout=lf, stderr=lf)
        _mounts.append((mnt, proc))
        self.wait_mounted(mnt, proc, PeerFailure, name)
        return mnt, proc, mnt

    def wait_mounted(self, mnt, proc, fail, what, timeout=60):
        t0 = time.time()
        while not os.path.ismount(mnt):
            if proc.poll() is not None:
                raise fail("%s exited %d before mounting" % (what, proc.returncode))
            if time.time() - t0 > timeout:
                raise fail("%s did not mount within %d s" % (what, timeout))
            time.sleep(0.05)

    def unmount(self, mnt, proc, fail):
        subprocess.run(["fusermount3", "-u", mnt], stderr=subprocess.DEVNULL)
        try:
            rc = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise fail("daemon did not exit after unmount")
        finally:
            if os.path.ismount(mnt):
                subprocess.run(["fusermount3", "-uz", mnt], stderr=subprocess.DEVNULL)
            _mounts[:] = [m for m in _mounts if m[0] != mnt]
        return rc

    def choose_targets(self, man, files):
        """The TTFB targets: a tensor of the deepest fine-tune chain and the largest checkpoint."""
        ckpts = [f for f in files if f["rel"].endswith((".safetensors", ".pt"))]
        big = max(ckpts, key=lambda f: (f["size"], f["rel"]))
        # deepest lineage chain (parents and predecessor) among safetensors checkpoints;
        # ft-a/v3 when it exists (base/v1 -> v2 -> v3 -> ft-a/v1 -> v2 -> v3).
        vers = {"%s/%s" % (v["model"], v["version"]): v for v in man["versions"]}
        depth = {}

        def d(k):
            if k not in depth:
                v = vers[k]
                ps = ["%s/%s" % (p["model"], p["version"]) for p in v.get("parents") or []]
                if v.get("predecessor"):
                    ps.append(v["predecessor"])
                depth[k] = 1 + max([d(p) for p in ps if p in vers] or [0])
            return depth[k]
        st = [f for f in ckpts if f["rel"].endswith(".safetensors")]
        pref = [f for f in st if f["version"] == "ft-a/v3"]
        deep = pref[0] if pref else max(st, key=lambda f: (d(f["version"]), f["rel"]))
        idx = safetensors_index(os.path.join(W.family, deep["rel"]))
        name = max(idx, key=lambda n: (idx[n][3], n))
        dtype, shape, off, length = idx[name]
        tens = {"version": deep["version"], "checkpoint": deep, "tensor": name,
                "dtype": dtype, "shape": shape, "offset": off, "bytes": length,
                "lfs_path": os.path.join(deep["version"], tensor_file(name, dtype))}
        self.R["ttfb_targets"] = {
            "tensor": "%s:%s (%s %s, %d bytes) = %s" % (deep["version"], name, dtype, shape,
                                                       length, tens["lfs_path"]),
            "checkpoint": "%s (%d bytes)" % (big["rel"], big["size"])}
        return tens, big

    def read_session(self, tool, rep, mount_fn, files, tens, big, fail):
        """One fresh mount: TTFB tensor, TTFB checkpoint, then (rep 0) the full cold read."""
        is_lfs = tool == "lineagefs"
        if mount_fn is None:
            root, proc, mnt = W.family, None, None
        else:
            mnt, proc, root = mount_fn()
        ck = lambda f: os.path.join(root, f["lfs"] if is_lfs else f["rel"])
        try:
            # TTFB of the tensor: its own file on lineagefs, the same bytes inside the
            # checkpoint (pread at the tensor's offset) on the others.
            drop_caches()
            rec = self.R["ttfb"].setdefault(tool, {"tensor": [], "checkpoint": []})
            if is_lfs:
                try:
                    rec["tensor"].append(first_bytes(os.path.join(root, tens["lfs_path"])))
                except FileNotFoundError:
                    # the layout's naming rule moved on: a bench problem, not a lineagefs one
                    note = "no tensor file at %s (fs/LAYOUT.md naming changed?)" % tens["lfs_path"]
                    if note not in self.R["notes"]:
                        self.R["notes"].append(note)
            else:
                rec["tensor"].append(first_bytes(ck(tens["checkpoint"]), tens["offset"]))
            # diagnostic (JSON only): the path walk alone, kernel caches dropped again
            # but the daemon as the read above left it
            tpath = os.path.join(root, tens["lfs_path"]) if is_lfs else ck(tens["checkpoint"])
            if os.path.exists(tpath):
                drop_caches()
                t0 = time.perf_counter()
                os.stat(tpath)
                rec.setdefault("tensor_path_lookup", []).append(time.perf_counter() - t0)
            drop_caches()
            t = first_bytes(ck(big))
            self.R["ttfb"][tool]["checkpoint"].append(t)
            if rep != 0:
                return
            drop_caches()
            t0 = time.perf_counter()
            n = read_all([ck(f) for f in files])
            dt = time.perf_counter() - t0
            want = sum(f["size"] for f in files)
            if n != want:
                raise fail("read %d bytes, expected %d" % (n, want))
            self.R["read"][tool] = {"seconds": dt, "bytes": n}
            if proc is not None:
                # the same work for every daemon: mount, two first-4-KiB reads, full read
                hwm, cpu = proc_stats(proc.pid)
                self.R["daemon"][tool] = {"peak_rss": hwm, "cpu_seconds": cpu,
                                          "now": dict(proc_stats.detail)}
            if is_lfs:
                self.verify(root, files)
                self.metadata(root)
                hwm, cpu = proc_stats(proc.pid)
                self.R["daemon"][tool]["after_verify_and_metadata"] = {
                    "peak_rss": hwm, "cpu_seconds": cpu}
        finally:
            if mnt is not None:
                self.unmount(mnt, proc, fail)

    def verify(self, root, files):
        bad = []
        for f in files:
            if sha256_file(os.path.join(root, f["lfs"])) != f["sha256"]:
                bad.append(f["lfs"])
        self.R["bitexact"] = {"files": len(files), "bytes": sum(f["size"] for f in files),
                              "mismatches": bad}
        if bad:
            raise LfsFailure("%d file(s) differ from the source: %s" % (len(bad), ", ".join(bad[:5])))
        log("bit-exact: %d files match their source sha256" % len(files))

    def metadata(self, root):
        reps = 1 if self.quick else 3
        res = self.R["metadata"]
        res["lineagefs"] = self.meta_times(root, reps)
        # The same tree on ext4: directories, symlinks and files with the mount's names,
        # sizes, modes and mtimes (file contents are sparse: find and ls -lR read none).
        build_skeleton(root, W.ext4)
        res["ext4"] = self.meta_times(W.ext4, reps)
        if res["ext4"]["entries"] != res["lineagefs"]["entries"]:
            self.R["notes"].append("ext4 copy has %d entries, mount %d" %
                                   (res["ext4"]["entries"], res["lineagefs"]["entries"]))
        # A FUSE peer on the same tree: squashfuse of a squashfs image of that copy.
        self.peer("metadata", "squashfuse", lambda: self.meta_squashfuse(reps))

    def meta_squashfuse(self, reps):
        if not which("mksquashfs"):
            raise PeerFailure("mksquashfs not installed")
        img = os.path.join(W.work, "meta-tree.sqfs")
        run(["mksquashfs", W.ext4, img, "-comp", "zstd", "-noappend", "-quiet"], "squashfs-meta")
        mnt, proc, _ = self.mount_squashfuse(img, "squashfuse-meta")
        try:
            return self.meta_times(mnt, reps)
        finally:
            self.unmount(mnt, proc, PeerFailure)
            os.unlink(img)

    def meta_times(self, root, reps):
        fts, lts, entries = [], [], None
        for _ in range(reps):
            drop_caches()
            t0 = time.perf_counter()
            p = subprocess.run("find %s | wc -l" % shq(root), shell=True, capture_output=True,
                               check=True)
            fts.append(time.perf_counter() - t0)
            entries = int(p.stdout)
            drop_caches()
            t0 = time.perf_counter()
            subprocess.run(["ls", "-lR", root], stdout=subprocess.DEVNULL, check=True)
            lts.append(time.perf_counter() - t0)
        return {"find_seconds": median(fts), "lsR_seconds": median(lts), "entries": entries,
                "find_all": fts, "lsR_all": lts}

    def run_read(self, man, files):
        tens, big = self.choose_targets(man, files)
        reps = 1 if self.quick else 3
        tools = [("ext4", None, PeerFailure), ("lineagefs", self.mount_lfs, LfsFailure),
                 ("borg", self.mount_borg, PeerFailure), ("restic", self.mount_restic, PeerFailure),
                 ("squashfuse", self.mount_squashfuse, PeerFailure)]
        for tool, fn, fail in tools:
            if tool == "lineagefs" and not self.lfs_ok:
                continue
            log("read: %s" % tool)
            for rep in range(reps):
                if tool == "lineagefs":
                    try:
                        self.read_session(tool, rep, fn, files, tens, big, fail)
                    except (LfsFailure, OSError, subprocess.SubprocessError) as e:
                        self.lfs_fail("read through the mount", e)
                        break
                else:
                    try:
                        self.read_session(tool, rep, fn, files, tens, big, fail)
                    except (PeerFailure, OSError, subprocess.SubprocessError, ValueError) as e:
                        reason = str(e).strip() or e.__class__.__name__
                        log("read %s: n/a (%s)" % (tool, reason))
                        self.R["read"].setdefault(tool, {"na": reason[:200]})
                        self.R["ttfb"].setdefault(tool, {"na": reason[:200]})
                        break


def shq(s):
    return "'" + s.replace("'", "'\\''") + "'"


def build_skeleton(src, dst):
    shutil.rmtree(dst, ignore_errors=True)
    os.makedirs(dst)
    dirs = []
    for dp, dns, fns in os.walk(src):
        rel = os.path.relpath(dp, src)
        out = os.path.join(dst, rel) if rel != "." else dst
        for n in dns + fns:
            s = os.path.join(dp, n)
            o = os.path.join(out, n)
            st = os.lstat(s)
            if os.path.islink(s):
                os.symlink(os.readlink(s), o)
            elif os.path.isdir(s):
                os.mkdir(o)
                dirs.append((o, st))
            else:
                with open(o, "wb") as f:
                    f.truncate(st.st_size)
                os.chmod(o, st.st_mode & 0o7777)
                os.utime(o, ns=(st.st_atime_ns, st.st_mtime_ns))
    for o, st in reversed(dirs):
        os.utime(o, ns=(st.st_atime_ns, st.st_mtime_ns))


# ----------------------------------------------------------------------------- report
def fmt_bytes(n):
    for unit, div in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= div:
            return "%.2f %s" % (n / div, unit)
    return "%d B" % n


def fmt_s(s):
    if s < 0.001:
        return "%.0f us" % (s * 1e6)
    if s < 1:
        return "%.1f ms" % (s * 1e3)
    return "%.2f s" % s


def fx(x):
    return "%.2fx" % x if x is not None else "-"


def build_rows(R):
    """Rows of (section, tool, value, ratio, advantage, adv_value) for the table."""
    rows = []
    st = R["storage"]
    lfs_b = st.get("lineagefs", {}).get("bytes")
    raw = R["raw"]["bytes"]
    zf = st.get("zstd-19", {}).get("sampled_fraction", 1.0)
    zest = " (2 procs)" if zf >= 1 else " (est., %.0f%% sample)" % (zf * 100)
    labels = {
        "raw": "raw (source files)",
        "lineagefs": "lineagefs (packs + index)",
        "zstd-19": "zstd -19 per file%s" % zest,
        "borg-zstd3": "borg, zstd,3",
        "borg-best": "borg, %s" % st.get("borg-best", {}).get("setting", "best"),
        "restic": "restic --compression max",
        "git-lfs": "git lfs (computed: unique files)",
        "squashfs": "squashfs (mksquashfs -comp zstd)",
    }
    adv = {}  # metric -> {peer: advantage}
    rows.append(("STORAGE", "tool", "bytes", "raw/stored", "lineagefs advantage"))
    for k in ["raw", "lineagefs", "zstd-19", "borg-zstd3", "borg-best", "restic", "git-lfs",
              "squashfs"]:
        v = st.get(k)
        if v is None:
            continue
        if "na" in v:
            rows.append(("", labels[k], "n/a", "-", v["na"][:60]))
            continue
        a = v["bytes"] / lfs_b if lfs_b and k != "lineagefs" else None
        if a is not None and k != "raw":
            adv.setdefault("storage bytes", {})[labels[k]] = a
        rows.append(("", labels[k], fmt_bytes(v["bytes"]), fx(raw / v["bytes"]),
                     "-" if k == "lineagefs" else fx(a)))

    ing = R["ingest"]
    lfs_t = ing.get("lineagefs", {}).get("seconds")
    cache = R["cache_mode"]
    rows.append(("INGEST (%s)" % cache, "tool", "wall time", "MB/s", "lineagefs advantage"))
    names = {"lineagefs": "lineagefs import --manifest", "borg-zstd3": "borg create zstd,3",
             "borg-best": "borg create %s" % st.get("borg-best", {}).get("setting", ""),
             "restic": "restic backup --compression max", "squashfs": "mksquashfs -comp zstd",
             "zstd-19": "zstd -19 per file%s" % zest}
    for k in ["lineagefs", "borg-zstd3", "restic", "borg-best", "squashfs", "zstd-19"]:
        v = ing.get(k)
        if v is None:
            if k in st and "na" in st[k]:
                rows.append(("", names[k], "n/a", "-", st[k]["na"][:60]))
            continue
        a = v["seconds"] / lfs_t if lfs_t and k != "lineagefs" else None
        if a is not None:
            adv.setdefault("ingest time", {})[names[k]] = a
        rows.append(("", names[k], fmt_s(v["seconds"]), "%.1f" % (raw / v["seconds"] / 1e6),
                     "-" if k == "lineagefs" else fx(a)))
    cpu = [(names[k], ing[k]["cpu"]) for k in ["lineagefs", "borg-zstd3", "restic", "borg-best",
                                                 "squashfs"] if "cpu" in ing.get(k, {})]
    if cpu:
        rows.append(("INGEST CPU time (user+sys)", "tool", "CPU time", "MB/CPU-s",
                     "cores used (CPU / wall)"))
        for name, c in cpu:
            k = [kk for kk, nn in names.items() if nn == name][0]
            rows.append(("", name, fmt_s(c), "%.1f" % (raw / c / 1e6) if c > 0 else "-",
                         "%.2f" % (c / ing[k]["seconds"])))

    rd = R["read"]
    lfs_r = rd.get("lineagefs", {}).get("seconds")
    rows.append(("SEQUENTIAL READ, every checkpoint (%s)" % cache, "tool", "wall time", "MB/s",
                 "lineagefs advantage"))
    rnames = {"lineagefs": "lineagefs mount", "ext4": "ext4 (source files)",
              "borg": "borg mount (zstd,3 archive)", "restic": "restic mount",
              "squashfuse": "squashfuse"}
    for k in ["lineagefs", "ext4", "borg", "restic", "squashfuse"]:
        v = rd.get(k)
        if v is None:
            continue
        if "na" in v:
            rows.append(("", rnames[k], "n/a", "-", v["na"][:60]))
            continue
        a = v["seconds"] / lfs_r if lfs_r and k != "lineagefs" else None
        if a is not None and k != "ext4":
            adv.setdefault("sequential read", {})[rnames[k]] = a
        rows.append(("", rnames[k], fmt_s(v["seconds"]), "%.1f" % (v["bytes"] / v["seconds"] / 1e6),
                     "-" if k == "lineagefs" else fx(a)))

    tt = R["ttfb"]
    for what, title in (("tensor", "FIRST 4 KiB OF A TENSOR (%s)" % cache),
                        ("checkpoint", "FIRST 4 KiB OF THE LARGEST CHECKPOINT (%s)" % cache)):
        lv = tt.get("lineagefs", {}).get(what)
        lm = median(lv) if lv else None
        rows.append((title, "tool", "median time", "runs", "lineagefs advantage"))
        for k in ["lineagefs", "ext4", "borg", "restic", "squashfuse"]:
            v = tt.get(k)
            if v is None:
                continue
            if "na" in v:
                rows.append(("", rnames[k], "n/a", "-", v["na"][:60]))
                continue
            m = median(v[what])
            if m is None:
                rows.append(("", rnames[k], "n/a", "-", "see notes"))
                continue
            a = m / lm if lm and k != "lineagefs" else None
            if a is not None and k != "ext4":
                adv.setdefault("first 4 KiB of " + what, {})[rnames[k]] = a
            label = rnames[k]
            if what == "tensor":
                label = ("lineagefs mount: tensors/...npy" if k == "lineagefs" else
                         rnames[k].split(" (")[0] + ": pread in checkpoint")
            rows.append(("", label, fmt_s(m), str(len(v[what])),
                         "-" if k == "lineagefs" else fx(a)))

    md = R["metadata"]
    if "lineagefs" in md and "ext4" in md:
        l, e = md["lineagefs"], md["ext4"]
        sq = md.get("squashfuse", {})
        rows.append(("METADATA, %d entries (%s)" % (l["entries"], cache), "tool", "time", "",
                     "lineagefs advantage"))
        for key, name in (("find_seconds", "find | wc -l"), ("lsR_seconds", "ls -lR")):
            rows.append(("", "lineagefs mount: " + name, fmt_s(l[key]), "", "-"))
            rows.append(("", "ext4 copy: " + name, fmt_s(e[key]), "", fx(e[key] / l[key])))
            if key in sq:
                a = sq[key] / l[key]
                adv.setdefault("metadata " + name.split()[0], {})["squashfuse (same tree)"] = a
                rows.append(("", "squashfuse, same tree: " + name, fmt_s(sq[key]), "", fx(a)))
            elif "na" in sq:
                rows.append(("", "squashfuse, same tree: " + name, "n/a", "", sq["na"][:60]))

    dm = R["daemon"]
    if dm:
        lcpu = dm.get("lineagefs", {}).get("cpu_seconds")
        lrss = dm.get("lineagefs", {}).get("peak_rss")
        rows.append(("FUSE DAEMON: mount + first-4-KiB reads + full read", "tool", "peak RSS", "CPU time",
                     "advantage RSS / CPU"))
        for k in ["lineagefs", "borg", "restic", "squashfuse"]:
            v = dm.get(k)
            if not v:
                continue
            ar = v["peak_rss"] / lrss if lrss and k != "lineagefs" else None
            ac = v["cpu_seconds"] / lcpu if lcpu and k != "lineagefs" else None
            if ar is not None:
                adv.setdefault("daemon peak RSS", {})[rnames[k]] = ar
            if ac is not None:
                adv.setdefault("daemon CPU time", {})[rnames[k]] = ac
            rows.append(("", rnames[k], fmt_bytes(v["peak_rss"]), fmt_s(v["cpu_seconds"]),
                         "-" if k == "lineagefs" else "%s / %s" % (fx(ar), fx(ac))))
    return rows, adv


def print_table(R, rows):
    w = [0, 0, 0, 0]
    for sec, a, b, c, d in rows:
        if sec:
            continue
        for i, x in enumerate((a, b, c, d)):
            w[i] = max(w[i], len(x))
    w = [max(x, 10) for x in w]
    w[0] = max(w[0], 38)
    out = []
    line = "-" * (sum(w) + 9)
    out.append("lineagefs benchmark — %s mode, family %s: %d versions, %d files, %s; caches %s"
               % (R["mode"], R["family_dir"], R["raw"]["versions"], R["raw"]["files"],
                  fmt_bytes(R["raw"]["bytes"]), R["cache_mode"]))
    out.append("lineagefs %s built %s; %d CPUs, load average %.1f at start, %.1f at end"
               % (R.get("git") or "?", R.get("binary_built"), os.cpu_count(),
                  R["loadavg_start"][0], R["loadavg_end"][0]))
    out.append("advantage = peer / lineagefs for bytes and times (>1: lineagefs smaller/faster)")
    for sec, a, b, c, d in rows:
        if sec:
            out.append(line)
            out.append("%s" % sec)
            out.append("  %-*s | %*s | %*s | %s" % (w[0], a, w[1], b, w[2], c, d))
            out.append(line)
        else:
            out.append("  %-*s | %*s | %*s | %s" % (w[0], a, w[1], b, w[2], c, d))
    out.append(line)
    return "\n".join(out)


def plot(R, adv, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    col = lambda k: "#d62728" if k.startswith("lineagefs") else "#1f77b4"

    def bars(ax, items, title, xlabel):
        items = [(k, v) for k, v in items if v is not None]
        ax.barh([k for k, _ in items], [v for _, v in items], color=[col(k) for k, _ in items])
        ax.invert_yaxis()
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        for i, (_, v) in enumerate(items):
            ax.text(v, i, " %.0f" % v if v >= 100 else " %.3g" % v, va="center", fontsize=8)

    st = R["storage"]
    bars(axes[0][0], [(k, st[k]["bytes"] / 1e6) for k in st if "bytes" in st[k]],
         "stored bytes (lower is better)", "MB")
    raw = R["raw"]["bytes"]
    ing = R["ingest"]
    bars(axes[0][1], [(k, raw / ing[k]["seconds"] / 1e6) for k in ing],
         "ingest throughput, %s (higher is better)" % R["cache_mode"], "MB/s")
    rd = R["read"]
    bars(axes[1][0], [(k, rd[k]["bytes"] / rd[k]["seconds"] / 1e6) for k in rd if "seconds" in rd[k]],
         "sequential read of every checkpoint, %s" % R["cache_mode"], "MB/s")
    tt = R["ttfb"]
    items = []
    for k in tt:
        if "na" in tt[k]:
            continue
        for what, short in (("tensor", "tensor"), ("checkpoint", "ckpt")):
            if tt[k].get(what):
                items.append((k + " " + short, median(tt[k][what]) * 1e3))
    bars(axes[1][1], items, "first 4 KiB, %s (lower is better)" % R["cache_mode"], "ms")
    fig.suptitle("lineagefs benchmark (%s mode, %s raw)" % (R["mode"], fmt_bytes(raw)))
    fig.tight_layout()
    fig.savefig(path, dpi=110)


# ----------------------------------------------------------------------------- main
def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="small family, one repetition (CI)")
    ap.add_argument("--regen", action="store_true", help="regenerate the cached family")
    ap.add_argument("--keep", action="store_true", help="keep $BENCH_DIR/work afterwards")
    args = ap.parse_args()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGHUP, _on_signal)
    atexit.register(cleanup_mounts)

    t_start = time.perf_counter()
    os.makedirs(BENCH_DIR, exist_ok=True)
    if not os.access(LFS, os.X_OK):
        log("lineagefs binary not found at %s" % LFS)
        return 1
    setup_dirs(args.quick)
    gen_s = ensure_family(args.quick, args.regen)
    drop_caches()  # decides cold vs warm once, before anything is measured
    b = Bench(args)
    R = b.R
    R["cache_mode"] = CACHE_MODE["mode"]
    R["family_dir"] = W.family
    R["lineagefs"] = LFS
    R["binary_built"] = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(os.path.getmtime(LFS)))
    p = subprocess.run(["git", "-C", ROOT, "describe", "--always", "--dirty"],
                       capture_output=True, text=True)
    R["git"] = p.stdout.strip() if p.returncode == 0 else None
    R["generation_seconds"] = gen_s
    if getattr(W, "family_note", None):
        R["notes"].append(W.family_note)
    R["loadavg_start"] = os.getloadavg()
    log("hashing the source files ...")
    man, files = load_family()
    log("family: %d versions, %d files, %s" % (len(man["versions"]), len(files),
                                                fmt_bytes(sum(f["size"] for f in files))))
    log("storage + ingest ...")
    b.run_storage(man, files)
    log("read ...")
    b.run_read(man, files)

    R["cache_note"] = CACHE_MODE.get("why", "sync; echo 3 > /proc/sys/vm/drop_caches before "
                                     "every timed step: every measurement reads cold")
    rows, adv = build_rows(R)
    # Where lineagefs is furthest behind its best peer (ext4 is a baseline, not a peer).
    worst = None
    for metric, peers in adv.items():
        best_peer, a = min(peers.items(), key=lambda kv: kv[1])
        R.setdefault("vs_best_peer", {})[metric] = {"peer": best_peer, "advantage": a}
        if worst is None or a < worst[2]:
            worst = (metric, best_peer, a)
    R["furthest_behind"] = worst and {"metric": worst[0], "peer": worst[1], "advantage": worst[2]}
    R["wall_seconds"] = time.perf_counter() - t_start
    R["loadavg_end"] = os.getloadavg()
    table = print_table(R, rows)
    print(table)
    print("vs best peer per metric (advantage; <1 means lineagefs is behind):")
    for metric, v in R.get("vs_best_peer", {}).items():
        print("  %-28s %-40s %s" % (metric, v["peer"], fx(v["advantage"])))
    if worst:
        print("furthest behind: %s — %s is %.2fx of lineagefs's" % (worst[0], worst[1], worst[2])
              if worst[2] < 1 else "lineagefs leads its best peer on every metric")
    ld = R["daemon"].get("lineagefs", {}).get("now", {})
    packs = R["storage"].get("lineagefs", {}).get("packs")
    if "rchar" in ld and packs:
        print("lineagefs daemon up to the end of the full read: read() %s from its store "
              "(%.1fx the packs' %s); the disk delivered it %s (readahead and LMDB pages "
              "included)" % (fmt_bytes(ld["rchar"]), ld["rchar"] / packs, fmt_bytes(packs),
                             fmt_bytes(ld.get("read_bytes", 0))))
    for k, v in R.get("ttfb_targets", {}).items():
        print("first-4-KiB target, %s: %s" % (k, v))
    be = R.get("bitexact")
    if be:
        print("bit-exact: %d/%d files read through the mount match their source sha256"
              % (be["files"] - len(be["mismatches"]), be["files"]))
    for n in R["notes"]:
        print("note: " + n)
    print("caches: " + R["cache_note"])
    print("ingest times include a final sync; borg repos are unencrypted (-e none), restic's "
          "is encrypted (it cannot be turned off)")
    if R["lineagefs_failures"]:
        for f in R["lineagefs_failures"]:
            print("LINEAGEFS FAILURE: " + f)
    R["table"] = table
    with open(os.path.join(BENCH_DIR, "results.json"), "w") as f:
        json.dump(R, f, indent=2, default=str)
    try:
        plot(R, adv, os.path.join(BENCH_DIR, "bench.png"))
    except Exception as e:  # a missing matplotlib must not fail the run
        print("note: no plot (%s)" % e)
    print("results: %s/results.json, %s/bench.png; wall time %.0f s (family generation %.0f s)"
          % (BENCH_DIR, BENCH_DIR, R["wall_seconds"], gen_s))
    cleanup_mounts()
    if not args.keep:
        shutil.rmtree(W.work, ignore_errors=True)
    return 1 if R["lineagefs_failures"] else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except LfsFailure as e:
        log("LINEAGEFS FAILURE: %s" % e)
        cleanup_mounts()
        sys.exit(1)
