"""Tests for rl.runs.storage: creating and resuming a run, status, SIGKILL safety, finished runs."""

from __future__ import annotations

import json
import select
import signal
import subprocess
import sys
import textwrap
import time
import warnings

import pytest
import torch

from rl.runs import files, metrics
from rl.runs.errors import RunDirError
from rl.runs.metrics import load_metrics
from rl.runs.storage import RunDir

CONFIG = {"env": "CartPole-v1", "lr": 2.5e-4, "net": {"width": 64}, "total_steps": 1000}


# --------------------------------------------------------------------------- create / resume


def test_create_refuses_existing_run_and_non_empty_dir(tmp_path):
    RunDir.create(tmp_path / "run", CONFIG)
    with pytest.raises(RunDirError, match=r"already holds a run.*--run-dir.*--resume"):
        RunDir.create(tmp_path / "run", CONFIG)
    with pytest.raises(RunDirError, match="already holds a run"):
        RunDir.open(tmp_path / "run", CONFIG, resume=False)

    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(RunDirError, match="not empty"):
        RunDir.create(tmp_path / "other", CONFIG)
    assert (tmp_path / "other" / "notes.txt").read_text() == "mine"

    (tmp_path / "empty").mkdir()
    RunDir.create(tmp_path / "empty", CONFIG)  # an empty directory is fine
    assert json.loads((tmp_path / "empty" / "config.json").read_text()) == CONFIG


def test_resume_config_checks(tmp_path):
    RunDir.create(tmp_path / "run", CONFIG)
    changed = {**CONFIG, "lr": 1e-3, "net": {"width": 128}, "total_steps": 5000}
    with pytest.raises(RunDirError) as err:
        RunDir.open_for_resume(tmp_path / "run", changed, may_differ=("total_steps",))
    msg = str(err.value)
    assert "lr" in msg and "net.width" in msg and "total_steps" not in msg.split("(")[0]
    assert "--run-dir" in msg and "--resume" in msg
    with pytest.raises(RunDirError, match="extra"):
        RunDir.open_for_resume(tmp_path / "run", {**CONFIG, "extra": 1})

    # Only allowed keys differ: accepted, and config.json records the new values.
    run = RunDir.open(tmp_path / "run", {**CONFIG, "total_steps": 5000}, resume=True,
                      may_differ=("total_steps",))
    assert run.load_config()["total_steps"] == 5000
    # Tuples and lists are the same config once written as JSON.
    RunDir.open_for_resume(tmp_path / "run", {**CONFIG, "total_steps": 5000, "x": (1, 2)},
                           may_differ=("total_steps", "x"))
    RunDir.open_for_resume(tmp_path / "run", {**CONFIG, "total_steps": 5000, "x": [1, 2]})


def test_resume_without_config_has_nothing_to_resume(tmp_path):
    with pytest.raises(RunDirError, match="nothing to resume"):
        RunDir.open_for_resume(tmp_path / "missing", CONFIG)
    (tmp_path / "bare").mkdir()
    with pytest.raises(RunDirError, match="nothing to resume"):
        RunDir.open(tmp_path / "bare", CONFIG, resume=True)


@pytest.mark.parametrize("clutter", ["notes.txt", ".results.json.k2x9_q.tmp", ".config.json"])
def test_create_refuses_a_directory_with_anything_else(tmp_path, clutter):
    run_path = tmp_path / "run"
    run_path.mkdir()
    (run_path / clutter).write_text("x")
    with pytest.raises(RunDirError, match="is not empty and holds no config.json"):
        RunDir.create(run_path, CONFIG)
    assert [p.name for p in run_path.iterdir()] == [clutter]  # untouched: no lock file made


# --------------------------------------------------------------------------- status


def test_status_helpers(tmp_path):
    run = RunDir.create(tmp_path / "run", CONFIG)
    assert run.read_status() is None
    run.mark_running(iteration=3, agent_steps=3072)
    assert run.read_status()["state"] == "running"
    run.mark_failed("CUDA out of memory")
    status = run.read_status()
    assert status["state"] == "failed" and status["message"] == "CUDA out of memory"
    assert (status["iteration"], status["agent_steps"]) == (3, 3072)
    run.mark_finished(iteration=10, agent_steps=10240, message="done")
    status = run.read_status()
    assert {k: status[k] for k in ("state", "iteration", "agent_steps", "message")} == {
        "state": "finished", "iteration": 10, "agent_steps": 10240, "message": "done"
    }
    with pytest.raises(ValueError):
        run.write_status("paused")


