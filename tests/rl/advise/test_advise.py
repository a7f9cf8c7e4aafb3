"""rl.advise: the S/E/wall-clock math against ground truth, the B_crit band, the calibration
read from the committed study, B_simple from a run's rows (ours and SB3's)."""

import math

import numpy as np
import pandas as pd
import pytest

from rl.advise import (
    Candidate,
    NoiseScaleEstimate,
    NoProbeData,
    RatioCalibration,
    advise_from,
    load_run_metrics,
    load_study,
    noise_from_metrics,
    predict_b_crit,
    ratio_calibration,
    relative_iterations,
    relative_samples,
)
from rl.advise.calibration import growth_exponents, growth_note
from rl.advise.predict import pick, relative_wall_clock
from rl.advise.probe import smooth_timings


def noise(b=100.0, lo=50.0, hi=200.0, batch=256):
    return NoiseScaleEstimate("value", b, lo, hi, 30, batch)


def exact(ratio=1.0):
    """A calibration with no spread: B_crit = ratio x B_simple exactly."""
    return RatioCalibration("value", ratio, 0.0, ratio, ratio, 0.9, ("t",))


def linear_time(sizes, a, b):
    return [Candidate(n, 1, a + b * n) for n in sizes]


def test_s_and_e_follow_the_tradeoff_curve():
    for b_crit in (10.0, 512.0, 5000.0):
        for batch in (1, 32, 512, 4096):
            s, e = relative_iterations(batch, b_crit), relative_samples(batch, b_crit)
            assert s == pytest.approx(1 + b_crit / batch)
            assert e == pytest.approx(1 + batch / b_crit)
            assert (s - 1) * (e - 1) == pytest.approx(1.0)  # McCandlish et al. eq. 2.11
            assert e / s == pytest.approx(batch / b_crit)  # E = B S, E_min = B_crit S_min


def test_fastest_is_the_argmin_of_a_known_time_model():
    # t(B) = a + b B: wall(B) ~ (1 + Bc / B)(a + b B), continuous argmin sqrt(Bc a / b).
    sizes = [2 ** k for k in range(4, 14)]
    for b_crit, a, b in ((512.0, 0.1, 0.1 / 512), (512.0, 0.1, 0.1 / 4096), (128.0, 1.0, 1e-4)):
        cands = linear_time(sizes, a, b)
        fastest, efficient = pick(cands, b_crit, tolerance=0.0)
        walls = [(1 + b_crit / n) * (a + b * n) for n in sizes]
        assert sizes[fastest] == sizes[int(np.argmin(walls))]
        best = math.sqrt(b_crit * a / b)
        assert sizes[fastest] / best <= 2 and best / sizes[fastest] <= 2
        assert efficient == fastest  # tolerance 0: the fastest itself
    # Free iterations (t constant): the largest batch is the fastest; within 10% of it, the
    # smallest batch whose S is within 10% (fewest samples).
    cands = linear_time(sizes, 1.0, 0.0)
    fastest, efficient = pick(cands, 512.0, tolerance=0.1)
    assert sizes[fastest] == sizes[-1]
    ok = [n for n in sizes if (1 + 512 / n) <= 1.1 * (1 + 512 / sizes[-1])]
    assert sizes[efficient] == min(ok)


def test_wall_clock_is_relative_to_the_fastest():
    cands = linear_time([32, 256, 2048], 0.05, 1e-4)
    walls = relative_wall_clock(cands, 300.0)
    assert min(walls) == pytest.approx(1.0) and all(w >= 1 for w in walls)


def test_b_crit_band_contains_the_point_and_grows_with_either_uncertainty():
    base = predict_b_crit(noise(), RatioCalibration("value", 3.0, 0.5, 0.4, 30, 0.9, ()))
    assert base.b_crit == pytest.approx(300.0)
    assert base.lo < base.b_crit < base.hi
    wider_bs = predict_b_crit(noise(lo=20.0, hi=500.0),
                              RatioCalibration("value", 3.0, 0.5, 0.4, 30, 0.9, ()))
    assert wider_bs.lo < base.lo and wider_bs.hi > base.hi
    wider_r = predict_b_crit(noise(), RatioCalibration("value", 3.0, 0.9, 0.1, 90, 0.9, ()))
    assert wider_r.lo < base.lo and wider_r.hi > base.hi
    two_sd = predict_b_crit(noise(), RatioCalibration("value", 3.0, 0.5, 0.4, 30, 0.9, ()),
                            band_sd=2.0)
    assert two_sd.lo < base.lo and two_sd.hi > base.hi
    # No uncertainty at all: the band is the point.
    none = predict_b_crit(noise(lo=100.0, hi=100.0), exact(3.0))
    assert none.lo == pytest.approx(300.0) and none.hi == pytest.approx(300.0)
    # Unresolved above: the band is open above.
    assert predict_b_crit(noise(hi=math.inf), exact(3.0)).hi == math.inf
    with pytest.raises(ValueError, match="B_simple"):
        predict_b_crit(noise(b=math.nan), exact())


