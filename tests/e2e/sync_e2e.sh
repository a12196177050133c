#!/usr/bin/env bash
# clone / push / pull between two stores on the generated family, and kill -9
# of a pull mid-transfer (no mount).
#   sync_e2e.sh LINEAGEFS [FAMILY_DIR]
# FAMILY_DIR: an existing make_family.py output (default: generate the small
# family with one step per checkpoint into the work dir, ~10 s).
set -euo pipefail
LFS=$1
FAMILY=${2:-${LFS_FAMILY:-}}
HERE=$(cd "$(dirname "$0")" && pwd)
PY=/usr/bin/python3
work=$(mktemp -d /tmp/lfs-sync-e2e-XXXXXX)
cleanup() { rm -rf "$work"; }
trap cleanup EXIT
fail() {
  echo "sync_e2e: FAIL: $*" >&2
  exit 1
}
fsck_clean() {
  "$LFS" fsck "$1" --json >"$work/fsck.json" || fail "fsck of $1: $(cat "$work/fsck.json")"
}
json_get() { $PY -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"; }

if [[ -z $FAMILY ]]; then
  FAMILY=$work/family
  $PY "$HERE/../../scripts/make_family.py" "$FAMILY" --small --steps 1 2>"$work/family.log" ||
    fail "make_family: $(tail -5 "$work/family.log")"
fi
# The family without its last version (merge/v1, a child of ft-a/v3 and ft-b/v3).
$PY - "$FAMILY/manifest.json" "$work/first.json" <<'EOF'
import json, os, sys
m = json.load(open(sys.argv[1]))
last = m["versions"][-1]
assert last["model"] == "merge", last
base = os.path.dirname(os.path.abspath(sys.argv[1]))
m["versions"] = m["versions"][:-1]
for v in m["versions"]:
    v["path"] = os.path.join(base, v["path"])
json.dump(m, open(sys.argv[2], "w"))
EOF

A=$work/A B=$work/B C=$work/C
"$LFS" init "$A" >/dev/null
"$LFS" import "$A" --manifest "$work/first.json" >/dev/null
"$LFS" clone "$A" "$B" --json >"$work/clone.json"
echo "clone: $(json_get "$work/clone.json" versions_sent) versions," \
  "$(json_get "$work/clone.json" frame_bytes) frame bytes"

# A new child in A; push moves about its unique stored bytes.
"$LFS" import "$A" --manifest "$FAMILY/manifest.json" >/dev/null
"$LFS" push "$A" "$B" --json >"$work/push.json"
"$LFS" du "$A" --json >"$work/du.json"
$PY - "$work/push.json" "$work/du.json" <<'EOF'
import json, sys
push, du = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
unique = {v["version"]: v["unique"] for v in du["versions"]}["merge/v1"]
moved = push["frame_bytes"]
assert push["versions_sent"] == 1 and push["sent"] == ["merge/v1"], push
ratio = moved / unique
print("push of merge/v1: %d frame bytes + %d record bytes moved; its unique stored bytes %d "
      "(ratio %.3f); %d of %d chunks sent, %d already present"
      % (moved, push["record_bytes"], unique, ratio, push["chunks_sent"], push["chunks_needed"],
         push["chunks_present"]))
assert 0.95 <= ratio <= 1.05, "bytes moved should be the child's unique bytes"
EOF
"$LFS" push "$A" "$B" --json >"$work/push2.json"
[[ $(json_get "$work/push2.json" bytes_moved) == 0 ]] || fail "a second push moved bytes"

# A version made in B comes back with pull; nothing else moves.
cp -r "$FAMILY/ft-c/v3" "$work/ft-c-v4"
$PY - "$work/ft-c-v4/config.json" <<'EOF'
import json, sys
c = json.load(open(sys.argv[1]))
c["note"] = "made in B"
json.dump(c, open(sys.argv[1], "w"))
EOF
"$LFS" import "$B" "$work/ft-c-v4" --model ft-c --version v4 --parent ft-c/v3 >/dev/null
"$LFS" pull "$A" "$B" --json >"$work/pull.json"
[[ $(json_get "$work/pull.json" versions_sent) == 1 ]] || fail "pull: $(cat "$work/pull.json")"
fsck_clean "$A"
fsck_clean "$B"
echo "pull: 1 version back, $(json_get "$work/pull.json" frame_bytes) frame bytes; A and B fsck clean"

# kill -9 of a pull at random moments into an empty store: the receiver
# stays consistent, and a rerun moves exactly the versions still missing.
total=$(json_get "$work/pull.json" versions_selected)
# Only a kill that leaves some but not all versions counts as mid-transfer; a
# kill too early (nothing yet) or too late (all there) narrows the delay range
# and tries again.
mid=0
lo=0.02
hi=0.6
for attempt in $(seq 1 12); do
  rm -rf "$C"
  "$LFS" init "$C" >/dev/null
  delay=$($PY -c "import random,sys; print(round(random.uniform(float(sys.argv[1]), float(sys.argv[2])), 3))" "$lo" "$hi")
  "$LFS" pull "$C" "$A" >/dev/null 2>&1 &
  pid=$!
  sleep "$delay"
  kill -9 "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  fsck_clean "$C"
  have=$($PY -c 'import json,sys; print(json.load(open(sys.argv[1]))["versions"])' "$work/fsck.json")
  if [[ $have -gt 0 && $have -lt $total ]]; then
    mid=$((mid + 1))
  elif [[ $have -eq 0 ]]; then
    lo=$delay
    hi=$($PY -c "import sys; print(max(float(sys.argv[1]), 2 * float(sys.argv[2])))" "$hi" "$delay")
  else
    hi=$delay
    lo=$($PY -c "import sys; print(float(sys.argv[1]) / 2)" "$lo")
  fi
  "$LFS" pull "$C" "$A" --json >"$work/resume.json"
  fsck_clean "$C"
  sent=$(json_get "$work/resume.json" versions_sent)
  [[ $((have + sent)) == "$total" ]] || fail "rerun sent $sent after $have of $total"
  echo "kill -9 after ${delay}s: C fsck clean with $have of $total versions;" \
    "the rerun sent $sent ($(json_get "$work/resume.json" frame_bytes) frame bytes); fsck clean"
  if [[ $mid -ge 3 ]]; then break; fi
done
[[ $mid -gt 0 ]] || fail "no kill landed mid-transfer (0 < versions < $total) in 12 tries"

# Every version of A reads back bit-exactly from B and C.
versions=$("$LFS" du "$A" --json | $PY -c '
import json, sys
print(" ".join(v["version"] for v in json.load(sys.stdin)["versions"]))')
n=0
for v in $versions; do
  for s in A B C; do
    "$LFS" export "${!s}" "$v" "$work/x/$s/$v" >/dev/null || fail "export $v from $s"
  done
  a=$(cd "$work/x/A/$v" && sha256sum * | sha256sum)
  [[ $a == "$(cd "$work/x/B/$v" && sha256sum * | sha256sum)" ]] || fail "$v differs in B"
  [[ $a == "$(cd "$work/x/C/$v" && sha256sum * | sha256sum)" ]] || fail "$v differs in C"
  n=$((n + 1))
done
[[ $n == "$total" ]] || fail "expected $total versions in A, exported $n"
echo "sync_e2e: OK ($n versions bit-exact in A, B and C; $mid of 5 kills landed mid-transfer)"
