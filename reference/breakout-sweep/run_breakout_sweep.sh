#!/bin/bash
# Breakout critical-batch sweep (issue #12 item 5), pinned at 21791d9 (3bc3c81 until 2026-12-05 03:47: runs up to b256 started there; training code identical, the noise-scale split differs), resumable: run again to continue
#   CHECKOUT=<checkout pinned at 21791d9> SWEEP=<sweep-folder> [PY=python] bash run_breakout_sweep.sh
# (made with SWEEP=<atari-folder>/sweep-breakout; scripts/sweep_fit.py is the general form)
set -u
CHECKOUT=${CHECKOUT:?set CHECKOUT to a checkout pinned at 21791d9}
SWEEP=${SWEEP:?set SWEEP to the sweep folder (created or continued)}
PY=${PY:-python}
export PYTHONPATH=$CHECKOUT OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
for try in 1 2 3; do
  "$PY" -c "import sys; from rl.cli import main; sys.exit(main())" \
    sweep "$CHECKOUT/examples/sweeps/breakout.toml" --out "$SWEEP" \
    --parallel 2 --quiet && break
  echo "try $try failed"; sleep 5
done
