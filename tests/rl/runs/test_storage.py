"""Tests for rl.runs.storage: atomic writes, metrics, checkpoints, resume, SIGKILL safety."""

from __future__ import annotations

import contextlib
import json
import math
import os
import select
import signal
import subprocess
import sys
import textwrap
import time
import warnings

import pandas as pd
import pytest
import torch

from rl.runs import storage
from rl.runs.storage import RunDir, RunDirError, load_metrics

CONFIG = {"env": "CartPole-v1", "lr": 2.5e-4, "net": {"width": 64}, "total_steps": 1000}


# --------------------------------------------------------------------------- atomic writes


def test_atomic_write_roundtrip(tmp_path):
    storage.atomic_write_json(tmp_path / "a.json", {"b": 1, "a": [1, 2]})
    text = (tmp_path / "a.json").read_text()
    assert text.index('"a"') < text.index('"b"')  # sorted keys
    assert json.loads(text) == {"a": [1, 2], "b": 1}
    storage.atomic_write_text(tmp_path / "sub" / "t.txt", "héllo")
    assert (tmp_path / "sub" / "t.txt").read_text(encoding="utf-8") == "héllo"
    storage.atomic_write_bytes(tmp_path / "b.bin", b"\x00\x01")
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"


def test_atomic_write_crash_keeps_old_file(tmp_path, monkeypatch):
    target = tmp_path / "status.json"
    storage.atomic_write_json(target, {"state": "old"})

    def boom(src, dst):
        assert os.path.exists(src)  # the temp file was written before the "crash"
        raise OSError("simulated crash before rename")

    monkeypatch.setattr(storage.os, "replace", boom)
    with pytest.raises(OSError, match="simulated crash"):
        storage.atomic_write_json(target, {"state": "new"})
    assert json.loads(target.read_text()) == {"state": "old"}
    assert sorted(os.listdir(tmp_path)) == ["status.json"]  # no temp file left behind


def test_atomic_write_crash_during_write_keeps_old_file(tmp_path, monkeypatch):
    run = RunDir.create(tmp_path / "run", CONFIG)
    run.save_checkpoint({"w": torch.ones(3)}, 1)

    def bad_save(obj, f):
        f.write(b"partial bytes")
        raise RuntimeError("simulated crash mid torch.save")

    monkeypatch.setattr(torch, "save", bad_save)
    with pytest.raises(RuntimeError, match="mid torch.save"):
        run.save_checkpoint({"w": torch.zeros(3)}, 2)
    assert sorted(os.listdir(run.checkpoint_dir)) == ["ckpt_00000001.pt", "latest.json"]
    monkeypatch.undo()
    state, iteration = run.load_latest_checkpoint()
    assert iteration == 1 and torch.equal(state["w"], torch.ones(3))


# --------------------------------------------------------------------------- metrics


def test_metrics_nan_inf_mixed_keys_and_duplicates(tmp_path):
    run = RunDir.create(tmp_path / "run", CONFIG)
    run.append_metrics({"iteration": 1, "loss": float("nan"), "ret": float("inf")})
    run.append_metrics({"iteration": 2, "loss": 0.5, "ret": float("-inf"), "gns/b_simple": 7.0})
    run.append_metrics({"iteration": 3, "loss": 0.25, "note": "extra", "gns/b_simple": 9.0})
    run.append_metrics({"iteration": 2, "loss": 0.75, "ret": 1.0})  # a later copy wins
    df = load_metrics(run.path)  # a run dir or the file itself
    pd.testing.assert_frame_equal(df, load_metrics(run.metrics_path))
    assert list(df["iteration"]) == [1, 2, 3]
    assert df["iteration"].dtype == "int64"
    assert list(df.columns)[0] == "iteration"
    assert math.isnan(df.loc[0, "loss"]) and df.loc[0, "ret"] == math.inf
    assert df.loc[1, "loss"] == 0.75 and df.loc[1, "ret"] == 1.0
    assert math.isnan(df.loc[1, "gns/b_simple"])  # the last copy of 2 lacks it
    assert math.isnan(df.loc[0, "gns/b_simple"]) and pd.isna(df.loc[0, "note"])
    assert df.loc[2, "note"] == "extra" and df.loc[2, "gns/b_simple"] == 9.0


