"""Options of ``rlscale sweep`` (implementation: ``rl.cli.sweep``)."""

from __future__ import annotations

from rl.cli.args import add_dataclass_args, add_env_module_arg
from rl.cli.parsers import command
from rl.sweeps.pbt.config import PBTConfig


def add_parser(sub) -> None:
    p = sub.add_parser(
        "sweep",
        help="run (or continue) a sweep over batch sizes, learning rates, seeds, envs",
        description="Run a sweep from a TOML spec and/or flags (flags override the file). "
        "Started again, it skips finished runs, resumes interrupted ones from their "
        "checkpoints and starts missing ones. `rlscale sweep --out DIR` alone continues the "
        "sweep stored in DIR. Lists are comma-separated: --num-envs 1,2,4,8. Spec keys: "
        "see rl/sweeps/ and examples/sweeps/cartpole.toml. Before the runs, each "
        "environment's untrained-play floor is measured once (untrained_floor.json) and "
        "targets at or below it are refused. With --best-lr-seeds, a second stage adds seeds at "
        "each batch size's best lr (examples/sweeps/minatar-protocol.toml: the recommended "
        "protocol, docs/sweeps.md). --scheduler pbt --backend ray "
        "trains a population at one batch size with population based training instead "
        "(rl/sweeps/pbt/, docs/scale-out.md section 4).",
    )
    p.add_argument("spec", nargs="?", help="TOML spec file (optional if flags say it all)")
    g = p.add_argument_group("grid")
    g.add_argument("--env", help="environment(s), comma-separated")
    g.add_argument("--vary", choices=["num_envs", "num_steps"],
                   help="which factor of B = num_envs x num_steps varies (default num_envs)")
    g.add_argument("--num-envs", dest="num_envs", help="list (varied) or one value (fixed)")
    g.add_argument("--num-steps", dest="num_steps", help="list (varied) or one value (fixed)")
    g.add_argument("--lrs", help="learning-rate grid, comma-separated")
    g.add_argument("--base-lr", dest="base_lr", type=float, help="one lr (same as --lrs X)")
    g.add_argument("--lr-rule", dest="lr_rule", choices=["constant", "sqrt", "linear"],
                   help="lr(B) = lr * (B / base_batch_size) ** p, p = 0, 1/2, 1")
    g.add_argument("--base-batch-size", dest="base_batch_size", type=int,
                   help="batch size (agent steps) at which --lrs are given, with a rule")
    g.add_argument("--seeds", help="comma-separated seeds, or a count N (seeds 0..N-1); with "
                   "--best-lr-seeds the seeds of the lr grid")
    g.add_argument("--best-lr-seeds", dest="best_lr_seeds", type=int, metavar="N",
                   help="stage 2: once a batch size's grid runs have all ended, choose its best "
                   "lr (the fit's rule, at the highest target) and add seeds there up to N in "
                   "all (e.g. 5 with --seeds 2; docs/sweeps.md, the recommended protocol)")
    g.add_argument("--targets", help="target returns, comma-separated; each must be above the "
                   "environment's untrained-play floor (measured before the runs)")
    g.add_argument("--allow-target-below-floor", dest="allow_target_below_floor",
                   action="store_true", help="run targets at or below the untrained-play floor "
                   "anyway (recorded in untrained_floor.json); default: refused")
    g.add_argument("--budget", help="agent steps per run at most (e.g. 40k, 10M)")
    g.add_argument("--preset", help="settings family: classic or atari (default by env)")
    g.add_argument("--ppo", action="append", metavar="KEY=VALUE",
                   help="a PPOConfig override (repeatable), e.g. --ppo num_epochs=10")
    g.add_argument("--train", action="append", metavar="KEY=VALUE",
                   help="a TrainConfig override (repeatable), e.g. --train gns_every=5")
    g.add_argument("--batch-sizes", dest="batch_sizes",
                   help="supervised tasks (--env digits-mlp, digits-cnn): the batch sizes in "
                   "examples, comma-separated (instead of --num-envs / --num-steps)")
    g.add_argument("--supervised", action="append", metavar="KEY=VALUE",
                   help="supervised tasks: a SupervisedConfig override (repeatable), e.g. "
                   "--supervised gns_every=20 (docs/sweeps.md, 'Supervised sweeps')")
    e = p.add_argument_group("execution")
    e.add_argument("--out", help="sweep directory (default results/sweeps/<spec name>)")
    e.add_argument("--parallel", type=int, help="runs at once (default 1)")
    e.add_argument("--backend", choices=["local", "ray"], help="local processes or Ray Tune")
    e.add_argument("--address", help="ray: address of an existing cluster (default: local)")
    e.add_argument("--cpus-per-trial", dest="cpus_per_trial", type=int,
                   help="ray: CPUs per run (default 1)")
    e.add_argument("--scheduler", choices=["grid", "pbt"],
                   help="grid: every run of the grid (default); pbt: population based training "
                   "of one batch size on Ray Tune (needs --backend ray; settings below)")
    e.add_argument("--retry-failed", dest="retry_failed", action="store_true",
                   help="also rerun runs that failed (interrupted runs are always resumed)")
    e.add_argument("--dry-run", dest="dry_run", action="store_true",
                   help="validate and list the planned runs and the stored untrained-play "
                   "floors; start nothing")
    e.add_argument("--floor-only", dest="floor_only", action="store_true",
                   help="measure each environment's untrained-play floor (if the sweep "
                   "directory lacks it), store it in untrained_floor.json and check the "
                   "targets; train nothing (an older sweep gets its floor this way)")
    e.add_argument("--quiet", action="store_true", help="no per-run progress lines")

    add_dataclass_args(p, PBTConfig, title="population based training (--scheduler pbt; "
                       "the [pbt] table of a spec)", exclude=("hyperparams",))
    p.add_argument_group("population based training, hyperparameters").add_argument(
        "--pbt-param", dest="pbt_param", action="append", metavar="NAME=KIND:NUMBERS",
        help="a perturbed hyperparameter and its range (repeatable): NAME one of "
        "learning_rate, ent_coef, clip_coef; KIND log (log-uniform range LOW,HIGH), uniform "
        "(range LOW,HIGH) or values (a list V1,V2,...). E.g. --pbt-param "
        "learning_rate=log:1e-4,1e-2 --pbt-param ent_coef=values:0,0.001,0.01. Default: all "
        "three, learning_rate log-uniform over [preset lr / 10, x 10], ent_coef values "
        "0,0.001,0.003,0.01,0.03, clip_coef uniform 0.1,0.3. Initial values are drawn from "
        "them; explore multiplies a range value by 0.8 or 1.2 (clipped to the range) or "
        "moves a list value to a neighbour, or with --resample-probability draws afresh")
    add_env_module_arg(p)
    p.set_defaults(func=command("rl.cli.sweep", "cmd_sweep"))
