#!/usr/bin/python3
"""Crash loop: kill -9 lineagefs at random moments and check the store survives.

Each iteration is one of
  import  `lineagefs import STORE SRC --model m --version vK --parent m/vP` of a
          fresh ~20-60 MB checkpoint set (safetensors, torch .pt, a generic
          file, config.json; a base family perturbed per version so new chunks
          and deltas are written), killed with SIGKILL after a random delay in
          [0, typical import time] (median of the imports that completed);
  daemon  (every --daemon-every iterations) `lineagefs mount STORE MNT -f`, a
          writer process writing a safetensors file into a draft (mkdir
          MNT/m/vK) which fsyncs a prefix and keeps writing, and SIGKILL of the
          daemon mid-write; then a lazy unmount and a remount;
  gc      (after every --gc-every iterations; drafts and rotated-out versions
          leave dead chunks) `lineagefs gc STORE`, killed at a random moment
          seven times in ten.
After every fault:
  - `lineagefs fsck STORE` exits 0 and says the store is consistent;
  - every version committed before the fault reads back bit-exactly
    (sha256 of `lineagefs cat`, or of the file read through the mount);
  - the interrupted version is absent, a draft (removed with `lineagefs rm`),
    or committed with exactly the source bytes;
  - daemon variant: after the remount the draft exists and its file starts
    with the fsync'd prefix (bytes past it are the source's or a hole).
Prints the seed (rerun with --seed), counts, and a final 'N passed, M failed'.
"""
import argparse
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lfs_testlib as T  # noqa: E402

MODEL = "m"

WRITER = r"""
import os, sys, time
path, src, prefix, step, pause = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
data = open(src, "rb").read()
fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
off = 0
while off < prefix:
    off += os.write(fd, data[off:min(prefix, off + step)])
os.fsync(fd)
print("SYNCED", off, flush=True)
try:
    while off < len(data):
        off += os.write(fd, data[off:off + step])
        time.sleep(pause)
    print("WROTE", off, flush=True)
except OSError as e:
    print("ERROR", off, e.errno, flush=True)
    os._exit(3)
time.sleep(3600)  # never close: a close would ingest the file
"""


