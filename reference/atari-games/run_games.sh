#!/usr/bin/env bash
# Issue #23 item 1: the noise scale of six Atari games (Breakout's parity run counts).
# One run per game, one after another, on one core: the reference Atari settings (8 x 128,
# lr 2.5e-4 annealed over the 1M agent-step budget, as in reference/breakout-parity), seed 1,
# B_simple every 2nd PPO iteration (8 environment groups of 128 agent steps).
# Run it from a checkout pinned at one commit, with that checkout's venv:
#   CAMPAIGN=<checkout pinned at one commit> RUNS=<runs folder> nice -n 10 bash run_games.sh
# Run it again after an interruption: finished games are skipped, a started one resumes
# from its newest checkpoint (at most 10 PPO iterations lost).
set -uo pipefail
CAMPAIGN=${CAMPAIGN:?checkout pinned at one commit}
RUNS=${RUNS:?folder for the run directories}
GAMES=${GAMES:-"SpaceInvaders Pong Qbert BeamRider Seaquest"}
RLSCALE="$CAMPAIGN/.venv/bin/rlscale"
mkdir -p "$RUNS/games"
echo "$(date -u +%FT%TZ) start commit=$(git -C "$CAMPAIGN" rev-parse HEAD) games=$GAMES" >> "$RUNS/games/events.log"
for game in $GAMES; do
  dir="$RUNS/games/$game-8x128-seed1"
  if [ -f "$dir/status.json" ] && grep -q '"finished"' "$dir/status.json"; then
    continue
  fi
  resume=()
  if [ -d "$dir/checkpoints" ] && [ -n "$(ls -A "$dir/checkpoints" 2>/dev/null)" ]; then
    resume=(--resume)
  elif [ -d "$dir" ]; then
    # Killed before its first checkpoint: nothing worth keeping (at most 10 iterations).
    mv "$dir" "$dir.nockpt.$(date +%s)"
  fi
  echo "$(date -u +%FT%TZ) $game ${resume[*]:-new}" >> "$RUNS/games/events.log"
  OMP_NUM_THREADS=1 "$RLSCALE" train --env "$game" --preset atari --num-envs 8 --num-steps 128 \
    --total-agent-steps 1M --seed 1 --gns-every 2 --torch-threads 1 --checkpoint-every 10 \
    --run-dir "$dir" --quiet "${resume[@]}"
  echo "$(date -u +%FT%TZ) $game exit=$?" >> "$RUNS/games/events.log"
done
echo "$(date -u +%FT%TZ) all done" >> "$RUNS/games/events.log"
