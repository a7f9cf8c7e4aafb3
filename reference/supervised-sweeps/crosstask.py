"""RL critical batch sizes against the supervised sweeps, with the study's own functions.

    .venv/bin/python reference/supervised-sweeps/crosstask.py

Reads the RL fits committed in reference/reanalysis (CartPole, MinAtar-Breakout, Breakout:
their run directories were not kept, so no study can rebuild them) and the supervised rows of
reference/supervised-sweeps/study/results.csv (B_crit and B_simple of digits-mlp and
digits-cnn, made by `rlscale compare --report-only`). Each task's headline B_crit follows the
study's rule (the highest target with a measured B_crit, else the highest target's bound).
Writes ratios.csv (each RL task's B_crit over each supervised one's, rl.study.crosstask.
rl_over_supervised), b_crit_over_b_simple.csv (ratio_table) and crosstask.png
(plot_crosstask: RL circles, supervised squares, McCandlish et al.'s values hollow).

RL B_simple here is the fit table's (the mean of the sweep runs' run-averaged B_simple, made
before the warm-up rule and without an interval: reference/reanalysis/README.md).
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from rl.study.crosstask import (
    POINT_COLUMNS,
    cited_points,
    plot_crosstask,
    ratio_table,
    rl_over_supervised,
    study_points,
)
from rl.study.results import read_results_table

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
RL_FITS = {"CartPole": "cartpole", "MinAtar-Breakout": "minatar-breakout",
           "Breakout": "breakout"}
TERMS = ("total", "policy", "value")


def rl_points() -> pd.DataFrame:
    rows = []
    for task, folder in RL_FITS.items():
        f = pd.read_csv(ROOT / "reference" / "reanalysis" / folder / "fit.csv")
        ok = f[f["ok"].astype(bool)]
        bounds = f[f["bound"].astype(object).fillna("").astype(str) != ""]
        r = (ok if len(ok) else bounds).sort_values("target").iloc[-1]
        bound = "" if bool(r["ok"]) else str(r["bound"])
        for term in TERMS:
            rows.append(dict(task=task, kind="rl", term=term, target=float(r["target"]),
                             b_crit=math.nan if bound else float(r["b_crit"]),
                             b_crit_lo=float(r["b_crit_lo"]), b_crit_hi=float(r["b_crit_hi"]),
                             bound=bound, b_crit_bound=float(r["b_crit_bound"]),
                             b_simple=float(r[f"b_simple_{term}"]), b_simple_lo=math.nan,
                             b_simple_hi=math.nan))
    return pd.DataFrame(rows, columns=POINT_COLUMNS)


def main() -> None:
    study = read_results_table(HERE / "study" / "results.csv")
    supervised = study_points(study[study["kind"] == "supervised"])
    points = pd.concat([rl_points(), supervised], ignore_index=True)
    points.to_csv(HERE / "crosstask_points.csv", index=False)
    ratio_table(points).to_csv(HERE / "b_crit_over_b_simple.csv", index=False)
    ratios = rl_over_supervised(points)
    ratios.to_csv(HERE / "ratios.csv", index=False)
    plot_crosstask(points, cited_points(), HERE / "crosstask.png")
    pd.set_option("display.width", 200)
    print(points.to_string())
    print(ratios.to_string())


if __name__ == "__main__":
    main()
