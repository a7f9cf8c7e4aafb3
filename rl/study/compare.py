"""Compare games with each other and with supervised learning (``rlscale compare``).

See docs/study.md for the full description.
"""

from __future__ import annotations

import dataclasses
import json
import math
import multiprocessing as mp
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, ThreadPoolExecutor, wait
from concurrent.futures import as_completed as futures_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

import envs
from rl.analysis.scaling import (
    POWER_LAW_COLUMNS,
    noise_scale_power_laws,
    plot_power_laws,
    tradeoff_power_laws,
)
from rl.analysis.sharpness import (
    SharpnessConfig,
    digits_sharpness,
    plot_sharpness,
    summarize_repeats,
    sweep_sharpness,
    trend,
)
from rl.analysis.sweep_fits import fit_sweep, plot_b_simple, plot_fits
from rl.measure.supervised import SEGMENT_FRACTION, SupervisedConfig, ratio_interval, run_supervised
from rl.runs.storage import atomic_write_json, atomic_write_text, load_metrics, save_figure
from rl.study.report import Figure, Section, format_value, round_sig, write_report
from rl.sweeps.executors import available_cores as cores
from rl.sweeps.executors import init_worker, run_one, run_sweep, stop_workers
from rl.sweeps.results import results_table
from rl.sweeps.settings import KNOWN_MAX_RETURN, SweepStateError
from rl.sweeps.spec import parse_spec, plan_runs
from rl.sweeps.state import classify_run

__all__ = [
    "CITED",
    "CITED_LABEL",
    "RESULT_COLUMNS",
    "STUDY_PRESETS",
    "SUITES",
    "GamePlan",
    "NoiseRuns",
    "StudyPlan",
    "SweepGrid",
    "build_plan",
    "collect_results",
    "compare",
    "headline_table",
    "plot_summary",
    "run_study",
    "write_study_report",
]

# --------------------------------------------------------------------------------------
# Published values
# --------------------------------------------------------------------------------------

CITED_REFERENCE = "McCandlish et al. 2018, Table 1"
CITED_LABEL = "cited (McCandlish et al. 2018)"

# (task, kind, B_crit, B_simple, unit, note): a number, or (low, high) for a range.
CITED: tuple[tuple[str, str, Any, Any, str, str], ...] = (
    ("MNIST", "supervised", 200, 900, "training examples", "run-averaged"),
    ("SVHN", "supervised", 500, 4_000, "training examples", "run-averaged"),
    ("CIFAR-10", "supervised", 900, 2_000, "training examples", "run-averaged"),
    ("ImageNet", "supervised", 15_000, 30_000, "training examples", "run-averaged"),
    ("Billion Word", "supervised", 100_000, 150_000, "tokens", "run-averaged"),
    ("Atari (several games)", "rl", (400, 8_000), (1_000, 20_000), "as published",
     "range over the games; run-averaged"),
    ("Dota 5v5", "rl", (8e6, math.inf), 2.4e7, "as published",
     "B_crit estimated (lower bound); run-averaged"),
)

# --------------------------------------------------------------------------------------
# Presets and suites
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SweepGrid:
    """A critical-batch sweep of one game: B = num_envs x num_steps agent steps."""

    num_envs: tuple[int, ...]
    num_steps: int
    lrs: tuple[float, ...]
    seeds: int
    budget: int
    """agent steps per run at most"""
    gns_every: int


@dataclass(frozen=True)
class NoiseRuns:
    """Noise-scale runs of one game at one batch size."""

    num_envs: int
    num_steps: int
    budget: int
    gns_every: int
    seeds: int


@dataclass(frozen=True)
class Family:
    """Settings of an environment family in one preset."""

    trainer_preset: str
    sweep: SweepGrid
    noise: NoiseRuns
    ppo: Mapping[str, Any] = field(default_factory=dict)
    train: Mapping[str, Any] = field(default_factory=dict)


_MINATAR_PPO = {"learning_rate": 1e-3}
_MINATAR_TRAIN = {"network": "auto"}
_ATARI_B = (8, 16, 32, 64, 128, 256, 512)

STUDY_PRESETS: dict[str, dict[str, Family]] = {
    "cpu-quick": {
        "classic": Family("classic", SweepGrid((1, 2, 4, 8, 16, 32, 64), 32, (1e-3,), 2,
                                               60_000, 5),
                          NoiseRuns(8, 32, 60_000, 2, 1)),
        "minatar": Family("atari", SweepGrid((4, 8, 16, 32, 64), 128, (1e-3,), 1, 1_000_000, 10),
                          NoiseRuns(8, 128, 750_000, 2, 1), _MINATAR_PPO, _MINATAR_TRAIN),
        "atari": Family("atari", SweepGrid(_ATARI_B, 128, (2.5e-4,), 1, 10_000_000, 10),
                        NoiseRuns(8, 128, 100_000, 5, 1)),
    },
    "gpu": {
        "classic": Family("classic", SweepGrid((1, 2, 4, 8, 16, 32, 64), 32, (5e-4, 1e-3, 2e-3),
                                               4, 200_000, 5),
                          NoiseRuns(8, 32, 200_000, 1, 3)),
        "minatar": Family("atari", SweepGrid((4, 8, 16, 32, 64, 128), 128, (5e-4, 1e-3), 3,
                                             5_000_000, 10),
                          NoiseRuns(8, 128, 5_000_000, 4, 3), _MINATAR_PPO, _MINATAR_TRAIN),
        "atari": Family("atari", SweepGrid(_ATARI_B, 128, (2.5e-4, 1e-3), 2, 10_000_000, 10),
                        NoiseRuns(8, 128, 10_000_000, 10, 2)),
    },
}
PRESET_NAMES = tuple(STUDY_PRESETS)

# Target returns of the critical-batch sweeps (a run stops at the highest). Lower targets
# cost no training; at least 3 spanning a factor 2 (rl.analysis.scaling.MIN_SPAN) give power laws.
SWEEP_TARGETS: dict[str, tuple[float, ...]] = {
    "CartPole": (50.0, 75.0, 100.0, 150.0, 200.0),
    "Acrobot": (-200.0, -120.0),
    "MinAtar-Breakout": (2.5, 5.0, 10.0),
    "MinAtar-SpaceInvaders": (15.0, 30.0, 100.0),
    "MinAtar-Freeway": (10.0, 20.0, 40.0),
    "MinAtar-Asterix": (2.5, 5.0, 15.0),
    "MinAtar-Seaquest": (2.5, 5.0, 15.0),
    "Pong": (0.0, 18.0),
    "Breakout": (50.0, 200.0),
    "SpaceInvaders": (500.0, 1000.0),
    "BeamRider": (1000.0, 2500.0),
    "Qbert": (2500.0, 10000.0),
    "Seaquest": (500.0, 1500.0),
}
# Noise-scale runs stop at the game's known maximum return, else at this (never reached).
NO_TARGET = 1e9


@dataclass(frozen=True)
class Suite:
    description: str
    games: tuple[str, ...]
    sweep_games: Mapping[str, tuple[str, ...]]
    """preset -> the games that get a critical-batch sweep"""


_MINATAR = ("MinAtar-Breakout", "MinAtar-SpaceInvaders", "MinAtar-Freeway", "MinAtar-Asterix",
            "MinAtar-Seaquest")
_ATARI_PAPER = ("Pong", "Breakout", "SpaceInvaders", "BeamRider", "Qbert", "Seaquest")

SUITES: dict[str, Suite] = {
    "classic": Suite("classic control", ("CartPole", "Acrobot"),
                     {"cpu-quick": ("CartPole", "Acrobot"), "gpu": ("CartPole", "Acrobot")}),
    "minatar": Suite("MinAtar games (the rlscale-minatar plugin)", _MINATAR,
                     {"cpu-quick": (), "gpu": _MINATAR}),
    "atari-paper": Suite("Atari games of McCandlish et al. 2018", _ATARI_PAPER,
                         {"cpu-quick": (), "gpu": _ATARI_PAPER}),
    "demo": Suite("CartPole sweep and two MinAtar games (rlscale demo on a CPU)",
                  ("CartPole", "MinAtar-Breakout", "MinAtar-SpaceInvaders"),
                  {"cpu-quick": ("CartPole",), "gpu": ("CartPole",)}),
}

