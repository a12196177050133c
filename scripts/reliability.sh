#!/usr/bin/env bash
# lineagefs reliability suite: crash loop (kill -9 of import, gc and the
# daemon), libFuzzer targets, hostile names and resource attacks, bit-rot of
# the index and packs, POSIX parity with ext4, permissions (throwaway users),
# load (16 readers + a writer), daemon death while mounted.
#
#   scripts/reliability.sh [--ci] [--seed N] [--lineagefs PATH] [--work DIR]
#                          [--skip crash,fuzz,hostile,bitrot,posix,perms,load,death]
#                          [--rebuild]
#
#   --ci    < 10 minutes (fuzz build included, 2 cores): 20 crash iterations,
#           15 s per fuzz target, every hostile input, 60 bit-rot trials,
#           20 s of load; parity, permissions and daemon death in full
#   full    200 crash iterations, 60 s per fuzz target, every hostile input,
#           300 bit-rot trials, 60 s of load
#
# Needs: build/cli/lineagefs (`cmake --build build --target lineagefs -j1`;
# --rebuild does it), clang for the fuzzers (build-fuzz, configured by
# scripts/reliability/fuzz.sh), /usr/bin/python3 with numpy and torch,
# fusermount3, /usr/bin/time. Prints a summary and a final
# 'N passed, M failed' (crash iterations + fuzz targets + hostile checks);
# exits non-zero when anything failed.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
R="$ROOT/scripts/reliability"
CI=0
SEED=""
LFS="$ROOT/build/cli/lineagefs"
WORK=""
SKIP=""
REBUILD=0
while [ $# -gt 0 ]; do
  case "$1" in
    --ci) CI=1; shift ;;
    --seed) SEED="$2"; shift 2 ;;
    --lineagefs) LFS="$2"; shift 2 ;;
    --work) WORK="$2"; shift 2 ;;
    --skip) SKIP="$2"; shift 2 ;;
    --rebuild) REBUILD=1; shift ;;
    -h|--help) sed -n 2,22p "$0"; exit 0 ;;
    *) echo "reliability.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
[ -n "$WORK" ] || WORK="$(mktemp -d /tmp/lfs-reliability.XXXXXX)"
mkdir -p "$WORK"
[ -n "$SEED" ] || SEED=$(( (RANDOM << 15) | RANDOM ))

if [ "$REBUILD" = 1 ] || [ ! -x "$LFS" ]; then
  echo "== building lineagefs (-j1)"
  cmake --build "$ROOT/build" --target lineagefs -j1 >"$WORK/build.log" 2>&1 \
    || { tail -30 "$WORK/build.log"; echo "0 passed, 1 failed"; exit 1; }
fi

skip() { [[ ",$SKIP," == *",$1,"* ]]; }
t0=$(date +%s)
declare -A P F
run_step() {  # name, log, command...
  local name="$1" log="$2"; shift 2
  local s=$(date +%s)
  echo "== $name: $*"
  "$@" 2>&1 | tee "$log"
  local rc=${PIPESTATUS[0]}
  local line
  line=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$log" | tail -1)
  P[$name]=$(echo "$line" | awk '{print $1}')
  F[$name]=$(echo "$line" | awk '{print $3}')
  P[$name]=${P[$name]:-0}
  F[$name]=${F[$name]:-0}
  if [ "$rc" -ne 0 ] && [ "${F[$name]}" -eq 0 ]; then F[$name]=1; fi
  echo "== $name: rc=$rc, ${P[$name]} passed, ${F[$name]} failed, $(( $(date +%s) - s ))s"
}

if [ "$CI" = 1 ]; then
  CRASH_ARGS=(--ci); FUZZ_ARGS=(--ci -j "$(nproc)"); HOSTILE_ARGS=(--walk-seconds 120 --deep-walk-seconds 30)
  BITROT_ARGS=(--ci); LOAD_ARGS=(--seconds 20)
else
  CRASH_ARGS=(); FUZZ_ARGS=(--seconds 60); HOSTILE_ARGS=()
  BITROT_ARGS=(--trials 300); LOAD_ARGS=(--seconds 60)
fi
E2E="$ROOT/tests/e2e"

skip crash || run_step crash "$WORK/crash.log" /usr/bin/python3 "$R/crash_loop.py" "${CRASH_ARGS[@]}" \
  --seed "$SEED" --lineagefs "$LFS" --work "$WORK/crash"
