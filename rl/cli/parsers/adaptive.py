"""Options of ``rlscale compare-adaptive`` (implementation: ``rl.cli.adaptive``)."""

from __future__ import annotations

from rl.cli.args import finite_floats
from rl.cli.parsers import command


def add_parser(sub) -> None:
    p = sub.add_parser(
        "compare-adaptive",
        help="iterations and agent steps to a target: adaptive runs vs a sweep's best fixed B",
        description="Report PPO iterations and agent steps to each target for adaptive-batch "
        "runs (rlscale train --batch-schedule adaptive) next to the best fixed rollout batch "
        "of a sweep (fewest iterations, fewest agent steps; each at its best lr).",
    )
    p.add_argument("sweep_dir", metavar="SWEEP_DIR", help="a sweep's out directory")
    p.add_argument("runs", metavar="RUN_DIR", nargs="+", help="adaptive run directories")
    p.add_argument("--targets", required=True, type=finite_floats, metavar="LIST",
                   help="target returns, comma-separated")
    p.add_argument("--out", help="also write the table as csv here")
    p.set_defaults(func=command("rl.cli.adaptive", "cmd_compare"))
