"""Every Atari backend behaves the same through VecEnv (shapes, stats, auto-reset, seeds)."""

import numpy as np
import pytest

import envs

BACKENDS = ["envpool", "ale", "gym-sync", "gym-async"]
STAT_KEYS = {"autoreset", "episode_done", "episode_return", "episode_length", "life_loss"}


def _spy_raw_rewards(env):
    """Record the backend's unclipped rewards as VecEnv receives them."""
    seen = []
    step = env.raw.step

    def spying_step(actions):
        out = step(actions)
        seen.append(np.asarray(out[1], dtype=np.float64).copy())
        return out

    env.raw.step = spying_step
    return seen


@pytest.mark.parametrize("backend", BACKENDS)
def test_same_shapes_dtypes_and_keys(backend):
    env = envs.make_vec("Pong", 2, seed=3, backend=backend)
    try:
        obs, info = env.reset()
        assert obs.shape == (2, 4, 84, 84) and obs.dtype == np.uint8
        assert env.single_observation_space.shape == (4, 84, 84)
        assert env.single_action_space.n == 6
        assert set(info) == STAT_KEYS
        obs, rew, term, trunc, info = env.step(np.zeros(2, dtype=np.int64))
        assert obs.shape == (2, 4, 84, 84) and obs.dtype == np.uint8
        assert rew.shape == (2,) and term.dtype == bool and trunc.dtype == bool
        assert set(info) == STAT_KEYS
        assert info["episode_return"].dtype == np.float64
    finally:
        env.close()


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_full_game_return_sums_unclipped_rewards_over_all_lives(backend):
    """Scripted random play on Breakout (5 lives, bricks worth up to 7 points)."""
    n = 2
    env = envs.make_vec("Breakout", n, seed=11, backend=backend)
    raw_rewards = _spy_raw_rewards(env)
    env.reset()
    rng = np.random.default_rng(0)
    own_return, own_length, own_lives_lost = np.zeros(n), np.zeros(n, int), np.zeros(n, int)
    games = 0
    try:
        for _ in range(3000):
            _, reward, term, trunc, info = env.step(rng.integers(0, 4, n))
            raw = raw_rewards[-1]
            real = ~info["autoreset"]
            # Training reward is the clipped raw reward; auto-reset steps give nothing.
            np.testing.assert_allclose(reward, np.clip(raw, -1, 1))
            assert np.all(raw[info["autoreset"]] == 0)
            own_return += np.where(real, raw, 0)
            own_length += real
            own_lives_lost += info["life_loss"]
            # A life loss ends the training episode without ending the game.
            assert np.all(term[info["life_loss"]])
            assert not np.any(info["episode_done"][info["life_loss"]])
            for i in np.flatnonzero(info["episode_done"]):
                assert info["episode_return"][i] == pytest.approx(own_return[i])
                assert info["episode_length"][i] == own_length[i]
                assert own_lives_lost[i] >= 3, "a full game spans several lives"
                own_return[i], own_length[i], own_lives_lost[i] = 0, 0, 0
                games += 1
            assert np.all(np.isnan(info["episode_return"][~info["episode_done"]]))
            if games >= 3:
                break
    finally:
        env.close()
    assert games >= 3


