"""Sharpness against ground truth: quadratics with a known Hessian, where the top eigenvalue
and Keskar's eps-sharpness have closed forms; then the PPO and digits measurements run."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from rl.analysis.sharpness import (
    LANCZOS_VECTORS,
    SharpnessConfig,
    digits_sharpness,
    eps_sharpness,
    plot_sharpness,
    run_sharpness,
    summarize_repeats,
    top_hessian_eigenvalue,
    trend,
)


def quadratic(h: torch.Tensor, w0: torch.Tensor):
    """f(w) = 0.5 w^T H w at parameter w (initialized to w0), float64."""
    w = torch.nn.Parameter(w0.clone().double())
    return w, (lambda: 0.5 * w @ (h @ w))


def box_max_increase(h_diag: np.ndarray, w: np.ndarray, eps: float) -> float:
    """max over |z_i| <= eps (|w_i| + 1) of f(w + z) - f(w) for f = 0.5 sum h_i w_i^2.

    Separable: per coordinate, g z + 0.5 h z^2 with g = h w. Convex (h >= 0): an endpoint,
    |g| r + 0.5 h r^2. Concave (h < 0): the stationary point z* = -g / h if |z*| <= r,
    value g^2 / (2 |h|), else the endpoint towards sign(g)."""
    r = eps * (np.abs(w) + 1.0)
    g = h_diag * w
    total = 0.0
    for hi, gi, ri in zip(h_diag, g, r, strict=True):
        ends = max(gi * ri + 0.5 * hi * ri**2, -gi * ri + 0.5 * hi * ri**2)
        if hi < 0 and abs(gi / hi) <= ri:
            ends = max(ends, gi**2 / (2 * abs(hi)))
        total += ends
    return total


def rotated(spectrum, rng: np.random.Generator) -> torch.Tensor:
    """A symmetric matrix with the given eigenvalues in a random orthonormal basis."""
    q, _ = np.linalg.qr(rng.normal(size=(len(spectrum), len(spectrum))))
    return torch.tensor(q @ np.diag(spectrum) @ q.T)


NEAR_TIE = np.concatenate([[5.0, -4.8], np.random.default_rng(3).uniform(-1.0, 1.0, 48)])
"""Extreme eigenvalues of opposite signs and similar size (power iteration with the study's
10 products returned -1.55 on such a spectrum), and 48 smaller ones."""


@pytest.mark.parametrize("start", range(3))
def test_lanczos_resolves_a_near_tie_of_opposite_signs_at_the_defaults(start):
    rng = np.random.default_rng(start)
    w, f = quadratic(rotated(NEAR_TIE, rng), torch.tensor(rng.normal(size=NEAR_TIE.size)))
    assert w.numel() > LANCZOS_VECTORS  # Lanczos, not the small models' full Hessian
    tol = 1e-3  # the default
    ends = top_hessian_eigenvalue(f, [w], generator=torch.Generator().manual_seed(start))
    assert ends.converged and ends.top.converged and ends.bottom.converged
    # ARPACK stops once |H v - theta v| <= tol |theta|; for a symmetric H an eigenvalue lies
    # within that residual of theta, and at the ends it is the extreme one.
    assert abs(ends.top.value - 5.0) <= tol * abs(ends.top.value)
    assert abs(ends.bottom.value + 4.8) <= tol * abs(ends.bottom.value)
    assert 0 < ends.products <= 2 * 200  # within the default budget of both ends


def test_an_eigenvalue_not_converged_within_its_products_is_reported_unconverged():
    rng = np.random.default_rng(0)
    w, f = quadratic(rotated(NEAR_TIE, rng), torch.tensor(rng.normal(size=NEAR_TIE.size)))
    ends = top_hessian_eigenvalue(f, [w], max_products=5)
    for end in (ends.top, ends.bottom):
        assert not end.converged and math.isnan(end.value) and end.products == 5
    assert not ends.converged


def test_a_small_model_gets_its_exact_extreme_eigenvalues():
    spectrum = [6.0, 3.0, 1.0, 0.5, -0.2, -1.0, 0.0, 2.0]
    w, f = quadratic(rotated(spectrum, np.random.default_rng(0)), torch.ones(8))
    ends = top_hessian_eigenvalue(f, [w])
    assert ends.top.value == pytest.approx(6.0, rel=1e-12)
    assert ends.bottom.value == pytest.approx(-1.0, rel=1e-12)
    assert ends.converged and ends.products == 8  # one product per weight


@pytest.mark.parametrize("n", [3, 50])  # the full Hessian and Lanczos
@pytest.mark.parametrize("loss", ["linear", "constant"])
def test_a_zero_hessian_gives_zero_converged(n, loss):
    w = torch.nn.Parameter(torch.ones(n, dtype=torch.float64))
    f = (lambda: 3.0 * w.sum()) if loss == "linear" else (lambda: torch.tensor(1.0))
    ends = top_hessian_eigenvalue(f, [w])
    assert (ends.top.value, ends.bottom.value, ends.converged) == (0.0, 0.0, True)


@pytest.mark.parametrize("measure", [top_hessian_eigenvalue, eps_sharpness])
def test_a_model_without_trainable_parameters_is_refused(measure):
    model = torch.nn.Linear(3, 2).requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        measure(lambda: model(torch.ones(3)).sum(), model)


@pytest.mark.parametrize(("measure", "kw", "match"), [
    (eps_sharpness, {"eps": 0.0}, r"eps must be a finite number > 0"),
    (eps_sharpness, {"eps": -1e-3}, r"eps must be a finite number > 0"),
    (eps_sharpness, {"steps": 0}, r"steps must be an integer >= 1"),
    (eps_sharpness, {"starts": 0}, r"starts must be an integer >= 1"),
    (top_hessian_eigenvalue, {"max_products": 0}, r"max_products must be an integer >= 1"),
    (top_hessian_eigenvalue, {"tol": 0.0}, r"tol must be in \(0, 1\)"),
])
def test_bad_settings_are_refused_with_their_valid_range(measure, kw, match):
    w, f = quadratic(torch.eye(3, dtype=torch.float64), torch.ones(3))
    with pytest.raises(ValueError, match=match):
        measure(f, [w], **kw)


def test_keskar_normalization_refuses_a_loss_at_or_below_minus_one():
    w, f = quadratic(torch.eye(3, dtype=torch.float64), torch.ones(3))
    with pytest.raises(ValueError, match=r"1 \+ f\(w\) = -0.5"):
        eps_sharpness(lambda: f() - 3.0, [w])  # f(w) = 1.5 - 3
    assert torch.equal(w.detach(), torch.ones(3, dtype=torch.float64))  # weights restored


@pytest.mark.parametrize(("call", "match"), [
    (lambda: summarize_repeats(pd.DataFrame(columns=["b", "v"]), ["b"], ["v"]), "is empty"),
    (lambda: summarize_repeats(pd.DataFrame({"b": [8]}), ["b"], ["v"]),
     r"lacks column\(s\) \['v'\]; columns present: \['b'\]"),
    (lambda: plot_sharpness("unused.png", pd.DataFrame({"b": [8], "top_eigenvalue": [1.0]}),
                            x="b", title=""), r"\['eps_sharpness_0.001'\]; columns present"),
])
def test_an_empty_or_incomplete_table_is_refused_with_the_reason(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_unconverged_eigenvalues_stay_rows_but_leave_means_and_trends():
    rows = pd.DataFrame({"b": [8, 8, 32, 32, 128, 128],
                         "top_eigenvalue": [1.0, math.nan, 2.0, 2.2, 3.0, 1e6],
                         "top_eigen_converged": [True, False, True, True, True, True]})
    summary = summarize_repeats(rows, ["b"], ["top_eigenvalue"])
    assert summary["top_eigenvalue"].iloc[0] == 1.0
    assert list(summary["top_eigenvalue_n"]) == [1, 2, 2] and list(summary["repeats"]) == [2] * 3
    assert trend(rows["b"], rows["top_eigenvalue"])["n"] == 5


@pytest.mark.parametrize("eps", [1e-3, 5e-4, 0.3])
def test_eps_sharpness_matches_the_closed_form_on_a_diagonal_quadratic(eps):
    rng = np.random.default_rng(1)
    h_diag = np.array([5.0, 2.0, 0.5, 0.0, -0.3, -2.0, -50.0, 1.0])
    w0 = rng.normal(size=8) * 2
    w0[3] = 0.0  # a zero gradient on a flat coordinate
    w, f = quadratic(torch.diag(torch.tensor(h_diag)), torch.tensor(w0))
    # shifted so that 1 + f(w) > 0, as Keskar's normalization needs (h has negative entries)
    s, f0, fmax = eps_sharpness(lambda: f() + 100.0, [w], eps=eps, steps=30)
    f_w = 0.5 * float(np.sum(h_diag * w0**2)) + 100.0
    best = box_max_increase(h_diag, w0, eps)
    assert f0 == pytest.approx(f_w, rel=1e-12)
    # Every point evaluated is in the box, so the max found is a lower bound; L-BFGS-B
    # reaches the convex coordinates' ends and the concave ones' interior maxima.
    assert best * (1 - 1e-6) <= fmax - f_w <= best + 1e-12
    assert s == pytest.approx(100 * (fmax - f_w) / (1 + f_w), rel=1e-12)
    assert torch.equal(w.detach(), torch.tensor(w0))  # weights restored


def test_eps_sharpness_finds_the_max_of_a_rank_one_hessian_at_a_minimum():
    """f(w) = c + 0.5 lam (u . (w - w*))^2 at w = w*: the gradient is zero, and the max over
    the box is at the corner z_i = sign(u_i) r_i, 0.5 lam (sum |u_i| r_i)^2 (the first-orthant
    search used before found a third of it)."""
    rng = np.random.default_rng(2)
    n, lam, c, eps = 60, 10.0, 0.3, 1e-3
    u = rng.normal(size=n)
    u /= np.linalg.norm(u)
    w_star = rng.normal(size=n)
    u_t, w_star_t = torch.tensor(u), torch.tensor(w_star)
    w = torch.nn.Parameter(w_star_t.clone())

    def f():
        return c + 0.5 * lam * (u_t @ (w - w_star_t)) ** 2

    s, f0, fmax = eps_sharpness(f, [w], eps=eps)  # the defaults: 10 iterations, 3 starts
    truth = 0.5 * lam * float(np.abs(u) @ (eps * (np.abs(w_star) + 1.0))) ** 2
    assert f0 == pytest.approx(c)
    assert 0.9 * truth <= fmax - f0 <= truth * (1 + 1e-9)
    assert s == pytest.approx(100 * (fmax - f0) / (1 + c), rel=1e-12)  # Keskar's normalization


def test_trend_verdicts():
    x = np.repeat([8, 32, 128, 512], 3)
    rng = np.random.default_rng(0)
    assert trend(x, np.log2(x) + rng.normal(0, 0.1, x.size))["verdict"].startswith("increases")
    flat = trend(x, np.tile([1.0, -1.0, 0.3], 4))  # the same spread at every batch size
    assert flat["lo"] < 0 < flat["hi"] and flat["verdict"] == "no trend within noise"
    assert trend([8, 16], [1.0, 2.0])["verdict"] == "too few points for a trend"


def test_ppo_sharpness_at_a_runs_final_checkpoint(tmp_path, one_torch_thread):
    from agents import PPOConfig
    from rl.train.config import PRESETS, TrainConfig
    from rl.train.launch import train

    train_kw, ppo_kw = PRESETS["classic"]
    run_dir = tmp_path / "run"
    cfg = TrainConfig(**{**train_kw, "env": "CartPole", "num_envs": 4, "num_steps": 16,
                         "total_agent_steps": 128, "run_dir": str(run_dir), "gns_every": 0})
    train(cfg, PPOConfig(**{**ppo_kw, "num_epochs": 2}))
    sc = SharpnessConfig(num_envs=4, num_steps=32, repeats=2, max_products=100, eigen_tol=1e-2,
                         ascent_steps=3, ascent_starts=2)
    df = run_sharpness(run_dir, sc)
    assert len(df) == 4 and set(df["term"]) == {"policy", "value"}
    assert (df["samples"] == 128).all() and (df["rollout_batch_size"] == 64).all()
    assert (df["max_products"] == 100).all() and (df["ascent_steps"] == 3).all()
    assert (df["ascent_starts"] == 2).all()
    assert df[["top_eigen_converged", "min_eigen_converged"]].all().all()
    assert (df["eigen_products"] <= 2 * 100).all()
    assert df[["top_eigenvalue", "min_eigenvalue", "eps_sharpness_0.001",
               "eps_sharpness_0.0005"]].notna().all().all()
    assert (df["min_eigenvalue"] <= df["top_eigenvalue"]).all()
    # The max over the box is at least the loss at w; a larger box finds at least as much.
    assert (df["eps_sharpness_0.001"] >= -1e-9).all()
    pol = df[df["term"] == "policy"]
    assert pol["loss"].abs().max() < 1e-5  # ratio 1, normalized advantages: mean -A = 0
    # Repeats are fresh rollouts: they differ.
    assert pol["top_eigenvalue"].nunique() == 2


def test_sharpness_refuses_a_directory_without_a_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        run_sharpness(tmp_path)
    with pytest.raises(ValueError, match="repeats"):
        SharpnessConfig(repeats=0)


def test_digits_sharpness_and_generalization_gap(one_torch_thread):
    df = digits_sharpness((64, 512), epochs=2, seeds=(0,), max_products=60, ascent_steps=2,
                          ascent_starts=2)
    assert list(df["batch_size"]) == [64, 512]
    assert (df["steps"].iloc[0] > df["steps"].iloc[1])  # same epochs, fewer steps
    assert df["gap"].between(-1, 1).all() and df["top_eigenvalue"].gt(0).all()
    assert math.isfinite(df["eps_sharpness_0.001"].iloc[0])
