"""The rollout batch size along a run: fixed, or adaptive (B grows as sqrt(B_simple)).

``FixedBatch`` and ``AdaptiveBatch`` are the loop's ``Schedule`` (``rl.train.protocols``):
the learning rate in force, when the budget is spent, and (adaptive) the new rollout shape
after a measured iteration. ``BatchSchedule`` is the adaptive rule itself (McCandlish et
al. 2018, Appendix D) on the batch ladder (``ladder``). The environments an adaptive
num_envs grows in: ``rl.train.env_chunks``; its figure: ``rl.train.schedule_plot``. See
docs/adaptive-batch.md.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from agents import PPOConfig, learning_rate_at
from rl.measure.gns import GNSTracker
from rl.measure.warmup import after_warmup
from rl.train.config import AdaptiveConfig
from rl.train.protocols import Comm
from rl.train.rollout import RolloutBuffer, to_device

_HYSTERESIS = math.log(1.1)


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
# The loop's batch-schedule strategies
# --------------------------------------------------------------------------------------------


class FixedBatch:
    """One rollout shape for the whole run; the lr anneals by PPO iteration."""

    adaptive = False

    def __init__(self, num_envs: int, num_steps: int, world: int, total_agent_steps: int):
        self.shape = (num_envs, num_steps)
        self.world = world
        self.total_iterations = total_agent_steps // self.batch_size

    @property
    def batch_size(self) -> int:
        return self.world * self.shape[0] * self.shape[1]

    @property
    def total_steps(self) -> int:
        """Agent steps the run will take (for the progress display)."""
        return self.total_iterations * self.batch_size

    def learning_rate(self, ppo: PPOConfig, iteration: int, agent_steps: int) -> float:
        return learning_rate_at(ppo, iteration, self.total_iterations)

    def fits(self, iteration: int, agent_steps: int) -> bool:
        """Whether the next iteration fits in the budget."""
        return iteration < self.total_iterations

    def observe(self, noise: Mapping[str, Any], row: Mapping[str, Any],
                comm: Comm) -> tuple[int, int] | None:
        """The new (num_envs, num_steps) after this iteration's row, or None: never."""
        return None

    def columns(self) -> dict[str, Any]:
        return {}

    def resize(self, env, next_obs: torch.Tensor, device) -> tuple[torch.Tensor, RolloutBuffer]:
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any] | None:
        return None

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        pass


class AdaptiveBatch:
    """``BatchSchedule`` in the loop: the lr anneals by agent steps; the batch follows the
    measured noise scale of its term, rank 0 deciding for every rank."""

    adaptive = True

    def __init__(self, cfg: AdaptiveConfig, num_envs: int, num_steps: int, world: int,
                 total_agent_steps: int, rank: int = 0):
        self.schedule = BatchSchedule(cfg, num_envs, num_steps, world)
        self.world, self.rank, self.total = world, rank, total_agent_steps
        self.start_envs = num_envs

    @property
    def shape(self) -> tuple[int, int]:
        return self.schedule.shape

    @property
    def batch_size(self) -> int:
        return self.schedule.batch_size

    @property
    def total_steps(self) -> int:
        return self.total

    @property
    def chunked(self) -> bool:
        """Whether the environments come in chunks (the batch varies num_envs)."""
        return self.schedule.cfg.batch_axis == "num_envs"

    def learning_rate(self, ppo: PPOConfig, iteration: int, agent_steps: int) -> float:
        return self.schedule.learning_rate(ppo.learning_rate, ppo.anneal_lr, agent_steps,
                                           self.total)

    def fits(self, iteration: int, agent_steps: int) -> bool:
        return agent_steps + self.batch_size <= self.total

    def observe(self, noise: Mapping[str, Any], row: Mapping[str, Any],
                comm: Comm) -> tuple[int, int] | None:
        """Feed the iteration's noise-scale columns; the new shape, or None."""
        term = self.schedule.cfg.batch_term
        decision = None
        # The row's iteration is 1-based: its measurement came after iteration - 1 updates.
        # Warm-up measurements never reach the schedule's smoother (rl.measure.warmup).
        if f"gns/{term}/g2" in noise and after_warmup(int(row["iteration"]) - 1):
            decision = self.schedule.observe(noise[f"gns/{term}/g2"],
                                             noise[f"gns/{term}/trace_sigma"])
        if comm.size > 1:  # rank 0 decides; every rank applies the same decision
            decision, state = comm.broadcast_object(
                (decision, self.schedule.state_dict()) if comm.rank == 0 else None)
            self.schedule.load_state_dict(state)
        return decision

    def columns(self) -> dict[str, float]:
        """The smoothed B_simple, the target batch and the scale c after ``observe``."""
        return self.schedule.columns()

    def resize(self, env, next_obs: torch.Tensor, device) -> tuple[torch.Tensor, RolloutBuffer]:
        """Apply the new shape: activate env chunks (num_envs) and reallocate the buffer."""
        if self.chunked:
            next_obs = to_device(env.set_active(self.shape[0] // self.start_envs), device)
        return next_obs, RolloutBuffer(self.shape[1], self.shape[0], next_obs, device)

    def state_dict(self) -> dict[str, Any] | None:
        return self.schedule.state_dict()

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        if state is not None:
            self.schedule.load_state_dict(state)
