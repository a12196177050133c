#!/usr/bin/python3
"""Bit-rot: corrupt random bytes in a copy of a store's LMDB file
(STORE/index/data.mdb) or of one of its packs, then open, read and fsck it.

Every read must return the exact original bytes or fail; never other bytes.
Each trial works on a fresh copy and runs every command in a subprocess with
a timeout (LMDB keeps no page checksums: a damaged page can crash or hang the
reader, which is counted apart from wrong bytes). Reads: `lineagefs cat` of
every file of every version (the bytes printed before a failure must be a
prefix of the original), and on every --mount-every'th trial a mount of the
copy read with open/read (EIO expected). `lineagefs fsck --json` must report
a damaged pack and name the files the reads found unreadable.

Targets: a pack (flips or a burst), the LMDB file anywhere (flips, a burst,
a zeroed page), or bytes inside one JSON record in it (what the record
decoders parse). Outcomes per trial: wrong bytes (must be 0), crash/hang, clean error
(something failed cleanly, nothing wrong), correct bytes (the damage hit
bytes nothing reads: LMDB free pages, unused pack space; fsck then too must
pass... or report it).

Usage: bitrot.py [--trials N] [--ci] [--seed S] [--lineagefs PATH] [--work DIR]
Prints a BITROT summary line and 'N passed, M failed' (trials) last.
"""
import argparse
import collections
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lfs_testlib as T  # noqa: E402


