#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine and runs every test:
#   1. the unit tests and the end-to-end mount test (-Wall -Wextra -Werror build),
#   2. the unit tests again under ASan+UBSan,
#   3. the reliability suite in CI mode: kill -9 crash loop, libFuzzer on
#      every parser for 15 s each (clang tree of the fuzzed libraries only:
#      about 3 minutes with the fuzz runs), hostile inputs, bit-rot (POSIX
#      parity, permissions, load and daemon death already ran as e2e tests
#      in 1.),
#   4. the benchmark in --quick mode (completes and reads back bit-exactly;
#      no timing is asserted).
# Needs root for apt-get (or sudo) and /dev/fuse.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --bench  # the quick benchmark at the end compares against borg, restic …
export CCACHE_DIR=${CCACHE_DIR:-$HOME/.cache/ccache}

echo "== build (warnings are errors)"
BUILD_DIR=build bash scripts/build.sh -DLFS_WERROR=ON
echo "== unit + end-to-end tests"
(cd build && ctest --output-on-failure -j2 -LE e2e && ctest --output-on-failure -L e2e)

echo "== unit tests under ASan+UBSan"
BUILD_DIR=build-asan BUILD_TYPE=Debug bash scripts/build.sh -DLFS_SANITIZE=ON -DLFS_WERROR=ON
(cd build-asan && ASAN_OPTIONS=detect_leaks=1 ctest --output-on-failure -j2 -LE e2e)

echo "== reliability suite, CI mode"
bash scripts/reliability.sh --ci --skip posix,perms,load,death --lineagefs build/cli/lineagefs

if [[ -f scripts/bench/run.sh && "${LFS_SKIP_BENCH:-0}" != 1 ]]; then
  echo "== benchmark, quick mode"
  bash scripts/bench/run.sh --quick
fi
echo "all tests passed"
