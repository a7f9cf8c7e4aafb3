"""Learning parity (rl/analysis/learning.py): measures, seed intervals, verdicts,
SB3 runs."""

import json
import math

import numpy as np
import pandas as pd
import pytest

from rl.analysis.learning import (
    CURVE_COLUMNS,
    LearningBenchConfig,
    bench_learning,
    load_runs,
    mean_interval,
    parity_table,
    run_measures,
    train_sb3_run,
    welch_difference,
)
from rl.runs.metrics import load_metrics

pytest.importorskip("stable_baselines3")


def _curve(y, batch=1024, games_per_iteration=3):
    y = np.asarray(y, float)
    steps = batch * np.arange(1, len(y) + 1)
    return pd.DataFrame({"agent_steps": steps, "frames": 4 * steps, "return_recent": y,
                         "episodes_total": games_per_iteration * np.arange(1, len(y) + 1)})


def test_run_measures_of_a_straight_line_are_exact():
    # y = 2 + 0.001 x: the trapezoid rule is exact, the mean over [x0, x1] is y((x0 + x1) / 2).
    df = _curve([math.nan] + [2 + 0.001 * 1024 * k for k in range(2, 11)])
    m = run_measures(df, span=10 * 1024)
    assert m["final_return"] == pytest.approx(2 + 0.001 * 10240)
    assert m["auc_mean_return"] == pytest.approx(2 + 0.001 * (2048 + 10240) / 2)
    assert m["games"] == 30
    # A shorter span cuts the curve there.
    assert run_measures(df, span=5 * 1024)["final_return"] == pytest.approx(2 + 0.001 * 5120)


@pytest.mark.parametrize("n", [2, 3, 20])
def test_seed_interval_covers_the_true_mean_at_its_level(n):
    # Normal data, n seeds per experiment: the t interval of the mean is exact, so it covers
    # the true mean with probability 0.95 at any n. Over 2000 experiments the observed rate
    # has sd sqrt(0.95 * 0.05 / 2000) = 0.0049: 3 sd bounds.
    rng = np.random.default_rng(n)
    hits = 0
    for _ in range(2000):
        x = rng.normal(5.0, 2.0, size=n)
        mean, lo, hi = mean_interval(x, 0.95)
        assert lo <= mean <= hi
        hits += lo <= 5.0 <= hi
    assert abs(hits / 2000 - 0.95) <= 3 * 0.0049


def test_seed_interval_needs_two_seeds():
    mean, lo, hi = mean_interval([3.0], 0.95)
    assert mean == 3.0 and math.isnan(lo) and math.isnan(hi)
    assert all(math.isnan(v) for v in mean_interval([], 0.95))


def test_seed_interval_and_welch_test_edge_cases():
    assert mean_interval([2.0, 2.0, 2.0], 0.95) == (2.0, 2.0, 2.0)  # no spread: a point
    one = welch_difference([1.0], [2.0, 3.0], 0.95)  # one seed: nothing to test against
    assert one["difference"] == 1.5 and all(math.isnan(one[k]) for k in ("lo", "hi", "p_value"))
    same = welch_difference([1.0, 1.0], [3.0, 3.0], 0.95)  # no spread: the difference is exact
    assert same == {"difference": 2.0, "lo": 2.0, "hi": 2.0, "p_value": 0.0}


def test_welch_test_matches_its_formula():
    # The hand-written version scipy.stats.ttest_ind(equal_var=False) replaced (#27 item 9).
    from scipy import stats

    rng = np.random.default_rng(3)
    for _ in range(20):
        a, b = rng.normal(0, 1, rng.integers(2, 7)), rng.normal(1, 3, rng.integers(2, 7))
        va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
        se, diff = math.sqrt(va + vb), b.mean() - a.mean()
        dof = (va + vb) ** 2 / (va**2 / (a.size - 1) + vb**2 / (b.size - 1))
        half = stats.t.ppf(0.95, dof) * se
        got = welch_difference(a, b, 0.9)
        assert got["difference"] == pytest.approx(diff)
        assert (got["lo"], got["hi"]) == pytest.approx((diff - half, diff + half))
        assert got["p_value"] == pytest.approx(2 * stats.t.sf(abs(diff) / se, dof))


def _levels(rng, n, shift=0.0):
    """Per-seed final returns of two implementations: normal, sd 1, sb3 shifted by shift."""
    return {"ours": list(rng.normal(10, 1, n)), "sb3": list(rng.normal(10 + shift, 1, n))}


@pytest.mark.parametrize("n", [2, 3, 5])
def test_verdict_rarely_says_differ_for_equal_implementations(n):
    # Ground truth: both implementations draw from one distribution. The verdict tests two
    # measures at level 0.025 each, so "differ" must come at most 5% of the time (Bonferroni;
    # Welch's test is exact-to-conservative for normal data). The old rule, "the two seed
    # bootstrap intervals do not overlap", said "differ" a third of the time with 2 seeds.
    # 400 experiments: sd of the observed rate <= sqrt(0.05 * 0.95 / 400) = 0.011.
    rng = np.random.default_rng(100 + n)
    differ = sum(parity_table(_runs(_levels(rng, n)))[1]["verdict"] == "differ"
                 for _ in range(400))
    assert differ / 400 <= 0.05 + 3 * 0.011


