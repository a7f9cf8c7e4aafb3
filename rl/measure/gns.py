"""Gradient noise scale: the "simple" noise scale B_simple of McCandlish et al. (2018).

See docs/noise-scale.md for the full description.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple, Protocol

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call, jacrev, vmap

__all__ = [
    "AdamPreconditioner",
    "GNSSample",
    "GNSTracker",
    "GroupEstimate",
    "Preconditioner",
    "adam_preconditioner",
    "measure",
    "per_example_measure",
    "two_batch_estimate",
]


# ---------------------------------------------------------------------------------------------
# The estimator
# ---------------------------------------------------------------------------------------------


def two_batch_estimate(small_batch_size, small_sq_norm, big_batch_size, big_sq_norm):
    """Unbiased estimates of |G|^2 and tr(Sigma) from two batch-gradient norms.

    Args:
        small_batch_size: b, the number of samples in the small batch (a positive scalar).
        small_sq_norm: |G_b|^2, squared norm of the small-batch mean gradient (or its mean
            over several small batches, which keeps the estimate unbiased).
        big_batch_size: B > b, the number of samples in the big batch (a positive scalar).
        big_sq_norm: |G_B|^2, squared norm of the big-batch mean gradient.

    Returns:
        ``(g2, trace_sigma)`` with

            g2          = (B |G_B|^2 - b |G_b|^2) / (B - b)
            trace_sigma = (|G_b|^2 - |G_B|^2) / (1/b - 1/B).

        The norms may be Python floats, numpy arrays or torch tensors (the result has the
        same type, elementwise); the batch sizes must be scalars. Either estimate can be
        negative for a single draw; that is expected and must not be clipped.

    Raises:
        ValueError: if a batch size is not a positive finite number or b >= B.
    """
    b = _positive_size(small_batch_size, "small_batch_size")
    big = _positive_size(big_batch_size, "big_batch_size")
    if not b < big:
        raise ValueError(
            f"the small batch must be smaller than the big batch, got small_batch_size={b:g} "
            f"and big_batch_size={big:g}"
        )
    g2 = (big * big_sq_norm - b * small_sq_norm) / (big - b)
    trace_sigma = (small_sq_norm - big_sq_norm) / (1.0 / b - 1.0 / big)
    return g2, trace_sigma


def _positive_size(value, name: str) -> float:
    try:
        size = float(value)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be a positive scalar, got {value!r}") from err
    if not (math.isfinite(size) and size > 0):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return size


def _ratio(numerator: float, denominator: float) -> float:
    """numerator / denominator with IEEE semantics (inf or nan on a zero denominator)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.float64(numerator) / np.float64(denominator))


# ---------------------------------------------------------------------------------------------
# One measurement
# ---------------------------------------------------------------------------------------------


class GroupEstimate(NamedTuple):
    """Two-batch estimate restricted to one parameter group (unpacks as (g2, trace_sigma))."""

    g2: float
    trace_sigma: float


@dataclass(frozen=True)
class GNSSample:
    """One two-batch measurement of the gradient noise scale at fixed parameters.

    Attributes:
        g2: unbiased estimate of |G|^2 (may be negative).
        trace_sigma: unbiased estimate of tr(Sigma) (may be negative, rarely).
        small_batch_size: b, samples per group.
        big_batch_size: B = K b, samples in the union of the groups.
        small_sq_norm: mean over groups of |g_k|^2.
        big_sq_norm: |mean_k g_k|^2.
        num_groups: K.
        groups: per-parameter-group breakdown, name -> GroupEstimate(g2, trace_sigma). Squared
            norms add over disjoint parameter sets and the estimator is linear in them, so
            the breakdown sums to the totals.
        preconditioned: whether gradients were divided by a preconditioner (e.g. Adam's
            sqrt(v_hat) + eps) before taking norms.
        assumes_independent_samples: True for ``per_example_measure``: b = 1 with samples
            treated as independent, a diagnostic only (wrong for time-correlated rollouts).
    """

    g2: float
    trace_sigma: float
    small_batch_size: int
    big_batch_size: int
    small_sq_norm: float
    big_sq_norm: float
    num_groups: int
    groups: dict[str, GroupEstimate] = field(default_factory=dict)
    preconditioned: bool = False
    assumes_independent_samples: bool = False

    @property
    def b_simple(self) -> float:
        """trace_sigma / g2 of this single sample.

        May be negative or infinite. Single-sample ratios are biased and heavy-tailed: do
        not average them; average g2 and trace_sigma separately (``GNSTracker``).
        """
        return _ratio(self.trace_sigma, self.g2)

    def as_dict(self) -> dict[str, Any]:
        """Flat dict for logging, including ``b_simple`` and ``groups`` as plain tuples."""
        out = asdict(self)
        out["groups"] = {name: tuple(est) for name, est in self.groups.items()}
        out["b_simple"] = self.b_simple
        return out


