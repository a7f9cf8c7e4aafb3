"""Run a sweep's planned runs: in local worker processes, or as Ray Tune trials.

See docs/sweeps.md for the full description.
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing as mp
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from rl.measure.supervised import run_supervised
from rl.runs.lock import clear_run_dir, lock_run_dir
from rl.runs.storage import RunDir
from rl.sweeps.pbt import run_pbt
from rl.sweeps.protocol import ChooseLr, check_untrained_floor, choose_stage_two
from rl.sweeps.results import results_table, run_row, write_results
from rl.sweeps.settings import SweepSpec
from rl.sweeps.spec import plan_runs
from rl.sweeps.state import RunPlan, append_event, check_plans, classify_run, write_sweep_state
from rl.train.config import TrainResult
from rl.train.launch import train

__all__ = ["LocalExecutor", "RayExecutor", "check_plans", "make_executor", "run_one",
           "run_sweep"]

# Set in a worker process by its first SIGINT (the sweep is being stopped): the worker then
# starts no further run. A process pool hands an idle worker the next queued run even after
# the pool was shut down with its pending work cancelled (a few calls are already queued).
_STOPPING = threading.Event()

OnDone = Callable[[RunPlan, dict[str, Any]], None]


# --------------------------------------------------------------------------------------
# One run
# --------------------------------------------------------------------------------------


def _sweep_dir(plan: RunPlan) -> Path:
    return Path(plan.run_dir).parent.parent


def _prepare_run_dir(plan: RunPlan, action: str) -> int:
    """Make the run directory ready for ``action``; returns the iteration it resumes from
    (0 for a run to resume that has no checkpoint: ``_train_plan`` restarts it).

    A supervised run (seconds long, no checkpoints) always starts over. The caller holds the
    run's lock."""
    path = Path(plan.run_dir)
    if action == "new" or plan.supervised:
        # No config.json: whatever is there is a start cut short before the run existed.
        clear_run_dir(path)
        return 0
    checkpoints = RunDir(path).list_checkpoints()
    return checkpoints[-1] if checkpoints else 0


def run_one(plan: RunPlan | dict[str, Any], threads: int | None = None,
            retry_failed: bool = False) -> dict[str, Any]:
    """Train one planned run into its run directory (or skip it if it is finished).

    Returns a summary: run, action (new, resume, skipped), status (finished, failed,
    skipped), message, iterations, agent_steps, return_recent, reached_target, seconds.
    Exceptions from training are caught and reported as status failed (the trainer has
    marked the run failed); KeyboardInterrupt propagates.
    """

    plan = plan if isinstance(plan, RunPlan) else RunPlan.from_dict(plan)
    if threads:
        torch.set_num_threads(int(threads))
    summary: dict[str, Any] = dict(run=plan.name, action="", status="", message="",
                                   iterations=math.nan, agent_steps=math.nan,
                                   return_recent=math.nan, reached_target=False,
                                   seconds=0.0)
    if _STOPPING.is_set():  # its run directory is not touched: a rerun starts it as new
        summary.update(status="interrupted", message="not started: the sweep was stopped")
        return summary
    with lock_run_dir(plan.run_dir, wait=True):
        action, detail = classify_run(plan, retry_failed=retry_failed)
        if action in ("finished", "failed", "conflict"):
            summary.update(action="skipped", status="skipped" if action != "conflict"
                           else "failed", message=f"{action}: {detail}")
            return summary
        start_at = _prepare_run_dir(plan, action)
        append_event(_sweep_dir(plan), action if action == "resume" else "start",
                     run=plan.name, from_iteration=start_at)
        t0 = time.perf_counter()
        try:
            result = _train_plan(plan, action, start_at)
        except Exception as exc:
            summary.update(action=action, status="failed", message=f"{type(exc).__name__}: "
                           f"{exc}", seconds=time.perf_counter() - t0)
            return summary
        summary.update(
            action=action, status="finished",
            message="reached target" if result.reached_target else "budget spent",
            iterations=result.iterations, agent_steps=result.agent_steps,
            return_recent=result.return_recent, reached_target=bool(result.reached_target),
            seconds=time.perf_counter() - t0,
        )
    return summary


