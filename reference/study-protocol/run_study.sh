#!/usr/bin/env bash
# The protocol study (#22 items 5-7, #23 item 4, #29): every task with its protocol sweep or
# stored sweep and its noise-scale runs, the supervised sweeps, the cross-task verdict.
# Trains nothing (--report-only): every run comes from the directories below.
#   RUNS=<runs-folder> bash reference/study-protocol/run_study.sh   (repository root)
set -euo pipefail
RUNS=${RUNS:?folder of the protocol sweeps and noise runs}
python reference/study-protocol/make_inputs.py "$RUNS"
# Breakout's noise run: the sweep finds the copied run finished (trains nothing).
rlscale sweep --env Breakout --num-envs 8 --num-steps 128 --lrs 2.5e-4 --seeds "1," \
  --budget 1M --targets 21 --train gns_every=10 --train torch_threads=1 --ppo anneal_lr=true \
  --out "$RUNS/noise-breakout" --quiet
args=(CartPole Acrobot MinAtar-Breakout MinAtar-SpaceInvaders MinAtar-Seaquest Breakout
  --sweep-dir "CartPole=$RUNS/cartpole" --noise-dir "CartPole=$RUNS/noise-cartpole"
  --sweep-dir "Acrobot=$RUNS/acrobot" --noise-dir "Acrobot=$RUNS/noise-acrobot"
  --sweep-dir "MinAtar-Breakout=$RUNS/minatar-breakout"
  --noise-dir "MinAtar-Breakout=$RUNS/noise-minatar-breakout"
  --noise-dir "MinAtar-SpaceInvaders=$RUNS/noise/MinAtar-SpaceInvaders"
  --noise-dir "MinAtar-Seaquest=$RUNS/noise/MinAtar-Seaquest"
  --sweep-dir "Breakout=$RUNS/stored-breakout" --noise-dir "Breakout=$RUNS/noise-breakout"
  --supervised-sweep-dir "digits-mlp=reference/supervised-sweeps/digits-mlp"
  --supervised-sweep-dir "digits-cnn=reference/supervised-sweeps/digits-cnn"
  --sweep-games none --noise-games none --no-supervised --report-only
  --out reference/study-protocol --quiet)
[ -e "$RUNS/minatar-spaceinvaders/sweep.json" ] && \
  args+=(--sweep-dir "MinAtar-SpaceInvaders=$RUNS/minatar-spaceinvaders")
rlscale compare "${args[@]}"
