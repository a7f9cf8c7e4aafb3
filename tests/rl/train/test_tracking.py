"""rl.train.tracking: the W&B hook logs each row under TensorBoard's tags at the agent step,
starts with the run's config, finishes at the end, and is off unless asked (a stand-in wandb
module: these tests need neither wandb nor a network)."""

from __future__ import annotations

import sys
import types

import pytest

from agents import PPOConfig
from rl.runs.metrics import load_metrics
from rl.train.config import TrackConfig, TrainConfig
from rl.train.launch import train


class FakeRun:
    def __init__(self, **kwargs):
        self.init, self.logged, self.finished = kwargs, [], False

    def log(self, values, step):
        self.logged.append((step, dict(values)))

    def finish(self):
        self.finished = True


@pytest.fixture
def fake_wandb(monkeypatch):
    module = types.ModuleType("wandb")
    module.runs = []

    def init(**kwargs):
        module.runs.append(FakeRun(**kwargs))
        return module.runs[-1]

    module.init = init
    module.Settings = lambda **kwargs: kwargs
    monkeypatch.setitem(sys.modules, "wandb", module)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    return module


def tiny(tmp_path) -> TrainConfig:
    return TrainConfig(env="CartPole", num_envs=2, num_steps=16, total_agent_steps=96,
                       gns_every=2, gns_groups=2, network="mlp", run_dir=str(tmp_path / "run"))


def test_rows_go_to_wandb_under_tensorboard_tags(fake_wandb, tmp_path, one_torch_thread):
    result = train(tiny(tmp_path), PPOConfig(num_minibatches=1, num_epochs=1),
                   track=TrackConfig(track=True, wandb_project="proj"))
    (run,) = fake_wandb.runs
    assert run.init["mode"] == "offline" and run.init["project"] == "proj"
    assert run.init["dir"] == str(result.run_dir) and run.init["name"] == "run"
    assert run.init["config"]["train"]["env"] == "CartPole"
    assert run.init["config"]["start_iteration"] == 0
    assert run.finished
    rows = load_metrics(result.run_dir)
    assert [step for step, _ in run.logged] == rows["agent_steps"].tolist()
    first = run.logged[0][1]
    assert {"charts/agent_steps", "charts/sps", "losses/policy_loss",
            "gns/total/g2"} <= set(first)
    assert first["losses/policy_loss"] == pytest.approx(rows["policy_loss"].iloc[0])
    assert not any(k.startswith(("charts/reached_target",)) for k in first)  # booleans skipped
    assert "gns/total/g2" not in run.logged[1][1]  # measured every 2nd iteration only


def test_no_track_no_wandb(fake_wandb, tmp_path, one_torch_thread):
    train(tiny(tmp_path), PPOConfig(num_minibatches=1, num_epochs=1), track=TrackConfig())
    train(tiny(tmp_path / "b"), PPOConfig(num_minibatches=1, num_epochs=1))
    assert fake_wandb.runs == []
