"""rl.runs.envstate: a vector env's exact state as tensors, restored without unpickling."""

import io

import numpy as np
import pytest
import torch

import envs
from rl.runs.envstate import EnvStateError, env_state, restore_env_state


def _roundtrip(state):
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)  # loads without running any code


@pytest.mark.parametrize("name, backend", [("CartPole", None), ("Acrobot", "gym-sync")])
def test_restored_env_continues_exactly(name, backend):
    env = envs.make_vec(name, 3, 5, backend=backend)
    env.reset()
    rng = np.random.default_rng(0)
    for _ in range(150):
        env.step(rng.integers(0, env.single_action_space.n, 3))
    copy = restore_env_state(envs.make_vec(name, 3, 5, backend=backend),
                             _roundtrip(env_state(env)))
    for _ in range(150):
        actions = rng.integers(0, env.single_action_space.n, 3)
        a, b = env.step(actions), copy.step(actions)
        for x, y in zip(a[:4], b[:4], strict=True):
            assert np.array_equal(x, y)
        for key in a[4]:
            assert np.array_equal(a[4][key], b[4][key], equal_nan=a[4][key].dtype.kind == "f")


def test_a_state_that_does_not_fit_is_refused():
    state = env_state(envs.make_vec("CartPole", 2, 0))
    with pytest.raises(EnvStateError, match="saved env has a"):
        restore_env_state(envs.make_vec("Acrobot", 2, 0, backend="gym-sync"), state)
    with pytest.raises(EnvStateError, match="not an environment state"):
        restore_env_state(envs.make_vec("CartPole", 2, 0), {"format": 99})
