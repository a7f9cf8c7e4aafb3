"""The rlscale entry point: help everywhere, bench suites write their results files."""

import subprocess
import sys

import pandas as pd
import pytest

from rl.analysis.checkpoint_noise import CheckpointNoiseConfig
from rl.cli.app import build_parser, main


def _subcommands(parser, prefix=()):
    """Every (sub)command path of the parser."""
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*prefix, name)
                yield from _subcommands(sub, (*prefix, name))


def test_help_on_every_subcommand(capsys):
    paths = list(_subcommands(build_parser()))
    assert {("envs",), ("train",), ("bench",), ("bench", "envs"), ("bench", "ppo")} <= set(paths)
    for path in paths:
        with pytest.raises(SystemExit) as exit_info:
            main([*path, "--help"])
        assert exit_info.value.code == 0, path
        assert "usage: rlscale" in capsys.readouterr().out


def test_console_script_is_installed():
    out = subprocess.run([sys.executable, "-m", "rl.cli", "--help"], capture_output=True,
                         text=True)
    assert out.returncode == 0 and "train" in out.stdout


def test_bench_envs_writes_results(tmp_path):
    code = main(["bench", "envs", "--env", "Pong", "--backends", "envpool,ale",
                 "--num-envs", "2", "--steps", "20", "--repeats", "2", "--out", str(tmp_path),
                 "--quiet"])
    assert code == 0
    df = pd.read_csv(tmp_path / "envs.csv")
    assert list(df.backend) == ["envpool", "ale"]
    assert (df.agent_steps_per_s > 0).all() and df.ratio_to_envpool.iloc[0] == 1.0
    assert (tmp_path / "envs.json").exists()


@pytest.mark.slow
def test_bench_ppo_compares_with_sb3(tmp_path):
    code = main(["bench", "ppo", "--configs", "CartPole:4x64", "--iterations", "1",
                 "--repeats", "1", "--out", str(tmp_path), "--quiet"])
    assert code == 0
    df = pd.read_csv(tmp_path / "ppo.csv")
    assert set(df.impl) == {"ours", "sb3"} and (df.agent_steps_per_s > 0).all()
    assert df.ratio_ours_to_sb3.notna().sum() == 1


def test_bad_bench_config_is_a_clear_error(capsys):
    assert main(["bench", "ppo", "--configs", "Pong-8x128", "--quiet"]) == 2
    assert "ENV:NUM_ENVSxNUM_STEPS" in capsys.readouterr().err


def test_error_messages_keep_bracketed_text(capsys, monkeypatch):
    """Errors are printed through rich; text like ``.[ray]`` must not be eaten as markup."""
    import rl.cli.app as cli

    def fail(args):
        raise ValueError("install the extra: pip install -e '.[ray]' and set [ppo] lr")

    parser = cli.build_parser()
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    args = parser.parse_args(["envs"])
    monkeypatch.setattr(parser, "parse_args", lambda argv=None: argparse_ns(args, fail))
    assert cli.main(["envs"]) == 2
    err = capsys.readouterr().err
    assert "'.[ray]'" in err and "[ppo] lr" in err


def test_long_error_message_is_one_line_when_stderr_is_not_a_terminal(tmp_path, capsys):
    """Logs and pipes are grepped: rich must not wrap the message at 80 columns there."""
    with pytest.raises(ValueError) as info:
        CheckpointNoiseConfig(groups=3)
    message = str(info.value)
    assert len(message) > 100
    assert main(["gns", "checkpoints", str(tmp_path), "--groups", "3", "--quiet"]) == 2
    assert f"error: {message}" in capsys.readouterr().err.splitlines()


def argparse_ns(args, func):
    args.func = func
    return args


def test_bad_fit_options_are_one_line_errors(tmp_path, capsys):
    for flags, message in ((["--ci", "2"], "--ci is the interval level"),
                           (["--ci", "0"], "--ci is the interval level"),
                           (["--n-boot", "-5"], "--n-boot must be a positive"),
                           (["--range-factor", "0"], "--range-factor must be a finite"),
                           (["--range-factor", "inf"], "--range-factor must be a finite")):
        assert main(["fit", str(tmp_path), *flags]) == 2, flags
        assert message in " ".join(capsys.readouterr().err.split()), flags
