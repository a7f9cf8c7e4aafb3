#!/usr/bin/env bash
# Issue #22 item 1: the checkpoint-vs-training question, like for like. One Breakout policy
# (the reference settings, 8 x 128, seed 1, checkpoint at PPO iteration 50 = 51,200 agent
# steps, return 3.0, near the phase of the earlier gap at 40,960) measured three ways with the same number of samples
# (393,216 agent steps per geometry), groups always split by environment:
#   train  8 envs x 128 steps, 8 groups of 1 env   (the training geometry), 384 rollouts
#   wide   256 envs x 128 steps, 8 groups of 32 envs (same steps per env), 12 rollouts
#   big    256 envs x 256 steps, 8 groups of 32 envs (the earlier checkpoint geometry), 6
# Resumable: run again after an interruption.
#   CHECKOUT=<checkout pinned at one commit> OUT=<output folder> nice -n 10 bash run.sh
set -uo pipefail
CHECKOUT=${CHECKOUT:?pinned checkout}; OUT=${OUT:?output folder}
R="$CHECKOUT/.venv/bin/rlscale"
export OMP_NUM_THREADS=1
mkdir -p "$OUT"
run="$OUT/breakout-seed1"
if [ ! -e "$OUT/ckpt50/ckpt_00000050.pt" ] && [ ! -e "$run/checkpoints/ckpt_00000050.pt" ]; then
  # The budget (1M) sets the lr annealing as in the parity run; stop once iteration 50 is saved.
  args=(train --env Breakout --preset atari --num-envs 8 --num-steps 128 --total-agent-steps 1M
        --seed 1 --gns-every 1 --checkpoint-every 10 --torch-threads 1 --run-dir "$run" --quiet)
  [ -d "$run/checkpoints" ] && args+=(--resume)
  "$R" "${args[@]}" &
  pid=$!
  while kill -0 $pid 2>/dev/null; do
    n=$(wc -l < "$run/metrics.jsonl" 2>/dev/null || echo 0)
    [ "$n" -ge 51 ] && { kill -TERM $pid; wait $pid; break; }  # (a background job ignores SIGINT)
    sleep 5
  done
fi
mkdir -p "$OUT/ckpt50"
[ -e "$OUT/ckpt50/ckpt_00000050.pt" ] || cp "$run/checkpoints/ckpt_00000050.pt" "$OUT/ckpt50/"
measure() {  # name envs steps repeats
  "$R" gns checkpoints "$run" --checkpoint-dir "$OUT/ckpt50" --num-envs "$2" --num-steps "$3" \
    --groups 8 --repeats "$4" --torch-threads 1 --out "$OUT/$1" --quiet
}
measure train 8 128 384
measure wide 256 128 12
measure big 256 256 6
echo "$(date -u +%FT%TZ) done" >> "$OUT/done"
