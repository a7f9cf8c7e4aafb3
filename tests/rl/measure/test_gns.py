"""Ground-truth tests for rl.measure.gns (gradient noise scale, McCandlish et al. 2018, Appendix A).

Tolerance convention. A Monte Carlo check compares the mean of R independent, unbiased
estimates with the closed-form truth. By the CLT the mean is ~ Normal(truth, SD^2 / R), so
we allow K_SE = 4 standard errors: a correct implementation fails a given check with
probability 6e-5 (two-sided normal tail), about 2e-3 over the ~30 such checks here; the
seeds are fixed, so the outcome is deterministic anyway. SD is the closed-form standard
deviation where we have one (Gaussian gradients) and the empirical one otherwise. Each
Monte Carlo test also asserts that its tolerance is small compared with the truth, so
that it could detect a real bias.
"""

from __future__ import annotations

import functools
import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from rl.measure.gns import (
    GNSSample,
    GNSTracker,
    adam_preconditioner,
    measure,
    per_example_measure,
    two_batch_estimate,
)

K_SE = 4.0  # standard errors allowed in every Monte Carlo comparison (see module docstring)
D = 4  # parameter dimension of the ground-truth models
CONFIGS = [(1, 2), (4, 2), (16, 2), (1, 8), (4, 8), (16, 8)]  # (group size b, groups K)


def reps_for(num_groups: int) -> int:
    # K = 2 estimates are the noisiest (the trace estimate has K - 1 = 1 degree of freedom),
    # so they get more repetitions; cost is ~75 us per group on CPU.
    return 3000 if num_groups == 2 else 1000


def mean_and_se(values) -> tuple[float, float]:
    values = np.asarray(values, dtype=np.float64)
    return float(values.mean()), float(values.std(ddof=1) / math.sqrt(len(values)))


def ratio_of_means_se(num, den) -> tuple[float, float]:
    """Ratio of means and its delta-method standard error (iid pairs)."""
    num, den = np.asarray(num, np.float64), np.asarray(den, np.float64)
    ratio = num.mean() / den.mean()
    residual = num - ratio * den  # Var(mean(T)/mean(G)) ~ Var(T - R G) / (n mean(G)^2)
    return float(ratio), float(residual.std(ddof=1) / (math.sqrt(len(num)) * abs(den.mean())))


def linear_model() -> nn.Linear:
    return nn.Linear(D, 1, bias=False)


def neg_linear_loss(model, z):
    # loss = -theta^T z averaged over the group: per-sample gradient is exactly -z.
    return -model(z).mean()


# ---------------------------------------------------------------------------------------------
# Ground truth 1a: exactly Gaussian per-sample gradients.
#   loss = -theta^T z, z ~ N(mu, S)  =>  g = -z, G = -mu, Sigma = S.
# ---------------------------------------------------------------------------------------------

MU = torch.tensor([0.5, -0.5, 0.5, 0.5], dtype=torch.float64)  # |G|^2 = 1
_L = torch.tensor(
    [[1.0, 0.0, 0.0, 0.0], [0.5, 0.9, 0.0, 0.0], [-0.3, 0.2, 0.8, 0.0], [0.1, -0.4, 0.3, 0.6]],
    dtype=torch.float64,
)
CHOL = _L * math.sqrt(4.0 / float((_L**2).sum()))  # scaled so tr(S) = |CHOL|_F^2 = 4
SIGMA = CHOL @ CHOL.T
G_TRUE = -MU
G2_TRUE = float(G_TRUE @ G_TRUE)  # 1
TRACE_TRUE = float(torch.trace(SIGMA))  # 4


def gaussian_closed_form_sd(b: int, k: int) -> tuple[float, float]:
    """Exact SDs of one two-batch estimate when group gradients g_k ~ iid N(G, C), C = Sigma/b.

    g2_hat = |mean_k g_k|^2 - tr(S)/K and trace_hat = b tr(S) with S the unbiased sample
    covariance of the g_k; mean and S are independent and (K-1) S ~ Wishart(C, K-1), so
        Var(trace_hat) = 2 tr(Sigma^2) / (K - 1)
        Var(g2_hat)    = 2 tr(C^2) / (K (K - 1)) + 4 G^T C G / K.
    """
    c = SIGMA / b
    var_g2 = 2 * float(torch.trace(c @ c)) / (k * (k - 1)) + 4 * float(G_TRUE @ c @ G_TRUE) / k
    var_trace = 2 * float(torch.trace(SIGMA @ SIGMA)) / (k - 1)
    return math.sqrt(var_g2), math.sqrt(var_trace)


