"""The gym-vector backend (gymnasium's numpy-vectorized CartPole) behaves like gym-sync."""

import pickle

import gymnasium as gym
import numpy as np
import pytest

import envs

STAT_KEYS = {"autoreset", "episode_done", "episode_return", "episode_length", "life_loss"}
CLASSIC_BACKENDS = ["gym-vector", "gym-sync"]


def test_default_backend_is_gym_vector_where_gymnasium_vectorizes_the_env():
    assert envs.make_vec("CartPole", 2).description["backend"] == "gym-vector"
    assert envs.make_vec("gym:CartPole-v0", 2).description["backend"] == "gym-vector"
    assert envs.make_vec("Acrobot", 2).description["backend"] == "gym-sync"
    assert envs.default_backend("classic", "CartPole-v1") == "gym-vector"
    assert envs.default_backend("classic", "MountainCar-v0") == "gym-sync"
    assert envs.default_backend("classic") == "gym-sync"
    # gym-sync stays selectable.
    assert envs.make_vec("CartPole", 2, backend="gym-sync").description["backend"] == "gym-sync"


def test_gym_vector_refuses_envs_without_a_vector_version():
    with pytest.raises(ValueError, match="no vectorized version.*gym-sync, gym-async"):
        envs.make_vec("Acrobot", 2, backend="gym-vector")
    with pytest.raises(ValueError, match="cannot run 'Pong'"):
        envs.make_vec("Pong", 2, backend="gym-vector")
    with pytest.raises(ValueError, match="backend='gym-sync'"):
        envs.make_vec("CartPole", 2, backend="gym-vector", no_such_option=1)


@pytest.mark.parametrize("backend", CLASSIC_BACKENDS)
def test_same_shapes_dtypes_and_keys(backend):
    env = envs.make_vec("CartPole", 3, seed=1, backend=backend)
    obs, info = env.reset()
    assert obs.shape == (3, 4) and obs.dtype == np.float32
    assert env.single_observation_space.shape == (4,) and env.single_action_space.n == 2
    assert set(info) == STAT_KEYS
    obs, rew, term, trunc, info = env.step(np.array([0, 1, 0]))
    assert obs.shape == (3, 4) and obs.dtype == np.float32
    assert rew.shape == (3,) and rew.dtype == np.float32
    assert term.dtype == bool and trunc.dtype == bool and term.shape == trunc.shape == (3,)
    assert set(info) == STAT_KEYS
    assert info["episode_return"].dtype == np.float64
    assert info["episode_length"].dtype == np.int64
    assert env.checkpointable


def test_episode_limit_is_cartpole_v1s():
    env = envs.make_vec("CartPole", 2, seed=0)
    assert env.raw.vec.unwrapped.max_episode_steps == 500
    assert envs.make_vec("gym:CartPole-v0", 2).raw.vec.unwrapped.max_episode_steps == 200


