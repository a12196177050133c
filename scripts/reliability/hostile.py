#!/usr/bin/python3
"""Hostile names and resource attacks against import and the mounted tree.

    hostile.py [--lineagefs PATH] [--work DIR] [--only NAME,...] [--list]

Every input below is imported as its own version (`lineagefs import STORE
FILE --model h --version <case>`) and must
  - succeed (a malformed checkpoint is stored generically, never rejected),
  - finish in < 30 s with a max RSS < 1 GB (/usr/bin/time -v),
  - read back byte-exact (`lineagefs cat` sha256 == source),
  - leave `lineagefs fsck` clean.
Then the store is mounted and the whole tree walked (by chdir, so depth is not
bounded by PATH_MAX): every name is a real component (not '.', '..', no '/',
no NUL, <= 255 bytes, no duplicates in a folder), every directory stays on
the mount, every symlink resolves inside the mount, every file can be
read at its start and end, and the daemon stays alive and responsive with
bounded memory (< 1 GB). Hostile files are also written into a draft through
the mount (ingested by the daemon on close) and must read back byte-exact.
Tensor names with tens of thousands of dots (= nested folders) go to a store
of their own, walked with a separate budget.
Names:     '..', '../../etc/passwd', 'a/b', 'x\\0y', control bytes, a 64 KiB name,
           names differing only by case, NFC vs NFD 'é', 32k dotted components,
           zip-slip member names in a .npz.
Resources: safetensors with 10^12 elements of shape, a 2^62-byte tensor,
           u64-overflowing shapes, negative dims, a 2^63 header length,
           100k tensors; .pt with a 10^12-element storage, a deflated 256 MiB
           record (zip bomb), 2^62 declared sizes (zip64), 100k members,
           100k-deep pickles (lists, tuples, dicts); .npy declaring 2^62 bytes.
Prints counts and a final 'N passed, M failed'.
"""
import argparse
import collections
import io
import json
import os
import pickle
import posixpath
import shutil
import stat
import struct
import subprocess
import sys
import tempfile
import time
import unicodedata
import zlib

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lfs_testlib as T  # noqa: E402

MODEL = "h"
# Cases imported into a store of their own, mounted and walked separately with
# their own time budget, so that one pathological tree cannot hide the others.
DEEP = {"st-64k-dots", "st-64k-dotdot"}
TIME_LIMIT = 30.0
RSS_LIMIT_KB = 1 << 20  # 1 GiB
F4 = np.arange(4, dtype=np.float32)


# --- builders -------------------------------------------------------------------

def st_named(names, dtype="F32"):
    """safetensors with one 16-byte tensor per name (names are raw str)."""
    entries = [(n, dtype, [4], 16) for n in names]
    return T.safetensors_header(entries) + b"".join(
        np.arange(i, i + 4, dtype=np.float32).tobytes() for i in range(len(names)))


def st_raw_header(header_obj, data=b"\0" * 16, hlen=None):
    h = json.dumps(header_obj, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    return struct.pack("<Q", len(h) if hlen is None else hlen) + h + data


def zip_bytes(members, declared=None, method=0):
    """A minimal zip writer. members: [(name, data)]; declared: name ->
    (compressed_size, uncompressed_size) to lie about (zip64 extras when > 4 GiB);
    method 8 deflates."""
    declared = declared or {}
    out = bytearray()
    central = bytearray()
    for name, data in members:
        nb = name.encode() if isinstance(name, str) else name
        crc = zlib.crc32(data) & 0xFFFFFFFF
        payload = data
        if method == 8:
            c = zlib.compressobj(1, zlib.DEFLATED, -15)
            payload = c.compress(data) + c.flush()
        csize, usize = declared.get(name, (len(payload), len(data)))
        extra = b""
        c32, u32 = csize, usize
        if csize >= 0xFFFFFFFF or usize >= 0xFFFFFFFF:
            extra = struct.pack("<HHQQ", 1, 16, usize, csize)
            c32 = u32 = 0xFFFFFFFF
        off = len(out)
        out += struct.pack("<IHHHHHIIIHH", 0x04034B50, 45, 0, method, 0, 0, crc, c32, u32,
                           len(nb), len(extra)) + nb + extra
        # torch aligns record data to 64 bytes with a padding extra field; not needed here
        out += payload
        cextra = extra
        off32 = off
        central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 45, 45, 0, method, 0, 0, crc, c32, u32,
                               len(nb), len(cextra), 0, 0, 0, 0, off32) + nb + cextra
    cd_off = len(out)
    out += central
    n = len(members)
    out += struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, min(n, 0xFFFF), min(n, 0xFFFF), len(central),
                       cd_off, 0)
    return bytes(out)


