#!/usr/bin/env bash
# Runs codec_bench and, on the very same bytes, the zstd CLI's own benchmark,
# so lineagefs's codecs can be compared with plain zstd levels 1-3.
# Builds nothing.
#
#   scripts/bench/codec_bench.sh [path/to/codec_bench] [extra codec_bench flags...]
set -euo pipefail

bench=${1:-build/scripts/bench/codec_bench}
shift || true
if [[ ! -x $bench ]]; then
  echo "codec_bench not found at $bench (build the codec_bench target first)" >&2
  exit 1
fi

data_dir=$(mktemp -d "${TMPDIR:-/tmp}/codec_bench.XXXXXX")
trap 'rm -rf "$data_dir"' EXIT

echo "== lineagefs codecs ($bench)"
"$bench" --dump "$data_dir" "$@"

echo
echo "== zstd CLI on the same bytes (one thread; -B cuts the file into independent chunks)"
zstd --version
for chunk in whole 256KiB 1MiB 4MiB; do
  block_flag=()
  [[ $chunk != whole ]] && block_flag=(-B"$chunk")
  for f in fp32 bf16; do
    echo "-- $f.bin, chunks: $chunk   (level, compressed bytes, ratio, compress, decompress)"
    # zstd -b redraws a progress line with \r; keep the final line per level.
    zstd -q -b1 -e3 -i2 "${block_flag[@]}" "$data_dir/$f.bin" 2>&1 | tr '\r' '\n' |
      grep -E '^ *-?[0-9]+ +[0-9]+ \(' || true
  done
done
