"""The protocol around a sweep's runs: the untrained-play floor its targets must clear, and
stage 2, more seeds at each batch size's best learning rate once its grid has ended.

``check_untrained_floor`` measures each environment's floor once (``untrained_floor.json``)
and refuses targets at or below it; ``choose_stage_two`` records the lr chosen per batch
size (``best_lr.json``) with a chooser it is given (the fit's rule: ``rl.analysis`` is a
later layer). See docs/sweeps.md.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from agents import PPOConfig, build_actor_critic
from rl.measure.floor import (
    FLOOR_ENVS,
    FLOOR_GAMES,
    FLOOR_SEED,
    FLOOR_Z,
    UntrainedFloor,
    floor_rule,
    untrained_returns,
)
from rl.measure.supervised import SUPERVISED_TASKS, SupervisedConfig, untrained_scores
from rl.sweeps.results import long_results
from rl.sweeps.settings import (
    SweepSpec,
    SweepSpecError,
    env_settings,
    stage_two_seeds,
    supervised_settings,
    tkey,
)
from rl.sweeps.spec import plan_runs
from rl.sweeps.state import (
    BestLr,
    add_best_lrs,
    append_event,
    extends_grid,
    read_best_lrs,
    read_floor_file,
    write_floor_file,
)
from rl.train.config import TrainConfig, preset_for
from rl.train.launch import make_env
from rl.train.rollout import action_bounds, env_actions, to_device

Log = Callable[[str], None]

ChooseLr = Callable[[pd.DataFrame], pd.DataFrame]
"""Chooses the lr per batch size: given one row per grid run (env, target,
rollout_batch_size, lr, seed, iterations_to_target, agent_steps_to_target; one target),
returns one row per (env, target, rollout_batch_size) with best_lr (NaN: no lr eligible)
and reason. ``rl.analysis.fit.best_per_batch``'s first table is one."""

SETTLED = ("finished", "failed")
"""Run statuses that end a run for stage 1 (interrupted and pending runs do not)."""

# Network initialization draws from torch's global generator: one measurement at a time
# (the study runs several sweeps in threads of one process).
_INIT_LOCK = threading.Lock()


class TargetBelowFloorError(SweepSpecError):
    """Targets at or below their environment's untrained-play floor (one line per env)."""


# --------------------------------------------------------------------------------------
# The untrained-play floor
# --------------------------------------------------------------------------------------


def _untrained_supervised(spec: SweepSpec, env: str) -> SupervisedConfig:
    """The settings of a supervised task's untrained networks (its runs' data and model)."""
    return SupervisedConfig(**supervised_settings(spec, env))


def floor_settings(spec: SweepSpec, env: str) -> dict[str, Any]:
    """What the floor of ``env`` depends on: the environment and network the runs use, the
    window of their smoothed return, and how it is measured. A stored floor measured with
    other settings is measured again. A supervised task's: its data, model and progress."""
    if spec.is_supervised:
        c = _untrained_supervised(spec, env)
        return dict(env=env, dataset=c.dataset, test_fraction=c.test_fraction, model=c.model,
                    hidden=c.hidden, channels=c.channels, progress=c.progress, window=1,
                    networks=FLOOR_GAMES, seed=FLOOR_SEED, z=FLOOR_Z)
    cfg = TrainConfig(**{**env_settings(spec, env)[0], "env": env})
    return dict(env=env, preset=spec.preset or preset_for(env), backend=cfg.backend,
                env_preset=cfg.env_preset, network=cfg.network, window=cfg.return_window,
                games=FLOOR_GAMES, num_envs=FLOOR_ENVS, seed=FLOOR_SEED, z=FLOOR_Z)