class _Storage:
    def __init__(self, key, numel, dtype_name="FloatStorage"):
        self.key, self.numel, self.dtype_name = key, numel, dtype_name


class _Tensor:
    """Pickles like a torch tensor: torch._utils._rebuild_tensor_v2(storage, ...)."""

    def __init__(self, storage, offset, size, stride):
        self.args = (storage, offset, tuple(size), tuple(stride), False, collections.OrderedDict())

    def __reduce__(self):
        import torch._utils
        return (torch._utils._rebuild_tensor_v2, self.args)


class _TorchPickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, _Storage):
            import torch
            return ("storage", getattr(torch, obj.dtype_name), obj.key, "cpu", obj.numel)
        return None


def torch_pickle(obj):
    b = io.BytesIO()
    _TorchPickler(b, protocol=2).dump(obj)
    return b.getvalue()


def torch_zip(pkl, records, declared=None, method=0, extra_members=()):
    members = [("archive/data.pkl", pkl)] + [(f"archive/data/{k}", v) for k, v in records.items()]
    members += [("archive/version", b"3\n")] + list(extra_members)
    return zip_bytes(members, declared=declared, method=method)


def torch_save(obj):
    import torch
    b = io.BytesIO()
    torch.save(obj, b)
    return b.getvalue()


def npy_bytes(a):
    b = io.BytesIO()
    np.save(b, a)
    return b.getvalue()


def deep_list_pickle(depth):
    # PROTO 2, EMPTY_LIST x (depth+1), APPEND x depth: a list nested depth deep.
    return b"\x80\x02" + b"]" * (depth + 1) + b"a" * depth + b"."


def deep_tuple_pickle(depth):
    # MARK ... TUPLE nested: ((((...))))
    return b"\x80\x02" + b"(" * depth + b")" + b"t" * depth + b"."


def deep_dict_pickle(depth):
    # {"a": {"a": ... {}}}: EMPTY_DICT, then per level BINUNICODE "a", EMPTY_DICT ... SETITEM
    key = b"X" + struct.pack("<I", 1) + b"a"
    return b"\x80\x02" + (b"}" + key) * depth + b"}" + b"s" * depth + b"."


# --- the cases ------------------------------------------------------------------

