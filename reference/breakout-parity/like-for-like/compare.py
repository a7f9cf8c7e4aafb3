"""Checkpoint against training, like for like (issue #22 item 1); writes compare.csv.

One Breakout run (8 x 128, seed 1, B_simple at every iteration) and its checkpoint at PPO
iteration 50, measured again at the training geometry (8 envs x 128 steps, 8 groups of one
environment) on 384 fresh rollouts. Both measure the same two-batch estimates |G|^2 and
tr(Sigma) per rollout, so they can be compared per estimate, not only as ratios:

- the in-training estimate made at the checkpoint's own parameters (iteration 51 measures
  before its update, i.e. at the weights saved after iteration 50) against the spread of
  the 384 checkpoint estimates (its quantile among them);
- the mean of the in-training estimates over windows of iterations against the checkpoint's
  mean, as a z statistic from the two standard errors (the window's from its own spread,
  since the per-estimate noise grows with tr(Sigma)).

Run from this folder: python compare.py
"""
import json
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).parent
WINDOWS = [(11, 30), (31, 45), (46, 55), (56, 60)]  # after the 10-iteration warm-up
CHECKPOINT_ITERATION = 50


def main() -> None:
    metrics = pd.DataFrame(json.loads(line) for line in open(HERE / "run.metrics.jsonl"))
    repeats = pd.read_csv(HERE / "checkpoint50-train-geometry.repeats.csv")
    rows = []
    for term in ("total", "policy", "value"):
        ckpt = repeats[repeats.term == term]
        n = len(ckpt)
        sd_g2, sd_tr = ckpt.g2.std(), ckpt.trace_sigma.std()
        same = metrics[metrics.iteration == CHECKPOINT_ITERATION + 1].iloc[0]
        rows.append({
            "term": term, "what": "checkpoint, 384 rollouts", "iterations": "50",
            "estimates": n, "mean_g2": ckpt.g2.mean(), "sem_g2": sd_g2 / np.sqrt(n),
            "mean_trace_sigma": ckpt.trace_sigma.mean(), "sem_trace_sigma": sd_tr / np.sqrt(n),
            "z_g2": 0.0, "z_trace_sigma": 0.0, "quantile_g2": np.nan,
            "return_recent": same["return_recent"],
        })
        g2_same = same[f"gns/{term}/g2"]
        rows.append({
            "term": term, "what": "in training at the same weights", "iterations": "51",
            "estimates": 1, "mean_g2": g2_same, "sem_g2": sd_g2,
            "mean_trace_sigma": same[f"gns/{term}/trace_sigma"], "sem_trace_sigma": sd_tr,
            "z_g2": (g2_same - ckpt.g2.mean()) / sd_g2,
            "z_trace_sigma": (same[f"gns/{term}/trace_sigma"] - ckpt.trace_sigma.mean()) / sd_tr,
            "quantile_g2": float((ckpt.g2 < g2_same).mean()),
            "return_recent": same["return_recent"],
        })
        for lo, hi in WINDOWS:
            window = metrics[(metrics.iteration >= lo) & (metrics.iteration <= hi)]
            k = len(window)
            g2, tr = window[f"gns/{term}/g2"], window[f"gns/{term}/trace_sigma"]
            # The window's own spread: the per-estimate noise grows with tr(Sigma).
            sem_g2, sem_tr = g2.std() / np.sqrt(k), tr.std() / np.sqrt(k)
            rows.append({
                "term": term, "what": "in training, window mean", "iterations": f"{lo}-{hi}",
                "estimates": k, "mean_g2": g2.mean(), "sem_g2": sem_g2,
                "mean_trace_sigma": tr.mean(), "sem_trace_sigma": sem_tr,
                "z_g2": (g2.mean() - ckpt.g2.mean()) / np.hypot(sem_g2, sd_g2 / np.sqrt(n)),
                "z_trace_sigma": (tr.mean() - ckpt.trace_sigma.mean())
                / np.hypot(sem_tr, sd_tr / np.sqrt(n)),
                "quantile_g2": np.nan, "return_recent": window["return_recent"].mean(),
            })
    table = pd.DataFrame(rows)
    table.to_csv(HERE / "compare.csv", index=False, float_format="%.5g")
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(table.round(4).to_string(index=False))


if __name__ == "__main__":
    main()
