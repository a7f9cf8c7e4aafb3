"""cpu_bf16 vs fp32 on Breakout: our PPO, 2 seeds each, over the first SPAN agent steps.

Uses the parity tool's own measures and test (rl.analysis.learning.run_measures,
mean_interval, welch_difference). Usage: python bf16_compare.py FP32_DIR BF16_DIR SPAN OUT_CSV
(each DIR holds <name>-seed<k>/metrics.jsonl run directories).
"""
import sys
from pathlib import Path

import pandas as pd

from rl.analysis.learning import mean_interval, run_measures, welch_difference
from rl.runs.metrics import load_metrics

fp32_dir, bf16_dir, span, out = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
groups = {"fp32": sorted(fp32_dir.glob("ours-seed*")), "cpu_bf16": sorted(bf16_dir.glob("*-seed*"))}
rows, per = [], {}
for name, dirs in groups.items():
    for d in dirs:
        df = load_metrics(d)
        assert df["agent_steps"].max() >= span, (d, df["agent_steps"].max())
        m = run_measures(df, span)
        rows.append({"precision": name, "run": d.name, **m})
        per.setdefault(name, []).append(m)
table = pd.DataFrame(rows)
print(table.to_string(index=False))
for key in ("final_return", "auc_mean_return"):
    for name in groups:
        mean, lo, hi = mean_interval([m[key] for m in per[name]], 0.95)
        print(f"{key} {name}: {mean:.2f} [{lo:.2f}, {hi:.2f}]")
    t = welch_difference([m[key] for m in per["fp32"]], [m[key] for m in per["cpu_bf16"]], 0.95)
    print(f"{key}: cpu_bf16 - fp32 = {t['difference']:.2f} [{t['lo']:.2f}, {t['hi']:.2f}], "
          f"Welch p = {t['p_value']:.3f}")
table.to_csv(out, index=False)
