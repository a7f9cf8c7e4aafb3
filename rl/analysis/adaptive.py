"""Adaptive against fixed rollout batches: iterations and agent steps to a target.

``steps_to_target`` reads one run; ``compare_with_fixed`` puts adaptive runs
(``rlscale train --batch-schedule adaptive``, ``rl.train.batch_schedule``) next to the best fixed
batch of a sweep. See docs/adaptive-batch.md.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rl.analysis.fit import best_per_batch
from rl.measure.returns import first_reach
from rl.runs.metrics import load_metrics
from rl.runs.record import peek_config
from rl.sweeps.results import long_results, read_results


def steps_to_target(run_dir: str | Path, target: float) -> dict[str, Any]:
    """PPO iterations and agent steps at which a run's smoothed return first reached ``target``.

    Same rule as the sweep tables: the first row with ``return_recent >= target`` once
    ``return_window`` games have finished. NaN when never reached; ``best_return`` is the
    highest ``return_recent`` of the run. Also the rollout batch at the start, at the target
    and at most.
    """
    run_dir = Path(run_dir)
    m = load_metrics(run_dir)
    window = int((peek_config(run_dir) or {}).get("train", {}).get("return_window", 20))
    out: dict[str, Any] = dict(run=run_dir.name, iterations=math.nan, agent_steps=math.nan,
                               best_return=math.nan, batch_start=math.nan,
                               batch_at_target=math.nan, batch_max=math.nan)
    if m.empty or "return_recent" not in m:
        return out
    ret = pd.to_numeric(m["return_recent"], errors="coerce").to_numpy(float)
    batch = m["rollout_batch_size"].to_numpy(float)
    out.update(best_return=float(np.nanmax(ret)) if np.isfinite(ret).any() else math.nan,
               batch_start=float(batch[0]), batch_max=float(batch.max()))
    i = first_reach(m, target, window)
    if i is not None:
        out.update(iterations=float(m["iteration"].iloc[i]),
                   agent_steps=float(m["agent_steps"].iloc[i]), batch_at_target=float(batch[i]))
    return out


def _median_inf(values: Iterable[float]) -> float:
    v = np.array([x if math.isfinite(x) else math.inf for x in values], float)
    return float(np.median(v)) if v.size else math.nan


def compare_with_fixed(fixed: pd.DataFrame | str | Path, adaptive_runs: Sequence[str | Path],
                       targets: Iterable[float]) -> pd.DataFrame:
    """Iterations and agent steps to each target: adaptive runs next to the best fixed batch.

    ``fixed`` is a sweep's results table (``rl.sweeps`` columns) or its directory. For each
    target, the fixed-batch rows are the batch size with the fewest median PPO iterations and
    the one with the fewest median agent steps (each at its best lr,
    ``rl.analysis.fit.best_per_batch``:
    a strict majority of seeds must reach); the adaptive row takes the median over the given
    runs, a run that did not reach counting as never (inf). Columns: target, schedule,
    rollout_batch_size (fixed: B; adaptive: "start->at target (max)" medians), lr, runs,
    reached, iterations, agent_steps, best_return (highest return_recent, median over runs).
    Units: iterations are PPO iterations, agent_steps are agent steps.
    """

    table = read_results(fixed) if not isinstance(fixed, pd.DataFrame) else fixed
    settled = table[table["status"].isin(["finished", "failed"])]
    long = long_results(settled)
    rows = []
    for target in sorted(float(t) for t in targets):
        per_batch = pd.DataFrame()
        if not long.empty:
            mine = long[np.isclose(long["target"].astype(float), target)]
            if not mine.empty:
                per_batch, _ = best_per_batch(mine)
        reached = per_batch[per_batch["reached"]] if len(per_batch) else per_batch
        if len(reached):
            for label, key in (("fixed, fewest iterations", "s_median"),
                               ("fixed, fewest agent steps", "e_median")):
                best = reached.sort_values([key, "rollout_batch_size"]).iloc[0]
                b = int(best["rollout_batch_size"])
                runs = settled[(settled["rollout_batch_size"] == b)
                               & np.isclose(settled["lr"].astype(float), best["best_lr"])]
                rows.append(dict(
                    target=target, schedule=label, rollout_batch_size=str(b),
                    lr=float(best["best_lr"]), runs=int(best["n_seeds"]),
                    reached=int(best["n_reached"]), iterations=float(best["s_median"]),
                    agent_steps=float(best["e_median"]),
                    best_return=float(runs["final_return_recent"].astype(float).median()),
                ))
        else:
            rows.append(dict(target=target, schedule="fixed: no batch size reached",
                             rollout_batch_size="-", lr=math.nan,
                             runs=int(len(settled)), reached=0, iterations=math.nan,
                             agent_steps=math.nan, best_return=math.nan))
        got = [steps_to_target(r, target) for r in adaptive_runs]
        if got:
            lrs = {(peek_config(r) or {}).get("ppo", {}).get("learning_rate")
                   for r in adaptive_runs}
            def med(key: str, got: list[dict[str, Any]] = got) -> float:
                return float(np.nanmedian([g[key] for g in got]))

            rows.append(dict(
                target=target, schedule="adaptive",
                rollout_batch_size=f"{med('batch_start'):.0f}->"
                                   f"{_fmt_nan(np.nanmedian([g['batch_at_target'] for g in got]))}"
                                   f" (max {med('batch_max'):.0f})",
                lr=float(lrs.pop()) if len(lrs) == 1 else math.nan, runs=len(got),
                reached=int(sum(math.isfinite(g["iterations"]) for g in got)),
                iterations=_median_inf(g["iterations"] for g in got),
                agent_steps=_median_inf(g["agent_steps"] for g in got),
                best_return=med("best_return"),
            ))
    return pd.DataFrame(rows, columns=["target", "schedule", "rollout_batch_size", "lr", "runs",
                                       "reached", "iterations", "agent_steps", "best_return"])


def _fmt_nan(v: float) -> str:
    return "-" if not math.isfinite(v) else f"{v:.0f}"
