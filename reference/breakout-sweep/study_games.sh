#!/bin/bash
# The cross-game study: CartPole, MinAtar-Breakout, MinAtar-SpaceInvaders, Breakout, digits,
# from runs stored elsewhere (demo at 9e18458, MinAtar study, Breakout sweep); pinned at 01e4fbc.
# Usage: ATARI=<atari-folder> CHECKOUT=<checkout pinned at 01e4fbc> [PY=python] \
#          bash study_games.sh [--report-only]
# ATARI holds demo-9e18458/ (the demo's runs), study-minatar/ and sweep-breakout/ (SWEEP
# overrides the latter); the study is written to $ATARI/study-games. scripts/study.py is the
# general form (rlscale compare).
set -u
ATARI=${ATARI:?set ATARI to the folder holding demo-9e18458, study-minatar and sweep-breakout}
CHECKOUT=${CHECKOUT:?set CHECKOUT to a checkout pinned at 01e4fbc}
SWEEP=${SWEEP:-$ATARI/sweep-breakout}
PY=${PY:-python}
cd "$ATARI"
export PYTHONPATH=$CHECKOUT OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
D=$ATARI/demo-9e18458; M=$ATARI/study-minatar
nice -n 5 "$PY" -c "import sys; from rl.cli import main; sys.exit(main())" \
  compare CartPole MinAtar-Breakout MinAtar-SpaceInvaders Breakout \
  --sweep-dir CartPole=$D/sweeps/CartPole --noise-dir CartPole=$D/noise/CartPole \
  --sweep-dir MinAtar-Breakout=$M/sweeps/MinAtar-Breakout \
  --noise-dir MinAtar-Breakout=$M/noise/MinAtar-Breakout \
  --noise-dir MinAtar-SpaceInvaders=$D/noise/MinAtar-SpaceInvaders \
  --sweep-dir Breakout=$SWEEP \
  --sweep-games none --noise-games none --parallel 2 --out "$ATARI/study-games" "$@"
