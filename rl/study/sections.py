"""The study's report: its sections (headline, trajectories, Pareto fronts, power laws,
sharpness, the results table), written by ``rl.study.report``.

Every number shown comes from the results table as written to results.csv. See
docs/study.md and docs/scaling-laws.md.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from rl.analysis.power_laws import plot_power_laws
from rl.analysis.sharpness import plot_sharpness
from rl.analysis.sweep_fits import (
    plot_b_simple,
    plot_fits,
    remove_stale_fit_plots,
    seed_table,
)
from rl.measure.warmup import WARMUP_ITERATIONS
from rl.runs.files import atomic_write_texts
from rl.study.crosstask import RL_OVER_SUPERVISED, cited_points, plot_crosstask, study_points
from rl.study.curves import curve_runs, plot_learning_curves
from rl.study.headline import headline_b_crit, headline_table, pick_row, plot_summary
from rl.study.plan import SHARPNESS_FILE, SUPERVISED_PART, Part, StudyPlan, slug, study_parts
from rl.study.report import Figure, Section, format_interval, format_value, write_report
from rl.study.results import ACROSS_TASKS, UNITS, part_table, power_laws
from rl.study.settings import CITED_LABEL, SHARPNESS_EPS
from rl.study.verdict import verdict_sentence

__all__ = ["scaling_sections", "write_study_report"]

POWER_LAW_QUANTITIES = ["b_crit_exponent", "s_min_exponent", "e_min_exponent", "b_simple_exponent"]


def _figure_sections(plan: StudyPlan, df: pd.DataFrame, fits: Mapping[str, Any]
                     ) -> tuple[list[Figure], list[Figure]]:
    """(B_simple vs return figures, Pareto figures), from the sweep machinery's plots."""

    parts = {(p.kind, p.game): p for p in study_parts(plan)}
    trajectories, pareto = [], []
    for g in plan.games:
        for kind, what in (("noise", "noise-scale runs"), ("sweep", "sweep runs")):
            part = parts.get((kind, g.game))
            if part is None:
                continue
            table = part_table(part)
            for p in plot_b_simple(part.out, table, plot_dir=part.analysis_dir):
                trajectories.append(Figure(p, f"{g.game}: B_simple (policy, value, total loss; "
                                              f"agent steps) against the recent return, {what}"))
        if g.game in fits:
            pareto += _pareto_figures(g.game, parts[("sweep", g.game)], fits[g.game])
    for s in plan.supervised_sweeps:
        part = parts[(SUPERVISED_PART, s.task)]
        table = part_table(part)
        for p in plot_b_simple(part.out, table, plot_dir=part.analysis_dir):
            trajectories.append(Figure(p, f"{s.task}: B_simple of the training loss (examples) "
                                          "against minus the training loss, sweep runs"))
        if s.task in fits:
            pareto += _pareto_figures(s.task, part, fits[s.task], kind="supervised")
    return trajectories, pareto


def _pareto_figures(game: str, part: Part, game_fits, kind: str = "rl") -> list[Figure]:
    """fit.csv, fit_per_batch.csv and the fit plots of a game's sweep, one per target."""
    u = UNITS[kind]
    table, f, per_batch = game_fits
    per_seed = seed_table(table)
    if len(f):
        atomic_write_texts({part.analysis_dir / "fit.csv": f.to_csv(index=False),
                            part.analysis_dir / "fit_per_batch.csv":
                                per_batch.to_csv(index=False)})
    figures = []
    for i in range(len(f)):
        for p in plot_fits(part.analysis_dir, f.iloc[[i]], per_batch, per_seed):
            figures.append(Figure(p, f"{game}, target {u['score']} "
                                     f"{format_value(f['target'].iloc[i])}: steps S ("
                                     f"{u['steps']}) against samples E ({u['batch']}), and "
                                     "S, E against the batch size B"))
    remove_stale_fit_plots(part.analysis_dir, f)
    return figures


