"""Options of ``rlscale advise`` (implementation: ``rl.cli.advise``)."""

from __future__ import annotations

import argparse
import re

from rl.advise.config import AdviseConfig
from rl.cli.args import add_dataclass_args
from rl.cli.parsers import command


def duration(text: str) -> float:
    """argparse type: seconds, as 180, 180s, 3m or 1.5m."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(s|m|min)?\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"expected a duration like 180, 180s or 3m, got "
                                         f"{text!r}")
    value = float(m.group(1)) * (60.0 if m.group(2) in ("m", "min") else 1.0)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"the budget must be > 0, got {text!r}")
    return value



def add_parser(sub) -> None:
    p = sub.add_parser(
        "advise", help="batch-size advice from one short run (B_simple -> B_crit -> the fastest "
        "rollout on this machine)",
        description="Train a short probe run measuring B_simple every PPO iteration (or read "
        "RUN_DIR, a run that measured it: ours or stable-baselines3's progress.csv), time PPO "
        "iterations on this machine at candidate rollouts (rlscale bench scaling), and predict "
        "S(B) = S_min (1 + B_crit / B), E(B) = E_min (1 + B / B_crit) and wall-clock per "
        "candidate, with B_crit = r x B_simple (value loss) and r from the committed "
        "cross-task study. docs/advise.md.")
    p.add_argument("run_dir_in", nargs="?", metavar="RUN_DIR", default=None,
                   help="advise from this existing run instead of a probe (nothing is written "
                   "into it)")
    p.add_argument("--budget", type=duration, default=None,
                   help="wall-clock budget, e.g. 90s or 3m (same as --budget-s)")
    p.add_argument("--json", action="store_true", help="print the advice as JSON on stdout")
    p.add_argument("--quiet", action="store_true", help="no progress display")
    add_dataclass_args(p, AdviseConfig, title="advice")
    p.set_defaults(func=command("rl.cli.advise", "cmd_advise"))