skip fuzz || run_step fuzz "$WORK/fuzz.log" bash "$R/fuzz.sh" "${FUZZ_ARGS[@]}" --work "$WORK/fuzz"
skip hostile || run_step hostile "$WORK/hostile.log" /usr/bin/python3 "$R/hostile.py" "${HOSTILE_ARGS[@]}" \
  --lineagefs "$LFS" --work "$WORK/hostile"
skip bitrot || run_step bitrot "$WORK/bitrot.log" /usr/bin/python3 "$R/bitrot.py" "${BITROT_ARGS[@]}" \
  --seed "$SEED" --lineagefs "$LFS"
skip posix || run_step posix "$WORK/posix.log" /usr/bin/python3 "$E2E/posix_parity.py" -v --lineagefs "$LFS"
skip perms || run_step perms "$WORK/perms.log" /usr/bin/python3 "$E2E/permissions_e2e.py" --lineagefs "$LFS"
skip load || run_step load "$WORK/load.log" /usr/bin/python3 "$E2E/load_e2e.py" "${LOAD_ARGS[@]}" --lineagefs "$LFS"
skip death || run_step death "$WORK/death.log" /usr/bin/python3 "$E2E/daemon_death_e2e.py" --lineagefs "$LFS"

echo
echo "================ reliability summary ($( [ "$CI" = 1 ] && echo ci || echo full ), seed $SEED, $(( $(date +%s) - t0 ))s) ================"
if ! skip crash; then
  c=$(grep '^CRASH ' "$WORK/crash.log" | tail -1)
  it=$(echo "$c" | grep -o 'iterations=[0-9]*' | cut -d= -f2)
  sv=$(echo "$c" | grep -o 'survived=[0-9]*' | cut -d= -f2)
  fl=$(echo "$c" | grep -o 'faults=[0-9]*' | cut -d= -f2)
  echo "crash loop: ${sv:-0}/${it:-0} iterations survived; ${fl:-0} faults (kill -9) injected" \
       "($(echo "$c" | grep -o 'import_kills=[0-9]*'), $(echo "$c" | grep -o 'daemon_kills=[0-9]*'), $(echo "$c" | grep -o 'gc_kills=[0-9]*'))"
fi
if ! skip fuzz; then
  echo "fuzz:"
  grep '^FUZZ fuzz_' "$WORK/fuzz.log" | sed 's/^FUZZ /  /'
  grep '^FUZZ total' "$WORK/fuzz.log" | sed 's/^FUZZ /  /'
  [ -s "$ROOT/tests/fuzz/regressions/KNOWN.txt" ] && { echo "  kept crash inputs (tests/fuzz/regressions/KNOWN.txt):"; sed 's/^/    /' "$ROOT/tests/fuzz/regressions/KNOWN.txt"; }
fi
if ! skip hostile; then
  h=$(grep '^HOSTILE ' "$WORK/hostile.log" | tail -1)
  echo "hostile: $(echo "$h" | grep -o 'inputs=[0-9]*' | cut -d= -f2) inputs tried," \
       "$(echo "$h" | grep -o 'checks=[0-9]*' | cut -d= -f2) checks," \
       "$(echo "$h" | grep -o 'failed=[0-9]*' | cut -d= -f2) failed"
  sed -n '/^failures:/,/^HOSTILE/p' "$WORK/hostile.log" | grep '^  - ' | sed 's/^  - /  failed: /'
fi
if ! skip bitrot; then
  b=$(grep '^BITROT ' "$WORK/bitrot.log" | tail -1)
  echo "bit-rot: ${b#BITROT }"
fi
if ! skip posix; then
  x=$(grep '^POSIX ' "$WORK/posix.log" | tail -1)
  echo "POSIX parity vs $(grep -o 'reference file system: [a-z0-9]*' "$WORK/posix.log" | head -1 | cut -d' ' -f4): ${x#POSIX }"
fi
if ! skip perms; then
  x=$(grep '^PERMISSIONS ' "$WORK/perms.log" | tail -1)
  echo "permissions: ${x#PERMISSIONS }"
fi
if ! skip load; then
  x=$(grep '^LOAD ' "$WORK/load.log" | tail -1)
  echo "load: ${x#LOAD }"
fi
if ! skip death; then
  echo "daemon death: $(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$WORK/death.log" | tail -1)"
fi
tp=0; tf=0
for k in crash fuzz hostile bitrot posix perms load death; do
  skip "$k" && continue
  echo "  $k: ${P[$k]} passed, ${F[$k]} failed"
  tp=$((tp + P[$k])); tf=$((tf + F[$k]))
done
echo "logs: $WORK"
echo "$tp passed, $tf failed"
[ "$tf" -eq 0 ]
