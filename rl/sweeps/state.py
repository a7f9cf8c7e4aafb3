"""The state of a sweep on disk: each run's plan and status, the event log, the spec.

``RunPlan`` is one planned run; ``classify_run`` says whether it is new, to resume,
finished, failed or in conflict; ``events.jsonl`` and ``sweep.json`` record the sweep;
``untrained_floor.json`` the floor of its targets and ``best_lr.json`` the learning rate
chosen per batch size for the second stage (docs/sweeps.md).
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agents import PPOConfig
from rl.measure.floor import UntrainedFloor
from rl.measure.supervised import SupervisedConfig
from rl.runs.files import atomic_write_json
from rl.runs.lock import refuse_dangling_link
from rl.runs.record import RunStatus, peek_config, peek_status
from rl.runs.storage import flatten_config
from rl.sweeps.settings import SweepSpec, SweepStateError
from rl.train.config import TrainConfig, config_dict

# Config keys a finished or interrupted run may have stored differently and still count as
# the same run (where it lives, how often it checkpointed, which device trained it; a
# supervised run's torch threads).
SAME_RUN_MAY_DIFFER = ("train.resume", "train.run_dir", "train.device",
                       "train.checkpoint_every", "train.compile", "threads")

TARGET_KEY = "train.target_return"
"""The stopping target: a finished run serves a plan with a lower one (``serves_lower_target``)."""

SUPERVISED_TARGET_KEY = "target"
"""A supervised run's stopping target (its config.json is SupervisedConfig's fields)."""

# Status messages of runs that were stopped from outside rather than failed.
_INTERRUPTED = ("KeyboardInterrupt", "SystemExit")


@dataclass(frozen=True)
class RunPlan:
    """One run of a sweep: its parameters and its complete configs (plain dicts).

    A supervised run (``kind`` "supervised") has num_envs = its batch size (examples) and
    num_steps = 1, ``train`` = its SupervisedConfig keyword arguments and ``ppo`` = {}."""

    name: str
    env: str
    num_envs: int
    num_steps: int
    lr: float
    seed: int
    run_dir: str
    train: dict[str, Any]
    """TrainConfig keyword arguments (run_dir, budget and max target included); a supervised
    run's SupervisedConfig keyword arguments."""
    ppo: dict[str, Any]
    """PPOConfig keyword arguments ({} for a supervised run)."""
    kind: str = "ppo"
    """ppo (a PPO run, ``rl.train``) or supervised (``rl.measure.supervised``)."""

    @property
    def rollout_batch_size(self) -> int:
        return self.num_envs * self.num_steps

    @property
    def supervised(self) -> bool:
        return self.kind == "supervised"

    @property
    def target(self) -> float | None:
        """The target the run stops at (None: it trains its whole budget)."""
        return self.train.get("target" if self.supervised else "target_return")

    @property
    def return_window(self) -> int:
        """Evaluations in the progress score a target is compared with (PPO: games in the
        smoothed return; supervised: 1, each evaluation covers a whole split)."""
        return 1 if self.supervised else int(self.train.get("return_window", 20))

    def configs(self, *, resume: bool = False):
        """(TrainConfig, PPOConfig) of this run (a PPO run)."""
        if self.supervised:
            raise ValueError(f"{self.name} is a supervised run: use supervised_config()")
        return TrainConfig(**{**self.train, "resume": resume}), PPOConfig(**self.ppo)

    def supervised_config(self) -> SupervisedConfig:
        """The SupervisedConfig of this run (a supervised run)."""
        if not self.supervised:
            raise ValueError(f"{self.name} is a PPO run: use configs()")
        return SupervisedConfig(**self.train)

    def stored_config(self) -> dict[str, Any]:
        """What the trainer writes to config.json for this run (JSON-normalised)."""
        if self.supervised:
            config = {"kind": "gns-supervised",
                      **dataclasses.asdict(self.supervised_config())}
        else:
            cfg, ppo = self.configs()
            config = {"train": config_dict(cfg), "ppo": dataclasses.asdict(ppo)}
        return json.loads(json.dumps(config, sort_keys=True))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RunPlan:
        return cls(**d)


def run_name(env: str, num_envs: int, num_steps: int, lr: float, seed: int, *,
             supervised: bool = False) -> str:
    """``{env}-b{B}-n{num_envs}x{num_steps}-lr{lr}-s{seed}``; a supervised run's has no
    ``n...`` part (its B is its batch size)."""
    slug = env.replace("/", "_").replace(":", "_")
    shape = "" if supervised else f"-n{num_envs}x{num_steps}"
    return f"{slug}-b{num_envs * num_steps}{shape}-lr{lr:.6g}-s{seed}"


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
    old = stored.get("target") if plan.supervised else \
        (stored.get("train") or {}).get("target_return")
    new = plan.target  # a finite number or None (TrainConfig / SupervisedConfig check it)
    return new is not None and (old is None or (isinstance(old, (int, float)) and new <= old))


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return None


