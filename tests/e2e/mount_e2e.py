#!/usr/bin/python3
"""End-to-end tests on a real FUSE mount of lineagefs.

Builds a small family with torch, imports it with the CLI, mounts the store in
a temporary directory (always unmounted, with a deadline), and checks what a
user does: ls, readlink, getfattr, cat/cmp, torch.load, numpy.load, a
safetensors reader, rsync twice, errno values, concurrent readers, and the
write side (mkdir, cp, torch.save, ln -s, setfattr, commit, rm -r).

Usage: mount_e2e.py --lineagefs PATH [--keep]
Prints 'N passed, M failed' last; exits 1 on any failure.
"""
import argparse
import errno
import hashlib
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback

import numpy as np
import torch

DEADLINE_S = 600
results = []


def check(name):
    def deco(fn):
        def run(*a, **k):
            try:
                fn(*a, **k)
                results.append((name, True, ""))
                print(f"ok   {name}", flush=True)
            except Exception as e:  # noqa: BLE001 - report and go on
                results.append((name, False, repr(e)))
                print(f"FAIL {name}: {e!r}", flush=True)
                traceback.print_exc()
        return run
    return deco


def sha(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for b in iter(lambda: f.read(1 << 20), b""):
            h.update(b)
    return h.hexdigest()


def expect_errno(err, fn, *a):
    try:
        fn(*a)
    except OSError as e:
        assert e.errno == err, f"expected {errno.errorcode[err]}, got {errno.errorcode.get(e.errno, e.errno)}"
        return
    raise AssertionError(f"expected {errno.errorcode[err]}, call succeeded")


def write_safetensors(path, tensors, metadata=None):
    header, blobs, off = {}, [], 0
    for name, t in tensors.items():
        t = t.contiguous()
        dt = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
              torch.int8: "I8", torch.int64: "I64", torch.bool: "BOOL"}[t.dtype]
        raw = (t.view(torch.int16) if t.dtype == torch.bfloat16 else t).numpy().tobytes()
        header[name] = {"dtype": dt, "shape": list(t.shape), "data_offsets": [off, off + len(raw)]}
        off += len(raw)
        blobs.append(raw)
    if metadata:
        header["__metadata__"] = metadata
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def read_safetensors(path):
    """A 20-line safetensors reader: name -> torch tensor (any dtype)."""
    dt = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "I8": torch.int8,
          "I64": torch.int64, "BOOL": torch.bool, "U8": torch.uint8, "I32": torch.int32,
          "F64": torch.float64, "I16": torch.int16}
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        b, e = info["data_offsets"]
        raw = bytearray(data[b:e])
        t = torch.frombuffer(raw, dtype=torch.uint8) if e > b else torch.empty(0, dtype=torch.uint8)
        out[name] = t.view(dt[info["dtype"]]).reshape(info["shape"]) if e > b else torch.empty(info["shape"], dtype=dt[info["dtype"]])
    return out


