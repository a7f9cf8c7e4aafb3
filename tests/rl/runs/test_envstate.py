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


@pytest.mark.parametrize("field, node", [
    ("close", "not a method"),                       # a plain value over a method
    ("close", {"kind": "skip"}),                     # "keep what is there" over a method
    ("step", {"kind": "ref", "path": "env"}),        # another restored object over a method
    ("__class__", 0),                                # a special attribute
    ("single_action_space_n", 0),                    # a data field the fresh env lacks
])
def test_a_state_cannot_overwrite_methods_of_the_env(field, node):
    """#24 item 13: restoring writes only state fields, never a method or special name."""
    env = envs.make_vec("CartPole", 2, 0)
    state = _roundtrip(env_state(env))
    state["root"]["attrs"][field] = node
    fresh = envs.make_vec("CartPole", 2, 0)
    if field == "single_action_space_n":  # data set on first use (e.g. _np_random): restored
        assert restore_env_state(fresh, state).single_action_space_n == 0
        return
    with pytest.raises(EnvStateError, match=f"sets '{field}'|{field}: not a state field"):
        restore_env_state(fresh, state)
    assert field not in vars(fresh)
    fresh.close()  # the class's own method
