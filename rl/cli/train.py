"""``rlscale train``: one PPO run, built from TrainConfig and PPOConfig.

Without --run-dir each run gets a new folder under runs/ (``runs/latest`` points at the
newest); --print-config and --dry-run show what would run without running it.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

from rich.markup import escape

from agents import PPOConfig
from rl.cli.args import dataclass_from_args, explicit_fields
from rl.cli.output import CLIError, console, err_console
from rl.runs.files import atomic_symlink
from rl.train.batch_schedule import FixedBatch
from rl.train.config import (
    PRESETS,
    AdaptiveConfig,
    ParallelConfig,
    TrackConfig,
    TrainConfig,
    preset_for,
)
from rl.train.launch import checked, torchrun_env, train
from rl.train.tracking import import_wandb

RUNS_ROOT = Path("runs")
"""Where runs go without --run-dir (relative to the working directory)."""
LATEST_LINK = "latest"
"""The symlink in RUNS_ROOT to the newest run started without --run-dir."""


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


def resolved_config(cfg: TrainConfig, ppo: PPOConfig, parallel: ParallelConfig,
                    adaptive: AdaptiveConfig, preset: str) -> dict:
    """The settings a run would use, as plain data (config.json's sections and the preset)."""
    return {"preset": preset, "train": dataclasses.asdict(cfg), "ppo": dataclasses.asdict(ppo),
            "parallel": dataclasses.asdict(parallel), "adaptive": dataclasses.asdict(adaptive)}


def new_run_dir(cfg: TrainConfig, settings: dict, root: Path = RUNS_ROOT, *,
                create: bool = False) -> Path:
    """A run folder no run uses yet: ``<env>-<num_envs>x<num_steps>-seed<seed>-<time>-<hash>``
    (the hash: of every resolved setting, so runs that differ in a flag differ in name), with
    ``-2``, ``-3``... if taken. ``create``: make it (empty), so no other process takes it."""
    name = cfg.env.replace("/", "_").replace(":", "_")
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    stem = (f"{name}-{cfg.num_envs}x{cfg.num_steps}-seed{cfg.seed}-"
            f"{time.strftime('%Y%m%d-%H%M%S')}-{digest.hexdigest()[:6]}")
    for n in range(1, 1000):
        path = root / (stem if n == 1 else f"{stem}-{n}")
        if path.exists() or path.is_symlink():
            continue
        if not create:
            return path
        try:
            path.mkdir(parents=True)
        except FileExistsError:  # another process took it meanwhile
            continue
        return path
    raise CLIError(f"no free run folder {root / stem}-N; pass --run-dir")


@contextlib.contextmanager
def latest_link(path: Path) -> Iterator[None]:
    """Point ``<root>/latest`` at the new run folder ``path`` while its run goes on; if the
    run never started there (invalid settings: the folder is still empty), remove the folder
    and point ``latest`` back where it was."""
    link = path.parent / LATEST_LINK
    before = os.readlink(link) if link.is_symlink() else None
    linked = False
    try:
        atomic_symlink(link, path.name)
        linked = True
    except OSError as exc:  # a folder named latest, or no symlinks on this filesystem
        err_console.print(f"[yellow]warning:[/] {escape(f'{link} not updated: {exc}')}")
    try:
        yield
    finally:
        if path.is_dir() and not any(path.iterdir()):
            path.rmdir()
            if linked:
                with contextlib.suppress(OSError):
                    if before is None:
                        link.unlink()
                    else:
                        atomic_symlink(link, before)


def rounded_budget_warning(cfg: TrainConfig, parallel: ParallelConfig,
                           adaptive: AdaptiveConfig) -> str | None:
    """The warning for a budget that is not a whole number of PPO iterations (fixed batch)."""
    counts = (cfg.num_envs, cfg.num_steps, parallel.nproc, cfg.total_agent_steps)
    if adaptive.adaptive or not all(isinstance(n, int) and n >= 1 for n in counts) \
            or cfg.total_agent_steps < cfg.rollout_batch_size * parallel.nproc:
        return None  # adaptive batches, or settings the run's own checks refuse
    schedule = FixedBatch(cfg.num_envs, cfg.num_steps, parallel.nproc, cfg.total_agent_steps)
    if schedule.total_steps == cfg.total_agent_steps:
        return None
    ranks = f"{parallel.nproc} ranks x " if parallel.nproc > 1 else ""
    up = schedule.total_steps + schedule.batch_size
    return (f"--total-agent-steps {cfg.total_agent_steps:,} is not a whole number of PPO "
            f"iterations of {schedule.batch_size:,} agent steps ({ranks}{cfg.num_envs} envs x "
            f"{cfg.num_steps} steps): {schedule.total_iterations:,} iterations, "
            f"{schedule.total_steps:,} agent steps will run (--total-agent-steps {up:,} "
            f"gives {schedule.total_iterations + 1:,})")


def tracking_from_args(args: argparse.Namespace) -> TrackConfig:
    """--track and its --wandb-* options; a --wandb-* option without --track is refused
    (it would silently do nothing)."""
    track = dataclass_from_args(args, TrackConfig)
    stray = [f"--{name.replace('_', '-')}" for name in explicit_fields(args, TrackConfig)
             if name.startswith("wandb_")]
    if stray and not track.track:
        raise CLIError(f"{', '.join(stray)}: Weights & Biases options take effect only with "
                       "--track; add --track, or leave them out")
    track.validate()
    return track


def cmd_train(args) -> int:
    cfg, ppo = configs_from_args(args)
    parallel = dataclass_from_args(args, ParallelConfig)
    adaptive = dataclass_from_args(args, AdaptiveConfig)
    track = tracking_from_args(args)
    preset = args.preset or preset_for(cfg.env)
    show = args.print_config or args.dry_run
    if cfg.run_dir is None and (cfg.resume or args.restart):
        raise CLIError(f"--{'resume' if cfg.resume else 'restart'} acts on an existing run: "
                       f"name it with --run-dir (the newest run started without --run-dir is "
                       f"{RUNS_ROOT / LATEST_LINK})")
    # Under torchrun every rank runs this: they keep the one default name they agree on.
    fresh = cfg.run_dir is None and torchrun_env() is None
    if fresh:
        settings = resolved_config(cfg, ppo, parallel, adaptive, preset)
        cfg = dataclasses.replace(cfg, run_dir=str(new_run_dir(cfg, settings, create=not show)))
    if show:
        cfg = checked(cfg, ppo, parallel, adaptive) if args.dry_run else cfg
        if args.dry_run and track.track:
            import_wandb()
        print(json.dumps(resolved_config(cfg, ppo, parallel, adaptive, preset), indent=2))
    # Said when the user chose the budget or the batch (the presets' budgets are documented).
    typed = {"total_agent_steps", "num_envs", "num_steps", "nproc"} & {
        k for k, v in vars(args).items() if v is not None}
    warning = rounded_budget_warning(cfg, parallel, adaptive) if typed or args.dry_run else None
    if warning:
        err_console.print(f"[yellow]warning:[/] {escape(warning)}", soft_wrap=True)
    if show:
        if args.dry_run:
            console.print(f"dry run: every check passed; nothing trained, nothing written "
                          f"(run directory: {cfg.run_dir})", highlight=False)
        return 0
    with latest_link(Path(cfg.run_dir)) if fresh else contextlib.nullcontext():
        result = train(cfg, ppo, parallel=parallel, adaptive=adaptive, quiet=args.quiet,
                       restart=args.restart, progress_interval_s=args.progress_interval_s,
                       track=track)
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
