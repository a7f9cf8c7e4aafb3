"""Options of ``rlscale sharpness`` (implementation: ``rl.cli.sharpness``)."""

from __future__ import annotations

from rl.analysis.configs import SharpnessConfig
from rl.cli.args import add_dataclass_args, positive_float, seed_list
from rl.cli.parsers import command


def add_parser(sub) -> None:
    p = sub.add_parser(
        "sharpness",
        help="top Hessian eigenvalue and eps-sharpness of the PPO loss at a run's final "
             "checkpoint (or every run of a sweep)",
        description="Loads the final checkpoint of a run (or of every finished run of a "
        "sweep), collects fresh rollouts of its policy and measures, for the policy and the "
        "value term of the PPO loss: the largest and the most negative Hessian eigenvalue "
        "(Lanczos on Hessian-vector products, each with its convergence) and Keskar's "
        "eps-sharpness, 100 (max over the box |z_i| <= eps (|w_i| + 1) of f(w + z) - f(w)) / "
        "(1 + f(w)), the max by L-BFGS-B from several starts (a lower bound). Each repeat is "
        "an independent rollout; the table shows mean and standard error.",
    )
    p.add_argument("path", metavar="PATH", help="a run directory or a sweep directory")
    add_dataclass_args(p, SharpnessConfig, title="measurement")
    p.add_argument("--seeds", type=seed_list, metavar="LIST",
                   help="sweep: only these seeds, comma-separated (default all)")
    p.add_argument("--lr", type=positive_float, help="sweep: only runs with this learning rate")
    p.add_argument("--best-lr", action="store_true",
                   help="sweep: only the runs at each batch size's best learning rate "
                   "(best_lr.json, the runs its fit uses)")
    p.add_argument("--out", help="per-repeat table (default PATH/sharpness.csv; the sweep plot "
                   "goes beside it as .png)")
    p.set_defaults(func=command("rl.cli.sharpness", "cmd_sharpness"))
