"""A PBT population on Ray Tune: its scheduler (exploit and explore), trials and driver.

``run_pbt`` checks the sweep directory, runs every member as a Tune trial of
``rl.sweeps.pbt.members.run_member``, then writes the PBT table. Ray is imported only
here, and only when a population runs. See docs/sweeps.md and docs/scale-out.md.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from rl.runs.record import peek_status
from rl.sweeps.pbt.config import PERTURBATION_FACTORS, PBTConfig, round6
from rl.sweeps.pbt.members import plan_members, run_member
from rl.sweeps.pbt.table import write_pbt_outputs
from rl.sweeps.settings import SweepStateError
from rl.sweeps.state import RunPlan, append_event, classify_run, read_sweep_state, write_sweep_state

__all__ = ["member_statuses", "run_pbt"]


class _Clip:
    """Tune ``custom_explore_fn``: clip perturbed range values to their ranges."""

    def __init__(self, bounds: Mapping[str, tuple[float, float]]):
        self.bounds = dict(bounds)

    def __call__(self, config: dict[str, Any]) -> dict[str, Any]:
        for name, (low, high) in self.bounds.items():
            config[name] = min(max(round6(float(config[name])), low), high)
        return config


class _Initial:
    """Tune ``sample_from``: a member's initial value of one hyperparameter."""

    def __init__(self, values: Mapping[str, float]):
        self.values = dict(values)

    def __call__(self, config: Mapping[str, Any]) -> float:
        return self.values[config["member"]]


def _trial_name(trial) -> str:
    # Called once, when the trial is created: its "member" is then its own. (After an
    # exploit, config["member"] is the donor's, copied with the donor's config: a trial
    # knows its member by its name.)
    return str(trial.config["member"])


def _mutations(cfg: PBTConfig) -> dict[str, Any]:
    from ray import tune  # lazy: optional extra

    out: dict[str, Any] = {}
    for name, dist in cfg.hyperparams.items():
        kind, args = next(iter(dist.items()))
        out[name] = (tune.loguniform(*args) if kind == "log" else
                     tune.uniform(*args) if kind == "uniform" else list(args))
    return out


def _member_trainable(config: dict[str, Any], *, plans: dict[str, dict[str, Any]],
                      hyperparams: list[str], interval: int, threads: int) -> None:
    from ray import tune  # lazy: optional extra

    name = tune.get_context().get_trial_name()
    if name not in plans:
        raise RuntimeError(f"trial {name!r} is not a member of this population ({list(plans)})")
    torch.set_num_threads(int(threads))

    def report(metrics: dict[str, Any], checkpoint_dir: Path | None) -> None:
        if checkpoint_dir is None:
            tune.report(metrics)
        else:
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(str(checkpoint_dir)))

    values = {k: config[k] for k in hyperparams}
    checkpoint = tune.get_checkpoint()
    plan = RunPlan.from_dict(plans[name])
    if checkpoint is None:
        run_member(plan, values, interval=interval, restore=None, report=report)
    else:
        with checkpoint.as_directory() as restore:
            run_member(plan, values, interval=interval, restore=Path(restore), report=report)


def _member_done_callback(base: type) -> type:
    """A ``ray.tune.Callback`` that logs each member's end (the log is not pickled)."""

    class MemberDone(base):
        def __init__(self, log: Callable[[str], None], out: Path):
            self.log, self.out = log, out

        def __getstate__(self):
            return {"log": None, "out": self.out}

        def on_trial_complete(self, iteration, trials, trial, **info):
            result = trial.last_result or {}
            if self.log is not None:
                self.log(f"{trial}: finished at PPO iteration {result.get('iteration')}, "
                         f"return_recent {result.get('return_recent')}")

        def on_trial_error(self, iteration, trials, trial, **info):
            if self.log is not None:
                self.log(f"{trial}: failed ({trial.error_file})")

    return MemberDone


def _check_sweep_dir(spec, members: list) -> str:
    """'new' (start the population) or 'finished' (nothing to train); raises
    ``SweepStateError`` for anything else, before anything runs."""

    out = Path(spec.out)
    state = read_sweep_state(out)
    if state is not None and state.get("spec", {}).get("scheduler", "grid") != "pbt":
        raise SweepStateError(
            f"{out} holds a grid sweep (sweep.json); a PBT population needs its own sweep "
            "directory: give a new out (--out)"
        )
    actions = {m.name: classify_run(m) for m in members}
    if all(a == "finished" for a, _ in actions.values()):
        return "finished"
    started = [f"{name}: {a}{f' ({d})' if d else ''}" for name, (a, d) in actions.items()
               if a != "new"]
    if started:
        raise SweepStateError(
            f"{out} already holds members of a PBT population that did not finish (or was made "
            "with other settings):\n  " + "\n  ".join(started[:10]) + "\nA PBT population is "
            "not continued after an interruption (its exploit/explore state lived in the Tune "
            f"driver). Start it again with a new out (--out), or delete {out / 'runs'}."
        )
    runs = out / "runs"
    others = sorted(p.name for p in runs.iterdir() if p.name not in actions
                    and not p.name.startswith(".")) if runs.is_dir() else []
    if others:
        raise SweepStateError(
            f"{runs} holds run directories that are not members of this population "
            f"({', '.join(others[:5])}); give a new out (--out)"
        )
    return "new"


