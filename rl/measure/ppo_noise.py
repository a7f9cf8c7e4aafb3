"""The gradient noise scale measured inside our PPO trainer (docs/design.md, "The gradient
noise scale").

See docs/noise-scale.md for the full description.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from agents.ppo import PPOConfig, normalize_advantages, ppo_loss
from rl.measure.gns import GNSSample, GNSTracker, adam_preconditioner, measure
from rl.measure.run_average import ratio_summary
from rl.measure.warmup import after_warmup, counted_measurements

__all__ = [
    "EMA_BETA",
    "TERMS",
    "PPONoiseScale",
    "RolloutSplit",
    "adam_has_state",
    "check_settings",
    "measure_rollout",
    "plan_split",
    "ppo_gns_loss",
    "rollout_groups",
    "tracker_columns",
]

TERMS = ("total", "policy", "value")
"""Loss terms measured, in column order."""
EMA_BETA = 0.99
"""EMA factor per measurement of the trainer's smoothing (``gns/{term}/b_simple_ema``)."""

_STATE_VERSION = 1


# ---------------------------------------------------------------------------------------------
# Splitting a rollout into groups
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RolloutSplit:
    """How a (num_steps, num_envs) rollout is cut into ``num_groups`` equal groups.

    ``axis`` is "envs" (group k = environments [k E, (k + 1) E), all steps) or "time"
    (group k = steps [k S, (k + 1) S), all environments), with E = ``envs_per_group`` and
    S = ``steps_per_group``.
    """

    axis: str
    num_groups: int
    envs_per_group: int
    steps_per_group: int

    @property
    def group_size(self) -> int:
        """b: rollout slots per group."""
        return self.envs_per_group * self.steps_per_group

    @property
    def big_batch_size(self) -> int:
        """B = K b: rollout slots in the union of the groups."""
        return self.num_groups * self.group_size

    @property
    def split_envs(self) -> int:
        """1 for the environment axis, 0 for the time axis (the metrics value)."""
        return int(self.axis == "envs")

    def split(self, fields: Mapping[str, Tensor]) -> list[dict[str, Tensor]]:
        """Cut (T, N, ...) tensors into the groups, each a dict of flat (b, ...) tensors.

        Within a group the order is time-major (index = t * envs + n), as in the trainer.
        """
        groups = []
        for k in range(self.num_groups):
            if self.axis == "envs":
                lo = k * self.envs_per_group
                index = (slice(None), slice(lo, lo + self.envs_per_group))
            else:
                lo = k * self.steps_per_group
                index = (slice(lo, lo + self.steps_per_group),)
            groups.append({name: x[index].flatten(0, 1) for name, x in fields.items()})
        return groups


