"""Environments from unpackaged user code: ``module:EnvId`` and ``import_env_module``
(``--env-module``), registered with ``register_env`` or ``gymnasium.register``."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

import envs
from envs.registry import ENV_MODULES_VAR

ROOT = Path(__file__).resolve().parents[2]

MODULE = '''
import gymnasium as gym
import numpy as np

from envs import register_env


class Corridor(gym.Env):
    """Ten steps; action 1 earns 1."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def __init__(self, render_mode=None):
        self.render_mode, self.t = render_mode, 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(2, np.float32), {{}}

    def step(self, action):
        self.t += 1
        obs = np.array([self.t / 10, float(action)], np.float32)
        return obs, float(action), self.t >= 10, False, {{}}

    def render(self):
        return np.full((32, 32, 3), 25 * self.t, np.uint8)


@register_env("{name}")
def make_corridor(**options):
    return Corridor(**options)


gym.register(id="{name}-gym-v0", entry_point=Corridor)
'''


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """(module name, env name): a module file in tmp_path registering both kinds; the
    registrations, sys.path, sys.modules and the environment are restored after."""
    name = f"user_envs_{uuid.uuid4().hex[:8]}"
    env_name = f"Corridor{name[-8:]}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(MODULE.format(name=env_name)))
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setenv(ENV_MODULES_VAR, "")  # restored after (delenv of an unset one is not)
    monkeypatch.setenv("PYTHONPATH", os.environ.get("PYTHONPATH", ""))
    yield name, env_name
    envs.unregister_env(env_name)
    gym.registry.pop(f"{env_name}-gym-v0", None)
    sys.modules.pop(name, None)


def test_module_colon_id_imports_the_module_then_makes_the_env(user_module, tmp_path):
    module, env_name = user_module
    sys.path.insert(0, str(tmp_path))
    for env_id, kind in ((f"{module}:{env_name}", "plugin"),
                         (f"{module}:{env_name}-gym-v0", "gym")):
        assert envs.resolve(env_id).kind == kind
        env = envs.make_vec(env_id, 2, seed=0)
        try:
            obs, _ = env.reset()
            assert obs.shape == (2, 2)
            for _ in range(10):
                _, reward, _, _, info = env.step(np.ones(2, dtype=np.int64))
            assert info["episode_done"].all() and (info["episode_return"] == 10).all()
        finally:
            env.close()


def test_import_env_module_finds_the_working_directory(user_module, tmp_path, monkeypatch):
    module, env_name = user_module
    monkeypatch.chdir(tmp_path)
    assert str(tmp_path) not in sys.path and "" not in sys.path
    with pytest.raises(envs.UnknownEnvError):
        envs.resolve(env_name)
    envs.import_env_module(module)
    assert envs.resolve(env_name).kind == "plugin"


def test_an_exported_module_is_imported_by_processes_started_later(user_module, tmp_path,
                                                                   monkeypatch):
    module, env_name = user_module
    monkeypatch.chdir(tmp_path)
    envs.import_env_module(module, export=True)
    assert os.environ[ENV_MODULES_VAR] == module
    # A child elsewhere (a data-parallel rank, a sweep worker) resolves the name too.
    code = f"import envs; print(envs.resolve({env_name!r}).kind)"
    child_env = {**os.environ,
                 "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ["PYTHONPATH"]])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=child_env, cwd=ROOT / "docs", timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "plugin", out.stderr


def test_bad_modules_and_names_are_clear_errors(user_module, tmp_path):
    module, _ = user_module
    sys.path.insert(0, str(tmp_path))
    with pytest.raises(envs.UnknownEnvError, match="not on the Python path"):
        envs.resolve("no_such_module_here:Thing-v0")
    with pytest.raises(envs.UnknownEnvError, match=f"module '{module}' registered no "
                                                   "environment 'Missing'"):
        envs.resolve(f"{module}:Missing")
    with pytest.raises(envs.UnknownEnvError, match="is not a module name"):
        envs.import_env_module("not a module")
