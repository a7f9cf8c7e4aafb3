"""The probes behind ``rlscale advise``: B_simple from a short run, seconds per PPO iteration.

``noise_from_metrics`` reads a run's rows (ours, or stable-baselines3's progress.csv written
with ``rl.peers.sb3.NoiseScaleCallback``); ``run_probe`` trains a fresh short run measuring
B_simple every iteration; ``time_candidates`` reuses ``rlscale bench scaling``; ``advise``
puts them together within a time budget. See docs/advise.md.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from agents import PPOConfig
from rl.advise.calibration import (
    TERM,
    best_term,
    growth_exponents,
    growth_note,
    load_study,
    ratio_calibration,
)
from rl.advise.config import MIN_MEASUREMENTS, AdviseConfig
from rl.advise.predict import Advice, Candidate, NoiseScaleEstimate, advise_from
from rl.bench.scaling import ScalingBenchConfig, bench_scaling
from rl.measure.run_average import ratio_summary
from rl.measure.warmup import WARMUP_ITERATIONS, counted_measurements
from rl.runs.record import has_config, metrics_file
from rl.runs.storage import RunDir
from rl.train.config import TrainConfig
from rl.train.launch import train

__all__ = ["AdviseConfig", "MIN_MEASUREMENTS", "NoProbeData", "advise", "advise_run",
           "candidates_from", "load_run_metrics", "noise_from_metrics", "run_probe",
           "smooth_timings", "time_candidates", "time_shapes"]

SB3_COLUMNS = {"time/iterations": "iteration", "time/total_timesteps": "agent_steps",
               "rollout/ep_rew_mean": "return_recent"}
"""stable-baselines3 progress.csv columns and the names our metrics give them."""


class NoProbeData(ValueError):
    """A run with too few noise-scale measurements past the warm-up to advise from."""


# --------------------------------------------------------------------------------------
# B_simple from a run's rows
# --------------------------------------------------------------------------------------


def load_run_metrics(run_dir: str | os.PathLike[str]) -> pd.DataFrame:
    """A run's per-iteration rows: our metrics.jsonl, or SB3's progress.csv (columns renamed
    to ours: iteration, agent_steps, return_recent, rollout_batch_size).

    Raises:
        FileNotFoundError: if the folder has neither.
    """
    path = Path(run_dir)
    if metrics_file(path).is_file():
        return RunDir(path).load_metrics()
    if (path / "progress.csv").is_file():
        df = pd.read_csv(path / "progress.csv").rename(columns=SB3_COLUMNS)
        if "iteration" in df and "agent_steps" in df:
            df["rollout_batch_size"] = (df["agent_steps"] / df["iteration"]).round()
        return df
    raise FileNotFoundError(f"{path} has neither metrics.jsonl (rlscale train) nor "
                            "progress.csv (stable-baselines3's CSV logger with "
                            "rl.peers.sb3.NoiseScaleCallback): not a run directory")


def noise_from_metrics(metrics: pd.DataFrame, *, term: str = TERM, measurements: int = 30,
                       from_iteration: int = 0, source: str = "") -> NoiseScaleEstimate:
    """B_simple of ``term`` over the first ``measurements`` measurements past the warm-up
    (and at or after PPO iteration ``from_iteration``, the metrics' 1-based ``iteration``):
    mean tr(Sigma) / mean |G|^2 with its block-bootstrap 95% interval.

    Raises:
        NoProbeData: fewer than ``MIN_MEASUREMENTS`` such measurements.
    """
    m = counted_measurements(metrics, term)
    where = f"past the {WARMUP_ITERATIONS}-iteration warm-up"
    if from_iteration > 0 and "iteration" in m:
        m = m[m["iteration"] >= from_iteration]
        where += f" from iteration {from_iteration} on"
    if len(m) < MIN_MEASUREMENTS:
        raise NoProbeData(
            f"{source or 'the run'} has {len(m)} noise-scale measurement(s) of the {term} "
            f"loss {where}; advice needs at least "
            f"{MIN_MEASUREMENTS} (train with --gns-every 1 for {WARMUP_ITERATIONS + 5}+ PPO "
            "iterations)")
    m = m.iloc[:measurements]
    s = ratio_summary(m["g2"], m["trace_sigma"])
    if "rollout_batch_size" in metrics:
        batch = int(pd.to_numeric(metrics["rollout_batch_size"]).dropna().iloc[0])
    else:
        batch = 0
    ret = m["return_recent"].to_numpy(float) if "return_recent" in m else np.array([np.nan])
    if not (math.isfinite(s["b_simple"]) and s["b_simple"] > 0):
        raise NoProbeData(
            f"{source or 'the run'}: mean |G|^2 of the {term} loss over its first {len(m)} "
            "measurements past the warm-up is not above zero, so B_simple is unresolved; "
            "probe longer (--measurements) or with a larger batch")
    its = m["iteration"].to_numpy(float) if "iteration" in m else np.zeros(1)
    return NoiseScaleEstimate(term, s["b_simple"], s["b_simple_lo"], s["b_simple_hi"],
                              len(m), batch, float(ret[0]), float(ret[-1]), source,
                              int(its[0]), int(its[-1]))


# --------------------------------------------------------------------------------------
# The probes
# --------------------------------------------------------------------------------------


def default_probe_dir(env: str) -> Path:
    """runs/advise-<env>-<UTC time>, never an existing folder."""
    name = env.replace("/", "_").replace(":", "_")
    base = Path("runs") / f"advise-{name}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"
    path, k = base, 1
    while path.exists():
        path, k = Path(f"{base}-{k}"), k + 1
    return path


def run_probe(cfg: TrainConfig, ppo: PPOConfig, iterations: int, *, quiet: bool = True
              ) -> pd.DataFrame:
    """Train a fresh run of ``iterations`` PPO iterations measuring B_simple every one; its
    rows. Refuses an existing ``cfg.run_dir`` (it never writes into another run)."""
    path = Path(cfg.run_dir) if cfg.run_dir else default_probe_dir(cfg.env)
    if path.exists():
        raise FileExistsError(f"{path} exists: the probe writes only into a new directory; "
                              "choose another --run-dir")
    cfg = dataclasses.replace(cfg, run_dir=str(path), gns_every=1, checkpoint_every=10**9,
                              total_agent_steps=iterations * cfg.rollout_batch_size)
    rows: list[dict] = []
    train(cfg, ppo, on_iteration=rows.append, quiet=quiet)
    return pd.DataFrame(rows)


def time_shapes(env: str, counts: Sequence[int], num_steps: int, ppo: PPOConfig, *,
                threads: int = 0, seed: int = 0, progress: Callable[[], None] | None = None,
                deadline: float | None = None, known_cost: tuple[int, float] | None = None
                ) -> tuple[dict[int, float], list[int]]:
    """Measured seconds per PPO iteration at each num_envs x ``num_steps`` with these PPO
    settings: ``rlscale bench scaling`` (2 timed iterations after a warm-up, 1 repeat, no
    noise-scale measurement), smallest first. With a ``deadline`` (``time.perf_counter``
    time), a count whose timing would likely end after it is skipped, and every larger one:
    the guess is the last timing's wall time scaled by the count (``known_cost``: (num_envs,
    wall seconds) of an earlier timing, for the first guess). Returns ({num_envs: seconds},
    skipped counts)."""
    timed: dict[int, float] = {}
    skipped: list[int] = []
    last = known_cost
    for n in sorted(set(counts)):
        if deadline is not None and last is not None and (
                skipped or time.perf_counter() + last[1] * n / last[0] > deadline):
            skipped.append(n)
            continue
        bench = ScalingBenchConfig(envs=env, num_envs=str(n), num_steps=num_steps,
                                   iterations=2, repeats=1, threads=threads, seed=seed)
        began = time.perf_counter()
        row = bench_scaling(bench, progress, ppo=ppo).iloc[0]
        last = (n, time.perf_counter() - began)
        timed[n] = float(row["batch"]) / float(row["e2e_sps"])
    return timed, skipped


def candidates_from(timed: dict[int, float], num_steps: int) -> list[Candidate]:
    """``Candidate`` rows from measured seconds per iteration, smoothed (``smooth_timings``)."""
    counts = sorted(timed)
    sizes = np.array([n * num_steps for n in counts], dtype=float)
    measured = np.array([timed[n] for n in counts])
    fitted = smooth_timings(sizes, measured)
    return [Candidate(n, num_steps, float(f), float(m))
            for n, f, m in zip(counts, fitted, measured, strict=True)]


def time_candidates(env: str, counts: Sequence[int], num_steps: int, ppo: PPOConfig, *,
                    threads: int = 0, seed: int = 0, progress: Callable[[], None] | None = None
                    ) -> list[Candidate]:
    """Seconds per PPO iteration at every count (``time_shapes``, no deadline), smoothed."""
    timed, _ = time_shapes(env, counts, num_steps, ppo, threads=threads, seed=seed,
                           progress=progress)
    return candidates_from(timed, num_steps)


def smooth_timings(batch_sizes, seconds) -> np.ndarray:
    """Seconds per iteration from the line a + b B (least squares, a and b >= 0) through the
    timed candidates: one timing each on a busy machine scatters more than the line does.
    Fewer than 3 timings, or a line that does not fit (a or b < 0): the timings as they are."""
    b = np.asarray(batch_sizes, dtype=float)
    t = np.asarray(seconds, dtype=float)
    if len(b) < 3 or len(set(b.tolist())) < 2:
        return t
    slope, intercept = np.polyfit(b, t, 1)
    if slope < 0 or intercept < 0:
        return t
    return intercept + slope * b


def _notes(study: pd.DataFrame, env: str, noise: NoiseScaleEstimate, term: str,
           skipped: Sequence[int] = ()) -> tuple[str, ...]:
    notes = [growth_note(growth_exponents(study, term), env)]
    if skipped:
        notes.append(f"Not timed within the budget: num_envs {', '.join(map(str, skipped))} "
                     "(raise --budget to include them).")
    if math.isinf(noise.hi):
        notes.append("B_simple's interval is open above (mean |G|^2 not resolved above zero "
                     "in some bootstrap replicates): the band's upper end is open; probe "
                     "longer for a closed one.")
    return tuple(notes)


def advise_run(run_dir: str | os.PathLike[str], cfg: AdviseConfig,
               progress: Callable[[], None] | None = None) -> Advice:
    """Advice from a run that measured B_simple (ours or SB3's): its first
    ``cfg.measurements`` measurements past the warm-up, the throughput probe of
    ``cfg.env`` at ``cfg.candidates`` x the run's num_steps within ``cfg.budget_s``."""
    start = time.perf_counter()
    cfg.validate()
    study = load_study(cfg.study)
    term = cfg.term or best_term(study)
    metrics = load_run_metrics(run_dir)
    noise = noise_from_metrics(metrics, term=term, measurements=cfg.measurements,
                               from_iteration=cfg.from_iteration, source=str(run_dir))
    config = RunDir(run_dir).load_config() if has_config(run_dir) else {}
    run_cfg = config.get("train", {})
    cfg = dataclasses.replace(cfg, env=run_cfg.get("env", cfg.env),
                              num_steps=cfg.num_steps or run_cfg.get("num_steps"))
    cfg.validate()
    calibration = ratio_calibration(study, term, source=str(cfg.study or
                                                           "reference/study-protocol/results.csv"))
    train_cfg, ppo = cfg.train_configs()
    if isinstance(config.get("ppo"), dict):  # time the run's own PPO settings
        known = {f.name for f in dataclasses.fields(PPOConfig)}
        ppo = PPOConfig(**{k: v for k, v in config["ppo"].items() if k in known})
    counts = set(cfg.candidate_envs())
    if noise.rollout_batch_size and noise.rollout_batch_size % train_cfg.num_steps == 0:
        counts.add(noise.rollout_batch_size // train_cfg.num_steps)  # the run's own shape
    timed, skipped = time_shapes(cfg.env, sorted(counts), train_cfg.num_steps, ppo,
                                 threads=cfg.threads, seed=cfg.seed, progress=progress,
                                 deadline=start + cfg.budget_s)
    return advise_from(noise, calibration, candidates_from(timed, train_cfg.num_steps),
                       tolerance=cfg.tolerance, band_sd=cfg.band_sd,
                       notes=_notes(study, cfg.env, noise, term, skipped))


def advise(cfg: AdviseConfig, *, quiet: bool = True,
           progress: Callable[[], None] | None = None) -> Advice:
    """The whole advice for ``cfg.env`` within ``cfg.budget_s``: the throughput probe (the
    probe's own shape, then the candidates smallest first while the budget keeps room for
    the probe run), then a fresh probe run (``run_probe``) of the warm-up plus
    ``cfg.measurements`` iterations, cut short to fit what is left.

    Raises:
        ValueError: a bad option, or a budget too small for the warm-up plus
            ``MIN_MEASUREMENTS`` probe iterations after the throughput probe.
    """
    cfg.validate()
    start = time.perf_counter()
    study = load_study(cfg.study)  # fail before any training
    term = cfg.term or best_term(study)
    train_cfg, ppo = cfg.train_configs()
    if cfg.run_dir is not None and Path(cfg.run_dir).exists():
        raise FileExistsError(f"{cfg.run_dir} exists: the probe writes only into a new "
                              "directory; choose another --run-dir")
    # The probe's own shape first: its timing sizes the probe run, which the budget keeps
    # room for; the other candidates are timed, smallest first, in what is left.
    timed, _ = time_shapes(cfg.env, [train_cfg.num_envs], train_cfg.num_steps, ppo,
                           threads=cfg.threads, seed=cfg.seed, progress=progress)
    first = (train_cfg.num_envs, time.perf_counter() - start)
    per_iter = 1.4 * timed[train_cfg.num_envs]  # measuring B_simple costs about a third more
    wanted = WARMUP_ITERATIONS + cfg.measurements
    least = WARMUP_ITERATIONS + MIN_MEASUREMENTS
    reserve = per_iter * (wanted + 2)
    deadline = start + max(cfg.budget_s - reserve, 0.0)
    more, skipped = time_shapes(cfg.env, [n for n in cfg.candidate_envs() if n not in timed],
                                train_cfg.num_steps, ppo, threads=cfg.threads, seed=cfg.seed,
                                progress=progress, deadline=deadline, known_cost=first)
    timed.update(more)
    spent = time.perf_counter() - start
    left = cfg.budget_s - spent
    affordable = int(left / per_iter) - 2
    if affordable < least:
        raise ValueError(
            f"--budget-s {cfg.budget_s:g} is too small: after the throughput probe "
            f"({spent:.0f} s) it leaves {max(left, 0):.0f} s, and the probe run needs {least} "
            f"PPO iterations of about {per_iter:.2g} s each here; give at least "
            f"{spent + per_iter * (least + 2):.0f} s")
    iterations = min(wanted, affordable)
    probe_dir = str(cfg.run_dir or default_probe_dir(cfg.env))
    train_cfg = dataclasses.replace(train_cfg, run_dir=probe_dir, torch_threads=cfg.threads)
    rows = run_probe(train_cfg, ppo, iterations, quiet=quiet)
    noise = noise_from_metrics(rows, term=term, measurements=cfg.measurements,
                               source=f"probe run {probe_dir}")
    calibration = ratio_calibration(study, term, source=str(cfg.study or
                                                           "reference/study-protocol/results.csv"))
    return advise_from(noise, calibration, candidates_from(timed, train_cfg.num_steps),
                       reference_batch_size=train_cfg.rollout_batch_size,
                       tolerance=cfg.tolerance, band_sd=cfg.band_sd,
                       notes=_notes(study, cfg.env, noise, term, skipped))
