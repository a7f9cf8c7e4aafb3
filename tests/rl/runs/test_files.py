"""Tests for rl.runs.files: atomic writes, and a crash mid-write keeping the old file."""

from __future__ import annotations

import errno
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


def test_files_written_together_are_never_mixed_old_with_new(tmp_path, monkeypatch):
    """An interruption between the two writes leaves the first new file and no second one,
    never the new first beside the old second (#24 item 3: fit.csv beside fit_per_batch.csv)."""
    first, second = tmp_path / "fit.csv", tmp_path / "fit_per_batch.csv"
    files.atomic_write_texts({first: "old fit\n", second: "old per batch\n"})
    assert (first.read_text(), second.read_text()) == ("old fit\n", "old per batch\n")
    real = files.atomic_write_text
    written = []

    def interrupted_after_one(path, text):
        if written:
            raise KeyboardInterrupt
        written.append(path)
        real(path, text)

    monkeypatch.setattr(files, "atomic_write_text", interrupted_after_one)
    with pytest.raises(KeyboardInterrupt):
        files.atomic_write_texts({first: "new fit\n", second: "new per batch\n"})
    assert first.read_text() == "new fit\n" and not second.exists()


def test_a_failed_write_names_its_file(tmp_path):
    """write() and fsync() errors carry no file name; the atomic writers add it (#24 item 3)."""
    target = tmp_path / "checkpoint.pt"
    with pytest.raises(OSError) as caught, files.atomic_file(target) as f:
        f.write(b"x")
        raise OSError(errno.ENOSPC, "No space left on device")
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(target)
    assert not target.exists() and list(tmp_path.iterdir()) == []
    already = OSError(errno.EACCES, "Permission denied", "/elsewhere")
    assert files.with_filename(already, target) is already
