"""The study's results table: one row per measured or cited number (``RESULT_COLUMNS``).

Built from the study directory, never from memory, so a second invocation rebuilds the
same table: noise-scale runs, sweep fits, power laws, sharpness, the supervised reference
and the published values. See docs/study.md.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rl.analysis.fit import B_CRIT_CI, best_per_batch, few_seeds_caveat
from rl.analysis.power_laws import POWER_LAW_COLUMNS, noise_scale_power_laws, tradeoff_power_laws
from rl.analysis.sharpness import summarize_repeats, trend
from rl.analysis.sweep_fits import fit_sweep
from rl.measure.ppo_noise import TERMS
from rl.measure.returns import first_reach
from rl.measure.run_average import TOP_FRACTION, ratio_summary
from rl.measure.supervised import SEGMENT_FRACTION
from rl.measure.warmup import WARMUP_ITERATIONS, counted_measurements
from rl.runs.metrics import load_metrics
from rl.runs.record import has_metrics
from rl.study.plan import (
    SHARPNESS_FILE,
    SUPERVISED_PART,
    GamePlan,
    Part,
    StudyPlan,
    study_parts,
    supervised_dir,
)
from rl.study.report import round_sig
from rl.study.settings import CITED, CITED_REFERENCE, SHARPNESS_EPS
from rl.sweeps.results import long_results, results_table, sweep_table
from rl.sweeps.spec import plan_runs
from rl.sweeps.state import read_untrained_floors

__all__ = [
    "ACROSS_TASKS",
    "GNS_TERMS",
    "RESULT_COLUMNS",
    "UNITS",
    "best_lr_runs",
    "collect_results",
    "finalize_table",
    "b_simple_to_target_rows",
    "noise_b_simple_rows",
    "noise_metrics",
    "part_table",
    "power_laws",
    "read_results_table",
    "result_row",
    "supervised_sweep_rows",
]

RESULT_COLUMNS = ["source", "kind", "task", "quantity", "term", "target", "batch_size", "value",
                  "lo", "hi", "unit", "n", "note", "reference"]
TEXT_COLUMNS = ("source", "kind", "task", "quantity", "term", "unit", "note", "reference")
_ROUNDED = ("target", "batch_size", "value", "lo", "hi")
GNS_TERMS = TERMS
"""loss terms of the noise-scale rows (``rl.measure.ppo_noise.TERMS``)"""
ACROSS_TASKS = "across tasks"
"""The task name of rows that summarise several tasks (``rl.study.crosstask``): not a task of
the headline."""
UNITS = {
    "rl": dict(batch="agent steps", steps="PPO iterations", score="return",
               updates="PPO iterations"),
    "supervised": dict(batch="training examples", steps="optimizer steps",
                       score="progress score", updates="optimizer steps"),
}
"""How a sweep of each kind counts: B (B_crit, E, B_simple), S, the target's measure, the
warm-up's updates."""


def result_row(source: str, kind: str, task: str, quantity: str, value: float = math.nan, *,
               term: str = "", target: float = math.nan, lo: float = math.nan,
               hi: float = math.nan, unit: str = "", n: float = math.nan, note: str = "",
               reference: str = "", batch_size: float = math.nan) -> dict:
    """One row of the results table."""
    return dict(source=source, kind=kind, task=task, quantity=quantity, term=term,
                target=target, batch_size=batch_size, value=value, lo=lo, hi=hi, unit=unit,
                n=n, note=note, reference=reference)


# --------------------------------------------------------------------------------------
# Noise-scale runs
# --------------------------------------------------------------------------------------


def noise_metrics(part: Part) -> list[pd.DataFrame]:
    """The metrics of a part's runs that logged a return."""

    out = []
    for p in plan_runs(part.spec):
        path = Path(p.run_dir)
        if has_metrics(path):
            m = load_metrics(path)
            if "return_recent" in m:
                out.append(m)
    return out


