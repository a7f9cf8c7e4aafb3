#!/bin/bash
# After the Breakout sweep finished: its tables at targets 2.5, 5, 7.5, 10 (trains nothing),
# then the cross-game study. Pinned at 60dfe32.
set -e
cd /work/atari
export PYTHONPATH=/work/atari/src-60dfe32 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
nice -n 5 /work/main/.venv/bin/python -c "import sys; from rl.cli import main; sys.exit(main())" \
  sweep /work/atari/src-60dfe32/examples/sweeps/breakout.toml --out /work/atari/sweep-breakout \
  --parallel 2 --quiet
bash study_games.sh --quiet
