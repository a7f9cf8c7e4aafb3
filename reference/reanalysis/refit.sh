#!/usr/bin/env bash
# Issue #22 item 7: the committed critical-batch sweeps re-analysed under the new rules
# (profile intervals with lack of fit, bounds where the knee is not covered, leave-one-out,
# the untrained-play floor). The runs' directories were not kept, only their results.csv, so
# each refit reads a copy of it, beside the floor measured on the sweep's settings
# (`rlscale sweep ... --floor-only`: 200 games of the untrained network; trains nothing).
#   bash reference/reanalysis/refit.sh        (from the repository root, the venv active)
set -uo pipefail
here=reference/reanalysis
mkdir -p $here/breakout $here/minatar-breakout $here/cartpole
cp reference/breakout-sweep/results.csv $here/breakout/
cp reference/study-minatar/sweeps/MinAtar-Breakout/results.csv $here/minatar-breakout/
cp reference/study-demo/sweeps/CartPole/results.csv $here/cartpole/
# Floors (exit 1 where a target is refused: that is the point).
rlscale sweep reference/breakout-sweep/breakout-spec.toml --out $here/breakout --floor-only
rlscale sweep --env MinAtar-Breakout --preset atari --num-envs 4 --num-steps 128 --lrs 1e-3 \
  --targets 2.5,3.5,5,6.5 --train network=auto --out $here/minatar-breakout --floor-only
rlscale sweep --env CartPole --preset classic --num-envs 1 --num-steps 32 --lrs 1e-3 \
  --targets 50,75,100,150,200 --out $here/cartpole --floor-only
for name in breakout minatar-breakout cartpole; do
  COLUMNS=200 rlscale fit $here/$name --no-plots > $here/$name/fit.txt
done
