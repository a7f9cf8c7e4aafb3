"""Adaptive rollout batch size: the batch grows with the measured gradient noise scale.

McCandlish et al. (2018, arXiv:1812.06162, Appendix D) find that when the noise scale
B_noise(s) changes during training, a batch size proportional to its square root,
B(s) ~ sqrt(B_noise(s)), is the good schedule. ``--batch-schedule adaptive`` applies that
rule to the rollout batch size of PPO.

The rule (``BatchSchedule``)
----------------------------
* The noise scale is the trainer's own measurement (``--gns-every``): the grouped estimator
  of ``rl.gns_ppo`` in one process, the free data-parallel estimate of ``rl.distributed``
  with ``--nproc N``. The schedule keeps its own smoother for the term it follows
  (``--batch-term``, default ``total``, the loss the optimizer steps on): bias-corrected EMAs
  of g2 and tr(Sigma) with ``--batch-beta`` (default 0.8, about five measurements: faster
  than the reporting trackers, which average over the whole run), and
  B_simple = EMA(tr Sigma) / EMA(g2), unresolved (no change) while EMA(g2) <= 0.
* Target: B* = c sqrt(B_simple). The constant c is ``--batch-scale`` if given; by default it
  is calibrated once, at the first resolved estimate after ``--batch-warmup`` measurements,
  so that B* equals the batch the run started with: the batch then grows (or shrinks) by
  the square root of the noise scale's growth since then.
* B* is clipped to [B_start, ``--batch-max``] (agent steps of the whole rollout, all ranks;
  default 16 x B_start): the starting batch num_envs x num_steps (x ranks) is the minimum,
  so start a run at the smallest batch it may use.
* The varied factor (``--batch-axis``: num_envs, the default, or num_steps) moves in
  multiples of its starting value, so the rollout batch is k x the starting batch with k on
  the ladder 1, 2, 3, 4, 6, 8, 12, 16, 24, ... (steps of x1.33 to x1.5; every such batch
  splits into the same minibatches and noise-scale groups as the first). The level nearest
  to B* in log scale is taken when it is closer to B* than the current level by more than
  10% (hysteresis against flapping).
* Changes happen only at iteration boundaries, right after a measured iteration. Along
  num_envs the environments come in chunks of the starting num_envs (``EnvChunks``): level k
  steps the first k chunks; growing adds chunks (created the first time, seeded as one
  vector env of k x num_envs would be), shrinking pauses the last ones, whose games resume
  where they stopped if the batch grows again. No game is abandoned, so ``return_recent``
  is not biased toward short games. Along num_steps the rollout buffer is reallocated.

Learning rate (``--batch-lr-rule``): ``constant`` (default: the lr is kept), ``sqrt``
(lr = lr0 sqrt(B / B_start)) or ``linear`` (lr = lr0 B / B_start), on top of the usual
linear annealing, which for an adaptive run goes by the fraction of the agent-step budget
spent rather than by iterations. The budget ends the run when the next rollout would not fit
in it.

Metrics columns (every row): ``rollout_batch_size`` (agent steps this iteration, all ranks),
``num_envs``, ``num_steps`` (per rank), ``learning_rate``, ``adaptive/b_simple`` (the
smoothed noise scale the schedule follows, NaN until resolved), ``adaptive/target_batch_size``
(B* before rounding, NaN until calibrated), ``adaptive/scale`` (c).

``plot_schedule`` draws batch size and B_simple against iteration (``batch_schedule.png`` in
the run directory, written at the end of an adaptive run); ``compare_with_fixed`` (CLI:
``rlscale compare-adaptive SWEEP_DIR RUN_DIR ...``) reports PPO iterations and agent steps
to a target for adaptive runs next to the best fixed batch of a sweep.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from rl.gns import GNSTracker

__all__ = [
    "AdaptiveConfig",
    "BatchSchedule",
    "EnvChunks",
    "compare_with_fixed",
    "plot_schedule",
    "steps_to_target",
]

PLOT_FILE = "batch_schedule.png"
_HYSTERESIS = math.log(1.1)


@dataclass
class AdaptiveConfig:
    """The rollout batch-size schedule (rl/adaptive.py)."""

    batch_schedule: Literal["fixed", "adaptive"] = "fixed"
    """fixed, or adaptive: B grows as sqrt(measured B_simple) (needs --gns-every > 0)."""
    batch_axis: Literal["num_envs", "num_steps"] = "num_envs"
    """Adaptive: the factor of B = num_envs x num_steps that changes (in multiples of its start)."""
    batch_max: int | None = None
    """Adaptive: largest rollout batch in agent steps, all ranks (default: 16 x the start; the
    start, num_envs x num_steps, is the smallest)."""
    batch_scale: float | None = None
    """Adaptive: c in B = c sqrt(B_simple) (default: calibrated so B starts where it is)."""
    batch_lr_rule: Literal["constant", "sqrt", "linear"] = "constant"
    """Adaptive: learning rate x (B / B_start) ** p with p = 0, 1/2, 1."""
    batch_term: Literal["total", "policy", "value"] = "total"
    """Adaptive: the loss term whose noise scale the batch follows."""
    batch_beta: float = 0.8
    """Adaptive: EMA factor of the schedule's noise-scale smoother (per measurement)."""
    batch_warmup: int = 3
    """Adaptive: measurements before the first change (and the calibration of c)."""

    @property
    def adaptive(self) -> bool:
        return self.batch_schedule == "adaptive"

    def validate(self, gns_every: int | None = None) -> None:
        if self.batch_schedule not in ("fixed", "adaptive"):
            raise ValueError(f"batch_schedule must be fixed or adaptive, got "
                             f"{self.batch_schedule!r}")
        if not self.adaptive:
            return
        if gns_every is not None and gns_every < 1:
            raise ValueError("--batch-schedule adaptive follows the measured noise scale: "
                             "set --gns-every to a positive number of iterations (e.g. 2)")
        v = self.batch_max
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise ValueError(f"batch_max must be a positive integer or None, got {v!r}")
        if self.batch_scale is not None and not (self.batch_scale > 0
                                                 and math.isfinite(self.batch_scale)):
            raise ValueError(f"batch_scale must be > 0, got {self.batch_scale}")
        if not 0.0 <= self.batch_beta < 1.0:
            raise ValueError(f"batch_beta must be in [0, 1), got {self.batch_beta}")
        if isinstance(self.batch_warmup, bool) or not isinstance(self.batch_warmup, int) \
                or self.batch_warmup < 1:
            raise ValueError(f"batch_warmup must be an integer >= 1, got {self.batch_warmup!r}")
        for name, choices in (("batch_axis", ("num_envs", "num_steps")),
                              ("batch_lr_rule", ("constant", "sqrt", "linear")),
                              ("batch_term", ("total", "policy", "value"))):
            if getattr(self, name) not in choices:
                raise ValueError(f"{name} must be one of {choices}, got {getattr(self, name)!r}")