def make_family(d):
    torch.manual_seed(0)
    base = {
        "model.embed.weight": torch.randn(512, 64) * 0.02,
        "model.layers.0.attn.q_proj.weight": torch.randn(64, 64) * 0.02,
        "model.layers.0.attn.q_proj.bias": torch.zeros(64),
        "model.layers.1.mlp.up.weight": torch.randn(256, 64) * 0.02,
        "lm_head.weight": torch.randn(512, 64) * 0.02,
        "step": torch.tensor(7, dtype=torch.int64),
    }
    os.makedirs(f"{d}/base", exist_ok=True)
    write_safetensors(f"{d}/base/model.safetensors", base, {"format": "pt"})
    with open(f"{d}/base/config.json", "w") as f:
        json.dump({"hidden": 64, "layers": 2}, f)
    # A fine-tune: every weight moves a little, trained for real.
    ft = {k: v.clone() for k, v in base.items()}
    lin = torch.nn.Linear(64, 64)
    with torch.no_grad():
        lin.weight.copy_(ft["model.layers.0.attn.q_proj.weight"])
        lin.bias.copy_(ft["model.layers.0.attn.q_proj.bias"])
    opt = torch.optim.SGD(lin.parameters(), lr=1e-3)
    for _ in range(5):
        x = torch.randn(32, 64)
        loss = (lin(x) - x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    ft["model.layers.0.attn.q_proj.weight"] = lin.weight.detach().clone()
    ft["model.layers.0.attn.q_proj.bias"] = lin.bias.detach().clone()
    os.makedirs(f"{d}/ft", exist_ok=True)
    torch.save(ft, f"{d}/ft/model.pt")
    # A bf16 cast, as .pt with a shared storage and a view with an offset.
    bf = {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in base.items()}
    big = torch.randn(100, 64)
    bf["shared.a"] = big
    bf["shared.b"] = big[10:20]
    os.makedirs(f"{d}/bf16", exist_ok=True)
    torch.save(bf, f"{d}/bf16/model.pt")
    # Garbage that looks like a checkpoint: stored byte-exact anyway.
    os.makedirs(f"{d}/bad", exist_ok=True)
    with open(f"{d}/bad/model.safetensors", "wb") as f:
        f.write(struct.pack("<Q", 1 << 62) + b'{"x": 1}' + os.urandom(1000))
    return base, ft, bf


class Mount:
    def __init__(self, lfs, store, mnt):
        self.lfs, self.store, self.mnt = lfs, store, mnt
        self.proc = None

    def start(self):
        os.makedirs(self.mnt, exist_ok=True)
        self.log = open(self.store + ".daemon.log", "ab")
        self.proc = subprocess.Popen([self.lfs, "mount", self.store, self.mnt, "-f", "-o", "log_level=info"],
                                     stdout=self.log, stderr=self.log)
        for _ in range(200):
            if os.path.ismount(self.mnt):
                return
            if self.proc.poll() is not None:
                raise RuntimeError("daemon exited: see " + self.store + ".daemon.log")
            time.sleep(0.05)
        raise RuntimeError("mount did not appear")

    def stop(self):
        if self.proc is None:
            return
        subprocess.run(["fusermount3", "-u", self.mnt], stderr=subprocess.DEVNULL)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            subprocess.run(["fusermount3", "-uz", self.mnt], stderr=subprocess.DEVNULL)
        self.proc = None
        self.log.close()


def run(lfs, work):
    src = f"{work}/src"
    store = f"{work}/store"
    mnt = f"{work}/mnt"
    base, ft, bf = make_family(src)

    def cli(*args, ok=True):
        r = subprocess.run([lfs, *args], capture_output=True, text=True)
        if ok and r.returncode != 0:
            raise AssertionError(f"lineagefs {' '.join(args)} failed: {r.stderr}")
        return r

    cli("init", store)
    cli("import", store, f"{src}/base", "--model", "base", "-m", "pretrained")
    r = cli("import", store, f"{src}/ft", "--model", "ft", "--parent", "base/v1", "--relation", "finetune",
            "--json")
    imported = json.loads(r.stdout)

    @check("frozen tensors of a fine-tune are stored zero times")
    def _():
        f = imported["files"][0]
        # 6 tensors; training changed q_proj weight and bias only.
        assert f["tensors"] == 6 and f["tensors_deduplicated"] == 4, f
    _()
    cli("import", store, f"{src}/bf16", "--model", "bf16", "--parent", "base/v1", "--relation", "quantize")
    cli("import", store, f"{src}/bad", "--model", "bad")
    m = Mount(lfs, store, mnt)
    m.start()
    try:
        checks(m, mnt, src, store, work, base, ft, bf, cli)
    finally:
        m.stop()
        assert not os.path.ismount(mnt)
    # Remount: inode numbers, sizes and mtimes are the same as before.
    m.start()
    try:
        remount_checks(mnt, work)
    finally:
        m.stop()
    fsck_after(cli, store)
    enospc_checks(lfs, work)


def stat_tree(root):
    out = {}
    for dp, dns, fns in os.walk(root):
        for n in dns + fns:
            p = os.path.join(dp, n)
            st = os.lstat(p)
            out[os.path.relpath(p, root)] = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_mode)
    return out


