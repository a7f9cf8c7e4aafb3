"""Weights & Biases logging beside TensorBoard: ``rlscale train --track`` (``TrackConfig``).

``WandbLog`` is a loop hook (rank 0) that logs every metrics row under the tags TensorBoard
gets (``rl.runs.metrics.tensorboard_tag``: charts/, losses/, gns/...), at the agent step.
wandb is optional: it is imported only when tracking is on, and ``import_wandb`` names the
fix when it is missing. Offline unless asked otherwise (docs/run-directory.md, "Weights &
Biases").
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from rl.runs.metrics import log_scalars
from rl.train.config import TrackConfig
from rl.train.hooks import Hook

__all__ = ["WandbLog", "import_wandb"]

MISSING_WANDB = ("--track logs to Weights & Biases, and wandb is not installed: "
                 "pip install wandb (or pip install 'rlscale[wandb]'), or leave out --track")


def import_wandb() -> Any:
    """The wandb module; ModuleNotFoundError with the one-line fix when it is not installed."""
    try:
        import wandb  # lazy: an optional dependency, imported only with --track
    except ImportError:
        raise ModuleNotFoundError(MISSING_WANDB) from None
    return wandb


class _Scalars:
    """Collects what ``log_scalars`` would write to TensorBoard: the same tags and filter."""

    log_dir = "the W&B run"

    def __init__(self):
        self.values: dict[str, float] = {}

    def add_scalar(self, tag: str, value: float, global_step: int) -> None:
        self.values[tag] = value


class WandbLog(Hook):
    """Logs each metrics row to a W&B run (rank 0), step = agent steps as in TensorBoard.

    The W&B run starts at ``on_start`` with the run's config (config.json's sections), its
    files in ``<run_dir>/wandb`` and finishes at ``close``.
    """

    def __init__(self, track: TrackConfig, run_dir: str | Path, config: dict[str, Any]):
        track.validate()
        self.track, self.run_dir, self.config = track, Path(run_dir), config
        self.wandb = import_wandb()
        self.run: Any = None

    def on_start(self, loop: Any) -> None:
        name = self.track.wandb_name or self.run_dir.resolve().name
        mode = self.track.resolved_mode()
        # wandb takes our package `agents` for OpenAI's and suggests its LLM tracer (Weave).
        os.environ.setdefault("WANDB_DISABLE_WEAVE", "true")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        try:
            self.run = self.wandb.init(
                project=self.track.wandb_project, entity=self.track.wandb_entity, mode=mode,
                dir=str(self.run_dir), name=name, group=name,
                config={**self.config, "start_iteration": loop.state.iteration,
                        "start_agent_steps": loop.state.agent_steps},
                reinit="create_new", settings=self.wandb.Settings(console="off", quiet=True))
        except Exception as exc:  # wandb's own errors (no network, no login) name no fix
            raise RuntimeError(
                f"Weights & Biases could not start the run (mode {mode}): {exc}; use "
                "--wandb-mode offline (no network needed) or leave out --track") from exc

    def after_iteration(self, loop: Any, row: dict[str, Any]) -> None:
        scalars = _Scalars()
        log_scalars(scalars, row, int(row["agent_steps"]))
        if self.run is not None and scalars.values:
            self.run.log(scalars.values, step=int(row["agent_steps"]))

    def close(self) -> None:
        if self.run is not None:
            run, self.run = self.run, None
            run.finish()