def test_advice_rows_and_picks_carry_the_band():
    sizes = [32, 64, 128, 256, 512, 1024, 2048]
    cands = linear_time(sizes, 0.05, 0.05 / 1024)
    advice = advise_from(noise(b=100.0, lo=60.0, hi=180.0, batch=256),
                         RatioCalibration("value", 3.0, 0.6, 0.4, 30, 0.9, ()), cands)
    assert advice.reference_batch_size == 256
    for r in advice.rows:
        assert r.iterations_lo <= r.iterations <= r.iterations_hi
        assert r.samples_lo <= r.samples <= r.samples_hi
        assert r.wall_clock_lo <= r.wall_clock <= r.wall_clock_hi
    for rec in (advice.fastest, advice.sample_efficient):
        assert rec.lo <= rec.rollout_batch_size <= rec.hi
        assert rec.speedup_lo <= rec.speedup <= rec.speedup_hi
    assert advice.sample_efficient.rollout_batch_size <= advice.fastest.rollout_batch_size
    # The point pick is the argmin at the point B_crit.
    walls = [(1 + advice.b_crit.b_crit / n) * (0.05 + 0.05 / 1024 * n) for n in sizes]
    assert advice.fastest.rollout_batch_size == sizes[int(np.argmin(walls))]
    table = advice.table()
    assert list(table["rollout_batch_size"]) == sizes
    d = advice.as_dict()
    assert d["fastest"]["rollout_batch_size"] == advice.fastest.rollout_batch_size


def test_bad_candidates_are_refused():
    with pytest.raises(ValueError, match="at least one candidate"):
        advise_from(noise(), exact(), [])
    with pytest.raises(ValueError, match="seconds_per_iteration"):
        advise_from(noise(), exact(), [Candidate(8, 32, 0.0)])


def test_timings_are_smoothed_by_a_line_only_when_one_fits():
    b = np.array([32, 64, 128, 256.0])
    t = 0.1 + 1e-3 * b
    noisy = t * np.array([1.0, 1.2, 0.9, 1.0])
    smooth = smooth_timings(b, noisy)
    assert np.all(np.diff(smooth) > 0)
    assert smooth_timings(b[:2], noisy[:2]).tolist() == noisy[:2].tolist()
    falling = np.array([1.0, 0.5, 0.2, 0.1])
    assert smooth_timings(b, falling).tolist() == falling.tolist()


def test_calibration_is_read_from_the_committed_study():
    study = load_study()
    cal = ratio_calibration(study)
    # RESULTS.md, "Across tasks": geometric mean 3.4, spread x1.9, 90% interval [0.38, 30].
    assert cal.ratio == pytest.approx(3.35, abs=0.01)
    assert math.exp(cal.spread) == pytest.approx(1.9, abs=0.05)
    assert (cal.lo, cal.hi) == (pytest.approx(0.377, abs=0.01), pytest.approx(29.8, abs=0.1))
    assert set(cal.tasks) == {"CartPole", "Acrobot", "MinAtar-Breakout"}
    assert "results.csv" in cal.source
    loo = ratio_calibration(study, leave_out=["CartPole"])
    assert set(loo.tasks) == {"Acrobot", "MinAtar-Breakout"}
    assert loo.ratio == pytest.approx(math.sqrt(1.869 * 2.993), rel=0.01)
    with pytest.raises(ValueError, match="no RL task"):
        ratio_calibration(study, leave_out=["CartPole", "Acrobot", "MinAtar-Breakout"])
    ex = {e.task: e for e in growth_exponents(study)}
    assert ex["CartPole"].exponent == pytest.approx(0.63, abs=0.01)
    assert "return^0.63" in growth_note(list(ex.values()), "CartPole")
    assert "none for this one" in growth_note(list(ex.values()), "Pong")


def test_a_missing_study_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="--study"):
        load_study(tmp_path / "nope.csv")


def rows(n, g2=2.0, trace=400.0, batch=256):
    return pd.DataFrame({"iteration": np.arange(1, n + 1), "agent_steps": batch *
                         np.arange(1, n + 1), "rollout_batch_size": batch,
                         "return_recent": np.linspace(10, 50, n),
                         "gns/value/g2": g2, "gns/value/trace_sigma": trace})


def test_noise_from_rows_skips_the_warmup_and_takes_the_first_measurements():
    m = rows(40)
    m.loc[:9, "gns/value/g2"] = 1e6  # the warm-up: must not count
    m.loc[30:, "gns/value/trace_sigma"] = 4e6  # past the first 20 counted: must not count
    est = noise_from_metrics(m, measurements=20)
    assert est.b_simple == pytest.approx(200.0)
    assert est.measurements == 20 and est.rollout_batch_size == 256
    with pytest.raises(NoProbeData, match="at least 5"):
        noise_from_metrics(rows(14))
    with pytest.raises(NoProbeData, match="not above zero"):
        noise_from_metrics(rows(20, g2=-1.0))


