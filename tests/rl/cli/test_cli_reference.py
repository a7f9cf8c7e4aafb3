"""docs/cli.md, the command-line reference, is what the generator makes from the parser now
(rerun ``python scripts/cli_reference.py`` after changing an option)."""

from __future__ import annotations

import runpy
from pathlib import Path

from rl.cli.app import build_parser
from rl.cli.reference import cli_reference, commands

ROOT = Path(__file__).resolve().parents[3]
PAGE = ROOT / "docs" / "cli.md"
SCRIPT = ROOT / "scripts" / "cli_reference.py"


def test_the_committed_page_matches_the_parser():
    assert PAGE.read_text(encoding="utf-8") == cli_reference(), (
        "docs/cli.md is out of date: run python scripts/cli_reference.py and commit it")


def test_every_command_and_option_is_on_the_page():
    text = cli_reference()
    paths = [path for path, _, _ in commands(build_parser())]
    assert {"rlscale train", "rlscale gns run", "rlscale bench ppo", "rlscale demo"} <= set(paths)
    for path, _, parser in commands(build_parser()):
        assert f"`{path}`" in text
        for action in parser._actions:
            for option in action.option_strings:
                if option not in ("-h", "--help"):
                    assert option in text, f"{path} {option} is missing"


def test_the_script_checks_and_writes_the_page(tmp_path, capsys):
    main = runpy.run_path(str(SCRIPT))["main"]
    out = tmp_path / "cli.md"
    assert main(["--check", "--out", str(out)]) == 1
    assert "out of date" in capsys.readouterr().err
    assert main(["--out", str(out)]) == 0
    assert main(["--check", "--out", str(out)]) == 0
    assert out.read_text(encoding="utf-8") == cli_reference()
