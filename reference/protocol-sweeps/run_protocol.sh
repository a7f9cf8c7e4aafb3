#!/usr/bin/env bash
# The protocol sweeps of issue #22 item 5, one after another on one core, from a checkout
# pinned at one commit:
#   CHECKOUT=<pinned-checkout> RUNS=<runs-folder> nice -n 10 bash run_protocol.sh
# Reads the spec names ($SPECS/<name>.toml, copies of specs/) from $RUNS/queue.txt, one per line, again after
# each sweep, so games can be appended while it runs. A sweep whose $RUNS/<name>.done exists
# is skipped; an interrupted one continues (rlscale sweep resumes its runs).
set -uo pipefail
CHECKOUT=${CHECKOUT:?checkout pinned at one commit}
RUNS=${RUNS:?folder for the sweeps}
SPECS=${SPECS:-$RUNS/specs}   # copies of specs/*.toml as committed
log() { echo "$(date -u +%FT%TZ) $*" >> "$RUNS/events.log"; }
log "start commit=$(git -C "$CHECKOUT" rev-parse HEAD)"
while true; do
  next=""
  while read -r name; do
    [ -z "$name" ] && continue
    [ -e "$RUNS/$name.done" ] && continue
    next=$name; break
  done < "$RUNS/queue.txt"
  [ -z "$next" ] && break
  log "$next start"
  OMP_NUM_THREADS=1 "$CHECKOUT/.venv/bin/rlscale" sweep "$SPECS/$next.toml" --out "$RUNS/$next" --quiet
  rc=$?
  log "$next exit=$rc"
  if [ $rc -eq 0 ]; then touch "$RUNS/$next.done"; else log "$next stopped (rc $rc): queue halted"; break; fi
done
log "queue empty or halted"
