"""``rlscale bench gns``: the wall-time overhead of measuring the noise scale during PPO.

See docs/benchmarks.md for the full description.
"""

from __future__ import annotations

import statistics
import tempfile

import pandas as pd

from agents import PPOConfig
from rl.bench.common import interleaved
from rl.bench.configs import GNSBenchConfig
from rl.runs.metrics import load_metrics
from rl.train.config import TrainConfig
from rl.train.launch import train


def _cadences(cfg: GNSBenchConfig) -> list[int]:
    out = cfg.gns_everies()
    if 0 not in out:
        raise ValueError("bench gns needs cadence 0 (measurement off) as its reference")
    return out


def _time_run(env: str, iterations: int, every: int, cfg: GNSBenchConfig) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        tc = TrainConfig(env=env, num_envs=cfg.num_envs, num_steps=cfg.num_steps,
                         total_agent_steps=iterations * cfg.num_envs * cfg.num_steps,
                         seed=cfg.seed, device=cfg.device, run_dir=tmp,
                         checkpoint_every=iterations, gns_every=every,
                         gns_groups=cfg.gns_groups)
        train(tc, PPOConfig())
        df = load_metrics(tmp)
    gns_s = df["gns/seconds"].dropna() if "gns/seconds" in df else pd.Series([], dtype=float)
    return {"loop_s": float(df["wall_time_s"].iloc[-1]), "measured": len(gns_s),
            "gns_s": float(gns_s.mean()) if len(gns_s) else float("nan")}


def bench_gns(cfg: GNSBenchConfig, progress=None) -> pd.DataFrame:
    cfg.validate()
    env_names = [e.strip() for e in cfg.envs.split(",") if e.strip()]
    iters = cfg.iteration_counts()
    if len(iters) != len(env_names):
        raise ValueError(f"give one iteration count per environment: envs={cfg.envs!r}, "
                         f"iterations={cfg.iterations!r}")
    cadences = _cadences(cfg)
    configs = [{"env": e, "iterations": n, "gns_every": c}
               for e, n in zip(env_names, iters, strict=True) for c in cadences]
    results: dict[int, list[dict]] = {}

    def run(config: dict) -> float:
        out = _time_run(config["env"], config["iterations"], config["gns_every"], cfg)
        results.setdefault(id(config), []).append(out)
        return out["loop_s"]

    samples = interleaved(configs, run, cfg.repeats, progress)
    batch = cfg.num_envs * cfg.num_steps
    rows = []
    for config, s in zip(configs, samples, strict=True):
        runs = results[id(config)]
        gns_s = [r["gns_s"] for r in runs if r["measured"]]
        rows.append({
            **config,
            "measured": runs[0]["measured"],
            "loop_s": statistics.median(s),
            "min": min(s),
            "max": max(s),
            "s_per_iteration": statistics.median(s) / config["iterations"],
            "gns_s": statistics.median(gns_s) if gns_s else float("nan"),
            "repeats": len(s),
        })
    df = pd.DataFrame(rows)
    off = df[df.gns_every == 0].set_index("env")
    df["ratio_to_off"] = df.loop_s / df.env.map(off["loop_s"])
    every = df.gns_every.where(df.gns_every > 0)
    df["overhead_at_cadence"] = df.gns_s / (every * df.env.map(off["s_per_iteration"]))
    df["measurements_per_1M"] = 1e6 / (batch * every)
    return df