def _train_plan(plan: RunPlan, action: str, start_at: int) -> TrainResult:
    """Train one run into its prepared directory: PPO (``rl.train.launch.train``), or a
    supervised run (``rl.measure.supervised.run_supervised``, from step 0)."""
    if not plan.supervised:
        # A run killed before its first checkpoint is started over on purpose: its rows and
        # TensorBoard events are the killed attempt's (a plain resume would refuse).
        restart = action == "resume" and start_at == 0
        cfg, ppo = plan.configs(resume=action == "resume" and not restart)
        return train(cfg, ppo, quiet=True, restart=restart)
    s = run_supervised(plan.supervised_config(), plan.run_dir).summary
    return TrainResult(Path(plan.run_dir), int(s["steps"]),
                       int(s["steps"]) * int(s["batch_size"]), float(s["final_score"]),
                       bool(s["reached_target"]))


# --------------------------------------------------------------------------------------
# Local processes
# --------------------------------------------------------------------------------------


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _watch_parent(parent: int) -> None:
    while True:
        time.sleep(0.2)
        if os.getppid() != parent:  # the sweep process died (re-parented to init)
            os._exit(3)


def _stop_on_sigint(signum, frame) -> None:
    _STOPPING.set()
    raise KeyboardInterrupt


def init_worker(threads: int, parent: int) -> None:
    torch.set_num_threads(threads)
    signal.signal(signal.SIGINT, _stop_on_sigint)
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True,
                     name="watch-sweep-process").start()


