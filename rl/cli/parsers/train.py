"""Options of ``rlscale train`` (implementation: ``rl.cli.train``)."""

from __future__ import annotations

from agents import PPOConfig
from rl.cli.args import add_dataclass_args, add_env_module_arg, non_negative_float
from rl.cli.parsers import command
from rl.train.config import PRESETS, AdaptiveConfig, ParallelConfig, TrackConfig, TrainConfig


def add_parser(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train PPO on one environment (metrics, TensorBoard, checkpoints in a run dir)",
        description="Train PPO. Settings come from a preset (atari: the reference Atari "
        "settings; classic: a fast classic-control setting), overridden by any flag. "
        "Counts accept suffixes: --total-agent-steps 10M.",
    )
    p.add_argument("--preset", choices=sorted(PRESETS),
                   help="settings family (default: atari for Atari games, else classic)")
    p.add_argument("--quiet", action="store_true", help="no progress display")
    p.add_argument("--print-config", action="store_true",
                   help="print the resolved settings (preset, then flags) as JSON and exit "
                   "without training or creating a run directory")
    p.add_argument("--dry-run", action="store_true",
                   help="like --print-config, after every check a run makes before it starts "
                   "(settings, device, data-parallel layout)")
    p.add_argument("--progress-interval-s", type=non_negative_float, default=30.0,
                   metavar="SECONDS",
                   help="when stderr is not a terminal (nohup, CI, a pipe): seconds between "
                   "plain progress lines (iteration, agent steps, recent return, SPS, ETA); "
                   "0: every iteration (default: 30)")
    p.add_argument("--restart", action="store_true",
                   help="start the run in --run-dir over from iteration 0, with the config "
                   "--resume would accept: its checkpoints, metrics rows and TensorBoard "
                   "events are deleted first (a --resume that finds no usable checkpoint "
                   "refuses rather than do this)")
    add_env_module_arg(p)
    add_dataclass_args(p, TrainConfig, title="run")
    add_dataclass_args(p, PPOConfig, title="PPO")
    add_dataclass_args(p, ParallelConfig, title="data parallel (rl/train/launch.py)")
    add_dataclass_args(p, AdaptiveConfig, title="batch schedule (rl/train/batch_schedule.py)")
    add_dataclass_args(p, TrackConfig, title="Weights & Biases (rl/train/tracking.py)")
    p.set_defaults(func=command("rl.cli.train", "cmd_train"))