def measure_untrained_floor(spec: SweepSpec, env: str) -> UntrainedFloor:
    """Play ``FLOOR_GAMES`` games of ``env`` with the freshly initialized network of the
    sweep's runs (built as the trainer builds it, seeded with ``FLOOR_SEED``), sampling its
    policy's actions, and apply ``rl.measure.floor.floor_rule`` (on the CPU).

    A supervised task's floor: the progress score of ``FLOOR_GAMES`` freshly initialized
    networks (seeds ``FLOOR_SEED`` on, each with its own split, as runs with those seeds start)
    in place of the games, with a window of 1 evaluation (docs/sweeps.md)."""
    if spec.is_supervised:
        scores = untrained_scores(_untrained_supervised(spec, env),
                                  range(FLOOR_SEED, FLOOR_SEED + FLOOR_GAMES))
        return floor_rule(scores, 1, z=FLOOR_Z, seed=FLOOR_SEED, num_envs=1)
    train_kw, ppo_kw = env_settings(spec, env)
    cfg = TrainConfig(**{**train_kw, "env": env})
    # The run's environment, normalization included (gamma: the runs' reward discount).
    vec = make_env(cfg, FLOOR_ENVS, FLOOR_SEED,
                   gamma=float(ppo_kw.get("gamma", PPOConfig.gamma)))
    try:
        with _INIT_LOCK, torch.random.fork_rng(devices=[]):
            torch.manual_seed(FLOOR_SEED)
            model = build_actor_critic(vec.single_observation_space, vec.single_action_space,
                                       cfg.network, log_std_init=cfg.log_std_init,
                                       state_dependent_std=cfg.state_dependent_std)
        generator = torch.Generator().manual_seed(FLOOR_SEED)
        bounds = action_bounds(vec)  # Box actions: clipped as the rollout clips them
        cpu = torch.device("cpu")

        def policy(obs):
            with torch.no_grad():
                action, _, _ = model.act(to_device(obs, cpu), generator=generator,
                                         with_value=False)
            return env_actions(action, bounds)

        returns = untrained_returns(vec, policy, FLOOR_GAMES)
    finally:
        vec.close()
    return floor_rule(returns, cfg.return_window, z=FLOOR_Z, seed=FLOOR_SEED,
                      num_envs=FLOOR_ENVS)


def describe_floor(env: str, f: UntrainedFloor) -> str:
    if env in SUPERVISED_TASKS:
        return (f"untrained floor of {env}: {f.floor:.4g} (progress score of {f.games} untrained "
                f"networks: mean {f.mean:.4g}, sd {f.sd:.4g}, skew {f.skew:.2f}; floor = mean + "
                f"{f.z_eff:.2f} sd)")
    return (f"untrained-play floor of {env}: {f.floor:.4g} (return per game of the untrained "
            f"network over {f.games} games: mean {f.mean:.4g}, sd {f.sd:.4g}, skew {f.skew:.2f}; "
            f"floor = mean + {f.z_eff:.2f} sd / sqrt({f.window}))")


def untrained_floors(spec: SweepSpec, *, log: Log | None = None,
                     measure: bool = True) -> dict[str, UntrainedFloor]:
    """{env: floor} of the spec's environments, from ``<out>/untrained_floor.json``; those
    missing there (or measured with other settings, ``floor_settings``) are measured now
    and stored, unless ``measure`` is false (then they are left out)."""
    log = log or (lambda msg: None)
    doc = read_floor_file(spec.out)
    floors, changed = {}, False
    for env in spec.env:
        settings = floor_settings(spec, env)
        entry = doc["envs"].get(env)
        if isinstance(entry, dict) and entry.get("settings") == settings:
            floors[env] = UntrainedFloor.from_dict(entry)
            continue
        if not measure:
            continue
        if isinstance(entry, dict):
            log(f"untrained-play floor of {env} was measured with other settings "
                f"({entry.get('settings')}); measuring it again")
        t0 = time.perf_counter()
        floor = measure_untrained_floor(spec, env)
        seconds = time.perf_counter() - t0
        doc["envs"][env] = {**floor.to_dict(), "z_eff": floor.z_eff,
                            "window_tail": floor.window_tail, "settings": settings,
                            "measured_at": time.time(), "seconds": seconds}
        floors[env], changed = floor, True
        log(f"{describe_floor(env, floor)}; measured in {seconds:.1f} s")
    if changed:
        doc.update(format=1, rule="floor = mean + z_eff * sd / sqrt(window), z_eff = z + "
                   "max(skew, 0) * (z^2 - 1) / (6 sqrt(window)); targets must be above it")
        write_floor_file(spec.out, doc)
    return floors


