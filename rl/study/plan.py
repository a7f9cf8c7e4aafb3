"""The study's plan: a suite (or games) and a preset, with overrides, resolved per game.

``build_plan`` gives a ``StudyPlan``; ``study_parts`` turns it into the sweeps of
``rl.sweeps`` that run it, and fixes the study directory's layout. See docs/study.md.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

import envs
from rl.measure.supervised import SUPERVISED_TASKS, SupervisedConfig
from rl.study.settings import (
    NO_TARGET,
    PRESET_NAMES,
    STUDY_PRESETS,
    SUITES,
    SUPERVISED_GRIDS,
    SWEEP_TARGETS,
    Family,
    NoiseRuns,
    SupervisedGrid,
    SweepGrid,
)
from rl.sweeps.executors import available_cores
from rl.sweeps.settings import KNOWN_MAX_RETURN
from rl.sweeps.spec import parse_spec, plan_runs, stored_spec

__all__ = [
    "SHARPNESS_FILE",
    "STORED_SWEEPS",
    "SUPERVISED_PART",
    "GamePlan",
    "Overrides",
    "Part",
    "StudyPlan",
    "SupervisedSweepPlan",
    "build_plan",
    "canonical_game",
    "describe_plan",
    "family_of",
    "slug",
    "study_parts",
    "supervised_dir",
]

SHARPNESS_FILE = "sharpness.csv"
"""in each sweep's analysis folder and in supervised/: the sharpness measured at the end"""
STORED_SWEEPS = "stored"
"""the study's folder for the analysis files of runs given by --sweep-dir / --noise-dir
(stored/sweep/<game>, stored/noise/<game>, stored/supervised/<task>)"""
SUPERVISED_PART = "supervised"
"""``Part.kind`` of a supervised critical-batch sweep (its ``game`` is the task's name)"""


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
    sweep_dir: str | None = None
    """an existing sweep directory that is this game's critical-batch sweep (``sweep`` is
    then None: its settings are the ones stored in its sweep.json)"""
    noise_dir: str | None = None
    """an existing sweep directory that holds this game's noise-scale runs (``noise``
    describes them, read from its sweep.json)"""


@dataclass
class SupervisedSweepPlan:
    """A supervised task's critical-batch sweep in the study (docs/sweeps.md, "Supervised
    sweeps"): run by the study on ``grid``, or stored in ``sweep_dir``."""

    task: str
    """a name of ``rl.measure.supervised.SUPERVISED_TASKS`` (also its name in the results)"""
    grid: SupervisedGrid | None
    targets: tuple[float, ...]
    """minus the training loss (nats)"""
    sweep_dir: str | None = None
    """an existing supervised sweep directory (``rlscale sweep``) of this task: ``grid`` is
    then None, its settings are the ones stored in its sweep.json"""


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
    supervised_sweeps: list[SupervisedSweepPlan] = field(default_factory=list)
    """supervised critical-batch sweeps beside the games"""

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
    sweep_dirs: Mapping[str, str] | Sequence[tuple[str, str]] | None = None
    """game -> an existing sweep directory (``rlscale sweep`` or another study's) that is
    the game's critical-batch sweep, with the settings stored in its sweep.json (a mapping,
    or (game, directory) pairs as given on the command line)"""
    noise_dirs: Mapping[str, str] | Sequence[tuple[str, str]] | None = None
    """game -> an existing sweep directory at one batch size (another study's noise/GAME)
    that holds the game's noise-scale runs, with their stored settings (as sweep_dirs)"""
    supervised_sweeps: Sequence[str] | str | None = None
    """supervised tasks to sweep (digits-mlp, digits-cnn; "all", "none"; default: the suite's
    for the preset, none for a list of games)"""
    supervised_sweep_dirs: Mapping[str, str] | Sequence[tuple[str, str]] | None = None
    """task -> an existing supervised sweep directory of that task (e.g.
    reference/supervised-sweeps/digits-mlp), with its stored settings and targets"""


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


# --------------------------------------------------------------------------------------
# build_plan and its steps
# --------------------------------------------------------------------------------------


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


def _check_choice(suite: str | None, games: Sequence[str] | None, preset: str) -> None:
    if preset not in STUDY_PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESET_NAMES)}")
    if suite is not None and suite not in SUITES:
        raise ValueError(f"unknown suite {suite!r}; choose one of {', '.join(SUITES)}")
    if not games and suite is None:
        raise ValueError(f"name the games or a suite (--suite {'|'.join(SUITES)})")


