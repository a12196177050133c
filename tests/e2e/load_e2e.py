#!/usr/bin/python3
"""Load: 16 reader processes over different versions and one writer, for a
bounded time, on one mount.

Readers (separate processes) each take a version and loop: drop the file's
page cache (fadvise DONTNEED, so the daemon serves again), read a whole file
and compare its sha256 with the one of `lineagefs export`, then random
preads compared byte for byte with the exported copy. The writer alternates
a `lineagefs import` into the same store while it is mounted (then reads the
new version through the mount) and a file written into a draft through the
mount (pwrite in pieces, close, read back, commit with setfattr, read back).
The daemon's RSS is sampled every 0.2 s; its peak must stay under
cache_mb + --rss-slack-mb.

Usage: load_e2e.py --lineagefs PATH [--seconds 60] [--readers 16] [--cache-mb 16]
Prints a LOAD summary line and 'N passed, M failed' last.
"""
import argparse
import hashlib
import multiprocessing as mp
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import traceback

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                                "scripts", "reliability"))
import lfs_testlib as T  # noqa: E402

results = []


def check(name, ok, detail=""):
    results.append((name, ok, detail))
    print(f"{'ok  ' if ok else 'FAIL'} {name}{'' if ok else ': ' + detail}", flush=True)


def make_version(dst, seed, base=None, nbytes=6 << 20):
    """A safetensors checkpoint (a fine-tune of base when given) and a config."""
    rng = np.random.default_rng(seed)
    os.makedirs(dst, exist_ok=True)
    n = nbytes // 4 // 4
    if base is None:
        ts = [(f"layers.{i}.weight", rng.standard_normal(n, dtype=np.float32)) for i in range(4)]
    else:
        ts = []
        for name, a in base:
            b = a.copy()
            idx = rng.integers(0, len(b), len(b) // 50)
            b[idx] += rng.standard_normal(len(idx), dtype=np.float32) * 0.01
            ts.append((name, b))
    with open(f"{dst}/model.safetensors", "wb") as f:
        f.write(T.safetensors_bytes(ts))
    with open(f"{dst}/config.json", "w") as f:
        f.write('{"seed": %d}\n' % seed)
    with open(f"{dst}/random.bin", "wb") as f:
        f.write(rng.bytes(1 << 20))
    return ts


def reader(idx, mnt_dir, ref_dir, names, hashes, t_end, q):
    rng = random.Random(idx)
    st = {"whole": 0, "preads": 0, "bytes": 0, "errors": 0, "first_error": ""}
    try:
        while time.monotonic() < t_end:
            name = rng.choice(names)
            p, ref = os.path.join(mnt_dir, name), os.path.join(ref_dir, name)
            try:
                fd = os.open(p, os.O_RDONLY)
                try:
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                    h = hashlib.sha256()
                    off = 0
                    while True:
                        b = os.pread(fd, 1 << 20, off)
                        if not b:
                            break
                        h.update(b)
                        off += len(b)
                    if h.hexdigest() != hashes[name]:
                        raise AssertionError(f"{p}: sha256 differs from the export")
                    st["whole"] += 1
                    st["bytes"] += off
                    with open(ref, "rb") as rf:
                        size = os.fstat(rf.fileno()).st_size
                        for _ in range(20):
                            o = rng.randrange(0, size + 10)
                            n = rng.randrange(1, 1 << 17)
                            os.posix_fadvise(fd, o, n, os.POSIX_FADV_DONTNEED)
                            got = os.pread(fd, n, o)
                            want = os.pread(rf.fileno(), n, o)
                            if got != want:
                                raise AssertionError(f"{p}: pread({n}, {o}) differs from the export")
                            st["preads"] += 1
                            st["bytes"] += len(got)
                finally:
                    os.close(fd)
            except (OSError, AssertionError) as e:
                st["errors"] += 1
                st["first_error"] = st["first_error"] or repr(e)
                time.sleep(0.05)
    finally:
        q.put((idx, st))


class Writer(threading.Thread):
    def __init__(self, lfs, store, mnt, work, base, t_end):
        super().__init__(daemon=True)
        self.lfs, self.store, self.mnt, self.work, self.base, self.t_end = lfs, store, mnt, work, base, t_end
        self.st = {"imports": 0, "mount_writes": 0, "commits": 0, "bytes": 0, "errors": 0, "first_error": ""}

    def fail(self, msg):
        self.st["errors"] += 1
        self.st["first_error"] = self.st["first_error"] or msg

    def run(self):
        k = 0
        while time.monotonic() < self.t_end:
            k += 1
            try:
                if k % 2:
                    self.import_one(k)
                else:
                    self.write_one(k)
            except Exception as e:  # noqa: BLE001 - counted
                where = traceback.extract_tb(e.__traceback__)[-1]
                self.fail(f"round {k}: {e!r} at line {where.lineno}: {where.line}")

    def import_one(self, k):
        src = f"{self.work}/wsrc/i{k}"
        make_version(src, 1000 + k, self.base, nbytes=2 << 20)
        p = subprocess.run([self.lfs, "import", self.store, src, "--model", "w", "--parent", "m0/v1",
                            "--relation", "finetune", "--version", f"i{k}"],
                           capture_output=True, text=True, timeout=300)
        if p.returncode != 0:
            return self.fail(f"import i{k}: {p.stderr.strip()[-300:]}")
        self.st["imports"] += 1
        for n in sorted(os.listdir(src)):
            want = T.sha256_file(f"{src}/{n}")
            got = T.sha256_file(f"{self.mnt}/w/i{k}/{n}")
            if got != want:
                return self.fail(f"w/i{k}/{n} read through the mount differs from the imported file")
            self.st["bytes"] += got[1]
        shutil.rmtree(src, ignore_errors=True)

    def write_one(self, k):
        rng = random.Random(k)
        data = rng.randbytes(3 << 20)
        os.makedirs(f"{self.mnt}/wm", exist_ok=True)
        d = f"{self.mnt}/wm/d{k}"
        os.mkdir(d)
        fd = os.open(f"{d}/blob.bin", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            pieces = list(range(0, len(data), 256 << 10))
            rng.shuffle(pieces)  # out of order, like a checkpoint writer seeking
            for off in pieces:
                os.pwrite(fd, data[off:off + (256 << 10)], off)
        finally:
            os.close(fd)
        if open(f"{d}/blob.bin", "rb").read() != data:
            return self.fail(f"wm/d{k}/blob.bin reads back different before the commit")
        self.st["mount_writes"] += 1
        os.setxattr(d, "user.lineage.state", b"committed")
        self.st["commits"] += 1
        if open(f"{d}/blob.bin", "rb").read() != data:
            return self.fail(f"wm/d{k}/blob.bin reads back different after the commit")
        self.st["bytes"] += 2 * len(data)


def rss_kb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def run(lfs, work, args):
    store, mnt, ref = f"{work}/store", f"{work}/mnt", f"{work}/ref"
    cli = T.Lfs(lfs, store)
    cli.init()
    versions = []
    base = None
    for mi in range(2):
        for vi in range(args.versions // 2):
            src = f"{work}/src/m{mi}/v{vi + 1}"
            ts = make_version(src, mi * 100 + vi, base if vi else None)
            if mi == 0 and vi == 0:
                base = ts
            extra = ["--parent", f"m{mi}/v{vi}", "--relation", "finetune"] if vi else []
            cli.run("import", store, src, "--model", f"m{mi}", *extra, check=True, timeout=300)
            versions.append(f"m{mi}/v{vi + 1}")
    hashes = {}
    for v in versions:
        cli.run("export", store, v, f"{ref}/{v}", check=True, timeout=300)
        for n in os.listdir(f"{ref}/{v}"):
            hashes[f"{v}/{n}"] = T.sha256_file(f"{ref}/{v}/{n}")[0]
    shutil.rmtree(f"{work}/src")
    m = T.Mount(lfs, store, mnt, f"{work}/daemon.log", extra_opts=f"cache_mb={args.cache_mb},log_level=info")
    m.start(timeout=60)
    peak = [0]
    samples = [0]
    stop = threading.Event()

    def sampler():
        while not stop.is_set():
            r = rss_kb(m.proc.pid)
            if r:
                peak[0] = max(peak[0], r)
                samples[0] += 1
            stop.wait(0.2)
    try:
        rss_idle = rss_kb(m.proc.pid)
        th = threading.Thread(target=sampler, daemon=True)
        th.start()
        t0 = time.monotonic()
        t_end = t0 + args.seconds
        q = mp.Queue()
        procs = []
        for i in range(args.readers):
            v = versions[i % len(versions)]
            names = sorted(n for n in hashes if n.startswith(v + "/"))
            names = [n[len(v) + 1:] for n in names]
            vh = {n: hashes[f"{v}/{n}"] for n in names}
            p = mp.Process(target=reader, args=(i, f"{mnt}/{v}", f"{ref}/{v}", names, vh, t_end, q))
            p.start()
            procs.append(p)
        w = Writer(lfs, store, mnt, work, base, t_end)
        w.start()
        stats = {}
        deadline = t_end + 300
        while len(stats) < len(procs) and time.monotonic() < deadline:
            try:
                i, st = q.get(timeout=max(1, deadline - time.monotonic()))
                stats[i] = st
            except Exception:  # noqa: BLE001 - queue.Empty
                break
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
        w.join(timeout=max(1, deadline - time.monotonic()))
        elapsed = time.monotonic() - t0
        stop.set()
        th.join()
        alive = m.alive()
    finally:
        stop.set()
        m.stop()
    check("every reader reported", len(stats) == args.readers, f"{len(stats)}/{args.readers}")
    rerr = sum(s["errors"] for s in stats.values())
    whole = sum(s["whole"] for s in stats.values())
    preads = sum(s["preads"] for s in stats.values())
    rbytes = sum(s["bytes"] for s in stats.values())
    first = next((s["first_error"] for s in stats.values() if s["first_error"]), "")
    check("readers: no errors, every byte equal to the export", rerr == 0, f"{rerr} errors, first: {first}")
    check("readers: every reader read whole files", all(s["whole"] > 0 for s in stats.values()),
          str({i: s["whole"] for i, s in stats.items()}))
    check("writer: no errors", w.st["errors"] == 0, w.st["first_error"])
    check("writer: at least one import and one write through the mount",
          w.st["imports"] > 0 and w.st["mount_writes"] > 0, str(w.st))
    check("writer finished", not w.is_alive())
    check("daemon alive to the end", alive)
    bound = args.cache_mb * 1024 + args.rss_slack_mb * 1024
    check(f"daemon peak RSS {peak[0] // 1024} MiB <= cache {args.cache_mb} MiB + {args.rss_slack_mb} MiB",
          0 < peak[0] <= bound, f"peak {peak[0]} kB, bound {bound} kB")
    ok, out = cli.fsck(timeout=600)
    check("fsck after the load", ok, out[-500:])
    print(f"LOAD seconds={elapsed:.0f} readers={args.readers} versions={len(versions)} "
          f"whole_reads={whole} preads={preads} read_mib={rbytes >> 20} reader_errors={rerr} "
          f"imports={w.st['imports']} mount_writes={w.st['mount_writes']} commits={w.st['commits']} "
          f"writer_mib={w.st['bytes'] >> 20} writer_errors={w.st['errors']} "
          f"rss_idle_mib={(rss_idle or 0) // 1024} rss_peak_mib={peak[0] // 1024} "
          f"rss_samples={samples[0]} cache_mb={args.cache_mb}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lineagefs", default=T.DEFAULT_LINEAGEFS)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--readers", type=int, default=16)
    ap.add_argument("--versions", type=int, default=8)
    ap.add_argument("--cache-mb", type=int, default=16,
                    help="small, so that the versions (~56 MB) do not fit and chunks are decoded again")
    ap.add_argument("--rss-slack-mb", type=int, default=128,
                    help="allowed RSS beyond the chunk cache (code, LMDB map pages, buffers)")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="lfs-load-")
    try:
        lfs = T.snapshot_binary(os.path.abspath(args.lineagefs), f"{work}/bin")
        run(lfs, work, args)
    except Exception as e:  # noqa: BLE001
        traceback.print_exc()
        check("load test ran to the end", False, repr(e))
    finally:
        T.force_unmount(f"{work}/mnt")
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    p = sum(1 for _, ok, _ in results if ok)
    f = len(results) - p
    print(f"{p} passed, {f} failed")
    return 1 if f else 0


if __name__ == "__main__":
    mp.set_start_method("fork")
    sys.exit(main())