# Failures of the machine, not of the run's settings (#24 item 4): after space or memory is
# freed the same run goes on, so a sweep resumes it as it does an interrupted one.
_MACHINE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.ENOMEM, errno.EIO,
                             errno.EROFS})
_ERRNO_MESSAGE = re.compile(r"^\w*(?:OSError|IOError|Error): \[Errno (\d+)\]")
_OUT_OF_MEMORY = ("MemoryError", "OutOfMemoryError", "RuntimeError: DefaultCPUAllocator: "
                  "can't allocate memory", "torch.OutOfMemoryError")


def is_interrupted(status: RunStatus | None) -> bool:
    """Whether a failed run was stopped from outside rather than by its settings: a signal
    (Ctrl-C, SIGTERM), or the machine (disk full, file size limit, out of memory, an I/O
    error). A sweep resumes such runs; ``retry_failed`` is needed only for the others."""
    if status is None or status.state != "failed":
        return False
    message = status.message
    if message.startswith(_INTERRUPTED + _OUT_OF_MEMORY):
        return True
    match = _ERRNO_MESSAGE.match(message)
    return match is not None and int(match.group(1)) in _MACHINE_ERRNOS


def classify_run(plan: RunPlan, *, retry_failed: bool = False) -> tuple[str, str]:
    """(action, detail) for a planned run, from its directory.

    Actions: ``new`` (no run there yet), ``resume`` (started, not finished: continue from
    its newest checkpoint), ``finished`` (skip), ``failed`` (skip unless retry_failed, in
    which case ``resume``), ``conflict`` (the directory holds a run with other settings;
    detail lists them).
    """
    path = Path(plan.run_dir)
    refuse_dangling_link(path)  # else it would read as "new" and fail to be created
    stored = peek_config(path)
    if stored is None:
        return "new", ""
    diffs = config_differences(stored, plan)
    status = peek_status(path)
    state = None if status is None else status.state
    key = SUPERVISED_TARGET_KEY if plan.supervised else TARGET_KEY
    if diffs and state == "finished" and all(d.startswith(key + ":") for d in diffs) \
            and serves_lower_target(stored, plan):
        old = stored["target"] if plan.supervised else stored["train"]["target_return"]
        return "finished", (f"{status.message} (trained with {key.split('.')[-1]} "
                            f"{'none' if old is None else f'{old:g}'}, above the planned "
                            f"{plan.target:g}: reused)").lstrip()
    if diffs:
        return "conflict", "; ".join(diffs)
    if state == "finished":
        return "finished", status.message
    if state == "failed" and not is_interrupted(status):
        return ("resume" if retry_failed else "failed"), status.message
    return "resume", "" if status is None else status.message


def check_plans(spec: SweepSpec, plans: list[RunPlan]) -> dict[str, tuple[str, str]]:
    """{run name: (action, detail)} (``classify_run``); ``SweepStateError`` naming every run
    directory that holds a run with other settings than planned (a sweep must not continue
    it, nor a fit count it as this sweep's run)."""
    out = Path(spec.out)
    actions = {p.name: classify_run(p, retry_failed=spec.retry_failed) for p in plans}
    conflicts = [f"{name}: {detail}" for name, (a, detail) in actions.items()
                 if a == "conflict"]
    if conflicts:
        raise SweepStateError(
            f"{len(conflicts)} run(s) in {out / 'runs'} were made with other settings than "
            "this spec plans for them:\n  " + "\n  ".join(conflicts[:10])
            + ("\n  ..." if len(conflicts) > 10 else "")
            + "\nUse a new sweep directory (out) for the new settings, or restore the spec "
            "those runs were made with (see sweep.json); a run copied in from another sweep "
            "belongs in that sweep's directory: move it out."
        )
    return actions


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
    """The contents of ``<out>/sweep.json``; None where there is none. ``SweepStateError``
    naming the file if it is not a JSON object (cut short or changed): read as no sweep, it
    would be reported as a spec with nothing in it."""
    path = Path(out) / "sweep.json"
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        state = exc
    if not isinstance(state, dict):
        problem = f"({state})" if isinstance(state, ValueError) else "(not a JSON object)"
        raise SweepStateError(
            f"{path} is not readable JSON {problem}: it was cut short or changed; restore it "
            f"from a copy, or rewrite it by running the sweep with the spec it was made with "
            f"(`rlscale sweep SPEC.toml --out {out}`: finished runs are kept)")
    return state


# --------------------------------------------------------------------------------------
# The untrained-play floor of the targets, and the learning rates chosen for stage 2
# --------------------------------------------------------------------------------------

UNTRAINED_FLOOR_FILE = "untrained_floor.json"
"""Per environment, the untrained-play floor its targets must exceed (plain JSON)."""

BEST_LR_FILE = "best_lr.json"
"""Per (environment, batch size), the learning rate stage 2 adds seeds at (plain JSON)."""


def read_floor_file(out: str | os.PathLike[str]) -> dict[str, Any]:
    """The whole ``untrained_floor.json`` ({"envs": {}} where there is none)."""
    doc = read_json(Path(out) / UNTRAINED_FLOOR_FILE)
    if not isinstance(doc, dict) or not isinstance(doc.get("envs"), dict):
        return {"format": 1, "envs": {}}
    return doc


