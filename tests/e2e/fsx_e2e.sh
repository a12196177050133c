#!/usr/bin/env bash
# Runs the fsx exerciser on a draft file of a fresh mount (always unmounted).
#   fsx_e2e.sh LINEAGEFS [OPS] [SEED]
set -euo pipefail
LFS=$1
OPS=${2:-${LFS_FSX_OPS:-10000}}
SEED=${3:-$RANDOM}
work=$(mktemp -d /tmp/lfs-fsx-XXXXXX)
cleanup() {
  fusermount3 -u "$work/mnt" 2>/dev/null || fusermount3 -uz "$work/mnt" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
mkdir "$work/mnt"
"$LFS" init "$work/store" >/dev/null
"$LFS" mount "$work/store" "$work/mnt"
timeout 1200 /usr/bin/python3 "$(dirname "$0")/fsx.py" --mnt "$work/mnt" --ops "$OPS" --seed "$SEED" \
  --shadow-dir "$work"
"$LFS" fsck "$work/store" | tail -1
