"""NoiseScaleCallback: the gradient noise scale for stable-baselines3's PPO and A2C."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from stable_baselines3 import A2C, PPO
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.logger import KVWriter, Logger

from rl.measure.ppo_noise import TERMS
from rl.peers.sb3 import NoiseScaleCallback

STATS = ("g2", "trace_sigma", "b_simple", "b_simple_ema", "b_simple_mean", "b_simple_lo",
         "b_simple_hi")


class Capture(KVWriter):
    """Keeps every dump of the SB3 logger."""

    def __init__(self):
        self.rows: list[dict] = []

    def write(self, key_values, key_excluded, step=0):
        self.rows.append(dict(key_values))


def _learn(algo, rollouts, n_envs=8, log=True, callback=None, **kw):
    venv = make_vec_env("CartPole-v1", n_envs=n_envs, seed=0)
    model = algo("MlpPolicy", venv, seed=0, device="cpu", **kw)
    capture = Capture()
    model.set_logger(Logger(None, [capture]))
    callback = callback or NoiseScaleCallback()
    model.learn(rollouts * n_envs * model.n_steps, callback=callback, log_interval=1)
    venv.close()
    return model, callback, [r for r in capture.rows if any(k.startswith("gns/") for k in r)]


@pytest.mark.parametrize("algo, kw", [
    (PPO, dict(n_steps=32, batch_size=64, n_epochs=2)),
    (A2C, dict(n_steps=16)),
])
def test_callback_logs_finite_noise_scale(algo, kw):
    model, cb, rows = _learn(algo, rollouts=4, **kw)
    assert len(rows) == 4
    for row in rows:
        for term in TERMS:
            for stat in STATS:
                assert f"gns/{term}/{stat}" in row, (term, stat)
            assert np.isfinite(row[f"gns/{term}/g2"])
            assert np.isfinite(row[f"gns/{term}/trace_sigma"])
            assert row[f"gns/{term}/trace_sigma"] > 0
        assert row["gns/split_envs"] == 1 and row["gns/groups"] == 8
        assert row["gns/small_batch_size"] == model.n_steps
        assert row["gns/big_batch_size"] == 8 * model.n_steps
        assert row["gns/policy/g2"] != row["gns/value/g2"]
        # ent_coef = 0 (SB3's default) and separate policy/value networks: the total's
        # estimates are policy + vf_coef^2 * value, which checks how the terms are combined.
        assert model.ent_coef == 0
        for stat in ("g2", "trace_sigma"):
            expected = row[f"gns/policy/{stat}"] + model.vf_coef**2 * row[f"gns/value/{stat}"]
            assert row[f"gns/total/{stat}"] == pytest.approx(expected, rel=1e-6,
                                                             abs=1e-9 * abs(expected) + 1e-12)
    assert cb.trackers["policy"].count == 4
    assert np.isfinite(rows[-1]["gns/policy/b_simple_mean"]) or rows[-1]["gns/policy/g2"] < 0


def test_callback_cadence_time_fallback_and_preconditioning():
    cb = NoiseScaleCallback(groups=8, every=2, preconditioned=True)
    with pytest.warns(UserWarning, match=r"single environment \(n_envs=1\).*split by time.*"
                                         r"Fix: train on n_envs >= 2"):
        model, cb, rows = _learn(PPO, rollouts=5, n_envs=1, callback=cb, n_steps=128,
                                 batch_size=64, n_epochs=1)
    # Rollouts 1, 3, 5 are due; the first has no Adam state yet and is skipped.
    assert [r.get("gns/skipped") for r in rows] == [1, None, None]
    for row in rows[1:]:
        assert row["gns/split_envs"] == 0 and row["gns/groups"] == 8
        assert row["gns/small_batch_size"] == 16 and row["gns/preconditioned"] == 1
        assert np.isfinite(row["gns/policy/g2"])
    assert cb.trackers["total"].count == 2
    with pytest.raises(ValueError, match="Adam"):
        _learn(A2C, rollouts=1, callback=NoiseScaleCallback(preconditioned=True), n_steps=5)


def test_no_single_environment_warning_when_the_split_is_by_environment():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _learn(PPO, rollouts=1, n_envs=2, n_steps=16, batch_size=32, n_epochs=1)
    assert not [w for w in caught if "NoiseScaleCallback" in str(w.message)]


def test_flattened_buffer_gives_the_same_measurement():
    """After SB3's get() has swapped and flattened the buffer the layout is restored."""
    model, _, _ = _learn(PPO, rollouts=1, n_steps=16, batch_size=64, n_epochs=1)
    buf = model.rollout_buffer
    assert buf.generator_ready  # train() called get()
    flat = NoiseScaleCallback()
    flat.init_callback(model)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        a = flat.measure_now()
    for name in ("observations", "actions", "values", "log_probs", "advantages", "returns"):
        x = buf.__dict__[name].reshape(buf.n_envs, buf.buffer_size, *buf.__dict__[name].shape[1:])
        if name not in ("observations", "actions"):  # (T, N) in SB3's own layout
            x = x.reshape(buf.n_envs, buf.buffer_size)
        buf.__dict__[name] = x.swapaxes(0, 1)
    buf.generator_ready = False
    unflat = NoiseScaleCallback()
    unflat.init_callback(model)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. mse_loss broadcasting (N,) against (N, 1)
        b = unflat.measure_now()
    for term in TERMS:
        assert a[f"gns/{term}/g2"] == pytest.approx(b[f"gns/{term}/g2"], rel=1e-9)
        assert a[f"gns/{term}/trace_sigma"] == pytest.approx(b[f"gns/{term}/trace_sigma"],
                                                             rel=1e-9)
