#!/bin/bash
# gns checkpoints at 256 x 256 = 65,536 agent steps per rollout (8x the 2026-12-04 check) on
# the first and last archived checkpoints of ours-seed1 (issue #12 item 4); pinned at 60dfe32; resumable
part=$1
cd /work/atari
export PYTHONPATH=/work/atari/src-60dfe32 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
nice -n 5 /work/main/.venv/bin/python -c "import sys; from rl.cli import main; sys.exit(main())" \
  gns checkpoints runs/parity-breakout/ours-seed1 --checkpoint-dir /work/atari/archive-$part \
  --num-envs 256 --num-steps 256 --groups 8 --repeats 6 --torch-threads 1 \
  --out /work/atari/gns-ckpt-big-$part --quiet
