"""What every benchmark suite shares: interleaved repeats, the machine's description, the
results files.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import torch

from rl.runs.storage import atomic_write_json, atomic_write_text


def machine_info() -> dict:
    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    for pkg in ("envpool", "ale_py", "gymnasium", "stable_baselines3"):
        try:
            info[pkg] = __import__(pkg).__version__
        except Exception:
            info[pkg] = None
    return info


def interleaved(
    configs: list[dict], measure: Callable[[dict], float], repeats: int, progress=None
) -> list[list[float]]:
    """Run ``measure(config)`` ``repeats`` times per config, interleaving the configs."""
    samples: list[list[float]] = [[] for _ in configs]
    for _ in range(repeats):
        for i, config in enumerate(configs):
            samples[i].append(measure(config))
            if progress is not None:
                progress()
    return samples


def write_results(df: pd.DataFrame, out_dir: Path, suite: str, config) -> Path:
    """Write ``<suite>.csv`` and ``<suite>.json`` (config + machine) atomically."""

    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path = out_dir / f"{suite}.csv"
    atomic_write_text(csv_path, df.to_csv(index=False))
    meta = {
        "suite": suite,
        "config": vars(config),
        "machine": machine_info(),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    atomic_write_json(out_dir / f"{suite}.json", json.loads(json.dumps(meta, default=str)))
    return csv_path