def _intro(plan: StudyPlan) -> list[str]:
    return [
        f"Study of suite {plan.suite} with preset {plan.preset}. Every row is either "
        "measured by this testbed (source = measured) or cited from the literature (source "
        "= cited, McCandlish et al. 2018, Table 1); cited values are never mixed with "
        "measured ones.",
        "Units: RL batch sizes (B, B_simple, B_crit, E_min) are counted in agent steps, "
        "environment transitions (for Atari, frames are four times the agent steps); S_min "
        "in PPO iterations; supervised batch sizes in training examples, S_min in optimizer "
        "steps, and a supervised sweep's targets are minus the training loss in nats (a "
        "target of minus x: a training loss of x). Cited values are in the units of the "
        "paper.",
    ]


HEADLINE_NOTE = (
    "B_simple: run-averaged gradient noise scale, mean tr(Sigma) / mean |G|^2 over "
    f"the measured iterations after a {WARMUP_ITERATIONS}-iteration warm-up (RL, "
    "block-bootstrap interval) "
    "or over all measurements (supervised reference run, Fieller interval); a supervised "
    f"sweep's (digits-mlp, digits-cnn): after {WARMUP_ITERATIONS} optimizer steps, pooled "
    "over its runs at each batch size's best lr (block bootstrap); see the note column of the "
    "results table. B_crit: critical batch size fitted from the sweep at the "
    "highest target return with a measured B_crit (2+ batch sizes on each side of it), "
    "with its profile interval (seed scatter and lack of fit); where the knee is not "
    "covered, a bound ('>=' / '<='). "
    "first -> last quarter: B_simple over the first and the last quarter of the "
    "measurements.")


def crosstask_section(df: pd.DataFrame, png: Path) -> Section:
    """Across tasks: the verdict (which loss term's B_simple predicts B_crit, and the
    prediction for a task outside the study), the figure and the ratio table."""
    verdict_row = pick_row(df, ACROSS_TASKS, "crosstask_verdict")
    words = [str(verdict_row["note"])] if verdict_row is not None else []
    ratios = df[df["quantity"].isin(["b_crit_over_b_simple", "ratio_prediction"])]
    table = pd.DataFrame({
        "task": ratios["task"], "kind": ratios["kind"], "term": ratios["term"],
        "target": [format_value(v) for v in ratios["target"]],
        "B_crit / B_simple [interval]": [_ratio_cell(r) for _, r in ratios.iterrows()],
        "tasks": [format_value(n) if q == "ratio_prediction" else ""
                  for q, n in zip(ratios["quantity"], ratios["n"], strict=True)],
        "note": ratios["note"]})
    figure = Figure(plot_crosstask(study_points(df), cited_points(), png),
                    "B_crit against B_simple (total, policy, value loss), log-log, every task "
                    "with both: intervals on both axes, bounds as arrows, the line B_crit = "
                    "B_simple, and the published values (hollow; their B_simple is the paper's "
                    "single noise scale, shown on every panel)")
    rl_sup = df[df["quantity"] == RL_OVER_SUPERVISED]
    tables = [(table, "crosstask")]
    if len(rl_sup):
        words.append(_rl_over_supervised_words(rl_sup))
        tables.append((pd.DataFrame({
            "RL task": rl_sup["task"], "supervised task": rl_sup["term"],
            "RL target return": [format_value(v) for v in rl_sup["target"]],
            "B_crit RL / B_crit supervised [interval]": [_ratio_cell(r)
                                                         for _, r in rl_sup.iterrows()],
            "note": rl_sup["note"]}), "rl-over-supervised"))
    return Section("Across tasks: B_crit against B_simple", paragraphs=words,
                   tables=tables, figures=[figure],
                   notes=["B_crit at each task's headline target (a bound where the sweep "
                          "does not cover the knee); B_simple after the warm-up, averaged "
                          "over the noise-scale runs' training up to that target (the stretch "
                          "the sweep times; the whole runs where a game has no sweep target, "
                          "the best-lr sweep runs for supervised tasks). The prediction row "
                          "per term: the geometric mean of the "
                          "measured RL ratios with a prediction interval for a new RL task "
                          "(log-normal across tasks); bounds and supervised tasks do not "
                          "enter it. RL / supervised: each RL task's B_crit (agent steps) "
                          "over each supervised sweep's (examples). See docs/study.md."])


