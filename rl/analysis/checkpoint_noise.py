"""The noise scale at saved checkpoints, on fresh rollouts larger than the training batch.

The trainer's own measurement (``rl.measure.ppo_noise``) splits the training rollout, so its
big batch is the rollout batch size; where B_simple sits far above it, single estimates are
mostly noise. Here a checkpoint's policy collects ``repeats`` fresh rollouts (after discarded
warm-up rollouts, so that states come from inside games and not only from their starts), each
split into ``groups`` along the environment axis as in training, all at the checkpoint's
parameters. B_simple is the ratio of the means over the repeats, with its Fieller interval.
Method and cost: docs/noise-scale.md ("Measuring above the training batch").
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import torch
from torch import nn

import envs
from agents import PPOConfig
from rl.analysis.configs import CheckpointNoiseConfig
from rl.measure.gns import ratio_interval
from rl.measure.ppo_noise import TERMS, measure_rollout, plan_split, ppo_gns_loss, rollout_groups
from rl.runs.files import atomic_write_json, atomic_write_text
from rl.runs.metrics import load_metrics
from rl.runs.policy import load_policy
from rl.runs.storage import RunDir
from rl.train.gae import compute_gae
from rl.train.rollout import RolloutBuffer, collect, to_device

__all__ = ["CheckpointNoiseConfig", "checkpoint_files", "measure_policy_noise",
           "measurement_rollout", "run_checkpoint_noise", "summarize"]

_CKPT = re.compile(r"^ckpt_(\d+)\.pt$")


def checkpoint_files(folder: str | Path) -> list[tuple[int, Path]]:
    """(iteration, path) of the ``ckpt_<iteration>.pt`` files in ``folder``, by iteration."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder of checkpoints")
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _CKPT.match(p.name))]
    return sorted(found)


def measurement_rollout(env, model: nn.Module, buffer: RolloutBuffer, next_obs, generator,
                        device: torch.device, ppo: PPOConfig):
    """Play one rollout into ``buffer`` and compute its GAE: (next_obs, fields for
    ``rollout_groups``, advantages, mask), all (num_steps, num_envs, ...)."""
    next_obs, next_value, _ = collect(env, model, buffer, next_obs, generator, device)
    adv, returns, mask = compute_gae(buffer.rewards, buffer.values, next_value,
                                     buffer.terminated, buffer.truncated, buffer.autoreset,
                                     ppo.gamma, ppo.gae_lambda)
    fields = {"obs": buffer.obs, "actions": buffer.actions, "logprobs": buffer.logprobs,
              "values": buffer.values, "returns": returns}
    return next_obs, fields, adv, mask


def measure_policy_noise(model: nn.Module, env, ppo: PPOConfig, cfg: CheckpointNoiseConfig,
                         ) -> list[dict[str, float]]:
    """One row per repeat and term (repeat, term, g2, trace_sigma, b_simple) for ``model`` on
    fresh rollouts of ``env`` (reset here with ``cfg.seed``). The model is not changed."""
    device = torch.device(cfg.device)
    split = plan_split(cfg.num_envs, cfg.num_steps, cfg.groups)
    obs, _ = env.reset(seed=cfg.seed)
    next_obs = to_device(obs, device)
    buffer = RolloutBuffer(cfg.num_steps, cfg.num_envs, next_obs, device)
    generator = torch.Generator(device=device).manual_seed(cfg.seed)
    for _ in range(cfg.warmup_rollouts):
        next_obs, _, _ = collect(env, model, buffer, next_obs, generator, device)
    rows = []
    for r in range(cfg.repeats):
        next_obs, fields, adv, mask = measurement_rollout(env, model, buffer, next_obs,
                                                          generator, device, ppo)
        groups = rollout_groups(fields, adv, mask, split)
        samples = measure_rollout(model, ppo_gns_loss(ppo), groups, split)
        for term in TERMS:
            s = samples[term]
            rows.append({"repeat": r, "term": term, "g2": s.g2, "trace_sigma": s.trace_sigma,
                         "b_simple": s.b_simple})
    return rows


