"""Helpers shared by the reliability scripts (crash_loop.py, hostile.py)."""
import hashlib
import json
import os
import signal
import struct
import subprocess
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_LINEAGEFS = os.path.join(ROOT, "build", "cli", "lineagefs")


def snapshot_binary(binary, dest, attempts=20):
    """Copies lineagefs and the project's shared libraries (liblfs_*.so) into
    dest and points LD_LIBRARY_PATH there (it outranks the binary's RUNPATH),
    so a concurrent rebuild of the build tree cannot swap libraries under a
    running test. Returns the copied binary's path."""
    import shutil
    os.makedirs(dest, exist_ok=True)
    last = ""
    for _ in range(attempts):
        p = subprocess.run(["ldd", binary], capture_output=True, text=True)
        libs = []
        for line in p.stdout.splitlines():
            parts = line.split("=>")
            if len(parts) == 2 and "liblfs_" in parts[0]:
                path = parts[1].split("(")[0].strip()
                if path and os.path.exists(path):
                    libs.append(path)
        try:
            for lib in libs:
                shutil.copy2(lib, os.path.join(dest, os.path.basename(lib)))
            out = os.path.join(dest, "lineagefs")
            shutil.copy2(binary, out)
        except OSError as e:
            last = str(e)
            time.sleep(3)
            continue
        env = dict(os.environ, LD_LIBRARY_PATH=dest)
        chk = subprocess.run([out, "--help"], capture_output=True, env=env, timeout=60)
        if chk.returncode == 0 and libs:
            os.environ["LD_LIBRARY_PATH"] = dest
            return out
        last = chk.stderr.decode(errors="replace") or "no liblfs_ libraries found by ldd"
        time.sleep(3)  # a rebuild is probably relinking: try again
    raise RuntimeError(f"cannot snapshot {binary}: {last}")


class Deadline:
    """A per-iteration time budget; timeout() is what is left for one step."""

    def __init__(self, seconds):
        self.end = time.monotonic() + seconds

    def left(self):
        return self.end - time.monotonic()

    def timeout(self, cap=None):
        t = self.left()
        if t <= 0:
            raise TimeoutError("iteration deadline exceeded")
        return min(t, cap) if cap else t