def targets_below_floor(spec: SweepSpec, floors: dict[str, UntrainedFloor]
                        ) -> dict[str, list[float]]:
    """{env: the spec's targets at or below its floor} (envs without a floor left out)."""
    below = {}
    for env, f in floors.items():
        low = sorted(t for t in spec.targets if not f.passes(t))
        if low:
            below[env] = low
    return below


def floor_problem(env: str, targets: list[float], f: UntrainedFloor) -> str:
    """One line: the env, its targets below the floor, the floor and its numbers, the fix."""
    per = "network" if env in SUPERVISED_TASKS else "game"
    return (f"target(s) {', '.join(f'{t:g}' for t in targets)} on {env} at or below the "
            f"untrained-play floor {f.floor:.4g} (an untrained network scores {f.mean:.4g} per "
            f"{per}, sd {f.sd:.4g}, over {f.games} {per}s; floor = mean + {f.z_eff:.2f} sd / "
            f"sqrt({f.window})): raise every target above {f.floor:.4g}, or pass "
            "--allow-target-below-floor (spec key allow_target_below_floor = true) to run them "
            "anyway, recorded in untrained_floor.json")


def check_untrained_floor(spec: SweepSpec, *, log: Log | None = None
                          ) -> dict[str, UntrainedFloor]:
    """Measure the floors the sweep lacks, then refuse targets at or below them
    (``TargetBelowFloorError``), unless the spec allows them: then they are recorded in
    ``untrained_floor.json`` and logged. Returns {env: floor}."""
    log = log or (lambda msg: None)
    floors = untrained_floors(spec, log=log)
    below = targets_below_floor(spec, floors)
    if not below:
        return floors
    problems = [floor_problem(env, ts, floors[env]) for env, ts in below.items()]
    if not spec.allow_target_below_floor:
        raise TargetBelowFloorError(problems, f"sweep {spec.out}")
    doc = read_floor_file(spec.out)
    allowed = [a for a in doc.get("allowed_below_floor", []) if isinstance(a, dict)]
    seen = {(a.get("env"), a.get("target")) for a in allowed}
    for env, ts in below.items():
        for t in ts:
            if (env, t) not in seen:
                allowed.append(dict(env=env, target=t, floor=floors[env].floor,
                                    allowed_at=time.time()))
    doc["allowed_below_floor"] = allowed
    write_floor_file(spec.out, doc)
    for env, ts in below.items():
        log(f"allowed by allow_target_below_floor: target(s) {', '.join(f'{t:g}' for t in ts)} "
            f"on {env} at or below the untrained-play floor {floors[env].floor:.4g} (recorded "
            "in untrained_floor.json)")
    return floors


# --------------------------------------------------------------------------------------
# Stage 2: more seeds at each batch size's best lr
# --------------------------------------------------------------------------------------


def grid_runs(spec: SweepSpec) -> dict[tuple[str, int], list]:
    """{(env, batch size): its stage-1 runs (every lr of the grid, the grid seeds)}."""
    by_batch: dict[tuple[str, int], list] = {}
    for p in plan_runs(spec, best_lrs={}):
        by_batch.setdefault((p.env, p.rollout_batch_size), []).append(p)
    return by_batch


