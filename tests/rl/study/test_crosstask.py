"""B_crit against B_simple across tasks: ratios, the prediction interval, the verdict, the
figure."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from rl.study.crosstask import (
    POINT_COLUMNS,
    plot_crosstask,
    predict_ratio,
    ratio_table,
    verdict,
)


def points(rows):
    return pd.DataFrame([{**dict.fromkeys(POINT_COLUMNS, math.nan), "bound": "", **r}
                         for r in rows], columns=POINT_COLUMNS)


def test_ratio_interval_combines_the_two_intervals_and_bounds_stay_bounds():
    p = points([
        dict(task="A", term="total", target=5, b_crit=1000, b_crit_lo=500, b_crit_hi=2000,
             b_simple=250, b_simple_lo=200, b_simple_hi=400),
        dict(task="B", term="total", target=5, bound=">=", b_crit_bound=3000,
             b_simple=1000, b_simple_lo=800, b_simple_hi=1500),
        dict(task="C", term="total", target=5, b_crit=1000, b_crit_lo=500, b_crit_hi=2000,
             b_simple=-3, b_simple_lo=0, b_simple_hi=math.inf),
        dict(task="D", term="total", target=5, b_crit=1000, b_crit_lo=500, b_crit_hi=math.inf,
             b_simple=100, b_simple_lo=0, b_simple_hi=200),
    ])
    r = ratio_table(p).set_index("task")
    assert r.loc["A", "ratio"] == 4.0 and r.loc["A", "measured"]
    assert (r.loc["A", "lo"], r.loc["A", "hi"]) == (500 / 400, 2000 / 200)
    assert not r.loc["B", "measured"] and math.isnan(r.loc["B", "ratio"])
    assert r.loc["B", "ratio_bound"] == 3.0 and r.loc["B", "bound"] == ">="
    assert not r.loc["C", "measured"]  # B_simple not resolved above 0
    assert r.loc["D", "hi"] == math.inf and r.loc["D", "lo"] == 2.5


def test_prediction_interval_covers_a_new_task_at_its_nominal_rate():
    # Ground truth: log(B_crit / B_simple) of every task ~ N(mu, s^2). With n tasks the
    # interval mean +- t(n - 1) s_hat sqrt(1 + 1/n) is an exact prediction interval for a
    # new draw. 400 studies of 5 tasks at 90%: Binomial(400, 0.9), mean 360, sd 6; 3.5 sd
    # either side is [339, 381].
    rng = np.random.default_rng(0)
    covered = 0
    for _ in range(400):
        logs = 0.5 + 0.8 * rng.standard_normal(6)
        r = pd.DataFrame(dict(task=[f"t{i}" for i in range(5)], term="total",
                              ratio=np.exp(logs[:5]), measured=True, bound="",
                              ratio_bound=math.nan))
        pred = predict_ratio(r, "total", ci=0.9)
        covered += pred.lo <= math.exp(logs[5]) <= pred.hi
    assert 339 <= covered <= 381


def test_prediction_needs_two_tasks_and_checks_bounds():
    r = pd.DataFrame(dict(task=["a", "b", "c", "d"], term="value", ratio=[2.0, 8.0, math.nan,
                                                                           math.nan],
                          measured=[True, True, False, False], bound=["", "", ">=", "<="],
                          ratio_bound=[math.nan, math.nan, 1e6, 1e-6]))
    pred = predict_ratio(r, "value")
    assert pred.n_tasks == 2 and pred.ratio == pytest.approx(4.0)
    assert pred.spread == pytest.approx(math.log(4) / math.sqrt(2))
    # A lower bound of 1e6 lies above the interval: it disagrees; an upper bound of 1e-6
    # lies below it: it disagrees too.
    assert pred.bounds_consistent == "0 of 2"
    one = predict_ratio(r.iloc[[0]], "value")
    assert one.n_tasks == 1 and math.isnan(one.lo)
    assert predict_ratio(r, "policy").n_tasks == 0


def test_verdict_names_the_term_with_the_smallest_spread():
    rows = []
    for term, logs in (("total", [0.0, 1.0, 2.0]), ("value", [1.0, 1.1, 0.9]),
                       ("policy", [3.0, 1.0, -1.0])):
        rows += [dict(task=f"t{i}", term=term, ratio=math.exp(v), measured=True, bound="",
                      ratio_bound=math.nan) for i, v in enumerate(logs)]
    r = pd.DataFrame(rows)
    preds = [predict_ratio(r, t) for t in ("total", "policy", "value")]
    text = verdict(preds)
    assert "the value-loss B_simple predicts B_crit best" in text
    assert "r in [" in text and "t0, t1, t2" in text
    assert "No verdict" in verdict(preds, min_tasks=4)


def test_figure_draws_points_bounds_and_cited_values(tmp_path):
    p = points([
        dict(task="A", term=t, target=5, b_crit=1000, b_crit_lo=500, b_crit_hi=math.inf,
             b_simple=250, b_simple_lo=200, b_simple_hi=400) for t in ("total", "value")
    ] + [dict(task="B", term="total", target=5, bound=">=", b_crit_bound=3000, b_simple=1000,
              b_simple_lo=800, b_simple_hi=1500)])
    cited = pd.DataFrame([dict(task="MNIST", b_simple=900, b_crit=200),
                          dict(task="Atari", b_simple=(1000, 20000), b_crit=(400, 8000))])
    path = plot_crosstask(p, cited, tmp_path / "x.png", terms=("total", "value"))
    assert path.exists() and path.stat().st_size > 10_000