def summarize(repeats: pd.DataFrame) -> pd.DataFrame:
    """Per checkpoint and term: B_simple = mean trace / mean g2 over the repeats, with the
    Fieller 95% interval (hi = inf where mean |G|^2 is not resolved above zero)."""
    rows = []
    keys = ["iteration", "agent_steps", "return_recent", "term"]
    for key, part in repeats.groupby(keys, sort=True, dropna=False):
        g2, tr = part["g2"].to_numpy(float), part["trace_sigma"].to_numpy(float)
        b, lo, hi = ratio_interval(g2, tr)
        rows.append({**dict(zip(keys, key, strict=True)), "repeats": len(part),
                     "samples": int(part["samples"].iloc[0]) * len(part),
                     "b_simple": b, "b_simple_lo": lo, "b_simple_hi": hi,
                     "negative_g2_fraction": float((g2 < 0).mean()),
                     "seconds": float(part["seconds"].iloc[0])})
    return pd.DataFrame(rows)


def run_checkpoint_noise(run_dir: str | Path, out: str | Path, cfg: CheckpointNoiseConfig,
                         progress: Callable[[int, int], None] | None = None) -> pd.DataFrame:
    """Measure every selected checkpoint of ``run_dir`` not yet measured in ``out``.

    ``out`` holds ``settings.json``, ``repeats.csv`` (one row per checkpoint, repeat and
    term, rewritten atomically after each checkpoint, so an interrupted call loses at most
    the checkpoint it was measuring and a rerun continues) and ``checkpoints.csv`` (the
    summary). Returns the summary.
    """
    run = RunDir(run_dir)
    config = run.load_config()
    if "train" not in config or "ppo" not in config:
        raise ValueError(f"{run.config_path} is not a PPO run's config (no train/ppo sections)")
    folder = Path(cfg.checkpoint_dir) if cfg.checkpoint_dir else run.checkpoint_dir
    files = checkpoint_files(folder)
    if not files:
        raise FileNotFoundError(f"{folder} holds no ckpt_*.pt files; train the run until it "
                                "writes a checkpoint, or name a folder with --checkpoint-dir")
    chosen = files[::cfg.every]
    if chosen[-1] != files[-1]:
        chosen.append(files[-1])

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    settings = {"run_dir": str(Path(run_dir).resolve()), **dataclasses.asdict(cfg)}
    # Which checkpoints, and how many threads: neither changes what is measured, so a rerun
    # may change them.
    settings.pop("checkpoint_dir"), settings.pop("every"), settings.pop("torch_threads")
    settings_path = out / "settings.json"
    if settings_path.exists():
        old = json.loads(settings_path.read_text())
        if old != settings:
            diff = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
            raise ValueError(f"{out} holds measurements made with other settings ({', '.join(diff)}"
                             "); use another --out, or the same settings to continue")
    else:
        atomic_write_json(settings_path, settings)
    repeats_path = out / "repeats.csv"
    done = pd.read_csv(repeats_path) if repeats_path.exists() else pd.DataFrame()
    measured = set(done["iteration"].astype(int)) if len(done) else set()

    metrics = load_metrics(run.metrics_path)
    by_iteration = metrics.set_index("iteration") if len(metrics) else None
    ppo_fields = {f.name for f in dataclasses.fields(PPOConfig)}
    ppo = PPOConfig(**{k: v for k, v in config["ppo"].items() if k in ppo_fields})
    train = config["train"]
    todo = [(i, p) for i, p in chosen if i not in measured]
    env = envs.make_vec(train["env"], cfg.num_envs, cfg.seed, backend=train.get("backend"),
                        preset=train.get("env_preset")) if todo else None
    threads = torch.get_num_threads()
    if cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)
    try:
        for k, (iteration, path) in enumerate(todo):
            if progress:
                progress(k, len(todo))
            model = load_policy(run_dir, cfg.device, checkpoint=path).model
            start = time.perf_counter()
            rows = measure_policy_noise(model, env, ppo, cfg)
            seconds = time.perf_counter() - start
            row = by_iteration.loc[iteration] if by_iteration is not None and \
                iteration in by_iteration.index else None
            steps = math.nan if row is None else float(row["agent_steps"])
            ret = math.nan if row is None else float(row.get("return_recent", math.nan))
            new = pd.DataFrame([{"iteration": iteration, "agent_steps": steps,
                                 "return_recent": ret, "samples": cfg.measuring_batch_size,
                                 "seconds": seconds, **r} for r in rows])
            done = pd.concat([done, new], ignore_index=True) if len(done) else new
            atomic_write_text(repeats_path, done.to_csv(index=False))
        if progress:
            progress(len(todo), len(todo))
    finally:
        if cfg.torch_threads:
            torch.set_num_threads(threads)
        if env is not None:
            env.close()
    summary = summarize(done[done["iteration"].isin([i for i, _ in chosen])])
    atomic_write_text(out / "checkpoints.csv", summary.to_csv(index=False))
    return summary
