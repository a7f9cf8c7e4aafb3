"""Output into a pipe whose reader has gone (`rlscale ... | head -1`) ends quietly: exit 1
and nothing on stderr, whether rich's console or plain print meets the closed pipe."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize("argv", [["envs"], ["train", "--env", "CartPole", "--print-config"]])
def test_a_closed_pipe_is_no_error_message(argv):
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first write: every write is EPIPE
    try:
        proc = subprocess.run([sys.executable, "-m", "rl.cli", *argv], cwd=ROOT,
                              stdout=write_end, stderr=subprocess.PIPE, text=True)
    finally:
        os.close(write_end)
    assert (proc.returncode, proc.stderr) == (1, "")
