"""Running a study: every sweep's runs and the supervised reference in one process pool.

Finished runs are reused, interrupted ones resumed, runs made with other settings refused
(``rl.sweeps.executors.run_sweep`` per sweep, longest first); then the sharpness at the
end of each sweep and of the supervised reference. See docs/study.md.
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing as mp
import os
import shutil
import threading
from collections.abc import Callable
from concurrent.futures import (
    FIRST_EXCEPTION,
    Future,
    ProcessPoolExecutor,
    ThreadPoolExecutor,
    wait,
)
from concurrent.futures import as_completed as futures_completed
from pathlib import Path
from typing import Any

import pandas as pd
from rich.console import Console

from rl.analysis.sharpness import (
    PPO_TERMS,
    SharpnessConfig,
    digits_sharpness,
    eps_columns,
    sweep_sharpness,
)
from rl.measure.supervised import SupervisedConfig, run_supervised
from rl.runs.files import atomic_write_json, atomic_write_text
from rl.runs.record import has_config, read_config
from rl.study.plan import (
    SHARPNESS_FILE,
    SUPERVISED_PART,
    Part,
    StudyPlan,
    study_parts,
    supervised_dir,
)
from rl.study.progress import StudyMonitor
from rl.study.settings import DIGITS_SHARPNESS, STUDY_SHARPNESS
from rl.sweeps.executors import available_cores, init_worker, run_one, run_sweep, stop_workers
from rl.sweeps.settings import SweepStateError
from rl.sweeps.spec import plan_runs
from rl.sweeps.state import classify_run

__all__ = ["check_study", "measure_study_sharpness", "run_study"]

_COST = {"atari": 30.0, "minatar": 3.0, "classic": 1.0, SUPERVISED_PART: 0.3}


def _cost(part: Part, plan: StudyPlan) -> float:
    """Rough agent-step cost of a part's longest run, for longest-first scheduling (a
    supervised sweep's budget counts examples)."""
    fam = SUPERVISED_PART if part.kind == SUPERVISED_PART else \
        next(g.family for g in plan.games if g.game == part.game)
    return _COST[fam] * float(part.spec.budget or 0)


def _supervised_state(path: Path, cfg) -> str:
    """new, finished or conflict (a finished run with other settings)."""
    summary = path / "summary.json"
    if not has_config(path):
        return "new"
    stored = read_config(path)
    planned = json.loads(json.dumps({"kind": "gns-supervised", **dataclasses.asdict(cfg)}))
    # Fields added to SupervisedConfig since the run was made count as their defaults.
    defaults = json.loads(json.dumps(dataclasses.asdict(type(cfg)())))
    stored = {**{k: v for k, v in defaults.items() if k not in stored}, **stored}
    if stored != planned:
        return "conflict"
    return "finished" if summary.exists() else "new"


def _run_supervised_job(cfg_dict: dict[str, Any], out_dir: str) -> dict[str, Any]:
    """Worker-process job: the supervised reference run (its summary)."""

    return run_supervised(SupervisedConfig(**cfg_dict), out_dir).summary


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


def check_study(plan: StudyPlan) -> tuple[list[Part], Path | None, str]:
    """Check the study's directories against the plan (runs with other settings are
    refused, ``SweepStateError``), then write study.json.

    Returns (the parts, the supervised run's directory, its state: none, new or finished)."""
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
    return parts, sup_dir, sup_state


def _start_supervised(plan: StudyPlan, sup_dir: Path | None, sup_state: str,
                      pool: ProcessPoolExecutor, monitor: StudyMonitor,
                      say: Callable[[str], None]) -> tuple[dict[str, Any] | None, Future | None]:
    """(the finished supervised run's summary, reused; or the future of its run)."""
    if sup_state == "finished":
        monitor.extra_done = 1
        say(f"supervised reference: finished, reused ({sup_dir})")
        return json.loads((sup_dir / "summary.json").read_text()), None
    if sup_dir is None:
        return None, None
    if sup_dir.exists():
        shutil.rmtree(sup_dir)  # an unfinished start: cheap to redo
    return None, pool.submit(_run_supervised_job, dataclasses.asdict(plan.supervised),
                             str(sup_dir))


def _submit_sweeps(parts: list[Part], pool: ProcessPoolExecutor, sweeps: ThreadPoolExecutor,
                   say: Callable[[str], None]) -> dict[Future, Part]:
    """One thread per sweep; each puts its runs into the shared pool, in order."""
    futures = {}
    for part in parts:  # submit in order (longest first) into the shared pool
        ex = _SharedPoolExecutor(pool, part.spec.retry_failed)
        fut = sweeps.submit(run_sweep, part.spec, executor=ex, log=say)
        futures[fut] = part
        while not ex.submitted.wait(0.05) and not fut.done():
            pass
    return futures


def _wait_all(futures: dict[Future, Part], sup_future: Future | None, sup_dir: Path | None,
              monitor: StudyMonitor, say: Callable[[str], None]) -> dict[str, Any] | None:
    """Wait for every sweep (a sweep's error is raised) and the supervised run (its failure
    is logged); returns the supervised summary, or None."""
    supervised = None
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
    return supervised


