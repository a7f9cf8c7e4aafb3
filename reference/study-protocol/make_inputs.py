"""Inputs of the protocol study that are not sweep directories already (#22 items 5-7):
  * the Breakout sweep of 2026-12-05, kept only as its results table: a sweep directory with
    its spec (sweep.json, from reference/breakout-sweep/breakout-spec.toml), results.csv and
    untrained-play floor (reference/reanalysis/breakout), no run directories;
  * Breakout's noise-scale run: our seed-1 parity run (8 x 128, 1M agent steps, B_simple every
    10th iteration; reference/breakout-parity/ours-seed1.*) placed as the one run of a sweep
    directory; `rlscale sweep` with that run's settings then finds it finished (run_study.sh).
    python reference/study-protocol/make_inputs.py OUT_DIR      (from the repository root)
"""
import shutil
import sys
from pathlib import Path

from rl.sweeps.spec import load_spec, plan_runs
from rl.sweeps.state import write_sweep_state

out = Path(sys.argv[1])
repo = Path(__file__).resolve().parents[2]

sweep = out / "stored-breakout"
sweep.mkdir(parents=True, exist_ok=True)
spec = load_spec(repo / "reference/breakout-sweep/breakout-spec.toml",
                 overrides={"out": str(sweep)})
write_sweep_state(spec, plan_runs(spec))
shutil.copy(repo / "reference/breakout-sweep/results.csv", sweep / "results.csv")
shutil.copy(repo / "reference/reanalysis/breakout/untrained_floor.json", sweep)
print("wrote", sweep)

run = out / "noise-breakout" / "runs" / "Breakout-b1024-n8x128-lr0.00025-s1"
run.mkdir(parents=True, exist_ok=True)
for name in ("config.json", "metrics.jsonl", "status.json"):
    shutil.copy(repo / f"reference/breakout-parity/ours-seed1.{name}", run / name)
shutil.copy(repo / "reference/reanalysis/breakout/untrained_floor.json", out / "noise-breakout")
print("wrote", run)
