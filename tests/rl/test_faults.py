"""Fault injection: SIGKILL a training run and a sweep at 20 random moments each.

After every kill the command is started again (``--resume`` for the run; a sweep continues
by itself); at the end the metrics and the fit tables must equal an uninterrupted run's.
The moments are random (fixed seed) with respect to what the process is doing: starting
up, taking the lock, training, writing a metrics row or a checkpoint, starting workers.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rl.analysis.sweep_fits import fit_sweep
from rl.runs.metrics import load_metrics
from rl.sweeps.executors import run_sweep
from rl.sweeps.results import RESULT_TIMING_COLUMNS, read_results
from rl.sweeps.spec import load_spec
from rl.train.config import TIMING_COLUMNS

ROOT = Path(__file__).resolve().parents[2]
KILLS = 20
ENV = {**os.environ, "PYTHONWARNINGS": "ignore"}


def _rows(path: Path) -> int:
    try:
        with open(path, "rb") as f:
            return sum(1 for _ in f)
    except FileNotFoundError:
        return 0


def _checkpoint_iteration(run_dir: Path) -> int:
    try:
        return int(json.loads((run_dir / "checkpoints" / "latest.json").read_text())["iteration"])
    except (FileNotFoundError, ValueError, KeyError):
        return 0


def _continue(run_dir: Path) -> list[str]:
    """The flag that continues a killed run: --resume from its checkpoint, or --restart when
    it was killed before its first one (a resume without a checkpoint refuses)."""
    if not (run_dir / "config.json").exists():
        return []
    return ["--resume"] if list((run_dir / "checkpoints").glob("ckpt_*.pt")) else ["--restart"]


def _kill_when(cmd: list[str], ready, delay: float) -> bool:
    """Start ``cmd`` in its own process group; once ``ready()`` holds, wait ``delay`` seconds
    and SIGKILL the whole group (a sweep's workers too). False if it ended before that."""
    proc = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        while not ready():  # no deadline: a loaded machine is slow
            if proc.poll() is not None:
                return False
            time.sleep(0.005)
        time.sleep(delay)
        if proc.poll() is not None:
            return False
        os.killpg(proc.pid, signal.SIGKILL)
        return True
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _no_temp_files(directory: Path) -> list[Path]:
    return [p for p in directory.rglob("*.tmp")]


def _comparable(df: pd.DataFrame) -> pd.DataFrame:
    timing = [c for c in df.columns if c in TIMING_COLUMNS or c.endswith("/seconds")]
    return df.drop(columns=timing).reset_index(drop=True)


@pytest.mark.slow
def test_training_run_survives_20_sigkills(tmp_path):
    args = ["train", "--env", "CartPole", "--total-agent-steps", "23040", "--checkpoint-every",
            "3", "--seed", "5", "--quiet"]
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    # Every run in a fresh process alike (the test process's torch settings differ, and
    # float sums in another order change the last bits).
    cli = [sys.executable, "-m", "rl.cli"]
    subprocess.run([*cli, *args, "--run-dir", str(whole)], cwd=ROOT, env=ENV, check=True)
    rng = np.random.default_rng(0)
    metrics = killed / "metrics.jsonl"
    kills = 0
    while kills < KILLS:
        cmd = [*cli, *args, "--run-dir", str(killed), *_continue(killed)]
        # Kill once the metrics reach a random row a few iterations past the last
        # checkpoint, after a further random delay (mid-row, mid-checkpoint, ...).
        target = _checkpoint_iteration(killed) + int(rng.integers(1, 7))
        if not _kill_when(cmd, lambda t=target: _rows(metrics) >= t, float(rng.uniform(0, 0.1))):
            break
        kills += 1
    assert kills == KILLS, f"the run finished after {kills} kills: give it a larger budget"
    subprocess.run([*cli, *args, "--run-dir", str(killed), *_continue(killed)], cwd=ROOT,
                   env=ENV, check=True)
    a, b = load_metrics(whole), load_metrics(killed)
    assert list(b["iteration"]) == list(range(1, 91))
    pd.testing.assert_frame_equal(_comparable(a), _comparable(b))
    assert json.loads((killed / "status.json").read_text())["state"] == "finished"
    assert _no_temp_files(killed) == []


SPEC = """
env = "CartPole"
num_envs = [2, 8, 32]
num_steps = 32
seeds = [0, 1]
lrs = [1e-3]
targets = [50, 100]
budget = 20000
parallel = 2
out = "{out}"

[ppo]
anneal_lr = false

[train]
checkpoint_every = 5
gns_every = 5
"""


@pytest.mark.slow
def test_sweep_survives_20_sigkills_and_fits_the_same(tmp_path):
    ref_path, cut_path = tmp_path / "ref.toml", tmp_path / "cut.toml"
    ref_path.write_text(SPEC.format(out=tmp_path / "ref"))
    cut_path.write_text(SPEC.format(out=tmp_path / "cut"))
    ref = run_sweep(load_spec(ref_path))
    rng = np.random.default_rng(1)
    cmd = [sys.executable, "-m", "rl.cli", "sweep", str(cut_path), "--quiet"]
    events, runs = tmp_path / "cut" / "events.jsonl", tmp_path / "cut" / "runs"

    def trained_rows() -> int:
        return sum(_rows(p) for p in runs.glob("*/metrics.jsonl"))

    kills = 0
    while kills < KILLS:
        # One kill in four a random moment after the sweep logged something new (starting
        # up, planning, launching workers); the others once its runs have trained past where
        # the last attempt got (so every restart gets somewhere), then a random delay.
        if rng.random() < 0.25:
            seen = _rows(events)
            ready = lambda s=seen: _rows(events) > s  # noqa: E731
        else:
            seen = trained_rows()
            ready = lambda s=seen: trained_rows() > s  # noqa: E731
        if not _kill_when(cmd, ready, float(rng.uniform(0, 0.5))):
            break
        kills += 1
    assert kills == KILLS, f"the sweep finished after {kills} kills: give it more work"
    done = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    table = read_results(tmp_path / "cut")
    timing = list(RESULT_TIMING_COLUMNS)
    assert (table["status"] == "finished").all()
    pd.testing.assert_frame_equal(table.drop(columns=timing), ref.drop(columns=timing),
                                  check_exact=False, rtol=1e-9)
    fit_ref, _ = fit_sweep(ref, n_boot=200, seed=0)
    fit_cut, _ = fit_sweep(table, n_boot=200, seed=0)
    pd.testing.assert_frame_equal(fit_cut, fit_ref)
    assert _no_temp_files(runs) == []
    counts = pd.Series([json.loads(line)["event"] for line in events.read_text().splitlines()])
    assert (counts == "resume").sum() >= 5  # the kills hit runs mid-training, not only startup


def _file_size_limit(limit_bytes: int):
    """The child's writes past ``limit_bytes`` fail with EFBIG, as on a full disk (ENOSPC)
    they fail with an errno and no file name: the same paths through torch, TensorBoard's
    writer thread and our own writes, without a tmpfs (which needs root)."""
    def set_limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))
    return set_limit