@functools.cache
def gaussian_samples(b: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    gen = torch.Generator().manual_seed(100 * b + k)
    reps = reps_for(k)
    z = MU + torch.randn(reps, k, b, D, generator=gen, dtype=torch.float64) @ CHOL.T
    model = linear_model()
    samples = [measure(model, neg_linear_loss, z[r].float()) for r in range(reps)]
    return np.array([s.g2 for s in samples]), np.array([s.trace_sigma for s in samples])


@pytest.mark.parametrize("b,k", CONFIGS)
def test_measure_recovers_exact_gaussian_truth(b, k):
    g2, trace = gaussian_samples(b, k)
    sd_g2, sd_trace = gaussian_closed_form_sd(b, k)
    tol_g2 = K_SE * sd_g2 / math.sqrt(len(g2))
    tol_trace = K_SE * sd_trace / math.sqrt(len(trace))
    # Power: worst case (b=1, K=2, R=3000) gives tol_g2 ~ 0.2 |G|^2, tol_trace ~ 0.07 tr(Sigma).
    assert tol_g2 < 0.25 * G2_TRUE and tol_trace < 0.1 * TRACE_TRUE
    assert abs(g2.mean() - G2_TRUE) < tol_g2
    assert abs(trace.mean() - TRACE_TRUE) < tol_trace
    # The closed-form spread is what the estimator actually has (catches a wrong scale in the
    # tolerance itself). The sample SD of R >= 1000 draws has relative SE <= sqrt((kurt-1)/4R)
    # < 0.05 for these light-tailed (chi-square-like, kurtosis <= 15) estimates; allow 25%.
    assert g2.std() == pytest.approx(sd_g2, rel=0.25)
    assert trace.std() == pytest.approx(sd_trace, rel=0.25)


# ---------------------------------------------------------------------------------------------
# Ground truth 1b: least squares with Gaussian inputs (gradient nonlinear in the data).
#   l(w) = 0.5 (x^T w - y)^2, x ~ N(0, I_d), y = x^T w* + sigma_n eps, at w = w* + a.
#   g = x (x^T a - sigma_n eps), G = E[x x^T] a = a.
#   Isserlis: E[x x^T a a^T x x^T] = 2 a a^T + |a|^2 I, so E[(x^T a)^2 |x|^2] = (d + 2)|a|^2,
#   E|g|^2 = (d + 2)|a|^2 + d sigma_n^2 and tr(Sigma) = E|g|^2 - |G|^2 = (d+1)|a|^2 + d sigma_n^2.
# ---------------------------------------------------------------------------------------------

W_STAR = torch.tensor([1.0, -2.0, 0.5, 0.0], dtype=torch.float64)
A_OFFSET = torch.tensor([0.5, 0.5, -0.5, 0.5], dtype=torch.float64)  # |a|^2 = 1
NOISE_VAR = 0.25
REG_G2_TRUE = float(A_OFFSET @ A_OFFSET)  # 1
REG_TRACE_TRUE = (D + 1) * REG_G2_TRUE + D * NOISE_VAR  # 6


def regression_model() -> nn.Linear:
    model = linear_model().double()
    with torch.no_grad():
        model.weight.copy_((W_STAR + A_OFFSET).unsqueeze(0))
    return model


def squared_error_loss(model, group):
    x, y = group
    return 0.5 * (model(x).squeeze(-1) - y).square().mean()


@functools.cache
def regression_samples(b: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    gen = torch.Generator().manual_seed(7000 + 100 * b + k)
    reps = reps_for(k)
    x = torch.randn(reps, k, b, D, generator=gen, dtype=torch.float64)
    eps = torch.randn(reps, k, b, generator=gen, dtype=torch.float64)
    y = x @ W_STAR + math.sqrt(NOISE_VAR) * eps
    model = regression_model()
    samples = [
        measure(model, squared_error_loss, list(zip(x[r], y[r], strict=True))) for r in range(reps)
    ]
    return np.array([s.g2 for s in samples]), np.array([s.trace_sigma for s in samples])


@pytest.mark.parametrize("b,k", CONFIGS)
def test_measure_recovers_least_squares_truth(b, k):
    g2, trace = regression_samples(b, k)
    g2_mean, g2_se = mean_and_se(g2)
    trace_mean, trace_se = mean_and_se(trace)
    # Power: per-draw SDs (from a separate 2e5-draw numpy simulation of the same model) are
    # largest at b=1: g2 3.7 and trace 10.3 for K=2 (R=3000), trace 4.9 for K=8 (R=1000),
    # since tr_hat involves 8th moments of x. So K_SE * SE <= 0.27 |G|^2 and <= 0.75 =
    # 0.125 tr(Sigma); anything more precise is a bonus.
    assert K_SE * g2_se < 0.3 * REG_G2_TRUE and K_SE * trace_se < 0.15 * REG_TRACE_TRUE
    assert abs(g2_mean - REG_G2_TRUE) < K_SE * g2_se
    assert abs(trace_mean - REG_TRACE_TRUE) < K_SE * trace_se


# ---------------------------------------------------------------------------------------------
# 2. two_batch_estimate on hand numbers
# ---------------------------------------------------------------------------------------------


def test_two_batch_estimate_hand_numbers():
    # b=2, B=8, |G_b|^2=5, |G_B|^2=2: g2 = (16 - 10)/6 = 1, tr = 3 / (1/2 - 1/8) = 8.
    assert two_batch_estimate(2, 5.0, 8, 2.0) == pytest.approx((1.0, 8.0), rel=1e-15)
    # Unbiasedness: the estimator is linear in the norms, so feeding the exact expectations
    # E|G_b|^2 = |G|^2 + tr/b and E|G_B|^2 = |G|^2 + tr/B must return (|G|^2, tr) exactly.
    g2, tr, b, big = 1.5, 12.0, 4, 32
    assert two_batch_estimate(b, g2 + tr / b, big, g2 + tr / big) == pytest.approx(
        (g2, tr), rel=1e-12
    )
    # Negative single estimates come out as they are (small norm below the big one).
    g2_neg, tr_neg = two_batch_estimate(1, 1.0, 2, 1.5)
    assert g2_neg == pytest.approx(2.0) and tr_neg == pytest.approx(-1.0)
    # Arrays and tensors work elementwise.
    g2_arr, tr_arr = two_batch_estimate(2, np.array([5.0, 3.0]), 8, np.array([2.0, 3.0]))
    np.testing.assert_allclose(g2_arr, [1.0, 3.0])
    np.testing.assert_allclose(tr_arr, [8.0, 0.0], atol=1e-12)
    g2_t, tr_t = two_batch_estimate(torch.tensor(2), torch.tensor(5.0), 8, torch.tensor(2.0))
    assert isinstance(g2_t, torch.Tensor)
    assert float(g2_t) == pytest.approx(1.0) and float(tr_t) == pytest.approx(8.0)


@pytest.mark.parametrize(
    "b,big,match",
    [
        (8, 8, "smaller"),
        (16, 8, "smaller"),
        (0, 8, "positive"),
        (2, -1, "positive"),
        (float("nan"), 8, "positive"),
        ([1, 2], 8, "positive"),
    ],
)
def test_two_batch_estimate_validation(b, big, match):
    with pytest.raises(ValueError, match=match):
        two_batch_estimate(b, 1.0, big, 1.0)


# ---------------------------------------------------------------------------------------------
# 3. GNSTracker
# ---------------------------------------------------------------------------------------------


def test_tracker_converges_to_true_b_simple():
    g2, trace = regression_samples(4, 8)  # 1000 draws, truth B_simple = 6
    truth = REG_TRACE_TRUE / REG_G2_TRUE
    beta = 0.995
    tracker = GNSTracker(beta=beta, window=len(g2))
    for a, t in zip(g2, trace, strict=True):
        tracker.update(a, t)
    ratio, ratio_se = ratio_of_means_se(trace, g2)
    assert tracker.mean_b_simple == pytest.approx(ratio, rel=1e-12)
    assert tracker.b_simple_stderr == pytest.approx(ratio_se, rel=1e-9)
    # Power: relative SE ~ 1.5% here, so the tolerance is ~ 6% of the truth.
    assert K_SE * ratio_se < 0.1 * truth
    assert abs(tracker.mean_b_simple - truth) < K_SE * ratio_se
    # Fieller interval at 4 SE contains the truth, and is bounded since g2 is resolved.
    _, lower, upper = tracker.b_simple_interval(z=K_SE)
    assert lower < truth < upper < math.inf
    # EMA ratio: linearize around the truth, ratio - truth ~ sum w_i u_i / (sum w_i |G|^2)
    # with u_i = T_i - truth G_i iid, weights w_i = beta^(R - i); SD = |w|_2 sd(u) / (|w|_1 G).
    w = beta ** np.arange(len(g2))[::-1]
    u = trace - truth * g2
    ema_se = np.sqrt((w**2).sum()) * u.std(ddof=1) / (w.sum() * REG_G2_TRUE)
    assert K_SE * ema_se < 0.15 * truth
    assert abs(tracker.ema_b_simple - truth) < K_SE * ema_se


def test_tracker_first_update_and_ema_against_numpy():
    tracker = GNSTracker(beta=0.9, window=3)
    sample = GNSSample(
        g2=3.7,
        trace_sigma=11.0,
        small_batch_size=4,
        big_batch_size=32,
        small_sq_norm=0.0,
        big_sq_norm=0.0,
        num_groups=8,
    )
    tracker.update(sample)
    assert tracker.ema_g2 == pytest.approx(3.7, rel=1e-14)
    assert tracker.ema_trace_sigma == pytest.approx(11.0, rel=1e-14)
    assert tracker.ema_b_simple == pytest.approx(11.0 / 3.7, rel=1e-14)
    assert tracker.mean_g2 == 3.7 and tracker.count == 1
    assert math.isnan(tracker.b_simple_stderr)  # needs two samples for a spread


def test_tracker_keeps_negative_samples():
    g2 = np.array([1.0, -2.0, 0.5, -0.3, 3.0, 0.7])
    trace = np.array([10.0, 12.0, -1.0, 9.0, 11.0, 8.0])
    beta, window = 0.8, 4
    tracker = GNSTracker(beta=beta, window=window)
    for a, t in zip(g2, trace, strict=True):
        tracker.update(float(a), float(t))
    # Window mean equals numpy's mean of the raw (unclipped) last `window` values.
    assert tracker.mean_g2 == pytest.approx(g2[-window:].mean(), rel=1e-14)
    assert tracker.mean_trace_sigma == pytest.approx(trace[-window:].mean(), rel=1e-14)
    # The bias-corrected EMA is the normalized exponentially weighted mean of all values.
    w = beta ** np.arange(len(g2))[::-1]
    assert tracker.ema_g2 == pytest.approx((w * g2).sum() / w.sum(), rel=1e-12)
    assert tracker.ema_trace_sigma == pytest.approx((w * trace).sum() / w.sum(), rel=1e-12)
    assert tracker.mean_b_simple == pytest.approx(trace[-window:].mean() / g2[-window:].mean())


def test_tracker_ratio_guard():
    tracker = GNSTracker(beta=0.5, window=2)
    tracker.update(-1.0, 5.0)
    tracker.update(0.5, 5.0)  # window mean g2 = -0.25, EMA g2 < 0 as well
    summary = tracker.summary()
    assert summary["mean_g2"] == pytest.approx(-0.25)
    assert math.isnan(summary["mean_b_simple"]) and math.isnan(summary["ema_b_simple"])
    assert all(math.isnan(v) for v in tracker.b_simple_interval())
    exact_zero = GNSTracker(window=2)
    exact_zero.update(1.0, 5.0)
    exact_zero.update(-1.0, 5.0)
    assert exact_zero.mean_g2 == 0.0 and math.isnan(exact_zero.mean_b_simple)
    # g2 positive but not significant: Fieller's set is unbounded above.
    noisy = GNSTracker(window=4)
    for a in (3.0, -2.5, 2.0, -2.0):
        noisy.update(a, 10.0 + a)
    b_simple, lower, upper = noisy.b_simple_interval()
    assert b_simple > 0 and lower == 0.0 and upper == math.inf
    assert set(summary) >= {
        "ema_g2",
        "ema_trace_sigma",
        "ema_b_simple",
        "mean_g2",
        "mean_trace_sigma",
        "mean_b_simple",
        "b_simple_stderr",
        "count",
    }


def test_tracker_state_dict_round_trip():
    rng = np.random.default_rng(3)
    stream = list(zip(rng.normal(1.0, 2.0, 30), rng.normal(8.0, 3.0, 30), strict=True))
    original = GNSTracker(beta=0.9, window=7)
    for a, t in stream[:12]:
        original.update(a, t)
    state = json.loads(json.dumps(original.state_dict()))  # plain, serializable
    resumed = GNSTracker()  # different defaults: the state restores beta and window
    resumed.load_state_dict(state)
    for a, t in stream[12:]:
        original.update(a, t)
        resumed.update(a, t)
    assert resumed.summary() == original.summary()


# ---------------------------------------------------------------------------------------------
# 4. Time-correlated samples (AR(1) per environment)
# ---------------------------------------------------------------------------------------------
# For environment e and coordinate j: z_{e,t} = rho z_{e,t-1} + sqrt(1 - rho^2) eps_t with
# z_{e,0} ~ N(0, 1) (stationary, unit variance); the per-sample gradient of loss -theta^T x with
# x = mu + s * z is g = -(mu + s * z): G = -mu, Sigma = diag(s^2). Environments independent.
#
# The mean of one environment's T steps has covariance Sigma f / T with
#     f = 1 + 2 sum_{k=1}^{T-1} (1 - k/T) rho^k.
# So a batch of m whole environments (b = m T samples) has Cov(G_b) = Sigma_eff / b with
# Sigma_eff = f Sigma. "Right" here means: the noise scale whose tr(Sigma)/B predicts the
# variance of the batch-mean gradient that training actually uses (batches of whole
# rollouts). With groups split along the environment axis the group gradients are
# independent, (1) of rl.measure.gns holds with Sigma_eff, and the two-batch estimator is unbiased
# for |G|^2 and tr(Sigma_eff): B_grouped = f tr(Sigma) / |G|^2.
#
# The per-example estimator (b = 1, B = N = K m T) assumes independence. Its inputs have
# E|g_i|^2 = |G|^2 + tr(Sigma) but E|G_N|^2 = |G|^2 + f tr(Sigma) / N, so
#     E trace_pe = tr(Sigma) (1 - f/N) / (1 - 1/N),   E g2_pe = |G|^2 + tr(Sigma) (f - 1)/(N - 1),
# and its B_simple is lower than the grouped one by about f (exactly the ratio below).

RHO, STEPS, ENVS_PER_GROUP, AR_GROUPS, AR_REPS = 0.8, 16, 2, 8, 800
AR_SCALE = torch.tensor([1.6, 1.2, 0.8, 0.4], dtype=torch.float64).sqrt()  # tr(Sigma) = 4
AR_MU = MU  # |G|^2 = 1


def autocorrelation_factor(rho: float, steps: int) -> float:
    return 1.0 + 2.0 * sum((1.0 - k / steps) * rho**k for k in range(1, steps))


def test_correlated_samples_grouped_vs_per_example():
    f = autocorrelation_factor(RHO, STEPS)  # 6.57 for rho = 0.8, T = 16
    trace_sigma = float((AR_SCALE**2).sum())
    g2_true = float(AR_MU @ AR_MU)
    n = AR_GROUPS * ENVS_PER_GROUP * STEPS  # 256 samples per rollout
    gen = torch.Generator().manual_seed(42)
    shape = (AR_REPS, AR_GROUPS, ENVS_PER_GROUP, D)
    z = torch.randn(shape, generator=gen, dtype=torch.float64)
    steps = [z]
    for _ in range(STEPS - 1):
        z = RHO * z + math.sqrt(1 - RHO**2) * torch.randn(shape, generator=gen, dtype=torch.float64)
        steps.append(z)
    # x[r, k, e, t] -> groups of whole environments: (reps, K, m * T, d)
    x = (AR_MU + AR_SCALE * torch.stack(steps, dim=3)).reshape(AR_REPS, AR_GROUPS, -1, D).float()

    model = linear_model()
    grouped, single = [], []
    for r in range(AR_REPS):
        grouped.append(measure(model, neg_linear_loss, x[r]))
        single.append(per_example_measure(model, lambda m, xi: -m(xi).sum(), x[r].reshape(n, D)))
    assert single[0].assumes_independent_samples and not grouped[0].assumes_independent_samples
    assert (grouped[0].small_batch_size, grouped[0].big_batch_size) == (ENVS_PER_GROUP * STEPS, n)
    assert (single[0].small_batch_size, single[0].big_batch_size) == (1, n)

    g2_grp, tr_grp = np.array([s.g2 for s in grouped]), np.array([s.trace_sigma for s in grouped])
    g2_pe, tr_pe = np.array([s.g2 for s in single]), np.array([s.trace_sigma for s in single])

    # Grouped: unbiased for |G|^2 and tr(Sigma_eff) = f tr(Sigma).
    for values, truth in [(g2_grp, g2_true), (tr_grp, f * trace_sigma)]:
        mean, se = mean_and_se(values)
        assert K_SE * se < 0.15 * truth  # power
        assert abs(mean - truth) < K_SE * se
    # Per-example: the biased expectations derived above.
    pe_trace_expected = trace_sigma * (1 - f / n) / (1 - 1 / n)
    pe_g2_expected = g2_true + trace_sigma * (f - 1) / (n - 1)
    for values, truth in [(g2_pe, pe_g2_expected), (tr_pe, pe_trace_expected)]:
        mean, se = mean_and_se(values)
        assert abs(mean - truth) < K_SE * se

    # B_simple (ratio of means) of each, and the factor between them. The quotient of two
    # ratios has relative error <= the sum of their relative errors whatever their
    # correlation, so the tolerance is K_SE * (rel_se_grouped + rel_se_pe).
    b_grp, se_grp = ratio_of_means_se(tr_grp, g2_grp)
    b_pe, se_pe = ratio_of_means_se(tr_pe, g2_pe)
    predicted_factor = (f * trace_sigma / g2_true) / (pe_trace_expected / pe_g2_expected)  # 7.3
    rel_tol = K_SE * (se_grp / b_grp + se_pe / b_pe)
    assert rel_tol < 0.2  # power: ~ 0.1 here
    assert b_pe < b_grp
    assert b_grp / b_pe == pytest.approx(predicted_factor, rel=rel_tol)

    # "Right" checked directly: the grouped trace predicts the variance of the full-batch
    # mean gradient across rollouts, tr Cov(G_N) = tr(Sigma_eff) / N; the per-example one
    # predicts about f times too little. G_N is Gaussian with covariance C = f Sigma / N, so
    # the sample tr Cov over R rollouts has SD sqrt(2 tr(C^2) / (R - 1)); the prediction
    # adds its own SE / N.
    full_batch_grads = -x.double().reshape(AR_REPS, n, D).mean(dim=1).numpy()
    observed = float(np.trace(np.cov(full_batch_grads, rowvar=False)))
    c = f * np.diag(AR_SCALE.numpy() ** 2) / n
    sd_observed = math.sqrt(2 * np.trace(c @ c) / (AR_REPS - 1))
    predicted, predicted_se = mean_and_se(tr_grp / n)
    assert abs(observed - predicted) < K_SE * math.hypot(sd_observed, predicted_se)
    assert tr_pe.mean() / n < observed / 2


# ---------------------------------------------------------------------------------------------
# 5. Adam-preconditioned variant
# ---------------------------------------------------------------------------------------------


def test_adam_preconditioner_matches_manual_division():
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.99), eps=1e-3)
    step = 5
    for p in model.parameters():
        opt.state[p] = {
            "step": torch.tensor(float(step)),
            "exp_avg": torch.zeros_like(p),
            "exp_avg_sq": torch.rand_like(p) * 0.1 + 0.01,
        }
    groups = [torch.randn(6, 3) for _ in range(4)]

    def loss_fn(m, x):
        return m(x).tanh().square().mean()

    sample = measure(model, loss_fn, groups, preconditioner=adam_preconditioner(opt))
    assert sample.preconditioned

    divisors = [
        (opt.state[p]["exp_avg_sq"].double() / (1 - 0.99**step)).sqrt() + 1e-3
        for p in model.parameters()
    ]
    flat = []
    for x in groups:
        grads = torch.autograd.grad(loss_fn(model, x), list(model.parameters()))
        flat.append(
            torch.cat([(g.double() / d).flatten() for g, d in zip(grads, divisors, strict=True)])
        )
    flat = torch.stack(flat)
    small = float(flat.square().sum(dim=1).mean())
    big = float(flat.mean(dim=0).square().sum())
    g2, trace = two_batch_estimate(6, small, 24, big)
    assert sample.small_sq_norm == pytest.approx(small, rel=1e-10)
    assert sample.big_sq_norm == pytest.approx(big, rel=1e-10)
    assert sample.g2 == pytest.approx(g2, rel=1e-9)
    assert sample.trace_sigma == pytest.approx(trace, rel=1e-9)
    plain = measure(model, loss_fn, groups)
    assert not plain.preconditioned and plain.g2 != pytest.approx(sample.g2)