def _segments(metrics: list[pd.DataFrame], term: str) -> dict[str, list]:
    """Per run, the (|G|^2, tr(Sigma)) measurements of ``term`` that count (after the
    warm-up, ``rl.measure.warmup``): all of them, the first and the last quarter, with the
    recent return over those quarters."""
    seg: dict[str, list] = {"whole": [], "first": [], "last": [], "ret_first": [],
                            "ret_last": []}
    for m in metrics:
        sel = counted_measurements(m, term)
        if sel.empty:
            continue
        g2, tr, ret = (sel[c].to_numpy(float) for c in ("g2", "trace_sigma", "return_recent"))
        seg["whole"].append((g2, tr))
        k = max(1, round(SEGMENT_FRACTION * len(g2)))
        seg["first"].append((g2[:k], tr[:k]))
        seg["last"].append((g2[-k:], tr[-k:]))
        seg["ret_first"].append(ret[:k])
        seg["ret_last"].append(ret[-k:])
    return seg


def _pooled(pairs: list[tuple[np.ndarray, np.ndarray]]) -> tuple[float, float, float, int, str]:
    """(B_simple, lo, hi, measurements, tail note) over the pooled measurements of every run:
    ``rl.measure.run_average.ratio_summary`` with bootstrap blocks inside each run."""
    g2 = np.concatenate([p[0] for p in pairs])
    tr = np.concatenate([p[1] for p in pairs])
    runs = np.concatenate([np.full(len(p[0]), i) for i, p in enumerate(pairs)])
    s = ratio_summary(g2, tr, runs=runs)
    tail = (f"; heavy-tailed: the largest {TOP_FRACTION:.0%} of |G|^2 estimates carry "
            f"{s['g2_top_share']:.0%} of their sum" if s["heavy_tailed"] else "")
    return s["b_simple"], s["b_simple_lo"], s["b_simple_hi"], len(g2), tail


def _averaged(kind: str) -> str:
    return (f"after a warm-up of {WARMUP_ITERATIONS} {UNITS[kind]['updates']}; block-bootstrap "
            "95% (docs/noise-scale.md)")


def _b_simple_rows(game: str, term: str, seg: dict[str, list], status_note: str,
                   kind: str = "rl", runs: str = "noise-scale runs") -> list[dict]:
    u, averaged = UNITS[kind], _averaged(kind)
    v, lo, hi, k, tail = _pooled(seg["whole"])
    rows = [result_row("measured", kind, game, "b_simple", v, term=term, lo=lo, hi=hi,
                       unit=u["batch"], n=k,
                       note="run-averaged: mean tr(Sigma) / mean |G|^2 over the measured "
                            f"{u['updates']} of the {runs} {averaged}" + tail
                            + status_note)]
    for name, key, label in (("b_simple_start", "first", "first"),
                             ("b_simple_end", "last", "last")):
        v, lo, hi, k, tail = _pooled(seg[key])
        rows.append(result_row("measured", kind, game, name, v, term=term, lo=lo, hi=hi,
                               unit=u["batch"], n=k,
                               note=f"{label} quarter of each run's measurements "
                                    f"{averaged}" + tail))
    if term == "total":
        for name, key, label in (("return_start", "ret_first", "first"),
                                 ("return_end", "ret_last", "last")):
            r = np.concatenate(seg[key])
            r = r[np.isfinite(r)]
            rows.append(result_row("measured", kind, game, name,
                                   float(r.mean()) if r.size else math.nan, unit=u["score"],
                                   n=int(r.size),
                                   note=f"mean {u['score']} over the {label} quarter of the "
                                        f"measured {u['updates']} after the warm-up"))
    return rows


def noise_b_simple_rows(game: str, metrics: list[pd.DataFrame],
                        status_note: str = "", *, kind: str = "rl",
                        runs: str = "noise-scale runs") -> list[dict]:
    """The B_simple rows of a game's noise-scale runs (or of other ``runs``, e.g. a
    supervised sweep's), every term: run-averaged, first and last quarter (and the return
    over those quarters), over the measurements after the warm-up, pooled over the runs."""
    rows = []
    for term in GNS_TERMS:
        seg = _segments(metrics, term)
        if seg["whole"]:
            rows += _b_simple_rows(game, term, seg, status_note, kind, runs)
    return rows