class Preconditioner(Protocol):
    """Anything that returns, for each parameter, the tensor its gradient is divided by."""

    def divisors(self, params: Sequence[Tensor]) -> list[Tensor]: ...


class AdamPreconditioner:
    """Divide each gradient elementwise by Adam's denominator sqrt(v_hat) + eps.

    v_hat = exp_avg_sq / (1 - beta2^step) is the bias-corrected second moment that
    ``torch.optim.Adam`` / ``AdamW`` keep in their state (``max_exp_avg_sq`` with amsgrad).
    The state is read each time ``divisors`` is called, so one object can serve a whole run.
    Adam's first moment (momentum) is not part of the preconditioner.

    The noise scale of preconditioned gradients, tr(P Sigma P) / |P G|^2 with
    P = diag(1 / (sqrt(v_hat) + eps)), is the one relevant to an optimizer that steps along
    P g. Before the optimizer's first step there is no second moment: ``divisors`` then
    raises ValueError rather than silently measuring unpreconditioned gradients.
    """

    def __init__(self, optimizer: torch.optim.Optimizer):
        self.optimizer = optimizer

    def divisors(self, params: Sequence[Tensor]) -> list[Tensor]:
        group_of_param = {id(p): g for g in self.optimizer.param_groups for p in g["params"]}
        out = []
        for i, p in enumerate(params):
            if id(p) not in group_of_param:
                raise ValueError(f"parameter {i} (shape {tuple(p.shape)}) is not in the optimizer")
            group = group_of_param[id(p)]
            state = self.optimizer.state.get(p, {})
            key = "max_exp_avg_sq" if group.get("amsgrad", False) else "exp_avg_sq"
            if key not in state or "step" not in state or float(state["step"]) < 1:
                raise ValueError(
                    "the Adam optimizer has no second-moment state yet (no optimizer step "
                    "taken): take one step before measuring with adam_preconditioner(), or "
                    "measure without a preconditioner"
                )
            beta2 = float(group["betas"][1])
            bias_correction = 1.0 - beta2 ** float(state["step"])
            v_hat = state[key].detach().to(torch.float64) / bias_correction
            out.append(v_hat.sqrt() + float(group["eps"]))
        return out


def adam_preconditioner(optimizer: torch.optim.Optimizer) -> AdamPreconditioner:
    """Preconditioner from a ``torch.optim.Adam``/``AdamW`` state: g -> g / (sqrt(v_hat) + eps).

    Use as ``measure(model, loss_fn, batches, preconditioner=adam_preconditioner(opt))``.
    """
    return AdamPreconditioner(optimizer)


LossFn = Callable[[nn.Module, Any], "Tensor | Mapping[str, Tensor]"]


