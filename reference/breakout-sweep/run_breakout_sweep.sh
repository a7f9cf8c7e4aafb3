#!/bin/bash
# Breakout critical-batch sweep (issue #12 item 5), pinned at 21791d9 (3bc3c81 until 2026-12-05 03:47: runs up to b256 started there; training code identical, the noise-scale split differs), resumable: run again to continue
cd /work/atari
export PYTHONPATH=/work/atari/src-21791d9 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
for try in 1 2 3; do
  /work/main/.venv/bin/python -c "import sys; from rl.cli import main; sys.exit(main())" \
    sweep /work/atari/src-21791d9/examples/sweeps/breakout.toml --out /work/atari/sweep-breakout \
    --parallel 2 --quiet && break
  echo "try $try failed"; sleep 5
done
