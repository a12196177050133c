#!/usr/bin/env bash
# Daemon memory with many versions: builds a store of N versions (default
# 10,000 across 500 models, each a small safetensors file that shares most of
# its tensors with its parent), mounts it, walks the whole tree (find, ls -lR,
# getfattr) and reads a sample of files, then reports the daemon's peak RSS
# against the same walk on a 100-version store. peak_rss is VmHWM (it counts
# the pages of the LMDB index and packs the daemon maps: page cache, shared
# and reclaimable); peak_anon is the highest RssAnon seen (polled every 50 ms),
# the daemon's own memory, to compare with the cache size (MANY_CACHE_MB, 64).
#   many_versions.sh [N] [LINEAGEFS]
set -euo pipefail
N=${1:-10000}
LFS=${2:-$(cd "$(dirname "$0")/../.." && pwd)/build/cli/lineagefs}
BASE=${MANY_DIR:-/dev/shm/lfs-many}
CACHE_MB=${MANY_CACHE_MB:-64}
rm -rf "$BASE"
mkdir -p "$BASE"
cleanup() {
  for m in "$BASE"/mnt-*; do fusermount3 -u "$m" 2>/dev/null || true; done
  rm -rf "$BASE"
}
trap cleanup EXIT

make_store() {  # make_store STORE N
  /usr/bin/python3 - "$1" "$2" "$LFS" <<'PY'
import json, os, random, struct, subprocess, sys
store, n, lfs = sys.argv[1], int(sys.argv[2]), sys.argv[3]
subprocess.run([lfs, "init", store], check=True, capture_output=True)
rng = random.Random(0)
src = store + ".src"
os.makedirs(src, exist_ok=True)
models = max(1, n // 20)
manifest = []
for i in range(n):
    m = f"m{i % models:03d}"
    v = f"v{i // models + 1}"
    d = f"{src}/{m}/{v}"
    os.makedirs(d, exist_ok=True)
    tensors = {f"layers.{k}.w": bytes([rng.randrange(256)]) * 64 if k == i % 8 else bytes([k]) * 64
               for k in range(8)}
    hdr, off, blobs = {}, 0, []
    for name, b in tensors.items():
        hdr[name] = {"dtype": "U8", "shape": [64], "data_offsets": [off, off + 64]}
        off += 64
        blobs.append(b)
    h = json.dumps(hdr).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(f"{d}/model.safetensors", "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))
    parents = []
    if i >= models:
        pm = f"m{rng.randrange(models):03d}"
        parents = [{"model": pm, "version": "v1", "relation": "finetune"}]
    manifest.append({"model": m, "version": v, "path": f"{m}/{v}", "parents": parents})
with open(f"{src}/manifest.json", "w") as f:
    json.dump({"versions": manifest}, f)
subprocess.run([lfs, "import", store, "--manifest", f"{src}/manifest.json"], check=True,
               capture_output=True)
PY
}

measure() {  # measure STORE LABEL
  set +o pipefail  # head closes its pipes early on purpose
  local store=$1 mnt="$BASE/mnt-$2"
  mkdir -p "$mnt"
  "$LFS" mount "$store" "$mnt" -f -o cache_mb="$CACHE_MB" &
  local pid=$!
  for _ in $(seq 100); do mountpoint -q "$mnt" && break; sleep 0.1; done
  local peakf="$BASE/peak-$2"
  echo 0 > "$peakf"
  (
    p=0
    while [[ -r /proc/$pid/status ]]; do
      a=$(awk '/^RssAnon/ {print $2}' /proc/$pid/status 2>/dev/null || true)
      if [[ -n $a && $a -gt $p ]]; then p=$a; echo "$p" > "$peakf"; fi
      sleep 0.05
    done
  ) &
  local poller=$!
  local t0=$(date +%s.%N)
  local entries=$(find "$mnt" | wc -l)
  ls -lR "$mnt" > /dev/null
  find "$mnt" -maxdepth 2 -mindepth 2 -type d | head -2000 | xargs -r getfattr -d > /dev/null 2>&1 || true
  find "$mnt" -name 'model.safetensors' | head -2000 | xargs -r cat > /dev/null
  local t1=$(date +%s.%N)
  local hwm=$(awk '/VmHWM/ {print $2}' /proc/$pid/status)
  sleep 0.1  # one more poll after the walk
  fusermount3 -u "$mnt"
  wait $pid || true
  wait $poller || true
  printf '%-8s versions=%-6s entries=%-7s walk=%6.2fs peak_rss=%s KiB peak_anon=%s KiB cache_mb=%s\n' \
    "$2" "$3" "$entries" "$(echo "$t1 - $t0" | bc)" "$hwm" "$(cat "$peakf")" "$CACHE_MB"
}

make_store "$BASE/s100" 100
measure "$BASE/s100" small 100
make_store "$BASE/sN" "$N"
measure "$BASE/sN" large "$N"
