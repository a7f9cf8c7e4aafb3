"""``rlscale bench flops``: FLOP counts against closed forms, the batch it times, bad input."""

import gymnasium as gym
import numpy as np
import pytest
import torch

from rl.bench.configs import FlopsBenchConfig
from rl.bench.flops import bench_flops, count_flops, synthetic_batch


def test_flop_count_of_a_linear_layer_is_the_closed_form():
    # y = x W^T: 2 * n * in * out forward; backward computes dx and dW, 2x that again.
    n, d_in, d_out = 32, 64, 16
    layer = torch.nn.Linear(d_in, d_out, bias=False)
    x = torch.randn(n, d_in, requires_grad=True)
    assert count_flops(lambda: layer(x)) == 2 * n * d_in * d_out
    assert count_flops(lambda: layer(x).sum().backward()) == 3 * 2 * n * d_in * d_out


def test_synthetic_batch_respects_the_observation_space():
    gen = torch.Generator().manual_seed(0)
    frames = gym.spaces.Box(0, 255, (4, 84, 84), np.uint8)
    b = synthetic_batch(frames, 6, 64, gen)
    assert b.obs.dtype == torch.uint8 and b.obs.shape == (64, 4, 84, 84)
    assert int(b.actions.min()) >= 0 and int(b.actions.max()) < 6
    assert torch.allclose(b.logprobs, torch.full((64,), -np.log(6.0)))
    unbounded = gym.spaces.Box(-np.inf, np.inf, (4,), np.float32)
    assert torch.isfinite(synthetic_batch(unbounded, 2, 16, gen).obs).all()


def test_the_table_relates_time_flops_and_peak(one_torch_thread):
    df = bench_flops(FlopsBenchConfig(env="CartPole", num_envs=4, num_steps=16, arms="eager",
                                      updates=1, repeats=1, matmul_size=128))
    row = df.iloc[0]
    assert row.arm == "eager" and row.threads == 1
    # Classic preset: 20 epochs x 1 minibatch of the 64-step rollout through two 64-64 MLPs
    # of 4 inputs (policy head 2 outputs, value head 1). Per layer 2 x 64 x in x out FLOPs
    # forward, the same for dW and again for dx, except the input layers (no dx: the
    # observations need no gradient).
    mac = 64 * 64 + 64 * 2 + 64 * 64 + 64 * 1  # layers after the input layers
    per_epoch = 2 * 64 * (3 * mac + 2 * (4 * 64 + 4 * 64))
    assert row.update_gflop * 1e9 == pytest.approx(20 * per_epoch)
    assert row.gflops_per_s == pytest.approx(row.update_gflop / row.update_s)
    assert row.fraction_of_matmul == pytest.approx(row.gflops_per_s / row.matmul_gflops_per_s)
    assert row.speedup_vs_eager == 1.0


@pytest.mark.parametrize("changes, match", [
    ({"arms": "eager,jit"}, "arms must be comma-separated names"),
    ({"arms": ""}, "arms must be comma-separated names"),
    ({"updates": 0}, "updates must be a positive integer"),
    ({"threads": -1}, "threads must be an integer >= 0"),
])
def test_bad_settings_are_refused(changes, match):
    with pytest.raises(ValueError, match=match):
        FlopsBenchConfig(**changes).validate()
