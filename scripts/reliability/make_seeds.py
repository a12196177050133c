#!/usr/bin/python3
"""Seed corpora for the libFuzzer targets in tests/fuzz/.

    make_seeds.py DIR [--lineagefs PATH]

writes small valid inputs to DIR/seeds/<target>/:
  fuzz_safetensors  safetensors files (several dtypes, metadata, empty, 0-d) + an index.json
  fuzz_torch_zip    torch.save archives (flat, nested, views, OrderedDict, dtypes) and np.savez
  fuzz_npy          np.save outputs (dtypes, shapes, Fortran order, v2/v3 headers)
  fuzz_detect       all of the above, prefixed by the byte that picks the file name
  fuzz_frame        raw chunk data for the Encode->Decode mode, and frames for the others
  fuzz_records      LMDB values of a real store (chunks, packs, tensors, files,
                    models, versions), when a lineagefs binary is available
"""
import argparse
import io
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zipfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

DT = {np.float32: "F32", np.float16: "F16", np.float64: "F64", np.int64: "I64",
      np.int32: "I32", np.int8: "I8", np.uint8: "U8", np.bool_: "BOOL", np.int16: "I16"}


def safetensors_bytes(tensors, metadata=None, raw_dtypes=None):
    """tensors: name -> np.ndarray (or (dtype_str, shape, bytes))."""
    header = {}
    data = b""
    for name, t in tensors.items():
        if isinstance(t, tuple):
            dt, shape, b = t
        else:
            dt, shape, b = DT[t.dtype.type], list(t.shape), t.tobytes()
        header[name] = {"dtype": dt, "shape": shape, "data_offsets": [len(data), len(data) + len(b)]}
        data += b
    if metadata is not None:
        header["__metadata__"] = metadata
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    return struct.pack("<Q", len(h)) + h + data


def write(d, name, data):
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def seeds_safetensors(out):
    rng = np.random.default_rng(1)
    s = {}
    s["f32"] = safetensors_bytes({"w": rng.standard_normal((4, 3)).astype(np.float32),
                                  "b": rng.standard_normal(3).astype(np.float32)})
    s["meta"] = safetensors_bytes({"a.b.c": np.arange(6, dtype=np.int64).reshape(2, 3)},
                                  metadata={"format": "pt", "note": "x"})
    s["empty"] = safetensors_bytes({})
    s["scalar"] = safetensors_bytes({"s": np.array(3.5, dtype=np.float64)})
    s["zero"] = safetensors_bytes({"z": np.zeros((0, 4), dtype=np.float16)})
    s["bf16"] = safetensors_bytes({"x": ("BF16", [2, 2], b"\x80\x3f" * 4),
                                   "y": ("F8_E4M3", [3], b"\x01\x02\x03")})
    s["mixed"] = safetensors_bytes({"i8": np.arange(5, dtype=np.int8), "u8": np.arange(3, dtype=np.uint8),
                                    "bool": np.array([True, False]), "i16": np.arange(2, dtype=np.int16)})
    s["index"] = json.dumps({"metadata": {"total_size": 100},
                             "weight_map": {"a": "model-00001-of-00002.safetensors",
                                            "b": "model-00002-of-00002.safetensors"}}).encode()
    for k, v in s.items():
        write(out, k + ".safetensors", v)
    return s


