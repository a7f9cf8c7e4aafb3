"""The state of a sweep on disk: each run's plan and status, the event log, the spec.

``RunPlan`` is one planned run; ``classify_run`` says whether it is new, to resume,
finished, failed or in conflict; ``events.jsonl`` and ``sweep.json`` record the sweep.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agents import PPOConfig
from rl.runs.files import atomic_write_json
from rl.runs.storage import flatten_config
from rl.sweeps.settings import SweepSpec
from rl.train.config import TrainConfig

# Config keys a finished or interrupted run may have stored differently and still count as
# the same run (where it lives, how often it checkpointed, which device trained it).
SAME_RUN_MAY_DIFFER = ("train.resume", "train.run_dir", "train.device",
                       "train.checkpoint_every", "train.compile")

TARGET_KEY = "train.target_return"
"""The stopping target: a finished run serves a plan with a lower one (``serves_lower_target``)."""

# Status messages of runs that were stopped from outside rather than failed.
_INTERRUPTED = ("KeyboardInterrupt", "SystemExit")


@dataclass(frozen=True)
class RunPlan:
    """One run of a sweep: its parameters and its complete configs (plain dicts)."""

    name: str
    env: str
    num_envs: int
    num_steps: int
    lr: float
    seed: int
    run_dir: str
    train: dict[str, Any]
    """TrainConfig keyword arguments (run_dir, budget and max target included)."""
    ppo: dict[str, Any]
    """PPOConfig keyword arguments."""

    @property
    def rollout_batch_size(self) -> int:
        return self.num_envs * self.num_steps

    def configs(self, *, resume: bool = False):
        """(TrainConfig, PPOConfig) of this run."""

        return TrainConfig(**{**self.train, "resume": resume}), PPOConfig(**self.ppo)

    def stored_config(self) -> dict[str, Any]:
        """What the trainer writes to config.json for this run (JSON-normalised)."""
        cfg, ppo = self.configs()
        config = {"train": dataclasses.asdict(cfg), "ppo": dataclasses.asdict(ppo)}
        return json.loads(json.dumps(config, sort_keys=True))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RunPlan:
        return cls(**d)


def run_name(env: str, num_envs: int, num_steps: int, lr: float, seed: int) -> str:
    slug = env.replace("/", "_").replace(":", "_")
    return f"{slug}-b{num_envs * num_steps}-n{num_envs}x{num_steps}-lr{lr:.6g}-s{seed}"


def config_differences(stored: Mapping[str, Any], plan: RunPlan) -> list[str]:
    """'key: stored X != planned Y' for every setting in which a stored run differs."""
    a, b = flatten_config(dict(stored)), flatten_config(plan.stored_config())
    diffs = []
    for key in sorted(a.keys() | b.keys()):
        if any(key == p or key.startswith(p + ".") for p in SAME_RUN_MAY_DIFFER):
            continue
        if a.get(key) != b.get(key):
            diffs.append(f"{key}: stored {a.get(key, '<absent>')} != planned "
                         f"{b.get(key, '<absent>')}")
    return diffs


def serves_lower_target(stored: Mapping[str, Any], plan: RunPlan) -> bool:
    """Whether a finished run stored with ``stored`` serves ``plan``, which asks for a lower
    (or equal) target_return than the run stopped at, or the run had none.

    The target only decides when a run stops: up to the planned target's first crossing the
    run trained exactly as the planned run would, so its steps to every planned target are
    the planned run's. It only trained further (its final return, run-averaged B_simple and
    final-checkpoint sharpness cover that longer run). A higher planned target, or none,
    would need training the run did not do.
    """
    old = (stored.get("train") or {}).get("target_return")
    new = plan.train.get("target_return")  # a finite number or None (TrainConfig checks it)
    return new is not None and (old is None or (isinstance(old, (int, float)) and new <= old))


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return None


def is_interrupted(status: Mapping[str, Any] | None) -> bool:
    return bool(status) and status.get("state") == "failed" and \
        str(status.get("message", "")).startswith(_INTERRUPTED)


def classify_run(plan: RunPlan, *, retry_failed: bool = False) -> tuple[str, str]:
    """(action, detail) for a planned run, from its directory.

    Actions: ``new`` (no run there yet), ``resume`` (started, not finished: continue from
    its newest checkpoint), ``finished`` (skip), ``failed`` (skip unless retry_failed, in
    which case ``resume``), ``conflict`` (the directory holds a run with other settings;
    detail lists them).
    """
    path = Path(plan.run_dir)
    stored = read_json(path / "config.json")
    if stored is None:
        return "new", ""
    diffs = config_differences(stored, plan)
    status = read_json(path / "status.json")
    state = (status or {}).get("state")
    if diffs and state == "finished" and all(d.startswith(TARGET_KEY + ":") for d in diffs) \
            and serves_lower_target(stored, plan):
        old = stored["train"]["target_return"]
        return "finished", (f"{status.get('message', '')} (trained with target_return "
                            f"{'none' if old is None else f'{old:g}'}, above the planned "
                            f"{plan.train['target_return']:g}: reused)").lstrip()
    if diffs:
        return "conflict", "; ".join(diffs)
    if state == "finished":
        return "finished", str(status.get("message", ""))
    if state == "failed" and not is_interrupted(status):
        return ("resume" if retry_failed else "failed"), str(status.get("message", ""))
    return "resume", str((status or {}).get("message", ""))


def append_event(out: str | os.PathLike[str], event: str, run: str = "", **fields: Any) -> None:
    """Append one line to ``<out>/events.jsonl`` (one write in append mode)."""
    row = {"time": time.time(), "pid": os.getpid(), "event": event, "run": run, **fields}
    line = (json.dumps(row, sort_keys=True, default=str) + "\n").encode("utf-8")
    path = Path(out) / "events.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def read_events(out: str | os.PathLike[str]) -> list[dict[str, Any]]:
    path = Path(out) / "events.jsonl"
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue
    return rows


def write_sweep_state(spec: SweepSpec, plans: list[RunPlan]) -> None:
    """``<out>/sweep.json``: the spec and the planned runs, written atomically."""
    atomic_write_json(Path(spec.out) / "sweep.json", {
        "format": 1,
        "spec": spec.to_dict(),
        "runs": [{k: getattr(p, k) for k in ("name", "env", "num_envs", "num_steps", "lr",
                                              "seed")} for p in plans],
    })


def read_sweep_state(out: str | os.PathLike[str]) -> dict[str, Any] | None:
    return read_json(Path(out) / "sweep.json")