def test_verdict_detects_a_large_difference_and_reports_it():
    # sb3 10 sd better, 5 seeds each: Welch's test at 0.025 has power > 0.999 here.
    rng = np.random.default_rng(7)
    for _ in range(20):
        table, v = parity_table(_runs(_levels(rng, 5, shift=10.0)))
        assert v["verdict"] == "differ"
        t = v["tests"]["final_return"]
        assert t["lo"] <= t["difference"] <= t["hi"] and t["p_value"] < 0.025
        assert t["difference"] == pytest.approx(
            table.set_index("impl").loc["sb3", "final_return"]
            - table.set_index("impl").loc["ours", "final_return"])


def _runs(levels: dict[str, list[float]], n=30):
    return {(impl, seed): _curve(np.linspace(0, level, n))
            for impl, lv in levels.items() for seed, level in enumerate(lv)}


def test_parity_verdicts():
    table, v = parity_table(_runs({"ours": [10, 12, 11], "sb3": [11, 13, 10]}))
    assert v["verdict"] == "no difference detected" and list(table["impl"]) == ["ours", "sb3"]
    assert (table["final_return_lo"] <= table["final_return"]).all()
    assert "Welch p" in v["reason"]
    table, v = parity_table(_runs({"ours": [10, 11, 10.5], "sb3": [30, 31, 29]}))
    assert v["verdict"] == "differ"
    _, v = parity_table(_runs({"ours": [10, 11], "sb3": [10]}))
    assert v["verdict"] == "undecided" and "2 seeds" in v["reason"]
    _, v = parity_table(_runs({"ours": [10, 11]}))
    assert v["verdict"] == "undecided" and "both" in v["reason"]


def test_parity_compares_over_the_span_every_run_reached():
    runs = _runs({"ours": [10, 10], "sb3": [10, 10]})
    runs[("sb3", 1)] = runs[("sb3", 1)].iloc[:20]  # a run still going
    _, v = parity_table(runs)
    assert v["span"] == 20 * 1024 and v["left_out"] == []
    # A longer span compares the runs that reached it and names the others.
    table, v = parity_table(runs, span=30 * 1024)
    assert v["span"] == 30 * 1024 and v["left_out"] == ["sb3-seed1"]
    assert dict(zip(table["impl"], table["seeds"], strict=True)) == {"ours": 2, "sb3": 1}
    assert v["verdict"] == "undecided"
    with pytest.raises(ValueError, match="no run reached 40,960 agent steps"):
        parity_table(runs, span=40 * 1024)


def test_parity_table_without_runs_is_a_clear_error():
    with pytest.raises(ValueError, match="no runs"):
        parity_table({})


def test_config_errors():
    for kwargs, match in (({"seeds": "0,a"}, "seeds"), ({"seeds": "1,1"}, "distinct"),
                          ({"impls": "ours,rllib"}, "impls"), ({"ci": 1.5}, "ci"),
                          ({"span": -1}, "span")):
        with pytest.raises(ValueError, match=match):
            LearningBenchConfig(**kwargs).validate()


@pytest.mark.slow
def test_bench_learning_on_cartpole_end_to_end(tmp_path, one_torch_thread):
    cfg = LearningBenchConfig(env="CartPole", num_envs=4, num_steps=32, total_agent_steps=1536,
                              seeds="0,1", runs=str(tmp_path / "runs"))
    table = bench_learning(cfg)
    assert list(table["impl"]) == ["ours", "sb3"] and (table["seeds"] == 2).all()
    assert set(table["verdict"]) <= {"no difference detected", "differ"}
    assert (tmp_path / "runs" / "learning.png").stat().st_size > 0
    curves = pd.read_csv(tmp_path / "runs" / "curves.csv")
    assert list(curves.columns) == list(CURVE_COLUMNS) and len(curves) == 4 * 12
    runs = load_runs(tmp_path / "runs")
    assert sorted(runs) == [("ours", 0), ("ours", 1), ("sb3", 0), ("sb3", 1)]
    for df in runs.values():  # every run's rows: one per iteration, same x axis
        assert list(df["agent_steps"]) == [128 * k for k in range(1, 13)]
    sb3 = json.loads((tmp_path / "runs" / "sb3-seed0" / "config.json").read_text())
    assert sb3["impl"] == "sb3" and sb3["ppo"] == json.loads(
        (tmp_path / "runs" / "ours-seed0" / "config.json").read_text())["ppo"]
    # A second call trains nothing more and reports the same table.
    again = bench_learning(cfg)
    pd.testing.assert_frame_equal(table, again)


@pytest.mark.slow
def test_sb3_run_resumes_from_its_checkpoint_without_duplicate_rows(tmp_path, one_torch_thread):
    cfg = LearningBenchConfig(env="CartPole", num_envs=4, num_steps=32, total_agent_steps=1280,
                              runs=str(tmp_path))
    tc = cfg.train_config("sb3", 0)
    tc.checkpoint_every = 4
    run_dir = train_sb3_run(tc, cfg.ppo_config())
    assert sorted(p.name for p in (run_dir / "checkpoints").glob("ckpt_*")) == [
        "ckpt_00000008.pt", "ckpt_00000010.pt"]
    # A crash after iteration 10's row but before its checkpoint: resume from iteration 8.
    (run_dir / "checkpoints" / "ckpt_00000010.pt").unlink()
    tc.resume = True
    with pytest.warns(UserWarning, match="missing"):
        train_sb3_run(tc, cfg.ppo_config())
    # Then continue with a larger budget.
    tc.total_agent_steps = 1920
    train_sb3_run(tc, cfg.ppo_config())
    df = load_metrics(run_dir)
    assert list(df["iteration"]) == list(range(1, 16))
    assert (np.diff(df["episodes_total"]) >= 0).all()
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "finished" and status["agent_steps"] == 1920
