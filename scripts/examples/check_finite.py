#!/usr/bin/python3
"""A lineage test for any checkpoint: every tensor of a version is finite.

Reads the per-tensor files of a lineagefs version folder (`tensors/…`):
`.npy` with numpy, other dtypes (bf16, fp8 …) from their single-tensor
`.safetensors` view. Prints metrics as JSON, e.g.
  {"tensors": 42, "nonfinite": 0, "max_abs": 3.1}
Register it with:
  lineagefs test add STORE finite --all \
      --cmd '/usr/bin/python3 scripts/examples/check_finite.py {path}' --pass-if 'nonfinite==0'
"""
import json
import os
import struct
import sys

import numpy as np


def safetensors_as_float(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        a, b = meta["data_offsets"]
        raw = data[a:b]
        dt = meta["dtype"]
        if dt == "BF16":
            u = np.frombuffer(raw, dtype=np.uint16).astype(np.uint32) << 16
            yield u.view(np.float32)
        elif dt == "F8_E4M3":  # NaN is the only non-finite value: S.1111.111
            u = np.frombuffer(raw, dtype=np.uint8)
            yield np.where((u & 0x7F) == 0x7F, np.nan, 0.0)
        elif dt == "F8_E5M2":  # exponent all ones: inf or NaN
            u = np.frombuffer(raw, dtype=np.uint8)
            yield np.where((u & 0x7C) == 0x7C, np.inf, 0.0)


def main():
    root = os.path.join(sys.argv[1], "tensors")
    count = nonfinite = 0
    max_abs = 0.0
    for dirpath, _, files in os.walk(root):
        for fn in files:
            p = os.path.join(dirpath, fn)
            if fn.endswith(".npy"):
                arrays = [np.load(p, mmap_mode="r")]
            elif fn.endswith(".safetensors"):
                arrays = list(safetensors_as_float(p))
            else:
                continue
            for a in arrays:
                count += 1
                if a.dtype.kind != "f" or a.size == 0:
                    continue
                fin = np.isfinite(a)
                nonfinite += int(a.size - np.count_nonzero(fin))
                if fin.any():
                    max_abs = max(max_abs, float(np.abs(a[fin]).max()))
    print(json.dumps({"tensors": count, "nonfinite": nonfinite, "max_abs": round(max_abs, 6)}))
    return 0 if count else 1  # a version without tensors is a broken test setup


if __name__ == "__main__":
    sys.exit(main())