def test_same_dynamics_termination_and_truncation_as_gym_sync():
    """Step gym-vector and gym-sync from the same states with the same actions: same
    observations, rewards, terminations, truncations (limit 30 here, so several
    truncations happen) and auto-reset flags. Only the fresh start states after an
    auto-reset differ (each backend draws them from its own generator); the test copies
    gym-sync's states into gym-vector before every step."""
    n, limit = 6, 30
    vec = envs.make_vec("CartPole", n, seed=0, backend="gym-vector", max_episode_steps=limit)
    ref = envs.make_vec("CartPole", n, seed=0, backend="gym-sync", max_episode_steps=limit)
    vec.reset()
    ref.reset()
    inner = vec.raw.vec.unwrapped
    singles = [e.unwrapped for e in ref.raw.vec.envs]
    rng = np.random.default_rng(0)
    # A noisy balancing policy keeps the first half of the poles up to the time limit; the
    # other half act at random and fall.
    noise = np.where(np.arange(n) < n // 2, 0.2, 1.0)
    obs_ref = np.stack([np.asarray(s.state, dtype=np.float32) for s in singles])
    truncations = terminations = 0
    for _ in range(400):
        greedy = (obs_ref[:, 2] + 0.3 * obs_ref[:, 3] > 0).astype(np.int64)
        act = np.where(rng.random(n) < noise, rng.integers(0, 2, n), greedy)
        inner.state = np.stack([np.asarray(s.state, dtype=np.float64) for s in singles], axis=1)
        o1, r1, te1, tr1, i1 = vec.step(act)
        obs_ref, r2, te2, tr2, i2 = ref.step(act)
        real = ~i2["autoreset"]
        np.testing.assert_allclose(o1[real], obs_ref[real], rtol=1e-6, atol=1e-7)
        np.testing.assert_array_equal(r1, r2)
        np.testing.assert_array_equal(te1, te2)
        np.testing.assert_array_equal(tr1, tr2)
        for key in ("autoreset", "episode_done", "episode_length"):
            np.testing.assert_array_equal(i1[key], i2[key], err_msg=key)
        np.testing.assert_array_equal(i1["episode_return"], i2["episode_return"])
        truncations += tr2.sum()
        terminations += te2.sum()
    assert truncations >= 3 and terminations >= 3


def test_episode_return_accounting():
    env = envs.make_vec("CartPole", 8, seed=2)
    env.reset()
    rng = np.random.default_rng(0)
    total, length, games = np.zeros(8), np.zeros(8, int), 0
    for _ in range(600):
        _, r, term, trunc, info = env.step(rng.integers(0, 2, 8))
        real = ~info["autoreset"]
        assert np.all(r[info["autoreset"]] == 0) and not np.any(term[info["autoreset"]])
        total += np.where(real, r, 0)
        length += real
        for i in np.flatnonzero(info["episode_done"]):
            assert info["episode_return"][i] == total[i] == info["episode_length"][i] == length[i]
            total[i], length[i] = 0, 0
            games += 1
        assert np.all(np.isnan(info["episode_return"][~info["episode_done"]]))
        assert np.all(info["episode_length"][~info["episode_done"]] == 0)
        assert not info["life_loss"].any()
    assert games >= 50


def test_autoreset_step_ignores_its_action():
    n = 4
    a, b = envs.make_vec("CartPole", n, seed=5), envs.make_vec("CartPole", n, seed=5)
    oa, _ = a.reset()
    ob, _ = b.reset()
    rng = np.random.default_rng(1)
    prev_done = np.zeros(n, bool)
    flagged = 0
    for _ in range(300):
        act = rng.integers(0, 2, n)
        alt = np.where(prev_done, 1 - act, act)
        oa, ra, ta, tra, ia = a.step(act)
        ob, rb, tb, trb, ib = b.step(alt)
        np.testing.assert_array_equal(ia["autoreset"], prev_done)
        np.testing.assert_array_equal(oa, ob)
        np.testing.assert_array_equal(ra, rb)
        np.testing.assert_array_equal(ta, tb)
        flagged += ia["autoreset"].sum()
        prev_done = ia["episode_done"]
    assert flagged >= 2 * n
    # A different action on an unflagged step changes the trajectory.
    act = np.zeros(n, dtype=np.int64)
    keep = ~prev_done
    assert keep.any()
    oa, *_ = a.step(act)
    ob, *_ = b.step(np.where(keep, 1, 0))
    assert not np.array_equal(oa[keep], ob[keep])


def _trajectory(env, steps=200, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(steps):
        obs, r, term, trunc, info = env.step(rng.integers(0, 2, env.num_envs))
        out.append((obs, r, term, trunc, info["autoreset"], info["episode_return"]))
    return [np.stack(x) for x in zip(*out, strict=True)]


def test_same_seed_same_run_different_seed_different_run():
    def run(seed):
        env = envs.make_vec("CartPole", 4, seed=seed)
        first, _ = env.reset()
        return [first, *_trajectory(env)]

    for x, y in zip(run(7), run(7), strict=True):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(run(7)[0], run(8)[0])


@pytest.mark.parametrize("backend", CLASSIC_BACKENDS)
def test_pickle_round_trip_continues_identically(backend):
    """What the trainer's checkpoint does: pickle the whole VecEnv mid-run (with episodes
    ending and an auto-reset pending) and continue the copy with the same actions."""
    env = envs.make_vec("CartPole", 8, seed=3, backend=backend)
    env.reset()
    rng = np.random.default_rng(0)
    pending = False
    for _ in range(500):
        *_, info = env.step(rng.integers(0, 2, 8))
        if info["episode_done"].any():  # the next step auto-resets those envs
            pending = True
            break
    assert pending
    copy = pickle.loads(pickle.dumps(env))
    for x, y in zip(_trajectory(env, seed=1), _trajectory(copy, seed=1), strict=True):
        np.testing.assert_array_equal(x, y)


def test_vector_entry_point_lookup():
    assert envs.make.vector_entry_point("CartPole-v1").endswith(":CartPoleVectorEnv")
    assert envs.make.vector_entry_point("Acrobot-v1") is None
    assert envs.make.vector_entry_point("NoSuchEnv-v9") is None
    assert isinstance(envs.make_vec("CartPole", 2).raw.vec.unwrapped, gym.vector.VectorEnv)


def test_bench_envs_lists_the_backends_that_can_run_the_env():
    from rl.bench import backends_for

    assert backends_for("CartPole") == ["gym-vector", "gym-sync", "gym-async"]
    assert backends_for("Acrobot") == ["gym-sync", "gym-async"]
    assert backends_for("Pong") == ["envpool", "ale", "gym-sync", "gym-async"]
