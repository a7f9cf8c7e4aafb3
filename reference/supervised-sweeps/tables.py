"""The README's tables from the two sweeps' fit.csv and fit_per_batch.csv (markdown on stdout).

    .venv/bin/python reference/supervised-sweeps/tables.py
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent


def g(v: float) -> str:
    return "-" if pd.isna(v) else f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"


def fits_table(task: str) -> str:
    f = pd.read_csv(HERE / task / "fit.csv").sort_values("target", ascending=False)
    lines = ["| training loss | B_crit [95% profile] | seed-only | lack of fit F (df), p | "
             "leave one out | S_min (steps) | E_min (examples) | B_simple (per-run mean) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for _, r in f.iterrows():
        b = (f"{g(r['b_crit'])} [{g(r['b_crit_lo'])}, {g(r['b_crit_hi'])}]" if r["ok"] else
             f"{r['bound']} {g(r['b_crit_bound'])}" if isinstance(r["bound"], str) else "no fit")
        lines.append(
            f"| {-r['target']:g} | {b} | [{g(r['b_crit_seed_lo'])}, {g(r['b_crit_seed_hi'])}] | "
            f"{r['lof_f']:.3g} ({int(r['lof_df_batch'])}, {int(r['lof_df_seeds'])}), "
            f"{r['lof_p']:.2g} | [{g(r['b_crit_loo_min'])}, {g(r['b_crit_loo_max'])}] | "
            f"{g(r['s_min'])} [{g(r['s_min_lo'])}, {g(r['s_min_hi'])}] | "
            f"{g(r['e_min'])} [{g(r['e_min_lo'])}, {g(r['e_min_hi'])}] | "
            f"{g(r['b_simple_total'])} |")
    return "\n".join(lines)


def lr_table(task: str) -> str:
    pb = pd.read_csv(HERE / task / "fit_per_batch.csv")
    targets = sorted(pb["target"].unique(), reverse=True)
    lines = ["| B | grid lr0 x sqrt(B/64) | " + " | ".join(
        f"best lr, S (loss {-t:g})" for t in targets) + " |",
             "| --- | --- | " + " | ".join("---" for _ in targets) + " |"]
    for b, rows in pb.groupby("rollout_batch_size"):
        rows = rows.set_index("target")
        cells = []
        for t in targets:
            r = rows.loc[t]
            edge = f" ({r['lr_edge']} edge)" if isinstance(r["lr_edge"], str) and r["lr_edge"] \
                else ""
            cells.append(f"{r['best_lr']:.3g}{edge}, {g(r['s_median'])} ({int(r['n_seeds'])} "
                         "seeds)")
        lrs = rows["lrs"].iloc[0]
        lines.append(f"| {b} | {lrs} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    for task in ("digits-mlp", "digits-cnn"):
        print(f"### {task}\n\n{fits_table(task)}\n\n{lr_table(task)}\n")