def run_pbt(spec, *, log: Callable[[str], None] | None = None) -> pd.DataFrame:
    """Train the population of a ``scheduler = "pbt"`` spec on Ray Tune; returns the PBT
    table (also written to ``spec.out``: pbt.csv, pbt.parquet, pbt.png).

    Raises ``SweepStateError`` before anything runs when ``spec.out`` holds something
    else than a finished population of the same settings.
    """

    log = log or (lambda msg: None)
    out = Path(spec.out)
    out.mkdir(parents=True, exist_ok=True)
    members = plan_members(spec)
    if _check_sweep_dir(spec, members) == "finished":
        log(f"PBT population {out}: all {len(members)} members finished; nothing to train")
        return write_pbt_outputs(out)
    write_sweep_state(spec, members)
    append_event(out, "sweep_start", runs=len(members), backend="ray", scheduler="pbt")
    cfg = PBTConfig.from_dict(spec.pbt)
    log(f"PBT population {out}: {cfg.population} members of {spec.env[0]} at batch size "
        f"{members[0].rollout_batch_size} agent steps on Ray Tune ({spec.cpus_per_trial} CPU(s) "
        "each, as many at once as the CPUs allow); "
        f"perturbation every {cfg.perturbation_interval} PPO iterations, perturbing "
        f"{', '.join(cfg.hyperparams)}")
    try:
        _tune_population(spec, cfg, members, log)
    finally:
        table = write_pbt_outputs(out)
    statuses = member_statuses(members)
    for m in members:
        append_event(out, "done" if statuses[m.name] == "finished" else "failed", run=m.name)
    append_event(out, "sweep_end", runs=len(members),
                 finished=sum(s == "finished" for s in statuses.values()))
    return table


def member_statuses(members: Iterable) -> dict[str, str]:
    return {m.name: _state(m.run_dir) for m in members}


def _state(run_dir: str | os.PathLike[str]) -> str:
    status = peek_status(run_dir)
    return "pending" if status is None or status.state is None else status.state


def _tune_population(spec, cfg: PBTConfig, members: list, log: Callable[[str], None]) -> None:
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    try:
        import ray  # lazy: optional extra
        from ray import tune  # lazy: optional extra
        from ray.tune.schedulers import PopulationBasedTraining  # lazy: optional extra
    except ImportError as exc:
        raise ModuleNotFoundError(
            f"PBT needs Ray Tune ({exc}); install it with `pip install -e '.[ray]'` (or "
            "`pip install \"ray[tune]\"`)"
        ) from None

    ranges = {name: tuple(next(iter(d.values()))) for name, d in cfg.hyperparams.items()
              if next(iter(d)) != "values"}
    scheduler = PopulationBasedTraining(
        time_attr="iteration",  # our PPO iteration: it continues from the donor's on exploit
        metric=cfg.metric, mode="max", perturbation_interval=cfg.perturbation_interval,
        hyperparam_mutations=_mutations(cfg), quantile_fraction=cfg.quantile_fraction,
        resample_probability=cfg.resample_probability, synch=cfg.synchronous,
        perturbation_factors=PERTURBATION_FACTORS, custom_explore_fn=_Clip(ranges),
    )
    names = [m.name for m in members]
    param_space: dict[str, Any] = {"member": tune.grid_search(names)}
    for name in cfg.hyperparams:
        param_space[name] = tune.sample_from(_Initial({m.name: m.ppo[name] for m in members}))
    trainable = tune.with_resources(
        tune.with_parameters(_member_trainable, plans={m.name: m.to_dict() for m in members},
                             hyperparams=list(cfg.hyperparams),
                             interval=cfg.perturbation_interval, threads=spec.cpus_per_trial),
        {"cpu": spec.cpus_per_trial},
    )
    storage = (Path(spec.out) / "ray").resolve()
    experiment = time.strftime("pbt-%Y%m%d-%H%M%S")
    started = False
    if not ray.is_initialized():
        ray.init(address=spec.address, include_dashboard=False, log_to_driver=False)
        started = True
    try:
        tuner = tune.Tuner(
            trainable,
            param_space=param_space,
            # Every member is a live trial from the start (max_concurrent_trials would hold
            # members back until others finish): as many run at once as the CPUs allow, and
            # PBT time-shares the rest, pausing members at their perturbation points.
            tune_config=tune.TuneConfig(
                scheduler=scheduler, reuse_actors=True,
                trial_name_creator=_trial_name, trial_dirname_creator=_trial_name,
            ),
            run_config=tune.RunConfig(
                name=experiment, storage_path=str(storage), verbose=0,
                callbacks=[_member_done_callback(tune.Callback)(log, Path(spec.out))],
                checkpoint_config=tune.CheckpointConfig(num_to_keep=None),
                failure_config=tune.FailureConfig(max_failures=0),
            ),
        )
        tuner.fit()
    finally:
        if started:
            ray.shutdown()
    # Tune's copies of the perturbation checkpoints: not needed once the population ended.
    for ckpt in (storage / experiment).glob("*/checkpoint_*"):
        if ckpt.is_dir():
            shutil.rmtree(ckpt, ignore_errors=True)