def test_metrics_converts_numpy_and_torch_scalars(tmp_path):
    np = pytest.importorskip("numpy")
    run = RunDir.create(tmp_path / "run", CONFIG)
    run.append_metrics(
        {"iteration": np.int64(4), "a": np.float32(0.5), "b": torch.tensor(2.0), "c": np.ones(2)}
    )
    df = run.load_metrics()
    assert df.loc[0, "iteration"] == 4 and df.loc[0, "a"] == 0.5 and df.loc[0, "b"] == 2.0
    assert df.loc[0, "c"] == [1.0, 1.0]
    with pytest.raises(RunDirError, match="iteration"):
        run.append_metrics({"loss": 1.0})
    with pytest.raises(RunDirError, match="integer"):
        run.append_metrics({"iteration": 1.5})


def test_metrics_torn_last_line_is_ignored_and_repaired(tmp_path):
    run = RunDir.create(tmp_path / "run", CONFIG)
    for i in (1, 2):
        run.append_metrics({"iteration": i, "loss": i / 10})
    with open(run.metrics_path, "ab") as f:
        f.write(b'{"iteration":3,"lo')  # a crash mid-append
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a torn *last* line is expected: no warning
        df = load_metrics(run.metrics_path)
    assert list(df["iteration"]) == [1, 2]

    # The next process appends: the torn line is cut first, so it never ends up mid-file.
    again = RunDir(run.path)
    again.append_metrics({"iteration": 3, "loss": 0.3})
    lines = run.metrics_path.read_text().splitlines()
    assert [json.loads(line)["iteration"] for line in lines] == [1, 2, 3]
    assert list(load_metrics(run.path)["loss"]) == [0.1, 0.2, 0.3]


def test_metrics_corrupt_middle_line_warns_and_is_skipped(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"iteration": 1, "x": 1}\nnot json\n{"iteration": 2, "x": 2}\n')
    with pytest.warns(UserWarning, match="metrics.jsonl:2"):
        df = load_metrics(path)
    assert list(df["iteration"]) == [1, 2]


def test_load_metrics_missing_file_gives_empty_frame(tmp_path):
    df = load_metrics(tmp_path)
    assert df.empty and list(df.columns) == ["iteration"]


def test_truncate_and_reappend_matches_uninterrupted_run(tmp_path):
    def row(i):
        return {"iteration": i, "loss": 1.0 / i, **({"gns": float(i)} if i % 3 == 0 else {})}

    straight = RunDir.create(tmp_path / "straight", CONFIG)
    for i in range(1, 11):
        straight.append_metrics(row(i))

    run = RunDir.create(tmp_path / "resumed", CONFIG)
    for i in range(1, 8):  # checkpoint at 5, then a crash after writing 6 and 7
        run.append_metrics(row(i))
    with open(run.metrics_path, "ab") as f:
        f.write(b'{"iteration":8,')
    resumed = RunDir.open_for_resume(run.path, CONFIG)
    assert resumed.truncate_metrics(after_iteration=5) == 5
    for i in range(6, 11):
        resumed.append_metrics(row(i))

    assert run.metrics_path.read_text() == straight.metrics_path.read_text()
    pd.testing.assert_frame_equal(load_metrics(run.path), load_metrics(straight.path))


# --------------------------------------------------------------------------- checkpoints