def _rl_over_supervised_words(rows: pd.DataFrame) -> str:
    """One sentence per RL task: its B_crit over the supervised ones, with the interval."""
    parts = []
    for task, mine in rows.groupby("task", sort=False):
        cells = ", ".join(f"{r['term']} {_ratio_cell(r)}" for _, r in mine.iterrows())
        parts.append(f"{task}: {cells}")
    return ("RL B_crit over supervised B_crit (agent steps per example, each at its headline "
            "target; interval >= 90%): " + "; ".join(parts) + ".")


def _ratio_cell(r) -> str:
    """A ratio row as shown: value [interval] with the interval's digits, a bound, or
    unresolved (``format_interval``)."""
    if pd.isna(r["value"]):
        if str(r["note"]).startswith("lower bound"):
            return format_interval(math.nan, r["lo"], r["hi"], bound=">=")
        if str(r["note"]).startswith("upper bound"):
            return format_interval(math.nan, r["lo"], r["hi"], bound="<=")
        if r["quantity"] == RL_OVER_SUPERVISED and not pd.isna(r["lo"]):
            if math.isinf(r["hi"]) and r["lo"] > 0:
                return format_interval(math.nan, r["lo"], r["hi"], bound=">=")
            if r["lo"] == 0 and math.isfinite(r["hi"]):
                return format_interval(math.nan, r["lo"], r["hi"], bound="<=")
        return "-"
    return format_interval(r["value"], r["lo"], r["hi"])


def _curves_section(plan: StudyPlan, df: pd.DataFrame) -> Section | None:
    """Learning curves of the runs behind each task's B_crit, or why there are none."""
    out = Path(plan.out)
    parts = {(p.kind, p.game): p for p in study_parts(plan)}
    figures, words = [], []
    for g in plan.games:
        part = parts.get(("sweep", g.game))
        if part is None:
            continue
        runs, why = curve_runs(part)
        if not runs:
            words.append(f"{g.game}: no learning curves: {why}.")
            continue
        bc = headline_b_crit(df, g.game)
        target = None if bc is None else bc["target"]
        path = plot_learning_curves(g.game, runs,
                                    out / "plots" / f"curves_{slug(g.game)}.png", target)
        figures.append(Figure(path, f"{g.game}: return against agent steps of the sweep's "
                                    "runs at each batch size's best learning rate (every "
                                    "seed), the runs behind its B_crit; dashed: the headline "
                                    "target"))
    if plan.supervised_sweeps:
        words.append("Supervised sweeps: no learning curves here (their training loss is in "
                     "each run's metrics.jsonl).")
    if not figures and not words:
        return None
    return Section("Learning curves behind the B_crit rows", paragraphs=words,
                   figures=figures, collapsed=True)


UNRESOLVED_NOTE = (
    "Numbers carry the significant digits their interval allows. 'unresolved (interval 0 to "
    "inf)': the interval does not pin the value, so none is shown; 'unresolved (mean |G|^2 "
    "not positive)' or a quarter shown as 'unresolved': the mean squared gradient estimate "
    "was not positive, so there is no ratio; '>= x': only a lower bound (the interval is "
    "open at the top, or the sweep does not cover the knee).")


def write_study_report(plan: StudyPlan, df: pd.DataFrame, fits: Mapping[str, Any]
                       ) -> tuple[Path, Path]:
    """Plots, then report.html and report.md, from the results table ``df``: the verdict
    (``verdict_sentence``), the summary figure and the headline table first; every other
    section after them, collapsed in the HTML page."""
    out = Path(plan.out)
    summary_png = plot_summary(df, out / "plots" / "summary.png")
    trajectories, pareto = _figure_sections(plan, df, fits)
    sections = [
        Section("Headline", tables=[(headline_table(df), "headline")],
                notes=[UNRESOLVED_NOTE, HEADLINE_NOTE], figures_first=True,
                figures=[Figure(summary_png, "B_crit and B_simple per game on a log axis, "
                                             "beside the supervised reference (measured) and "
                                             "the published values (" + CITED_LABEL + ")")]),
        _collapse(crosstask_section(df, out / "plots" / "crosstask.png")),
    ]
    if (curves := _curves_section(plan, df)) is not None:
        sections.append(curves)
    if trajectories:
        sections.append(Section("B_simple against return", figures=trajectories,
                                collapsed=True))
    if pareto:
        sections.append(Section("Pareto fronts of the critical-batch sweeps", figures=pareto,
                                collapsed=True))
    sections += [_collapse(s) for s in scaling_sections(plan, df, fits)]
    sections.append(Section("About this study: suite, units, sources", paragraphs=_intro(plan),
                            collapsed=True))
    sections.append(Section(
        "Results table", paragraphs=["Every number in this report comes from this table "
                                     "(results.csv beside this page)."],
        tables=[(df, "results")], collapsed=True))
    title = "rlscale compare: critical batch size and gradient noise scale"
    return write_report(out, title, [], sections, lead=[verdict_sentence(df)])


