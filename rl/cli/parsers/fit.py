"""Options of ``rlscale fit`` (implementation: ``rl.cli.fit``)."""

from __future__ import annotations

from rl.analysis.levels import B_CRIT_CI
from rl.cli.parsers import command


def add_parser(sub) -> None:
    f = sub.add_parser(
        "fit",
        help="critical batch size of a sweep: best lr per batch size, S(B), E(B), fit, plots",
        description="Fit S(B) = S_min (1 + B_crit / B) per env and target from a sweep's "
        "results (best lr per batch size, median over seeds), with a seed-bootstrap "
        "interval, beside the run-averaged B_simple. Writes fit.csv, fit_per_batch.csv and "
        "png plots into the sweep directory. Exit status 1 if some target has neither a measured "
        "B_crit nor a bound.",
    )
    f.add_argument("sweep_dir", metavar="SWEEP_DIR")
    f.add_argument("--n-boot", dest="n_boot", type=int, default=1000,
                   help="bootstrap replicates (default 1000)")
    f.add_argument("--ci", type=float, default=B_CRIT_CI,
                   help=f"interval level (default {B_CRIT_CI:g})")
    f.add_argument("--seed", type=int, default=0, help="bootstrap RNG seed (default 0)")
    f.add_argument("--range-factor", dest="range_factor", type=float, default=2.0,
                   help="B_crit beyond [min B / f, max B * f] counts as a failed fit (default 2)")
    f.add_argument("--no-plots", dest="no_plots", action="store_true", help="no png files")
    f.set_defaults(func=command("rl.cli.fit", "cmd_fit"))