def test_checkpoint_keep_last_n_and_latest_pointer(tmp_path):
    run = RunDir.create(tmp_path / "run", CONFIG)
    assert run.load_latest_checkpoint() is None
    for i in range(1, 6):
        run.save_checkpoint({"w": torch.full((2,), float(i)), "step": i}, i)
    assert run.list_checkpoints() == [4, 5]
    assert json.loads((run.checkpoint_dir / "latest.json").read_text()) == {
        "file": "ckpt_00000005.pt",
        "iteration": 5,
    }
    state, iteration = run.load_latest_checkpoint(map_location="cpu")
    assert iteration == 5 and state["step"] == 5 and torch.equal(state["w"], torch.full((2,), 5.0))

    run3 = RunDir(tmp_path / "run", keep=3)
    for i in range(6, 9):
        run3.save_checkpoint({"step": i}, i)
    assert run3.list_checkpoints() == [6, 7, 8]

    # Resuming from an older checkpoint: files of the abandoned later iterations go away.
    run3.save_checkpoint({"step": 7}, 7)
    assert run3.list_checkpoints() == [6, 7]


def test_latest_missing_or_corrupt_falls_back_to_newest_good(tmp_path):
    run = RunDir.create(tmp_path / "run", CONFIG, keep=3)
    for i in (1, 2, 3):
        run.save_checkpoint({"step": i}, i)
    latest = run.checkpoint_dir / "latest.json"

    latest.unlink()
    assert run.load_latest_checkpoint()[1] == 3

    # The pointer names a corrupt (truncated) file: fall back to the newest good one.
    storage.atomic_write_json(latest, {"iteration": 3, "file": "ckpt_00000003.pt"})
    data = run.checkpoint_path(3).read_bytes()
    run.checkpoint_path(3).write_bytes(data[: len(data) // 2])
    with pytest.warns(UserWarning, match="unloadable"):
        state, iteration = run.load_latest_checkpoint()
    assert (state, iteration) == ({"step": 2}, 2)

    # The pointer names a missing file, and the pointer itself may be garbage.
    storage.atomic_write_json(latest, {"iteration": 9, "file": "ckpt_00000009.pt"})
    with pytest.warns(UserWarning):
        assert run.load_latest_checkpoint()[1] == 2
    latest.write_text("{not json")
    with pytest.warns(UserWarning):
        assert run.load_latest_checkpoint()[1] == 2

    # Hidden temp files of a killed writer are ignored.
    (run.checkpoint_dir / ".ckpt_00000004.pt.abc.tmp").write_bytes(b"junk")
    with pytest.warns(UserWarning):
        assert run.load_latest_checkpoint()[1] == 2


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


# --------------------------------------------------------------------------- tensorboard


def _scalars(tb_dir, tag):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tb_dir))
    acc.Reload()
    return acc, {e.step: e.value for e in acc.Scalars(tag)}


def test_tensorboard_scalars_and_purge_on_resume(tmp_path):
    run = RunDir.create(tmp_path / "run", CONFIG)
    writer = run.tensorboard_writer()
    assert run.tensorboard_writer() is writer  # created once
    for step in range(1, 5):
        row = {"iteration": step, "loss/policy": 1.0 * step, "loss/value": float("nan"),
               "note": "x", "flag": True, "gns": torch.tensor(2.0)}
        assert storage.log_scalars(writer, row, step) == 3  # iteration, loss/policy, gns
    run.close()
    files = list(run.tb_dir.glob("events.out.tfevents.*"))
    assert files and all(f.stat().st_size > 0 for f in files)
    acc, policy = _scalars(run.tb_dir, "loss/policy")
    assert policy == {1: 1.0, 2: 2.0, 3: 3.0, 4: 4.0}
    assert "loss/value" not in acc.Tags()["scalars"] and "note" not in acc.Tags()["scalars"]

    # Resume from the checkpoint of iteration 2: steps >= 3 are logged again.
    time.sleep(1.1)  # event file names carry the second; keep the two files ordered
    with RunDir.open_for_resume(run.path, CONFIG) as resumed:
        w = resumed.tensorboard_writer(purge_step=3)
        storage.log_scalars(w, {"loss/policy": 30.0}, 3)
    _, policy = _scalars(run.tb_dir, "loss/policy")
    assert policy == {1: 1.0, 2: 2.0, 3: 30.0}


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


# --------------------------------------------------------------------------- the run lock