def test_adam_preconditioner_reads_state_like_adam():
    # After one real Adam step from zero state with gradient g: m_hat = g, and the update is
    # lr * g / (sqrt(v_hat) + eps), so the divisor must equal lr * g / (p_before - p_after).
    model = nn.Linear(3, 1)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1, eps=1e-8, weight_decay=0.0)
    with pytest.raises(ValueError, match="no second-moment state"):
        measure(
            model,
            lambda m, x: m(x).mean(),
            [torch.ones(2, 3)] * 2,
            preconditioner=adam_preconditioner(opt),
        )
    before = [p.detach().clone() for p in model.parameters()]
    model(torch.randn(5, 3)).pow(2).mean().backward()
    grads = [p.grad.detach().clone() for p in model.parameters()]
    opt.step()
    divisors = adam_preconditioner(opt).divisors(list(model.parameters()))
    for p, p0, g, d in zip(model.parameters(), before, grads, divisors, strict=True):
        # float32: the step p0 - p ~ lr = 0.1 on weights ~ 0.5 loses ~ ulp(0.5)/0.1 ~ 1e-6
        # relative precision; rtol 1e-4 leaves two orders of margin.
        torch.testing.assert_close((0.1 * g / (p0 - p.detach())).double(), d, rtol=1e-4, atol=0)


