#!/usr/bin/env bash
# Builds the libFuzzer targets (tests/fuzz) in a separate clang tree and runs
# each one for a bounded time on seed corpora from make_seeds.py.
#
#   scripts/reliability/fuzz.sh [--seconds N] [--ci] [--build DIR] [--work DIR] [--targets "a b"]
#
# Prints one line per target:
#   FUZZ <target> execs=<n> crashes=<n> new=<n> known=<n> regressions_failing=<n> corpus=<n>
# and a final 'N passed, M failed'. A crash (or timeout/OOM) with a new
# signature (scripts/reliability/fuzz_sig.py) copies the input to
# tests/fuzz/regressions/<target>/ (listed in regressions/KNOWN.txt) and fails;
# kept inputs are replayed first by every run (and by the fuzz_regress_*
# ctests), so a target passes only when all of them are fixed.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
SECONDS_PER_TARGET=60
BUILD="$ROOT/build-fuzz"
WORK="${TMPDIR:-/tmp}/lfs-fuzz"
TARGETS="fuzz_safetensors fuzz_torch_zip fuzz_npy fuzz_detect fuzz_frame fuzz_records"
JOBS=1
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) SECONDS_PER_TARGET="$2"; shift 2 ;;
    --ci) SECONDS_PER_TARGET=15; shift ;;
    --build) BUILD="$2"; shift 2 ;;
    --work) WORK="$2"; shift 2 ;;
    --targets) TARGETS="$2"; shift 2 ;;
    -j) JOBS="$2"; shift 2 ;;
    -h|--help) sed -n 2,12p "$0"; exit 0 ;;
    *) echo "fuzz.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done

max_len() {
  case "$1" in
    fuzz_safetensors) echo 65536 ;;
    fuzz_torch_zip) echo 131072 ;;
    fuzz_npy) echo 16384 ;;
    fuzz_detect) echo 131072 ;;
    fuzz_frame) echo 262144 ;;
    fuzz_records) echo 16384 ;;
    *) echo 65536 ;;
  esac
}

SAN="-O1 -g -fno-omit-frame-pointer -fsanitize=fuzzer-no-link,address,undefined"
echo "== fuzz: configure + build in $BUILD (clang, -j$JOBS)"
if [ ! -f "$BUILD/CMakeCache.txt" ]; then
  CC=clang CXX=clang++ cmake -S "$ROOT" -B "$BUILD" -DLFS_FUZZ=ON -DLFS_WERROR=OFF \
    -DCMAKE_BUILD_TYPE=Debug \
    -DCMAKE_C_FLAGS="$SAN" \
    -DCMAKE_CXX_FLAGS="$SAN -fno-sanitize-recover=undefined" >"$WORK.cmake.log" 2>&1 \
    || { cat "$WORK.cmake.log"; echo "FUZZ build failed"; echo "0 passed, 1 failed"; exit 1; }
fi
# shellcheck disable=SC2086
if ! cmake --build "$BUILD" --target $TARGETS -j"$JOBS" >"$WORK.build.log" 2>&1; then
  tail -50 "$WORK.build.log"
  echo "FUZZ build failed"
  echo "0 passed, 1 failed"
  exit 1
fi

mkdir -p "$WORK"
/usr/bin/python3 "$ROOT/scripts/reliability/make_seeds.py" "$WORK" >/dev/null \
  || echo "warning: make_seeds.py failed; fuzzing from empty corpora" >&2

passed=0
failed=0
total_execs=0
total_new=0
total_known=0
total_regress_fail=0
KNOWN="$ROOT/tests/fuzz/regressions/KNOWN.txt"   # "<target>\t<input>\t<signature>" per kept crash
touch "$KNOWN"
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:symbolize=1:allocator_may_return_null=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
sig() { /usr/bin/python3 "$ROOT/scripts/reliability/fuzz_sig.py" "$1" "$ROOT"; }

for t in $TARGETS; do
  bin="$BUILD/tests/fuzz/$t"
  corpus="$WORK/corpus/$t"
  seeds="$WORK/seeds/$t"
  regress="$ROOT/tests/fuzz/regressions/$t"
  art="$WORK/artifacts/$t"
  mkdir -p "$corpus" "$seeds" "$art"
  rm -f "$art"/*

  # 1. Replay the kept crash inputs: a fixed bug must stay fixed.
  regress_fail=0
  if [ -d "$regress" ]; then
    for f in "$regress"/*; do
      [ -f "$f" ] || continue
      if ! timeout -s KILL 120 "$bin" -timeout=20 -rss_limit_mb=2048 -malloc_limit_mb=1024 "$f" \
           >"$WORK/$t.replay.log" 2>&1; then
        regress_fail=$((regress_fail + 1))
        echo "  $t: regression $(basename "$f") still fails: $(sig "$WORK/$t.replay.log")" >&2
      fi
    done
  fi

  # 2. Fuzz for the time budget. A crash ends a libFuzzer run; a known one
  #    (same signature as a kept input) restarts it for the time left, so one
  #    known bug does not hide the next.
  execs=0; new=0; known=0; runs=0
  t_start=$(date +%s)
  while :; do
    left=$((SECONDS_PER_TARGET - ($(date +%s) - t_start)))
    [ "$left" -ge 2 ] || break
    [ "$runs" -lt 10 ] || break
    runs=$((runs + 1))
    log="$WORK/$t.$runs.log"
    timeout -s KILL $((left + 300)) "$bin" \
      -max_total_time="$left" -print_final_stats=1 -max_len="$(max_len "$t")" \
      -timeout=20 -rss_limit_mb=2048 -malloc_limit_mb=1024 -artifact_prefix="$art/" \
      "$corpus" "$seeds" >"$log" 2>&1
    rc=$?
    e=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | tail -1 | grep -o '[0-9]*$')
    execs=$((execs + ${e:-0}))
    [ "$rc" -eq 0 ] && break
    s=$(sig "$log")
    f=$(ls -t "$art"/crash-* "$art"/leak-* "$art"/timeout-* "$art"/oom-* 2>/dev/null | head -1)
    if grep -qF -- "	$s" "$KNOWN" 2>/dev/null; then
      known=$((known + 1))
      echo "  $t: known crash again: $s" >&2
    else
      new=$((new + 1))
      if [ -n "$f" ]; then
        mkdir -p "$regress"
        cp "$f" "$regress/"
        printf '%s\t%s\t%s\n' "$t" "$(basename "$f")" "$s" >>"$KNOWN"
        echo "  $t: NEW crash: $s" >&2
        echo "      input kept as tests/fuzz/regressions/$t/$(basename "$f")" >&2
        grep -m1 -A12 'ERROR: \|runtime error\|invariant violated\|what()' "$log" | cut -c1-220 | head -14 >&2
      else
        echo "  $t: fuzzer failed (rc $rc) without a crash input: $s (log $log)" >&2
      fi
    fi
    rm -f "$art"/*
  done
  ncorp=$(find "$corpus" -type f | wc -l)
  total_execs=$((total_execs + execs))
  total_new=$((total_new + new)); total_known=$((total_known + known))
  total_regress_fail=$((total_regress_fail + regress_fail))
  echo "FUZZ $t execs=$execs crashes=$((new + known)) new=$new known=$known regressions_failing=$regress_fail corpus=$ncorp"
  if [ $((new + known + regress_fail)) -ne 0 ]; then
    failed=$((failed + 1))
  else
    passed=$((passed + 1))
  fi
done
echo "FUZZ total execs=$total_execs new_crashes=$total_new known_crashes=$total_known regressions_failing=$total_regress_fail"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