@pytest.mark.parametrize("limit_bytes, failing, hint, resumed", [
    (300, ("config.json",), None, False),  # before the run exists: nothing to continue
    # rows, but no checkpoint yet; TensorBoard's writer thread may hit the limit first
    (1_500, ("metrics.jsonl", "tb"), "--restart", False),
    (40_000, ("ckpt_",), "--restart", False),  # the first checkpoint does not fit
    (12_000, ("metrics.jsonl", "tb"), "--resume", True),  # a resumed run's rows outgrow the limit
])
def test_a_failed_write_is_one_line_naming_the_file(tmp_path, limit_bytes, failing, hint,
                                                   resumed):
    """#24 item 3: a write that fails (disk full, file size limit) ends with one line that
    names the file and the way on, exit 2; the run then continues as that line says."""
    run_dir = tmp_path / "run"
    args = [sys.executable, "-m", "rl.cli", "train", "--env", "CartPole", "--checkpoint-every",
            "2", "--run-dir", str(run_dir), "--quiet"]
    budget = ["--total-agent-steps", "8192"]  # 32 iterations of 256 agent steps
    if resumed:  # 16 iterations first, without a limit; metrics.jsonl holds about 11.5 kB
        subprocess.run([*args, "--total-agent-steps", "4096"], cwd=ROOT, env=ENV, check=True,
                       capture_output=True)
        budget.append("--resume")
    failed = subprocess.run([*args, *budget], cwd=ROOT, env=ENV, capture_output=True,
                            text=True, preexec_fn=_file_size_limit(limit_bytes))
    assert failed.returncode == 2, failed.stderr
    message = " ".join(failed.stderr.split())  # rich wraps long lines at the terminal width
    assert message.startswith("error: File too large (") and "Traceback" not in message
    assert message.count("error:") == 1, message
    named = message.split("(", 1)[1].split(")", 1)[0]
    assert named.startswith(str(run_dir)), message
    assert any(part in named.removeprefix(str(run_dir)) for part in failing), message
    assert _no_temp_files(tmp_path) == []
    if hint is None:
        assert "--resume" not in message and "--restart" not in message
        assert not (run_dir / "config.json").exists()
        return
    assert hint in message
    assert ("--restart" if hint == "--resume" else "--resume") not in message
    assert json.loads((run_dir / "status.json").read_text())["state"] == "failed"
    done = subprocess.run([*args, "--total-agent-steps", "8192", hint], cwd=ROOT, env=ENV,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    iterations = load_metrics(run_dir)["iteration"].tolist()
    assert iterations == list(range(1, 33)), iterations