def _collapse(section: Section) -> Section:
    section.collapsed = True
    return section


# --------------------------------------------------------------------------------------
# Power laws in performance and sharpness against batch size
# --------------------------------------------------------------------------------------


def _cell(r) -> str:
    if pd.isna(r["value"]):
        return "refused" if str(r["note"]).startswith("refused") else "-"
    return format_interval(r["value"], r["lo"], r["hi"])


def _overlap(a, b) -> bool:
    return not (a["hi"] < b["lo"] or b["hi"] < a["lo"])


def _exponents_in_words(df: pd.DataFrame, game: str) -> str | None:
    """B_crit's exponent beside B_simple's (total loss), and whether they differ."""
    bc = pick_row(df, game, "b_crit_exponent")
    bs = pick_row(df, game, "b_simple_exponent", "total")
    if bc is None and bs is None:
        return None
    if bc is None or bs is None or pd.isna(bc["value"]) or pd.isna(bs["value"]):
        return (f"{game}: no side-by-side comparison (a fit was refused or not "
                "run; the reason is in the results table).")
    flat = [name for name, r in (("B_crit", bc), ("B_simple", bs))
            if not pd.isna(r["lo"]) and r["lo"] <= 0 <= r["hi"]]
    if not _overlap(bc, bs):
        verdict = ("the intervals do not overlap: B_crit and B_simple grow at "
                   "different rates.")
    elif flat:
        verdict = (f"the intervals overlap, but {' and '.join(flat)}'s "
                   f"{'contains' if len(flat) == 1 else 'contain'} 0: no growth is "
                   "resolved there, so the two rates cannot be told apart.")
    else:
        verdict = "the intervals overlap: B_crit grows like B_simple within the noise."
    return (f"{game}: B_crit against the target return has exponent "
            f"{format_interval(bc['value'], bc['lo'], bc['hi'])}, B_simple (total loss) "
            "against the smoothed return "
            f"{format_interval(bs['value'], bs['lo'], bs['hi'])}: " + verdict)


def _power_law_section(plan: StudyPlan, df: pd.DataFrame, fits: Mapping[str, Any],
                       parts: Mapping[tuple[str, str], Part]) -> Section | None:
    out = Path(plan.out)
    rows, words, figures = [], [], []
    for g in plan.games:
        mine = df[(df["task"] == g.game) & df["quantity"].isin(POWER_LAW_QUANTITIES)]
        if mine.empty:
            continue
        rec = {"task": g.game}
        for _, r in mine.iterrows():
            rec[r["quantity"] + (f" ({r['term']})" if r["term"] else "")] = _cell(r)
        rows.append(rec)
        said = _exponents_in_words(df, g.game)
        if said is not None:
            words.append(said)
        laws, pts, noise, noise_pts, source = power_laws(g.game, parts, fits, plan.n_boot)
        if len(pts) or len(noise_pts):
            path = plot_power_laws(out / "plots" / f"power_laws_{slug(g.game)}.png", g.game,
                                   laws, pts, noise, noise_pts, noise_source=source)
            figures.append(Figure(path, f"{g.game}: B_crit, S_min, E_min against the target "
                                        "return, and B_simple against the smoothed return, "
                                        "log-log, with the fitted power laws"))
    for task in (s.task for s in plan.supervised_sweeps):
        mine = df[(df["task"] == task) & df["quantity"].isin(POWER_LAW_QUANTITIES)]
        if len(mine):
            rows.append({"task": task, **{r["quantity"]: _cell(r) for _, r in mine.iterrows()}})
    if not rows:
        return None
    return Section(
        "Power laws in performance", paragraphs=words,
        tables=[(pd.DataFrame(rows).fillna(""), "power-laws")], figures=figures,
        notes=["Exponent k of y = c x^k, with its 95% seed-bootstrap interval; x is the "
               "return itself (the target return for B_crit, S_min and E_min, the smoothed "
               "return for B_simple), the same axis for both, so the exponents compare "
               "directly; for a supervised sweep x is the target training loss. A fit is "
               "refused (with the reason in the results table) below 3 "
               "points or when x spans less than a factor 2. See docs/scaling-laws.md."])


