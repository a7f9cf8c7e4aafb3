#!/usr/bin/env bash
# The prepared GPU check: one device call, at most about 7.5 minutes (each step has a limit).
# On the lent machine (it has torch and pytest), from the repository root, with the wheels of
# scripts/fetch_gpu_wheels.sh carried in .whl:
#     bash scripts/gpu_check.sh                 # writes at most 8 files under $OUT
# Dry run on the CPU at toy size (5 minutes on the 2-core development machine under load):
#     DEVICE=cpu QUICK=1 OUT=<results-folder> bash scripts/gpu_check.sh
# Steps, in order:
#   1. the GPU tests (pytest -m gpu: PPO on CUDA for CartPole and Breakout, bf16 autocast,
#      torch.compile, host-to-device copies, the noise scale on CUDA against the CPU's);
#   2. a few minutes of Breakout 8x128 (ale-py backend: envpool is too large to carry) with
#      the noise scale measured every iteration, and its per-segment table (rlscale gns run);
#   3. rlscale bench scaling on the device at 64..512 environments;
#   4. only with SWEEP_S set: the Breakout critical-batch sweep for that many seconds; its
#      folder comes back as a tarball to continue anywhere (rlscale sweep --out);
#   5. only with GAMES_S set: the six-game noise measurement of issue #23 (Pong, Breakout,
#      SpaceInvaders, Qbert, BeamRider, Seaquest at 8 x 128, the reference settings, seed 1,
#      B_simple every 2nd iteration, lr annealed over 1M agent steps), the six in parallel
#      for that many seconds; each run's metrics and checkpoints come back in games.tgz and
#      continue anywhere with `rlscale train ... --resume` (reference/atari-games/run_games.sh).
set -uo pipefail
DEVICE=${DEVICE:-cuda}
OUT=${OUT:?set OUT to a results folder}
SWEEP_S=${SWEEP_S:-0}
GAMES_S=${GAMES_S:-0}
mkdir -p "$OUT"
WORK=$(mktemp -d -t gpu_check.XXXX)
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$WORK/site" .whl/*.whl || exit 1
  export PYTHONPATH=$WORK/site:$PWD
else
  export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD
fi
export PYTHONUNBUFFERED=1
PY=${PY:-python3}
RL="$PY -c 'import sys; from rl.cli import main; sys.exit(main())'"
if [ -n "${QUICK:-}" ]; then
  TRAIN_STEPS=8192; TRAIN_S=120; NUM_ENVS=8,16; BENCH_STEPS=8; BENCH_S=120
else
  TRAIN_STEPS=300k; TRAIN_S=120; NUM_ENVS=64,128,256,512; BENCH_STEPS=32; BENCH_S=120
fi
LOG="$OUT/log.txt"
step() { echo "== $1" | tee -a "$LOG"; shift; local t0=$SECONDS
         "$@" >>"$LOG" 2>&1; local rc=$?
         echo "== rc=$rc in $((SECONDS - t0)) s" | tee -a "$LOG"; }

{
  date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null
  lscpu | grep -E '^Model name|^CPU\(s\)'
  $PY -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available())'
  git log -1 --format='commit %H' 2>/dev/null
} > "$OUT/machine.txt" 2>&1
cat "$OUT/machine.txt"

# 1. The GPU tests (on the CPU dry run they run on the CPU: RLSCALE_GPU_TEST_DEVICE).
step "gpu tests" timeout 180 env RLSCALE_GPU_TEST_DEVICE="$DEVICE" $PY -m pytest -q -m gpu \
  -p no:cacheprovider tests/rl/train/test_cuda.py tests/rl/measure/test_cuda_noise.py

# 2. Breakout with the noise scale every iteration; the run stops at its time limit, and the
#    metrics written so far are the result.
step "train Breakout (noise scale every iteration)" timeout "$TRAIN_S" bash -c "$RL train \
  --env Breakout --backend ale --device $DEVICE --num-envs 8 --num-steps 128 \
  --total-agent-steps $TRAIN_STEPS --gns-every 1 --run-dir $WORK/breakout --quiet"
cp "$WORK/breakout/metrics.jsonl" "$OUT/breakout_metrics.jsonl" 2>/dev/null
step "gns run" bash -c "$RL gns run $WORK/breakout --out $WORK/gns"
cp "$WORK"/gns/gns_segments.csv "$WORK"/gns/gns_segments.png "$OUT/" 2>/dev/null

# 3. End-to-end PPO against env-only stepping on the device.
step "bench scaling" timeout "$BENCH_S" bash -c "$RL bench scaling --envs Breakout --backend ale \
  --device $DEVICE --num-envs $NUM_ENVS --num-steps $BENCH_STEPS --iterations 2 --repeats 1 \
  --out $WORK/bench --quiet"
cp "$WORK"/bench/scaling.csv "$WORK"/bench/scaling.json "$OUT/" 2>/dev/null

# 4. Optional: the Breakout sweep.
if [ "$SWEEP_S" -gt 0 ]; then
  step "sweep" timeout "$SWEEP_S" bash -c "$RL sweep examples/sweeps/breakout.toml --parallel 4 \
    --train device=$DEVICE --train backend=ale --out $WORK/sweep --quiet"
  tar -czf "$OUT/sweep.tgz" -C "$WORK" sweep 2>/dev/null
fi
# 5. Optional: the six games' noise scale, in parallel, each stopped at the time limit.
if [ "$GAMES_S" -gt 0 ]; then
  for game in Pong Breakout SpaceInvaders Qbert BeamRider Seaquest; do
    timeout "$GAMES_S" bash -c "$RL train --env $game --backend ale --device $DEVICE \
      --num-envs 8 --num-steps 128 --total-agent-steps 1M --seed 1 --gns-every 2 \
      --checkpoint-every 10 --torch-threads 2 --run-dir $WORK/games/$game-8x128-seed1 \
      --quiet" >>"$LOG" 2>&1 &
  done
  wait
  echo "== six games: $(ls "$WORK"/games 2>/dev/null | wc -l) runs" | tee -a "$LOG"
  tar -czf "$OUT/games.tgz" -C "$WORK" games 2>/dev/null
fi
grep -E '[0-9]+ (passed|failed|error)' "$LOG" | tail -3  # the GPU tests' summary
ls -la "$OUT"
