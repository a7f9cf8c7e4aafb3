"""``rlscale train``: one PPO run, built from TrainConfig and PPOConfig."""

from __future__ import annotations

import argparse
import dataclasses

from agents import PPOConfig
from rl.cli.args import add_dataclass_args, dataclass_from_args, non_negative_float
from rl.cli.output import console
from rl.train.config import PRESETS, ParallelConfig, TrainConfig, preset_for
from rl.train.launch import train
from rl.train.schedule import AdaptiveConfig


def configs_from_args(args: argparse.Namespace) -> tuple[TrainConfig, PPOConfig]:
    """Dataclass defaults < preset (by --preset, or by the environment's kind) < flags."""
    env = args.env or TrainConfig.env
    preset = args.preset or preset_for(env)
    train_over, ppo_over = PRESETS[preset]
    base_train = dataclasses.replace(TrainConfig(), **train_over)
    base_ppo = dataclasses.replace(PPOConfig(), **ppo_over)
    return dataclass_from_args(args, TrainConfig, base_train), dataclass_from_args(
        args, PPOConfig, base_ppo
    )


def cmd_train(args) -> int:
    cfg, ppo = configs_from_args(args)
    parallel = dataclass_from_args(args, ParallelConfig)
    adaptive = dataclass_from_args(args, AdaptiveConfig)
    result = train(cfg, ppo, parallel=parallel, adaptive=adaptive, quiet=args.quiet,
                   restart=args.restart, progress_interval_s=args.progress_interval_s)
    if result is None:  # a torchrun rank other than 0: rank 0 reports
        return 0
    ret = result.return_recent
    console.print(
        f"{cfg.env}: {result.iterations} PPO iterations, {result.agent_steps:,} agent steps, "
        f"mean return of the last {cfg.return_window} games "
        f"{'-' if ret != ret else f'{ret:.1f}'}"
        + (" (target reached)" if result.reached_target else "")
    )
    console.print(f"run directory: {result.run_dir}")
    return 0


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
    add_dataclass_args(p, TrainConfig, title="run")
    add_dataclass_args(p, PPOConfig, title="PPO")
    add_dataclass_args(p, ParallelConfig, title="data parallel (rl/train/launch.py)")
    add_dataclass_args(p, AdaptiveConfig, title="batch schedule (rl/train/schedule.py)")
    p.set_defaults(func=cmd_train)
