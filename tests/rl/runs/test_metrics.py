"""Tests for rl.runs.metrics: metrics.jsonl rows, torn and damaged lines, TensorBoard scalars."""

from __future__ import annotations

import json
import math
import time
import warnings

import pandas as pd
import pytest
import torch

from rl.runs import metrics
from rl.runs.errors import RunDirError
from rl.runs.metrics import load_metrics
from rl.runs.storage import RunDir
from tests.rl.runs.test_storage import CONFIG

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
        assert metrics.log_scalars(writer, row, step) == 3  # iteration, loss/policy, gns
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
        metrics.log_scalars(w, {"loss/policy": 30.0}, 3)
    _, policy = _scalars(run.tb_dir, "loss/policy")
    assert policy == {1: 1.0, 2: 2.0, 3: 30.0}


def test_tensorboard_tags_are_grouped_into_charts_losses_and_their_own_groups(tmp_path):
    run = RunDir.create(tmp_path / "run", CONFIG)
    row = {"iteration": 1, "return_recent": 12.5, "sps": 900.0, "policy_loss": 0.1,
           "value_loss": 2.0, "gns/total/g2": 3.0, "adaptive/b_simple": 40.0}
    assert metrics.log_scalars(run.tensorboard_writer(), row, 64) == len(row)
    run.close()
    acc, _ = _scalars(run.tb_dir, "charts/return_recent")
    assert set(acc.Tags()["scalars"]) == {
        "charts/iteration", "charts/return_recent", "charts/sps", "losses/policy_loss",
        "losses/value_loss", "gns/total/g2", "adaptive/b_simple"}


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
