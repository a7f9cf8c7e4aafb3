"""B_crit against B_simple across tasks: the ratio per task and loss term, which term
predicts B_crit best, as a prediction for a task outside the study, the ratio of each RL
task's B_crit to each supervised one's, and the figure.

See docs/study.md ("Across tasks").
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from rl.measure.ppo_noise import TERMS
from rl.runs.files import save_figure
from rl.study.headline import b_crit_bound, headline_b_crit, headline_b_simple
from rl.study.report import format_ends
from rl.study.results import ACROSS_TASKS, result_row
from rl.study.settings import CITED

__all__ = [
    "POINT_COLUMNS",
    "RL_OVER_SUPERVISED",
    "cited_points",
    "crosstask_rows",
    "rl_over_supervised",
    "study_points",
    "PREDICTION_CI",
    "RatioPrediction",
    "plot_crosstask",
    "predict_ratio",
    "ratio_table",
    "verdict",
]

POINT_COLUMNS = ["task", "kind", "term", "target", "b_crit", "b_crit_lo", "b_crit_hi", "bound",
                 "b_crit_bound", "b_simple", "b_simple_lo", "b_simple_hi"]
"""One row per (task, loss term): B_crit at the task's headline target (a measured number
with its interval, or a bound: ``bound`` '>=' / '<=' and ``b_crit_bound``) and the task's
run-averaged B_simple of that term with its interval; both in agent steps (supervised
tasks, kind "supervised": examples, the total loss only)."""

RL_OVER_SUPERVISED = "b_crit_over_supervised"
"""Results-table quantity: an RL task's B_crit (its ``task``) over a supervised task's (its
``term``), each at its headline target (``rl_over_supervised``)."""

PREDICTION_CI = 0.9
"""Level of the prediction interval of B_crit / B_simple for a new task."""


def _finite_positive(x: Any) -> bool:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return False
    return math.isfinite(v) and v > 0


def ratio_table(points: pd.DataFrame) -> pd.DataFrame:
    """B_crit / B_simple per (task, term), with an interval and whether it is measured.

    ratio = B_crit / B_simple; its interval combines the two intervals at their ends
    (lo = B_crit_lo / B_simple_hi, hi = B_crit_hi / B_simple_lo), which covers at least
    the product of their levels when they are independent. ``measured`` is True when
    B_crit is a measured number and B_simple finite and positive; for a bound, ``ratio``
    is NaN and ``ratio_bound`` (with ``bound``) says what the bound implies.
    """
    rows = []
    for _, p in points.iterrows():
        row: dict[str, Any] = dict(task=p["task"], kind=p.get("kind", "rl"), term=p["term"],
                                   target=p["target"], bound=str(p.get("bound", "") or ""),
                                   ratio=math.nan, lo=math.nan, hi=math.nan,
                                   ratio_bound=math.nan, measured=False)
        bs = p["b_simple"]
        if _finite_positive(bs):
            if _finite_positive(p["b_crit"]) and not row["bound"]:
                bs_lo, bs_hi = float(p["b_simple_lo"]), float(p["b_simple_hi"])
                row.update(ratio=float(p["b_crit"]) / float(bs), measured=True)
                if not any(math.isnan(v) for v in (bs_lo, bs_hi, float(p["b_crit_lo"]),
                                                   float(p["b_crit_hi"]))):
                    # An interval missing on either side leaves the ratio's unknown (NaN).
                    row.update(lo=float(p["b_crit_lo"]) / bs_hi if bs_hi > 0 else 0.0,
                               hi=float(p["b_crit_hi"]) / bs_lo if bs_lo > 0 else math.inf)
            elif row["bound"] and _finite_positive(p["b_crit_bound"]):
                row["ratio_bound"] = float(p["b_crit_bound"]) / float(bs)
        rows.append(row)
    return pd.DataFrame(rows, columns=["task", "kind", "term", "target", "ratio", "lo", "hi",
                                       "bound", "ratio_bound", "measured"])


@dataclass(frozen=True)
class RatioPrediction:
    """How well one loss term's B_simple predicts B_crit across tasks (``predict_ratio``).

    Attributes:
        term: the loss term.
        n_tasks: tasks with a measured B_crit and B_simple of this term.
        ratio: geometric mean of B_crit / B_simple over them.
        spread: sample sd of log(B_crit / B_simple) (natural log; NaN below 2 tasks).
        lo, hi: prediction interval at level ``ci`` for the ratio of a task outside the
            study: exp(mean +- t(ci; n - 1) spread sqrt(1 + 1/n)), valid if the tasks'
            log ratios are a normal sample (NaN below 2 tasks).
        ci: its level.
        tasks: the tasks used.
        bounds_consistent: the study's bounded tasks whose bound agrees with [lo, hi]
            (a lower bound below hi, an upper bound above lo) over the bounded tasks.
    """

    term: str
    n_tasks: int
    ratio: float
    spread: float
    lo: float
    hi: float
    ci: float
    tasks: tuple[str, ...]
    bounds_consistent: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def predict_ratio(ratios: pd.DataFrame, term: str, ci: float = PREDICTION_CI) -> RatioPrediction:
    """The ratio B_crit / B_simple of ``term`` across the measured tasks of ``ratios``
    (``ratio_table``), and its prediction interval for a new task."""
    mine = ratios[(ratios["term"] == term) & ratios["measured"].astype(bool)]
    logs = np.log(mine["ratio"].to_numpy(float))
    n = int(logs.size)
    tasks = tuple(mine["task"])
    if n == 0:
        return RatioPrediction(term, 0, math.nan, math.nan, math.nan, math.nan, ci, tasks)
    mean = float(logs.mean())
    if n < 2:
        return RatioPrediction(term, n, math.exp(mean), math.nan, math.nan, math.nan, ci, tasks)
    sd = float(logs.std(ddof=1))
    half = float(stats.t.ppf((1 + ci) / 2, n - 1)) * sd * math.sqrt(1 + 1 / n)
    lo, hi = math.exp(mean - half), math.exp(mean + half)
    bounded = ratios[(ratios["term"] == term) & ratios["ratio_bound"].notna()]
    agree = sum((b["bound"] == ">=" and b["ratio_bound"] <= hi)
                or (b["bound"] == "<=" and b["ratio_bound"] >= lo)
                for _, b in bounded.iterrows())
    return RatioPrediction(term, n, math.exp(mean), sd, lo, hi, ci, tasks,
                           f"{agree} of {len(bounded)}" if len(bounded) else "")


def verdict(predictions: Sequence[RatioPrediction], *, min_tasks: int = 3) -> str:
    """Which term predicts B_crit best (the smallest spread of log B_crit / B_simple among
    terms measured on at least ``min_tasks`` tasks), in one plain statement with numbers."""
    usable = [p for p in predictions if p.n_tasks >= max(min_tasks, 2) and
              math.isfinite(p.spread)]
    if not usable:
        counts = ", ".join(f"{p.term}: {p.n_tasks}" for p in predictions)
        return (f"No verdict yet: fewer than {min_tasks} tasks have both a measured B_crit "
                f"and a B_simple of one term ({counts}); bounds do not count.")
    best = min(usable, key=lambda p: p.spread)
    others = "; ".join(
        f"{p.term} loss: ratio {p.ratio:.3g}, spread x{math.exp(p.spread):.2g} over "
        f"{p.n_tasks} tasks" for p in usable if p is not best)
    bounds = (f" Of the bounded tasks, {best.bounds_consistent} agree with it."
              if best.bounds_consistent else "")
    return (f"Across {best.n_tasks} tasks ({', '.join(best.tasks)}), the {best.term}-loss "
            f"B_simple predicts B_crit best: B_crit / B_simple has geometric mean "
            f"{best.ratio:.3g} and spreads by a factor {math.exp(best.spread):.2g} (1 sd of "
            f"the log). Prediction for a task outside the study: B_crit = r x B_simple "
            f"({best.term} loss) with r in [{format_ends(best.lo, best.hi)}] "
            f"({best.ci:.0%} prediction interval, log-normal across tasks)." + bounds
            + (f" Other terms: {others}." if others else ""))


# --------------------------------------------------------------------------------------
# The figure
# --------------------------------------------------------------------------------------


def _err(v: float, lo: float, hi: float, top: float) -> tuple[list[float], list[float]]:
    """Error-bar lengths; an open end (lo 0, hi inf) runs to v / 10 or to the axis top."""
    lower = v - lo if math.isfinite(lo) and 0 < lo <= v else (0.9 * v if lo == 0 else 0.0)
    if math.isinf(hi):
        upper = max(top - v, 0.0)
    else:
        upper = hi - v if math.isfinite(hi) and hi >= v else 0.0
    return [lower], [upper]


def plot_crosstask(points: pd.DataFrame, cited: pd.DataFrame,
                   path: str | os.PathLike[str],
                   terms: Sequence[str] = ("total", "policy", "value")) -> Path:
    """B_crit against B_simple, log-log, one panel per loss term: each task with its
    intervals on both axes (bounds as arrows from the bound), the line B_crit = B_simple,
    and the cited values (``cited``: task, b_simple, b_crit, each a number or a
    (low, high) range) as hollow markers or boxes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # lazy: slow import
    from matplotlib.figure import Figure  # lazy: slow import

    fig = Figure(figsize=(5.2 * len(terms), 5.2))
    FigureCanvasAgg(fig)
    axes = np.atleast_1d(fig.subplots(1, len(terms)))
    tasks = list(dict.fromkeys(points["task"]))
    colors = {t: f"C{i % 10}" for i, t in enumerate(tasks)}
    values = [v for c in ("b_crit", "b_crit_bound", "b_simple", "b_simple_lo", "b_simple_hi")
              for v in pd.to_numeric(points[c], errors="coerce") if _finite_positive(v)]
    for _, c in cited.iterrows():
        for v in (c["b_simple"], c["b_crit"]):
            values += [x for x in np.ravel(v) if _finite_positive(x)]
    lo_ax = min(values) / 3 if values else 1.0
    hi_ax = max(values) * 3 if values else 1e6
    for ax, term in zip(axes, terms, strict=True):
        ax.plot([lo_ax, hi_ax], [lo_ax, hi_ax], color="0.5", lw=1, ls="--",
                label="B_crit = B_simple")
        for _, c in cited.iterrows():
            _draw_cited(ax, c, hi_ax)
        for _, p in points[points["term"] == term].iterrows():
            _draw_point(ax, p, colors[p["task"]], hi_ax)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(lo_ax, hi_ax)
        ax.set_ylim(lo_ax, hi_ax)
        ax.set_xlabel(f"B_simple, {term} loss (run-averaged)")
        ax.set_ylabel("B_crit")
        ax.set_title(f"{term} loss", fontsize=10)
        ax.grid(True, which="major", alpha=0.3)
    axes[0].legend(fontsize=7, loc="upper left", framealpha=0.9)
    fig.suptitle("B_crit against B_simple across tasks (RL, circles: agent steps; supervised, "
                 "squares: examples); bars: intervals, arrows: bounds; hollow: McCandlish et "
                 "al. 2018, Table 1", fontsize=9)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_figure(fig, out, dpi=100)
    return out