def seeds_torch(out):
    import collections
    import torch
    torch.manual_seed(0)
    s = {}

    def save(obj, name):
        b = io.BytesIO()
        torch.save(obj, b)
        s[name] = b.getvalue()

    save({"w": torch.randn(3, 4), "b": torch.zeros(4)}, "flat")
    save(collections.OrderedDict([("layer.0.w", torch.randn(2, 2)), ("layer.0.b", torch.ones(2))]), "ordered")
    save({"only": torch.arange(3)}, "single")
    base = torch.randn(4, 4)
    save({"base": base, "view": base[1:3], "t": base.t(), "row": base[2]}, "views")
    save({"enc": {"w": torch.randn(2, 3), "layers": [torch.randn(2), torch.randn(1)]},
          "step": 5, "lr": 0.1, "name": "x", "flag": True, "none": None, "tup": (1, 2)}, "nested")
    save({"h": torch.randn(3).half(), "bf": torch.randn(3).bfloat16(), "i": torch.arange(4, dtype=torch.int32),
          "u": torch.arange(4, dtype=torch.uint8), "bo": torch.tensor([True, False]),
          "d": torch.randn(2, dtype=torch.float64)}, "dtypes")
    save({"s": torch.tensor(1.5), "e": torch.zeros(0, 3)}, "scalar")
    for k, v in s.items():
        write(out, k + ".pt", v)
    # npz (stored) and a compressed one (stored generically by the parser)
    b = io.BytesIO()
    np.savez(b, a=np.arange(6, dtype=np.float32).reshape(2, 3), b=np.array([1, 2], dtype=np.int64))
    s["npz"] = b.getvalue()
    write(out, "a.npz", s["npz"])
    b = io.BytesIO()
    np.savez_compressed(b, a=np.zeros(10))
    s["npzc"] = b.getvalue()
    write(out, "c.npz", s["npzc"])
    return s


def seeds_npy(out):
    s = {}

    def save(a, name, version=None):
        b = io.BytesIO()
        if version is None:
            np.save(b, a)
        else:
            np.lib.format.write_array(b, a, version=version)
        s[name] = b.getvalue()

    save(np.arange(12, dtype=np.float32).reshape(3, 4), "f32")
    save(np.asfortranarray(np.arange(6, dtype=np.int64).reshape(2, 3)), "fortran")
    save(np.array(2.0), "scalar")
    save(np.zeros((0,), dtype=np.float16), "empty")
    save(np.arange(4, dtype=">i4"), "bigendian")
    save(np.array([True, False, True]), "bool")
    save(np.arange(3, dtype=np.complex64), "c64")
    save(np.arange(3, dtype=np.uint16), "u16", version=(2, 0))
    save(np.arange(3, dtype=np.int8), "i8v3", version=(3, 0))
    for k, v in s.items():
        write(out, k + ".npy", v)
    return s


def seeds_detect(out, groups):
    # Index into fuzz_detect.cc's kNames: 0 safetensors, 1 .pt, 3 .npy, 4 .npz, 5 index.json
    pick = {"st": 0, "pt": 1, "npy": 3, "npz": 4, "index": 5}
    for kind, files in groups.items():
        for name, data in files.items():
            sel = pick[kind]
            if kind == "st" and name == "index":
                sel = pick["index"]
            if kind == "pt" and name.startswith("npz"):
                sel = pick["npz"]
            write(out, f"{kind}-{name}", bytes([sel]) + data)
    write(out, "generic", bytes([6]) + b'{"hidden_size": 4}')


def seeds_frame(out):
    rng = np.random.default_rng(2)
    w = rng.standard_normal(1024).astype(np.float32)
    w2 = w + rng.standard_normal(1024).astype(np.float32) * 1e-3
    # mode 3 (Encode->Decode), elem_width 4 (bits 3-4 = 2), with base (bit 5)
    base = w.tobytes()[:4096]
    write(out, "enc-f32-delta", bytes([3 | (2 << 3) | 0x20]) + struct.pack("<H", len(base)) + base + w2.tobytes()[:4096])
    write(out, "enc-f32", bytes([3 | (2 << 3)]) + b"\0\0" + w.tobytes()[:4096])
    write(out, "enc-text", bytes([3]) + b"\0\0" + b"hello world " * 100)
    # mode 2: codec payload, raw codec (id 0) of 16 bytes
    write(out, "dec-raw", bytes([2]) + b"\0\0" + bytes([0, 16, 0, 0]) + b"x" * 16)
    zstd = shutil.which("zstd")
    if zstd:
        comp = subprocess.run([zstd, "-q", "-c", "-1"], input=w.tobytes(), capture_output=True).stdout
        write(out, "dec-zstd", bytes([2]) + b"\0\0" + bytes([1]) + struct.pack("<I", 4096)[:3] + comp)
        # byte-grouped payload: W=4, planes mode 0 (raw)
        raw = w.tobytes()[:64]
        planes = [raw[k::4] for k in range(4)]
        bg = bytes([4]) + b"".join(struct.pack("<BI", 0, len(p)) for p in planes) + b"".join(planes)
        write(out, "dec-bg", bytes([2]) + b"\0\0" + bytes([2, 64, 0, 0]) + bg)
        # the same as a frame (mode 1 fixes length and checksum)
        hdr = struct.pack("<IBBHII", 0x4643464C, 2, 4, 0, 64, len(bg)) + b"\1" + b"\0" * 16 + b"\0" * 17
        write(out, "frame-bg", bytes([1]) + b"\0\0" + hdr + bg + b"\0" * 8)
        hdr = struct.pack("<IBBHII", 0x4643464C, 3, 4, 0, 64, len(bg)) + b"\1" + b"\0" * 16 + b"\1" + b"\0" * 16
        write(out, "frame-delta", bytes([1 | 4]) + struct.pack("<H", 64) + raw + hdr + bg + b"\0" * 8)