def _study_games(suite: str | None, games: Sequence[str] | None) -> list[str]:
    """The canonical names of the study's games, each once."""
    names = list(games) if games else list(SUITES[suite].games)
    canon: list[str] = []
    for g in names:
        c = canonical_game(g)
        if c in canon:
            raise ValueError(f"game {c!r} is listed twice")
        canon.append(c)
    return canon


def _default_sweep_games(suite: str | None, preset: str, canon: Sequence[str]) -> set[str]:
    if suite is not None:
        return {canonical_game(g) for g in SUITES[suite].sweep_games[preset]}
    # loose games: sweeps where the preset makes them cheap (classic control on CPU)
    return {g for g in canon if preset == "gpu" or family_of(g) == "classic"}


def _sweep_grid(g: SweepGrid, ov: Overrides) -> SweepGrid:
    return SweepGrid(
        num_envs=tuple(ov.num_envs) if ov.num_envs else g.num_envs,
        num_steps=ov.num_steps or g.num_steps,
        lrs=tuple(float(x) for x in ov.lrs) if ov.lrs else g.lrs,
        seeds=ov.seeds or g.seeds,
        budget=ov.budget or g.budget,
        gns_every=ov.sweep_gns_every if ov.sweep_gns_every is not None else g.gns_every,
    )


def _sweep_targets(game: str, ov: Overrides) -> tuple[float, ...]:
    targets = tuple(float(t) for t in ov.targets) if ov.targets else \
        SWEEP_TARGETS.get(game, ())
    if not targets:
        raise ValueError(f"no default target returns for {game}; give --targets")
    return targets


def _noise_runs(n: NoiseRuns, ov: Overrides) -> NoiseRuns:
    return NoiseRuns(
        num_envs=ov.noise_num_envs or n.num_envs,
        num_steps=ov.noise_num_steps or n.num_steps,
        budget=ov.noise_budget or n.budget,
        gns_every=ov.gns_every or n.gns_every,
        seeds=ov.noise_seeds or n.seeds,
    )


def _game_plan(game: str, family: str, fam: Family, ov: Overrides, *, sweep: bool,
               noise: bool) -> GamePlan:
    grid = _sweep_grid(fam.sweep, ov) if sweep else None
    targets = _sweep_targets(game, ov) if sweep else ()
    runs = _noise_runs(fam.noise, ov) if noise else None
    noise_target = KNOWN_MAX_RETURN.get(game, (NO_TARGET, ""))[0]
    return GamePlan(game, family, fam.trainer_preset, grid, targets, runs, noise_target,
                    dict(fam.ppo), dict(fam.train))


def _stored_dirs(given: Mapping[str, str] | Sequence[tuple[str, str]] | None,
                 games: Sequence[str], kind: str) -> dict[str, tuple[str, Any]]:
    """game -> (directory, its stored spec) of --sweep-dir (kind "sweep") or --noise-dir
    ("noise"), each checked: a grid sweep of that game alone; noise-scale runs at one
    batch size and learning rate."""
    flag = f"--{kind}-dir"
    found: dict[str, tuple[str, Any]] = {}
    pairs = given.items() if isinstance(given, Mapping) else (given or ())
    for name, path in pairs:
        game = canonical_game(name)
        if game in found:
            raise ValueError(f"{flag} gives {game} twice; give one directory per game")
        if game not in games:
            raise ValueError(f"{flag} names {game}, not among the study's games "
                             f"({', '.join(games)}); add it to the games")
        spec = stored_spec(path)
        if spec is None:
            raise ValueError(f"{flag} {name}={path}: no sweep there (no {path}/sweep.json); "
                             "give a directory written by rlscale sweep or rlscale compare")
        if spec.scheduler != "grid" or spec.env != [game]:
            what = "a PBT population" if spec.scheduler != "grid" else \
                f"a sweep of {', '.join(spec.env)}"
            raise ValueError(f"{flag} {name}={path} holds {what}, not runs of {game} alone")
        runs = plan_runs(spec)
        if kind == "noise" and len({(r.rollout_batch_size, r.lr) for r in runs}) != 1:
            raise ValueError(f"{flag} {name}={path} holds runs at several batch sizes or "
                             "learning rates; noise-scale runs have one of each (give it as "
                             "--sweep-dir)")
        found[game] = (str(path), spec)
    return found