def cases():
    """name -> (file name, bytes builder)."""
    nfc = unicodedata.normalize("NFC", "caf\u00e9.weight")
    nfd = unicodedata.normalize("NFD", "caf\u00e9.weight")
    hostile = ["..", ".", "../../etc/passwd", "a/b", "/abs/olute", "x\u0000y", "\u0001\u0007\u001b[31m\n\t\r.w",
               "Weight", "weight", "WEIGHT", nfc, nfd, "", "%2E%2E", "%", "a..b", ".hidden", "trailing.",
               "tensors", "parent", "views.x", "children.y", "latest", "\u202eevil.txt", "\ufeffbom",
               "a" * 255, "b" * 256, "..." , "./.", "../", "x" * 300 + "." + "y" * 300]
    c = {}
    c["st-names"] = ("model.safetensors", lambda: st_named(hostile))
    c["st-64k-name"] = ("model.safetensors", lambda: st_named(["n" * 65536, "s/" * 32768]))
    # 32k dotted components = 32k nested folders under tensors/ (own store: see DEEP)
    c["st-64k-dots"] = ("model.safetensors", lambda: st_named(["a." * 32768 + "w"]))
    # '../' x 21845: 43k dot-separated components, i.e. a 43k-deep folder chain too
    c["st-64k-dotdot"] = ("model.safetensors", lambda: st_named(["../" * 21845 + "x"]))
    c["st-case-nfc"] = ("model.safetensors", lambda: st_named([nfc, nfd, "Café.Weight", "CAFÉ.WEIGHT"]))
    c["st-bf16-names"] = ("model.safetensors", lambda: st_named(["../up.bf", "a/b.bf"], dtype="BF16"))

    def pt_names():
        import torch
        return torch_save({n: torch.arange(i, i + 4, dtype=torch.float32) for i, n in enumerate(hostile)})
    c["pt-names"] = ("model.pt", pt_names)

    def pt_nested_names():
        import torch
        return torch_save({"..": {"..": {"etc": {"passwd": torch.ones(2)}}}, "a/b": [torch.zeros(1)],
                           "x\u0000y": (torch.ones(1),), "n" * 65536: torch.ones(1)})
    c["pt-nested-names"] = ("model.pt", pt_nested_names)

    def npz_slip():
        a = npy_bytes(F4)
        return zip_bytes([("../../escape.npy", a), ("a/b.npy", a), ("/abs.npy", a), ("x\u0001y.npy", a),
                          ("..npy", a), (".npy", a), ("n" * 1000 + ".npy", a)])
    c["npz-zip-slip"] = ("weights.npz", npz_slip)

    # -- safetensors resource attacks
    c["st-1e12-shape"] = ("model.safetensors",
                          lambda: st_raw_header({"w": {"dtype": "F32", "shape": [10**6, 10**6],
                                                       "data_offsets": [0, 4 * 10**12]}}))
    c["st-1e12-shape-small-offsets"] = ("model.safetensors",
                                        lambda: st_raw_header({"w": {"dtype": "F32", "shape": [10**6, 10**6],
                                                                     "data_offsets": [0, 16]}}))
    c["st-2e62-tensor"] = ("model.safetensors",
                           lambda: st_raw_header({"w": {"dtype": "F32", "shape": [2**60],
                                                        "data_offsets": [0, 2**62]}}))
    c["st-u64-overflow-shape"] = ("model.safetensors",
                                  lambda: st_raw_header({"w": {"dtype": "F64", "shape": [2**32, 2**32, 16],
                                                               "data_offsets": [0, 0]}}))
    c["st-negative-dims"] = ("model.safetensors",
                             lambda: st_raw_header({"w": {"dtype": "F32", "shape": [-1, -4],
                                                          "data_offsets": [0, 16]}}))
    c["st-huge-offsets"] = ("model.safetensors",
                            lambda: st_raw_header({"w": {"dtype": "U8", "shape": [16],
                                                         "data_offsets": [2**64 - 8, 2**64 + 8]}}))
    c["st-2e63-header-len"] = ("model.safetensors", lambda: st_raw_header({"w": {}}, hlen=2**63))
    c["st-max-header-len"] = ("model.safetensors", lambda: st_raw_header({"w": {}}, hlen=2**64 - 1))
    c["st-1000-dims"] = ("model.safetensors",
                         lambda: st_raw_header({"w": {"dtype": "U8", "shape": [1] * 1000,
                                                      "data_offsets": [0, 1]}}, data=b"\0"))

    def st_many(n=100000):
        entries = [(f"t.{i}.w", "F32", [1], 4) for i in range(n)]
        return T.safetensors_header(entries) + np.arange(n, dtype=np.float32).tobytes()
    c["st-100k-tensors"] = ("model.safetensors", st_many)

    def st_many_huge(n=100000):
        # 100k tensors each claiming 10^12 elements, all pointing at the same 16 bytes
        hdr = {f"w{i}": {"dtype": "F32", "shape": [10**6, 10**6], "data_offsets": [0, 16]} for i in range(n)}
        return st_raw_header(hdr)
    c["st-100k-huge-claims"] = ("model.safetensors", st_many_huge)

    # -- torch zip resource attacks
    c["pt-1e12-storage"] = ("model.pt", lambda: torch_zip(
        torch_pickle({"w": _Tensor(_Storage("0", 10**12), 0, [10**6, 10**6], [10**6, 1])}), {"0": b"\0" * 16}))
    c["pt-2e62-view"] = ("model.pt", lambda: torch_zip(
        torch_pickle({"w": _Tensor(_Storage("0", 4), 2**61, [2**60], [1])}), {"0": b"\0" * 16}))
    c["pt-negative-stride"] = ("model.pt", lambda: torch_zip(
        torch_pickle({"w": _Tensor(_Storage("0", 4), -3, [4, 4], [-1, -2**62])}), {"0": b"\0" * 16}))
    c["pt-zipbomb-deflate"] = ("model.pt", lambda: torch_zip(
        torch_pickle({"w": _Tensor(_Storage("0", 2**28), 0, [2**28], [1])}), {"0": b"\0" * (1 << 28)}, method=8))
    c["pt-zip64-declared-2e62"] = ("model.pt", lambda: torch_zip(
        torch_pickle({"w": _Tensor(_Storage("0", 2**60), 0, [2**60], [1])}), {"0": b"\0" * 16},
        declared={"archive/data/0": (2**62, 2**62)}))
    c["pt-declared-4g"] = ("model.pt", lambda: torch_zip(
        torch_pickle({"w": _Tensor(_Storage("0", 4), 0, [4], [1])}), {"0": b"\0" * 16},
        declared={"archive/data/0": (0xFFFFFFFE, 0xFFFFFFFE)}))

    def pt_many_members(n=100000):
        pkl = torch_pickle({"w": _Tensor(_Storage("0", 4), 0, [4], [1])})
        extra = [(f"archive/junk/{i}", b"") for i in range(n)]
        return torch_zip(pkl, {"0": b"\0" * 16}, extra_members=extra)
    c["pt-100k-members"] = ("model.pt", pt_many_members)

    def pt_many_tensors(n=100000):
        st = _Storage("0", n)
        return torch_zip(torch_pickle({f"t{i}": _Tensor(st, i, [1], [1]) for i in range(n)}),
                         {"0": np.zeros(n, dtype=np.float32).tobytes()})
    c["pt-100k-views"] = ("model.pt", pt_many_tensors)
    c["pt-deep-list-100k"] = ("model.pt", lambda: torch_zip(deep_list_pickle(100000), {}))
    c["pt-deep-tuple-100k"] = ("model.pt", lambda: torch_zip(deep_tuple_pickle(100000), {}))
    c["pt-deep-dict-100k"] = ("model.pt", lambda: torch_zip(deep_dict_pickle(100000), {}))
    c["pt-deep-list-999"] = ("model.pt", lambda: torch_zip(deep_list_pickle(999), {}))
    c["pt-deep-dict-999-tensor"] = ("model.pt", lambda: torch_zip(
        b"\x80\x02" + (b"}" + b"X\x01\x00\x00\x00a") * 999 + torch_pickle(_Tensor(_Storage("0", 4), 0, [4], [1]))[2:-1]
        + b"s" * 999 + b".", {"0": b"\0" * 16}))

    # -- npy / npz
    c["npy-2e62"] = ("x.npy", lambda: b"\x93NUMPY\x01\x00" + struct.pack("<H", 118) +
                     b"{'descr': '<f4', 'fortran_order': False, 'shape': (4611686018427387904,), }".ljust(117) + b"\n")
    c["npy-overflow-shape"] = ("x.npy", lambda: b"\x93NUMPY\x01\x00" + struct.pack("<H", 118) +
                               b"{'descr': '<f8', 'fortran_order': False, 'shape': (4294967296, 4294967296, 16), }".ljust(117)
                               + b"\n")
    c["npz-declared-huge"] = ("w.npz", lambda: zip_bytes([("a.npy", npy_bytes(F4))],
                                                         declared={"a.npy": (2**62, 2**62)}))

    # sharded-checkpoint index whose number overflows a double (nlohmann throws out_of_range)
    c["st-index-number-overflow"] = ("model.safetensors.index.json",
                                     lambda: b'{"metadata":{"total_size":1e999},"weight_map":{"w":"a.safetensors"}}')

    # -- reproducer kept as a test: a zero-element tensor (see the report)
    c["st-zero-size-tensor"] = ("model.safetensors",
                                lambda: T.safetensors_bytes([("empty", np.zeros((0, 3), dtype=np.float32)),
                                                             ("w", F4)]))
    return c


