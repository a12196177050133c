#!/usr/bin/python3
"""Training writes straight into the mount: a small model is trained for a
few steps and torch.save()s a checkpoint into MNT/<model>/<draft>/ every few
steps, then the draft is committed. Prints the stored bytes of each
checkpoint (through `lineagefs import --json`-style accounting: pack growth)
beside the same checkpoints written to the local disk, and checks that later
checkpoints cost less than the first (deltas against the earlier ones).

Usage: train_into_mount.py --lineagefs PATH
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

import torch


def pack_bytes(store):
    total = 0
    for n in os.listdir(os.path.join(store, "packs")):
        total += os.path.getsize(os.path.join(store, "packs", n))
    return total


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lineagefs", required=True)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--every", type=int, default=3)
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="lfs-train-")
    store, mnt, local = f"{work}/store", f"{work}/mnt", f"{work}/local"
    os.makedirs(mnt)
    os.makedirs(local)
    subprocess.run([args.lineagefs, "init", store], check=True, capture_output=True)
    daemon = subprocess.Popen([args.lineagefs, "mount", store, mnt, "-f"])
    ok = True
    try:
        for _ in range(200):
            if os.path.ismount(mnt):
                break
            time.sleep(0.05)
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(256, 512), torch.nn.GELU(), torch.nn.Linear(512, 256))
        opt = torch.optim.SGD(model.parameters(), lr=1e-3)
        os.makedirs(f"{mnt}/trainer/run1")
        rows = []
        for step in range(1, args.steps + 1):
            x = torch.randn(64, 256)
            loss = (model(x) - x).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            if step % args.every == 0:
                name = f"ckpt-{step:04d}.pt"
                before = pack_bytes(store)
                torch.save(model.state_dict(), f"{mnt}/trainer/run1/{name}")
                stored = pack_bytes(store) - before
                torch.save(model.state_dict(), f"{local}/{name}")
                raw = os.path.getsize(f"{local}/{name}")
                back = torch.load(f"{mnt}/trainer/run1/{name}")
                exact = all(torch.equal(back[k], v) for k, v in model.state_dict().items())
                ok &= exact
                rows.append((name, raw, stored, exact))
        os.setxattr(f"{mnt}/trainer/run1", "user.lineage.state", b"committed")
        ok &= os.getxattr(f"{mnt}/trainer/run1", "user.lineage.state") == b"committed"
        du = subprocess.run(["du", "-sb", local], capture_output=True, text=True).stdout.split()[0]
        print(f"{'checkpoint':<16} {'bytes on ext4':>14} {'stored':>10} {'ratio':>7}  exact")
        for name, raw, stored, exact in rows:
            print(f"{name:<16} {raw:>14} {stored:>10} {stored / raw:>7.3f}  {exact}")
        total_stored = sum(r[2] for r in rows)
        print(f"{'total':<16} {du:>14} {total_stored:>10} {total_stored / int(du):>7.3f}")
        # Later checkpoints are stored as deltas against the earlier ones.
        later = [r[2] for r in rows[1:]]
        if not later or max(later) >= 0.9 * rows[0][2]:
            print("later checkpoints are not smaller than the first")
            ok = False
    finally:
        subprocess.run(["fusermount3", "-u", mnt])
        daemon.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)
    print(f"{1 if ok else 0} passed, {0 if ok else 1} failed")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