def measure(
    model: nn.Module,
    loss_fn: LossFn,
    batches: Sequence[Any],
    params: Sequence[Tensor] | None = None,
    *,
    group_size: int | None = None,
    preconditioner: Preconditioner | None = None,
    group_of: Callable[[str], str] | None = None,
) -> GNSSample | dict[str, GNSSample]:
    """Two-batch noise-scale measurement from K >= 2 equal-size groups at the current parameters.

    For every group k, ``loss_fn(model, batches[k])`` must return the *mean* loss over that
    group's samples: a scalar tensor, or a dict of named scalar tensors (e.g. ``{"total":
    ..., "policy": ..., "value": ...}``). Each term's gradient g_k is taken separately with
    ``torch.autograd.grad``; a term that does not depend on a parameter has zero gradient
    there. Then, per term,

        small_sq_norm = mean_k |g_k|^2          (small batch, b = group size)
        big_sq_norm   = |mean_k g_k|^2          (big batch, B = K b, the union of the groups)

    and ``two_batch_estimate`` turns them into (g2, trace_sigma). No optimizer step is
    taken, parameters and their ``.grad`` are left untouched, and the model's train/eval mode
    is whatever the caller set. For rollouts, split groups along the environment axis (see
    the module docstring) and normalize advantages with whole-batch statistics.

    Args:
        model: the torch module; also names the parameters.
        loss_fn: ``loss_fn(model, group) -> Tensor | dict[str, Tensor]``.
        batches: the K groups, each passed as-is to ``loss_fn``.
        params: tensors to differentiate with respect to; default all parameters of
            ``model`` with ``requires_grad``.
        group_size: samples per group, b. If None it is inferred as the leading dimension of
            a group that is a tensor/array, or the common leading dimension of the
            tensors/arrays directly inside a group that is a tuple, list or dict; every group
            must give the same value. ``len(group)`` is never used: for ``(obs, actions)`` or
            a dict of fields it counts fields, not samples.
        preconditioner: e.g. ``adam_preconditioner(optimizer)``; each gradient is divided
            elementwise by its ``divisors`` before norms are taken.
        group_of: maps a parameter name to its breakdown group. Default: the top-level child
            module (the first component of the dotted name, so ``"pi.weight"`` -> ``"pi"``;
            a parameter registered on the root module is its own group).

    Returns:
        A ``GNSSample`` for a scalar loss, or a dict ``term -> GNSSample`` (same keys as the
        loss dict) for a dict loss.
    """
    batches = list(batches)
    num_groups = len(batches)
    if num_groups < 2:
        raise ValueError(f"measure() needs at least 2 groups, got {num_groups}")
    if group_size is None:
        group_size = _infer_group_size(batches)
    elif int(group_size) != group_size or group_size < 1:
        raise ValueError(f"group_size must be a positive integer, got {group_size!r}")
    group_size = int(group_size)

    names, tensors = _select_params(model, params)
    group_names = [(group_of or _top_level_name)(name) for name in names]
    divisors = preconditioner.divisors(tensors) if preconditioner is not None else None

    moments: dict[str | None, _GradientMoments] = {}
    with torch.enable_grad():
        for k, group in enumerate(batches):
            losses = _as_loss_dict(loss_fn(model, group))
            if k > 0 and list(losses) != list(moments):
                raise ValueError(
                    f"loss_fn returned terms {list(losses)} for group {k}, "
                    f"but {list(moments)} for group 0"
                )
            for i, (term, loss) in enumerate(losses.items()):
                if loss.requires_grad:
                    grads = torch.autograd.grad(
                        loss, tensors, retain_graph=i < len(losses) - 1, allow_unused=True
                    )
                else:  # a term that depends on none of the parameters
                    grads = (None,) * len(tensors)
                if term not in moments:
                    moments[term] = _GradientMoments(tensors, group_names)
                moments[term].add([None if g is None else g.unsqueeze(0) for g in grads], divisors)

    samples = {
        term: m.sample(group_size, preconditioned=divisors is not None)
        for term, m in moments.items()
    }
    return samples[None] if None in samples else samples


