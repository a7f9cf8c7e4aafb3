"""Tests for checkpoints (rl.runs.checkpoints, RunDir's): keep the last n, fallback, safe load."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from rl.runs import files
from rl.runs.checkpoints import (
    CHECKPOINT_FORMAT,
    UnsafeCheckpointError,
    load_checkpoint_file,
    write_checkpoint_file,
)
from rl.runs.errors import RunDirError
from rl.runs.storage import RunDir
from tests.rl.runs.test_storage import CONFIG

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
    files.atomic_write_json(latest, {"iteration": 3, "file": "ckpt_00000003.pt"})
    data = run.checkpoint_path(3).read_bytes()
    run.checkpoint_path(3).write_bytes(data[: len(data) // 2])
    with pytest.warns(UserWarning, match="unloadable"):
        state, iteration = run.load_latest_checkpoint()
    assert (state, iteration) == ({"step": 2}, 2)

    # The pointer names a missing file, and the pointer itself may be garbage.
    files.atomic_write_json(latest, {"iteration": 9, "file": "ckpt_00000009.pt"})
    with pytest.warns(UserWarning):
        assert run.load_latest_checkpoint()[1] == 2
    latest.write_text("{not json")
    with pytest.warns(UserWarning):
        assert run.load_latest_checkpoint()[1] == 2

    # Hidden temp files of a killed writer are ignored.
    (run.checkpoint_dir / ".ckpt_00000004.pt.abc.tmp").write_bytes(b"junk")
    with pytest.warns(UserWarning):
        assert run.load_latest_checkpoint()[1] == 2


def test_written_checkpoint_file_reads_back_with_the_same_tensors_and_iteration(tmp_path):
    state = {"model": {"w": torch.arange(6.0).reshape(2, 3), "b": torch.zeros(3)},
             "step": 7, "lr": 2.5e-4}
    path = write_checkpoint_file(tmp_path / "sub" / "ckpt.pt", state, 7)
    assert path == tmp_path / "sub" / "ckpt.pt"
    assert [p.name for p in path.parent.iterdir()] == ["ckpt.pt"]  # no temp file left
    loaded, iteration = load_checkpoint_file(path)
    assert iteration == 7 and loaded["step"] == 7 and loaded["lr"] == 2.5e-4
    assert loaded["model"].keys() == state["model"].keys()
    for name, tensor in state["model"].items():
        assert torch.equal(loaded["model"][name], tensor)
    # The payload on disk is the documented format (docs/run-directory.md).
    raw = torch.load(path, weights_only=True)
    assert raw.keys() == {"format", "iteration", "state"} and raw["format"] == CHECKPOINT_FORMAT

    with pytest.raises(TypeError, match="numpy"):
        write_checkpoint_file(tmp_path / "bad.pt", {"x": np.float64(1.0)}, 1)
    assert not (tmp_path / "bad.pt").exists()


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
    with pytest.raises(UnsafeCheckpointError, match=r"refusing to load .*ckpt_00000001"):
        run.load_latest_checkpoint()
    assert not marker.exists()
    run.close()


def test_checkpoint_state_must_be_plain_and_have_the_required_keys(tmp_path):
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


def test_a_checkpoint_of_another_run_or_under_another_name_is_refused(tmp_path):
    """#24 item 12: a file copied in from elsewhere used to be continued as this run's (an
    iteration 85 in ckpt_31: the resumed run then ended above its budget)."""
    other_config = {**CONFIG, "net": {"width": 32}}
    with RunDir.create(tmp_path / "other", other_config) as other:
        other.save_checkpoint({"w": torch.ones(1)}, 31)
        other.save_checkpoint({"w": torch.ones(1)}, 85)
    with RunDir.create(tmp_path / "run", CONFIG) as run:
        run.save_checkpoint({"w": torch.zeros(1)}, 30)
    source, target = tmp_path / "other" / "checkpoints", tmp_path / "run" / "checkpoints"
    (target / "latest.json").write_text(json.dumps({"iteration": 31, "file": "ckpt_00000031.pt"}))

    os.replace(source / "ckpt_00000085.pt", target / "ckpt_00000031.pt")
    with RunDir.open_for_resume(tmp_path / "run", CONFIG) as run, \
            pytest.raises(RunDirError, match="holds iteration 85 but is named for iteration 31"):
        run.load_latest_checkpoint()

    os.replace(source / "ckpt_00000031.pt", target / "ckpt_00000031.pt")
    with RunDir.open_for_resume(tmp_path / "run", CONFIG) as run, \
            pytest.raises(RunDirError, match=r"belongs to another run: .* in net\.width"):
        run.load_latest_checkpoint()
    # Keys a resume may change (its budget, say) do not make a checkpoint foreign.
    (target / "ckpt_00000031.pt").unlink()
    longer = {**CONFIG, "total_steps": 10**9}
    with RunDir.open_for_resume(tmp_path / "run", longer, may_differ=("total_steps",)) as run:
        assert run.load_latest_checkpoint()[1] == 30