def build_store(lfs, work):
    store = f"{work}/store"
    cli = T.Lfs(lfs, store)
    cli.init()
    rng = np.random.default_rng(3)
    base = [(f"layer.{i}.weight", rng.standard_normal(200_000, dtype=np.float32)) for i in range(3)]
    versions = []
    for k in range(3):
        src = f"{work}/src/v{k + 1}"
        os.makedirs(src)
        ts = []
        for name, a in base:
            b = a.copy()
            if k:
                idx = rng.integers(0, len(b), len(b) // 20)
                b[idx] += np.float32(0.01) * k
            ts.append((name, b))
        with open(f"{src}/model.safetensors", "wb") as f:
            f.write(T.safetensors_bytes(ts))
        with open(f"{src}/config.json", "w") as f:
            json.dump({"k": k, "pad": "x" * 3000}, f)
        with open(f"{src}/tokenizer.bin", "wb") as f:
            f.write(rng.bytes(300_000))
        extra = ["--parent", f"m/v{k}", "--relation", "finetune"] if k else []
        cli.run("import", store, src, "--model", "m", *extra, check=True, timeout=300)
        versions.append(f"m/v{k + 1}")
    ref = {}
    for v in versions:
        for n in sorted(os.listdir(f"{work}/src/{v[2:]}")):
            ref[(v, n)] = open(f"{work}/src/{v[2:]}/{n}", "rb").read()
    ok, out = cli.fsck()
    if not ok:
        raise RuntimeError("fresh store fails fsck: " + out)
    return store, ref


def corrupt_record(path, rng):
    """Damages bytes inside a JSON version/model record of the LMDB file (the
    record decoders' input; LMDB's own structure is left alone)."""
    data = open(path, "rb").read()
    hits = []
    at = data.find(b'{"')
    while at >= 0:
        hits.append(at)
        at = data.find(b'{"', at + 1)
    if not hits:
        return corrupt(path, rng, lmdb_pages=True)
    start = rng.choice(hits)
    end = data.find(b"}", start + 2)
    end = min(len(data), (end if end > 0 else start + 200) + 1)
    with open(path, "r+b") as f:
        offs = sorted(rng.randrange(start, end) for _ in range(rng.randint(1, 3)))
        for o in offs:
            f.seek(o)
            b = data[o]
            f.write(bytes([b ^ (1 << rng.randrange(8))]) if rng.random() < 0.7 else bytes([rng.randrange(256)]))
    return f"record-flip@{','.join(map(str, offs))}"


def corrupt(path, rng, lmdb_pages=False):
    """Damages path in place; returns a description."""
    size = os.path.getsize(path)
    mode = rng.choice(["flip", "burst", "zero4k"] if lmdb_pages else ["flip", "burst"])
    with open(path, "r+b") as f:
        if mode == "flip":
            offs = sorted(rng.randrange(size) for _ in range(rng.randint(1, 4)))
            for o in offs:
                f.seek(o)
                b = f.read(1)[0]
                f.seek(o)
                f.write(bytes([b ^ (1 << rng.randrange(8))]))
            return f"{mode}@{','.join(map(str, offs))}"
        if mode == "burst":
            n = rng.randint(16, 512)
            o = rng.randrange(max(1, size - n))
            f.seek(o)
            f.write(bytes(rng.getrandbits(8) for _ in range(n)))
            return f"{mode}{n}@{o}"
        page = rng.randrange(max(1, size // 4096))
        f.seek(page * 4096)
        f.write(b"\0" * 4096)
        return f"{mode}@page{page}"


def classify_proc(rc, timed_out):
    if timed_out:
        return "hang"
    if rc < 0 or rc not in (0, 1, 2):
        return "crash"
    return "ok" if rc == 0 else "error"


def run_cmd(args, timeout):
    try:
        p = subprocess.run(args, capture_output=True, timeout=timeout)
        return p.returncode, p.stdout, p.stderr, False
    except subprocess.TimeoutExpired as e:
        return None, e.stdout or b"", e.stderr or b"", True


def cat_read(lfs, store, v, n, want, timeout):
    rc, out, err, to = run_cmd([lfs, "cat", store, v, n], timeout)
    k = classify_proc(rc if rc is not None else 0, to)
    if k == "ok":
        return ("exact" if out == want else "wrong"), err
    if out and out != want[:len(out)]:
        return "wrong", err  # bytes printed before the failure differ
    return k, err


def mount_reads(lfs, store, mnt, log, ref, timeout):
    """Reads every file through a mount of the damaged copy."""
    out = {}
    m = T.Mount(lfs, store, mnt, log, extra_opts="log_level=info")
    try:
        m.start(timeout=timeout)
    except Exception as e:  # noqa: BLE001 - a store that cannot be opened: refused cleanly?
        rc = m.proc.poll() if m.proc else None
        T.force_unmount(mnt)
        kind = "crash" if rc is not None and rc < 0 else "error"
        return {key: kind for key in ref}, f"mount refused: {e!r}"
    try:
        for (v, n), want in ref.items():
            # A reader in a child process with a deadline: a hang is a finding, not a stuck test.
            code = ("import sys\n"
                    "try:\n"
                    "    d = open(sys.argv[1], 'rb').read()\n"
                    "except OSError as e:\n"
                    "    print('ERR', e.errno); sys.exit(0)\n"
                    "sys.stdout.buffer.write(b'OK' + d)\n")
            rc, o, err, to = run_cmd(["/usr/bin/python3", "-c", code, f"{mnt}/{v}/{n}"], timeout)
            if to:
                out[(v, n)] = "hang"
            elif o.startswith(b"OK"):
                out[(v, n)] = "exact" if o[2:] == want else "wrong"
            elif o.startswith(b"ERR"):
                out[(v, n)] = "error"
            else:
                out[(v, n)] = "crash"
        alive = m.alive()
    finally:
        m.stop()
    return out, ("" if alive else "daemon died")


def trial(i, args, lfs, base_store, ref, work, rng, stats, log):
    d = f"{work}/t"
    shutil.rmtree(d, ignore_errors=True)
    store = f"{d}/store"
    shutil.copytree(base_store, store, ignore=shutil.ignore_patterns("lineagefs.log"))
    packs = sorted(os.listdir(f"{store}/packs"))
    x = rng.random()
    target = "lmdb" if x < 0.3 else ("lmdb-record" if x < 0.6 else "pack")
    if target == "pack":
        what = corrupt(f"{store}/packs/{rng.choice(packs)}", rng)
    elif target == "lmdb":
        what = corrupt(f"{store}/index/data.mdb", rng, lmdb_pages=True)
    else:
        what = corrupt_record(f"{store}/index/data.mdb", rng)
    stats[f"{target} trials"] += 1
    kinds = collections.Counter()
    failed_reads = set()
    for (v, n), want in ref.items():
        k, err = cat_read(lfs, store, v, n, want, args.timeout)
        kinds[k] += 1
        if k != "exact":
            failed_reads.add(f"{v}/{n}")
        if k in ("wrong", "crash", "hang"):
            log(f"  trial {i} {target} {what}: cat {v}/{n}: {k} {err.decode(errors='replace')[-300:]}")
    rc, out, err, to = run_cmd([lfs, "fsck", store, "--json"], args.timeout * 4)
    fk = classify_proc(rc if rc is not None else 0, to)
    kinds[f"fsck {fk}"] += 1
    if fk in ("crash", "hang"):
        log(f"  trial {i} {target} {what}: fsck {fk} (rc {rc}) {err.decode(errors='replace')[-300:]}")
    named = None
    if fk in ("ok", "error"):
        try:
            rep = json.loads(out)
            named = set(rep.get("damaged", []))
            if failed_reads:
                # A file is named by itself, or by its version or model when the
                # record that lists it cannot be read.
                missed = {f for f in failed_reads
                          if f not in named and f.rsplit("/", 1)[0] not in named and f.split("/")[0] not in named}
                stats["fsck named every unreadable file" if not missed else "fsck missed an unreadable file"] += 1
                if missed:
                    stats["fsck passed although reads failed" if rep.get("ok") else
                          "fsck failed without naming an unreadable file"] += 1
                    log(f"  trial {i} {target} {what}: fsck ok={rep.get('ok')} did not name {sorted(missed)}; "
                        f"errors: {rep.get('errors', [])[:2]}")
        except ValueError:
            pass  # fsck could not open the store: its message is the clean error
    if args.mount_every and i % args.mount_every == 0:
        mr, note = mount_reads(lfs, store, f"{d}/mnt", f"{d}/daemon.log", ref, args.timeout)
        stats["mount trials"] += 1
        for key, k in mr.items():
            kinds[f"mount {k}"] += 1
            if k in ("wrong", "crash", "hang"):
                log(f"  trial {i} {target} {what}: mount read {key[0]}/{key[1]}: {k}")
        if note:
            log(f"  trial {i} {target} {what}: {note}")
            if "died" in note:
                kinds["mount crash"] += 1
    for k, c in kinds.items():
        stats[k if k.startswith("fsck") else f"reads {k}"] += c
    if kinds["wrong"] or kinds["mount wrong"]:
        outcome = "wrong bytes"
    elif any(kinds[k] for k in ("crash", "hang", "fsck crash", "fsck hang", "mount crash", "mount hang")):
        outcome = "crash or hang"
    elif any(kinds[k] for k in ("error", "fsck error", "mount error")):
        outcome = "clean error"
    else:
        outcome = "correct bytes"
    stats[f"{target}: {outcome}"] += 1
    stats[outcome] += 1
    if outcome in ("wrong bytes", "crash or hang"):
        keep = f"{work}/kept/trial{i}-{target}"
        shutil.rmtree(keep, ignore_errors=True)
        shutil.copytree(store, keep)
        log(f"  trial {i}: {outcome}; damaged copy kept in {keep} ({what})")
    return outcome


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lineagefs", default=T.DEFAULT_LINEAGEFS)
    ap.add_argument("--trials", type=int, default=300)
    ap.add_argument("--ci", action="store_true", help="60 trials")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--mount-every", type=int, default=5, help="read through a mount every Nth trial (0: never)")
    ap.add_argument("--timeout", type=float, default=30, help="seconds per command")
    ap.add_argument("--work", default=None)
    ap.add_argument("--strict-crash", action="store_true", help="count crashes/hangs as failures")
    args = ap.parse_args()
    if args.ci:
        args.trials = 60
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    rng = random.Random(seed)
    work = args.work or tempfile.mkdtemp(prefix="lfs-bitrot-")
    os.makedirs(work, exist_ok=True)
    logf = open(f"{work}/bitrot.log", "a")

    def log(msg):
        print(msg, flush=True)
        logf.write(msg + "\n")
        logf.flush()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    t0 = time.monotonic()
    stats = collections.Counter()
    lfs = T.snapshot_binary(os.path.abspath(args.lineagefs), f"{work}/bin")
    base_store, ref = build_store(lfs, work)
    log(f"bitrot: seed {seed}, {args.trials} trials, {len(ref)} files in {len(set(v for v, _ in ref))} versions, "
        f"store {sum(os.path.getsize(os.path.join(dp, f)) for dp, _, fs in os.walk(base_store) for f in fs) >> 10} KiB")
    fails = 0
    try:
        for i in range(1, args.trials + 1):
            o = trial(i, args, lfs, base_store, ref, work, rng, stats, log)
            if o == "wrong bytes" or (args.strict_crash and o == "crash or hang"):
                fails += 1
            if i % 10 == 0:
                log(f"  {i}/{args.trials}: " + ", ".join(f"{k} {stats[k]}" for k in
                    ("correct bytes", "clean error", "crash or hang", "wrong bytes")))
    finally:
        T.force_unmount(f"{work}/t/mnt")
    log("counts:")
    for k in sorted(stats):
        log(f"  {k}: {stats[k]}")
    log(f"BITROT trials={args.trials} correct={stats['correct bytes']} clean_error={stats['clean error']} "
        f"crash_or_hang={stats['crash or hang']} wrong_bytes={stats['wrong bytes']} "
        f"lmdb_trials={stats['lmdb trials']} lmdb_record_trials={stats['lmdb-record trials']} "
        f"pack_trials={stats['pack trials']} "
        f"reads_exact={stats['reads exact'] + stats['reads mount exact']} "
        f"reads_error={stats['reads error'] + stats['reads mount error']} "
        f"reads_wrong={stats['reads wrong'] + stats['reads mount wrong']} "
        f"fsck_named={stats['fsck named every unreadable file']} fsck_missed={stats['fsck missed an unreadable file']} "
        f"seconds={time.monotonic() - t0:.0f}")
    if not args.work:
        kept = os.path.isdir(f"{work}/kept")
        shutil.rmtree(f"{work}/t", ignore_errors=True)
        shutil.rmtree(f"{work}/src", ignore_errors=True)
        if not kept:
            shutil.rmtree(work, ignore_errors=True)
    print(f"{args.trials - fails} passed, {fails} failed")
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
