"""Tests for rl.runs.files: atomic writes, and a crash mid-write keeping the old file."""

from __future__ import annotations

import json
import os

import pytest
import torch

from rl.runs import files
from rl.runs.storage import RunDir
from tests.rl.runs.test_storage import CONFIG

# --------------------------------------------------------------------------- atomic writes


def test_atomic_write_roundtrip(tmp_path):
    files.atomic_write_json(tmp_path / "a.json", {"b": 1, "a": [1, 2]})
    text = (tmp_path / "a.json").read_text()
    assert text.index('"a"') < text.index('"b"')  # sorted keys
    assert json.loads(text) == {"a": [1, 2], "b": 1}
    files.atomic_write_text(tmp_path / "sub" / "t.txt", "héllo")
    assert (tmp_path / "sub" / "t.txt").read_text(encoding="utf-8") == "héllo"
    files.atomic_write_bytes(tmp_path / "b.bin", b"\x00\x01")
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"


def test_atomic_write_crash_keeps_old_file(tmp_path, monkeypatch):
    target = tmp_path / "status.json"
    files.atomic_write_json(target, {"state": "old"})

    def boom(src, dst):
        assert os.path.exists(src)  # the temp file was written before the "crash"
        raise OSError("simulated crash before rename")

    monkeypatch.setattr(files.os, "replace", boom)
    with pytest.raises(OSError, match="simulated crash"):
        files.atomic_write_json(target, {"state": "new"})
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