def _before_target(m: pd.DataFrame, target: float, window: int) -> tuple[pd.DataFrame, bool]:
    """The metrics rows of one run up to the first that reaches ``target`` (the rule of
    ``rl.measure.returns``), and whether it reached it (else all rows)."""
    hit = first_reach(m, target, window)
    return (m if hit is None else m.iloc[:hit + 1]), hit is not None


def b_simple_to_target_rows(game: str, metrics: list[pd.DataFrame], targets: Sequence[float],
                            window: int) -> list[dict]:
    """B_simple of the noise-scale runs over their training up to each target: the
    measurements after the warm-up taken before a run first reaches the target, pooled over
    the runs (a run that never reaches it counts whole). This is the noise scale of the
    stretch of training a critical-batch sweep times to that target, the one to set beside
    its B_crit (``rl.study.crosstask``)."""
    rows = []
    for t in targets:
        parts = [_before_target(m, t, window) for m in metrics]
        reached = sum(ok for _, ok in parts)
        for term in GNS_TERMS:
            pairs = [(c["g2"].to_numpy(float), c["trace_sigma"].to_numpy(float))
                     for c in (counted_measurements(m, term) for m, _ in parts) if len(c)]
            if not pairs:
                continue
            v, lo, hi, k, tail = _pooled(pairs)
            missed = "" if reached == len(parts) else \
                f"; {len(parts) - reached} of {len(parts)} runs never reached it (counted whole)"
            rows.append(result_row(
                "measured", "rl", game, "b_simple_to_target", v, term=term, target=float(t),
                lo=lo, hi=hi, unit="agent steps", n=k,
                note=f"noise-scale runs up to the first iteration at return {t:g} "
                     f"{_averaged('rl')}" + missed + tail))
    return rows


def _noise_run_rows(game: str, table: pd.DataFrame, status_note: str) -> list[dict]:
    steps = table["agent_steps"].astype(float)
    final = table["final_return_recent"].astype(float)
    return [
        result_row("measured", "rl", game, "agent_steps", float(steps.mean()),
                   unit="agent steps", n=int(steps.notna().sum()),
                   note="trained per noise-scale run (mean)" + status_note),
        result_row("measured", "rl", game, "final_return", float(final.mean()),
                   unit="return", n=int(final.notna().sum()),
                   note="mean return of the last games at the end of each noise-scale "
                        "run (mean over runs)"),
    ]


def _noise_rows(game: str, plan_g: GamePlan, part: Part) -> list[dict]:
    runs = plan_runs(part.spec)
    table = results_table(runs, part.spec.targets)
    n = plan_g.noise
    rows = [result_row("measured", "rl", game, "rollout_batch_size", n.num_envs * n.num_steps,
                       unit="agent steps",
                       note=f"noise-scale runs: num_envs x num_steps = {n.num_envs} x "
                            f"{n.num_steps}")]
    metrics = noise_metrics(part)
    settled = int(table["status"].isin(["finished", "failed"]).sum())
    status_note = "" if settled == len(runs) else \
        f"; {len(runs) - settled} of {len(runs)} runs not finished"
    rows += noise_b_simple_rows(game, metrics, status_note)
    if metrics:
        rows += _noise_run_rows(game, table, status_note)
    return rows


# --------------------------------------------------------------------------------------
# Critical-batch sweeps, the supervised reference, published values
# --------------------------------------------------------------------------------------


