#!/usr/bin/env bash
# Renders the lineage graph of a store to a PNG (Graphviz from Debian).
#   render_graph.sh STORE OUT.png [LINEAGEFS]
set -euo pipefail
STORE=$1
OUT=$2
LFS=${3:-$(dirname "$0")/../build/cli/lineagefs}
command -v dot >/dev/null || { echo "render_graph: needs graphviz (apt-get install graphviz)" >&2; exit 1; }
"$LFS" graph "$STORE" --format dot | dot -Tpng -Gdpi=80 -o "$OUT"
echo "wrote $OUT"
