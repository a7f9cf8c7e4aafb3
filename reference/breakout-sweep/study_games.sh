#!/bin/bash
# The cross-game study: CartPole, MinAtar-Breakout, MinAtar-SpaceInvaders, Breakout, digits,
# from runs stored elsewhere (demo at 9e18458, MinAtar study, Breakout sweep); pinned at 01e4fbc.
# Usage: study_games.sh [--report-only]
cd /work/atari
export PYTHONPATH=/work/atari/src-01e4fbc OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
D=/work/atari/demo-9e18458; M=/work/atari/study-minatar
nice -n 5 /work/main/.venv/bin/python -c "import sys; from rl.cli import main; sys.exit(main())" \
  compare CartPole MinAtar-Breakout MinAtar-SpaceInvaders Breakout \
  --sweep-dir CartPole=$D/sweeps/CartPole --noise-dir CartPole=$D/noise/CartPole \
  --sweep-dir MinAtar-Breakout=$M/sweeps/MinAtar-Breakout \
  --noise-dir MinAtar-Breakout=$M/noise/MinAtar-Breakout \
  --noise-dir MinAtar-SpaceInvaders=$D/noise/MinAtar-SpaceInvaders \
  --sweep-dir Breakout=/work/atari/sweep-breakout \
  --sweep-games none --noise-games none --parallel 2 --out /work/atari/study-games "$@"
