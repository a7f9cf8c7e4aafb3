"""docs/own-loop.md stays runnable: its code blocks are examples/own_loop_noise_scale.py, and
they run (a user-written loop measuring B_simple with rl.measure's public API)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
PAGE = ROOT / "docs" / "own-loop.md"
SCRIPT = ROOT / "examples" / "own_loop_noise_scale.py"


def page_code() -> str:
    blocks = re.findall(r"```python\n(.*?)```", PAGE.read_text(), re.S)
    assert len(blocks) >= 3, "the page lost its code blocks"
    return "\n\n".join(blocks)


def code_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def test_the_page_shows_the_example_file():
    assert code_lines(page_code()) == code_lines(SCRIPT.read_text()), (
        "docs/own-loop.md's python blocks differ from examples/own_loop_noise_scale.py: "
        "change both")


@pytest.mark.slow
def test_the_page_runs_and_measures_b_simple(one_torch_thread, capsys):
    namespace = {"__name__": "__main__"}
    exec(compile(page_code(), str(PAGE), "exec"), namespace)  # noqa: S102 - our own docs
    summary = namespace["summary"]
    assert summary["measurements"] == namespace["ITERATIONS"] - 10  # the warm-up left out
    assert 0 < summary["b_simple_lo"] <= summary["b_simple"] <= summary["b_simple_hi"]
    assert "B_simple over the run:" in capsys.readouterr().out
