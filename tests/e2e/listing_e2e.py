#!/usr/bin/python3
"""Listings on a real mount: what readdirplus hands the kernel must be what a
lookup gives.

The daemon builds a listing's attributes from the folder (not by resolving
each entry), and readdirplus passes them to the kernel for committed content
and for the folders that grow. This test walks a fresh mount with scandir +
lstat (attributes from readdirplus), then stats every path on a second fresh
mount without listing anything (attributes from lookups), and compares them
field by field. It also checks st_blksize (a page for folders: glibc sizes
its readdir buffer from it), that a draft's sizes are never served stale from
a listing, and that a version imported while mounted shows up in its model's
listing and in `latest`.

Usage: listing_e2e.py --lineagefs PATH
"""
import argparse
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                                "scripts", "reliability"))
import lfs_testlib as T  # noqa: E402

DEADLINE_S = 240
FIELDS = ("st_ino", "st_mode", "st_size", "st_nlink", "st_uid", "st_gid", "st_mtime_ns",
          "st_blocks", "st_blksize")


def make_version(src, name, seed):
    rng = np.random.default_rng(seed)
    d = os.path.join(src, name)
    os.makedirs(d)
    tensors = [(f"model.layers.{i}.mlp.weight", rng.standard_normal((8, 4)).astype(np.float32))
               for i in range(3)]
    tensors.append(("lm_head.bias", rng.standard_normal(4).astype(np.float32)))
    with open(os.path.join(d, "model.safetensors"), "wb") as f:
        f.write(T.safetensors_bytes(tensors))
    with open(os.path.join(d, "config.json"), "w") as f:
        f.write('{"layers": 3, "seed": %d}\n' % seed)
    return d


def walk_listed(root):
    """path -> (d_ino, d_type-ish kind, lstat) for every entry below root, by scandir."""
    out = {}
    stack = [root]
    while stack:
        d = stack.pop()
        with os.scandir(d) as it:
            for e in it:
                st = os.lstat(e.path)
                kind = "dir" if e.is_dir(follow_symlinks=False) else \
                    "link" if e.is_symlink() else "file"
                out[os.path.relpath(e.path, root)] = (e.inode(), kind, st)
                if kind == "dir":
                    stack.append(e.path)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lineagefs", default=T.DEFAULT_LINEAGEFS)
    args = ap.parse_args()
    deadline = T.Deadline(DEADLINE_S)
    work = tempfile.mkdtemp(prefix="lfs-listing-")
    failures = []

    def check(cond, what):
        if not cond:
            failures.append(what)
            print("FAIL:", what)

    mnt = os.path.join(work, "mnt")
    mount = None
    try:
        lfs = T.Lfs(T.snapshot_binary(args.lineagefs, os.path.join(work, "bin")),
                    os.path.join(work, "store"))
        lfs.init()
        src = os.path.join(work, "src")
        lfs.run("import", lfs.store, make_version(src, "b1", 1), "--model", "base", check=True)
        lfs.run("import", lfs.store, make_version(src, "b2", 2), "--model", "base", check=True)
        lfs.run("import", lfs.store, make_version(src, "f1", 3), "--model", "ft", "--parent",
                "base/v1", "--relation", "finetune", check=True)

        # 1. Attributes from a listing (readdirplus) vs from lookups, on two fresh mounts.
        mount = T.Mount(lfs.bin, lfs.store, mnt, os.path.join(work, "mount.log"))
        mount.start(timeout=deadline.timeout(30))
        listed = walk_listed(mnt)
        mount.stop()
        mount.start(timeout=deadline.timeout(30))
        check(len(listed) > 40, f"only {len(listed)} entries listed")
        for rel, (d_ino, kind, lst) in sorted(listed.items()):
            st = os.lstat(os.path.join(mnt, rel))
            for f in FIELDS:
                check(getattr(lst, f) == getattr(st, f),
                      f"{rel}: {f} listed {getattr(lst, f)} looked up {getattr(st, f)}")
            check(d_ino == st.st_ino, f"{rel}: d_ino {d_ino} != st_ino {st.st_ino}")
            want = {"dir": stat.S_ISDIR, "link": stat.S_ISLNK, "file": stat.S_ISREG}[kind]
            check(want(st.st_mode), f"{rel}: d_type {kind} but mode {oct(st.st_mode)}")
            if stat.S_ISDIR(st.st_mode):
                check(st.st_blksize == 4096, f"{rel}: folder st_blksize {st.st_blksize}")
            elif stat.S_ISREG(st.st_mode):
                check(st.st_blksize == 1 << 20, f"{rel}: file st_blksize {st.st_blksize}")
        for rel in ("base/v1/children", "base/latest", "ft/v1/parent",
                    "base/v1/tensors/model/layers/0/mlp.weight.npy", "base/v1/views/model.pt"):
            check(rel in listed, f"{rel} not listed")

        # 2. A draft's sizes follow its writes in every listing.
        draft = os.path.join(mnt, "base", "wip")
        os.mkdir(draft)
        path = os.path.join(draft, "log.txt")
        with open(path, "wb", buffering=0) as f:
            sizes = []
            for chunk in (b"x" * 5, b"y" * 7, b"z" * 11):
                f.write(chunk)
                ents = {e.name: e.stat(follow_symlinks=False).st_size for e in os.scandir(draft)}
                sizes.append(ents.get("log.txt"))
                check(os.lstat(path).st_size == sizes[-1],
                      f"draft stat {os.lstat(path).st_size} != listed {sizes[-1]}")
        check(sizes == [5, 12, 23], f"draft sizes seen through listings: {sizes}")
        ents = {e.name: e.stat(follow_symlinks=False).st_size for e in os.scandir(draft)}
        check(ents == {"log.txt": 23}, f"draft listing after close: {ents}")

        # 3. A version imported while mounted: listed at once, `latest` follows.
        before = set(os.listdir(os.path.join(mnt, "base")))
        lfs.run("import", lfs.store, make_version(src, "b3", 4), "--model", "base", "--version",
                "v3", check=True, timeout=deadline.timeout(120))
        after = set(os.listdir(os.path.join(mnt, "base")))
        check(after - before == {"v3"}, f"new entries in base/: {sorted(after - before)}")
        check(os.readlink(os.path.join(mnt, "base", "latest")) == "v3",
              "base/latest -> " + os.readlink(os.path.join(mnt, "base", "latest")))
        kids = os.listdir(os.path.join(mnt, "base", "v1", "children"))
        check(kids == ["ft@v1"], f"base/v1/children: {kids}")
    finally:
        if mount is not None:
            mount.stop()
        T.force_unmount(mnt)
        shutil.rmtree(work, ignore_errors=True)
    print(f"{'FAILED' if failures else 'passed'}: {len(failures)} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