class LocalExecutor:
    """Runs on this machine, ``parallel`` at once in spawned worker processes."""

    def __init__(self, parallel: int = 1, *, cores: int | None = None,
                 retry_failed: bool = False):
        self.parallel = max(1, int(parallel))
        self.cores = cores or available_cores()
        self.retry_failed = retry_failed

    @property
    def threads(self) -> int:
        """torch threads per worker: the cores shared out among the parallel runs."""
        return max(1, self.cores // self.parallel)

    def run(self, plans: list[RunPlan], on_done: OnDone) -> None:
        if not plans:
            return
        workers = min(self.parallel, len(plans))
        pool = ProcessPoolExecutor(
            max_workers=workers, mp_context=mp.get_context("spawn"),
            initializer=init_worker, initargs=(self.threads, os.getpid()),
        )
        try:
            futures = {pool.submit(run_one, p.to_dict(), None, self.retry_failed): p
                       for p in plans}
            for fut in as_completed(futures):
                plan = futures[fut]
                try:
                    summary = fut.result()
                except BrokenProcessPool as exc:  # a worker died (e.g. out of memory)
                    # Not this run's failure, and perhaps it never started: a rerun of the
                    # sweep resumes or starts it (the run directory is the record).
                    summary = dict(run=plan.name, action="", status="interrupted",
                                   message=f"a sweep worker process died ({exc}); run the "
                                   "sweep again to resume or start this run")
                except Exception as exc:
                    summary = dict(run=plan.name, action="", status="failed",
                                   message=f"worker process failed: {exc!r}")
                on_done(plan, summary)
        except BaseException:
            stop_workers(pool)
            raise
        pool.shutdown(wait=True)


def stop_workers(pool: ProcessPoolExecutor, grace_s: float = 15.0) -> None:
    """Interrupt the workers (SIGINT: each marks its run interrupted, so a restart resumes
    it), wait up to ``grace_s``, then terminate what is left."""
    processes = list(getattr(pool, "_processes", {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for proc in processes:
        if proc.is_alive():
            with contextlib.suppress(OSError):
                os.kill(proc.pid, signal.SIGINT)
    deadline = time.monotonic() + grace_s
    for proc in processes:
        proc.join(max(0.0, deadline - time.monotonic()))
        if proc.is_alive():
            proc.terminate()
            proc.join(5)


# --------------------------------------------------------------------------------------
# Ray Tune
# --------------------------------------------------------------------------------------


def _tune_trial(config: dict[str, Any], plans: dict[str, dict[str, Any]], threads: int,
                retry_failed: bool) -> None:
    from ray import tune  # lazy: optional extra

    summary = run_one(plans[config["run"]], threads, retry_failed)
    tune.report({k: v for k, v in summary.items() if v is not None})


_SUMMARY_KEYS = ("run", "action", "status", "message", "iterations", "agent_steps",
                 "return_recent", "reached_target", "seconds")


def _trial_done_callback(base: type) -> type:
    """A ``ray.tune.Callback`` subclass that calls ``on_done`` once per finished trial.

    Tune pickles its callbacks with the experiment state; the callable (which may hold
    locks, consoles, open tables) is left out of the pickle, as it is only used live.
    """

    class TrialDone(base):
        def __init__(self, plans: dict[str, RunPlan], on_done: OnDone):
            self.plans, self.on_done, self.seen = plans, on_done, set()

        def __getstate__(self):
            return {"plans": self.plans, "on_done": None, "seen": set(self.seen)}

        def _report(self, trial, summary):
            name = trial.config["run"]
            if name not in self.seen and self.on_done is not None:
                self.seen.add(name)
                self.on_done(self.plans[name], summary)

        def on_trial_result(self, iteration, trials, trial, result, **info):
            self._report(trial, {k: result.get(k) for k in _SUMMARY_KEYS})

        def on_trial_error(self, iteration, trials, trial, **info):
            self._report(trial, dict(run=trial.config["run"], action="", status="failed",
                                     message=f"Ray trial failed: {trial.error_file}"))

    return TrialDone


# How long a Ray head gets to accept a connection before the sweep gives up on it.
RAY_CONNECT_SECONDS = 10.0


def check_ray_address(address: str | None, timeout: float = RAY_CONNECT_SECONDS) -> None:
    """ConnectionError naming the address and the fix when a cluster's ``host:port`` (or
    ``ray://host:port``) does not accept a connection: ``ray.init`` would retry it for ever,
    printing a warning every few seconds (#24 item 8). None and "auto" are left to Ray."""
    if address in (None, "", "auto", "local"):
        return
    target = address.removeprefix("ray://")
    host, sep, port_text = target.rpartition(":")
    if not sep or not port_text.isdigit() or not host:
        raise ValueError(f"Ray address {address!r} is not host:port (or ray://host:port); "
                         "give the address `ray start --head` printed, or leave it out to "
                         "start a Ray instance on this machine")
    try:
        with socket.create_connection((host.strip("[]"), int(port_text)), timeout=timeout):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConnectionError(
            f"cannot reach the Ray cluster at {address} ({reason}, within {timeout:g} s): "
            "check the address and that `ray start --head` runs there, or leave --address "
            "out to start Ray on this machine (or use --backend local)") from None


class RayExecutor:
    """One Ray Tune trial per run, each with ``cpus_per_trial`` CPUs."""

    def __init__(self, parallel: int | None = None, *, address: str | None = None,
                 cpus_per_trial: int = 1, retry_failed: bool = False,
                 storage: str | os.PathLike[str] | None = None):
        self.parallel = parallel
        self.address = address
        self.cpus_per_trial = int(cpus_per_trial)
        self.retry_failed = retry_failed
        self.storage = storage

    def run(self, plans: list[RunPlan], on_done: OnDone) -> None:
        if not plans:
            return
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
        try:
            import ray  # lazy: optional extra
            from ray import tune  # lazy: optional extra
        except ImportError as exc:
            raise ModuleNotFoundError(
                f"the ray backend needs Ray Tune ({exc}); install it with "
                "`pip install -e '.[ray]'` (or `pip install \"ray[tune]\"`)"
            ) from None

        started = False
        if not ray.is_initialized():
            check_ray_address(self.address)
            ray.init(address=self.address, include_dashboard=False, log_to_driver=False)
            started = True
        try:
            self._fit(plans, on_done, tune)
        finally:
            if started:
                ray.shutdown()

    def _fit(self, plans: list[RunPlan], on_done: OnDone, tune) -> None:
        by_name = {p.name: p for p in plans}
        storage = Path(self.storage or (_sweep_dir(plans[0]) / "ray")).resolve()

        done = _trial_done_callback(tune.Callback)(by_name, on_done)
        trainable = tune.with_resources(
            tune.with_parameters(_tune_trial, plans={p.name: p.to_dict() for p in plans},
                                 threads=self.cpus_per_trial, retry_failed=self.retry_failed),
            {"cpu": self.cpus_per_trial},
        )
        tuner = tune.Tuner(
            trainable,
            param_space={"run": tune.grid_search([p.name for p in plans])},
            tune_config=tune.TuneConfig(
                max_concurrent_trials=self.parallel,
                reuse_actors=True,  # one worker process per slot, not per run (imports once)
                trial_name_creator=lambda t: t.config["run"],
                trial_dirname_creator=lambda t: t.config["run"],
            ),
            run_config=tune.RunConfig(
                name=time.strftime("tune-%Y%m%d-%H%M%S"), storage_path=str(storage),
                verbose=0, callbacks=[done],
                failure_config=tune.FailureConfig(max_failures=0),
            ),
        )
        tuner.fit()


def make_executor(spec: SweepSpec):
    """The executor the spec asks for (backend local or ray)."""
    if spec.backend == "ray":
        return RayExecutor(spec.parallel, address=spec.address,
                           cpus_per_trial=spec.cpus_per_trial, retry_failed=spec.retry_failed)
    return LocalExecutor(spec.parallel, retry_failed=spec.retry_failed)


# --------------------------------------------------------------------------------------
# The sweep
# --------------------------------------------------------------------------------------


def _fmt(v: Any, spec: str = ".1f") -> str:
    try:
        return "-" if v is None or v != v else format(v, spec)
    except (TypeError, ValueError):
        return str(v)


def run_sweep(spec: SweepSpec, *, executor=None,
              log: Callable[[str], None] | None = None,
              choose_lr: ChooseLr | None = None) -> pd.DataFrame:
    """Run (or continue) a sweep; returns the results table (also written to ``spec.out``).

    Raises ``SweepStateError`` before anything runs if a run directory holds a run with
    other settings than the spec plans for it, and ``TargetBelowFloorError`` if a target is
    at or below its environment's untrained-play floor (measured here once per env,
    ``rl.sweeps.protocol``). With ``best_lr_seeds`` and a ``choose_lr``, stage 2 follows:
    the lr of each batch size whose grid runs have ended is chosen and recorded, and its
    extra seeds run (``rl.sweeps.protocol.choose_stage_two``).
    """
    if spec.scheduler == "pbt":  # a population on Ray Tune: rl.sweeps.pbt (returns the PBT table)

        return run_pbt(spec, log=log)
    log = log or (lambda msg: None)
    out = Path(spec.out)
    out.mkdir(parents=True, exist_ok=True)
    plans = plan_runs(spec)
    actions = check_plans(spec, plans)
    check_untrained_floor(spec, log=log)
    executor = executor or make_executor(spec)
    table = _run_plans(spec, plans, actions, executor, log)
    if not spec.best_lr_seeds:
        return table
    if choose_lr is None:
        log(f"stage 2 (best_lr_seeds = {spec.best_lr_seeds}) not chosen here: no lr chooser "
            "was given (`rlscale sweep` chooses with the fit's rule)")
        return table
    if any(c.lr is not None for c in choose_stage_two(spec, table, choose_lr, log=log)):
        plans = plan_runs(spec)
        actions = check_plans(spec, plans)
        table = _run_plans(spec, plans, actions, executor, log)
    return table


def _run_plans(spec: SweepSpec, plans: list[RunPlan], actions: dict[str, tuple[str, str]],
               executor, log: Callable[[str], None]) -> pd.DataFrame:
    """Record the plan, run the runs to do, keep the results table up to date."""
    out = Path(spec.out)
    write_sweep_state(spec, plans)
    todo = [p for p in plans if actions[p.name][0] in ("new", "resume")]
    counts = {a: sum(1 for x, _ in actions.values() if x == a)
              for a in ("finished", "failed", "resume", "new")}
    append_event(out, "sweep_start", runs=len(plans), backend=spec.backend, **counts)
    for p in plans:
        if actions[p.name][0] in ("finished", "failed"):
            append_event(out, "skip", run=p.name, state=actions[p.name][0])
    log(f"sweep {out}: {len(plans)} runs -- {counts['finished']} finished (skipped), "
        f"{counts['failed']} failed (kept{'' if not spec.retry_failed else ', retried'}), "
        f"{counts['resume']} to resume, {counts['new']} to start; backend {spec.backend}, "
        f"{spec.parallel} at once")

    targets = spec.targets
    rows = {p.name: run_row(p, targets) for p in plans}
    write_results(out, results_table(plans, targets, rows))
    done = 0

    def on_done(plan: RunPlan, summary: dict[str, Any]) -> None:
        nonlocal done
        done += 1
        rows[plan.name] = run_row(plan, targets)
        write_results(out, results_table(plans, targets, rows))
        status = summary.get("status") or "failed"
        append_event(out, "done" if status == "finished" else status, run=plan.name,
                     **{k: summary.get(k) for k in ("action", "message", "iterations",
                                                    "seconds")})
        steps, score = (("optimizer steps", "score") if plan.supervised else
                        ("PPO iterations", "return_recent"))
        log(f"[{done}/{len(todo)}] {plan.name}: {status} ({summary.get('action')}), "
            f"{summary.get('message')}, {_fmt(summary.get('iterations'), '.0f')} {steps}, "
            f"{score} {_fmt(summary.get('return_recent'), '.3g')}, "
            f"{_fmt(summary.get('seconds'))} s")

    try:
        executor.run(todo, on_done)
    finally:
        # Also when interrupted: the table then shows what the run directories hold.
        table = results_table(plans, targets)
        write_results(out, table)
    append_event(out, "sweep_end", runs=len(plans),
                 finished=int((table["status"] == "finished").sum()))
    return table