def plan_split(num_envs: int, num_steps: int, groups: int) -> RolloutSplit:
    """The split used for a rollout of this shape with ``groups`` requested (module docstring).

    Raises:
        ValueError: if ``groups`` < 2 or the rollout cannot give two groups.
    """
    for name, value in (("num_envs", num_envs), ("num_steps", num_steps), ("groups", groups)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if groups < 2:
        raise ValueError(f"the noise scale needs at least 2 groups, got gns_groups={groups}")
    if num_envs % groups == 0:
        return RolloutSplit("envs", groups, num_envs // groups, num_steps)
    if num_envs >= 2:
        # Fewer groups of whole environments rather than blocks of steps: blocks of one
        # trajectory are correlated and bias B_simple low (reference/gns-split). Use the
        # number of groups that leaves the fewest environments out, then the most groups.
        k = max(range(2, min(groups, num_envs) + 1), key=lambda k: (k * (num_envs // k), k))
        return RolloutSplit("envs", k, num_envs // k, num_steps)
    if num_steps >= 2:  # one environment: only blocks of its steps are possible
        k = min(groups, num_steps)
        return RolloutSplit("time", k, num_envs, num_steps // k)
    raise ValueError(
        f"a rollout of {num_envs} env x {num_steps} step cannot be split into 2 groups for "
        "the noise scale; use more environments or steps, or --gns-every 0"
    )


def check_settings(every: Any, groups: Any, num_envs: int | None = None,
                   num_steps: int | None = None) -> None:
    """Validate ``gns_every`` / ``gns_groups`` (and, given its shape, the rollout's split)."""
    if isinstance(every, bool) or not isinstance(every, int) or every < 0:
        raise ValueError(f"gns_every must be an integer >= 0 (0 disables), got {every!r}")
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 2:
        raise ValueError(f"gns_groups must be an integer >= 2, got {groups!r}")
    if every > 0 and num_envs is not None and num_steps is not None:
        plan_split(num_envs, num_steps, groups)


def rollout_groups(
    fields: Mapping[str, Tensor], advantages: Tensor, mask: Tensor, split: RolloutSplit
) -> list[dict[str, Tensor]]:
    """PPO batches of the groups, with whole-rollout advantage normalization.

    ``fields`` holds the (T, N, ...) rollout tensors obs, actions, logprobs, values, returns
    (anything else is carried along); ``advantages`` and ``mask`` are (T, N). The advantages
    are normalized over the entire rollout (masked mean and std) before splitting.
    """
    t, n = mask.shape[:2]
    adv = normalize_advantages(advantages.reshape(-1), mask.reshape(-1)).reshape(t, n)
    return split.split({**fields, "advantages": adv, "mask": mask})


def ppo_gns_loss(ppo: PPOConfig):
    """``loss_fn(model, group)`` for ``rl.measure.gns.measure``: the three PPO terms on one
    group."""

    def loss_fn(model: nn.Module, group: Mapping[str, Tensor]) -> dict[str, Tensor]:
        terms = ppo_loss(model, group, ppo)
        return {"total": terms.total, "policy": terms.policy_loss, "value": terms.value_loss}

    return loss_fn


def adam_has_state(optimizer: torch.optim.Optimizer) -> bool:
    """Whether every parameter of ``optimizer`` has an Adam second moment (a step was taken)."""
    for group in optimizer.param_groups:
        key = "max_exp_avg_sq" if group.get("amsgrad", False) else "exp_avg_sq"
        for p in group["params"]:
            state = optimizer.state.get(p, {})
            if key not in state or "step" not in state or float(state["step"]) < 1:
                return False
    return True


def measure_rollout(
    model: nn.Module,
    loss_fn,
    groups: list[dict[str, Tensor]],
    split: RolloutSplit,
    *,
    preconditioner=None,
) -> dict[str, GNSSample]:
    """``rl.measure.gns.measure`` on the groups with autocast disabled (fp32 forward, fp64
    statistics)."""
    device = next(model.parameters()).device
    with torch.autocast(device.type, enabled=False):
        return measure(model, loss_fn, groups, group_size=split.group_size,
                       preconditioner=preconditioner)


# ---------------------------------------------------------------------------------------------
# The trainer's side: cadence, trackers, metrics, checkpoint state
# ---------------------------------------------------------------------------------------------


class PPONoiseScale:
    """Noise-scale measurement for the PPO trainer: cadence, one tracker per term, metrics.

    ``maybe_measure`` is called once per iteration, right before ``ppo_update``; it returns
    the metrics entries for that iteration's row (empty on iterations not measured). As the
    loop's ``NoiseScale`` (``rl.train.protocols``): ``before_update``, ``after_update``.
    """

    terms = TERMS

    def __init__(self, every: int, groups: int = 8, preconditioned: bool = False, *,
                 beta: float = EMA_BETA, window: int = 100):
        check_settings(every, groups)
        self.every = every
        self.groups = groups
        self.preconditioned = bool(preconditioned)
        self.trackers = {term: GNSTracker(beta=beta, window=window) for term in TERMS}
        self._warned_time_split = False

    @classmethod
    def from_config(cls, cfg: Any) -> PPONoiseScale:
        """From a ``TrainConfig`` (its gns_every, gns_groups, gns_preconditioned)."""
        return cls(cfg.gns_every, cfg.gns_groups, cfg.gns_preconditioned)

    @property
    def enabled(self) -> bool:
        return self.every > 0

    def due(self, iteration: int) -> bool:
        """Whether the 0-based PPO ``iteration`` (metrics row iteration + 1) is measured."""
        return self.every > 0 and iteration % self.every == 0

    def maybe_measure(self, iteration: int, model: nn.Module, optimizer, ppo: PPOConfig,
                      buffer, advantages: Tensor, returns: Tensor, mask: Tensor
                      ) -> dict[str, float]:
        """Measure if ``iteration`` (0-based) is due; see ``measure`` for the arguments.

        Measurements of the warm-up (``rl.measure.warmup``) are written but not tracked."""
        if not self.due(iteration):
            return {}
        return self.measure(model, optimizer, ppo, buffer, advantages, returns, mask,
                            track=after_warmup(iteration))

    def before_update(self, iteration: int, model: nn.Module, optimizer, ppo: PPOConfig,
                      buffer, advantages: Tensor, returns: Tensor, mask: Tensor
                      ) -> tuple[dict[str, float], None]:
        """(``maybe_measure``'s columns, no gradient hook): the update runs plain."""
        return self.maybe_measure(iteration, model, optimizer, ppo, buffer, advantages,
                                  returns, mask), None

    def after_update(self, grad_hook: None, buffer, ppo: PPOConfig) -> dict[str, float]:
        """Nothing: the measurement was taken before the update."""
        return {}

    def measure(self, model: nn.Module, optimizer, ppo: PPOConfig, buffer,
                advantages: Tensor, returns: Tensor, mask: Tensor, *,
                track: bool = True) -> dict[str, float]:
        """Measure now, update the trackers (unless ``track`` is False), return the entries.

        Args:
            model: the (uncompiled) actor-critic, at the parameters that collected the rollout.
            optimizer: its Adam optimizer (read only, for the preconditioner).
            ppo: the PPO settings (loss coefficients, clipping).
            buffer: the ``RolloutBuffer`` (obs, actions, logprobs, values as (T, N, ...)).
            advantages, returns, mask: (T, N) outputs of ``compute_gae`` (unnormalized).
        """
        start = time.perf_counter()
        preconditioner = None
        if self.preconditioned:
            if not adam_has_state(optimizer):
                return {"gns/skipped": 1}
            preconditioner = adam_preconditioner(optimizer)
        split = plan_split(buffer.num_envs, buffer.num_steps, self.groups)
        if not split.split_envs and not self._warned_time_split:
            self._warned_time_split = True
            warnings.warn("with one environment the noise scale is measured on blocks of "
                          "consecutive steps, which are correlated: B_simple comes out biased "
                          "low (docs/noise-scale.md); measure with 2 or more environments",
                          stacklevel=2)
        fields = {"obs": buffer.obs, "actions": buffer.actions, "logprobs": buffer.logprobs,
                  "values": buffer.values, "returns": returns}
        groups = rollout_groups(fields, advantages, mask, split)
        samples = measure_rollout(model, ppo_gns_loss(ppo), groups, split,
                                  preconditioner=preconditioner)
        row = self.record(samples, track=track)
        row.update(split_columns(split, preconditioner is not None, start))
        return row

    def record(self, samples: Mapping[str, GNSSample], *, track: bool = True
               ) -> dict[str, float]:
        """Update the trackers with one measurement (if ``track``); the per-term entries."""
        return tracker_columns(self.trackers, samples, track=track)

    def state_dict(self) -> dict[str, Any]:
        """Plain state for the checkpoint (settings that shape the estimates + trackers)."""
        return {
            "version": _STATE_VERSION,
            "groups": self.groups,
            "preconditioned": self.preconditioned,
            "trackers": {term: t.state_dict() for term, t in self.trackers.items()},
        }

    def load_state_dict(self, state: Mapping[str, Any] | None) -> None:
        """Continue the saved smoothing; ``None`` (a checkpoint without it) keeps fresh trackers.

        Saved state from different ``groups``/``preconditioned`` settings is not continued.
        """
        if state is None:
            return
        if (state["groups"], bool(state["preconditioned"])) != (self.groups, self.preconditioned):
            warnings.warn(
                f"the checkpoint's noise-scale smoothing was measured with gns_groups="
                f"{state['groups']}, gns_preconditioned={state['preconditioned']}; this run uses "
                f"{self.groups}, {self.preconditioned}: starting the smoothing afresh",
                stacklevel=2,
            )
            return
        for term, tracker in self.trackers.items():
            tracker.load_state_dict(state["trackers"][term])


def split_columns(split, preconditioned: bool, start_time: float) -> dict[str, float]:
    """The ``gns/...`` entries describing how a measurement was taken (and how long)."""
    return {
        "gns/small_batch_size": split.group_size,
        "gns/big_batch_size": split.big_batch_size,
        "gns/groups": split.num_groups,
        "gns/split_envs": split.split_envs,
        "gns/preconditioned": int(preconditioned),
        "gns/seconds": time.perf_counter() - start_time,
    }


def tracker_columns(trackers: Mapping[str, GNSTracker],
                    samples: Mapping[str, GNSSample], *, track: bool = True
                    ) -> dict[str, float]:
    """Feed each term's sample to its tracker; ``gns/{term}/...`` entries for the row.

    With ``track`` False (a warm-up measurement, ``rl.measure.warmup``) the trackers are
    left as they are: the row carries this measurement's own estimates and the smoothing so
    far (NaN before any tracked measurement). A non-finite estimate (which needs a
    non-finite loss) is reported but not tracked.
    """
    row: dict[str, float] = {}
    for term, tracker in trackers.items():
        sample = samples[term]
        if track and math.isfinite(sample.g2) and math.isfinite(sample.trace_sigma):
            tracker.update(sample)
        mean, lo, hi = tracker.b_simple_interval()
        row.update({
            f"gns/{term}/g2": sample.g2,
            f"gns/{term}/trace_sigma": sample.trace_sigma,
            f"gns/{term}/b_simple": sample.b_simple,
            f"gns/{term}/b_simple_ema": tracker.ema_b_simple,
            f"gns/{term}/b_simple_mean": mean,
            f"gns/{term}/b_simple_lo": lo,
            f"gns/{term}/b_simple_hi": hi,
        })
    return row


def noise_scale_by_segment(metrics, segments: int = 4, terms=TERMS):
    """B_simple per segment of a run's counted measurements (quarters by default), with return.

    The measurements that count (``rl.measure.warmup.counted_measurements``: after the
    warm-up, finite estimates) are cut into ``segments`` runs of consecutive measurements of
    (nearly) equal count; each segment's B_simple is mean(trace_sigma) / mean(g2) with the
    intervals and tail diagnostic of ``rl.measure.run_average.ratio_summary`` (block
    bootstrap 95% in b_simple_lo/hi, hi = inf when mean |G|^2 is not resolved above zero;
    Fieller's in fieller_lo/hi). One row per segment and term: ``segment``, ``term``,
    ``iteration_first``/``_last``, ``agent_steps_first``/``_last``, the ``ratio_summary``
    keys and ``return_recent`` (its mean over the segment's measurements).
    """

    if isinstance(segments, bool) or not isinstance(segments, int) or segments < 1:
        raise ValueError(f"segments must be a positive integer, got {segments!r}")
    rows = []
    for term in terms:
        if f"gns/{term}/g2" not in metrics:
            raise ValueError(
                f"the metrics have no gns/{term}/g2 column: the run measured no noise scale; "
                "train with --gns-every N (N >= 1)")
        measured = counted_measurements(metrics, term)
        if len(measured) < segments:
            raise ValueError(f"{len(measured)} measurements after the warm-up cannot make "
                             f"{segments} segments; use fewer --segments or a longer run "
                             "(docs/noise-scale.md, 'Warm-up')")
        for k, idx in enumerate(np.array_split(np.arange(len(measured)), segments), start=1):
            part = measured.iloc[idx]
            summary = ratio_summary(part["g2"], part["trace_sigma"])
            rows.append({
                "segment": k, "term": term,
                "iteration_first": int(part["iteration"].iloc[0]),
                "iteration_last": int(part["iteration"].iloc[-1]),
                "agent_steps_first": int(part["agent_steps"].iloc[0]),
                "agent_steps_last": int(part["agent_steps"].iloc[-1]),
                **summary,
                "return_recent": float(np.nanmean(part["return_recent"].to_numpy(float))),
            })
    return pd.DataFrame(rows)
