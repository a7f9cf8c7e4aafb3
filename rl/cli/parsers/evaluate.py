"""Options of ``rlscale eval`` (implementation: ``rl.cli.evaluate``)."""

from __future__ import annotations

import argparse

from rl.analysis.configs import EvalConfig
from rl.cli.args import add_dataclass_args, add_env_module_arg
from rl.cli.parsers import command


def add_parser(sub) -> None:
    p = sub.add_parser(
        "eval",
        help="play evaluation games with a trained run's policy (mean, std; --video records)",
        description="Play whole games with the policy of a run's newest checkpoint, on the "
        "environment and preprocessing the run trained with, and print the mean and standard "
        "deviation of the unclipped full-game return. --video DIR records a few more games "
        "as mp4 files (gymnasium's RecordVideo; needs moviepy).",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory of `rlscale train`")
    add_env_module_arg(p)
    add_dataclass_args(p, EvalConfig, title="evaluation")
    p.add_argument("--stochastic", dest="deterministic", action="store_false",
                   default=argparse.SUPPRESS,
                   help="sample actions from the policy (same as --no-deterministic)")
    p.add_argument("--video", metavar="DIR", help="record --video-episodes games into DIR")
    p.add_argument("--checkpoint", metavar="FILE",
                   help="a ckpt_*.pt file of the run (default: its newest good checkpoint)")
    p.add_argument("--device", default="cpu", help="device of the policy (default: cpu)")
    p.set_defaults(func=command("rl.cli.evaluate", "cmd_eval"))