def _b_crit_row(game: str, f: Mapping[str, Any], level: str, kind: str = "rl") -> dict:
    """The b_crit row of one target: a measured number with its profile interval; a bound
    (value NaN; lo = the bound, hi = inf for '>=', lo = 0, hi = the bound for '<='; the note
    starts 'lower bound' / 'upper bound'); or no fit (all NaN, the note says why)."""
    t, reached = float(f["target"]), int(f["n_batch_sizes"])
    tried = f"{reached} of {int(f['n_batch_sizes_tried'])} batch sizes reached the target"
    common = dict(target=t, unit=UNITS[kind]["batch"], n=reached)
    if bool(f["ok"]):
        note = (f"measured ({int(f['n_at_or_above'])} batch sizes at or above it, "
                f"{int(f['n_below'])} below); {level} profile interval from the fit's residuals "
                f"(seed scatter and lack of fit); {tried}")
        return result_row("measured", kind, game, "b_crit", f["b_crit"], lo=f["b_crit_lo"],
                          hi=f["b_crit_hi"], note=note, **common)
    bound, value = str(f.get("bound", "") or ""), float(f["b_crit_bound"])
    if bound and math.isfinite(value):
        lower = bound == ">="
        return result_row("measured", kind, game, "b_crit", math.nan,
                          lo=value if lower else 0.0, hi=math.inf if lower else value,
                          note=f"{'lower' if lower else 'upper'} bound: {f['reason']}; {tried}",
                          **common)
    return result_row("measured", kind, game, "b_crit", math.nan,
                      note=f"no fit ({f['kind']}): {f['reason']}; {tried}", **common)


def _fit_check_rows(game: str, f: Mapping[str, Any], level: str, kind: str = "rl"
                    ) -> list[dict]:
    """The checks beside a B_crit: the seed-only interval, the lack-of-fit F, the range of
    leave-one-out refits."""
    t = float(f["target"])
    rows = []
    if bool(f["ok"]):
        note = f"{level} seed-only bootstrap interval (misses lack of fit)"
        if caveat := few_seeds_caveat(f["min_seeds"]):
            note += f"; {caveat}"
        rows.append(result_row("measured", kind, game, "b_crit_seed_interval", f["b_crit"],
                               target=t, lo=f["b_crit_seed_lo"], hi=f["b_crit_seed_hi"],
                               unit=UNITS[kind]["batch"], n=f["min_seeds"], note=note))
    if pd.notna(f["lof_f"]):
        rows.append(result_row(
            "measured", kind, game, "b_crit_lack_of_fit", f["lof_f"], target=t, unit="F",
            n=f["lof_df_seeds"],
            note=f"lack-of-fit F on ({int(f['lof_df_batch'])}, {int(f['lof_df_seeds'])}) df, p "
                 f"{float(f['lof_p']):.2g}; batch sd {float(f['batch_sd_log']):.2g}, seed sd "
                 f"{float(f['seed_sd_log']):.2g} (log S)"))
    if pd.notna(f["b_crit_loo_min"]):
        outside = "" if pd.isna(f["loo_outside"]) else \
            f"; {int(f['loo_outside'])} outside the interval"
        rows.append(result_row(
            "measured", kind, game, "b_crit_leave_one_out", math.nan, target=t,
            lo=f["b_crit_loo_min"], hi=f["b_crit_loo_max"], unit=UNITS[kind]["batch"],
            n=f["n_batch_sizes"],
            note=f"range of the fitted B_crit leaving one batch size out{outside}: "
                 f"{f['b_crit_leave_one_out']}"))
    return rows


def part_table(part: Part) -> pd.DataFrame:
    """The results table of a study part, from its run directories; for a stored sweep
    whose run directories were not kept (none of them exists, as for a sweep committed as
    its results.csv) the stored table, which then must exist (``sweep_table``)."""
    return sweep_table(part.spec)