def seeds_records(out, lineagefs):
    if not lineagefs or not os.access(lineagefs, os.X_OK) or not shutil.which("mdb_dump"):
        return 0
    n = 0
    with tempfile.TemporaryDirectory() as tmp:
        store = os.path.join(tmp, "store")
        src = os.path.join(tmp, "src")
        os.makedirs(src)
        rng = np.random.default_rng(3)
        with open(os.path.join(src, "model.safetensors"), "wb") as f:
            f.write(safetensors_bytes({"w": rng.standard_normal((300, 1000)).astype(np.float32),
                                       "b": rng.standard_normal(10).astype(np.float32)}))
        with open(os.path.join(src, "config.json"), "w") as f:
            f.write('{"hidden": 10}')
        run = lambda *a: subprocess.run([lineagefs, *a], capture_output=True, timeout=120)
        run("init", store)
        run("import", store, src, "--model", "m", "--version", "v1", "-m", "seed",
            "--metadata", '{"acc": 0.5, "tags": ["a"]}')
        run("import", store, src, "--model", "m2", "--version", "v1", "--parent", "m/v1")
        # selector byte = case in fuzz_records.cc
        tables = {"chunks": 0, "packs": 1, "tensors": 2, "files": 3, "versions": 4, "models": 5}
        for table, sel in tables.items():
            p = subprocess.run(["mdb_dump", "-s", table, os.path.join(store, "index")],
                               capture_output=True, text=True)
            if p.returncode != 0:
                continue
            lines = p.stdout.split("HEADER=END\n", 1)[-1].splitlines()
            body = [l[1:] for l in lines if l.startswith(" ")]
            for i in range(1, len(body), 2):
                write(out, f"{table}-{i // 2}", bytes([sel]) + bytes.fromhex(body[i]))
                n += 1
    return n


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--lineagefs", default=os.path.join(ROOT, "build", "cli", "lineagefs"))
    a = ap.parse_args()
    seeds = os.path.join(a.dir, "seeds")
    st = seeds_safetensors(os.path.join(seeds, "fuzz_safetensors"))
    try:
        pt = seeds_torch(os.path.join(seeds, "fuzz_torch_zip"))
    except ImportError as e:
        print(f"make_seeds: no torch ({e}); .pt seeds skipped", file=sys.stderr)
        pt = {}
    npy = seeds_npy(os.path.join(seeds, "fuzz_npy"))
    seeds_detect(os.path.join(seeds, "fuzz_detect"), {"st": st, "pt": pt, "npy": npy})
    seeds_frame(os.path.join(seeds, "fuzz_frame"))
    os.makedirs(os.path.join(seeds, "fuzz_records"), exist_ok=True)
    nrec = seeds_records(os.path.join(seeds, "fuzz_records"), a.lineagefs)
    for t in sorted(os.listdir(seeds)):
        print(f"{t}: {len(os.listdir(os.path.join(seeds, t)))} seeds")
    if nrec == 0:
        print("make_seeds: no record seeds (no lineagefs binary or mdb_dump)", file=sys.stderr)


if __name__ == "__main__":
    main()