def _draw_point(ax: Any, p: pd.Series, color: str, top: float) -> None:
    bs = float(p["b_simple"])
    if not _finite_positive(bs):
        return
    xerr = _err(bs, float(p["b_simple_lo"]), float(p["b_simple_hi"]), top)
    bound = str(p.get("bound", "") or "")
    if bound and _finite_positive(p["b_crit_bound"]):
        y = float(p["b_crit_bound"])
        ax.errorbar([bs], [y], xerr=xerr, marker="_", markersize=12, color=color,
                    linestyle="none", capsize=3, label=f"{p['task']} ({bound} bound)")
        ax.annotate("", xy=(bs, y * (4 if bound == ">=" else 0.25)), xytext=(bs, y),
                    arrowprops=dict(arrowstyle="->", color=color))
        return
    if not _finite_positive(p["b_crit"]):
        return
    y = float(p["b_crit"])
    yerr = _err(y, float(p["b_crit_lo"]), float(p["b_crit_hi"]), top)
    supervised = p.get("kind", "rl") == "supervised"
    ax.errorbar([bs], [y], xerr=xerr, yerr=yerr, marker="s" if supervised else "o",
                color=color, linestyle="none", capsize=3,
                label=f"{p['task']} (supervised)" if supervised else str(p["task"]))


