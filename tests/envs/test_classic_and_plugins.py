"""Classic control, gym: ids, plugins (decorator and entry point), and the env checker."""

import os
import subprocess
import sys
import textwrap

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import envs
from envs.registry import load_entry_points


def test_cartpole_short_name_and_stats():
    env = envs.make_vec("CartPole", 4, seed=0)
    obs, info = env.reset()
    assert obs.shape == (4, 4) and env.single_action_space.n == 2
    total, lengths = np.zeros(4), []
    for _ in range(300):
        _, r, term, trunc, info = env.step(np.zeros(4, dtype=np.int64))
        total += np.where(info["autoreset"], 0, r)
        for i in np.flatnonzero(info["episode_done"]):
            assert info["episode_return"][i] == total[i] == info["episode_length"][i]
            lengths.append(info["episode_length"][i])
            total[i] = 0
    assert lengths and all(8 <= n <= 60 for n in lengths)  # always pushing left falls fast


@pytest.mark.parametrize("backend", ["gym-vector", "gym-sync"])
def test_cartpole_truncation_and_autoreset_observation(backend):
    env = envs.make_vec("CartPole-v1", 1, seed=0, backend=backend, max_episode_steps=10)
    env.reset()
    for t in range(1, 13):
        obs, r, term, trunc, info = env.step(np.array([t % 2]))
        if t == 10:
            assert trunc[0] and info["episode_done"][0] and info["episode_length"][0] == 10
        if t == 11:
            assert info["autoreset"][0] and r[0] == 0 and not term[0] and not trunc[0]
            assert np.all(np.abs(obs) <= 0.05), "a fresh CartPole state"
        if t == 12:
            assert not info["autoreset"][0]


def test_gym_prefix_any_id():
    env = envs.make_vec("gym:Acrobot-v1", 2, seed=1)
    obs, _ = env.reset()
    assert obs.shape == (2, 6)
    env.close()


def test_decorator_plugin_found_by_make_vec():
    @envs.register_env("TestChainDecorated")
    def make_chain(**options):
        return gym.make("CartPole-v1", **options)

    try:
        entry = envs.resolve("TestChainDecorated")
        assert entry.kind == "plugin" and entry.source.startswith("decorator:")
        env = envs.make_vec("TestChainDecorated", 2, seed=0)
        assert env.reset()[0].shape == (2, 4)
        assert "TestChainDecorated" in [e.name for e in envs.list_envs()]
        with pytest.raises(ValueError, match="already registered"):
            envs.register_env("TestChainDecorated")(lambda **kw: None)
    finally:
        envs.unregister_env("TestChainDecorated")


TINY_PLUGIN = '''
import gymnasium as gym

class Corridor(gym.Env):
    """Walk right to the end of a 5-cell corridor."""
    observation_space = gym.spaces.Box(0, 4, (1,), dtype="float32")
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.pos = 0
        return [float(self.pos)], {}

    def step(self, action):
        self.pos = max(0, min(4, self.pos + (1 if action == 1 else -1)))
        done = self.pos == 4
        return [float(self.pos)], float(done), done, False, {}

def register():
    from envs import register_env
    register_env("TinyCorridor")(lambda **kw: Corridor())
'''


@pytest.fixture
def tiny_plugin_path(tmp_path):
    """An installed-looking package: a module plus a dist-info with an entry point."""
    (tmp_path / "tinyplug.py").write_text(textwrap.dedent(TINY_PLUGIN))
    dist = tmp_path / "tinyplug-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: tinyplug\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[rlscale.envs]\ntiny = tinyplug:register\n")
    return tmp_path


def test_entry_point_plugin_found_by_make_vec(tiny_plugin_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tiny_plugin_path))
    try:
        load_entry_points(reload=True)
        entry = envs.resolve("TinyCorridor")
        assert entry.source == "entry point tiny (package tinyplug)"
        env = envs.make_vec("TinyCorridor", 3, seed=0)
        env.reset()
        for _ in range(4):
            _, r, term, _, info = env.step(np.ones(3, dtype=np.int64))
        assert np.all(term) and np.all(info["episode_return"] == 1.0)
    finally:
        envs.unregister_env("TinyCorridor")
        monkeypatch.undo()
        load_entry_points(reload=True)


def test_rlscale_envs_lists_both_kinds_of_plugin(tiny_plugin_path):
    code = textwrap.dedent("""
        import gymnasium as gym, envs
        envs.register_env("DecoratedDemo")(lambda **kw: gym.make("CartPole-v1"))
        from rl.cli import main
        raise SystemExit(main(["envs", "--kind", "plugin"]))
    """)
    env = dict(os.environ, PYTHONPATH=str(tiny_plugin_path), COLUMNS="200")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "TinyCorridor" in out.stdout and "package tinyplug" in out.stdout
    assert "DecoratedDemo" in out.stdout and "decorator:" in out.stdout
    assert "MinAtar-Breakout" in out.stdout  # the worked-example plugin package


def test_minatar_plugin_through_entry_point():
    entry = envs.resolve("MinAtar-Breakout")
    assert entry.source == "entry point minatar (package rlscale-minatar)"
    env = envs.make_vec("MinAtar-Breakout", 2, seed=0)
    obs, _ = env.reset()
    assert obs.shape == (2, 10, 10, 4) and obs.dtype == bool


@pytest.mark.parametrize("name", ["CartPole", "Acrobot", "MinAtar-Breakout", "Pong"])
def test_gymnasium_env_checker_passes_on_single_env_factories(name):
    env = envs.make_env(name)
    check_env(env, skip_render_check=True)
    env.close()