# --------------------------------------------------------------------------------------
# The plan
# --------------------------------------------------------------------------------------


@dataclass
class GamePlan:
    """Everything the study does for one game."""

    game: str
    family: str
    trainer_preset: str
    sweep: SweepGrid | None
    targets: tuple[float, ...]
    noise: NoiseRuns | None
    noise_target: float
    ppo: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)


@dataclass
class StudyPlan:
    """A resolved study: games, supervised reference, execution."""

    out: str
    suite: str
    preset: str
    games: list[GamePlan]
    supervised: Any | None
    """rl.measure.supervised.SupervisedConfig, or None for no supervised reference"""
    parallel: int
    device: str = "auto"
    n_boot: int = 1000
    retry_failed: bool = False

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        return json.loads(json.dumps(d, default=str))


@dataclass
class Overrides:
    """Command-line overrides of a preset; None keeps the preset's value."""

    sweep_games: Sequence[str] | str | None = None
    noise_games: Sequence[str] | str | None = None
    num_envs: Sequence[int] | None = None
    num_steps: int | None = None
    lrs: Sequence[float] | None = None
    seeds: int | None = None
    targets: Sequence[float] | None = None
    budget: int | None = None
    sweep_gns_every: int | None = None
    noise_num_envs: int | None = None
    noise_num_steps: int | None = None
    noise_budget: int | None = None
    noise_seeds: int | None = None
    gns_every: int | None = None
    supervised: bool = True
    supervised_epochs: int | None = None
    supervised_seed: int | None = None
    parallel: int | None = None
    device: str | None = None
    n_boot: int | None = None
    retry_failed: bool = False


def family_of(game: str) -> str:
    """classic, minatar or atari (by the environment's kind and name)."""

    entry = envs.resolve(game)
    if entry.kind == "atari":
        return "atari"
    if entry.name.lower().startswith("minatar"):
        return "minatar"
    return "classic"


def canonical_game(game: str) -> str:
    """The environment's canonical name, as the sweeps name it (``rlscale envs``)."""

    entry = envs.resolve(game)
    return f"gym:{entry.name}" if entry.kind == "gym" else entry.name


def available_cores() -> int:
    return cores()


def _select(choice: Sequence[str] | str | None, games: Sequence[str],
            default: Iterable[str], what: str) -> set[str]:
    if choice is None:
        return {g for g in games if g in set(default)}
    if isinstance(choice, str):
        if choice == "all":
            return set(games)
        if choice == "none":
            return set()
        choice = [c for c in choice.split(",") if c.strip()]
    chosen = {canonical_game(c.strip()) for c in choice}
    unknown = chosen - set(games)
    if unknown:
        raise ValueError(f"{what} names {', '.join(sorted(unknown))}, not among the study's "
                         f"games ({', '.join(games)})")
    return chosen