def _draw_cited(ax: Any, c: pd.Series, top: float) -> None:
    xs, ys = np.ravel(c["b_simple"]).astype(float), np.ravel(c["b_crit"]).astype(float)
    label = f"{c['task']} (cited)"
    if xs.size == 1 and ys.size == 1:
        ax.scatter(xs, ys, marker="D", facecolors="none", edgecolors="0.35", s=40, label=label)
        ax.annotate(str(c["task"]), (xs[0], ys[0]), textcoords="offset points", xytext=(4, -9),
                    fontsize=7, color="0.35")
        return
    x0, x1 = xs.min(), xs.max()
    y0, y1 = ys.min(), min(ys.max(), top)
    ax.add_patch(_rectangle(x0, y0, x1, y1))
    # The short name ("Atari", not "Atari (several games)"): the long one ran into the
    # labels of the points to its right; the legend keeps the full name.
    ax.annotate(str(c["task"]).split(" (")[0], (x0, y1), textcoords="offset points",
                xytext=(2, 2), fontsize=7, color="0.35")


def _rectangle(x0: float, y0: float, x1: float, y1: float) -> Any:
    from matplotlib.patches import Rectangle  # lazy: slow import

    return Rectangle((x0, y0), max(x1 - x0, x0 * 0.05), max(y1 - y0, y0 * 0.05), fill=False,
                     edgecolor="0.35", lw=1.2, ls=":")


