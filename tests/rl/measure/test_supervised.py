"""Supervised reference (rl.measure.supervised, `rlscale gns supervised`).

Tolerance convention (as in test_gns.py). A Monte Carlo check compares the mean of R
independent, unbiased estimates with the exact value. By the CLT the mean is ~ Normal(exact,
SD^2 / R); SD is estimated from the spread of the repetitions, and we allow K_SE = 4
standard errors: a correct implementation fails one such check with probability about 6e-5
(two-sided normal tail), so the three checks here essentially never fail by chance, while
the tolerance stays small enough (asserted: under 10% of the exact value) to catch a real
bias such as a wrong batch-size factor. The seeds are fixed, so the outcome is deterministic.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch.func import functional_call, grad, vmap

from rl.cli import main
from rl.measure import supervised
from rl.measure.gns import measure
from rl.measure.supervised import (
    SupervisedConfig,
    batch_loss,
    build_model,
    evaluation_due,
    load_dataset,
    ratio_interval,
    run_supervised,
    untrained_scores,
)

K_SE = 4.0
TRAIN_SEEDS = (0, 1, 2)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def exact_noise_scale(model, x, y) -> tuple[float, float]:
    """(|G|^2, tr Sigma) over the finite training set, from every per-example gradient.

    G = mean_i g_i and tr(Sigma) = mean_i |g_i - G|^2 (population = the training set, which
    the measurement samples with replacement). Written independently of rl.measure.gns.
    """
    params = {n: p.detach() for n, p in model.named_parameters()}

    def loss_one(p, xi, yi):
        return batch_loss(lambda inp: functional_call(model, p, (inp,)),
                          (xi.unsqueeze(0), yi.unsqueeze(0)))

    per_example = vmap(grad(loss_one), in_dims=(None, 0, 0))(params, x, y)
    flat = torch.cat([g.reshape(len(x), -1) for g in per_example.values()], dim=1).double()
    mean = flat.mean(dim=0)
    return float(mean.square().sum()), float((flat - mean).square().sum(dim=1).mean())


def test_grouped_estimate_matches_exact_noise_scale_on_iid_data():
    cfg = SupervisedConfig(total_steps=20, gns_every=10**6, seed=3)  # test acc ~0.87
    model = run_supervised(cfg).model
    data = load_dataset(cfg.dataset, cfg.test_fraction, cfg.seed)
    exact_g2, exact_trace = exact_noise_scale(model, data.x_train, data.y_train)
    exact_b = exact_trace / exact_g2

    num_groups, group_size, reps = 8, 64, 300
    gen = torch.Generator().manual_seed(11)
    n = len(data.x_train)
    g2s, traces = [], []
    with torch.no_grad():
        weights = [p.clone() for p in model.parameters()]
    for _ in range(reps):
        idx = torch.randint(n, (num_groups, group_size), generator=gen)
        sample = measure(model, batch_loss, [(data.x_train[i], data.y_train[i]) for i in idx])
        g2s.append(sample.g2)
        traces.append(sample.trace_sigma)
    assert all(torch.equal(w, p) for w, p in zip(weights, model.parameters(), strict=True))
    g2s, traces = np.asarray(g2s), np.asarray(traces)

    sqrt_r = math.sqrt(reps)
    for name, values, exact in (("g2", g2s, exact_g2), ("trace", traces, exact_trace)):
        mean, se = values.mean(), values.std(ddof=1) / sqrt_r
        print(f"{name}: mean of {reps} = {mean:.5g} +- {se:.2g}, exact {exact:.5g}")
        assert K_SE * se < 0.1 * exact, f"{name}: too few repetitions to detect a bias"
        assert abs(mean - exact) < K_SE * se, f"{name}: {mean} vs exact {exact} (se {se})"

    # Ratio of the averaged estimates, delta-method standard error of a ratio of means.
    ratio = traces.mean() / g2s.mean()
    ratio_se = (traces - ratio * g2s).std(ddof=1) / (sqrt_r * g2s.mean())
    print(f"B_simple: ratio of means {ratio:.4g} +- {ratio_se:.2g}, exact {exact_b:.4g}; "
          f"single-measurement big batch {num_groups * group_size}")
    assert K_SE * ratio_se < 0.1 * exact_b
    assert abs(ratio - exact_b) < K_SE * ratio_se


def test_ratio_interval():
    rng = np.random.default_rng(0)
    g2 = 1.0 + 0.1 * rng.standard_normal(200)
    trace = 50.0 + 5.0 * rng.standard_normal(200)
    ratio, lower, upper = ratio_interval(g2, trace)
    assert lower < ratio < upper and lower < 50.0 < upper and upper - lower < 5.0
    # A slow drift of both (the ratio fixed) barely widens it: successive differences.
    drift = np.linspace(1.0, 3.0, 200)
    _, lo2, up2 = ratio_interval(g2 * drift, trace * drift)
    assert up2 - lo2 < 2 * (upper - lower)
    assert math.isnan(ratio_interval(-g2, trace)[0])
    ratio, lower, upper = ratio_interval([1.0, 2.0], [3.0, 4.0])  # too few for an interval
    assert ratio == pytest.approx(7 / 3) and math.isnan(lower) and math.isnan(upper)


@pytest.fixture(scope="module")
def training_runs():
    return {
        seed: run_supervised(SupervisedConfig(epochs=10, seed=seed)) for seed in TRAIN_SEEDS
    }


def test_short_training_run(training_runs):
    result = training_runs[0]
    s, m = result.summary, result.metrics
    assert s["final_train_loss"] < 0.1 * s["initial_train_loss"]
    assert m["train_loss"].iloc[-1] < m["train_loss"].iloc[0]
    assert s["final_test_acc"] > 0.9  # chance is 0.1
    assert s["measurements"] == len(m) == 46  # steps 0, 10, ..., 450
    for col in ("train_loss", "test_acc", "g2", "trace_sigma", "small_sq_norm", "big_sq_norm"):
        assert np.isfinite(m[col]).all(), col
    assert (m["trace_sigma"] > 0).all()
    assert 0 < s["b_simple_run"] < math.inf
    assert s["b_simple_run_lower"] <= s["b_simple_run"] <= s["b_simple_run_upper"]
    assert s["b_simple_run"] == pytest.approx(m["trace_sigma"].mean() / m["g2"].mean())


def test_b_simple_grows_as_loss_falls(training_runs):
    # Observed (epochs=10, seeds 0-5): end / start between 11 and 34; assert a 3x margin.
    for seed, result in training_runs.items():
        s = result.summary
        print(f"seed {seed}: B_simple start {s['b_simple_start']:.1f} "
              f"[{s['b_simple_start_lower']:.1f}, {s['b_simple_start_upper']:.1f}], end "
              f"{s['b_simple_end']:.1f} [{s['b_simple_end_lower']:.1f}, "
              f"{s['b_simple_end_upper']:.1f}], ratio {s['b_simple_end_over_start']:.1f}")
        assert s["b_simple_end_over_start"] > 3.0


def test_measurement_does_not_change_training():
    a = run_supervised(SupervisedConfig(total_steps=40, gns_every=5, seed=1)).metrics
    b = run_supervised(SupervisedConfig(total_steps=40, gns_every=20, seed=1)).metrics
    common = a.merge(b, on="step", suffixes=("_a", "_b"))
    assert list(common["step"]) == [0, 20, 40]
    assert np.array_equal(common["train_loss_a"], common["train_loss_b"])


def test_cli_help(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["gns", "supervised", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "--gns-group-size" in out and "--out" in out


def test_cli_run_and_refuse_overwrite(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["gns", "supervised", "--model", "logreg", "--optimizer", "adam", "--total-steps",
            "30", "--gns-every", "10", "--gns-groups", "4", "--gns-group-size", "8",
            "--out", str(out), "--quiet"]
    assert main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 30 and summary["measurements"] == 4
    assert json.loads((out / "config.json").read_text())["model"] == "logreg"
    assert "results:" in capsys.readouterr().out

    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "refusing to overwrite" in err
    assert json.loads((out / "summary.json").read_text()) == summary


# ---------------------------------------------------------------------------------------------
# The supervised side of the critical-batch sweeps: the cnn, iid batches, the evaluation
# schedule, targets and the columns a sweep reads (docs/sweeps.md, "Supervised sweeps")
# ---------------------------------------------------------------------------------------------


def test_cnn_shape_parameters_and_a_few_steps_of_training():
    cfg = SupervisedConfig(model="cnn", channels=4, batch_size=64, lr=0.1, total_steps=30,
                           sampling="iid", gns_every=10)
    model = build_model(cfg, 64, 10, (8, 8))
    # conv 1->4 (3x3 + bias), conv 4->8 stride 2 (3x3 + bias), linear 8*4*4 -> 10
    assert sum(p.numel() for p in model.parameters()) == (9 + 1) * 4 + (4 * 9 + 1) * 8 + \
        (8 * 16 + 1) * 10
    assert model(torch.zeros(5, 64)).shape == (5, 10)
    with pytest.raises(ValueError, match="needs images"):
        build_model(cfg, 63, 10, (8, 8))
    result = run_supervised(cfg)
    assert result.summary["final_train_loss"] < 0.8 * result.summary["initial_train_loss"]
    assert result.summary["num_parameters"] == sum(p.numel() for p in model.parameters())


def test_iid_batches_draw_every_example_uniformly():
    # 100 draws per example expected; the counts' chi-square over N - 1 = 1436 degrees of
    # freedom has mean 1436 and sd sqrt(2 * 1436) = 53.6: allow 5 sd (two-sided 6e-7).
    n, b = 1437, 1000
    gen = torch.Generator().manual_seed(0)
    batches = supervised._iid_batches(n, b, gen)
    idx = torch.cat([next(batches) for _ in range(n * 100 // b)])
    assert all(len(next(batches)) == b for _ in range(3))
    counts = np.bincount(idx.numpy(), minlength=n)
    expected = len(idx) / n
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert abs(chi2 - (n - 1)) < 5 * math.sqrt(2 * (n - 1))
    # A batch larger than the training split is allowed: draws with replacement.
    assert len(next(supervised._iid_batches(10, 40, gen))) == 40


def test_evaluation_schedule_resolves_steps_to_one_part_in_per_octave():
    per_octave = 32
    steps = [s for s in range(20_000) if evaluation_due(s, per_octave)]
    assert steps[:per_octave] == list(range(per_octave))
    # Between consecutive evaluations s < s', s' <= s (1 + 1/per_octave): the first evaluation
    # at or after a crossing at step c is at most c / per_octave steps late.
    gaps = np.diff(steps[per_octave:]) / np.asarray(steps[per_octave:-1])
    assert max(gaps) <= 1 / per_octave
    # per_octave evaluations per doubling of the steps.
    for k in range(1, 9):
        lo = per_octave * 2 ** k
        assert sum(lo <= s < 2 * lo for s in steps) == per_octave
    assert not any(evaluation_due(s, None) for s in range(100))


def test_a_target_stops_the_run_at_the_first_evaluation_that_reaches_it():
    cfg = SupervisedConfig(batch_size=32, lr=0.1, total_steps=2000, sampling="iid",
                           target=-0.5, eval_per_octave=16, gns_every=10)
    result = run_supervised(cfg)
    m, s = result.metrics, result.summary
    assert s["reached_target"] and s["steps"] == m["step"].iloc[-1] < 2000
    assert m["train_loss"].iloc[-1] <= 0.5 < m["train_loss"].iloc[:-1].min()
    assert s["final_score"] == -m["train_loss"].iloc[-1]
    for col in supervised.SWEEP_COLUMNS:
        assert col in m, col
    assert (m["agent_steps"] == m["step"] * 32).all()
    assert list(m["episodes_total"]) == list(range(1, len(m) + 1))
    measured = m["step"] % 10 == 0
    assert m.loc[measured, "gns/total/g2"].notna().all()
    assert m.loc[~measured, "gns/total/g2"].isna().all()
    # A target the budget does not reach: the whole budget, not reached.
    short = run_supervised(SupervisedConfig(total_steps=20, target=-0.01, sampling="iid"))
    assert not short.summary["reached_target"] and short.summary["steps"] == 20


def test_untrained_scores_sit_near_chance():
    # A freshly initialized classifier's logits are small: its loss is near log(10) = 2.30
    # (observed 2.30-2.33 over seeds) and its test accuracy near 1/10.
    loss = untrained_scores(SupervisedConfig(), range(4))
    acc = untrained_scores(SupervisedConfig(model="cnn", progress="test_acc"), range(4))
    assert np.all(np.abs(-loss - math.log(10)) < 0.1)
    assert np.all(acc < 0.3)
    assert len(set(loss)) == 4  # each seed its own split and initialization


def test_a_diverging_run_stops_as_failed():
    # B = 16 at lr 0.5 (momentum 0.9): the training loss grows past 10 x its untrained 2.3
    # within a few dozen steps and would grow without bound (observed: 30 nats at step 24).
    cfg = SupervisedConfig(batch_size=16, lr=0.5, total_steps=3000, sampling="iid",
                           diverge_factor=10, eval_per_octave=8, target=-0.03)
    with pytest.raises(RuntimeError, match="diverged: training loss .* above diverge_factor 10"):
        run_supervised(cfg)
    with pytest.raises(ValueError, match="diverge_factor"):
        SupervisedConfig(diverge_factor=0.5)
