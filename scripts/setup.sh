#!/usr/bin/env bash
# Installs everything the build, the tests, the demo and the benchmarks need.
# Idempotent: re-running only installs what is missing. Debian 12 packages only.
set -euo pipefail

BUILD_PKGS=(build-essential cmake pkg-config ccache git
  libfuse3-dev fuse3 libtorch-dev liblmdb-dev lmdb-utils libxxhash-dev libzstd-dev
  libgtest-dev libgmock-dev libbenchmark-dev libcli11-dev nlohmann-json3-dev libfmt-dev
  clang clang-format)
TEST_PKGS=(python3 python3-torch python3-numpy rsync attr zstd util-linux procps)
BENCH_PKGS=(borgbackup python3-llfuse restic squashfs-tools squashfuse git-lfs graphviz python3-matplotlib hyperfine time)

want=("${BUILD_PKGS[@]}" "${TEST_PKGS[@]}")
if [[ "${1:-}" == "--bench" || "${LINEAGEFS_SETUP_BENCH:-0}" == 1 ]]; then
  want+=("${BENCH_PKGS[@]}")
fi

missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  SUDO=""
  [[ $(id -u) -ne 0 ]] && SUDO=sudo
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
