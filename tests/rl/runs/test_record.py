"""Tests for rl.runs.record: a run directory read as data, with clear errors."""

from __future__ import annotations

import json

import pytest

from rl.runs.errors import RunDirError
from rl.runs.metrics import LOSS_COLUMNS, OBJECTIVE_TERMS
from rl.runs.record import (
    RunRecord,
    RunStatus,
    has_config,
    has_metrics,
    load_run_metrics,
    metrics_file,
    peek_config,
    peek_status,
    read_config,
)
from rl.runs.storage import RunDir
from tests.rl.runs.test_storage import CONFIG


def test_open_reads_config_status_and_metrics(tmp_path):
    with RunDir.create(tmp_path / "run", CONFIG) as run:
        run.append_metrics({"iteration": 1, "agent_steps": 8})
        run.mark_finished(1, 8, "budget spent")
    record = RunRecord.open(tmp_path / "run")
    assert record.config == RunDir(tmp_path / "run").load_config()
    assert record.status.state == "finished" and record.status.finished
    assert (record.status.iteration, record.status.agent_steps) == (1, 8)
    assert record.status.message == "budget spent" and record.state == "finished"
    assert record.has_metrics() and list(record.metrics()["agent_steps"]) == [8]
    assert peek_status(tmp_path / "run") == record.status
    assert peek_config(tmp_path / "run") == record.config


def test_a_run_without_status_is_pending(tmp_path):
    RunDir.create(tmp_path / "run", CONFIG).close()
    record = RunRecord.open(tmp_path / "run")
    assert record.status is None and record.state == "pending"
    assert not record.has_metrics() and record.metrics().empty
    assert has_config(tmp_path / "run") and not has_config(tmp_path)
    assert record.section("nope") == {}


@pytest.mark.parametrize("text, words", [
    (None, "config.json is missing"),
    ("{not json", "config.json is damaged"),
    ("[1, 2]", "not an object"),
])
def test_open_names_the_file_and_the_fix(tmp_path, text, words):
    tmp_path.joinpath("run").mkdir()
    if text is not None:
        (tmp_path / "run" / "config.json").write_text(text)
    with pytest.raises(RunDirError, match=words) as err:
        RunRecord.open(tmp_path / "run")
    assert "--run-dir" in str(err.value)
    assert peek_config(tmp_path / "run") is None


def test_a_damaged_status_is_an_error_naming_it(tmp_path):
    RunDir.create(tmp_path / "run", CONFIG).close()
    (tmp_path / "run" / "status.json").write_text('{"state": "runn')
    with pytest.raises(RunDirError, match="status.json is damaged.*Delete it"):
        RunRecord.open(tmp_path / "run")
    assert peek_status(tmp_path / "run") is None
    (tmp_path / "run" / "status.json").write_text('{"state": "bogus"}')
    with pytest.raises(RunDirError, match="state 'bogus'"):
        RunRecord.open(tmp_path / "run")


def test_not_a_folder(tmp_path):
    with pytest.raises(RunDirError, match="not a run directory"):
        RunRecord.open(tmp_path / "missing")


def test_status_from_json_defaults():
    assert RunStatus.from_json({}) == RunStatus()
    assert RunStatus.from_json({"state": "failed", "message": 3}).message == "3"
    with pytest.raises(ValueError):
        RunStatus.from_json([])


def test_load_run_metrics_without_a_file_is_empty(tmp_path):
    assert load_run_metrics(tmp_path).empty and not has_metrics(tmp_path)
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"iteration": 2}) + "\n")
    assert list(load_run_metrics(tmp_path)["iteration"]) == [2]


def test_one_list_of_loss_terms():
    assert OBJECTIVE_TERMS == ("policy_loss", "value_loss", "entropy")
    assert set(OBJECTIVE_TERMS) <= set(LOSS_COLUMNS)


def test_read_config_is_strict_and_metrics_file_names_the_path(tmp_path):
    with pytest.raises(RunDirError, match="config.json is missing"):
        read_config(tmp_path)
    (tmp_path / "config.json").write_text('{"train": {"env": "CartPole"}}')
    assert read_config(tmp_path) == {"train": {"env": "CartPole"}}
    assert metrics_file(tmp_path) == tmp_path / "metrics.jsonl"
