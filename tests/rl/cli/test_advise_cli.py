"""``rlscale advise``: from a run directory (nothing written into it), --json, bad inputs."""

import json

import pytest

from rl.cli.app import main

QUICK = ["--candidates", "2,8", "--threads", "1", "--quiet"]


def _snapshot(path):
    return {p.relative_to(path): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in path.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A CartPole run of 16 PPO iterations of 8 x 32 with B_simple every iteration (6
    measurements past the warm-up)."""
    run = tmp_path_factory.mktemp("advise") / "run"
    assert main(["train", "--env", "CartPole", "--total-agent-steps", "4096", "--gns-every",
                 "1", "--run-dir", str(run), "--torch-threads", "1", "--quiet"]) == 0
    return run


@pytest.mark.slow
def test_advice_from_a_run_dir_prints_json_and_writes_nothing(tiny_run, capsys,
                                                              one_torch_thread):
    capsys.readouterr()
    before = _snapshot(tiny_run)
    assert main(["advise", str(tiny_run), "--json", *QUICK]) == 0
    out = json.loads(capsys.readouterr().out)
    assert _snapshot(tiny_run) == before
    assert out["noise"]["measurements"] == 6 and out["noise"]["rollout_batch_size"] == 256
    assert out["b_crit"]["lo"] <= out["b_crit"]["b_crit"] <= out["b_crit"]["hi"]
    sizes = [r["rollout_batch_size"] for r in out["rows"]]
    assert sizes == [64, 256]
    assert out["fastest"]["rollout_batch_size"] in sizes
    assert out["calibration"]["tasks"] == ["CartPole", "Acrobot", "MinAtar-Breakout"]
    assert any("B_simple grows" in n for n in out["notes"])
    assert main(["advise", str(tiny_run), *QUICK]) == 0
    text = capsys.readouterr().out
    assert "fastest in wall-clock" in text and "B_crit = r x B_simple" in text


def test_unknown_env_is_a_clear_error(capsys):
    assert main(["advise", "--env", "NoSuchEnv", "--quiet"]) == 2
    assert "unknown environment 'NoSuchEnv'" in capsys.readouterr().err


def test_run_dir_without_measurements_past_the_warmup(tmp_path, capsys, one_torch_thread):
    run = tmp_path / "short"
    assert main(["train", "--env", "CartPole", "--total-agent-steps", "2560", "--gns-every",
                 "1", "--run-dir", str(run), "--torch-threads", "1", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["advise", str(run), *QUICK]) == 2
    err = capsys.readouterr().err
    assert "0 noise-scale measurement(s)" in err and "--gns-every 1" in err


def test_a_folder_that_is_not_a_run(tmp_path, capsys):
    assert main(["advise", str(tmp_path), *QUICK]) == 2
    assert "not a run directory" in capsys.readouterr().err


def test_budget_too_small(tmp_path, capsys, one_torch_thread):
    assert main(["advise", "--env", "CartPole", "--budget", "1s", "--run-dir",
                 str(tmp_path / "p"), *QUICK]) == 2
    err = capsys.readouterr().err
    assert "too small" in err and "give at least" in err
    assert not (tmp_path / "p").exists()


def test_the_probe_never_writes_into_an_existing_directory(tmp_path, capsys):
    (tmp_path / "keep.txt").write_text("mine")
    assert main(["advise", "--env", "CartPole", "--run-dir", str(tmp_path), *QUICK]) == 2
    assert "exists" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


@pytest.mark.parametrize("argv, message", [
    (["--budget", "soon"], "duration"),
    (["--candidates", "0,x"], "--candidates"),
    (["--measurements", "2"], "at least 5"),
])
def test_bad_options_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        code = main(["advise", "--env", "CartPole", *argv, "--quiet"])
        raise SystemExit(code)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_an_sb3_run_needs_its_env_named(tmp_path, capsys):
    (tmp_path / "progress.csv").write_text("time/iterations,time/total_timesteps\n1,256\n")
    assert main(["advise", str(tmp_path), *QUICK]) == 2
    assert "pass --env" in capsys.readouterr().err
    assert main(["advise", str(tmp_path), "--env", "CartPole", *QUICK]) == 2
    assert "0 noise-scale measurement(s)" in capsys.readouterr().err


def test_unknown_term_exit_2(capsys):
    assert main(["advise", "--env", "CartPole", "--term", "entropy", "--quiet"]) == 2
    assert "--term must be one of" in capsys.readouterr().err


def test_unknown_preset_exit_2(capsys):
    assert main(["advise", "--env", "CartPole", "--preset", "huge", "--quiet"]) == 2
    assert "--preset must be one of atari, classic" in capsys.readouterr().err


def test_run_dir_and_a_probe_dir_exclude_each_other(tmp_path, capsys):
    assert main(["advise", str(tmp_path), "--run-dir", str(tmp_path / "new"), *QUICK]) == 2
    assert "exclude each other" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()
