"""``rlscale train`` habits: --print-config/--dry-run, --version, the rounded-budget warning,
and a new run folder per run when --run-dir is not given (an explicit one as before)."""

from __future__ import annotations

import json
import os

import pytest

from rl.cli.app import main

TINY = ["--env", "CartPole", "--num-envs", "4", "--num-steps", "16",
        "--total-agent-steps", "128", "--gns-every", "0", "--quiet"]


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_print_config_shows_the_preset_that_runs_for_cartpole(in_tmp, capsys, monkeypatch):
    monkeypatch.setattr("rl.train.launch.run_rank", lambda *a, **k: pytest.fail("trained"))
    assert main(["train", "--env", "CartPole", "--print-config"]) == 0
    config = json.loads(capsys.readouterr().out)
    assert config["preset"] == "classic"
    train, ppo = config["train"], config["ppo"]
    assert (train["num_envs"], train["num_steps"], train["total_agent_steps"],
            train["network"]) == (8, 32, 100_000, "mlp")
    assert (ppo["learning_rate"], ppo["num_epochs"], ppo["num_minibatches"], ppo["gamma"],
            ppo["gae_lambda"], ppo["clip_coef"], ppo["ent_coef"]) == (1e-3, 20, 1, 0.98, 0.8,
                                                                     0.2, 0.0)
    assert train["run_dir"].startswith("runs/CartPole-8x32-seed0-")
    assert not any(in_tmp.iterdir())  # no run directory, no runs/ folder
    # Flags override the preset; Atari games get the Atari preset.
    assert main(["train", "--env", "CartPole", "--learning-rate", "3e-4", "--print-config"]) == 0
    assert json.loads(capsys.readouterr().out)["ppo"]["learning_rate"] == 3e-4
    assert main(["train", "--env", "Pong", "--print-config"]) == 0
    pong = json.loads(capsys.readouterr().out)
    assert pong["preset"] == "atari" and pong["train"]["num_steps"] == 128
    assert pong["ppo"]["learning_rate"] == 2.5e-4


def test_dry_run_makes_the_run_checks_and_writes_nothing(in_tmp, capsys, monkeypatch):
    monkeypatch.setattr("rl.train.launch.run_rank", lambda *a, **k: pytest.fail("trained"))
    assert main(["train", *TINY, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert json.loads(out[:out.rindex("}") + 1])["train"]["num_envs"] == 4
    assert "dry run: every check passed" in out
    # A setting train would refuse is refused here too (64 samples in 128 minibatches).
    assert main(["train", *TINY, "--num-minibatches", "128", "--dry-run"]) == 2
    assert "num_minibatches" in capsys.readouterr().err
    assert not any(in_tmp.iterdir())


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith("rlscale ")


def test_a_budget_rounded_down_to_whole_iterations_is_announced(in_tmp, capsys):
    args = ["train", "--env", "CartPole", "--num-envs", "8", "--num-steps", "32"]
    assert main([*args, "--total-agent-steps", "1000", "--print-config"]) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert "--total-agent-steps 1,000 is not a whole number of PPO iterations of 256" in err
    assert "3 iterations, 768 agent steps will run" in err and "1,024 gives 4" in err
    assert main([*args, "--total-agent-steps", "1024", "--print-config"]) == 0
    assert "warning" not in capsys.readouterr().err


def test_runs_without_run_dir_each_get_a_new_folder_and_latest_follows(
        in_tmp, capsys, one_torch_thread):
    assert main(["train", *TINY]) == 0
    assert main(["train", *TINY]) == 0  # the same settings again
    assert main(["train", *TINY, "--learning-rate", "2e-3"]) == 0  # one flag changed
    runs = sorted(p for p in (in_tmp / "runs").iterdir() if not p.is_symlink())
    assert len(runs) == 3 and all((p / "config.json").is_file() for p in runs)
    assert all(p.name.startswith("CartPole-4x16-seed0-") for p in runs)
    latest = in_tmp / "runs" / "latest"
    assert latest.is_symlink() and not os.path.isabs(os.readlink(latest))
    lr = json.loads((latest / "config.json").read_text())["ppo"]["learning_rate"]
    assert lr == 2e-3
    assert f"run directory: runs/{os.readlink(latest)}" in capsys.readouterr().out


def test_a_run_that_never_starts_leaves_no_folder_and_keeps_latest(in_tmp, capsys,
                                                                   one_torch_thread):
    assert main(["train", *TINY]) == 0
    before = os.readlink(in_tmp / "runs" / "latest")
    assert main(["train", *TINY, "--device", "cuda:99"]) == 2
    assert os.readlink(in_tmp / "runs" / "latest") == before
    assert [p.name for p in (in_tmp / "runs").iterdir() if not p.is_symlink()] == [before]


def test_an_explicit_run_dir_still_refuses_a_second_run(in_tmp, capsys, one_torch_thread):
    assert main(["train", *TINY, "--run-dir", "mine"]) == 0
    assert main(["train", *TINY, "--run-dir", "mine"]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert not (in_tmp / "runs").exists()


def test_resume_needs_a_named_run(in_tmp, capsys):
    assert main(["train", *TINY, "--resume"]) == 2
    assert "--resume acts on an existing run: name it with --run-dir" in " ".join(
        capsys.readouterr().err.split())
