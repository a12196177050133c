#!/usr/bin/python3
"""fsx-style exerciser: random operations on a file in a draft version of a
mounted lineagefs, mirrored on a shadow file on the local disk; the two must
match after every operation.

Operations: write at a random offset, append, truncate (grow/shrink), read,
mmap read, fsync, close/reopen (which ingests the draft file into the store).
The seed is printed so a failure replays: fsx.py --mnt M --seed S --ops N.
"""
import argparse
import mmap
import os
import random
import sys
import time

MAX_SIZE = 1 << 20


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mnt", required=True, help="a mounted lineagefs")
    ap.add_argument("--shadow-dir", default="/tmp")
    ap.add_argument("--ops", type=int, default=100000)
    ap.add_argument("--seed", type=int, default=int(time.time()))
    ap.add_argument("--model", default="fsx")
    args = ap.parse_args()
    print(f"fsx: seed {args.seed}, {args.ops} operations", flush=True)
    rng = random.Random(args.seed)
    model_dir = os.path.join(args.mnt, args.model)
    if not os.path.isdir(model_dir):
        os.mkdir(model_dir)
    draft = os.path.join(model_dir, f"fsx-{args.seed}")
    os.mkdir(draft)
    path = os.path.join(draft, "data.bin")
    shadow = os.path.join(args.shadow_dir, f"fsx-shadow-{args.seed}.bin")
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    sfd = os.open(shadow, os.O_CREAT | os.O_RDWR | os.O_TRUNC, 0o644)
    counts = {}
    try:
        for i in range(args.ops):
            size = os.fstat(sfd).st_size
            op = rng.choices(["write", "append", "truncate", "read", "mmapread", "fsync", "reopen"],
                             weights=[30, 10, 8, 30, 8, 4, 3])[0]
            counts[op] = counts.get(op, 0) + 1
            if op == "write":
                off = rng.randrange(0, min(MAX_SIZE, size + 4096))
                n = rng.randrange(1, 65536)
                data = rng.randbytes(n)
                assert os.pwrite(fd, data, off) == n
                os.pwrite(sfd, data, off)
            elif op == "append":
                data = rng.randbytes(rng.randrange(1, 8192))
                os.pwrite(fd, data, size)
                os.pwrite(sfd, data, size)
            elif op == "truncate":
                n = rng.randrange(0, MAX_SIZE)
                os.ftruncate(fd, n)
                os.ftruncate(sfd, n)
            elif op == "read":
                off = rng.randrange(0, size + 1)
                n = rng.randrange(0, 65536)
                got, want = os.pread(fd, n, off), os.pread(sfd, n, off)
                if got != want:
                    raise AssertionError(f"op {i}: read {n}@{off}: {len(got)} vs {len(want)} bytes differ")
            elif op == "mmapread":
                if size == 0:
                    continue
                with mmap.mmap(fd, 0, prot=mmap.PROT_READ) as m:
                    off = rng.randrange(0, size)
                    n = rng.randrange(1, 65536)
                    got = m[off:off + n]
                if got != os.pread(sfd, n, off)[:len(got)]:
                    raise AssertionError(f"op {i}: mmap read {n}@{off} differs")
            elif op == "fsync":
                os.fsync(fd)
            elif op == "reopen":
                os.close(fd)  # the draft file is ingested into the store here
                fd = os.open(path, os.O_RDWR)
            if os.fstat(fd).st_size != os.fstat(sfd).st_size:
                raise AssertionError(f"op {i} ({op}): size {os.fstat(fd).st_size} vs {os.fstat(sfd).st_size}")
        os.close(fd)
        fd = -1
        with open(path, "rb") as a, open(shadow, "rb") as b:
            if a.read() != b.read():
                raise AssertionError("final contents differ")
    except Exception as e:  # noqa: BLE001
        print(f"fsx: FAILED with seed {args.seed}: {e}")
        print("0 passed, 1 failed")
        sys.exit(1)
    finally:
        if fd >= 0:
            os.close(fd)
        os.close(sfd)
        os.unlink(shadow)
    print("fsx: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    print("1 passed, 0 failed")


if __name__ == "__main__":
    main()
