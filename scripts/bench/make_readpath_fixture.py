#!/usr/bin/python3
"""Fixtures of the read-path benchmark (scripts/bench/readpath.py).

    make_readpath_fixture.py ckpt OUT_DIR [--mib N]
        OUT_DIR/parent/model.safetensors   N MiB of fp32 weights (16 MiB tensors; default 1024)
        OUT_DIR/child/model.safetensors    a fine-tune of it: every weight moved by ~1e-3
                                           relative (low mantissa bits change), so lineagefs
                                           stores it as XOR deltas against the parent
        OUT_DIR/manifest.json              parent, then child [parent finetune]
    make_readpath_fixture.py tree OUT_DIR [--versions V] [--tensors T]
        V versions of one model, each a safetensors file of T tiny tensors (dotted names
        four levels deep), version i changing tensor i % T: the mount shows >= V*T entries.

Deterministic (fixed seeds): the same arguments give byte-identical files.
"""

import argparse
import json
import os
import struct
import sys

import numpy as np

MiB = 1 << 20


def write_safetensors(path, tensors):
    """tensors: list of (name, np.ndarray fp32/u8); written in list order."""
    hdr, off = {}, 0
    dt = {np.dtype(np.float32): "F32", np.dtype(np.uint8): "U8"}
    for name, a in tensors:
        hdr[name] = {"dtype": dt[a.dtype], "shape": list(a.shape),
                     "data_offsets": [off, off + a.nbytes]}
        off += a.nbytes
    h = json.dumps(hdr, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for _, a in tensors:
            f.write(memoryview(np.ascontiguousarray(a)).cast("B"))
    os.rename(tmp, path)


def ckpt(out, mib):
    rows, cols = 4096, 1024  # 16 MiB per fp32 tensor
    per = rows * cols * 4
    n = max(1, mib * MiB // per)
    if mib * MiB < per:  # --quick sizes: smaller tensors
        rows = max(1, mib * MiB // (cols * 4))
        n = 1
    rng = np.random.default_rng(1234)
    os.makedirs(os.path.join(out, "parent"), exist_ok=True)
    os.makedirs(os.path.join(out, "child"), exist_ok=True)
    parent, child = [], []
    for i in range(n):
        name = "model.layers.%d.mlp.weight" % i
        w = (rng.standard_normal((rows, cols), dtype=np.float32) * 0.02).astype(np.float32)
        step = rng.standard_normal((rows, cols), dtype=np.float32) * np.float32(1e-3)
        parent.append((name, w))
        child.append((name, (w * (np.float32(1) + step)).astype(np.float32)))
    write_safetensors(os.path.join(out, "parent", "model.safetensors"), parent)
    write_safetensors(os.path.join(out, "child", "model.safetensors"), child)
    man = {"versions": [
        {"model": "ckpt", "version": "parent", "path": "parent", "parents": [],
         "message": "1 GB fp32 checkpoint"},
        {"model": "ckpt", "version": "child", "path": "child",
         "parents": [{"model": "ckpt", "version": "parent", "relation": "finetune"}],
         "relation": "finetune", "message": "fine-tune of parent (XOR delta)"}]}
    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump(man, f, indent=1)


def tree(out, versions, ntensors):
    rng = np.random.default_rng(99)
    base = [("blocks.%d.layers.%d.attn.w%d" % (k // 100, (k // 10) % 10, k % 10),
             rng.integers(0, 256, 64, dtype=np.uint8)) for k in range(ntensors)]
    man = {"versions": []}
    prev = None
    for v in range(versions):
        ts = list(base)
        k = v % ntensors
        ts[k] = (ts[k][0], rng.integers(0, 256, 64, dtype=np.uint8))
        base = ts
        d = os.path.join(out, "v%03d" % v)
        os.makedirs(d, exist_ok=True)
        write_safetensors(os.path.join(d, "model.safetensors"), ts)
        e = {"model": "tree", "version": "v%03d" % v, "path": "v%03d" % v, "parents": [],
             "message": "version %d" % v}
        if prev:
            e["parents"] = [{"model": "tree", "version": prev, "relation": "finetune"}]
            e["relation"] = "finetune"
        man["versions"].append(e)
        prev = "v%03d" % v
    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump(man, f)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("kind", choices=["ckpt", "tree"])
    ap.add_argument("out")
    ap.add_argument("--mib", type=int, default=1024)
    ap.add_argument("--versions", type=int, default=100)
    ap.add_argument("--tensors", type=int, default=1000)
    a = ap.parse_args()
    if a.kind == "ckpt":
        ckpt(a.out, a.mib)
    else:
        tree(a.out, a.versions, a.tensors)
    return 0


if __name__ == "__main__":
    sys.exit(main())
