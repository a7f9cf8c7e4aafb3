"""The loop's named events, and the hooks that attach output to them.

A ``Hook`` gets ``on_start`` (state loaded, before the first iteration), ``before_update``
(the rollout and its advantages, before the first optimizer step), ``on_row`` (the row is
complete and not yet written: add columns or check), ``after_iteration`` (row written,
checkpoint taken), ``on_end`` (the run ended well) and ``close`` (always, last). The
loop's strategies (``rl.train.parallel``, ``rl.train.schedule``) are the other extension
points. See docs/training-loop.md.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from rl.train.config import TrainResult
from rl.train.schedule import plot_schedule


class Hook:
    """A named extension point of the loop; each event does nothing by default.

    ``loop`` is the running ``rl.train.loop.Loop`` (its ``state``, ``run``, ``cfg``...)."""

    def on_start(self, loop: Any) -> None:
        pass

    def before_update(self, loop: Any, rollout: dict[str, torch.Tensor]) -> None:
        pass

    def on_row(self, loop: Any, row: dict[str, Any]) -> None:
        pass

    def after_iteration(self, loop: Any, row: dict[str, Any]) -> None:
        pass

    def on_end(self, loop: Any, result: TrainResult) -> None:
        pass

    def close(self) -> None:
        pass


class ProgressBar(Hook):
    """A rich progress bar with SPS and the recent return (rank 0)."""

    def __init__(self, total_steps: int):
        self.total_steps = total_steps
        self.bar: Progress | None = None

    def on_start(self, loop):
        self.bar = Progress(
            TextColumn("[bold]train"), BarColumn(),
            TextColumn("{task.completed:,}/{task.total:,} agent steps"),
            TextColumn("{task.fields[sps]} SPS"), TextColumn("return {task.fields[ret]}"),
            TimeRemainingColumn(),
        )
        self.task = self.bar.add_task("train", total=self.total_steps,
                                      completed=loop.state.agent_steps, sps="-", ret="-")
        self.bar.start()

    def after_iteration(self, loop, row):
        ret = row["return_recent"]
        self.bar.update(self.task, completed=row["agent_steps"], sps=f"{row['sps']:,.0f}",
                        ret="-" if ret != ret else f"{ret:.1f}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None


class Callback(Hook):
    """Calls ``fn(row)`` after every iteration (rank 0): the library's ``on_iteration``."""

    def __init__(self, fn: Callable[[dict], None]):
        self.fn = fn

    def after_iteration(self, loop, row):
        self.fn(row)


class LayoutColumns(Hook):
    """Rows of a run started by ``train_parallel`` say how the batch is laid out:
    ``world_size`` and the per-rank ``num_envs`` and ``num_steps`` of the iteration."""

    def on_row(self, loop, row):
        row.update(world_size=loop.ranks.comm.size, num_envs=loop.schedule.shape[0],
                   num_steps=loop.schedule.shape[1])


class SyncCheck(Hook):
    """Data-parallel ranks compare their parameters every iteration (``dp/params_in_sync``)."""

    def on_row(self, loop, row):
        row.update(loop.ranks.check_sync(loop.state.model, loop.state.iteration))


class SchedulePlot(Hook):
    """At the end of an adaptive run, draw its batch schedule (a failed plot only warns)."""

    def on_end(self, loop, result):
        if loop.run is None:
            return
        try:
            plot_schedule(loop.run.path)
        except Exception as exc:  # a plot must not fail a finished run
            print(f"warning: could not plot the batch schedule: {exc}")


class DebugDump(Hook):
    """At every measured iteration of a data-parallel run, save this rank's rollout, the
    parameters before and after the update, and its row (for tests)."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        self.dump: dict[str, Any] | None = None

    def before_update(self, loop, rollout):
        grad_hook = rollout["grad_hook"]
        if grad_hook is None or not grad_hook.measure:
            self.dump = None
            return
        buffer = rollout["buffer"]
        self.dump = {
            "iteration": loop.state.iteration, "rank": loop.ranks.comm.rank,
            "world_size": loop.ranks.comm.size,
            "params_before": _params(loop.state.model),
            "obs": buffer.obs.cpu().clone(), "actions": buffer.actions.cpu().clone(),
            "logprobs": buffer.logprobs.cpu().clone(), "values": buffer.values.cpu().clone(),
            **{k: rollout[k].cpu().clone() for k in ("advantages", "returns", "mask")},
        }

    def on_row(self, loop, row):
        if self.dump is None:
            return
        self.dump["params_after"] = _params(loop.state.model)
        self.dump["row"] = dict(row)
        self.directory.mkdir(parents=True, exist_ok=True)
        torch.save(self.dump, self.directory /
                   f"it{self.dump['iteration']:06d}_rank{self.dump['rank']}.pt")


def _params(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
