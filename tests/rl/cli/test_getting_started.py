"""docs/getting-started.md stays runnable (every command in it parses, its example
environment module trains and evaluates), and docs/index.md links every page."""

from __future__ import annotations

import os
import re
import shlex
import sys
from pathlib import Path

import envs
from envs.registry import ENV_MODULES_VAR
from rl.cli.app import build_parser, main

PAGE = Path(__file__).resolve().parents[3] / "docs" / "getting-started.md"


def commands() -> list[list[str]]:
    lines = [line.strip() for line in PAGE.read_text().splitlines()]
    return [shlex.split(line.split(" #")[0])[1:] for line in lines
            if line.startswith("rlscale ")]


def test_every_command_on_the_page_parses():
    cmds = commands()
    assert len(cmds) >= 10 and {c[0] for c in cmds} >= {"train", "eval", "gns", "sweep", "fit"}
    parser = build_parser()
    for argv in cmds:
        parser.parse_args(argv)  # argparse exits (status 2) on a flag that is gone


def test_the_example_environment_module_trains_and_evaluates(tmp_path, monkeypatch, capsys,
                                                             one_torch_thread):
    code = re.search(r"```python\n(.*?)```", PAGE.read_text(), re.S).group(1)
    (tmp_path / "my_envs.py").write_text(code)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setenv(ENV_MODULES_VAR, "")  # restored after (delenv of an unset one is not)
    monkeypatch.setenv("PYTHONPATH", os.environ.get("PYTHONPATH", ""))
    try:
        assert main(["train", "--env-module", "my_envs", "--env", "ShortCartPole",
                     "--num-envs", "2", "--num-steps", "16", "--total-agent-steps", "64",
                     "--gns-every", "0", "--quiet"]) == 0
        assert main(["eval", "runs/latest", "--env-module", "my_envs", "--episodes", "2"]) == 0
        assert "over 2 games" in capsys.readouterr().out
    finally:
        envs.unregister_env("ShortCartPole")
        sys.modules.pop("my_envs", None)



def test_the_docs_index_links_every_page():
    docs = PAGE.parent
    links = set(re.findall(r"\]\(([\w.-]+\.md)\)", (docs / "index.md").read_text()))
    pages = {p.name for p in docs.glob("*.md")} - {"index.md"}
    assert links == pages