class Lfs:
    """Runs `lineagefs` subcommands against one store."""

    def __init__(self, binary, store):
        self.bin = binary
        self.store = store

    def run(self, *args, timeout=120, check=False, stdin=None):
        p = subprocess.run([self.bin, *args], capture_output=True, timeout=timeout, stdin=stdin)
        if check and p.returncode != 0:
            raise RuntimeError(f"lineagefs {' '.join(args)} -> {p.returncode}: "
                               f"{p.stderr.decode(errors='replace').strip()}")
        return p

    def init(self):
        return self.run("init", self.store, check=True)

    def fsck(self, timeout=300):
        """(ok, output). ok: exit 0 and the report says consistent."""
        p = self.run("fsck", self.store, timeout=timeout)
        out = (p.stdout + p.stderr).decode(errors="replace")
        return p.returncode == 0 and "consistent" in out, out.strip()

    def show(self, mv, timeout=60):
        """The version record as a dict, or None when the version does not exist."""
        p = self.run("show", self.store, mv, "--json", timeout=timeout)
        if p.returncode != 0:
            err = p.stderr.decode(errors="replace")
            if "NotFound" in err or "no version" in err or "no model" in err:
                return None
            raise RuntimeError(f"show {mv} -> {p.returncode}: {err.strip()}")
        return json.loads(p.stdout)

    def cat_sha256(self, mv, name, timeout=120):
        """(sha256 hex, size) of a file read back with `lineagefs cat`."""
        h = hashlib.sha256()
        n = 0
        proc = subprocess.Popen([self.bin, "cat", self.store, mv, name], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        try:
            t_end = time.monotonic() + timeout
            while True:
                b = proc.stdout.read(1 << 20)
                if not b:
                    break
                h.update(b)
                n += len(b)
                if time.monotonic() > t_end:
                    raise TimeoutError(f"cat {mv}/{name} timed out")
            rc = proc.wait(timeout=max(1, t_end - time.monotonic()))
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if rc != 0:
            raise RuntimeError(f"cat {mv} {name} -> {rc}: {proc.stderr.read().decode(errors='replace')}")
        return h.hexdigest(), n


def sha256_file(path):
    h = hashlib.sha256()
    n = 0
    with open(path, "rb") as f:
        while True:
            b = f.read(1 << 20)
            if not b:
                break
            h.update(b)
            n += len(b)
    return h.hexdigest(), n


def sha256_bytes(b):
    return hashlib.sha256(b).hexdigest(), len(b)


# --- safetensors writer (no safetensors package on this machine) -------------

_NP_DT = {"float32": "F32", "float16": "F16", "float64": "F64", "int64": "I64", "int32": "I32",
          "int16": "I16", "int8": "I8", "uint8": "U8", "bool": "BOOL"}


def safetensors_header(entries, metadata=None):
    """entries: list of (name, dtype_str, shape, nbytes). Returns the header bytes."""
    header = {}
    off = 0
    for name, dt, shape, nbytes in entries:
        header[name] = {"dtype": dt, "shape": list(shape), "data_offsets": [off, off + nbytes]}
        off += nbytes
    if metadata is not None:
        header["__metadata__"] = metadata
    h = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    return struct.pack("<Q", len(h)) + h


def safetensors_bytes(tensors, metadata=None):
    """tensors: list of (name, np.ndarray)."""
    entries = [(n, _NP_DT[a.dtype.name], a.shape, a.nbytes) for n, a in tensors]
    return safetensors_header(entries, metadata) + b"".join(a.tobytes() for _, a in tensors)


# --- mounts -------------------------------------------------------------------

def is_mounted(mnt):
    mnt = os.path.realpath(mnt)
    try:
        with open("/proc/self/mounts") as f:
            for line in f:
                parts = line.split()
                if len(parts) > 1 and parts[1].replace("\\040", " ") == mnt:
                    return True
    except OSError:
        pass
    return False


def force_unmount(mnt):
    for args in (["fusermount3", "-uz", mnt], ["umount", "-l", mnt]):
        if not is_mounted(mnt):
            return
        subprocess.run(args, capture_output=True, timeout=30)
    t_end = time.monotonic() + 10
    while is_mounted(mnt) and time.monotonic() < t_end:
        time.sleep(0.05)


class Mount:
    """`lineagefs mount STORE MNT -f` in the background."""

    def __init__(self, binary, store, mnt, log_path, extra_opts=None):
        self.bin, self.store, self.mnt, self.log_path = binary, store, mnt, log_path
        self.extra = extra_opts
        self.proc = None

    def start(self, timeout=30):
        os.makedirs(self.mnt, exist_ok=True)
        force_unmount(self.mnt)
        args = [self.bin, "mount", self.store, self.mnt, "-f"]
        if self.extra:
            args += ["-o", self.extra]
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=self.log)
        t_end = time.monotonic() + timeout
        while time.monotonic() < t_end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mount exited with {self.proc.returncode} (log {self.log_path})")
            if is_mounted(self.mnt):
                # The first request waits until the daemon has recovered spools.
                os.listdir(self.mnt)
                return
            time.sleep(0.05)
        raise TimeoutError("mount did not come up")

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def kill9(self):
        if self.alive():
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self, timeout=30):
        """Clean unmount; falls back to kill -9 + lazy unmount."""
        if self.proc is None:
            force_unmount(self.mnt)
            return None
        if self.alive():
            subprocess.run(["fusermount3", "-u", self.mnt], capture_output=True, timeout=30)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill9()
        force_unmount(self.mnt)
        rc = self.proc.returncode
        self.proc = None
        self.log.close()
        return rc


def max_rss_kb_of(time_v_output):
    for line in time_v_output.splitlines():
        if "Maximum resident set size" in line:
            return int(line.split(":")[-1].strip())
    return None
