"""``rlscale bench flops``: the PPO update's achieved FLOP rate against the core's matrix
product rate, and what ``torch.compile`` and bfloat16 autocast do to it (docs/benchmarks.md).

The update is the trainer's (``agents.ppo_update`` on a network prepared by the loop's
``prepare_network``: channels-last on the CPU, bf16 autocast where asked) on a synthetic
rollout of the env's observation shape. FLOPs are torch's count of the matrix products and
convolutions of one update, forward and backward (``torch.utils.flop_counter``; 2 per
multiply-add; elementwise ops and Adam not counted). The peak is measured in the same run:
an fp32 ``N x N`` matrix product at the same thread count.
"""

from __future__ import annotations

import copy
import statistics
import time

import gymnasium as gym
import numpy as np
import pandas as pd
import torch
from torch.utils.flop_counter import FlopCounterMode

import envs
from agents import PPOBatch, PPOConfig, build_actor_critic, make_optimizer, ppo_update
from rl.bench.common import interleaved
from rl.bench.configs import FlopsBenchConfig
from rl.bench.ppo import torch_threads
from rl.train.config import PRESETS, TrainConfig, preset_for
from rl.train.loop import prepare_network


def env_spaces(env_id: str) -> tuple[gym.Space, gym.Space]:
    """The observation and action spaces of one copy of ``env_id`` (its default backend)."""
    vec = envs.make_vec(env_id, 1, 0)
    try:
        return vec.single_observation_space, vec.single_action_space
    finally:
        vec.close()


def synthetic_batch(obs_space: gym.Space, num_actions: int, size: int,
                    generator: torch.Generator) -> PPOBatch:
    """A rollout-sized PPO batch: uniform observations in the space's range (standard normal
    where it is unbounded), random actions,
    old log-probs of a uniform policy, standard-normal advantages, returns and values."""
    low, high = float(np.min(obs_space.low)), float(np.max(obs_space.high))
    shape = (size, *obs_space.shape)
    if np.issubdtype(obs_space.dtype, np.integer):
        obs = torch.randint(int(low), int(high) + 1, shape, generator=generator,
                            dtype=torch.uint8 if obs_space.dtype == np.uint8 else torch.int64)
    elif np.isfinite(low) and np.isfinite(high):
        obs = torch.rand(shape, generator=generator) * (high - low) + low
    else:  # unbounded (CartPole's velocities): standard normal
        obs = torch.randn(shape, generator=generator)
    normal = lambda: torch.randn(size, generator=generator)  # noqa: E731
    return PPOBatch(obs=obs, actions=torch.randint(0, num_actions, (size,), generator=generator),
                    logprobs=torch.full((size,), -float(np.log(num_actions))),
                    values=normal(), advantages=normal(), returns=normal(),
                    mask=torch.ones(size))


def count_flops(fn) -> int:
    """Matrix-product and convolution FLOPs of ``fn()`` (forward and backward)."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def matmul_gflops(size: int, repeats: int = 5) -> float:
    """fp32 ``size x size`` matrix product rate in GFLOP/s (best of ``repeats``)."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)  # warm-up: thread pool, caches
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2.0 * size**3 / best / 1e9


class _Arm:
    """One way of running the update: its own copy of the network, optimizer and batch."""

    def __init__(self, arm: str, model: torch.nn.Module, batch: PPOBatch, ppo: PPOConfig,
                 cfg: FlopsBenchConfig):
        self.ppo, self.batch = ppo, batch
        self.model = copy.deepcopy(model)
        train_cfg = TrainConfig(env=cfg.env, cpu_bf16=arm == "bf16", compile=arm == "compile")
        self.net, self.autocast = prepare_network(train_cfg, self.model, torch.device("cpu"))
        self.optimizer = make_optimizer(self.model, ppo)
        self.generator = torch.Generator().manual_seed(cfg.seed)

    def update(self) -> dict[str, float]:
        with self.autocast:
            return ppo_update(self.net, self.optimizer, self.batch, self.ppo, self.generator)

    def seconds(self, updates: int) -> float:
        start = time.perf_counter()
        for _ in range(updates):
            self.update()
        return (time.perf_counter() - start) / updates


def bench_flops(cfg: FlopsBenchConfig, progress=None) -> pd.DataFrame:
    cfg.validate()
    arms = cfg.arm_names()
    obs_space, action_space = env_spaces(cfg.env)
    train_changes, ppo_changes = PRESETS[preset_for(cfg.env)]
    ppo = PPOConfig(**ppo_changes)
    size = cfg.num_envs * cfg.num_steps
    with torch_threads(cfg.threads):
        torch.manual_seed(cfg.seed)
        model = build_actor_critic(obs_space, action_space, train_changes["network"])
        batch = synthetic_batch(obs_space, int(action_space.n), size,
                                torch.Generator().manual_seed(cfg.seed))
        built = {}
        for arm in arms:
            built[arm] = _Arm(arm, model, batch, ppo, cfg)
            built[arm].update()  # warm-up (and compilation)
            if progress is not None:
                progress()
        # Counted on the eager network: compiled graphs hide their ops from the counter,
        # and the arms do the same products.
        counter_arm = _Arm("eager", model, batch, ppo, cfg)
        update_flops = count_flops(counter_arm.update)
        act_obs = batch.obs[: cfg.num_envs]
        with torch.no_grad():
            step_flops = count_flops(lambda: counter_arm.net.act(act_obs)) / cfg.num_envs
        peak = statistics.median(matmul_gflops(cfg.matmul_size) for _ in range(3))
        samples = interleaved([{"arm": a} for a in arms],
                              lambda r: built[r["arm"]].seconds(cfg.updates), cfg.repeats,
                              progress)
        threads = torch.get_num_threads()
    per_step = update_flops / size + step_flops
    rows = []
    for arm, secs in zip(arms, samples, strict=True):
        s = statistics.median(secs)
        gflops = update_flops / s / 1e9
        rows.append({"env": cfg.env, "rollout": f"{cfg.num_envs}x{cfg.num_steps}", "arm": arm,
                     "threads": threads, "update_s": s, "min_s": min(secs), "max_s": max(secs),
                     "update_gflop": update_flops / 1e9, "gflops_per_s": gflops,
                     "matmul_gflops_per_s": peak, "fraction_of_matmul": gflops / peak,
                     "mflop_per_agent_step": per_step / 1e6, "repeats": len(secs)})
    df = pd.DataFrame(rows)
    if "eager" in arms:
        eager = float(df.loc[df.arm == "eager", "update_s"].iloc[0])
        df["speedup_vs_eager"] = eager / df["update_s"]
    df.attrs["note"] = (
        f"FLOPs: matrix products and convolutions of one update ({ppo.num_epochs} epochs x "
        f"{ppo.num_minibatches} minibatches of a {size}-step rollout) forward and backward, "
        f"plus one acting forward pass per agent step ({step_flops / 1e6:.1f} MFLOP); peak: an "
        f"fp32 {cfg.matmul_size}x{cfg.matmul_size} matrix product at {threads} thread(s).")
    return df
