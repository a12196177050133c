#!/usr/bin/env bash
# lineagefs benchmark: storage, ingest, cold reads, metadata and daemon cost, side by side
# with zstd, borg, restic, git-lfs (computed), squashfs/squashfuse and plain ext4.
#
#   scripts/bench/run.sh            default family (~2 GB; generated once, cached in
#                                   $BENCH_DIR/family), about 20 min
#   scripts/bench/run.sh --quick    small family, one repetition (CI), under 3 min
#   options: --regen (regenerate the cached family), --keep (keep $BENCH_DIR/work),
#            --only family|readpath (one of the two parts; both by default)
#   env: BENCH_DIR (/tmp/lfs-bench), BUILD_DIR (build), LINEAGEFS (the binary),
#        LFS_BENCH_NO_BUILD=1 (never rebuild), BENCH_BORG_BEST (zstd,9),
#        BENCH_ZSTD_FULL=1 (zstd -19 on whole files, no sampling: ~15 min more)
#
# Prints two tables, writes $BENCH_DIR/results.json, $BENCH_DIR/readpath.json and $BENCH_DIR/bench.png
# (BENCH_DIR defaults to /tmp/lfs-bench). Every timed step starts cold
# (sync; echo 3 > /proc/sys/vm/drop_caches) when run as root, warm otherwise.
# Exits non-zero only if a lineagefs step fails or a file read through the mount differs
# from its source; a missing or failing peer is reported as n/a. Timings are never asserted.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
export BENCH_DIR=${BENCH_DIR:-/tmp/lfs-bench}
BUILD_DIR=${BUILD_DIR:-$ROOT/build}
export LINEAGEFS=${LINEAGEFS:-$BUILD_DIR/cli/lineagefs}
mkdir -p "$BENCH_DIR"

# The binary: build it only when missing or older than the sources (one job: the machine
# is shared with other builds).
stale=0
if [[ ! -x $LINEAGEFS ]]; then
  stale=1
elif [[ -n $(find store lineage fs cli -newer "$LINEAGEFS" \( -name '*.cc' -o -name '*.h' \) \
              -print -quit 2>/dev/null) ]]; then
  stale=1
fi
if [[ $stale == 1 && ${LFS_BENCH_NO_BUILD:-0} == 1 && -x $LINEAGEFS ]]; then
  echo "warning: $LINEAGEFS is older than the sources (LFS_BENCH_NO_BUILD=1: not rebuilding)" >&2
  stale=0
fi
if [[ $stale == 1 ]]; then
  echo "== building lineagefs ($BUILD_DIR)" >&2
  if [[ ! -f $BUILD_DIR/CMakeCache.txt ]]; then
    cmake -S "$ROOT" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=RelWithDebInfo >&2
  fi
  if ! cmake --build "$BUILD_DIR" --target lineagefs -j1 >&2; then
    if [[ -x $LINEAGEFS ]]; then
      echo "warning: build failed; benchmarking the existing $LINEAGEFS" >&2
    else
      echo "lineagefs does not build" >&2
      exit 1
    fi
  fi
fi

# Benchmark a snapshot of the binary and its libraries: a rebuild in the shared build
# directory in the middle of a run would otherwise swap them under our feet.
snap=$BENCH_DIR/bin
rm -rf "$snap"
mkdir -p "$snap"
cp -p "$LINEAGEFS" "$snap/lineagefs"
{ ldd "$LINEAGEFS" 2>/dev/null || true; } | awk '$1 ~ /^liblfs/ && $3 ~ /^\// {print $3}' | while read -r lib; do
  cp "$lib" "$snap/"
done
export LINEAGEFS=$snap/lineagefs
export LD_LIBRARY_PATH=$snap${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
if ! "$LINEAGEFS" --version >/dev/null; then
  echo "lineagefs does not start ($LINEAGEFS)" >&2
  exit 1
fi

# Whatever happens, leave no mount behind (bench.py cleans up too; this is the backstop).
cleanup() {
  local m
  if [[ -r /proc/mounts ]]; then
    while read -r _ m _; do
      case $m in "$BENCH_DIR"/work/* | "$BENCH_DIR"/readpath-work/*) fusermount3 -uz "$m" 2>/dev/null || true ;; esac
    done < /proc/mounts
  fi
}
trap cleanup EXIT
trap 'cleanup; exit 130' INT TERM

# Two parts in one go: bench.py (the family: storage, ingest, every checkpoint read,
# first bytes) and readpath.py (one 1 GB checkpoint: sequential, random 4 KiB / 1 MiB,
# delta-encoded child; 100k-entry tree metadata; daemon memory with 10k versions).
# --only family|readpath runs one of them.
only=
args=()
while [[ $# -gt 0 ]]; do
  case $1 in
    --only) only=$2; shift 2 ;;
    --only=*) only=${1#--only=}; shift ;;
    *) args+=("$1"); shift ;;
  esac
done
rc=0
if [[ -z $only || $only == family ]]; then
  /usr/bin/python3 "$ROOT/scripts/bench/bench.py" "${args[@]}" || rc=$?
fi
if [[ -z $only || $only == readpath ]]; then
  /usr/bin/python3 "$ROOT/scripts/bench/readpath.py" "${args[@]}" || rc=$?
fi
exit $rc