def _stored_noise_runs(spec: Any) -> NoiseRuns:
    """The NoiseRuns that a stored noise-scale sweep (one batch size) was made with."""
    r = plan_runs(spec)[0]
    return NoiseRuns(num_envs=r.num_envs, num_steps=r.num_steps, budget=int(spec.budget or 0),
                     gns_every=int(r.train.get("gns_every") or 0), seeds=len(spec.seeds))


def _supervised_sweeps(suite: str | None, preset: str, ov: Overrides
                       ) -> list[SupervisedSweepPlan]:
    """The supervised sweeps of the study: stored ones (``supervised_sweep_dirs``, checked: a
    grid sweep of that task alone) and the ones to run on the preset's grid."""
    tasks = list(SUPERVISED_TASKS)
    default = SUITES[suite].supervised_sweeps.get(preset, ()) if suite is not None else ()
    chosen = ov.supervised_sweeps
    if isinstance(chosen, str):
        chosen = tasks if chosen == "all" else [] if chosen == "none" else \
            [c.strip() for c in chosen.split(",") if c.strip()]
    chosen = list(default if chosen is None else chosen)
    stored: dict[str, str] = {}
    pairs = ov.supervised_sweep_dirs.items() if isinstance(ov.supervised_sweep_dirs, Mapping) \
        else (ov.supervised_sweep_dirs or ())
    for task, path in pairs:
        if task in stored:
            raise ValueError(f"--supervised-sweep-dir gives {task} twice; give one directory")
        stored[task] = str(path)
    unknown = sorted({t for t in [*chosen, *stored] if t not in SUPERVISED_TASKS})
    if unknown:
        raise ValueError(f"unknown supervised task(s) {', '.join(unknown)}; choose from "
                         f"{', '.join(tasks)}")
    plans = []
    for task in dict.fromkeys([*chosen, *stored]):
        if task in stored:
            spec = stored_spec(stored[task])
            if spec is None:
                raise ValueError(f"--supervised-sweep-dir {task}={stored[task]}: no sweep there "
                                 f"(no {stored[task]}/sweep.json)")
            if spec.env != [task]:
                raise ValueError(f"--supervised-sweep-dir {task}={stored[task]} holds a sweep "
                                 f"of {', '.join(spec.env)}, not of {task} alone")
            plans.append(SupervisedSweepPlan(task, None, tuple(spec.targets), stored[task]))
        else:
            grid = SUPERVISED_GRIDS[preset]
            plans.append(SupervisedSweepPlan(task, grid, grid.targets))
    return plans


def _supervised_config(ov: Overrides) -> SupervisedConfig | None:
    if not ov.supervised:
        return None
    kw: dict[str, Any] = {}
    if ov.supervised_epochs:
        kw["epochs"] = ov.supervised_epochs
    if ov.supervised_seed is not None:
        kw["seed"] = ov.supervised_seed
    return SupervisedConfig(**kw)


