"""Trends of the sharpness table against the batch size (#25 item 5): per loss term and
quantity, the mean per batch size and the least-squares slope per doubling with its 95%
t interval (``rl.analysis.sharpness.trend``; every repeat a point, unconverged eigenvalues
left out). Usage: python trends.py sharpness.csv > trends.csv"""

import sys

import pandas as pd

from rl.analysis.sharpness import summarize_repeats, trend

df = pd.read_csv(sys.argv[1])
rows = []
for term, d in df.groupby("term"):
    for col in ("top_eigenvalue", "min_eigenvalue", "eps_sharpness_0.001", "eps_sharpness_0.0005"):
        means = summarize_repeats(d, ["rollout_batch_size"], [col])
        t = trend(d["rollout_batch_size"], d[col])
        rows.append(dict(term=term, quantity=col,
                         **{f"mean_b{int(b)}": round(v, 4) for b, v in
                            zip(means["rollout_batch_size"], means[col], strict=True)},
                         converged=int(d[col].notna().sum()), rows=len(d),
                         slope_per_doubling=t["slope"], lo=t["lo"], hi=t["hi"],
                         verdict=t["verdict"]))
pd.DataFrame(rows).to_csv(sys.stdout, index=False)
