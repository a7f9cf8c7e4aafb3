#!/usr/bin/env python
"""Sweep batch sizes and learning rates, then fit the critical batch size (`rlscale sweep`,
then `rlscale fit` on its folder). Resumable: run the same command again to continue.

    python scripts/sweep_fit.py --out runs/sweep-cartpole \\
        -- --env CartPole --targets 475 --budget 500k
    python scripts/sweep_fit.py --spec examples/sweeps/breakout.toml --out runs/sweep-breakout \\
        -- --parallel 2

Arguments after `--` go to `rlscale sweep` unchanged (any of its flags).
"""

import argparse
import sys

from rl.cli import main as rlscale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Arguments after -- are passed to `rlscale sweep` (see rlscale sweep --help).")
    parser.add_argument("--spec", default=None, help="a sweep spec (TOML); flags override it")
    parser.add_argument("--out", required=True, help="the sweep's folder")
    parser.add_argument("--no-sweep", action="store_true",
                        help="only fit the runs already in --out (trains nothing)")
    parser.add_argument("--no-plots", action="store_true", help="fit without plots")
    parser.add_argument("sweep_args", nargs="*", help="extra `rlscale sweep` flags (after --)")
    args = parser.parse_args(argv)
    if not args.no_sweep:
        sweep = ["sweep", *([args.spec] if args.spec else []), "--out", args.out,
                 *args.sweep_args]
        rc = rlscale(sweep)
        if rc:
            return rc
    return rlscale(["fit", args.out, *(["--no-plots"] if args.no_plots else [])]) or 0


if __name__ == "__main__":
    sys.exit(main())
