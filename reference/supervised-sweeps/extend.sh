#!/usr/bin/env bash
# Second pass of the supervised sweeps (issue #29): the lr grids extended where `rlscale fit`
# found the best lr at a grid's edge (docs/sweeps.md: an extended grid chooses stage 2's lr
# again once its new runs have ended). Same pinned checkout and python as run.sh:
#
#   cd <checkout> && bash reference/supervised-sweeps/extend.sh <python>
#
# digits-mlp: lr0 0.8 and 1.6 added (best lr at the top at B = 1,024 for training loss 0.03,
# at 1,024-2,048 for 0.1, 64-2,048 for 0.3); digits-cnn: lr0 0.0125 and 0.4 added (top at
# 64 and 128, bottom at 2,048, for 0.3).
set -euo pipefail
PY=${1:-python}
HERE=$(cd "$(dirname "$0")/../.." && pwd)
cd "$HERE"
export PYTHONPATH="$HERE"
OUT=reference/supervised-sweeps
echo "extension started: $(date -u +%Y-%m-%dT%H:%M:%SZ) at $(git rev-parse HEAD)" >> "$OUT/machine.txt"
run() {  # task lrs
  echo "extend $1 (lrs $2) started: $(date -u +%Y-%m-%dT%H:%M:%SZ)" >> "$OUT/machine.txt"
  nice -n 10 "$PY" -m rl.cli sweep --out "$OUT/$1" --lrs "$2" > "$OUT/$1-extend.log" 2>&1 || true
  nice -n 10 "$PY" -m rl.cli fit "$OUT/$1" >> "$OUT/$1-extend.log" 2>&1 || true
  echo "extend $1 ended: $(date -u +%Y-%m-%dT%H:%M:%SZ)" >> "$OUT/machine.txt"
}
run digits-mlp 0.025,0.05,0.1,0.2,0.4,0.8,1.6
run digits-cnn 0.0125,0.025,0.05,0.1,0.2,0.4
