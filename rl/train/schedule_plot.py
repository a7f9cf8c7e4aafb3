"""The figure of an adaptive run's batch schedule: batch size and B_simple per iteration.

``plot_schedule`` draws it from a run directory into ``PLOT_FILE`` (docs/adaptive-batch.md).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from rl.runs.files import save_figure
from rl.runs.metrics import load_metrics
from rl.runs.record import peek_config

PLOT_FILE = "batch_schedule.png"


def plot_schedule(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Rollout batch size and B_simple against PPO iteration, as a png (returns its path).

    Top: the rollout batch (agent steps) and the schedule's target B*. Bottom (log scale): the
    smoothed B_simple the schedule follows and the single-iteration estimates of that term
    (positive ones; negative single estimates are normal and are not drawn).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # lazy: slow import, figures only
    from matplotlib.figure import Figure  # lazy: slow import, figures only

    run_dir = Path(run_dir)
    m = load_metrics(run_dir)
    term = (peek_config(run_dir) or {}).get("adaptive", {}).get("batch_term", "total")
    fig = Figure(figsize=(8, 6), layout="constrained")
    FigureCanvasAgg(fig)
    top, bottom = fig.subplots(2, 1, sharex=True)
    it = m["iteration"].to_numpy(float)
    top.step(it, m["rollout_batch_size"].to_numpy(float), where="pre", color="C0",
             label="rollout batch size B")
    if "adaptive/target_batch_size" in m:
        top.plot(it, pd.to_numeric(m["adaptive/target_batch_size"], errors="coerce"), "--",
                 color="C1", lw=1, label="target c sqrt(B_simple) (before bounds, rounding)")
    top.set_yscale("log")
    top.set_ylabel("agent steps per rollout")
    top.legend(fontsize=8)
    single = f"gns/{term}/b_simple"
    if single in m:
        y = pd.to_numeric(m[single], errors="coerce")
        keep = y > 0
        bottom.plot(it[keep.to_numpy()], y[keep], ".", color="0.6", ms=3,
                    label=f"single estimates ({term} loss)")
    if "adaptive/b_simple" in m:
        y = pd.to_numeric(m["adaptive/b_simple"], errors="coerce")
        keep = (y > 0).to_numpy()
        bottom.plot(it[keep], y[keep], color="C2", label="smoothed B_simple (schedule input)")
    bottom.set_yscale("log")
    bottom.set_xlabel("PPO iteration")
    bottom.set_ylabel("B_simple (agent steps)")
    bottom.legend(fontsize=8)
    fig.suptitle(f"{run_dir.name}: adaptive rollout batch, B ~ sqrt(B_simple)", fontsize=10)
    path = Path(out) if out is not None else run_dir / PLOT_FILE
    save_figure(fig, path, dpi=90)
    return path
