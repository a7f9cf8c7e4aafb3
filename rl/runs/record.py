"""One run directory read as data (``RunRecord``): its config.json, status.json
(``RunStatus``) and metrics.jsonl, for every reader outside rl/runs. Read as JSON only:
opening a run never runs code from it. See docs/run-directory.md."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from rl.runs.errors import RunDirError
from rl.runs.layout import CONFIG_FILE, METRICS_FILE, STATUS_FILE
from rl.runs.metrics import load_metrics

__all__ = ["RunRecord", "RunStatus", "has_config", "has_metrics", "load_run_metrics",
           "metrics_file", "peek_config", "peek_status", "read_config"]

_STATES = ("running", "finished", "failed")


@dataclass(frozen=True)
class RunStatus:
    """A run's status.json: ``state`` (running, finished, failed; None when the file has
    none), the progress it last wrote and its ``message``; ``updated`` is unix time."""

    state: str | None = None
    iteration: int | None = None
    agent_steps: int | None = None
    message: str = ""
    updated: float | None = None

    @classmethod
    def from_json(cls, data: Any) -> RunStatus:
        """From status.json's parsed content (a JSON object; missing keys take defaults)."""
        if not isinstance(data, dict):
            raise ValueError(f"status must be a JSON object, got {type(data).__name__}")
        return cls(state=data.get("state"), iteration=data.get("iteration"),
                   agent_steps=data.get("agent_steps"), message=str(data.get("message", "")),
                   updated=data.get("updated"))

    @property
    def finished(self) -> bool:
        return self.state == "finished"


def _read_json(path: Path) -> Any:
    """A file's JSON; None when missing or unparseable (the lenient readers' view)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return None


def peek_config(run_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """config.json as a dict; None when the run has none or it cannot be read (a run not
    started yet, or one cut short while it was being created)."""
    data = _read_json(Path(run_dir) / CONFIG_FILE)
    return data if isinstance(data, dict) else None


def peek_status(run_dir: str | os.PathLike[str]) -> RunStatus | None:
    """status.json as a ``RunStatus``; None when the run has none or it cannot be read."""
    data = _read_json(Path(run_dir) / STATUS_FILE)
    return RunStatus.from_json(data) if isinstance(data, dict) else None


def _read_strict(path: Path, what: str, fix: str) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RunDirError(f"{path} is missing: {what}. {fix}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise RunDirError(f"cannot read {path} ({err}): {what}. {fix}") from err
    try:
        data = json.loads(text)
    except ValueError as err:
        raise RunDirError(f"{path} is damaged (not JSON: {err}): {what}. {fix}") from err
    if not isinstance(data, dict):
        raise RunDirError(f"{path} is damaged (a JSON {type(data).__name__}, not an object): "
                          f"{what}. {fix}")
    return data


_CONFIG_FIX = ("Point it at the --run-dir of a training run, or restore the file from a copy of "
               "the run (it is written once, when the run starts)")


def read_config(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """config.json as a dict; ``RunDirError`` naming the file and the fix when it is missing
    or damaged."""
    return _read_strict(Path(run_dir) / CONFIG_FILE, "a run's settings", _CONFIG_FIX)


@dataclass(frozen=True)
class RunRecord:
    """A run directory as data: ``config`` (config.json's sections), ``status`` (None for a
    run that has written none yet) and its metrics rows (``metrics()``)."""

    path: Path
    config: dict[str, Any]
    status: RunStatus | None

    @classmethod
    def open(cls, run_dir: str | os.PathLike[str]) -> RunRecord:
        """Read a run directory. ``RunDirError`` naming the file and the fix when config.json
        is missing or damaged, or status.json is damaged (a missing status.json is a run
        that has not started its first iteration: ``status`` None)."""
        path = Path(run_dir)
        if not path.is_dir():
            raise RunDirError(f"{path} is not a run directory (no such folder): point it at "
                              "the --run-dir of a training run")
        config = read_config(path)
        status = None
        if (path / STATUS_FILE).exists():
            data = _read_strict(path / STATUS_FILE, "the run's state and progress",
                                "Delete it to read the run as not started, or restore it "
                                "from a copy of the run")
            if data.get("state") not in _STATES:
                raise RunDirError(f"{path / STATUS_FILE} is damaged: state {data.get('state')!r} "
                                  f"is none of {', '.join(_STATES)}. Delete it to read the run "
                                  "as not started, or restore it from a copy of the run")
            status = RunStatus.from_json(data)
        return cls(path=path, config=config, status=status)

    def section(self, name: str) -> dict[str, Any]:
        """One section of the config (``ppo``, ``train``, ``adaptive``...); {} if absent."""
        value = self.config.get(name)
        return value if isinstance(value, dict) else {}

    @property
    def state(self) -> str:
        """The status's state, ``pending`` for a run without status.json."""
        return "pending" if self.status is None or self.status.state is None \
            else self.status.state

    @property
    def metrics_path(self) -> Path:
        return metrics_file(self.path)

    def has_metrics(self) -> bool:
        return has_metrics(self.path)

    def metrics(self) -> pd.DataFrame:
        """The metrics rows (``rl.runs.metrics.load_metrics``: one per iteration)."""
        return load_metrics(self.metrics_path)


def has_config(run_dir: str | os.PathLike[str]) -> bool:
    """Whether a directory holds a run (its config.json, written when the run starts)."""
    return (Path(run_dir) / CONFIG_FILE).exists()


def metrics_file(run_dir: str | os.PathLike[str]) -> Path:
    """The path of a run directory's metrics.jsonl (for its modification time, its tail)."""
    return Path(run_dir) / METRICS_FILE


def has_metrics(run_dir: str | os.PathLike[str]) -> bool:
    """Whether a run directory holds a metrics.jsonl (has written a row, or is about to)."""
    return (Path(run_dir) / METRICS_FILE).exists()


def load_run_metrics(run_dir: str | os.PathLike[str]) -> pd.DataFrame:
    """The run's metrics rows, or an empty frame (no columns) when it has no metrics.jsonl."""
    return load_metrics(run_dir) if has_metrics(run_dir) else pd.DataFrame()