def per_example_measure(
    model: nn.Module,
    loss_fn_single: Callable[..., Tensor | Mapping[str, Tensor]],
    *inputs: Tensor,
    params: Sequence[Tensor] | None = None,
    preconditioner: Preconditioner | None = None,
    group_of: Callable[[str], str] | None = None,
    chunk_size: int | None = None,
) -> GNSSample | dict[str, GNSSample]:
    """Diagnostic b = 1 estimate from per-example gradients. ASSUMES INDEPENDENT SAMPLES.

    Every one of the N examples is its own small batch (b = 1) and the big batch is all of
    them (B = N). This is the textbook estimator only when the examples are independent; for
    RL rollouts, where steps of one environment are correlated in time, it misjudges the
    noise that matters for batch-mean gradients (with positive autocorrelation it
    underestimates it). Use ``measure`` with groups split along the environment axis for the
    real measurement. The returned samples have ``assumes_independent_samples=True``.

    Per-example gradients use ``torch.func`` (``functional_call`` + ``jacrev`` + ``vmap``).

    Args:
        model: the torch module.
        loss_fn_single: ``loss_fn_single(model, *example) -> Tensor | dict[str, Tensor]`` for
            ONE example: each input arrives without its leading (batch) dimension, so add one
            (``x.unsqueeze(0)``) if the model needs it. The model's parameters are swapped
            for functional ones during the call. Modules that mix examples (BatchNorm in
            training mode) or draw random numbers (dropout) are not supported by vmap.
        *inputs: tensors sharing a leading dimension N >= 2.
        params: parameters of ``model`` to differentiate with respect to (default: all with
            ``requires_grad``); each must be a registered parameter of ``model``.
        preconditioner, group_of: as in ``measure``.
        chunk_size: examples per vmap call (default: all at once); bounds memory, which is
            N x (number of parameters) per chunk.

    Returns:
        Like ``measure``: a ``GNSSample`` (b = 1, B = N) or a dict term -> ``GNSSample``.
    """
    sizes = {int(x.shape[0]) for x in inputs if isinstance(x, Tensor) and x.dim() > 0}
    if len(inputs) == 0 or len(sizes) != 1 or not all(isinstance(x, Tensor) for x in inputs):
        raise ValueError("inputs must be one or more tensors with the same leading dimension")
    num_examples = sizes.pop()
    if num_examples < 2:
        raise ValueError(f"per_example_measure() needs at least 2 examples, got {num_examples}")
    names, tensors = _select_params(model, params)
    registered = {id(p) for p in model.parameters()}
    if any(id(t) not in registered for t in tensors):
        raise ValueError("per_example_measure() params must be registered parameters of model")
    group_names = [(group_of or _top_level_name)(name) for name in names]
    divisors = preconditioner.divisors(tensors) if preconditioner is not None else None

    wrapper = _LossModule(model, loss_fn_single)
    functional_params = {"model." + n: t.detach() for n, t in zip(names, tensors, strict=True)}

    def loss_of_params(p, *example):
        return functional_call(wrapper, p, example)

    per_example_grads = vmap(jacrev(loss_of_params), in_dims=(None,) + (0,) * len(inputs))
    step = chunk_size or num_examples
    moments: dict[str | None, _GradientMoments] = {}
    with torch.no_grad():  # torch.func.grad ignores the outer no_grad; this stops outer graphs
        for start in range(0, num_examples, step):
            chunk = [x[start : start + step] for x in inputs]
            out = per_example_grads(functional_params, *chunk)
            by_term = out if _is_term_dict(out) else {None: out}
            for term, grads in by_term.items():
                if term not in moments:
                    moments[term] = _GradientMoments(tensors, group_names)
                moments[term].add([grads["model." + n] for n in names], divisors)

    samples = {
        term: m.sample(1, preconditioned=divisors is not None, independent=True)
        for term, m in moments.items()
    }
    return samples[None] if None in samples else samples


class _LossModule(nn.Module):
    """Wraps (model, loss_fn) so functional_call swaps the parameters of every submodule."""

    def __init__(self, model: nn.Module, loss_fn: Callable[..., Any]):
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn

    def forward(self, *example):
        return self.loss_fn(self.model, *example)