class Family:
    """A base checkpoint set, perturbed deterministically per version."""

    def __init__(self, seed, size_mb):
        rng = np.random.default_rng([seed, 0xBA5E])
        budget = size_mb << 20
        self.st, self.pt = [], []
        shapes = [(512, 1024), (1024, 768), (1000, 513), (256, 2048), (768, 768), (4096, 128)]
        i = 0
        total = 0
        while total < budget * 0.45:
            shape = shapes[i % len(shapes)]
            dt = np.float16 if i % 5 == 3 else np.float32
            a = (rng.standard_normal(shape, dtype=np.float32) * 0.02).astype(dt)
            self.st.append((f"layers.{i}.weight", a))
            self.st.append((f"layers.{i}.bias", rng.standard_normal(shape[0] + i % 3, dtype=np.float32)))
            total += a.nbytes
            i += 1
        j = 0
        while total < budget * 0.85:
            shape = shapes[(j + 2) % len(shapes)]
            self.pt.append((f"head.{j}.w", rng.standard_normal(shape, dtype=np.float32) * 0.05))
            total += shape[0] * shape[1] * 4
            j += 1
        self.pt.append(("head.step", np.array([7], dtype=np.int64)))
        words = [bytes(rng.integers(97, 123, size=int(rng.integers(2, 10)), dtype=np.uint8)) for _ in range(5000)]
        parts, n = [], 0
        gbytes = int(budget * 0.12)
        idx = rng.integers(0, len(words), size=gbytes // 4)
        for w in idx:
            parts.append(words[w] + b" ")
            n += len(words[w]) + 1
            if n >= gbytes:
                break
        self.generic = b"".join(parts)

    @staticmethod
    def _perturb(rng, a):
        r = rng.random()
        if r < 0.5:
            return a
        b = a.copy()
        flat = b.reshape(-1)
        if r < 0.8:  # a fine-tune touching a slice: some chunks equal, some deltas
            lo = int(rng.integers(0, flat.size))
            hi = min(flat.size, lo + int(rng.integers(1, max(2, flat.size // 3))))
            flat[lo:hi] += (rng.standard_normal(hi - lo, dtype=np.float32) * 1e-3).astype(a.dtype)
        elif r < 0.9:  # everything moves a little: deltas everywhere
            flat += (rng.standard_normal(flat.size, dtype=np.float32) * 1e-4).astype(a.dtype)
        else:  # brand new values
            flat[:] = rng.standard_normal(flat.size, dtype=np.float32).astype(a.dtype)
        return b

    def write(self, seed, k, out):
        """Writes version k's files into out; returns {name: (sha256, size)}."""
        import torch
        rng = np.random.default_rng([seed, k])
        os.makedirs(out, exist_ok=True)
        st = [(n, self._perturb(rng, a)) for n, a in self.st]
        with open(os.path.join(out, "model.safetensors"), "wb") as f:
            f.write(T.safetensors_bytes(st, metadata={"version": str(k)}))
        sd = {n: torch.from_numpy(self._perturb(rng, a).copy()) for n, a in self.pt}
        torch.save(sd, os.path.join(out, "extra.pt"))
        g = bytearray(self.generic)
        for _ in range(int(rng.integers(1, 6))):  # edits, insertions: CDC realigns
            pos = int(rng.integers(0, len(g)))
            ins = bytes(rng.integers(32, 127, size=int(rng.integers(1, 4096)), dtype=np.uint8))
            if rng.random() < 0.5:
                g[pos:pos] = ins
            else:
                g[pos:pos + len(ins)] = ins
        with open(os.path.join(out, "tokenizer.bin"), "wb") as f:
            f.write(g)
        with open(os.path.join(out, "config.json"), "w") as f:
            json.dump({"version": k, "hidden": 1024, "seed": seed}, f)
        return {n: T.sha256_file(os.path.join(out, n)) for n in sorted(os.listdir(out))}


class Stats:
    def __init__(self):
        self.c = {}

    def inc(self, k, n=1):
        self.c[k] = self.c.get(k, 0) + n

    def get(self, k):
        return self.c.get(k, 0)


class Failure(Exception):
    pass


class CrashLoop:
    def __init__(self, a):
        self.a = a
        self.work = a.work
        self.store = os.path.join(self.work, "store")
        self.mnt = os.path.join(self.work, "mnt")
        self.srcdir = os.path.join(self.work, "src")
        self.lfs = T.Lfs(a.lineagefs, self.store)
        self.rng = random.Random(a.seed)
        self.family = Family(a.seed, a.size_mb)
        self.kept = {}  # committed versions: name -> {file: (sha, size)}
        self.order = []  # kept version names, oldest first
        self.stats = Stats()
        self.import_times = []
        self.gc_time = 0.5
        self.mount = None
        self.log = lambda *x: print(*x, flush=True)

    # -- helpers ---------------------------------------------------------------

    def expect_fsck(self, dl, when):
        ok, out = self.lfs.fsck(timeout=dl.timeout(600))
        self.stats.inc("fsck runs")
        if not ok:
            raise Failure(f"fsck not clean {when}:\n{out[-3000:]}")

    def verify_version(self, v, files, dl, via_mount=False):
        rec = self.lfs.show(f"{MODEL}/{v}", timeout=dl.timeout(120))
        if rec is None:
            raise Failure(f"committed version {MODEL}/{v} disappeared")
        if rec.get("state") != "committed":
            raise Failure(f"{MODEL}/{v} state {rec.get('state')!r}, expected committed")
        got_files = rec.get("files", {})
        if sorted(got_files) != sorted(files):
            raise Failure(f"{MODEL}/{v} files {sorted(got_files)} != {sorted(files)}")
        for name, (sha, size) in files.items():
            if via_mount:
                got = T.sha256_file(os.path.join(self.mnt, MODEL, v, name))
            else:
                got = self.lfs.cat_sha256(f"{MODEL}/{v}", name, timeout=dl.timeout(300))
            if got != (sha, size):
                raise Failure(f"{MODEL}/{v}/{name}: read back {got[1]} bytes sha256 {got[0][:16]}…, "
                              f"expected {size} bytes {sha[:16]}… ({'mount' if via_mount else 'cat'})")
            self.stats.inc("files verified")
            self.stats.inc("bytes verified", size)
        self.stats.inc("version reads verified")

    def verify_all(self, dl, via_mount=False):
        for v in self.order:
            self.verify_version(v, self.kept[v], dl, via_mount)

    def settle_interrupted(self, v, files, dl, what):
        """The version whose writer was killed: absent, draft (removed), or committed+exact."""
        rec = self.lfs.show(f"{MODEL}/{v}", timeout=dl.timeout(60))
        if rec is None:
            self.stats.inc(f"{what}: version absent after kill")
            return
        state = rec.get("state")
        if state == "draft":
            self.stats.inc(f"{what}: draft left behind")
            p = self.lfs.run("rm", self.store, f"{MODEL}/{v}", timeout=dl.timeout(120))
            if p.returncode != 0:
                raise Failure(f"rm of leftover draft {MODEL}/{v} failed: {p.stderr.decode(errors='replace')}")
            if self.lfs.show(f"{MODEL}/{v}", timeout=dl.timeout(60)) is not None:
                raise Failure(f"draft {MODEL}/{v} still there after rm")
            return
        if state != "committed" or files is None:
            raise Failure(f"{MODEL}/{v}: unexpected state {state!r}")
        self.stats.inc(f"{what}: committed before the kill")
        self.kept[v] = files
        self.order.append(v)
        self.verify_version(v, files, dl)

    def typical_import_time(self):
        if not self.import_times:
            return 5.0
        return statistics.median(self.import_times[-9:])

    # -- iteration kinds -----------------------------------------------------------

    def do_import(self, k, dl, kill=True):
        v = f"v{k}"
        src = os.path.join(self.srcdir, v)
        shutil.rmtree(src, ignore_errors=True)
        files = self.family.write(self.a.seed, k, src)
        args = [self.a.lineagefs, "import", self.store, src, "--model", MODEL, "--version", v,
                "-m", f"crash-loop {k}", "--metadata", json.dumps({"iteration": k})]
        if self.order:
            parent = self.rng.choice(self.order[-3:])
            args += ["--parent", f"{MODEL}/{parent}", "--relation", "finetune"]
        # [0, typical import time] (x --kill-window): most kills land inside the
        # import; the slower imports commit before theirs.
        delay = self.rng.uniform(0, self.a.kill_window * self.typical_import_time()) if kill else None
        t0 = time.monotonic()
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        killed = False
        try:
            proc.wait(timeout=delay if kill else dl.timeout())
        except subprocess.TimeoutExpired:
            if not kill:
                raise
            os.kill(proc.pid, signal.SIGKILL)
            killed = True
        try:
            _, err = proc.communicate(timeout=dl.timeout(60))
        except subprocess.TimeoutExpired:
            proc.kill()
            raise Failure(f"import {v} did not finish/die in time")
        elapsed = time.monotonic() - t0
        if killed:
            self.stats.inc("faults injected")
            self.stats.inc("import kills")
            self.log(f"  import {v}: killed after {delay:.2f}s")
        else:
            if proc.returncode != 0:
                raise Failure(f"import {v} failed (rc {proc.returncode}): {err.decode(errors='replace')}")
            self.import_times.append(elapsed)
            self.stats.inc("imports completed before the kill" if kill else "imports (unkilled)")
            self.log(f"  import {v}: completed in {elapsed:.2f}s" + (f" (kill was due at {delay:.2f}s)" if kill else ""))
        self.expect_fsck(dl, f"after killing import {v}" if killed else f"after import {v}")
        if killed:
            self.settle_interrupted(v, files, dl, "import")
        else:
            self.kept[v] = files
            self.order.append(v)
            self.verify_version(v, files, dl)
        shutil.rmtree(src, ignore_errors=True)
        self.verify_all(dl)

    def do_daemon(self, k, dl):
        v = f"v{k}"
        src = os.path.join(self.srcdir, v)
        shutil.rmtree(src, ignore_errors=True)
        files = self.family.write(self.a.seed, k, src)
        src_file = os.path.join(src, "model.safetensors")
        data = open(src_file, "rb").read()
        prefix = self.rng.randrange(1 << 20, max((1 << 20) + 1, len(data) - (1 << 20)))
        log_path = os.path.join(self.work, "daemon.log")
        self.mount = T.Mount(self.a.lineagefs, self.store, self.mnt, log_path)
        writer = None
        try:
            self.mount.start(timeout=dl.timeout(60))
            vdir = os.path.join(self.mnt, MODEL, v)
            os.mkdir(vdir)
            target = os.path.join(vdir, "model.safetensors")
            writer = subprocess.Popen([sys.executable, "-c", WRITER, target, src_file, str(prefix),
                                       str(256 << 10), "0.005"],
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            line = writer.stdout.readline()
            if not line.startswith("SYNCED"):
                writer.kill()
                raise Failure(f"writer failed before its fsync: {line!r} {writer.stderr.read()[-2000:]}")
            time.sleep(self.rng.uniform(0, 0.3))
            if not self.mount.alive():
                raise Failure(f"daemon died on its own (log {log_path})")
            self.mount.kill9()
            self.stats.inc("faults injected")
            self.stats.inc("daemon kills")
            writer.kill()
            writer.wait(timeout=dl.timeout(30))
            writer = None
            T.force_unmount(self.mnt)
            if T.is_mounted(self.mnt):
                raise Failure("mount point still mounted after fusermount3 -uz")
            self.log(f"  daemon: killed mid-write of {v}/model.safetensors (fsync'd prefix {prefix} of {len(data)} bytes)")
            # Remount: the daemon ingests the spool of the killed writer.
            self.mount = T.Mount(self.a.lineagefs, self.store, self.mnt, log_path)
            self.mount.start(timeout=dl.timeout(120))
            if not os.path.isdir(vdir):
                raise Failure(f"draft {v} missing after remount")
            state = os.getxattr(vdir, "user.lineage.state")
            if state != b"draft":
                raise Failure(f"{v} state {state!r} after remount, expected draft")
            if not os.path.exists(target):
                raise Failure(f"{v}/model.safetensors missing after remount (fsync'd {prefix} bytes)")
            got = open(target, "rb").read()
            if len(got) < prefix:
                raise Failure(f"{v}/model.safetensors has {len(got)} bytes, fsync'd prefix was {prefix}")
            if got[:prefix] != data[:prefix]:
                bad = next(i for i in range(prefix) if got[i] != data[i])
                raise Failure(f"{v}/model.safetensors differs from the fsync'd prefix at byte {bad}")
            if len(got) > len(data):
                raise Failure(f"{v}/model.safetensors grew past the source ({len(got)} > {len(data)})")
            tail = np.frombuffer(got[prefix:], dtype=np.uint8)
            want = np.frombuffer(data[prefix:len(got)], dtype=np.uint8)
            wrong = (tail != want) & (tail != 0)
            if wrong.any():
                raise Failure(f"{v}/model.safetensors: byte {prefix + int(np.argmax(wrong))} past the "
                              f"fsync'd prefix is neither the written byte nor a hole")
            self.stats.inc("daemon: fsync'd prefix recovered")
            self.stats.inc("bytes verified", prefix)
            # Committed versions through the remounted tree.
            self.verify_all(dl, via_mount=True)
            if not self.mount.alive():
                raise Failure("daemon died after remount")
            rc = self.mount.stop(timeout=dl.timeout(60))
            if rc not in (0, None):
                self.log(f"  daemon exited with {rc} on unmount")
        finally:
            if writer is not None and writer.poll() is None:
                writer.kill()
                writer.wait()
            if self.mount is not None:
                self.mount.stop(timeout=10)
                self.mount = None
        self.expect_fsck(dl, f"after daemon kill + recovery of {v}")
        self.settle_interrupted(v, None, dl, "daemon")
        self.expect_fsck(dl, f"after removing draft {v}")
        shutil.rmtree(src, ignore_errors=True)
        self.verify_all(dl)

    def do_gc(self, dl):
        kill = self.rng.random() < 0.7
        delay = self.rng.uniform(0, self.gc_time * 1.2)
        t0 = time.monotonic()
        proc = subprocess.Popen([self.a.lineagefs, "gc", self.store], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        killed = False
        try:
            proc.wait(timeout=delay if kill else dl.timeout())
        except subprocess.TimeoutExpired:
            if not kill:
                raise
            os.kill(proc.pid, signal.SIGKILL)
            killed = True
        _, err = proc.communicate(timeout=dl.timeout(60))
        if killed:
            self.stats.inc("faults injected")
            self.stats.inc("gc kills")
            self.log(f"  gc: killed after {delay:.2f}s")
        else:
            if proc.returncode != 0:
                raise Failure(f"gc failed (rc {proc.returncode}): {err.decode(errors='replace')}")
            self.gc_time = max(0.05, time.monotonic() - t0)
            self.stats.inc("gc completed")
            self.log(f"  gc: completed in {self.gc_time:.2f}s")
        self.expect_fsck(dl, "after gc" + (" kill" if killed else ""))
        self.verify_all(dl)

    def rotate(self, dl):
        """Keeps the store bounded: removes the oldest versions but v0."""
        removed = 0
        while len(self.order) > self.a.keep:
            victim = self.order[1] if len(self.order) > 1 else self.order[0]
            p = self.lfs.run("rm", self.store, f"{MODEL}/{victim}", "--force", timeout=dl.timeout(120))
            if p.returncode != 0:
                raise Failure(f"rm --force {MODEL}/{victim} failed: {p.stderr.decode(errors='replace')}")
            self.order.remove(victim)
            del self.kept[victim]
            removed += 1
            self.stats.inc("versions rotated out")
        return removed

    # -- main loop ---------------------------------------------------------------

    def run(self):
        a = self.a
        self.log(f"crash_loop: seed={a.seed} iterations={a.iterations} size={a.size_mb} MB "
                 f"work={self.work} lineagefs={a.lineagefs}")
        os.makedirs(self.work, exist_ok=True)
        shutil.rmtree(self.store, ignore_errors=True)
        self.lfs.init()
        passed = failed = 0
        try:
            # Calibration: two imports that are not killed give the typical time.
            for k in range(2):
                dl = T.Deadline(a.deadline * 2)
                self.do_import(k, dl, kill=False)
            self.log(f"typical import time {self.typical_import_time():.2f}s")
            for it in range(a.iterations):
                k = it + 2
                dl = T.Deadline(a.deadline)
                kind = "import"
                if a.daemon_every and it % a.daemon_every == a.daemon_every - 1:
                    kind = "daemon"
                t0 = time.monotonic()
                self.log(f"[{it + 1}/{a.iterations}] {kind} v{k}")
                try:
                    if kind == "daemon":
                        self.do_daemon(k, dl)
                    else:
                        self.do_import(k, dl)
                    self.rotate(dl)
                    if a.gc_every and it % a.gc_every == a.gc_every - 1:
                        self.do_gc(dl)
                    passed += 1
                    self.log(f"  ok ({time.monotonic() - t0:.1f}s)")
                except (Failure, TimeoutError, subprocess.TimeoutExpired, RuntimeError, OSError) as e:
                    failed += 1
                    self.stats.inc("failures")
                    self.log(f"  FAIL: {type(e).__name__}: {e}")
                    if not isinstance(e, Failure):
                        traceback.print_exc()
                    if self.mount is not None:
                        self.mount.stop(timeout=10)
                        self.mount = None
                    if failed >= a.max_failures:
                        self.log(f"stopping after {failed} failures")
                        break
            # Final: everything committed reads back, the store is clean.
            dl = T.Deadline(a.deadline * 4)
            try:
                self.expect_fsck(dl, "at the end")
                self.verify_all(dl)
            except (Failure, TimeoutError, RuntimeError, OSError) as e:
                failed += 1
                self.log(f"final check FAIL: {e}")
        finally:
            if self.mount is not None:
                self.mount.stop(timeout=10)
            T.force_unmount(self.mnt)
        s = self.stats
        self.log("")
        self.log(f"crash_loop summary (seed {a.seed}):")
        self.log(f"  crash iterations survived: {passed} of {passed + failed}")
        self.log(f"  faults injected: {s.get('faults injected')} (import kills {s.get('import kills')}, "
                 f"daemon kills {s.get('daemon kills')}, gc kills {s.get('gc kills')})")
        for k in sorted(s.c):
            if k not in ("faults injected", "import kills", "daemon kills", "gc kills"):
                self.log(f"  {k}: {s.c[k]}")
        self.log(f"CRASH iterations={passed + failed} survived={passed} faults={s.get('faults injected')} "
                 f"import_kills={s.get('import kills')} daemon_kills={s.get('daemon kills')} "
                 f"gc_kills={s.get('gc kills')}")
        self.log(f"{passed} passed, {failed} failed")
        return failed == 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iterations", type=int, default=None, help="default 200 (20 with --ci)")
    ap.add_argument("--ci", action="store_true", help="quick mode: 20 iterations")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--lineagefs", default=T.DEFAULT_LINEAGEFS)
    ap.add_argument("--work", default=None, help="work directory (default: a new temp dir, removed on success)")
    ap.add_argument("--size-mb", type=int, default=None, help="checkpoint set size in MB (default 40)")
    ap.add_argument("--keep", type=int, default=3, help="committed versions kept (older ones are removed)")
    ap.add_argument("--daemon-every", type=int, default=4, help="every Nth iteration kills the daemon")
    ap.add_argument("--gc-every", type=int, default=3, help="every Nth iteration runs (and maybe kills) gc")
    ap.add_argument("--deadline", type=float, default=240, help="seconds per iteration")
    ap.add_argument("--kill-window", type=float, default=1.0,
                    help="kill delay is uniform in [0, this x typical import time]")
    ap.add_argument("--max-failures", type=int, default=5)
    ap.add_argument("--no-snapshot", action="store_true",
                    help="run the binary in place (default: copy it and its libraries first)")
    a = ap.parse_args()
    if a.iterations is None:
        a.iterations = 20 if a.ci else 200
    if a.size_mb is None:
        a.size_mb = 40
    if a.seed is None:
        a.seed = random.SystemRandom().randrange(1 << 31)
    if not os.access(a.lineagefs, os.X_OK):
        print(f"crash_loop: no lineagefs binary at {a.lineagefs}", file=sys.stderr)
        print("0 passed, 1 failed")
        return 1
    own_work = a.work is None
    if own_work:
        a.work = tempfile.mkdtemp(prefix="lfs-crash-")
    if not a.no_snapshot:
        a.lineagefs = T.snapshot_binary(a.lineagefs, os.path.join(a.work, "bin"))
    ok = CrashLoop(a).run()
    if own_work and ok:
        shutil.rmtree(a.work, ignore_errors=True)
    elif own_work:
        print(f"crash_loop: work directory kept for inspection: {a.work}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
