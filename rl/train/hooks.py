"""The loop's named events, and the hooks that attach output to them.

A ``Hook`` gets ``on_start`` (state loaded, before the first iteration), ``before_update``
(the rollout and its advantages, before the first optimizer step), ``on_row`` (the row so
far, read-only, not yet written: return columns to add, or check), ``after_iteration`` (row
written, checkpoint taken), ``on_end`` (the run ended well) and ``close`` (always, last).
The loop's typed strategies (``rl.train.protocols``) are the other extension points. See
docs/training-loop.md.
"""

from __future__ import annotations

import datetime
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TextIO

import torch
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from rl.train.comm import params_in_sync
from rl.train.config import TrainResult
from rl.train.schedule_plot import plot_schedule


class Hook:
    """A named extension point of the loop; each event does nothing by default.

    ``loop`` is the running ``rl.train.loop.Loop`` (its ``state``, ``run``, ``cfg``...)."""

    def on_start(self, loop: Any) -> None:
        pass

    def before_update(self, loop: Any, rollout: dict[str, torch.Tensor]) -> None:
        pass

    def on_row(self, loop: Any, row: Mapping[str, Any]) -> Mapping[str, Any] | None:
        """Columns to add to the row (None: none)."""
        return None

    def after_iteration(self, loop: Any, row: dict[str, Any]) -> None:
        pass

    def on_end(self, loop: Any, result: TrainResult) -> None:
        pass

    def close(self) -> None:
        pass


def progress_hook(total_steps: int, interval_s: float = 30.0,
                  stream: TextIO | None = None) -> Hook:
    """The progress display for rank 0: a live bar on a terminal; elsewhere (nohup, CI,
    a pipe) plain lines every ``interval_s`` seconds (``ProgressLines``). Both on stderr."""
    stream = sys.stderr if stream is None else stream
    if stream.isatty():
        return ProgressBar(total_steps, console=Console(file=stream))
    return ProgressLines(total_steps, interval_s, stream)


class ProgressBar(Hook):
    """A rich progress bar with SPS and the recent return (rank 0)."""

    def __init__(self, total_steps: int, console: Console | None = None):
        self.total_steps = total_steps
        self.console = console
        self.bar: Progress | None = None

    def on_start(self, loop):
        self.bar = Progress(
            TextColumn("[bold]train"), BarColumn(),
            TextColumn("{task.completed:,}/{task.total:,} agent steps"),
            TextColumn("{task.fields[sps]} SPS"), TextColumn("return {task.fields[ret]}"),
            TimeRemainingColumn(), console=self.console,
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


class ProgressLines(Hook):
    """Plain progress lines for logs (rank 0): the first iteration, then one at most every
    ``interval_s`` seconds, and the last: iteration, agent steps of the budget, the recent
    return, agent steps per second since this (re)start, and the time left at that rate."""

    def __init__(self, total_steps: int, interval_s: float = 30.0, stream: TextIO | None = None):
        if not interval_s >= 0:
            raise ValueError(f"the progress interval must be >= 0 seconds, got {interval_s!r}")
        self.total_steps, self.interval_s = total_steps, interval_s
        self.stream = sys.stderr if stream is None else stream
        self.start: tuple[float, int] | None = None
        self.last_line: float | None = None
        self.last_row: dict[str, Any] | None = None
        self.last_written: dict[str, Any] | None = None
        self.label, self.window = "train", 0

    def on_start(self, loop):
        self.start = (time.perf_counter(), loop.state.agent_steps)
        self.label = f"train {loop.cfg.env}"
        self.window = loop.cfg.return_window

    def after_iteration(self, loop, row):
        now = time.perf_counter()
        self.last_row = row
        if self.last_line is None or now - self.last_line >= self.interval_s:
            self.write(row, now)

    def on_end(self, loop, result):
        row = self.last_row
        if row is not None and self.last_line is not None and self.last_written != row:
            self.write(row, time.perf_counter())

    def write(self, row: dict[str, Any], now: float) -> None:
        self.last_line, self.last_written = now, row
        t0, steps0 = self.start if self.start is not None else (now, 0)
        steps = int(row["agent_steps"])
        sps = (steps - steps0) / (now - t0) if now > t0 and steps > steps0 else float("nan")
        left = max(0, self.total_steps - steps)
        eta = str(datetime.timedelta(seconds=round(left / sps))) if sps == sps and sps > 0 \
            else "-"
        ret = row["return_recent"]
        print(f"{self.label}: iteration {row['iteration']}, {steps:,}/{self.total_steps:,} agent "
              f"steps ({100 * steps / max(1, self.total_steps):.0f}%), return "
              f"{'-' if ret != ret else f'{ret:.1f}'} (mean of the last {self.window} games), "
              f"{'-' if sps != sps else f'{sps:,.0f}'} SPS, ETA {eta}",
              file=self.stream, flush=True)


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
        return {"world_size": loop.comm.size, "num_envs": loop.schedule.shape[0],
                "num_steps": loop.schedule.shape[1]}


class SyncCheck(Hook):
    """Data-parallel ranks compare their parameters every iteration (``dp/params_in_sync``)."""

    def on_row(self, loop, row):
        return params_in_sync(loop.comm, loop.state.model, loop.state.iteration)


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
            "iteration": loop.state.iteration, "rank": loop.comm.rank,
            "world_size": loop.comm.size,
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
