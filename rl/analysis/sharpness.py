"""Sharpness of a loss at given weights (Keskar et al. 2016), for RL and supervised models.

``top_hessian_eigenvalue``: power iteration on Hessian-vector products (double backward).
``eps_sharpness``: 100 (max_{z in C} f(w + z) - f(w)) / (1 + f(w)) over the box
C = {z : |z_i| <= eps (|w_i| + 1)}, the max by projected sign-gradient ascent with halving
steps (``ascent_steps`` of them). ``measure_sharpness`` does both on one loss.
``run_sharpness``: the PPO loss (policy and value terms) at a run's final checkpoint on
fresh rollouts of its policy, repeated on independent rollouts for an uncertainty.
``digits_sharpness``: the supervised digits reference at several batch sizes, with the
generalization gap. The method, its exactness on quadratics and its limits:
docs/sharpness.md.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy import stats
from torch import nn

import envs
from agents import PPOConfig, build_actor_critic
from agents.ppo import normalize_advantages, ppo_loss
from rl.measure.supervised import SupervisedConfig, batch_loss, load_dataset, run_supervised
from rl.runs.checkpoints import load_checkpoint_file
from rl.runs.files import save_figure
from rl.runs.layout import CONFIG_FILE
from rl.runs.storage import RunDir
from rl.sweeps.results import read_results
from rl.train.gae import compute_gae
from rl.train.rollout import RolloutBuffer, collect, to_device

__all__ = [
    "SHARPNESS_COLUMNS",
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
    return [p for p in ps if p.requires_grad]


def hessian_vector_product(loss_fn: LossFn, params: list[torch.Tensor],
                           vec: list[torch.Tensor]) -> list[torch.Tensor]:
    """H v for the Hessian of ``loss_fn()`` in ``params`` (double backward)."""
    loss = loss_fn()
    grads = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True)
    pairs = [(g, v) for g, v in zip(grads, vec, strict=True) if g is not None]
    dot = sum((g * v).sum() for g, v in pairs)
    hv = torch.autograd.grad(dot, params, allow_unused=True)
    return [torch.zeros_like(p) if h is None else h.detach() for h, p in zip(hv, params,
                                                                          strict=True)]


def _dot(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return float(sum((x * y).sum() for x, y in zip(a, b, strict=True)))


def top_hessian_eigenvalue(
    loss_fn: LossFn, model: nn.Module | Sequence[torch.Tensor], *, iters: int = 20,
    tol: float = 1e-3, generator: torch.Generator | None = None,
) -> tuple[float, int]:
    """(eigenvalue, iterations used): the Hessian eigenvalue of largest magnitude (signed)
    by power iteration on Hessian-vector products, from a random unit start.

    Stops after ``iters`` products or once the Rayleigh quotient changes by less than
    ``tol`` (relative). The Rayleigh quotient's error shrinks like (lambda_2 / lambda_1)^(2k)
    after k products; a loss with two near-equal top eigenvalues needs more iterations.
    """
    params = _params(model)
    v = [torch.randn(p.shape, generator=generator, dtype=p.dtype).to(p.device) for p in params]
    norm = math.sqrt(_dot(v, v))
    v = [x / norm for x in v]
    eig, used = math.nan, 0
    for used in range(1, iters + 1):
        hv = hessian_vector_product(loss_fn, params, v)
        new = _dot(v, hv)
        norm = math.sqrt(_dot(hv, hv))
        if norm == 0.0:
            return 0.0, used
        v = [x / norm for x in hv]
        if math.isfinite(eig) and abs(new - eig) <= tol * max(abs(new), 1e-12):
            return new, used
        eig = new
    return eig, used


def eps_sharpness(loss_fn: LossFn, model: nn.Module | Sequence[torch.Tensor], *,
                  eps: float = 1e-3, steps: int = 10) -> tuple[float, float, float]:
    """(sharpness, f(w), max f found): Keskar's eps-sharpness of ``loss_fn`` at the current
    weights, which are restored afterwards.

    The max over the box C = {z : |z_i| <= r_i}, r_i = eps (|w_i| + 1), is approximated by
    ``steps`` steps of projected sign-gradient ascent z <- clip(z + s_t r sign(grad), -r, r)
    with s_t = 2^-t (t = 0, 1, ...) from z = 0 (a zero gradient component steps to +r): the
    first step goes to the corner the gradient points at, later ones bisect back towards
    interior maxima. The largest loss seen is kept, so the result is a lower bound on the
    true max. For f separable in the coordinates (a quadratic with diagonal Hessian) it is
    exact up to r_i 2^-(steps-1) per coordinate.
    """
    params = _params(model)
    w0 = [p.detach().clone() for p in params]
    radius = [eps * (w.abs() + 1.0) for w in w0]
    z = [torch.zeros_like(w) for w in w0]
    try:
        with torch.no_grad():
            f0 = float(loss_fn())
        best = f0
        for t in range(steps):
            loss = loss_fn()
            grads = torch.autograd.grad(loss, params, allow_unused=True)
            best = max(best, float(loss.detach()))
            with torch.no_grad():
                for p, w, r, zi, g in zip(params, w0, radius, z, grads, strict=True):
                    direction = torch.ones_like(w) if g is None else torch.where(
                        g == 0, torch.ones_like(g), torch.sign(g))
                    zi.add_(direction * r * 0.5 ** t)
                    torch.minimum(torch.maximum(zi, -r), r, out=zi)
                    p.copy_(w + zi)
        with torch.no_grad():
            best = max(best, float(loss_fn()))
    finally:
        with torch.no_grad():
            for p, w in zip(params, w0, strict=True):
                p.copy_(w)
    return 100.0 * (best - f0) / (1.0 + f0), f0, best


def measure_sharpness(loss_fn: LossFn, model: nn.Module, *, eps: Sequence[float] = (1e-3,),
                      power_iters: int = 20, ascent_steps: int = 10,
                      generator: torch.Generator | None = None) -> dict[str, float]:
    """loss, top_eigenvalue, eigen_iterations and eps_sharpness_{eps} of one loss."""
    lam, used = top_hessian_eigenvalue(loss_fn, model, iters=power_iters, generator=generator)
    out = {"top_eigenvalue": lam, "eigen_iterations": used}
    for e in eps:
        s, f0, _ = eps_sharpness(loss_fn, model, eps=e, steps=ascent_steps)
        out[f"eps_sharpness_{e:g}"] = s
        out["loss"] = f0
    return out


def summarize_repeats(rows: pd.DataFrame, keys: Sequence[str], values: Sequence[str]
                      ) -> pd.DataFrame:
    """Mean, standard error (std / sqrt(n), NaN for n < 2) and n per group of repeats."""
    out = []
    for key, g in rows.groupby(list(keys), sort=True):
        rec = dict(zip(keys, key if isinstance(key, tuple) else (key,), strict=True))
        for v in values:
            x = g[v].astype(float).dropna()
            rec[v] = float(x.mean()) if len(x) else math.nan
            rec[f"{v}_se"] = float(x.std(ddof=1) / math.sqrt(len(x))) if len(x) > 1 else math.nan
        rec["repeats"] = len(g)
        out.append(rec)
    return pd.DataFrame(out)


# --------------------------------------------------------------------------------------
# RL: the PPO loss at a run's final checkpoint
# --------------------------------------------------------------------------------------


@dataclass
class SharpnessConfig:
    """Sharpness of the PPO loss at a run's final checkpoint, on fresh rollouts."""

    num_envs: int = 8
    """environments of the measurement rollouts (the same for every run, so that runs of
    different batch sizes are measured on the same number of samples)"""
    num_steps: int = 128
    """agent steps per environment per measurement rollout (samples = num_envs x num_steps)"""
    repeats: int = 3
    """independent rollouts (fresh environment seeds); the spread gives the standard error"""
    eps: str = "1e-3,5e-4"
    """box sizes of the eps-sharpness, comma-separated (Keskar et al. used 1e-3 and 5e-4)"""
    ascent_steps: int = 10
    """projected gradient ascent steps for the max over the box"""
    power_iters: int = 20
    """most Hessian-vector products of the power iteration"""
    seed: int = 12345
    """base seed of the measurement rollouts (repeat r uses seed + r)"""
    device: str = "cpu"
    """device of the measurement"""

    def __post_init__(self) -> None:
        for name in ("num_envs", "num_steps", "repeats", "ascent_steps", "power_iters"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {self.seed!r}")
        try:
            values = self.eps_values
        except ValueError:
            values = ()
        if not values or any(not (e > 0 and math.isfinite(e)) for e in values):
            raise ValueError(f"eps must be positive numbers, comma-separated (e.g. 1e-3,5e-4), "
                             f"got {self.eps!r}")

    @property
    def eps_values(self) -> tuple[float, ...]:
        return tuple(float(e) for e in str(self.eps).split(",") if e.strip())


SHARPNESS_COLUMNS = ["term", "repeat", "samples", "loss", "top_eigenvalue", "eigen_iterations"]


def load_policy(run_dir: str | Path, device: str = "cpu", *,
                checkpoint: str | Path | None = None) -> tuple[nn.Module, dict, int]:
    """(model with the checkpoint's weights, config.json, checkpoint iteration).

    ``checkpoint``: a ``ckpt_*.pt`` file of this run (default: its latest good checkpoint).
    """
    path = Path(run_dir)
    if not (path / CONFIG_FILE).exists():
        raise FileNotFoundError(f"{path} holds no {CONFIG_FILE}; is it a run directory "
                                "(rlscale train --run-dir ...)?")
    config = json.loads((path / CONFIG_FILE).read_text())
    if "train" not in config or "ppo" not in config:
        raise ValueError(f"{path / CONFIG_FILE} is not a PPO run's config (no train/ppo "
                         "sections); sharpness needs a run of `rlscale train`")
    if checkpoint is not None:
        loaded = load_checkpoint_file(checkpoint, map_location=device)
    else:
        loaded = RunDir(path).load_latest_checkpoint(map_location=device)
    if loaded is None:
        raise FileNotFoundError(f"{path} has no loadable checkpoint; train it (or resume it) "
                                "until a checkpoint is written")
    state, iteration = loaded
    train = config["train"]
    env = envs.make_vec(train["env"], 1, 0, backend=train.get("backend"),
                        preset=train.get("env_preset"))
    try:
        model = build_actor_critic(env.single_observation_space, env.single_action_space,
                                   train.get("network", "auto"))
    finally:
        env.close()
    model.load_state_dict(state["model"])
    return model.to(device), config, iteration


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
    return {"obs": buffer.obs.flatten(0, 1), "actions": buffer.actions.flatten(),
            "logprobs": buffer.logprobs.flatten(), "values": buffer.values.flatten(),
            "advantages": adv, "returns": returns.flatten(), "mask": mask}


def run_sharpness(run_dir: str | Path, cfg: SharpnessConfig | None = None) -> pd.DataFrame:
    """Per repeat and PPO loss term: loss, top Hessian eigenvalue and eps-sharpness at the
    run's final checkpoint, on ``cfg.repeats`` fresh rollouts of ``num_envs x num_steps``.

    Columns: ``SHARPNESS_COLUMNS`` + eps_sharpness_{eps} per eps, ascent_steps, power_iters,
    iteration (of the checkpoint), rollout_batch_size (of the run), run_dir.
    """
    cfg = cfg or SharpnessConfig()
    model, config, iteration = load_policy(run_dir, cfg.device)
    ppo_fields = {f.name for f in dataclasses.fields(PPOConfig)}
    ppo = PPOConfig(**{k: v for k, v in config["ppo"].items() if k in ppo_fields})
    train = config["train"]
    rows = []
    for r in range(cfg.repeats):
        batch = fresh_batch(model, config, ppo, cfg, cfg.seed + r)
        gen = torch.Generator().manual_seed(cfg.seed + r)
        for term in PPO_TERMS:
            def loss_fn(term=term, batch=batch):
                terms = ppo_loss(model, batch, ppo)
                return terms.policy_loss if term == "policy" else terms.value_loss

            m = measure_sharpness(loss_fn, model, eps=cfg.eps_values, power_iters=cfg.power_iters,
                                  ascent_steps=cfg.ascent_steps, generator=gen)
            rows.append(dict(term=term, repeat=r, samples=cfg.num_envs * cfg.num_steps, **m,
                             ascent_steps=cfg.ascent_steps, power_iters=cfg.power_iters,
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
                     ascent_steps: int = 10, power_iters: int = 20,
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
                                  eps=eps, power_iters=power_iters,
                                  ascent_steps=ascent_steps, generator=gen)
            train_acc = accuracy(model, data.x_train, data.y_train)
            test_acc = accuracy(model, data.x_test, data.y_test)
            rows.append(dict(batch_size=int(b), seed=int(seed), steps=result.summary["steps"],
                             train_acc=train_acc, test_acc=test_acc, gap=train_acc - test_acc,
                             **m, ascent_steps=ascent_steps))
    return pd.DataFrame(rows)


def trend(x: Any, y: Any) -> dict[str, Any]:
    """Least-squares slope of y against log2 x (change per doubling of x) over every point
    (each repeat is a point, so the repeats' spread sets the error), its 95% Student-t
    interval, and a verdict: 'increases with the batch size', 'decreases with the batch
    size', or 'no trend within noise' when the interval holds 0."""
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
                    runs: Collection[str] | None = None) -> pd.DataFrame:
    """``run_sharpness`` for every finished run of a sweep directory (``rl.sweeps`` layout),
    optionally only some seeds, one learning rate, or the runs named in ``runs``. Adds the
    run's name, seed and lr."""
    out = Path(sweep_dir)
    table = read_results(out)
    table = table[table["status"] == "finished"]
    if seeds is not None:
        table = table[table["seed"].isin(list(seeds))]
    if lr is not None:
        table = table[np.isclose(table["lr"].astype(float), lr)]
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
    return pd.concat(parts, ignore_index=True)


def plot_sharpness(path: str | Path, df: pd.DataFrame, *, x: str, title: str,
                   terms: Sequence[str] = PPO_TERMS, eps: float = 1e-3,
                   gap: bool = False) -> Path:
    """Top eigenvalue and eps-sharpness (and the generalization gap when ``gap``) against
    ``x`` (log axis), one point per repeat and the mean per x; written atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # lazy: slow import, figures only
    from matplotlib.figure import Figure  # lazy: slow import, figures only

    cols = ["top_eigenvalue", f"eps_sharpness_{eps:g}"] + (["gap"] if gap else [])
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
        ax.set_ylabel(col.replace("_", " "))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return save_figure(fig, path, dpi=90)
