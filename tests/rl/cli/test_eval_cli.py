"""``rlscale eval``: evaluation games of a trained run, and a video of a few."""

from __future__ import annotations

import re

import gymnasium as gym
import numpy as np
import pytest
import torch

import envs
from rl.cli.app import main


@pytest.fixture(scope="module")
def cartpole_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("eval") / "run"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["train", "--env", "CartPole", "--num-envs", "4", "--num-steps", "16",
                     "--total-agent-steps", "256", "--gns-every", "0", "--run-dir",
                     str(run_dir), "--quiet"]) == 0
    finally:
        torch.set_num_threads(threads)
    return run_dir


def _summary(out: str) -> tuple[float, float, int]:
    m = re.search(r"mean return ([\d.]+), std ([\d.]+) over (\d+) games", out)
    assert m, out
    return float(m.group(1)), float(m.group(2)), int(m.group(3))


def test_eval_prints_mean_std_and_games(cartpole_run, capsys, one_torch_thread):
    assert main(["eval", str(cartpole_run), "--episodes", "5"]) == 0
    out = capsys.readouterr().out
    mean, std, games = _summary(out)
    assert games == 5 and mean > 0 and std >= 0
    assert "deterministic" in out and "iteration 4" in out
    # The same seed plays the same games.
    assert main(["eval", str(cartpole_run), "--episodes", "5"]) == 0
    assert _summary(capsys.readouterr().out) == (mean, std, games)


def test_stochastic_eval_samples_and_follows_its_seed(cartpole_run, capsys, one_torch_thread):
    runs = []
    for seed in ("1", "1", "2"):
        assert main(["eval", str(cartpole_run), "--episodes", "6", "--stochastic",
                     "--seed", seed]) == 0
        out = capsys.readouterr().out
        assert "stochastic" in out
        runs.append(_summary(out))
    assert runs[0] == runs[1] and runs[0] != runs[2]


def test_eval_video_writes_an_mp4(cartpole_run, tmp_path, capsys, one_torch_thread):
    pytest.importorskip("moviepy")
    pytest.importorskip("pygame")
    videos = tmp_path / "videos"
    assert main(["eval", str(cartpole_run), "--episodes", "2", "--video", str(videos),
                 "--video-episodes", "1"]) == 0
    files = sorted(videos.glob("*.mp4"))
    assert [f.name for f in files] == ["eval-episode-0.mp4"]
    assert files[0].stat().st_size > 1000
    assert f"video: {files[0]}" in capsys.readouterr().out


def test_eval_of_a_folder_that_is_not_a_run_exits_2(tmp_path, capsys):
    assert main(["eval", str(tmp_path)]) == 2
    assert "no config.json" in capsys.readouterr().err
    assert main(["eval", str(tmp_path), "--episodes", "0"]) == 2


class Endless(gym.Env):
    """A game that never ends: no termination, no time limit."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(2, np.float32), {}

    def step(self, action):
        return np.zeros(2, np.float32), 0.0, False, False, {}


def test_a_game_that_never_ends_stops_at_the_step_cap(tmp_path, capsys, one_torch_thread):
    envs.register_env("EndlessForEval")(Endless)
    try:
        assert main(["train", "--env", "EndlessForEval", "--num-envs", "2", "--num-steps", "8",
                     "--total-agent-steps", "16", "--gns-every", "0", "--quiet", "--run-dir",
                     str(tmp_path / "run")]) == 0
        capsys.readouterr()
        assert main(["eval", str(tmp_path / "run"), "--episodes", "2",
                     "--max-agent-steps", "40"]) == 2
        err = " ".join(capsys.readouterr().err.split())
        assert "no game ended: 0 of 2 games ended within --max-agent-steps 40" in err
        assert "TimeLimit" in err
    finally:
        envs.unregister_env("EndlessForEval")


def test_fewer_games_than_asked_are_reported_with_a_warning(cartpole_run, capsys,
                                                            one_torch_thread):
    assert main(["eval", str(cartpole_run), "--episodes", "50", "--num-envs", "2",
                 "--max-agent-steps", "400"]) == 0
    captured = capsys.readouterr()
    mean, std, games = _summary(captured.out)
    assert 0 < games < 50
    assert f"{games} of 50 games ended within --max-agent-steps 400" in " ".join(
        captured.err.split())
