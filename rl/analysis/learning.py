"""Learning parity: our PPO against stable-baselines3's, same game, settings and budget.

``rlscale bench learning`` trains both implementations (N seeds each) into resumable run
directories ``<runs>/<impl>-seed<k>`` and compares the full-game unclipped return,
smoothed over the last ``return_window`` games, against agent steps: the final smoothed
return and the area under the curve, each with a t interval over seeds, and a Welch test.
Protocol and what still differs between the two: docs/learning-parity.md.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections import deque
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy import stats

import envs
from agents import PPOConfig
from rl.analysis.configs import IMPLS, LearningBenchConfig
from rl.peers.sb3 import make_sb3_env, sb3_ppo_model
from rl.runs.files import save_figure
from rl.runs.metrics import load_metrics, log_scalars
from rl.runs.record import has_config, has_metrics, peek_status
from rl.runs.storage import RunDir
from rl.train.config import RESUMABLE_CHANGES, TrainConfig, config_dict, resolve_device
from rl.train.launch import train

SB3_CHECKPOINT_KEYS = ("policy", "optimizer", "agent_steps", "n_updates", "episodes_total",
                       "recent_returns")


# --------------------------------------------------------------------------- SB3 runs


def train_sb3_run(cfg: TrainConfig, ppo: PPOConfig, *, align_value_loss: bool = True) -> Path:
    """Train SB3's PPO into a run directory laid out like ours (config, metrics, checkpoints).

    Each metrics row is one PPO iteration: agent_steps, frames, the games that ended in it
    (SB3's Monitor, below its Atari wrappers: whole games, unclipped) and the smoothed
    return over the last ``return_window`` games. A checkpoint (policy and optimizer state,
    counters, recent returns) is taken every ``checkpoint_every`` iterations; ``cfg.resume``
    continues from it with environments reseeded from the seed and the iteration.
    """
    from stable_baselines3.common.callbacks import BaseCallback  # lazy: slow import, SB3 runs only

    cfg.validate()
    ppo.validate(cfg.rollout_batch_size)
    if cfg.target_return is not None:
        raise ValueError("train_sb3_run runs the whole budget; leave target_return unset")
    device = resolve_device(cfg.device)
    config = {"impl": "sb3", "align_value_loss": align_value_loss,
              "train": config_dict(cfg), "ppo": dataclasses.asdict(ppo)}
    run = RunDir.open(cfg.resolved_run_dir(), config, resume=cfg.resume,
                      may_differ=RESUMABLE_CHANGES)
    threads = torch.get_num_threads()
    if cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)
    try:
        checkpoint = run.load_latest_checkpoint(map_location=device, required=SB3_CHECKPOINT_KEYS) \
            if cfg.resume else None
        if cfg.resume and checkpoint is None:
            run.restart()  # killed before its first checkpoint: start over, drop its rows
        state, iteration = checkpoint if checkpoint is not None else ({}, 0)
        run.truncate_metrics(after_iteration=iteration)
        env_seed = cfg.seed if iteration == 0 else (cfg.seed + 7919 * iteration) % 2**30
        venv = make_sb3_env(dataclasses.replace(cfg, seed=env_seed))
        # align_value_loss: SB3 weights its value term twice as much as ours (rl.peers.sb3).
        aligned = {"vf_coef": ppo.vf_coef / 2} if align_value_loss else {}
        model = sb3_ppo_model(venv, cfg, ppo, seed=env_seed, device=device, **aligned)
        recent: deque[float] = deque(state.get("recent_returns", []), maxlen=cfg.return_window)
        counters = {"iteration": iteration, "episodes_total": state.get("episodes_total", 0),
                    "saved": iteration}
        if checkpoint is not None:
            model.policy.load_state_dict(state["policy"])
            model.policy.optimizer.load_state_dict(state["optimizer"])
            model.num_timesteps = state["agent_steps"]
            model._n_updates = state["n_updates"]
        batch = cfg.rollout_batch_size
        frames_per_step = 4 if envs.resolve(cfg.env).kind == "atari" else 1
        run.mark_running(iteration, iteration * batch, f"sb3 device={device}")
        writer = run.tensorboard_writer(purge_step=iteration * batch + 1 if checkpoint else None)

        def save() -> None:
            run.save_checkpoint({
                "policy": model.policy.state_dict(),
                "optimizer": model.policy.optimizer.state_dict(),
                "agent_steps": int(model.num_timesteps), "n_updates": int(model._n_updates),
                "episodes_total": counters["episodes_total"], "recent_returns": list(recent),
            }, counters["iteration"])
            counters["saved"] = counters["iteration"]
            run.mark_running(counters["iteration"], int(model.num_timesteps))

        start = time.perf_counter()

        class Harness(BaseCallback):
            """Rows at each rollout's end; checkpoints once the update after it is done."""

            def _on_rollout_start(self) -> None:
                if (counters["iteration"] > counters["saved"]
                        and counters["iteration"] % cfg.checkpoint_every == 0):
                    save()  # the update of the last iteration is done: a consistent state
                self.games: list[tuple[float, float]] = []
                self.t0 = time.perf_counter()

            def _on_step(self) -> bool:
                for info in self.locals["infos"]:
                    if "episode" in info:  # Monitor: one finished game, all lives, unclipped
                        # Monitor sits below the frame skip: its lengths count frames.
                        self.games.append((float(info["episode"]["r"]),
                                           info["episode"]["l"] / frames_per_step))
                return True

            def _on_rollout_end(self) -> None:
                counters["iteration"] += 1
                counters["episodes_total"] += len(self.games)
                recent.extend(r for r, _ in self.games)
                steps = counters["iteration"] * batch
                row = {
                    "iteration": counters["iteration"], "agent_steps": steps,
                    "frames": steps * frames_per_step, "rollout_batch_size": batch,
                    "episodes": len(self.games), "episodes_total": counters["episodes_total"],
                    "return_mean": (float(np.mean([r for r, _ in self.games]))
                                    if self.games else math.nan),
                    "return_recent": float(np.mean(recent)) if recent else math.nan,
                    "length_mean": (float(np.mean([n for _, n in self.games]))
                                    if self.games else math.nan),
                    "wall_time_s": time.perf_counter() - start,
                    "rollout_s": time.perf_counter() - self.t0,
                }
                run.append_metrics(row)
                log_scalars(writer, row, steps)

        remaining = cfg.total_agent_steps // batch * batch - iteration * batch
        if remaining > 0:
            model.learn(total_timesteps=remaining, callback=Harness(),
                        reset_num_timesteps=checkpoint is None)
        if counters["iteration"] > counters["saved"]:
            save()
        venv.close()
        run.mark_finished(counters["iteration"], counters["iteration"] * batch, "budget spent")
    except BaseException as exc:
        run.mark_failed(f"{type(exc).__name__}: {exc}")
        raise
    finally:
        if cfg.torch_threads:
            torch.set_num_threads(threads)
        run.close()
    return run.path


# --------------------------------------------------------------------------- the bench


def run_one(cfg: LearningBenchConfig, impl: str, seed: int) -> str:
    """Train one (impl, seed) run unless it is finished; returns what was done."""
    tc = cfg.train_config(impl, seed)
    run_dir = tc.resolved_run_dir()
    status = peek_status(run_dir) if has_config(run_dir) else None
    if status is not None and status.finished:
        return "finished before"
    tc.resume = has_config(run_dir)
    ppo = cfg.ppo_config()
    if impl == "ours":
        train(tc, ppo)
    else:
        train_sb3_run(tc, ppo, align_value_loss=cfg.align_value_loss)
    return "resumed" if tc.resume else "trained"


def load_runs(runs_dir: Path) -> dict[tuple[str, int], pd.DataFrame]:
    """Metrics of every ``<impl>-seed<k>`` run directory under ``runs_dir``."""
    out = {}
    for path in sorted(runs_dir.glob("*-seed*")):
        impl, _, seed = path.name.rpartition("-seed")
        if impl in IMPLS and seed.isdigit() and has_metrics(path):
            df = load_metrics(path)
            if len(df):
                out[(impl, int(seed))] = df
    return out


def run_measures(df: pd.DataFrame, span: int) -> dict[str, float]:
    """Final smoothed return and area under the curve over agent steps [0, span].

    ``auc_mean_return`` is the area under the smoothed-return curve divided by the span it
    covers (the curve's mean over agent steps; trapezoid rule between iterations), so it is
    in units of return. Iterations before the first finished game (no smoothed return yet)
    are left out of the area.
    """
    df = df[df["agent_steps"] <= span]
    curve = df[np.isfinite(df["return_recent"].astype(float))]
    if len(curve) < 2:
        return {"final_return": math.nan, "auc_mean_return": math.nan, "games": math.nan}
    x = curve["agent_steps"].to_numpy(float)
    y = curve["return_recent"].to_numpy(float)
    area = float(np.sum((y[1:] + y[:-1]) / 2 * np.diff(x)))
    return {"final_return": float(y[-1]), "auc_mean_return": area / float(x[-1] - x[0]),
            "games": float(df["episodes_total"].iloc[-1])}


MEASURES = ("final_return", "auc_mean_return")


def mean_interval(values, ci: float) -> tuple[float, float, float]:
    """(mean, lo, hi): Student-t interval of the mean over the values (one per seed).

    Exact for normal data at any number of seeds; a percentile bootstrap is not used because
    with few seeds it undercovers badly (with 2 seeds its interval is the range of the two,
    which holds the mean only half the time). Fewer than 2 values: (mean, nan, nan).
    """
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return math.nan, math.nan, math.nan
    if v.size < 2:
        return float(v.mean()), math.nan, math.nan
    mean = float(v.mean())
    if not v.std() > 0:  # every seed the same: scipy's interval would be nan, not a point
        return mean, mean, mean
    lo, hi = stats.t.interval(ci, v.size - 1, loc=mean, scale=stats.sem(v))
    return mean, float(lo), float(hi)


def welch_difference(a, b, ci: float) -> dict[str, float]:
    """Welch's two-sample t-test of mean(b) - mean(a): the difference, its interval, p
    (``scipy.stats.ttest_ind`` with ``equal_var=False``)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    diff = float(b.mean() - a.mean())
    if min(a.size, b.size) < 2:  # no spread to test against
        return {"difference": diff, "lo": math.nan, "hi": math.nan, "p_value": math.nan}
    if a.var() == 0.0 and b.var() == 0.0:  # no spread at all: any difference is exact
        return {"difference": diff, "lo": diff, "hi": diff, "p_value": float(diff == 0.0)}
    test = stats.ttest_ind(b, a, equal_var=False)
    lo, hi = test.confidence_interval(confidence_level=ci)
    return {"difference": diff, "lo": float(lo), "hi": float(hi), "p_value": float(test.pvalue)}


def parity_table(runs: dict[tuple[str, int], pd.DataFrame], ci: float = 0.95,
                 span: int = 0) -> tuple[pd.DataFrame, dict]:
    """Per implementation: seeds, final smoothed return and AUC with t intervals over seeds.

    Runs are compared over the longest agent-step span every run has reached (the budget,
    once all are finished), or over the first ``span`` agent steps with only the runs that
    reached it. The verdict is Welch's t-test of each measure at level (1 - ci) / 2
    (Bonferroni over the two measures): ``differ`` if either rejects, ``no difference
    detected`` if neither does (with few seeds the test has little power: read the
    difference intervals), ``undecided`` below 2 seeds per implementation. Returns (table,
    verdict) where verdict has ``span``, ``verdict``, ``reason``, ``tests`` (per measure:
    difference sb3 - ours, its ci interval, p) and ``left_out`` (runs short of ``span``).
    """
    if not runs:
        raise ValueError("no runs to compare: train some first (rlscale bench learning)")
    reached = {key: int(df["agent_steps"].max()) for key, df in runs.items()}
    left_out = sorted(key for key, steps in reached.items() if steps < span)
    if span and len(left_out) == len(runs):
        raise ValueError(f"no run reached {span:,} agent steps (the longest reached "
                         f"{max(reached.values()):,}); lower --span or train longer")
    runs = {key: df for key, df in runs.items() if key not in left_out}
    span = span or min(reached[key] for key in runs)
    rows, per_seed = [], {}
    for impl in IMPLS:
        measures = [run_measures(df, span) for (i, _), df in sorted(runs.items()) if i == impl]
        if not measures:
            continue
        row = {"impl": impl, "seeds": len(measures), "agent_steps": span}
        for key in MEASURES:
            per_seed[(impl, key)] = [m[key] for m in measures]
            mean, lo, hi = mean_interval(per_seed[(impl, key)], ci)
            row.update({key: mean, f"{key}_lo": lo, f"{key}_hi": hi})
        row["games_per_run"] = float(np.mean([m["games"] for m in measures]))
        rows.append(row)
    table = pd.DataFrame(rows)
    impls = list(table["impl"])
    tests: dict[str, dict[str, float]] = {}
    if impls != list(IMPLS):
        verdict = "undecided"
        reason = f"only {', '.join(impls)} has runs; both implementations are needed"
    elif table["seeds"].min() < 2:
        verdict = "undecided"
        reason = ("the test needs >= 2 seeds per implementation (have "
                  + ", ".join(f"{r.impl}: {r.seeds}" for r in table.itertuples()) + ")")
    else:
        level = (1.0 - ci) / len(MEASURES)
        tests = {key: welch_difference(per_seed[("ours", key)], per_seed[("sb3", key)], ci)
                 for key in MEASURES}
        verdict = ("differ" if any(t["p_value"] < level for t in tests.values())
                   else "no difference detected")
        reason = "; ".join(
            f"{key}: sb3 - ours = {t['difference']:.2f} [{t['lo']:.2f}, {t['hi']:.2f}], "
            f"Welch p = {t['p_value']:.3f}" for key, t in tests.items()
        ) + f" (differ: p < {level:g} for either)"
    return table, {"span": span, "verdict": verdict, "reason": reason, "tests": tests,
                   "left_out": [f"{impl}-seed{k}" for impl, k in left_out]}


CURVE_COLUMNS = ("impl", "seed", "iteration", "agent_steps", "episodes", "return_mean",
                 "return_recent")
"""Columns of ``learning_curves`` (one row per run and PPO iteration)."""


def learning_curves(runs: dict[tuple[str, int], pd.DataFrame]) -> pd.DataFrame:
    """Every run's per-iteration curve in one table (``CURVE_COLUMNS``), for curves.csv."""
    parts = []
    for (impl, seed), df in sorted(runs.items()):
        part = df[[c for c in CURVE_COLUMNS[2:] if c in df.columns]].copy()
        part.insert(0, "seed", seed)
        part.insert(0, "impl", impl)
        parts.append(part)
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(
        columns=list(CURVE_COLUMNS))


def plot_learning(runs: dict[tuple[str, int], pd.DataFrame], path: Path, title: str) -> Path:
    """Smoothed full-game return against agent steps (frames on the top axis), per run."""
    import matplotlib  # lazy: slow import, figures only

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # lazy: slow import, figures only

    colors = {"ours": "tab:blue", "sb3": "tab:orange"}
    fig, ax = plt.subplots(figsize=(7, 4.2))
    labelled = set()
    frames_per_step = 1.0
    for (impl, _seed), df in sorted(runs.items()):
        ax.plot(df["agent_steps"], df["return_recent"], color=colors[impl], lw=1.2,
                alpha=0.85, label=None if impl in labelled else impl)
        labelled.add(impl)
        frames_per_step = float(df["frames"].iloc[-1] / df["agent_steps"].iloc[-1])
    ax.set_xlabel("agent steps")
    ax.set_ylabel("return (full games, unclipped; mean of last games)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left")
    top = ax.secondary_xaxis("top", functions=(lambda x: x * frames_per_step,
                                               lambda x: x / frames_per_step))
    top.set_xlabel("frames")
    fig.tight_layout()
    save_figure(fig, path, dpi=100)
    plt.close(fig)
    return path


def bench_learning(cfg: LearningBenchConfig, progress=None) -> pd.DataFrame:
    """Train what is missing (if ``cfg.train``), then compare; writes learning.png and
    curves.csv (every run's per-iteration curve) into the runs folder too."""
    cfg.validate()
    if cfg.train:
        for seed in cfg.seed_list():
            for impl in cfg.impl_list():
                run_one(cfg, impl, seed)
                if progress is not None:
                    progress()
    runs = load_runs(cfg.runs_dir())
    table, verdict = parity_table(runs, cfg.ci, span=cfg.span)
    table["verdict"] = verdict["verdict"]
    short = (f" (left out, short of it: {', '.join(verdict['left_out'])})"
             if verdict["left_out"] else "")
    table.attrs["note"] = (f"verdict: {verdict['verdict']} ({verdict['reason']}); compared "
                           f"over the first {verdict['span']:,} agent steps{short}; returns "
                           "are full games, unclipped, smoothed over the last "
                           f"{cfg.return_window} games; plot: {cfg.runs_dir() / 'learning.png'}")
    learning_curves(runs).to_csv(cfg.runs_dir() / "curves.csv", index=False)
    plot_learning(runs, cfg.runs_dir() / "learning.png",
                  f"{cfg.env}: ours vs SB3 PPO, {cfg.num_envs}x{cfg.num_steps}, "
                  f"compared over {verdict['span']:,} agent steps")
    return table
