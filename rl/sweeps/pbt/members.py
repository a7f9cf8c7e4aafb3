"""The members of a PBT population: their initial plans, and one member's training.

``run_member`` trains a member from a fresh start or from a Tune checkpoint (its own, or
a donor's after an exploit), with no Ray in it: ``report`` is Tune's in a trial, anything
in a test. See docs/sweeps.md.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agents import PPOConfig
from rl.runs.files import atomic_write_json
from rl.runs.layout import CHECKPOINT_DIR, LATEST_FILE
from rl.runs.lock import clear_run_dir, lock_run_dir
from rl.runs.record import has_config, peek_status
from rl.runs.storage import RunDir
from rl.sweeps.pbt.config import MEMBER_FILE, PBTConfig, member_name, round6
from rl.sweeps.settings import batch_shapes, env_settings
from rl.sweeps.state import RunPlan, append_event, read_sweep_state
from rl.train.config import PPOOverride, TrainConfig
from rl.train.launch import train

__all__ = ["TUNE_METRICS", "initial_values", "is_pbt_sweep", "plan_members", "run_member"]


def initial_values(cfg: PBTConfig, seed: int) -> list[dict[str, float]]:
    """Each member's initial hyperparameters, drawn from the ranges and lists with a
    generator seeded by the base seed (log-uniform, uniform, or a uniform pick)."""
    rng = np.random.default_rng([int(seed), 0x9B7])
    members = []
    for _ in range(cfg.population):
        values = {}
        for name, dist in cfg.hyperparams.items():
            kind, args = next(iter(dist.items()))
            if kind == "log":
                v = round6(math.exp(rng.uniform(math.log(args[0]), math.log(args[1]))))
            elif kind == "uniform":
                v = round6(rng.uniform(args[0], args[1]))
            else:
                v = float(args[int(rng.integers(len(args)))])
            values[name] = min(max(v, args[0]), args[-1]) if kind != "values" else v
        members.append(values)
    return members


def plan_members(spec) -> list:
    """The members of a PBT sweep as ``rl.sweeps.state.RunPlan`` s (names m00, m01, ...; lr = the
    member's initial learning rate; configs with its initial hyperparameters, seed =
    base seed + index, checkpoint_every = perturbation_interval, no target stop)."""

    cfg = PBTConfig.from_dict(spec.pbt)
    env = spec.env[0]
    train_base, ppo_base = env_settings(spec, env)
    (ne, ns), = batch_shapes(spec, train_base)
    budget = spec.budget or TrainConfig(**train_base).total_agent_steps
    lr = spec.lrs[0] if spec.lrs else PPOConfig(**ppo_base).learning_rate
    out = Path(spec.out).resolve()
    plans = []
    for i, values in enumerate(initial_values(cfg, spec.seeds[0])):
        name = member_name(i)
        run_dir = str(out / "runs" / name)
        train = {**train_base, "env": env, "num_envs": ne, "num_steps": ns,
                 "seed": spec.seeds[0] + i, "total_agent_steps": budget, "target_return": None,
                 "run_dir": run_dir, "resume": False,
                 "checkpoint_every": cfg.perturbation_interval}
        ppo = {**ppo_base, "learning_rate": lr, **values}
        t_cfg, p_cfg = TrainConfig(**train), PPOConfig(**ppo)
        plans.append(RunPlan(name, env, ne, ns, p_cfg.learning_rate, t_cfg.seed, run_dir,
                             dataclasses.asdict(t_cfg), dataclasses.asdict(p_cfg)))
    return plans


def is_pbt_sweep(out: str | os.PathLike[str]) -> bool:
    """Whether ``out`` holds a PBT sweep (by its sweep.json)."""

    state = read_sweep_state(out) or {}
    return state.get("spec", {}).get("scheduler") == "pbt"


def _reseeded(state: dict[str, Any], seed: int) -> dict[str, Any]:
    """``state`` with its action-sampling, minibatch-order and torch generators reseeded.

    Only CPU generator states are replaced (Ray trials train on CPU); others are kept."""

    state = dict(state)
    size = torch.Generator().get_state().numel()
    for offset, key in enumerate(("sample_gen", "perm_gen", "torch_rng")):
        old = state.get(key)
        if old is not None and old.numel() == size:
            state[key] = torch.Generator().manual_seed((seed + offset) % 2**63).get_state()
    return state


def _write_tune_checkpoint(run_path: Path, iteration: int, meta: dict[str, Any],
                           target: Path) -> None:
    """``target``: a run-dir-shaped copy of the checkpoint of ``iteration`` + meta."""

    source = RunDir(run_path).checkpoint_path(iteration)
    ckpt_dir = target / CHECKPOINT_DIR
    ckpt_dir.mkdir(parents=True)
    try:
        os.link(source, ckpt_dir / source.name)  # no copy where the filesystem allows
    except OSError:
        shutil.copyfile(source, ckpt_dir / source.name)
    atomic_write_json(ckpt_dir / LATEST_FILE, {"iteration": iteration, "file": source.name})
    atomic_write_json(target / MEMBER_FILE, meta)


TUNE_METRICS = ("iteration", "agent_steps", "return_recent", "return_mean", "learning_rate",
                "ent_coef", "clip_coef")


def run_member(plan, hyperparams: Mapping[str, float], *, interval: int,
               restore: Path | None, report: Callable[[dict[str, Any], Path | None], None]):
    """Train PBT member ``plan`` (an ``rl.sweeps.state.RunPlan``) with ``hyperparams`` in force.

    ``restore``: the directory of the Tune checkpoint the trial was restored from (None
    on a fresh start). ``report(metrics, checkpoint_dir)`` is called after every PPO
    iteration; ``checkpoint_dir`` is a directory to hand to Tune as the checkpoint at
    every ``interval``-th iteration, else None. Returns the trainer's ``TrainResult``.
    """

    run_path = Path(plan.run_dir)
    out = run_path.parent.parent
    hyperparams = {k: float(v) for k, v in hyperparams.items()}
    with lock_run_dir(run_path, wait=True):
        donor, donor_iteration, resume = plan.name, 0, False
        if restore is not None:
            meta = json.loads((restore / MEMBER_FILE).read_text(encoding="utf-8"))
            loaded = RunDir(restore).load_latest_checkpoint(map_location="cpu")
            if loaded is None:
                raise RuntimeError(f"the Tune checkpoint {restore} holds no loadable checkpoint")
            state, iteration = loaded
            if meta["member"] != plan.name:  # exploit: continue from the donor's state
                status = peek_status(run_path)
                left = None if status is None else status.iteration
                donor, donor_iteration = meta["member"], iteration
                state = _reseeded(state, plan.seed * 1_000_003 + iteration * 7919)
                append_event(out, "exploit", run=plan.name, donor=donor,
                             donor_iteration=iteration, left_iteration=left,
                             donor_episodes_total=state.get("episodes_total"),
                             donor_hyperparams=meta.get("hyperparams"), **hyperparams)
            else:
                donor, donor_iteration = meta["donor"], meta["donor_iteration"]
                append_event(out, "restore", run=plan.name, from_iteration=iteration)
            RunDir(run_path).save_checkpoint(state, iteration)
            resume = True
        else:
            if has_config(run_path):
                # This population's own start of the member, cut short before its first
                # checkpoint (run_pbt refuses to start over other runs): start over.
                clear_run_dir(run_path)
            append_event(out, "start", run=plan.name, **hyperparams)
        cfg, ppo = plan.configs(resume=resume)
        columns = {"pbt/member": plan.name, "pbt/donor": donor,
                   "pbt/donor_iteration": donor_iteration,
                   "pbt/learning_rate": hyperparams.get("learning_rate", ppo.learning_rate)}
        override = PPOOverride(**hyperparams, columns=columns)

        def on_iteration(row: dict[str, Any]) -> None:
            metrics = {k: row[k] for k in TUNE_METRICS if k in row}
            it = int(row["iteration"])
            if it % interval:
                report(metrics, None)
                return
            meta = {"member": plan.name, "iteration": it, "donor": donor,
                    "donor_iteration": donor_iteration, "hyperparams": hyperparams}
            with tempfile.TemporaryDirectory(prefix=f"pbt-{plan.name}-") as tmp:
                _write_tune_checkpoint(run_path, it, meta, Path(tmp) / "ckpt")
                report(metrics, Path(tmp) / "ckpt")

        return train(cfg, ppo, on_iteration=on_iteration, override=override)
