"""PPO with a clipped surrogate objective (Schulman et al. 2017): config, masked loss, update.

Masking: every batch carries a float ``mask`` (1 for real transitions, 0 for the auto-reset
steps whose action the vector env ignored). Every mean in the loss is the masked mean
``sum(x * mask) / sum(mask)``; masked samples are also neutralized before any arithmetic, so
arbitrary (even infinite) values stored for them cannot leak into the loss or its gradient.

Advantages: ``ppo_loss`` uses advantages exactly as given. ``ppo_update`` normalizes them per
minibatch (masked mean and std) when ``cfg.norm_adv``; callers that need whole-batch
normalization (the noise-scale measurement) call ``normalize_advantages`` themselves and then
``ppo_loss``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any, NamedTuple

import torch
from torch import nn

__all__ = [
    "BATCH_KEYS",
    "PPOBatch",
    "PPOConfig",
    "PPOLossTerms",
    "learning_rate_at",
    "make_optimizer",
    "masked_mean",
    "normalize_advantages",
    "ppo_loss",
    "ppo_update",
    "set_learning_rate",
]

BATCH_KEYS = ("obs", "actions", "logprobs", "values", "advantages", "returns", "mask")
"""Fields a PPO batch must carry (flat: leading axis = sample)."""


@dataclass
class PPOConfig:
    """PPO hyperparameters; defaults are the common Atari reference settings (docs/design.md)."""

    learning_rate: float = 2.5e-4
    """Adam learning rate at the start of training (annealed linearly to 0 if anneal_lr)."""
    anneal_lr: bool = True
    """Anneal the learning rate linearly from learning_rate to 0 over the training iterations."""
    num_epochs: int = 4
    """Passes over each rollout batch per PPO iteration."""
    num_minibatches: int = 4
    """Minibatches per epoch; the rollout batch size must be divisible by it."""
    gamma: float = 0.99
    """Discount factor, in [0, 1]."""
    gae_lambda: float = 0.95
    """GAE lambda, in [0, 1]."""
    clip_coef: float = 0.1
    """Surrogate clipping coefficient epsilon (also the value clipping range)."""
    clip_value_loss: bool = True
    """Clip the value prediction to within clip_coef of the old value (pessimistic max)."""
    ent_coef: float = 0.01
    """Weight of the entropy bonus in the total loss."""
    vf_coef: float = 0.5
    """Weight of the value loss in the total loss."""
    max_grad_norm: float = 0.5
    """Clip the global gradient norm to this value before each optimizer step."""
    norm_adv: bool = True
    """Normalize advantages per minibatch (masked mean/std) in ppo_update."""
    adam_eps: float = 1e-5
    """Adam epsilon."""
    target_kl: float | None = None
    """Stop the iteration's updates once a minibatch's approx KL exceeds this (None: never)."""

    def validate(self, rollout_batch_size: int) -> None:
        """Raise ValueError naming the bad setting (and a fix) for a rollout of this size."""
        b = rollout_batch_size
        if isinstance(b, bool) or not isinstance(b, int) or b < 1:
            raise ValueError(
                f"rollout batch size must be a positive integer (num_envs x num_steps), got {b!r}"
            )
        for f in fields(self):  # every number finite (inf/nan pass the range checks below)
            value = getattr(self, f.name)
            if value is None or isinstance(value, bool):
                continue
            if not isinstance(value, (int, float)):
                raise ValueError(f"{f.name} must be a number, got {value!r}")
            _require(math.isfinite(value), f"{f.name} must be a finite number, got {value}")
        _require(self.learning_rate > 0, f"learning_rate must be > 0, got {self.learning_rate}")
        _require(
            _is_int(self.num_epochs) and self.num_epochs >= 1,
            f"num_epochs must be an integer >= 1, got {self.num_epochs!r}",
        )
        _require(
            _is_int(self.num_minibatches) and self.num_minibatches >= 1,
            f"num_minibatches must be an integer >= 1, got {self.num_minibatches!r}",
        )
        k = self.num_minibatches
        if k > b:
            raise ValueError(
                f"num_minibatches={k} exceeds the rollout batch size {b} (num_envs x num_steps); "
                f"use num_minibatches <= {b}, e.g. one of {_divisors_near(b, k)}"
            )
        if b % k:
            lower = b - b % k
            upper = lower + k
            nearby = ", ".join(str(x) for x in (lower, upper) if x > 0)
            raise ValueError(
                f"rollout batch size {b} (num_envs x num_steps) is not divisible by "
                f"num_minibatches={k} (would leave {b % k} samples over); use num_minibatches in "
                f"{_divisors_near(b, k)}, or a rollout batch size that is a multiple of {k} "
                f"(e.g. {nearby})"
            )
        _require(0.0 <= self.gamma <= 1.0, f"gamma must be in [0, 1], got {self.gamma}")
        _require(
            0.0 <= self.gae_lambda <= 1.0, f"gae_lambda must be in [0, 1], got {self.gae_lambda}"
        )
        _require(self.clip_coef > 0, f"clip_coef must be > 0, got {self.clip_coef}")
        _require(self.ent_coef >= 0, f"ent_coef must be >= 0, got {self.ent_coef}")
        _require(self.vf_coef >= 0, f"vf_coef must be >= 0, got {self.vf_coef}")
        _require(self.max_grad_norm > 0, f"max_grad_norm must be > 0, got {self.max_grad_norm}")
        _require(self.adam_eps > 0, f"adam_eps must be > 0, got {self.adam_eps}")
        _require(
            self.target_kl is None or self.target_kl > 0,
            f"target_kl must be > 0 or None (no early stop), got {self.target_kl}",
        )

    def minibatch_size(self, rollout_batch_size: int) -> int:
        """Samples per minibatch for a rollout of this size (validates first)."""
        self.validate(rollout_batch_size)
        return rollout_batch_size // self.num_minibatches


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _divisors_near(n: int, k: int, count: int = 6) -> list[int]:
    divs: set[int] = set()
    for d in range(1, math.isqrt(n) + 1):
        if n % d == 0:
            divs.update((d, n // d))
    return sorted(sorted(divs, key=lambda d: (abs(d - k), d))[:count])


class PPOLossTerms(NamedTuple):
    """Scalar tensors of one loss evaluation.

    ``policy_loss``, ``value_loss``, ``entropy`` and ``total`` carry gradients (so the policy
    and value terms can be differentiated separately); ``approx_kl`` and ``clip_fraction``
    are detached diagnostics.
    """

    policy_loss: torch.Tensor
    value_loss: torch.Tensor
    entropy: torch.Tensor
    total: torch.Tensor
    approx_kl: torch.Tensor
    clip_fraction: torch.Tensor


@dataclass
class PPOBatch:
    """Flat tensors of a PPO batch; all share the leading (sample) axis.

    obs: raw observations; actions: int64; logprobs and values: from the rollout policy;
    advantages, returns: GAE outputs; mask: float, 1 for real transitions, 0 for ignored
    auto-reset steps.
    """

    obs: torch.Tensor
    actions: torch.Tensor
    logprobs: torch.Tensor
    values: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor
    mask: torch.Tensor

    @classmethod
    def from_any(cls, batch: PPOBatch | Mapping[str, torch.Tensor] | Any) -> PPOBatch:
        """Accept a PPOBatch, a mapping with BATCH_KEYS, or an object with those attributes."""
        if isinstance(batch, PPOBatch):
            return batch
        getter = batch.__getitem__ if isinstance(batch, Mapping) else lambda k: getattr(batch, k)
        try:
            values = {k: getter(k) for k in BATCH_KEYS}
        except (KeyError, AttributeError) as exc:
            raise ValueError(
                f"PPO batch is missing {exc}; it needs the fields {', '.join(BATCH_KEYS)}"
            ) from None
        return cls(**values)

    def __len__(self) -> int:
        return int(self.actions.shape[0])

    def index(self, idx: torch.Tensor) -> PPOBatch:
        """The samples at ``idx`` (an index tensor) as a new batch.

        A 1-D integer ``idx`` must hold indices in ``[0, len)`` (``index_select``, which
        raises on negative ones); anything else (masks, other shapes) is advanced indexing.
        """
        if idx.dim() != 1 or idx.dtype not in (torch.int64, torch.int32):
            return PPOBatch(**{f.name: getattr(self, f.name)[idx] for f in fields(self)})
        # index_select: the same rows as x[idx], without advanced indexing's general
        # machinery (3x faster for small rows; 8x for a minibatch of uint8 Atari frames).
        return PPOBatch(**{f.name: getattr(self, f.name).index_select(0, idx)
                           for f in fields(self)})


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``sum(x * mask) / sum(mask)``; 0 when the mask is all zero. ``x`` must be finite."""
    mask = mask.to(x.dtype)
    return (x * mask).sum() / mask.sum().clamp_min(1e-8)


