"""Does the time split bias B_simple? The same rollouts measured three ways.

A checkpoint's policy plays fresh Breakout rollouts of N envs x 128 steps (N = 8 unless
NUM_ENVS says). Each rollout is measured (rl.measure.ppo_noise, K = 8 groups) split
  envs      by environment: 8 groups of N/8 whole environments (independent groups),
  time      in time: 8 blocks of 16 steps of all N environments,
  time_1env in time within environment 0 alone: 8 blocks of 16 steps, as a 1-env run does;
B_simple = ratio of the means over the repeats (Fieller 95%). Without a bias the three agree.

    PYTHONPATH=. OMP_NUM_THREADS=1 [NUM_ENVS=64 REPEATS=8] python \
        reference/gns-split/measure.py RUN_DIR [CKPT] OUT.csv
"""

import os
import sys
import time

import pandas as pd
import torch

import envs
from agents import PPOConfig
from rl.analysis.checkpoint_noise import measurement_rollout
from rl.measure.gns import ratio_interval
from rl.measure.ppo_noise import TERMS, RolloutSplit, measure_rollout, ppo_gns_loss, rollout_groups
from rl.runs.policy import load_policy
from rl.train.rollout import RolloutBuffer, collect, to_device

NUM_ENVS, NUM_STEPS, GROUPS, SEED = int(os.environ.get("NUM_ENVS", 8)), 128, 8, 2024
REPEATS = int(os.environ.get("REPEATS", 24))


def main(run_dir: str, checkpoint: str | None, out: str) -> None:
    torch.set_num_threads(1)
    policy = load_policy(run_dir, "cpu", checkpoint=checkpoint)
    model, config, iteration = policy.model, policy.config, policy.iteration
    ppo = PPOConfig(**config["ppo"])
    env = envs.make_vec(config["train"]["env"], NUM_ENVS, SEED)
    device = torch.device("cpu")
    next_obs = to_device(env.reset(seed=SEED)[0], device)
    buffer = RolloutBuffer(NUM_STEPS, NUM_ENVS, next_obs, device)
    generator = torch.Generator().manual_seed(SEED)
    next_obs, _, _ = collect(env, model, buffer, next_obs, generator, device)  # warm-up
    splits = {"envs": RolloutSplit("envs", GROUPS, NUM_ENVS // GROUPS, NUM_STEPS),
              "time": RolloutSplit("time", GROUPS, NUM_ENVS, NUM_STEPS // GROUPS),
              "time_1env": RolloutSplit("time", GROUPS, 1, NUM_STEPS // GROUPS)}
    rows, loss = [], ppo_gns_loss(ppo)
    for r in range(REPEATS):
        t0 = time.perf_counter()
        next_obs, fields, adv, mask = measurement_rollout(env, model, buffer, next_obs,
                                                          generator, device, ppo)
        for name, split in splits.items():
            if name == "time_1env":  # environment 0 alone, normalized on its own as in a 1-env run
                f = {k: v[:, :1] for k, v in fields.items()}
                groups = rollout_groups(f, adv[:, :1], mask[:, :1], split)
            else:
                groups = rollout_groups(fields, adv, mask, split)
            samples = measure_rollout(model, loss, groups, split)
            for term in TERMS:
                rows.append(dict(repeat=r, split=name, term=term, g2=samples[term].g2,
                                 trace_sigma=samples[term].trace_sigma))
        print(f"repeat {r + 1}/{REPEATS}: {time.perf_counter() - t0:.1f} s", flush=True)
    env.close()
    df = pd.DataFrame(rows)
    summary = []
    for (split, term), part in df.groupby(["split", "term"], sort=False):
        b, lo, hi = ratio_interval(part["g2"].to_numpy(float), part["trace_sigma"].to_numpy(float))
        summary.append(dict(checkpoint_iteration=iteration, split=split, term=term,
                            repeats=len(part), b_simple=b, lo=lo, hi=hi))
    pd.DataFrame(summary).to_csv(out, index=False)
    df.to_csv(out.replace(".csv", ".repeats.csv"), index=False)
    print(pd.DataFrame(summary).to_string(index=False))


if __name__ == "__main__":
    args = sys.argv[1:]
    main(args[0], args[1] if len(args) == 3 else None, args[-1])
