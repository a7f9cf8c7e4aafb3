"""Exponents of B_crit, S_min and E_min in the target return under the new rules (#22 item
7): only targets with a measured B_crit enter (bounds and targets below the floor do not).
    python reference/reanalysis/exponents.py     (after refit.sh; writes exponents.csv)"""
from pathlib import Path

import pandas as pd

from rl.analysis.power_laws import tradeoff_power_laws
from rl.sweeps.results import read_results

here = Path(__file__).parent
tables = []
for name in ("breakout", "minatar-breakout", "cartpole"):
    results = read_results(here / name)
    fits = pd.read_csv(here / name / "fit.csv", keep_default_na=False, na_values=[""])
    fits["ok"] = fits["ok"].astype(str) == "True"
    laws, _ = tradeoff_power_laws(results, fits=fits, n_boot=1000, seed=0)
    tables.append(laws.assign(sweep=name))
out = pd.concat(tables)
out.to_csv(here / "exponents.csv", index=False)
print(out[["sweep", "quantity", "ok", "exponent", "exponent_lo", "exponent_hi", "n_points",
           "reason"]].to_string())
