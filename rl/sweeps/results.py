"""A sweep's results table: one row per run, read from its run directory.

Steps to each target (the rule of ``rl.measure.returns``), the run-averaged noise scale
per loss term, throughput; ``long_results`` gives one row per (run, target).
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from rl.measure.ppo_noise import EMA_BETA, TERMS
from rl.measure.returns import first_reach
from rl.measure.run_average import ema_ratios
from rl.measure.warmup import counted_measurements
from rl.runs.files import atomic_write_bytes, atomic_write_text
from rl.runs.record import load_run_metrics, peek_status
from rl.sweeps.settings import SweepSpec, SweepStateError, tkey
from rl.sweeps.spec import plan_runs
from rl.sweeps.state import RunPlan, check_plans, is_interrupted

GNS_TERMS = TERMS
"""Loss terms of the noise-scale columns (the measured terms, ``rl.measure.ppo_noise``)."""

RESULT_TIMING_COLUMNS = ("sps_median",)
"""Results-table columns that measure speed, not learning: they differ between identical
runs (the metrics rows' own are ``rl.train.config.TIMING_COLUMNS``)."""


def result_columns(targets: Iterable[float]) -> list[str]:
    """Columns of the results table, in order."""
    cols = ["run", "env", "rollout_batch_size", "num_envs", "num_steps", "lr", "seed",
            "status", "iterations", "agent_steps", "episodes_total", "final_return_recent"]
    for t in sorted(targets):
        cols += [f"iterations_to_target_{tkey(t)}", f"agent_steps_to_target_{tkey(t)}"]
    cols += [f"b_simple_{term}" for term in GNS_TERMS]
    cols += ["gns_measurements", "gns_split", "sps_median", "message"]
    return cols


def _b_simple(metrics: pd.DataFrame, term: str) -> tuple[float, int]:
    """(run-averaged B_simple, measurements counted): mean(trace_sigma) / mean(g2) over the
    measurements after the warm-up (``rl.measure.warmup.counted_measurements``); NaN when
    none counts or when mean(g2) <= 0."""
    m = counted_measurements(metrics, term)
    if m.empty:
        return math.nan, 0
    g2_mean, tr_mean = m["g2"].mean(), m["trace_sigma"].mean()
    return (float(tr_mean / g2_mean) if g2_mean > 0 else math.nan), len(m)


INDEPENDENT_SPLITS = ("envs", "iid")
"""``gns_split`` values whose groups are independent (their B_simple is not biased low)."""


def gns_split(metrics: pd.DataFrame) -> str:
    """How the run's measured rollouts were split into groups: "envs" (independent groups of
    whole environments), "time" (blocks of steps: groups correlated, docs/noise-scale.md),
    "mixed", "iid" (a supervised run: groups of independent draws from the training set), or
    "" (nothing measured)."""
    if "gns/iid" in metrics:
        return "iid"
    if "gns/split_envs" not in metrics:
        return ""
    split = pd.to_numeric(metrics["gns/split_envs"], errors="coerce").dropna()
    if split.empty:
        return ""
    return "envs" if (split == 1).all() else "time" if (split == 0).all() else "mixed"


def run_row(plan: RunPlan, targets: Iterable[float]) -> dict[str, Any]:
    """The results-table row of one run, from its run directory.

    iterations_to_target_{t}: the first iteration whose ``return_recent`` >= t with at
    least ``return_window`` games finished (NaN if never); agent_steps_to_target_{t}: the
    agent steps at that iteration. A supervised run's rows (``rl.measure.supervised``):
    optimizer steps, examples, its progress score and its evaluations, with a window of 1.
    b_simple_{term}: see ``_b_simple``; gns_split: see ``gns_split``. status: pending (no
    run yet), running (started, not finished: in progress or interrupted by a kill),
    interrupted (stopped by a signal, or by the machine: disk full, out of memory), finished,
    failed.
    """
    path = Path(plan.run_dir)
    status = peek_status(path)
    row: dict[str, Any] = dict(
        run=plan.name, env=plan.env, rollout_batch_size=plan.rollout_batch_size,
        num_envs=plan.num_envs, num_steps=plan.num_steps, lr=plan.lr, seed=plan.seed,
        status="pending" if status is None else ("interrupted" if is_interrupted(status)
                                                 else status.state or "pending"),
        message="" if status is None else status.message,
    )
    metrics = load_run_metrics(path)
    window = plan.return_window
    if len(metrics) and "return_recent" in metrics:
        last = metrics.iloc[-1]
        row.update(iterations=int(last["iteration"]), agent_steps=int(last["agent_steps"]),
                   episodes_total=int(last["episodes_total"]),
                   final_return_recent=float(last["return_recent"]))
        for t in targets:
            hit = first_reach(metrics, t, window)
            it = math.nan if hit is None else float(metrics["iteration"].iloc[hit])
            steps = math.nan if hit is None else float(metrics["agent_steps"].iloc[hit])
            row[f"iterations_to_target_{tkey(t)}"] = it
            row[f"agent_steps_to_target_{tkey(t)}"] = steps
        n_measured = 0
        for term in GNS_TERMS:
            row[f"b_simple_{term}"], n = _b_simple(metrics, term)
            n_measured = max(n_measured, n)
        row["gns_measurements"] = n_measured
        row["gns_split"] = gns_split(metrics)
        if "sps" in metrics:
            row["sps_median"] = float(pd.to_numeric(metrics["sps"], errors="coerce").median())
    columns = result_columns(targets)
    return {c: row.get(c, math.nan) for c in columns}


def results_table(plans: list[RunPlan], targets: Iterable[float],
                  rows: Mapping[str, dict[str, Any]] | None = None) -> pd.DataFrame:
    """One row per planned run (``result_columns``); ``rows`` caches rows by run name."""
    targets = list(targets)
    rows = dict(rows or {})
    data = [rows.get(p.name) or run_row(p, targets) for p in plans]
    df = pd.DataFrame(data, columns=result_columns(targets))
    for col in ("iterations", "agent_steps", "episodes_total", "gns_measurements"):
        df[col] = df[col].astype("float64")
    for col in ("message", "gns_split"):  # text, also where every row is empty (NaN)
        df[col] = df[col].astype(object).fillna("").astype(str)
    return df


def sweep_table(spec: SweepSpec) -> pd.DataFrame:
    """The results table of the sweep ``spec`` plans, rebuilt from its run directories (it
    may be newer than the stored table if the sweep was killed; a damaged metrics file of a
    finished run is an error, ``load_metrics``; a run directory holding a run with other
    settings, e.g. copied from another sweep, is a ``SweepStateError`` as for the sweep,
    ``check_plans``). For a stored sweep whose run directories were not kept (none of them
    exists, as for a sweep committed as its results.csv): the stored table, which then must
    exist."""
    plans = plan_runs(spec)
    # lexists: a run directory that is a dangling link is there, not "not kept".
    if not any(os.path.lexists(p.run_dir) for p in plans) and \
            (Path(spec.out) / "results.csv").exists():
        return read_results(spec.out)
    check_plans(spec, plans)
    return results_table(plans, spec.targets)


def long_results(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (run, target): env, target, rollout_batch_size, lr, seed,
    iterations_to_target, agent_steps_to_target (NaN = not reached), plus num_envs,
    num_steps, status, run and the b_simple_* columns. Feeds ``rl.analysis.fit.fit_from_runs``."""
    prefix = "iterations_to_target_"
    keys = [c[len(prefix):] for c in df.columns if c.startswith(prefix)]
    required = ["env", "rollout_batch_size", "lr", "seed", "status", "run"]
    missing = [c for c in [*required, *(f"agent_steps_to_target_{k}" for k in keys)]
               if c not in df.columns]
    if missing:
        raise ValueError(f"the results table lacks column(s) {missing} (columns present: "
                         f"{[str(c) for c in df.columns]}); is it a sweep's results table?")
    optional = ["num_envs", "num_steps", *[f"b_simple_{t}" for t in GNS_TERMS]]
    df = df.assign(**{c: math.nan for c in optional if c not in df.columns})  # older tables
    keep = [*required[:4], "num_envs", "num_steps", "status", "run", *optional[2:]]
    parts = []
    for key in keys:
        part = df[keep].copy()
        part.insert(1, "target", float(key))
        part["iterations_to_target"] = df[prefix + key].astype(float)
        part["agent_steps_to_target"] = df[f"agent_steps_to_target_{key}"].astype(float)
        parts.append(part)
    cols = ["env", "target", "rollout_batch_size", "lr", "seed", "iterations_to_target",
            "agent_steps_to_target", "num_envs", "num_steps", "status", "run",
            *[f"b_simple_{t}" for t in GNS_TERMS]]
    if not parts:
        return pd.DataFrame(columns=cols)
    out = pd.concat(parts, ignore_index=True)[cols]
    return out.sort_values(["env", "target", "rollout_batch_size", "lr", "seed"],
                           kind="stable").reset_index(drop=True)


SHARPNESS_FILE = "sharpness.csv"
"""Per-repeat sharpness of a sweep's runs, written by ``rlscale sharpness SWEEP_DIR``."""


def with_sharpness(df: pd.DataFrame, out: str | os.PathLike[str]) -> pd.DataFrame:
    """``df`` with per-run sharpness columns from ``<out>/sharpness.csv`` where it exists:
    ``top_eigenvalue_{policy,value}`` and ``eps_sharpness_{policy,value}`` (the first eps
    measured), each the mean over the repeats; NaN for runs not measured. Columns already in
    ``df`` are replaced, so the table follows the latest measurement."""
    path = Path(out) / SHARPNESS_FILE
    if not path.exists() or "run" not in df.columns:
        return df
    sharp = pd.read_csv(path)
    eps_cols = [c for c in sharp.columns if c.startswith("eps_sharpness_")]
    if sharp.empty or not {"run", "term", "top_eigenvalue"} <= set(sharp.columns) or not eps_cols:
        return df
    means = sharp.groupby(["run", "term"])[["top_eigenvalue", eps_cols[0]]].mean()
    means = means.rename(columns={eps_cols[0]: "eps_sharpness"}).unstack("term")
    means.columns = [f"{name}_{term}" for name, term in means.columns]
    df = df.drop(columns=[c for c in means.columns if c in df.columns])
    return df.merge(means, how="left", left_on="run", right_index=True)


SHARPNESS_ORDER = ["rollout_batch_size", "run", "term", "repeat"]
"""The row order of a sweep's sharpness table."""


def read_sharpness_rows(path: str | os.PathLike[str]) -> pd.DataFrame:
    """The per-repeat rows of a sweep's sharpness table at ``path`` (none where the file is
    missing or empty). ValueError naming the file where it cannot be read as one: merging
    new rows into it would destroy it."""
    path = Path(path)
    try:
        df = pd.read_csv(path)
    except (FileNotFoundError, pd.errors.EmptyDataError):
        return pd.DataFrame(columns=["run"])
    except (ValueError, UnicodeDecodeError) as exc:  # pandas' ParserError is a ValueError
        raise ValueError(f"{path} cannot be read as a sharpness table ("
                         f"{' '.join(str(exc).split())}); move it away (its runs are then "
                         "measured again) or give another --out") from None
    if "run" not in df.columns:
        raise ValueError(f"{path} has no 'run' column: it is not a sweep's sharpness table "
                         "(a single run's?); move it away or give another --out")
    return df


def merge_by_run(earlier: pd.DataFrame, new: pd.DataFrame) -> pd.DataFrame:
    """``earlier``'s rows of the runs ``new`` does not hold, then ``new``'s rows: each run's
    rows come from its latest measurement, and the other runs' rows are kept."""
    kept = earlier[~earlier["run"].isin(set(new["run"]))]
    merged = pd.concat([d for d in (kept, new) if len(d)], ignore_index=True)
    order = [c for c in SHARPNESS_ORDER if c in merged.columns]
    return merged.sort_values(order, kind="stable").reset_index(drop=True)


def write_results(out: str | os.PathLike[str], df: pd.DataFrame) -> None:
    """results.csv, results.parquet and results_long.csv, each written atomically (with the
    sharpness columns where the sweep's runs were measured, ``with_sharpness``)."""
    out = Path(out)
    df = with_sharpness(df, out)
    atomic_write_text(out / "results.csv", df.to_csv(index=False))
    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    atomic_write_bytes(out / "results.parquet", buf.getvalue())
    atomic_write_text(out / "results_long.csv", long_results(df).to_csv(index=False))


NUMERIC_RESULT_COLUMNS = ("rollout_batch_size", "num_envs", "num_steps", "lr", "seed",
                          "iterations", "agent_steps", "episodes_total", "final_return_recent",
                          "gns_measurements", "sps_median")
NUMERIC_RESULT_PREFIXES = ("iterations_to_target_", "agent_steps_to_target_", "b_simple_")
"""Results-table columns that hold numbers (NaN where not measured), ``result_columns``."""


def _is_numeric_column(column: str) -> bool:
    return column in NUMERIC_RESULT_COLUMNS or column.startswith(NUMERIC_RESULT_PREFIXES)


def _fix_table(out: Path) -> str:
    return (f"restore the file from a copy, or, where the sweep's run directories were kept, "
            f"rebuild it with `rlscale sweep --out {out}` (finished runs are not run again)")


def _read_results_csv(path: Path) -> pd.DataFrame:
    """results.csv, its number columns as numbers; ``SweepStateError`` naming the file (and
    the first row and column holding something else) where it is not a results table: a
    stray text in a number column would otherwise surface far from here, as a failed
    conversion or format."""
    try:
        df = pd.read_csv(path, dtype={"message": object}).fillna({"message": ""})
    except (ValueError, UnicodeDecodeError) as exc:  # pandas' ParserError is a ValueError
        raise SweepStateError(f"{path} cannot be read as a results table ("
                              f"{' '.join(str(exc).split())}); {_fix_table(path.parent)}"
                              ) from None
    for column in filter(_is_numeric_column, df.columns):
        values = pd.to_numeric(df[column], errors="coerce")
        bad = values.isna() & df[column].notna()
        if bad.any():
            row = int(bad.to_numpy().argmax())
            run = f" (run {df['run'].iloc[row]})" if "run" in df.columns else ""
            raise SweepStateError(
                f"{path}, row {row + 1}{run}: {column} is {df[column].iloc[row]!r}, not a "
                f"number (the row was changed or cut short); correct or delete that row, or "
                f"{_fix_table(path.parent)}")
        df[column] = values
    return df


def read_results(out: str | os.PathLike[str]) -> pd.DataFrame:
    """The results table of a sweep directory (parquet, else csv), with the sharpness
    columns where the runs were measured (``with_sharpness``). ``SweepStateError`` naming
    the file where results.csv is not a results table (``_read_results_csv``)."""
    out = Path(out)
    if (out / "results.parquet").exists():
        try:
            table = pd.read_parquet(out / "results.parquet")
        except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
            raise SweepStateError(
                f"{out / 'results.parquet'} cannot be read ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0] if str(exc) else 'damaged'}); move it away: "
                "results.csv beside it holds the same table, and where the run directories "
                "are kept, `rlscale sweep` and `rlscale fit` write both again") from None
        return with_sharpness(table, out)
    if (out / "results.csv").exists():
        return with_sharpness(_read_results_csv(out / "results.csv"), out)
    raise FileNotFoundError(
        f"{out} holds no results.parquet or results.csv; is it a sweep directory? Run "
        f"`rlscale sweep --out {out} ...` first"
    )


def b_simple_curve(metrics: pd.DataFrame, term: str, beta: float = EMA_BETA) -> pd.DataFrame:
    """(return_recent, b_simple) along a run, at each measurement after the warm-up.

    b_simple is the trainer's smoothing (ratio of bias-corrected EMAs, ``beta`` per
    measurement) recomputed from the raw g2 / trace_sigma rows that count
    (``rl.measure.warmup``), not read from the stored ``b_simple_ema`` column, so that runs
    written before the warm-up rule are read the same way; NaN where the smoothed g2 <= 0.
    """
    m = counted_measurements(metrics, term)
    if m.empty or "return_recent" not in m:
        return pd.DataFrame({"return_recent": [], "b_simple": []})
    return pd.DataFrame({"return_recent": m["return_recent"].to_numpy(float),
                         "b_simple": ema_ratios(m["g2"], m["trace_sigma"], beta)},
                        index=m.index)
