"""``rlscale bench scaling``: does the learner keep up with the environments as num_envs grows?

See docs/benchmarks.md for the full description.
"""

from __future__ import annotations

import statistics
import tempfile
import time

import numpy as np
import pandas as pd
import torch

import envs
from agents import PPOConfig, build_actor_critic
from envs.atari import envpool_options, envpool_task, get_preset
from rl.bench.common import interleaved
from rl.bench.configs import ScalingBenchConfig
from rl.bench.envs import EnvBenchConfig, time_env
from rl.bench.ppo import torch_threads
from rl.train.config import TrainConfig
from rl.train.launch import train


def _env_only(env: str, n: int, cfg: ScalingBenchConfig) -> float:
    steps = cfg.num_steps * cfg.iterations
    bench = EnvBenchConfig(env=env, steps=steps, warmup_steps=min(20, steps), seed=cfg.seed)
    return time_env(env, cfg.backend, n, bench)


def _end_to_end(env: str, n: int, cfg: ScalingBenchConfig, ppo: PPOConfig | None = None) -> dict:
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        tc = TrainConfig(env=env, num_envs=n, num_steps=cfg.num_steps, seed=cfg.seed,
                         backend=cfg.backend, device=cfg.device,
                         total_agent_steps=n * cfg.num_steps * (cfg.iterations + 1),
                         run_dir=f"{tmp}/run", checkpoint_every=10**9, gns_every=0,
                         cpu_bf16=cfg.cpu_bf16, channels_last_memory=cfg.channels_last_memory)
        train(tc, ppo or PPOConfig(), on_iteration=rows.append)
    timed = rows[1:]
    batch = n * cfg.num_steps
    rollout_s = sum(r["rollout_s"] for r in timed)
    update_s = sum(r["update_s"] for r in timed)
    return {
        "e2e_sps": batch * len(timed) / (rows[-1]["wall_time_s"] - rows[0]["wall_time_s"]),
        "rollout_sps": batch * len(timed) / rollout_s,
        "update_share": update_s / (rollout_s + update_s),
    }


def _overlap(env: str, n: int, mode: str, cfg: ScalingBenchConfig) -> float:
    """Agent steps/s of inference + envpool stepping, synchronous or asynchronous."""
    import envpool  # lazy: optional backend

    entry = envs.resolve(env)
    if entry.kind != "atari":
        raise ValueError(f"overlap_probe needs an Atari game (envpool), not {env!r}")
    batch = n if mode == "sync" else max(n // 2, 1)
    pool = envpool.make(envpool_task(entry.target), env_type="gymnasium", num_envs=n,
                        batch_size=batch, seed=cfg.seed, **envpool_options(get_preset(None)))
    device = torch.device(cfg.device)
    torch.manual_seed(cfg.seed)
    model = build_actor_critic(pool.observation_space, pool.action_space).to(device)
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    steps = cfg.num_steps * cfg.iterations * n // batch  # same agent steps in both modes

    def act(obs: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            action, _, _ = model.act(torch.from_numpy(obs).to(device), generator=gen)
        return action.cpu().numpy().astype(np.int32)

    try:
        if mode == "sync":
            obs, _ = pool.reset()
            step = lambda: pool.step(act(obs))[0]  # noqa: E731
        else:
            pool.async_reset()

            def step():
                obs, *_, info = pool.recv()
                pool.send(act(obs), info["env_id"])
                return obs
        for _ in range(min(10, steps)):
            obs = step()
        start = time.perf_counter()
        for _ in range(steps):
            obs = step()
        elapsed = time.perf_counter() - start
    finally:
        pool.close()
    return steps * batch / elapsed


def bench_scaling(cfg: ScalingBenchConfig, progress=None, *,
                  ppo: PPOConfig | None = None) -> pd.DataFrame:
    """The table of ``rlscale bench scaling``; ``ppo``: the PPO settings of the end-to-end
    runs (default: ``PPOConfig()``, the Atari reference settings)."""
    cfg.validate()
    names = [e.strip() for e in cfg.envs.split(",") if e.strip()]
    counts = cfg.env_counts()
    if not names or not counts:
        raise ValueError("bench scaling needs at least one environment and one num_envs")
    kinds = ["env_only", "e2e"] + (["sync", "async"] if cfg.overlap_probe else [])
    configs = [{"env": e, "num_envs": n, "kind": k} for e in names for n in counts
               for k in kinds]
    extra: dict[int, list[dict]] = {}

    def measure(c: dict) -> float:
        with torch_threads(cfg.threads):
            if c["kind"] == "env_only":
                return _env_only(c["env"], c["num_envs"], cfg)
            if c["kind"] == "e2e":
                out = _end_to_end(c["env"], c["num_envs"], cfg, ppo)
                extra.setdefault(id(c), []).append(out)
                return out["e2e_sps"]
            return _overlap(c["env"], c["num_envs"], c["kind"], cfg)

    samples = interleaved(configs, measure, cfg.repeats, progress)
    medians = {(c["env"], c["num_envs"], c["kind"]): statistics.median(s)
               for c, s in zip(configs, samples, strict=True)}
    spread = {(c["env"], c["num_envs"], c["kind"]): (min(s), max(s))
              for c, s in zip(configs, samples, strict=True)}
    by_e2e = {(c["env"], c["num_envs"]): extra[id(c)] for c in configs if c["kind"] == "e2e"}

    rows = []
    for env in names:
        entry = envs.resolve(env)
        backend = cfg.backend or envs.default_backend(entry.kind, entry.target)
        for n in counts:
            env_sps, e2e = medians[(env, n, "env_only")], medians[(env, n, "e2e")]
            runs = by_e2e[(env, n)]
            rollout = statistics.median(r["rollout_sps"] for r in runs)
            row = {
                "env": env, "backend": backend, "num_envs": n, "num_steps": cfg.num_steps,
                "batch": n * cfg.num_steps,
                "env_only_sps": env_sps,
                "e2e_sps": e2e,
                "e2e_min": spread[(env, n, "e2e")][0], "e2e_max": spread[(env, n, "e2e")][1],
                "rollout_sps": rollout,
                "update_share": statistics.median(r["update_share"] for r in runs),
                "ratio_e2e_to_env": e2e / env_sps,
                "ratio_rollout_to_env": rollout / env_sps,
            }
            if cfg.overlap_probe:
                sync, asyn = medians[(env, n, "sync")], medians[(env, n, "async")]
                row.update(sync_infer_sps=sync, async_infer_sps=asyn,
                           ratio_async_to_sync=asyn / sync)
            rows.append(row)
    return pd.DataFrame(rows)