def _is_term_dict(out: Mapping[str, Any]) -> bool:
    """jacrev output is {param: grad} for a scalar loss, {term: {param: grad}} for a dict."""
    return all(isinstance(v, Mapping) for v in out.values())


class _GradientMoments:
    """Running sums over gradient draws g_n (n = 1..count), in float64.

    Keeps sum_n g_n for every parameter and sum_n |g_n|^2 for every parameter, so memory is
    one float64 copy of the measured parameters whatever the number of groups.
    """

    def __init__(self, params: Sequence[Tensor], group_names: Sequence[str]):
        self.group_names = list(group_names)
        self.grad_sum = [torch.zeros(p.shape, dtype=torch.float64, device=p.device) for p in params]
        self.sq_norm_sum = [torch.zeros((), dtype=torch.float64, device=p.device) for p in params]
        self.count = 0

    def add(self, batched_grads: Sequence[Tensor | None], divisors: Sequence[Tensor] | None):
        """Add n draws; each entry has a leading dim n (None = zero gradient)."""
        n = next((g.shape[0] for g in batched_grads if g is not None), 1)
        for j, g in enumerate(batched_grads):
            if g is None:
                continue
            g = g.detach().to(torch.float64)
            if divisors is not None:
                g = g / divisors[j]
            self.grad_sum[j] += g.sum(dim=0)
            self.sq_norm_sum[j] += g.square().sum()
        self.count += n

    def sample(self, small_batch_size: int, *, preconditioned: bool, independent: bool = False):
        count = self.count
        small_by_group: dict[str, float] = {}
        big_by_group: dict[str, float] = {}
        for name, s, sq in zip(self.group_names, self.grad_sum, self.sq_norm_sum, strict=True):
            small_by_group[name] = small_by_group.get(name, 0.0) + float(sq) / count
            big_by_group[name] = big_by_group.get(name, 0.0) + float((s / count).square().sum())
        big_batch_size = count * small_batch_size
        small_sq_norm = sum(small_by_group.values())
        big_sq_norm = sum(big_by_group.values())
        g2, trace_sigma = two_batch_estimate(
            small_batch_size, small_sq_norm, big_batch_size, big_sq_norm
        )
        groups = {
            name: GroupEstimate(
                *two_batch_estimate(
                    small_batch_size, small_by_group[name], big_batch_size, big_by_group[name]
                )
            )
            for name in small_by_group
        }
        return GNSSample(
            g2=float(g2),
            trace_sigma=float(trace_sigma),
            small_batch_size=small_batch_size,
            big_batch_size=big_batch_size,
            small_sq_norm=small_sq_norm,
            big_sq_norm=big_sq_norm,
            num_groups=count,
            groups=groups,
            preconditioned=preconditioned,
            assumes_independent_samples=independent,
        )


