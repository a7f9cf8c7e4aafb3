"""Golden runs: short CartPole runs whose metrics rows must not change under a refactoring.

Each case trains a few PPO iterations (fixed seed, one torch thread, the noise scale measured
every iteration) and compares every row of metrics.jsonl, every column but the timing ones,
with ``golden/<case>.json``, written by this test at the commit that set the behaviour:
integers, flags and column names exactly, floats to a relative 1e-9. A difference means the
loop computes something else than it did. Only when a change is meant to alter the numbers,
regenerate with ``RLSCALE_UPDATE_GOLDEN=1 pytest tests/rl/train/test_golden.py`` and say why
in the commit.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest

from agents import PPOConfig
from rl.measure import warmup
from rl.train.config import PRESETS, TIMING_COLUMNS, AdaptiveConfig, ParallelConfig, TrainConfig
from rl.train.launch import train

GOLDEN = Path(__file__).with_name("golden")
UPDATE = os.environ.get("RLSCALE_UPDATE_GOLDEN") == "1"
CLASSIC_TRAIN, CLASSIC_PPO = PRESETS["classic"]
REL = 1e-9

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def configs(run_dir: Path, iterations: int, world: int = 1) -> tuple[TrainConfig, PPOConfig]:
    num_envs, num_steps = 4, 32
    cfg = TrainConfig(env="CartPole", **{
        **CLASSIC_TRAIN, "num_envs": num_envs, "num_steps": num_steps, "seed": 7,
        "total_agent_steps": world * num_envs * num_steps * iterations, "gns_every": 1,
        "gns_groups": 4, "checkpoint_every": 3, "torch_threads": 1, "run_dir": str(run_dir)})
    return cfg, PPOConfig(**{**CLASSIC_PPO, "num_epochs": 4, "num_minibatches": 2})


def rows(run_dir: Path) -> list[dict]:
    """metrics.jsonl's rows without the columns that measure time."""
    with open(run_dir / "metrics.jsonl") as f:
        return [{k: v for k, v in json.loads(line).items()
                 if k not in TIMING_COLUMNS and not k.endswith("/seconds")} for line in f]


def same(a, b) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        if not (isinstance(a, (int, float)) and isinstance(b, (int, float))):
            return False
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return a == pytest.approx(b, rel=REL, abs=1e-12)
    return a == b and type(a) is type(b)


def check(case: str, got: list[dict]) -> None:
    path = GOLDEN / f"{case}.json"
    if UPDATE:
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(json.dumps(got, indent=1) + "\n")
    want = json.loads(path.read_text())
    assert len(got) == len(want), f"{case}: {len(got)} rows, golden {len(want)}"
    for i, (g, w) in enumerate(zip(got, want, strict=True), start=1):
        assert list(g) == list(w), f"{case} row {i}: columns {list(g)} != golden {list(w)}"
        differ = {k: (g[k], w[k]) for k in w if not same(g[k], w[k])}
        assert not differ, f"{case} row {i}: (got, golden) {differ}"


def test_fixed_batch_rows_match_the_golden_file(tmp_path):
    cfg, ppo = configs(tmp_path / "run", iterations=5)
    result = train(cfg, ppo)
    assert result.iterations == 5
    got = rows(tmp_path / "run")
    assert all(math.isfinite(r["gns/total/g2"]) for r in got)  # measured every iteration
    check("fixed", got)


def test_adaptive_batch_rows_match_the_golden_file(tmp_path, monkeypatch):
    # No noise-scale warm-up and a given scale c: the schedule acts within a few iterations.
    monkeypatch.setattr(warmup, "WARMUP_ITERATIONS", 1)
    cfg, ppo = configs(tmp_path / "run", iterations=12)
    adaptive = AdaptiveConfig(batch_schedule="adaptive", batch_beta=0.0, batch_warmup=1,
                              batch_scale=100.0, batch_lr_rule="sqrt")
    train(cfg, ppo, adaptive=adaptive)
    got = rows(tmp_path / "run")
    assert len({r["rollout_batch_size"] for r in got}) > 1, "the batch never changed"
    check("adaptive", got)


@pytest.mark.slow
def test_data_parallel_rows_match_the_golden_file(tmp_path):
    cfg, ppo = configs(tmp_path / "run", iterations=4, world=2)
    train(cfg, ppo, parallel=ParallelConfig(nproc=2))
    got = rows(tmp_path / "run")
    assert all(r["dp/params_in_sync"] == 1.0 for r in got)
    check("data_parallel", got)
