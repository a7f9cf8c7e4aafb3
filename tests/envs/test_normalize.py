"""envs.NormalizeVec: running statistics, normalized observations and rewards, state."""

import numpy as np
import pytest

import envs
from envs import NormalizeVec, RunningMeanStd


def test_running_mean_std_merges_batches_like_one_pass():
    rng = np.random.default_rng(0)
    data = rng.normal(3.0, 2.0, size=(1000, 4))
    rms = RunningMeanStd((4,), epsilon=0.0 + 1e-12)
    for chunk in np.array_split(data, 7):
        rms.update(chunk)
    np.testing.assert_allclose(rms.mean, data.mean(axis=0), rtol=1e-9)
    np.testing.assert_allclose(rms.var, data.var(axis=0), rtol=1e-9)
    rms.update(data[:0])  # an empty batch changes nothing
    assert rms.count == pytest.approx(1000)


def _pendulum(n=3, seed=0):
    return envs.make_vec("gym:Pendulum-v1", n, seed, backend="gym-sync")


def test_observations_are_normalized_with_the_statistics_seen_so_far():
    env = NormalizeVec(_pendulum(), obs=True, reward=False)
    raw = NormalizeVec(_pendulum(), obs=False, reward=False)  # same seeds, raw values
    seen = []
    obs, _ = env.reset()
    raw_obs, _ = raw.reset()
    seen.append(raw_obs)
    actions = np.zeros((3, 1), np.float32)
    for _ in range(50):
        obs, *_ = env.step(actions)
        raw_obs, *_ = raw.step(actions)
        seen.append(raw_obs)
    allseen = np.concatenate(seen)
    np.testing.assert_allclose(env.obs_rms.mean, allseen.mean(axis=0), atol=1e-6)
    expected = (raw_obs - env.obs_rms.mean) / np.sqrt(env.obs_rms.var + 1e-8)
    np.testing.assert_allclose(obs, np.clip(expected, -10, 10), atol=1e-5)
    assert obs.dtype == np.float32
    assert env.single_observation_space.dtype == np.float32
    env.close(), raw.close()


def test_rewards_are_scaled_by_the_discounted_return_std_and_returns_stay_raw():
    gamma = 0.9
    env = NormalizeVec(_pendulum(), obs=False, reward=True, gamma=gamma, clip_reward=5.0)
    twin = _pendulum()  # same seeds and actions: the raw rewards
    env.reset(), twin.reset()
    rng = np.random.default_rng(1)
    returns, history, reported = np.zeros(3), [], []
    for _ in range(450):  # two full Pendulum episodes (200 steps) and their auto-resets
        actions = rng.uniform(-2, 2, (3, 1)).astype(np.float32)
        _, reward, term, trunc, info = env.step(actions)
        _, raw, *_ = twin.step(actions)
        real = ~info["autoreset"]
        returns = np.where(real, returns * gamma + raw, 0.0)
        history.append(returns[real].copy())
        returns[term | trunc] = 0.0
        expected = np.clip(raw / np.sqrt(np.concatenate(history).var() + 1e-8), -5, 5)
        np.testing.assert_allclose(reward, expected, rtol=2e-3, atol=1e-6)
        if info["episode_done"].any():
            reported.extend(info["episode_return"][info["episode_done"]])
    # Episode returns in info are the env's own: Pendulum's raw rewards are in [-16.3, 0].
    assert len(reported) == 6 and min(reported) < -100
    env.close(), twin.close()


def test_state_dict_round_trip_and_mismatch():
    env = NormalizeVec(_pendulum(), obs=True, reward=True)
    env.reset()
    for _ in range(10):
        env.step(np.ones((3, 1), np.float32))
    state = env.state_dict()
    fresh = NormalizeVec(_pendulum(n=3, seed=5), obs=True, reward=True)
    fresh.load_state_dict(state)
    np.testing.assert_array_equal(fresh.obs_rms.mean, env.obs_rms.mean)
    assert fresh.ret_rms.count == env.ret_rms.count
    no_reward = NormalizeVec(_pendulum(), obs=True, reward=False)
    with pytest.raises(ValueError, match="norm_reward"):
        no_reward.load_state_dict(state)
    for e in (env, fresh, no_reward):
        e.close()


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="clip_obs"):
        NormalizeVec(_pendulum(), clip_obs=0.0)
    with pytest.raises(ValueError, match="gamma"):
        NormalizeVec(_pendulum(), gamma=1.5)
