#!/usr/bin/env bash
# The prepared GPU check (one device call, under 10 minutes; see docs/learning-parity.md and
# RESULTS.md). On the lent machine, from the repository root, with the wheels of
# scripts/fetch_gpu_wheels.sh carried in .whl:
#     bash scripts/gpu_check.sh            # writes logs and tables under $OUT
# Here, to check the script itself on the CPU in a minute: DEVICE=cpu QUICK=1 OUT=/tmp/g bash scripts/gpu_check.sh
# It runs, in order, each step bounded in time so that later steps still run:
#   1. the GPU path of the trainer: Breakout 8x128 (ale-py backend: envpool is too large to
#      carry) for 200k agent steps, fp32, then a few iterations with --bf16 and --compile;
#   2. rlscale bench scaling on the device: end-to-end PPO against env-only stepping;
#   3. the Breakout critical-batch sweep (examples/sweeps/breakout.toml) until the time is up;
#      its folder comes back as a tarball to continue on any machine (rlscale sweep --out).
set -uo pipefail
DEVICE=${DEVICE:-cuda}
OUT=${OUT:?set OUT to a results folder}
mkdir -p "$OUT"
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD
fi
export PYTHONUNBUFFERED=1
RL="python3 -c 'import sys; from rl.cli import main; sys.exit(main())'"
if [ -n "${QUICK:-}" ]; then STEPS=4096; FEW=2048; SWEEP_S=40; BENCH="--num-envs 8 --iterations 1 --repeats 1"
else STEPS=200k; FEW=8192; SWEEP_S=300; BENCH="--num-envs 8,32,128 --iterations 2 --repeats 2"; fi
step() { echo "== $1"; shift; local t0=$SECONDS; "$@"; echo "== rc=$? in $((SECONDS - t0)) s"; }

{
  date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null
  lscpu | grep -E '^Model name|^CPU\(s\)'
  python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available())'
  git log -1 --format='commit %H' 2>/dev/null
} > "$OUT/machine.txt" 2>&1
cat "$OUT/machine.txt"

step "train fp32" timeout 150 bash -c "$RL train --env Breakout --backend ale --device $DEVICE \
  --total-agent-steps $STEPS --gns-every 1 --run-dir /tmp/gpu/fp32 --quiet" 2>&1 | tee "$OUT/train.log"
cp /tmp/gpu/fp32/metrics.jsonl "$OUT/train_fp32_metrics.jsonl" 2>/dev/null
for opt in bf16 compile; do
  [ "$DEVICE" = cpu ] && continue  # both are CUDA-only options
  step "train $opt" timeout 90 bash -c "$RL train --env Breakout --backend ale --device $DEVICE \
    --total-agent-steps $FEW --$opt --run-dir /tmp/gpu/$opt --quiet" 2>&1 | tee -a "$OUT/train.log"
done
step "bench scaling" timeout 120 bash -c "$RL bench scaling --envs Breakout --backend ale \
  --device $DEVICE $BENCH --out $OUT --quiet" 2>&1 | tee "$OUT/bench.log"
step "sweep" timeout "$SWEEP_S" bash -c "$RL sweep examples/sweeps/breakout.toml --parallel 4 \
  --train device=$DEVICE --train backend=ale --out /tmp/gpu/sweep --quiet" 2>&1 | tail -40 > "$OUT/sweep.log"
tar -czf "$OUT/sweep.tgz" -C /tmp/gpu sweep 2>/dev/null
ls -la "$OUT"
