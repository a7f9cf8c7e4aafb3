"""What building the ``rlscale`` parser imports: no command implementation, no SB3/Ray/plots.

Every ``--help`` builds the whole parser, so its imports are paid on each call. Each check
runs in a fresh interpreter: this process has imported everything long ago.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from rl.cli.app import build_parser
from rl.cli.parsers import Command

ROOT = Path(__file__).resolve().parents[3]

# Third-party packages that only some commands use, each slow to import (scipy: 1-2 s).
FORBIDDEN_PACKAGES = ("stable_baselines3", "ray", "matplotlib", "tensorboard", "scipy")

# Implementations that building the parser must leave alone (the commands import them).
FORBIDDEN_RL = ("rl.cli.train", "rl.cli.sweep", "rl.cli.fit", "rl.cli.compare", "rl.cli.gns",
                "rl.cli.commands", "rl.train.launch", "rl.train.loop", "rl.peers.sb3",
                "rl.sweeps.executors", "rl.sweeps.pbt.tune", "rl.study.compare",
                "rl.analysis.sharpness", "rl.analysis.learning", "rl.analysis.sweep_fits",
                "rl.advise.probe", "rl.bench.ppo", "rl.bench.scaling", "rl.analysis.fit",
                "rl.measure.supervised", "rl.runs.storage")

# The rl modules `rlscale --help` may import: the CLI's parsers and the option dataclasses
# with what they import. A new one here is a choice (docs/architecture.md, "Lazy imports").
ALLOWED_RL = {
    "rl", "rl.cli", "rl.cli.app", "rl.cli.args", "rl.cli.output",
    "rl.cli.parsers", *(f"rl.cli.parsers.{m}" for m in (
        "adaptive", "advise", "compare", "evaluate", "fit", "gns", "sharpness", "sweep",
        "train")),
    "rl.advise", "rl.advise.config", "rl.advise.predict",
    "rl.analysis", "rl.analysis.configs", "rl.analysis.levels",
    "rl.bench", "rl.bench.common", "rl.bench.configs", "rl.bench.envs",
    "rl.measure", "rl.measure.gns", "rl.measure.ppo_noise", "rl.measure.run_average",
    "rl.measure.supervised_config", "rl.measure.warmup",
    "rl.runs", "rl.runs.files", "rl.runs.layout",
    "rl.study", "rl.study.settings",
    "rl.sweeps", "rl.sweeps.pbt", "rl.sweeps.pbt.config", "rl.sweeps.settings",
    "rl.train", "rl.train.config",
}

# Before the parsers were split from the commands, `rlscale --help` imported 89 rl modules.
MAX_RL_MODULES = 45

_PROBE = """
import contextlib, io, json, sys
from rl.cli.app import main
for argv in json.loads(sys.argv[1]):
    with contextlib.redirect_stdout(io.StringIO()) as out:
        try:
            main(argv)
        except SystemExit as exc:
            assert exc.code == 0, (argv, exc.code)
    assert "usage: rlscale" in out.getvalue(), argv
print(json.dumps(sorted(sys.modules)))
"""


def _subcommands(parser, prefix=()):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*prefix, name), sub
                yield from _subcommands(sub, (*prefix, name))


def _loaded(argvs: list[list[str]]) -> set[str]:
    """The modules a fresh interpreter holds after ``rlscale ARGV`` for each ARGV."""
    out = subprocess.run([sys.executable, "-c", _PROBE, json.dumps(argvs)], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def _check(modules: set[str]) -> None:
    packages = [p for p in FORBIDDEN_PACKAGES if p in modules]
    assert not packages, f"building the parser imported {packages}"
    rl = {m for m in modules if m == "rl" or m.startswith("rl.")}
    implementations = sorted(rl & set(FORBIDDEN_RL))
    assert not implementations, f"building the parser imported {implementations}"
    assert len(rl) <= MAX_RL_MODULES, f"{len(rl)} rl modules: {sorted(rl)}"
    assert rl <= ALLOWED_RL, f"rl modules not in ALLOWED_RL: {sorted(rl - ALLOWED_RL)}"


def test_top_level_help_imports_only_the_parsers_and_the_configs():
    _check(_loaded([["--help"]]))


def test_every_subcommand_help_imports_no_implementation():
    paths = [list(path) for path, _ in _subcommands(build_parser())]
    assert ["train"] in paths and ["bench", "ppo"] in paths and ["gns", "supervised"] in paths
    _check(_loaded([[*path, "--help"] for path in paths]))


@pytest.mark.parametrize("path", [path for path, sub in _subcommands(build_parser())
                                  if sub.get_default("func") is not None],
                         ids=" ".join)
def test_each_command_names_a_function_that_exists(path):
    """The implementations are named as text: a typo would only show when the command runs."""
    parser = build_parser()
    for name in path:
        parser = dict(_subcommands(parser))[(name,)]
    func = parser.get_default("func")
    assert isinstance(func, Command) and callable(func.resolve()), func