def test_an_sb3_progress_csv_is_read_as_a_run(tmp_path):
    m = rows(20)
    sb3 = m.rename(columns={"iteration": "time/iterations",
                            "agent_steps": "time/total_timesteps",
                            "return_recent": "rollout/ep_rew_mean"})
    sb3.drop(columns=["rollout_batch_size"]).to_csv(tmp_path / "progress.csv", index=False)
    back = load_run_metrics(tmp_path)
    est = noise_from_metrics(back, measurements=30)
    assert est.b_simple == pytest.approx(200.0) and est.rollout_batch_size == 256
    assert est.measurements == 10
    with pytest.raises(FileNotFoundError, match="not a run directory"):
        load_run_metrics(tmp_path / "missing")


def test_the_best_term_is_read_from_the_study():
    from rl.advise.calibration import best_term

    study = load_study()
    assert best_term(study) == "value"  # RESULTS.md: spread x1.9 against x2.1 and x2.8
    assert best_term(study, min_tasks=4) == "value"  # too few tasks: the default


def test_a_later_stretch_of_a_run():
    m = rows(60)
    m.loc[40:, "gns/value/trace_sigma"] = 800.0  # iterations 41-60: B_simple doubled
    est = noise_from_metrics(m, measurements=20, from_iteration=41)
    assert est.b_simple == pytest.approx(400.0)
    assert (est.first_iteration, est.last_iteration) == (41, 60)
    with pytest.raises(NoProbeData, match="from iteration 58 on"):
        noise_from_metrics(m, from_iteration=58)


@pytest.mark.slow
def test_a_real_sb3_run_logged_with_the_callback(tmp_path, one_torch_thread):
    pytest.importorskip("stable_baselines3")
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.logger import configure

    from rl.peers.sb3 import NoiseScaleCallback

    model = PPO("MlpPolicy", make_vec_env("CartPole-v1", n_envs=8, seed=0), n_steps=32,
                batch_size=256, n_epochs=2, seed=0, device="cpu")
    model.set_logger(configure(str(tmp_path), ["csv"]))
    model.learn(32 * 8 * 16, callback=NoiseScaleCallback())
    est = noise_from_metrics(load_run_metrics(tmp_path), measurements=30)
    assert est.measurements == 6 and est.rollout_batch_size == 256
    assert (est.first_iteration, est.last_iteration) == (11, 16)  # updates done = iteration - 1
    assert est.b_simple > 0 and est.lo <= est.b_simple <= est.hi


def test_timing_stops_at_the_deadline(monkeypatch):
    """Counts whose timing would end after the deadline are skipped, with every larger one."""
    import time

    import rl.advise.probe as probe

    calls = []

    def fake_bench(cfg, progress=None, *, ppo=None):
        n = int(cfg.num_envs)
        calls.append(n)
        time.sleep(0.05 * n)  # a timing's wall time grows with the count
        return pd.DataFrame({"batch": [n * cfg.num_steps], "e2e_sps": [1000.0]})

    monkeypatch.setattr(probe, "bench_scaling", fake_bench)
    now = time.perf_counter()
    # 1 and 2 fit before the deadline; 16 would take about 0.8 s more: skipped, and 32.
    timed, skipped = probe.time_shapes("CartPole", [1, 2, 16, 32], 32, None,
                                       deadline=now + 0.5, known_cost=(1, 0.05))
    assert calls == [1, 2] and skipped == [16, 32]
    assert timed == {1: pytest.approx(0.032), 2: pytest.approx(0.064)}
    timed, skipped = probe.time_shapes("CartPole", [4, 1], 32, None)
    assert sorted(timed) == [1, 4] and skipped == []
    cands = probe.candidates_from({1: 0.1, 2: 0.2, 4: 0.4}, 32)
    assert [c.rollout_batch_size for c in cands] == [32, 64, 128]
    assert cands[2].seconds_per_iteration == pytest.approx(0.4)


def test_the_probe_settings_come_from_the_preset():
    from rl.advise import AdviseConfig

    cfg, ppo = AdviseConfig(env="CartPole").train_configs()
    assert (cfg.num_envs, cfg.num_steps, ppo.num_epochs, ppo.anneal_lr) == (8, 32, 20, False)
    cfg, ppo = AdviseConfig(env="CartPole", preset="atari", learning_rate=0.01,
                            num_envs=4).train_configs()
    assert (cfg.num_envs, cfg.num_steps, ppo.num_epochs, ppo.learning_rate) == (4, 128, 4, 0.01)
