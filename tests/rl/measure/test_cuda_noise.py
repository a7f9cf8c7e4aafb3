"""The noise scale measured on CUDA equals the CPU's on the same batch and weights.

Marked ``gpu``: skips without CUDA; ``RLSCALE_GPU_TEST_DEVICE=cpu`` dry-runs it (the CPU then
meets itself, and the tolerance is not exercised). Run by scripts/gpu_check.sh.
"""

import copy
from types import SimpleNamespace

import gymnasium as gym
import numpy as np
import pytest
import torch

from agents import PPOConfig, build_actor_critic, make_optimizer, ppo_update
from rl.measure.gns import adam_preconditioner
from rl.measure.ppo_noise import (
    TERMS,
    PPONoiseScale,
    measure_rollout,
    plan_split,
    ppo_gns_loss,
    rollout_groups,
)

pytestmark = pytest.mark.gpu

STEPS, ENVS, GROUPS = 32, 8, 8
# Relative error allowed in a squared gradient norm. Both devices compute in float32 (unit
# roundoff u = 6e-8) with different reduction orders: an element summed over n terms differs
# by about sqrt(n) u (n <= 3e4 here: 1e-5), and a squared norm, dominated by its large
# elements, by about twice that. 1e-4 leaves a factor 5 above that; TF32 (u = 5e-4) would
# exceed it, hence the fp32_convolutions fixture.
SQ_NORM_RTOL = 1e-4

SPACES = {
    "mlp": (gym.spaces.Box(-5.0, 5.0, (4,), np.float32), gym.spaces.Discrete(2)),
    "nature": (gym.spaces.Box(0, 255, (4, 84, 84), np.uint8), gym.spaces.Discrete(4)),
}


def _batch(network: str, seed: int = 0):
    """A model after one PPO update and a (T, N) rollout with off-policy log-probabilities."""
    torch.manual_seed(seed)
    obs_space, action_space = SPACES[network]
    model = build_actor_critic(obs_space, action_space, network)
    gen = torch.Generator().manual_seed(seed)
    shape = (STEPS, ENVS)
    if network == "mlp":
        obs = torch.randn(shape + obs_space.shape, generator=gen)
    else:
        obs = torch.randint(0, 256, shape + obs_space.shape, generator=gen, dtype=torch.uint8)
    actions = torch.randint(0, int(action_space.n), shape, generator=gen)
    with torch.no_grad():
        logp, _, _ = model.evaluate(obs.flatten(0, 1), actions.flatten())
    rollout = SimpleNamespace(
        num_steps=STEPS, num_envs=ENVS, obs=obs, actions=actions,
        # Old log-probabilities 0.1 away from the current policy's: ratios != 1, some clipped.
        logprobs=logp.view(shape) + 0.1 * torch.randn(shape, generator=gen),
        values=torch.randn(shape, generator=gen))
    returns = torch.randn(shape, generator=gen)
    advantages = torch.randn(shape, generator=gen)
    mask = (torch.rand(shape, generator=gen) > 0.1).float()
    ppo = PPOConfig(num_epochs=1)
    optimizer = make_optimizer(model, ppo)
    ppo_update(model, optimizer, {
        "obs": obs.flatten(0, 1), "actions": actions.flatten(),
        "logprobs": rollout.logprobs.flatten(), "values": rollout.values.flatten(),
        "advantages": advantages.flatten(), "returns": returns.flatten(),
        "mask": mask.flatten()}, ppo, torch.Generator().manual_seed(1))
    return model, optimizer, ppo, rollout, advantages, returns, mask


def _to(device, model, optimizer, ppo, rollout, advantages, returns, mask):
    model = copy.deepcopy(model).to(device)
    moved = make_optimizer(model, ppo)
    moved.load_state_dict(optimizer.state_dict())  # Adam state follows the parameters
    rollout = SimpleNamespace(**{k: v.to(device) if torch.is_tensor(v) else v
                                 for k, v in vars(rollout).items()})
    return model, moved, ppo, rollout, advantages.to(device), returns.to(device), mask.to(device)


def _samples(model, optimizer, ppo, rollout, advantages, returns, mask, preconditioned):
    split = plan_split(ENVS, STEPS, GROUPS)
    fields = {"obs": rollout.obs, "actions": rollout.actions, "logprobs": rollout.logprobs,
              "values": rollout.values, "returns": returns}
    groups = rollout_groups(fields, advantages, mask, split)
    return measure_rollout(model, ppo_gns_loss(ppo), groups, split,
                           preconditioner=adam_preconditioner(optimizer) if preconditioned
                           else None)


def _bounds(sample):
    """Largest |change| of (g2, trace_sigma) when each squared norm moves by SQ_NORM_RTOL.

    g2 = (B |G_B|^2 - b |G_b|^2) / (B - b) and tr(Sigma) = (|G_b|^2 - |G_B|^2) / (1/b - 1/B)
    are linear in the two norms, so the error bound is the sum of the coefficients' moduli
    times each norm's error.
    """
    b, big_b = sample.small_batch_size, sample.big_batch_size
    small, big = sample.small_sq_norm * SQ_NORM_RTOL, sample.big_sq_norm * SQ_NORM_RTOL
    return ((big_b * big + b * small) / (big_b - b), (small + big) / (1 / b - 1 / big_b))


@pytest.mark.parametrize("preconditioned", [False, True])
@pytest.mark.parametrize("network", ["mlp", "nature"])
def test_noise_scale_on_the_device_equals_the_cpu(accelerator, fp32_convolutions, network,
                                                  preconditioned):
    on_cpu = _batch(network)
    on_device = _to(accelerator, *on_cpu)
    cpu = _samples(*on_cpu, preconditioned)
    dev = _samples(*on_device, preconditioned)
    for term in TERMS:
        c, d = cpu[term], dev[term]
        assert (d.small_batch_size, d.big_batch_size) == (c.small_batch_size, c.big_batch_size)
        assert d.small_sq_norm == pytest.approx(c.small_sq_norm, rel=SQ_NORM_RTOL), term
        assert d.big_sq_norm == pytest.approx(c.big_sq_norm, rel=SQ_NORM_RTOL), term
        g2_tol, trace_tol = _bounds(c)
        assert abs(d.g2 - c.g2) <= g2_tol, (term, c.g2, d.g2, g2_tol)
        assert abs(d.trace_sigma - c.trace_sigma) <= trace_tol, (term, c.trace_sigma, d.trace_sigma)

    # The trainer's entry point on the device gives the same row as the CPU's.
    row_cpu = PPONoiseScale(1, GROUPS, preconditioned).measure(*on_cpu)
    row_dev = PPONoiseScale(1, GROUPS, preconditioned).measure(*on_device)
    for term in TERMS:
        g2_tol, trace_tol = _bounds(cpu[term])
        assert abs(row_dev[f"gns/{term}/g2"] - row_cpu[f"gns/{term}/g2"]) <= g2_tol, term
        assert abs(row_dev[f"gns/{term}/trace_sigma"]
                   - row_cpu[f"gns/{term}/trace_sigma"]) <= trace_tol, term
    # Nothing the measurement touched moved off the device.
    assert all(p.device.type == accelerator.type for p in on_device[0].parameters())
