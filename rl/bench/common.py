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

from rl.runs.files import atomic_write_json, atomic_write_text


def cpu_description(cpuinfo: str | None = None) -> dict:
    """The CPU's model name, family/model numbers and bf16 hardware, from /proc/cpuinfo.

    "AMD EPYC" alone names several generations, hence the family and model. ``bf16`` lists
    the bfloat16 instruction sets present (amx_bf16, avx512_bf16): the CPUs where
    ``--cpu-bf16`` can pay off.
    """
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return {"cpu_model": platform.processor() or None, "bf16": None}
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        if not line.strip():
            break  # the first processor describes them all
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    name = fields.get("model name") or platform.processor() or "unknown CPU"
    if "cpu family" in fields and "model" in fields:
        name += f" (family {fields['cpu family']}, model {fields['model']})"
    flags = set(fields.get("flags", "").split())
    return {"cpu_model": name, "bf16": sorted(flags & {"amx_bf16", "avx512_bf16"})}


def machine_info() -> dict:
    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        **cpu_description(),
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


def check_ints(cfg, positive: tuple[str, ...] = (), nonnegative: tuple[str, ...] = ()) -> None:
    """ValueError naming the first of these fields of ``cfg`` that is not a positive (or
    a >= 0) integer."""
    for names, low, what in ((positive, 1, "a positive integer"),
                             (nonnegative, 0, "an integer >= 0")):
        for name in names:
            v = getattr(cfg, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise ValueError(f"{name} must be {what}, got {v!r}")


def int_list(cfg, name: str, example: str) -> list[int]:
    """The positive integers of ``cfg``'s comma-separated text field ``name``; ValueError
    naming it if there are none or one is not a positive integer."""
    text = getattr(cfg, name)
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise ValueError(f"{name} must be comma-separated positive integers (e.g. {example}), "
                         f"got {text!r}")
    return values


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