_LR_POWER = {"constant": 0.0, "sqrt": 0.5, "linear": 1.0}


def ladder(top: int) -> list[int]:
    """Batch multiples 1, 2, 3, 4, 6, 8, 12, 16, 24, ... up to ``top``."""
    out, k = [1], 2
    while k <= top:
        out += [k] + ([k * 3 // 2] if k * 3 // 2 <= top else [])
        k *= 2
    return out


class BatchSchedule:
    """The adaptive schedule's state: current rollout shape, smoother, calibration.

    ``shape`` is (num_envs, num_steps) per rank; the rollout batch is
    ``world_size x num_envs x num_steps``. Call ``observe(g2, trace_sigma)`` after every
    measured iteration; it returns the new shape when the batch should change (applied from
    the next iteration), else None.
    """

    def __init__(self, cfg: AdaptiveConfig, num_envs: int, num_steps: int,
                 world_size: int = 1):
        cfg.validate()
        self.cfg = cfg
        self.world_size = int(world_size)
        self.start_shape = (int(num_envs), int(num_steps))
        self.shape = self.start_shape
        self.start_batch = self.world_size * num_envs * num_steps
        self.lo = self.start_batch
        self.hi = cfg.batch_max or 16 * self.start_batch
        if self.hi < self.start_batch:
            raise ValueError(
                f"batch_max={self.hi} is below the starting rollout batch {self.start_batch} "
                "(agent steps, all ranks; the start is the smallest batch): raise --batch-max or "
                "start from a smaller num_envs / num_steps"
            )
        self.levels = ladder(self.hi // self.start_batch)
        self.tracker = GNSTracker(beta=cfg.batch_beta, window=1)
        self.scale = cfg.batch_scale
        self.target = math.nan
        self.changes = 0

    # --- reading -----------------------------------------------------------------------------

    @property
    def batch_size(self) -> int:
        return self.world_size * self.shape[0] * self.shape[1]

    @property
    def level(self) -> int:
        """k: the batch is k x the starting batch."""
        return self.batch_size // self.start_batch

    def shape_at(self, level: int) -> tuple[int, int]:
        e, t = self.start_shape
        return (level * e, t) if self.cfg.batch_axis == "num_envs" else (e, level * t)

    @property
    def b_simple(self) -> float:
        return self.tracker.ema_b_simple

    def lr_factor(self) -> float:
        return (self.batch_size / self.start_batch) ** _LR_POWER[self.cfg.batch_lr_rule]

    def learning_rate(self, lr0: float, anneal: bool, agent_steps: int, total: int) -> float:
        """lr0 x (1 - agent_steps / total if annealed) x (B / B_start) ** p."""
        frac = 1.0 - agent_steps / total if anneal else 1.0
        return lr0 * frac * self.lr_factor()

    def columns(self) -> dict[str, float]:
        return {"adaptive/b_simple": self.b_simple, "adaptive/target_batch_size": self.target,
                "adaptive/scale": math.nan if self.scale is None else float(self.scale)}

    # --- the rule ------------------------------------------------------------------------------

    def observe(self, g2: float, trace_sigma: float) -> tuple[int, int] | None:
        """Feed one measurement; the new (num_envs, num_steps) if the batch changes, else None."""
        if not (math.isfinite(g2) and math.isfinite(trace_sigma)):
            return None
        self.tracker.update(g2, trace_sigma)
        noise = self.b_simple
        if self.tracker.count < self.cfg.batch_warmup or not (noise > 0):
            return None
        if self.scale is None:  # calibrate once: B* = the current batch at this noise scale
            self.scale = self.batch_size / math.sqrt(noise)
        self.target = self.scale * math.sqrt(noise)
        wanted = min(max(self.target, self.lo), self.hi)
        best = min(self.levels, key=lambda k: abs(math.log(k * self.start_batch / wanted)))
        current = abs(math.log(self.batch_size / wanted))
        if best == self.level or abs(math.log(best * self.start_batch / wanted)) \
                > current - _HYSTERESIS:
            return None
        self.shape = self.shape_at(best)
        self.changes += 1
        return self.shape

    # --- checkpoint ----------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {"shape": list(self.shape), "start_shape": list(self.start_shape),
                "scale": self.scale, "target": self.target, "changes": self.changes,
                "tracker": self.tracker.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if tuple(state["start_shape"]) != self.start_shape:
            raise ValueError(f"the checkpoint's schedule started at {state['start_shape']}, "
                             f"this run at {list(self.start_shape)}")
        self.shape = tuple(int(x) for x in state["shape"])
        self.scale = state["scale"]
        self.target = float(state["target"])
        self.changes = int(state["changes"])
        self.tracker.load_state_dict(state["tracker"])


# --------------------------------------------------------------------------------------------
# Environments in chunks (the num_envs axis)
# --------------------------------------------------------------------------------------------


class EnvChunks:
    """A vector env made of chunks of ``chunk_envs`` environments, of which the first
    ``active`` are stepped (the ``envs`` vector-env interface: reset, step, close, spaces,
    ``frames_per_step``).

    Chunk j of rank r is ``make(chunk_envs, seed + (j x world + r) x chunk_envs)``: chunk 0 is
    the rank's starting env; with one rank and a backend that seeds env i with seed + i (all
    but ``gym-vector``, whose envs share one generator), k chunks hold the environments one
    vector env of k x chunk_envs seeded ``seed`` would hold. ``set_active(k)`` changes the
    prefix and returns its observations: new chunks are reset, paused ones continue their games.
    """

    def __init__(self, first, make: Callable[[int, int], Any], chunk_envs: int, seed: int,
                 rank: int = 0, world: int = 1):
        self.make, self.chunk_envs, self.seed = make, int(chunk_envs), int(seed)
        self.rank, self.world = int(rank), int(world)
        self.chunks = [first]
        self.last_obs: list[np.ndarray | None] = [None]
        self.active = 1
        self.single_observation_space = first.single_observation_space
        self.single_action_space = first.single_action_space
        self.frames_per_step = first.frames_per_step

    @property
    def num_envs(self) -> int:
        return self.active * self.chunk_envs

    def chunk_seed(self, j: int) -> int:
        return self.seed + (j * self.world + self.rank) * self.chunk_envs

    def reset(self, **kwargs):
        outs = [self.chunks[j].reset(**kwargs) for j in range(self.active)]
        for j, (obs, _) in enumerate(outs):
            self.last_obs[j] = obs
        return np.concatenate([o for o, _ in outs]), _concat_info([i for _, i in outs])

    def step(self, actions):
        actions = np.asarray(actions)
        outs = [self.chunks[j].step(actions[j * self.chunk_envs:(j + 1) * self.chunk_envs])
                for j in range(self.active)]
        for j, out in enumerate(outs):
            self.last_obs[j] = out[0]
        obs, reward, terminated, truncated, info = zip(*outs, strict=True)
        return (np.concatenate(obs), np.concatenate(reward), np.concatenate(terminated),
                np.concatenate(truncated), _concat_info(info))

    def set_active(self, k: int) -> np.ndarray:
        """Step the first ``k`` chunks from now on; their current observations."""
        while len(self.chunks) < k:
            chunk = self.make(self.chunk_envs, self.chunk_seed(len(self.chunks)))
            obs, _ = chunk.reset()
            self.chunks.append(chunk)
            self.last_obs.append(obs)
        self.active = k
        return np.concatenate(self.last_obs[:k])

    def close(self) -> None:
        for chunk in self.chunks:
            chunk.close()


def _concat_info(infos: Sequence[dict[str, Any]]) -> dict[str, Any]:
    return {key: np.concatenate([i[key] for i in infos]) for key in infos[0]}


# --------------------------------------------------------------------------------------------
# Plot and comparison
# --------------------------------------------------------------------------------------------


def plot_schedule(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Rollout batch size and B_simple against PPO iteration, as a png (returns its path).

    Top: the rollout batch (agent steps) and the schedule's target B*. Bottom (log scale): the
    smoothed B_simple the schedule follows and the single-iteration estimates of that term
    (positive ones; negative single estimates are normal and are not drawn).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from rl.storage import load_metrics, save_figure

    run_dir = Path(run_dir)
    m = load_metrics(run_dir)
    term = _run_config(run_dir).get("adaptive", {}).get("batch_term", "total")
    fig = Figure(figsize=(8, 6), layout="constrained")
    FigureCanvasAgg(fig)
    top, bottom = fig.subplots(2, 1, sharex=True)
    it = m["iteration"].to_numpy(float)
    top.step(it, m["rollout_batch_size"].to_numpy(float), where="pre", color="C0",
             label="rollout batch size B")
    if "adaptive/target_batch_size" in m:
        top.plot(it, pd.to_numeric(m["adaptive/target_batch_size"], errors="coerce"), "--",
                 color="C1", lw=1, label="target c sqrt(B_simple) (before bounds, rounding)")
    top.set_yscale("log")
    top.set_ylabel("agent steps per rollout")
    top.legend(fontsize=8)
    single = f"gns/{term}/b_simple"
    if single in m:
        y = pd.to_numeric(m[single], errors="coerce")
        keep = y > 0
        bottom.plot(it[keep.to_numpy()], y[keep], ".", color="0.6", ms=3,
                    label=f"single estimates ({term} loss)")
    if "adaptive/b_simple" in m:
        y = pd.to_numeric(m["adaptive/b_simple"], errors="coerce")
        keep = (y > 0).to_numpy()
        bottom.plot(it[keep], y[keep], color="C2", label="smoothed B_simple (schedule input)")
    bottom.set_yscale("log")
    bottom.set_xlabel("PPO iteration")
    bottom.set_ylabel("B_simple (agent steps)")
    bottom.legend(fontsize=8)
    fig.suptitle(f"{run_dir.name}: adaptive rollout batch, B ~ sqrt(B_simple)", fontsize=10)
    path = Path(out) if out is not None else run_dir / PLOT_FILE
    save_figure(fig, path, dpi=90)
    return path


def _run_config(run_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((run_dir / "config.json").read_text())
    except (FileNotFoundError, ValueError):
        return {}


def steps_to_target(run_dir: str | Path, target: float) -> dict[str, Any]:
    """PPO iterations and agent steps at which a run's smoothed return first reached ``target``.

    Same rule as the sweep tables: the first row with ``return_recent >= target`` once
    ``return_window`` games have finished. NaN when never reached; ``best_return`` is the
    highest ``return_recent`` of the run. Also the rollout batch at the start, at the target
    and at most.
    """
    from rl.storage import load_metrics

    run_dir = Path(run_dir)
    m = load_metrics(run_dir)
    window = int(_run_config(run_dir).get("train", {}).get("return_window", 20))
    out: dict[str, Any] = dict(run=run_dir.name, iterations=math.nan, agent_steps=math.nan,
                               best_return=math.nan, batch_start=math.nan,
                               batch_at_target=math.nan, batch_max=math.nan)
    if m.empty or "return_recent" not in m:
        return out
    ret = pd.to_numeric(m["return_recent"], errors="coerce").to_numpy(float)
    batch = m["rollout_batch_size"].to_numpy(float)
    out.update(best_return=float(np.nanmax(ret)) if np.isfinite(ret).any() else math.nan,
               batch_start=float(batch[0]), batch_max=float(batch.max()))
    hit = np.flatnonzero((m["episodes_total"].to_numpy(float) >= window) & (ret >= target))
    if hit.size:
        i = hit[0]
        out.update(iterations=float(m["iteration"].iloc[i]),
                   agent_steps=float(m["agent_steps"].iloc[i]), batch_at_target=float(batch[i]))
    return out


def _median_inf(values: Iterable[float]) -> float:
    v = np.array([x if math.isfinite(x) else math.inf for x in values], float)
    return float(np.median(v)) if v.size else math.nan


def compare_with_fixed(fixed: pd.DataFrame | str | Path, adaptive_runs: Sequence[str | Path],
                       targets: Iterable[float]) -> pd.DataFrame:
    """Iterations and agent steps to each target: adaptive runs next to the best fixed batch.

    ``fixed`` is a sweep's results table (``rl.sweep`` columns) or its directory. For each
    target, the fixed-batch rows are the batch size with the fewest median PPO iterations and
    the one with the fewest median agent steps (each at its best lr, ``rl.fit.best_per_batch``:
    a strict majority of seeds must reach); the adaptive row takes the median over the given
    runs, a run that did not reach counting as never (inf). Columns: target, schedule,
    rollout_batch_size (fixed: B; adaptive: "start->at target (max)" medians), lr, runs,
    reached, iterations, agent_steps, best_return (highest return_recent, median over runs).
    Units: iterations are PPO iterations, agent_steps are agent steps.
    """
    from rl.fit import best_per_batch
    from rl.sweep import long_results, read_results

    table = read_results(fixed) if not isinstance(fixed, pd.DataFrame) else fixed
    settled = table[table["status"].isin(["finished", "failed"])]
    long = long_results(settled)
    rows = []
    for target in sorted(float(t) for t in targets):
        per_batch = pd.DataFrame()
        if not long.empty:
            mine = long[np.isclose(long["target"].astype(float), target)]
            if not mine.empty:
                per_batch, _ = best_per_batch(mine)
        reached = per_batch[per_batch["reached"]] if len(per_batch) else per_batch
        if len(reached):
            for label, key in (("fixed, fewest iterations", "s_median"),
                               ("fixed, fewest agent steps", "e_median")):
                best = reached.sort_values([key, "rollout_batch_size"]).iloc[0]
                b = int(best["rollout_batch_size"])
                runs = settled[(settled["rollout_batch_size"] == b)
                               & np.isclose(settled["lr"].astype(float), best["best_lr"])]
                rows.append(dict(
                    target=target, schedule=label, rollout_batch_size=str(b),
                    lr=float(best["best_lr"]), runs=int(best["n_seeds"]),
                    reached=int(best["n_reached"]), iterations=float(best["s_median"]),
                    agent_steps=float(best["e_median"]),
                    best_return=float(runs["final_return_recent"].astype(float).median()),
                ))
        else:
            rows.append(dict(target=target, schedule="fixed: no batch size reached",
                             rollout_batch_size="-", lr=math.nan,
                             runs=int(len(settled)), reached=0, iterations=math.nan,
                             agent_steps=math.nan, best_return=math.nan))
        got = [steps_to_target(r, target) for r in adaptive_runs]
        if got:
            lrs = {_run_config(Path(r)).get("ppo", {}).get("learning_rate") for r in adaptive_runs}
            def med(key: str, got: list[dict[str, Any]] = got) -> float:
                return float(np.nanmedian([g[key] for g in got]))

            rows.append(dict(
                target=target, schedule="adaptive",
                rollout_batch_size=f"{med('batch_start'):.0f}->"
                                   f"{_fmt_nan(np.nanmedian([g['batch_at_target'] for g in got]))}"
                                   f" (max {med('batch_max'):.0f})",
                lr=float(lrs.pop()) if len(lrs) == 1 else math.nan, runs=len(got),
                reached=int(sum(math.isfinite(g["iterations"]) for g in got)),
                iterations=_median_inf(g["iterations"] for g in got),
                agent_steps=_median_inf(g["agent_steps"] for g in got),
                best_return=med("best_return"),
            ))
    return pd.DataFrame(rows, columns=["target", "schedule", "rollout_batch_size", "lr", "runs",
                                       "reached", "iterations", "agent_steps", "best_return"])


def _fmt_nan(v: float) -> str:
    return "-" if not math.isfinite(v) else f"{v:.0f}"


# --------------------------------------------------------------------------------------------
# Command line: rlscale compare-adaptive
# --------------------------------------------------------------------------------------------


def cmd_compare(args) -> int:
    from rl.cli import console, print_table

    targets = [float(t) for t in args.targets.split(",") if t.strip()]
    for r in args.runs:
        if not (Path(r) / "metrics.jsonl").exists():
            raise FileNotFoundError(f"{r} is not a run directory (no metrics.jsonl)")
    df = compare_with_fixed(Path(args.sweep_dir), args.runs, targets)
    print_table(df, title="adaptive vs fixed rollout batch (iterations = PPO iterations; "
                "agent_steps = agent steps; medians over runs, inf = not reached by most)")
    if args.out:
        from rl.storage import atomic_write_text

        atomic_write_text(args.out, df.to_csv(index=False))
        console.print(f"wrote {args.out}")
    return 0


def add_compare_parser(sub) -> None:
    p = sub.add_parser(
        "compare-adaptive",
        help="iterations and agent steps to a target: adaptive runs vs a sweep's best fixed B",
        description="Report PPO iterations and agent steps to each target for adaptive-batch "
        "runs (rlscale train --batch-schedule adaptive) next to the best fixed rollout batch "
        "of a sweep (fewest iterations, fewest agent steps; each at its best lr).",
    )
    p.add_argument("sweep_dir", metavar="SWEEP_DIR", help="a sweep's out directory")
    p.add_argument("runs", metavar="RUN_DIR", nargs="+", help="adaptive run directories")
    p.add_argument("--targets", required=True, help="target returns, comma-separated")
    p.add_argument("--out", help="also write the table as csv here")
    p.set_defaults(func=cmd_compare)
