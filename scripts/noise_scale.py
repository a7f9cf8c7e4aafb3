#!/usr/bin/env python
"""Measure the gradient noise scale of a PPO run: train with B_simple measured every N
iterations, then report it per segment and per return bin (`rlscale train --gns-every`,
then `rlscale gns run`).

    python scripts/noise_scale.py --env CartPole --run-dir runs/gns-cartpole \\
        --total-agent-steps 200k
    python scripts/noise_scale.py --env Breakout --run-dir runs/gns-breakout --gns-every 2 \\
        -- --num-envs 8

Arguments after `--` go to `rlscale train` unchanged (any of its flags).
"""

import argparse
import sys

from rl.cli import main as rlscale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Arguments after -- are passed to `rlscale train` (see rlscale train --help).")
    parser.add_argument("--env", required=True, help="environment (see `rlscale envs`)")
    parser.add_argument("--run-dir", required=True, help="run directory to train into")
    parser.add_argument("--total-agent-steps", default=None,
                        help="training budget (suffixes accepted: 200k, 10M)")
    parser.add_argument("--gns-every", type=int, default=1,
                        help="measure B_simple every N iterations (default 1)")
    parser.add_argument("--segments", type=int, default=4, help="segments of the run (default 4)")
    parser.add_argument("--out", default=None,
                        help="results folder of the report (default: rlscale gns run's)")
    parser.add_argument("--no-train", action="store_true",
                        help="only report on an existing run directory")
    parser.add_argument("train_args", nargs="*", help="extra `rlscale train` flags (after --)")
    args = parser.parse_args(argv)
    if not args.no_train:
        train = ["train", "--env", args.env, "--run-dir", args.run_dir,
                 "--gns-every", str(args.gns_every), *args.train_args]
        if args.total_agent_steps:
            train += ["--total-agent-steps", args.total_agent_steps]
        rc = rlscale(train)
        if rc:
            return rc
    report = ["gns", "run", args.run_dir, "--segments", str(args.segments)]
    if args.out:
        report += ["--out", args.out]
    return rlscale(report) or 0


if __name__ == "__main__":
    sys.exit(main())