def build_plan(*, suite: str | None = None, games: Sequence[str] | None = None,
               preset: str = "cpu-quick", out: str | os.PathLike[str] = "results/compare",
               overrides: Overrides | None = None) -> StudyPlan:
    """Resolve a suite (or a list of games) and a preset, with overrides, into a plan."""

    ov = overrides or Overrides()
    _check_choice(suite, games, preset)
    canon = _study_games(suite, games)
    default_sweeps = _default_sweep_games(suite, preset, canon)
    sweep_games = _select(ov.sweep_games, canon, default_sweeps, "--sweep-games")
    noise_games = _select(ov.noise_games, canon, canon, "--noise-games")
    sweep_dirs = _stored_dirs(ov.sweep_dirs, canon, "sweep")
    noise_dirs = _stored_dirs(ov.noise_dirs, canon, "noise")
    plans = []
    for game in canon:
        family = family_of(game)
        g = _game_plan(game, family, STUDY_PRESETS[preset][family], ov,
                       sweep=game in sweep_games and game not in sweep_dirs,
                       noise=game in noise_games and game not in noise_dirs)
        if game in sweep_dirs:  # the stored sweep's own settings, targets included
            g.sweep_dir, spec = sweep_dirs[game]
            g.targets = tuple(spec.targets)
        if game in noise_dirs:
            g.noise_dir, spec = noise_dirs[game]
            g.noise = _stored_noise_runs(spec)
        plans.append(g)
    cores = available_cores()
    parallel = ov.parallel or (cores if preset == "cpu-quick" else max(1, cores // 4))
    return StudyPlan(out=str(out), suite=suite or "custom", preset=preset, games=plans,
                     supervised=_supervised_config(ov), parallel=max(1, int(parallel)),
                     device=ov.device or "auto", n_boot=ov.n_boot or 1000,
                     retry_failed=ov.retry_failed,
                     supervised_sweeps=_supervised_sweeps(suite, preset, ov))


# --------------------------------------------------------------------------------------
# The sweeps of the plan and the study directory
# --------------------------------------------------------------------------------------


def slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


@dataclass
class Part:
    """One sweep of the study: a game's critical-batch sweep or its noise-scale runs."""

    kind: str  # "sweep" or "noise"
    game: str
    spec: Any  # rl.sweeps.settings.SweepSpec
    stored_in: Path | None = None
    """the study's folder for the analysis files of stored runs (--sweep-dir, --noise-dir),
    which the study reads and continues but writes no fits, plots or sharpness into"""

    @property
    def out(self) -> Path:
        """The sweep directory: its runs, results table and sweep.json."""
        return Path(self.spec.out)

    @property
    def analysis_dir(self) -> Path:
        """Where the study writes the sweep's fits, plots and sharpness table."""
        return self.stored_in if self.stored_in is not None else self.out


def _train_overrides(plan: StudyPlan, g: GamePlan, gns_every: int) -> dict[str, Any]:
    train = {**g.train, "gns_every": gns_every}
    if plan.device != "auto":
        train["device"] = plan.device
    return train


def _noise_part(plan: StudyPlan, g: GamePlan) -> Part:
    n = g.noise
    raw = dict(env=g.game, num_envs=[n.num_envs], num_steps=n.num_steps,
               seeds=n.seeds, targets=[g.noise_target], budget=n.budget,
               preset=g.trainer_preset, parallel=plan.parallel,
               retry_failed=plan.retry_failed, out=str(Path(plan.out) / "noise" / slug(g.game)),
               ppo=dict(g.ppo), train=_train_overrides(plan, g, n.gns_every))
    if "learning_rate" in raw["ppo"]:  # a family's lr: the sweep key sets it
        raw["lrs"] = [raw["ppo"].pop("learning_rate")]
    return Part("noise", g.game, parse_spec(raw, source=f"noise-scale runs of {g.game}"))


def _sweep_part(plan: StudyPlan, g: GamePlan) -> Part:
    s = g.sweep
    raw = dict(env=g.game, num_envs=list(s.num_envs), num_steps=s.num_steps,
               lrs=list(s.lrs), seeds=s.seeds, targets=list(g.targets),
               budget=s.budget, preset=g.trainer_preset, parallel=plan.parallel,
               retry_failed=plan.retry_failed, out=str(Path(plan.out) / "sweeps" / slug(g.game)),
               ppo={**g.ppo, "anneal_lr": False},
               train=_train_overrides(plan, g, s.gns_every))
    raw["ppo"].pop("learning_rate", None)  # the sweep's lrs set it
    return Part("sweep", g.game, parse_spec(raw, source=f"critical-batch sweep of {g.game}"))


def _stored_part(plan: StudyPlan, g: GamePlan, kind: str) -> Part:
    """A game's existing sweep or noise-scale runs: their stored settings; the study's
    execution settings; the analysis in the study's folder."""
    path = g.sweep_dir if kind == "sweep" else g.noise_dir
    spec = stored_spec(path, {"parallel": plan.parallel, "retry_failed": plan.retry_failed})
    if spec is None:
        raise ValueError(f"{path} no longer holds a sweep (no sweep.json)")
    return Part(kind, g.game, spec, Path(plan.out) / STORED_SWEEPS / kind / slug(g.game))


def _supervised_part(plan: StudyPlan, s: SupervisedSweepPlan) -> Part:
    """A supervised task's sweep: stored (its own settings, the analysis in the study's
    folder), or on the preset's grid into <out>/supervised-sweeps/<task>."""
    if s.sweep_dir is not None:
        spec = stored_spec(s.sweep_dir, {"parallel": plan.parallel,
                                         "retry_failed": plan.retry_failed})
        if spec is None:
            raise ValueError(f"{s.sweep_dir} no longer holds a sweep (no sweep.json)")
        return Part(SUPERVISED_PART, s.task, spec,
                    Path(plan.out) / STORED_SWEEPS / SUPERVISED_PART / slug(s.task))
    g = s.grid
    raw = dict(env=s.task, batch_sizes=list(g.batch_sizes), lrs=list(g.lrs), lr_rule="sqrt",
               base_batch_size=g.base_batch_size, seeds=g.seeds, targets=list(s.targets),
               budget=g.budget, parallel=plan.parallel, retry_failed=plan.retry_failed,
               out=str(Path(plan.out) / "supervised-sweeps" / slug(s.task)),
               supervised={"gns_every": g.gns_every})
    return Part(SUPERVISED_PART, s.task, parse_spec(raw, source=f"supervised sweep of {s.task}"))


def study_parts(plan: StudyPlan) -> list[Part]:
    """The sweeps of the study, validated (``rl.sweeps.settings.SweepSpecError`` lists problems):
    per game its noise-scale runs and critical-batch sweep, then the supervised sweeps."""

    parts = []
    for g in plan.games:
        if g.noise_dir is not None:
            parts.append(_stored_part(plan, g, "noise"))
        elif g.noise is not None:
            parts.append(_noise_part(plan, g))
        if g.sweep_dir is not None:
            parts.append(_stored_part(plan, g, "sweep"))
        elif g.sweep is not None:
            parts.append(_sweep_part(plan, g))
    parts += [_supervised_part(plan, s) for s in plan.supervised_sweeps]
    return parts


def supervised_dir(plan: StudyPlan) -> Path | None:
    cfg = plan.supervised
    if cfg is None:
        return None
    return Path(plan.out) / "supervised" / f"{cfg.dataset}-{cfg.model}-seed{cfg.seed}"


def describe_plan(plan: StudyPlan) -> pd.DataFrame:
    """One row per game: what the study runs (for --dry-run and the log)."""

    parts = {(p.kind, p.game): p for p in study_parts(plan)}
    rows = []
    for g in plan.games:
        s, n = parts.get(("sweep", g.game)), g.noise
        runs = plan_runs(s.spec) if s else []
        noise_runs = len(plan_runs(parts[("noise", g.game)].spec)) if n else 0
        rows.append({
            "game": g.game, "family": g.family,
            "sweep B (agent steps)": "-" if s is None else
            ", ".join(str(b) for b in sorted({r.rollout_batch_size for r in runs}))
            + (" (stored)" if g.sweep_dir else ""),
            "sweep lrs": "-" if s is None else ", ".join(f"{x:g}" for x in
                                                          sorted({r.lr for r in runs})),
            "targets": "-" if s is None else ", ".join(f"{t:g}" for t in s.spec.targets),
            "sweep budget": "-" if s is None else f"{s.spec.budget:,}",
            "sweep runs": len(runs),
            "noise B": "-" if n is None else f"{n.num_envs}x{n.num_steps}"
            + (" (stored)" if g.noise_dir else ""),
            "noise budget": "-" if n is None else f"{n.budget:,}",
            "gns_every": "-" if n is None else n.gns_every,
            "noise runs": noise_runs,
        })
    for s in plan.supervised_sweeps:
        spec = parts[(SUPERVISED_PART, s.task)].spec
        runs = plan_runs(spec)
        rows.append({
            "game": s.task, "family": "supervised",
            "sweep B (agent steps)": ", ".join(str(b) for b in spec.batch_sizes)
            + " (examples" + (", stored)" if s.sweep_dir else ")"),
            "sweep lrs": ", ".join(f"{x:g}" for x in sorted({r.lr for r in runs})),
            "targets": ", ".join(f"{t:g}" for t in spec.targets),
            "sweep budget": "-" if spec.budget is None else f"{spec.budget:,} examples",
            "sweep runs": len(runs), "noise B": "-", "noise budget": "-", "gns_every": "-",
            "noise runs": 0,
        })
    return pd.DataFrame(rows)
