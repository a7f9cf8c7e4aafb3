"""The PBT table of a population (one row per member and PPO iteration) and its plot.

Read from the members' metrics: hyperparameters in force, return, noise scale, and where
each exploit started a new stretch. See docs/sweeps.md.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from rl.runs.files import atomic_write_bytes, atomic_write_text
from rl.runs.record import load_run_metrics
from rl.sweeps.state import read_sweep_state

__all__ = ["PBT_COLUMNS", "member_summary", "pbt_table", "plot_pbt", "write_pbt_outputs"]

PBT_COLUMNS = ["member", "iteration", "agent_steps", "lr", "lr_pbt", "ent_coef", "clip_coef",
               "return", "b_simple_policy", "b_simple_value", "b_simple_total", "gns_measured",
               "donor", "donor_iteration", "exploit"]
"""member; iteration (PPO iterations) and agent_steps of the member's timeline; lr (the rate
in force), lr_pbt (PBT's value; equal without annealing), ent_coef, clip_coef in force;
return (return_recent, smoothed episodic return); b_simple_{term}: the trainer's smoothed
B_simple (ratio of bias-corrected EMAs, agent steps) on rows where the noise scale was
measured, NaN elsewhere; gns_measured; donor, donor_iteration: whose checkpoint at which
iteration the member's current stretch started from (itself and 0 before any exploit);
exploit: the first row after an exploit."""


def _member_names(out: Path) -> list[str]:
    state = read_sweep_state(out) or {}
    names = [r["name"] for r in state.get("runs", [])]
    if names:
        return names
    runs = out / "runs"
    return sorted(p.name for p in runs.iterdir() if p.is_dir() and not p.name.startswith(".")) \
        if runs.is_dir() else []


def pbt_table(out: str | os.PathLike[str]) -> pd.DataFrame:
    """The PBT table (``PBT_COLUMNS``) of a PBT sweep directory, from its members' metrics."""

    out = Path(out)
    frames = []
    for name in _member_names(out):
        path = out / "runs" / name
        m = load_run_metrics(path)
        if m.empty or "agent_steps" not in m:
            continue

        def col(key: str, default: Any = math.nan, m=m) -> pd.Series:
            return m[key] if key in m else pd.Series(default, index=m.index)

        measured = col("gns/total/g2").notna()
        donor = col("pbt/donor", name).fillna(name).astype(str)
        donor_it = pd.to_numeric(col("pbt/donor_iteration", 0), errors="coerce").fillna(0)
        frames.append(pd.DataFrame({
            "member": name,
            "iteration": m["iteration"].astype("int64"),
            "agent_steps": m["agent_steps"].astype("int64"),
            "lr": col("learning_rate").astype(float),
            "lr_pbt": col("pbt/learning_rate").astype(float),
            "ent_coef": col("ent_coef").astype(float),
            "clip_coef": col("clip_coef").astype(float),
            "return": col("return_recent").astype(float),
            **{f"b_simple_{t}": pd.to_numeric(col(f"gns/{t}/b_simple_ema"), errors="coerce")
               .where(measured).astype(float) for t in ("policy", "value", "total")},
            "gns_measured": measured.astype(bool),
            "donor": donor,
            "donor_iteration": donor_it.astype("int64"),
            "exploit": ((donor != name) & (m["iteration"] == donor_it + 1)).astype(bool),
        }))
    if not frames:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in PBT_COLUMNS})
    return pd.concat(frames, ignore_index=True)[PBT_COLUMNS]


def write_pbt_outputs(out: str | os.PathLike[str], *, plot: bool = True) -> pd.DataFrame:
    """Write pbt.csv and pbt.parquet (atomically) and pbt.png; returns the table."""

    out = Path(out)
    table = pbt_table(out)
    atomic_write_text(out / "pbt.csv", table.to_csv(index=False))
    buf = io.BytesIO()
    table.to_parquet(buf, index=False)
    atomic_write_bytes(out / "pbt.parquet", buf.getvalue())
    if plot and len(table):
        plot_pbt(table, out / "pbt.png")
    return table


def plot_pbt(table: pd.DataFrame, path: str | os.PathLike[str]) -> Path:
    """Each member's lr, ent_coef, clip_coef, return and policy B_simple against agent
    steps (one colour per member, a dot where an exploit started a new stretch); written
    atomically as png."""
    from matplotlib import colormaps  # lazy: slow import, figures only
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # lazy: slow import, figures only
    from matplotlib.figure import Figure  # lazy: slow import, figures only

    panels = [("lr", "learning rate in force", True), ("ent_coef", "ent_coef", False),
              ("clip_coef", "clip_coef", False), ("return", "return_recent (smoothed)", False),
              ("b_simple_policy", "B_simple, policy loss (agent steps)", True)]
    fig = Figure(figsize=(9, 12), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(panels), 1, sharex=True)
    members = list(dict.fromkeys(table["member"]))
    cmap = colormaps["tab10"] if len(members) <= 10 else colormaps["viridis"]
    for i, member in enumerate(members):
        rows = table[table["member"] == member].sort_values("iteration")
        colour = cmap(i if len(members) <= 10 else i / max(1, len(members) - 1))
        for ax, (key, _, log) in zip(axes, panels, strict=True):
            d = rows[rows[key].notna() & ((rows[key] > 0) if log else True)]
            if d.empty:
                continue
            measured = key.startswith("b_simple")  # points; the others hold between rows
            ax.plot(d["agent_steps"], d[key], color=colour, lw=1.0,
                    marker="." if measured else None, ms=3,
                    drawstyle="default" if measured else "steps-post",
                    label=member if key == "lr" else None)
            hit = d[d["exploit"]]
            ax.plot(hit["agent_steps"], hit[key], "o", color=colour, ms=5, mfc="none")
    for ax, (_, label, log) in zip(axes, panels, strict=True):
        ax.set_ylabel(label, fontsize=8)
        if log:
            ax.set_yscale("log")
    axes[0].legend(fontsize=7, ncol=min(len(members), 8), loc="best")
    axes[-1].set_xlabel("agent steps")
    fig.suptitle("PBT members: hyperparameters in force, return and policy noise scale "
                 "(circles: first iteration after an exploit)", fontsize=9)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    atomic_write_bytes(Path(path), buf.getvalue())
    return Path(path)


def member_summary(table: pd.DataFrame, targets: Iterable[float] = ()) -> pd.DataFrame:
    """One row per member: its last row's values, exploits, and (per target) the first
    agent_steps at which its return reached the target (NaN if never)."""
    rows = []
    if table.empty:
        return pd.DataFrame(columns=["member", "iterations", "return"])
    for member, rows_m in table.groupby("member", sort=True):
        rows_m = rows_m.sort_values("iteration")
        last = rows_m.iloc[-1]
        measured = rows_m[rows_m["gns_measured"]]
        row = {"member": member, "iterations": int(last["iteration"]),
               "agent_steps": int(last["agent_steps"]), "return": float(last["return"]),
               "lr": float(last["lr"]), "ent_coef": float(last["ent_coef"]),
               "clip_coef": float(last["clip_coef"]), "exploits": int(rows_m["exploit"].sum()),
               "b_simple_policy": float(measured["b_simple_policy"].iloc[-1])
               if len(measured) else math.nan,
               "b_simple_value": float(measured["b_simple_value"].iloc[-1])
               if len(measured) else math.nan}
        for t in targets:
            hit = rows_m[rows_m["return"] >= t]
            row[f"agent_steps_to_{t:g}"] = float(hit["agent_steps"].iloc[0]) if len(hit) \
                else math.nan
        rows.append(row)
    return pd.DataFrame(rows)
