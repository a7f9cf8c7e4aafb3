"""Exponents of B_crit, S_min and E_min in the target return for the protocol sweeps (#22
item 5: "exponents where 3 or more targets are measured"). Only targets with a measured
B_crit enter (bounds do not); fewer than 3 gives the reason instead of a number.
    python reference/protocol-sweeps/exponents.py   (repository root; writes exponents.csv)
Each folder is read from its stored tables (results.csv, fit.csv); no run is needed.
"""
from pathlib import Path

import pandas as pd

from rl.analysis.power_laws import tradeoff_power_laws
from rl.sweeps.results import read_results

HERE = Path(__file__).parent


def main() -> None:
    tables = []
    for folder in sorted(p.parent for p in HERE.glob("*/fit.csv")):
        results = read_results(folder)
        fits = pd.read_csv(folder / "fit.csv", keep_default_na=False, na_values=[""])
        fits["ok"] = fits["ok"].astype(str) == "True"
        laws, _ = tradeoff_power_laws(results, fits=fits, n_boot=1000, seed=0)
        tables.append(laws.assign(sweep=folder.name))
    out = pd.concat(tables)
    out.to_csv(HERE / "exponents.csv", index=False)
    print(out[["sweep", "quantity", "ok", "exponent", "exponent_lo", "exponent_hi",
               "n_points", "reason"]].to_string())


if __name__ == "__main__":
    main()