# --------------------------------------------------------------------------- SIGKILL


CHILD = textwrap.dedent(
    """
    import sys
    import torch
    from rl.runs.storage import RunDir

    config = {"seed": 0}
    path, resume = sys.argv[1], sys.argv[2] == "resume"
    if resume:
        run = RunDir.open_for_resume(path, config)
        state, start = run.load_latest_checkpoint()
        run.truncate_metrics(after_iteration=start)
    else:
        run, start = RunDir.create(path, config), 0
    big = torch.arange(250_000, dtype=torch.float32)  # ~1 MB per checkpoint
    i = start
    while True:
        i += 1
        run.append_metrics({"iteration": i, "loss": float(i), "gns": float("nan")})
        if i % 2 == 0:
            run.save_checkpoint({"w": big + i, "i": i}, i)
        if i == start + 6:
            print("ready", flush=True)
    """
)


def _run_and_kill(script, run_path, mode, delay):
    proc = subprocess.Popen(
        [sys.executable, str(script), str(run_path), mode],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        # Only a guard against a hung child: on a starved machine (a nice-19 suite beside
        # CPU-bound jobs) starting Python with torch took over 30 s.
        ready, _, _ = select.select([proc.stdout], [], [], 900.0)
        assert ready, f"child did not start writing within 15 minutes: {proc.poll()=}"
        line = proc.stdout.readline()
        assert line.strip() == b"ready", (line, proc.stderr.read())
        time.sleep(delay)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=300)  # SIGKILL cannot be ignored; the bound is for a stuck kernel
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL


def _check_loadable(run_path):
    df = load_metrics(run_path)
    last = int(df["iteration"].iloc[-1])
    assert list(df["iteration"]) == list(range(1, last + 1))  # no gaps, no duplicates
    assert df["gns"].isna().all() and list(df["loss"]) == [float(i) for i in range(1, last + 1)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a checkpoint may be torn; fallback warns
        state, iteration = RunDir(run_path).load_latest_checkpoint()
    assert state["i"] == iteration and iteration <= last
    assert torch.equal(state["w"], torch.arange(250_000, dtype=torch.float32) + iteration)
    return last, iteration


@pytest.mark.slow
def test_sigkill_leaves_a_loadable_run_and_resume_continues(tmp_path):
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    run_path = tmp_path / "run"

    _run_and_kill(script, run_path, "new", delay=0.3)
    last1, ckpt1 = _check_loadable(run_path)

    _run_and_kill(script, run_path, "resume", delay=0.2)
    last2, ckpt2 = _check_loadable(run_path)
    assert ckpt2 > ckpt1 and last2 >= ckpt1 + 6

    # The raw file holds each iteration exactly once (plus at most a torn last line).
    lines = run_path.joinpath("metrics.jsonl").read_bytes().split(b"\n")
    iterations = [json.loads(raw)["iteration"] for raw in lines[:-1]]
    assert iterations == list(range(1, last2 + 1))


# --------------------------------------------------------------------------- finished runs


def test_finished_run_keeps_no_temp_files_and_figures_are_atomic(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    run = RunDir.create(tmp_path / "run", CONFIG)
    run.save_checkpoint({"w": torch.ones(1)}, 1)
    (run.path / ".status.json.abc123.tmp").write_bytes(b"")  # left by a killed writer
    (run.checkpoint_dir / ".ckpt_00000002.pt.x.tmp").write_bytes(b"")
    run.mark_finished(1, 1)
    leftovers = [p.name for p in run.path.rglob("*.tmp")]
    assert leftovers == []
    fig = Figure()
    fig.add_subplot().plot([1, 2])
    path = files.save_figure(fig, tmp_path / "fig.png", dpi=50)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
    run.close()


def test_restart_drops_checkpoints_rows_and_tensorboard_events(tmp_path):
    run = RunDir.create(tmp_path / "run", CONFIG)
    run.append_metrics({"iteration": 1})
    run.save_checkpoint({"w": torch.ones(1)}, 1)
    metrics.log_scalars(run.tensorboard_writer(), {"x": 1.0}, 1)
    run.restart()
    assert run.metrics_path.read_text() == "" and list(run.tb_dir.iterdir()) == []
    assert run.list_checkpoints() == [] and run.load_latest_checkpoint() is None
    run.close()