def run_study(plan: StudyPlan, *, quiet: bool = False, console=None,
              log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run (or continue) every sweep, noise-scale run and the supervised reference.

    Finished runs are skipped, interrupted ones resumed (``rl.sweeps.executors.run_sweep``).
    Returns {"tables": {(kind, game): results table}, "supervised": summary or None}.
    """

    console = console or Console(stderr=True)
    parts, sup_dir, sup_state = check_study(plan)
    parts.sort(key=lambda p: -_cost(p, plan))  # longest first
    all_plans = [p for part in parts for p in plan_runs(part.spec)]
    threads = max(1, available_cores() // plan.parallel)
    monitor = StudyMonitor(all_plans, 1 if sup_dir is not None else 0, console, quiet)

    def say(msg: str) -> None:
        monitor.log(msg)
        if log is not None:
            log(msg)

    say(f"study {Path(plan.out)}: {len(parts)} sweep(s), {len(all_plans)} runs"
        + (", 1 supervised run" if sup_dir is not None else "")
        + f"; {plan.parallel} at once, {threads} torch thread(s) each")
    pool = ProcessPoolExecutor(max_workers=plan.parallel, mp_context=mp.get_context("spawn"),
                               initializer=init_worker, initargs=(threads, os.getpid()))
    sweeps = ThreadPoolExecutor(max_workers=max(1, len(parts)),
                                thread_name_prefix="study-sweep")
    try:
        with monitor:
            supervised, sup_future = _start_supervised(plan, sup_dir, sup_state, pool,
                                                       monitor, say)
            futures = _submit_sweeps(parts, pool, sweeps, say)
            waited = _wait_all(futures, sup_future, sup_dir, monitor, say)
            supervised = waited if sup_future is not None else supervised
    except BaseException:
        stop_workers(pool)
        sweeps.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    sweeps.shutdown(wait=True)
    tables = {(part.kind, part.game): fut.result() for fut, part in futures.items()}
    return {"tables": tables, "supervised": supervised}


def _earlier_sharpness(path: Path, cfg: SharpnessConfig) -> pd.DataFrame:
    """The rows of an earlier sharpness.csv measured with ``cfg``'s settings, for the runs
    with every term and repeat (no rows where the file is missing, unreadable or made with
    other settings: then every run is measured)."""
    none = pd.DataFrame(columns=["run"])
    try:
        df = pd.read_csv(path)
    except (FileNotFoundError, ValueError, pd.errors.EmptyDataError):
        return none
    settings = {"samples": cfg.num_envs * cfg.num_steps, "ascent_steps": cfg.ascent_steps,
                "ascent_starts": cfg.ascent_starts, "max_products": cfg.max_products,
                "eigen_tol": cfg.eigen_tol}
    needed = {"run", "term", "repeat", *settings, *eps_columns(cfg.eps_values)}
    if df.empty or not needed <= set(df.columns) or any(
            (df[col] != value).any() for col, value in settings.items()):
        return none
    want = {(term, r) for term in PPO_TERMS for r in range(cfg.repeats)}
    have = {run: set(zip(g["term"], g["repeat"], strict=True)) for run, g in df.groupby("run")}
    return df[df["run"].isin([run for run, pairs in have.items() if pairs == want])]


def measure_study_sharpness(plan: StudyPlan) -> None:
    """sharpness.csv in every sweep's analysis folder (the finished runs of seed 0) and in
    the supervised folder (digits at several batch sizes), unless already measured. Runs
    that finished since the last measurement (a sweep continued, or stored runs trained on
    elsewhere) are measured and added; those measured before are kept, not measured again."""

    cfg = SharpnessConfig(**STUDY_SHARPNESS)
    for part in study_parts(plan):
        if part.kind != "sweep":
            continue
        path = part.analysis_dir / SHARPNESS_FILE
        finished = {p.name for p in plan_runs(part.spec) if p.seed == 0
                    and classify_run(p)[0] == "finished"}
        earlier = _earlier_sharpness(path, cfg)
        earlier = earlier[earlier["run"].isin(finished)]
        todo = finished - set(earlier["run"])
        if not todo:
            continue
        try:
            df = sweep_sharpness(part.out, cfg, seeds=[0], runs=todo)
        except ValueError:  # not in the results table as finished yet: measured next time
            continue
        df = pd.concat([d for d in (earlier, df) if len(d)], ignore_index=True).sort_values(
            ["rollout_batch_size", "run", "term", "repeat"], kind="stable")
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, df.to_csv(index=False))
    sup = supervised_dir(plan)
    if sup is not None and not (Path(plan.out) / "supervised" / SHARPNESS_FILE).exists():
        df = digits_sharpness(**DIGITS_SHARPNESS, base=plan.supervised)
        atomic_write_text(Path(plan.out) / "supervised" / SHARPNESS_FILE,
                          df.to_csv(index=False))