@pytest.mark.parametrize("backend", BACKENDS)
def test_autoreset_step_ignores_its_action(backend):
    """Flagged steps are real auto-resets: two runs that differ only in the actions taken
    on flagged steps stay identical; a different action on an unflagged step diverges."""
    n = 2
    # Truncate games after 64 agent steps so resets come fast.
    kwargs = dict(seed=5, backend=backend, max_frames_per_episode=256)
    a, b = envs.make_vec("Breakout", n, **kwargs), envs.make_vec("Breakout", n, **kwargs)
    try:
        oa, _ = a.reset()
        ob, _ = b.reset()
        rng = np.random.default_rng(1)
        flagged_steps = truncations = 0
        prev_done = np.zeros(n, bool)
        for _ in range(160):
            act = rng.integers(0, 4, n)
            alt = np.where(prev_done, (act + 1 + rng.integers(0, 3, n)) % 4, act)
            oa, ra, ta, tra, ia = a.step(act)
            ob, rb, tb, trb, ib = b.step(alt)
            np.testing.assert_array_equal(ia["autoreset"], prev_done)
            np.testing.assert_array_equal(oa, ob)
            np.testing.assert_array_equal(ra, rb)
            flagged_steps += ia["autoreset"].sum()
            prev_done = ia["episode_done"]
            truncations += tra.sum()
        # 256 frames = 64 agent steps at most (ALE also counts no-op reset frames).
        assert truncations >= 2 * n
        assert flagged_steps >= 2 * n
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_same_seed_same_start(backend):
    def rollout(seed):
        env = envs.make_vec("Breakout", 2, seed=seed, backend=backend)
        try:
            obs, _ = env.reset()
            frames, rewards = [obs], []
            rng = np.random.default_rng(0)
            for _ in range(40):
                obs, r, *_ = env.step(rng.integers(0, 4, 2))
                frames.append(obs)
                rewards.append(r)
            return np.stack(frames), np.stack(rewards)
        finally:
            env.close()

    f1, r1 = rollout(7)
    f2, r2 = rollout(7)
    np.testing.assert_array_equal(f1, f2)
    np.testing.assert_array_equal(r1, r2)


def test_machado_preset_has_sticky_actions_and_no_life_signal():
    p = envs.PRESETS["machado"]
    assert p.sticky_action_prob == 0.25 and not p.life_loss_terminates
    env = envs.make_vec("Breakout", 2, seed=0, preset="machado", backend="envpool")
    try:
        env.reset()
        assert env.single_action_space.n == 18  # full action set
        lost = 0
        rng = np.random.default_rng(0)
        for _ in range(400):
            _, _, term, _, info = env.step(rng.integers(0, 18, 2))
            lost += info["life_loss"].sum()
            assert not np.any(term & info["life_loss"])
        assert lost > 0
    finally:
        env.close()


def _spy_raw_actions(env):
    """Record the actions the backend receives (after VecEnv's substitutions)."""
    seen = []
    step = env.raw.step

    def spying_step(actions):
        seen.append(np.asarray(actions).copy())
        return step(actions)

    env.raw.step = spying_step
    return seen


def _play_without_fire(backend, steps, **options):
    """Random play on Breakout that never chooses FIRE; returns per-step (agent actions,
    backend actions, life-loss flags)."""
    n = 2
    env = envs.make_vec("Breakout", n, seed=13, backend=backend, **options)
    raw_actions = _spy_raw_actions(env)
    env.reset()
    rng = np.random.default_rng(2)
    chosen, losses = [], []
    try:
        for _ in range(steps):
            act = rng.choice(np.array([0, 2, 3]), n)  # NOOP, RIGHT, LEFT: never FIRE (1)
            _, _, _, _, info = env.step(act)
            chosen.append(act)
            losses.append(info["life_loss"])
    finally:
        env.close()
    return np.array(chosen), np.array(raw_actions), np.array(losses)


@pytest.mark.parametrize("backend", BACKENDS)
def test_step_after_a_lost_life_fires(backend):
    """Breakout waits for FIRE after a lost life. With the standard preset the step after a
    life loss executes FIRE (and only that step differs from the agent's choice), so play
    that never fires still loses life after life; without it the first lost ball stalls
    the game."""
    assert envs.atari.fire_action("breakout", False) == 1
    assert envs.atari.fire_action("pong", True) == 1
    steps = 1200
    chosen, executed, losses = _play_without_fire(backend, steps)
    after_loss = np.zeros_like(losses)
    after_loss[1:] = losses[:-1]
    np.testing.assert_array_equal(executed[after_loss], 1)
    np.testing.assert_array_equal(executed[~after_loss], chosen[~after_loss])
    assert np.all(losses.sum(axis=0) >= 2), "the ball is relaunched after each lost life"

    chosen, executed, losses = _play_without_fire(backend, steps, fire_after_life_loss=False)
    np.testing.assert_array_equal(executed, chosen)
    # Only the ball launched by the reset's FIRE can be lost: the game then waits.
    assert np.all(losses.sum(axis=0) <= 1)
