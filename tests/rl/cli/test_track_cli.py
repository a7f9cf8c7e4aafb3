"""``rlscale train --track``: Weights & Biases logging beside TensorBoard, offline by default,
optional (a clear error without wandb), its options refused without --track."""

from __future__ import annotations

import sys

import pytest

from rl.cli.app import main
from rl.train.config import TrackConfig

TINY = ["--env", "CartPole", "--num-envs", "2", "--num-steps", "16",
        "--total-agent-steps", "64", "--gns-every", "1", "--gns-groups", "2", "--quiet"]


@pytest.fixture
def wandb_offline(tmp_path, monkeypatch):
    """wandb imported (else skip), its files and settings in tmp_path, WANDB_MODE unset: the
    run must be offline by default, needing no network and no login."""
    wandb = pytest.importorskip("wandb", reason="wandb is not installed (pip install wandb)")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    for var in ("WANDB_DIR", "WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb-home"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.chdir(tmp_path)
    yield wandb
    wandb.teardown()  # stops the wandb service this process started


@pytest.mark.slow
def test_track_logs_the_grouped_tags_offline_into_the_run_directory(wandb_offline, tmp_path,
                                                                     one_torch_thread):
    run_dir = tmp_path / "run"
    assert main(["train", *TINY, "--track", "--run-dir", str(run_dir)]) == 0
    runs = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, "one offline W&B run in <run_dir>/wandb"
    records = list(runs[0].glob("run-*.wandb"))
    assert len(records) == 1
    data = records[0].read_bytes()
    for tag in ("charts/return_recent", "charts/agent_steps", "charts/sps",
                "losses/policy_loss", "losses/value_loss", "gns/total/g2",
                "gns/total/trace_sigma"):
        assert tag.encode() in data, f"{tag} was not logged"
    assert b"CartPole" in data  # the run's config went with it
    assert (run_dir / "tb").is_dir() and (run_dir / "metrics.jsonl").is_file()


def test_a_missing_wandb_is_one_line_naming_the_install(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb raises ImportError
    monkeypatch.chdir(tmp_path)
    assert main(["train", *TINY, "--track", "--run-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "pip install wandb" in err and "--track" in err
    assert not (tmp_path / "run").exists(), "refused before the run started"
    assert main(["train", *TINY, "--track", "--dry-run"]) == 2
    assert "pip install wandb" in capsys.readouterr().err


def test_wandb_options_without_track_are_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["train", *TINY, "--wandb-project", "mine"]) == 2
    assert "--wandb-project" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_the_mode_is_offline_unless_asked(monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    assert TrackConfig(track=True).resolved_mode() == "offline"
    monkeypatch.setenv("WANDB_MODE", "online")
    assert TrackConfig(track=True).resolved_mode() == "online"
    assert TrackConfig(track=True, wandb_mode="disabled").resolved_mode() == "disabled"
    monkeypatch.setenv("WANDB_MODE", "typo")
    with pytest.raises(ValueError, match="WANDB_MODE must be one of offline, online"):
        TrackConfig(track=True).validate()
    with pytest.raises(ValueError, match="--wandb-project"):
        TrackConfig(track=True, wandb_project=" ").validate()
