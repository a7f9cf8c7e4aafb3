"""Options of ``rlscale gns`` and its studies (implementation: ``rl.cli.gns``)."""

from __future__ import annotations

from rl.analysis.configs import CheckpointNoiseConfig
from rl.cli.args import add_dataclass_args
from rl.cli.parsers import command
from rl.measure.supervised_config import SupervisedConfig


def add_parser(sub) -> None:
    p = sub.add_parser(
        "gns",
        help="gradient noise scale studies (supervised reference, ...)",
        description="Gradient noise scale (B_simple, McCandlish et al. 2018) measured with the "
        "same estimator as the RL runs.",
    )
    gsub = p.add_subparsers(dest="gns_command", metavar="STUDY", required=True)

    sp = gsub.add_parser(
        "supervised",
        help="train a small classifier on a bundled dataset and measure B_simple as it trains",
        description="Supervised reference: minibatch training of a small classifier on a "
        "scikit-learn bundled dataset (no download), measuring B_simple every --gns-every "
        "steps from --gns-groups groups of --gns-group-size examples drawn i.i.d. from the "
        "training set.",
    )
    add_dataclass_args(sp, SupervisedConfig, title="supervised run")
    sp.add_argument(
        "--out", metavar="DIR",
        help="new or empty results folder (default: results/gns/supervised/<name>-<time>); "
        "an existing run is never overwritten",
    )
    sp.add_argument("--quiet", action="store_true", help="no progress display")
    sp.set_defaults(func=command("rl.cli.gns", "cmd_supervised"))

    sp = gsub.add_parser(
        "run",
        help="B_simple per segment (quarters) and per return bin of a training run",
        description="Reads a run directory's metrics (train with --gns-every 1 for dense "
        "measurements) and reports policy, value and total B_simple per segment of the "
        "measured iterations and per bin of the smoothed return, each the ratio of mean "
        "tr(Sigma) and mean |G|^2 over the measurements after the warm-up, with a 95% "
        "block-bootstrap interval and the share of the largest estimates "
        "(docs/noise-scale.md).",
    )
    sp.add_argument("run_dir", metavar="RUN_DIR", help="a training run directory")
    sp.add_argument("--segments", type=int, default=4, help="segments of the run (default 4)")
    sp.add_argument("--return-bins", type=int, default=6,
                    help="bins of equal measurement count by return_recent (default 6)")
    sp.add_argument("--out", metavar="DIR",
                    help="results folder (default results/gns/run/<run name>)")
    sp.set_defaults(func=command("rl.cli.gns", "cmd_run"))

    sp = gsub.add_parser(
        "checkpoints",
        help="B_simple at a run's checkpoints, on fresh rollouts larger than its batch",
        description="Loads each checkpoint of a training run, plays --repeats fresh rollouts "
        "of --num-envs x --num-steps agent steps with its policy (after --warmup-rollouts "
        "discarded ones) and reports policy, value and total B_simple with a 95% Fieller "
        "interval over the repeats, beside the run's return at that checkpoint. Use it where "
        "the run's own measurements (rlscale gns run) are not resolved because B_simple is far "
        "above the rollout batch. A rerun with the same --out continues where it stopped.",
    )
    sp.add_argument("run_dir", metavar="RUN_DIR", help="a training run directory")
    add_dataclass_args(sp, CheckpointNoiseConfig, title="measurement")
    sp.add_argument("--out", metavar="DIR",
                    help="results folder (default results/gns/checkpoints/<run name>)")
    sp.add_argument("--quiet", action="store_true", help="no progress display")
    sp.set_defaults(func=command("rl.cli.gns", "cmd_checkpoints"))