def _sweep_rows(game: str, part: Part, n_boot: int,
                ci: float = B_CRIT_CI, kind: str = "rl") -> tuple[list[dict], Any]:
    u = UNITS[kind]
    table = part_table(part)
    floors = {env: fl.floor for env, fl in read_untrained_floors(part.out).items()}
    fits, per_batch = fit_sweep(table, n_boot=n_boot, ci=ci, floors=floors)
    settled = int(table["status"].isin(["finished", "failed"]).sum())
    rows = [result_row("measured", kind, game, "sweep_runs_settled", settled, unit="runs",
                       n=len(table), note=f"runs of the sweep finished (or failed) of {len(table)}"
                       "; the fits use only these")]
    if game in floors:
        fl = read_untrained_floors(part.out)[game]
        what = (f"untrained play, mean {fl.mean:.3g}, sd {fl.sd:.3g} per game over {fl.games} "
                "games" if kind == "rl" else f"untrained networks, mean {fl.mean:.3g}, sd "
                f"{fl.sd:.3g} over {fl.games} initializations")
        rows.append(result_row("measured", kind, game, "untrained_floor", fl.floor,
                               unit=u["score"], n=fl.games,
                               note=f"targets must exceed it: {what} (docs/sweeps.md)"))
    level = f"{ci:.0%}"
    for _, f in fits.iterrows():
        t = float(f["target"])
        ok = bool(f["ok"])
        reached = int(f["n_batch_sizes"])
        rows.append(_b_crit_row(game, f, level, kind))
        rows += _fit_check_rows(game, f, level, kind)
        rows.append(result_row("measured", kind, game, "s_min", f["s_min"], target=t,
                               lo=f["s_min_lo"], hi=f["s_min_hi"], unit=u["steps"],
                               n=reached, note=f"fit; {level} profile interval" if ok else
                               "no measured B_crit"))
        rows.append(result_row("measured", kind, game, "e_min", f["e_min"], target=t,
                               lo=f["e_min_lo"], hi=f["e_min_hi"], unit=u["batch"],
                               n=reached, note=f"fit; {level} profile interval" if ok else
                               "no measured B_crit"))
        for term in GNS_TERMS:
            if kind != "rl" and not pd.notna(f[f"b_simple_{term}"]):
                continue  # a supervised run has one loss (the total term)
            rows.append(result_row("measured", kind, game, "b_simple_sweep",
                                   f[f"b_simple_{term}"], term=term, target=t,
                                   unit=u["batch"], n=f["b_simple_runs"],
                                   note="mean over the sweep runs at each batch size's best lr "
                                        "of each run's run-averaged B_simple"))
    return rows, (table, fits, per_batch)


def best_lr_runs(part: Part, table: pd.DataFrame) -> list[str]:
    """The runs of a sweep at each batch size's best lr at its highest target (every seed):
    the runs its B_crit there rests on."""
    settled = table[table["status"].isin(["finished", "failed"])]
    long = long_results(settled)
    long = long[long["target"] == max(part.spec.targets)]
    if long.empty:
        return []
    _, per_seed = best_per_batch(long)
    return list(per_seed["run"])


def supervised_sweep_rows(part: Part, n_boot: int, ci: float = B_CRIT_CI
                          ) -> tuple[list[dict], Any]:
    """A supervised task's sweep rows (kind supervised, task = the task's name): B_crit and
    its checks as for a game; B_simple along the runs at each batch size's best lr at the
    highest target, pooled after the warm-up (b_simple, its quarters); power laws of B_crit,
    S_min and E_min in the training loss (minus the target)."""
    task = part.game
    rows, fitted = _sweep_rows(task, part, n_boot, ci, kind="supervised")
    table, fits, _ = fitted
    chosen = set(best_lr_runs(part, table))
    metrics = [load_metrics(Path(p.run_dir)) for p in plan_runs(part.spec)
               if p.name in chosen and has_metrics(p.run_dir)]
    rows += noise_b_simple_rows(task, metrics, kind="supervised",
                                runs=f"{len(metrics)} sweep runs at each batch size's best lr")
    laws, _ = tradeoff_power_laws(table, fits=fits, n_boot=n_boot, axis="distance",
                                  best_return=0.0)
    for _, r in laws.iterrows():
        rows.append(result_row("measured", "supervised", task, f"{r['quantity']}_exponent",
                               r["exponent"], lo=r["exponent_lo"], hi=r["exponent_hi"],
                               unit="exponent in the training loss", n=r["n_points"],
                               note=_law_note(r, "training loss (minus the target)")))
    return rows, fitted