def _select_params(model: nn.Module, params: Sequence[Tensor] | None):
    """(names, tensors) of the parameters to measure; names come from model.named_parameters."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if params is None:
        if not named:
            raise ValueError("the model has no parameters that require grad")
        return [n for n, _ in named], [p for _, p in named]
    name_of = {id(p): n for n, p in model.named_parameters()}
    tensors = list(params)
    if not tensors:
        raise ValueError("params is empty")
    return [name_of.get(id(t), f"param{i}") for i, t in enumerate(tensors)], tensors


def _top_level_name(param_name: str) -> str:
    return param_name.split(".", 1)[0]


def _as_loss_dict(loss) -> dict[str | None, Tensor]:
    """A scalar loss becomes {None: loss}; a dict of scalar losses is checked and kept."""
    losses = dict(loss) if isinstance(loss, Mapping) else {None: loss}
    if not losses:
        raise ValueError("loss_fn returned an empty dict")
    for term, value in losses.items():
        if not isinstance(value, Tensor) or value.numel() != 1:
            what = "loss" if term is None else f"loss term {term!r}"
            raise ValueError(
                f"{what} must be a scalar tensor (the mean over the group's samples), "
                f"got {type(value).__name__} {getattr(value, 'shape', '')}"
            )
    return {term: value.reshape(()) for term, value in losses.items()}


def _infer_group_size(batches: Sequence[Any]) -> int:
    sizes = set()
    for k, group in enumerate(batches):
        if _is_array(group):
            leaves = [group]
        elif isinstance(group, Mapping):
            leaves = [v for v in group.values() if _is_array(v)]
        elif isinstance(group, (tuple, list)):
            leaves = [v for v in group if _is_array(v)]
        else:
            leaves = []
        dims = {int(x.shape[0]) for x in leaves}
        if len(dims) != 1:
            raise ValueError(
                f"cannot infer the size of group {k} (leading dimensions found: {sorted(dims)}); "
                "pass group_size= explicitly"
            )
        sizes |= dims
    if len(sizes) != 1:
        raise ValueError(f"groups must all have the same size, got sizes {sorted(sizes)}")
    return sizes.pop()


def _is_array(x) -> bool:
    return isinstance(x, (Tensor, np.ndarray)) and x.ndim > 0


# ---------------------------------------------------------------------------------------------
# Smoothing over iterations
# ---------------------------------------------------------------------------------------------


class GNSTracker:
    """Smooths g2 and trace_sigma separately over iterations and reports their ratio.

    Two smoothers run side by side on the same stream of single-iteration estimates:

    * a bias-corrected exponential moving average, m_t = beta m_{t-1} + (1 - beta) x_t,
      reported as m_t / (1 - beta^t) (Adam's correction, so the first report equals the
      first sample);
    * a plain mean over the last ``window`` samples.

    Single estimates are kept as they are, negative ones included (clipping them would bias
    the averages). Only the final ratio is guarded: ``b_simple = smoothed trace_sigma /
    smoothed g2`` is nan, never inf or negative, when the smoothed g2 <= 0 or the smoothed
    trace_sigma < 0 (the noise is too large to resolve the gradient; smooth longer).

    Uncertainty (window mean only). Per-iteration estimates come from fresh rollouts, so
    they are treated as independent and, over a window short compared with the drift of
    B_simple during training, identically distributed; the window means of (g2, trace_sigma)
    are then approximately bivariate normal with covariance estimated from their spread.
    ``b_simple_interval`` uses Fieller's confidence set for a ratio of two jointly normal
    means: unlike the symmetric delta-method interval it stays valid when the mean g2 is
    only a few standard errors above zero (common for the policy term) and is unbounded
    (upper = inf) when g2 is not significantly positive. ``b_simple_stderr`` is the
    delta-method standard error, a scale that agrees with the interval when g2 is well
    resolved. Drift within the window and correlation between iterations through the
    parameters are not accounted for.
    """

    def __init__(self, beta: float = 0.99, window: int = 100):
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"beta must be in [0, 1), got {beta}")
        if int(window) != window or window < 1:
            raise ValueError(f"window must be a positive integer, got {window}")
        self.beta = float(beta)
        self.window = int(window)
        self.count = 0
        self._ema_g2 = 0.0  # biased EMAs; divide by 1 - beta^count to read them
        self._ema_trace_sigma = 0.0
        self._recent: deque[tuple[float, float]] = deque(maxlen=self.window)

    def update(self, sample_or_g2: GNSSample | float, trace_sigma: float | None = None) -> None:
        """Add one estimate: ``update(sample)`` or ``update(g2, trace_sigma)``.

        Use one tracker per loss term (total, policy, value).
        """
        if isinstance(sample_or_g2, GNSSample):
            if trace_sigma is not None:
                raise TypeError("pass either a GNSSample or (g2, trace_sigma), not both")
            g2, trace = sample_or_g2.g2, sample_or_g2.trace_sigma
        elif isinstance(sample_or_g2, Mapping):
            raise TypeError("got a dict of samples: use one GNSTracker per loss term")
        else:
            if trace_sigma is None:
                raise TypeError("update(g2, trace_sigma) needs trace_sigma")
            g2, trace = sample_or_g2, trace_sigma
        g2, trace = float(g2), float(trace)
        if not (math.isfinite(g2) and math.isfinite(trace)):
            raise ValueError(f"non-finite estimate: g2={g2}, trace_sigma={trace}")
        self.count += 1
        self._ema_g2 = self.beta * self._ema_g2 + (1.0 - self.beta) * g2
        self._ema_trace_sigma = self.beta * self._ema_trace_sigma + (1.0 - self.beta) * trace
        self._recent.append((g2, trace))

    # --- exponential moving average --------------------------------------------------------

    @property
    def ema_g2(self) -> float:
        return self._debiased(self._ema_g2)

    @property
    def ema_trace_sigma(self) -> float:
        return self._debiased(self._ema_trace_sigma)

    @property
    def ema_b_simple(self) -> float:
        return _guarded_ratio(self.ema_trace_sigma, self.ema_g2)

    def _debiased(self, biased: float) -> float:
        if self.count == 0:
            return math.nan
        return biased / (1.0 - self.beta**self.count)

    # --- running mean over the window -------------------------------------------------------

    @property
    def mean_g2(self) -> float:
        return float(np.mean([g for g, _ in self._recent])) if self._recent else math.nan

    @property
    def mean_trace_sigma(self) -> float:
        return float(np.mean([t for _, t in self._recent])) if self._recent else math.nan

    @property
    def mean_b_simple(self) -> float:
        return _guarded_ratio(self.mean_trace_sigma, self.mean_g2)

    def _window_moments(self):
        """Means of (g2, trace) and the covariance of those means over the window."""
        values = np.asarray(self._recent, dtype=np.float64)
        n = len(values)
        cov_of_means = np.cov(values, rowvar=False, ddof=1) / n
        return float(values[:, 0].mean()), float(values[:, 1].mean()), cov_of_means

    @property
    def b_simple_stderr(self) -> float:
        """Delta-method standard error of ``mean_b_simple`` (nan with < 2 samples or no ratio).

        Var(T/G) ~ (Var(T) - 2 R Cov(T, G) + R^2 Var(G)) / G^2 for the window means T, G and
        R = T / G.
        """
        ratio = self.mean_b_simple
        if len(self._recent) < 2 or math.isnan(ratio):
            return math.nan
        g2, _, c = self._window_moments()
        var = (c[1, 1] - 2.0 * ratio * c[0, 1] + ratio**2 * c[0, 0]) / g2**2
        return float(math.sqrt(max(var, 0.0)))

    def b_simple_interval(self, z: float = 1.96) -> tuple[float, float, float]:
        """(mean_b_simple, lower, upper): Fieller confidence interval at z standard errors.

        The set {R : (T - R G)^2 <= z^2 Var(T - R G)} for the window means T, G. It is a
        bounded interval when G is significantly positive (G^2 > z^2 Var(G)); otherwise the
        upper end is inf. The lower end is clipped at 0 since B_simple >= 0. Returns nan
        bounds with fewer than 2 samples and (nan, nan, nan) when the ratio itself is nan.
        """
        ratio = self.mean_b_simple
        if math.isnan(ratio):
            return math.nan, math.nan, math.nan
        if len(self._recent) < 2:
            return ratio, math.nan, math.nan
        g2, trace, c = self._window_moments()
        # (T - R G)^2 - z^2 (c_TT - 2 R c_TG + R^2 c_GG) <= 0  <=>  a R^2 - 2 h R + k <= 0
        a = g2**2 - z**2 * c[0, 0]
        h = trace * g2 - z**2 * c[0, 1]
        k = trace**2 - z**2 * c[1, 1]
        if a <= 0.0:
            return ratio, 0.0, math.inf
        root = math.sqrt(max(h * h - a * k, 0.0))
        return ratio, max(float((h - root) / a), 0.0), float((h + root) / a)

    # --- reporting and checkpointing -------------------------------------------------------

    def summary(self) -> dict[str, float]:
        _, lower, upper = self.b_simple_interval()
        return {
            "ema_g2": self.ema_g2,
            "ema_trace_sigma": self.ema_trace_sigma,
            "ema_b_simple": self.ema_b_simple,
            "mean_g2": self.mean_g2,
            "mean_trace_sigma": self.mean_trace_sigma,
            "mean_b_simple": self.mean_b_simple,
            "b_simple_stderr": self.b_simple_stderr,
            "b_simple_lower": lower,
            "b_simple_upper": upper,
            "count": self.count,
            "window_count": len(self._recent),
        }

    def state_dict(self) -> dict[str, Any]:
        """Plain (JSON-serializable) state; ``load_state_dict`` continues the same smoothing."""
        return {
            "beta": self.beta,
            "window": self.window,
            "count": self.count,
            "ema_g2_biased": self._ema_g2,
            "ema_trace_sigma_biased": self._ema_trace_sigma,
            "recent_g2": [g for g, _ in self._recent],
            "recent_trace_sigma": [t for _, t in self._recent],
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore everything, including beta and window, from ``state_dict()``."""
        self.__init__(beta=state["beta"], window=state["window"])
        self.count = int(state["count"])
        self._ema_g2 = float(state["ema_g2_biased"])
        self._ema_trace_sigma = float(state["ema_trace_sigma_biased"])
        pairs = zip(state["recent_g2"], state["recent_trace_sigma"], strict=True)
        self._recent.extend((float(g), float(t)) for g, t in pairs)


