"""How the loop's ranks share an iteration: one process, or data-parallel.

A ``Ranks`` strategy is the loop's extension point for everything that differs between
one process and N data-parallel ranks: the advantages the update trains on, the gradient
hook of ``agents.ppo_update`` (averaging over ranks), the noise-scale measurement (the
grouped estimator of ``rl.measure.ppo_noise`` in one process, the free estimate of
``rl.measure.free`` across ranks), and the aggregation of the row over ranks. With one
process every step is the plain computation. See docs/scale-out.md.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch

from agents import PPOConfig
from rl.measure.free import FreeNoiseScale, GradSync, param_parts
from rl.measure.ppo_noise import PPONoiseScale
from rl.train.comm import LocalComm, global_normalize, params_digest
from rl.train.config import TrainConfig
from rl.train.rollout import RolloutBuffer


def explained_variance(values: torch.Tensor, returns: torch.Tensor,
                       mask: torch.Tensor) -> float:
    """1 - Var(returns - values) / Var(returns) over the unmasked slots (NaN if undefined)."""
    keep = mask.bool()
    y, pred = returns[keep], values[keep]
    var_y = torch.var(y) if y.numel() > 1 else torch.tensor(float("nan"))
    return float("nan") if var_y == 0 else float(1 - torch.var(y - pred) / var_y)


def finite_params(model: torch.nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


class OneProcess:
    """One process: plain advantages, no gradient hook, the grouped noise-scale estimator."""

    def __init__(self, cfg: TrainConfig, model: torch.nn.Module, ppo: PPOConfig):
        self.comm = LocalComm()
        self.noise = PPONoiseScale.from_config(cfg)
        self.terms = ("total", "policy", "value")

    def advantages(self, adv: torch.Tensor, mask: torch.Tensor,
                   ppo: PPOConfig) -> tuple[torch.Tensor, PPOConfig]:
        """The advantages to train on and the PPO settings to train with."""
        return adv.flatten(), ppo

    def before_update(self, iteration: int, model, optimizer, ppo: PPOConfig,
                      buffer: RolloutBuffer, adv, returns, mask) -> tuple[dict, Any]:
        """(noise-scale columns, grad_hook for ``ppo_update``) before the first step."""
        return self.noise.maybe_measure(iteration, model, optimizer, ppo, buffer, adv, returns,
                                        mask), None

    def after_update(self, grad_hook, buffer: RolloutBuffer, ppo: PPOConfig) -> dict:
        """Noise-scale columns measured during the update (none here)."""
        return {}

    def mean_stats(self, stats: dict[str, float]) -> dict[str, float]:
        return stats

    def episodes(self, episodes) -> tuple[list[float], list[int]]:
        return episodes.returns, episodes.lengths

    def rollout_stats(self, buffer: RolloutBuffer, returns, mask) -> dict[str, float]:
        return {"explained_variance": explained_variance(
                    buffer.values.flatten(), returns.flatten(), mask.flatten()),
                "masked_fraction": float(1 - mask.flatten().mean())}

    def state_dict(self) -> dict[str, Any]:
        return self.noise.state_dict()

    def load_state_dict(self, state) -> None:
        self.noise.load_state_dict(state)


class DataParallel(OneProcess):
    """N ranks: advantages normalized over all ranks, gradients averaged after every
    backward pass (``GradSync``), the free noise-scale estimate, rows aggregated."""

    def __init__(self, cfg: TrainConfig, model: torch.nn.Module, ppo: PPOConfig, comm):
        self.comm = comm
        self.parts, self.terms = param_parts(model, ppo)
        self.noise = FreeNoiseScale(cfg.gns_every, self.terms, cfg.gns_preconditioned,
                                    vf_coef=ppo.vf_coef)

    def advantages(self, adv, mask, ppo):
        if not ppo.norm_adv:
            return adv.flatten(), ppo
        return (global_normalize(self.comm, adv.flatten(), mask.flatten()),
                dataclasses.replace(ppo, norm_adv=False))

    def before_update(self, iteration, model, optimizer, ppo, buffer, adv, returns, mask):
        sync, skipped = self.noise.hook(self.comm, self.parts, iteration, optimizer)
        return ({"gns/skipped": 1} if skipped else {}), sync

    def after_update(self, grad_hook: GradSync, buffer, ppo):
        if not grad_hook.measure:
            return {}
        mb = buffer.num_envs * buffer.num_steps // ppo.num_minibatches
        return self.noise.record(grad_hook, mb, self.comm.size, ppo.num_minibatches == 1,
                                 seconds=grad_hook.seconds)

    def mean_stats(self, stats):
        keys = sorted(stats)
        t = torch.tensor([stats[k] for k in keys], dtype=torch.float64)
        t = self.comm.all_reduce_sum(t.to(self.comm.device)) / self.comm.size
        return dict(zip(keys, t.tolist(), strict=True))

    def episodes(self, episodes):
        every = self.comm.all_gather_object((episodes.returns, episodes.lengths))
        return [x for r, _ in every for x in r], [x for _, n in every for x in n]

    def rollout_stats(self, buffer, returns, mask):
        values, returns, mask = buffer.values.flatten(), returns.flatten(), mask.flatten()
        keep = mask.bool()
        y = returns[keep].to(torch.float64)
        r = y - values[keep].to(torch.float64)
        sums = torch.stack([y.new_tensor(float(y.numel())), y.sum(), y.square().sum(), r.sum(),
                            r.square().sum(), y.new_tensor(float(mask.numel()))])
        n, sy, syy, sr, srr, slots = self.comm.all_reduce_sum(sums).tolist()
        var_y = (syy - sy * sy / n) / (n - 1) if n > 1 else math.nan
        var_r = (srr - sr * sr / n) / (n - 1) if n > 1 else math.nan
        ev = math.nan if not var_y or var_y != var_y else 1 - var_r / var_y
        return {"explained_variance": ev, "masked_fraction": 1 - n / slots}

    def check_sync(self, model, iteration):
        """Every rank holds the same parameters (``dp/params_in_sync``), else an error."""
        digests = self.comm.all_gather_object(params_digest(model))
        if len(set(digests)) != 1:
            raise RuntimeError(f"data-parallel ranks hold different parameters after iteration "
                               f"{iteration} (SHA-1 {digests}); this is a bug")
        return {"dp/params_in_sync": 1.0}
