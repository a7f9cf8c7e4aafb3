"""Sharpness of a loss at given weights (Keskar et al. 2016), for RL and supervised models.

``top_hessian_eigenvalue``: the largest and the most negative Hessian eigenvalue by Lanczos
(scipy's ``eigsh``) on Hessian-vector products (double backward), each with its convergence.
``eps_sharpness``: 100 (max_{z in C} f(w + z) - f(w)) / (1 + f(w)) over the box
C = {z : |z_i| <= eps (|w_i| + 1)}, the max by L-BFGS-B on the box from several starts (a
lower bound of the true max). ``measure_sharpness`` does both on one loss.
``run_sharpness``: the PPO loss (policy and value terms) at a run's final checkpoint on
fresh rollouts of its policy, repeated on independent rollouts for an uncertainty.
``digits_sharpness``: the supervised digits reference at several batch sizes, with the
generalization gap. The method, its exactness on quadratics and its limits:
docs/sharpness.md.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy import linalg, stats
from scipy.optimize import Bounds, minimize
from scipy.sparse.linalg import ArpackError, ArpackNoConvergence, LinearOperator, eigsh
from torch import nn

import envs
from agents import PPOConfig
from agents.ppo import normalize_advantages, ppo_loss
from rl.analysis.checks import check_count, check_open_unit, check_positive, require_table
from rl.analysis.configs import SharpnessConfig
from rl.measure.supervised import SupervisedConfig, batch_loss, load_dataset, run_supervised
from rl.runs.files import save_figure
from rl.runs.policy import load_policy
from rl.sweeps.results import read_results
from rl.sweeps.state import read_best_lrs
from rl.train.gae import compute_gae
from rl.train.rollout import RolloutBuffer, collect, to_device

__all__ = [
    "SHARPNESS_COLUMNS",
    "Eigenvalue",
    "HessianExtremes",
    "SharpnessConfig",
    "digits_sharpness",
    "eps_sharpness",
    "measure_sharpness",
    "plot_sharpness",
    "sweep_sharpness",
    "run_sharpness",
    "summarize_repeats",
    "top_hessian_eigenvalue",
    "trend",
]

LossFn = Callable[[], torch.Tensor]
PPO_TERMS = ("policy", "value")


def _params(model: nn.Module | Sequence[torch.Tensor]) -> list[torch.Tensor]:
    ps = list(model.parameters()) if isinstance(model, nn.Module) else list(model)
    params = [p for p in ps if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters (none with requires_grad=True): "
                         "sharpness is measured in the trainable weights")
    return params


def hessian_vector_product(loss_fn: LossFn, params: list[torch.Tensor],
                           vec: list[torch.Tensor]) -> list[torch.Tensor]:
    """H v for the Hessian of ``loss_fn()`` in ``params`` (double backward)."""
    zeros = [torch.zeros_like(p) for p in params]
    loss = loss_fn()
    if not loss.requires_grad:  # the loss does not depend on the parameters: H = 0
        return zeros
    grads = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True)
    pairs = [(g, v) for g, v in zip(grads, vec, strict=True) if g is not None]
    dot = sum((g * v).sum() for g, v in pairs)
    if not isinstance(dot, torch.Tensor) or not dot.requires_grad:  # linear in them: H = 0
        return zeros
    hv = torch.autograd.grad(dot, params, allow_unused=True)
    return [z if h is None else h.detach() for h, z in zip(hv, zeros, strict=True)]


@dataclass(frozen=True)
class Eigenvalue:
    """One end of a Hessian's spectrum (``top_hessian_eigenvalue``).

    ``value`` is NaN when not ``converged``: ARPACK returns only converged Ritz values, and
    an unconverged estimate must not enter a mean, a trend or a fit. ``products``: the
    Hessian-vector products spent on it.
    """

    value: float
    converged: bool
    products: int


@dataclass(frozen=True)
class HessianExtremes:
    """The largest (``top``) and the most negative (``bottom``) Hessian eigenvalue."""

    top: Eigenvalue
    bottom: Eigenvalue

    @property
    def converged(self) -> bool:
        return self.top.converged and self.bottom.converged

    @property
    def products(self) -> int:
        return self.top.products + self.bottom.products


class _OutOfProducts(Exception):
    """The product budget of one eigenvalue is spent (raised through ARPACK's loop)."""


class HessianOperator(LinearOperator):
    """The Hessian of ``loss_fn`` in ``params`` as a scipy operator on float64 vectors,
    counting its products and stopping after ``max_products`` (ARPACK's own ``maxiter``
    counts restarts, not products)."""

    def __init__(self, loss_fn: LossFn, params: list[torch.Tensor], max_products: int):
        n = sum(p.numel() for p in params)
        super().__init__(dtype=np.float64, shape=(n, n))
        self.loss_fn, self.params, self.max_products = loss_fn, params, max_products
        self.products = 0
        self.nonzero = False  # whether any product was nonzero

    def _matvec(self, x: np.ndarray) -> np.ndarray:
        if self.products >= self.max_products:
            raise _OutOfProducts
        self.products += 1
        flat = torch.as_tensor(np.ascontiguousarray(x, dtype=np.float64).ravel())
        vec, at = [], 0
        for p in self.params:
            vec.append(flat[at:at + p.numel()].view(p.shape).to(p.device, p.dtype))
            at += p.numel()
        hv = hessian_vector_product(self.loss_fn, self.params, vec)
        out = torch.cat([h.reshape(-1).double().cpu() for h in hv]).numpy()
        self.nonzero = self.nonzero or bool(np.any(out != 0))
        return out


LANCZOS_VECTORS = 20
"""Lanczos basis size (ARPACK's ncv; eigsh's default for one eigenvalue). A model with at
most this many parameters gets its full Hessian instead: the basis would span it anyway."""


def _lanczos_end(op: HessianOperator, which: str, tol: float, v0: np.ndarray) -> Eigenvalue:
    """One end ('LA' largest, 'SA' smallest algebraic) by eigsh, within op's product budget."""
    op.products, op.nonzero = 0, False
    try:
        value = eigsh(op, k=1, which=which, tol=tol, v0=v0, ncv=LANCZOS_VECTORS,
                      maxiter=op.max_products, return_eigenvectors=False)[0]
    except (_OutOfProducts, ArpackNoConvergence):
        return Eigenvalue(math.nan, False, op.products)
    except ArpackError:
        # ARPACK stops when the Krylov space collapses at the start ("starting vector is
        # zero"): H v0 = 0, which for a random v0 means H = 0 (a loss linear in the weights,
        # or not depending on them).
        if op.products and not op.nonzero:
            return Eigenvalue(0.0, True, op.products)
        raise
    return Eigenvalue(float(value), True, op.products)


def top_hessian_eigenvalue(
    loss_fn: LossFn, model: nn.Module | Sequence[torch.Tensor], *, tol: float = 1e-3,
    max_products: int = 200, generator: torch.Generator | None = None,
) -> HessianExtremes:
    """The largest and the most negative eigenvalue of the Hessian of ``loss_fn()`` in the
    trainable weights, each by Lanczos (``scipy.sparse.linalg.eigsh``, 'LA' and 'SA') on
    Hessian-vector products from one random start (drawn with ``generator``).

    Each end stops once ARPACK's residual test holds, ``|H v - theta v| <= tol |theta|``,
    which bounds the error of the value by ``tol |theta|`` (symmetric H); or, unconverged
    (value NaN), after ``max_products`` products. Lanczos resolves both ends even when they
    have opposite signs and similar sizes, where power iteration does not converge. A model
    with at most ``LANCZOS_VECTORS`` weights gets its exact eigenvalues (one product per
    weight). A zero Hessian gives 0, converged.
    """
    check_open_unit(tol, "tol", "the relative accuracy of the eigenvalues")
    check_count(max_products, "max_products", "Hessian-vector products per eigenvalue")
    params = _params(model)
    op = HessianOperator(loss_fn, params, max_products)
    n = op.shape[0]
    if n <= LANCZOS_VECTORS:
        if n > max_products:
            return HessianExtremes(*(Eigenvalue(math.nan, False, 0),) * 2)
        h = op.matmat(np.eye(n))
        values = linalg.eigvalsh(0.5 * (h + h.T))  # symmetrize the rounding
        return HessianExtremes(Eigenvalue(float(values[-1]), True, n),
                               Eigenvalue(float(values[0]), True, 0))
    v0 = torch.randn(n, generator=generator, dtype=torch.float64).numpy()
    return HessianExtremes(_lanczos_end(op, "LA", tol, v0), _lanczos_end(op, "SA", tol, v0))


def _flat(tensors: Sequence[torch.Tensor]) -> np.ndarray:
    return torch.cat([t.detach().reshape(-1).double().cpu() for t in tensors]).numpy()


def _set_flat(params: list[torch.Tensor], flat: np.ndarray) -> None:
    """Write a float64 vector into the parameters (each in its own dtype and device)."""
    at = 0
    with torch.no_grad():
        for p in params:
            p.copy_(torch.as_tensor(flat[at:at + p.numel()]).view(p.shape))
            at += p.numel()


def eps_sharpness(loss_fn: LossFn, model: nn.Module | Sequence[torch.Tensor], *,
                  eps: float = 1e-3, steps: int = 10, starts: int = 3,
                  seed: int = 0) -> tuple[float, float, float]:
    """(sharpness, f(w), max f found): Keskar et al.'s eps-sharpness of ``loss_fn`` at the
    current weights w (restored afterwards),

        100 (max_{z in C} f(w + z) - f(w)) / (1 + f(w)),  C = {z : |z_i| <= eps (|w_i| + 1)}.

    The max: L-BFGS-B (``scipy.optimize.minimize`` with the box as bounds, the autograd
    gradient), as Keskar et al. did, ``steps`` iterations from each of ``starts`` points:
    z = 0, then uniform random points of the box (numpy ``seed``). More than one start
    because at a minimum the gradient at z = 0 is zero and L-BFGS-B would not move from
    there; from inside the box it follows the curvature to any face or corner. The largest
    loss evaluated is kept: the result is a lower bound of the true max (exact for a
    concave f; a local method on a non-concave f may miss the global max).
    """
    check_positive(eps, "eps", "the box half-width, relative to |w_i| + 1; Keskar used 1e-3")
    check_count(steps, "steps", "L-BFGS-B iterations per start")
    check_count(starts, "starts", "start points of the search")
    params = _params(model)
    w0 = _flat(params)
    radius = eps * (np.abs(w0) + 1.0)
    best = {"f": -math.inf}

    def loss_and_grad(y: np.ndarray) -> tuple[float, np.ndarray]:
        """f(w + r y) and its gradient in y: in units of the radius (y in [-1, 1]^n), so
        that every coordinate has the same range."""
        _set_flat(params, w0 + radius * y)
        loss = loss_fn()
        grads = torch.autograd.grad(loss, params, allow_unused=True) if loss.requires_grad \
            else [None] * len(params)
        f = float(loss.detach())
        best["f"] = max(best["f"], f)
        return f, radius * _flat([torch.zeros_like(p) if gi is None else gi
                                  for gi, p in zip(grads, params, strict=True)])

    rng = np.random.default_rng(seed)
    points = [np.zeros_like(w0)] + [rng.uniform(-1.0, 1.0, w0.size) for _ in range(starts - 1)]
    try:
        with torch.no_grad():
            f0 = float(loss_fn())
        if not 1.0 + f0 > 0.0:
            raise ValueError(f"Keskar's normalization divides by 1 + f(w) = {1.0 + f0!r}: it "
                             "needs a loss f(w) > -1 (one bounded below by 0, as theirs); "
                             "shift the loss by a constant")
        best["f"] = f0
        for y0 in points:
            # L-BFGS-B's model starts as the identity and keeps it while it ascends a convex
            # f (negative curvature pairs are skipped), so its steps are as long as the
            # gradient: scaled to a largest component of 1 at the start, a step crosses the
            # box. Stopping only on the iteration budget, for the same reason.
            _, g0 = loss_and_grad(y0)
            scale = float(np.abs(g0).max()) or 1.0

            def negative(y: np.ndarray, scale: float = scale) -> tuple[float, np.ndarray]:
                f, g = loss_and_grad(y)
                return -f / scale, -g / scale

            minimize(negative, y0, jac=True, method="L-BFGS-B",
                     bounds=Bounds(-np.ones_like(w0), np.ones_like(w0)),
                     options={"maxiter": steps, "ftol": 0.0, "gtol": 0.0})
    finally:
        _set_flat(params, w0)
    return 100.0 * (best["f"] - f0) / (1.0 + f0), f0, best["f"]


def measure_sharpness(loss_fn: LossFn, model: nn.Module, *, eps: Sequence[float] = (1e-3,),
                      max_products: int = 200, eigen_tol: float = 1e-3, ascent_steps: int = 10,
                      ascent_starts: int = 3, generator: torch.Generator | None = None,
                      seed: int = 0) -> dict[str, float]:
    """loss, top_eigenvalue, min_eigenvalue (each NaN unless its ``*_converged`` flag is
    set), eigen_products and eps_sharpness_{eps} of one loss."""
    ends = top_hessian_eigenvalue(loss_fn, model, tol=eigen_tol, max_products=max_products,
                                  generator=generator)
    out: dict[str, Any] = {
        "top_eigenvalue": ends.top.value, "top_eigen_converged": ends.top.converged,
        "min_eigenvalue": ends.bottom.value, "min_eigen_converged": ends.bottom.converged,
        "eigen_products": ends.products}
    for e in eps:
        s, f0, _ = eps_sharpness(loss_fn, model, eps=e, steps=ascent_steps,
                                 starts=ascent_starts, seed=seed)
        out[f"eps_sharpness_{e:g}"] = s
        out["loss"] = f0
    return out


def summarize_repeats(rows: pd.DataFrame, keys: Sequence[str], values: Sequence[str]
                      ) -> pd.DataFrame:
    """Mean, standard error (std / sqrt(n), NaN for n < 2) and n per group of repeats.

    NaN values (an eigenvalue that did not converge) are left out of the mean and the
    standard error; ``{value}_n`` counts the values used, ``repeats`` the rows."""
    require_table(rows, [*keys, *values], "the table of repeats")
    out = []
    for key, g in rows.groupby(list(keys), sort=True):
        rec = dict(zip(keys, key if isinstance(key, tuple) else (key,), strict=True))
        for v in values:
            x = g[v].astype(float).dropna()
            rec[v] = float(x.mean()) if len(x) else math.nan
            rec[f"{v}_se"] = float(x.std(ddof=1) / math.sqrt(len(x))) if len(x) > 1 else math.nan
            rec[f"{v}_n"] = len(x)
        rec["repeats"] = len(g)
        out.append(rec)
    return pd.DataFrame(out)


# --------------------------------------------------------------------------------------
# RL: the PPO loss at a run's final checkpoint
# --------------------------------------------------------------------------------------


SHARPNESS_COLUMNS = ["term", "repeat", "samples", "loss", "top_eigenvalue", "top_eigen_converged",
                     "min_eigenvalue", "min_eigen_converged", "eigen_products"]


def fresh_batch(model: nn.Module, config: dict, ppo: PPOConfig, cfg: SharpnessConfig,
                seed: int) -> dict[str, torch.Tensor]:
    """One rollout of the policy from freshly reset environments, as a PPO batch with
    whole-batch advantage normalization (as the noise-scale measurement uses)."""
    train = config["train"]
    device = torch.device(cfg.device)
    env = envs.make_vec(train["env"], cfg.num_envs, seed, backend=train.get("backend"),
                        preset=train.get("env_preset"))
    try:
        obs, _ = env.reset()
        next_obs = to_device(obs, device)
        buffer = RolloutBuffer(cfg.num_steps, cfg.num_envs, next_obs, device)
        gen = torch.Generator(device=device).manual_seed(seed)
        _, next_value, _ = collect(env, model, buffer, next_obs, gen, device)
    finally:
        env.close()
    adv, returns, mask = compute_gae(buffer.rewards, buffer.values, next_value,
                                     buffer.terminated, buffer.truncated, buffer.autoreset,
                                     ppo.gamma, ppo.gae_lambda)
    adv, mask = adv.flatten(), mask.flatten()
    if ppo.norm_adv:
        adv = normalize_advantages(adv, mask)
    return {"obs": buffer.obs.flatten(0, 1), "actions": buffer.actions.flatten(0, 1),
            "logprobs": buffer.logprobs.flatten(), "values": buffer.values.flatten(),
            "advantages": adv, "returns": returns.flatten(), "mask": mask}


def run_sharpness(run_dir: str | Path, cfg: SharpnessConfig | None = None) -> pd.DataFrame:
    """Per repeat and PPO loss term: loss, top Hessian eigenvalue and eps-sharpness at the
    run's final checkpoint, on ``cfg.repeats`` fresh rollouts of ``num_envs x num_steps``.

    Columns: ``SHARPNESS_COLUMNS`` + eps_sharpness_{eps} per eps, ascent_steps, ascent_starts,
    max_products,
    eigen_tol,
    iteration (of the checkpoint), rollout_batch_size (of the run), run_dir.
    """
    cfg = cfg or SharpnessConfig()
    policy = load_policy(run_dir, cfg.device)
    model, config, iteration, ppo = policy.model, policy.config, policy.iteration, policy.ppo
    train = config["train"]
    rows = []
    for r in range(cfg.repeats):
        batch = fresh_batch(model, config, ppo, cfg, cfg.seed + r)
        gen = torch.Generator().manual_seed(cfg.seed + r)
        for term in PPO_TERMS:
            def loss_fn(term=term, batch=batch):
                terms = ppo_loss(model, batch, ppo)
                return terms.policy_loss if term == "policy" else terms.value_loss

            m = measure_sharpness(loss_fn, model, eps=cfg.eps_values,
                                  max_products=cfg.max_products, eigen_tol=cfg.eigen_tol,
                                  ascent_steps=cfg.ascent_steps,
                                  ascent_starts=cfg.ascent_starts, generator=gen,
                                  seed=cfg.seed + r)
            rows.append(dict(term=term, repeat=r, samples=cfg.num_envs * cfg.num_steps, **m,
                             ascent_steps=cfg.ascent_steps, ascent_starts=cfg.ascent_starts,
                             max_products=cfg.max_products,
                             eigen_tol=cfg.eigen_tol,
                             iteration=iteration,
                             rollout_batch_size=train["num_envs"] * train["num_steps"],
                             run_dir=str(run_dir)))
    return pd.DataFrame(rows)


def eps_columns(eps: Sequence[float]) -> list[str]:
    return [f"eps_sharpness_{e:g}" for e in eps]


# --------------------------------------------------------------------------------------
# Supervised digits: sharpness and the generalization gap against the batch size
# --------------------------------------------------------------------------------------


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return float((model(x).argmax(dim=1) == y).double().mean())


def digits_sharpness(batch_sizes: Sequence[int] = (8, 32, 128, 512), *, epochs: int = 20,
                     seeds: Sequence[int] = (0, 1), eps: Sequence[float] = (1e-3, 5e-4),
                     ascent_steps: int = 10, ascent_starts: int = 3, max_products: int = 200,
                     base: SupervisedConfig | None = None) -> pd.DataFrame:
    """Train the digits classifier at each batch size for the same number of epochs
    (Keskar's setting: large batches take fewer steps), then measure, on the full
    training set, its loss, top Hessian eigenvalue and eps-sharpness, with train and test
    accuracy and gap = train - test accuracy. One row per (batch_size, seed); the seeds
    are the repeats. The noise scale is measured only at the ends (it is not needed here).
    """
    base = base or SupervisedConfig()
    rows = []
    for b in batch_sizes:
        for seed in seeds:
            data = load_dataset(base.dataset, base.test_fraction, int(seed))
            steps = epochs * math.ceil(int(data.x_train.shape[0]) / int(b))
            cfg = dataclasses.replace(base, batch_size=int(b), epochs=epochs, seed=int(seed),
                                      gns_every=max(1, steps))
            result = run_supervised(cfg)
            model = result.model
            gen = torch.Generator().manual_seed(seed)
            xy = (data.x_train, data.y_train)
            m = measure_sharpness(lambda model=model, xy=xy: batch_loss(model, xy), model,
                                  eps=eps, max_products=max_products,
                                  ascent_steps=ascent_steps, ascent_starts=ascent_starts,
                                  generator=gen, seed=int(seed))
            train_acc = accuracy(model, data.x_train, data.y_train)
            test_acc = accuracy(model, data.x_test, data.y_test)
            rows.append(dict(batch_size=int(b), seed=int(seed), steps=result.summary["steps"],
                             train_acc=train_acc, test_acc=test_acc, gap=train_acc - test_acc,
                             **m, ascent_steps=ascent_steps, ascent_starts=ascent_starts,
                             max_products=max_products))
    return pd.DataFrame(rows)


def trend(x: Any, y: Any) -> dict[str, Any]:
    """Least-squares slope of y against log2 x (change per doubling of x) over every point
    (each repeat is a point, so the repeats' spread sets the error), its 95% Student-t
    interval, and a verdict: 'increases with the batch size', 'decreases with the batch
    size', or 'no trend within noise' when the interval holds 0. Points with a NaN (an
    eigenvalue that did not converge) are left out."""
    lx, y = np.log2(np.asarray(x, dtype=float)), np.asarray(y, dtype=float)
    good = np.isfinite(lx) & np.isfinite(y)
    lx, y = lx[good], y[good]
    if lx.size < 3 or np.unique(lx).size < 2:
        return {"slope": math.nan, "lo": math.nan, "hi": math.nan, "n": int(lx.size),
                "verdict": "too few points for a trend"}
    fit = stats.linregress(lx, y)
    half = float(stats.t.ppf(0.975, lx.size - 2)) * fit.stderr
    lo, hi = fit.slope - half, fit.slope + half
    verdict = ("increases with the batch size" if lo > 0 else
               "decreases with the batch size" if hi < 0 else "no trend within noise")
    return {"slope": float(fit.slope), "lo": float(lo), "hi": float(hi), "n": int(lx.size),
            "verdict": verdict}


# --------------------------------------------------------------------------------------
# A sweep: sharpness against the rollout batch size
# --------------------------------------------------------------------------------------


def sweep_sharpness(sweep_dir: str | Path, cfg: SharpnessConfig | None = None, *,
                    seeds: Sequence[int] | None = None, lr: float | None = None,
                    best_lr: bool = False, runs: Collection[str] | None = None,
                    on_run: Callable[[pd.DataFrame], None] | None = None) -> pd.DataFrame:
    """``run_sharpness`` for every finished run of a sweep directory (``rl.sweeps`` layout),
    optionally only some seeds, one learning rate, each batch size's best learning rate
    (``best_lr``: the sweep's best_lr.json, as its fit uses), or the runs named in ``runs``.
    Adds the run's name, seed and lr. ``on_run`` gets each run's rows as soon as they are
    measured (to save them: a run takes minutes, and a kill should lose only the one in
    progress)."""
    out = Path(sweep_dir)
    table = read_results(out)
    table = table[table["status"] == "finished"]
    if seeds is not None:
        table = table[table["seed"].isin(list(seeds))]
    if lr is not None:
        table = table[np.isclose(table["lr"].astype(float), lr)]
    if best_lr:
        choices = read_best_lrs(out)
        if not choices:
            raise ValueError(f"{out} records no best learning rates (best_lr.json: a sweep "
                             "with an lr grid writes it); leave --best-lr out or use --lr")

        def at_best_lr(r) -> bool:
            c = choices.get((str(r["env"]), int(r["rollout_batch_size"])))
            return c is not None and c.lr is not None and bool(np.isclose(float(r["lr"]), c.lr))

        table = table[np.asarray([at_best_lr(r) for _, r in table.iterrows()], dtype=bool)]
    if runs is not None:
        table = table[table["run"].astype(str).isin(list(runs))]
    if table.empty:
        raise ValueError(f"{out} has no finished runs to measure (with the seeds, lr and "
                         "runs asked for); run or finish the sweep first")
    parts = []
    for _, r in table.sort_values(["rollout_batch_size", "seed"]).iterrows():
        df = run_sharpness(out / "runs" / str(r["run"]), cfg)
        parts.append(df.assign(run=r["run"], seed=int(r["seed"]), lr=float(r["lr"]),
                               final_return=float(r["final_return_recent"])))
        if on_run is not None:
            on_run(parts[-1])
    return pd.concat(parts, ignore_index=True)


def plot_sharpness(path: str | Path, df: pd.DataFrame, *, x: str, title: str,
                   terms: Sequence[str] = PPO_TERMS, eps: float = 1e-3,
                   gap: bool = False) -> Path:
    """Top eigenvalue and eps-sharpness (and the generalization gap when ``gap``) against
    ``x`` (log axis), one point per repeat and the mean per x (unconverged eigenvalues, NaN,
    are left out and counted in the axis label); written atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # lazy: slow import, figures only
    from matplotlib.figure import Figure  # lazy: slow import, figures only

    cols = ["top_eigenvalue", f"eps_sharpness_{eps:g}"] + (["gap"] if gap else [])
    require_table(df, [x, *cols], "the sharpness table")
    fig = Figure(figsize=(4.6 * len(cols), 4.2))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(cols))
    per_term = "term" in df  # RL: policy and value terms; supervised: one loss
    for ax, col in zip(axes, cols, strict=True):
        for i, term in enumerate(terms if per_term else [None]):
            d = df[df["term"] == term] if per_term else df
            if d.empty:
                continue
            ax.scatter(d[x], d[col], s=14, alpha=0.5, color=f"C{i}")
            mean = d.groupby(x)[col].mean()
            ax.plot(mean.index, mean.values, marker="o", color=f"C{i}",
                    label=f"{term} loss, mean" if per_term else "mean")
        ax.set_xscale("log", base=2)
        ax.set_xlabel(x.replace("_", " "))
        left_out = int(df[col].isna().sum())  # unconverged eigenvalues: rows kept, no value
        ax.set_ylabel(col.replace("_", " ") + (f" ({left_out} unconverged, not shown)"
                                               if left_out else ""))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return save_figure(fig, path, dpi=90)