def _guarded_ratio(trace_sigma: float, g2: float) -> float:
    """trace_sigma / g2, or nan when g2 <= 0 or trace_sigma < 0 (never inf or negative)."""
    if not (g2 > 0.0 and trace_sigma >= 0.0):
        return math.nan
    return trace_sigma / g2


def ratio_interval(g2, trace_sigma, z: float = 1.96) -> tuple[float, float, float]:
    """(mean trace / mean g2, lower, upper) over a run's estimates, robust to slow drift.

    The estimates of different measurements have independent noise (fresh draws each time)
    around values that drift as training goes on. The noise covariance of the pair (g2,
    trace_sigma) is estimated from successive differences, sum_i d_i d_i^T / (2 (n - 1))
    with d_i = x_{i+1} - x_i, which a slow drift barely inflates (the plain sample
    covariance would count the whole drift as noise); the covariance of the means is that
    divided by n. The interval is Fieller's confidence set for the ratio of the two means at
    ``z`` standard errors, as in ``GNSTracker.b_simple_interval``: upper = inf when mean g2 is
    not significantly positive, lower clipped at 0. The ratio is nan when mean g2 <= 0 or
    mean trace < 0; the bounds are nan with fewer than 3 estimates.
    """
    x = np.stack([np.asarray(g2, np.float64), np.asarray(trace_sigma, np.float64)], axis=1)
    n = len(x)
    if n == 0:
        return math.nan, math.nan, math.nan
    g, t = float(x[:, 0].mean()), float(x[:, 1].mean())
    if not (g > 0.0 and t >= 0.0):
        return math.nan, math.nan, math.nan
    ratio = t / g
    if n < 3:
        return ratio, math.nan, math.nan
    d = np.diff(x, axis=0)
    c = d.T @ d / (2.0 * (n - 1)) / n
    a = g * g - z * z * c[0, 0]
    h = t * g - z * z * c[0, 1]
    k = t * t - z * z * c[1, 1]
    if a <= 0.0:
        return ratio, 0.0, math.inf
    root = math.sqrt(max(h * h - a * k, 0.0))
    return ratio, max((h - root) / a, 0.0), (h + root) / a