# --------------------------------------------------------------------------------------
# From and into the study's results table
# --------------------------------------------------------------------------------------


def study_points(df: pd.DataFrame, terms: Sequence[str] = TERMS) -> pd.DataFrame:
    """``POINT_COLUMNS`` rows of the measured tasks of a study's results table, RL and
    supervised (a supervised sweep's B_simple: along its runs at the best lrs): the headline
    B_crit (measured or a bound) beside the B_simple of each term over the noise-scale runs'
    training up to that B_crit's target (``b_simple_to_target``), else the headline
    B_simple (over the whole runs)."""
    rows = []
    measured = df[(df["source"] == "measured") & df["kind"].isin(["rl", "supervised"])
                  & (df["task"] != ACROSS_TASKS)]
    for task in dict.fromkeys(measured["task"]):
        kind = str(measured.loc[measured["task"] == task, "kind"].iloc[0])
        bc = headline_b_crit(df, task)
        if bc is None:
            continue
        bound = b_crit_bound(bc)
        if pd.isna(bc["value"]) and not bound:
            continue
        for term in terms:
            bs = _b_simple_to(df, task, term, bc["target"])
            if bs is None:
                continue
            rows.append(dict(
                task=task, kind=kind, term=term, target=bc["target"], b_crit=bc["value"],
                b_crit_lo=bc["lo"], b_crit_hi=bc["hi"], bound=bound[:2] if bound else "",
                b_crit_bound=(bc["lo"] if bound.startswith(">=") else bc["hi"]) if bound
                else math.nan,
                b_simple=bs["value"], b_simple_lo=bs["lo"], b_simple_hi=bs["hi"]))
    return pd.DataFrame(rows, columns=POINT_COLUMNS)


def _b_simple_to(df: pd.DataFrame, task: str, term: str, target: float) -> pd.Series | None:
    """The B_simple row to set beside a B_crit at ``target``: up to that target where the
    table has it, else the task's headline B_simple."""
    sel = df[(df["task"] == task) & (df["quantity"] == "b_simple_to_target")
             & (df["term"] == term) & (df["target"] == target)]
    return sel.iloc[0] if len(sel) else headline_b_simple(df, task, term)


def cited_points() -> pd.DataFrame:
    """The published (B_simple, B_crit) of McCandlish et al. 2018, Table 1 (numbers or
    (low, high) ranges)."""
    return pd.DataFrame([dict(task=task, b_simple=b_simple, b_crit=b_crit)
                         for task, _, b_crit, b_simple, _, _ in CITED])


def target_words(kind: str, target: float) -> str:
    """A headline target in words: 'return 200', 'training loss 0.03' (a supervised target is
    minus the training loss)."""
    return f"training loss {-target:g}" if kind == "supervised" else f"return {target:g}"


def _ends(p: pd.Series) -> tuple[float, float, float]:
    """(low end, value, high end) of a point's B_crit: its interval, or a bound's open side
    (0 or inf) with value NaN."""
    bound = str(p.get("bound", "") or "")
    if bound == ">=":
        return float(p["b_crit_bound"]), math.nan, math.inf
    if bound == "<=":
        return 0.0, math.nan, float(p["b_crit_bound"])
    return float(p["b_crit_lo"]), float(p["b_crit"]), float(p["b_crit_hi"])


def rl_over_supervised(points: pd.DataFrame) -> pd.DataFrame:
    """The ratio of each RL task's B_crit to each supervised task's (``study_points`` rows of
    the total term): value = ratio of the measured numbers (NaN where either is a bound);
    [lo, hi] = [RL low end / supervised high end, RL high end / supervised low end], which
    covers the ratio whenever both intervals cover their B_crit, so with probability at least
    1 - a1 - a2 (two 95% intervals: 90%, by the union bound, dependent or not). A bound's open
    side enters as 0 or inf, so a lower bound on an RL B_crit gives a lower bound on the
    ratio. Units: RL agent steps over supervised examples."""
    tot = points[points["term"] == "total"]
    rl, sup = tot[tot["kind"] == "rl"], tot[tot["kind"] == "supervised"]
    rows = []
    for _, a in rl.iterrows():
        a_lo, a_v, a_hi = _ends(a)
        for _, b in sup.iterrows():
            b_lo, b_v, b_hi = _ends(b)
            lo = a_lo / b_hi if math.isfinite(b_hi) and b_hi > 0 else 0.0
            hi = a_hi / b_lo if b_lo > 0 else math.inf
            value = a_v / b_v if _finite_positive(a_v) and _finite_positive(b_v) else math.nan
            rows.append(dict(rl=a["task"], supervised=b["task"], rl_target=a["target"],
                             supervised_target=b["target"], ratio=value, lo=lo, hi=hi,
                             rl_bound=str(a.get("bound", "") or ""),
                             supervised_bound=str(b.get("bound", "") or "")))
    return pd.DataFrame(rows, columns=["rl", "supervised", "rl_target", "supervised_target",
                                       "ratio", "lo", "hi", "rl_bound", "supervised_bound"])


