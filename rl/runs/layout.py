"""The names of the files and folders in a run directory (docs/run-directory.md)."""

from __future__ import annotations

__all__ = [
    "CHECKPOINT_DIR",
    "CONFIG_FILE",
    "LATEST_FILE",
    "LOCK_FILE",
    "METRICS_FILE",
    "STATUS_FILE",
    "TB_DIR",
]

CONFIG_FILE = "config.json"
STATUS_FILE = "status.json"
METRICS_FILE = "metrics.jsonl"
CHECKPOINT_DIR = "checkpoints"
LATEST_FILE = "latest.json"
TB_DIR = "tb"
LOCK_FILE = ".lock"