# ---------------------------------------------------------------------------------------------
# 6. Side effects, dict losses, per-parameter-group breakdown
# ---------------------------------------------------------------------------------------------


class TwoHeads(nn.Module):
    def __init__(self):
        super().__init__()
        self.trunk = nn.Linear(3, 8)
        self.pi = nn.Linear(8, 2)
        self.v = nn.Linear(8, 1)


def actor_critic_loss(model, group):
    obs, returns = group
    h = model.trunk(obs).tanh()
    policy = -torch.log_softmax(model.pi(h), dim=-1)[:, 0].mean()
    value = (model.v(h).squeeze(-1) - returns).square().mean()
    return {"total": policy + 0.5 * value, "policy": policy, "value": value}


def test_measure_dict_loss_breakdown_and_no_side_effects():
    torch.manual_seed(1)
    model = TwoHeads()
    groups = [(torch.randn(5, 3), torch.randn(5)) for _ in range(3)]
    params_before = {n: p.detach().clone() for n, p in model.named_parameters()}
    preset_grad = torch.full_like(model.trunk.weight, 7.0)
    model.trunk.weight.grad = preset_grad.clone()

    samples = measure(model, actor_critic_loss, groups)

    for n, p in model.named_parameters():
        assert torch.equal(p.detach(), params_before[n])
        assert (p.grad is None) == (p is not model.trunk.weight)
    assert torch.equal(model.trunk.weight.grad, preset_grad)

    assert set(samples) == {"total", "policy", "value"}
    assert samples["policy"].groups["v"] == (0.0, 0.0)
    assert samples["value"].groups["pi"] == (0.0, 0.0)
    for name in ("trunk", "pi", "v"):
        assert samples["total"].groups[name].trace_sigma > 0
    for s in samples.values():
        assert (s.small_batch_size, s.big_batch_size, s.num_groups) == (5, 15, 3)
        assert sum(e.g2 for e in s.groups.values()) == pytest.approx(s.g2, rel=1e-10, abs=1e-12)
        assert sum(e.trace_sigma for e in s.groups.values()) == pytest.approx(s.trace_sigma)

    logged = json.loads(json.dumps(samples["policy"].as_dict()))
    assert logged["b_simple"] == pytest.approx(samples["policy"].b_simple)
    assert logged["groups"]["v"] == [0.0, 0.0]

    # Each term equals a separate measurement of that term alone.
    alone = measure(model, lambda m, g: actor_critic_loss(m, g)["value"], groups)
    assert alone.g2 == pytest.approx(samples["value"].g2, rel=1e-10)
    assert alone.trace_sigma == pytest.approx(samples["value"].trace_sigma, rel=1e-10)


