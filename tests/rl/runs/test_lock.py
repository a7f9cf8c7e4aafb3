"""Tests for rl.runs.lock: one process at a time holds a run, racing creators, clearing a run."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys

import pytest

from rl.runs import lock
from rl.runs.errors import RunDirError
from rl.runs.storage import RunDir
from tests.rl.runs.test_storage import CONFIG

# --------------------------------------------------------------------------- the run lock

HOLDER = """
import sys
from rl.runs.lock import lock_run_dir
from rl.runs.storage import RunDir
path, mode = sys.argv[1], sys.argv[2]
if mode == "lock":
    lock_run_dir(path)
    print("held", flush=True)
else:  # "create": wait for the go line, then race to create the run
    sys.stdin.readline()
    try:
        RunDir.create(path, {"who": mode})
        print("created", flush=True)
    except Exception as exc:
        print(f"refused {type(exc).__name__}: {exc}", flush=True)
        sys.exit(0)
sys.stdin.readline()  # hold until told to go (or killed)
"""


def _holder(tmp_path, run_path, mode):
    script = tmp_path / "holder.py"
    script.write_text(HOLDER)
    return subprocess.Popen([sys.executable, str(script), str(run_path), mode],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def test_a_second_process_gets_a_clear_error_naming_the_holder(tmp_path):
    run_path = tmp_path / "run"
    RunDir.create(run_path, CONFIG).close()
    holder = _holder(tmp_path, run_path, "lock")
    try:
        assert holder.stdout.readline().strip() == "held"  # waits as long as it takes
        with pytest.raises(RunDirError, match=rf"in use by process {holder.pid}\b.*--run-dir"):
            RunDir.open_for_resume(run_path, CONFIG)
    finally:
        holder.kill()  # SIGKILL: the kernel drops its lock
        holder.wait()
        holder.stdin.close()
        holder.stdout.close()
    run = RunDir.open_for_resume(run_path, CONFIG)  # a dead holder's lock is recovered
    assert (run_path / ".lock").read_text().strip() == str(os.getpid())
    run.close()


def test_lock_is_reentrant_in_one_process_and_released_on_close(tmp_path):
    run = RunDir.create(tmp_path / "run", CONFIG)
    with lock.lock_run_dir(tmp_path / "run"):  # e.g. a sweep worker, then the trainer
        again = RunDir.open_for_resume(tmp_path / "run", CONFIG)
        again.close()
    run.close()
    assert os.path.realpath(run.path) not in lock._held  # all holds given back: unlocked


def test_two_racing_creators_exactly_one_wins(tmp_path):
    run_path = tmp_path / "run"
    racers = [_holder(tmp_path, run_path, f"p{i}") for i in range(3)]
    for proc in racers:
        proc.stdin.write("go\n")
        proc.stdin.flush()
    outcomes = [proc.stdout.readline().strip() for proc in racers]
    for proc in racers:  # the winner holds the run until now; the others have exited
        with contextlib.suppress(BrokenPipeError):
            proc.stdin.write("go\n")
            proc.stdin.close()
        proc.wait()
        proc.stdout.close()
    assert sum(o == "created" for o in outcomes) == 1, outcomes
    refused = [o for o in outcomes if o != "created"]
    assert all(o.startswith("refused RunDirError") for o in refused), outcomes
    assert all("in use by process" in o or "already holds a run" in o for o in refused), outcomes
    assert json.loads((run_path / "config.json").read_text())["who"].startswith("p")


def test_a_creator_in_progress_is_named_not_taken_for_clutter(tmp_path):
    # What a racing creator sees between the winner's lock and its config link: the lock
    # and the winner's config temp file. It must name the winner, not call the dir cluttered.
    run_path = tmp_path / "run"
    holder = _holder(tmp_path, run_path, "lock")
    try:
        assert holder.stdout.readline().strip() == "held"
        (run_path / ".config.json.k2x9_q.tmp").write_text("{")
        with pytest.raises(RunDirError, match=rf"in use by process {holder.pid}\b"):
            RunDir.create(run_path, CONFIG)
    finally:
        holder.kill()
        holder.wait()
        holder.stdin.close()
        holder.stdout.close()
    # The creator was killed: its temp file goes, the run is created.
    RunDir.create(run_path, CONFIG).close()
    assert sorted(p.name for p in run_path.iterdir()) == [".lock", "config.json"]


def test_clear_run_dir_keeps_the_lock(tmp_path):
    run = RunDir.create(tmp_path / "run", CONFIG)
    run.append_metrics({"iteration": 1})
    lock.clear_run_dir(run.path)
    assert [p.name for p in run.path.iterdir()] == [".lock"]
    run.close()
    RunDir.create(tmp_path / "run", CONFIG).close()  # nothing but the lock: a free dir
