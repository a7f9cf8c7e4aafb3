"""Training and evaluating on environments from unpackaged user code: ``--env-module`` and
``module:EnvId`` on the command line; ``load_policy`` imports nothing a run names."""

from __future__ import annotations

import json
import os
import sys
import textwrap
import uuid

import gymnasium as gym
import pytest

import envs
from envs.registry import ENV_MODULES_VAR
from rl.cli.app import main
from rl.runs.errors import RunDirError
from rl.runs.policy import load_policy
from tests.envs.test_user_modules import MODULE

TINY = ["--num-envs", "2", "--num-steps", "10", "--total-agent-steps", "40", "--gns-every",
        "0", "--quiet"]


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """(module, env name): a module file in the working directory (tmp_path)."""
    name = f"cli_envs_{uuid.uuid4().hex[:8]}"
    env_name = f"Corridor{name[-8:]}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(MODULE.format(name=env_name)))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setenv(ENV_MODULES_VAR, "")  # restored after (delenv of an unset one is not)
    monkeypatch.setenv("PYTHONPATH", os.environ.get("PYTHONPATH", ""))
    yield name, env_name
    envs.unregister_env(env_name)
    gym.registry.pop(f"{env_name}-gym-v0", None)
    sys.modules.pop(name, None)


def test_env_module_flag_trains_and_evaluates_a_registered_env(user_module, capsys,
                                                               one_torch_thread):
    module, env_name = user_module
    assert main(["train", "--env-module", module, "--env", env_name, *TINY,
                 "--run-dir", "run"]) == 0
    assert json.loads(open("run/config.json").read())["train"]["env"] == env_name
    capsys.readouterr()
    assert main(["eval", "run", "--env-module", module, "--episodes", "2"]) == 0
    assert "over 2 games" in capsys.readouterr().out
    assert main(["envs", "--env-module", module, "--kind", "plugin"]) == 0
    assert env_name in capsys.readouterr().out


def test_module_colon_id_trains_and_eval_needs_the_module_named(user_module, capsys,
                                                                one_torch_thread):
    module, env_name = user_module
    env_id = f"{module}:{env_name}-gym-v0"
    sys.path.insert(0, os.getcwd())  # as `python -m`, or a module on PYTHONPATH
    assert main(["train", "--env", env_id, *TINY, "--run-dir", "run"]) == 0
    # A run directory that names a module does not make load_policy import it.
    sys.modules.pop(module)
    with pytest.raises(RunDirError, match=f"--env-module {module}"):
        load_policy("run")
    assert main(["eval", "run", "--episodes", "2"]) == 2
    assert f"--env-module {module}" in " ".join(capsys.readouterr().err.split())
    assert main(["eval", "run", "--env-module", module, "--episodes", "2"]) == 0


def test_an_env_module_that_is_not_there_is_one_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(ENV_MODULES_VAR, "")  # restored after (delenv of an unset one is not)
    assert main(["train", "--env-module", "no_such_envs_here", "--env", "X", "--quiet"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "cannot import the environment module 'no_such_envs_here'" in err
    assert "PYTHONPATH" in err and not (tmp_path / "runs").exists()