def normalize_advantages(
    adv: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8
) -> torch.Tensor:
    """(adv - mean) / (std + eps) with masked mean and (unbiased) std; masked entries -> 0."""
    keep = mask > 0
    w = mask.to(adv.dtype)
    a = torch.where(keep, adv, torch.zeros_like(adv))
    n = w.sum()
    mean = (a * w).sum() / n.clamp_min(1e-8)
    centred = torch.where(keep, a - mean, torch.zeros_like(a))
    var = (centred.square() * w).sum() / (n - 1.0).clamp_min(1.0)
    return torch.where(keep, centred / (var.sqrt() + eps), torch.zeros_like(a))


def ppo_loss(
    model: nn.Module, batch: PPOBatch | Mapping[str, torch.Tensor], cfg: PPOConfig
) -> PPOLossTerms:
    """Clipped-surrogate PPO loss with masked means; advantages are used as given.

    ``model.evaluate(obs, actions)`` must return ``(logprob, entropy, value)``, each (N,).
    total = policy_loss - ent_coef * entropy + vf_coef * value_loss, where
    policy_loss = mean(max(-A r, -A clip(r, 1-c, 1+c))), r = exp(logp - logp_old), and
    value_loss = 0.5 * mean(max((v-R)^2, (v_old + clip(v-v_old, -c, c) - R)^2)) when
    clip_value_loss, else 0.5 * mean((v-R)^2).
    """
    b = PPOBatch.from_any(batch)
    newlogp, entropy, newvalue = model.evaluate(b.obs, b.actions)
    mask = b.mask.to(newlogp.dtype)
    keep = mask > 0
    zero = torch.zeros_like(newlogp)
    c = cfg.clip_coef

    # Neutralize masked samples so non-finite stored values cannot produce NaNs (x * 0).
    logratio = torch.where(keep, newlogp - b.logprobs.to(newlogp.dtype), zero)
    ratio = logratio.exp()
    adv = torch.where(keep, b.advantages.to(newlogp.dtype), zero)
    returns = torch.where(keep, b.returns.to(newvalue.dtype), newvalue.detach())
    old_values = torch.where(keep, b.values.to(newvalue.dtype), newvalue.detach())
    entropy = torch.where(keep, entropy, zero)

    surrogate = torch.maximum(-adv * ratio, -adv * ratio.clamp(1.0 - c, 1.0 + c))
    policy_loss = masked_mean(surrogate, mask)

    value_err = (newvalue - returns).square()
    if cfg.clip_value_loss:
        clipped = old_values + (newvalue - old_values).clamp(-c, c)
        value_err = torch.maximum(value_err, (clipped - returns).square())
    value_loss = 0.5 * masked_mean(value_err, mask)

    entropy_mean = masked_mean(entropy, mask)
    total = policy_loss - cfg.ent_coef * entropy_mean + cfg.vf_coef * value_loss

    with torch.no_grad():
        approx_kl = masked_mean((ratio - 1.0) - logratio, mask)
        clip_fraction = masked_mean(((ratio - 1.0).abs() > c).to(ratio.dtype), mask)
    return PPOLossTerms(policy_loss, value_loss, entropy_mean, total, approx_kl, clip_fraction)