def test_per_example_matches_measure_with_singleton_groups():
    torch.manual_seed(2)
    model = TwoHeads()
    obs, returns = torch.randn(12, 3), torch.randn(12)

    def single(m, o, r):
        return actor_critic_loss(m, (o.unsqueeze(0), r.unsqueeze(0)))

    per_example = per_example_measure(model, single, obs, returns, chunk_size=5)
    singleton = measure(
        model, actor_critic_loss, list(zip(obs[:, None], returns[:, None], strict=True))
    )
    for term in ("total", "policy", "value"):
        pe, sg = per_example[term], singleton[term]
        assert pe.assumes_independent_samples and not sg.assumes_independent_samples
        assert (pe.small_batch_size, pe.big_batch_size) == (1, 12)
        # Same statistics, but float32 gradients from different kernels (vmap vs plain
        # autograd): ~1e-7 relative roundoff per gradient, amplified by the cancellation
        # small_sq_norm / |estimate| (<= 12 for this seed) -> ~1e-6; rtol 1e-5.
        assert pe.g2 == pytest.approx(sg.g2, rel=1e-5)
        assert pe.trace_sigma == pytest.approx(sg.trace_sigma, rel=1e-5)
        for name in ("trunk", "pi", "v"):
            assert pe.groups[name].trace_sigma == pytest.approx(
                sg.groups[name].trace_sigma, rel=1e-5, abs=1e-12
            )


def test_measure_input_validation():
    model = linear_model()
    x = torch.randn(4, D)
    with pytest.raises(ValueError, match="at least 2"):
        measure(model, neg_linear_loss, [x])
    with pytest.raises(ValueError, match="same size"):
        measure(model, neg_linear_loss, [x, x[:3]])
    with pytest.raises(ValueError, match="group_size"):
        measure(model, neg_linear_loss, [object(), object()])
    with pytest.raises(ValueError, match="scalar"):
        measure(model, lambda m, g: -m(g), [x, x])
    # Explicit group_size is used as given; a dict group infers its leading dimension.
    s = measure(model, lambda m, g: neg_linear_loss(m, g["x"]), [{"x": x}, {"x": x}])
    assert s.small_batch_size == 4
    s = measure(model, neg_linear_loss, [x, x], group_size=10)
    assert (s.small_batch_size, s.big_batch_size) == (10, 20)
    with pytest.raises(TypeError, match="one GNSTracker per loss term"):
        GNSTracker().update({"total": s})
