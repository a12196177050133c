#!/usr/bin/python3
"""A tiny but real model family for lineagefs workflow examples and tests.

A two-layer MLP (16 -> 32 -> 4) classifies a fixed synthetic task. Every
command reads and writes model folders holding `model.safetensors` and
`config.json`, so a recipe can read its parent straight from a lineagefs
mount and write its output anywhere:

  tinyml.py base OUT [--steps N] [--seed S]       train a base from scratch
  tinyml.py finetune PARENT OUT [--steps N] [--seed S] [--corrupt]
  tinyml.py quantize PARENT OUT                    per-row int8 weights + scales
  tinyml.py merge PARENT_A PARENT_B OUT            element-wise mean
  tinyml.py eval PATH [--against OTHER]           prints {"acc": …, "loss": …, "drop": …}

Only numpy; each command takes well under a second.
"""
import argparse
import json
import os
import struct
import sys

import numpy as np

DIM_IN, DIM_HIDDEN, N_CLASSES = 16, 32, 4


def task(split):
    """The fixed task: labels from a random teacher network."""
    rng = np.random.default_rng(1234)
    teacher = rng.normal(size=(DIM_IN, N_CLASSES))
    x = np.random.default_rng({"train": 1, "eval": 2}[split]).normal(size=(512, DIM_IN))
    y = np.argmax(x @ teacher, axis=1)
    return x.astype(np.float32), y


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    dtypes = {"F32": np.float32, "I8": np.int8}
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        a, b = meta["data_offsets"]
        out[name] = np.frombuffer(data[a:b], dtype=dtypes[meta["dtype"]]).reshape(meta["shape"])
    return out


def write_model(out_dir, tensors, config):
    os.makedirs(out_dir, exist_ok=True)
    names = {np.dtype(np.float32): "F32", np.dtype(np.int8): "I8"}
    header, blobs, off = {}, [], 0
    for name in sorted(tensors):
        t = np.ascontiguousarray(tensors[name])
        b = t.tobytes()
        header[name] = {"dtype": names[t.dtype], "shape": list(t.shape),
                        "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    hj = json.dumps(header, separators=(",", ":")).encode()
    hj += b" " * (-len(hj) % 8)
    with open(os.path.join(out_dir, "model.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(hj)) + hj + b"".join(blobs))
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(config, f, indent=1, sort_keys=True)


def load(path):
    """Float weights of a model folder (dequantizing an int8 one)."""
    t = read_safetensors(os.path.join(path, "model.safetensors"))
    w = {}
    for name in ("w1", "b1", "w2", "b2"):
        if name in t:
            w[name] = t[name].astype(np.float32)
        else:
            w[name] = t[name + ".q"].astype(np.float32) * t[name + ".scale"][:, None]
    return w


def forward(w, x):
    h = np.maximum(x @ w["w1"] + w["b1"], 0)
    return h, h @ w["w2"] + w["b2"]


def loss_acc(w, x, y):
    _, logits = forward(w, x)
    z = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    return float(-np.log(p[np.arange(len(y)), y] + 1e-12).mean()), float((p.argmax(1) == y).mean())


def train(w, steps, seed, lr=0.5):
    x, y = task("train")
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        idx = rng.choice(len(x), 128, replace=False)
        xb, yb = x[idx], y[idx]
        h, logits = forward(w, xb)
        z = logits - logits.max(axis=1, keepdims=True)
        p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
        p[np.arange(len(yb)), yb] -= 1
        g = p / len(yb)
        gh = (g @ w["w2"].T) * (h > 0)
        w["w2"] -= lr * (h.T @ g)
        w["b2"] -= lr * g.sum(0)
        w["w1"] -= lr * (xb.T @ gh)
        w["b1"] -= lr * gh.sum(0)
    return {k: v.astype(np.float32) for k, v in w.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("base")
    b.add_argument("out")
    b.add_argument("--steps", type=int, default=40)
    b.add_argument("--seed", type=int, default=0)
    f = sub.add_parser("finetune")
    f.add_argument("parent")
    f.add_argument("out")
    f.add_argument("--steps", type=int, default=10)
    f.add_argument("--seed", type=int, default=1)
    f.add_argument("--corrupt", action="store_true", help="plant a bug: kill layer 1")
    q = sub.add_parser("quantize")
    q.add_argument("parent")
    q.add_argument("out")
    m = sub.add_parser("merge")
    m.add_argument("a")
    m.add_argument("b")
    m.add_argument("out")
    e = sub.add_parser("eval")
    e.add_argument("path")
    e.add_argument("--against", help="also report the accuracy drop from this model")
    a = ap.parse_args()

    if a.cmd == "base":
        rng = np.random.default_rng(a.seed)
        w = {"w1": rng.normal(0, 0.3, (DIM_IN, DIM_HIDDEN)), "b1": np.zeros(DIM_HIDDEN),
             "w2": rng.normal(0, 0.3, (DIM_HIDDEN, N_CLASSES)), "b2": np.zeros(N_CLASSES)}
        w = train(w, a.steps, a.seed)
        write_model(a.out, w, {"arch": "tinymlp", "steps": a.steps})
    elif a.cmd == "finetune":
        w = train(load(a.parent), a.steps, a.seed, lr=0.1)
        if a.corrupt:  # every hidden unit dead: later fine-tunes cannot recover
            w["b1"] = np.full_like(w["b1"], -100.0)
        write_model(a.out, w, {"arch": "tinymlp", "finetune_steps": a.steps})
    elif a.cmd == "quantize":
        w = load(a.parent)
        t = {}
        for name, v in w.items():
            if v.ndim == 2:
                scale = np.maximum(np.abs(v).max(axis=1), 1e-8) / 127
                t[name + ".q"] = np.clip(np.rint(v / scale[:, None]), -127, 127).astype(np.int8)
                t[name + ".scale"] = scale.astype(np.float32)
            else:
                t[name] = v
        write_model(a.out, t, {"arch": "tinymlp", "quantized": "int8-per-row"})
    elif a.cmd == "merge":
        wa, wb = load(a.a), load(a.b)
        write_model(a.out, {k: (wa[k] + wb[k]) / 2 for k in wa}, {"arch": "tinymlp", "merged": 2})
    elif a.cmd == "eval":
        x, y = task("eval")
        loss, acc = loss_acc(load(a.path), x, y)
        out = {"acc": round(acc, 4), "loss": round(loss, 4)}
        if a.against:
            out["drop"] = round(loss_acc(load(a.against), x, y)[1] - acc, 4)
        print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
