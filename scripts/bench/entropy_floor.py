#!/usr/bin/python3
"""How small can a lossless delta of a fine-tuned checkpoint get? A lower bound.

Compares the F32 (or BF16/F16) tensors that two safetensors files share by name
and prints, per byte plane of the element, the order-0 entropy of
  - xor:      child ^ parent (what lineagefs's XOR delta codec stores, per plane)
  - sub:      child - parent as integers on the sign-magnitude order, zigzagged
  - xor|exp:  xor conditioned on the parent's exponent (what a context model could reach)
and lineagefs's stored bytes for the child when --stored is given. Any coder that
treats the planes' bytes independently costs at least the order-0 entropy; the
conditional figure shows what modelling the parent's exponent could add.

  /usr/bin/python3 scripts/bench/entropy_floor.py PARENT.safetensors CHILD.safetensors
"""
import argparse
import json
import struct
import sys

import numpy as np

WIDTH = {"F32": 4, "BF16": 2, "F16": 2}


def load(path):
    with open(path, "rb") as f:
        b = f.read()
    n = struct.unpack("<Q", b[:8])[0]
    head = json.loads(b[8:8 + n])
    base = 8 + n
    out = {}
    for k, v in head.items():
        if k == "__metadata__" or v["dtype"] not in WIDTH:
            continue
        s, e = v["data_offsets"]
        out[k] = (v["dtype"], np.frombuffer(b, dtype=np.uint8, count=e - s, offset=base + s))
    return out


def entropy(a):
    c = np.bincount(a, minlength=256).astype(np.float64)
    p = c[c > 0] / a.size
    return float(-(p * np.log2(p)).sum())


def cond_entropy(a, ctx, nctx):
    c = np.bincount(ctx.astype(np.int64) * 256 + a, minlength=nctx * 256).astype(np.float64)
    c = c.reshape(nctx, 256)
    tot = c.sum(1, keepdims=True)
    p = np.where(c > 0, c / np.maximum(tot, 1), 1.0)
    return float(-(c * np.log2(p)).sum() / a.size)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("parent")
    ap.add_argument("child")
    ap.add_argument("--stored", type=int, help="bytes lineagefs stored for the child (du unique)")
    args = ap.parse_args()
    par, chi = load(args.parent), load(args.child)
    groups = {}
    for k, (dt, cb) in chi.items():
        if k in par and par[k][0] == dt and par[k][1].size == cb.size:
            groups.setdefault(dt, []).append((cb, par[k][1]))
    if not groups:
        sys.exit("no float tensors shared by name")
    raw_total = sum(cb.size for _, cb in chi.values())
    for dt, pairs in groups.items():
        w = WIDTH[dt]
        utype = np.uint32 if w == 4 else np.uint16
        c = np.concatenate([a.view(utype) for a, _ in pairs]).astype(np.int64)
        p = np.concatenate([b.view(utype) for _, b in pairs]).astype(np.int64)
        sign = 1 << (8 * w - 1)
        mono = lambda u: np.where(u >= sign, -(u - sign), u)
        d = mono(c) - mono(p)
        zig = (d << 1) ^ (d >> 63)
        x = c ^ p
        exp_shift = 23 if w == 4 else (7 if dt == "BF16" else 10)
        exp = (p >> exp_shift) & 0xFF if dt != "F16" else (p >> 10) & 0x1F
        nctx = 256 if dt != "F16" else 32
        rows = []
        for name, a, cond in (("xor", x, False), ("sub", zig, False), ("xor|exp", x, True)):
            planes = [((a >> (8 * i)) & 0xFF).astype(np.int64) for i in range(w)]
            bits = [cond_entropy(q, exp, nctx) if cond else entropy(q) for q in planes]
            rows.append((name, bits, sum(bits) / (8 * w)))
        n = c.size
        print("%s: %d elements in %d tensors (%.1f MB)" % (dt, n, len(pairs), n * w / 1e6))
        for name, bits, frac in rows:
            print("  %-8s bits per plane (low..high) %s -> floor %.3f of raw"
                  % (name, " ".join("%.2f" % b for b in bits), frac))
    if args.stored:
        print("lineagefs stored %d bytes = %.3f of the child's %d raw bytes"
              % (args.stored, args.stored / raw_total, raw_total))


if __name__ == "__main__":
    main()