def write_floor_file(out: str | os.PathLike[str], doc: Mapping[str, Any]) -> None:
    atomic_write_json(Path(out) / UNTRAINED_FLOOR_FILE, dict(doc))


def read_untrained_floors(out: str | os.PathLike[str]) -> dict[str, UntrainedFloor]:
    """{env: its untrained-play floor} of the sweep in ``out``; {} for a sweep that has none
    (made before floors were measured: ``rlscale sweep --out DIR --floor-only`` measures
    it). Plain JSON, nothing executed. ValueError naming the file if an entry is malformed."""
    path = Path(out) / UNTRAINED_FLOOR_FILE
    floors = {}
    for env, entry in read_floor_file(out)["envs"].items():
        try:
            floors[env] = UntrainedFloor.from_dict(dict(entry))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{path}: the entry of {env} is not a floor ({exc}); delete the "
                             f"file and measure again with `rlscale sweep --out {out} "
                             "--floor-only`") from None
    return floors


@dataclass(frozen=True)
class BestLr:
    """The learning rate chosen at one batch size from its settled grid runs (stage 1)."""

    env: str
    batch_size: int
    """Rollout batch size B, agent steps."""
    lr: float | None
    """The chosen learning rate; None when no lr of the grid was eligible (no stage 2)."""
    target: float
    """The target return the choice was made at (the spec's highest then)."""
    grid_lrs: tuple[float, ...]
    """The learning rates of the grid at this batch size."""
    grid_seeds: tuple[int, ...]
    """The seeds of the grid runs it was chosen from."""
    reason: str = ""
    """Why no lr was chosen (lr None), else ''."""

    @property
    def at_edge(self) -> bool:
        """The choice is the smallest or largest lr of a grid of 2 or more: the grid may be
        too small."""
        return self.lr is not None and len(self.grid_lrs) > 1 and \
            self.lr in (min(self.grid_lrs), max(self.grid_lrs))

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["grid_lrs"], d["grid_seeds"] = list(self.grid_lrs), list(self.grid_seeds)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> BestLr:
        lr = d["lr"]
        return cls(env=str(d["env"]), batch_size=int(d["batch_size"]),
                   lr=None if lr is None else float(lr), target=float(d["target"]),
                   grid_lrs=tuple(float(v) for v in d["grid_lrs"]),
                   grid_seeds=tuple(int(v) for v in d["grid_seeds"]),
                   reason=str(d.get("reason", "")))


def read_best_lrs(out: str | os.PathLike[str]) -> dict[tuple[str, int], BestLr]:
    """{(env, batch size): choice} recorded in ``<out>/best_lr.json``; {} where none is.
    ValueError naming the file if an entry is malformed."""
    path = Path(out) / BEST_LR_FILE
    doc = read_json(path)
    if not isinstance(doc, dict):
        return {}
    choices = {}
    for entry in doc.get("choices", []):
        try:
            c = BestLr.from_dict(entry)
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{path}: an entry is not a learning-rate choice ({exc!r}: "
                             f"{entry!r}); restore the file or use a new sweep directory"
                             ) from None
        choices[(c.env, c.batch_size)] = c
    return choices


def extends_grid(new: BestLr, old: BestLr) -> bool:
    """``new`` was chosen on a grid that strictly contains ``old``'s (the spec's lrs were
    extended, as a choice at the grid's edge asks)."""
    return set(new.grid_lrs) > set(old.grid_lrs)


def add_best_lrs(out: str | os.PathLike[str], new: list[BestLr]) -> None:
    """Add choices to ``<out>/best_lr.json`` (atomically). A recorded choice is never
    changed, except by one made on a grid that extends its grid (``extends_grid``); the
    replaced choice stays in the file under "superseded". Any other second choice for the
    same (env, batch size) is a ValueError."""
    old = read_best_lrs(out)
    clash = [c for c in new if (c.env, c.batch_size) in old and old[(c.env, c.batch_size)] != c
             and not extends_grid(c, old[(c.env, c.batch_size)])]
    if clash:
        raise ValueError(f"best_lr.json already records a choice for "
                         f"{', '.join(f'{c.env} B={c.batch_size}' for c in clash)}; a recorded "
                         "choice is never changed (except after the grid is extended)")
    doc = read_json(Path(out) / BEST_LR_FILE)
    superseded = list(doc.get("superseded", [])) if isinstance(doc, dict) else []
    superseded += [old[(c.env, c.batch_size)].to_dict() for c in new
                   if (c.env, c.batch_size) in old and old[(c.env, c.batch_size)] != c]
    merged = {**old, **{(c.env, c.batch_size): c for c in new}}
    atomic_write_json(Path(out) / BEST_LR_FILE, {
        "format": 1,
        "rule": "rl.analysis.fit.best_per_batch at the spec's highest target, grid seeds only",
        "choices": [merged[k].to_dict() for k in sorted(merged)],
        "superseded": superseded,
    })
