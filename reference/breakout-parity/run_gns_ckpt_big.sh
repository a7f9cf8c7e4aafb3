#!/bin/bash
# gns checkpoints at 256 x 256 = 65,536 agent steps per rollout (8x the 2026-12-04 check) on
# the first and last archived checkpoints of ours-seed1 (issue #12 item 4); pinned at 60dfe32; resumable
#   WORK=<folder with runs/parity-breakout/ours-seed1 and archive-PART> SRC=<checkout at 60dfe32> \
#   PY=<python with the dependencies> bash run_gns_ckpt_big.sh PART
part=$1
WORK=${WORK:?folder holding the run and its archived checkpoints}
SRC=${SRC:?checkout pinned at 60dfe32}
cd "$WORK"
export PYTHONPATH=$SRC OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
nice -n 5 "${PY:-python}" -c "import sys; from rl.cli import main; sys.exit(main())" \
  gns checkpoints runs/parity-breakout/ours-seed1 --checkpoint-dir "$WORK/archive-$part" \
  --num-envs 256 --num-steps 256 --groups 8 --repeats 6 --torch-threads 1 \
  --out "$WORK/gns-ckpt-big-$part" --quiet