def _ratio_rows(ratios: pd.DataFrame) -> list[dict]:
    """The b_crit_over_b_simple rows of ``ratio_table``'s measured ratios and bounds."""
    rows = []
    for _, r in ratios.iterrows():
        kind, at = r["kind"], target_words(r["kind"], r["target"])
        if r["measured"]:
            note = (f"B_crit at {at} over the run-averaged B_simple; interval from the ends of "
                    "the two intervals")
            rows.append(result_row("measured", kind, r["task"], "b_crit_over_b_simple",
                                   r["ratio"], term=r["term"], target=r["target"], lo=r["lo"],
                                   hi=r["hi"], unit="ratio", note=note))
        elif r["bound"] and math.isfinite(r["ratio_bound"]):
            lower = r["bound"] == ">="
            rows.append(result_row(
                "measured", kind, r["task"], "b_crit_over_b_simple", math.nan, term=r["term"],
                target=r["target"], lo=r["ratio_bound"] if lower else 0.0,
                hi=math.inf if lower else r["ratio_bound"], unit="ratio",
                note=f"{'lower' if lower else 'upper'} bound: B_crit is a bound at {at}"))
    return rows


def _rl_over_supervised_rows(points: pd.DataFrame) -> list[dict]:
    rows = []
    for _, r in rl_over_supervised(points).iterrows():
        bounds = [f"the {w} B_crit is a bound ({b})" for w, b in
                  (("RL", r["rl_bound"]), ("supervised", r["supervised_bound"])) if b]
        note = (f"B_crit of {r['rl']} at {target_words('rl', r['rl_target'])} (agent steps) "
                f"over B_crit of {r['supervised']} at "
                f"{target_words('supervised', r['supervised_target'])} (examples); interval: "
                "the ends of the two 95% profile intervals, coverage >= 90% (union bound)"
                + (f"; {' and '.join(bounds)}: only the interval's ends mean anything"
                   if bounds else ""))
        rows.append(result_row("measured", "rl", r["rl"], RL_OVER_SUPERVISED, r["ratio"],
                               term=r["supervised"], target=r["rl_target"], lo=r["lo"],
                               hi=r["hi"], unit="ratio", note=note))
    return rows


def crosstask_rows(df: pd.DataFrame, ci: float = PREDICTION_CI) -> list[dict]:
    """Results-table rows: B_crit / B_simple per task and term (RL and supervised), the
    prediction of the ratio per term and the verdict (its note) over the RL tasks only, and
    the ratio of each RL task's B_crit to each supervised task's.

    The prediction pools RL tasks alone: it is a statement about a new RL task, and the
    supervised tasks here are two networks on one small dataset, close to one draw; their
    ratios are reported beside it, not pooled into it."""
    points = study_points(df)
    ratios = ratio_table(points)
    rows = _ratio_rows(ratios)
    ratios = ratios[ratios["kind"] == "rl"]
    predictions = [predict_ratio(ratios, term, ci) for term in TERMS]
    for p in predictions:
        used = ", ".join(p.tasks) or "no task"
        note = (f"geometric mean of B_crit / B_simple over {used}; spread (sd of the log) "
                f"{p.spread:.3g}; {p.ci:.0%} prediction interval for a task outside the study"
                if p.n_tasks >= 2 else
                f"over {used}: no spread or prediction from fewer than 2 tasks")
        if p.bounds_consistent:
            note += f"; bounds agreeing: {p.bounds_consistent}"
        rows.append(result_row("measured", "rl", ACROSS_TASKS, "ratio_prediction", p.ratio,
                               term=p.term, lo=p.lo, hi=p.hi, unit="ratio", n=p.n_tasks,
                               note=note))
    rows.append(result_row("measured", "rl", ACROSS_TASKS, "crosstask_verdict",
                           note=verdict(predictions)))
    return rows + _rl_over_supervised_rows(points)
