"""Training output when stderr is not a terminal (nohup, CI): plain progress lines while the
run goes on, not a live bar that shows nothing until the end; --quiet silences them."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
LINE = re.compile(r"^train CartPole: iteration (\d+), ([\d,]+)/640 agent steps \(\d+%\), "
                  r"return ([\d.]+|-) \(mean of the last 20 games\), ([\d,]+|-) SPS, ETA \S+$")


def _train(tmp_path: Path, *flags: str) -> list[str]:
    """Output lines (stdout and stderr in the order written) of a 10-iteration CartPole run
    in a subprocess whose output is a pipe."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-m", "rl.cli", "train", "--env", "CartPole", "--num-envs", "4",
         "--num-steps", "16", "--total-agent-steps", "640", "--gns-every", "0",
         "--torch-threads", "1", "--run-dir", str(tmp_path / "run"), *flags],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=tmp_path,
        timeout=300)
    assert out.returncode == 0, out.stdout
    return out.stdout.splitlines()


def test_progress_lines_appear_while_training_when_not_a_terminal(tmp_path):
    lines = _train(tmp_path, "--progress-interval-s", "0")
    end = next(i for i, line in enumerate(lines) if line.startswith("CartPole: 10 PPO"))
    progress = [LINE.match(line) for line in lines[:end]]
    assert all(progress), lines[:end]
    # Interval 0: one line per iteration, in order, all before the closing summary.
    assert [int(m.group(1)) for m in progress] == list(range(1, 11))
    assert [m.group(2) for m in progress][-1] == "640"


def test_a_long_interval_still_shows_the_first_and_the_last_iteration(tmp_path):
    lines = _train(tmp_path, "--progress-interval-s", "3600")
    iterations = [int(m.group(1)) for m in map(LINE.match, lines) if m]
    assert iterations == [1, 10]


def test_quiet_silences_the_progress_lines(tmp_path):
    lines = _train(tmp_path, "--quiet", "--progress-interval-s", "0")
    assert not [line for line in lines if LINE.match(line)]
    assert any(line.startswith("CartPole: 10 PPO") for line in lines)