def _supervised_rows(summary: Mapping[str, Any], cfg) -> list[dict]:
    task = f"{cfg.dataset} ({cfg.model})"
    common = dict(unit="training examples")
    desc = (f"{summary['gns_big_batch'] // summary['gns_small_batch']} groups of "
            f"{summary['gns_small_batch']} examples per measurement")
    rows = [result_row("measured", "supervised", task, "b_simple", summary["b_simple_run"],
                       term="total", lo=summary["b_simple_run_lower"],
                       hi=summary["b_simple_run_upper"], n=summary["measurements"],
                       note=f"run-averaged, same estimator as RL ({desc}); Fieller 95%",
                       **common)]
    for key, label in (("start", "first"), ("end", "last")):
        rows.append(result_row("measured", "supervised", task, f"b_simple_{key}",
                               summary[f"b_simple_{key}"], term="total",
                               lo=summary[f"b_simple_{key}_lower"],
                               hi=summary[f"b_simple_{key}_upper"],
                               n=summary["segment_measurements"],
                               note=f"{label} quarter of the measurements; Fieller 95%",
                               **common))
    rows.append(result_row("measured", "supervised", task, "final_test_accuracy",
                           summary["final_test_acc"], unit="fraction",
                           note=f"after {summary['steps']} steps of {summary['batch_size']} "
                                "examples"))
    return rows


def _cited_rows() -> list[dict]:
    rows = []
    for task, kind, b_crit, b_simple, unit, note in CITED:
        for quantity, v in (("b_crit", b_crit), ("b_simple", b_simple)):
            if isinstance(v, tuple):
                lo, hi = v
                rows.append(result_row("cited", kind, task, quantity, math.nan, lo=lo, hi=hi,
                                       unit=unit, note=note, reference=CITED_REFERENCE))
            else:
                rows.append(result_row("cited", kind, task, quantity, float(v), unit=unit,
                                       note=note, reference=CITED_REFERENCE))
    return rows


# --------------------------------------------------------------------------------------
# Power laws in performance and sharpness against batch size
# (rl.analysis.power_laws, rl.analysis.sharpness)
# --------------------------------------------------------------------------------------


def _law_note(r, what: str, source: str = "") -> str:
    if not bool(r["ok"]):
        return f"refused: {r['reason']}" + (f" ({source})" if source else "")
    return (f"log-log least squares against the {what} over {int(r['n_points'])} points "
            f"from {r['x_min']:.4g} to {r['x_max']:.4g}; 95% seed bootstrap "
            f"({int(r['boot_failed'])} of {int(r['n_boot'])} replicates unusable)")


NOISE_LAW_SOURCES = {"noise": "noise-scale runs",
                     "sweep": "sweep runs, every batch size split by environments"}
"""what a game's B_simple-against-return law rests on: its noise-scale runs, else (a game
with a sweep only) the sweep's runs pooled, each measurement an estimate at that policy"""


def _env_split_rows(metrics: pd.DataFrame) -> pd.DataFrame:
    """The rows measured on rollouts split along the environment axis (docs/noise-scale.md:
    a split in time gives correlated groups and a B_simple biased low)."""
    if "gns/split_envs" not in metrics:
        return metrics
    return metrics[pd.to_numeric(metrics["gns/split_envs"], errors="coerce") == 1]


def noise_law_metrics(game: str, parts: Mapping[tuple[str, str], Part]
                      ) -> tuple[str, list[pd.DataFrame]]:
    """(the source label of NOISE_LAW_SOURCES, the runs' metrics) for the B_simple laws.
    Pooled sweep runs contribute only their measurements on environment-split rollouts."""
    for kind in NOISE_LAW_SOURCES:
        if (kind, game) in parts:
            metrics = noise_metrics(parts[(kind, game)])
            if kind == "sweep":
                metrics = [m for m in map(_env_split_rows, metrics) if len(m)]
            if metrics:
                return NOISE_LAW_SOURCES[kind], metrics
    return "", []


