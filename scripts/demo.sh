#!/usr/bin/env bash
# The main job on a fresh Debian 12 machine: install, build, generate a small
# model family trained for real, import it with its lineage, and mount it.
#   bash scripts/demo.sh            # demo/store, mounted on demo/mnt
#   bash scripts/demo.sh --full     # the ~25M-parameter family (slower)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh
LFS=$PWD/build/cli/lineagefs
DEMO=$PWD/demo
SIZE=--small
[[ "${1:-}" == "--full" ]] && SIZE=""
mkdir -p "$DEMO"
if mountpoint -q "$DEMO/mnt" 2>/dev/null; then fusermount3 -u "$DEMO/mnt" || true; fi
if [[ ! -f "$DEMO/family/manifest.json" ]]; then
  echo "== training a model family ($([[ -n $SIZE ]] && echo small || echo full)) into $DEMO/family"
  /usr/bin/python3 scripts/make_family.py "$DEMO/family" $SIZE
fi
if [[ ! -d "$DEMO/store/index" ]]; then
  "$LFS" init "$DEMO/store"
  echo "== importing the family"
  "$LFS" import "$DEMO/store" --manifest "$DEMO/family/manifest.json"
fi
if [[ -z "$("$LFS" test list "$DEMO/store")" ]]; then
  echo "== registering a test on every version and running it (through a private mount)"
  "$LFS" test add "$DEMO/store" finite --all --pass-if 'nonfinite==0' \
    --cmd "/usr/bin/python3 $PWD/scripts/examples/check_finite.py {path}"
fi
"$LFS" test run "$DEMO/store" -j 2 | tail -3
"$LFS" tree "$DEMO/store"
"$LFS" du "$DEMO/store" | tail -3
mkdir -p "$DEMO/mnt"
"$LFS" mount "$DEMO/store" "$DEMO/mnt"
cat <<MSG

Mounted on $DEMO/mnt. Try:
  ls $DEMO/mnt
  ls -l $DEMO/mnt/ft-a/latest/
  readlink $DEMO/mnt/ft-a/v1/parent
  getfattr -d $DEMO/mnt/ft-a/v1
  ls $DEMO/mnt/base/v3/tensors
  /usr/bin/python3 -c 'import torch; sd = torch.load("$DEMO/mnt/base/v3/views/model.pt"); print(len(sd), "tensors")'
  $LFS diff $DEMO/store base/v3 ft-a/v1
  $LFS show $DEMO/store ft-a/v1                 # incl. the result of the "finite" test
  getfattr -n user.lineage.test.finite $DEMO/mnt/ft-a/v1
Unmount with: fusermount3 -u $DEMO/mnt
MSG