def build_plan(*, suite: str | None = None, games: Sequence[str] | None = None,
               preset: str = "cpu-quick", out: str | os.PathLike[str] = "results/compare",
               overrides: Overrides | None = None) -> StudyPlan:
    """Resolve a suite (or a list of games) and a preset, with overrides, into a plan."""

    ov = overrides or Overrides()
    if preset not in STUDY_PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESET_NAMES)}")
    if suite is not None and suite not in SUITES:
        raise ValueError(f"unknown suite {suite!r}; choose one of {', '.join(SUITES)}")
    if not games and suite is None:
        raise ValueError(f"name the games or a suite (--suite {'|'.join(SUITES)})")
    names = list(games) if games else list(SUITES[suite].games)
    canon = []
    for g in names:
        c = canonical_game(g)
        if c in canon:
            raise ValueError(f"game {c!r} is listed twice")
        canon.append(c)
    if suite is not None:
        default_sweeps = {canonical_game(g) for g in SUITES[suite].sweep_games[preset]}
    else:  # loose games: sweeps where the preset makes them cheap (classic control on CPU)
        default_sweeps = {g for g in canon
                          if preset == "gpu" or family_of(g) == "classic"}
    sweep_games = _select(ov.sweep_games, canon, default_sweeps, "--sweep-games")
    noise_games = _select(ov.noise_games, canon, canon, "--noise-games")

    plans = []
    for game in canon:
        fam_name = family_of(game)
        fam = STUDY_PRESETS[preset][fam_name]
        grid = None
        targets: tuple[float, ...] = ()
        if game in sweep_games:
            g = fam.sweep
            grid = SweepGrid(
                num_envs=tuple(ov.num_envs) if ov.num_envs else g.num_envs,
                num_steps=ov.num_steps or g.num_steps,
                lrs=tuple(float(x) for x in ov.lrs) if ov.lrs else g.lrs,
                seeds=ov.seeds or g.seeds,
                budget=ov.budget or g.budget,
                gns_every=ov.sweep_gns_every if ov.sweep_gns_every is not None else g.gns_every,
            )
            targets = tuple(float(t) for t in ov.targets) if ov.targets else \
                SWEEP_TARGETS.get(game, ())
            if not targets:
                raise ValueError(f"no default target returns for {game}; give --targets")
        noise = None
        if game in noise_games:
            n = fam.noise
            noise = NoiseRuns(
                num_envs=ov.noise_num_envs or n.num_envs,
                num_steps=ov.noise_num_steps or n.num_steps,
                budget=ov.noise_budget or n.budget,
                gns_every=ov.gns_every or n.gns_every,
                seeds=ov.noise_seeds or n.seeds,
            )

        noise_target = KNOWN_MAX_RETURN.get(game, (NO_TARGET, ""))[0]
        plans.append(GamePlan(game, fam_name, fam.trainer_preset, grid, targets, noise,
                              noise_target, dict(fam.ppo), dict(fam.train)))
    supervised = None
    if ov.supervised:
        kw: dict[str, Any] = {}
        if ov.supervised_epochs:
            kw["epochs"] = ov.supervised_epochs
        if ov.supervised_seed is not None:
            kw["seed"] = ov.supervised_seed
        supervised = SupervisedConfig(**kw)
    cores = available_cores()
    parallel = ov.parallel or (cores if preset == "cpu-quick" else max(1, cores // 4))
    return StudyPlan(out=str(out), suite=suite or "custom", preset=preset, games=plans,
                     supervised=supervised, parallel=max(1, int(parallel)),
                     device=ov.device or "auto", n_boot=ov.n_boot or 1000,
                     retry_failed=ov.retry_failed)


# --------------------------------------------------------------------------------------
# Sweep specs of the plan
# --------------------------------------------------------------------------------------


def slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


@dataclass
class Part:
    """One sweep of the study: a game's critical-batch sweep or its noise-scale runs."""

    kind: str  # "sweep" or "noise"
    game: str
    spec: Any  # rl.sweeps.settings.SweepSpec

    @property
    def out(self) -> Path:
        return Path(self.spec.out)


def _train_overrides(plan: StudyPlan, g: GamePlan, gns_every: int) -> dict[str, Any]:
    train = {**g.train, "gns_every": gns_every}
    if plan.device != "auto":
        train["device"] = plan.device
    return train


def study_parts(plan: StudyPlan) -> list[Part]:
    """The sweeps of the study, validated (``rl.sweeps.settings.SweepSpecError`` lists problems)."""

    out = Path(plan.out)
    parts = []
    for g in plan.games:
        if g.noise is not None:
            n = g.noise
            raw = dict(env=g.game, num_envs=[n.num_envs], num_steps=n.num_steps,
                       seeds=n.seeds, targets=[g.noise_target], budget=n.budget,
                       preset=g.trainer_preset, parallel=plan.parallel,
                       retry_failed=plan.retry_failed, out=str(out / "noise" / slug(g.game)),
                       ppo=dict(g.ppo), train=_train_overrides(plan, g, n.gns_every))
            if "learning_rate" in raw["ppo"]:  # a family's lr: the sweep key sets it
                raw["lrs"] = [raw["ppo"].pop("learning_rate")]
            parts.append(Part("noise", g.game,
                              parse_spec(raw, source=f"noise-scale runs of {g.game}")))
        if g.sweep is not None:
            s = g.sweep
            raw = dict(env=g.game, num_envs=list(s.num_envs), num_steps=s.num_steps,
                       lrs=list(s.lrs), seeds=s.seeds, targets=list(g.targets),
                       budget=s.budget, preset=g.trainer_preset, parallel=plan.parallel,
                       retry_failed=plan.retry_failed, out=str(out / "sweeps" / slug(g.game)),
                       ppo={**g.ppo, "anneal_lr": False},
                       train=_train_overrides(plan, g, s.gns_every))
            raw["ppo"].pop("learning_rate", None)  # the sweep's lrs set it
            parts.append(Part("sweep", g.game,
                              parse_spec(raw, source=f"critical-batch sweep of {g.game}")))
    return parts


_COST = {"atari": 30.0, "minatar": 3.0, "classic": 1.0}


def _cost(part: Part, plan: StudyPlan) -> float:
    """Rough agent-step cost of a part's longest run, for longest-first scheduling."""
    fam = next(g.family for g in plan.games if g.game == part.game)
    return _COST[fam] * float(part.spec.budget or 0)


def supervised_dir(plan: StudyPlan) -> Path | None:
    cfg = plan.supervised
    if cfg is None:
        return None
    return Path(plan.out) / "supervised" / f"{cfg.dataset}-{cfg.model}-seed{cfg.seed}"


def _supervised_state(path: Path, cfg) -> str:
    """new, finished or conflict (a finished run with other settings)."""
    config_file, summary = path / "config.json", path / "summary.json"
    if not config_file.exists():
        return "new"
    stored = json.loads(config_file.read_text(encoding="utf-8"))
    planned = json.loads(json.dumps({"kind": "gns-supervised", **dataclasses.asdict(cfg)}))
    if stored != planned:
        return "conflict"
    return "finished" if summary.exists() else "new"


def _run_supervised_job(cfg_dict: dict[str, Any], out_dir: str) -> dict[str, Any]:
    """Worker-process job: the supervised reference run (its summary)."""

    return run_supervised(SupervisedConfig(**cfg_dict), out_dir).summary


# --------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------


class _SharedPoolExecutor:
    """An ``rl.sweeps.executors`` executor whose runs go to a process pool shared by the study."""

    def __init__(self, pool: ProcessPoolExecutor, retry_failed: bool):
        self.pool = pool
        self.retry_failed = retry_failed
        self.submitted = threading.Event()

    def run(self, plans, on_done) -> None:
        try:
            futures = {self.pool.submit(run_one, p.to_dict(), None, self.retry_failed): p
                       for p in plans}
        finally:
            self.submitted.set()
        for fut in futures_completed(futures):
            plan = futures[fut]
            try:
                summary = fut.result()
            except Exception as exc:  # the worker died, or the pool was shut down
                summary = dict(run=plan.name, action="", status="failed",
                               message=f"worker process failed: {exc!r}")
            on_done(plan, summary)


def _last_metrics_row(path: Path) -> dict[str, Any] | None:
    """The last complete row of ``metrics.jsonl`` (reads the file's tail only)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 16384))
            tail = f.read()
    except OSError:
        return None
    lines = tail.split(b"\n")[:-1]
    for raw in reversed(lines):
        try:
            return json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            continue
    return None


class _Monitor:
    """The study's one progress display: runs done / total and the runs in progress."""

    def __init__(self, plans: list, extra: int, console, quiet: bool):
        self.plans = plans
        self.extra_total = extra
        self.extra_done = 0
        self.quiet = quiet
        self.console = console
        self.progress = None
        if quiet:
            return

        monitor = self

        class StudyProgress(Progress):
            def get_renderables(self):
                yield self.make_tasks_table(self.tasks)
                table = monitor.running_table()
                if table is not None:
                    yield table

        self.progress = StudyProgress(
            TextColumn("[bold]study"), BarColumn(), MofNCompleteColumn(),
            TextColumn("runs done"), TimeElapsedColumn(), console=console,
            refresh_per_second=2,
        )
        self.task = self.progress.add_task("study", total=len(plans) + extra)
        self._running: list[tuple[str, dict]] = []

    def log(self, msg: str) -> None:
        if self.quiet:
            return
        (self.progress.console if self.progress else self.console).print(msg, highlight=False)

    def __enter__(self):
        if self.progress is not None:
            self.progress.start()
        return self

    def __exit__(self, *exc):
        if self.progress is not None:
            self.tick()
            self.progress.stop()

    def tick(self) -> None:
        if self.progress is None:
            return
        done = 0
        running = []
        now = time.time()
        for p in self.plans:
            path = Path(p.run_dir)
            try:
                state = json.loads((path / "status.json").read_text()).get("state")
            except (OSError, ValueError):
                state = None
            if state in ("finished", "failed"):
                done += 1
                continue
            metrics = path / "metrics.jsonl"
            try:
                fresh = now - metrics.stat().st_mtime < 120
            except OSError:
                fresh = False
            if state == "running" and fresh:
                row = _last_metrics_row(metrics)
                if row is not None:
                    running.append((p, row))
        self._running = running
        self.progress.update(self.task, completed=done + self.extra_done)

    def running_table(self):
        if not getattr(self, "_running", None):
            return None

        table = Table(box=None, padding=(0, 1), show_header=True, header_style="dim")
        for col in ("run in progress", "agent steps", "SPS", "return"):
            table.add_column(col, justify="left" if col.startswith("run") else "right")
        for plan, row in self._running:
            ret = row.get("return_recent", math.nan)
            budget = plan.train.get("total_agent_steps", 0)
            table.add_row(plan.name, f"{row.get('agent_steps', 0):,}/{budget:,}",
                          f"{row.get('sps', math.nan):,.0f}",
                          "-" if ret is None or ret != ret else f"{ret:.1f}")
        return table


def _check_conflicts(parts: list[Part]) -> None:
    conflicts = []
    for part in parts:
        for p in plan_runs(part.spec):
            action, detail = classify_run(p, retry_failed=part.spec.retry_failed)
            if action == "conflict":
                conflicts.append(f"{part.out.name} ({part.kind}) {p.name}: {detail}")
    if conflicts:
        raise SweepStateError(
            f"{len(conflicts)} run(s) of this study's directory were made with other settings "
            "than planned now:\n  " + "\n  ".join(conflicts[:10])
            + ("\n  ..." if len(conflicts) > 10 else "")
            + "\nUse another --out for the new settings, or the settings those runs were made "
            "with (see study.json and each sweep.json)."
        )


def run_study(plan: StudyPlan, *, quiet: bool = False, console=None,
              log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run (or continue) every sweep, noise-scale run and the supervised reference.

    Finished runs are skipped, interrupted ones resumed (``rl.sweeps.executors.run_sweep``).
    Returns {"tables": {(kind, game): results table}, "supervised": summary or None}.
    """

    console = console or Console(stderr=True)
    out = Path(plan.out)
    parts = study_parts(plan)
    _check_conflicts(parts)
    sup_dir = supervised_dir(plan)
    sup_state = "none"
    if sup_dir is not None:
        sup_state = _supervised_state(sup_dir, plan.supervised)
        if sup_state == "conflict":
            raise ValueError(f"{sup_dir} holds a supervised run with other settings; use "
                             "another --out")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "study.json", {"format": 1, **plan.to_dict()})

    parts.sort(key=lambda p: -_cost(p, plan))
    all_plans = [p for part in parts for p in plan_runs(part.spec)]
    threads = max(1, available_cores() // plan.parallel)
    monitor = _Monitor(all_plans, 1 if sup_dir is not None else 0, console, quiet)
    user_log = log

    def say(msg: str) -> None:
        monitor.log(msg)
        if user_log is not None:
            user_log(msg)

    say(f"study {out}: {len(parts)} sweep(s), {len(all_plans)} PPO runs"
        + (", 1 supervised run" if sup_dir is not None else "")
        + f"; {plan.parallel} at once, {threads} torch thread(s) each")
    pool = ProcessPoolExecutor(max_workers=plan.parallel, mp_context=mp.get_context("spawn"),
                               initializer=init_worker, initargs=(threads, os.getpid()))
    sweeps = ThreadPoolExecutor(max_workers=max(1, len(parts)),
                                thread_name_prefix="study-sweep")
    supervised = None
    sup_future = None
    try:
        with monitor:
            if sup_state == "finished":
                supervised = json.loads((sup_dir / "summary.json").read_text())
                monitor.extra_done = 1
                say(f"supervised reference: finished, reused ({sup_dir})")
            elif sup_dir is not None:
                if sup_dir.exists():
                    shutil.rmtree(sup_dir)  # an unfinished start: cheap to redo
                sup_future = pool.submit(_run_supervised_job,
                                         dataclasses.asdict(plan.supervised), str(sup_dir))
            futures = {}
            for part in parts:  # submit in order (longest first) into the shared pool
                ex = _SharedPoolExecutor(pool, part.spec.retry_failed)
                fut = sweeps.submit(run_sweep, part.spec, executor=ex, log=say)
                futures[fut] = part
                while not ex.submitted.wait(0.05) and not fut.done():
                    pass
            pending = set(futures) | ({sup_future} if sup_future else set())
            while pending:
                done, pending = wait(pending, timeout=1.0, return_when=FIRST_EXCEPTION)
                for fut in done:
                    if fut is sup_future:
                        monitor.extra_done = 1
                        try:
                            supervised = fut.result()
                            say(f"supervised reference: finished ({sup_dir})")
                        except Exception as exc:  # the RL runs go on; the row is left out
                            say(f"supervised reference failed: {type(exc).__name__}: {exc}")
                    else:
                        fut.result()  # raise a sweep's error here
                monitor.tick()
    except BaseException:
        stop_workers(pool)
        sweeps.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    sweeps.shutdown(wait=True)
    tables = {(part.kind, part.game): fut.result() for fut, part in futures.items()}
    return {"tables": tables, "supervised": supervised}


# --------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------

RESULT_COLUMNS = ["source", "kind", "task", "quantity", "term", "target", "batch_size", "value",
                  "lo", "hi", "unit", "n", "note", "reference"]
_ROUNDED = ("target", "batch_size", "value", "lo", "hi")
GNS_TERMS = ("total", "policy", "value")


def _row(source: str, kind: str, task: str, quantity: str, value: float = math.nan, *,
         term: str = "", target: float = math.nan, lo: float = math.nan, hi: float = math.nan,
         unit: str = "", n: float = math.nan, note: str = "", reference: str = "",
         batch_size: float = math.nan) -> dict:
    return dict(source=source, kind=kind, task=task, quantity=quantity, term=term,
                target=target, batch_size=batch_size, value=value, lo=lo, hi=hi, unit=unit,
                n=n, note=note, reference=reference)


def _noise_rows(game: str, plan_g: GamePlan, part: Part) -> list[dict]:
    runs = plan_runs(part.spec)
    table = results_table(runs, part.spec.targets)
    n = plan_g.noise
    b = n.num_envs * n.num_steps
    rows = [_row("measured", "rl", game, "rollout_batch_size", b, unit="agent steps",
                 note=f"noise-scale runs: num_envs x num_steps = {n.num_envs} x "
                      f"{n.num_steps}")]
    metrics = []
    for p in runs:
        path = Path(p.run_dir)
        if (path / "metrics.jsonl").exists():
            m = load_metrics(path)
            if "return_recent" in m:
                metrics.append(m)
    n_runs = len(metrics)
    settled = int(table["status"].isin(["finished", "failed"]).sum())
    status_note = "" if settled == len(runs) else \
        f"; {len(runs) - settled} of {len(runs)} runs not finished"
    for term in GNS_TERMS:
        whole: list[tuple[np.ndarray, np.ndarray]] = []
        first, last, ret_first, ret_last = [], [], [], []
        for m in metrics:
            g2c, trc = f"gns/{term}/g2", f"gns/{term}/trace_sigma"
            if g2c not in m or trc not in m:
                continue
            sel = m[[g2c, trc, "return_recent"]].apply(pd.to_numeric, errors="coerce")
            sel = sel[sel[g2c].notna() & sel[trc].notna()]
            if sel.empty:
                continue
            g2, tr, ret = (sel[c].to_numpy(float) for c in (g2c, trc, "return_recent"))
            whole.append((g2, tr))
            seg = max(1, round(SEGMENT_FRACTION * len(g2)))
            first.append((g2[:seg], tr[:seg]))
            last.append((g2[-seg:], tr[-seg:]))
            ret_first.append(ret[:seg])
            ret_last.append(ret[-seg:])
        if not whole:
            continue

        def pooled(pairs):
            g2 = np.concatenate([p[0] for p in pairs])
            tr = np.concatenate([p[1] for p in pairs])
            return (*ratio_interval(g2, tr), len(g2))

        v, lo, hi, k = pooled(whole)
        rows.append(_row("measured", "rl", game, "b_simple", v, term=term, lo=lo, hi=hi,
                         unit="agent steps", n=k,
                         note="run-averaged: mean tr(Sigma) / mean |G|^2 over every "
                              "measured iteration of the noise-scale runs; Fieller 95%"
                              + status_note))
        for name, pairs, label in (("b_simple_start", first, "first"),
                                   ("b_simple_end", last, "last")):
            v, lo, hi, k = pooled(pairs)
            rows.append(_row("measured", "rl", game, name, v, term=term, lo=lo, hi=hi,
                             unit="agent steps", n=k,
                             note=f"{label} quarter of each run's measurements; Fieller 95%"))
        if term == "total":
            for name, rets, label in (("return_start", ret_first, "first"),
                                      ("return_end", ret_last, "last")):
                r = np.concatenate(rets)
                r = r[np.isfinite(r)]
                rows.append(_row("measured", "rl", game, name,
                                 float(r.mean()) if r.size else math.nan, unit="return",
                                 n=int(r.size),
                                 note=f"mean recent return over the {label} quarter of the "
                                      "measured iterations"))
    if n_runs:
        steps = table["agent_steps"].astype(float)
        final = table["final_return_recent"].astype(float)
        rows.append(_row("measured", "rl", game, "agent_steps", float(steps.mean()),
                         unit="agent steps", n=int(steps.notna().sum()),
                         note="trained per noise-scale run (mean)" + status_note))
        rows.append(_row("measured", "rl", game, "final_return", float(final.mean()),
                         unit="return", n=int(final.notna().sum()),
                         note="mean return of the last games at the end of each noise-scale "
                              "run (mean over runs)"))
    return rows


def _sweep_rows(game: str, part: Part, n_boot: int, ci: float = 0.9) -> tuple[list[dict], Any]:
    table = results_table(plan_runs(part.spec), part.spec.targets)
    fits, per_batch = fit_sweep(table, n_boot=n_boot, ci=ci)
    rows = []
    level = f"{ci:.0%}"
    for _, f in fits.iterrows():
        t = float(f["target"])
        ok = bool(f["ok"])
        tried = int(f["n_batch_sizes_tried"])
        reached = int(f["n_batch_sizes"])
        note = (f"fit ok, {level} seed bootstrap interval" if ok else
                f"fit failed: {f['reason']}")
        note += f"; {reached} of {tried} batch sizes reached the target"
        rows.append(_row("measured", "rl", game, "b_crit", f["b_crit"], target=t,
                         lo=f["b_crit_lo"], hi=f["b_crit_hi"], unit="agent steps",
                         n=reached, note=note))
        rows.append(_row("measured", "rl", game, "s_min", f["s_min"], target=t,
                         lo=f["s_min_lo"], hi=f["s_min_hi"], unit="PPO iterations",
                         n=reached, note=f"fit; {level} seed bootstrap" if ok else "no fit"))
        rows.append(_row("measured", "rl", game, "e_min", f["e_min"], target=t,
                         lo=f["e_min_lo"], hi=f["e_min_hi"], unit="agent steps",
                         n=reached, note=f"fit; {level} seed bootstrap" if ok else "no fit"))
        for term in GNS_TERMS:
            rows.append(_row("measured", "rl", game, "b_simple_sweep", f[f"b_simple_{term}"],
                             term=term, target=t, unit="agent steps",
                             n=f["b_simple_runs"],
                             note="mean over the sweep runs at each batch size's best lr of "
                                  "each run's run-averaged B_simple"))
    return rows, (table, fits, per_batch)


def _supervised_rows(summary: Mapping[str, Any], cfg) -> list[dict]:
    task = f"{cfg.dataset} ({cfg.model})"
    common = dict(unit="training examples")
    desc = (f"{summary['gns_big_batch'] // summary['gns_small_batch']} groups of "
            f"{summary['gns_small_batch']} examples per measurement")
    rows = [_row("measured", "supervised", task, "b_simple", summary["b_simple_run"],
                 term="total", lo=summary["b_simple_run_lower"],
                 hi=summary["b_simple_run_upper"], n=summary["measurements"],
                 note=f"run-averaged, same estimator as RL ({desc}); Fieller 95%", **common)]
    for key, label in (("start", "first"), ("end", "last")):
        rows.append(_row("measured", "supervised", task, f"b_simple_{key}",
                         summary[f"b_simple_{key}"], term="total",
                         lo=summary[f"b_simple_{key}_lower"],
                         hi=summary[f"b_simple_{key}_upper"],
                         n=summary["segment_measurements"],
                         note=f"{label} quarter of the measurements; Fieller 95%", **common))
    rows.append(_row("measured", "supervised", task, "final_test_accuracy",
                     summary["final_test_acc"], unit="fraction",
                     note=f"after {summary['steps']} steps of {summary['batch_size']} examples"))
    return rows


def _cited_rows() -> list[dict]:
    rows = []
    for task, kind, b_crit, b_simple, unit, note in CITED:
        for quantity, v in (("b_crit", b_crit), ("b_simple", b_simple)):
            if isinstance(v, tuple):
                lo, hi = v
                rows.append(_row("cited", kind, task, quantity, math.nan, lo=lo, hi=hi,
                                 unit=unit, note=note, reference=CITED_REFERENCE))
            else:
                rows.append(_row("cited", kind, task, quantity, float(v), unit=unit,
                                 note=note, reference=CITED_REFERENCE))
    return rows


def finalize_table(rows: list[dict]) -> pd.DataFrame:
    """Rows -> the results table: RESULT_COLUMNS, numbers rounded as printed."""
    df = pd.DataFrame(rows, columns=RESULT_COLUMNS)
    for col in _ROUNDED:
        df[col] = [round_sig(v) for v in pd.to_numeric(df[col], errors="coerce")]
    df["n"] = pd.to_numeric(df["n"], errors="coerce").astype(float)
    for col in ("source", "kind", "task", "quantity", "term", "unit", "note", "reference"):
        df[col] = df[col].fillna("").astype(str)
    return df


def collect_results(plan: StudyPlan, *, supervised_summary: Mapping | None = None
                    ) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The results table of a study, from its directories (not from memory: a second
    invocation rebuilds the same table). Returns (table, sweep fits by game)."""
    rows: list[dict] = []
    fits: dict[str, Any] = {}
    parts = {(p.kind, p.game): p for p in study_parts(plan)}
    for g in plan.games:
        if ("noise", g.game) in parts:
            rows += _noise_rows(g.game, g, parts[("noise", g.game)])
        if ("sweep", g.game) in parts:
            r, fits[g.game] = _sweep_rows(g.game, parts[("sweep", g.game)], plan.n_boot)
            rows += r
        rows += _power_law_rows(g.game, parts, fits, plan.n_boot)
        if ("sweep", g.game) in parts:
            rows += _sharpness_rows(g.game, "rl", parts[("sweep", g.game)].out / SHARPNESS_FILE,
                                    "rollout_batch_size", "agent steps")
    sup_dir = supervised_dir(plan)
    if sup_dir is not None:
        rows += _sharpness_rows(f"{plan.supervised.dataset} ({plan.supervised.model})",
                                "supervised", Path(plan.out) / "supervised" / SHARPNESS_FILE,
                                "batch_size", "training examples")
        summary = supervised_summary
        if summary is None and (sup_dir / "summary.json").exists():
            summary = json.loads((sup_dir / "summary.json").read_text())
        if summary is not None:
            rows += _supervised_rows(summary, plan.supervised)
    rows += _cited_rows()
    return finalize_table(rows), fits


# --------------------------------------------------------------------------------------
# Power laws in performance and sharpness against batch size
# (rl.analysis.scaling, rl.analysis.sharpness)
# --------------------------------------------------------------------------------------

SHARPNESS_FILE = "sharpness.csv"
# The study's sharpness measurement: cheap enough for the demo (seconds per sweep).
STUDY_SHARPNESS = dict(num_envs=8, num_steps=64, repeats=2, power_iters=10, ascent_steps=5)
DIGITS_SHARPNESS = dict(batch_sizes=(32, 128, 512), epochs=20, seeds=(0, 1), power_iters=10,
                        ascent_steps=5)
SHARPNESS_EPS = 1e-3


def noise_metrics(part: Part) -> list[pd.DataFrame]:
    """The metrics of a part's runs that logged a return."""

    out = []
    for p in plan_runs(part.spec):
        path = Path(p.run_dir)
        if (path / "metrics.jsonl").exists():
            m = load_metrics(path)
            if "return_recent" in m:
                out.append(m)
    return out


def _law_note(r, what: str) -> str:
    if not bool(r["ok"]):
        return f"refused: {r['reason']}"
    return (f"log-log least squares against the {what} over {int(r['n_points'])} points "
            f"from {r['x_min']:.4g} to {r['x_max']:.4g}; 95% seed bootstrap "
            f"({int(r['boot_failed'])} of {int(r['n_boot'])} replicates unusable)")


def power_laws(game: str, parts: Mapping[tuple[str, str], Part], fits: Mapping[str, Any],
               n_boot: int) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(tradeoff laws, their points, B_simple laws, their points) of a game; empty frames
    where the game has no sweep or no noise-scale runs."""

    empty = pd.DataFrame(columns=POWER_LAW_COLUMNS)
    laws, pts, noise, noise_pts = empty, pd.DataFrame(), empty, pd.DataFrame()
    if game in fits:
        table, f, _ = fits[game]
        laws, pts = tradeoff_power_laws(table, fits=f, n_boot=n_boot)
    if ("noise", game) in parts:
        metrics = noise_metrics(parts[("noise", game)])
        if metrics:
            noise, noise_pts = noise_scale_power_laws(game, metrics, n_boot=n_boot)
    return laws, pts, noise, noise_pts


def _power_law_rows(game: str, parts: Mapping[tuple[str, str], Part], fits: Mapping[str, Any],
                    n_boot: int) -> list[dict]:
    laws, _, noise, _ = power_laws(game, parts, fits, n_boot)
    rows = []
    for _, r in laws.iterrows():
        rows.append(_row("measured", "rl", game, f"{r['quantity']}_exponent",
                         r["exponent"], lo=r["exponent_lo"], hi=r["exponent_hi"],
                         unit="exponent in the target return", n=r["n_points"],
                         note=_law_note(r, "target return")))
    for _, r in noise.iterrows():
        rows.append(_row("measured", "rl", game, "b_simple_exponent", r["exponent"],
                         term=r["term"], lo=r["exponent_lo"], hi=r["exponent_hi"],
                         unit="exponent in the smoothed return", n=r["n_points"],
                         note=_law_note(r, "smoothed return (return bins of the noise-scale "
                                           "runs)")))
    return rows


def measure_study_sharpness(plan: StudyPlan) -> None:
    """sharpness.csv in every sweep directory (the finished runs of the lowest seed) and in
    the supervised folder (digits at several batch sizes), unless already there."""

    for part in study_parts(plan):
        path = part.out / SHARPNESS_FILE
        if part.kind != "sweep" or path.exists():
            continue
        try:
            df = sweep_sharpness(part.out, SharpnessConfig(**STUDY_SHARPNESS), seeds=[0])
        except ValueError:  # no finished runs: no sharpness rows
            continue
        atomic_write_text(path, df.to_csv(index=False))
    sup = supervised_dir(plan)
    if sup is not None and not (Path(plan.out) / "supervised" / SHARPNESS_FILE).exists():
        df = digits_sharpness(**DIGITS_SHARPNESS, base=plan.supervised)
        atomic_write_text(Path(plan.out) / "supervised" / SHARPNESS_FILE,
                          df.to_csv(index=False))


def _sharpness_rows(task: str, kind: str, path: Path, x: str, unit: str) -> list[dict]:
    if not path.exists():
        return []
    df = pd.read_csv(path)
    eps_col = f"eps_sharpness_{SHARPNESS_EPS:g}"
    quantities = {"top_eigenvalue": "top Hessian eigenvalue (largest magnitude)",
                  eps_col: f"eps-sharpness, eps = {SHARPNESS_EPS:g}"}
    if "gap" in df:
        quantities["gap"] = "generalization gap, train - test accuracy"
    terms = sorted(df["term"].unique()) if "term" in df else [""]
    rows = []
    for term in terms:
        d = df if term == "" else df[df["term"] == term]
        summary = summarize_repeats(d, [x], list(quantities))
        for col, label in quantities.items():
            name = "eps_sharpness" if col == eps_col else col
            reps = int(summary["repeats"].max())
            what = ("fresh rollouts" if kind == "rl" else "training seeds")
            for _, r in summary.iterrows():
                se = r[f"{col}_se"]
                rows.append(_row("measured", kind, task, name, r[col], term=term,
                                 batch_size=r[x], lo=r[col] - se, hi=r[col] + se, unit=unit,
                                 n=r["repeats"],
                                 note=f"{label}: mean +- 1 standard error over {reps} {what}"))
            t = trend(d[x], d[col])
            rows.append(_row("measured", kind, task, f"{name}_trend", t["slope"], term=term,
                             lo=t["lo"], hi=t["hi"], unit="change per doubling of the batch size",
                             n=t["n"],
                             note=f"{t['verdict']}: least-squares slope of the {label} against "
                                  f"log2(batch size) over every repeat; 95% t interval"))
    return rows


# --------------------------------------------------------------------------------------
# Headline
# --------------------------------------------------------------------------------------


def _pick(df: pd.DataFrame, task: str, quantity: str, term: str = "") -> pd.Series | None:
    sel = df[(df["task"] == task) & (df["quantity"] == quantity) & (df["term"] == term)]
    return None if sel.empty else sel.iloc[0]


def _interval(r) -> str:
    if r is None or (pd.isna(r["lo"]) and pd.isna(r["hi"])):
        return ""
    return f" [{format_value(r['lo'])}, {format_value(r['hi'])}]"


def _value_or_range(r) -> str:
    if r is None:
        return "-"
    if not pd.isna(r["value"]):
        return format_value(r["value"])
    if pd.isna(r["lo"]):
        return "-"
    if math.isinf(r["hi"]):
        return f"> {format_value(r['lo'])}"
    return f"{format_value(r['lo'])} to {format_value(r['hi'])}"


def headline_b_crit(df: pd.DataFrame, task: str) -> pd.Series | None:
    """The B_crit row shown for a task: the highest target whose fit is ok, else the
    highest target."""
    sel = df[(df["task"] == task) & (df["quantity"] == "b_crit") & (df["source"] == "measured")]
    if sel.empty:
        return None
    ok = sel[sel["value"].notna()]
    return (ok if len(ok) else sel).sort_values("target").iloc[-1]


def headline_b_simple(df: pd.DataFrame, task: str, term: str) -> pd.Series | None:
    """The B_simple row shown for a task: from the noise-scale runs, else from the sweep
    runs (``b_simple_sweep`` at the headline B_crit's target)."""
    r = _pick(df, task, "b_simple", term)
    if r is not None:
        return r
    sel = df[(df["task"] == task) & (df["quantity"] == "b_simple_sweep") & (df["term"] == term)]
    bc = headline_b_crit(df, task)
    if bc is not None:
        sel = sel[sel["target"] == bc["target"]]
    return None if sel.empty else sel.iloc[-1]


def _b_simple_cell(r, interval: bool) -> str:
    if r is None:
        return "-"
    text = _value_or_range(r) if not interval else (
        "-" if pd.isna(r["value"]) else format_value(r["value"]) + _interval(r))
    return text + (" (sweep runs)" if r["quantity"] == "b_simple_sweep" else "")


HEADLINE_COLUMNS = ["source", "task", "unit", "B_simple total [95%]", "B_simple policy",
                    "B_simple value", "B_simple total: start -> end", "B_crit [interval]",
                    "B_crit target return", "final score", "reference"]


def headline_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per task, every number taken from the results table ``df`` (as strings)."""
    rows = []
    tasks = list(dict.fromkeys(df["task"]))
    for task in tasks:
        mine = df[df["task"] == task]
        source = mine["source"].iloc[0]
        if source == "cited":
            bs, bc = _pick(df, task, "b_simple"), _pick(df, task, "b_crit")
            rows.append({"source": source, "task": task, "unit": mine["unit"].iloc[0],
                         "B_simple total [95%]": _value_or_range(bs),
                         "B_simple policy": "", "B_simple value": "",
                         "B_simple total: start -> end": "",
                         "B_crit [interval]": _value_or_range(bc),
                         "B_crit target return": "", "final score": "",
                         "reference": mine["reference"].iloc[0]})
            continue
        tot = headline_b_simple(df, task, "total")
        start, end = _pick(df, task, "b_simple_start", "total"), \
            _pick(df, task, "b_simple_end", "total")
        bc = headline_b_crit(df, task)
        if bc is None:
            b_crit, b_target = "no sweep", ""
        elif pd.isna(bc["value"]):
            b_crit, b_target = "fit failed", format_value(bc["target"])
        else:
            b_crit, b_target = format_value(bc["value"]) + _interval(bc), \
                format_value(bc["target"])
        final = _pick(df, task, "final_return")
        acc = _pick(df, task, "final_test_accuracy")
        score = (f"return {format_value(final['value'])}" if final is not None else
                 f"test accuracy {format_value(acc['value'])}" if acc is not None else "")
        unit = tot["unit"] if tot is not None else mine["unit"].iloc[0]
        rows.append({
            "source": source, "task": task, "unit": unit,
            "B_simple total [95%]": _b_simple_cell(tot, interval=True),
            "B_simple policy": _b_simple_cell(headline_b_simple(df, task, "policy"), False),
            "B_simple value": _b_simple_cell(headline_b_simple(df, task, "value"), False),
            "B_simple total: start -> end": "-" if start is None else
            f"{format_value(start['value'])} -> {format_value(end['value'])}",
            "B_crit [interval]": b_crit, "B_crit target return": b_target,
            "final score": score, "reference": "",
        })
    return pd.DataFrame(rows, columns=HEADLINE_COLUMNS)


# --------------------------------------------------------------------------------------
# Plots
# --------------------------------------------------------------------------------------

_TERM_STYLE = {"total": ("o", "C0"), "policy": ("^", "C1"), "value": ("v", "C2")}


def plot_summary(df: pd.DataFrame, path: str | os.PathLike[str]) -> Path:
    """B_simple (total, policy, value) and B_crit per task on a log axis: measured games,
    the measured supervised reference, and the cited values (hollow markers, legend
    ``CITED_LABEL``)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # lazy: slow import, figures only
    from matplotlib.figure import Figure as MplFigure  # lazy: slow import, figures only

    tasks = list(dict.fromkeys(df["task"]))
    measured = [t for t in tasks if (df.loc[df["task"] == t, "source"] == "measured").all()]
    cited = [t for t in tasks if t not in measured]
    order = measured + cited
    x = {t: i for i, t in enumerate(order)}
    fig = MplFigure(figsize=(max(9.0, 1.05 * len(order) + 3), 5.6))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    if measured:
        ax.axvspan(-0.5, len(measured) - 0.5, color="#eef3fb", zorder=0)
    if cited:
        ax.axvspan(len(measured) - 0.5, len(order) - 0.5, color="#fbf6e9", zorder=0)
    labelled: set[str] = set()

    def lab(text: str) -> str | None:
        if text in labelled:
            return None
        labelled.add(text)
        return text

    def errbar(xi, r, **kw):
        v, lo, hi = r["value"], r["lo"], r["hi"]
        if not (v > 0):
            return False
        lower = v - lo if lo == lo and lo > 0 else 0.0
        upper = hi - v if hi == hi and math.isfinite(hi) else 0.0
        yerr = [[max(lower, 0.0)], [max(upper, 0.0)]] if (lower or upper) else None
        ax.errorbar([xi], [v], yerr=yerr, capsize=3, linestyle="none", **kw)
        if hi == hi and math.isinf(hi):
            ax.annotate("", xy=(xi, v * 6), xytext=(xi, v),
                        arrowprops=dict(arrowstyle="->", color=kw.get("color", "k")))
        return True

    for t in measured:
        for i, term in enumerate(GNS_TERMS):
            r = headline_b_simple(df, t, term)
            if r is not None:
                marker, color = _TERM_STYLE[term]
                errbar(x[t] - 0.2 + 0.1 * i, r, marker=marker, color=color, markersize=7,
                       label=lab(f"B_simple, {term} loss (measured, 95%)"))
        bc = headline_b_crit(df, t)
        if bc is not None and bc["value"] == bc["value"]:
            errbar(x[t] + 0.2, bc, marker="s", color="C3", markersize=8,
                   label=lab("B_crit (measured, 90% seed bootstrap)"))
    for t in cited:
        for quantity, marker, color, name in (("b_simple", "D", "0.25", "B_simple"),
                                              ("b_crit", "s", "0.55", "B_crit")):
            r = _pick(df, t, quantity)
            if r is None:
                continue
            xi = x[t] + (-0.12 if quantity == "b_simple" else 0.12)
            label = lab(f"{name}, {CITED_LABEL}")
            if r["value"] == r["value"]:
                ax.scatter([xi], [r["value"]], marker=marker, facecolors="none",
                           edgecolors=color, s=70, linewidths=1.6, label=label, zorder=3)
            else:
                lo, hi = r["lo"], r["hi"]
                top = hi if math.isfinite(hi) else lo * 6
                ax.plot([xi, xi], [lo, top], color=color, lw=2.2, label=label)
                ax.scatter([xi], [lo], marker=marker, facecolors="none", edgecolors=color,
                           s=50, linewidths=1.4, zorder=3)
                if math.isfinite(hi):
                    ax.scatter([xi], [hi], marker=marker, facecolors="none",
                               edgecolors=color, s=50, linewidths=1.4, zorder=3)
                else:
                    ax.annotate("", xy=(xi, top), xytext=(xi, lo),
                                arrowprops=dict(arrowstyle="->", color=color))
    ax.set_yscale("log")
    ax.set_xticks(range(len(order)))
    ax.set_xticklabels(order, rotation=30, ha="right", fontsize=9)
    ax.set_xlim(-0.5, len(order) - 0.5)
    ax.set_ylabel("batch size: RL in agent steps, supervised in examples (Billion Word: tokens)",
                  fontsize=8.5)
    ax.set_title("Critical batch size and gradient noise scale: measured (left, blue) and "
                 "cited (right, hollow markers)", fontsize=10)
    ax.grid(True, axis="y", which="major", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", framealpha=0.9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_figure(fig, path, dpi=100)
    return path


# --------------------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------------------


def _figure_sections(plan: StudyPlan, df: pd.DataFrame, fits: Mapping[str, Any]
                     ) -> tuple[list[Figure], list[Figure]]:
    """(B_simple vs return figures, Pareto figures), from the sweep machinery's plots."""

    parts = {(p.kind, p.game): p for p in study_parts(plan)}
    trajectories, pareto = [], []
    for g in plan.games:
        for kind, what in (("noise", "noise-scale runs"), ("sweep", "sweep runs")):
            part = parts.get((kind, g.game))
            if part is None:
                continue
            table = results_table(plan_runs(part.spec), part.spec.targets)
            for p in plot_b_simple(part.out, table):
                trajectories.append(Figure(p, f"{g.game}: B_simple (policy, value, total loss; "
                                              f"agent steps) against the recent return, {what}"))
        if g.game in fits:
            _, f, per_batch = fits[g.game]
            part = parts[("sweep", g.game)]
            if len(f):
                atomic_write_text(part.out / "fit.csv", f.to_csv(index=False))
                atomic_write_text(part.out / "fit_per_batch.csv", per_batch.to_csv(index=False))
            for i in range(len(f)):
                for p in plot_fits(part.out, f.iloc[[i]], per_batch):
                    pareto.append(Figure(p, f"{g.game}, target return "
                                            f"{format_value(f['target'].iloc[i])}: steps S (PPO "
                                            "iterations) against samples E (agent steps), and "
                                            "S, E against the batch size B"))
    return trajectories, pareto


def write_study_report(plan: StudyPlan, df: pd.DataFrame, fits: Mapping[str, Any]
                       ) -> tuple[Path, Path]:
    """Plots, then report.html and report.md, from the results table ``df``."""
    out = Path(plan.out)
    summary_png = plot_summary(df, out / "plots" / "summary.png")
    trajectories, pareto = _figure_sections(plan, df, fits)
    head = headline_table(df)
    intro = [
        f"Study of suite {plan.suite} with preset {plan.preset}. Every row is either "
        "measured by this testbed (source = measured) or cited from the literature (source "
        "= cited, McCandlish et al. 2018, Table 1); cited values are never mixed with "
        "measured ones.",
        "Units: RL batch sizes (B, B_simple, B_crit, E_min) are counted in agent steps, "
        "environment transitions (for Atari, frames are four times the agent steps); S_min "
        "in PPO iterations; supervised batch sizes in training examples. Cited values are "
        "in the units of the paper.",
    ]
    sections = [
        Section("Headline", tables=[(head, "headline")], notes=[
            "B_simple: run-averaged gradient noise scale, mean tr(Sigma) / mean |G|^2 over "
            "the measured iterations, with its Fieller interval (see the note column of the "
            "results table). B_crit: critical batch size fitted from the sweep at the "
            "highest target return with a successful fit, with its seed-bootstrap interval. "
            "start -> end: B_simple over the first and the last quarter of the measurements.",
        ], figures=[Figure(summary_png, "B_crit and B_simple per game on a log axis, beside "
                                        "the supervised reference (measured) and the "
                                        "published values (" + CITED_LABEL + ")")]),
    ]
    if trajectories:
        sections.append(Section("B_simple against return", figures=trajectories))
    if pareto:
        sections.append(Section("Pareto fronts of the critical-batch sweeps", figures=pareto))
    sections += scaling_sections(plan, df, fits)
    sections.append(Section(
        "Results table", paragraphs=["Every number in this report comes from this table "
                                     "(results.csv beside this page)."],
        tables=[(df, "results")]))
    title = "rlscale compare: critical batch size and gradient noise scale"
    return write_report(out, title, intro, sections)


def _cell(r) -> str:
    if pd.isna(r["value"]):
        return "refused" if str(r["note"]).startswith("refused") else "-"
    return f"{format_value(r['value'])} [{format_value(r['lo'])}, {format_value(r['hi'])}]"


def _overlap(a, b) -> bool:
    return not (a["hi"] < b["lo"] or b["hi"] < a["lo"])


def scaling_sections(plan: StudyPlan, df: pd.DataFrame, fits: Mapping[str, Any]
                     ) -> list[Section]:
    """The power-law exponents per game side by side, and sharpness against batch size,
    with what they show in words; every number from the results table ``df``."""

    out = Path(plan.out)
    parts = {(p.kind, p.game): p for p in study_parts(plan)}
    quantities = ["b_crit_exponent", "s_min_exponent", "e_min_exponent", "b_simple_exponent"]
    rows, words, figures = [], [], []
    for g in plan.games:
        mine = df[(df["task"] == g.game) & df["quantity"].isin(quantities)]
        if mine.empty:
            continue
        rec = {"task": g.game}
        for _, r in mine.iterrows():
            rec[r["quantity"] + (f" ({r['term']})" if r["term"] else "")] = _cell(r)
        rows.append(rec)
        bc = _pick(df, g.game, "b_crit_exponent")
        bs = _pick(df, g.game, "b_simple_exponent", "total")
        if bc is not None and bs is not None and not pd.isna(bc["value"]) \
                and not pd.isna(bs["value"]):
            same = _overlap(bc, bs)
            flat = [name for name, r in (("B_crit", bc), ("B_simple", bs))
                    if not pd.isna(r["lo"]) and r["lo"] <= 0 <= r["hi"]]
            if not same:
                verdict = ("the intervals do not overlap: B_crit and B_simple grow at "
                           "different rates.")
            elif flat:
                verdict = (f"the intervals overlap, but {' and '.join(flat)}'s "
                           f"{'contains' if len(flat) == 1 else 'contain'} 0: no growth is "
                           "resolved there, so the two rates cannot be told apart.")
            else:
                verdict = "the intervals overlap: B_crit grows like B_simple within the noise."
            words.append(f"{g.game}: B_crit against the target return has exponent "
                         f"{format_value(bc['value'])} [{format_value(bc['lo'])}, "
                         f"{format_value(bc['hi'])}], B_simple (total loss) against the "
                         f"smoothed return {format_value(bs['value'])} "
                         f"[{format_value(bs['lo'])}, {format_value(bs['hi'])}]: " + verdict)
        elif bc is not None or bs is not None:
            words.append(f"{g.game}: no side-by-side comparison (a fit was refused or not "
                         "run; the reason is in the results table).")
        laws, pts, noise, noise_pts = power_laws(g.game, parts, fits, plan.n_boot)
        if len(pts) or len(noise_pts):
            path = plot_power_laws(out / "plots" / f"power_laws_{slug(g.game)}.png", g.game,
                                   laws, pts, noise, noise_pts)
            figures.append(Figure(path, f"{g.game}: B_crit, S_min, E_min against the target "
                                        "return, and B_simple against the smoothed return, "
                                        "log-log, with the fitted power laws"))
    sections = []
    if rows:
        sections.append(Section(
            "Power laws in performance", paragraphs=words,
            tables=[(pd.DataFrame(rows).fillna(""), "power-laws")], figures=figures,
            notes=["Exponent k of y = c x^k, with its 95% seed-bootstrap interval; x is the "
                   "return itself (the target return for B_crit, S_min and E_min, the smoothed "
                   "return for B_simple), the same axis for both, so the exponents compare "
                   "directly. A fit is refused (with the reason in the results table) below 3 "
                   "points or when x spans less than a factor 2. See docs/scaling-laws.md."]))
    sharp = df[df["quantity"].str.endswith("_trend")]
    if len(sharp):
        words, figures = [], []
        for _, r in sharp.iterrows():
            what = r["quantity"][: -len("_trend")].replace("_", " ")
            term = f" ({r['term']} loss)" if r["term"] else ""
            verdict = str(r["note"]).split(":")[0]
            words.append(f"{r['task']}, {what}{term}: {verdict} (slope per doubling "
                         f"{format_value(r['value'])}, 95% [{format_value(r['lo'])}, "
                         f"{format_value(r['hi'])}]).")
        per_b = df[df["batch_size"].notna()]
        table = per_b.assign(cell=[_cell(r) for _, r in per_b.iterrows()])[
            ["task", "term", "quantity", "batch_size", "cell", "n"]].rename(
            columns={"cell": "mean [+- 1 s.e.]", "n": "repeats"})
        for g in plan.games:
            path = parts[("sweep", g.game)].out / SHARPNESS_FILE if ("sweep", g.game) in \
                parts else None
            if path is not None and path.exists():
                figures.append(Figure(plot_sharpness(
                    out / "plots" / f"sharpness_{slug(g.game)}.png", pd.read_csv(path),
                    x="rollout_batch_size", title=f"{g.game}: PPO loss at the final checkpoint",
                    eps=SHARPNESS_EPS), f"{g.game}: sharpness of the PPO loss (policy, value) "
                    "at each sweep run's final checkpoint against the rollout batch size"))
        sup = out / "supervised" / SHARPNESS_FILE
        if sup.exists():
            figures.append(Figure(plot_sharpness(
                out / "plots" / "sharpness_digits.png", pd.read_csv(sup), x="batch_size",
                title="digits: same epochs at every batch size", eps=SHARPNESS_EPS, gap=True),
                "digits: sharpness of the training loss and the generalization gap against "
                "the batch size (Keskar et al.'s claim: larger batches, sharper minima, "
                "larger gap)"))
        sections.append(Section(
            "Sharpness against batch size", paragraphs=words, tables=[(table, "sharpness")],
            figures=figures,
            notes=["RL: the PPO loss at each sweep run's final checkpoint (seed 0), on fresh "
                   "rollouts of its policy; supervised: the training loss of the digits "
                   "classifier after the same number of epochs at each batch size (larger "
                   "batches take fewer steps and may not have converged). Top eigenvalue: "
                   "power iteration on Hessian-vector products; eps-sharpness: Keskar et "
                   "al.'s, by projected gradient ascent. Numbers of repeats, samples and "
                   "steps: the note column of the results table; see docs/sharpness.md."]))
    return sections


@dataclass
class StudyOutcome:
    results: pd.DataFrame
    headline: pd.DataFrame
    results_csv: Path
    report_html: Path
    report_md: Path


def compare(plan: StudyPlan, *, quiet: bool = False, console=None) -> StudyOutcome:
    """Run the study (reusing finished parts), write results.csv, then the report."""
    ran = run_study(plan, quiet=quiet, console=console)
    measure_study_sharpness(plan)
    df, fits = collect_results(plan, supervised_summary=ran["supervised"])
    out = Path(plan.out)
    atomic_write_text(out / "results.csv", df.to_csv(index=False))
    # The report is rendered from the table as written (read back), never from memory.
    df = read_results_table(out / "results.csv")
    html_path, md_path = write_study_report(plan, df, fits)
    return StudyOutcome(df, headline_table(df), out / "results.csv", html_path, md_path)


def read_results_table(path: str | os.PathLike[str]) -> pd.DataFrame:
    df = pd.read_csv(path, keep_default_na=False, na_values=[""])
    for col in ("source", "kind", "task", "quantity", "term", "unit", "note", "reference"):
        df[col] = df[col].fillna("").astype(str)
    for col in ("target", "batch_size", "value", "lo", "hi", "n"):
        df[col] = pd.to_numeric(df[col], errors="coerce").astype(float)
    return df[RESULT_COLUMNS]


def describe_plan(plan: StudyPlan) -> pd.DataFrame:
    """One row per game: what the study runs (for --dry-run and the log)."""

    parts = {(p.kind, p.game): p for p in study_parts(plan)}
    rows = []
    for g in plan.games:
        s, n = g.sweep, g.noise
        sweep_runs = len(plan_runs(parts[("sweep", g.game)].spec)) if s else 0
        noise_runs = len(plan_runs(parts[("noise", g.game)].spec)) if n else 0
        rows.append({
            "game": g.game, "family": g.family,
            "sweep B (agent steps)": "-" if s is None else
            ", ".join(str(e * s.num_steps) for e in s.num_envs),
            "sweep lrs": "-" if s is None else ", ".join(f"{x:g}" for x in s.lrs),
            "targets": "-" if s is None else ", ".join(f"{t:g}" for t in g.targets),
            "sweep budget": "-" if s is None else f"{s.budget:,}",
            "sweep runs": sweep_runs,
            "noise B": "-" if n is None else f"{n.num_envs}x{n.num_steps}",
            "noise budget": "-" if n is None else f"{n.budget:,}",
            "gns_every": "-" if n is None else n.gns_every,
            "noise runs": noise_runs,
        })
    return pd.DataFrame(rows)