def checks(m, mnt, src, store, work, base, ft, bf, cli):
    @check("ls shows models, versions, latest, parents, tensors")
    def _():
        assert sorted(os.listdir(mnt)) == ["bad", "base", "bf16", "ft"], os.listdir(mnt)
        assert sorted(os.listdir(f"{mnt}/base")) == ["latest", "v1"]
        assert os.readlink(f"{mnt}/base/latest") == "v1"
        assert os.readlink(f"{mnt}/ft/v1/parent") == "../../base/v1"
        assert os.path.samefile(f"{mnt}/ft/v1/parent", f"{mnt}/base/v1")
        entries = set(os.listdir(f"{mnt}/ft/v1"))
        assert {"model.pt", "tensors", "children", "parent", "views"} <= entries, entries
        kids = sorted(os.listdir(f"{mnt}/base/v1/children"))
        assert kids == ["bf16@v1", "ft@v1"], kids
        assert os.path.samefile(f"{mnt}/base/v1/children/ft@v1", f"{mnt}/ft/v1")
        assert os.path.isfile(f"{mnt}/base/v1/tensors/model/layers/0/attn/q_proj.weight.npy")
    _()

    @check("original files are byte-exact, sizes exact before reading")
    def _():
        for rel in ["base/model.safetensors", "base/config.json", "ft/model.pt", "bf16/model.pt",
                    "bad/model.safetensors"]:
            model, name = rel.split("/")
            p = f"{mnt}/{model}/v1/{name}"
            assert os.stat(p).st_size == os.stat(f"{src}/{rel}").st_size, rel
            assert sha(p) == sha(f"{src}/{rel}"), rel
        r = subprocess.run(["cat", f"{mnt}/ft/v1/model.pt"], capture_output=True)
        assert r.returncode == 0 and hashlib.sha256(r.stdout).hexdigest() == sha(f"{src}/ft/model.pt")
    _()

    @check("torch.load of an original .pt and of the synthesized .pt view")
    def _():
        got = torch.load(f"{mnt}/ft/v1/model.pt")
        assert all(torch.equal(got[k], ft[k]) for k in ft)
        view = torch.load(f"{mnt}/base/v1/views/model.pt")
        assert set(view) == set(base) and all(torch.equal(view[k], base[k]) for k in base)
        if "weights_only" in torch.load.__code__.co_varnames:
            view2 = torch.load(f"{mnt}/base/v1/views/model.pt", weights_only=True)
            assert all(torch.equal(view2[k], base[k]) for k in base)
        got_bf = torch.load(f"{mnt}/bf16/v1/model.pt")
        assert got_bf["shared.b"].storage_offset() == 640 and torch.equal(got_bf["shared.b"], bf["shared.b"])
    _()

    @check("the safetensors view of a .pt reads with a safetensors parser (bf16 too)")
    def _():
        st = read_safetensors(f"{mnt}/bf16/v1/views/model.safetensors")
        for k in ["model.embed.weight", "lm_head.weight", "shared.a", "shared.b"]:
            assert torch.equal(st[k], bf[k]), k
    _()

    @check("numpy.load of tensor files, mmap too; bf16 tensors as single-tensor safetensors")
    def _():
        a = np.load(f"{mnt}/ft/v1/tensors/model/layers/0/attn/q_proj.weight.npy")
        assert np.array_equal(a, ft["model.layers.0.attn.q_proj.weight"].numpy())
        mm = np.load(f"{mnt}/base/v1/tensors/lm_head.weight.npy", mmap_mode="r")
        assert np.array_equal(np.asarray(mm), base["lm_head.weight"].numpy())
        s = np.load(f"{mnt}/base/v1/tensors/step.npy")
        assert s.shape == () and int(s) == 7
        t = read_safetensors(f"{mnt}/bf16/v1/tensors/lm_head.weight.safetensors")["tensor"]
        assert torch.equal(t, bf["lm_head.weight"])
    _()

    @check("xattrs: version, tensor, model; ENODATA for unknown; size probe")
    def _():
        x = os.getxattr(f"{mnt}/ft/v1", "user.lineage.parent").decode()
        assert x == "base/v1", x
        assert os.getxattr(f"{mnt}/ft/v1", "user.lineage.relation") == b"finetune"
        assert os.getxattr(f"{mnt}/ft/v1", "user.lineage.state") == b"committed"
        assert os.getxattr(f"{mnt}/bf16/v1", "user.lineage.relation") == b"quantize"
        t = f"{mnt}/ft/v1/tensors/model/embed.weight.npy"
        assert os.getxattr(t, "user.lineage.dtype") == b"F32"
        assert os.getxattr(t, "user.lineage.shape") == b"[512, 64]"
        assert os.getxattr(t, "user.lineage.same_as_parent") == b"yes"
        q = f"{mnt}/ft/v1/tensors/model/layers/0/attn/q_proj.weight.npy"
        assert os.getxattr(q, "user.lineage.same_as_parent") == b"no"
        assert os.getxattr(f"{mnt}/base", "user.lineage.latest") == b"v1"
        expect_errno(errno.ENODATA, os.getxattr, f"{mnt}/ft/v1", "user.lineage.nope")
        expect_errno(errno.ENODATA, os.getxattr, f"{mnt}/ft/v1", "user.other")
        names = os.listxattr(f"{mnt}/ft/v1")
        assert "user.lineage.content_id" in names, names
        r = subprocess.run(["getfattr", "-d", f"{mnt}/ft/v1"], capture_output=True, text=True)
        assert r.returncode == 0 and 'user.lineage.parent="base/v1"' in r.stdout, r.stdout
    _()

    @check("a malformed checkpoint is stored byte-exact with the reason logged")
    def _():
        assert sha(f"{mnt}/bad/v1/model.safetensors") == sha(f"{src}/bad/model.safetensors")
        r = cli("show", store, "bad/v1", "--json")
        assert json.loads(r.stdout)["tensors"] == 0
    _()

    @check("errno: EROFS on committed writes, ENOENT, ENOTDIR")
    def _():
        expect_errno(errno.EROFS, open, f"{mnt}/ft/v1/model.pt", "wb")
        expect_errno(errno.EROFS, open, f"{mnt}/ft/v1/new.bin", "wb")
        expect_errno(errno.EROFS, os.unlink, f"{mnt}/ft/v1/model.pt")
        expect_errno(errno.EROFS, os.rename, f"{mnt}/ft/v1/model.pt", f"{mnt}/ft/v1/x.pt")
        expect_errno(errno.EROFS, os.setxattr, f"{mnt}/ft/v1", "user.lineage.message", b"x")
        expect_errno(errno.ENOENT, os.stat, f"{mnt}/nomodel")
        expect_errno(errno.ENOENT, os.stat, f"{mnt}/ft/v9")
        expect_errno(errno.ENOENT, os.stat, f"{mnt}/ft/v1/tensors/nothing.npy")
        expect_errno(errno.ENOTDIR, os.stat, f"{mnt}/ft/v1/model.pt/x")
        expect_errno(errno.ENOTDIR, os.listdir, f"{mnt}/ft/v1/model.pt")
    _()

    @check("rsync -aHAX of the mount twice: the second run transfers nothing")
    def _():
        bk = f"{work}/backup"
        r = subprocess.run(["rsync", "-aHAX", f"{mnt}/", f"{bk}/"], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        r = subprocess.run(["rsync", "-aHAX", "--itemize-changes", f"{mnt}/", f"{bk}/"],
                           capture_output=True, text=True)
        assert r.returncode == 0 and r.stdout.strip() == "", r.stdout[:500]
        assert os.readlink(f"{bk}/ft/v1/parent") == "../../base/v1"
        assert os.getxattr(f"{bk}/ft/v1/model.pt", "user.lineage.hash")
        assert sha(f"{bk}/ft/v1/model.pt") == sha(f"{src}/ft/model.pt")
    _()

    @check("find, ls -lR, du, tar, cp -a, sha256sum behave")
    def _():
        r = subprocess.run(["find", mnt], capture_output=True, text=True)
        assert r.returncode == 0 and f"{mnt}/ft/v1/model.pt" in r.stdout.split("\n")
        assert subprocess.run(["ls", "-lR", mnt], capture_output=True).returncode == 0
        r = subprocess.run(["du", "-sb", f"{mnt}/ft/v1/model.pt"], capture_output=True, text=True)
        assert int(r.stdout.split()[0]) >= os.stat(f"{src}/ft/model.pt").st_size
        r = subprocess.run(["tar", "-cf", f"{work}/t.tar", "-C", mnt, "base"], capture_output=True)
        assert r.returncode == 0, r.stderr
        r = subprocess.run(["cp", "-a", f"{mnt}/base", f"{work}/cpa"], capture_output=True)
        assert r.returncode == 0, r.stderr
        assert sha(f"{work}/cpa/v1/model.safetensors") == sha(f"{src}/base/model.safetensors")
        r = subprocess.run(["sha256sum", f"{mnt}/ft/v1/model.pt"], capture_output=True, text=True)
        assert r.stdout.split()[0] == sha(f"{src}/ft/model.pt")
        sv = os.statvfs(mnt)
        assert sv.f_blocks >= sv.f_bfree and sv.f_namemax == 255
    _()

    @check("8 concurrent readers on the same and different files get correct bytes")
    def _():
        files = [(f"{mnt}/ft/v1/model.pt", sha(f"{src}/ft/model.pt")),
                 (f"{mnt}/base/v1/model.safetensors", sha(f"{src}/base/model.safetensors")),
                 (f"{mnt}/bf16/v1/model.pt", sha(f"{src}/bf16/model.pt"))]
        errors = []

        def reader(i):
            p, want = files[i % len(files)]
            for _ in range(5):
                if sha(p) != want:
                    errors.append(p)
        ts = [threading.Thread(target=reader, args=(i,)) for i in range(8)]
        [t.start() for t in ts]
        [t.join() for t in ts]
        assert not errors, errors
    _()

    write_checks(mnt, src, store, work, ft, cli)


def write_checks(mnt, src, store, work, ft, cli):
    @check("mkdir makes a model and a draft; cp and torch.save write into it")
    def _():
        os.mkdir(f"{mnt}/ft2")
        os.mkdir(f"{mnt}/ft2/v1")
        assert os.getxattr(f"{mnt}/ft2/v1", "user.lineage.state") == b"draft"
        shutil.copy(f"{src}/base/config.json", f"{mnt}/ft2/v1/config.json")
        sd = {k: v + 1e-3 if v.is_floating_point() else v for k, v in ft.items()}
        torch.save(sd, f"{mnt}/ft2/v1/model.pt")
        got = torch.load(f"{mnt}/ft2/v1/model.pt")
        assert all(torch.equal(got[k], sd[k]) for k in sd)
        assert sha(f"{mnt}/ft2/v1/config.json") == sha(f"{src}/base/config.json")
    _()

    @check("POSIX I/O in a draft: offsets, append, truncate, rename, unlink, O_TRUNC, sparse, fsync")
    def _():
        p = f"{mnt}/ft2/v1/scratch.bin"
        fd = os.open(p, os.O_CREAT | os.O_RDWR, 0o644)
        os.pwrite(fd, b"hello", 0)
        os.pwrite(fd, b"world", 100)  # sparse
        os.fsync(fd)
        assert os.pread(fd, 5, 100) == b"world"
        assert os.stat(p).st_size == 105  # visible before the close
        os.close(fd)
        with open(p, "rb") as f:
            data = f.read()
        assert data == b"hello" + b"\0" * 95 + b"world"
        with open(p, "ab") as f:
            f.write(b"!")
        assert os.stat(p).st_size == 106
        os.truncate(p, 3)
        with open(p, "rb") as f:
            assert f.read() == b"hel"
        with open(p, "r+b") as f:  # write into an ingested file: copied up first
            f.seek(1)
            f.write(b"EY")
        with open(p, "rb") as f:
            assert f.read() == b"hEY"
        with open(p, "wb") as f:  # O_TRUNC
            f.write(b"new")
        os.rename(p, f"{mnt}/ft2/v1/renamed.bin")
        assert not os.path.exists(p)
        with open(f"{mnt}/ft2/v1/renamed.bin", "rb") as f:
            assert f.read() == b"new"
        os.unlink(f"{mnt}/ft2/v1/renamed.bin")
        expect_errno(errno.ENOENT, os.stat, f"{mnt}/ft2/v1/renamed.bin")
        expect_errno(errno.EEXIST, os.open, f"{mnt}/ft2/v1/config.json", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    _()

    @check("parents via ln -s and setfattr; invalid targets are EINVAL")
    def _():
        os.symlink("../../ft/v1", f"{mnt}/ft2/v1/parent")
        assert os.readlink(f"{mnt}/ft2/v1/parent") == "../../ft/v1"
        subprocess.run(["setfattr", "-n", "user.lineage.relation", "-v", "distill", f"{mnt}/ft2/v1"], check=True)
        assert os.getxattr(f"{mnt}/ft2/v1", "user.lineage.relation") == b"distill"
        expect_errno(errno.EINVAL, os.symlink, "../../nomodel/v1", f"{mnt}/ft2/v1/parent.1")
        expect_errno(errno.EINVAL, os.symlink, "/etc/passwd", f"{mnt}/ft2/v1/parent.1")
        expect_errno(errno.EINVAL, os.setxattr, f"{mnt}/ft2/v1", "user.lineage.parent", b"ft2/v1")
        os.setxattr(f"{mnt}/ft2/v1", "user.lineage.message", b"distilled from ft")
        assert os.getxattr(f"{mnt}/ft2/v1", "user.lineage.message") == b"distilled from ft"
    _()

    @check("commit by setfattr: the version becomes immutable (EROFS), tensors appear")
    def _():
        subprocess.run(["setfattr", "-n", "user.lineage.state", "-v", "committed", f"{mnt}/ft2/v1"], check=True)
        assert os.getxattr(f"{mnt}/ft2/v1", "user.lineage.state") == b"committed"
        expect_errno(errno.EROFS, open, f"{mnt}/ft2/v1/model.pt", "ab")
        expect_errno(errno.EROFS, os.unlink, f"{mnt}/ft2/v1/config.json")
        expect_errno(errno.EROFS, os.setxattr, f"{mnt}/ft2/v1", "user.lineage.message", b"x")
        assert os.path.isdir(f"{mnt}/ft2/v1/tensors")
        assert "ft2@v1" in os.listdir(f"{mnt}/ft/v1/children")
        r = cli("diff", store, "ft/v1", "ft2/v1", "--json")
        d = json.loads(r.stdout)
        assert d["summary"].get("changed", 0) >= 4, d["summary"]
    _()

    @check("rm -r of a draft discards it; removing a version with children is refused")
    def _():
        os.mkdir(f"{mnt}/ft2/v2")
        with open(f"{mnt}/ft2/v2/a.bin", "wb") as f:
            f.write(os.urandom(1000))
        os.symlink("../../ft2/v1", f"{mnt}/ft2/v2/parent")
        subprocess.run(["rm", "-r", f"{mnt}/ft2/v2"], check=True)
        assert not os.path.exists(f"{mnt}/ft2/v2")
        expect_errno(errno.ENOTEMPTY, os.rmdir, f"{mnt}/ft/v1")  # ft2/v1 derives from it
        expect_errno(errno.ENOTEMPTY, os.rmdir, f"{mnt}/ft2")
    _()


def enospc_checks(lfs, work):
    @check("ENOSPC surfaces to the writer, staging is cleaned up, committed data intact")
    def _():
        if os.geteuid() != 0:
            print("skip: needs root for a small tmpfs")
            return
        small = f"{work}/small"
        os.makedirs(small)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", small], check=True)
        m = None
        try:
            store, mnt = f"{small}/store", f"{work}/smallmnt"
            subprocess.run([lfs, "init", store], check=True, capture_output=True)
            keep = os.urandom(2 << 20)
            with open(f"{work}/keep.bin", "wb") as f:
                f.write(keep)
            subprocess.run([lfs, "import", store, f"{work}/keep.bin", "--model", "k"], check=True,
                           capture_output=True)
            m = Mount(lfs, store, mnt)
            m.start()
            os.makedirs(f"{mnt}/k/v2")
            err = None
            try:
                with open(f"{mnt}/k/v2/big.bin", "wb") as f:
                    for _ in range(64):
                        f.write(os.urandom(1 << 20))
            except OSError as e:
                err = e.errno
            assert err == errno.ENOSPC, err
            # The kernel sends the release after close() returns: give it a moment.
            for _ in range(100):
                left = [n for n in os.listdir(f"{store}/staging") if n.endswith(".spool")]
                if not left:
                    break
                time.sleep(0.05)
            assert not left, left
            with open(f"{mnt}/k/v1/keep.bin", "rb") as f:
                assert f.read() == keep
        finally:
            if m:
                m.stop()
            subprocess.run(["umount", small])
    _()


def remount_checks(mnt, work):
    @check("inode numbers, sizes and mtimes are stable across remounts")
    def _():
        now = stat_tree(mnt)
        with open(f"{work}/before.json") as f:
            before = {k: tuple(v) for k, v in json.load(f).items()}
        for k, v in before.items():
            if k.startswith("ft2") or k.startswith("base/v1/children") or k.startswith("ft/v1/children"):
                continue
            assert now.get(k) == v, (k, now.get(k), v)
    _()


def fsck_after(cli, store):
    @check("fsck is clean after all of it")
    def _():
        r = cli("fsck", store)
        assert "store is consistent" in r.stdout, r.stdout
    _()

    @check("lineagefs backup: a consistent copy; a second run copies no pack")
    def _():
        bk = store + ".backup"
        cli("backup", store, bk)
        r = cli("backup", store, bk)
        assert "0 pack(s) copied" in r.stdout, r.stdout
        assert "store is consistent" in cli("fsck", bk).stdout
        a = subprocess.run(["cat", f"{store}/../src/ft/model.pt"], capture_output=True).stdout
        r = cli("export", bk, "ft/v1", f"{bk}.export")
        assert sha(f"{bk}.export/model.pt") == hashlib.sha256(a).hexdigest() and len(a) > 0
    _()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lineagefs", required=True)
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    signal.signal(signal.SIGALRM, lambda *_: (_ for _ in ()).throw(TimeoutError("deadline")))
    signal.alarm(DEADLINE_S)
    work = tempfile.mkdtemp(prefix="lfs-e2e-")
    try:
        # Remember the tree of a first mount for the remount comparison.
        global checks
        inner = checks

        def checks_and_snapshot(m, mnt, *a):
            with open(f"{work}/before.json", "w") as f:
                json.dump(stat_tree(mnt), f)
            inner(m, mnt, *a)
        checks = checks_and_snapshot
        run(os.path.abspath(args.lineagefs), work)
    except Exception as e:  # noqa: BLE001
        results.append(("setup", False, repr(e)))
        traceback.print_exc()
    finally:
        subprocess.run(["fusermount3", "-uz", f"{work}/mnt"], stderr=subprocess.DEVNULL)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    passed = sum(1 for r in results if r[1])
    failed = len(results) - passed
    for name, ok, why in results:
        if not ok:
            print(f"FAILED: {name}: {why}")
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
