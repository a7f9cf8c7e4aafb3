"""``rlscale bench ppo``: end-to-end PPO throughput, ours against stable-baselines3.

Our PPO and stable-baselines3's PPO on identical PPO settings (the reference Atari
settings: 4 epochs x 4 minibatches), each on its own standard environment stack (ours:
``envs.make_vec`` with the default backend, i.e. gymnasium's numpy-vectorized CartPole
(``gym-vector``) and envpool for Atari; SB3: what an SB3 user runs, its ``make_vec_env`` /
``make_atari_env``, a ``DummyVecEnv`` of ``gym.make`` envs stepped one by one in Python).
Our trainer's CPU defaults apply (channels-last convolutions; ``--no-channels-last-memory``
measures without them). Throughput = agent steps / wall time over whole PPO iterations
(rollout, update, per-iteration logging), after one untimed warm-up iteration. Ours is timed from
the ``wall_time_s`` of its metrics rows, so the checkpoint the trainer always writes after
its last iteration (SB3 writes none) is not counted. ``threads`` sets torch's CPU threads
for both implementations alike (``rlscale bench scaling`` is in ``rl/bench/scaling.py``).
"""

from __future__ import annotations

import contextlib
import statistics
import tempfile
import time
from dataclasses import fields

import pandas as pd
import torch

from agents import PPOConfig
from rl.bench.common import interleaved
from rl.bench.configs import PPOBenchConfig
from rl.peers.sb3 import make_sb3_env, sb3_ppo_model
from rl.train.config import TrainConfig
from rl.train.launch import train


@contextlib.contextmanager
def torch_threads(threads: int):
    """torch.set_num_threads(threads) inside the block (0: leave as is), restored after."""

    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        if threads:
            torch.set_num_threads(before)


def parse_configs(text: str) -> list[tuple[str, int, int]]:
    out = []
    for item in text.split(","):
        try:
            env, shape = item.strip().split(":")
            n, t = shape.lower().split("x")
            out.append((env, int(n), int(t)))
        except ValueError:
            raise ValueError(
                f"bad config {item!r}: use ENV:NUM_ENVSxNUM_STEPS, e.g. Pong:8x128"
            ) from None
    return out


def _ours(env: str, n: int, t: int, cfg: PPOBenchConfig) -> float:
    stamps: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        tc = TrainConfig(env=env, num_envs=n, num_steps=t, seed=cfg.seed, device=cfg.device,
                         total_agent_steps=n * t * (cfg.iterations + 1), run_dir=f"{tmp}/run",
                         checkpoint_every=10**9, cpu_bf16=cfg.cpu_bf16,
                         channels_last_memory=cfg.channels_last_memory, **_gns_off())
        # wall_time_s is taken when an iteration's row is made, before the final checkpoint.
        train(tc, PPOConfig(), on_iteration=lambda row: stamps.append(row["wall_time_s"]))
    return n * t * cfg.iterations / (stamps[-1] - stamps[0])


def _gns_off() -> dict:
    """Measure plain PPO: no noise-scale measurement, where the trainer has it."""

    return {"gns_every": 0} if "gns_every" in {f.name for f in fields(TrainConfig)} else {}


def _sb3(env: str, n: int, t: int, cfg: PPOBenchConfig) -> float:
    from stable_baselines3.common.callbacks import BaseCallback  # lazy: slow import, SB3 runs only

    train_cfg = TrainConfig(env=env, num_envs=n, num_steps=t, seed=cfg.seed)
    venv = make_sb3_env(train_cfg)
    model = sb3_ppo_model(venv, train_cfg, PPOConfig(), seed=cfg.seed, device=cfg.device)
    stamps: list[float] = []

    class Stamp(BaseCallback):
        def _on_step(self) -> bool:
            return True

        def _on_rollout_start(self) -> None:
            stamps.append(time.perf_counter())

    # iterations + 2 rollouts start; the timed span covers `iterations` whole iterations.
    model.learn(total_timesteps=n * t * (cfg.iterations + 2), callback=Stamp())
    venv.close()
    return n * t * cfg.iterations / (stamps[-1] - stamps[0])


IMPLS = {"ours": _ours, "sb3": _sb3}


def _default_threads() -> int:
    return torch.get_num_threads()


def bench_ppo(cfg: PPOBenchConfig, progress=None) -> pd.DataFrame:
    cfg.validate()
    impls = [i.strip() for i in cfg.impls.split(",") if i.strip()]
    unknown = sorted(set(impls) - set(IMPLS))
    if unknown:
        raise ValueError(f"unknown implementation(s) {unknown}; choose from {sorted(IMPLS)}")
    runs = [{"env": e, "num_envs": n, "num_steps": t, "impl": i}
            for e, n, t in parse_configs(cfg.configs) for i in impls]

    def measure(r: dict) -> float:
        with torch_threads(cfg.threads):
            return IMPLS[r["impl"]](r["env"], r["num_envs"], r["num_steps"], cfg)

    samples = interleaved(runs, measure, cfg.repeats, progress)
    threads = cfg.threads or _default_threads()
    options = ",".join(["cpu_bf16"] * cfg.cpu_bf16 + (
        [] if cfg.channels_last_memory is None
        else [f"channels_last_memory={cfg.channels_last_memory}"])) or "-"
    rows = [{**r, "options": options if r["impl"] == "ours" else "-", "threads": threads,
             "agent_steps_per_s": statistics.median(s), "min": min(s), "max": max(s),
             "repeats": len(s)} for r, s in zip(runs, samples, strict=True)]
    df = pd.DataFrame(rows)
    if {"ours", "sb3"} <= set(impls):
        key = ["env", "num_envs", "num_steps"]
        sb3 = df[df.impl == "sb3"].set_index(key)["agent_steps_per_s"]
        df["ratio_ours_to_sb3"] = [
            row.agent_steps_per_s / sb3.loc[(row.env, row.num_envs, row.num_steps)]
            if row.impl == "ours" else float("nan") for row in df.itertuples()]
    return df
