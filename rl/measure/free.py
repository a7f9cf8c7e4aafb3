"""The data-parallel noise-scale estimate, for free: gradient averaging that also measures.

Each rank's gradient of its minibatch is the small batch, the all-reduced mean the big
one: |G_b|^2 = mean_r |g_r|^2 and |G_B|^2 = |mean_r g_r|^2 at the first minibatch of a
measured iteration, before any optimizer step, with no extra backward pass. ``GradSync``
averages the gradients (a ``grad_hook`` of ``agents.ppo_update``) and keeps those norms;
``FreeNoiseScale`` turns them into the tracked columns of ``rl.measure.ppo_noise``.
See docs/scale-out.md and docs/noise-scale.md.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch

from agents import PPOConfig
from rl.measure.gns import GNSSample, GNSTracker, adam_preconditioner, two_batch_estimate
from rl.measure.ppo_noise import adam_has_state, tracker_columns
from rl.measure.warmup import after_warmup


def param_parts(model: torch.nn.Module, ppo: PPOConfig) -> tuple[list[str], tuple[str, ...]]:
    """Per trainable parameter: "policy", "value" or "shared"; and the terms measurable."""
    parts = []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        top = name.split(".", 1)[0]
        parts.append("policy" if top in ("actor_trunk", "policy_head")
                     else "value" if top in ("critic_trunk", "value_head") else "shared")
    separate = ("shared" not in parts and "policy" in parts and "value" in parts
                and getattr(model, "shared_trunk", True) is False)
    terms = ("total", "policy", "value") if separate and ppo.ent_coef == 0 and ppo.vf_coef > 0 \
        else ("total",)
    return parts, terms


class GradSync:
    """``grad_hook`` for ``ppo_update``: averages the gradients over ranks.

    With ``measure`` set, its first call (the first minibatch of the iteration) also keeps,
    per parameter part, the mean over ranks of |g_r|^2 and |mean_r g_r|^2 (float64), in
    ``self.small`` and ``self.big``; ``divisors`` (Adam's sqrt(v_hat) + eps per parameter)
    precondition those norms, not the training gradient.
    """

    def __init__(self, comm, parts: Sequence[str], measure: bool = False,
                 divisors: Sequence[torch.Tensor] | None = None):
        self.comm, self.parts, self.measure, self.divisors = comm, list(parts), measure, divisors
        self.names = sorted(set(self.parts))
        self.calls = 0
        self.small: dict[str, float] | None = None
        self.big: dict[str, float] | None = None
        self.seconds = 0.0

    def _sq_norms(self, grads: Sequence[torch.Tensor]) -> torch.Tensor:
        sums = [torch.zeros((), dtype=torch.float64, device=grads[0].device) for _ in self.names]
        for j, (g, part) in enumerate(zip(grads, self.parts, strict=True)):
            g = g.detach().to(torch.float64)
            if self.divisors is not None:
                g = g / self.divisors[j]
            sums[self.names.index(part)] += g.square().sum()
        return torch.stack(sums)

    def __call__(self, params: list[torch.Tensor]) -> None:
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        measuring = self.measure and self.calls == 0
        if measuring:
            start = time.perf_counter()
            local = self._sq_norms(grads)
        flat = torch.cat([g.reshape(-1) for g in grads])
        self.comm.all_reduce_sum(flat)
        flat /= self.comm.size
        offset = 0
        for p in params:
            n = p.numel()
            view = flat[offset:offset + n].view_as(p)
            if p.grad is None:
                p.grad = view.clone()
            else:
                p.grad.copy_(view)
            offset += n
        if measuring:
            small = self.comm.all_reduce_sum(local) / self.comm.size
            big = self._sq_norms([p.grad for p in params])
            self.small = dict(zip(self.names, small.tolist(), strict=True))
            self.big = dict(zip(self.names, big.tolist(), strict=True))
            self.seconds = time.perf_counter() - start
        self.calls += 1


class FreeNoiseScale:
    """The data-parallel noise-scale estimate: cadence, trackers (one per term), metrics.

    See the module docstring for the definition. ``terms`` are the loss terms measurable
    for the model (``total``, and ``policy``/``value`` for separate actor and critic). As
    the loop's ``NoiseScale`` (``rl.train.protocols``, built by ``for_ranks``):
    ``before_update`` gives the update's ``GradSync``, ``after_update`` its columns.
    """

    def __init__(self, every: int, terms: Sequence[str], preconditioned: bool = False, *,
                 vf_coef: float = 0.5, beta: float = 0.99, window: int = 100,
                 comm: Any = None, parts: Sequence[str] = ()):
        self.comm, self.parts = comm, list(parts)
        self.every = every
        self.terms = tuple(terms)
        self.preconditioned = bool(preconditioned)
        self.vf_coef = vf_coef
        self.trackers = {t: GNSTracker(beta=beta, window=window) for t in self.terms}
        self.track = True  # whether the measurement in flight is past the warm-up

    @classmethod
    def for_ranks(cls, comm: Any, model: torch.nn.Module, ppo: PPOConfig, every: int,
                  preconditioned: bool = False) -> FreeNoiseScale:
        """The estimate of ``comm``'s ranks training ``model`` (its parts and terms)."""
        parts, terms = param_parts(model, ppo)
        return cls(every, terms, preconditioned, vf_coef=ppo.vf_coef, comm=comm, parts=parts)

    def due(self, iteration: int) -> bool:
        return self.every > 0 and iteration % self.every == 0

    def before_update(self, iteration: int, model: torch.nn.Module, optimizer,
                      ppo: PPOConfig, buffer, advantages, returns, mask
                      ) -> tuple[dict[str, float], GradSync]:
        """(columns, the update's ``GradSync``): it averages the gradients over the ranks
        and, on a measured iteration, keeps the norms ``after_update`` estimates from."""
        sync, skipped = self.hook(self.comm, self.parts, iteration, optimizer)
        return ({"gns/skipped": 1} if skipped else {}), sync

    def after_update(self, grad_hook: GradSync, buffer, ppo: PPOConfig) -> dict[str, float]:
        """The estimate's columns from the update's first minibatch (none if not measured)."""
        if not grad_hook.measure:
            return {}
        mb = buffer.num_envs * buffer.num_steps // ppo.num_minibatches
        return self.record(grad_hook, mb, self.comm.size, ppo.num_minibatches == 1,
                           seconds=grad_hook.seconds)

    def hook(self, comm, parts: Sequence[str], iteration: int,
             optimizer) -> tuple[GradSync, bool]:
        """The iteration's GradSync, and whether the measurement was skipped (no Adam state)."""
        if not self.due(iteration):
            return GradSync(comm, parts), False
        self.track = after_warmup(iteration)  # read by ``record`` once the update has run
        divisors = None
        if self.preconditioned:
            if not adam_has_state(optimizer):
                return GradSync(comm, parts), True
            params = [p for g in optimizer.param_groups for p in g["params"]]
            divisors = adam_preconditioner(optimizer).divisors(params)
        return GradSync(comm, parts, measure=True, divisors=divisors), False

    def samples(self, sync: GradSync, small_batch_size: int, world: int) -> dict[str, GNSSample]:
        small, big = sync.small, sync.big
        sums = {"total": (sum(small.values()), sum(big.values()))}
        if "policy" in self.terms:
            sums["policy"] = (small["policy"], big["policy"])
            c = self.vf_coef ** 2
            sums["value"] = (small["value"] / c, big["value"] / c)
        out = {}
        for term in self.terms:
            s, b = sums[term]
            g2, trace = two_batch_estimate(small_batch_size, s, world * small_batch_size, b)
            out[term] = GNSSample(g2=float(g2), trace_sigma=float(trace),
                                  small_batch_size=small_batch_size,
                                  big_batch_size=world * small_batch_size, small_sq_norm=s,
                                  big_sq_norm=b, num_groups=world,
                                  preconditioned=sync.divisors is not None)
        return out

    def record(self, sync: GradSync, small_batch_size: int, world: int, whole_envs: bool,
               seconds: float) -> dict[str, float]:
        row = tracker_columns(self.trackers, self.samples(sync, small_batch_size, world),
                              track=self.track)
        row.update({
            "gns/small_batch_size": small_batch_size,
            "gns/big_batch_size": world * small_batch_size,
            "gns/groups": world,
            "gns/split_envs": int(whole_envs),
            "gns/preconditioned": int(sync.divisors is not None),
            "gns/data_parallel": 1,
            "gns/seconds": seconds,
        })
        return row

    def state_dict(self) -> dict[str, Any]:
        return {"free": True, "terms": list(self.terms), "preconditioned": self.preconditioned,
                "trackers": {t: tr.state_dict() for t, tr in self.trackers.items()}}

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        if not state or not state.get("free") or state["preconditioned"] != self.preconditioned:
            return
        for term, tracker in self.trackers.items():
            if term in state["trackers"]:
                tracker.load_state_dict(state["trackers"][term])