# --- checks ---------------------------------------------------------------------

class Result:
    def __init__(self):
        self.passed, self.failed, self.notes = 0, 0, []
        self.counts = collections.Counter()

    def ok(self, what):
        self.passed += 1
        print(f"  ok    {what}", flush=True)

    def fail(self, what, why):
        self.failed += 1
        self.notes.append(f"{what}: {why}")
        print(f"  FAIL  {what}: {why}", flush=True)


def import_case(lfs, name, path, res):
    args = ["/usr/bin/time", "-v", lfs.bin, "import", lfs.store, path, "--model", MODEL, "--version", name,
            "-m", f"hostile {name}"]
    t0 = time.monotonic()
    try:
        p = subprocess.run(args, capture_output=True, timeout=TIME_LIMIT * 4)
    except subprocess.TimeoutExpired:
        res.fail(name, f"import still running after {TIME_LIMIT * 4:.0f}s (killed)")
        return False
    dt = time.monotonic() - t0
    err = p.stderr.decode(errors="replace")
    rss = T.max_rss_kb_of(err)
    problems = []
    if p.returncode != 0:
        problems.append(f"import exit {p.returncode}: {err.splitlines()[0] if err else ''}")
    if dt > TIME_LIMIT:
        problems.append(f"import took {dt:.1f}s (limit {TIME_LIMIT:.0f}s)")
    if rss is None:
        problems.append("no max RSS from /usr/bin/time")
    elif rss > RSS_LIMIT_KB:
        problems.append(f"import max RSS {rss // 1024} MB (limit {RSS_LIMIT_KB // 1024} MB)")
    res.counts["import seconds (max)"] = max(res.counts["import seconds (max)"], int(dt + 0.999))
    res.counts["import max RSS MB (max)"] = max(res.counts["import max RSS MB (max)"], (rss or 0) // 1024)
    if problems:
        res.fail(f"{name}: import", "; ".join(problems))
        return False
    res.ok(f"{name}: import {dt:.2f}s, max RSS {rss // 1024} MB")
    return True


def fsck_errors(lfs):
    ok, out = lfs.fsck(timeout=300)
    return ok, {l for l in out.splitlines() if l.startswith("error")}, out


def verify_case(lfs, name, fname, path, res, known):
    """known: fsck error lines present before this import (reported once, where they appeared)."""
    want = T.sha256_file(path)
    try:
        got = lfs.cat_sha256(f"{MODEL}/{name}", fname, timeout=120)
    except (RuntimeError, TimeoutError) as e:
        res.fail(f"{name}: read back", str(e))
        return
    if got != want:
        res.fail(f"{name}: read back", f"cat gave {got[1]} bytes {got[0][:12]}…, source {want[1]} bytes {want[0][:12]}…")
        return
    rec = lfs.show(f"{MODEL}/{name}")
    res.counts["tensors indexed"] += int(rec.get("tensors", 0)) if rec else 0
    ok, errs, out = fsck_errors(lfs)
    new = errs - known
    known |= errs
    if not ok and (new or not errs):
        res.fail(f"{name}: fsck", "; ".join(sorted(new))[:500] if new else out[-500:])
        return
    res.ok(f"{name}: byte-exact ({want[1]} bytes, {rec.get('tensors', 0) if rec else '?'} tensors), fsck clean")


def walk_mount(mnt, daemon, res, time_budget=600.0, max_entries=3_000_000):
    """Walks the tree by chdir (no PATH_MAX limit); checks every name and link."""
    root_dev = os.stat(mnt).st_dev
    problems = []
    counts = collections.Counter()
    t_end = time.monotonic() + time_budget
    cwd0 = os.open(".", os.O_RDONLY)
    max_depth = 0

    def bad(msg):
        if len(problems) < 50:
            problems.append(msg)

    def show(path, name=None):
        p = "/".join(path + ([name] if name is not None else []))
        return (p[:200] + f"…({len(p)} bytes)") if len(p) > 200 else p

    def visit(path):
        """Checks the current directory's entries; returns its subdirectories."""
        subdirs = []
        try:
            names = [e.name for e in os.scandir(".")]
        except OSError as e:
            bad(f"readdir {show(path)}: {e}")
            return subdirs
        counts["directories"] += 1
        if len(set(names)) != len(names):
            dup = [n for n, k in collections.Counter(names).items() if k > 1]
            bad(f"duplicate names in {show(path)}: {dup[:3]!r}")
        for n in names:
            counts["entries"] += 1
            nb = os.fsencode(n)
            if n in (".", "..") or "/" in n or "\0" in n or not n:
                bad(f"bad component {n!r} in {show(path)}")
                continue
            if len(nb) > 255:
                bad(f"component of {len(nb)} bytes in {show(path)}")
            try:
                st = os.lstat(n)
            except OSError as e:
                bad(f"lstat {show(path, n)}: {e}")
                continue
            if st.st_dev != root_dev:
                bad(f"{show(path, n)} is on another device")
            if stat.S_ISLNK(st.st_mode):
                counts["symlinks"] += 1
                try:
                    target = os.readlink(n)
                except OSError as e:
                    bad(f"readlink {show(path, n)}: {e}")
                    continue
                resolved = posixpath.normpath(posixpath.join("/".join(path), target))
                if target.startswith("/") or resolved == ".." or resolved.startswith("../"):
                    bad(f"symlink {show(path, n)} -> {target} leaves the mount")
            elif stat.S_ISDIR(st.st_mode):
                subdirs.append(n)
            elif stat.S_ISREG(st.st_mode):
                counts["files"] += 1
                try:
                    fd = os.open(n, os.O_RDONLY)
                    try:
                        os.pread(fd, 4096, 0)
                        if st.st_size > 4096:
                            os.pread(fd, 4096, st.st_size - 4096)
                    finally:
                        os.close(fd)
                    counts["files read"] += 1
                except OSError as e:
                    bad(f"read {show(path, n)}: {e}")
            else:
                bad(f"{show(path, n)}: unexpected file type {oct(st.st_mode)}")
        return subdirs

    try:
        os.chdir(mnt)
        path = []
        stack = [iter(visit(path))]
        while stack:
            if time.monotonic() > t_end or counts["entries"] > max_entries:
                bad(f"walk stopped after {counts['entries']} entries / {time_budget:.0f}s")
                break
            nxt = next(stack[-1], None)
            if nxt is None:
                stack.pop()
                if path:
                    os.chdir("..")
                    path.pop()
                continue
            try:
                os.chdir(nxt)
            except OSError as e:
                bad(f"chdir {show(path, nxt)}: {e}")
                continue
            path.append(nxt)
            max_depth = max(max_depth, len(path))
            if os.stat(".").st_dev != root_dev:
                bad(f"{show(path)} left the mount")
            stack.append(iter(visit(path)))
            if not daemon.alive():
                bad("daemon died during the walk")
                break
    finally:
        os.fchdir(cwd0)
        os.close(cwd0)
    counts["max depth"] = max_depth
    return problems, counts


def daemon_rss_mb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) // 1024
    except OSError:
        pass
    return None