HOLDER = """
import sys
from rl.runs.storage import RunDir, lock_run_dir
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
    with storage.lock_run_dir(tmp_path / "run"):  # e.g. a sweep worker, then the trainer
        again = RunDir.open_for_resume(tmp_path / "run", CONFIG)
        again.close()
    run.close()
    assert os.path.realpath(run.path) not in storage._held  # all holds given back: unlocked


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


@pytest.mark.parametrize("clutter", ["notes.txt", ".results.json.k2x9_q.tmp", ".config.json"])
def test_create_refuses_a_directory_with_anything_else(tmp_path, clutter):
    run_path = tmp_path / "run"
    run_path.mkdir()
    (run_path / clutter).write_text("x")
    with pytest.raises(RunDirError, match="is not empty and holds no config.json"):
        RunDir.create(run_path, CONFIG)
    assert [p.name for p in run_path.iterdir()] == [clutter]  # untouched: no lock file made


def test_clear_run_dir_keeps_the_lock(tmp_path):
    run = RunDir.create(tmp_path / "run", CONFIG)
    run.append_metrics({"iteration": 1})
    storage.clear_run_dir(run.path)
    assert [p.name for p in run.path.iterdir()] == [".lock"]
    run.close()
    RunDir.create(tmp_path / "run", CONFIG).close()  # nothing but the lock: a free dir


# --------------------------------------------------------------------------- safe loading


class _RunsACommand:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_crafted_checkpoint_is_refused_and_runs_nothing(tmp_path):
    run = RunDir.create(tmp_path / "run", CONFIG)
    run.save_checkpoint({"w": torch.ones(2)}, 1)
    marker = tmp_path / "pwned"
    torch.save({"format": 2, "iteration": 1, "state": {"x": _RunsACommand(marker)}},
               run.checkpoint_path(1))  # replaces the real one
    with pytest.raises(storage.UnsafeCheckpointError, match=r"refusing to load .*ckpt_00000001"):
        run.load_latest_checkpoint()
    assert not marker.exists()
    run.close()


def test_checkpoint_state_must_be_plain_and_have_the_required_keys(tmp_path):
    import numpy as np

    run = RunDir.create(tmp_path / "run", CONFIG)
    with pytest.raises(TypeError, match=r"state\['r'\]\[0\] is a numpy"):
        run.save_checkpoint({"r": [np.float64(1.0)]}, 1)
    run.save_checkpoint({"model": {"w": torch.ones(1)}, "n": 3, "xs": [1.5, None],
                         "t": (1, "a")}, 1)
    state, it = run.load_latest_checkpoint(required=("model", "n"))
    assert it == 1 and state["n"] == 3 and state["t"] == (1, "a")
    with pytest.raises(RunDirError, match="lacks optimizer.*Move it out"):
        run.load_latest_checkpoint(required=("model", "optimizer"))
    run.close()


# --------------------------------------------------------------------------- finished runs


def test_damaged_metrics_of_a_finished_run_are_an_error(tmp_path):
    run = RunDir.create(tmp_path / "run", CONFIG)
    for i in (1, 2):
        run.append_metrics({"iteration": i, "x": i})
    with open(run.metrics_path, "ab") as f:
        f.write(b'{"iteration": 3, "x"')  # torn: fine while the run is not finished
    assert list(load_metrics(run.path)["iteration"]) == [1, 2]
    run.mark_finished(2, 2)
    with pytest.raises(RunDirError, match=r"finished run's metrics are damaged.*torn last line"):
        load_metrics(run.path)
    run.metrics_path.write_text('{"iteration": 1}\ngarbage\n{"iteration": 2}\n')
    with pytest.raises(RunDirError, match=r"metrics.jsonl:2: unreadable"):
        load_metrics(run.path)
    run.close()


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
    path = storage.save_figure(fig, tmp_path / "fig.png", dpi=50)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
    run.close()


def test_restart_drops_rows_and_tensorboard_events(tmp_path):
    run = RunDir.create(tmp_path / "run", CONFIG)
    run.append_metrics({"iteration": 1})
    storage.log_scalars(run.tensorboard_writer(), {"x": 1.0}, 1)
    run.restart()
    assert run.metrics_path.read_text() == "" and not run.tb_dir.exists()
    run.close()