def make_optimizer(model: nn.Module, cfg: PPOConfig) -> torch.optim.Adam:
    """Adam over all model parameters at cfg.learning_rate with eps=cfg.adam_eps.

    Uses torch's fused Adam kernel (one kernel for all parameters instead of about ten ops
    per parameter; the same update up to float rounding) where every parameter is a
    floating-point vector or matrix on the CPU or a CUDA device (the MLP), torch's default
    implementation elsewhere. Not for convolution weights: the fused kernel walks raw memory,
    and silently mixes up elements when a weight, its gradient and its Adam state are not all
    in the same memory format (channels-last weights with moments saved from a
    channels-first run, for example), which the per-tensor implementation handles.
    """
    params = list(model.parameters())
    fused = bool(params) and all(
        p.is_floating_point() and p.dim() <= 2 and p.device.type in ("cpu", "cuda")
        for p in params
    )
    return torch.optim.Adam(params, lr=cfg.learning_rate, eps=cfg.adam_eps,
                            fused=True if fused else None)


def learning_rate_at(cfg: PPOConfig, iteration: int, total_iterations: int) -> float:
    """Learning rate for 0-based PPO ``iteration``: lr * (1 - iteration / total) if annealed."""
    if total_iterations < 1:
        raise ValueError(f"total_iterations must be >= 1, got {total_iterations}")
    if not 0 <= iteration <= total_iterations:
        raise ValueError(
            f"iteration must be in [0, {total_iterations}] (0-based), got {iteration}"
        )
    if not cfg.anneal_lr:
        return cfg.learning_rate
    return cfg.learning_rate * (1.0 - iteration / total_iterations)


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set ``lr`` on every parameter group."""
    for group in optimizer.param_groups:
        group["lr"] = lr


def ppo_update(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batch: PPOBatch | Mapping[str, torch.Tensor],
    cfg: PPOConfig,
    generator: torch.Generator,
    grad_hook: Callable[[list[torch.Tensor]], None] | None = None,
) -> dict[str, float]:
    """One PPO iteration's optimization: num_epochs x num_minibatches clipped-gradient steps.

    Each epoch draws a permutation from ``generator`` (randperm runs on the generator's device,
    the indices are moved to the batch's device). With ``cfg.target_kl`` set, the loop stops,
    without stepping, at the first minibatch whose approx KL exceeds it. The learning rate is
    the caller's (see ``learning_rate_at`` and ``set_learning_rate``).

    ``grad_hook``, if given, is called after every backward pass and before gradient clipping
    and the optimizer step, with the list of trainable parameters (their ``.grad`` filled in);
    it may read or replace the gradients (data-parallel training all-reduces them there).

    Returns means over the minibatches that took a step: policy_loss, value_loss, entropy,
    total_loss, approx_kl, clip_fraction, grad_norm (before clipping); plus
    num_optimizer_steps and early_stopped (0.0 or 1.0).
    """
    b = PPOBatch.from_any(batch)
    n = len(b)
    mb_size = cfg.minibatch_size(n)
    device = b.actions.device
    params = [p for p in model.parameters() if p.requires_grad]
    names = ("policy_loss", "value_loss", "entropy", "total_loss", "approx_kl", "clip_fraction")
    history: list[torch.Tensor] = []
    early_stopped = False

    for _ in range(cfg.num_epochs):
        perm = torch.randperm(n, generator=generator, device=generator.device).to(device)
        for start in range(0, n, mb_size):
            mb = b.index(perm[start : start + mb_size])
            if cfg.norm_adv:
                mb.advantages = normalize_advantages(mb.advantages, mb.mask)
            terms = ppo_loss(model, mb, cfg)
            if cfg.target_kl is not None and float(terms.approx_kl) > cfg.target_kl:
                early_stopped = True
                break
            optimizer.zero_grad(set_to_none=True)
            terms.total.backward()
            if grad_hook is not None:
                grad_hook(params)
            grad_norm = nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
            optimizer.step()
            history.append(
                torch.stack(
                    [
                        terms.policy_loss.detach(),
                        terms.value_loss.detach(),
                        terms.entropy.detach(),
                        terms.total.detach(),
                        terms.approx_kl,
                        terms.clip_fraction,
                        grad_norm.detach().to(terms.total.dtype),
                    ]
                )
            )
        if early_stopped:
            break

    stats: dict[str, float] = {}
    if history:
        means = torch.stack(history).mean(dim=0).tolist()
        stats.update(zip((*names, "grad_norm"), means, strict=True))
    else:
        stats.update({k: float("nan") for k in (*names, "grad_norm")})
    stats["num_optimizer_steps"] = len(history)
    stats["early_stopped"] = float(early_stopped)
    return stats