def write_through(mnt, daemon, res):
    """Hostile files written into a draft through the mount (ingested on close by
    the daemon): the daemon survives and each file reads back byte-exact."""
    files = {
        "model.safetensors.index.json": b'{"metadata":{"total_size":1e999},"weight_map":{"w":"a.safetensors"}}',
        "model.safetensors": st_named(["..", "../../etc/passwd", "a/b", "x\u0000y", "\u0001\u001b.w", "n" * 65536]),
        "deep.pt": torch_zip(deep_list_pickle(100000), {}),
        "huge.safetensors": st_raw_header({"w": {"dtype": "F32", "shape": [2**60], "data_offsets": [0, 2**62]}}),
        "bomb.pt": torch_zip(torch_pickle({"w": _Tensor(_Storage("0", 2**24), 0, [2**24], [1])}),
                             {"0": b"\0" * (1 << 26)}, method=8),
    }
    d = os.path.join(mnt, MODEL + "-w", "draft")
    try:
        os.makedirs(d)
    except OSError as e:
        res.fail("write-through", f"mkdir {d}: {e}")
        return
    for name, data in files.items():
        res.counts["hostile inputs tried"] += 1
        p = os.path.join(d, name)
        try:
            t0 = time.monotonic()
            with open(p, "wb") as f:
                f.write(data)
            dt = time.monotonic() - t0  # includes the ingest on close
            with open(p, "rb") as f:
                got = f.read()
        except OSError as e:
            res.fail(f"write-through {name}", f"{e} (daemon alive: {daemon.alive()})")
            if not daemon.alive():
                return
            continue
        if got != data:
            res.fail(f"write-through {name}", f"read back {len(got)} bytes != written {len(data)}")
        elif dt > TIME_LIMIT:
            res.fail(f"write-through {name}", f"write+close took {dt:.1f}s")
        else:
            res.ok(f"write-through {name}: ingested on close in {dt:.2f}s, byte-exact")


