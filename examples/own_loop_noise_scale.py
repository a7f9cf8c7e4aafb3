"""Measure the gradient noise scale B_simple in your own PyTorch training loop.

A plain policy-gradient (REINFORCE) loop on CartPole that uses rlscale's public noise-scale
API: ``measure`` (the two-batch estimator), ``GNSTracker`` (running averages) and
``ratio_summary`` (the run average with its interval). docs/own-loop.md walks through it.

    python examples/own_loop_noise_scale.py
"""

import gymnasium as gym
import torch
from torch import nn

from rl.measure.gns import GNSTracker, measure
from rl.measure.run_average import ratio_summary
from rl.measure.warmup import after_warmup

NUM_ENVS, NUM_STEPS, GROUPS, ITERATIONS, GAMMA = 8, 64, 8, 40, 0.99

torch.manual_seed(0)
env = gym.make_vec("CartPole-v1", num_envs=NUM_ENVS, vectorization_mode="sync")
policy = nn.Sequential(nn.Linear(4, 64), nn.Tanh(), nn.Linear(64, 2))
optimizer = torch.optim.Adam(policy.parameters(), lr=3e-3)


def collect(obs, resetting):
    """One rollout of NUM_STEPS x NUM_ENVS steps: observations, actions, rewards, and a mask
    that drops the auto-reset steps (gymnasium resets an environment on the step after its
    episode ended and ignores that step's action; ``resetting`` marks those environments)."""
    observations, actions, rewards, dones, mask = [], [], [], [], []
    for _ in range(NUM_STEPS):
        obs = torch.as_tensor(obs, dtype=torch.float32)
        with torch.no_grad():
            action = torch.distributions.Categorical(logits=policy(obs)).sample()
        next_obs, reward, terminated, truncated, _ = env.step(action.numpy())
        done = torch.as_tensor(terminated | truncated)
        observations.append(obs)
        actions.append(action)
        rewards.append(torch.as_tensor(reward, dtype=torch.float32))
        dones.append(done)
        mask.append(~resetting)
        resetting, obs = done, next_obs
    return obs, resetting, {"obs": torch.stack(observations), "actions": torch.stack(actions),
                 "rewards": torch.stack(rewards), "dones": torch.stack(dones),
                 "mask": torch.stack(mask).float()}


def advantages(rollout):
    """Discounted returns-to-go, normalized over the whole rollout (every group then uses the
    same statistics, as the estimator needs)."""
    returns, future = torch.zeros_like(rollout["rewards"]), torch.zeros(NUM_ENVS)
    for t in reversed(range(NUM_STEPS)):
        future = rollout["rewards"][t] + GAMMA * future * ~rollout["dones"][t]
        returns[t] = future
    valid = returns[rollout["mask"].bool()]
    return (returns - valid.mean()) / (valid.std() + 1e-8)


def loss_fn(model, batch):
    """The mean policy-gradient loss over a batch's valid steps (the batch: flat tensors)."""
    logp = torch.distributions.Categorical(logits=model(batch["obs"])).log_prob(batch["actions"])
    return -(logp * batch["adv"] * batch["mask"]).sum() / batch["mask"].sum().clamp(min=1)


def flat(rollout, envs):
    """The steps of some environments as one batch of flat tensors (time x envs -> samples)."""
    return {k: rollout[k][:, envs].flatten(0, 1) for k in ("obs", "actions", "adv", "mask")}


obs, _ = env.reset(seed=0)
resetting = torch.zeros(NUM_ENVS, dtype=torch.bool)
tracker = GNSTracker(beta=0.9, window=20)
g2s, traces = [], []
for iteration in range(ITERATIONS):
    obs, resetting, rollout = collect(obs, resetting)
    rollout["adv"] = advantages(rollout)
    # The noise scale, at the parameters that collected the rollout, before the update:
    # GROUPS groups of whole environments (steps of one environment are correlated in time).
    per_group = NUM_ENVS // GROUPS
    groups = [flat(rollout, slice(k * per_group, (k + 1) * per_group)) for k in range(GROUPS)]
    sample = measure(policy, loss_fn, groups)  # b = 1 env x 64 steps, B = 8 b = 512
    if after_warmup(iteration):  # the first 10 updates fit the initialization: left out
        tracker.update(sample)
        g2s.append(sample.g2)
        traces.append(sample.trace_sigma)
    # The training step on the whole rollout, as usual.
    optimizer.zero_grad()
    loss_fn(policy, flat(rollout, slice(None))).backward()
    optimizer.step()
    if (iteration + 1) % 10 == 0 and tracker.count:
        print(f"iteration {iteration + 1}: B_simple (EMA) {tracker.ema_b_simple:,.0f}, "
              f"(last {tracker.window}) {tracker.mean_b_simple:,.0f} agent steps")

summary = ratio_summary(g2s, traces)
print(f"B_simple over the run: {summary['b_simple']:,.0f} agent steps, 95% interval "
      f"[{summary['b_simple_lo']:,.0f}, {summary['b_simple_hi']:,.0f}] from "
      f"{summary['measurements']} measurements (training batch {NUM_ENVS * NUM_STEPS})")
env.close()
