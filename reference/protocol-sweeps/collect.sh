#!/usr/bin/env bash
# Copy a finished protocol sweep into reference/protocol-sweeps/<name>/: its tables and state
# files, and every run's config, status and per-iteration metrics in runs.tar.xz (no
# checkpoints or TensorBoard files). Unpack with: tar xJf runs.tar.xz -C <name>
#   bash reference/protocol-sweeps/collect.sh <runs-folder>/cartpole cartpole
set -euo pipefail
src=$1; name=$2
dst=$(cd "$(dirname "$0")" && pwd)/$name
mkdir -p "$dst"
for f in sweep.json results.csv fit.csv fit_per_batch.csv best_lr.json untrained_floor.json \
         events.jsonl; do
  [ -e "$src/$f" ] && cp "$src/$f" "$dst/"
done
(cd "$src" && find runs -maxdepth 2 \( -name config.json -o -name status.json \
   -o -name metrics.jsonl \) -print0 | sort -z | tar --null -T - -cJf "$dst/runs.tar.xz")
echo "$dst: $(ls "$dst" | tr '\n' ' ')"