def power_laws(game: str, parts: Mapping[tuple[str, str], Part], fits: Mapping[str, Any],
               n_boot: int) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame, str]:
    """(tradeoff laws, their points, B_simple laws, their points, what the B_simple laws
    rest on) of a game; empty frames where it has no sweep or no noise measurements."""

    empty = pd.DataFrame(columns=POWER_LAW_COLUMNS)
    laws, pts, noise, noise_pts = empty, pd.DataFrame(), empty, pd.DataFrame()
    if game in fits:
        table, f, _ = fits[game]
        laws, pts = tradeoff_power_laws(table, fits=f, n_boot=n_boot)
    source, metrics = noise_law_metrics(game, parts)
    if metrics:
        noise, noise_pts = noise_scale_power_laws(game, metrics, n_boot=n_boot)
    return laws, pts, noise, noise_pts, source


def _power_law_rows(game: str, parts: Mapping[tuple[str, str], Part], fits: Mapping[str, Any],
                    n_boot: int) -> list[dict]:
    laws, _, noise, _, source = power_laws(game, parts, fits, n_boot)
    rows = []
    for _, r in laws.iterrows():
        rows.append(result_row("measured", "rl", game, f"{r['quantity']}_exponent",
                               r["exponent"], lo=r["exponent_lo"], hi=r["exponent_hi"],
                               unit="exponent in the target return", n=r["n_points"],
                               note=_law_note(r, "target return")))
    for _, r in noise.iterrows():
        rows.append(result_row("measured", "rl", game, "b_simple_exponent", r["exponent"],
                               term=r["term"], lo=r["exponent_lo"], hi=r["exponent_hi"],
                               unit="exponent in the smoothed return", n=r["n_points"],
                               note=_law_note(r, f"smoothed return (return bins of the "
                                                 f"{source})", source)))
    return rows


def _sharpness_quantities(df: pd.DataFrame) -> tuple[dict[str, str], str]:
    """({column: label} of the sharpness measures in ``df``, the eps-sharpness column)."""
    eps_col = f"eps_sharpness_{SHARPNESS_EPS:g}"
    quantities = {"top_eigenvalue": "largest Hessian eigenvalue (Lanczos, converged values)"}
    if "min_eigenvalue" in df:
        quantities["min_eigenvalue"] = "most negative Hessian eigenvalue (Lanczos, converged " \
                                       "values)"
    quantities[eps_col] = f"eps-sharpness, eps = {SHARPNESS_EPS:g}"
    if "gap" in df:
        quantities["gap"] = "generalization gap, train - test accuracy"
    return quantities, eps_col


def _sharpness_rows(task: str, kind: str, path: Path, x: str, unit: str) -> list[dict]:
    if not path.exists():
        return []
    df = pd.read_csv(path)
    quantities, eps_col = _sharpness_quantities(df)
    terms = sorted(df["term"].unique()) if "term" in df else [""]
    what = ("fresh rollouts" if kind == "rl" else "training seeds")
    rows = []
    for term in terms:
        d = df if term == "" else df[df["term"] == term]
        summary = summarize_repeats(d, [x], list(quantities))
        for col, label in quantities.items():
            name = "eps_sharpness" if col == eps_col else col
            for _, r in summary.iterrows():
                se, used, reps = r[f"{col}_se"], int(r[f"{col}_n"]), int(r["repeats"])
                left_out = (f" ({reps - used} of {reps} did not converge and are left out)"
                            if used < reps else "")
                rows.append(result_row(
                    "measured", kind, task, name, r[col], term=term, batch_size=r[x],
                    lo=r[col] - se, hi=r[col] + se, unit=unit, n=used,
                    note=f"{label}: mean +- 1 standard error over {used} {what}{left_out}"))
            t = trend(d[x], d[col])
            rows.append(result_row(
                "measured", kind, task, f"{name}_trend", t["slope"], term=term, lo=t["lo"],
                hi=t["hi"], unit="change per doubling of the batch size", n=t["n"],
                note=f"{t['verdict']}: least-squares slope of the {label} against "
                     f"log2(batch size) over every repeat; 95% t interval"))
    return rows


