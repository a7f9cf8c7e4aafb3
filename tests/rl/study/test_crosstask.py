"""B_crit against B_simple across tasks: ratios, the prediction interval, the verdict, the
figure."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from rl.study.crosstask import (
    POINT_COLUMNS,
    RL_OVER_SUPERVISED,
    crosstask_rows,
    plot_crosstask,
    predict_ratio,
    ratio_table,
    rl_over_supervised,
    verdict,
)
from rl.study.results import finalize_table, result_row


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


# --------------------------------------------------------------------------------------
# Supervised tasks beside RL ones
# --------------------------------------------------------------------------------------


def _table(rows):
    return finalize_table([result_row(**r) for r in rows])


def _task_rows(task, kind, target, b_crit, lo, hi, b_simple, terms=("total",), note=""):
    rows = [dict(source="measured", kind=kind, task=task, quantity="b_crit", value=b_crit,
                 target=target, lo=lo, hi=hi, note=note or "measured")]
    for term in terms:
        rows.append(dict(source="measured", kind=kind, task=task, quantity="b_simple",
                         term=term, value=b_simple, lo=0.8 * b_simple, hi=1.25 * b_simple))
    return rows


def test_rl_over_supervised_combines_the_ends_and_bounds_give_bounds():
    p = points([
        dict(task="G", kind="rl", term="total", target=5, b_crit=8000, b_crit_lo=4000,
             b_crit_hi=16000, b_simple=1, b_simple_lo=1, b_simple_hi=1),
        dict(task="H", kind="rl", term="total", target=5, bound=">=", b_crit_bound=2000,
             b_simple=1, b_simple_lo=1, b_simple_hi=1),
        dict(task="S", kind="supervised", term="total", target=-0.03, b_crit=200,
             b_crit_lo=100, b_crit_hi=400, b_simple=1, b_simple_lo=1, b_simple_hi=1),
        dict(task="G", kind="rl", term="policy", target=5, b_crit=8000, b_crit_lo=4000,
             b_crit_hi=16000, b_simple=1, b_simple_lo=1, b_simple_hi=1),
    ])
    r = rl_over_supervised(p).set_index("rl")
    assert list(r.index) == ["G", "H"] and set(r["supervised"]) == {"S"}  # total term once
    assert r.loc["G", "ratio"] == 40 and (r.loc["G", "lo"], r.loc["G", "hi"]) == (10, 160)
    assert math.isnan(r.loc["H", "ratio"]) and r.loc["H", "rl_bound"] == ">="
    assert (r.loc["H", "lo"], r.loc["H", "hi"]) == (5, math.inf)  # a lower bound on the ratio


def test_rl_over_supervised_interval_covers_at_least_ninety_percent():
    # The interval covers the ratio whenever both 95% intervals cover their B_crit: at least
    # 90% by the union bound, whatever the dependence. For two independent log-normal
    # estimates (log sd s) with exact intervals x +- z s, the log of the interval is
    # (x - y) +- 2 z s around an estimate of sd sqrt(2) s: coverage P(|Z| <= sqrt(2) z) =
    # 0.9944. Over 1,000 draws the observed rate has sd sqrt(0.9944 x 0.0056 / 1000) =
    # 0.0024: allow 4 sd around 0.9944.
    rng = np.random.default_rng(1)
    n, z, sd = 1000, 1.959964, 0.3
    a = np.log(8000) + sd * rng.standard_normal(n)
    b = np.log(200) + sd * rng.standard_normal(n)
    covered = 0
    for x, y in zip(a, b, strict=True):
        p = points([dict(task="G", kind="rl", term="total", target=5, b_crit=math.exp(x),
                         b_crit_lo=math.exp(x - z * sd), b_crit_hi=math.exp(x + z * sd)),
                    dict(task="S", kind="supervised", term="total", target=-0.1,
                         b_crit=math.exp(y), b_crit_lo=math.exp(y - z * sd),
                         b_crit_hi=math.exp(y + z * sd))])
        r = rl_over_supervised(p).iloc[0]
        covered += r["lo"] <= 40 <= r["hi"]
    exact = 2 * stats.norm.cdf(math.sqrt(2) * z) - 1
    assert exact == pytest.approx(0.9944, abs=1e-4) and exact >= 0.90
    assert abs(covered / n - exact) < 4 * math.sqrt(exact * (1 - exact) / n)


def test_crosstask_rows_keep_the_prediction_to_rl_tasks():
    rows = []
    for task, ratio in (("A", 2.0), ("B", 4.0), ("C", 8.0)):
        rows += _task_rows(task, "rl", 5.0, 1000 * ratio, 500 * ratio, 2000 * ratio, 1000,
                           terms=("total", "policy", "value"))
    rows += _task_rows("digits-mlp", "supervised", -0.03, 300, 200, 450, 100)
    rows += _task_rows("digits (mlp)", "supervised", math.nan, math.nan, math.nan, math.nan,
                       127)[1:]  # the reference run: B_simple, no B_crit
    df = _table(rows)
    out = finalize_table(crosstask_rows(df))
    ratios = out[out["quantity"] == "b_crit_over_b_simple"]
    sup = ratios[ratios["task"] == "digits-mlp"].iloc[0]
    assert sup["kind"] == "supervised" and sup["value"] == 3.0 and sup["term"] == "total"
    assert "training loss 0.03" in sup["note"]
    assert "digits (mlp)" not in set(ratios["task"])
    pred = out[(out["quantity"] == "ratio_prediction") & (out["term"] == "total")].iloc[0]
    assert pred["n"] == 3 and "digits-mlp" not in pred["note"]  # RL tasks only
    assert pred["value"] == pytest.approx(4.0)  # geometric mean of 2, 4, 8
    vs = out[out["quantity"] == RL_OVER_SUPERVISED].set_index("task")
    assert list(vs.index) == ["A", "B", "C"] and set(vs["term"]) == {"digits-mlp"}
    # (the table rounds to 4 significant digits)
    assert vs.loc["A", "value"] == pytest.approx(2000 / 300, rel=1e-3)
    assert (vs.loc["A", "lo"], vs.loc["A", "hi"]) == pytest.approx((1000 / 450, 4000 / 200),
                                                                   rel=1e-3)
    assert "coverage >= 90%" in vs.loc["A", "note"]
