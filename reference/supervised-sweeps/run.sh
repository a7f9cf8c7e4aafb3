#!/usr/bin/env bash
# The supervised critical-batch sweeps of issue #29, from a checkout pinned at one commit.
#
#   git worktree add --detach <checkout> <commit>
#   cd <checkout> && bash reference/supervised-sweeps/run.sh <python>
#
# Runs `rlscale sweep` (both stages) and `rlscale fit` for digits-mlp and digits-cnn with the
# given python and the pinned checkout's code (PYTHONPATH, checked below), niced, one run at a
# time on one torch thread; writes machine.txt with the commit, CPU and dates.
set -euo pipefail
PY=${1:-python}
HERE=$(cd "$(dirname "$0")/../.." && pwd)
cd "$HERE"
export PYTHONPATH="$HERE"
OUT=reference/supervised-sweeps
where=$("$PY" -c 'import rl, agents, envs; print(rl.__file__, agents.__file__, envs.__file__)')
case "$where" in
  "$HERE"/rl/*" $HERE"/agents/*" $HERE"/envs/*) ;;
  *) echo "imports do not come from $HERE: $where" >&2; exit 1 ;;
esac
{
  echo "commit: $(git rev-parse HEAD)"
  echo "dirty files: $(git status --porcelain --untracked-files=no | wc -l)"
  echo "machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) CPUs, no GPU"
  echo "python: $("$PY" -c 'import sys, torch; print(sys.version.split()[0], "torch", torch.__version__)')"
  echo "imports: $where"
  echo "started: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
} > "$OUT/machine.txt"
for task in digits-mlp digits-cnn; do
  echo "sweep $task started: $(date -u +%Y-%m-%dT%H:%M:%SZ)" >> "$OUT/machine.txt"
  nice -n 10 "$PY" -m rl.cli sweep "$OUT/$task.toml" > "$OUT/$task.log" 2>&1 || true
  nice -n 10 "$PY" -m rl.cli fit "$OUT/$task" >> "$OUT/$task.log" 2>&1 || true
  echo "sweep $task ended: $(date -u +%Y-%m-%dT%H:%M:%SZ)" >> "$OUT/machine.txt"
done