# --------------------------------------------------------------------------------------
# The table
# --------------------------------------------------------------------------------------


def finalize_table(rows: list[dict]) -> pd.DataFrame:
    """Rows -> the results table: RESULT_COLUMNS, numbers rounded as printed."""
    df = pd.DataFrame(rows, columns=RESULT_COLUMNS)
    for col in _ROUNDED:
        df[col] = [round_sig(v) for v in pd.to_numeric(df[col], errors="coerce")]
    df["n"] = pd.to_numeric(df["n"], errors="coerce").astype(float)
    for col in TEXT_COLUMNS:
        df[col] = df[col].fillna("").astype(str)
    return df


def _game_rows(plan: StudyPlan, g: GamePlan, parts: Mapping[tuple[str, str], Part],
               fits: dict[str, Any]) -> list[dict]:
    """A game's rows; its sweep fits go into ``fits``."""
    rows: list[dict] = []
    if ("noise", g.game) in parts:
        rows += _noise_rows(g.game, g, parts[("noise", g.game)])
    if ("sweep", g.game) in parts:
        r, fits[g.game] = _sweep_rows(g.game, parts[("sweep", g.game)], plan.n_boot)
        rows += r
        if ("noise", g.game) in parts:
            noise = parts[("noise", g.game)]
            window = int(plan_runs(noise.spec)[0].train.get("return_window", 20))
            rows += b_simple_to_target_rows(g.game, noise_metrics(noise),
                                            parts[("sweep", g.game)].spec.targets, window)
    rows += _power_law_rows(g.game, parts, fits, plan.n_boot)
    if ("sweep", g.game) in parts:
        sharpness = parts[("sweep", g.game)].analysis_dir / SHARPNESS_FILE
        rows += _sharpness_rows(g.game, "rl", sharpness, "rollout_batch_size", "agent steps")
    return rows


def _supervised_reference_rows(plan: StudyPlan, summary: Mapping | None) -> list[dict]:
    sup_dir = supervised_dir(plan)
    if sup_dir is None:
        return []
    rows = _sharpness_rows(f"{plan.supervised.dataset} ({plan.supervised.model})",
                           "supervised", Path(plan.out) / "supervised" / SHARPNESS_FILE,
                           "batch_size", "training examples")
    if summary is None and (sup_dir / "summary.json").exists():
        summary = json.loads((sup_dir / "summary.json").read_text())
    if summary is not None:
        rows += _supervised_rows(summary, plan.supervised)
    return rows


def collect_results(plan: StudyPlan, *, supervised_summary: Mapping | None = None
                    ) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The results table of a study, from its directories (not from memory: a second
    invocation rebuilds the same table). Returns (table, sweep fits by game or supervised
    task)."""
    rows: list[dict] = []
    fits: dict[str, Any] = {}
    parts = {(p.kind, p.game): p for p in study_parts(plan)}
    for g in plan.games:
        rows += _game_rows(plan, g, parts, fits)
    for s in plan.supervised_sweeps:
        r, fits[s.task] = supervised_sweep_rows(parts[(SUPERVISED_PART, s.task)], plan.n_boot)
        rows += r
    rows += _supervised_reference_rows(plan, supervised_summary)
    rows += _cited_rows()
    return finalize_table(rows), fits


def read_results_table(path: str | os.PathLike[str]) -> pd.DataFrame:
    # Text columns as text even when empty (else read as float, and filled with "" below).
    df = pd.read_csv(path, keep_default_na=False, na_values=[""],
                     dtype={col: object for col in TEXT_COLUMNS})
    for col in TEXT_COLUMNS:
        df[col] = df[col].fillna("").astype(str)
    for col in ("target", "batch_size", "value", "lo", "hi", "n"):
        df[col] = pd.to_numeric(df[col], errors="coerce").astype(float)
    return df[RESULT_COLUMNS]