def _sharpness_words(sharp: pd.DataFrame) -> list[str]:
    words = []
    for _, r in sharp.iterrows():
        what = r["quantity"][: -len("_trend")].replace("_", " ")
        term = f" ({r['term']} loss)" if r["term"] else ""
        verdict = str(r["note"]).split(":")[0]
        words.append(f"{r['task']}, {what}{term}: {verdict} (slope per doubling "
                     f"{format_value(r['value'])}, 95% [{format_value(r['lo'])}, "
                     f"{format_value(r['hi'])}]).")
    return words


def _sharpness_figures(plan: StudyPlan, parts: Mapping[tuple[str, str], Part]) -> list[Figure]:
    out = Path(plan.out)
    figures = []
    for g in plan.games:
        path = parts[("sweep", g.game)].analysis_dir / SHARPNESS_FILE if ("sweep", g.game) in \
            parts else None
        if path is not None and path.exists():
            figures.append(Figure(plot_sharpness(
                out / "plots" / f"sharpness_{slug(g.game)}.png", pd.read_csv(path),
                x="rollout_batch_size", title=f"{g.game}: PPO loss at the final checkpoint",
                eps=SHARPNESS_EPS), f"{g.game}: sharpness of the PPO loss (policy, value) "
                "at each sweep run's final checkpoint against the rollout batch size"))
    sup = out / "supervised" / SHARPNESS_FILE
    if sup.exists():
        figures.append(Figure(plot_sharpness(
            out / "plots" / "sharpness_digits.png", pd.read_csv(sup), x="batch_size",
            title="digits: same epochs at every batch size", eps=SHARPNESS_EPS, gap=True),
            "digits: sharpness of the training loss and the generalization gap against "
            "the batch size (Keskar et al.'s claim: larger batches, sharper minima, "
            "larger gap)"))
    return figures


def _sharpness_section(plan: StudyPlan, df: pd.DataFrame,
                       parts: Mapping[tuple[str, str], Part]) -> Section | None:
    sharp = df[df["quantity"].str.endswith("_trend")]
    if not len(sharp):
        return None
    per_b = df[df["batch_size"].notna()]
    table = per_b.assign(cell=[_cell(r) for _, r in per_b.iterrows()])[
        ["task", "term", "quantity", "batch_size", "cell", "n"]].rename(
        columns={"cell": "mean [+- 1 s.e.]", "n": "repeats"})
    return Section(
        "Sharpness against batch size", paragraphs=_sharpness_words(sharp),
        tables=[(table, "sharpness")], figures=_sharpness_figures(plan, parts),
        notes=["RL: the PPO loss at each sweep run's final checkpoint (seed 0), on fresh "
               "rollouts of its policy; supervised: the training loss of the digits "
               "classifier after the same number of epochs at each batch size (larger "
               "batches take fewer steps and may not have converged). Top eigenvalue: "
               "power iteration on Hessian-vector products; eps-sharpness: Keskar et "
               "al.'s, by projected gradient ascent. Numbers of repeats, samples and "
               "steps: the note column of the results table; see docs/sharpness.md."])


def scaling_sections(plan: StudyPlan, df: pd.DataFrame, fits: Mapping[str, Any]
                     ) -> list[Section]:
    """The power-law exponents per game side by side, and sharpness against batch size,
    with what they show in words; every number from the results table ``df``."""

    parts = {(p.kind, p.game): p for p in study_parts(plan)}
    sections = [_power_law_section(plan, df, fits, parts), _sharpness_section(plan, df, parts)]
    return [s for s in sections if s is not None]
