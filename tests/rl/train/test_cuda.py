"""The trainer on CUDA: PPO iterations, bf16 autocast, torch.compile, host-to-device copies.

Marked ``gpu``: they skip without CUDA, and ``RLSCALE_GPU_TEST_DEVICE=cpu`` dry-runs them on
the CPU (tests/conftest.py). scripts/gpu_check.sh runs them on a lent GPU machine.
"""

import math

import numpy as np
import pytest
import torch

from agents import PPOConfig
from rl.runs.metrics import load_metrics
from rl.train.config import PRESETS, TrainConfig
from rl.train.launch import train
from rl.train.loop import prepare_network
from rl.train.rollout import FLAGS, RolloutBuffer, to_device

pytestmark = pytest.mark.gpu

CLASSIC_TRAIN, CLASSIC_PPO = PRESETS["classic"]
# Breakout on the ale-py backend: envpool is not carried to the GPU machine (too large).
BREAKOUT = {"env": "Breakout", "backend": "ale", "network": "nature", "num_envs": 8,
            "num_steps": 32}
# Every finite-valued column a short run must produce (noise scale measured every iteration).
FINITE = ("policy_loss", "value_loss", "entropy", "approx_kl", "grad_norm", "sps",
          "gns/total/g2", "gns/policy/trace_sigma", "gns/value/trace_sigma")


def _config(kind: str, run_dir, device: torch.device, **kw) -> tuple[TrainConfig, PPOConfig]:
    if kind == "CartPole":
        base, ppo = {**CLASSIC_TRAIN, "env": "CartPole"}, PPOConfig(**CLASSIC_PPO)
    else:
        base, ppo = dict(BREAKOUT), PPOConfig()
    base.update(gns_every=1, checkpoint_every=1, run_dir=str(run_dir), device=str(device))
    base.update(kw)
    base["total_agent_steps"] = 3 * base["num_envs"] * base["num_steps"]
    return TrainConfig(**base), ppo


def _assert_finite(run_dir, iterations: int) -> None:
    df = load_metrics(run_dir)
    assert list(df["iteration"]) == list(range(1, iterations + 1))
    for col in FINITE:
        assert np.isfinite(df[col].to_numpy(float)).all(), col


@pytest.mark.parametrize("kind", ["CartPole", "Breakout"])
def test_ppo_iterations_run_on_the_device_and_resume_on_the_cpu(tmp_path, accelerator, kind):
    cfg, ppo = _config(kind, tmp_path / kind, accelerator)
    if accelerator.type == "cuda":
        torch.cuda.reset_peak_memory_stats(accelerator)
    result = train(cfg, ppo)
    assert result.iterations == 3
    _assert_finite(cfg.run_dir, 3)
    if accelerator.type == "cuda":  # the network, rollout and update really lived there
        assert torch.cuda.max_memory_allocated(accelerator) > 0
    # A checkpoint written on the device resumes on the CPU (the device may change).
    cfg.device, cfg.resume = "cpu", True
    cfg.total_agent_steps += cfg.rollout_batch_size
    assert train(cfg, ppo).iterations == 4
    _assert_finite(cfg.run_dir, 4)


@pytest.mark.parametrize("option", ["bf16", "compile"])
def test_bf16_autocast_and_compile_options_train(tmp_path, accelerator, option):
    on_cuda = accelerator.type == "cuda"
    # On the CPU dry-run the CUDA-only options must be ignored; bf16 has its CPU twin.
    flag = "cpu_bf16" if option == "bf16" and not on_cuda else option
    cfg, ppo = _config("Breakout", tmp_path / option, accelerator, **{flag: True})
    result = train(cfg, ppo)
    assert result.iterations == 3
    _assert_finite(cfg.run_dir, 3)
    # Each minibatch sees the previous optimizer steps (no stale bf16 weight copies).
    assert (load_metrics(cfg.run_dir)["approx_kl"] > 0).all()

    # What the option does to the network the loop runs (the run above exercised it).
    layer = torch.nn.Linear(2, 2).to(accelerator)
    net, autocast = prepare_network(cfg, layer, accelerator)
    if option == "compile":
        assert net is layer  # compiled in place (tests/rl/train/test_compile.py)
    else:  # bf16 matrix work inside the context, on either device
        with autocast:
            enabled = torch.is_autocast_enabled(accelerator.type)
            probe = torch.ones(2, 2, device=accelerator) @ torch.ones(2, 2, device=accelerator)
        assert enabled and probe.dtype == torch.bfloat16


def test_host_to_device_copies_keep_values_and_dtypes(accelerator):
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(8, 4, 84, 84), dtype=np.uint8)
    flags = rng.random((8, 3)) < 0.5
    floats = rng.standard_normal((8, 4))  # float64: arrives as float32
    for array, dtype in ((frames, torch.uint8), (flags, torch.bool), (floats, torch.float32)):
        tensor = to_device(array, accelerator)
        assert tensor.device.type == accelerator.type and tensor.dtype == dtype
        assert np.array_equal(tensor.cpu().numpy(), array.astype(tensor.cpu().numpy().dtype))
    # Non-contiguous input (a strided view) arrives whole.
    view = frames[:, ::2]
    assert np.array_equal(to_device(view, accelerator).cpu().numpy(), view)

    # The rollout buffer's host staging -> device upload.
    buffer = RolloutBuffer(16, 8, to_device(frames, accelerator), accelerator)
    assert buffer.obs.device.type == accelerator.type and buffer.obs.dtype == torch.uint8
    rewards = rng.standard_normal((16, 8)).astype(np.float32)
    host_flags = rng.random((len(FLAGS), 16, 8)) < 0.3
    for t in range(16):  # step by step, as collect() writes them
        buffer.host_rewards[t] = rewards[t]
        buffer.host_flags[:, t] = host_flags[:, t]
    buffer.upload()
    assert np.array_equal(buffer.rewards.cpu().numpy(), rewards)
    for i, name in enumerate(FLAGS):
        assert np.array_equal(getattr(buffer, name).cpu().numpy(), host_flags[i]), name
    # Overwriting the staging memory afterwards does not reach the device copy.
    buffer.host_rewards[:] = math.nan
    assert np.array_equal(buffer.rewards.cpu().numpy(), rewards)