def choose_stage_two(spec: SweepSpec, table: pd.DataFrame, choose: ChooseLr, *,
                     log: Log | None = None) -> list[BestLr]:
    """Choose and record the lr of each batch size whose grid runs have all ended
    (``SETTLED`` in ``table``, the sweep's results table) and that has no recorded choice;
    returns the new choices (also appended to ``best_lr.json``).

    The choice is ``choose`` on the grid runs at the spec's highest target. A recorded choice
    is kept: where the grid now chooses otherwise (other results, another highest target),
    that is logged and nothing changes, unless the grid itself was extended (new lrs in the
    spec, as a choice at the grid's edge asks): then the extended grid chooses again once
    its new runs have ended (stage 2 adds no seeds there meanwhile), and stage 2 adds its
    seeds at the new choice (the same lr or another). A batch size with
    no eligible lr is recorded with lr None and gets no stage-2 runs.
    """
    if not stage_two_seeds(spec):
        return []
    log = log or (lambda msg: None)
    recorded = read_best_lrs(spec.out)
    status = dict(zip(table["run"], table["status"], strict=True))
    batches = grid_runs(spec)
    settled = {k: ps for k, ps in batches.items()
               if all(status.get(p.name) in SETTLED for p in ps)}
    if not settled:
        return []
    names = {p.name for ps in settled.values() for p in ps}
    top = float(tkey(max(spec.targets)))
    runs = long_results(table[table["run"].isin(names)])
    runs = runs[runs["target"] == top].reset_index(drop=True)
    per_batch = choose(runs)
    found = {(r.env, int(r.rollout_batch_size)): r for r in per_batch.itertuples(index=False)}
    new = []
    for (env, b), ps in sorted(settled.items()):
        row = found.get((env, b))
        lr = None if row is None or not math.isfinite(float(row.best_lr)) else float(row.best_lr)
        reason = "" if lr is not None else (str(getattr(row, "reason", "")) or "no grid result")
        choice = BestLr(env=env, batch_size=b, lr=lr, target=top,
                        grid_lrs=tuple(sorted({p.lr for p in ps})), grid_seeds=tuple(spec.seeds),
                        reason=reason)
        old = recorded.get((env, b))
        if old is not None and extends_grid(choice, old):
            was = ", ".join(f"{v:g}" for v in old.grid_lrs)
            now = ", ".join(f"{v:g}" for v in choice.grid_lrs)
            verdict = (f"still {_lr(choice.lr)}" if old.lr == choice.lr else
                       f"now {_lr(choice.lr)} (was {_lr(old.lr)})")
            log(f"stage 2, {env} B={b}: the grid was extended ({was} -> {now}): the best lr is "
                f"{verdict}; the earlier choice stays in best_lr.json under superseded")
            new.append(choice)
            continue
        if old is not None:
            if (old.lr, old.target) != (choice.lr, choice.target):
                log(f"stage 2, {env} B={b}: kept the recorded lr {_lr(old.lr)} (chosen at target "
                    f"{old.target:g}); the grid runs would now choose {_lr(choice.lr)} at "
                    f"target {top:g}. A recorded choice is never changed (best_lr.json); use a "
                    "new sweep directory to choose again")
            continue
        new.append(choice)
    if new:
        add_best_lrs(spec.out, new)
    extra = stage_two_seeds(spec)
    for c in new:
        append_event(spec.out, "best_lr", env=c.env, batch_size=c.batch_size, lr=c.lr,
                     target=c.target, reason=c.reason)
        if c.lr is None:
            log(f"stage 2, {c.env} B={c.batch_size}: no stage-2 runs, no lr of the grid is "
                f"eligible at target {c.target:g} ({c.reason})")
        else:
            edge = " (at the edge of the grid: it may be too small)" if c.at_edge else ""
            log(f"stage 2, {c.env} B={c.batch_size}: best lr {c.lr:g} of "
                f"{', '.join(f'{v:g}' for v in c.grid_lrs)} at target {c.target:g}{edge}; "
                f"adding seeds {', '.join(map(str, extra))}")
    return new


def _lr(lr: float | None) -> str:
    return "none" if lr is None else f"{lr:g}"


def stage_two_summary(spec: SweepSpec) -> str:
    """One line on stage 2 for a plan listing ('' without stage 2)."""
    extra = stage_two_seeds(spec)
    if not extra:
        return ""
    chosen = read_best_lrs(spec.out)
    batches = grid_runs(spec)
    done = [k for k in batches if k in chosen]
    return (f"stage 2 (best_lr_seeds = {spec.best_lr_seeds}): seeds {', '.join(map(str, extra))} "
            f"at each batch size's best lr, chosen once its grid runs have ended; chosen for "
            f"{len(done)} of {len(batches)} batch sizes so far ({Path(spec.out) / 'best_lr.json'})")
