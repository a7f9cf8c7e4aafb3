#!/usr/bin/env bash
# Issue #23 item 1: keep one finished game run of run_games.sh in the repository, with its
# noise-scale tables. The per-iteration metrics go in compressed (xz), with config.json and
# status.json, so that anyone can recompute every number; checkpoints and TensorBoard
# events stay out (they are large and rebuilt by training).
#   bash reference/atari-games/collect.sh RUNS/games/SpaceInvaders-8x128-seed1
set -euo pipefail
src=${1:?a finished run directory of run_games.sh}
here=$(cd "$(dirname "$0")" && pwd)
name=$(basename "$src")
grep -q '"finished"' "$src/status.json" || { echo "error: $src is not finished" >&2; exit 2; }
dst="$here/$name"
mkdir -p "$dst"
cp "$src/config.json" "$src/status.json" "$dst/"
xz -9 -c "$src/metrics.jsonl" > "$dst/metrics.jsonl.xz"
# The noise scale by segment and by bin of the smoothed return, from the same metrics.
rlscale gns run "$src" --out "$dst/gns"
# ... and over the whole run (one segment, one bin): the run-averaged B_simple.
rlscale gns run "$src" --segments 1 --return-bins 1 --out "$dst/gns-whole-run"
rm -f "$dst/gns-whole-run/"*.png  # one point each: nothing to see
echo "kept $src in $dst"
