#!/bin/bash
# After the Breakout sweep finished: its tables at targets 2.5, 5, 7.5, 10 (trains nothing),
# then the cross-game study. Run from a checkout pinned at 60dfe32, with its venv:
#   ATARI=<atari-folder> CHECKOUT=<checkout pinned at 01e4fbc> bash finalize_breakout.sh CHECKOUT_60dfe32 SWEEP_DIR
# (ATARI and CHECKOUT are study_games.sh's)
set -e
checkout=${1:?a checkout pinned at 60dfe32}
sweep_dir=${2:?the Breakout sweep directory}
export PYTHONPATH=$checkout OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
nice -n 5 "$checkout/.venv/bin/python" -c "import sys; from rl.cli import main; sys.exit(main())" \
  sweep "$checkout/examples/sweeps/breakout.toml" --out "$sweep_dir" --parallel 2 --quiet
SWEEP=$sweep_dir bash "$(dirname "$0")/study_games.sh" --quiet