def mount_and_walk(lfs, store, mnt, log, label, res, walk_seconds, rss_kill_mb=2048, after=None):
    """Mounts store, walks it in a thread while watching the daemon; a walk that
    overruns its budget (a FUSE call can block for minutes) or a daemon that
    grows past rss_kill_mb ends with the daemon killed, so the run always ends."""
    import threading
    daemon = T.Mount(lfs.bin, store, mnt, log)
    out = {}
    try:
        daemon.start(timeout=60)
        t0 = time.monotonic()
        th = threading.Thread(target=lambda: out.update(r=walk_mount(mnt, daemon, res, walk_seconds)),
                              daemon=True)
        th.start()
        peak, killed = 0, None
        while th.is_alive():
            th.join(0.5)
            rss = daemon_rss_mb(daemon.proc.pid) if daemon.alive() else None
            peak = max(peak, rss or 0)
            if time.monotonic() - t0 > walk_seconds + 30:
                killed = f"walk blocked past its {walk_seconds:.0f}s budget (+30s)"
            elif rss and rss > rss_kill_mb:
                killed = f"daemon RSS {rss} MB > {rss_kill_mb} MB"
            if killed:
                daemon.kill9()
                T.force_unmount(mnt)
                th.join(30)
                break
        dt = time.monotonic() - t0
        res.counts[f"walk seconds ({label})"] = int(dt + 0.999)
        if killed:
            res.fail(f"walk {label}", f"{killed}; daemon killed (peak RSS {peak} MB)")
            return
        problems, counts = out.get("r", (["walk thread died"], collections.Counter()))
        for k, v in counts.items():
            res.counts[f"walk {k} ({label})"] = v
        if problems:
            res.fail(f"walk {label}", f"{len(problems)} problem(s) in {dt:.0f}s:\n    " + "\n    ".join(problems[:20]))
        else:
            res.ok(f"walk {label}: {counts['entries']} entries, {counts['directories']} dirs, depth "
                   f"{counts['max depth']}, {counts['files read']} files read, {dt:.1f}s")
        alive = daemon.alive()
        try:
            os.listdir(mnt)
            responsive = True
        except OSError:
            responsive = False
        rss = daemon_rss_mb(daemon.proc.pid) if alive else None
        res.counts[f"daemon max RSS MB ({label})"] = rss or peak
        if not alive or not responsive:
            res.fail(f"daemon {label}", f"alive={alive} responsive={responsive} (log {daemon.log_path})")
        elif rss is not None and rss > RSS_LIMIT_KB // 1024:
            res.fail(f"daemon {label}", f"max RSS {rss} MB after the walk (limit {RSS_LIMIT_KB // 1024} MB)")
        else:
            res.ok(f"daemon {label}: alive and responsive after the walk (max RSS {rss} MB)")
        if after and daemon.alive():
            after(mnt, daemon, res)
            if not daemon.alive():
                res.fail(f"daemon {label}", f"died during the write-through checks (log {daemon.log_path})")
    except Exception as e:
        res.fail(f"mount/walk {label}", f"{type(e).__name__}: {e}")
    finally:
        daemon.stop(timeout=30)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lineagefs", default=T.DEFAULT_LINEAGEFS)
    ap.add_argument("--work", default=None)
    ap.add_argument("--only", default=None, help="comma-separated case names")
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--no-snapshot", action="store_true")
    ap.add_argument("--walk-seconds", type=float, default=300, help="budget of the main walk")
    ap.add_argument("--deep-walk-seconds", type=float, default=60, help="budget of the deep-tree walk")
    a = ap.parse_args()
    all_cases = cases()
    if a.list:
        print("\n".join(all_cases))
        return 0
    selected = list(all_cases) if not a.only else a.only.split(",")
    own_work = a.work is None
    work = a.work or tempfile.mkdtemp(prefix="lfs-hostile-")
    os.makedirs(work, exist_ok=True)
    if not a.no_snapshot:
        a.lineagefs = T.snapshot_binary(a.lineagefs, os.path.join(work, "bin"))
    src = os.path.join(work, "src")
    groups = {"main": [c for c in selected if c not in DEEP], "deep": [c for c in selected if c in DEEP]}
    res = Result()
    print(f"hostile: {len(selected)} inputs, work={work}", flush=True)
    for label, names in groups.items():
        if not names and label != "main":
            continue
        store, mnt = os.path.join(work, f"store-{label}"), os.path.join(work, f"mnt-{label}")
        shutil.rmtree(store, ignore_errors=True)
        lfs = T.Lfs(a.lineagefs, store)
        lfs.init()
        known_fsck = set()
        for name in names:
            fname, build = all_cases[name]
            d = os.path.join(src, name)
            os.makedirs(d, exist_ok=True)
            path = os.path.join(d, fname)
            try:
                data = build()
            except Exception as e:  # a builder bug is a test failure, not a crash of the suite
                res.fail(f"{name}: build input", repr(e))
                continue
            with open(path, "wb") as f:
                f.write(data)
            del data
            res.counts["hostile inputs tried"] += 1
            print(f"[{name}] {os.path.getsize(path)} bytes", flush=True)
            if import_case(lfs, name, path, res):
                verify_case(lfs, name, fname, path, res, known_fsck)
            os.unlink(path)
        if label == "main":
            # Hostile model/version names must be refused (or be harmless: the walk checks them).
            okfile = os.path.join(src, "ok.safetensors")
            with open(okfile, "wb") as f:
                f.write(st_named(["w"]))
            for m, v in [("..", "v1"), (".", "v1"), ("a/b", "v1"), ("", "v1"), (MODEL, ".."), (MODEL, "a/b"),
                         (MODEL, "latest"), (MODEL, "x" * 300), ("m\nx", "v1"), ("m\u0001x", "v1"),
                         (MODEL, "tensors"), ("%2E%2E", "v1")]:
                res.counts["hostile inputs tried"] += 1
                p = lfs.run("import", store, okfile, "--model", m, "--version", v, timeout=60)
                lbl = f"name {m!r}/{v!r}"[:80]
                if p.returncode in (1, 2):
                    res.ok(f"{lbl}: refused ({p.stderr.decode(errors='replace').strip()[:80]})")
                elif p.returncode == 0:
                    res.counts["hostile model/version names accepted"] += 1
                    print(f"  note  {lbl}: accepted (the walk checks it)", flush=True)
                else:
                    res.fail(lbl, f"import exit {p.returncode}")
        print(f"[walk {label}]", flush=True)
        mount_and_walk(lfs, store, mnt, os.path.join(work, f"daemon-{label}.log"), label, res,
                       a.walk_seconds if label == "main" else a.deep_walk_seconds,
                       after=write_through if label == "main" else None)
        ok, errs, out = fsck_errors(lfs)
        if not ok and (errs - known_fsck or not errs):
            res.fail(f"fsck {label} after the mount", "; ".join(sorted(errs - known_fsck))[:500] or out[-500:])
        else:
            res.ok(f"fsck {label} after the mount: no new problems")
    print("")
    print("hostile summary:")
    for k in sorted(res.counts):
        print(f"  {k}: {res.counts[k]}")
    if res.notes:
        print("failures:")
        for n in res.notes:
            print(f"  - {n.splitlines()[0][:300]}")
    print(f"HOSTILE inputs={res.counts['hostile inputs tried']} checks={res.passed + res.failed} failed={res.failed}")
    print(f"{res.passed} passed, {res.failed} failed")
    if own_work and res.failed == 0:
        shutil.rmtree(work, ignore_errors=True)
    elif own_work:
        print(f"hostile: work directory kept: {work}")
    return 0 if res.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
